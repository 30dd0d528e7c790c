//! A generated catalog and a model briefly fine-tuned on it, for the index
//! builder's tests.

use std::path::{Path, PathBuf};

use vitrine_core::catalog::{self, Catalog, ImportOptions};
use vitrine_core::synth::{generate, SynthSpec};
use vitrine_trainer::finetune::{finetune, Start};
use vitrine_trainer::pretrain::ModelPaths;
use vitrine_trainer::recipe::Recipe;

const MODELS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../models");

pub struct Setup {
    pub catalog: Catalog,
    pub paths: ModelPaths,
    pub recipe: Recipe,
    /// The fine-tuned checkpoint.
    pub checkpoint: PathBuf,
}

/// A catalog of `groups` garment groups generated in `dir`, and a model fine-tuned on it for two steps.
pub fn finetuned_on_generated(dir: &Path, groups: usize, baskets: usize) -> Setup {
    let models = Path::new(MODELS);
    assert!(models.join("all-MiniLM-L6-v2/model.safetensors").is_file(), "run `cargo xtask setup` first");
    let source = dir.join("generated");
    generate(&source, &SynthSpec { groups, baskets, ..Default::default() }).unwrap();
    let catalog = catalog::open(&source, ImportOptions::default()).unwrap();
    let paths = ModelPaths {
        bert: models.join("all-MiniLM-L6-v2"),
        image_encoder: models.join("efficientnet-lite0/model.safetensors"),
        vqvae: None,
        feature_cache: Some(dir.join("cache")),
    };
    let mut recipe = Recipe::load("cpu").unwrap();
    recipe.max_text_tokens = 32;
    recipe.finetune.steps = 2;
    recipe.finetune.batch_size = 4;
    recipe.checkpoint_every = 2;
    let run = finetune(&catalog, &recipe, &paths, Start::Towers, &dir.join("finetune"), false).unwrap();
    Setup { catalog, paths, recipe, checkpoint: run.checkpoint }
}
