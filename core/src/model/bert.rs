//! BERT, the shared text and fusion encoder, for inference: the trainer's
//! `trainer/src/model/bert.rs` in candle, module for module and name for name
//! (Hugging Face's `BertModel` names plus `embeddings.visual_position_embeddings`).
//!
//! Two modes share every weight:
//! - text: `[CLS] text [SEP]` with token type 0 and BERT's position embeddings
//!   ([`BertModel::forward_text`]);
//! - fusion: the same text followed by visual tokens (already projected to H),
//!   with full self-attention over both; visual tokens get token type 1 and
//!   their own position embeddings and go through the same embedding LayerNorm
//!   ([`BertModel::forward_fusion`]).
//!
//! Padding is masked as the trainer does: the scores of masked keys get
//! `f32::MIN` added, so their attention weight is exactly zero.

use std::sync::Arc;

use candle_core::{DType, Module, Tensor, D};
use serde::{Deserialize, Serialize};

use super::quant::{Int8Kernel, Int8Matrix, Linear};
use super::weights::Weights;
use super::ModelError;

/// The tensor whose prefix tells where a BERT's names start in a file.
pub const WORD_EMBEDDINGS: &str = "embeddings.word_embeddings.weight";

/// The activation of the feed-forward block (`hidden_act` in config.json).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum HiddenAct {
    /// Exact GELU with erf (`"gelu"`), BERT's and MiniLM's.
    #[default]
    #[serde(rename = "gelu")]
    Gelu,
    /// The tanh approximation of GELU.
    #[serde(rename = "gelu_new", alias = "gelu_pytorch_tanh", alias = "gelu_fast")]
    GeluApproximate,
    #[serde(rename = "relu")]
    Relu,
}

impl HiddenAct {
    fn forward(self, xs: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            HiddenAct::Gelu => xs.gelu_erf(),
            HiddenAct::GeluApproximate => xs.gelu(),
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

/// The fields of a Hugging Face BERT `config.json` that inference reads, plus
/// vitrine's `max_visual_positions` (other fields are ignored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default)]
    pub hidden_act: HiddenAct,
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab_size")]
    pub type_vocab_size: usize,
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub position_embedding_type: PositionEmbeddingType,
    /// Rows of `embeddings.visual_position_embeddings`: the most visual tokens
    /// a fusion input may have.
    #[serde(default = "default_max_visual_positions")]
    pub max_visual_positions: usize,
}

fn default_max_positions() -> usize {
    512
}
fn default_type_vocab_size() -> usize {
    2
}
fn default_layer_norm_eps() -> f64 {
    1e-12
}
fn default_max_visual_positions() -> usize {
    49
}

impl BertConfig {
    /// Checks what the model needs of the sizes (as the trainer does).
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
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(format!("hidden_size {} is not a multiple of num_attention_heads {}", self.hidden_size, self.num_attention_heads));
        }
        if self.type_vocab_size < 2 {
            return Err(format!("type_vocab_size is {}; fusion needs token type 1 for visual tokens", self.type_vocab_size));
        }
        if self.max_visual_positions > self.max_position_embeddings {
            return Err(format!(
                "max_visual_positions {} exceeds max_position_embeddings {}",
                self.max_visual_positions, self.max_position_embeddings
            ));
        }
        Ok(())
    }

    fn head_size(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

/// The prefix of the text encoder's names among `names`: the shortest one
/// before [`WORD_EMBEDDINGS`] or its int8 or 4-bit form (`bert.` in a checkpoint,
/// where `fusion_bert.` may follow; none in a Hugging Face folder).
pub fn text_prefix(names: &[String]) -> Option<String> {
    // The table may be stored as f32, int8 or 4-bit values.
    let stored: Vec<String> = [super::quant::INT8_SUFFIX, super::quant::INT4_SUFFIX]
        .iter()
        .map(|suffix| WORD_EMBEDDINGS.replace(".weight", &format!(".{suffix}")))
        .collect();
    names
        .iter()
        .filter_map(|n| n.strip_suffix(WORD_EMBEDDINGS).or_else(|| stored.iter().find_map(|s| n.strip_suffix(s.as_str()))))
        .min_by_key(|p| (p.len(), *p))
        .map(str::to_string)
}

/// What a BERT's layers are loaded as.
#[derive(Debug, Clone, Copy)]
pub struct BertLoad<'a> {
    /// Where the BERT's names start (`bert.`, `fusion_bert.`, or none).
    pub prefix: &'a str,
    /// Quantise the encoder layers' f32 linear weights to int8 while loading.
    pub quantize: bool,
    pub int8_kernel: Int8Kernel,
}

impl BertLoad<'_> {
    fn name(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn linear(&self, w: &Weights, name: &str, in_dim: usize, out_dim: usize) -> Result<Linear, ModelError> {
        Linear::load(w, &self.name(name), in_dim, out_dim, self.quantize, self.int8_kernel)
    }

    fn layer_norm(&self, w: &Weights, name: &str, config: &BertConfig) -> Result<candle_nn::LayerNorm, ModelError> {
        let h = config.hidden_size;
        let weight = w.f32(&self.name(&format!("{name}.weight")), &[h])?;
        let bias = w.f32(&self.name(&format!("{name}.bias")), &[h])?;
        Ok(candle_nn::LayerNorm::new(weight, bias, config.layer_norm_eps))
    }
}

/// `[B, S]` keep-mask (non-zero = attend) → additive bias `[B, 1, 1, S]`: 0 where
/// kept, `f32::MIN` where masked (the trainer's `attention_bias`).
pub fn attention_bias(mask: &Tensor) -> candle_core::Result<Tensor> {
    let (b, s) = mask.dims2()?;
    let masked = mask.eq(0f64)?.to_dtype(DType::F32)?;
    (masked * f64::from(f32::MIN))?.reshape((b, 1, 1, s))
}

/// Mean of `hidden [B, T, H]` over the tokens where `mask [B, T]` is non-zero →
/// `[B, H]` (the count is clamped at 1e-9, as the trainer does).
pub fn masked_mean(hidden: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
    let m = mask.ne(0f64)?.to_dtype(hidden.dtype())?.unsqueeze(D::Minus1)?;
    let sum = hidden.broadcast_mul(&m)?.sum(1)?;
    let count = m.sum(1)?.clamp(1e-9, f64::MAX)?;
    sum.broadcast_div(&count)
}

/// L2-normalises the last dimension (norm clamped at 1e-12, as the trainer does).
pub fn l2_normalize(xs: &Tensor) -> candle_core::Result<Tensor> {
    let norm = xs.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
    xs.broadcast_div(&norm)
}

/// The word embedding table, MiniLM's largest matrix. Int8 tables stay int8
/// (a quarter of the f32 memory, nothing widened at load): only the rows a
/// text's tokens name are turned into f32.
#[derive(Debug, Clone)]
pub enum WordTable {
    F32(Tensor),
    Int8(Arc<Int8Matrix>),
}

impl WordTable {
    /// The rows of `ids [N]` (u32) as `[N, H]` f32.
    fn rows(&self, ids: &Tensor) -> Result<Tensor, ModelError> {
        let table = match self {
            WordTable::F32(table) => return Ok(table.index_select(ids, 0)?),
            WordTable::Int8(table) => table,
        };
        let (vocab, h) = (table.rows(), table.cols());
        let device = ids.device().clone();
        let ids = ids.to_vec1::<u32>()?;
        let mut rows = Vec::with_capacity(ids.len() * h);
        for &id in &ids {
            let id = id as usize;
            if id >= vocab {
                return Err(ModelError::Input(format!("token id {id} is outside the vocabulary of {vocab}")));
            }
            let scale = table.scales()[id];
            rows.extend(table.values()[id * h..(id + 1) * h].iter().map(|&v| f32::from(v) * scale));
        }
        Ok(Tensor::from_vec(rows, (ids.len(), h), &device)?)
    }
}

/// Word, position and token-type embeddings, vitrine's visual position
/// embeddings, and the LayerNorm (`embeddings`).
#[derive(Debug, Clone)]
pub struct BertEmbeddings {
    pub word_embeddings: WordTable,
    pub position_embeddings: Tensor,
    pub token_type_embeddings: Tensor,
    pub visual_position_embeddings: Tensor,
    pub layer_norm: candle_nn::LayerNorm,
}

impl BertEmbeddings {
    fn load(w: &Weights, at: &BertLoad, config: &BertConfig) -> Result<Self, ModelError> {
        let h = config.hidden_size;
        let position_embeddings = w.f32(&at.name("embeddings.position_embeddings.weight"), &[config.max_position_embeddings, h])?;
        let visual_name = at.name("embeddings.visual_position_embeddings.weight");
        // A Hugging Face BERT has no visual positions: the trainer starts them
        // as the first rows of the text positions, and so does this.
        let visual_position_embeddings = if w.contains(&visual_name) {
            w.f32(&visual_name, &[config.max_visual_positions, h])?
        } else {
            position_embeddings.narrow(0, 0, config.max_visual_positions)?.contiguous()?
        };
        let words_name = at.name(WORD_EMBEDDINGS);
        let layer = words_name.strip_suffix(".weight").expect("a weight name");
        let word_embeddings = match Int8Matrix::read(w, layer, config.vocab_size, h)? {
            Some(matrix) => WordTable::Int8(Arc::new(matrix)),
            None if at.quantize => {
                let f32_rows = w.f32(&words_name, &[config.vocab_size, h])?.flatten_all()?.to_vec1::<f32>()?;
                WordTable::Int8(Arc::new(Int8Matrix::quantize(&f32_rows, config.vocab_size, h)))
            }
            None => WordTable::F32(w.f32(&words_name, &[config.vocab_size, h])?),
        };
        Ok(BertEmbeddings {
            word_embeddings,
            position_embeddings,
            token_type_embeddings: w.f32(&at.name("embeddings.token_type_embeddings.weight"), &[config.type_vocab_size, h])?,
            visual_position_embeddings,
            layer_norm: at.layer_norm(w, "embeddings.LayerNorm", config)?,
        })
    }

    /// Text tokens: `input_ids [B, T]` (u32) → `[B, T, H]`, token type 0.
    pub fn forward(&self, input_ids: &Tensor) -> Result<Tensor, ModelError> {
        let (b, t) = input_ids.dims2()?;
        let max = self.position_embeddings.dim(0)?;
        if t > max {
            return Err(ModelError::Input(format!("text of {t} tokens exceeds max_position_embeddings {max}")));
        }
        let words = self.word_embeddings.rows(&input_ids.flatten_all()?)?;
        let h = words.dim(1)?;
        let words = words.reshape((b, t, h))?;
        let xs = words.broadcast_add(&self.position_embeddings.narrow(0, 0, t)?)?.broadcast_add(&self.token_type_embeddings.get(0)?)?;
        Ok(self.layer_norm.forward(&xs)?)
    }

    /// Visual tokens already projected to H: `[B, V, H]` → `[B, V, H]`, token
    /// type 1 and the visual position embeddings.
    pub fn forward_visual(&self, visual: &Tensor) -> Result<Tensor, ModelError> {
        let (_, v, h) = visual.dims3()?;
        let (max, hidden) = self.visual_position_embeddings.dims2()?;
        if h != hidden {
            return Err(ModelError::Input(format!("visual tokens have width {h}, BERT's hidden size is {hidden}")));
        }
        if v > max {
            return Err(ModelError::Input(format!("{v} visual tokens exceed max_visual_positions {max}")));
        }
        let xs =
            visual.broadcast_add(&self.visual_position_embeddings.narrow(0, 0, v)?)?.broadcast_add(&self.token_type_embeddings.get(1)?)?;
        Ok(self.layer_norm.forward(&xs)?)
    }
}

/// Multi-head self-attention (`attention.self`).
#[derive(Debug, Clone)]
pub struct BertSelfAttention {
    pub query: Linear,
    pub key: Linear,
    pub value: Linear,
    num_attention_heads: usize,
    attention_head_size: usize,
}

impl BertSelfAttention {
    fn load(w: &Weights, at: &BertLoad, p: &str, config: &BertConfig) -> Result<Self, ModelError> {
        let h = config.hidden_size;
        Ok(BertSelfAttention {
            query: at.linear(w, &format!("{p}.query"), h, h)?,
            key: at.linear(w, &format!("{p}.key"), h, h)?,
            value: at.linear(w, &format!("{p}.value"), h, h)?,
            num_attention_heads: config.num_attention_heads,
            attention_head_size: config.head_size(),
        })
    }

    /// `[B, S, H]` → `[B, heads, S, head_size]`.
    fn transpose_for_scores(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let (b, s, _) = xs.dims3()?;
        xs.reshape((b, s, self.num_attention_heads, self.attention_head_size))?.transpose(1, 2)?.contiguous()
    }

    /// `hidden_states [B, S, H]`, additive `bias [B, 1, 1, S]` → `[B, S, H]`.
    pub fn forward(&self, hidden_states: &Tensor, bias: Option<&Tensor>) -> candle_core::Result<Tensor> {
        let (b, s, _) = hidden_states.dims3()?;
        let q = self.transpose_for_scores(&self.query.forward(hidden_states)?)?;
        let k = self.transpose_for_scores(&self.key.forward(hidden_states)?)?;
        let v = self.transpose_for_scores(&self.value.forward(hidden_states)?)?;
        // softmax(q kᵀ / sqrt(d) + bias) v
        let scores = (q.matmul(&k.t()?)? / (self.attention_head_size as f64).sqrt())?;
        let scores = match bias {
            Some(bias) => scores.broadcast_add(bias)?,
            None => scores,
        };
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        probs.matmul(&v)?.transpose(1, 2)?.reshape((b, s, self.num_attention_heads * self.attention_head_size))
    }
}

/// Dense, residual and LayerNorm after self-attention (`attention.output`)
/// and after the feed-forward expansion (`output`).
#[derive(Debug, Clone)]
pub struct BertSelfOutput {
    pub dense: Linear,
    pub layer_norm: candle_nn::LayerNorm,
}

impl BertSelfOutput {
    fn load(w: &Weights, at: &BertLoad, p: &str, in_dim: usize, config: &BertConfig) -> Result<Self, ModelError> {
        Ok(BertSelfOutput {
            dense: at.linear(w, &format!("{p}.dense"), in_dim, config.hidden_size)?,
            layer_norm: at.layer_norm(w, &format!("{p}.LayerNorm"), config)?,
        })
    }

    pub fn forward(&self, hidden_states: &Tensor, input_tensor: &Tensor) -> candle_core::Result<Tensor> {
        self.layer_norm.forward(&(self.dense.forward(hidden_states)? + input_tensor)?)
    }
}

/// The feed-forward contraction (`output`): the same shape of module as
/// `attention.output`, from the intermediate width.
pub type BertOutput = BertSelfOutput;

/// Self-attention and its output block (`attention`).
#[derive(Debug, Clone)]
pub struct BertAttention {
    pub self_attention: BertSelfAttention,
    pub self_output: BertSelfOutput,
}

impl BertAttention {
    pub fn forward(&self, hidden_states: &Tensor, bias: Option<&Tensor>) -> candle_core::Result<Tensor> {
        let self_outputs = self.self_attention.forward(hidden_states, bias)?;
        self.self_output.forward(&self_outputs, hidden_states)
    }
}

/// The feed-forward expansion (`intermediate`): dense + activation.
#[derive(Debug, Clone)]
pub struct BertIntermediate {
    pub dense: Linear,
    pub intermediate_act: HiddenAct,
}

impl BertIntermediate {
    pub fn forward(&self, hidden_states: &Tensor) -> candle_core::Result<Tensor> {
        self.intermediate_act.forward(&self.dense.forward(hidden_states)?)
    }
}

/// One transformer layer (`encoder.layer.{i}`).
#[derive(Debug, Clone)]
pub struct BertLayer {
    pub attention: BertAttention,
    pub intermediate: BertIntermediate,
    pub output: BertOutput,
}

impl BertLayer {
    fn load(w: &Weights, at: &BertLoad, p: &str, config: &BertConfig) -> Result<Self, ModelError> {
        Ok(BertLayer {
            attention: BertAttention {
                self_attention: BertSelfAttention::load(w, at, &format!("{p}.attention.self"), config)?,
                self_output: BertSelfOutput::load(w, at, &format!("{p}.attention.output"), config.hidden_size, config)?,
            },
            intermediate: BertIntermediate {
                dense: at.linear(w, &format!("{p}.intermediate.dense"), config.hidden_size, config.intermediate_size)?,
                intermediate_act: config.hidden_act,
            },
            output: BertOutput::load(w, at, &format!("{p}.output"), config.intermediate_size, config)?,
        })
    }

    pub fn forward(&self, hidden_states: &Tensor, bias: Option<&Tensor>) -> candle_core::Result<Tensor> {
        let attention_output = self.attention.forward(hidden_states, bias)?;
        let intermediate_output = self.intermediate.forward(&attention_output)?;
        self.output.forward(&intermediate_output, &attention_output)
    }
}

/// The stack of layers (`encoder.layer`).
#[derive(Debug, Clone)]
pub struct BertEncoder {
    pub layers: Vec<BertLayer>,
}

impl BertEncoder {
    /// `hidden_states [B, S, H]` and an optional keep-mask `[B, S]` → `[B, S, H]`.
    pub fn forward(&self, hidden_states: &Tensor, attention_mask: Option<&Tensor>) -> candle_core::Result<Tensor> {
        let bias = attention_mask.map(attention_bias).transpose()?;
        let mut xs = hidden_states.clone();
        for layer in &self.layers {
            xs = layer.forward(&xs, bias.as_ref())?;
        }
        Ok(xs)
    }
}

/// Hugging Face's pooler (`pooler`): tanh(dense(first token)).
#[derive(Debug, Clone)]
pub struct BertPooler {
    pub dense: Linear,
}

impl BertPooler {
    /// `hidden_states [B, S, H]` → `[B, H]`.
    pub fn forward(&self, hidden_states: &Tensor) -> candle_core::Result<Tensor> {
        self.dense.forward(&hidden_states.narrow(1, 0, 1)?.squeeze(1)?)?.tanh()
    }
}

/// The BERT encoder: embeddings, layers and, when the file has one, the pooler.
#[derive(Debug, Clone)]
pub struct BertModel {
    pub embeddings: BertEmbeddings,
    pub encoder: BertEncoder,
    pub pooler: Option<BertPooler>,
    config: BertConfig,
}

impl BertModel {
    /// Loads a BERT whose names start with `at.prefix`; shapes are checked
    /// against `config`.
    pub fn load(w: &Weights, at: &BertLoad, config: &BertConfig) -> Result<Self, ModelError> {
        config.validate().map_err(|reason| ModelError::Config { origin: w.origin().to_string(), reason })?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| BertLayer::load(w, at, &format!("encoder.layer.{i}"), config))
            .collect::<Result<Vec<_>, _>>()?;
        // The pooler is only for fusion outputs; a plain text encoder may lack it.
        let pooler = if w.contains(&at.name("pooler.dense.weight")) || w.contains(&at.name("pooler.dense.weight_int8")) {
            Some(BertPooler {
                dense: Linear::load(w, &at.name("pooler.dense"), config.hidden_size, config.hidden_size, false, at.int8_kernel)?,
            })
        } else {
            None
        };
        Ok(BertModel { embeddings: BertEmbeddings::load(w, at, config)?, encoder: BertEncoder { layers }, pooler, config: config.clone() })
    }

    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// Text mode: `[CLS] text [SEP]` ids `[B, T]` (u32) and an optional
    /// keep-mask `[B, T]` (none: every token counts) → `[B, T, H]`.
    pub fn forward_text(&self, input_ids: &Tensor, attention_mask: Option<&Tensor>) -> Result<Tensor, ModelError> {
        let xs = self.embeddings.forward(input_ids)?;
        Ok(self.encoder.forward(&xs, attention_mask)?)
    }

    /// Fusion mode: text `[B, T]` (with its keep-mask) followed by visual tokens
    /// `[B, V, H]` (keep-mask `[B, V]`), full self-attention over all `T + V`
    /// tokens → (`text_out [B, T, H]`, `visual_out [B, V, H]`).
    pub fn forward_fusion(
        &self,
        input_ids: &Tensor,
        text_mask: &Tensor,
        visual: &Tensor,
        visual_mask: &Tensor,
    ) -> Result<(Tensor, Tensor), ModelError> {
        let (b, t) = input_ids.dims2()?;
        let (bv, v, _) = visual.dims3()?;
        if b != bv || text_mask.dims() != [b, t] || visual_mask.dims() != [b, v] {
            return Err(ModelError::Input(format!(
                "fusion of text {:?} (mask {:?}) with visual tokens {:?} (mask {:?})",
                input_ids.dims(),
                text_mask.dims(),
                visual.dims(),
                visual_mask.dims()
            )));
        }
        let text = self.embeddings.forward(input_ids)?;
        let vis = self.embeddings.forward_visual(visual)?;
        let xs = Tensor::cat(&[text, vis], 1)?;
        let mask = Tensor::cat(&[text_mask.to_dtype(DType::F32)?, visual_mask.to_dtype(DType::F32)?], 1)?;
        let out = self.encoder.forward(&xs, Some(&mask))?;
        Ok((out.narrow(1, 0, t)?, out.narrow(1, t, v)?))
    }

    /// The pooled output `[B, H]` of a last hidden state `[B, S, H]`.
    pub fn pooled(&self, hidden_states: &Tensor) -> Result<Tensor, ModelError> {
        let pooler = self
            .pooler
            .as_ref()
            .ok_or_else(|| ModelError::Input("this BERT was loaded without a pooler (pooler.dense.weight)".to_string()))?;
        Ok(pooler.forward(hidden_states)?)
    }

    /// Whether the encoder layers' linear layers are int8.
    pub fn is_int8(&self) -> bool {
        self.encoder.layers.iter().all(|l| l.intermediate.dense.is_int8())
    }
}
