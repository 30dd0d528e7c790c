//! `vitrine publish` and `vitrine rollback`: a bundle folder into a publish
//! folder, and its current.json back to a kept version (vitrine-publish).
//!
//! `VITRINE_PUBLISH_PAUSE_MS` exists for crash tests only: `publish` sleeps
//! that long between having copied and checked everything and switching
//! current.json, so a test can kill it there.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use vitrine_publish::PublishDir;

#[derive(Args)]
pub struct PublishArgs {
    /// The bundle folder to publish: an index builder's `<out>/bundle/` (manifest.json and its parts).
    #[arg(long)]
    bundle: PathBuf,
    /// The publish folder (created if missing): current.json, history.json, bundle/.
    #[arg(long)]
    to: PathBuf,
    /// How many versions to keep, this one included; older ones' files are deleted.
    #[arg(long, default_value_t = 5)]
    keep: usize,
    /// A JSON file recorded with the version in history.json (training run, metrics, …).
    #[arg(long)]
    details: Option<PathBuf>,
}

#[derive(Args)]
pub struct RollbackArgs {
    /// The publish folder.
    #[arg(long)]
    publish: PathBuf,
    /// The kept version to point at (an earlier or a later one); default: the one before the current one.
    #[arg(long)]
    to: Option<u64>,
}

pub fn publish(args: &PublishArgs) -> Result<()> {
    let details = match &args.details {
        Some(path) => {
            let text = std::fs::read(path).with_context(|| format!("cannot read --details {}", path.display()))?;
            serde_json::from_slice(&text).with_context(|| format!("--details {} is not valid JSON", path.display()))?
        }
        None => serde_json::Value::Null,
    };
    let dir = PublishDir::open(&args.to)?;
    let report = dir
        .publish_report(&args.bundle, details, args.keep)
        .with_context(|| format!("publishing {} to {}", args.bundle.display(), args.to.display()))?;
    let pointer = &report.pointer;
    let previous = report.previous.map_or("none".to_string(), |v| format!("version {v}"));
    println!("published version {} ({}) in {}; it was {previous}", pointer.version, pointer.manifest, dir.root().display());
    println!(
        "copied {} files ({}), {} parts already there ({})",
        report.files_copied,
        megabytes(report.bytes_copied),
        report.files_shared,
        megabytes(report.bytes_shared)
    );
    println!(
        "kept versions {:?}; deleted versions {:?} ({} files, {})",
        report.kept,
        report.deleted,
        report.files_deleted,
        megabytes(report.bytes_deleted)
    );
    if report.leftovers_removed > 0 {
        println!("removed {} temporary files of an interrupted run", report.leftovers_removed);
    }
    Ok(())
}

pub fn rollback(args: &RollbackArgs) -> Result<()> {
    let dir = PublishDir::open(&args.publish)?;
    let before = dir.current()?.map(|p| p.version);
    let pointer = dir.rollback(args.to).with_context(|| format!("rolling back {}", args.publish.display()))?;
    let before = before.map_or("none".to_string(), |v| format!("version {v}"));
    println!("current version {} ({}, published {}); it was {before}", pointer.version, pointer.manifest, pointer.published_at);
    Ok(())
}

fn megabytes(bytes: u64) -> String {
    format!("{:.2} MB", bytes as f64 / 1e6)
}
