//! vitrine's WebAssembly engine: what runs in the shopper's browser.
//!
//! The search engine over a bundle ([`SearchEngine`]; [`BundleLoader`] for the
//! folder layout and [`SingleFileLoader`] for one file, both taking the
//! parts' SHA-256 from the browser) is what the storefront's Web Worker runs. The crate also
//! exposes the text encoder's tokenizer, built from the model's
//! `tokenizer.json`, and the text encoder ([`QueryEncoder`]) to JavaScript:
//!
//! ```js
//! const tokenizer = new Tokenizer(new Uint8Array(await (await fetch("tokenizer.json")).arrayBuffer()));
//! tokenizer.encode("a black dress"); // Uint32Array [101, 1037, 2304, 4377, 102]
//! ```

use wasm_bindgen::prelude::*;

mod engine;
mod query_encoder;
pub use engine::{BundleLoader, SearchEngine, SingleFileLoader};
pub use query_encoder::QueryEncoder;

/// Longest query, in tokens, that the text encoder sees; longer ones are truncated.
pub const MAX_QUERY_TOKENS: usize = 128;

/// The WordPiece tokenizer of the text encoder (padding off, truncation at
/// [`MAX_QUERY_TOKENS`]).
#[wasm_bindgen]
pub struct Tokenizer {
    inner: vitrine_core::text::Tokenizer,
}

impl Tokenizer {
    /// Builds the tokenizer from the bytes of a `tokenizer.json` (Rust API).
    pub fn from_json(json: &[u8]) -> Result<Tokenizer, vitrine_core::text::TextError> {
        let inner = vitrine_core::text::Tokenizer::from_json_bytes(json, "tokenizer.json", MAX_QUERY_TOKENS)?;
        Ok(Tokenizer { inner })
    }

    /// Token ids of `text`, with `[CLS]` and `[SEP]` (Rust API).
    pub fn ids(&self, text: &str) -> Result<Vec<u32>, vitrine_core::text::TextError> {
        Ok(self.inner.encode(text)?.ids)
    }
}

#[wasm_bindgen]
impl Tokenizer {
    /// `new Tokenizer(bytes)`: parses a `tokenizer.json` given as a `Uint8Array`.
    #[wasm_bindgen(constructor)]
    pub fn new(json: &[u8]) -> Result<Tokenizer, JsError> {
        Self::from_json(json).map_err(|e| JsError::new(&e.to_string()))
    }

    /// Token ids of `text` (a `Uint32Array`), starting with `[CLS]` and ending with `[SEP]`.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, JsError> {
        self.ids(text).map_err(|e| JsError::new(&e.to_string()))
    }

    /// Number of tokens in the vocabulary, special tokens included.
    #[wasm_bindgen(getter, js_name = vocabSize)]
    pub fn vocab_size(&self) -> usize {
        self.inner.vocab_size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small BERT-style tokenizer.json (uncased WordPiece) in the layout of MiniLM's.
    fn tiny_tokenizer_json() -> String {
        let vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "black", "dress", "red", "##s", "shoe"];
        let vocab: Vec<String> = vocab.iter().enumerate().map(|(i, t)| format!("\"{t}\": {i}")).collect();
        format!(
            r###"{{
  "version": "1.0",
  "truncation": null,
  "padding": {{"strategy": {{"Fixed": 16}}, "direction": "Right", "pad_to_multiple_of": null,
              "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"}},
  "added_tokens": [],
  "normalizer": {{"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                 "strip_accents": null, "lowercase": true}},
  "pre_tokenizer": {{"type": "BertPreTokenizer"}},
  "post_processor": {{
    "type": "TemplateProcessing",
    "single": [{{"SpecialToken": {{"id": "[CLS]", "type_id": 0}}}}, {{"Sequence": {{"id": "A", "type_id": 0}}}},
               {{"SpecialToken": {{"id": "[SEP]", "type_id": 0}}}}],
    "pair": [{{"SpecialToken": {{"id": "[CLS]", "type_id": 0}}}}, {{"Sequence": {{"id": "A", "type_id": 0}}}},
             {{"SpecialToken": {{"id": "[SEP]", "type_id": 0}}}}, {{"Sequence": {{"id": "B", "type_id": 1}}}},
             {{"SpecialToken": {{"id": "[SEP]", "type_id": 1}}}}],
    "special_tokens": {{
      "[CLS]": {{"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]}},
      "[SEP]": {{"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}}
    }}
  }},
  "decoder": {{"type": "WordPiece", "prefix": "##", "cleanup": true}},
  "model": {{"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
            "max_input_chars_per_word": 100, "vocab": {{ {} }}}}
}}"###,
            vocab.join(", ")
        )
    }

    #[test]
    fn encodes_with_special_tokens_and_no_padding() {
        let t = Tokenizer::from_json(tiny_tokenizer_json().as_bytes()).unwrap();
        assert_eq!(t.ids("A Black dress").unwrap(), vec![2, 5, 6, 7, 3]);
        assert_eq!(t.ids("red shoes").unwrap(), vec![2, 8, 10, 9, 3]);
        assert_eq!(t.ids("purple").unwrap(), vec![2, 1, 3]);
        assert_eq!(t.vocab_size(), 11);
    }

    #[test]
    fn truncates_long_queries() {
        let t = Tokenizer::from_json(tiny_tokenizer_json().as_bytes()).unwrap();
        let long = "red ".repeat(500);
        let ids = t.ids(&long).unwrap();
        assert_eq!(ids.len(), MAX_QUERY_TOKENS);
        assert_eq!((ids[0], ids[MAX_QUERY_TOKENS - 1]), (2, 3));
    }

    #[test]
    fn rejects_a_broken_tokenizer_json() {
        let err = Tokenizer::from_json(b"{ not json").err().expect("must fail");
        assert!(err.to_string().contains("tokenizer.json"), "{err}");
    }

    /// The real MiniLM tokenizer, when `cargo xtask setup` has fetched it.
    #[test]
    fn minilm_ids_match_the_reference_when_present() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/all-MiniLM-L6-v2/tokenizer.json");
        let Ok(bytes) = std::fs::read(&path) else {
            eprintln!("skipped: {} not present (run `cargo xtask setup`)", path.display());
            return;
        };
        let t = Tokenizer::from_json(&bytes).unwrap();
        assert_eq!(t.ids("a black dress").unwrap(), vec![101, 1037, 2304, 4377, 102]);
        assert_eq!(t.vocab_size(), 30522);
    }
}
