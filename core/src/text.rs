//! The WordPiece tokenizer of the text encoder, loaded from the checkpoint's
//! `tokenizer.json`.
//!
//! Padding is always disabled: MiniLM's `tokenizer.json` pads every query to
//! 128 tokens, which makes a browser query about six times slower for nothing.

use std::path::Path;

/// Errors of loading or running the tokenizer.
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    #[error("cannot load tokenizer {origin}: {reason}")]
    Load { origin: String, reason: String },
    #[error("cannot tokenize text: {0}")]
    Encode(String),
}

/// One tokenized text: ids, attention mask, and the word each token belongs to
/// (for whole-word masking).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoding {
    pub ids: Vec<u32>,
    pub attention_mask: Vec<u32>,
    /// Word index of each token; `None` for special tokens.
    pub word_ids: Vec<Option<u32>>,
}

/// A BERT-style tokenizer with padding disabled and truncation at `max_len` tokens.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
}

impl Tokenizer {
    /// Parses a `tokenizer.json`; `origin` names it in errors.
    pub fn from_json_bytes(bytes: &[u8], origin: &str, max_len: usize) -> Result<Self, TextError> {
        let load_err = |reason: String| TextError::Load { origin: origin.to_string(), reason };
        let mut inner = tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| load_err(e.to_string()))?;
        inner.with_padding(None);
        let truncation = tokenizers::TruncationParams { max_length: max_len, ..Default::default() };
        inner.with_truncation(Some(truncation)).map_err(|e| load_err(e.to_string()))?;
        Ok(Tokenizer { inner })
    }

    pub fn from_file(path: &Path, max_len: usize) -> Result<Self, TextError> {
        let origin = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| TextError::Load { origin: origin.clone(), reason: e.to_string() })?;
        Self::from_json_bytes(&bytes, &origin, max_len)
    }

    /// Tokenizes one text, adding `[CLS]` and `[SEP]`.
    pub fn encode(&self, text: &str) -> Result<Encoding, TextError> {
        let enc = self.inner.encode(text, true).map_err(|e| TextError::Encode(e.to_string()))?;
        Ok(Encoding {
            ids: enc.get_ids().to_vec(),
            attention_mask: enc.get_attention_mask().to_vec(),
            word_ids: enc.get_word_ids().to_vec(),
        })
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}
