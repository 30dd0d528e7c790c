//! Training recipes: one TOML file per setting, read into [`Recipe`]. The
//! `gpu` recipe is the paper's (batch 256, bf16 autocast, image encoder
//! trained); the `cpu` recipe runs the same code on two cores (frozen image
//! encoder with cached features, smaller batches, a shorter schedule).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::model::image_encoder::Backbone;
use crate::pac::PacRule;
use crate::schedule::{Downstream, Task, TaskSampler};

/// How the image encoder takes part in training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageEncoderMode {
    /// Frozen: its feature maps are computed once and cached.
    Frozen,
    /// Trained with the rest of the model on augmented photos.
    Trained,
}

/// The VQ-VAE image tokenizer's training settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VqVaeRecipe {
    pub steps: u64,
    pub batch_size: usize,
    pub lr: f64,
    #[serde(default)]
    pub channels: Option<Vec<i64>>,
}

/// The downstream fine-tune's settings (the rest comes from the recipe).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinetuneRecipe {
    pub steps: u64,
    pub batch_size: usize,
    pub lr: f64,
    pub warmup_steps: u64,
    pub decay_steps: Vec<u64>,
    /// Sampling weight of each downstream task; one task gives the paper's
    /// per-task fine-tune, all of them the multi-task one.
    pub tasks: BTreeMap<Downstream, f64>,
    /// With a frozen image encoder, score XMR (text to image), TGIR and OCIR
    /// queries against every train image rather than the batch's.
    #[serde(default = "bank_negatives_default")]
    pub bank_negatives: bool,
}

fn bank_negatives_default() -> bool {
    true
}

/// A training recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    pub name: String,
    pub seed: u64,
    /// `cpu`, `cuda`, or `auto` (CUDA when available).
    pub device: String,
    /// bf16 autocast of activations (the paper's setting on CUDA; on CPUs
    /// without bf16 instructions it is slower than f32). Parameters, gradients
    /// and optimiser state stay f32.
    pub bf16: bool,
    pub image_encoder: ImageEncoderMode,
    /// `efficientnet-lite0` (default) or `resnet50` (weights from `--image-weights`).
    #[serde(default)]
    pub image_backbone: Backbone,
    /// With a frozen encoder, how many of its last layers (MBConv blocks and
    /// the head, from the end) train on cached maps of their input; 0 trains
    /// none. Variables `image_tail.*`.
    #[serde(default)]
    pub image_tail_layers: usize,
    pub steps: u64,
    pub batch_size: usize,
    /// With a frozen image encoder, score each ITC text against every train
    /// image rather than the batch's.
    #[serde(default)]
    pub bank_negatives: bool,
    /// Longest text in tokens, `[CLS]` and `[SEP]` included.
    pub max_text_tokens: usize,
    /// At most this many training examples (all when absent).
    #[serde(default)]
    pub max_examples: Option<usize>,
    pub lr: f64,
    /// (VarStore name prefix, lr multiplier), first match wins.
    pub lr_multipliers: Vec<(String, f64)>,
    pub weight_decay: f64,
    pub warmup_steps: u64,
    pub decay_steps: Vec<u64>,
    pub decay_factor: f64,
    pub clip_norm: f64,
    pub checkpoint_every: u64,
    pub keep_checkpoints: usize,
    pub share_text_fusion: bool,
    /// Sampling weight of each pretext task; absent or 0 disables it.
    pub tasks: BTreeMap<Task, f64>,
    pub vqvae: VqVaeRecipe,
    #[serde(default)]
    pub pac: PacRule,
    pub finetune: FinetuneRecipe,
}

/// Errors of reading a recipe, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    #[error("cannot read recipe {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("invalid recipe {path}: {reason}")]
    Invalid { path: String, reason: String },
}

impl Recipe {
    /// Reads a recipe file; `cpu` and `gpu` name the shipped ones.
    pub fn load(name_or_path: &str) -> Result<Recipe, RecipeError> {
        let (origin, text) = match name_or_path {
            "cpu" => ("recipes/cpu.toml".to_string(), include_str!("../recipes/cpu.toml").to_string()),
            "gpu" => ("recipes/gpu.toml".to_string(), include_str!("../recipes/gpu.toml").to_string()),
            path => {
                let text = std::fs::read_to_string(Path::new(path)).map_err(|source| RecipeError::Io { path: path.to_string(), source })?;
                (path.to_string(), text)
            }
        };
        let recipe: Recipe = toml::from_str(&text).map_err(|e| RecipeError::Invalid { path: origin.clone(), reason: e.to_string() })?;
        recipe.validate().map_err(|reason| RecipeError::Invalid { path: origin, reason })?;
        Ok(recipe)
    }

    fn validate(&self) -> Result<(), String> {
        if self.batch_size < 2 {
            return Err("batch_size must be at least 2 (contrastive tasks need in-batch negatives)".into());
        }
        if self.steps == 0 || self.checkpoint_every == 0 {
            return Err("steps and checkpoint_every must be positive".into());
        }
        if self.max_text_tokens < 3 {
            return Err("max_text_tokens must leave room for [CLS], a word and [SEP]".into());
        }
        if !["cpu", "cuda", "auto"].contains(&self.device.as_str()) {
            return Err(format!("device `{}`: expected cpu, cuda or auto", self.device));
        }
        if self.image_tail_layers > 0 {
            let most = self.image_backbone.max_tail_layers();
            if self.image_encoder != ImageEncoderMode::Frozen {
                return Err("image_tail_layers is for a frozen image encoder (a trained one trains every layer)".into());
            }
            if self.image_tail_layers > most {
                return Err(format!(
                    "image_tail_layers = {}: the {:?} backbone can train at most {most} last layers on cached maps",
                    self.image_tail_layers, self.image_backbone
                ));
            }
        }
        if self.finetune.batch_size < 2 || self.finetune.steps == 0 {
            return Err("finetune.batch_size must be at least 2 and finetune.steps positive".into());
        }
        TaskSampler::new(&self.finetune.tasks).map_err(|e| format!("finetune.tasks: {e}"))?;
        TaskSampler::new(&self.tasks).map(|_| ())
    }

    pub fn device(&self) -> tch::Device {
        match self.device.as_str() {
            "cpu" => tch::Device::Cpu,
            "cuda" => tch::Device::Cuda(0),
            _ => tch::Device::cuda_if_available(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_recipes_are_valid_and_differ_where_they_should() {
        let cpu = Recipe::load("cpu").unwrap();
        let gpu = Recipe::load("gpu").unwrap();
        assert_eq!((cpu.image_encoder, gpu.image_encoder), (ImageEncoderMode::Frozen, ImageEncoderMode::Trained));
        assert!(gpu.bf16 && !cpu.bf16);
        assert_eq!(gpu.batch_size, 256);
        assert_eq!(gpu.tasks, Task::paper_probabilities());
        assert_eq!(cpu.tasks, [(Task::Itc, 1.0)].into());
        assert!(cpu.bank_negatives && !gpu.bank_negatives);
    }

    #[test]
    fn a_bad_recipe_names_the_file_and_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.toml");
        let text = include_str!("../recipes/cpu.toml").replace("batch_size = 32", "batch_size = 1");
        std::fs::write(&path, text).unwrap();
        let message = Recipe::load(path.to_str().unwrap()).unwrap_err().to_string();
        assert!(message.contains("r.toml") && message.contains("batch_size"), "{message}");
        let text =
            include_str!("../recipes/cpu.toml").replace("image_encoder = \"frozen\"", "image_encoder = \"frozen\"\nimage_tail_layers = 9");
        std::fs::write(&path, text).unwrap();
        let message = Recipe::load(path.to_str().unwrap()).unwrap_err().to_string();
        assert!(message.contains("image_tail_layers = 9") && message.contains("at most 5"), "{message}");
        std::fs::write(&path, "name = 3").unwrap();
        assert!(Recipe::load(path.to_str().unwrap()).unwrap_err().to_string().contains("r.toml"));
    }
}
