//! The FashionViL model for inference, in candle: the text encoder, the fusion
//! encoder over text and visual tokens, the embeddings and the ITM head. It runs
//! natively and in WebAssembly and reads the trainer's checkpoints as they are.
//!
//! The modules and tensor names are the tch trainer's (`trainer/src/model`), so
//! one checkpoint serves both; parity tests (`tests/tests/candle_parity.rs`)
//! bind the two. A checkpoint folder holds:
//!
//! - `config.json`: BERT's Hugging Face config plus `max_visual_positions`,
//!   and the model's own fields under `fashionvil` ([`CheckpointConfig`]);
//! - `model.safetensors`: the weights under the trainer's VarStore names:
//!   `bert.*` (Hugging Face BERT names), `fusion_bert.*` when text and fusion
//!   are not shared, `visual_projection.*`, `embedding_scale`, `heads.itm.*`
//!   and, once fine-tuned, `heads.{category,subcategory,ocir}.*` (other
//!   tensors, such as the other pretext heads, are not read);
//! - `tokenizer.json`.
//!
//! A plain sentence-transformers BERT folder (e.g. all-MiniLM-L6-v2: no prefix,
//! no `fashionvil` config) loads as a [`TextEncoder`] too.
//!
//! Int8 weights ([`quant`]) replace a linear layer's `<name>.weight` by
//! `<name>.weight_int8` and `<name>.weight_scale`; the same loaders read them.
//! [`quant::quantize_safetensors`] writes such a file from an f32 one.

pub mod bert;
pub mod compact;
pub mod downstream;
pub mod fashionvil;
pub mod quant;
pub mod text_encoder;
pub mod weights;

use std::path::PathBuf;

pub use fashionvil::{CheckpointConfig, FashionVil, FashionVilConfig};
pub use quant::{Int8Kernel, LoadOptions};
pub use text_encoder::TextEncoder;
pub use weights::Weights;

/// The weights file of a checkpoint folder (the trainer's name).
pub const MODEL_FILE: &str = "model.safetensors";
/// The model config of a checkpoint folder.
pub const CONFIG_FILE: &str = "config.json";
/// The tokenizer of a checkpoint folder.
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// Errors of loading and running the model; loading errors name their source.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("invalid model config {origin}: {reason}")]
    Config { origin: String, reason: String },
    #[error("{origin} is not a readable safetensors file: {reason}")]
    Safetensors { origin: String, reason: String },
    #[error("{origin} has no tensor `{name}` (not a checkpoint of this model, or config.json does not match it)")]
    MissingTensor { origin: String, name: String },
    #[error("{origin}: tensor `{name}` has shape {found:?}, the model expects {expected:?} (does config.json match the weights?)")]
    Shape { origin: String, name: String, expected: Vec<usize>, found: Vec<usize> },
    #[error("{origin}: tensor `{name}` is stored as {found}, the model reads {expected}")]
    Dtype { origin: String, name: String, expected: String, found: String },
    #[error("{origin}: tensor `{name}` {reason}")]
    InvalidTensor { origin: String, name: String, reason: String },
    #[error("invalid model input: {0}")]
    Input(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Text(#[from] crate::text::TextError),
}

/// Reads a file of a checkpoint folder.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn read_file(path: &std::path::Path) -> Result<Vec<u8>, ModelError> {
    std::fs::read(path).map_err(|source| ModelError::Io { path: path.to_path_buf(), source })
}
