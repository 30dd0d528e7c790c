//! The text encoder in the browser: a query's embedding from the checkpoint's
//! `config.json`, `model.safetensors` (f32 or int8 weights) and `tokenizer.json`.
//! (Not called `TextEncoder`: wasm-bindgen's glue uses the Web API of that name.)
//!
//! ```js
//! const encoder = new QueryEncoder(configBytes, modelBytes, tokenizerBytes);
//! encoder.embed("black leather ankle boots"); // Float32Array(384), norm = the embedding scale
//! ```

use vitrine_core::model::{Int8Kernel, LoadOptions, ModelError};
use wasm_bindgen::prelude::*;

use crate::MAX_QUERY_TOKENS;

/// The text tower of a FashionViL checkpoint (or of a sentence-transformers
/// BERT folder), with the tokenizer.
#[wasm_bindgen]
pub struct QueryEncoder {
    inner: vitrine_core::model::TextEncoder,
}

impl QueryEncoder {
    /// Builds the encoder from the three files' bytes (Rust API); `int8_kernel`
    /// picks how int8 layers multiply.
    pub fn from_files(config: &[u8], model: &[u8], tokenizer: &[u8], int8_kernel: Int8Kernel) -> Result<QueryEncoder, ModelError> {
        let options = LoadOptions { quantize_text_encoder: false, int8_kernel };
        let inner = vitrine_core::model::TextEncoder::from_bytes(config, model, tokenizer, options, MAX_QUERY_TOKENS)?;
        Ok(QueryEncoder { inner })
    }
}

#[wasm_bindgen]
impl QueryEncoder {
    /// `new QueryEncoder(config, model, tokenizer, kernel?)`: the bytes of
    /// `config.json`, `model.safetensors` and `tokenizer.json` as `Uint8Array`s.
    /// `kernel` (`"per-channel"` or `"q8_0"`) chooses how int8 weights multiply;
    /// by default the faster one.
    #[wasm_bindgen(constructor)]
    pub fn new(config: &[u8], model: &[u8], tokenizer: &[u8], kernel: Option<String>) -> Result<QueryEncoder, JsError> {
        let kernel = match kernel.as_deref() {
            None => Int8Kernel::default(),
            Some("per-channel") => Int8Kernel::PerChannel,
            Some("q8_0") => Int8Kernel::Q8_0,
            Some(other) => return Err(JsError::new(&format!("unknown int8 kernel {other:?}: use \"per-channel\" or \"q8_0\""))),
        };
        Self::from_files(config, model, tokenizer, kernel).map_err(|e| JsError::new(&e.to_string()))
    }

    /// The embedding of `text` (a `Float32Array`).
    pub fn embed(&self, text: &str) -> Result<Vec<f32>, JsError> {
        self.inner.embed(text).map_err(|e| JsError::new(&e.to_string()))
    }

    /// Width of the embeddings.
    #[wasm_bindgen(getter)]
    pub fn dim(&self) -> usize {
        self.inner.dim()
    }

    /// Whether the encoder's layers run with int8 weights.
    #[wasm_bindgen(getter, js_name = isInt8)]
    pub fn is_int8(&self) -> bool {
        self.inner.is_int8()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// all-MiniLM-L6-v2, when `cargo xtask setup` has fetched it: f32 and int8.
    #[test]
    fn minilm_embeds_in_f32_and_int8_when_present() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/all-MiniLM-L6-v2");
        let Ok(model) = std::fs::read(dir.join("model.safetensors")) else {
            eprintln!("skipped: {} not present (run `cargo xtask setup`)", dir.display());
            return;
        };
        let config = std::fs::read(dir.join("config.json")).unwrap();
        let tokenizer = std::fs::read(dir.join("tokenizer.json")).unwrap();
        let (int8, _) = vitrine_core::model::quant::quantize_safetensors(&model, "model.safetensors").unwrap();
        let exact = QueryEncoder::from_files(&config, &model, &tokenizer, Int8Kernel::default()).unwrap();
        let quantised = QueryEncoder::from_files(&config, &int8, &tokenizer, Int8Kernel::default()).unwrap();
        assert!(!exact.is_int8() && quantised.is_int8());
        let (a, b) = (exact.embed("black leather ankle boots").unwrap(), quantised.embed("black leather ankle boots").unwrap());
        assert_eq!(a.len(), 384);
        let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm(&a) - 1.0).abs() < 1e-5);
        let cosine = a.iter().zip(&b).map(|(x, y)| x * y).sum::<f32>() / (norm(&a) * norm(&b));
        assert!(cosine > 0.995 && cosine < 1.0, "{cosine}");
        let other = exact.embed("a red summer dress").unwrap();
        assert!(a.iter().zip(&other).map(|(x, y)| x * y).sum::<f32>() < 0.9);
    }
}
