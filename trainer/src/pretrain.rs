//! The pretraining loop: one pretext task sampled per step, AdamW with the
//! paper's parameter groups, gradient clipping, metrics as JSON lines, and
//! atomic checkpoints from which `--resume` continues exactly (the data order,
//! task choice, masks and dropout of step `s` depend only on the seed and `s`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::nn;
use vitrine_core::catalog::Catalog;
use vitrine_core::text::Tokenizer;

use crate::checkpoint::Checkpointer;
use crate::error::{file_err, TrainError};
use crate::model::bert::BertConfig;
use crate::model::fashionvil::{FashionVil, FashionVilConfig};
use crate::optim::{AdamW, AdamWConfig, LrRule, LrSchedule, ParamGroups};
use crate::pac::PacVocabulary;
use crate::prepare::pretrain_set;
use crate::recipe::{ImageEncoderMode, Recipe};
use crate::schedule::{epoch_order, step_rng, Task, TaskSampler};
use crate::train_loop::{run_steps, write_summary, LoopSpec, TaskTrend};
use crate::vqvae::VqVae;

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
    /// Where cached image features go, shared by runs on the same catalog
    /// (default: the run folder's `cache`).
    pub feature_cache: Option<PathBuf>,
}

impl ModelPaths {
    pub fn cache_for(&self, run_dir: &Path) -> PathBuf {
        self.feature_cache.clone().unwrap_or_else(|| run_dir.join("cache"))
    }
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

/// A model whose text tower (and fusion copy) starts from the pretrained BERT
/// and whose image encoder (or the tail of it that trains on cached maps),
/// when the recipe trains it, starts from the pretrained image weights; the
/// rest is freshly initialised.
pub fn model_from_pretrained_towers(
    vs: &nn::VarStore,
    bert_config: &BertConfig,
    model_config: FashionVilConfig,
    recipe: &Recipe,
    paths: &ModelPaths,
) -> Result<FashionVil, TrainError> {
    let trained_encoder = recipe.image_encoder == ImageEncoderMode::Trained;
    let model = FashionVil::new(&vs.root(), bert_config, model_config, trained_encoder);
    model.bert.text().load_safetensors(&paths.bert.join("model.safetensors"))?;
    model.bert.copy_text_to_fusion()?;
    let image_prefix = if trained_encoder { Some("image_encoder") } else { model.image_tail.is_some().then_some("image_tail") };
    if let Some(prefix) = image_prefix {
        crate::model::efficientnet::load_safetensors(vs, &paths.image_encoder, prefix)
            .map_err(|e| TrainError::ImageWeights { path: paths.image_encoder.clone(), reason: e.to_string() })?;
    }
    Ok(model)
}

/// When a negative bank of every train image is (re)built. Without a trained
/// image tail the bank's pooled features never change (its embeddings do,
/// through the live visual projection): built once. With a tail they are a
/// snapshot of its weights, taken again at every checkpoint step, so a run
/// resumed from a checkpoint sees the bank the uninterrupted run saw.
#[derive(Debug)]
pub struct BankRefresh {
    wanted: bool,
    every: Option<u64>,
}

impl BankRefresh {
    /// A bank if `wanted`, taken again every `checkpoint_every` steps when
    /// `model` has a trained image tail.
    pub fn new(wanted: bool, model: &FashionVil, checkpoint_every: u64) -> Self {
        BankRefresh { wanted, every: model.image_tail.is_some().then_some(checkpoint_every) }
    }

    /// Whether to build the bank before `step` (`missing`: none built yet).
    pub fn due(&self, step: u64, missing: bool) -> bool {
        self.wanted && (missing || self.every.is_some_and(|every| step % every == 0))
    }
}

/// Pretrains on the train split of `catalog` into `run_dir`; with `resume`,
/// continues from the newest complete checkpoint there.
pub fn pretrain(
    catalog: &Catalog,
    recipe: &Recipe,
    paths: &ModelPaths,
    run_dir: &Path,
    resume: bool,
) -> Result<PretrainSummary, TrainError> {
    let device = recipe.device();
    // The heads' random initialisation draws from libtorch's generator.
    tch::manual_seed(recipe.seed as i64);
    std::fs::create_dir_all(run_dir).map_err(file_err(run_dir))?;
    let sampler = TaskSampler::new(&recipe.tasks).map_err(|reason| TrainError::File { path: run_dir.join("recipe"), reason })?;
    let tokenizer_path = paths.bert.join("tokenizer.json");
    let tokenizer = Tokenizer::from_file(&tokenizer_path, recipe.max_text_tokens)?;
    let mut vq_vs = nn::VarStore::new(device);
    let image_tokenizer = if recipe.tasks.get(&Task::Mpfc).is_some_and(|w| *w > 0.0) {
        let dir = paths.vqvae.as_ref().ok_or(TrainError::NoImageTokenizer)?;
        Some(VqVae::load(&mut vq_vs, dir)?)
    } else {
        None
    };
    let (data, vocabulary) =
        pretrain_set(catalog, recipe, &tokenizer, &paths.image_encoder, image_tokenizer.as_ref(), &paths.cache_for(run_dir), device)?;
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
        image_tail_layers: recipe.image_tail_layers,
        pac_attributes: vocabulary.len().max(1) as i64,
        mpfc_codes: image_tokenizer.as_ref().map_or(1, |t| t.config.codebook_size),
        ..Default::default()
    };
    let vs = nn::VarStore::new(device);
    let model = model_from_pretrained_towers(&vs, &bert_config, model_config.clone(), recipe, paths)?;
    let mut optimizer = AdamW::new(optimizer_config(recipe))?;
    let checkpointer = Checkpointer::new(run_dir, recipe.keep_checkpoints);
    let config_json = checkpoint_config(&bert_config, &model_config, &vocabulary);
    let has_itc = recipe.tasks.get(&Task::Itc).is_some_and(|w| *w > 0.0);
    let bank_refresh = BankRefresh::new(recipe.bank_negatives && has_itc, &model, recipe.checkpoint_every);
    let mut itc_bank = None;
    let batch_size = recipe.batch_size.min(data.len());
    let batches_per_epoch = (data.len() / batch_size).max(1) as u64;
    let spec = LoopSpec::new("pretraining", recipe, recipe.steps, batch_size, &config_json, &tokenizer_path);
    let mut order: Option<(u64, Vec<usize>)> = None;
    let outcome = run_steps(&spec, &vs, &mut optimizer, &checkpointer, resume, |step, rng| {
        let (epoch, position) = (step / batches_per_epoch, (step % batches_per_epoch) as usize);
        if order.as_ref().is_none_or(|(e, _)| *e != epoch) {
            order = Some((epoch, epoch_order(data.len(), recipe.seed, epoch)));
        }
        let positions = &order.as_ref().expect("set above").1[position * batch_size..(position + 1) * batch_size];
        if bank_refresh.due(step, itc_bank.is_none()) {
            itc_bank = data.itc_bank(|maps, rows| model.pooled_cached_features(maps, rows, device));
        }
        let task = sampler.sample(rng);
        let batch = data.batch(task, positions, rng, device)?;
        Ok((task, model.pretext_loss(&batch, itc_bank.as_ref(), true)))
    })?;
    let summary = PretrainSummary {
        recipe: recipe.name.clone(),
        seed: recipe.seed,
        steps: recipe.steps,
        examples: data.len(),
        pac_attributes: vocabulary.len(),
        samples_per_s: outcome.samples_per_s,
        tasks: outcome.tasks,
        checkpoint: outcome.checkpoint,
    };
    write_summary(run_dir, &summary)?;
    Ok(summary)
}

/// Trains the MPFC image tokenizer on the catalog's train photos.
pub fn train_vqvae(catalog: &Catalog, recipe: &Recipe, out: &Path) -> Result<(f64, f64), TrainError> {
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
        .map_err(|e| TrainError::File { path: out.to_path_buf(), reason: e.to_string() })?;
    let transform = crate::image::ImageTransform::default();
    let bar = crate::progress::bar(recipe.vqvae.steps as usize, "training image tokenizer");
    let (mut first, mut last) = (None, 0.0);
    for step in 0..recipe.vqvae.steps {
        let mut rng = step_rng(recipe.seed, step);
        let picks: Vec<PathBuf> = (0..recipe.vqvae.batch_size).map(|_| photos[rng.gen_range(0..photos.len())].clone()).collect();
        let images = transform.eval_batch(&picks)?.to_device(device);
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

#[cfg(test)]
mod tests {
    use super::BankRefresh;

    #[test]
    fn a_bank_is_built_once_or_again_at_every_checkpoint_step() {
        let once = BankRefresh { wanted: true, every: None };
        assert!(once.due(0, true) && once.due(17, true));
        assert!(!once.due(50, false));
        let snapshots = BankRefresh { wanted: true, every: Some(50) };
        // A resumed run starts at a checkpoint step, where the uninterrupted run took one too.
        assert!(snapshots.due(100, true) && snapshots.due(50, false) && snapshots.due(0, false));
        assert!(!snapshots.due(51, false) && !snapshots.due(99, false));
        let unwanted = BankRefresh { wanted: false, every: Some(50) };
        assert!(!unwanted.due(0, true) && !unwanted.due(50, true));
    }
}
