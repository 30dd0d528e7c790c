//! vitrine's trainer: the fashion vision-and-language model (after FashionViL)
//! in tch/libtorch, trained on a catalog on a GPU or, with the `cpu` recipe, on a
//! small machine. Its checkpoints (safetensors, config.json, tokenizer.json) feed
//! the index builder and the in-browser engine.
//!
//! - [`ablation`]: the paper's ablation rows run, evaluated and tabulated.
//! - [`catalog_inputs`]: the catalog as model inputs, the downstream examples of a split, and the queries over them.
//! - [`checkpoint`]: atomic run checkpoints (weights, optimiser state, configs,
//!   trainer state) that a killed run resumes from exactly.
//! - [`data`]: the pretraining batches of every task, reproducible per step.
//! - [`error`]: the trainer's error type.
//! - [`eval`]: the paper's evaluation protocols (XMR random-100 and full gallery, TGIR, CR/SCR, OCIR, meta-sum).
//! - [`finetune`]: the downstream fine-tunes (XMR, TGIR, CR/SCR, OCIR), per task or multi-task.
//! - [`feature_store`]: the frozen image encoder's feature maps of every photo, cached by content.
//! - [`image`]: decoding and preprocessing product photos for the image encoder
//!   (the whole photo or the paper's crop, random windows, flip, ImageNet normalisation).
//! - [`losses`]: the losses of every task, as functions of tensors.
//! - [`masking`]: MLM whole-word masks, MPFC patch blocks, MVC token dropping.
//! - [`model`]: the model's modules.
//! - [`optim`]: AdamW with the paper's parameter groups, warm-up then step
//!   decay, and gradient clipping, with a state that checkpoints can save.
//! - [`pac`]: pseudo-attributes mined from the catalog text for the PAC task.
//! - [`precision`]: bf16 (or fp16) autocast on CUDA and CPU.
//! - [`prepare`]: a catalog's train split turned into the pretraining set.
//! - [`pretrain`]: the pretraining loop, metrics and resume; the image tokenizer's training.
//! - [`progress`]: the progress bars of long work.
//! - [`pretext`]: the losses of the six pretext tasks.
//! - [`recipe`]: the `cpu` and `gpu` training recipes (TOML).
//! - [`schedule`]: the tasks, the per-step task sampler and the per-step RNG.
//! - [`teacher`]: a fine-tuned checkpoint loaded for evaluation and the index builder.
//! - [`train_loop`]: the step loop, metrics and resume shared by pretraining and fine-tuning.
//! - [`vqvae`]: the frozen image tokenizer whose codes MPFC predicts.

pub mod ablation;
pub mod catalog_inputs;
pub mod checkpoint;
pub mod data;
pub mod error;
pub mod eval;
pub mod feature_store;
pub mod finetune;
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
pub mod progress;
pub mod recipe;
pub mod schedule;
pub mod teacher;
pub mod train_loop;
pub mod vqvae;
