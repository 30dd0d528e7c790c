//! The step loop shared by pretraining and fine-tuning: one task sampled per
//! step, AdamW with gradient clipping under optional autocast, metrics as JSON
//! lines, a progress bar, and atomic checkpoints from which `--resume`
//! continues exactly (every random choice of step `s` depends only on the seed
//! and `s`, through [`step_rng`] and libtorch's generator seeded per step).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Tensor};

use crate::checkpoint::{self, Checkpointer, TrainerState};
use crate::error::{file_err, TrainError};
use crate::optim::AdamW;
use crate::precision::{autocast, HalfKind};
use crate::schedule::{step_rng, LoopTask};

pub const METRICS_FILE: &str = "metrics.jsonl";
pub const SUMMARY_FILE: &str = "summary.json";

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepMetrics<T> {
    pub step: u64,
    pub task: T,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub samples_per_s: f64,
}

/// Per task: mean loss over its first and last 10% of steps.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskTrend {
    pub steps: usize,
    pub first_mean: f64,
    pub last_mean: f64,
}

/// What the loop needs besides the model, optimiser and the step function.
pub struct LoopSpec<'a> {
    /// What the progress bar and logs call the work (`pretraining`, `fine-tuning`).
    pub label: &'static str,
    pub steps: u64,
    pub batch_size: usize,
    pub seed: u64,
    pub checkpoint_every: u64,
    pub clip_norm: f64,
    pub autocast: Option<HalfKind>,
    pub device: Device,
    /// The checkpoint's config.json.
    pub config: &'a serde_json::Value,
    pub tokenizer: &'a Path,
}

impl<'a> LoopSpec<'a> {
    /// The loop of `steps` steps of `batch_size` with the recipe's seed,
    /// checkpointing, clipping, precision and device.
    pub fn new(
        label: &'static str,
        recipe: &crate::recipe::Recipe,
        steps: u64,
        batch_size: usize,
        config: &'a serde_json::Value,
        tokenizer: &'a Path,
    ) -> Self {
        LoopSpec {
            label,
            steps,
            batch_size,
            seed: recipe.seed,
            checkpoint_every: recipe.checkpoint_every,
            clip_norm: recipe.clip_norm,
            autocast: recipe.bf16.then_some(HalfKind::Bf16),
            device: recipe.device(),
            config,
            tokenizer,
        }
    }
}

/// What a finished loop reports.
pub struct LoopOutcome<T> {
    pub samples_per_s: f64,
    pub tasks: BTreeMap<T, TaskTrend>,
    pub checkpoint: PathBuf,
}

/// Runs `spec.steps` optimiser steps on `vs`, continuing from the newest
/// checkpoint of `checkpointer` when `resume` is set. `loss_of_step(step, rng)`
/// picks the step's task and returns its loss.
pub fn run_steps<T: LoopTask>(
    spec: &LoopSpec,
    vs: &nn::VarStore,
    optimizer: &mut AdamW,
    checkpointer: &Checkpointer,
    resume: bool,
    mut loss_of_step: impl FnMut(u64, &mut ChaCha8Rng) -> Result<(T, Tensor), TrainError>,
) -> Result<LoopOutcome<T>, TrainError> {
    let run_dir = checkpointer.run_dir().to_path_buf();
    let mut start = 0;
    if resume {
        if let Some(dir) = checkpointer.latest()? {
            let state: TrainerState = serde_json::from_value(checkpoint::load(&dir, vs, optimizer)?)
                .map_err(|e| TrainError::File { path: dir.join("trainer_state.json"), reason: e.to_string() })?;
            start = state.step;
            tracing::info!(checkpoint = %dir.display(), step = start, "resuming");
        }
    }
    let metrics_path = run_dir.join(METRICS_FILE);
    keep_metrics_before::<T>(&metrics_path, start)?;
    let mut metrics_file = OpenOptions::new().create(true).append(true).open(&metrics_path).map_err(file_err(&metrics_path))?;

    let bar = crate::progress::bar(spec.steps as usize, spec.label);
    bar.set_position(start);
    let mut last_checkpoint = checkpointer.latest()?;
    // The newest loss of each task, for the progress line.
    let mut recent_loss: BTreeMap<T, f64> = BTreeMap::new();
    let started = Instant::now();
    for step in start..spec.steps {
        let step_started = Instant::now();
        let mut rng = step_rng(spec.seed, step);
        // Dropout draws from libtorch's generator: seed it per step too.
        tch::manual_seed((spec.seed ^ step.wrapping_mul(0x9E37_79B9)) as i64);
        optimizer.zero_grad(vs);
        let (task, loss) = autocast(spec.device, spec.autocast, || loss_of_step(step, &mut rng))?;
        let loss_value = loss.double_value(&[]);
        if !loss_value.is_finite() {
            return Err(TrainError::NonFinite { step, task: task.name(), loss: loss_value });
        }
        loss.backward();
        let grad_norm = optimizer.clip_grad_norm(vs, spec.clip_norm)?;
        let lr = optimizer.lr();
        optimizer.step(vs)?;
        let line = StepMetrics {
            step,
            task,
            loss: loss_value,
            lr,
            grad_norm,
            samples_per_s: spec.batch_size as f64 / step_started.elapsed().as_secs_f64(),
        };
        writeln!(metrics_file, "{}", serde_json::to_string(&line).expect("metrics serialise")).map_err(file_err(&metrics_path))?;
        recent_loss.insert(task, loss_value);
        let losses: Vec<String> = recent_loss.iter().map(|(t, l)| format!("{} {l:.3}", t.name())).collect();
        bar.set_message(format!("{} | {:.1} samples/s", losses.join(" "), line.samples_per_s));
        bar.inc(1);
        if bar.is_hidden() && (step + 1) % 10 == 0 {
            tracing::info!(
                step = step + 1,
                of = spec.steps,
                task = task.name(),
                loss = loss_value,
                samples_per_s = line.samples_per_s,
                "{}",
                spec.label
            );
        }
        let done = step + 1;
        if done % spec.checkpoint_every == 0 || done == spec.steps {
            metrics_file.flush().map_err(file_err(&metrics_path))?;
            let state = TrainerState { step: done, rng: [("seed".to_string(), spec.seed)].into(), ..Default::default() };
            last_checkpoint = Some(checkpointer.save(done, vs, optimizer, spec.config, Some(spec.tokenizer), &state)?);
        }
    }
    bar.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    let trained = spec.steps.saturating_sub(start);
    let metrics = read_metrics::<T>(&metrics_path)?;
    Ok(LoopOutcome {
        samples_per_s: if trained > 0 { (trained as f64 * spec.batch_size as f64) / elapsed } else { 0.0 },
        tasks: task_trends(&metrics),
        checkpoint: last_checkpoint.unwrap_or_default(),
    })
}

/// Drops metrics of steps at or after `start` (written after the checkpoint a
/// resumed run continues from), so the file holds each step once.
fn keep_metrics_before<T: LoopTask>(path: &Path, start: u64) -> Result<(), TrainError> {
    if !path.is_file() {
        return Ok(());
    }
    let kept: Vec<String> =
        read_metrics::<T>(path)?.into_iter().filter(|m| m.step < start).map(|m| serde_json::to_string(&m).expect("serialises")).collect();
    let tmp = path.with_extension("jsonl.tmp");
    std::fs::write(&tmp, kept.iter().map(|l| format!("{l}\n")).collect::<String>()).map_err(file_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(file_err(path))
}

/// Reads `metrics.jsonl`; a torn last line (a kill during a write) is ignored.
pub fn read_metrics<T: LoopTask>(path: &Path) -> Result<Vec<StepMetrics<T>>, TrainError> {
    let text = std::fs::read_to_string(path).map_err(file_err(path))?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut out = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        match serde_json::from_str(line) {
            Ok(m) => out.push(m),
            Err(_) if i + 1 == lines.len() => {}
            Err(e) => return Err(TrainError::File { path: path.to_path_buf(), reason: format!("line {}: {e}", i + 1) }),
        }
    }
    Ok(out)
}

/// Mean loss of each task over its first and its last 10% of steps.
pub fn task_trends<T: LoopTask>(metrics: &[StepMetrics<T>]) -> BTreeMap<T, TaskTrend> {
    let mut by_task: BTreeMap<T, Vec<f64>> = BTreeMap::new();
    for m in metrics {
        by_task.entry(m.task).or_default().push(m.loss);
    }
    by_task
        .into_iter()
        .map(|(task, losses)| {
            let tenth = (losses.len() / 10).max(1);
            let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
            (task, TaskTrend { steps: losses.len(), first_mean: mean(&losses[..tenth]), last_mean: mean(&losses[losses.len() - tenth..]) })
        })
        .collect()
}

/// Writes `summary` as pretty JSON to the run folder's summary file.
pub fn write_summary(run_dir: &Path, summary: &impl Serialize) -> Result<(), TrainError> {
    let path = run_dir.join(SUMMARY_FILE);
    std::fs::write(&path, serde_json::to_string_pretty(summary).expect("summary serialises")).map_err(file_err(&path))
}
