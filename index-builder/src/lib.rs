//! vitrine's index builder: turns a fine-tuned model and a catalog into what
//! the browser searches.
//!
//! - [`embed`]: every catalog item embedded by the full (teacher) model —
//!   image and text embeddings — in batches, in resumable chunks, optionally
//!   as one shard of `n` (`--shard i/n`) with a merge step, so a large
//!   catalog can be embedded by independent jobs.

//! - [`distill`]: the compact space (projection) and the browser's heads,
//!   distilled from the teacher ([`heads`] are their tch modules).
//! - [`student`]: optionally, a smaller text encoder for the browser (fewer
//!   layers, a pruned vocabulary, [`vocab`]) distilled from the teacher's.
//! - [`build`]: int8 vectors, HNSW graph, int8 text encoder and the bundle,
//!   with per-stage timings.
//! - [`evaluate`]: retrieval through a bundle with the teacher's protocols.
//! - [`shopper`]: shopper queries through a bundle beside BM25 and MiniLM.

pub mod build;
pub mod distill;
pub mod embed;
pub mod evaluate;
pub mod heads;
pub mod shopper;
pub mod student;
pub mod vocab;
