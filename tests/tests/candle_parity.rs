//! The same checkpoint run by the tch trainer and by the candle inference
//! model (core) gives the same outputs: text embeddings, image embeddings,
//! TGIR queries (mean fused visual tokens), pooled fused outputs, ITM, CR and
//! SCR logits and OCIR queries, with cosine >= 0.9999 in f32; and the int8
//! text encoder stays within cosine 0.995 of f32 candle. The checkpoint is
//! trained here on a generated catalog; the texts are real H&M titles and
//! descriptions (and TGIR modification texts) when the sample is there.

mod support;

use std::path::Path;

use candle_core::Tensor as CandleTensor;
use tch::{nn, Device, Kind, Tensor};
use vitrine_core::catalog::{Catalog, Split};
use vitrine_core::model::{FashionVil as CandleModel, Int8Kernel, LoadOptions, TextEncoder};
use vitrine_core::tasks::tgir_triplets;
use vitrine_core::text::Tokenizer;
use vitrine_trainer::checkpoint;
use vitrine_trainer::model::bert::BertConfig;
use vitrine_trainer::model::fashionvil::{FashionVil as TchModel, FashionVilConfig};
use vitrine_trainer::teacher::load_finetuned;

const MAX_TOKENS: usize = 64;
const TEXTS: usize = 24;
const PAIRS: usize = 8;
const F32: LoadOptions = LoadOptions { quantize_text_encoder: false, int8_kernel: Int8Kernel::PerChannel };
const INT8: LoadOptions = LoadOptions { quantize_text_encoder: true, int8_kernel: Int8Kernel::PerChannel };
const PARITY: f64 = 0.9999;
const INT8_PARITY: f64 = 0.995;

type Rows = Vec<Vec<f32>>;

/// Token ids padded to the longest text, and the keep-mask.
struct Batch {
    ids: Vec<u32>,
    mask: Vec<u32>,
    rows: usize,
    longest: usize,
}

impl Batch {
    fn new(tokenizer: &Tokenizer, texts: &[String]) -> Batch {
        let encoded: Vec<Vec<u32>> = texts.iter().map(|t| tokenizer.encode(t).unwrap().ids).collect();
        let longest = encoded.iter().map(Vec::len).max().unwrap();
        let (mut ids, mut mask) = (Vec::new(), Vec::new());
        for e in &encoded {
            ids.extend(e.iter().copied().chain(std::iter::repeat_n(0, longest - e.len())));
            mask.extend((0..longest).map(|i| u32::from(i < e.len())));
        }
        Batch { ids, mask, rows: texts.len(), longest }
    }

    fn tch(&self) -> (Tensor, Tensor) {
        let shape = [self.rows as i64, self.longest as i64];
        let ids: Vec<i64> = self.ids.iter().map(|&i| i64::from(i)).collect();
        let mask: Vec<i64> = self.mask.iter().map(|&m| i64::from(m)).collect();
        (Tensor::from_slice(&ids).view(shape), Tensor::from_slice(&mask).view(shape))
    }

    fn candle(&self) -> (CandleTensor, CandleTensor) {
        let shape = (self.rows, self.longest);
        let mask: Vec<f32> = self.mask.iter().map(|&m| m as f32).collect();
        (candle(self.ids.clone(), shape), candle(mask, shape))
    }
}

fn candle<T: candle_core::WithDType, S: Into<candle_core::Shape>>(values: Vec<T>, shape: S) -> CandleTensor {
    CandleTensor::from_vec(values, shape, &candle_core::Device::Cpu).unwrap()
}

fn tch_rows(t: &Tensor) -> Rows {
    Vec::<Vec<f32>>::try_from(&t.to_kind(Kind::Float)).unwrap()
}

fn candle_rows(t: &CandleTensor) -> Rows {
    t.to_vec2().unwrap()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
    let norm = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

fn min_cosine(a: &Rows, b: &Rows) -> f64 {
    assert_eq!((a.len(), a[0].len()), (b.len(), b[0].len()), "outputs of different shapes");
    a.iter().zip(b).map(|(x, y)| cosine(x, y)).fold(f64::INFINITY, f64::min)
}

/// The inputs every output is computed from.
struct Inputs {
    texts: Batch,
    /// Item texts with their images: ITM, CR and SCR.
    items: Batch,
    /// Modification texts with reference images: TGIR.
    modifications: Batch,
    /// Image feature maps `[PAIRS, C, 7, 7]`, row-major.
    features: Vec<f32>,
    channels: usize,
    /// OCIR: the outfit of each image, and each outfit's wanted category.
    outfit_of: Vec<u32>,
    wanted: Vec<u32>,
}

/// The outputs compared, by name.
type Outputs = Vec<(&'static str, Rows)>;

fn tch_outputs(model: &TchModel, inputs: &Inputs) -> Outputs {
    tch::no_grad(|| {
        let (ids, mask) = inputs.texts.tch();
        let text = model.text_embedding(&ids, &mask, false);
        let features = Tensor::from_slice(&inputs.features).view([PAIRS as i64, inputs.channels as i64, 7, 7]);
        let tokens = model.visual_tokens(&features);
        let image = model.image_embedding(&tokens);
        let visual_mask = Tensor::ones([PAIRS as i64, 49], (Kind::Int64, Device::Cpu));
        let (ids, mask) = inputs.modifications.tch();
        let (_, visual_out) = model.fuse(&ids, &mask, &tokens, &visual_mask, false);
        let tgir = model.fused_visual_embedding(&visual_out, &visual_mask);
        let (ids, mask) = inputs.items.tch();
        let (text_out, _) = model.fuse(&ids, &mask, &tokens, &visual_mask, false);
        let pooled = model.pooled(&text_out);
        let itm = nn::Module::forward(&model.itm_head, &pooled);
        let heads = model.downstream.as_ref().expect("a fine-tuned checkpoint");
        let outfit_of = Tensor::from_slice(&inputs.outfit_of.iter().map(|&o| i64::from(o)).collect::<Vec<_>>());
        let wanted = Tensor::from_slice(&inputs.wanted.iter().map(|&c| i64::from(c)).collect::<Vec<_>>());
        let ocir = model.scaled(&heads.outfit.forward(&image, &outfit_of, &wanted));
        vec![
            ("text embedding", tch_rows(&text)),
            ("image embedding", tch_rows(&image)),
            ("TGIR query", tch_rows(&tgir)),
            ("pooled fused output", tch_rows(&pooled)),
            ("ITM logits", tch_rows(&itm)),
            ("CR logits", tch_rows(&heads.category.forward(&pooled))),
            ("SCR logits", tch_rows(&heads.subcategory.forward(&pooled))),
            ("OCIR query", tch_rows(&ocir)),
        ]
    })
}

fn candle_outputs(model: &CandleModel, inputs: &Inputs) -> Outputs {
    let (ids, mask) = inputs.texts.candle();
    let text = model.text_embedding(&ids, Some(&mask)).unwrap();
    let features = candle(inputs.features.clone(), (PAIRS, inputs.channels, 7, 7));
    let tokens = model.visual_tokens(&features).unwrap();
    let image = model.image_embedding(&tokens).unwrap();
    let (ids, mask) = inputs.modifications.candle();
    let tgir = model.tgir_query(&ids, &mask, &tokens).unwrap();
    let (ids, mask) = inputs.items.candle();
    let visual_mask = CandleTensor::ones((PAIRS, 49), candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
    let (text_out, _) = model.fuse(&ids, &mask, &tokens, &visual_mask).unwrap();
    let pooled = model.pooled(&text_out).unwrap();
    vec![
        ("text embedding", candle_rows(&text)),
        ("image embedding", candle_rows(&image)),
        ("TGIR query", candle_rows(&tgir)),
        ("pooled fused output", candle_rows(&pooled)),
        ("ITM logits", candle_rows(&model.itm_logits(&pooled).unwrap())),
        ("CR logits", candle_rows(&model.category_logits(&pooled).unwrap())),
        ("SCR logits", candle_rows(&model.subcategory_logits(&pooled).unwrap())),
        ("OCIR query", candle_rows(&model.ocir_query(&image, &inputs.outfit_of, &inputs.wanted).unwrap())),
    ]
}

/// Compares output by output; returns the minimum cosines for the report.
fn compare(label: &str, expected: &Outputs, got: &Outputs, threshold: f64) -> Vec<(&'static str, f64)> {
    let mut figures = Vec::new();
    for ((name, a), (other, b)) in expected.iter().zip(got) {
        assert_eq!(name, other);
        let min = min_cosine(a, b);
        eprintln!("{label}: {name}: min cosine {min:.12} (1 − {:.1e}) over {} rows", 1.0 - min, a.len());
        assert!(min >= threshold, "{label}: {name}: min cosine {min} < {threshold}");
        figures.push((*name, min));
    }
    figures
}

/// Texts of the real catalog (or the generated one): item texts of the test
/// split and TGIR modification texts.
fn texts(catalog: &Catalog) -> (Vec<String>, Vec<String>) {
    let items: Vec<String> = catalog.items_in(Split::Test).map(|(_, item)| item.text()).take(TEXTS).collect();
    let mut modifications: Vec<String> =
        tgir_triplets(catalog).into_iter().filter(|t| t.split == Split::Test).map(|t| t.modification).collect();
    modifications.dedup();
    modifications.truncate(PAIRS);
    assert_eq!((items.len(), modifications.len()), (TEXTS, PAIRS), "the catalog has too few test texts");
    (items, modifications)
}

fn inputs(tokenizer: &Tokenizer, catalog: &Catalog, channels: usize, categories: usize) -> Inputs {
    let (items, modifications) = texts(catalog);
    tch::manual_seed(11);
    // Non-negative like the CNN's feature maps (ReLU6), of a similar range.
    let features = Tensor::rand([PAIRS as i64, channels as i64, 7, 7], (Kind::Float, Device::Cpu)) * 3.0;
    let features = Vec::<f32>::try_from(&features.flatten(0, -1)).unwrap();
    Inputs {
        texts: Batch::new(tokenizer, &items),
        items: Batch::new(tokenizer, &items[..PAIRS]),
        modifications: Batch::new(tokenizer, &modifications),
        features,
        channels,
        outfit_of: vec![0, 0, 1, 1, 1, 2, 2, 3],
        wanted: (0..4).map(|i| (i % categories) as u32).collect(),
    }
}

/// The checkpoint with text and fusion not shared: `fusion_bert` starts as a
/// perturbed copy of `bert` (so that running the wrong tower shows), written
/// as a checkpoint folder for candle; returns the tch model and the folder.
fn unshared_variant(shared: &Path, out: &Path) -> (nn::VarStore, TchModel) {
    let mut config = checkpoint::read_config(shared).unwrap();
    config["fashionvil"]["share_text_fusion"] = false.into();
    let bert: BertConfig = serde_json::from_value(config.clone()).unwrap();
    let model_config: FashionVilConfig = serde_json::from_value(config["fashionvil"].clone()).unwrap();
    let vs = nn::VarStore::new(Device::Cpu);
    let model = TchModel::new(&vs.root(), &bert, model_config, false);
    let fresh = checkpoint::load_model_except(shared, &vs, &["fusion_bert."]).unwrap();
    assert!(!fresh.is_empty());
    let variables = vs.variables();
    tch::manual_seed(12);
    tch::no_grad(|| {
        for name in &fresh {
            let source = &variables[&name.replacen("fusion_bert.", "bert.", 1)];
            let mut target = variables[name].shallow_clone();
            target.copy_(&(source * (source.randn_like() * 0.1 + 1.0)));
        }
    });
    std::fs::create_dir_all(out).unwrap();
    vs.save(out.join("model.safetensors")).unwrap();
    std::fs::write(out.join("config.json"), serde_json::to_string_pretty(&config).unwrap()).unwrap();
    std::fs::copy(shared.join("tokenizer.json"), out.join("tokenizer.json")).unwrap();
    (vs, model)
}

#[test]
fn candle_runs_a_trained_checkpoint_like_tch_in_f32_and_close_in_int8() {
    let dir = tempfile::tempdir().unwrap();
    let (generated, paths) = support::generated_catalog(dir.path());
    let recipe = support::tiny_recipe(MAX_TOKENS);
    let checkpoint_dir = support::finetuned_checkpoint(&generated, &paths, &recipe, dir.path());
    let (catalog, source) = support::real_catalog_or(generated);

    let reference = load_finetuned(&checkpoint_dir, MAX_TOKENS, Device::Cpu).unwrap();
    let model = CandleModel::from_dir(&checkpoint_dir, F32).unwrap();
    let categories = model.config.categories;
    assert!(categories > 0 && model.downstream.is_some());
    let inputs = inputs(&reference.tokenizer, &catalog, model.config.image_channels, categories);
    let expected = tch_outputs(&reference.model, &inputs);
    eprintln!("texts from the {source} catalog; checkpoint {}", checkpoint_dir.display());
    compare("tch vs candle f32", &expected, &candle_outputs(&model, &inputs), PARITY);

    // The text encoder on its own, one unpadded query at a time, as the
    // browser and the CLI run it.
    let encoder = TextEncoder::from_dir(&checkpoint_dir, F32, MAX_TOKENS).unwrap();
    let (items, _) = texts(&catalog);
    let one_by_one: Rows = items.iter().map(|t| encoder.embed(t).unwrap()).collect();
    let min = min_cosine(&expected[0].1, &one_by_one);
    eprintln!("tch vs candle TextEncoder f32: text embedding: min cosine {min:.12} (1 − {:.1e})", 1.0 - min);
    assert!(min >= PARITY);

    // Int8 text encoder (shared with fusion) against f32 candle.
    let int8_model = CandleModel::from_dir(&checkpoint_dir, INT8).unwrap();
    assert!(int8_model.bert.is_int8());
    let candle_f32 = candle_outputs(&model, &inputs);
    let int8 = candle_outputs(&int8_model, &inputs);
    for (name, threshold) in [("text embedding", INT8_PARITY), ("TGIR query", INT8_PARITY), ("pooled fused output", INT8_PARITY)] {
        let [f32_rows, int8_rows] = [&candle_f32, &int8].map(|o| &o.iter().find(|(n, _)| *n == name).unwrap().1);
        let min = min_cosine(f32_rows, int8_rows);
        eprintln!("candle f32 vs int8: {name}: min cosine {min:.6}");
        assert!(min >= threshold && min < 1.0, "{name}: {min}");
    }
    let int8_encoder = TextEncoder::from_dir(&checkpoint_dir, INT8, MAX_TOKENS).unwrap();
    let int8_texts: Rows = items.iter().map(|t| int8_encoder.embed(t).unwrap()).collect();
    let min = min_cosine(&one_by_one, &int8_texts);
    eprintln!("candle f32 vs int8 TextEncoder: text embedding: min cosine {min:.6}");
    assert!(min >= INT8_PARITY);

    // Text and fusion not shared: candle must run `fusion_bert` for fusion.
    let unshared_dir = dir.path().join("unshared");
    let (_vs, unshared) = unshared_variant(&checkpoint_dir, &unshared_dir);
    let candle_unshared = CandleModel::from_dir(&unshared_dir, F32).unwrap();
    assert!(candle_unshared.fusion_bert.is_some());
    let expected_unshared = tch_outputs(&unshared, &inputs);
    compare("tch vs candle f32, unshared fusion", &expected_unshared, &candle_outputs(&candle_unshared, &inputs), PARITY);
    let moved = min_cosine(&expected[2].1, &expected_unshared[2].1);
    assert!(moved < 0.999, "the perturbed fusion tower changes the TGIR query (cosine {moved})");
}
