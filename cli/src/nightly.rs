//! `vitrine nightly`: the backend's retrain-and-publish loop.
//!
//! One run takes the updated catalog and the last published model, warm-starts
//! a fine-tune from it within a step budget (`--pretrain` re-runs the image
//! tokenizer and the pretraining first), evaluates the candidate and the
//! published model on the catalog's validation split with the same protocols,
//! refuses a candidate that falls behind on any task by more than the
//! tolerance (`--force` overrides), builds the bundle and publishes it
//! (`vitrine_publish`: content-addressed files, the pointer switched last).
//!
//! The training and the bundle are made by the `vitrine-train` and
//! `vitrine-index` binaries installed beside this one, each in its own
//! process. Every run leaves `<state>/audit/<run>.json` (inputs, commit,
//! catalog changes, metrics, decision), also when it fails; a failure leaves
//! the published bundle as it was.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use clap::Args;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use vitrine_core::catalog::{self, BadRowPolicy, ImportOptions};
use vitrine_core::engine::MAX_SEARCH_EF;
use vitrine_publish::{now_rfc3339, write_file_atomically, PublishDir};

/// The commit this binary was built from (build.rs), for the audit record.
const COMMIT: &str = env!("VITRINE_COMMIT");

#[derive(Args)]
pub struct NightlyArgs {
    /// The updated catalog folder (canonical or H&M export) with its fixed split.
    #[arg(long)]
    catalog: PathBuf,
    /// The publish folder the storefronts read (`current.json`, `bundle/`).
    #[arg(long)]
    publish: PathBuf,
    /// The backend's own folder: published models, runs, the feature cache, audit records.
    #[arg(long)]
    state: PathBuf,
    /// Training recipe: `cpu`, `gpu`, or a TOML file.
    #[arg(long, default_value = "cpu")]
    config: String,
    /// The model to start from when nothing is published yet (a fine-tuning
    /// or pretraining run folder or checkpoint).
    #[arg(long)]
    from: Option<PathBuf>,
    /// Re-run the image tokenizer and the pretraining on this catalog first.
    #[arg(long, conflicts_with = "from")]
    pretrain: bool,
    /// Gate and publish this fine-tuned checkpoint instead of training one.
    #[arg(long, conflicts_with_all = ["pretrain", "finetune_steps"])]
    candidate: Option<PathBuf>,
    /// Fine-tuning step budget (default: the recipe's).
    #[arg(long)]
    finetune_steps: Option<u64>,
    /// Largest accepted fall of any gated metric, in percentage points (finite, 0 or more).
    #[arg(long, default_value_t = 1.0, value_parser = tolerance_points)]
    tolerance: f64,
    /// Publish even when the candidate falls behind.
    #[arg(long)]
    force: bool,
    /// Published versions kept for `vitrine rollback`.
    #[arg(long, default_value_t = 5)]
    keep: usize,
    /// Folder with the set-up's pretrained weights.
    #[arg(long, default_value = "models")]
    models: PathBuf,
    /// Train examples per head answered by the teacher in the bundle's distillation.
    #[arg(long, default_value_t = 4000)]
    max_examples: usize,
    /// Distillation steps of the bundle's projection and heads (default: vitrine-index's).
    #[arg(long)]
    distill_steps: Option<u64>,
    /// Width of the bundle's compact space (default: vitrine-index's).
    #[arg(long)]
    dim: Option<usize>,
    /// Ship a distilled student text encoder of this many layers (`vitrine-index build --student-layers`).
    #[arg(long)]
    student_layers: Option<usize>,
    /// Store the index's 4-bit refinement codes (`vitrine-index build --refine`; large, dense catalogs).
    #[arg(long)]
    refine: bool,
    /// The browser's search beam for the catalog (`vitrine-index build --search-ef`), checked
    /// here so that a wrong one fails before the night's training, not after it.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=MAX_SEARCH_EF as i64))]
    search_ef: Option<u16>,
    /// Skip bad catalog rows (reported) instead of failing.
    #[arg(long)]
    skip_bad_rows: bool,
}

/// `--tolerance`: a fall of NaN points would pass every comparison, and a
/// negative one would refuse a candidate that is exactly as good.
fn tolerance_points(text: &str) -> std::result::Result<f64, String> {
    let points: f64 = text.trim().parse().map_err(|e| format!("{text:?} is not a number: {e}"))?;
    if !points.is_finite() || points < 0.0 {
        return Err(format!("{text} is not a tolerance: give a finite number of percentage points, 0 or more"));
    }
    Ok(points)
}

/// The metrics the gate compares: (name, JSON pointer into `vitrine-train eval`'s report).
const GATED: [(&str, &str); 6] = [
    ("ITR R@10 (random 100)", "/xmr_random100/itr/2"),
    ("TIR R@10 (random 100)", "/xmr_random100/tir/2"),
    ("TGIR R@10 (mean)", "/tgir_mean/0"),
    ("CR accuracy", "/cr/accuracy"),
    ("SCR accuracy", "/scr/accuracy"),
    ("OCIR R@10 (weighted)", "/ocir_weighted/0"),
];

/// One gated metric of the published model and of the candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub task: String,
    /// `None`: the split has no examples of this task.
    pub published: Option<f64>,
    pub candidate: Option<f64>,
    /// Candidate minus published, in points.
    pub change: Option<f64>,
    /// The fall is over the tolerance.
    pub regressed: bool,
}

/// Compares two `vitrine-train eval` reports task by task.
pub fn compare(published: &serde_json::Value, candidate: &serde_json::Value, tolerance: f64) -> Vec<Comparison> {
    let metric = |report: &serde_json::Value, pointer: &str| report.pointer(pointer).and_then(|v| v.as_f64()).filter(|v| v.is_finite());
    GATED
        .iter()
        .map(|&(task, pointer)| {
            let (published, candidate) = (metric(published, pointer), metric(candidate, pointer));
            let change = published.zip(candidate).map(|(p, c)| c - p);
            // A task the published model was measured on must be measured on the candidate too.
            let regressed = match (published, candidate) {
                (Some(_), None) => true,
                _ => change.is_some_and(|c| c < -tolerance),
            };
            Comparison { task: task.to_string(), published, candidate, change, regressed }
        })
        .collect()
}

/// What changed in the catalog since the last run (items by id, compared by
/// their row and photo bytes).
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatalogChanges {
    pub items: usize,
    pub added: usize,
    pub changed: usize,
    pub removed: usize,
}

/// Item id → SHA-256 of its row and photos.
type Snapshot = BTreeMap<String, String>;

fn snapshot(catalog_dir: &Path, skip_bad_rows: bool) -> Result<Snapshot> {
    let policy = if skip_bad_rows { BadRowPolicy::Skip } else { BadRowPolicy::Strict };
    let catalog = catalog::open(catalog_dir, ImportOptions { policy, ..Default::default() })
        .with_context(|| format!("reading the catalog {}", catalog_dir.display()))?;
    catalog
        .items
        .iter()
        .map(|item| {
            let mut hash = Sha256::new();
            hash.update(serde_json::to_vec(item)?);
            for image in &item.images {
                let path = catalog.root.join(image);
                // Remote photos are compared by URL only (the row).
                if path.is_file() {
                    hash.update(std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?);
                }
            }
            Ok((item.id.clone(), format!("{:x}", hash.finalize())))
        })
        .collect()
}

fn changes(before: Option<&Snapshot>, now: &Snapshot) -> CatalogChanges {
    let empty = Snapshot::new();
    let before = before.unwrap_or(&empty);
    CatalogChanges {
        items: now.len(),
        added: now.keys().filter(|id| !before.contains_key(*id)).count(),
        changed: now.iter().filter(|(id, hash)| before.get(*id).is_some_and(|b| b != *hash)).count(),
        removed: before.keys().filter(|id| !now.contains_key(*id)).count(),
    }
}

/// The audit record of one run, `<state>/audit/<run>.json`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Audit {
    pub run: String,
    pub commit: String,
    pub started_at: String,
    pub seconds: f64,
    pub inputs: AuditInputs,
    pub catalog: Option<CatalogChanges>,
    /// The published version the run compared against.
    pub published_version: Option<u64>,
    pub candidate_checkpoint: Option<PathBuf>,
    pub comparisons: Vec<Comparison>,
    /// `published`, `refused`, or `failed`.
    pub decision: String,
    pub published: Option<u64>,
    pub error: Option<String>,
    /// Seconds of each stage run, in order (a failed stage last).
    pub stages: Vec<StageTime>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct StageTime {
    pub stage: String,
    pub seconds: f64,
    /// Peak resident memory of the largest tool the stage ran (`None`: it ran
    /// none, or the platform does not report it).
    pub peak_rss_bytes: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct AuditInputs {
    pub catalog: PathBuf,
    pub publish: PathBuf,
    pub config: String,
    pub from: Option<PathBuf>,
    pub candidate: Option<PathBuf>,
    pub pretrain: bool,
    pub finetune_steps: Option<u64>,
    pub tolerance: f64,
    pub force: bool,
}

/// The details a published version carries in the publish folder's history.
#[derive(Debug, Serialize, Deserialize)]
struct PublishedDetails {
    run: String,
    commit: String,
    /// The model the bundle was built from, kept under `<state>/models/`.
    checkpoint: PathBuf,
    metrics: serde_json::Value,
}

/// Runs one nightly cycle; the audit record is written whatever happens.
pub fn run(args: &NightlyArgs) -> Result<()> {
    let started = Instant::now();
    let started_at = now_rfc3339();
    // A run id that sorts by time and is safe as a file name.
    let run = started_at.replace([':', '-'], "");
    for folder in ["runs", "models", "audit", "cache"] {
        let path = args.state.join(folder);
        std::fs::create_dir_all(&path).with_context(|| format!("cannot create {}", path.display()))?;
    }
    let mut audit = Audit {
        run: run.clone(),
        commit: COMMIT.to_string(),
        started_at,
        seconds: 0.0,
        inputs: AuditInputs {
            catalog: args.catalog.clone(),
            publish: args.publish.clone(),
            config: args.config.clone(),
            from: args.from.clone(),
            candidate: args.candidate.clone(),
            pretrain: args.pretrain,
            finetune_steps: args.finetune_steps,
            tolerance: args.tolerance,
            force: args.force,
        },
        catalog: None,
        published_version: None,
        candidate_checkpoint: None,
        comparisons: Vec::new(),
        decision: "failed".to_string(),
        published: None,
        error: None,
        stages: Vec::new(),
    };
    let mut stages = Stages::default();
    let outcome = cycle(args, &run, &mut audit, &mut stages);
    audit.stages = stages.times;
    if let Err(error) = &outcome {
        audit.error = Some(format!("{error:#}"));
    }
    audit.seconds = started.elapsed().as_secs_f64();
    let record = args.state.join("audit").join(format!("{run}.json"));
    write_file_atomically(&record, &serde_json::to_vec_pretty(&audit)?)?;
    println!("nightly: {} in {:.0} s; audit record {}", audit.decision, audit.seconds, record.display());
    outcome
}

fn cycle(args: &NightlyArgs, run: &str, audit: &mut Audit, stages: &mut Stages) -> Result<()> {
    ensure!(args.keep >= 1, "--keep must be at least 1: the published version is always kept");
    let tools = Tools::beside_this_binary()?;
    let publish = PublishDir::open(&args.publish).with_context(|| format!("opening the publish folder {}", args.publish.display()))?;
    let run_dir = args.state.join("runs").join(run);
    std::fs::create_dir_all(&run_dir).with_context(|| format!("cannot create {}", run_dir.display()))?;
    let cache = args.state.join("cache");
    let current = publish.current()?;
    let training_stages = match (&args.candidate, args.pretrain) {
        (Some(_), _) => 0,
        (None, true) => 3,
        (None, false) => 1,
    };
    stages.total = 4 + training_stages + usize::from(current.is_some());

    let snapshot_file = args.state.join("catalog-snapshot.json");
    let current_snapshot = stages.run("reading the catalog", || snapshot(&args.catalog, args.skip_bad_rows))?;
    let previous_snapshot: Option<Snapshot> = match std::fs::read(&snapshot_file) {
        Ok(bytes) => Some(serde_json::from_slice(&bytes).with_context(|| format!("{} is corrupt; delete it", snapshot_file.display()))?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", snapshot_file.display())),
    };
    let catalog_changes = changes(previous_snapshot.as_ref(), &current_snapshot);
    println!(
        "nightly: catalog of {} items: {} added, {} changed, {} removed since the last run",
        catalog_changes.items, catalog_changes.added, catalog_changes.changed, catalog_changes.removed
    );
    audit.catalog = Some(catalog_changes);

    // The published model, when there is one: the warm start and the baseline.
    let published = match current {
        Some(pointer) => {
            let history = publish.history()?;
            let record =
                history.versions.iter().find(|v| v.version == pointer.version).with_context(|| {
                    format!("{}: the current version {} is not in history.json", args.publish.display(), pointer.version)
                })?;
            let details: PublishedDetails = serde_json::from_value(record.details.clone())
                .with_context(|| format!("version {} in {} has no model details", pointer.version, args.publish.display()))?;
            audit.published_version = Some(pointer.version);
            Some(details)
        }
        None => None,
    };

    let candidate = match &args.candidate {
        Some(candidate) => checkpoint_folder(candidate)?,
        None => {
            let start = if args.pretrain {
                let (vqvae, pretrain) = (run_dir.join("vqvae"), run_dir.join("pretrain"));
                stages.run("image tokenizer (vitrine-train vqvae)", || {
                    tools.train("vqvae", args, &cache).arg("--out").arg(&vqvae).succeeds()
                })?;
                stages.run("pretraining (vitrine-train pretrain)", || {
                    tools.train("pretrain", args, &cache).arg("--run").arg(&pretrain).arg("--vqvae").arg(&vqvae).succeeds()
                })?;
                pretrain
            } else {
                match (&args.from, &published) {
                    (Some(from), _) => from.clone(),
                    (None, Some(details)) => details.checkpoint.clone(),
                    (None, None) => bail!("nothing is published in {} yet: give --from CHECKPOINT or --pretrain", args.publish.display()),
                }
            };
            let finetune = run_dir.join("finetune");
            stages.run(&format!("fine-tuning from {} (vitrine-train finetune)", start.display()), || {
                let mut command = tools.train("finetune", args, &cache);
                command.arg("--run").arg(&finetune).arg("--from").arg(&start);
                if let Some(steps) = args.finetune_steps {
                    command.arg("--steps").arg(steps.to_string());
                }
                command.succeeds()
            })?;
            checkpoint_folder(&finetune)?
        }
    };
    audit.candidate_checkpoint = Some(candidate.clone());

    let candidate_report = run_dir.join("eval-candidate.json");
    stages.run("evaluating the candidate on the val split (vitrine-train eval)", || {
        tools.eval(args, &cache, &candidate, &candidate_report).succeeds()
    })?;
    let candidate_metrics = read_json(&candidate_report)?;
    if let Some(details) = &published {
        let published_report = run_dir.join("eval-published.json");
        stages.run("evaluating the published model on the same split", || {
            tools.eval(args, &cache, &details.checkpoint, &published_report).succeeds()
        })?;
        audit.comparisons = compare(&read_json(&published_report)?, &candidate_metrics, args.tolerance);
        print_comparisons(&audit.comparisons);
        let regressions: Vec<String> = audit
            .comparisons
            .iter()
            .filter(|c| c.regressed)
            .map(|c| match (c.published, c.candidate) {
                (Some(p), Some(n)) => format!("{} fell by {:.2} points ({p:.2} → {n:.2})", c.task, p - n),
                (Some(p), None) => format!("{} was {p:.2} and is not measured on the candidate", c.task),
                _ => c.task.clone(),
            })
            .collect();
        if !regressions.is_empty() {
            if args.force {
                println!("nightly: publishing despite the regressions (--force): {}", regressions.join("; "));
            } else {
                audit.decision = "refused".to_string();
                bail!(
                    "the candidate was not published: {}, over the tolerance of {} points; the published version stays (--force publishes anyway)",
                    regressions.join("; "),
                    args.tolerance
                );
            }
        }
    }

    let build = run_dir.join("bundle");
    stages.run("building the bundle (vitrine-index build)", || {
        let mut command = tools.command("vitrine-index");
        command.arg("build").arg("--catalog").arg(&args.catalog).arg("--config").arg(&args.config);
        command.arg("--models").arg(&args.models).arg("--cache").arg(&cache);
        command.arg("--checkpoint").arg(&candidate).arg("--out").arg(&build);
        command.arg("--max-examples").arg(args.max_examples.to_string());
        if let Some(steps) = args.distill_steps {
            command.arg("--steps").arg(steps.to_string());
        }
        if let Some(dim) = args.dim {
            command.arg("--dim").arg(dim.to_string());
        }
        if let Some(layers) = args.student_layers {
            command.arg("--student-layers").arg(layers.to_string());
        }
        if args.refine {
            command.arg("--refine");
        }
        if let Some(ef) = args.search_ef {
            command.arg("--search-ef").arg(ef.to_string());
        }
        if args.skip_bad_rows {
            command.arg("--skip-bad-rows");
        }
        command.succeeds()
    })?;

    // The model is kept with the state before its version is published, so
    // that a published version always has its model for the next warm start.
    let kept_model = args.state.join("models").join(run);
    let pointer = stages.run("publishing (bundle files first, current.json last)", || {
        copy_checkpoint(&candidate, &kept_model)?;
        let details = PublishedDetails {
            run: run.to_string(),
            commit: COMMIT.to_string(),
            checkpoint: kept_model.clone(),
            metrics: candidate_metrics,
        };
        Ok(publish.publish(&build.join("bundle"), serde_json::to_value(&details)?, args.keep)?)
    })?;
    write_file_atomically(&snapshot_file, &serde_json::to_vec(&current_snapshot)?)?;
    prune_models(&publish, &args.state.join("models"))?;
    audit.decision = "published".to_string();
    audit.published = Some(pointer.version);
    println!("nightly: published version {} ({})", pointer.version, pointer.manifest);
    Ok(())
}

fn print_comparisons(comparisons: &[Comparison]) {
    let show = |v: Option<f64>| v.map_or_else(|| "—".to_string(), |v| format!("{v:.2}"));
    println!("{:<24} {:>10} {:>10} {:>8}", "task (val split)", "published", "candidate", "change");
    for c in comparisons {
        let flag = if c.regressed { "  regressed" } else { "" };
        println!("{:<24} {:>10} {:>10} {:>8}{flag}", c.task, show(c.published), show(c.candidate), show(c.change));
    }
}

/// Deletes kept models that no version in the publish folder's history uses.
fn prune_models(publish: &PublishDir, models: &Path) -> Result<()> {
    let history = publish.history()?;
    let used: Vec<PathBuf> = history
        .versions
        .iter()
        .filter_map(|v| serde_json::from_value::<PublishedDetails>(v.details.clone()).ok())
        .map(|d| d.checkpoint)
        .collect();
    for entry in std::fs::read_dir(models).with_context(|| format!("listing {}", models.display()))? {
        let path = entry?.path();
        if path.is_dir() && !used.contains(&path) {
            std::fs::remove_dir_all(&path).with_context(|| format!("removing the unused model {}", path.display()))?;
        }
    }
    Ok(())
}

/// A checkpoint folder, or the final checkpoint of a fine-tuning run folder
/// (named by its `summary.json`).
fn checkpoint_folder(path: &Path) -> Result<PathBuf> {
    if path.join("model.safetensors").is_file() {
        return Ok(path.to_path_buf());
    }
    let summary = path.join("summary.json");
    let checkpoint = summary
        .is_file()
        .then(|| read_json(&summary))
        .transpose()?
        .and_then(|s| s.get("checkpoint").and_then(|c| c.as_str()).map(PathBuf::from));
    match checkpoint {
        Some(checkpoint) if checkpoint.join("model.safetensors").is_file() => Ok(checkpoint),
        _ => bail!("{} is neither a checkpoint (model.safetensors) nor a finished fine-tuning run (summary.json)", path.display()),
    }
}

/// Copies the files of a checkpoint folder into `to`, whole or not at all.
fn copy_checkpoint(source: &Path, to: &Path) -> Result<()> {
    let staging = to.with_extension("partial");
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).with_context(|| format!("cannot create {}", staging.display()))?;
    for entry in std::fs::read_dir(&source).with_context(|| format!("listing {}", source.display()))? {
        let path = entry?.path();
        if path.is_file() {
            let target = staging.join(path.file_name().expect("a listed file has a name"));
            std::fs::copy(&path, &target).with_context(|| format!("copying {} to {}", path.display(), target.display()))?;
        }
    }
    let _ = std::fs::remove_dir_all(to);
    std::fs::rename(&staging, to).with_context(|| format!("moving {} to {}", staging.display(), to.display()))
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{} is not JSON", path.display()))
}

/// Numbered stages with their times, so a long run shows where it is.
#[derive(Default)]
struct Stages {
    total: usize,
    times: Vec<StageTime>,
}

impl Stages {
    fn run<T>(&mut self, title: &str, stage: impl FnOnce() -> Result<T>) -> Result<T> {
        let tag = format!("nightly [{}/{}]", self.times.len() + 1, self.total);
        println!("{tag} {title} …");
        let started = Instant::now();
        STAGE_PEAK_RSS.store(0, Ordering::Relaxed);
        let value = stage();
        let seconds = started.elapsed().as_secs_f64();
        let peak_rss_bytes = Some(STAGE_PEAK_RSS.load(Ordering::Relaxed)).filter(|&bytes| bytes > 0);
        self.times.push(StageTime { stage: title.to_string(), seconds, peak_rss_bytes });
        let value = value.with_context(|| format!("{title} failed"))?;
        println!("{tag} {title} … done in {seconds:.1} s");
        Ok(value)
    }
}

/// The `vitrine-train` and `vitrine-index` binaries: beside this one, or in
/// `VITRINE_BIN_DIR`.
struct Tools {
    dir: PathBuf,
}

impl Tools {
    fn beside_this_binary() -> Result<Tools> {
        let dir = match std::env::var_os("VITRINE_BIN_DIR") {
            Some(dir) => PathBuf::from(dir),
            None => std::env::current_exe()?.parent().context("this binary has no folder")?.to_path_buf(),
        };
        for bin in ["vitrine-train", "vitrine-index"] {
            ensure!(
                dir.join(bin).is_file(),
                "{} is missing: build it (`cargo build --release -p vitrine-trainer -p vitrine-index-builder`) or set VITRINE_BIN_DIR",
                dir.join(bin).display()
            );
        }
        Ok(Tools { dir })
    }

    fn command(&self, bin: &str) -> Command {
        Command::new(self.dir.join(bin))
    }

    /// `vitrine-train <subcommand>` with the run's catalog, recipe, weights and cache.
    fn train(&self, subcommand: &str, args: &NightlyArgs, cache: &Path) -> Command {
        let mut command = self.command("vitrine-train");
        command.arg(subcommand).arg("--catalog").arg(&args.catalog).arg("--config").arg(&args.config);
        command.arg("--models").arg(&args.models).arg("--cache").arg(cache);
        if args.skip_bad_rows {
            command.arg("--skip-bad-rows");
        }
        command
    }

    fn eval(&self, args: &NightlyArgs, cache: &Path, checkpoint: &Path, out: &Path) -> Command {
        let mut command = self.train("eval", args, cache);
        command.arg("--checkpoint").arg(checkpoint).args(["--split", "val"]).arg("--out").arg(out);
        command
    }
}

trait Succeeds {
    fn succeeds(&mut self) -> Result<()>;
}

/// The largest peak resident memory of the tools run in the current stage.
static STAGE_PEAK_RSS: AtomicU64 = AtomicU64::new(0);

/// Waits for `child` and notes its peak resident memory in [`STAGE_PEAK_RSS`].
#[cfg(unix)]
fn wait_noting_peak_memory(child: std::process::Child) -> std::io::Result<std::process::ExitStatus> {
    use std::os::unix::process::ExitStatusExt;
    let pid = child.id() as libc::pid_t;
    let (mut status, mut usage) = (0, std::mem::MaybeUninit::<libc::rusage>::zeroed());
    loop {
        // SAFETY: `pid` is our own child, not yet waited for (std waits only
        // when asked to), and both out-pointers are valid for writes.
        if unsafe { libc::wait4(pid, &mut status, 0, usage.as_mut_ptr()) } == pid {
            break;
        }
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
    // SAFETY: wait4 filled `usage` for the child it returned.
    let max_rss = unsafe { usage.assume_init() }.ru_maxrss.max(0) as u64;
    // Linux reports kilobytes, macOS bytes.
    let bytes = if cfg!(target_os = "macos") { max_rss } else { max_rss * 1024 };
    STAGE_PEAK_RSS.fetch_max(bytes, Ordering::Relaxed);
    Ok(std::process::ExitStatus::from_raw(status))
}

#[cfg(not(unix))]
fn wait_noting_peak_memory(mut child: std::process::Child) -> std::io::Result<std::process::ExitStatus> {
    child.wait()
}

impl Succeeds for Command {
    fn succeeds(&mut self) -> Result<()> {
        let child = self.spawn().with_context(|| format!("cannot start {:?}", self.get_program()))?;
        let status = wait_noting_peak_memory(child).with_context(|| format!("waiting for {:?}", self.get_program()))?;
        ensure!(
            status.success(),
            "{:?} {} ({status})",
            self.get_program(),
            self.get_args().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ")
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn report(itr: f64, cr: f64, ocir: Option<f64>) -> serde_json::Value {
        let mut report = json!({
            "xmr_random100": {"itr": [1.0, 2.0, itr], "tir": [1.0, 2.0, 30.0]},
            "tgir_mean": [50.0, 80.0],
            "cr": {"accuracy": cr},
            "scr": {"accuracy": 40.0},
        });
        if let Some(ocir) = ocir {
            report["ocir_weighted"] = json!([ocir, 20.0, 30.0]);
        }
        report
    }

    #[test]
    fn a_fall_over_the_tolerance_is_a_regression_and_names_its_task() {
        let comparisons = compare(&report(40.0, 90.0, Some(10.0)), &report(38.5, 90.5, Some(9.5)), 1.0);
        let regressed: Vec<&str> = comparisons.iter().filter(|c| c.regressed).map(|c| c.task.as_str()).collect();
        assert_eq!(regressed, ["ITR R@10 (random 100)"]);
        let itr = &comparisons[0];
        assert_eq!((itr.published, itr.candidate), (Some(40.0), Some(38.5)));
        assert!((itr.change.unwrap() + 1.5).abs() < 1e-9);
    }

    /// The nightly's flags as clap reads them.
    #[derive(clap::Parser)]
    struct Flags {
        #[command(flatten)]
        nightly: NightlyArgs,
    }

    fn parse(extra: &[&str]) -> std::result::Result<NightlyArgs, String> {
        use clap::Parser;
        let base = ["nightly", "--catalog", "c", "--publish", "p", "--state", "s"];
        Flags::try_parse_from(base.iter().chain(extra)).map(|f| f.nightly).map_err(|e| e.to_string())
    }

    #[test]
    fn a_tolerance_that_would_turn_the_gate_off_or_refuse_an_equal_candidate_is_refused_before_anything_runs() {
        for bad in ["nan", "NaN", "inf", "-1", "-0.5", "one"] {
            let err = parse(&[&format!("--tolerance={bad}")]).err().unwrap_or_else(|| panic!("--tolerance {bad} was accepted"));
            assert!(err.contains("--tolerance"), "{err}");
        }
        assert_eq!(parse(&["--tolerance", "0"]).unwrap().tolerance, 0.0);
        assert_eq!(parse(&[]).unwrap().tolerance, 1.0);
    }

    #[test]
    fn a_search_beam_out_of_range_is_refused_before_training() {
        for bad in ["0", "4097", "70000"] {
            let err = parse(&[&format!("--search-ef={bad}")]).err().unwrap_or_else(|| panic!("--search-ef {bad} was accepted"));
            assert!(err.contains("--search-ef"), "{err}");
        }
        assert_eq!(parse(&["--search-ef", "4096"]).unwrap().search_ef, Some(4096));
    }

    #[test]
    fn gains_and_falls_within_the_tolerance_pass() {
        let comparisons = compare(&report(40.0, 90.0, Some(10.0)), &report(39.5, 95.0, Some(10.0)), 1.0);
        assert!(comparisons.iter().all(|c| !c.regressed), "{comparisons:?}");
    }

    #[test]
    fn a_task_missing_from_the_candidate_is_a_regression_but_not_one_missing_from_both() {
        let comparisons = compare(&report(40.0, 90.0, Some(10.0)), &report(40.0, 90.0, None), 1.0);
        let ocir = comparisons.iter().find(|c| c.task.starts_with("OCIR")).unwrap();
        assert!(ocir.regressed && ocir.change.is_none());
        let comparisons = compare(&report(40.0, 90.0, None), &report(40.0, 90.0, None), 1.0);
        assert!(comparisons.iter().all(|c| !c.regressed));
    }

    #[test]
    fn catalog_changes_count_added_changed_and_removed_ids() {
        let before: Snapshot = [("a", "1"), ("b", "2"), ("c", "3")].into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let now: Snapshot =
            [("a", "1"), ("b", "9"), ("d", "4"), ("e", "5")].into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert_eq!(changes(Some(&before), &now), CatalogChanges { items: 4, added: 2, changed: 1, removed: 1 });
        assert_eq!(changes(None, &now), CatalogChanges { items: 4, added: 4, changed: 0, removed: 0 });
    }
}
