//! vitrine's index builder: turns a fine-tuned model and a catalog into what
//! the browser searches.
//!
//! - [`embed`]: every catalog item embedded by the full (teacher) model —
//!   image and text embeddings — in batches, in resumable chunks, optionally
//!   as one shard of `n` (`--shard i/n`) with a merge step, so a large
//!   catalog can be embedded by independent jobs.

pub mod embed;
