//! Distillation of the teacher into the compact space the browser searches.
//!
//! 1. Product vectors: `normalise(w · image + (1 − w) · text)` of the
//!    teacher's embeddings, with `w` chosen on the val split (below).
//! 2. Projection to the compact space: started at the top principal
//!    directions of the train split's product and text vectors, then trained
//!    so that in-batch similarity distributions (text → product, product →
//!    product) match the teacher's (KL at temperature [`DistillOptions::temperature`]).
//! 3. Heads (projection frozen), each trained on the train split against the
//!    teacher's own answers, KL to the teacher's in-batch scores plus
//!    cross-entropy to the true item: TGIR combiner (teacher: fusion of the
//!    reference photo and the modification), OCIR head (teacher: outfit head),
//!    category head on the item's text and on short queries made from it
//!    (its title, its product type, "<colour> <product type>"), since shoppers
//!    type a few words, not a description (teacher: CR head on photo and text).
//!
//! Choosing `w` on val: the shopper's text queries are short, so the item's
//! own title (not its whole description, which a product vector with text
//! in it would match trivially) stands for a query; the score is the mean of
//! R@10 of title → product (all val items), TGIR query → target (val items of
//! the target's category), OCIR query → answer (val items of its category),
//! and precision@10 of "<colour> <product type>" queries made from the val
//! split's attributes (val items), the colour being what the photo carries.

use std::collections::{HashMap, HashSet};

use rand::seq::index::sample;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};
use vitrine_core::catalog::{attr, Catalog, Item, Split};
use vitrine_core::metrics::{rank_of, recall_at};
use vitrine_core::model::compact::{CompactConfig, OptionalHead};
use vitrine_core::tasks::Labels;
use vitrine_trainer::catalog_inputs::{CatalogInputs, OcirExample, SplitExamples};
use vitrine_trainer::error::TrainError;
use vitrine_trainer::model::bert::l2_normalize;
use vitrine_trainer::schedule::Downstream;
use vitrine_trainer::teacher::Finetuned;

use crate::embed::Embeddings;
use crate::heads::CompactHeads;
use crate::shopper::shopper_queries;

/// Rows per teacher forward pass.
const TEACHER_BATCH: usize = 64;
/// Val examples per task when choosing the image weight.
const TUNING_EXAMPLES: usize = 1000;
/// Val titles the probe asks: all of them up to this many, else a seeded
/// sample (the gallery is every val item either way).
const TITLE_QUERIES: usize = 2000;
/// "<colour> <product type>" queries the probe asks of the val split.
const ATTRIBUTE_QUERIES: usize = 150;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DistillOptions {
    /// Width of the compact space.
    pub dim: usize,
    /// Optimiser steps of the projection, and of the TGIR and OCIR heads.
    pub steps: usize,
    /// Optimiser steps of the category head: a linear map of fixed unit
    /// vectors, cheap per step and slow to reach confident logits.
    pub category_steps: usize,
    pub batch: usize,
    pub lr: f64,
    pub temperature: f64,
    /// Train examples per head taken from the teacher (a seeded sample).
    pub max_examples: usize,
    pub seed: u64,
    /// Fixes the image weight of product vectors instead of choosing it on val.
    pub image_weight: Option<f32>,
}

impl Default for DistillOptions {
    fn default() -> Self {
        DistillOptions {
            dim: 256,
            steps: 300,
            category_steps: 3000,
            batch: 256,
            lr: 1e-3,
            temperature: 0.05,
            max_examples: 20_000,
            seed: 7,
            image_weight: None,
        }
    }
}

/// What distillation measured on the way.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DistillReport {
    /// (image weight, val score) of every weight tried.
    pub image_weight_scores: Vec<(f32, f64)>,
    pub image_weight: f32,
    /// Val R@10 of title → product in the teacher space and in the compact space.
    pub val_title_r10_teacher: f64,
    pub val_title_r10_compact: f64,
    /// Final loss of the projection and of each head (mean of the last 10% of steps).
    pub final_losses: HashMap<String, f64>,
    /// (category head steps, share of the val split's "<colour> <product
    /// type>" queries whose top category is their product type's, percent),
    /// along the category head's training.
    #[serde(default)]
    pub val_query_category_accuracy: Vec<(usize, f64)>,
    pub examples: HashMap<String, usize>,
}

/// The teacher's embeddings as unit vectors, by catalog item.
pub struct TeacherSpace<'a> {
    embeddings: &'a Embeddings,
    row_of_item: HashMap<usize, usize>,
    image: Tensor,
    text: Tensor,
}

impl<'a> TeacherSpace<'a> {
    pub fn new(embeddings: &'a Embeddings) -> Self {
        let row_of_item = embeddings.items.iter().enumerate().map(|(r, &i)| (i, r)).collect();
        TeacherSpace { embeddings, row_of_item, image: l2_normalize(&embeddings.image), text: l2_normalize(&embeddings.text) }
    }

    /// Product vectors of every embedded item, `[N, E]`.
    pub fn products(&self, image_weight: f32) -> Tensor {
        let w = f64::from(image_weight);
        l2_normalize(&(&self.image * w + &self.text * (1.0 - w)))
    }

    /// Embedding rows of catalog items (`None` for an item without embeddings).
    fn rows(&self, items: impl Iterator<Item = usize>) -> Option<Vec<i64>> {
        items.map(|i| self.row_of_item.get(&i).map(|&r| r as i64)).collect()
    }

    /// The embedding row of a catalog item (`None` for an item without embeddings).
    pub fn row_of(&self, item: usize) -> Option<i64> {
        self.row_of_item.get(&item).map(|&r| r as i64)
    }

    pub fn items(&self) -> &[usize] {
        &self.embeddings.items
    }

    /// Width of the teacher's embeddings.
    pub fn dim(&self) -> usize {
        self.image.size()[1] as usize
    }
}

/// One head's train (or val) examples with the teacher's answers.
struct TeacherAnswers {
    /// Embedding rows of the inputs: the reference (TGIR), the outfit items (OCIR, ragged), the item (CR).
    inputs: Vec<Vec<i64>>,
    /// Teacher text embeddings of the modification texts (TGIR) `[B, E]`.
    texts: Option<Tensor>,
    /// Embedding row of the true answer (TGIR target, OCIR answer); the category class for CR.
    answers: Vec<i64>,
    /// OCIR: the wanted category (bundle id).
    categories: Vec<i64>,
    /// Teacher queries `[B, E]` (TGIR, OCIR) or category probabilities in bundle ids `[B, C]` (CR).
    teacher: Tensor,
}

fn subsample<T: Clone>(all: &[T], max: usize, rng: &mut ChaCha8Rng) -> Vec<T> {
    if all.len() <= max {
        return all.to_vec();
    }
    let mut picks = sample(rng, all.len(), max).into_vec();
    picks.sort_unstable();
    picks.into_iter().map(|p| all[p].clone()).collect()
}

/// Runs `f` over `n` rows in teacher batches and concatenates the results
/// (`[0, width]` for no rows: a catalog without examples of a task).
pub(crate) fn batched(
    n: usize,
    width: usize,
    mut f: impl FnMut(std::ops::Range<usize>) -> Result<Tensor, TrainError>,
) -> Result<Tensor, TrainError> {
    if n == 0 {
        return Ok(Tensor::zeros([0, width as i64], (Kind::Float, Device::Cpu)));
    }
    let mut parts = Vec::new();
    for start in (0..n).step_by(TEACHER_BATCH) {
        let part = tch::no_grad(|| f(start..(start + TEACHER_BATCH).min(n)))?;
        parts.push(part.to_kind(Kind::Float).to_device(Device::Cpu));
    }
    Ok(Tensor::cat(&parts, 0))
}

/// Everything the teacher answers for one split.
struct SplitTeacher {
    tgir: TeacherAnswers,
    ocir: TeacherAnswers,
    cr: Option<TeacherAnswers>,
}

/// Context shared by the teacher passes.
pub struct TeacherRun<'a> {
    pub finetuned: &'a Finetuned,
    pub catalog: &'a Catalog,
    pub labels: &'a Labels,
    pub inputs: &'a CatalogInputs,
    pub space: &'a TeacherSpace<'a>,
    /// The bundle's category names (sorted), which the compact heads' classes follow.
    pub categories: &'a [String],
    pub device: Device,
}

impl TeacherRun<'_> {
    fn emb_row(&self, input_row: usize) -> Option<i64> {
        self.space.row_of_item.get(&self.inputs.items[input_row]).map(|&r| r as i64)
    }

    fn bundle_category(&self, name: &str) -> Option<i64> {
        self.categories.binary_search_by(|c| c.as_str().cmp(name)).ok().map(|i| i as i64)
    }

    /// Teacher text embeddings of `texts`, unit length `[N, E]`.
    fn embed_texts(&self, texts: &[String]) -> Result<Tensor, TrainError> {
        let ids: Vec<Vec<i64>> = texts
            .iter()
            .map(|t| Ok(self.finetuned.tokenizer.encode(t)?.ids.iter().map(|&t| i64::from(t)).collect()))
            .collect::<Result<_, TrainError>>()?;
        batched(ids.len(), self.space.dim(), |r| {
            let (ids, mask) = self.inputs.pad(ids[r].iter().cloned(), self.device);
            Ok(l2_normalize(&self.finetuned.model.text_embedding(&ids, &mask, false)))
        })
    }

    /// The teacher's answers on (a sample of) `split`'s examples.
    fn answers(&self, split: Split, max: usize, with_cr: bool, rng: &mut ChaCha8Rng) -> Result<SplitTeacher, TrainError> {
        let model = &self.finetuned.model;
        let examples = SplitExamples::new(self.catalog, self.labels, self.inputs, &self.finetuned.tokenizer, split)?;

        // A head the teacher was not trained on has nothing to teach: no examples, no compact head.
        let trained = |task: Downstream| self.finetuned.trained_tasks.contains(&task);
        let tgir = if trained(Downstream::Tgir) { subsample(&examples.tgir, max, rng) } else { Vec::new() };
        let tgir: Vec<_> = tgir.into_iter().filter(|e| self.emb_row(e.reference).is_some() && self.emb_row(e.target).is_some()).collect();
        let tgir_teacher = batched(tgir.len(), self.space.dim(), |r| {
            let refs: Vec<usize> = tgir[r.clone()].iter().map(|e| e.reference).collect();
            let q = self.inputs.tgir_query(model, &refs, tgir[r].iter().map(|e| e.modification.clone()), None, false, self.device)?;
            Ok(l2_normalize(&q))
        })?;
        let tgir_texts = batched(tgir.len(), self.space.dim(), |r| {
            let (ids, mask) = self.inputs.pad(tgir[r].iter().map(|e| e.modification.clone()), self.device);
            Ok(l2_normalize(&model.text_embedding(&ids, &mask, false)))
        })?;
        let tgir = TeacherAnswers {
            inputs: tgir.iter().map(|e| vec![self.emb_row(e.reference).expect("filtered")]).collect(),
            texts: Some(tgir_texts),
            answers: tgir.iter().map(|e| self.emb_row(e.target).expect("filtered")).collect(),
            categories: Vec::new(),
            teacher: tgir_teacher,
        };

        let class_names = &self.finetuned.categories;
        let ocir: Vec<OcirExample> = (if trained(Downstream::Ocir) { subsample(&examples.ocir, max, rng) } else { Vec::new() })
            .into_iter()
            .filter(|e| self.emb_row(e.answer).is_some() && e.outfit.iter().all(|&o| self.emb_row(o).is_some()))
            .filter(|e| class_names.get(e.category).and_then(|c| self.bundle_category(c)).is_some())
            .collect();
        let ocir_teacher = batched(ocir.len(), self.space.dim(), |r| {
            let outfits: Vec<&OcirExample> = ocir[r].iter().collect();
            Ok(l2_normalize(&self.inputs.ocir_query(model, &outfits, None, self.device)?))
        })?;
        let ocir = TeacherAnswers {
            inputs: ocir.iter().map(|e| e.outfit.iter().map(|&o| self.emb_row(o).expect("filtered")).collect()).collect(),
            texts: None,
            answers: ocir.iter().map(|e| self.emb_row(e.answer).expect("filtered")).collect(),
            categories: ocir.iter().map(|e| self.bundle_category(&class_names[e.category]).expect("filtered")).collect(),
            teacher: ocir_teacher,
        };

        let cr = if with_cr {
            // Teacher classes → bundle category ids (-1: a class no product has).
            let mapping: Vec<i64> = class_names.iter().map(|c| self.bundle_category(c).unwrap_or(-1)).collect();
            let labelled: Vec<(usize, usize, usize)> =
                subsample(&examples.labelled, max, rng).into_iter().filter(|l| self.emb_row(l.0).is_some() && mapping[l.1] >= 0).collect();
            let heads = model.downstream.as_ref().expect("a fine-tuned model has downstream heads");
            let teacher_probs = batched(labelled.len(), class_names.len(), |r| {
                let rows: Vec<usize> = labelled[r].iter().map(|l| l.0).collect();
                Ok(heads.category.forward(&self.inputs.fused_pooled(model, &rows, None, false, self.device)?).softmax(-1, Kind::Float))
            })?;
            let probs = Tensor::zeros([labelled.len() as i64, self.categories.len() as i64], (Kind::Float, Device::Cpu));
            for (class, &id) in mapping.iter().enumerate() {
                if id >= 0 {
                    let column = teacher_probs.select(1, class as i64);
                    probs.select(1, id).copy_(&column);
                }
            }
            Some(TeacherAnswers {
                inputs: labelled.iter().map(|l| vec![self.emb_row(l.0).expect("filtered")]).collect(),
                texts: None,
                answers: labelled.iter().map(|l| mapping[l.1]).collect(),
                categories: Vec::new(),
                teacher: probs,
            })
        } else {
            None
        };
        Ok(SplitTeacher { tgir, ocir, cr })
    }
}

/// R@10 of each query (rows of `queries`) finding `answers[i]` among `candidates[i]` (rows of `gallery`).
pub(crate) fn recall10(queries: &Tensor, gallery: &Tensor, answers: &[i64], candidates: &[&[i64]]) -> f64 {
    // Queries share candidate lists (every val item, or a category's): each
    // list's rows are gathered once and scored against all its queries in one
    // product, which keeps the probe linear in the catalog, not quadratic.
    let mut groups: HashMap<(*const i64, usize), Vec<usize>> = HashMap::new();
    for (i, list) in candidates.iter().enumerate() {
        groups.entry((list.as_ptr(), list.len())).or_default().push(i);
    }
    let mut ranks = vec![0; answers.len()];
    for members in groups.values() {
        let list = candidates[members[0]];
        let rows = gallery.index_select(0, &Tensor::from_slice(list));
        let picked = queries.index_select(0, &Tensor::from_slice(&members.iter().map(|&i| i as i64).collect::<Vec<_>>()));
        let scores = picked.mm(&rows.tr());
        for (row, &i) in members.iter().enumerate() {
            let scores = Vec::<f32>::try_from(scores.get(row as i64)).expect("f32 scores");
            ranks[i] = rank_of(&scores, list.iter().position(|&c| c == answers[i]).expect("the answer is a candidate"));
        }
    }
    recall_at(&ranks, 10)
}

/// Short queries per item that the category head learns from.
const QUERY_PHRASES: usize = 3;

/// What a shopper might type for `item`: its title, its product type, and
/// "<colour> <product type>" (the type alone again when it has no colour).
fn query_phrases(item: &Item) -> [String; QUERY_PHRASES] {
    let product_type = item.subcategory.to_lowercase();
    let coloured = match item.attribute(attr::COLOUR) {
        Some(colour) => format!("{} {product_type}", colour.to_lowercase()),
        None => product_type.clone(),
    };
    [item.title.clone(), product_type, coloured]
}

/// Val items by bundle category, as embedding rows.
fn rows_by_category(run: &TeacherRun, rows: &[i64]) -> HashMap<String, Vec<i64>> {
    let mut by: HashMap<String, Vec<i64>> = HashMap::new();
    for &r in rows {
        by.entry(run.catalog.items[run.space.items()[r as usize]].category.clone()).or_default().push(r);
    }
    by
}

/// Title → product, TGIR and OCIR R@10 and attribute-query precision@10 on
/// val, in the given space (`project` maps teacher vectors).
struct ValProbe {
    /// Teacher text embeddings of the probed titles, and their products' rows.
    titles: Tensor,
    title_answers: Vec<i64>,
    /// Every val item's row: the gallery of the title probe.
    val_rows: Vec<i64>,
    tgir: TeacherAnswers,
    ocir: TeacherAnswers,
    candidates_of: HashMap<String, Vec<i64>>,
    /// Teacher text embeddings of the val split's "<colour> <product type>" queries,
    /// and each query's relevant rows (val items of that colour and type).
    attribute_queries: Tensor,
    attribute_relevant: Vec<HashSet<i64>>,
    /// Bundle category id of each attribute query's product type (-1: none).
    attribute_categories: Vec<i64>,
}

impl ValProbe {
    fn new(run: &TeacherRun, rng: &mut ChaCha8Rng) -> Result<ValProbe, TrainError> {
        let val_items: Vec<usize> =
            run.catalog.items_in(Split::Val).map(|(i, _)| i).filter(|i| run.space.row_of_item.contains_key(i)).collect();
        let val_rows = run.space.rows(val_items.iter().copied()).expect("filtered");
        let probed: Vec<usize> = if val_items.len() > TITLE_QUERIES {
            let mut picked = sample(rng, val_items.len(), TITLE_QUERIES).into_vec();
            picked.sort_unstable();
            picked
        } else {
            (0..val_items.len()).collect()
        };
        let title_answers = probed.iter().map(|&p| val_rows[p]).collect();
        let titles: Vec<String> = probed.iter().map(|&p| run.catalog.items[val_items[p]].title.clone()).collect();
        let titles = run.embed_texts(&titles)?;
        let answers = run.answers(Split::Val, TUNING_EXAMPLES, false, rng)?;
        let candidates_of = rows_by_category(run, &val_rows);
        let attribute_queries = shopper_queries(run.catalog, Split::Val, ATTRIBUTE_QUERIES, rng.gen());
        let attribute_relevant = attribute_queries
            .iter()
            .map(|q| {
                val_items
                    .iter()
                    .zip(&val_rows)
                    .filter(|(&i, _)| {
                        let item = &run.catalog.items[i];
                        item.subcategory == q.product_type && item.attribute(attr::COLOUR) == Some(q.colour.as_str())
                    })
                    .map(|(_, &row)| row)
                    .collect()
            })
            .collect();
        let attribute_categories = attribute_queries.iter().map(|q| run.bundle_category(&q.category).unwrap_or(-1)).collect();
        let attribute_queries = run.embed_texts(&attribute_queries.into_iter().map(|q| q.text).collect::<Vec<_>>())?;
        Ok(ValProbe {
            titles,
            title_answers,
            val_rows,
            tgir: answers.tgir,
            ocir: answers.ocir,
            candidates_of,
            attribute_queries,
            attribute_relevant,
            attribute_categories,
        })
    }

    /// Percent of the attribute queries whose top category under `heads` is
    /// their product type's (`None` without attribute queries).
    fn category_accuracy(&self, heads: &CompactHeads) -> Option<f64> {
        if self.attribute_categories.is_empty() {
            return None;
        }
        let top = tch::no_grad(|| heads.category.forward(&heads.project(&self.attribute_queries)).argmax(-1, false));
        let top: Vec<i64> = Vec::try_from(top).expect("an i64 vector");
        let hits = top.iter().zip(&self.attribute_categories).filter(|(t, c)| t == c).count();
        Some(100.0 * hits as f64 / top.len() as f64)
    }

    /// (title R@10, mean of the title, TGIR and OCIR R@10 and the attribute queries' P@10, of those with examples) with products `[N, E or D]` and a map of teacher queries into their space.
    fn score(&self, run: &TeacherRun, products: &Tensor, project: &dyn Fn(&Tensor) -> Tensor) -> (f64, f64) {
        let all: Vec<&[i64]> = vec![&self.val_rows; self.title_answers.len()];
        let title = recall10(&project(&self.titles), products, &self.title_answers, &all);
        let category_of = |row: i64| run.catalog.items[run.space.items()[row as usize]].category.clone();
        // A figure with no examples (a catalog without variants, baskets or
        // colours) is left out of the mean.
        let mut figures = vec![title];
        for answers in [&self.tgir, &self.ocir].into_iter().filter(|a| !a.answers.is_empty()) {
            let candidates: Vec<&[i64]> = answers.answers.iter().map(|&a| self.candidates_of[&category_of(a)].as_slice()).collect();
            figures.push(recall10(&project(&answers.teacher), products, &answers.answers, &candidates));
        }
        if !self.attribute_relevant.is_empty() {
            figures.push(precision10(&project(&self.attribute_queries), products, &self.val_rows, &self.attribute_relevant));
        }
        (title, figures.iter().sum::<f64>() / figures.len() as f64)
    }
}

/// The distilled heads and the product vectors they index.
pub struct Distilled {
    pub vs: nn::VarStore,
    pub heads: CompactHeads,
    pub config: CompactConfig,
    /// Compact product vectors of every embedded item `[N, D]`, unit length.
    pub products: Tensor,
    pub report: DistillReport,
}

/// Mean of the last tenth of a loss curve.
pub(crate) fn tail_mean(losses: &[f64]) -> f64 {
    let tail = &losses[losses.len() - (losses.len() / 10).max(1)..];
    tail.iter().sum::<f64>() / tail.len() as f64
}

/// Soft-target cross-entropy (KL up to a constant) of `student` logits against `teacher` probabilities.
pub(crate) fn soft_ce(student: &Tensor, teacher_probs: &Tensor) -> Tensor {
    -(teacher_probs * student.log_softmax(-1, Kind::Float)).sum_dim_intlist([-1i64].as_slice(), false, Kind::Float).mean(Kind::Float)
}

/// Distils the teacher into the compact space (see the module documentation).
pub fn distill(run: &TeacherRun, options: &DistillOptions, bar: &indicatif::ProgressBar) -> Result<Distilled, TrainError> {
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let tau = options.temperature;

    crate::build::stage(bar, "teacher on val");
    let probe = ValProbe::new(run, &mut rng)?;
    let identity = |t: &Tensor| t.shallow_clone();
    let (image_weight, image_weight_scores) = match options.image_weight {
        Some(w) => (w, Vec::new()),
        None => {
            let scores: Vec<(f32, f64)> =
                (0..=10).map(|i| i as f32 / 10.0).map(|w| (w, probe.score(run, &run.space.products(w), &identity).1)).collect();
            let best = scores.iter().copied().fold((1.0, f64::MIN), |best, s| if s.1 > best.1 { s } else { best });
            (best.0, scores)
        }
    };
    let teacher_products = run.space.products(image_weight);
    let val_title_r10_teacher = probe.score(run, &teacher_products, &identity).0;

    crate::build::stage(bar, "teacher on train");
    let train = run.answers(Split::Train, options.max_examples, true, &mut rng)?;
    let train_rows: Vec<i64> = run
        .space
        .rows(run.catalog.items_in(Split::Train).map(|(i, _)| i).filter(|i| run.space.row_of_item.contains_key(i)))
        .expect("filtered");

    let config = CompactConfig {
        teacher_dim: teacher_products.size()[1] as usize,
        dim: options.dim,
        categories: run.categories.len(),
        image_weight,
        // A head is distilled, and shipped, when the teacher has examples to answer.
        heads: [(OptionalHead::Tgir, &train.tgir), (OptionalHead::Ocir, &train.ocir)]
            .into_iter()
            .filter(|(_, answers)| !answers.answers.is_empty())
            .map(|(head, _)| head)
            .collect(),
    };
    let vs = nn::VarStore::new(Device::Cpu);
    tch::manual_seed(options.seed as i64);
    let mut heads = CompactHeads::new(&vs.root(), &config);
    let mut final_losses = HashMap::new();
    let train_index = Tensor::from_slice(&train_rows);
    let train_products = teacher_products.index_select(0, &train_index);
    let train_texts = run.space.text.index_select(0, &train_index);

    // Projection: principal directions, then in-batch similarity distillation.
    crate::build::stage(bar, "projection");
    let stacked = Tensor::cat(&[&train_products, &train_texts], 0);
    // Eigenvectors of the E×E second-moment matrix (ascending eigenvalues), so
    // a catalog with fewer vectors than `dim` still gives `dim` directions.
    let (_, eigenvectors) = stacked.tr().matmul(&stacked).linalg_eigh("L");
    heads.set_projection(&eigenvectors.flip([1]).narrow(1, 0, options.dim as i64).tr());
    let mut losses = Vec::with_capacity(options.steps);
    {
        let mut opt = nn::Adam::default().build(&vs, options.lr)?;
        for _ in 0..options.steps {
            let picks = Tensor::from_slice(
                &sample(&mut rng, train_rows.len(), options.batch.min(train_rows.len()))
                    .into_vec()
                    .iter()
                    .map(|&p| p as i64)
                    .collect::<Vec<_>>(),
            );
            let (p, t) = (train_products.index_select(0, &picks), train_texts.index_select(0, &picks));
            let (cp, ct) = (heads.project(&p), heads.project(&t));
            let text_to_product = soft_ce(&(ct.matmul(&cp.tr()) / tau), &(t.matmul(&p.tr()) / tau).softmax(-1, Kind::Float));
            let product_to_product = soft_ce(&(cp.matmul(&cp.tr()) / tau), &(p.matmul(&p.tr()) / tau).softmax(-1, Kind::Float));
            let loss = text_to_product + product_to_product;
            opt.backward_step(&loss);
            losses.push(loss.double_value(&[]));
        }
    }
    final_losses.insert("projection".to_string(), tail_mean(&losses));
    let products = tch::no_grad(|| heads.project(&teacher_products));
    let val_title_r10_compact = tch::no_grad(|| probe.score(run, &products, &|t: &Tensor| heads.project(t)).0);

    // Heads, on the frozen compact products.
    if let Some(projection) = vs.variables().remove("projection.weight") {
        let _ = projection.set_requires_grad(false);
    }
    // Short queries of the category head's items, [`QUERY_PHRASES`] rows per example.
    let category_phrases = match &train.cr {
        Some(cr) => {
            crate::build::stage(bar, "teacher on short queries");
            let phrases: Vec<String> =
                cr.inputs.iter().flat_map(|rows| query_phrases(&run.catalog.items[run.space.items()[rows[0] as usize]])).collect();
            Some(run.embed_texts(&phrases)?)
        }
        None => None,
    };
    let mut opt = nn::Adam::default().build(&vs, options.lr)?;
    let mut examples = HashMap::new();
    let mut val_query_category_accuracy = Vec::new();
    let index_of = |rows: &[i64]| Tensor::from_slice(rows);
    for (task, answers) in [("tgir", &train.tgir), ("ocir", &train.ocir)].into_iter().chain(train.cr.as_ref().map(|c| ("category", c))) {
        crate::build::stage(bar, format!("{task} head"));
        examples.insert(task.to_string(), answers.answers.len());
        if answers.answers.is_empty() {
            continue;
        }
        let steps = if task == "category" { options.category_steps } else { options.steps };
        let mut losses = Vec::with_capacity(steps);
        for step in 0..steps {
            if task == "category" && step > 0 && (step == options.steps || step % 500 == 0) {
                val_query_category_accuracy.extend(probe.category_accuracy(&heads).map(|a| (step, a)));
            }
            let picks: Vec<usize> = sample(&mut rng, answers.answers.len(), options.batch.min(answers.answers.len())).into_vec();
            let pick_index = Tensor::from_slice(&picks.iter().map(|&p| p as i64).collect::<Vec<_>>());
            let loss = match task {
                "category" => {
                    let items: Vec<i64> = picks.iter().map(|&p| answers.inputs[p][0]).collect();
                    let phrases: Vec<i64> = picks.iter().map(|&p| (p * QUERY_PHRASES + rng.gen_range(0..QUERY_PHRASES)) as i64).collect();
                    let phrases =
                        category_phrases.as_ref().expect("embedded with the category examples").index_select(0, &index_of(&phrases));
                    let labels = index_of(&picks.iter().map(|&p| answers.answers[p]).collect::<Vec<_>>());
                    let teacher = answers.teacher.index_select(0, &pick_index);
                    let loss_on = |texts: &Tensor| {
                        let logits = heads.category.forward(&tch::no_grad(|| heads.project(texts)));
                        soft_ce(&logits, &teacher) + logits.cross_entropy_for_logits(&labels)
                    };
                    loss_on(&run.space.text.index_select(0, &index_of(&items))) + loss_on(&phrases)
                }
                _ => {
                    let query = if task == "tgir" {
                        let refs: Vec<i64> = picks.iter().map(|&p| answers.inputs[p][0]).collect();
                        let text =
                            tch::no_grad(|| heads.project(&answers.texts.as_ref().expect("tgir texts").index_select(0, &pick_index)));
                        heads.tgir.forward(&products.index_select(0, &index_of(&refs)), &text)
                    } else {
                        let items: Vec<i64> = picks.iter().flat_map(|&p| answers.inputs[p].iter().copied()).collect();
                        let outfit_of: Vec<i64> =
                            picks.iter().enumerate().flat_map(|(b, &p)| std::iter::repeat_n(b as i64, answers.inputs[p].len())).collect();
                        let categories: Vec<i64> = picks.iter().map(|&p| answers.categories[p]).collect();
                        heads.ocir.forward(&products.index_select(0, &index_of(&items)), &index_of(&outfit_of), &index_of(&categories))
                    };
                    let targets: Vec<i64> = picks.iter().map(|&p| answers.answers[p]).collect();
                    let teacher_query = answers.teacher.index_select(0, &pick_index);
                    let teacher_scores = teacher_query.matmul(&teacher_products.index_select(0, &index_of(&targets)).tr()) / tau;
                    let student = query.matmul(&products.index_select(0, &index_of(&targets)).tr()) / tau;
                    let diagonal = Tensor::arange(picks.len() as i64, (Kind::Int64, Device::Cpu));
                    soft_ce(&student, &teacher_scores.softmax(-1, Kind::Float)) + student.cross_entropy_for_logits(&diagonal)
                }
            };
            opt.backward_step(&loss);
            losses.push(loss.double_value(&[]));
        }
        final_losses.insert(task.to_string(), tail_mean(&losses));
        if task == "category" {
            val_query_category_accuracy.extend(probe.category_accuracy(&heads).map(|a| (steps, a)));
        }
    }
    let report = DistillReport {
        image_weight_scores,
        image_weight,
        val_title_r10_teacher,
        val_title_r10_compact,
        final_losses,
        val_query_category_accuracy,
        examples,
    };
    Ok(Distilled { vs, heads, config, products, report })
}

/// Precision@10 (percent) of each query (rows of `queries`) over `gallery`'s
/// `candidates` rows, a hit being a row of the query's `relevant` set whose
/// [`rank_of`] is below 10 (ties never win).
pub(crate) fn precision10(queries: &Tensor, gallery: &Tensor, candidates: &[i64], relevant: &[HashSet<i64>]) -> f64 {
    if relevant.is_empty() {
        return 0.0;
    }
    let scores = queries.mm(&gallery.index_select(0, &Tensor::from_slice(candidates)).tr());
    let mut hits = 0usize;
    for (q, wanted) in relevant.iter().enumerate() {
        let row = Vec::<f32>::try_from(scores.get(q as i64)).expect("f32 scores");
        hits += (0..candidates.len()).filter(|&o| wanted.contains(&candidates[o]) && rank_of(&row, o) < 10).count();
    }
    100.0 * hits as f64 / (10 * relevant.len()) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precision_counts_relevant_rows_in_the_top_ten_and_a_tie_at_the_cut_never_wins() {
        // One query [1, 0] over 12 unit-ish rows scored 12, 11, ..., 1 (row r scores 12 − r).
        let gallery = Tensor::from_slice(&(0..12).flat_map(|r| [12.0 - r as f32, 0.0]).collect::<Vec<_>>()).view([12, 2]);
        let query = Tensor::from_slice(&[1.0f32, 0.0]).view([1, 2]);
        let candidates: Vec<i64> = (0..12).collect();
        let relevant = [HashSet::from([0i64, 3, 11])];
        assert!((precision10(&query, &gallery, &candidates, &relevant) - 20.0).abs() < 1e-9);
        // Rows 9 and 10 tie at the cut: relevant row 9 does not count.
        let tied =
            Tensor::from_slice(&(0..12).flat_map(|r| [if r == 10 { 3.0 } else { 12.0 - r as f32 }, 0.0]).collect::<Vec<_>>()).view([12, 2]);
        let relevant = [HashSet::from([0i64, 9])];
        assert!((precision10(&query, &tied, &candidates, &relevant) - 10.0).abs() < 1e-9);
    }

    #[test]
    fn no_rows_make_an_empty_batch_of_the_width_instead_of_a_panic() {
        let none = batched(0, 7, |_| unreachable!("no batch for no rows")).unwrap();
        assert_eq!(none.size(), [0, 7]);
        let some = batched(3, 2, |r| Ok(Tensor::ones([r.len() as i64, 2], (Kind::Float, Device::Cpu)))).unwrap();
        assert_eq!(some.size(), [3, 2]);
    }

    #[test]
    fn short_queries_name_the_type_and_the_colour() {
        let item = Item {
            id: "1".into(),
            group_id: "1".into(),
            title: "Tilly".into(),
            description: "A soft knit.".into(),
            category: "Garment Upper body".into(),
            subcategory: "Sweater".into(),
            attributes: [(attr::COLOUR.to_string(), "Dark Blue".to_string())].into(),
            images: Vec::new(),
            price: None,
            url: None,
            source: Default::default(),
        };
        assert_eq!(query_phrases(&item), ["Tilly".to_string(), "sweater".into(), "dark blue sweater".into()]);
    }
}
