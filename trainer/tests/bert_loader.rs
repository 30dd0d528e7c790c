//! BERT config parsing, checkpoint loading (prefixes, legacy names, missing and
//! misshaped tensors) and the attention maths, on a small random BERT: no
//! downloaded weights needed.

use std::collections::HashMap;

use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};
use vitrine_trainer::model::bert::{attention_bias, masked_mean, BertConfig, BertError, BertModel, HiddenAct};

const TINY: &str = r#"{
  "architectures": ["BertModel"],
  "attention_probs_dropout_prob": 0.1,
  "hidden_act": "gelu",
  "hidden_dropout_prob": 0.1,
  "hidden_size": 32,
  "initializer_range": 0.02,
  "intermediate_size": 64,
  "layer_norm_eps": 1e-12,
  "max_position_embeddings": 64,
  "model_type": "bert",
  "num_attention_heads": 4,
  "num_hidden_layers": 2,
  "pad_token_id": 0,
  "position_embedding_type": "absolute",
  "transformers_version": "4.8.2",
  "type_vocab_size": 2,
  "vocab_size": 100
}"#;

fn tiny_config() -> BertConfig {
    let mut config = BertConfig::from_json_str(TINY, "tiny").unwrap();
    config.max_visual_positions = 8;
    config
}

fn tiny_model(seed: i64) -> (nn::VarStore, BertModel) {
    tch::manual_seed(seed);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = BertModel::new(&vs.root(), &tiny_config());
    (vs, model)
}

fn tensors_of(model: &BertModel, prefix: &str) -> HashMap<String, Tensor> {
    model.named_tensors().into_iter().map(|(k, t)| (format!("{prefix}{k}"), t.detach().copy())).collect()
}

fn inputs() -> (Tensor, Tensor) {
    let ids = Tensor::from_slice(&[1i64, 5, 6, 7, 2, 1, 8, 2, 0, 0]).view([2, 5]);
    let mask = Tensor::from_slice(&[1i64, 1, 1, 1, 1, 1, 1, 1, 0, 0]).view([2, 5]);
    (ids, mask)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn config_reads_hugging_face_json_and_keeps_unknown_fields() {
    let config = BertConfig::from_json_str(TINY, "tiny").unwrap();
    assert_eq!(config.hidden_size, 32);
    assert_eq!(config.hidden_act, HiddenAct::Gelu);
    assert_eq!(config.max_visual_positions, 49, "default: the 7×7 patch grid");
    assert_eq!(config.extra["model_type"], "bert");
    let back = BertConfig::from_json_str(&config.to_json_string(), "written").unwrap();
    assert_eq!(back, config);
    let json: serde_json::Value = serde_json::from_str(&config.to_json_string()).unwrap();
    assert_eq!(json["architectures"][0], "BertModel");
    assert_eq!(json["hidden_act"], "gelu");

    for (act, want) in
        [("gelu_new", HiddenAct::GeluApproximate), ("gelu_pytorch_tanh", HiddenAct::GeluApproximate), ("relu", HiddenAct::Relu)]
    {
        let c = BertConfig::from_json_str(&TINY.replace("\"gelu\"", &format!("\"{act}\"")), "act").unwrap();
        assert_eq!(c.hidden_act, want);
    }
    let minilm = BertConfig::all_minilm_l6_v2();
    assert_eq!((minilm.hidden_size, minilm.num_hidden_layers, minilm.num_attention_heads), (384, 6, 12));
}

#[test]
fn config_errors_say_what_is_wrong() {
    let err = BertConfig::from_json_str(&TINY.replace("\"num_attention_heads\": 4", "\"num_attention_heads\": 5"), "bad.json").unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("bad.json") && msg.contains("not a multiple of num_attention_heads 5"), "{msg}");
    let err = BertConfig::from_json_str(&TINY.replace("\"absolute\"", "\"relative_key\""), "rel.json").unwrap_err();
    assert!(err.to_string().contains("relative_key"), "{err}");
    let err = BertConfig::from_json_str(&TINY.replace("\"type_vocab_size\": 2", "\"type_vocab_size\": 1"), "t.json").unwrap_err();
    assert!(err.to_string().contains("token type 1"), "{err}");
    let err = BertConfig::from_json_str("{\"hidden_size\": 32}", "partial.json").unwrap_err();
    assert!(err.to_string().contains("vocab_size"), "{err}");
    assert!(matches!(BertConfig::from_file(std::path::Path::new("/nonexistent/config.json")), Err(BertError::Io { .. })));
}

#[test]
fn loads_plain_prefixed_and_legacy_names() {
    let (_vs, src) = tiny_model(1);
    let (ids, mask) = inputs();
    let want = tch::no_grad(|| src.forward_text(&ids, &mask, false));

    // `bert.` prefix (BertForPreTraining), LayerNorm gamma/beta, an MLM head,
    // the position_ids buffer, and no visual positions (a plain BERT file).
    let mut file: HashMap<String, Tensor> = HashMap::new();
    for (k, t) in tensors_of(&src, "bert.") {
        if k.contains("visual_position") {
            continue;
        }
        let k = k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta");
        file.insert(k, t);
    }
    file.insert("bert.embeddings.position_ids".into(), Tensor::arange(64, (Kind::Int64, Device::Cpu)).view([1, 64]));
    file.insert("cls.predictions.bias".into(), Tensor::zeros([100], (Kind::Float, Device::Cpu)));
    file.insert("bert.extra.weight".into(), Tensor::zeros([3], (Kind::Float, Device::Cpu)));

    let (_vs2, dst) = tiny_model(2);
    let report = dst.load_tensors(&file, None, "legacy").unwrap();
    assert_eq!(report.prefix, "bert.");
    assert_eq!(report.initialised, ["embeddings.visual_position_embeddings.weight"]);
    assert_eq!(report.unused, ["bert.extra.weight"]);
    let got = tch::no_grad(|| dst.forward_text(&ids, &mask, false));
    assert_eq!(max_abs_diff(&want, &got), 0.0);
    // Visual positions follow the loaded text positions, not the old init.
    let pos = dst.embeddings.position_embeddings.ws.narrow(0, 0, 8);
    assert_eq!(max_abs_diff(&dst.embeddings.visual_position_embeddings.ws, &pos), 0.0);

    // A checkpoint with the prefix-free names and with `fusion.` names beside
    // them: the prefix-free ones win unless a prefix is asked for.
    let (_vs3, other) = tiny_model(3);
    let mut both = tensors_of(&src, "");
    both.extend(tensors_of(&other, "fusion."));
    let (_vs4, dst) = tiny_model(4);
    assert_eq!(dst.load_tensors(&both, None, "both").unwrap().prefix, "");
    assert_eq!(max_abs_diff(&tch::no_grad(|| dst.forward_text(&ids, &mask, false)), &want), 0.0);
    let report = dst.load_tensors(&both, Some("fusion."), "both").unwrap();
    assert!(report.initialised.is_empty());
    let other_out = tch::no_grad(|| other.forward_text(&ids, &mask, false));
    assert_eq!(max_abs_diff(&tch::no_grad(|| dst.forward_text(&ids, &mask, false)), &other_out), 0.0);

    // No pooler (sentence-transformers exports sometimes drop it): initialised.
    let no_pooler: HashMap<String, Tensor> = tensors_of(&src, "").into_iter().filter(|(k, _)| !k.starts_with("pooler.")).collect();
    let report = dst.load_tensors(&no_pooler, None, "no pooler").unwrap();
    assert_eq!(report.initialised, ["pooler.dense.weight", "pooler.dense.bias"]);
}

#[test]
fn missing_and_misshaped_tensors_are_named() {
    let (_vs, src) = tiny_model(1);
    let (_vs2, dst) = tiny_model(2);
    let dir = tempfile::tempdir().unwrap();

    let mut file = tensors_of(&src, "");
    file.remove("encoder.layer.1.attention.self.key.bias");
    let path = dir.path().join("missing.safetensors");
    Tensor::write_safetensors(&file.iter().collect::<Vec<_>>(), &path).unwrap();
    let err = dst.load_safetensors(&path).unwrap_err();
    assert!(matches!(&err, BertError::MissingKey { key, .. } if key == "encoder.layer.1.attention.self.key.bias"), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("encoder.layer.1.attention.self.key.bias") && msg.contains("missing.safetensors"), "{msg}");

    let mut file = tensors_of(&src, "");
    file.insert("encoder.layer.0.intermediate.dense.weight".into(), Tensor::zeros([63, 32], (Kind::Float, Device::Cpu)));
    let err = dst.load_tensors(&file, None, "shape.safetensors").unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("encoder.layer.0.intermediate.dense.weight") && msg.contains("[63, 32]") && msg.contains("[64, 32]"), "{msg}");

    let file: HashMap<String, Tensor> = [("weight".to_string(), Tensor::zeros([2], (Kind::Float, Device::Cpu)))].into_iter().collect();
    let err = dst.load_tensors(&file, None, "other.safetensors").unwrap_err();
    assert!(err.to_string().contains("embeddings.word_embeddings.weight"), "{err}");

    let err = dst.load_safetensors(&dir.path().join("absent.safetensors")).unwrap_err();
    assert!(matches!(err, BertError::Io { .. }), "{err:?}");

    // A half-precision checkpoint loads into the f32 model.
    let half: HashMap<String, Tensor> = tensors_of(&src, "").into_iter().map(|(k, t)| (k, t.to_kind(Kind::Half))).collect();
    dst.load_tensors(&half, None, "half").unwrap();
    let w = &dst.encoder.layers[0].output.dense.ws;
    assert_eq!(w.kind(), Kind::Float);
    assert!(max_abs_diff(w, &src.encoder.layers[0].output.dense.ws) < 1e-3);
}

/// The attention, written out as Hugging Face's eager implementation.
fn eager_self_attention(model: &BertModel, layer: usize, xs: &Tensor, mask: &Tensor) -> Tensor {
    let a = &model.encoder.layers[layer].attention.self_attention;
    let (b, s, h) = xs.size3().unwrap();
    let heads = model.config().num_attention_heads as i64;
    let d = h / heads;
    let split = |t: Tensor| t.view([b, s, heads, d]).transpose(1, 2);
    let (q, k, v) = (split(a.query.forward(xs)), split(a.key.forward(xs)), split(a.value.forward(xs)));
    let scores = q.matmul(&k.transpose(-1, -2)) / (d as f64).sqrt();
    let bias = (mask.to_kind(Kind::Float).neg() + 1.0).view([b, 1, 1, s]) * f64::from(f32::MIN);
    let probs = (scores + bias).softmax(-1, Kind::Float);
    probs.matmul(&v).transpose(1, 2).contiguous().view([b, s, h])
}

#[test]
fn attention_matches_the_eager_formula_and_masks_exactly() {
    let (_vs, model) = tiny_model(5);
    let (ids, mask) = inputs();
    let xs = tch::no_grad(|| model.embeddings.forward(&ids, None, false));
    let got = tch::no_grad(|| model.encoder.layers[0].attention.self_attention.forward(&xs, Some(&mask), false));
    let want = tch::no_grad(|| eager_self_attention(&model, 0, &xs, &mask));
    assert!(max_abs_diff(&got, &want) < 1e-6, "{}", max_abs_diff(&got, &want));

    let bias = attention_bias(&mask, Kind::Float);
    assert_eq!(bias.size(), [2, 1, 1, 5]);
    assert_eq!(bias.double_value(&[1, 0, 0, 4]), f64::from(f32::MIN));
    assert_eq!(bias.double_value(&[1, 0, 0, 2]), 0.0);
    let bias16 = attention_bias(&mask, Kind::BFloat16);
    assert!(bias16.to_kind(Kind::Float).isfinite().all().int64_value(&[]) == 1, "bf16 bias must stay finite");

    // Padding content never reaches real tokens.
    let out = tch::no_grad(|| model.forward_text(&ids, &mask, false));
    let ids2 = ids.copy();
    let _ = ids2.get(1).narrow(0, 3, 2).fill_(42);
    let out2 = tch::no_grad(|| model.forward_text(&ids2, &mask, false));
    assert!(max_abs_diff(&out.get(1).narrow(0, 0, 3), &out2.get(1).narrow(0, 0, 3)) <= 1e-6);

    // Mean pooling ignores padding.
    let pooled = masked_mean(&out, &mask);
    let by_hand = out.get(1).narrow(0, 0, 3).mean_dim([0i64].as_slice(), false, Kind::Float);
    assert!(max_abs_diff(&pooled.get(1), &by_hand) < 1e-6);
    let emb = tch::no_grad(|| model.text_embedding(&ids, &mask, false));
    let norms = emb.norm_scalaropt_dim(2.0, [-1i64].as_slice(), false);
    assert!(max_abs_diff(&norms, &Tensor::ones([2], (Kind::Float, Device::Cpu))) < 1e-6);

    // Pooler: tanh(dense(first token)).
    let pooled = tch::no_grad(|| model.pooled(&out));
    let want = tch::no_grad(|| model.pooler.dense.forward(&out.select(1, 0)).tanh());
    assert_eq!(max_abs_diff(&pooled, &want), 0.0);
}

#[test]
fn dropout_is_active_only_in_training() {
    let (_vs, model) = tiny_model(6);
    let (ids, mask) = inputs();
    let a = tch::no_grad(|| model.forward_text(&ids, &mask, false));
    let b = tch::no_grad(|| model.forward_text(&ids, &mask, false));
    assert_eq!(max_abs_diff(&a, &b), 0.0);
    let c = tch::no_grad(|| model.forward_text(&ids, &mask, true));
    assert!(max_abs_diff(&a, &c) > 1e-3);
}

#[test]
#[should_panic(expected = "exceed max_visual_positions 8")]
fn too_many_visual_tokens_panic_with_a_clear_message() {
    let (_vs, model) = tiny_model(7);
    let (ids, mask) = inputs();
    let visual = Tensor::zeros([2, 9, 32], (Kind::Float, Device::Cpu));
    let visual_mask = Tensor::ones([2, 9], (Kind::Int64, Device::Cpu));
    let _ = model.forward_fusion(&ids, &mask, &visual, &visual_mask, false);
}
