//! BERT, the shared text and fusion encoder (FashionViL: one BERT encodes the
//! text alone and the text together with the visual tokens).
//!
//! The modules and their variable names follow Hugging Face's `BertModel`, so a
//! checkpoint such as all-MiniLM-L6-v2 or bert-base-uncased loads by name and
//! [`tch::nn::VarStore::save`] writes Hugging Face names back:
//!
//! ```text
//! embeddings.word_embeddings.weight             [vocab, H]
//! embeddings.position_embeddings.weight         [max_positions, H]
//! embeddings.token_type_embeddings.weight       [type_vocab, H]
//! embeddings.visual_position_embeddings.weight  [max_visual_positions, H]   (vitrine's own)
//! embeddings.LayerNorm.{weight,bias}
//! encoder.layer.{i}.attention.self.{query,key,value}.{weight,bias}
//! encoder.layer.{i}.attention.output.dense.{weight,bias}
//! encoder.layer.{i}.attention.output.LayerNorm.{weight,bias}
//! encoder.layer.{i}.intermediate.dense.{weight,bias}
//! encoder.layer.{i}.output.dense.{weight,bias}
//! encoder.layer.{i}.output.LayerNorm.{weight,bias}
//! pooler.dense.{weight,bias}
//! ```
//!
//! These names are relative to the [`nn::Path`] the model is built under; the
//! same names are what [`BertModel::named_tensors`] lists, the walk that the
//! candle inference model mirrors.
//!
//! Two modes share every weight:
//! - text: `[CLS] text [SEP]` with token type 0 and BERT's position embeddings
//!   ([`BertModel::forward_text`], [`BertModel::text_embedding`]);
//! - fusion: the same text followed by visual tokens (already projected to H by
//!   the caller), with full self-attention over both. Visual tokens get token
//!   type 1 and their own position embeddings
//!   (`embeddings.visual_position_embeddings`, initialised from the first rows of
//!   BERT's position embeddings), and go through the same embedding LayerNorm
//!   ([`BertModel::forward_fusion`]).
//!
//! Padding is masked with an additive bias equal to the attention dtype's
//! minimum (as Hugging Face does), so a masked token has exactly zero weight. No
//! module casts to f32: under autocast, libtorch runs LayerNorm and softmax in
//! f32 by itself.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

/// Errors of reading a BERT config or checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum BertError {
    #[error("cannot read {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("invalid BERT config {origin}: {reason}")]
    Config { origin: String, reason: String },
    #[error(
        "checkpoint {origin} has no tensor `{key}`: not a BERT checkpoint in the Hugging Face layout, or config.json does not match it"
    )]
    MissingKey { origin: String, key: String },
    #[error(
        "checkpoint {origin}: tensor `{key}` has shape {found:?}, the model expects {expected:?} (does config.json match the weights?)"
    )]
    Shape { origin: String, key: String, expected: Vec<i64>, found: Vec<i64> },
    #[error("checkpoint {origin}: {source}")]
    Tch { origin: String, source: tch::TchError },
}

/// The activation of the feed-forward block (`hidden_act` in config.json).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum HiddenAct {
    /// Exact GELU with erf (`"gelu"`), BERT's and MiniLM's.
    #[default]
    #[serde(rename = "gelu")]
    Gelu,
    /// The tanh approximation of GELU (`"gelu_new"`, `"gelu_pytorch_tanh"`).
    #[serde(rename = "gelu_new", alias = "gelu_pytorch_tanh", alias = "gelu_fast")]
    GeluApproximate,
    #[serde(rename = "relu")]
    Relu,
}

impl HiddenAct {
    pub fn forward(self, xs: &Tensor) -> Tensor {
        match self {
            HiddenAct::Gelu => xs.gelu("none"),
            HiddenAct::GeluApproximate => xs.gelu("tanh"),
            HiddenAct::Relu => xs.relu(),
        }
    }
}

/// `position_embedding_type` in config.json; only learned absolute positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PositionEmbeddingType {
    #[default]
    Absolute,
}

/// A Hugging Face BERT `config.json`, plus vitrine's `max_visual_positions`.
///
/// Fields this model does not use are kept in `extra`, so writing the config back
/// gives a config.json that Hugging Face still reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default)]
    pub hidden_act: HiddenAct,
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab_size")]
    pub type_vocab_size: usize,
    #[serde(default = "default_initializer_range")]
    pub initializer_range: f64,
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub pad_token_id: usize,
    #[serde(default)]
    pub position_embedding_type: PositionEmbeddingType,
    /// Rows of `embeddings.visual_position_embeddings`: the most visual tokens a
    /// fusion input may have (49 = the 7×7 patch grid). Not a Hugging Face field.
    #[serde(default = "default_max_visual_positions")]
    pub max_visual_positions: usize,
    /// Every other field of config.json, kept as read.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

fn default_dropout() -> f64 {
    0.1
}
fn default_max_positions() -> usize {
    512
}
fn default_type_vocab_size() -> usize {
    2
}
fn default_initializer_range() -> f64 {
    0.02
}
fn default_layer_norm_eps() -> f64 {
    1e-12
}
fn default_max_visual_positions() -> usize {
    49
}

impl BertConfig {
    /// all-MiniLM-L6-v2's config (H=384, 6 layers, 12 heads).
    pub fn all_minilm_l6_v2() -> Self {
        BertConfig {
            vocab_size: 30522,
            hidden_size: 384,
            num_hidden_layers: 6,
            num_attention_heads: 12,
            intermediate_size: 1536,
            hidden_act: HiddenAct::Gelu,
            hidden_dropout_prob: 0.1,
            attention_probs_dropout_prob: 0.1,
            max_position_embeddings: 512,
            type_vocab_size: 2,
            initializer_range: 0.02,
            layer_norm_eps: 1e-12,
            pad_token_id: 0,
            position_embedding_type: PositionEmbeddingType::Absolute,
            max_visual_positions: 49,
            extra: BTreeMap::new(),
        }
    }

    /// Parses and checks a config.json; `origin` names it in errors.
    pub fn from_json_str(json: &str, origin: &str) -> Result<Self, BertError> {
        let config: BertConfig =
            serde_json::from_str(json).map_err(|e| BertError::Config { origin: origin.to_string(), reason: e.to_string() })?;
        config.validate().map_err(|reason| BertError::Config { origin: origin.to_string(), reason })?;
        Ok(config)
    }

    pub fn from_file(path: &Path) -> Result<Self, BertError> {
        let json = std::fs::read_to_string(path).map_err(|source| BertError::Io { path: path.to_path_buf(), source })?;
        Self::from_json_str(&json, &path.display().to_string())
    }

    /// The config as pretty JSON (Hugging Face fields first, then `extra`).
    pub fn to_json_string(&self) -> String {
        serde_json::to_string_pretty(self).expect("a BertConfig always serialises")
    }

    /// Checks what the model needs of the sizes.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} must be positive"));
        }
        if self.hidden_size / self.num_attention_heads * self.num_attention_heads != self.hidden_size {
            return Err(format!("hidden_size {} is not a multiple of num_attention_heads {}", self.hidden_size, self.num_attention_heads));
        }
        if self.type_vocab_size < 2 {
            return Err(format!("type_vocab_size is {}; fusion needs token type 1 for visual tokens", self.type_vocab_size));
        }
        if self.max_visual_positions > self.max_position_embeddings {
            return Err(format!(
                "max_visual_positions {} exceeds max_position_embeddings {} (visual positions start as a copy of the text ones)",
                self.max_visual_positions, self.max_position_embeddings
            ));
        }
        if self.pad_token_id >= self.vocab_size {
            return Err(format!("pad_token_id {} is not below vocab_size {}", self.pad_token_id, self.vocab_size));
        }
        Ok(())
    }

    fn head_size(&self) -> i64 {
        (self.hidden_size / self.num_attention_heads) as i64
    }
}

// ---------------------------------------------------------------------------
// Helpers shared by the modules.

fn linear(p: nn::Path, in_dim: usize, out_dim: usize, config: &BertConfig) -> nn::Linear {
    let c = nn::LinearConfig {
        ws_init: nn::Init::Randn { mean: 0.0, stdev: config.initializer_range },
        bs_init: Some(nn::Init::Const(0.0)),
        bias: true,
    };
    nn::linear(p, in_dim as i64, out_dim as i64, c)
}

fn layer_norm(p: nn::Path, config: &BertConfig) -> nn::LayerNorm {
    let c = nn::LayerNormConfig { eps: config.layer_norm_eps, ..Default::default() };
    nn::layer_norm(p, vec![config.hidden_size as i64], c)
}

fn embedding(p: nn::Path, rows: usize, config: &BertConfig, padding_idx: Option<usize>) -> nn::Embedding {
    let c = nn::EmbeddingConfig {
        ws_init: nn::Init::Randn { mean: 0.0, stdev: config.initializer_range },
        padding_idx: padding_idx.map_or(-1, |i| i as i64),
        ..Default::default()
    };
    let e = nn::embedding(p, rows as i64, config.hidden_size as i64, c);
    if let Some(i) = padding_idx {
        // Like Hugging Face's init: the padding row starts at zero.
        tch::no_grad(|| {
            let _ = e.ws.get(i as i64).zero_();
        });
    }
    e
}

/// Collects `(name, tensor)` pairs under dotted prefixes.
struct Names<'a> {
    prefix: String,
    out: &'a mut Vec<(String, Tensor)>,
}

impl Names<'_> {
    fn push(&mut self, name: &str, t: &Tensor) {
        self.out.push((format!("{}{name}", self.prefix), t.shallow_clone()));
    }
    fn sub(&mut self, name: &str) -> Names<'_> {
        Names { prefix: format!("{}{name}.", self.prefix), out: self.out }
    }
    fn linear(&mut self, name: &str, l: &nn::Linear) {
        let mut s = self.sub(name);
        s.push("weight", &l.ws);
        if let Some(b) = &l.bs {
            s.push("bias", b);
        }
    }
    fn layer_norm(&mut self, name: &str, l: &nn::LayerNorm) {
        let mut s = self.sub(name);
        if let Some(w) = &l.ws {
            s.push("weight", w);
        }
        if let Some(b) = &l.bs {
            s.push("bias", b);
        }
    }
    fn embedding(&mut self, name: &str, e: &nn::Embedding) {
        self.sub(name).push("weight", &e.ws);
    }
}

/// `[B, S]` keep-mask (1 = attend, 0 = masked; any numeric or bool kind) →
/// additive bias `[B, 1, 1, S]` of `kind`: 0 where kept, the kind's minimum where
/// masked (Hugging Face's `(1 - mask) * finfo(dtype).min`).
pub fn attention_bias(mask: &Tensor, kind: Kind) -> Tensor {
    let (b, s) = mask.size2().expect("attention mask must be [batch, seq]");
    let min = match kind {
        Kind::Half => -65504.0,
        Kind::BFloat16 => -3.389_531_389_251_535_5e38,
        Kind::Double => f64::MIN,
        _ => f64::from(f32::MIN),
    };
    (mask.eq(0).to_kind(kind) * min).view([b, 1, 1, s])
}

/// Mean of `hidden [B, T, H]` over the tokens where `mask [B, T]` is non-zero
/// (sentence-transformers' mean pooling) → `[B, H]`.
pub fn masked_mean(hidden: &Tensor, mask: &Tensor) -> Tensor {
    let m = mask.ne(0).to_kind(hidden.kind()).unsqueeze(-1);
    let sum = (hidden * &m).sum_dim_intlist([1i64].as_slice(), false, None::<Kind>);
    let count = m.sum_dim_intlist([1i64].as_slice(), false, None::<Kind>).clamp_min(1e-9);
    sum / count
}

/// L2-normalises the last dimension (eps 1e-12, as `torch.nn.functional.normalize`).
pub fn l2_normalize(xs: &Tensor) -> Tensor {
    let norm = xs.norm_scalaropt_dim(2.0, [-1i64].as_slice(), true).clamp_min(1e-12);
    xs / norm
}

fn ids_i64(ids: &Tensor) -> Tensor {
    if ids.kind() == Kind::Int64 {
        ids.shallow_clone()
    } else {
        ids.to_kind(Kind::Int64)
    }
}

// ---------------------------------------------------------------------------
// Modules (Hugging Face's modeling_bert.py, one struct per module).

/// Word, position and token-type embeddings, plus vitrine's visual position
/// embeddings; LayerNorm and dropout.
#[derive(Debug)]
pub struct BertEmbeddings {
    pub word_embeddings: nn::Embedding,
    pub position_embeddings: nn::Embedding,
    pub token_type_embeddings: nn::Embedding,
    /// Positions of the visual tokens of a fusion input (`visual_position_embeddings`).
    pub visual_position_embeddings: nn::Embedding,
    pub layer_norm: nn::LayerNorm,
    dropout: f64,
    max_position_embeddings: i64,
    max_visual_positions: i64,
    hidden_size: i64,
}

impl BertEmbeddings {
    pub fn new(p: nn::Path, config: &BertConfig) -> Self {
        let word_embeddings = embedding(&p / "word_embeddings", config.vocab_size, config, Some(config.pad_token_id));
        let position_embeddings = embedding(&p / "position_embeddings", config.max_position_embeddings, config, None);
        let token_type_embeddings = embedding(&p / "token_type_embeddings", config.type_vocab_size, config, None);
        let visual_position_embeddings = embedding(&p / "visual_position_embeddings", config.max_visual_positions, config, None);
        let layer_norm = layer_norm(&p / "LayerNorm", config);
        let embeddings = BertEmbeddings {
            word_embeddings,
            position_embeddings,
            token_type_embeddings,
            visual_position_embeddings,
            layer_norm,
            dropout: config.hidden_dropout_prob,
            max_position_embeddings: config.max_position_embeddings as i64,
            max_visual_positions: config.max_visual_positions as i64,
            hidden_size: config.hidden_size as i64,
        };
        embeddings.init_visual_positions_from_text();
        embeddings
    }

    /// Sets the visual position embeddings to the first rows of the text
    /// position embeddings (DESIGN: "their own position embeddings, init from
    /// BERT's").
    pub fn init_visual_positions_from_text(&self) {
        let rows = self.max_visual_positions;
        tch::no_grad(|| {
            let mut dst = self.visual_position_embeddings.ws.shallow_clone();
            dst.copy_(&self.position_embeddings.ws.narrow(0, 0, rows));
        });
    }

    /// Text tokens: `input_ids [B, T]` (and optional `token_type_ids [B, T]`,
    /// default 0) → `[B, T, H]`.
    pub fn forward(&self, input_ids: &Tensor, token_type_ids: Option<&Tensor>, train: bool) -> Tensor {
        let (_, t) = input_ids.size2().expect("input_ids must be [batch, seq]");
        assert!(t <= self.max_position_embeddings, "text of {t} tokens exceeds max_position_embeddings {}", self.max_position_embeddings);
        let positions = Tensor::arange(t, (Kind::Int64, input_ids.device()));
        let words = self.word_embeddings.forward(&ids_i64(input_ids));
        let types = match token_type_ids {
            Some(tt) => self.token_type_embeddings.forward(&ids_i64(tt)),
            None => self.token_type_embeddings.ws.get(0),
        };
        let xs = words + self.position_embeddings.forward(&positions) + types;
        self.layer_norm.forward(&xs).dropout(self.dropout, train)
    }

    /// Visual tokens already projected to H: `visual [B, V, H]` → `[B, V, H]`,
    /// with token type 1 and the visual position embeddings.
    pub fn forward_visual(&self, visual: &Tensor, train: bool) -> Tensor {
        let (_, v, h) = visual.size3().expect("visual tokens must be [batch, tokens, hidden]");
        assert_eq!(h, self.hidden_size, "visual tokens have width {h}, BERT's hidden size is {}", self.hidden_size);
        assert!(v <= self.max_visual_positions, "{v} visual tokens exceed max_visual_positions {}", self.max_visual_positions);
        let positions = Tensor::arange(v, (Kind::Int64, visual.device()));
        // The tokens take the embedding tables' kind (a projection may hand over
        // another precision, e.g. bf16 under autocast or f32 into bf16 weights).
        let kind = self.visual_position_embeddings.ws.kind();
        let visual = if visual.kind() == kind { visual.shallow_clone() } else { visual.to_kind(kind) };
        let xs = visual + self.visual_position_embeddings.forward(&positions) + self.token_type_embeddings.ws.get(1);
        self.layer_norm.forward(&xs).dropout(self.dropout, train)
    }

    fn names(&self, n: &mut Names) {
        n.embedding("word_embeddings", &self.word_embeddings);
        n.embedding("position_embeddings", &self.position_embeddings);
        n.embedding("token_type_embeddings", &self.token_type_embeddings);
        n.embedding("visual_position_embeddings", &self.visual_position_embeddings);
        n.layer_norm("LayerNorm", &self.layer_norm);
    }
}

/// Multi-head self-attention (`attention.self`): query, key, value.
#[derive(Debug)]
pub struct BertSelfAttention {
    pub query: nn::Linear,
    pub key: nn::Linear,
    pub value: nn::Linear,
    dropout: f64,
    num_attention_heads: i64,
    attention_head_size: i64,
}

impl BertSelfAttention {
    pub fn new(p: nn::Path, config: &BertConfig) -> Self {
        let h = config.hidden_size;
        BertSelfAttention {
            query: linear(&p / "query", h, h, config),
            key: linear(&p / "key", h, h, config),
            value: linear(&p / "value", h, h, config),
            dropout: config.attention_probs_dropout_prob,
            num_attention_heads: config.num_attention_heads as i64,
            attention_head_size: config.head_size(),
        }
    }

    /// `[B, S, H]` → `[B, heads, S, head_size]`.
    fn transpose_for_scores(&self, xs: &Tensor) -> Tensor {
        let (b, s, _) = xs.size3().expect("hidden states must be [batch, seq, hidden]");
        xs.view([b, s, self.num_attention_heads, self.attention_head_size]).transpose(1, 2)
    }

    /// `hidden_states [B, S, H]`, `attention_mask [B, S]` (1 = attend) → `[B, S, H]`.
    pub fn forward(&self, hidden_states: &Tensor, attention_mask: Option<&Tensor>, train: bool) -> Tensor {
        let (b, s, _) = hidden_states.size3().expect("hidden states must be [batch, seq, hidden]");
        let q = self.transpose_for_scores(&self.query.forward(hidden_states));
        let k = self.transpose_for_scores(&self.key.forward(hidden_states));
        let v = self.transpose_for_scores(&self.value.forward(hidden_states));
        // The bias takes the kind the scores are computed in (bf16 under autocast).
        let bias = attention_mask.map(|m| attention_bias(m, q.kind()));
        let dropout = if train { self.dropout } else { 0.0 };
        // softmax(q kᵀ / sqrt(d) + bias) v, with dropout on the probabilities.
        let context = Tensor::scaled_dot_product_attention(&q, &k, &v, bias.as_ref(), dropout, false, None, false);
        context.transpose(1, 2).contiguous().view([b, s, self.num_attention_heads * self.attention_head_size])
    }

    fn names(&self, n: &mut Names) {
        n.linear("query", &self.query);
        n.linear("key", &self.key);
        n.linear("value", &self.value);
    }
}

/// The projection after self-attention (`attention.output`): dense, dropout,
/// residual, LayerNorm.
#[derive(Debug)]
pub struct BertSelfOutput {
    pub dense: nn::Linear,
    pub layer_norm: nn::LayerNorm,
    dropout: f64,
}

impl BertSelfOutput {
    pub fn new(p: nn::Path, config: &BertConfig) -> Self {
        BertSelfOutput {
            dense: linear(&p / "dense", config.hidden_size, config.hidden_size, config),
            layer_norm: layer_norm(&p / "LayerNorm", config),
            dropout: config.hidden_dropout_prob,
        }
    }

    pub fn forward(&self, hidden_states: &Tensor, input_tensor: &Tensor, train: bool) -> Tensor {
        let xs = self.dense.forward(hidden_states).dropout(self.dropout, train);
        self.layer_norm.forward(&(xs + input_tensor))
    }

    fn names(&self, n: &mut Names) {
        n.linear("dense", &self.dense);
        n.layer_norm("LayerNorm", &self.layer_norm);
    }
}

/// Self-attention and its output block (`attention`: `self`, `output`).
#[derive(Debug)]
pub struct BertAttention {
    pub self_attention: BertSelfAttention,
    pub self_output: BertSelfOutput,
}

impl BertAttention {
    pub fn new(p: nn::Path, config: &BertConfig) -> Self {
        BertAttention {
            self_attention: BertSelfAttention::new(&p / "self", config),
            self_output: BertSelfOutput::new(&p / "output", config),
        }
    }

    pub fn forward(&self, hidden_states: &Tensor, attention_mask: Option<&Tensor>, train: bool) -> Tensor {
        let self_outputs = self.self_attention.forward(hidden_states, attention_mask, train);
        self.self_output.forward(&self_outputs, hidden_states, train)
    }

    fn names(&self, n: &mut Names) {
        self.self_attention.names(&mut n.sub("self"));
        self.self_output.names(&mut n.sub("output"));
    }
}

/// The feed-forward expansion (`intermediate`): dense + activation.
#[derive(Debug)]
pub struct BertIntermediate {
    pub dense: nn::Linear,
    pub intermediate_act: HiddenAct,
}

impl BertIntermediate {
    pub fn new(p: nn::Path, config: &BertConfig) -> Self {
        BertIntermediate {
            dense: linear(&p / "dense", config.hidden_size, config.intermediate_size, config),
            intermediate_act: config.hidden_act,
        }
    }

    pub fn forward(&self, hidden_states: &Tensor) -> Tensor {
        self.intermediate_act.forward(&self.dense.forward(hidden_states))
    }

    fn names(&self, n: &mut Names) {
        n.linear("dense", &self.dense);
    }
}

/// The feed-forward contraction (`output`): dense, dropout, residual, LayerNorm.
#[derive(Debug)]
pub struct BertOutput {
    pub dense: nn::Linear,
    pub layer_norm: nn::LayerNorm,
    dropout: f64,
}

impl BertOutput {
    pub fn new(p: nn::Path, config: &BertConfig) -> Self {
        BertOutput {
            dense: linear(&p / "dense", config.intermediate_size, config.hidden_size, config),
            layer_norm: layer_norm(&p / "LayerNorm", config),
            dropout: config.hidden_dropout_prob,
        }
    }

    pub fn forward(&self, hidden_states: &Tensor, input_tensor: &Tensor, train: bool) -> Tensor {
        let xs = self.dense.forward(hidden_states).dropout(self.dropout, train);
        self.layer_norm.forward(&(xs + input_tensor))
    }

    fn names(&self, n: &mut Names) {
        n.linear("dense", &self.dense);
        n.layer_norm("LayerNorm", &self.layer_norm);
    }
}

/// One transformer layer (`encoder.layer.{i}`).
#[derive(Debug)]
pub struct BertLayer {
    pub attention: BertAttention,
    pub intermediate: BertIntermediate,
    pub output: BertOutput,
}

impl BertLayer {
    pub fn new(p: nn::Path, config: &BertConfig) -> Self {
        BertLayer {
            attention: BertAttention::new(&p / "attention", config),
            intermediate: BertIntermediate::new(&p / "intermediate", config),
            output: BertOutput::new(&p / "output", config),
        }
    }

    pub fn forward(&self, hidden_states: &Tensor, attention_mask: Option<&Tensor>, train: bool) -> Tensor {
        let attention_output = self.attention.forward(hidden_states, attention_mask, train);
        let intermediate_output = self.intermediate.forward(&attention_output);
        self.output.forward(&intermediate_output, &attention_output, train)
    }

    fn names(&self, n: &mut Names) {
        self.attention.names(&mut n.sub("attention"));
        self.intermediate.names(&mut n.sub("intermediate"));
        self.output.names(&mut n.sub("output"));
    }
}

/// The stack of layers (`encoder.layer`).
#[derive(Debug)]
pub struct BertEncoder {
    pub layers: Vec<BertLayer>,
}

impl BertEncoder {
    pub fn new(p: nn::Path, config: &BertConfig) -> Self {
        let p = &p / "layer";
        BertEncoder { layers: (0..config.num_hidden_layers).map(|i| BertLayer::new(&p / i, config)).collect() }
    }

    pub fn forward(&self, hidden_states: &Tensor, attention_mask: Option<&Tensor>, train: bool) -> Tensor {
        let mut xs = hidden_states.shallow_clone();
        for layer in &self.layers {
            xs = layer.forward(&xs, attention_mask, train);
        }
        xs
    }

    fn names(&self, n: &mut Names) {
        let mut layers = n.sub("layer");
        for (i, layer) in self.layers.iter().enumerate() {
            layer.names(&mut layers.sub(&i.to_string()));
        }
    }
}

/// Hugging Face's pooler (`pooler`): tanh(dense(first token)).
#[derive(Debug)]
pub struct BertPooler {
    pub dense: nn::Linear,
}

impl BertPooler {
    pub fn new(p: nn::Path, config: &BertConfig) -> Self {
        BertPooler { dense: linear(&p / "dense", config.hidden_size, config.hidden_size, config) }
    }

    /// `hidden_states [B, S, H]` → `[B, H]`.
    pub fn forward(&self, hidden_states: &Tensor) -> Tensor {
        self.dense.forward(&hidden_states.select(1, 0)).tanh()
    }

    fn names(&self, n: &mut Names) {
        n.linear("dense", &self.dense);
    }
}

/// What [`BertModel::load_tensors`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// The prefix the checkpoint's names carried (`""`, `"bert."`, …).
    pub prefix: String,
    /// Variables filled from the checkpoint (model names).
    pub loaded: Vec<String>,
    /// Variables the checkpoint lacks and that were initialised instead: the
    /// visual position embeddings (from the text ones) and the pooler (random).
    pub initialised: Vec<String>,
    /// Checkpoint tensors under the prefix that the model does not use (e.g. an
    /// MLM head), beside known buffers such as `embeddings.position_ids`.
    pub unused: Vec<String>,
}

/// The BERT encoder: embeddings, encoder layers and pooler.
#[derive(Debug)]
pub struct BertModel {
    pub embeddings: BertEmbeddings,
    pub encoder: BertEncoder,
    pub pooler: BertPooler,
    config: BertConfig,
    device: Device,
}

/// The variables a checkpoint may lack: they are initialised instead.
const VISUAL_POSITIONS: &str = "embeddings.visual_position_embeddings.weight";
const POOLER_PREFIX: &str = "pooler.";
/// Buffers Hugging Face saves next to the weights.
const KNOWN_BUFFERS: [&str; 1] = ["embeddings.position_ids"];

impl BertModel {
    /// A randomly initialised model (Hugging Face's init: N(0, initializer_range)
    /// weights, zero biases) with its variables under `p`; the visual position
    /// embeddings start as a copy of the text ones.
    ///
    /// Panics if the config does not pass [`BertConfig::validate`].
    pub fn new(p: &nn::Path, config: &BertConfig) -> Self {
        if let Err(reason) = config.validate() {
            panic!("invalid BERT config: {reason}");
        }
        BertModel {
            embeddings: BertEmbeddings::new(p / "embeddings", config),
            encoder: BertEncoder::new(p / "encoder", config),
            pooler: BertPooler::new(p / "pooler", config),
            config: config.clone(),
            device: p.device(),
        }
    }

    /// Builds the model under `p` from a folder with `config.json` and
    /// `model.safetensors` (Hugging Face layout).
    pub fn from_pretrained(p: &nn::Path, dir: &Path) -> Result<(Self, LoadReport), BertError> {
        let config = BertConfig::from_file(&dir.join("config.json"))?;
        let model = BertModel::new(p, &config);
        let report = model.load_safetensors(&dir.join("model.safetensors"))?;
        Ok((model, report))
    }

    /// A new model under `p` with the config and a copy of the weights of `src`
    /// (the `share_text_fusion = false` ablation's separate fusion encoder).
    pub fn copy_of(p: &nn::Path, src: &BertModel) -> Self {
        let model = BertModel::new(p, &src.config);
        model.copy_weights_from(src).expect("a model built from the same config has the same shapes");
        model
    }

    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// See [`BertEmbeddings::init_visual_positions_from_text`].
    pub fn init_visual_positions_from_text(&self) {
        self.embeddings.init_visual_positions_from_text();
    }

    /// Every variable with its Hugging Face name relative to the model, in module
    /// order (embeddings, encoder layers, pooler).
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        let mut root = Names { prefix: String::new(), out: &mut out };
        self.embeddings.names(&mut root.sub("embeddings"));
        self.encoder.names(&mut root.sub("encoder"));
        self.pooler.names(&mut root.sub("pooler"));
        out
    }

    /// The general forward: `input_ids [B, T]`, optional `token_type_ids [B, T]`
    /// and `attention_mask [B, T]` (1 = token, 0 = padding) → last hidden state
    /// `[B, T, H]`.
    pub fn forward(&self, input_ids: &Tensor, token_type_ids: Option<&Tensor>, attention_mask: Option<&Tensor>, train: bool) -> Tensor {
        let xs = self.embeddings.forward(input_ids, token_type_ids, train);
        self.encoder.forward(&xs, attention_mask, train)
    }

    /// Text mode: `[CLS] text [SEP]` ids `[B, T]` and mask `[B, T]` → `[B, T, H]`.
    pub fn forward_text(&self, input_ids: &Tensor, attention_mask: &Tensor, train: bool) -> Tensor {
        self.forward(input_ids, None, Some(attention_mask), train)
    }

    /// The sentence embedding `[B, H]`: masked mean of the last hidden state,
    /// L2-normalised (sentence-transformers' all-MiniLM-L6-v2 pipeline). The
    /// learnable scale of the paper's embeddings belongs to the caller.
    pub fn text_embedding(&self, input_ids: &Tensor, attention_mask: &Tensor, train: bool) -> Tensor {
        l2_normalize(&masked_mean(&self.forward_text(input_ids, attention_mask, train), attention_mask))
    }

    /// Fusion mode: text `[B, T]` (with its mask) followed by visual tokens
    /// `[B, V, H]` (projected by the caller; mask `[B, V]`, 1 = attend), full
    /// self-attention over all `T + V` tokens → (`text_out [B, T, H]`,
    /// `visual_out [B, V, H]`).
    pub fn forward_fusion(
        &self,
        input_ids: &Tensor,
        text_mask: &Tensor,
        visual: &Tensor,
        visual_mask: &Tensor,
        train: bool,
    ) -> (Tensor, Tensor) {
        let (b, t) = input_ids.size2().expect("input_ids must be [batch, seq]");
        let (bv, v, _) = visual.size3().expect("visual tokens must be [batch, tokens, hidden]");
        assert_eq!(b, bv, "text batch {b} and visual batch {bv} differ");
        assert_eq!(text_mask.size(), [b, t], "text mask must be [batch, text tokens]");
        assert_eq!(visual_mask.size(), [b, v], "visual mask must be [batch, visual tokens]");
        let text = self.embeddings.forward(input_ids, None, train);
        let vis = self.embeddings.forward_visual(visual, train);
        let xs = Tensor::cat(&[text, vis], 1);
        let mask = Tensor::cat(&[text_mask.ne(0), visual_mask.ne(0)], 1);
        let out = self.encoder.forward(&xs, Some(&mask), train);
        (out.narrow(1, 0, t), out.narrow(1, t, v))
    }

    /// The pooled output `[B, H]` of a last hidden state `[B, S, H]` (its first
    /// token through the pooler).
    pub fn pooled(&self, hidden_states: &Tensor) -> Tensor {
        self.pooler.forward(hidden_states)
    }

    /// Loads a safetensors checkpoint; see [`BertModel::load_tensors`].
    pub fn load_safetensors(&self, path: &Path) -> Result<LoadReport, BertError> {
        let origin = path.display().to_string();
        if !path.exists() {
            return Err(BertError::Io { path: path.to_path_buf(), source: std::io::ErrorKind::NotFound.into() });
        }
        let tensors: HashMap<String, Tensor> =
            Tensor::read_safetensors(path).map_err(|source| BertError::Tch { origin: origin.clone(), source })?.into_iter().collect();
        self.load_tensors(&tensors, None, &origin)
    }

    /// Fills every variable from `tensors` by name, checking shapes; `origin`
    /// names the source in errors.
    ///
    /// The names may carry a prefix: `prefix` if given, else the one found before
    /// `embeddings.word_embeddings.weight` (none, `bert.` as in
    /// `BertForPreTraining`, …; none wins when several are present). Old
    /// TensorFlow-converted LayerNorm names (`gamma`, `beta`) are accepted. A
    /// missing visual position table is initialised from the loaded text
    /// positions and a missing pooler keeps its initialisation (both listed in
    /// the report); any other missing or misshaped tensor is an error naming it.
    pub fn load_tensors(&self, tensors: &HashMap<String, Tensor>, prefix: Option<&str>, origin: &str) -> Result<LoadReport, BertError> {
        const ANCHOR: &str = "embeddings.word_embeddings.weight";
        let prefix = match prefix {
            Some(p) => p.to_string(),
            None => {
                let mut found: Vec<&str> = tensors.keys().filter_map(|k| k.strip_suffix(ANCHOR)).collect();
                found.sort_by_key(|p| (p.len(), *p));
                match found.first() {
                    Some(p) => p.to_string(),
                    None => return Err(BertError::MissingKey { origin: origin.to_string(), key: ANCHOR.to_string() }),
                }
            }
        };
        let mut report = LoadReport { prefix: prefix.clone(), ..Default::default() };
        let mut used = std::collections::HashSet::new();
        let mut visual_missing = false;
        tch::no_grad(|| -> Result<(), BertError> {
            for (name, var) in self.named_tensors() {
                let key = format!("{prefix}{name}");
                let legacy = name
                    .strip_suffix("LayerNorm.weight")
                    .map(|s| format!("{prefix}{s}LayerNorm.gamma"))
                    .or_else(|| name.strip_suffix("LayerNorm.bias").map(|s| format!("{prefix}{s}LayerNorm.beta")));
                let found = tensors.get_key_value(&key).or_else(|| legacy.as_ref().and_then(|l| tensors.get_key_value(l)));
                let Some((file_key, src)) = found else {
                    if name == VISUAL_POSITIONS {
                        visual_missing = true;
                        report.initialised.push(name);
                        continue;
                    }
                    if name.starts_with(POOLER_PREFIX) {
                        report.initialised.push(name);
                        continue;
                    }
                    return Err(BertError::MissingKey { origin: origin.to_string(), key });
                };
                if src.size() != var.size() {
                    return Err(BertError::Shape {
                        origin: origin.to_string(),
                        key: file_key.clone(),
                        expected: var.size(),
                        found: src.size(),
                    });
                }
                let mut dst = var;
                dst.f_copy_(src).map_err(|source| BertError::Tch { origin: format!("{origin} ({file_key})"), source })?;
                used.insert(file_key.clone());
                report.loaded.push(name);
            }
            Ok(())
        })?;
        if visual_missing {
            self.init_visual_positions_from_text();
        }
        let mut unused: Vec<String> = tensors
            .keys()
            .filter(|k| !used.contains(*k))
            .filter_map(|k| k.strip_prefix(prefix.as_str()).map(|rest| (k, rest)))
            .filter(|(_, rest)| !KNOWN_BUFFERS.contains(rest))
            .map(|(k, _)| k.clone())
            .collect();
        unused.sort();
        report.unused = unused;
        Ok(report)
    }

    /// Writes the weights to a safetensors file under their Hugging Face names
    /// (relative to the model, whatever its VarStore path).
    pub fn save_safetensors(&self, path: &Path) -> Result<(), BertError> {
        let named = self.named_tensors();
        Tensor::write_safetensors(&named, path).map_err(|source| BertError::Tch { origin: path.display().to_string(), source })
    }

    /// Copies every weight of `src` (same config shapes) into this model.
    pub fn copy_weights_from(&self, src: &BertModel) -> Result<(), BertError> {
        let tensors: HashMap<String, Tensor> = src.named_tensors().into_iter().collect();
        self.load_tensors(&tensors, Some(""), "the source model").map(|_| ())
    }
}

/// The text encoder and the fusion encoder: one shared BERT (the paper's
/// default, `share_text_fusion = true`) or two (the ablation), the fusion one
/// under its own VarStore path and starting as a copy of the text one.
#[derive(Debug)]
pub struct TextFusionBert {
    text: BertModel,
    fusion: Option<BertModel>,
}

impl TextFusionBert {
    /// Builds the text model under `text_path` and, unless `share_text_fusion`,
    /// a separate fusion model under `fusion_path` (e.g. `root / "fusion"`) that
    /// starts as a copy of the text one.
    pub fn new(text_path: &nn::Path, fusion_path: &nn::Path, config: &BertConfig, share_text_fusion: bool) -> Self {
        let text = BertModel::new(text_path, config);
        let fusion = (!share_text_fusion).then(|| BertModel::copy_of(fusion_path, &text));
        TextFusionBert { text, fusion }
    }

    pub fn is_shared(&self) -> bool {
        self.fusion.is_none()
    }

    pub fn text(&self) -> &BertModel {
        &self.text
    }

    /// The fusion encoder: the text one when shared.
    pub fn fusion(&self) -> &BertModel {
        self.fusion.as_ref().unwrap_or(&self.text)
    }

    /// Copies the text weights into the separate fusion model (after loading
    /// pretrained text weights); nothing to do when shared.
    pub fn copy_text_to_fusion(&self) -> Result<(), BertError> {
        match &self.fusion {
            Some(f) => f.copy_weights_from(&self.text),
            None => Ok(()),
        }
    }
}
