//! vitrine's trainer: the fashion vision-and-language model (after FashionViL)
//! in tch/libtorch, trained on a catalog on a GPU or, with the `cpu` recipe, on a
//! small machine. Its checkpoints (safetensors, config.json, tokenizer.json) feed
//! the index builder and the in-browser engine.
//!
//! - [`data`]: the pretraining batches of every task, reproducible per step.
//! - [`image`]: decoding and preprocessing product photos for the image encoder
//!   (resize, random or centre crop, flip, normalisation).
//! - [`losses`]: the losses of every task, as functions of tensors.
//! - [`masking`]: MLM whole-word masks, MPFC patch blocks, MVC token dropping.
//! - [`model`]: the model's modules.
//! - [`pac`]: pseudo-attributes mined from the catalog text for the PAC task.
//! - [`pretext`]: the six pretext tasks and the per-step task sampler.
//! - [`recipe`]: the `cpu` and `gpu` training recipes (TOML).
//! - [`vqvae`]: the frozen image tokenizer whose codes MPFC predicts.

pub mod data;
pub mod image;
pub mod losses;
pub mod masking;
pub mod model;
pub mod pac;
pub mod pretext;
pub mod recipe;
pub mod vqvae;
