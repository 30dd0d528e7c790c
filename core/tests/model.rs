//! The candle inference model on a small random checkpoint in the trainer's
//! layout: loading (names, shapes, errors), the embeddings' invariants,
//! padding, fusion, and int8 weights (file and on-load quantisation, both
//! kernels). Parity with the tch trainer is tested in `tests/tests/candle_parity.rs`.

use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vitrine_core::model::quant::{quantize_safetensors, Int8Kernel};
use vitrine_core::model::{CheckpointConfig, FashionVil, LoadOptions, ModelError, TextEncoder, Weights};

const VOCAB: [&str; 12] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "black", "dress", "red", "##s", "shoe", "wool"];
const HIDDEN: usize = 32;
const LAYERS: usize = 2;
const INTERMEDIATE: usize = 64;
const CHANNELS: usize = 24;
const VISUAL_TOKENS: usize = 9;
const SCALE: f32 = 4.0;

/// A MiniLM-style tokenizer.json (uncased WordPiece) that pads to 16 tokens.
fn tokenizer_json() -> Vec<u8> {
    let vocab: Vec<String> = VOCAB.iter().enumerate().map(|(i, t)| format!("\"{t}\": {i}")).collect();
    format!(
        r###"{{
  "version": "1.0", "truncation": null,
  "padding": {{"strategy": {{"Fixed": 16}}, "direction": "Right", "pad_to_multiple_of": null, "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"}},
  "added_tokens": [],
  "normalizer": {{"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true, "strip_accents": null, "lowercase": true}},
  "pre_tokenizer": {{"type": "BertPreTokenizer"}},
  "post_processor": {{"type": "TemplateProcessing",
    "single": [{{"SpecialToken": {{"id": "[CLS]", "type_id": 0}}}}, {{"Sequence": {{"id": "A", "type_id": 0}}}}, {{"SpecialToken": {{"id": "[SEP]", "type_id": 0}}}}],
    "pair": [{{"Sequence": {{"id": "A", "type_id": 0}}}}, {{"Sequence": {{"id": "B", "type_id": 1}}}}],
    "special_tokens": {{"[CLS]": {{"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]}}, "[SEP]": {{"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}}}}}},
  "decoder": {{"type": "WordPiece", "prefix": "##", "cleanup": true}},
  "model": {{"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##", "max_input_chars_per_word": 100, "vocab": {{ {} }}}}
}}"###,
        vocab.join(", ")
    )
    .into_bytes()
}

const CATEGORIES: usize = 3;
const SUBCATEGORIES: usize = 5;

fn config_json(share_text_fusion: bool) -> Vec<u8> {
    serde_json::json!({
        "vocab_size": VOCAB.len(), "hidden_size": HIDDEN, "num_hidden_layers": LAYERS, "num_attention_heads": 4,
        "intermediate_size": INTERMEDIATE, "hidden_act": "gelu", "max_position_embeddings": 24, "type_vocab_size": 2,
        "layer_norm_eps": 1e-12, "max_visual_positions": VISUAL_TOKENS, "model_type": "bert",
        "fashionvil": {"backbone": "efficientnet-lite0", "image_channels": CHANNELS, "visual_tokens": VISUAL_TOKENS,
                       "share_text_fusion": share_text_fusion, "embedding_scale_init": 4.0, "pac_attributes": 3, "pac_scale": 10.0, "mpfc_codes": 8},
        "pac_vocabulary": ["black", "red", "wool"]
    })
    .to_string()
    .into_bytes()
}

/// The config of a fine-tuned checkpoint: class counts and names.
fn finetuned_config_json() -> Vec<u8> {
    let mut config: serde_json::Value = serde_json::from_slice(&config_json(true)).unwrap();
    config["fashionvil"]["categories"] = CATEGORIES.into();
    config["fashionvil"]["subcategories"] = SUBCATEGORIES.into();
    config["categories"] = serde_json::json!(["Shoes", "Dresses", "Bags"]);
    config["subcategories"] = serde_json::json!(["Boots", "Sneakers", "Maxi", "Mini", "Tote"]);
    config.to_string().into_bytes()
}

struct Tensors {
    rng: ChaCha8Rng,
    out: Vec<(String, Tensor)>,
}

impl Tensors {
    fn add(&mut self, name: &str, shape: &[usize], std: f32, mean: f32) {
        let n: usize = shape.iter().product();
        let values: Vec<f32> = (0..n).map(|_| mean + std * (self.rng.gen::<f32>() * 2.0 - 1.0)).collect();
        self.out.push((name.to_string(), Tensor::from_vec(values, shape, &Device::Cpu).unwrap()));
    }

    fn linear(&mut self, name: &str, in_dim: usize, out_dim: usize) {
        self.add(&format!("{name}.weight"), &[out_dim, in_dim], 1.0 / (in_dim as f32).sqrt(), 0.0);
        self.add(&format!("{name}.bias"), &[out_dim], 0.1, 0.0);
    }

    fn layer_norm(&mut self, name: &str) {
        self.add(&format!("{name}.weight"), &[HIDDEN], 0.1, 1.0);
        self.add(&format!("{name}.bias"), &[HIDDEN], 0.1, 0.0);
    }

    /// A BERT under `prefix`; `hugging_face` leaves out vitrine's visual positions.
    fn bert(&mut self, prefix: &str, hugging_face: bool) {
        self.add(&format!("{prefix}embeddings.word_embeddings.weight"), &[VOCAB.len(), HIDDEN], 1.0, 0.0);
        self.add(&format!("{prefix}embeddings.position_embeddings.weight"), &[24, HIDDEN], 0.5, 0.0);
        self.add(&format!("{prefix}embeddings.token_type_embeddings.weight"), &[2, HIDDEN], 0.5, 0.0);
        if !hugging_face {
            self.add(&format!("{prefix}embeddings.visual_position_embeddings.weight"), &[VISUAL_TOKENS, HIDDEN], 0.5, 0.0);
        }
        self.layer_norm(&format!("{prefix}embeddings.LayerNorm"));
        for i in 0..LAYERS {
            let p = format!("{prefix}encoder.layer.{i}");
            for part in ["query", "key", "value"] {
                self.linear(&format!("{p}.attention.self.{part}"), HIDDEN, HIDDEN);
            }
            self.linear(&format!("{p}.attention.output.dense"), HIDDEN, HIDDEN);
            self.layer_norm(&format!("{p}.attention.output.LayerNorm"));
            self.linear(&format!("{p}.intermediate.dense"), HIDDEN, INTERMEDIATE);
            self.linear(&format!("{p}.output.dense"), INTERMEDIATE, HIDDEN);
            self.layer_norm(&format!("{p}.output.LayerNorm"));
        }
        self.linear(&format!("{prefix}pooler.dense"), HIDDEN, HIDDEN);
    }

    fn serialize(self) -> Vec<u8> {
        safetensors::serialize(self.out.iter().map(|(n, t)| (n.as_str(), t)), None).unwrap()
    }
}

/// A random checkpoint in the trainer's layout, with pretext heads the
/// inference model does not read.
fn checkpoint(share_text_fusion: bool, seed: u64) -> Vec<u8> {
    let mut t = Tensors { rng: ChaCha8Rng::seed_from_u64(seed), out: Vec::new() };
    t.bert("bert.", false);
    if !share_text_fusion {
        t.bert("fusion_bert.", false);
    }
    t.linear("visual_projection", CHANNELS, HIDDEN);
    t.out.push(("embedding_scale".to_string(), Tensor::new(SCALE, &Device::Cpu).unwrap()));
    t.linear("heads.itm", HIDDEN, 2);
    t.linear("heads.mpfc", HIDDEN, 8);
    t.add("heads.pac_weights", &[3, HIDDEN], 0.1, 0.0);
    t.serialize()
}

/// A random fine-tuned checkpoint: a shared one plus the downstream heads.
fn finetuned_checkpoint(seed: u64) -> Vec<u8> {
    let mut t = Tensors { rng: ChaCha8Rng::seed_from_u64(seed), out: Vec::new() };
    let file = checkpoint(true, seed);
    let base = safetensors::SafeTensors::deserialize(&file).unwrap();
    for (name, view) in base.tensors() {
        let values: Vec<f32> = view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        t.out.push((name, Tensor::from_vec(values, view.shape(), &Device::Cpu).unwrap()));
    }
    for (head, classes) in [("category", CATEGORIES), ("subcategory", SUBCATEGORIES)] {
        t.linear(&format!("heads.{head}.transform.dense"), HIDDEN, HIDDEN);
        t.layer_norm(&format!("heads.{head}.transform.LayerNorm"));
        t.linear(&format!("heads.{head}.classifier"), HIDDEN, classes);
    }
    t.add("heads.ocir.category_embeddings.weight", &[CATEGORIES, HIDDEN], 1.0, 0.0);
    t.linear("heads.ocir.dense", 2 * HIDDEN, HIDDEN);
    t.linear("heads.ocir.output", HIDDEN, HIDDEN);
    t.serialize()
}

fn load(share: bool, bytes: &[u8], options: LoadOptions) -> Result<FashionVil, ModelError> {
    let config = CheckpointConfig::from_json(&config_json(share), "config.json")?;
    FashionVil::load(&config, &Weights::from_bytes(bytes, "model.safetensors")?, options)
}

fn encoder(share: bool, bytes: &[u8], options: LoadOptions) -> TextEncoder {
    TextEncoder::from_bytes(&config_json(share), bytes, &tokenizer_json(), options, 16).unwrap()
}

fn ids(tokens: &[u32]) -> Tensor {
    Tensor::from_vec(tokens.to_vec(), (1, tokens.len()), &Device::Cpu).unwrap()
}

fn rows(t: &Tensor) -> Vec<Vec<f32>> {
    t.to_dtype(DType::F32).unwrap().to_vec2().unwrap()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    dot / (a.iter().map(|x| x * x).sum::<f32>().sqrt() * b.iter().map(|x| x * x).sum::<f32>().sqrt())
}

fn norm(a: &[f32]) -> f32 {
    a.iter().map(|x| x * x).sum::<f32>().sqrt()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

const F32: LoadOptions = LoadOptions { quantize_text_encoder: false, int8_kernel: Int8Kernel::PerChannel };

#[test]
fn the_text_encoder_gives_the_models_text_embedding_with_the_learnt_scale() {
    let bytes = checkpoint(true, 1);
    let model = load(true, &bytes, F32).unwrap();
    let encoder = encoder(true, &bytes, F32);
    // "a black dress" → [CLS] a black dress [SEP], no padding despite the tokenizer.json.
    assert_eq!(encoder.tokenizer().encode("A black dress").unwrap().ids, [2, 5, 6, 7, 3]);
    let from_model = rows(&model.text_embedding(&ids(&[2, 5, 6, 7, 3]), None).unwrap()).remove(0);
    let from_encoder = encoder.embed("A black dress").unwrap();
    assert_eq!(from_encoder.len(), HIDDEN);
    assert!(max_diff(&from_model, &from_encoder) < 1e-6);
    assert!((norm(&from_encoder) - SCALE).abs() < 1e-4);
    // Other words, another direction.
    assert!(cosine(&from_encoder, &encoder.embed("red shoes").unwrap()) < 0.99);
}

#[test]
fn a_padded_batch_gives_each_texts_own_embedding() {
    let bytes = checkpoint(true, 2);
    let encoder = encoder(true, &bytes, F32);
    let texts = ["a black dress", "red", "wool shoes a red dress"];
    let batch = encoder.embed_batch(&texts).unwrap();
    for (text, embedding) in texts.iter().zip(&batch) {
        assert!(max_diff(embedding, &encoder.embed(text).unwrap()) < 1e-5, "{text}");
    }
}

#[test]
fn fusion_gives_the_tgir_query_pooled_output_and_itm_logits() {
    for share in [true, false] {
        let bytes = checkpoint(share, 3);
        let model = load(share, &bytes, F32).unwrap();
        assert_eq!(model.fusion_bert.is_some(), !share);
        let features = Tensor::randn(0f32, 1.0, (2, CHANNELS, 3, 3), &Device::Cpu).unwrap();
        let tokens = model.visual_tokens(&features).unwrap();
        assert_eq!(tokens.dims(), [2, VISUAL_TOKENS, HIDDEN]);
        for embedding in rows(&model.image_embedding(&tokens).unwrap()) {
            assert!((norm(&embedding) - SCALE).abs() < 1e-4);
        }
        // Two texts of different lengths, the shorter one padded.
        let text = Tensor::new(&[[2u32, 8, 7, 3, 0], [2, 5, 11, 6, 3]], &Device::Cpu).unwrap();
        let mask = Tensor::new(&[[1f32, 1., 1., 1., 0.], [1., 1., 1., 1., 1.]], &Device::Cpu).unwrap();
        let queries = rows(&model.tgir_query(&text, &mask, &tokens).unwrap());
        let visual_mask = Tensor::ones((2, VISUAL_TOKENS), DType::F32, &Device::Cpu).unwrap();
        let (text_out, visual_out) = model.fuse(&text, &mask, &tokens, &visual_mask).unwrap();
        assert_eq!((text_out.dims(), visual_out.dims()), (&[2, 5, HIDDEN][..], &[2, VISUAL_TOKENS, HIDDEN][..]));
        let pooled = model.pooled(&text_out).unwrap();
        assert_eq!(model.itm_logits(&pooled).unwrap().dims(), [2, 2]);
        // The padded text gives what it gives alone, unpadded.
        let alone = Tensor::new(&[[2u32, 8, 7, 3]], &Device::Cpu).unwrap();
        let alone_mask = Tensor::ones((1, 4), DType::F32, &Device::Cpu).unwrap();
        let first = tokens.narrow(0, 0, 1).unwrap();
        let query = rows(&model.tgir_query(&alone, &alone_mask, &first).unwrap()).remove(0);
        assert!(max_diff(&query, &queries[0]) < 1e-5, "share = {share}");
        assert!((norm(&query) - SCALE).abs() < 1e-4);
        let (alone_out, _) = model.fuse(&alone, &alone_mask, &first, &visual_mask.narrow(0, 0, 1).unwrap()).unwrap();
        let alone_pooled = rows(&model.pooled(&alone_out).unwrap()).remove(0);
        assert!(max_diff(&alone_pooled, &rows(&pooled)[0]) < 1e-5);
        // The visual tokens matter to the query.
        let other = rows(&model.tgir_query(&alone, &alone_mask, &tokens.narrow(0, 1, 1).unwrap()).unwrap()).remove(0);
        assert!(max_diff(&query, &other) > 1e-3);
    }
}

#[test]
fn int8_weights_load_from_a_quantised_file_or_while_loading() {
    let bytes = checkpoint(true, 4);
    let (int8_bytes, report) = quantize_safetensors(&bytes, "model.safetensors").unwrap();
    // Six linear layers per transformer layer, and the word embeddings.
    assert_eq!(report.layers.len(), LAYERS * 6 + 1);
    assert!(report.layers.contains(&"bert.encoder.layer.1.intermediate.dense".to_string()));
    assert!(report.layers.contains(&"bert.embeddings.word_embeddings".to_string()));
    assert!(report.bytes_after < report.bytes_before);
    let reference = encoder(true, &bytes, F32);
    assert!(!reference.is_int8());
    let texts = ["a black dress", "red wool shoes", "a red dress"];
    for kernel in [Int8Kernel::PerChannel, Int8Kernel::Q8_0] {
        let from_file = encoder(true, &int8_bytes, LoadOptions { quantize_text_encoder: false, int8_kernel: kernel });
        let on_load = encoder(true, &bytes, LoadOptions { quantize_text_encoder: true, int8_kernel: kernel });
        assert!(from_file.is_int8() && on_load.is_int8());
        for text in texts {
            let exact = reference.embed(text).unwrap();
            let a = from_file.embed(text).unwrap();
            assert!(cosine(&a, &exact) > 0.99, "{kernel:?} {text}: cosine {}", cosine(&a, &exact));
            assert!(cosine(&a, &exact) < 1.0 - 1e-9, "int8 differs from f32 at all");
            assert_eq!(a, on_load.embed(text).unwrap(), "the file holds what quantising on load gives");
        }
    }
    // The whole model reads the int8 file too; fusion shares the int8 layers.
    let model = load(true, &int8_bytes, F32).unwrap();
    assert!(model.bert.is_int8() && model.fusion().is_int8());

    // A −128 (which our quantiser never writes) is refused by name.
    let file = safetensors::SafeTensors::deserialize(&int8_bytes).unwrap();
    let target = "bert.encoder.layer.0.output.dense.weight_int8";
    let mut tensors: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> =
        file.tensors().into_iter().map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec())).collect();
    tensors.iter_mut().find(|t| t.0 == target).unwrap().3[5] = 0x80;
    let views = tensors.iter().map(|(n, d, s, b)| (n.as_str(), safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap()));
    let broken = safetensors::serialize(views, None).unwrap();
    let err = load(true, &broken, F32).err().unwrap();
    assert!(matches!(&err, ModelError::InvalidTensor { name, .. } if name == target), "{err}");
}

#[test]
fn a_hugging_face_bert_folder_loads_as_a_text_encoder() {
    let mut t = Tensors { rng: ChaCha8Rng::seed_from_u64(5), out: Vec::new() };
    t.bert("", true);
    let bytes = t.serialize();
    let mut config: serde_json::Value = serde_json::from_slice(&config_json(true)).unwrap();
    config.as_object_mut().unwrap().retain(|k, _| k != "fashionvil" && k != "pac_vocabulary");
    let encoder = TextEncoder::from_bytes(config.to_string().as_bytes(), &bytes, &tokenizer_json(), F32, 16).unwrap();
    // sentence-transformers' embedding: normalised, no scale.
    assert!((norm(&encoder.embed("red shoes").unwrap()) - 1.0).abs() < 1e-5);
    // Visual positions start as the text ones, as in the trainer.
    let embeddings = &encoder.bert().embeddings;
    assert_eq!(rows(&embeddings.visual_position_embeddings), rows(&embeddings.position_embeddings.narrow(0, 0, 9).unwrap()));
    let err = FashionVil::load(
        &CheckpointConfig::from_json(config.to_string().as_bytes(), "config.json").unwrap(),
        &Weights::from_bytes(&bytes, "model.safetensors").unwrap(),
        F32,
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("fashionvil"), "{err}");
}

#[test]
fn loading_errors_name_the_tensor_and_the_file() {
    let bytes = checkpoint(true, 6);
    let mut wrong = config_json(true);
    // A config that does not match the weights: another intermediate size.
    wrong = String::from_utf8(wrong).unwrap().replace("\"intermediate_size\":64", "\"intermediate_size\":48").into_bytes();
    let config = CheckpointConfig::from_json(&wrong, "config.json").unwrap();
    let err = FashionVil::load(&config, &Weights::from_bytes(&bytes, "ckpt/model.safetensors").unwrap(), F32).err().unwrap();
    let text = err.to_string();
    assert!(text.contains("ckpt/model.safetensors") && text.contains("bert.encoder.layer.0.intermediate.dense.weight"), "{text}");
    assert!(matches!(err, ModelError::Shape { .. }));
    // An unshared config over a shared checkpoint: fusion_bert is missing.
    let err = load(false, &bytes, F32).err().unwrap();
    assert!(matches!(&err, ModelError::MissingTensor { name, .. } if name.starts_with("fusion_bert.")), "{err}");
    // Not a safetensors file; not a config.
    assert!(matches!(Weights::from_bytes(b"\x08\0\0\0\0\0\0\0{}", "x").err().unwrap(), ModelError::Safetensors { .. }));
    assert!(matches!(CheckpointConfig::from_json(b"{\"hidden_size\": 3}", "c.json").err().unwrap(), ModelError::Config { .. }));
    let long = encoder(true, &bytes, F32).embed(&"a ".repeat(40)).map(|e| e.len());
    assert_eq!(long.unwrap(), HIDDEN, "long texts are truncated, not rejected");
}

#[test]
fn a_fine_tuned_checkpoint_has_the_category_and_outfit_heads() {
    let bytes = finetuned_checkpoint(7);
    let config = CheckpointConfig::from_json(&finetuned_config_json(), "config.json").unwrap();
    assert_eq!(config.categories, ["Shoes", "Dresses", "Bags"]);
    let model = FashionVil::load(&config, &Weights::from_bytes(&bytes, "model.safetensors").unwrap(), F32).unwrap();
    let features = Tensor::randn(0f32, 1.0, (3, CHANNELS, 3, 3), &Device::Cpu).unwrap();
    let tokens = model.visual_tokens(&features).unwrap();
    let text = Tensor::new(&[[2u32, 8, 7, 3], [2, 5, 11, 3], [2, 10, 9, 3]], &Device::Cpu).unwrap();
    let mask = Tensor::ones((3, 4), DType::F32, &Device::Cpu).unwrap();
    let (text_out, _) = model.fuse(&text, &mask, &tokens, &Tensor::ones((3, VISUAL_TOKENS), DType::F32, &Device::Cpu).unwrap()).unwrap();
    let pooled = model.pooled(&text_out).unwrap();
    assert_eq!(model.category_logits(&pooled).unwrap().dims(), [3, CATEGORIES]);
    assert_eq!(model.subcategory_logits(&pooled).unwrap().dims(), [3, SUBCATEGORIES]);

    // Outfit 0 = items 0 and 2, outfit 1 = item 1; item 2 is item 0 scaled,
    // so outfit 0's query equals that of item 0 alone.
    let items = model.image_embedding(&tokens).unwrap();
    let items = Tensor::cat(&[items.narrow(0, 0, 2).unwrap(), (items.narrow(0, 0, 1).unwrap() * 3.0).unwrap()], 0).unwrap();
    let queries = rows(&model.ocir_query(&items, &[0, 1, 0], &[2, 2]).unwrap());
    let alone = rows(&model.ocir_query(&items.narrow(0, 0, 1).unwrap(), &[0], &[2]).unwrap()).remove(0);
    assert!(max_diff(&queries[0], &alone) < 1e-5);
    assert!((norm(&queries[1]) - SCALE).abs() < 1e-4);
    // The wanted category changes the query.
    let other = rows(&model.ocir_query(&items.narrow(0, 0, 1).unwrap(), &[0], &[1]).unwrap()).remove(0);
    assert!(max_diff(&alone, &other) > 1e-3);
    assert!(matches!(model.ocir_query(&items, &[0, 1, 5], &[2, 2]), Err(ModelError::Input(_))));

    // A pretraining checkpoint has none of them.
    let pretrained = load(true, &checkpoint(true, 7), F32).unwrap();
    assert!(pretrained.downstream.is_none());
    let err = pretrained.category_logits(&pooled).err().unwrap().to_string();
    assert!(err.contains("not fine-tuned"), "{err}");
    // A config that promises heads the weights lack names the first missing one.
    let config = CheckpointConfig::from_json(&finetuned_config_json(), "config.json").unwrap();
    let missing = checkpoint(true, 7);
    let err = FashionVil::load(&config, &Weights::from_bytes(&missing, "model.safetensors").unwrap(), F32).err().unwrap();
    assert!(matches!(&err, ModelError::MissingTensor { name, .. } if name == "heads.category.transform.dense.weight"), "{err}");
}
