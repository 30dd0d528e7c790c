//! The evaluation protocols of the paper, plus full-gallery retrieval, on one
//! split of a catalog (the H&M test split for every reported figure):
//!
//! - XMR "random-100": 1,000 random query items; each ranks its one positive
//!   (its own text for ITR, its own photo for TIR) against 100 negatives of
//!   the same subcategory, R@1/5/10, averaged over 5 seeds. Where a
//!   subcategory has fewer than 100 other items in the split, all of them are
//!   used and the rest of the 100 are drawn from the whole split (stated in
//!   the report as `negatives_filled`). Full gallery: every item of the split.
//!   Ties are never won (an equal score ranks above the positive), items
//!   whose text is identical to the query's are never negatives, and in the
//!   image-to-text full gallery such a text counts as the same answer.
//! - TGIR: R@10/R@50 per target category over the gallery of unique targets
//!   of that category (FashionIQ style), and their mean.
//! - CR/SCR: accuracy and macro-F1 (classes present in the split).
//! - OCIR: R@10/30/50 of the hidden item among the split's items of its
//!   category, per category, weighted by the category's share of questions,
//!   and macro-averaged over categories (the paper's).
//! - Meta-sum (the paper's ablation score): mean R of ITR + mean R of TIR
//!   (random-100) + mean of TGIR R@10/R@50 + mean of SCR accuracy and
//!   macro-F1 + mean of OCIR R@10/30/50.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use rand::seq::index::sample;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};
use vitrine_core::catalog::{Catalog, Split};
use vitrine_core::metrics::{accuracy, macro_f1, rank_among_answers, rank_of, recall_at, text_classes};
use vitrine_core::tasks::Labels;

use crate::catalog_inputs::{CatalogInputs, OcirExample, SplitExamples, TgirExample};
use crate::error::TrainError;
use crate::schedule::Downstream;
use crate::teacher::Finetuned;

/// Queries of the random-100 protocol, negatives per query, seeds.
const RANDOM_QUERIES: usize = 1000;
const RANDOM_NEGATIVES: usize = 100;
const RANDOM_SEEDS: u64 = 5;
/// Rows embedded per forward pass.
const EVAL_BATCH: usize = 64;

/// R@1/5/10 of both retrieval directions.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Xmr {
    pub itr: [f64; 3],
    pub tir: [f64; 3],
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Classification {
    pub accuracy: f64,
    pub macro_f1: f64,
    pub items: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Recalls {
    /// (k, recall in percent).
    pub at: Vec<(usize, f64)>,
    pub queries: usize,
}

/// Everything `vitrine-train eval` reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalReport {
    pub split: String,
    pub items: usize,
    pub xmr_random100: Xmr,
    /// Queries whose subcategory had too few items and got negatives from the whole split.
    pub negatives_filled: usize,
    pub xmr_full_gallery: Xmr,
    pub tgir: BTreeMap<String, Recalls>,
    pub tgir_mean: [f64; 2],
    pub cr: Classification,
    pub scr: Classification,
    pub ocir: BTreeMap<String, Recalls>,
    pub ocir_weighted: [f64; 3],
    /// The paper's average: every category counts the same.
    #[serde(default)]
    pub ocir_macro: [f64; 3],
    pub meta_sum: f64,
}

fn mean(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        0.0
    } else {
        xs.iter().sum::<f64>() / xs.len() as f64
    }
}

/// Rows of a `[N, H]` tensor as vectors.
fn to_rows(t: &Tensor) -> Vec<Vec<f32>> {
    let t = t.to_kind(Kind::Float).to_device(Device::Cpu).contiguous();
    let (n, h) = (t.size()[0] as usize, t.size()[1] as usize);
    let mut flat = vec![0f32; n * h];
    t.copy_data(&mut flat, n * h);
    flat.chunks(h.max(1)).map(<[f32]>::to_vec).collect()
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The embeddings (or other per-row outputs) of `rows`, computed in batches.
fn batched(rows: &[usize], mut f: impl FnMut(&[usize]) -> Result<Tensor, TrainError>) -> Result<Vec<Vec<f32>>, TrainError> {
    let mut out = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(EVAL_BATCH) {
        out.extend(to_rows(&tch::no_grad(|| f(chunk))?));
    }
    Ok(out)
}

/// Evaluates a fine-tuned model on `split` of `catalog`.
pub fn evaluate(
    finetuned: &Finetuned,
    catalog: &Catalog,
    labels: &Labels,
    inputs: &CatalogInputs,
    split: Split,
    device: Device,
) -> Result<EvalReport, TrainError> {
    let model = &finetuned.model;
    let examples = SplitExamples::new(catalog, labels, inputs, &finetuned.tokenizer, split)?;
    let rows = &examples.rows;
    let bar = crate::progress::bar(5, "evaluating");
    bar.set_message("embedding items");
    let images = batched(rows, |chunk| Ok(model.image_embedding(&inputs.visual_tokens(model, chunk, None, device)?)))?;
    let texts = batched(rows, |chunk| {
        let (ids, mask) = inputs.item_texts(chunk, None, device);
        Ok(model.text_embedding(&ids, &mask, false))
    })?;
    bar.inc(1);

    // XMR: position i of `rows` is both the query and the positive.
    let subcategory_of: Vec<&str> = rows.iter().map(|&r| catalog.items[inputs.items[r]].subcategory.as_str()).collect();
    let text_class = text_classes(&rows.iter().map(|&r| catalog.items[inputs.items[r]].text()).collect::<Vec<_>>());
    let (itr_random, negatives_filled, itr_full) =
        retrieval_recalls(&images, &texts, &subcategory_of, &text_class, XmrDirection::ImageToText);
    let (tir_random, _, tir_full) = retrieval_recalls(&texts, &images, &subcategory_of, &text_class, XmrDirection::TextToImage);
    let xmr_random100 = Xmr { itr: itr_random, tir: tir_random };
    let xmr_full_gallery = Xmr { itr: itr_full, tir: tir_full };
    bar.inc(1);

    // A head the fine-tune skipped kept its initial weights: its task has no figure.
    let trained = |task: Downstream| finetuned.trained_tasks.contains(&task);
    let tgir_examples: &[TgirExample] = if trained(Downstream::Tgir) { &examples.tgir } else { &[] };
    let ocir_examples: &[OcirExample] = if trained(Downstream::Ocir) { &examples.ocir } else { &[] };

    // TGIR: per target category, the gallery of unique targets.
    bar.set_message("text-guided retrieval");
    let tgir_queries = batched(&(0..tgir_examples.len()).collect::<Vec<_>>(), |chunk| {
        let references: Vec<usize> = chunk.iter().map(|&i| tgir_examples[i].reference).collect();
        inputs.tgir_query(model, &references, chunk.iter().map(|&i| tgir_examples[i].modification.clone()), None, false, device)
    })?;
    let row_position: HashMap<usize, usize> = rows.iter().enumerate().map(|(i, &r)| (r, i)).collect();
    let category_of: Vec<String> = rows.iter().map(|&r| catalog.items[inputs.items[r]].category.clone()).collect();
    let tgir_targets: Vec<usize> = tgir_examples.iter().map(|e| row_position[&e.target]).collect();
    let tgir = tgir_recalls(&tgir_queries, &tgir_targets, &images, &category_of);
    let tgir_mean = [0, 1].map(|i| mean(&tgir.values().map(|r| r.at[i].1).collect::<Vec<_>>()));
    bar.inc(1);

    // CR/SCR.
    bar.set_message("category recognition");
    let heads = model.downstream.as_ref().expect("a fine-tuned model has downstream heads");
    let labelled_rows: Vec<usize> = examples.labelled.iter().map(|l| l.0).collect();
    let mut predicted = (Vec::new(), Vec::new());
    for chunk in labelled_rows.chunks(EVAL_BATCH) {
        tch::no_grad(|| -> Result<(), TrainError> {
            let pooled = inputs.fused_pooled(model, chunk, None, false, device)?;
            predicted.0.extend(Vec::<i64>::try_from(heads.category.forward(&pooled).argmax(-1, false)).expect("int64 classes"));
            predicted.1.extend(Vec::<i64>::try_from(heads.subcategory.forward(&pooled).argmax(-1, false)).expect("int64 classes"));
            Ok(())
        })?;
    }
    let classification = |truth: Vec<usize>, predicted: &[i64]| {
        let predicted: Vec<usize> = predicted.iter().map(|&p| p as usize).collect();
        Classification { accuracy: accuracy(&truth, &predicted), macro_f1: macro_f1(&truth, &predicted), items: truth.len() }
    };
    let cr = classification(examples.labelled.iter().map(|l| l.1).collect(), &predicted.0);
    let scr = classification(examples.labelled.iter().map(|l| l.2).collect(), &predicted.1);
    bar.inc(1);

    // OCIR: candidates are the split's items of the hidden item's category.
    bar.set_message("outfit completion");
    let ocir_queries = batched(&(0..ocir_examples.len()).collect::<Vec<_>>(), |chunk| {
        let outfits: Vec<&OcirExample> = chunk.iter().map(|&i| &ocir_examples[i]).collect();
        inputs.ocir_query(model, &outfits, None, device)
    })?;
    let ocir_answers: Vec<usize> = ocir_examples.iter().map(|e| row_position[&e.answer]).collect();
    let ocir = ocir_recalls(&ocir_queries, &ocir_answers, &images, &category_of);
    let questions = ocir_examples.len().max(1) as f64;
    let ocir_weighted = weighted_recalls(&ocir, questions);
    let ocir_macro = macro_recalls(&ocir);
    bar.inc(1);
    bar.finish_and_clear();

    let meta_sum =
        mean(&xmr_random100.itr) + mean(&xmr_random100.tir) + mean(&tgir_mean) + (scr.accuracy + scr.macro_f1) / 2.0 + mean(&ocir_weighted);
    Ok(EvalReport {
        split: split.to_string(),
        items: rows.len(),
        xmr_random100,
        negatives_filled,
        xmr_full_gallery,
        tgir,
        tgir_mean,
        cr,
        scr,
        ocir,
        ocir_weighted,
        ocir_macro,
        meta_sum,
    })
}

/// Which way an XMR run retrieves: the full gallery of image-to-text counts a
/// text identical to the positive's as the same answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XmrDirection {
    ImageToText,
    TextToImage,
}

/// One retrieval direction of XMR, where query `i`'s positive is gallery item
/// `i`: R@1/5/10 of the random-100 protocol (averaged over its seeds), how
/// many queries needed negatives from outside their subcategory, and R@1/5/10
/// over the full gallery. Rows of the query's text class are never negatives.
pub fn retrieval_recalls(
    queries: &[Vec<f32>],
    gallery: &[Vec<f32>],
    subcategory_of: &[&str],
    text_class: &[usize],
    direction: XmrDirection,
) -> ([f64; 3], usize, [f64; 3]) {
    let mut by_subcategory: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, s) in subcategory_of.iter().enumerate() {
        by_subcategory.entry(s).or_default().push(i);
    }
    let mut class_size: HashMap<usize, usize> = HashMap::new();
    for &c in text_class {
        *class_size.entry(c).or_default() += 1;
    }
    let mut runs = Vec::new();
    let mut negatives_filled = 0;
    for seed in 0..RANDOM_SEEDS {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let picked = sample(&mut rng, queries.len(), RANDOM_QUERIES.min(queries.len())).into_vec();
        let mut ranks = Vec::new();
        for &q in &picked {
            let mut negatives: Vec<usize> =
                by_subcategory[subcategory_of[q]].iter().copied().filter(|&j| text_class[j] != text_class[q]).collect();
            negatives.shuffle(&mut rng);
            negatives.truncate(RANDOM_NEGATIVES);
            let eligible = queries.len() - class_size[&text_class[q]];
            if negatives.len() < RANDOM_NEGATIVES && eligible > RANDOM_NEGATIVES {
                if seed == 0 {
                    negatives_filled += 1;
                }
                while negatives.len() < RANDOM_NEGATIVES {
                    let j = rand::Rng::gen_range(&mut rng, 0..queries.len());
                    if text_class[j] != text_class[q] && !negatives.contains(&j) {
                        negatives.push(j);
                    }
                }
            }
            let scores: Vec<f32> = std::iter::once(q).chain(negatives).map(|c| dot(&queries[q], &gallery[c])).collect();
            ranks.push(rank_of(&scores, 0));
        }
        runs.push([1, 5, 10].map(|k| recall_at(&ranks, k)));
    }
    let random100 = [0, 1, 2].map(|i| mean(&runs.iter().map(|r| r[i]).collect::<Vec<_>>()));
    let full: Vec<usize> = queries
        .iter()
        .enumerate()
        .map(|(i, q)| {
            let scores: Vec<f32> = gallery.iter().map(|g| dot(q, g)).collect();
            match direction {
                XmrDirection::ImageToText => rank_among_answers(&scores, i, |j| text_class[j] == text_class[i]),
                XmrDirection::TextToImage => rank_of(&scores, i),
            }
        })
        .collect();
    (random100, negatives_filled, [1, 5, 10].map(|k| recall_at(&full, k)))
}

/// TGIR R@10/R@50 per target category: query `i` ranks gallery item
/// `targets[i]` among the unique targets of that category.
pub fn tgir_recalls(queries: &[Vec<f32>], targets: &[usize], gallery: &[Vec<f32>], category_of: &[String]) -> BTreeMap<String, Recalls> {
    let mut by_category: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, &t) in targets.iter().enumerate() {
        by_category.entry(&category_of[t]).or_default().push(i);
    }
    by_category
        .into_iter()
        .map(|(category, members)| {
            let mut unique: Vec<usize> = members.iter().map(|&i| targets[i]).collect();
            unique.sort_unstable();
            unique.dedup();
            let ranks: Vec<usize> = members
                .iter()
                .map(|&i| {
                    let scores: Vec<f32> = unique.iter().map(|&g| dot(&queries[i], &gallery[g])).collect();
                    rank_of(&scores, unique.binary_search(&targets[i]).expect("target in its gallery"))
                })
                .collect();
            (category.to_string(), Recalls { at: vec![(10, recall_at(&ranks, 10)), (50, recall_at(&ranks, 50))], queries: ranks.len() })
        })
        .collect()
}

/// OCIR R@10/30/50 per category: query `i` ranks gallery item `answers[i]`
/// among the gallery items of its category.
pub fn ocir_recalls(queries: &[Vec<f32>], answers: &[usize], gallery: &[Vec<f32>], category_of: &[String]) -> BTreeMap<String, Recalls> {
    let mut candidates_of: HashMap<&str, Vec<usize>> = HashMap::new();
    for (g, c) in category_of.iter().enumerate() {
        candidates_of.entry(c).or_default().push(g);
    }
    let mut ranks: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (query, &answer) in queries.iter().zip(answers) {
        let candidates = &candidates_of[category_of[answer].as_str()];
        let scores: Vec<f32> = candidates.iter().map(|&c| dot(query, &gallery[c])).collect();
        let position = candidates.iter().position(|&c| c == answer).expect("the answer is a candidate of its category");
        ranks.entry(category_of[answer].clone()).or_default().push(rank_of(&scores, position));
    }
    ranks
        .into_iter()
        .map(|(c, r)| (c, Recalls { at: [10, 30, 50].iter().map(|&k| (k, recall_at(&r, k))).collect(), queries: r.len() }))
        .collect()
}

/// Recalls over categories, weighted by each category's share of `questions`.
pub fn weighted_recalls(by_category: &BTreeMap<String, Recalls>, questions: f64) -> [f64; 3] {
    [0, 1, 2].map(|i| by_category.values().map(|r| r.at[i].1 * r.queries as f64 / questions).sum::<f64>())
}

/// Recalls averaged over categories, each counting the same (the paper's macro average).
pub fn macro_recalls(by_category: &BTreeMap<String, Recalls>) -> [f64; 3] {
    [0, 1, 2].map(|i| mean(&by_category.values().map(|r| r.at[i].1).collect::<Vec<_>>()))
}

impl EvalReport {
    /// The report as Markdown tables in the paper's shape.
    pub fn markdown(&self, title: &str) -> String {
        let mut md = String::new();
        let r = |x: f64| format!("{x:.1}");
        let _ = writeln!(md, "### {title}\n");
        let _ = writeln!(md, "{} split, {} items.\n", self.split, self.items);
        let _ = writeln!(md, "| XMR | ITR R@1 | ITR R@5 | ITR R@10 | TIR R@1 | TIR R@5 | TIR R@10 |");
        let _ = writeln!(md, "|---|---|---|---|---|---|---|");
        for (name, x) in [("random-100 (5 seeds)", &self.xmr_random100), ("full gallery", &self.xmr_full_gallery)] {
            let cells: Vec<String> = x.itr.iter().chain(&x.tir).map(|&v| r(v)).collect();
            let _ = writeln!(md, "| {name} | {} |", cells.join(" | "));
        }
        let _ = writeln!(md, "\n| TGIR category | queries | R@10 | R@50 |\n|---|---|---|---|");
        for (category, recalls) in &self.tgir {
            let _ = writeln!(md, "| {category} | {} | {} | {} |", recalls.queries, r(recalls.at[0].1), r(recalls.at[1].1));
        }
        let _ = writeln!(md, "| **mean** | | {} | {} |", r(self.tgir_mean[0]), r(self.tgir_mean[1]));
        let _ = writeln!(md, "\n| recognition | items | accuracy | macro-F1 |\n|---|---|---|---|");
        for (name, c) in [("CR", &self.cr), ("SCR", &self.scr)] {
            let _ = writeln!(md, "| {name} | {} | {} | {} |", c.items, r(c.accuracy), r(c.macro_f1));
        }
        let questions = self.ocir.values().map(|r| r.queries).sum::<usize>();
        let _ = writeln!(md, "\n| OCIR ({questions} questions) | R@10 | R@30 | R@50 |\n|---|---|---|---|");
        for (name, w) in [("weighted by category", &self.ocir_weighted), ("macro over categories", &self.ocir_macro)] {
            let _ = writeln!(md, "| {name} | {} | {} | {} |", r(w[0]), r(w[1]), r(w[2]));
        }
        let _ = writeln!(md, "\nMeta-sum: **{}**", r(self.meta_sum));
        md
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_texts_are_never_negatives_and_the_same_answer_image_to_text() {
        // Rows 0 and 1 share one text and one image vector: no model can tell them apart.
        let vectors = vec![vec![1.0, 0.0], vec![1.0, 0.0], vec![0.0, 1.0]];
        let subcategory_of = ["a"; 3];
        let same_text = text_classes(&["red dress", "red dress", "blue coat"]);
        assert_eq!(same_text, vec![0, 0, 1]);
        let (random, _, full) = retrieval_recalls(&vectors, &vectors, &subcategory_of, &same_text, XmrDirection::ImageToText);
        assert_eq!(random[0], 100.0, "the sibling is left out of the negatives");
        assert_eq!(full[0], 100.0, "the sibling's identical text counts as the answer");
        let (_, _, full) = retrieval_recalls(&vectors, &vectors, &subcategory_of, &same_text, XmrDirection::TextToImage);
        assert!((full[0] - 100.0 / 3.0).abs() < 1e-9, "the tie between the siblings' photos is never won: {full:?}");
        let (random, _, _) = retrieval_recalls(&vectors, &vectors, &subcategory_of, &[0, 1, 2], XmrDirection::TextToImage);
        assert!(random[0] < 100.0, "distinct texts make the sibling a negative, and its tie is lost: {random:?}");
    }
}
