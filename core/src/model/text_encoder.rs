//! The text tower on its own, from text to embedding: what the browser runs for
//! a query and what the CLI runs over catalog texts.

use candle_core::{DType, Device, Tensor};

use super::bert::{l2_normalize, masked_mean, text_prefix, BertLoad, BertModel, WORD_EMBEDDINGS};
use super::fashionvil::CheckpointConfig;
use super::quant::LoadOptions;
use super::weights::Weights;
use super::ModelError;
use crate::text::Tokenizer;

/// Tokenizer, text encoder and embedding scale.
///
/// From a FashionViL checkpoint it gives exactly [`super::FashionVil::text_embedding`]
/// (the `bert.` tower, times `embedding_scale`); from a Hugging Face BERT folder
/// (no prefix, no scale) the sentence-transformers embedding (normalised mean).
pub struct TextEncoder {
    tokenizer: Tokenizer,
    bert: BertModel,
    embedding_scale: f32,
}

impl TextEncoder {
    /// Builds the encoder from the three files of a checkpoint folder;
    /// texts are truncated to `max_tokens` tokens.
    pub fn from_bytes(
        config_json: &[u8],
        model_safetensors: &[u8],
        tokenizer_json: &[u8],
        options: LoadOptions,
        max_tokens: usize,
    ) -> Result<Self, ModelError> {
        let files = [
            (config_json, super::CONFIG_FILE.to_string()),
            (model_safetensors, super::MODEL_FILE.to_string()),
            (tokenizer_json, super::TOKENIZER_FILE.to_string()),
        ];
        TextEncoder::load(files, options, max_tokens)
    }

    /// Loads `config.json`, `model.safetensors` and `tokenizer.json` of a folder.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_dir(dir: &std::path::Path, options: LoadOptions, max_tokens: usize) -> Result<Self, ModelError> {
        let read = |name: &str| -> Result<(Vec<u8>, String), ModelError> {
            let path = dir.join(name);
            Ok((super::read_file(&path)?, path.display().to_string()))
        };
        let [config, model, tokenizer] = [read(super::CONFIG_FILE)?, read(super::MODEL_FILE)?, read(super::TOKENIZER_FILE)?];
        let files = [(&config.0[..], config.1), (&model.0[..], model.1), (&tokenizer.0[..], tokenizer.1)];
        TextEncoder::load(files, options, max_tokens)
    }

    /// `files`: config.json, model.safetensors and tokenizer.json, each with the
    /// name errors give it.
    fn load(files: [(&[u8], String); 3], options: LoadOptions, max_tokens: usize) -> Result<Self, ModelError> {
        let [(config_json, config_origin), (model, model_origin), (tokenizer_json, tokenizer_origin)] = files;
        let config = CheckpointConfig::from_json(config_json, &config_origin)?;
        let weights = Weights::from_bytes(model, &model_origin)?;
        let max_tokens = max_tokens.min(config.bert.max_position_embeddings);
        let tokenizer = Tokenizer::from_json_bytes(tokenizer_json, &tokenizer_origin, max_tokens)?;
        let prefix = text_prefix(&weights.names()).ok_or_else(|| weights.missing(WORD_EMBEDDINGS))?;
        let at = BertLoad { prefix: &prefix, quantize: options.quantize_text_encoder, int8_kernel: options.int8_kernel };
        let bert = BertModel::load(&weights, &at, &config.bert)?;
        let embedding_scale =
            if weights.contains("embedding_scale") { weights.f32("embedding_scale", &[])?.to_scalar::<f32>()? } else { 1.0 };
        Ok(TextEncoder { tokenizer, bert, embedding_scale })
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn bert(&self) -> &BertModel {
        &self.bert
    }

    /// Width of the embeddings.
    pub fn dim(&self) -> usize {
        self.bert.config().hidden_size
    }

    pub fn is_int8(&self) -> bool {
        self.bert.is_int8()
    }

    /// The embedding of one text (norm = the embedding scale).
    pub fn embed(&self, text: &str) -> Result<Vec<f32>, ModelError> {
        let ids = self.tokenizer.encode(text)?.ids;
        let ids = Tensor::from_vec(ids.clone(), (1, ids.len()), &Device::Cpu)?;
        let hidden = self.bert.forward_text(&ids, None)?;
        let embedding = (l2_normalize(&hidden.mean(1)?)? * f64::from(self.embedding_scale))?;
        Ok(embedding.squeeze(0)?.to_vec1()?)
    }

    /// The embeddings of several texts, run as one batch padded to the longest.
    pub fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, ModelError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let encoded = texts.iter().map(|t| self.tokenizer.encode(t).map(|e| e.ids)).collect::<Result<Vec<_>, _>>()?;
        let longest = encoded.iter().map(Vec::len).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(texts.len() * longest);
        let mut mask = Vec::with_capacity(texts.len() * longest);
        for e in &encoded {
            // Padded positions are masked out, so the id there does not matter.
            ids.extend(e.iter().copied().chain(std::iter::repeat_n(0, longest - e.len())));
            mask.extend((0..longest).map(|i| if i < e.len() { 1f32 } else { 0.0 }));
        }
        let ids = Tensor::from_vec(ids, (texts.len(), longest), &Device::Cpu)?;
        let mask = Tensor::from_vec(mask, (texts.len(), longest), &Device::Cpu)?;
        let hidden = self.bert.forward_text(&ids, Some(&mask))?;
        let embeddings = (l2_normalize(&masked_mean(&hidden, &mask)?)? * f64::from(self.embedding_scale))?;
        Ok(embeddings.to_dtype(DType::F32)?.to_vec2()?)
    }
}
