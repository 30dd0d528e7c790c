//! The tch BERT with all-MiniLM-L6-v2's weights against sentence-transformers,
//! and its fusion mode, checkpoint round trip and separate fusion copy.
//!
//! `fixtures/minilm/reference.json` holds 20 fashion-shop sentences, the token
//! ids of the Python tokenizer and the sentence-transformers embeddings (mean
//! pooling, L2 normalisation); `fixtures/make_minilm_reference.py` made it.
//!
//! The weights come from `cargo xtask setup` (`models/all-MiniLM-L6-v2/`).

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;
use tch::{nn, Device, Kind, Tensor};
use vitrine_core::text::Tokenizer;
use vitrine_trainer::model::bert::{BertModel, TextFusionBert};

const MODEL_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/all-MiniLM-L6-v2");
const REFERENCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/minilm/reference.json");
const MIN_COSINE: f64 = 0.9999;

#[derive(Deserialize)]
struct Reference {
    hidden_size: usize,
    sentences: Vec<Sentence>,
}

#[derive(Deserialize)]
struct Sentence {
    text: String,
    ids: Vec<u32>,
    embedding: Vec<f32>,
}

fn reference() -> Reference {
    let json = std::fs::read_to_string(REFERENCE).expect("read fixtures/minilm/reference.json");
    serde_json::from_str(&json).expect("parse fixtures/minilm/reference.json")
}

fn model_dir() -> &'static Path {
    let dir = Path::new(MODEL_DIR);
    for file in ["config.json", "model.safetensors", "tokenizer.json"] {
        assert!(dir.join(file).exists(), "{} is missing: run `cargo xtask setup` to fetch all-MiniLM-L6-v2", dir.join(file).display());
    }
    dir
}

/// MiniLM under the root of a fresh VarStore.
fn minilm() -> (nn::VarStore, BertModel) {
    let vs = nn::VarStore::new(Device::Cpu);
    let (model, report) = BertModel::from_pretrained(&vs.root(), model_dir()).expect("load all-MiniLM-L6-v2");
    assert_eq!(report.prefix, "");
    assert_eq!(report.initialised, ["embeddings.visual_position_embeddings.weight"], "{report:?}");
    assert!(report.unused.is_empty(), "{report:?}");
    (vs, model)
}

/// Right-padded ids and mask `[B, T]`.
fn batch(ids: &[Vec<u32>]) -> (Tensor, Tensor) {
    let t = ids.iter().map(Vec::len).max().unwrap_or(0);
    let mut flat_ids = Vec::new();
    let mut flat_mask = Vec::new();
    for row in ids {
        for j in 0..t {
            flat_ids.push(row.get(j).map_or(0, |&i| i64::from(i)));
            flat_mask.push(i64::from(j < row.len()));
        }
    }
    let shape = [ids.len() as i64, t as i64];
    (Tensor::from_slice(&flat_ids).view(shape), Tensor::from_slice(&flat_mask).view(shape))
}

fn cosine(a: &Tensor, b: &Tensor) -> f64 {
    let a = a.to_kind(Kind::Double);
    let b = b.to_kind(Kind::Double);
    (a.dot(&b) / (a.norm() * b.norm())).double_value(&[])
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn minilm_matches_sentence_transformers() {
    let reference = reference();
    let dir = model_dir();
    let tokenizer = Tokenizer::from_file(&dir.join("tokenizer.json"), 128).expect("load tokenizer");
    let (_vs, model) = minilm();
    assert_eq!(model.config().hidden_size, reference.hidden_size);

    let mut ids = Vec::new();
    for s in &reference.sentences {
        let enc = tokenizer.encode(&s.text).expect("tokenize");
        assert_eq!(enc.ids, s.ids, "token ids of {:?}", s.text);
        assert!((9..=16).contains(&enc.ids.len()), "{:?} has {} tokens", s.text, enc.ids.len());
        ids.push(enc.ids);
    }
    let expected: Vec<Tensor> = reference.sentences.iter().map(|s| Tensor::from_slice(&s.embedding)).collect();

    // All sentences in one right-padded batch, and each on its own.
    let (batch_ids, batch_mask) = batch(&ids);
    let batched = tch::no_grad(|| model.text_embedding(&batch_ids, &batch_mask, false));
    assert_eq!(batched.size(), [ids.len() as i64, reference.hidden_size as i64]);
    let mut min = f64::INFINITY;
    let mut worst = "";
    for (i, (s, want)) in reference.sentences.iter().zip(&expected).enumerate() {
        let (one_ids, one_mask) = batch(&ids[i..=i]);
        let single = tch::no_grad(|| model.text_embedding(&one_ids, &one_mask, false)).get(0);
        for got in [batched.get(i as i64), single] {
            let c = cosine(&got, want);
            if c < min {
                min = c;
                worst = &s.text;
            }
        }
    }
    println!(
        "minimum cosine vs sentence-transformers over {} sentences (batched and single): {min:.15} (1 - cos = {:.3e}, {worst:?})",
        ids.len(),
        1.0 - min
    );
    assert!(min >= MIN_COSINE, "cosine {min} < {MIN_COSINE} for {worst:?}");
}

/// A fusion input: the first `n` fixture sentences and `v` visual tokens.
fn fusion_input(n: usize, v: i64, h: i64) -> (Tensor, Tensor, Tensor) {
    let reference = reference();
    let ids: Vec<Vec<u32>> = reference.sentences.iter().take(n).map(|s| s.ids.clone()).collect();
    let (ids, mask) = batch(&ids);
    tch::manual_seed(7);
    let visual = Tensor::randn([n as i64, v, h], (Kind::Float, Device::Cpu));
    (ids, mask, visual)
}

#[test]
fn fusion_shapes_positions_and_visual_mask() {
    let (_vs, model) = minilm();
    let h = model.config().hidden_size as i64;
    let v = 49;
    let (ids, text_mask, visual) = fusion_input(3, v, h);
    let t = ids.size()[1];

    // The visual positions start as the first 49 text positions.
    let pos = &model.embeddings.position_embeddings.ws;
    let vis_pos = &model.embeddings.visual_position_embeddings.ws;
    assert_eq!(vis_pos.size(), [v, h]);
    assert_eq!(max_abs_diff(vis_pos, &pos.narrow(0, 0, v)), 0.0);

    // Visual tokens: token type 1, own positions, the embedding LayerNorm.
    let emb = tch::no_grad(|| model.embeddings.forward_visual(&visual, false));
    let by_hand = tch::no_grad(|| {
        let xs = &visual + vis_pos + model.embeddings.token_type_embeddings.ws.get(1);
        xs.layer_norm([h].as_slice(), model.embeddings.layer_norm.ws.as_ref(), model.embeddings.layer_norm.bs.as_ref(), 1e-12, false)
    });
    assert!(max_abs_diff(&emb, &by_hand) < 1e-5);

    // The last 10 visual tokens of every row are masked (dropped).
    let keep = 39;
    let visual_mask =
        Tensor::cat(&[Tensor::ones([3, keep], (Kind::Int64, Device::Cpu)), Tensor::zeros([3, v - keep], (Kind::Int64, Device::Cpu))], 1);
    let (text_out, visual_out) = tch::no_grad(|| model.forward_fusion(&ids, &text_mask, &visual, &visual_mask, false));
    assert_eq!(text_out.size(), [3, t, h]);
    assert_eq!(visual_out.size(), [3, v, h]);
    assert!(text_out.isfinite().all().int64_value(&[]) == 1 && visual_out.isfinite().all().int64_value(&[]) == 1);

    // Changing masked visual tokens changes no output of an unmasked token.
    let changed = visual.copy();
    let _ = changed.narrow(1, keep, v - keep).normal_(3.0, 5.0);
    let (text_out2, visual_out2) = tch::no_grad(|| model.forward_fusion(&ids, &text_mask, &changed, &visual_mask, false));
    let text_diff = max_abs_diff(&text_out, &text_out2);
    let visual_diff = max_abs_diff(&visual_out.narrow(1, 0, keep), &visual_out2.narrow(1, 0, keep));
    println!("masked visual tokens changed: text outputs moved {text_diff:e}, kept visual outputs {visual_diff:e}");
    assert!(text_diff <= 1e-5, "masked visual tokens moved the text outputs by {text_diff}");
    assert!(visual_diff <= 1e-5, "masked visual tokens moved the kept visual outputs by {visual_diff}");

    // ... while changing an attended visual token does change the text outputs.
    let changed = visual.copy();
    let _ = changed.narrow(1, 0, 1).normal_(3.0, 5.0);
    let (text_out3, _) = tch::no_grad(|| model.forward_fusion(&ids, &text_mask, &changed, &visual_mask, false));
    assert!(max_abs_diff(&text_out, &text_out3) > 1e-3, "the text does not attend to the visual tokens");

    // Text padding is masked for the visual tokens too: right-padding one more
    // [PAD] changes none of the real outputs.
    let pad_ids = Tensor::cat(&[&ids, &ids.zeros_like().narrow(1, 0, 1)], 1);
    let pad_mask = Tensor::cat(&[&text_mask, &text_mask.zeros_like().narrow(1, 0, 1)], 1);
    let (text_out4, visual_out4) = tch::no_grad(|| model.forward_fusion(&pad_ids, &pad_mask, &visual, &visual_mask, false));
    let real = text_mask.unsqueeze(-1).to_kind(Kind::Float);
    assert!(max_abs_diff(&(text_out4.narrow(1, 0, t) * &real), &(&text_out * &real)) <= 1e-5);
    assert!(max_abs_diff(&visual_out4.narrow(1, 0, keep), &visual_out.narrow(1, 0, keep)) <= 1e-5);

    // The fusion text part differs from text mode (it saw the image), and with
    // all visual tokens masked it equals text mode.
    let text_only = tch::no_grad(|| model.forward_text(&ids, &text_mask, false));
    let none = visual_mask.zeros_like();
    let (text_out5, _) = tch::no_grad(|| model.forward_fusion(&ids, &text_mask, &visual, &none, false));
    assert!(max_abs_diff(&(&text_out * &real), &(&text_only * &real)) > 1e-3);
    assert!(max_abs_diff(&(&text_out5 * &real), &(&text_only * &real)) <= 1e-5);

    // Training mode: dropout is live and gradients reach the visual tokens.
    let visual_grad = visual.set_requires_grad(true);
    let (a, b) = model.forward_fusion(&ids, &text_mask, &visual_grad, &visual_mask, true);
    (a.sum(None::<Kind>) + b.sum(None::<Kind>)).backward();
    let g = visual_grad.grad();
    assert!(g.abs().narrow(1, 0, keep).sum(None::<Kind>).double_value(&[]) > 0.0);
}

#[test]
fn safetensors_round_trip_keeps_names_and_outputs() {
    let (vs, model) = minilm();
    let h = model.config().hidden_size as i64;
    // Make the visual positions differ from their initialisation, so the round
    // trip has to carry them.
    tch::no_grad(|| {
        let _ = model.embeddings.visual_position_embeddings.ws.shallow_clone().g_add_scalar_(0.01);
    });
    let (ids, text_mask, visual) = fusion_input(4, 49, h);
    let visual_mask = Tensor::ones([4, 49], (Kind::Int64, Device::Cpu));
    let before_text = tch::no_grad(|| model.text_embedding(&ids, &text_mask, false));
    let (before_t, before_v) = tch::no_grad(|| model.forward_fusion(&ids, &text_mask, &visual, &visual_mask, false));

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("model.safetensors");
    vs.save(&file).unwrap();

    // The file's names are the Hugging Face checkpoint's (less the position_ids
    // buffer), plus the visual positions.
    let saved: HashMap<String, Tensor> = Tensor::read_safetensors(&file).unwrap().into_iter().collect();
    let original = Tensor::read_safetensors(model_dir().join("model.safetensors")).unwrap();
    let mut want: Vec<String> = original.into_iter().map(|(k, _)| k).filter(|k| k != "embeddings.position_ids").collect();
    want.push("embeddings.visual_position_embeddings.weight".to_string());
    want.sort();
    let mut got: Vec<String> = saved.keys().cloned().collect();
    got.sort();
    assert_eq!(got, want);
    let named: Vec<String> = model.named_tensors().into_iter().map(|(k, _)| k).collect();
    let mut named_sorted = named.clone();
    named_sorted.sort();
    assert_eq!(named_sorted, want, "named_tensors lists the VarStore names");

    // A fresh model (another seed) loads it and gives identical outputs.
    tch::manual_seed(1234);
    let vs2 = nn::VarStore::new(Device::Cpu);
    let model2 = BertModel::new(&vs2.root(), model.config());
    let report = model2.load_safetensors(&file).unwrap();
    assert!(report.initialised.is_empty() && report.unused.is_empty(), "{report:?}");
    assert_eq!(report.loaded, named);
    let after_text = tch::no_grad(|| model2.text_embedding(&ids, &text_mask, false));
    let (after_t, after_v) = tch::no_grad(|| model2.forward_fusion(&ids, &text_mask, &visual, &visual_mask, false));
    assert_eq!(max_abs_diff(&before_text, &after_text), 0.0);
    assert_eq!(max_abs_diff(&before_t, &after_t), 0.0);
    assert_eq!(max_abs_diff(&before_v, &after_v), 0.0);

    // tch's own VarStore::load reads the same file, and save_safetensors writes
    // the same names when the model is not at the VarStore root.
    let mut vs3 = nn::VarStore::new(Device::Cpu);
    let model3 = BertModel::new(&vs3.root(), model.config());
    vs3.load(&file).unwrap();
    let (t3, _) = tch::no_grad(|| model3.forward_fusion(&ids, &text_mask, &visual, &visual_mask, false));
    assert_eq!(max_abs_diff(&before_t, &t3), 0.0);

    let vs4 = nn::VarStore::new(Device::Cpu);
    let model4 = BertModel::new(&(vs4.root() / "bert"), model.config());
    assert!(vs4.variables().contains_key("bert.embeddings.word_embeddings.weight"));
    // A `bert.`-prefixed file (vs4's own names) loads into an unprefixed model.
    model4.copy_weights_from(&model).unwrap();
    let prefixed = dir.path().join("prefixed.safetensors");
    vs4.save(&prefixed).unwrap();
    let model5 = BertModel::new(&nn::VarStore::new(Device::Cpu).root(), model.config());
    let report = model5.load_safetensors(&prefixed).unwrap();
    assert_eq!(report.prefix, "bert.");
    let t5 = tch::no_grad(|| model5.text_embedding(&ids, &text_mask, false));
    assert_eq!(max_abs_diff(&before_text, &t5), 0.0);
    let plain = dir.path().join("plain.safetensors");
    model4.save_safetensors(&plain).unwrap();
    let mut plain_names: Vec<String> = Tensor::read_safetensors(&plain).unwrap().into_iter().map(|(k, _)| k).collect();
    plain_names.sort();
    assert_eq!(plain_names, want);
}

#[test]
fn separate_fusion_copy_is_independent() {
    let model_dir = model_dir();
    let config = vitrine_trainer::model::bert::BertConfig::from_file(&model_dir.join("config.json")).unwrap();
    let vs = nn::VarStore::new(Device::Cpu);
    let root = vs.root();

    let shared = TextFusionBert::new(&(&root / "shared"), &(&root / "unused"), &config, true);
    assert!(shared.is_shared());
    assert!(std::ptr::eq(shared.text(), shared.fusion()));
    assert!(!vs.variables().keys().any(|k| k.starts_with("unused.")));

    let pair = TextFusionBert::new(&root, &(&root / "fusion"), &config, false);
    assert!(!pair.is_shared());
    pair.text().load_safetensors(&model_dir.join("model.safetensors")).unwrap();
    pair.copy_text_to_fusion().unwrap();
    let variables = vs.variables();
    assert!(variables.contains_key("fusion.encoder.layer.5.output.LayerNorm.weight"));
    assert!(variables.contains_key("encoder.layer.5.output.LayerNorm.weight"));

    let h = config.hidden_size as i64;
    let (ids, mask, _) = fusion_input(2, 1, h);
    let text_before = tch::no_grad(|| pair.text().forward_text(&ids, &mask, false));
    let fusion_before = tch::no_grad(|| pair.fusion().forward_text(&ids, &mask, false));
    assert_eq!(max_abs_diff(&text_before, &fusion_before), 0.0, "the copy starts equal");

    // Changing a fusion weight leaves the text encoder as it was ...
    tch::no_grad(|| {
        let _ = pair.fusion().encoder.layers[0].attention.self_attention.query.ws.shallow_clone().g_add_scalar_(0.05);
        let _ = pair.fusion().embeddings.word_embeddings.ws.shallow_clone().g_mul_scalar_(1.5);
    });
    let text_after = tch::no_grad(|| pair.text().forward_text(&ids, &mask, false));
    let fusion_after = tch::no_grad(|| pair.fusion().forward_text(&ids, &mask, false));
    assert_eq!(max_abs_diff(&text_before, &text_after), 0.0);
    assert!(max_abs_diff(&text_before, &fusion_after) > 1e-3);

    // ... and a loss on the fusion encoder gives gradients to its variables only.
    let loss = pair.fusion().forward_text(&ids, &mask, true).square().mean(None::<Kind>);
    loss.backward();
    for (name, t) in vs.variables() {
        if name.starts_with("shared.") || name.ends_with("pooler.dense.weight") || name.ends_with("pooler.dense.bias") {
            continue;
        }
        let grad = t.grad();
        let has_grad = grad.defined() && grad.abs().sum(None::<Kind>).double_value(&[]) > 0.0;
        if name.starts_with("fusion.") {
            if name.contains("visual_position") {
                continue;
            }
            assert!(has_grad, "{name} got no gradient");
        } else {
            assert!(!has_grad, "text variable {name} got a gradient from the fusion encoder");
        }
    }
}

#[test]
fn bfloat16_weights_run_and_stay_close() {
    let reference = reference();
    let (mut vs, model) = minilm();
    vs.bfloat16();
    let ids: Vec<Vec<u32>> = reference.sentences.iter().map(|s| s.ids.clone()).collect();
    let (ids, mask) = batch(&ids);
    let emb = tch::no_grad(|| model.text_embedding(&ids, &mask, false));
    assert_eq!(emb.kind(), Kind::BFloat16);
    let min = reference
        .sentences
        .iter()
        .enumerate()
        .map(|(i, s)| cosine(&emb.get(i as i64), &Tensor::from_slice(&s.embedding)))
        .fold(f64::INFINITY, f64::min);
    println!("bf16 weights: minimum cosine vs sentence-transformers {min:.6}");
    assert!(min >= 0.99, "bf16 cosine {min}");

    // Fusion with bf16 weights, and visual tokens of another precision.
    let h = model.config().hidden_size as i64;
    let visual = Tensor::randn([20, 49, h], (Kind::Float, Device::Cpu));
    let visual_mask = Tensor::ones([20, 49], (Kind::Int64, Device::Cpu));
    let (t, v) = tch::no_grad(|| model.forward_fusion(&ids, &mask, &visual, &visual_mask, false));
    assert_eq!((t.kind(), v.kind()), (Kind::BFloat16, Kind::BFloat16));
    assert!(v.to_kind(Kind::Float).isfinite().all().int64_value(&[]) == 1);
    let (_, v16) = tch::no_grad(|| model.forward_fusion(&ids, &mask, &visual.to_kind(Kind::BFloat16), &visual_mask, false));
    assert!(max_abs_diff(&v.to_kind(Kind::Float), &v16.to_kind(Kind::Float)) < 0.1);
}
