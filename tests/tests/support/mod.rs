//! What several cross-crate tests need: a trained checkpoint made from a
//! generated catalog, and real catalog texts.

// Each test binary that includes this module uses a part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use vitrine_core::catalog::{self, Catalog, ImportOptions};
use vitrine_core::synth::{generate, SynthSpec};
use vitrine_trainer::finetune::{finetune, Start};
use vitrine_trainer::pretrain::{pretrain, train_vqvae, ModelPaths};
use vitrine_trainer::recipe::Recipe;
use vitrine_trainer::schedule::Task;

const MODELS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../models");
const HM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data/hm");

/// The cpu recipe cut down to a few steps of everything.
pub fn tiny_recipe(max_text_tokens: usize) -> Recipe {
    let mut recipe = Recipe::load("cpu").unwrap();
    // Every pretext task (the cpu recipe pretrains with ITC alone).
    recipe.tasks = Task::paper_probabilities();
    recipe.steps = 4;
    recipe.batch_size = 4;
    recipe.max_text_tokens = max_text_tokens;
    recipe.warmup_steps = 1;
    recipe.decay_steps = vec![];
    recipe.checkpoint_every = 4;
    recipe.vqvae.steps = 2;
    recipe.vqvae.batch_size = 2;
    recipe.vqvae.channels = Some(vec![8, 8, 16, 16, 16]);
    recipe.pac.min_df = 2;
    recipe.finetune.steps = 8;
    recipe.finetune.batch_size = 4;
    recipe.finetune.warmup_steps = 1;
    recipe
}

/// A generated catalog in `dir/generated` and the model files of `cargo xtask setup`.
pub fn generated_catalog(dir: &Path) -> (Catalog, ModelPaths) {
    let models = Path::new(MODELS);
    assert!(models.join("all-MiniLM-L6-v2/model.safetensors").is_file(), "run `cargo xtask setup` first");
    let source = dir.join("generated");
    generate(&source, &SynthSpec { groups: 24, baskets: 30, ..Default::default() }).unwrap();
    let catalog = catalog::open(&source, ImportOptions::default()).unwrap();
    let paths = ModelPaths {
        bert: models.join("all-MiniLM-L6-v2"),
        image_encoder: models.join("efficientnet-lite0/model.safetensors"),
        vqvae: Some(dir.join("vqvae")),
        feature_cache: Some(dir.join("cache")),
    };
    (catalog, paths)
}

/// A checkpoint with every head: the image tokenizer, a few pretraining steps,
/// then a few multi-task fine-tuning steps, on `catalog`.
pub fn finetuned_checkpoint(catalog: &Catalog, paths: &ModelPaths, recipe: &Recipe, dir: &Path) -> PathBuf {
    train_vqvae(catalog, recipe, paths.vqvae.as_ref().unwrap()).unwrap();
    let pretrained = pretrain(catalog, recipe, paths, &dir.join("pretrain"), false).unwrap();
    finetune(catalog, recipe, paths, Start::Pretrained(&pretrained.checkpoint), &dir.join("finetune"), false).unwrap().checkpoint
}

/// The H&M sample beside the project when it is there (CI must have it), else `fallback`.
pub fn real_catalog_or(fallback: Catalog) -> (Catalog, &'static str) {
    let dir = Path::new(HM);
    if dir.join("articles.csv").is_file() {
        return (catalog::open(dir, ImportOptions::default()).expect("the H&M sample imports strictly"), "H&M");
    }
    assert!(std::env::var_os("CI").is_none(), "CI must have the H&M sample at {}", dir.display());
    eprintln!("no H&M sample at {}: using the generated catalog's texts", dir.display());
    (fallback, "generated")
}
