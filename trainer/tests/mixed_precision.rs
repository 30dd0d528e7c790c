//! The bf16 autocast path the gpu recipe takes, run on CPU (libtorch's CPU
//! autocast takes the same route through the model): every pretext task's
//! loss and gradient norm under bf16 are finite and close to f32's on the same
//! batches and weights.

use std::collections::BTreeSet;
use std::path::Path;

use vitrine_core::catalog::{self, ImportOptions};
use vitrine_core::synth::{generate, SynthSpec};
use vitrine_trainer::pretrain::{pretrain, train_vqvae, ModelPaths};
use vitrine_trainer::recipe::Recipe;
use vitrine_trainer::schedule::{step_rng, Task, TaskSampler};
use vitrine_trainer::train_loop::{read_metrics, METRICS_FILE};

const MODELS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../models");

/// The first seed whose per-step task draws include all six tasks.
fn seed_covering_every_task(recipe: &Recipe) -> u64 {
    let sampler = TaskSampler::new(&recipe.tasks).unwrap();
    (0..)
        .find(|&seed| {
            let drawn: BTreeSet<Task> = (0..recipe.steps).map(|step| sampler.sample(&mut step_rng(seed, step))).collect();
            drawn.len() == 6
        })
        .expect("some seed draws every task")
}

#[test]
fn bf16_autocast_trains_every_task_like_f32() {
    let models = Path::new(MODELS);
    assert!(models.join("all-MiniLM-L6-v2/model.safetensors").is_file(), "run `cargo xtask setup` first");
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("generated");
    generate(&source, &SynthSpec { groups: 12, baskets: 4, ..Default::default() }).unwrap();
    let catalog = catalog::open(&source, ImportOptions::default()).unwrap();

    let mut recipe = Recipe::load("cpu").unwrap();
    // Every pretext task (the cpu recipe pretrains with ITC alone).
    recipe.tasks = Task::paper_probabilities();
    recipe.steps = 18;
    recipe.batch_size = 4;
    recipe.max_text_tokens = 24;
    recipe.warmup_steps = 1;
    recipe.decay_steps = vec![];
    recipe.checkpoint_every = 18;
    recipe.vqvae.steps = 2;
    recipe.vqvae.batch_size = 2;
    recipe.vqvae.channels = Some(vec![8, 8, 16, 16, 16]);
    recipe.pac.min_df = 2;
    // No updates: every step compares the two precisions on the same weights
    // (small-batch trajectories would otherwise drift apart within steps).
    recipe.lr = 0.0;
    recipe.seed = seed_covering_every_task(&recipe);
    let vqvae = dir.path().join("vqvae");
    train_vqvae(&catalog, &recipe, &vqvae).unwrap();
    let paths = ModelPaths {
        bert: models.join("all-MiniLM-L6-v2"),
        image_encoder: models.join("efficientnet-lite0/model.safetensors"),
        vqvae: Some(vqvae),
        feature_cache: None,
    };

    let full = dir.path().join("f32");
    pretrain(&catalog, &recipe, &paths, &full, false).unwrap();
    recipe.bf16 = true;
    let mixed = dir.path().join("bf16");
    pretrain(&catalog, &recipe, &paths, &mixed, false).unwrap();

    let full = read_metrics::<Task>(&full.join(METRICS_FILE)).unwrap();
    let mixed = read_metrics::<Task>(&mixed.join(METRICS_FILE)).unwrap();
    assert_eq!(full.len(), 18);
    assert_eq!(mixed.len(), 18);
    let tasks: BTreeSet<_> = mixed.iter().map(|m| m.task).collect();
    assert_eq!(tasks.len(), 6, "the chosen seed's steps cover every task: {tasks:?}");
    for (f, m) in full.iter().zip(&mixed) {
        assert_eq!(f.task, m.task, "same seed, same task order");
        assert!(m.loss.is_finite() && m.grad_norm.is_finite(), "step {}: {m:?}", m.step);
        // bf16 keeps 8 bits of mantissa: losses agree to a few percent.
        let tolerance = 0.05 * f.loss.abs() + 0.05;
        assert!((f.loss - m.loss).abs() < tolerance, "step {} {:?}: f32 {} vs bf16 {}", f.step, f.task, f.loss, m.loss);
        let gradient_gap = (f.grad_norm - m.grad_norm).abs() / f.grad_norm.max(1e-6);
        assert!(gradient_gap < 0.1, "step {} {:?}: gradient norm f32 {} vs bf16 {}", f.step, f.task, f.grad_norm, m.grad_norm);
    }
}
