//! ANN recall and build time on real embeddings: the H&M bundle's own index
//! (one product vector per article) and a catalog about ten times larger made
//! of several views of every article's photo, each embedded by the teacher
//! and put through the bundle's projection and quantisation.
//!
//! A view is a part of the photo's 7×7 feature grid (the frozen image
//! encoder's output, from the feature cache): the whole grid, its four 6×6
//! corner windows and the same five of the mirrored grid — ten views per
//! photo. Each view's visual tokens give an image embedding as the model makes
//! one; the product vector pairs it with the article's text embedding, as the
//! builder does. Queries are article texts (the teacher's text embeddings,
//! projected), so they are not in the index.
//!
//! `cargo run --release -p vitrine-index-builder --example ann_views -- --catalog ../shared/data/hm
//!  --checkpoint <finetune checkpoint> --cache <feature cache> --build <vitrine-index build --out folder>`

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use rand::seq::index::sample;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{nn, Device, Kind, Tensor};
use vitrine_core::bundle::{Bundle, Limits};
use vitrine_core::catalog::{self, ImportOptions};
use vitrine_core::engine::BundleModelConfig;
use vitrine_core::index::{recall, AnnIndex, BuildParams, Hit, SearchParams};
use vitrine_index_builder::build::bundle_folder;
use vitrine_index_builder::embed::merge;
use vitrine_index_builder::heads::CompactHeads;
use vitrine_trainer::catalog_inputs::{CatalogInputs, ItemTexts};
use vitrine_trainer::model::bert::l2_normalize;
use vitrine_trainer::recipe::Recipe;
use vitrine_trainer::teacher::load_finetuned;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    catalog: PathBuf,
    #[arg(long)]
    checkpoint: PathBuf,
    #[arg(long, default_value = "cpu")]
    config: String,
    #[arg(long, default_value = "models")]
    models: PathBuf,
    #[arg(long)]
    cache: PathBuf,
    /// The `vitrine-index build --out` folder (its bundle and embeddings).
    #[arg(long)]
    build: PathBuf,
    #[arg(long, default_value_t = 1000)]
    queries: usize,
}

/// The ten views' image embeddings `[B·10, H]` (unit length) of visual tokens `[B, 49, H]`.
fn views(tokens: &Tensor) -> Tensor {
    let (b, h) = (tokens.size()[0], tokens.size()[2]);
    let grid = tokens.view([b, 7, 7, h]);
    let mut out = Vec::new();
    for g in [grid.shallow_clone(), grid.flip([2])] {
        out.push(g.mean_dim([1i64, 2].as_slice(), false, Kind::Float));
        for (y, x) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
            out.push(g.narrow(1, y, 6).narrow(2, x, 6).mean_dim([1i64, 2].as_slice(), false, Kind::Float));
        }
    }
    l2_normalize(&Tensor::stack(&out, 1).view([b * 10, h]))
}

/// Recall@10 of the graph against exact search, and the median query time in µs.
fn measure(index: &AnnIndex, queries: &[Vec<f32>]) -> Result<(f64, f64)> {
    let mut recalls = Vec::new();
    let mut times = Vec::new();
    for q in queries {
        let started = Instant::now();
        let found: Vec<Hit> = index.search(q, 10, None, &SearchParams::default())?;
        times.push(started.elapsed().as_secs_f64() * 1e6);
        recalls.push(recall(&found, &index.exact_search(q, 10, None)?));
    }
    times.sort_by(f64::total_cmp);
    Ok((100.0 * recalls.iter().sum::<f64>() / recalls.len() as f64, times[times.len() / 2]))
}

fn main() -> Result<()> {
    let args = Args::parse();
    let catalog = catalog::open(&args.catalog, ImportOptions::default())?;
    let recipe = Recipe::load(&args.config)?;
    let finetuned = load_finetuned(&args.checkpoint, recipe.max_text_tokens, Device::Cpu)?;
    let bundle = Bundle::read_folder(&bundle_folder(&args.build), &Limits::default())?;
    let config: BundleModelConfig = serde_json::from_value(bundle.manifest.model_config.clone())?;
    let mut vs = nn::VarStore::new(Device::Cpu);
    let heads = CompactHeads::new(&vs.root(), &config.compact);
    let heads_file = std::env::temp_dir().join(format!("vitrine-heads-{}.safetensors", std::process::id()));
    std::fs::write(&heads_file, &bundle.contents.heads)?;
    vs.load(&heads_file).context("loading the bundle's heads")?;
    std::fs::remove_file(&heads_file)?;

    let embeddings = merge(&args.build.join("embeddings"), 1, &catalog)?;
    let inputs = CatalogInputs::for_items(
        &catalog,
        embeddings.items.clone(),
        ItemTexts::Plain,
        &finetuned.tokenizer,
        &recipe,
        &args.models.join("efficientnet-lite0/model.safetensors"),
        &args.cache,
        Device::Cpu,
    )?;
    let w = f64::from(config.compact.image_weight);
    let texts = l2_normalize(&embeddings.text);
    let n = embeddings.items.len();

    let started = Instant::now();
    let mut vectors: Vec<f32> = Vec::with_capacity(n * 10 * config.compact.dim);
    for start in (0..n).step_by(256) {
        let rows: Vec<usize> = (start..(start + 256).min(n)).collect();
        let chunk = tch::no_grad(|| -> Result<Tensor> {
            let tokens = inputs.visual_tokens(&finetuned.model, &rows, None, Device::Cpu)?;
            let image = views(&tokens);
            let text = texts.narrow(0, start as i64, rows.len() as i64).repeat_interleave_self_int(10, 0, None);
            Ok(heads.project(&l2_normalize(&(image * w + text * (1.0 - w)))))
        })?;
        vectors.extend(Vec::<f32>::try_from(chunk.flatten(0, -1))?);
    }
    let embed_seconds = started.elapsed().as_secs_f64();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let picks = sample(&mut rng, n, args.queries.min(n)).into_vec();
    let query_rows = Tensor::from_slice(&picks.iter().map(|&p| p as i64).collect::<Vec<_>>());
    let queries = tch::no_grad(|| heads.project(&texts.index_select(0, &query_rows)));
    let queries: Vec<Vec<f32>> = Vec::<Vec<f32>>::try_from(queries)?;

    println!("| index | items | build (s) | recall@10 vs exact (%) | median query (µs) |");
    println!("|---|---|---|---|---|");
    let (r, t) = measure(&bundle.contents.index, &queries)?;
    println!(
        "| the bundle's index (one vector per article) | {} | (built by `vitrine-index build`) | {r:.2} | {t:.0} |",
        bundle.contents.index.len()
    );
    let started = Instant::now();
    let index = AnnIndex::build(config.compact.dim, &vectors, vec![0; n * 10], &BuildParams::default())?;
    let build_seconds = started.elapsed().as_secs_f64();
    let (r, t) = measure(&index, &queries)?;
    println!("| ten views per article | {} | {build_seconds:.1} | {r:.2} | {t:.0} |", index.len());
    println!(
        "\nViews embedded and projected in {embed_seconds:.1} s; {} queries (article texts); search: ef 100, re-rank 100, one thread.",
        queries.len()
    );
    Ok(())
}
