//! `vitrine`: the command line for catalogs — check a catalog folder, import
//! other formats into the canonical one, and generate a small test catalog —
//! and for text queries against a catalog (`vitrine query`, in `query.rs`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use vitrine_core::catalog::polyvore::PolyvoreVersion;
use vitrine_core::catalog::split_rule::{self, SplitRatios};
use vitrine_core::catalog::{self, canonical, fashioniq, images, BadRowPolicy, Catalog, ImportOptions};
use vitrine_core::summary::CatalogSummary;
use vitrine_core::synth::{self, SynthSpec};

mod nightly;
mod publish;
mod query;

#[derive(Parser)]
#[command(name = "vitrine", version, about = "Fashion search that runs on the shopper's device")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Catalog tools.
    #[command(subcommand)]
    Catalog(CatalogCommand),
    /// Ranks a catalog's items for a text query by text-embedding similarity.
    Query(query::QueryArgs),
    /// Copies a bundle folder into a publish folder and switches its current.json to it.
    Publish(publish::PublishArgs),
    /// Points a publish folder's current.json back (or forward) at a kept version.
    Rollback(publish::RollbackArgs),
    /// Retrains on the updated catalog, gates the candidate against the
    /// published model on the val split, builds and publishes its bundle.
    Nightly(nightly::NightlyArgs),
}

#[derive(Subcommand)]
enum CatalogCommand {
    /// Reads a catalog folder (canonical or H&M export), checks every row and
    /// image, and prints what it holds and the task datasets it yields.
    Check {
        dir: PathBuf,
        #[command(flatten)]
        rows: RowOptions,
        /// Do not decode the images (faster; only the texts are checked).
        #[arg(long)]
        no_images: bool,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Converts a catalog into the canonical folder (items.jsonl, baskets.jsonl, splits.csv).
    Import {
        /// The source: a folder (hm, canonical) or a file (csv, jsonl).
        source: PathBuf,
        #[arg(long, value_enum)]
        format: Format,
        /// Column mapping (JSON) for the csv and jsonl formats.
        #[arg(long, required_if_eq_any = [("format", "csv"), ("format", "jsonl")])]
        mapping: Option<PathBuf>,
        /// The canonical catalog folder to write.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        rows: RowOptions,
        /// Do not decode the images.
        #[arg(long)]
        no_images: bool,
        /// Which Polyvore Outfits version to read.
        #[arg(long, value_enum, default_value = "nondisjoint")]
        polyvore_version: PolyvoreVersionArg,
        /// Train/val/test shares of the split drawn by colour group for items
        /// whose source names no split (a split in the source wins).
        #[arg(long, default_value = "80/10/10")]
        split_ratios: SplitRatios,
        /// Seed of that draw; keep it from night to night so no item moves.
        #[arg(long, default_value_t = 7)]
        split_seed: u64,
    },
    /// Reads FashionIQ caption and split files and prints the rows of each file.
    Fashioniq {
        dir: PathBuf,
        #[command(flatten)]
        rows: RowOptions,
    },
    /// Writes a small generated catalog (images, texts, groups, baskets, split).
    Generate {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = SynthSpec::default().groups)]
        groups: usize,
        #[arg(long, default_value_t = SynthSpec::default().baskets)]
        baskets: usize,
        #[arg(long, default_value_t = SynthSpec::default().seed)]
        seed: u64,
    },
}

#[derive(Args)]
struct RowOptions {
    /// Keep the good rows and report the bad ones instead of failing.
    #[arg(long)]
    skip_bad_rows: bool,
    /// Longest accepted text field, in bytes.
    #[arg(long, default_value_t = ImportOptions::default().max_field_bytes)]
    max_field_bytes: usize,
}

impl RowOptions {
    fn import_options(&self) -> ImportOptions {
        let policy = if self.skip_bad_rows { BadRowPolicy::Skip } else { BadRowPolicy::Strict };
        ImportOptions { policy, max_field_bytes: self.max_field_bytes }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum PolyvoreVersionArg {
    Disjoint,
    Nondisjoint,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// The canonical folder (items.jsonl, …).
    Canonical,
    /// H&M export folder (articles.csv, baskets.csv, splits.csv, images/).
    Hm,
    /// Any CSV export, with --mapping.
    Csv,
    /// Any JSON-lines export, with --mapping.
    Jsonl,
    /// FashionGen folder of `*_info.json` files.
    Fashiongen,
    /// Polyvore Outfits folder.
    Polyvore,
}

fn main() {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).with_writer(std::io::stderr).init();
    if let Err(error) = run(Cli::parse()) {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Query(args) => query::run(&args)?,
        Command::Publish(args) => publish::publish(&args)?,
        Command::Rollback(args) => publish::rollback(&args)?,
        Command::Nightly(args) => nightly::run(&args)?,
        Command::Catalog(CatalogCommand::Check { dir, rows, no_images, json }) => {
            let options = rows.import_options();
            let mut catalog = catalog::open(&dir, options.clone()).with_context(|| format!("checking catalog {}", dir.display()))?;
            let image_check = (!no_images).then(|| check_images(&mut catalog, options.policy)).transpose()?;
            print_bad_rows(&catalog);
            let summary = CatalogSummary::compute(&catalog, image_check)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                print!("{summary}");
            }
        }
        Command::Catalog(CatalogCommand::Import {
            source,
            format,
            mapping,
            out,
            rows,
            no_images,
            polyvore_version,
            split_ratios,
            split_seed,
        }) => {
            let options = rows.import_options();
            let polyvore_version = match polyvore_version {
                PolyvoreVersionArg::Disjoint => PolyvoreVersion::Disjoint,
                PolyvoreVersionArg::Nondisjoint => PolyvoreVersion::Nondisjoint,
            };
            let mut catalog = import(&source, format, mapping.as_deref(), polyvore_version, options.clone())
                .with_context(|| format!("importing {}", source.display()))?;
            if !no_images {
                check_images(&mut catalog, options.policy)?;
            }
            print_bad_rows(&catalog);
            let assignment = split_rule::assign_missing(&mut catalog, split_ratios, split_seed);
            if assignment.drawn_total() + assignment.from_group > 0 {
                let [train, val, test] = assignment.drawn;
                println!(
                    "split: {} items from the source, {} with their colour group's, {} drawn by colour group \
                     ({train} train, {val} val, {test} test; ratios {:.2}/{:.2}/{:.2}, seed {split_seed})",
                    assignment.from_source,
                    assignment.from_group,
                    assignment.drawn_total(),
                    split_ratios.train,
                    split_ratios.val,
                    split_ratios.test
                );
            }
            canonical::write_dir(&catalog, &out).with_context(|| format!("writing {}", out.display()))?;
            println!(
                "imported {} items, {} baskets, {} split entries into {} ({} bad rows skipped)",
                catalog.items.len(),
                catalog.baskets.len(),
                catalog.splits.len(),
                out.display(),
                catalog.report.errors.len()
            );
        }
        Command::Catalog(CatalogCommand::Fashioniq { dir, rows }) => {
            let fashioniq =
                fashioniq::import_dir(&dir, rows.import_options()).with_context(|| format!("reading FashionIQ {}", dir.display()))?;
            for error in &fashioniq.report.errors {
                eprintln!("skipped {error}");
            }
            for file in &fashioniq.report.files {
                println!("{:>7} rows read, {:>7} kept  {}", file.rows_read, file.rows_kept, file.file.display());
            }
            println!("{} caption triplets, {} image split files", fashioniq.triplets.len(), fashioniq.image_splits.len());
        }
        Command::Catalog(CatalogCommand::Generate { out, groups, baskets, seed }) => {
            let spec = SynthSpec { groups, baskets, seed, ..Default::default() };
            let catalog = synth::generate(&out, &spec).with_context(|| format!("generating a catalog in {}", out.display()))?;
            println!(
                "generated {} items in {} groups, {} baskets, in {}",
                catalog.items.len(),
                groups,
                catalog.baskets.len(),
                out.display()
            );
        }
    }
    Ok(())
}

fn import(
    source: &Path,
    format: Format,
    mapping: Option<&Path>,
    polyvore_version: PolyvoreVersion,
    options: ImportOptions,
) -> Result<Catalog> {
    let catalog = match format {
        Format::Canonical => canonical::import_dir(source, options)?,
        Format::Hm => catalog::hm::import_dir(source, options)?,
        Format::Csv | Format::Jsonl => {
            let mapping_path = mapping.context("--mapping is required for csv and jsonl")?;
            let mapping = catalog::mapped::ColumnMapping::from_file(mapping_path)?;
            let root = source.parent().unwrap_or(Path::new("."));
            match format {
                Format::Csv => catalog::mapped::import_csv(source, &mapping, root, options)?,
                _ => catalog::mapped::import_jsonl(source, &mapping, root, options)?,
            }
        }
        Format::Fashiongen => catalog::fashiongen::import_dir(source, options)?,
        Format::Polyvore => catalog::polyvore::import_dir(source, polyvore_version, options)?.catalog,
    };
    Ok(catalog)
}

fn check_images(catalog: &mut Catalog, policy: BadRowPolicy) -> Result<images::ImageCheck> {
    let bar = ProgressBar::new(catalog.items.len() as u64).with_message("checking images");
    bar.set_style(ProgressStyle::with_template("{msg} {bar:40} {pos}/{len} {per_sec} eta {eta}").expect("valid template"));
    bar.enable_steady_tick(Duration::from_millis(200));
    let check = images::verify(catalog, policy, || bar.inc(1));
    bar.finish_and_clear();
    Ok(check?)
}

fn print_bad_rows(catalog: &Catalog) {
    for error in &catalog.report.errors {
        eprintln!("skipped {error}");
    }
}
