//! `vitrine-train`: trains the image tokenizer, pretrains the FashionViL model
//! on a catalog, fine-tunes it for the downstream tasks, evaluates it with the
//! paper's protocols and runs the ablation study.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use vitrine_core::catalog::Split;
use vitrine_core::catalog::{self, BadRowPolicy, ImportOptions};
use vitrine_core::tasks::Labels;
use vitrine_trainer::ablation::{ablation_markdown, paper_rows, run_ablation};
use vitrine_trainer::catalog_inputs::{CatalogInputs, ItemTexts};
use vitrine_trainer::checkpoint;
use vitrine_trainer::eval::evaluate;
use vitrine_trainer::finetune::{finetune, Start};
use vitrine_trainer::pretrain::{pretrain, train_vqvae, ModelPaths};
use vitrine_trainer::recipe::Recipe;
use vitrine_trainer::schedule::{Downstream, LoopTask};
use vitrine_trainer::teacher::load_finetuned;

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
    /// Folder for cached image features, shared by runs on the same catalog
    /// (default: the run folder's `cache`).
    #[arg(long)]
    cache: Option<PathBuf>,
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
    /// Fine-tunes for the downstream tasks (XMR, TGIR, CR/SCR, OCIR): all of
    /// them (multi-task, the recipe's weights) or those given with --tasks.
    Finetune {
        #[command(flatten)]
        common: Common,
        /// Run folder.
        #[arg(long)]
        run: PathBuf,
        /// Pretraining or fine-tuning run folder or checkpoint to start from (a
        /// fine-tuned model of a catalog with the same labels keeps its heads:
        /// a warm start); without it the model starts from the pretrained text
        /// and image towers only.
        #[arg(long)]
        from: Option<PathBuf>,
        /// Comma-separated tasks (xmr, tgir, cr, ocir), equally weighted; one
        /// task gives the paper's per-task fine-tune.
        #[arg(long)]
        tasks: Option<String>,
        /// Continue from the newest checkpoint in the run folder.
        #[arg(long)]
        resume: bool,
    },
    /// Evaluates a fine-tuned model with the paper's protocols; prints Markdown, writes JSON.
    Eval {
        #[command(flatten)]
        common: Common,
        /// Fine-tuning run folder or checkpoint.
        #[arg(long)]
        checkpoint: PathBuf,
        /// Split to evaluate on.
        #[arg(long, default_value = "test")]
        split: String,
        /// Where to write the JSON report.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Runs the paper's ablation rows (pretrain, multi-task fine-tune, test-split eval).
    Ablate {
        #[command(flatten)]
        common: Common,
        /// Comma-separated rows: none, itc, mlm, mpfc, mvc, pac, itc+mlm+mpfc, +itm, +mvc, all, all-unshared.
        #[arg(long, default_value = "none,itc,all,all-unshared")]
        rows: String,
        /// Comma-separated seeds.
        #[arg(long, default_value = "7")]
        seeds: String,
        /// Fine-tuning steps of every row (default: the recipe's).
        #[arg(long)]
        finetune_steps: Option<u64>,
        /// The image tokenizer folder (needed by rows with MPFC).
        #[arg(long)]
        vqvae: Option<PathBuf>,
        /// Output folder: runs, one JSON report per row and seed, ablation.md.
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        // Colour codes only where a terminal shows them, not in a job's log file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
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
    ModelPaths { bert: common.models.join("all-MiniLM-L6-v2"), image_encoder, vqvae, feature_cache: common.cache.clone() }
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
        Command::Finetune { common, run, from, tasks, resume } => {
            let (catalog, mut recipe) = load(&common)?;
            if let Some(steps) = common.steps {
                recipe.finetune.steps = steps;
            }
            if let Some(tasks) = tasks {
                recipe.finetune.tasks = tasks
                    .split(',')
                    .map(|name| {
                        Downstream::parse(name.trim()).map(|t| (t, 1.0)).with_context(|| format!("unknown task `{name}` in --tasks"))
                    })
                    .collect::<Result<_>>()?;
            }
            let from = from.as_deref().map(checkpoint::resolve).transpose()?;
            let start = from.as_deref().map_or(Start::Towers, Start::Pretrained);
            let summary = finetune(&catalog, &recipe, &model_paths(&common, None), start, &run, resume)?;
            println!("fine-tuned {} steps from {} ({:.1} samples/s)", summary.steps, summary.start, summary.samples_per_s);
            println!("{:<6} {:>9} {:>6} {:>12} {:>12}", "task", "examples", "steps", "first 10%", "last 10%");
            for (task, trend) in &summary.tasks {
                let examples = summary.examples.get(task).copied().unwrap_or(0);
                println!("{:<6} {examples:>9} {:>6} {:>12.4} {:>12.4}", task.name(), trend.steps, trend.first_mean, trend.last_mean);
            }
            for (task, reason) in &summary.skipped {
                println!("{:<6} skipped: {reason}", task.name());
            }
            println!("checkpoint: {}", summary.checkpoint.display());
        }
        Command::Eval { common, checkpoint, split, out } => {
            let (catalog, recipe) = load(&common)?;
            let split: Split = split.parse().map_err(|e| anyhow::anyhow!("--split: {e}"))?;
            let dir = checkpoint::resolve(&checkpoint)?;
            let device = recipe.device();
            let model = load_finetuned(&dir, recipe.max_text_tokens, device)?;
            let paths = model_paths(&common, None);
            let inputs = CatalogInputs::new(
                &catalog,
                ItemTexts::Plain,
                &model.tokenizer,
                &recipe,
                &paths.image_encoder,
                &paths.cache_for(&dir),
                device,
            )?;
            let labels = Labels::from_catalog(&catalog, BadRowPolicy::Skip)?;
            let report = evaluate(&model, &catalog, &labels, &inputs, split, device)?;
            println!("{}", report.markdown(&format!("{} ({})", dir.display(), recipe.name)));
            if let Some(out) = out {
                std::fs::write(&out, serde_json::to_string_pretty(&report)?).with_context(|| format!("writing {}", out.display()))?;
            }
        }
        Command::Ablate { common, rows, seeds, finetune_steps, vqvae, out } => {
            let (catalog, mut recipe) = load(&common)?;
            if let Some(steps) = finetune_steps {
                recipe.finetune.steps = steps;
            }
            let all = paper_rows();
            let rows = rows
                .split(',')
                .map(|name| all.iter().find(|r| r.name == name.trim()).cloned().with_context(|| format!("unknown ablation row `{name}`")))
                .collect::<Result<Vec<_>>>()?;
            let seeds =
                seeds.split(',').map(|s| s.trim().parse::<u64>().with_context(|| format!("seed `{s}`"))).collect::<Result<Vec<_>>>()?;
            let results = run_ablation(&catalog, &recipe, &model_paths(&common, vqvae), &rows, &seeds, &out)?;
            let table = ablation_markdown(&results, &rows);
            std::fs::write(out.join("ablation.md"), &table).with_context(|| format!("writing {}", out.join("ablation.md").display()))?;
            println!("{table}");
        }
    }
    Ok(())
}
