//! `vitrine-index`: embeds a catalog with a fine-tuned model (one job, or
//! independent shards and a merge) for the bundle the browser searches.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use vitrine_core::catalog::{self, BadRowPolicy, ImportOptions};
use vitrine_index_builder::embed::{embed_shard, merge, shard_items, Shard};
use vitrine_trainer::checkpoint;
use vitrine_trainer::finetune::{load_finetuned, CatalogInputs};
use vitrine_trainer::recipe::Recipe;

#[derive(Parser)]
#[command(name = "vitrine-index", version, about = "Build vitrine's search index from a trained model and a catalog")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct Source {
    /// Catalog folder (canonical or H&M export).
    #[arg(long)]
    catalog: PathBuf,
    /// Skip bad catalog rows (reported) instead of failing.
    #[arg(long)]
    skip_bad_rows: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Embeds the catalog's items (image and text embeddings of the full model), resumably.
    Embed {
        #[command(flatten)]
        source: Source,
        /// Fine-tuning run folder or checkpoint.
        #[arg(long)]
        checkpoint: PathBuf,
        /// The recipe the model was trained with (image encoder mode, text length).
        #[arg(long, default_value = "cpu")]
        config: String,
        /// Folder with the set-up's pretrained weights (the frozen image encoder).
        #[arg(long, default_value = "models")]
        models: PathBuf,
        /// Folder for cached image features (default: <out>/cache).
        #[arg(long)]
        cache: Option<PathBuf>,
        /// This job's shard, `i/n` with 0 <= i < n; the items are split round-robin.
        #[arg(long, default_value = "0/1")]
        shard: Shard,
        /// Output folder (one sub-folder per shard).
        #[arg(long)]
        out: PathBuf,
    },
    /// Joins the shards of an embedding run into `<out>/embeddings.safetensors`.
    Merge {
        #[command(flatten)]
        source: Source,
        /// Number of shards.
        #[arg(long)]
        shards: usize,
        /// The embedding run's output folder.
        #[arg(long)]
        out: PathBuf,
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

fn open_catalog(source: &Source) -> Result<catalog::Catalog> {
    let policy = if source.skip_bad_rows { BadRowPolicy::Skip } else { BadRowPolicy::Strict };
    let catalog = catalog::open(&source.catalog, ImportOptions { policy, ..Default::default() })
        .with_context(|| format!("reading catalog {}", source.catalog.display()))?;
    for error in &catalog.report.errors {
        eprintln!("skipped {error}");
    }
    Ok(catalog)
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Embed { source, checkpoint, config, models, cache, shard, out } => {
            let catalog = open_catalog(&source)?;
            let recipe = Recipe::load(&config)?;
            let device = recipe.device();
            let dir = checkpoint::resolve(&checkpoint)?;
            let model = load_finetuned(&dir, recipe.max_text_tokens, device)?;
            let cache = cache.unwrap_or_else(|| out.join("cache"));
            let image_weights = models.join("efficientnet-lite0/model.safetensors");
            let items = shard_items(&catalog, shard);
            let inputs = CatalogInputs::for_items(&catalog, items, &model.tokenizer, &recipe, &image_weights, &cache, device)?;
            let summary = embed_shard(&model, &dir, &catalog, &inputs, shard, &out, device)?;
            println!(
                "shard {}/{}: {} items in {} chunks ({} reused), {:.1} items/s",
                shard.index, shard.count, summary.items, summary.chunks, summary.reused_chunks, summary.items_per_s
            );
        }
        Command::Merge { source, shards, out } => {
            let catalog = open_catalog(&source)?;
            let embeddings = merge(&out, shards, &catalog)?;
            let path = out.join("embeddings.safetensors");
            let items = tch::Tensor::from_slice(&embeddings.items.iter().map(|&i| i as i64).collect::<Vec<_>>());
            tch::Tensor::write_safetensors(&[("items", items), ("image", embeddings.image), ("text", embeddings.text)], &path)
                .with_context(|| format!("writing {}", path.display()))?;
            println!("{} items merged from {shards} shards into {}", embeddings.items.len(), path.display());
        }
    }
    Ok(())
}
