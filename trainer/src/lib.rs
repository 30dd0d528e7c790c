//! vitrine's trainer: the fashion vision-and-language model (after FashionViL)
//! in tch/libtorch, trained on a catalog on a GPU or, with the `cpu` recipe, on a
//! small machine. Its checkpoints (safetensors, config.json, tokenizer.json) feed
//! the index builder and the in-browser engine.
//!
//! - [`image`]: decoding and preprocessing product photos for the image encoder
//!   (resize, random or centre crop, flip, normalisation).

pub mod image;
