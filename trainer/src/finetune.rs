//! Fine-tuning for the downstream tasks: cross-modal retrieval (XMR, the ITC
//! loss), text-guided image retrieval (TGIR), category and subcategory
//! recognition (CR/SCR) and outfit complementary item retrieval (OCIR).
//!
//! One task is sampled per step as in pretraining. A recipe that enables one
//! task gives the paper's per-task fine-tune; enabling all of them gives the
//! multi-task fine-tune whose single model serves every task (what the product
//! ships). Each task draws its batch from its own train examples with the
//! step's RNG, so a resumed run repeats the uninterrupted one.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use rand::seq::index::sample;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Tensor};
use vitrine_core::catalog::{BadRowPolicy, Catalog, Split};
use vitrine_core::tasks::Labels;
use vitrine_core::text::Tokenizer;

use crate::catalog_inputs::{CatalogInputs, ItemTexts, OcirExample, SplitExamples, TgirExample};
use crate::checkpoint::{self, Checkpointer};
use crate::error::TrainError;
use crate::losses::{bank_softmax, in_batch_softmax, info_nce, positions, twin_pairs};
use crate::model::bert::BertConfig;
use crate::model::downstream::DownstreamHeads;
use crate::model::fashionvil::{FashionVil, FashionVilConfig};
use crate::optim::AdamW;
use crate::pac::PacVocabulary;
use crate::pretrain::{checkpoint_config, model_from_pretrained_towers, optimizer_config, BankRefresh, ModelPaths};
use crate::recipe::{ImageEncoderMode, Recipe};
use crate::schedule::{Downstream, LoopTask, TaskSampler};
use crate::teacher::config_part;
use crate::train_loop::{run_steps, write_summary, LoopSpec, TaskTrend};

/// The loss of `task` on the examples at `picks` of `examples`. With
/// `bank_features` (the pooled features of every row of `examples`, see
/// [`CatalogInputs::pooled_features`]) every one of those images is a
/// candidate of XMR (text to image), TGIR and OCIR; without, the batch's are.
#[allow(clippy::too_many_arguments)]
pub fn downstream_loss(
    model: &FashionVil,
    inputs: &CatalogInputs,
    examples: &SplitExamples,
    task: Downstream,
    picks: &[usize],
    bank_features: Option<&Tensor>,
    rng: &mut ChaCha8Rng,
    device: Device,
) -> Result<Tensor, TrainError> {
    let heads = model.downstream.as_ref().expect("a fine-tuned model has downstream heads");
    let bank = || bank_features.map(|features| model.pooled_image_embedding(features));
    let loss = match task {
        Downstream::Xmr => {
            let rows: Vec<usize> = picks.iter().map(|&p| examples.rows[p]).collect();
            let (ids, mask) = inputs.item_texts(&rows, Some(rng), device);
            let texts = model.text_embedding(&ids, &mask, true);
            match bank() {
                Some(bank) => {
                    let twins = twin_pairs(picks, &examples.text_twins);
                    let text_to_image = bank_softmax(&texts, &bank, picks, &twins);
                    // Live with a trained tail, as in pretraining's ITC (`FashionVil::pretext_loss`).
                    let images = match model.image_tail {
                        Some(_) => model.image_embedding(&inputs.visual_tokens(model, &rows, Some(rng), device)?),
                        None => bank.index_select(0, &positions(picks.iter().copied(), device)),
                    };
                    (text_to_image + in_batch_softmax(&images, &texts)) / 2.0
                }
                None => info_nce(&model.image_embedding(&inputs.visual_tokens(model, &rows, Some(rng), device)?), &texts),
            }
        }
        Downstream::Tgir => {
            let picked: Vec<&TgirExample> = picks.iter().map(|&p| &examples.tgir[p]).collect();
            let references: Vec<usize> = picked.iter().map(|e| e.reference).collect();
            let targets: Vec<usize> = picked.iter().map(|e| e.target).collect();
            let query = inputs.tgir_query(model, &references, picked.iter().map(|e| e.modification.clone()), Some(rng), true, device)?;
            match (bank(), bank_positions(examples, &targets)) {
                (Some(bank), Some(answers)) => bank_softmax(&query, &bank, &answers, &[]),
                _ => {
                    // The gallery: the batch's targets (each once) and every example's siblings.
                    let mut gallery: Vec<usize> = Vec::new();
                    let mut column: HashMap<usize, usize> = HashMap::new();
                    for row in targets.iter().chain(picked.iter().flat_map(|e| &e.siblings)) {
                        column.entry(*row).or_insert_with(|| {
                            gallery.push(*row);
                            gallery.len() - 1
                        });
                    }
                    let answers: Vec<usize> = targets.iter().map(|t| column[t]).collect();
                    let candidates = model.image_embedding(&inputs.visual_tokens(model, &gallery, Some(rng), device)?);
                    bank_softmax(&query, &candidates, &answers, &[])
                }
            }
        }
        Downstream::Cr => {
            let rows: Vec<usize> = picks.iter().map(|&p| examples.labelled[p].0).collect();
            let pooled = inputs.fused_pooled(model, &rows, Some(rng), true, device)?;
            let category = Tensor::from_slice(&picks.iter().map(|&p| examples.labelled[p].1 as i64).collect::<Vec<_>>()).to_device(device);
            let subcategory =
                Tensor::from_slice(&picks.iter().map(|&p| examples.labelled[p].2 as i64).collect::<Vec<_>>()).to_device(device);
            (heads.category.forward(&pooled).cross_entropy_for_logits(&category)
                + heads.subcategory.forward(&pooled).cross_entropy_for_logits(&subcategory))
                / 2.0
        }
        Downstream::Ocir => {
            let picked: Vec<&OcirExample> = picks.iter().map(|&p| &examples.ocir[p]).collect();
            let answers: Vec<usize> = picked.iter().map(|e| e.answer).collect();
            let query = inputs.ocir_query(model, &picked, Some(rng), device)?;
            match (bank(), bank_positions(examples, &answers)) {
                (Some(bank), Some(positions)) => bank_softmax(&query, &bank, &positions, &[]),
                _ => in_batch_softmax(&query, &model.image_embedding(&inputs.visual_tokens(model, &answers, Some(rng), device)?)),
            }
        }
    };
    Ok(loss)
}

/// Why a task with `examples` train examples (fewer than two) is skipped.
fn skip_reason(task: Downstream, examples: usize) -> String {
    let why = match task {
        Downstream::Tgir => {
            "no colour variants of one product (group ids), nor items of one subcategory that differ in one attribute, to make \"like this, but ...\" triplets from"
        }
        Downstream::Ocir => "no baskets or outfits to ask for a complementary item",
        Downstream::Cr => "no labelled items",
        Downstream::Xmr => "no items with a photo and a text",
    };
    format!("{examples} train examples: {why}")
}

/// Positions of `rows` in the split's rows (the bank's columns), when all are there.
fn bank_positions(examples: &SplitExamples, rows: &[usize]) -> Option<Vec<usize>> {
    rows.iter().map(|r| examples.position_of.get(r).copied()).collect()
}

/// Where a fine-tune starts.
pub enum Start<'a> {
    /// A pretraining checkpoint (its downstream heads start fresh), or a
    /// fine-tuned one (its heads are kept when the catalog's labels are the same).
    Pretrained(&'a Path),
    /// The pretrained text and image towers only: the "no pretraining" row.
    Towers,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FinetuneSummary {
    pub recipe: String,
    pub seed: u64,
    pub steps: u64,
    pub start: String,
    /// Whether the start checkpoint's downstream heads were kept (a fine-tuned
    /// model of a catalog with the same labels).
    #[serde(default)]
    pub kept_heads: bool,
    pub examples: BTreeMap<Downstream, usize>,
    /// Tasks of the recipe the catalog cannot teach, with the reason.
    #[serde(default)]
    pub skipped: BTreeMap<Downstream, String>,
    pub samples_per_s: f64,
    pub tasks: BTreeMap<Downstream, TaskTrend>,
    pub checkpoint: PathBuf,
}

/// The checkpoint's config.json for a fine-tuned model: the pretraining
/// config plus the label names of the heads and the tasks trained (a head
/// of a skipped task keeps its initial weights, and later stages leave it out).
fn finetuned_config(
    bert: &BertConfig,
    model: &FashionVilConfig,
    pac: &PacVocabulary,
    labels: &Labels,
    trained: impl Iterator<Item = Downstream>,
) -> serde_json::Value {
    let mut config = checkpoint_config(bert, model, pac);
    config["categories"] = serde_json::to_value(&labels.categories).expect("strings serialise");
    config["subcategories"] = serde_json::to_value(&labels.subcategories).expect("strings serialise");
    config[checkpoint::TRAINED_TASKS_KEY] = serde_json::to_value(trained.collect::<Vec<_>>()).expect("task names serialise");
    config
}

/// Fine-tunes on the train split of `catalog` with the recipe's `[finetune]`
/// settings into `run_dir`; with `resume`, continues from its newest checkpoint.
pub fn finetune(
    catalog: &Catalog,
    recipe: &Recipe,
    paths: &ModelPaths,
    start: Start,
    run_dir: &Path,
    resume: bool,
) -> Result<FinetuneSummary, TrainError> {
    let settings = &recipe.finetune;
    let device = recipe.device();
    tch::manual_seed(recipe.seed as i64);
    std::fs::create_dir_all(run_dir).map_err(crate::error::file_err(run_dir))?;
    let sampler = TaskSampler::new(&settings.tasks).map_err(|reason| TrainError::File { path: run_dir.join("recipe"), reason })?;
    let labels = Labels::from_catalog(catalog, BadRowPolicy::Skip)?;
    if !labels.unseen.is_empty() {
        tracing::info!(items = labels.unseen.len(), "val/test items with a label unseen in train are left out of CR/SCR");
    }

    // A fine-tuned checkpoint whose heads know exactly this catalog's labels
    // keeps its heads (a warm start, e.g. the nightly retrain); otherwise
    // they start fresh.
    let mut keeps_heads = false;
    let (tokenizer_path, bert_config, mut model_config, pac) = match &start {
        Start::Pretrained(dir) => {
            let config = checkpoint::read_config(dir)?;
            let bert: BertConfig = config_part(dir, &config, None)?;
            let model: FashionVilConfig = config_part(dir, &config, Some("fashionvil"))?;
            let attributes: Vec<String> = config_part(dir, &config, Some("pac_vocabulary"))?;
            let labels_of = |key: &str| config.get(key).and_then(|v| serde_json::from_value::<Vec<String>>(v.clone()).ok());
            keeps_heads = labels_of("categories").as_ref() == Some(&labels.categories)
                && labels_of("subcategories").as_ref() == Some(&labels.subcategories);
            (dir.join("tokenizer.json"), bert, model, PacVocabulary { attributes })
        }
        Start::Towers => {
            let bert = BertConfig::from_file(&paths.bert.join("config.json"))?;
            let model = FashionVilConfig {
                share_text_fusion: recipe.share_text_fusion,
                backbone: recipe.image_backbone,
                image_channels: recipe.image_backbone.channels(),
                image_tail_layers: recipe.image_tail_layers,
                pac_attributes: 1,
                mpfc_codes: 1,
                ..Default::default()
            };
            (paths.bert.join("tokenizer.json"), bert, model, PacVocabulary { attributes: Vec::new() })
        }
    };
    model_config.categories = labels.categories.len() as i64;
    model_config.subcategories = labels.subcategories.len() as i64;
    let tokenizer = Tokenizer::from_file(&tokenizer_path, recipe.max_text_tokens)?;
    let inputs = CatalogInputs::new(
        catalog,
        ItemTexts::PlainAndCaptions,
        &tokenizer,
        recipe,
        &paths.image_encoder,
        &paths.cache_for(run_dir),
        device,
    )?;
    let examples = SplitExamples::new(catalog, &labels, &inputs, &tokenizer, Split::Train)?;
    let counts: BTreeMap<Downstream, usize> = sampler.tasks().map(|t| (t, examples.count(t))).collect();
    // A task the catalog cannot teach (no variants nor attributes: no TGIR triplets; no
    // baskets: no OCIR questions) is skipped and said; the others keep their weights.
    let skipped: BTreeMap<Downstream, String> =
        counts.iter().filter(|(_, &n)| n < 2).map(|(&task, &n)| (task, skip_reason(task, n))).collect();
    for (task, reason) in &skipped {
        tracing::warn!(task = task.name(), reason, "fine-tuning skips a task");
    }
    let trained: BTreeMap<Downstream, f64> =
        settings.tasks.iter().filter(|(task, _)| !skipped.contains_key(task)).map(|(&t, &w)| (t, w)).collect();
    let sampler =
        TaskSampler::new(&trained).map_err(|_| TrainError::NoExamples(skipped.keys().map(|t| t.name()).collect::<Vec<_>>().join(", ")))?;
    let counts: BTreeMap<Downstream, usize> = counts.into_iter().filter(|(task, _)| !skipped.contains_key(task)).collect();
    tracing::info!(?counts, "fine-tuning examples ready");

    let vs = nn::VarStore::new(device);
    let trained_encoder = recipe.image_encoder == ImageEncoderMode::Trained;
    let model = match &start {
        Start::Pretrained(dir) => {
            let model = FashionVil::new(&vs.root(), &bert_config, model_config.clone(), trained_encoder);
            let fresh_heads: &[&str] = if keeps_heads { &[] } else { &DownstreamHeads::PREFIXES };
            let fresh = checkpoint::load_model_except(dir, &vs, fresh_heads)?;
            tracing::info!(checkpoint = %dir.display(), new_variables = fresh.len(), keeps_heads, "starting from a checkpoint");
            model
        }
        Start::Towers => model_from_pretrained_towers(&vs, &bert_config, model_config.clone(), recipe, paths)?,
    };
    let mut optimizer_recipe = recipe.clone();
    optimizer_recipe.lr = settings.lr;
    optimizer_recipe.warmup_steps = settings.warmup_steps;
    optimizer_recipe.decay_steps = settings.decay_steps.clone();
    let mut optimizer = AdamW::new(optimizer_config(&optimizer_recipe))?;
    let checkpointer = Checkpointer::new(run_dir, recipe.keep_checkpoints);
    let config_json = finetuned_config(&bert_config, &model_config, &pac, &labels, trained.keys().copied());
    let spec = LoopSpec::new("fine-tuning", recipe, settings.steps, settings.batch_size, &config_json, &tokenizer_path);
    let bank_refresh = BankRefresh::new(recipe.finetune.bank_negatives, &model, recipe.checkpoint_every);
    let mut bank_features = None;
    let outcome = run_steps(&spec, &vs, &mut optimizer, &checkpointer, resume, |step, rng| {
        if bank_refresh.due(step, bank_features.is_none()) {
            bank_features = inputs.pooled_features(&model, &examples.rows, device);
        }
        let task = sampler.sample(rng);
        let available = examples.count(task);
        let picks = sample(rng, available, settings.batch_size.min(available)).into_vec();
        Ok((task, downstream_loss(&model, &inputs, &examples, task, &picks, bank_features.as_ref(), rng, device)?))
    })?;
    let summary = FinetuneSummary {
        recipe: recipe.name.clone(),
        seed: recipe.seed,
        steps: settings.steps,
        start: match start {
            Start::Pretrained(dir) => dir.display().to_string(),
            Start::Towers => "pretrained towers (no pretraining)".into(),
        },
        kept_heads: keeps_heads,
        examples: counts,
        skipped,
        samples_per_s: outcome.samples_per_s,
        tasks: outcome.tasks,
        checkpoint: outcome.checkpoint,
    };
    write_summary(run_dir, &summary)?;
    Ok(summary)
}
