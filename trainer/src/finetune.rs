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
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};
use vitrine_core::catalog::{BadRowPolicy, Catalog, Split};
use vitrine_core::tasks::{outfit_questions, tgir_triplets, Labels};
use vitrine_core::text::Tokenizer;

use crate::checkpoint::{self, Checkpointer};
use crate::data::pad_ids;
use crate::image::ImageTransform;
use crate::losses::info_nce;
use crate::model::bert::BertConfig;
use crate::model::downstream::DownstreamHeads;
use crate::model::fashionvil::{FashionVil, FashionVilConfig};
use crate::optim::AdamW;
use crate::pac::PacVocabulary;
use crate::pretext::TaskSampler;
use crate::pretrain::{checkpoint_config, model_from_pretrained_towers, optimizer_config, ModelPaths};
use crate::recipe::{ImageEncoderMode, Recipe};
use crate::train_loop::{run_steps, write_summary, LoopSpec, LoopTask, TaskTrend, TrainError};

/// A downstream task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Downstream {
    /// Cross-modal retrieval (image↔text), trained with ITC.
    Xmr,
    /// Text-guided image retrieval: reference image + modification text → target image.
    Tgir,
    /// Category and subcategory recognition (both heads, one step).
    Cr,
    /// Outfit complementary item retrieval.
    Ocir,
}

impl LoopTask for Downstream {
    fn name(self) -> &'static str {
        match self {
            Downstream::Xmr => "xmr",
            Downstream::Tgir => "tgir",
            Downstream::Cr => "cr",
            Downstream::Ocir => "ocir",
        }
    }
}

impl Downstream {
    pub const ALL: [Downstream; 4] = [Downstream::Xmr, Downstream::Tgir, Downstream::Cr, Downstream::Ocir];

    pub fn parse(name: &str) -> Option<Downstream> {
        Downstream::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// Outfit items fed to the OCIR head per question (the largest baskets are cut).
pub const MAX_OUTFIT_ITEMS: usize = 8;

/// Image inputs of every catalog item with a photo.
enum ItemImages {
    /// Feature maps of the frozen image encoder (the memory-mapped photo
    /// feature store) and the store row of each catalog row.
    Features { maps: Tensor, rows: Vec<i64> },
    /// First photo of each item, decoded per batch (the image encoder trains).
    Photos(Vec<PathBuf>),
}

/// Which text of an item the model reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemTexts {
    /// Title and description, as indexed and as the protocols query ([`vitrine_core::catalog::Item::text`]).
    Plain,
    /// Training captions with the structured attributes ([`vitrine_core::catalog::Item::caption`]).
    Captions,
}

impl ItemTexts {
    fn of(self, item: &vitrine_core::catalog::Item) -> String {
        match self {
            ItemTexts::Plain => item.text(),
            ItemTexts::Captions => item.caption(),
        }
    }
}

/// The catalog as model inputs: one row per item with a photo.
pub struct CatalogInputs {
    /// Catalog item index of each row.
    pub items: Vec<usize>,
    row_of: HashMap<usize, usize>,
    images: ItemImages,
    /// Tokenised title and description of each row.
    texts: Vec<Vec<i64>>,
    pad_id: i64,
    transform: ImageTransform,
}

impl CatalogInputs {
    /// Tokenises every item's text (as `texts` says) and, with a frozen image
    /// encoder, computes (or reads from `cache`) its feature maps.
    pub fn new(
        catalog: &Catalog,
        texts: ItemTexts,
        tokenizer: &Tokenizer,
        recipe: &Recipe,
        image_weights: &Path,
        cache: &Path,
        device: Device,
    ) -> Result<CatalogInputs, TrainError> {
        let items = crate::prepare::items_with_photos(catalog);
        CatalogInputs::for_items(catalog, items, texts, tokenizer, recipe, image_weights, cache, device)
    }

    /// The same for some of the catalog's items (each with a photo), e.g. one
    /// shard of a large catalog.
    #[allow(clippy::too_many_arguments)]
    pub fn for_items(
        catalog: &Catalog,
        items: Vec<usize>,
        texts: ItemTexts,
        tokenizer: &Tokenizer,
        recipe: &Recipe,
        image_weights: &Path,
        cache: &Path,
        device: Device,
    ) -> Result<CatalogInputs, TrainError> {
        let row_of = items.iter().enumerate().map(|(row, &item)| (item, row)).collect();
        let texts = items
            .iter()
            .map(|&i| tokenizer.encode(&texts.of(&catalog.items[i])).map(|e| e.ids.iter().map(|&t| i64::from(t)).collect()))
            .collect::<Result<Vec<_>, _>>()?;
        let photos = crate::prepare::first_photos(catalog, &items);
        let images = match recipe.image_encoder {
            ImageEncoderMode::Frozen => {
                let features = crate::prepare::frozen_features(&photos, recipe, image_weights, cache, device)?;
                ItemImages::Features { maps: features.maps, rows: features.rows }
            }
            ImageEncoderMode::Trained => ItemImages::Photos(photos),
        };
        let pad_id = tokenizer.token_to_id("[PAD]").map(i64::from).ok_or(crate::prepare::PrepareError::MissingToken("[PAD]"))?;
        Ok(CatalogInputs { items, row_of, images, texts, pad_id, transform: ImageTransform::default() })
    }

    pub fn row_of(&self, item: usize) -> Option<usize> {
        self.row_of.get(&item).copied()
    }

    /// Visual tokens `[B, 49, H]` of `rows`; `rng` (training) flips or crops them.
    pub fn visual_tokens(
        &self,
        model: &FashionVil,
        rows: &[usize],
        rng: Option<&mut ChaCha8Rng>,
        device: Device,
    ) -> Result<Tensor, TrainError> {
        let features = match &self.images {
            ItemImages::Features { maps, rows: store_rows } => {
                let index = Tensor::from_slice(&rows.iter().map(|&r| store_rows[r]).collect::<Vec<_>>());
                let picked = maps.index_select(0, &index).to_kind(Kind::Float);
                // Augmentation of a cached grid: a horizontal flip.
                let flip = rng.is_some_and(|rng| rng.gen_bool(0.5));
                let picked = if flip { picked.flip([3]) } else { picked };
                picked.to_device(device)
            }
            ItemImages::Photos(photos) => {
                let images = match rng {
                    Some(rng) => rows.iter().map(|&r| self.transform.train(&photos[r], rng)).collect::<Result<Vec<_>, _>>()?,
                    None => rows.iter().map(|&r| self.transform.eval(&photos[r])).collect::<Result<Vec<_>, _>>()?,
                };
                model.image_features(&Tensor::stack(&images, 0).to_device(device), true)
            }
        };
        Ok(model.visual_tokens(&features))
    }

    /// Padded ids and mask of `texts`.
    pub fn pad(&self, texts: impl Iterator<Item = Vec<i64>>, device: Device) -> (Tensor, Tensor) {
        let (ids, mask) = pad_ids(texts, self.pad_id);
        (ids.to_device(device), mask.to_device(device))
    }

    /// Padded item texts of `rows`.
    pub fn item_texts(&self, rows: &[usize], device: Device) -> (Tensor, Tensor) {
        self.pad(rows.iter().map(|&r| self.texts[r].clone()), device)
    }
}

/// A TGIR example as rows and a tokenised modification text.
#[derive(Debug, Clone)]
pub struct TgirExample {
    pub reference: usize,
    pub target: usize,
    pub modification: Vec<i64>,
}

/// An OCIR example as rows: outfit items, the answer and its category class.
#[derive(Debug, Clone)]
pub struct OcirExample {
    pub outfit: Vec<usize>,
    pub answer: usize,
    pub category: usize,
}

/// The examples of every downstream task in one split, as rows of [`CatalogInputs`].
pub struct SplitExamples {
    /// Rows of the split's items (XMR pairs: each item's photo and text).
    pub rows: Vec<usize>,
    /// (row, category class, subcategory class) of items whose labels the heads know.
    pub labelled: Vec<(usize, usize, usize)>,
    pub tgir: Vec<TgirExample>,
    pub ocir: Vec<OcirExample>,
}

impl SplitExamples {
    pub fn new(
        catalog: &Catalog,
        labels: &Labels,
        inputs: &CatalogInputs,
        tokenizer: &Tokenizer,
        split: Split,
    ) -> Result<SplitExamples, TrainError> {
        let rows: Vec<usize> = catalog.items_in(split).filter_map(|(i, _)| inputs.row_of(i)).collect();
        let subcategory_of: HashMap<usize, usize> = labels.subcategory.get(&split).into_iter().flatten().copied().collect();
        let labelled = labels
            .category
            .get(&split)
            .into_iter()
            .flatten()
            .filter_map(|&(item, category)| Some((inputs.row_of(item)?, category, *subcategory_of.get(&item)?)))
            .collect();
        let mut tgir = Vec::new();
        for triplet in tgir_triplets(catalog).into_iter().filter(|t| t.split == split) {
            let (Some(reference), Some(target)) = (inputs.row_of(triplet.reference), inputs.row_of(triplet.target)) else { continue };
            let modification = tokenizer.encode(&triplet.modification)?.ids.iter().map(|&t| i64::from(t)).collect();
            tgir.push(TgirExample { reference, target, modification });
        }
        let category_class: HashMap<&str, usize> = labels.categories.iter().enumerate().map(|(i, c)| (c.as_str(), i)).collect();
        let ocir = outfit_questions(catalog)
            .into_iter()
            .filter(|q| q.split == split)
            .filter_map(|q| {
                let outfit: Vec<usize> = q.context.iter().filter_map(|&i| inputs.row_of(i)).take(MAX_OUTFIT_ITEMS).collect();
                let category = *category_class.get(q.category.as_str())?;
                (!outfit.is_empty()).then_some(OcirExample { outfit, answer: inputs.row_of(q.answer)?, category })
            })
            .collect();
        Ok(SplitExamples { rows, labelled, tgir, ocir })
    }

    fn count(&self, task: Downstream) -> usize {
        match task {
            Downstream::Xmr => self.rows.len(),
            Downstream::Tgir => self.tgir.len(),
            Downstream::Cr => self.labelled.len(),
            Downstream::Ocir => self.ocir.len(),
        }
    }
}

/// The loss of `task` on the examples at `picks` of `examples`.
pub fn downstream_loss(
    model: &FashionVil,
    inputs: &CatalogInputs,
    examples: &SplitExamples,
    task: Downstream,
    picks: &[usize],
    rng: &mut ChaCha8Rng,
    device: Device,
) -> Result<Tensor, TrainError> {
    let heads = model.downstream.as_ref().expect("a fine-tuned model has downstream heads");
    let loss = match task {
        Downstream::Xmr => {
            let rows: Vec<usize> = picks.iter().map(|&p| examples.rows[p]).collect();
            let images = model.image_embedding(&inputs.visual_tokens(model, &rows, Some(rng), device)?);
            let (ids, mask) = inputs.item_texts(&rows, device);
            info_nce(&images, &model.text_embedding(&ids, &mask, true))
        }
        Downstream::Tgir => {
            let picked: Vec<&TgirExample> = picks.iter().map(|&p| &examples.tgir[p]).collect();
            let references: Vec<usize> = picked.iter().map(|e| e.reference).collect();
            let targets: Vec<usize> = picked.iter().map(|e| e.target).collect();
            let query = tgir_query(model, inputs, &references, picked.iter().map(|e| e.modification.clone()), Some(rng), true, device)?;
            let target = model.image_embedding(&inputs.visual_tokens(model, &targets, Some(rng), device)?);
            in_batch_softmax(&query, &target)
        }
        Downstream::Cr => {
            let rows: Vec<usize> = picks.iter().map(|&p| examples.labelled[p].0).collect();
            let pooled = fused_pooled(model, inputs, &rows, Some(rng), true, device)?;
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
            let query = ocir_query(model, inputs, &picked, Some(rng), device)?;
            let target = model.image_embedding(&inputs.visual_tokens(model, &answers, Some(rng), device)?);
            in_batch_softmax(&query, &target)
        }
    };
    Ok(loss)
}

/// Cross-entropy of each query against all targets of the batch (row i's target is i).
fn in_batch_softmax(query: &Tensor, target: &Tensor) -> Tensor {
    let logits = query.matmul(&target.tr());
    logits.cross_entropy_for_logits(&Tensor::arange(logits.size()[0], (Kind::Int64, logits.device())))
}

/// Fusion of `texts` with the images of `rows`: (`text_out`, `visual_out`, visual mask).
fn fuse_with_images(
    model: &FashionVil,
    inputs: &CatalogInputs,
    rows: &[usize],
    texts: impl Iterator<Item = Vec<i64>>,
    rng: Option<&mut ChaCha8Rng>,
    train: bool,
    device: Device,
) -> Result<(Tensor, Tensor, Tensor), TrainError> {
    let tokens = inputs.visual_tokens(model, rows, rng, device)?;
    let (ids, mask) = inputs.pad(texts, device);
    let visual_mask = Tensor::ones([tokens.size()[0], tokens.size()[1]], (Kind::Int64, device));
    let (text_out, visual_out) = model.fuse(&ids, &mask, &tokens, &visual_mask, train);
    Ok((text_out, visual_out, visual_mask))
}

/// TGIR queries: mean of the fused visual outputs of (modification text, reference image).
pub fn tgir_query(
    model: &FashionVil,
    inputs: &CatalogInputs,
    references: &[usize],
    modifications: impl Iterator<Item = Vec<i64>>,
    rng: Option<&mut ChaCha8Rng>,
    train: bool,
    device: Device,
) -> Result<Tensor, TrainError> {
    let (_, visual_out, visual_mask) = fuse_with_images(model, inputs, references, modifications, rng, train, device)?;
    Ok(model.fused_visual_embedding(&visual_out, &visual_mask))
}

/// Pooled fused output of each row's text and image (the CR/SCR heads' input).
pub fn fused_pooled(
    model: &FashionVil,
    inputs: &CatalogInputs,
    rows: &[usize],
    rng: Option<&mut ChaCha8Rng>,
    train: bool,
    device: Device,
) -> Result<Tensor, TrainError> {
    let texts = rows.iter().map(|&r| inputs.texts[r].clone());
    let (text_out, ..) = fuse_with_images(model, inputs, rows, texts, rng, train, device)?;
    Ok(model.pooled(&text_out))
}

/// OCIR queries of outfits: the outfit head over the items' image embeddings.
pub fn ocir_query(
    model: &FashionVil,
    inputs: &CatalogInputs,
    outfits: &[&OcirExample],
    rng: Option<&mut ChaCha8Rng>,
    device: Device,
) -> Result<Tensor, TrainError> {
    let heads = model.downstream.as_ref().expect("a fine-tuned model has downstream heads");
    let rows: Vec<usize> = outfits.iter().flat_map(|e| e.outfit.iter().copied()).collect();
    let outfit_of: Vec<i64> = outfits.iter().enumerate().flat_map(|(i, e)| std::iter::repeat_n(i as i64, e.outfit.len())).collect();
    let items = model.image_embedding(&inputs.visual_tokens(model, &rows, rng, device)?);
    let categories = Tensor::from_slice(&outfits.iter().map(|e| e.category as i64).collect::<Vec<_>>()).to_device(device);
    Ok(model.scaled(&heads.outfit.forward(&items, &Tensor::from_slice(&outfit_of).to_device(device), &categories)))
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
    pub samples_per_s: f64,
    pub tasks: BTreeMap<Downstream, TaskTrend>,
    pub checkpoint: PathBuf,
}

/// The checkpoint's config.json for a fine-tuned model: the pretraining
/// config plus the label names of the heads.
fn finetuned_config(bert: &BertConfig, model: &FashionVilConfig, pac: &PacVocabulary, labels: &Labels) -> serde_json::Value {
    let mut config = checkpoint_config(bert, model, pac);
    config["categories"] = serde_json::to_value(&labels.categories).expect("strings serialise");
    config["subcategories"] = serde_json::to_value(&labels.subcategories).expect("strings serialise");
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
    std::fs::create_dir_all(run_dir).map_err(crate::train_loop::file_err(run_dir))?;
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
    let inputs = CatalogInputs::new(catalog, ItemTexts::Captions, &tokenizer, recipe, &paths.image_encoder, &paths.cache_for(run_dir), device)?;
    let examples = SplitExamples::new(catalog, &labels, &inputs, &tokenizer, Split::Train)?;
    let counts: BTreeMap<Downstream, usize> = sampler.tasks().map(|t| (t, examples.count(t))).collect();
    if let Some((task, _)) = counts.iter().find(|(_, &n)| n < 2) {
        return Err(TrainError::NoExamples(task.name()));
    }
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
    let config_json = finetuned_config(&bert_config, &model_config, &pac, &labels);
    let spec = LoopSpec::new("fine-tuning", recipe, settings.steps, settings.batch_size, &config_json, &tokenizer_path);
    let outcome = run_steps(&spec, &vs, &mut optimizer, &checkpointer, resume, |_, rng| {
        let task = sampler.sample(rng);
        let available = examples.count(task);
        let picks = sample(rng, available, settings.batch_size.min(available)).into_vec();
        Ok((task, downstream_loss(&model, &inputs, &examples, task, &picks, rng, device)?))
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
        samples_per_s: outcome.samples_per_s,
        tasks: outcome.tasks,
        checkpoint: outcome.checkpoint,
    };
    write_summary(run_dir, &summary)?;
    Ok(summary)
}

/// A fine-tuned model read from its checkpoint, with its label names.
pub struct Finetuned {
    pub vs: nn::VarStore,
    pub model: FashionVil,
    pub tokenizer: Tokenizer,
    pub categories: Vec<String>,
    pub subcategories: Vec<String>,
}

/// Loads a fine-tuned checkpoint (weights verified) for evaluation or export.
pub fn load_finetuned(dir: &Path, max_text_tokens: usize, device: Device) -> Result<Finetuned, TrainError> {
    let config = checkpoint::read_config(dir)?;
    if config.get("categories").is_none() {
        return Err(TrainError::File {
            path: dir.join("config.json"),
            reason: "no `categories`: this is not a fine-tuned checkpoint (run `vitrine-train finetune` on it first)".into(),
        });
    }
    let bert: BertConfig = config_part(dir, &config, None)?;
    let model_config: FashionVilConfig = config_part(dir, &config, Some("fashionvil"))?;
    let categories: Vec<String> = config_part(dir, &config, Some("categories"))?;
    let subcategories: Vec<String> = config_part(dir, &config, Some("subcategories"))?;
    let vs = nn::VarStore::new(device);
    let has_encoder = vs_has_image_encoder(dir)?;
    let model = FashionVil::new(&vs.root(), &bert, model_config, has_encoder);
    checkpoint::load_model(dir, &vs)?;
    let tokenizer = Tokenizer::from_file(&dir.join("tokenizer.json"), max_text_tokens)?;
    Ok(Finetuned { vs, model, tokenizer, categories, subcategories })
}

/// A field of a checkpoint's config.json (`None`: the BERT fields at its top level).
fn config_part<T: serde::de::DeserializeOwned>(dir: &Path, config: &serde_json::Value, key: Option<&str>) -> Result<T, TrainError> {
    let value = key.map_or_else(|| config.clone(), |k| config[k].clone());
    serde_json::from_value(value)
        .map_err(|e| TrainError::File { path: dir.join("config.json"), reason: format!("{}: {e}", key.unwrap_or("BERT fields")) })
}

/// Whether the checkpoint holds image encoder weights (a recipe that trained it).
fn vs_has_image_encoder(dir: &Path) -> Result<bool, TrainError> {
    let names = checkpoint::tensor_names(dir)?;
    Ok(names.iter().any(|n| n.starts_with("image_encoder.")))
}
