//! `vitrine-index`: embeds a catalog with a fine-tuned model (one job, or
//! independent shards and a merge), distils and quantises it into the bundle
//! the browser searches, and evaluates a bundle against the teacher.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use vitrine_core::bundle::{Bundle, Limits};
use vitrine_core::catalog::Split;
use vitrine_core::catalog::{self, BadRowPolicy, ImportOptions};
use vitrine_core::engine::Engine;
use vitrine_core::index::BuildParams;
use vitrine_core::model::quant::{LoadOptions, StoredBits};
use vitrine_core::model::text_encoder::TextEncoder;
use vitrine_core::tasks::Labels;
use vitrine_index_builder::build::{build_catalog, BuildInputs, EmbeddingSource, StageTimes, Teacher};
use vitrine_index_builder::distill::DistillOptions;
use vitrine_index_builder::embed::{embed_shard, merge, shard_items, Shard};
use vitrine_index_builder::evaluate::{comparison_markdown, evaluate_bundle};
use vitrine_index_builder::shopper::{run_shopper_queries, shopper_markdown};
use vitrine_index_builder::student::StudentOptions;
use vitrine_trainer::catalog_inputs::{CatalogInputs, ItemTexts};
use vitrine_trainer::checkpoint;
use vitrine_trainer::recipe::Recipe;
use vitrine_trainer::teacher::load_finetuned;

/// all-MiniLM-L6-v2's own input limit (sentence-transformers' max_seq_length).
const MINILM_MAX_TOKENS: usize = 256;

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

/// A bundle of a catalog, measured on one of its splits.
#[derive(clap::Args)]
struct BundleOnSplit {
    #[command(flatten)]
    source: Source,
    /// Bundle folder or single file.
    #[arg(long)]
    bundle: PathBuf,
    #[arg(long, default_value = "test")]
    split: String,
}

impl BundleOnSplit {
    fn open(&self) -> Result<(catalog::Catalog, Engine, Split)> {
        let catalog = open_catalog(&self.source)?;
        let split: Split = self.split.parse().map_err(|e| anyhow::anyhow!("--split: {e}"))?;
        let engine = Engine::from_bundle(read_bundle(&self.bundle)?)?;
        Ok((catalog, engine, split))
    }
}

/// The model and how to run it.
#[derive(clap::Args)]
struct ModelArgs {
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
}

/// The browser's text encoder: the teacher's text tower (default) or a distilled student.
#[derive(clap::Args)]
struct StudentArgs {
    /// Ship a student text encoder with this many layers (evenly spaced teacher layers,
    /// a pruned vocabulary, distilled from the teacher): faster queries, a smaller bundle.
    #[arg(long)]
    student_layers: Option<usize>,
    /// The most frequent wordpieces the student keeps besides the catalog's own tokens.
    #[arg(long, default_value_t = StudentOptions::default().common_wordpieces)]
    student_wordpieces: usize,
    /// Distillation steps of the student.
    #[arg(long, default_value_t = StudentOptions::default().steps)]
    student_steps: usize,
    /// Query-like train texts the student learns from (titles, prefixes, phrases; a seeded sample above that).
    #[arg(long, default_value_t = StudentOptions::default().max_texts)]
    student_texts: usize,
    /// Bits of the text encoder's stored matrices: 8, or 4 (half the download; widened to int8 when loaded).
    #[arg(long, value_enum, default_value = "8")]
    text_encoder_bits: Bits,
}

/// Precision of the stored text encoder matrices.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Bits {
    #[value(name = "8")]
    Eight,
    #[value(name = "4")]
    Four,
}

#[derive(Subcommand)]
enum Command {
    /// Builds the bundle: embeds the catalog (resuming an earlier run in <out>/embeddings),
    /// distils the compact space and heads, quantises, builds the HNSW graph and writes
    /// <out>/bundle/ and <out>/catalog.vitrine, printing each stage's time and the sizes.
    Build {
        #[command(flatten)]
        source: Source,
        #[command(flatten)]
        model: ModelArgs,
        /// Use the shards of a finished `vitrine-index embed` run in this folder instead of embedding here.
        #[arg(long)]
        embeddings: Option<PathBuf>,
        /// Number of shards of that run.
        #[arg(long, default_value_t = 1)]
        shards: usize,
        /// Width of the compact space.
        #[arg(long, default_value_t = 256)]
        dim: usize,
        /// Distillation steps of the projection and of the TGIR and OCIR heads.
        #[arg(long, default_value_t = DistillOptions::default().steps)]
        steps: usize,
        /// Distillation steps of the category head (each costs a linear layer
        /// on one batch).
        #[arg(long, default_value_t = DistillOptions::default().category_steps)]
        category_steps: usize,
        /// Train examples per head answered by the teacher.
        #[arg(long, default_value_t = 20_000)]
        max_examples: usize,
        /// Weight of the image in product vectors (default: chosen on the val split).
        #[arg(long)]
        image_weight: Option<f32>,
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Store a 4-bit refinement code of every product vector beside its int8 one, so that
        /// search candidates are re-scored close to the f32 vectors: for large, dense catalogs
        /// (half a byte more per dimension and product).
        #[arg(long)]
        refine: bool,
        /// The browser's search beam width (and re-rank count) for this catalog, 1 to 4096
        /// (default: the engine's, 100); bench/ann_wasm.sh measures recall against it.
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=4096))]
        search_ef: Option<u16>,
        #[command(flatten)]
        student: StudentArgs,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
    },
    /// Retrieval through a bundle with the teacher's protocols on one split,
    /// beside the teacher's figures when given.
    Eval {
        #[command(flatten)]
        target: BundleOnSplit,
        /// The teacher's `vitrine-train eval --out` report on the same split.
        #[arg(long)]
        teacher_report: Option<PathBuf>,
        /// Writes the figures as JSON here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Shopper queries ("<colour> <product type>", judged by the catalog's fields) through
    /// a bundle, beside BM25 and MiniLM embeddings of title + description and the chance line.
    Shopper {
        /// Queries need items of the split, which is also searched alone.
        #[command(flatten)]
        target: BundleOnSplit,
        /// The pretrained all-MiniLM-L6-v2 folder (config.json, model.safetensors, tokenizer.json).
        #[arg(long, default_value = "models/all-MiniLM-L6-v2")]
        minilm: PathBuf,
        /// Number of queries (a seeded sample of the colour and type pairs).
        #[arg(long, default_value_t = 150)]
        queries: usize,
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Writes the report as JSON here (the Markdown goes to stdout).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Embeds the catalog's items (image and text embeddings of the full model), resumably.
    Embed {
        #[command(flatten)]
        source: Source,
        #[command(flatten)]
        model: ModelArgs,
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
        // Colour codes only where a terminal shows them, not in a job's log file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
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

fn read_bundle(path: &std::path::Path) -> Result<Bundle> {
    let limits = Limits::default();
    let bundle = if path.is_dir() { Bundle::read_folder(path, &limits) } else { Bundle::read_single_file(path, &limits) };
    bundle.with_context(|| format!("reading bundle {}", path.display()))
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Build {
            source,
            model,
            embeddings,
            shards,
            dim,
            steps,
            category_steps,
            max_examples,
            image_weight,
            seed,
            refine,
            search_ef,
            student,
            out,
        } => {
            let mut stages = StageTimes::default();
            let (catalog, labels, recipe, dir, finetuned, inputs) = stages.time("load", || -> Result<_> {
                let catalog = open_catalog(&source)?;
                let labels = Labels::from_catalog(&catalog, BadRowPolicy::Skip)?;
                let recipe = Recipe::load(&model.config)?;
                let dir = checkpoint::resolve(&model.checkpoint)?;
                let finetuned = load_finetuned(&dir, recipe.max_text_tokens, recipe.device())?;
                let cache = model.cache.clone().unwrap_or_else(|| out.join("cache"));
                let image_weights = model.models.join("efficientnet-lite0/model.safetensors");
                let inputs =
                    CatalogInputs::new(&catalog, ItemTexts::Plain, &finetuned.tokenizer, &recipe, &image_weights, &cache, recipe.device())?;
                Ok((catalog, labels, recipe, dir, finetuned, inputs))
            })?;
            let teacher = Teacher { finetuned: &finetuned, catalog: &catalog, labels: &labels, inputs: &inputs, device: recipe.device() };
            let source = match &embeddings {
                Some(folder) => EmbeddingSource::Shards { folder, count: shards },
                None => EmbeddingSource::Embed(&out.join("embeddings")),
            };
            let distill = DistillOptions { dim, steps, category_steps, max_examples, image_weight, seed, ..Default::default() };
            let text_encoder_bits = student.text_encoder_bits;
            let student = student.student_layers.map(|layers| StudentOptions {
                layers,
                common_wordpieces: student.student_wordpieces,
                steps: student.student_steps,
                max_texts: student.student_texts,
                seed,
                ..Default::default()
            });
            let params = BuildParams { refine, ..BuildParams::default() };
            let build_inputs = BuildInputs {
                checkpoint: &dir,
                max_query_tokens: recipe.max_text_tokens,
                distill: &distill,
                student: student.as_ref(),
                text_encoder_bits: match text_encoder_bits {
                    Bits::Eight => StoredBits::Int8,
                    Bits::Four => StoredBits::Int4,
                },
                index: &params,
                search_ef: search_ef.map(usize::from),
                out: &out,
            };
            let report = build_catalog(&teacher, source, &build_inputs, stages)?;
            println!("stage times:");
            for (stage, seconds) in &report.stages.0 {
                println!("  {stage:<14} {seconds:>9.1} s");
            }
            let d = &report.distill;
            println!(
                "image weight of product vectors: {:.1} (val score per weight: {})",
                d.image_weight,
                d.image_weight_scores.iter().map(|(w, s)| format!("{w:.1}→{s:.1}")).collect::<Vec<_>>().join(" ")
            );
            println!("val title → product R@10: teacher space {:.2}, compact {:.2}", d.val_title_r10_teacher, d.val_title_r10_compact);
            if !d.val_query_category_accuracy.is_empty() {
                println!(
                    "val \"<colour> <type>\" queries with their type's category first, by category head step: {}",
                    d.val_query_category_accuracy.iter().map(|(step, a)| format!("{step}→{a:.1}%")).collect::<Vec<_>>().join(" ")
                );
            }
            if let Some(s) = &report.student {
                println!(
                    "student text encoder: {} layers (teacher layers {:?}), {} of {} tokens; val title R@10 with teacher queries {:.2}, \
                     student {:.2} (before distillation {:.2}); cosine to the teacher's queries mean {:.4}, min {:.4}",
                    s.teacher_layers.len(),
                    s.teacher_layers,
                    s.vocab_size,
                    s.teacher_vocab_size,
                    s.val_title_r10_teacher,
                    s.val_title_r10_student,
                    s.val_title_r10_student_start,
                    s.val_cosine_mean,
                    s.val_cosine_min
                );
            }
            println!("bundle: {} items, {} dims (teacher {}):", report.items, report.dims, report.teacher_dims);
            for (part, bytes) in &report.part_bytes {
                println!("  {part:<14} {bytes:>12} bytes");
            }
            println!(
                "  total {} bytes ({:.0} per item); single file {} bytes; int8 vectors {:.0} bytes per item vs {} bytes of f32 teacher vectors",
                report.total_bytes,
                report.total_bytes as f64 / report.items.max(1) as f64,
                report.single_file_bytes,
                report.index_bytes_per_item,
                report.teacher_f32_vector_bytes / report.items.max(1) as u64
            );
            println!(
                "wrote {} and {}",
                vitrine_index_builder::build::bundle_folder(&out).display(),
                vitrine_index_builder::build::single_file(&out).display()
            );
        }
        Command::Eval { target, teacher_report, out } => {
            let (catalog, engine, split) = target.open()?;
            let figures = evaluate_bundle(&engine, &catalog, split)?;
            if let Some(path) = &out {
                std::fs::write(path, serde_json::to_string_pretty(&figures)?).with_context(|| format!("writing {}", path.display()))?;
            }
            match teacher_report {
                Some(path) => {
                    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
                    let teacher =
                        serde_json::from_str(&text).with_context(|| format!("{}: not a `vitrine-train eval` report", path.display()))?;
                    println!("{}", comparison_markdown(&figures, &teacher));
                }
                None => println!("{}", serde_json::to_string_pretty(&figures)?),
            }
        }
        Command::Shopper { target, minilm, queries, seed, out } => {
            let (catalog, engine, split) = target.open()?;
            let minilm = TextEncoder::from_dir(&minilm, LoadOptions::default(), MINILM_MAX_TOKENS)
                .with_context(|| format!("loading MiniLM from {} (run `cargo xtask setup`)", minilm.display()))?;
            let report = run_shopper_queries(&engine, &catalog, &minilm, split, queries, seed)?;
            if let Some(path) = &out {
                std::fs::write(path, serde_json::to_string_pretty(&report)?).with_context(|| format!("writing {}", path.display()))?;
            }
            println!("{}", shopper_markdown(&report));
        }
        Command::Embed { source, model: args, shard, out } => {
            let catalog = open_catalog(&source)?;
            let recipe = Recipe::load(&args.config)?;
            let device = recipe.device();
            let dir = checkpoint::resolve(&args.checkpoint)?;
            let model = load_finetuned(&dir, recipe.max_text_tokens, device)?;
            let cache = args.cache.unwrap_or_else(|| out.join("cache"));
            let image_weights = args.models.join("efficientnet-lite0/model.safetensors");
            let items = shard_items(&catalog, shard);
            let inputs =
                CatalogInputs::for_items(&catalog, items, ItemTexts::Plain, &model.tokenizer, &recipe, &image_weights, &cache, device)?;
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
