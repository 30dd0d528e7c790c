//! vitrine's shared core: everything that both the native tools (trainer, index
//! builder, CLI) and the WebAssembly engine need, with no libtorch dependency.
//!
//! - [`catalog`]: the canonical catalog schema, importers with row-level errors,
//!   and image checks.
//! - [`tasks`]: the training and evaluation datasets derived from a catalog and
//!   its split (image-text pairs, labels, text-guided retrieval triplets, outfit
//!   questions).
//! - [`synth`]: a small deterministic generated catalog so that every test runs
//!   without external data.
//! - `summary`: the counts `vitrine catalog check` prints (native only).
//! - [`lexical`]: BM25 keyword scoring over product texts.
//! - [`metrics`]: recall@k, accuracy and macro-F1 of the evaluation protocols.
//! - [`hash`]: FNV-1a, for cache names and deterministic choices.
//! - [`text`]: the WordPiece tokenizer, loaded from a `tokenizer.json`.
//! - [`model`]: the FashionViL model for inference in candle (text encoder,
//!   fusion, embeddings, ITM and downstream heads), with int8 weights for the
//!   text encoder.
//! - [`bundle`]: the versioned, checksummed bundle the browser loads (folder or single file).
//! - [`index`]: the int8 ANN index (HNSW by instant-distance, exact re-rank, category filter).
//! - [`engine`]: search, TGIR, OCIR and category intent over a bundle (what the browser runs).

pub mod bundle;
pub mod catalog;
pub mod engine;
pub mod hash;
pub mod index;
pub mod lexical;
pub mod metrics;
pub mod model;
mod nibble;
#[cfg(not(target_arch = "wasm32"))]
pub mod summary;
pub mod synth;
pub mod tasks;
pub mod text;
