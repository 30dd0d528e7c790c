//! Text encoder speed and size, f32 against int8 (both int8 kernels): 50
//! catalog queries of 9–16 tokens, one at a time, median ms per query after a
//! warm-up, cosine of each int8 embedding to the f32 one, and model bytes.
//! `bench/text_encoder.sh` runs it and writes `bench/results/text_encoder.md`.
//!
//! It can also write what the WebAssembly benchmark reads: the queries (JSON)
//! and the int8 model folder.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Parser;
use vitrine_core::catalog::{self, ImportOptions, Split};
use vitrine_core::model::quant::{quantize_safetensors, Int8Kernel};
use vitrine_core::model::{LoadOptions, TextEncoder, CONFIG_FILE, MODEL_FILE, TOKENIZER_FILE};
use vitrine_core::synth::{generate, SynthSpec};

#[derive(Parser)]
struct Args {
    /// A text encoder folder: config.json, model.safetensors (f32), tokenizer.json.
    #[arg(long, default_value = "models/all-MiniLM-L6-v2")]
    model: PathBuf,
    /// The catalog whose texts become the queries (a generated one when absent).
    #[arg(long, default_value = "../shared/data/hm")]
    catalog: PathBuf,
    #[arg(long, default_value_t = 50)]
    queries: usize,
    /// Write the queries here as a JSON array.
    #[arg(long)]
    queries_out: Option<PathBuf>,
    /// Write the int8 model folder here.
    #[arg(long)]
    int8_out: Option<PathBuf>,
}

const MIN_TOKENS: usize = 9;
const MAX_TOKENS: usize = 16;
const WARM_UP: usize = 5;

/// Queries of 9–16 tokens, spread evenly: for the i-th query, the longest word
/// prefix of a test item's `title. description` that fits in 9 + i mod 8
/// tokens, when it has at least 9.
fn queries(encoder: &TextEncoder, catalog_dir: &Path, count: usize) -> Result<(Vec<String>, String)> {
    let scratch = tempfile::tempdir()?;
    let (catalog, source) = if catalog_dir.is_dir() {
        (catalog::open(catalog_dir, ImportOptions::default())?, catalog_dir.display().to_string())
    } else {
        let dir = scratch.path().join("generated");
        generate(&dir, &SynthSpec::default())?;
        (catalog::open(&dir, ImportOptions::default())?, "a generated catalog".to_string())
    };
    let tokens = |text: &str| encoder.tokenizer().encode(text).map(|e| e.ids.len());
    let mut out: Vec<String> = Vec::new();
    let test_items = catalog.items.iter().filter(|i| catalog.splits.get(&i.id).is_none_or(|s| *s == Split::Test));
    for item in test_items {
        let text = item.text();
        let words: Vec<&str> = text.split_whitespace().collect();
        let mut best = None;
        let budget = MIN_TOKENS + out.len() % (MAX_TOKENS - MIN_TOKENS + 1);
        for n in 1..=words.len() {
            let prefix = words[..n].join(" ");
            if tokens(&prefix)? > budget {
                break;
            }
            best = Some(prefix);
        }
        if let Some(query) = best.filter(|q| tokens(q).is_ok_and(|n| n >= MIN_TOKENS)) {
            if !out.contains(&query) {
                out.push(query);
            }
        }
        if out.len() == count {
            return Ok((out, source));
        }
    }
    bail!("{source} has only {} texts of {MIN_TOKENS}–{MAX_TOKENS} tokens", out.len())
}

struct Run {
    name: String,
    load_ms: f64,
    median_ms: f64,
    mean_ms: f64,
    embeddings: Vec<Vec<f32>>,
}

fn run(name: &str, load: impl FnOnce() -> Result<TextEncoder>, queries: &[String]) -> Result<Run> {
    let started = Instant::now();
    let encoder = load()?;
    let load_ms = started.elapsed().as_secs_f64() * 1e3;
    for q in queries.iter().take(WARM_UP) {
        encoder.embed(q)?;
    }
    let mut times = Vec::with_capacity(queries.len());
    let mut embeddings = Vec::with_capacity(queries.len());
    for q in queries {
        let started = Instant::now();
        embeddings.push(encoder.embed(q)?);
        times.push(started.elapsed().as_secs_f64() * 1e3);
    }
    let mean_ms = times.iter().sum::<f64>() / times.len() as f64;
    times.sort_by(f64::total_cmp);
    let median_ms = (times[(times.len() - 1) / 2] + times[times.len() / 2]) / 2.0;
    Ok(Run { name: name.to_string(), load_ms, median_ms, mean_ms, embeddings })
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
    let norm = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

fn main() -> Result<()> {
    let args = Args::parse();
    let read = |name: &str| std::fs::read(args.model.join(name)).with_context(|| format!("reading {}", args.model.join(name).display()));
    let (config, model, tokenizer) = (read(CONFIG_FILE)?, read(MODEL_FILE)?, read(TOKENIZER_FILE)?);
    let (int8_model, report) = quantize_safetensors(&model, &args.model.join(MODEL_FILE).display().to_string())?;
    let encoder = |bytes: &[u8], kernel| -> Result<TextEncoder> {
        let options = LoadOptions { quantize_text_encoder: false, int8_kernel: kernel };
        Ok(TextEncoder::from_bytes(&config, bytes, &tokenizer, options, MAX_TOKENS)?)
    };
    let probe = encoder(&model, Int8Kernel::default())?;
    let (queries, source) = queries(&probe, &args.catalog, args.queries)?;
    if let Some(path) = &args.queries_out {
        std::fs::write(path, serde_json::to_string_pretty(&queries)?)?;
    }
    if let Some(dir) = &args.int8_out {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join(MODEL_FILE), &int8_model)?;
        std::fs::write(dir.join(CONFIG_FILE), &config)?;
        std::fs::write(dir.join(TOKENIZER_FILE), &tokenizer)?;
    }

    let runs = [
        run("f32", || encoder(&model, Int8Kernel::default()), &queries)?,
        run("int8, per-channel kernel", || encoder(&int8_model, Int8Kernel::PerChannel), &queries)?,
        run("int8, candle Q8_0 (QMatMul)", || encoder(&int8_model, Int8Kernel::Q8_0), &queries)?,
    ];
    let cores = std::thread::available_parallelism()?;
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| format!("{cores} (all cores)"));
    let token_counts: Vec<usize> = queries.iter().map(|q| Ok(probe.tokenizer().encode(q)?.ids.len())).collect::<Result<_>>()?;
    println!(
        "{} queries from {source}, {}–{} tokens (mean {:.1}); threads: {threads}",
        queries.len(),
        token_counts.iter().min().unwrap_or(&0),
        token_counts.iter().max().unwrap_or(&0),
        token_counts.iter().sum::<usize>() as f64 / token_counts.len().max(1) as f64
    );
    println!();
    println!("| weights | load ms | median ms/query | mean ms/query | cosine to f32: min / mean |");
    println!("|---|---|---|---|---|");
    for r in &runs {
        let cosines: Vec<f64> = r.embeddings.iter().zip(&runs[0].embeddings).map(|(a, b)| cosine(a, b)).collect();
        let min = cosines.iter().copied().fold(f64::INFINITY, f64::min);
        let mean = cosines.iter().sum::<f64>() / cosines.len() as f64;
        println!("| {} | {:.0} | {:.2} | {:.2} | {min:.6} / {mean:.6} |", r.name, r.load_ms, r.median_ms, r.mean_ms);
    }
    println!();
    println!(
        "model.safetensors: f32 {} bytes, int8 {} bytes ({} int8 layers; {:.1}% of f32)",
        report.bytes_before,
        report.bytes_after,
        report.layers.len(),
        100.0 * report.bytes_after as f64 / report.bytes_before as f64
    );
    Ok(())
}
