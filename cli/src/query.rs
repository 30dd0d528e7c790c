//! `vitrine query`: ranks a catalog's items for a text query by the cosine
//! between the query's text embedding and each item's `title. description`
//! embedding, both from the checkpoint's text encoder run natively in candle
//! (f32, or int8 with `--int8`). Nothing is cached: every run embeds the
//! whole catalog (or one split of it, `--split`), which for the 11,800 H&M
//! articles takes minutes on two cores. Ranking by image embeddings needs the
//! image CNN, which only the trainer has; that is the bundle's job.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use vitrine_core::catalog::{self, Split};
use vitrine_core::model::{LoadOptions, TextEncoder};

use super::RowOptions;

/// Longest text, in tokens, that the encoder reads (as the browser's queries).
const MAX_TOKENS: usize = 128;
/// Items embedded per forward pass.
const BATCH: usize = 32;

#[derive(Args)]
pub struct QueryArgs {
    /// What the shopper types.
    text: String,
    /// A checkpoint folder (config.json, model.safetensors, tokenizer.json), or
    /// a sentence-transformers BERT folder such as models/all-MiniLM-L6-v2.
    #[arg(long)]
    checkpoint: PathBuf,
    /// The catalog folder (canonical or H&M export).
    #[arg(long)]
    catalog: PathBuf,
    /// How many items to print.
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// Rank only the items of this split (train, val, test).
    #[arg(long)]
    split: Option<Split>,
    /// Quantise the text encoder's linear layers to int8 while loading
    /// (weights already stored in int8 are used as they are).
    #[arg(long)]
    int8: bool,
    #[command(flatten)]
    rows: RowOptions,
}

/// Catalog text is untrusted: control characters (escape sequences, line
/// breaks) become spaces so that a row cannot rewrite the terminal or the table.
fn printable(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norms = a.iter().map(|x| x * x).sum::<f32>().sqrt() * b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norms == 0.0 {
        0.0
    } else {
        dot / norms
    }
}

pub fn run(args: &QueryArgs) -> Result<()> {
    let options = LoadOptions { quantize_text_encoder: args.int8, ..Default::default() };
    let encoder = TextEncoder::from_dir(&args.checkpoint, options, MAX_TOKENS)
        .with_context(|| format!("loading the text encoder of {}", args.checkpoint.display()))?;
    let catalog =
        catalog::open(&args.catalog, args.rows.import_options()).with_context(|| format!("reading catalog {}", args.catalog.display()))?;
    for error in &catalog.report.errors {
        eprintln!("skipped {error}");
    }
    let query = encoder.embed(&args.text).context("embedding the query")?;

    let items: Vec<&catalog::Item> =
        catalog.items.iter().filter(|item| args.split.is_none_or(|s| catalog.split_of(&item.id) == Some(s))).collect();
    let texts: Vec<String> = items.iter().map(|item| item.text()).collect();
    // Texts of similar length share a batch, so that little is padding.
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.sort_by_key(|&i| texts[i].len());
    let bar = ProgressBar::new(texts.len() as u64).with_message("embedding the catalog");
    bar.set_style(ProgressStyle::with_template("{msg} {bar:40} {pos}/{len} {per_sec} eta {eta}").expect("valid template"));
    bar.enable_steady_tick(Duration::from_millis(200));
    let mut scores = vec![0f32; texts.len()];
    for chunk in order.chunks(BATCH) {
        let batch: Vec<&str> = chunk.iter().map(|&i| texts[i].as_str()).collect();
        for (&i, embedding) in chunk.iter().zip(encoder.embed_batch(&batch).context("embedding catalog texts")?) {
            scores[i] = cosine(&query, &embedding);
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();

    let mut ranked: Vec<usize> = (0..texts.len()).collect();
    ranked.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    let split = args.split.map_or(String::new(), |s| format!(" ({} split)", s.as_str()));
    println!(
        "{} items of {}{split} ranked for {:?} by text similarity ({} text encoder)",
        texts.len(),
        args.catalog.display(),
        printable(&args.text),
        if encoder.is_int8() { "int8" } else { "f32" }
    );
    println!("{:>4}  {:>6}  {:<12}  {:<20}  title", "rank", "score", "id", "category");
    for (rank, &i) in ranked.iter().take(args.k).enumerate() {
        let item = items[i];
        println!(
            "{:>4}  {:>6.4}  {:<12}  {:<20}  {}",
            rank + 1,
            scores[i],
            printable(&item.id),
            printable(&item.category),
            printable(&item.title)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_never_reach_the_terminal() {
        assert_eq!(printable("Red\u{1b}[2J dress\nwith\tbelt\u{7f}"), "Red [2J dress with belt ");
        assert_eq!(printable("Robe d'été"), "Robe d'été");
    }

    #[test]
    fn cosine_of_parallel_and_opposite_vectors() {
        assert!((cosine(&[1.0, 2.0], &[2.0, 4.0]) - 1.0).abs() < 1e-6);
        assert!((cosine(&[1.0, 0.0], &[-3.0, 0.0]) + 1.0).abs() < 1e-6);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 0.0]), 0.0);
    }
}
