//! Text-to-image retrieval on a catalog's test split with the text tower run
//! three ways — tch (the trainer), candle f32 and candle int8 (the browser's
//! engine) — against the same image embeddings (tch), to show what int8
//! weights cost in recall.
//!
//! `cargo run --release -p vitrine-tests --example int8_retrieval -- <fine-tuned checkpoint> <catalog> <feature cache>`

use std::path::PathBuf;

use vitrine_core::catalog::{self, ImportOptions, Split};
use vitrine_core::metrics::{rank_of, recall_at};
use vitrine_core::model::{Int8Kernel, LoadOptions, TextEncoder};
use vitrine_trainer::catalog_inputs::{CatalogInputs, ItemTexts};
use vitrine_trainer::recipe::Recipe;
use vitrine_trainer::teacher::load_finetuned;

fn rows_of(t: &tch::Tensor) -> Vec<Vec<f32>> {
    let t = t.to_kind(tch::Kind::Float).contiguous();
    let (n, h) = (t.size()[0] as usize, t.size()[1] as usize);
    let mut flat = vec![0f32; n * h];
    t.copy_data(&mut flat, n * h);
    flat.chunks(h).map(<[f32]>::to_vec).collect()
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    dot(a, b) / (dot(a, a).sqrt() * dot(b, b).sqrt())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<PathBuf> = std::env::args().skip(1).map(PathBuf::from).collect();
    let [checkpoint, catalog_dir, cache] = &args[..] else {
        anyhow::bail!("usage: int8_retrieval <fine-tuned checkpoint> <catalog> <feature cache>");
    };
    let recipe = Recipe::load("cpu")?;
    let catalog = catalog::open(catalog_dir, ImportOptions::default())?;
    let model = load_finetuned(checkpoint, recipe.max_text_tokens, tch::Device::Cpu)?;
    let weights = PathBuf::from("models/efficientnet-lite0/model.safetensors");
    let inputs = CatalogInputs::new(&catalog, ItemTexts::Plain, &model.tokenizer, &recipe, &weights, cache, tch::Device::Cpu)?;
    let rows: Vec<usize> = catalog.items_in(Split::Test).filter_map(|(i, _)| inputs.row_of(i)).collect();
    let texts: Vec<String> = rows.iter().map(|&r| catalog.items[inputs.items[r]].text()).collect();

    let (mut images, mut tch_texts) = (Vec::new(), Vec::new());
    for chunk in rows.chunks(64) {
        tch::no_grad(|| -> anyhow::Result<()> {
            images.extend(rows_of(&model.model.image_embedding(&inputs.visual_tokens(&model.model, chunk, None, tch::Device::Cpu)?)));
            let (ids, mask) = inputs.item_texts(chunk, None, tch::Device::Cpu);
            tch_texts.extend(rows_of(&model.model.text_embedding(&ids, &mask, false)));
            Ok(())
        })?;
    }
    let encoder = |quantize| {
        TextEncoder::from_dir(
            checkpoint,
            LoadOptions { quantize_text_encoder: quantize, int8_kernel: Int8Kernel::PerChannel },
            recipe.max_text_tokens,
        )
    };
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let f32_texts = encoder(false)?.embed_batch(&refs)?;
    let int8_texts = encoder(true)?.embed_batch(&refs)?;

    let recalls = |queries: &[Vec<f32>]| -> [f64; 3] {
        let ranks: Vec<usize> =
            queries.iter().enumerate().map(|(i, q)| rank_of(&images.iter().map(|g| dot(q, g)).collect::<Vec<_>>(), i)).collect();
        [1, 5, 10].map(|k| recall_at(&ranks, k))
    };
    let min_cosine = |a: &[Vec<f32>], b: &[Vec<f32>]| a.iter().zip(b).map(|(x, y)| cosine(x, y)).fold(f32::MAX, f32::min);
    println!("{} test items, full gallery, text → image\n", rows.len());
    println!("| text tower | R@1 | R@5 | R@10 | min cosine to tch |");
    println!("|---|---|---|---|---|");
    for (name, embeddings) in [("tch f32 (trainer)", &tch_texts), ("candle f32", &f32_texts), ("candle int8", &int8_texts)] {
        let r = recalls(embeddings);
        println!("| {name} | {:.2} | {:.2} | {:.2} | {:.6} |", r[0], r[1], r[2], min_cosine(embeddings, &tch_texts));
    }
    Ok(())
}
