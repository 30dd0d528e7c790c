//! vitrine's trainer: the fashion vision-and-language model (after FashionViL)
//! in tch/libtorch, trained on a catalog on a GPU or, with the `cpu` recipe, on a
//! small machine. Its checkpoints (safetensors, config.json, tokenizer.json) feed
//! the index builder and the in-browser engine.
//!
//! - [`checkpoint`]: atomic run checkpoints (weights, optimiser state, configs,
//!   trainer state) that a killed run resumes from exactly.
//! - [`data`]: the pretraining batches of every task, reproducible per step.
//! - [`image`]: decoding and preprocessing product photos for the image encoder
//!   (resize, random or centre crop, flip, normalisation).
//! - [`losses`]: the losses of every task, as functions of tensors.
//! - [`masking`]: MLM whole-word masks, MPFC patch blocks, MVC token dropping.
//! - [`model`]: the model's modules.
//! - [`optim`]: AdamW with the paper's parameter groups, warm-up then step
//!   decay, and gradient clipping, with a state that checkpoints can save.
//! - [`pac`]: pseudo-attributes mined from the catalog text for the PAC task.
//! - [`precision`]: bf16 (or fp16) autocast on CUDA and CPU.
//! - [`prepare`]: a catalog's train split turned into the pretraining set.
//! - [`pretrain`]: the pretraining loop, metrics and resume; the image tokenizer's training.
//! - [`pretext`]: the six pretext tasks and the per-step task sampler.
//! - [`recipe`]: the `cpu` and `gpu` training recipes (TOML).
//! - [`vqvae`]: the frozen image tokenizer whose codes MPFC predicts.

pub mod checkpoint;
pub mod data;
pub mod image;
pub mod losses;
pub mod masking;
pub mod model;
pub mod optim;
pub mod pac;
pub mod precision;
pub mod prepare;
pub mod pretext;
pub mod pretrain;
pub mod recipe;
pub mod vqvae;
