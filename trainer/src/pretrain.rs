//! The pretraining loop: one pretext task sampled per step, AdamW with the
//! paper's parameter groups, gradient clipping, metrics as JSON lines, and
//! atomic checkpoints from which `--resume` continues exactly (the data order,
//! task choice, masks and dropout of step `s` depend only on the seed and `s`).

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::{nn, Device};
use vitrine_core::catalog::Catalog;
use vitrine_core::text::Tokenizer;

use crate::checkpoint::{self, Checkpointer, TrainerState};
use crate::data::{epoch_order, step_rng};
use crate::model::bert::BertConfig;
use crate::model::fashionvil::{FashionVil, FashionVilConfig};
use crate::optim::{AdamW, AdamWConfig, LrRule, LrSchedule, ParamGroups};
use crate::pac::PacVocabulary;
use crate::precision::{autocast, HalfKind};
use crate::prepare::{pretrain_set, progress};
use crate::pretext::{Task, TaskSampler};
use crate::recipe::{ImageEncoderMode, Recipe};
use crate::vqvae::VqVae;

pub const METRICS_FILE: &str = "metrics.jsonl";
pub const SUMMARY_FILE: &str = "summary.json";

/// Where the pretrained weights are.
#[derive(Debug, Clone)]
pub struct ModelPaths {
    /// A Hugging Face BERT folder: config.json, model.safetensors, tokenizer.json.
    pub bert: PathBuf,
    /// Image encoder weights: EfficientNet-Lite0 (efficientnet_pytorch names)
    /// or ResNet-50 (torchvision names), as the recipe's backbone says.
    pub image_encoder: PathBuf,
    /// The image tokenizer of MPFC (from `vitrine-train vqvae`).
    pub vqvae: Option<PathBuf>,
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepMetrics {
    pub step: u64,
    pub task: Task,
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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PretrainSummary {
    pub recipe: String,
    pub seed: u64,
    pub steps: u64,
    pub examples: usize,
    pub pac_attributes: usize,
    pub samples_per_s: f64,
    pub tasks: BTreeMap<Task, TaskTrend>,
    pub checkpoint: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum PretrainError {
    #[error(transparent)]
    Prepare(#[from] crate::prepare::PrepareError),
    #[error(transparent)]
    Bert(#[from] crate::model::bert::BertError),
    #[error(transparent)]
    Optim(#[from] crate::optim::OptimError),
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    #[error(transparent)]
    Image(#[from] crate::image::ImageError),
    #[error(transparent)]
    VqVae(#[from] crate::vqvae::VqVaeError),
    #[error(transparent)]
    Text(#[from] vitrine_core::text::TextError),
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("the recipe enables MPFC but no image tokenizer was given: train one with `vitrine-train vqvae` and pass --vqvae")]
    NoImageTokenizer,
    #[error("image encoder weights {path}: {reason}")]
    ImageWeights { path: PathBuf, reason: String },
    #[error("the loss became {loss} at step {step} ({task:?}); lower the learning rate")]
    NonFinite { step: u64, task: Task, loss: f64 },
}

fn file_err(path: &Path) -> impl Fn(std::io::Error) -> PretrainError + '_ {
    move |e| PretrainError::File { path: path.to_path_buf(), reason: e.to_string() }
}

/// The optimiser settings of a recipe.
pub fn optimizer_config(recipe: &Recipe) -> AdamWConfig {
    AdamWConfig {
        lr: recipe.lr,
        weight_decay: recipe.weight_decay,
        schedule: LrSchedule {
            warmup_steps: recipe.warmup_steps,
            decay_steps: recipe.decay_steps.clone(),
            decay_factor: recipe.decay_factor,
        },
        groups: ParamGroups { lr_rules: recipe.lr_multipliers.iter().map(|(p, m)| LrRule::new(p.clone(), *m)).collect() },
        ..Default::default()
    }
}

/// The checkpoint's config.json: the BERT config (Hugging Face fields) with a
/// `fashionvil` section and the PAC vocabulary.
pub fn checkpoint_config(bert: &BertConfig, fashionvil: &FashionVilConfig, vocabulary: &PacVocabulary) -> serde_json::Value {
    let mut config = serde_json::to_value(bert).expect("the BERT config serialises");
    config["fashionvil"] = serde_json::to_value(fashionvil).expect("the model config serialises");
    config["pac_vocabulary"] = serde_json::to_value(&vocabulary.attributes).expect("strings serialise");
    config
}

/// Pretrains on the train split of `catalog` into `run_dir`; with `resume`,
/// continues from the newest complete checkpoint there.
pub fn pretrain(
    catalog: &Catalog,
    recipe: &Recipe,
    paths: &ModelPaths,
    run_dir: &Path,
    resume: bool,
) -> Result<PretrainSummary, PretrainError> {
    let device = recipe.device();
    // The heads' random initialisation draws from libtorch's generator.
    tch::manual_seed(recipe.seed as i64);
    std::fs::create_dir_all(run_dir).map_err(file_err(run_dir))?;
    let sampler = TaskSampler::new(&recipe.tasks).map_err(|reason| PretrainError::File { path: run_dir.join("recipe"), reason })?;
    let tokenizer_path = paths.bert.join("tokenizer.json");
    let tokenizer = Tokenizer::from_file(&tokenizer_path, recipe.max_text_tokens)?;
    let mut vq_vs = nn::VarStore::new(device);
    let image_tokenizer = if recipe.tasks.get(&Task::Mpfc).is_some_and(|w| *w > 0.0) {
        let dir = paths.vqvae.as_ref().ok_or(PretrainError::NoImageTokenizer)?;
        Some(VqVae::load(&mut vq_vs, dir)?)
    } else {
        None
    };
    let (data, vocabulary) =
        pretrain_set(catalog, recipe, &tokenizer, &paths.image_encoder, image_tokenizer.as_ref(), &run_dir.join("cache"), device)?;
    tracing::info!(
        examples = data.len(),
        pac_attributes = vocabulary.len(),
        sample = ?vocabulary.attributes.iter().step_by((vocabulary.len() / 12).max(1)).collect::<Vec<_>>(),
        "training set ready"
    );
    let bert_config = BertConfig::from_file(&paths.bert.join("config.json"))?;
    let model_config = FashionVilConfig {
        share_text_fusion: recipe.share_text_fusion,
        backbone: recipe.image_backbone,
        image_channels: recipe.image_backbone.channels(),
        pac_attributes: vocabulary.len().max(1) as i64,
        mpfc_codes: image_tokenizer.as_ref().map_or(1, |t| t.config.codebook_size),
        ..Default::default()
    };
    let vs = nn::VarStore::new(device);
    let trained_encoder = recipe.image_encoder == ImageEncoderMode::Trained;
    let model = FashionVil::new(&vs.root(), &bert_config, model_config.clone(), trained_encoder);
    model.bert.text().load_safetensors(&paths.bert.join("model.safetensors"))?;
    model.bert.copy_text_to_fusion()?;
    if trained_encoder {
        let prefix = "image_encoder";
        crate::model::efficientnet::load_safetensors(&vs, &paths.image_encoder, prefix)
            .map_err(|e| PretrainError::ImageWeights { path: paths.image_encoder.clone(), reason: e.to_string() })?;
    }
    let mut optimizer = AdamW::new(optimizer_config(recipe))?;
    let checkpointer = Checkpointer::new(run_dir, recipe.keep_checkpoints);
    let config_json = checkpoint_config(&bert_config, &model_config, &vocabulary);

    let mut start = 0;
    if resume {
        if let Some(dir) = checkpointer.latest()? {
            let state: TrainerState = serde_json::from_value(checkpoint::load(&dir, &vs, &mut optimizer)?)
                .map_err(|e| PretrainError::File { path: dir.join("trainer_state.json"), reason: e.to_string() })?;
            start = state.step;
            tracing::info!(checkpoint = %dir.display(), step = start, "resuming");
        }
    }
    let autocast_kind = recipe.bf16.then_some(HalfKind::Bf16);
    let metrics_path = run_dir.join(METRICS_FILE);
    keep_metrics_before(&metrics_path, start)?;
    let mut metrics_file = OpenOptions::new().create(true).append(true).open(&metrics_path).map_err(file_err(&metrics_path))?;

    let batch_size = recipe.batch_size.min(data.len());
    let batches_per_epoch = (data.len() / batch_size).max(1) as u64;
    let bar = progress(recipe.steps as usize, "pretraining");
    bar.set_position(start);
    let mut order: Option<(u64, Vec<usize>)> = None;
    let mut last_checkpoint = checkpointer.latest()?;
    // The newest loss of each task, for the progress line.
    let mut recent_loss: BTreeMap<Task, f64> = BTreeMap::new();
    let started = Instant::now();
    for step in start..recipe.steps {
        let step_started = Instant::now();
        let (epoch, position) = (step / batches_per_epoch, (step % batches_per_epoch) as usize);
        if order.as_ref().is_none_or(|(e, _)| *e != epoch) {
            order = Some((epoch, epoch_order(data.len(), recipe.seed, epoch)));
        }
        let positions = &order.as_ref().expect("set above").1[position * batch_size..(position + 1) * batch_size];
        let mut rng = step_rng(recipe.seed, step);
        let task = sampler.sample(&mut rng);
        // Dropout draws from libtorch's generator: seed it per step too.
        tch::manual_seed((recipe.seed ^ step.wrapping_mul(0x9E37_79B9)) as i64);
        let batch = data.batch(task, positions, &mut rng, device)?;
        optimizer.zero_grad(&vs);
        let loss = autocast(device, autocast_kind, || model.pretext_loss(&batch, true));
        let loss_value = loss.double_value(&[]);
        if !loss_value.is_finite() {
            return Err(PretrainError::NonFinite { step, task, loss: loss_value });
        }
        loss.backward();
        let grad_norm = optimizer.clip_grad_norm(&vs, recipe.clip_norm)?;
        let lr = optimizer.lr();
        optimizer.step(&vs)?;
        let line = StepMetrics {
            step,
            task,
            loss: loss_value,
            lr,
            grad_norm,
            samples_per_s: batch_size as f64 / step_started.elapsed().as_secs_f64(),
        };
        writeln!(metrics_file, "{}", serde_json::to_string(&line).expect("metrics serialise")).map_err(file_err(&metrics_path))?;
        recent_loss.insert(task, loss_value);
        let losses: Vec<String> = recent_loss.iter().map(|(t, l)| format!("{} {l:.3}", t.name())).collect();
        bar.set_message(format!("{} | {:.1} samples/s", losses.join(" "), line.samples_per_s));
        bar.inc(1);
        if bar.is_hidden() && (step + 1) % 10 == 0 {
            tracing::info!(
                step = step + 1,
                of = recipe.steps,
                task = task.name(),
                loss = loss_value,
                samples_per_s = line.samples_per_s,
                "pretraining"
            );
        }
        let done = step + 1;
        if done % recipe.checkpoint_every == 0 || done == recipe.steps {
            metrics_file.flush().map_err(file_err(&metrics_path))?;
            let state = TrainerState {
                step: done,
                epoch,
                position: position as u64 + 1,
                rng: [("seed".to_string(), recipe.seed)].into(),
                ..Default::default()
            };
            last_checkpoint = Some(checkpointer.save(done, &vs, &optimizer, &config_json, Some(&tokenizer_path), &state)?);
        }
    }
    bar.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    let trained = recipe.steps.saturating_sub(start);
    let metrics = read_metrics(&metrics_path)?;
    let summary = PretrainSummary {
        recipe: recipe.name.clone(),
        seed: recipe.seed,
        steps: recipe.steps,
        examples: data.len(),
        pac_attributes: vocabulary.len(),
        samples_per_s: if trained > 0 { (trained as f64 * batch_size as f64) / elapsed } else { 0.0 },
        tasks: task_trends(&metrics),
        checkpoint: last_checkpoint.unwrap_or_default(),
    };
    let summary_path = run_dir.join(SUMMARY_FILE);
    std::fs::write(&summary_path, serde_json::to_string_pretty(&summary).expect("summary serialises")).map_err(file_err(&summary_path))?;
    Ok(summary)
}

/// Drops metrics of steps at or after `start` (written after the checkpoint a
/// resumed run continues from), so the file holds each step once.
fn keep_metrics_before(path: &Path, start: u64) -> Result<(), PretrainError> {
    if !path.is_file() {
        return Ok(());
    }
    let kept: Vec<String> =
        read_metrics(path)?.into_iter().filter(|m| m.step < start).map(|m| serde_json::to_string(&m).expect("serialises")).collect();
    let tmp = path.with_extension("jsonl.tmp");
    std::fs::write(&tmp, kept.iter().map(|l| format!("{l}\n")).collect::<String>()).map_err(file_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(file_err(path))
}

/// Reads `metrics.jsonl`; a torn last line (a kill during a write) is ignored.
pub fn read_metrics(path: &Path) -> Result<Vec<StepMetrics>, PretrainError> {
    let text = std::fs::read_to_string(path).map_err(file_err(path))?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut out = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        match serde_json::from_str(line) {
            Ok(m) => out.push(m),
            Err(_) if i + 1 == lines.len() => {}
            Err(e) => return Err(PretrainError::File { path: path.to_path_buf(), reason: format!("line {}: {e}", i + 1) }),
        }
    }
    Ok(out)
}

/// Mean loss of each task over its first and its last 10% of steps.
pub fn task_trends(metrics: &[StepMetrics]) -> BTreeMap<Task, TaskTrend> {
    let mut by_task: BTreeMap<Task, Vec<f64>> = BTreeMap::new();
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

/// Trains the MPFC image tokenizer on the catalog's train photos.
pub fn train_vqvae(catalog: &Catalog, recipe: &Recipe, out: &Path) -> Result<(f64, f64), PretrainError> {
    use rand::Rng;
    let device = recipe.device();
    tch::manual_seed(recipe.seed as i64);
    let examples = crate::prepare::train_examples(catalog, recipe);
    let photos = crate::prepare::first_photos(catalog, &examples);
    let vs = nn::VarStore::new(device);
    let mut config = crate::vqvae::VqVaeConfig::default();
    if let Some(channels) = &recipe.vqvae.channels {
        config.channels = channels.clone();
    }
    let mut vq = VqVae::new(&vs.root(), config);
    let mut opt = nn::OptimizerConfig::build(nn::Adam::default(), &vs, recipe.vqvae.lr)
        .map_err(|e| PretrainError::File { path: out.to_path_buf(), reason: e.to_string() })?;
    let transform = crate::image::ImageTransform::default();
    let bar = progress(recipe.vqvae.steps as usize, "training image tokenizer");
    let (mut first, mut last) = (None, 0.0);
    for step in 0..recipe.vqvae.steps {
        let mut rng = step_rng(recipe.seed, step);
        let picks: Vec<PathBuf> = (0..recipe.vqvae.batch_size).map(|_| photos[rng.gen_range(0..photos.len())].clone()).collect();
        let images = crate::prepare::load_eval_batch(&picks, &transform)?.to_device(device);
        let out_step = vq.train_step(&images);
        opt.backward_step(&out_step.loss);
        last = out_step.reconstruction_loss.double_value(&[]);
        first.get_or_insert(last);
        bar.set_message(format!("recon {last:.4} codes used {:.0}%", out_step.code_usage * 100.0));
        bar.inc(1);
        if bar.is_hidden() && (step + 1) % 25 == 0 {
            tracing::info!(
                step = step + 1,
                of = recipe.vqvae.steps,
                reconstruction = last,
                code_usage = out_step.code_usage,
                "training image tokenizer"
            );
        }
    }
    bar.finish_and_clear();
    vq.save(&vs, out)?;
    Ok((first.unwrap_or(last), last))
}
