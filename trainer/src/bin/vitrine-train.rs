//! `vitrine-train`: trains the image tokenizer and pretrains the FashionViL
//! model on a catalog.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use vitrine_core::catalog::{self, BadRowPolicy, ImportOptions};
use vitrine_trainer::pretrain::{pretrain, train_vqvae, ModelPaths};
use vitrine_trainer::recipe::Recipe;

#[derive(Parser)]
#[command(name = "vitrine-train", version, about = "Train vitrine's fashion vision-and-language model")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct Common {
    /// Catalog folder (canonical or H&M export) with a train split.
    #[arg(long)]
    catalog: PathBuf,
    /// Recipe: `cpu`, `gpu`, or a TOML file.
    #[arg(long, default_value = "cpu")]
    config: String,
    /// Skip bad catalog rows (reported) instead of failing.
    #[arg(long)]
    skip_bad_rows: bool,
    /// Override the recipe's number of steps.
    #[arg(long)]
    steps: Option<u64>,
    /// Folder with the pretrained weights made by `cargo xtask setup`.
    #[arg(long, default_value = "models")]
    models: PathBuf,
    /// Image encoder weights (safetensors), e.g. a ResNet-50 with torchvision
    /// names for a recipe with `image_backbone = "resnet50"`; default: the
    /// set-up's EfficientNet-Lite0.
    #[arg(long)]
    image_weights: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Trains the VQ-VAE image tokenizer whose codes MPFC predicts.
    Vqvae {
        #[command(flatten)]
        common: Common,
        /// Output folder (vqvae.safetensors, vqvae.json).
        #[arg(long)]
        out: PathBuf,
    },
    /// Pretrains with the recipe's pretext tasks; writes checkpoints, metrics.jsonl, summary.json.
    Pretrain {
        #[command(flatten)]
        common: Common,
        /// Run folder.
        #[arg(long)]
        run: PathBuf,
        /// The image tokenizer folder (needed when MPFC is enabled).
        #[arg(long)]
        vqvae: Option<PathBuf>,
        /// Continue from the newest checkpoint in the run folder.
        #[arg(long)]
        resume: bool,
    },
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    if let Err(error) = run(Cli::parse()) {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

fn load(common: &Common) -> Result<(catalog::Catalog, Recipe)> {
    let mut recipe = Recipe::load(&common.config)?;
    if let Some(steps) = common.steps {
        recipe.steps = steps;
        recipe.vqvae.steps = steps;
    }
    let policy = if common.skip_bad_rows { BadRowPolicy::Skip } else { BadRowPolicy::Strict };
    let catalog = catalog::open(&common.catalog, ImportOptions { policy, ..Default::default() })
        .with_context(|| format!("reading catalog {}", common.catalog.display()))?;
    for error in &catalog.report.errors {
        eprintln!("skipped {error}");
    }
    Ok((catalog, recipe))
}

fn model_paths(common: &Common, vqvae: Option<PathBuf>) -> ModelPaths {
    let image_encoder = common.image_weights.clone().unwrap_or_else(|| common.models.join("efficientnet-lite0/model.safetensors"));
    ModelPaths { bert: common.models.join("all-MiniLM-L6-v2"), image_encoder, vqvae }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Vqvae { common, out } => {
            let (catalog, recipe) = load(&common)?;
            let (first, last) = train_vqvae(&catalog, &recipe, &out)?;
            println!("image tokenizer saved in {} (reconstruction loss {first:.4} → {last:.4})", out.display());
        }
        Command::Pretrain { common, run, vqvae, resume } => {
            let (catalog, recipe) = load(&common)?;
            let summary = pretrain(&catalog, &recipe, &model_paths(&common, vqvae), &run, resume)?;
            println!(
                "pretrained {} steps on {} examples ({:.1} samples/s), {} pseudo-attributes",
                summary.steps, summary.examples, summary.samples_per_s, summary.pac_attributes
            );
            println!("{:<6} {:>6} {:>12} {:>12}", "task", "steps", "first 10%", "last 10%");
            for (task, trend) in &summary.tasks {
                println!("{:<6} {:>6} {:>12.4} {:>12.4}", task.name(), trend.steps, trend.first_mean, trend.last_mean);
            }
            println!("checkpoint: {}", summary.checkpoint.display());
        }
    }
    Ok(())
}
