//! The browser's heads in the compact space: a learned projection of the
//! teacher's embedding space and three small heads distilled from the teacher
//! by the index builder (`index-builder/src/distill.rs`). The tch twin with the
//! same module and tensor names is `index-builder/src/heads.rs`.

use serde::{Deserialize, Serialize};

/// The compact space's shape, stored in the bundle's model config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompactConfig {
    /// Width of the teacher's embeddings (the text encoder's hidden size).
    pub teacher_dim: usize,
    /// Width of the compact space (default 256).
    pub dim: usize,
    /// Number of categories the OCIR and category heads know (the bundle's category list).
    pub categories: usize,
    /// Weight of the image embedding in a product vector (the text embedding gets `1 - image_weight`).
    pub image_weight: f32,
}
