//! Retrieval through a bundle, with the teacher's protocols
//! (`vitrine_trainer::eval`) on one split: every query goes through the
//! browser engine ([`vitrine_core::engine::Engine`]: int8 text encoder,
//! projection, distilled heads) and is scored against the bundle's int8 item
//! vectors, the scores its exact re-rank uses. The whole-catalog figures add
//! the HNSW graph: each split item's text searched among all the bundle's
//! items, through the graph and exactly.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use vitrine_core::catalog::{Catalog, Split};
use vitrine_core::engine::{Engine, EngineError, MAX_QUERY_BYTES};
use vitrine_core::index::{recall, SearchParams};
use vitrine_core::metrics::{recall_at, text_classes};
use vitrine_core::model::compact::OptionalHead;
use vitrine_core::tasks::{outfit_questions, tgir_triplets};
use vitrine_trainer::catalog_inputs::MAX_OUTFIT_ITEMS;
use vitrine_trainer::eval::{ocir_recalls, retrieval_recalls, tgir_recalls, weighted_recalls, Recalls, XmrDirection};

/// What `vitrine-index eval` reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BundleEval {
    pub split: String,
    pub items: usize,
    /// TIR R@1/5/10, random-100 protocol (averaged over its seeds) and full split gallery.
    pub tir_random100: [f64; 3],
    pub negatives_filled: usize,
    pub tir_full_gallery: [f64; 3],
    pub tgir: BTreeMap<String, Recalls>,
    pub tgir_mean: [f64; 2],
    pub ocir: BTreeMap<String, Recalls>,
    pub ocir_weighted: [f64; 3],
    /// Category head on each item's text: share of items whose category is ranked first.
    pub category_accuracy: f64,
    /// Split items' own product in the top 10 of the whole bundle, through HNSW + re-rank and exactly.
    pub whole_catalog_r10_ann: f64,
    pub whole_catalog_r10_exact: f64,
    /// Mean overlap of the ANN top 10 with the exact top 10 (same queries, same space).
    pub ann_recall_at_10: f64,
    pub bundle_items: usize,
}

/// A text cut to the engine's query limit at a character boundary; the
/// tokenizer keeps fewer tokens than that many bytes anyway.
fn as_query(text: &str) -> &str {
    let mut end = text.len().min(MAX_QUERY_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len().max(1) as f64
}

/// Evaluates `engine` (a bundle of `catalog`) on `split`.
pub fn evaluate_bundle(engine: &Engine, catalog: &Catalog, split: Split) -> Result<BundleEval, EngineError> {
    let position_of: HashMap<&str, u32> =
        engine.products().iter().enumerate().map(|(p, product)| (product.id.as_str(), p as u32)).collect();
    let bundle_item = |catalog_item: usize| position_of.get(catalog.items[catalog_item].id.as_str()).copied();
    let split_items: Vec<usize> = catalog.items_in(split).map(|(i, _)| i).filter(|&i| bundle_item(i).is_some()).collect();
    let gallery: Vec<Vec<f32>> =
        split_items.iter().map(|&i| engine.index().item_vector(bundle_item(i).expect("filtered")).expect("an item of the index")).collect();
    let gallery_position: HashMap<usize, usize> = split_items.iter().enumerate().map(|(g, &i)| (i, g)).collect();
    let category_of: Vec<String> = split_items.iter().map(|&i| catalog.items[i].category.clone()).collect();
    let subcategory_of: Vec<&str> = split_items.iter().map(|&i| catalog.items[i].subcategory.as_str()).collect();

    let bar = indicatif::ProgressBar::new(4).with_prefix("evaluating bundle");
    bar.set_style(indicatif::ProgressStyle::with_template("{prefix} {bar:20} {pos}/{len} {msg}").expect("valid template"));
    bar.set_message("text queries");
    let texts: Vec<String> = split_items.iter().map(|&i| catalog.items[i].text()).collect();
    let queries: Vec<Vec<f32>> = texts.iter().map(|t| engine.embed_query(as_query(t))).collect::<Result<_, _>>()?;
    let text_class = text_classes(&texts);
    let (tir_random100, negatives_filled, tir_full_gallery) =
        retrieval_recalls(&queries, &gallery, &subcategory_of, &text_class, XmrDirection::TextToImage);
    let mut category_hits = 0usize;
    for (text, category) in texts.iter().zip(&category_of) {
        let intent = engine.category_intent(as_query(text))?;
        if intent.first().is_some_and(|&(id, _)| engine.categories()[usize::from(id)] == *category) {
            category_hits += 1;
        }
    }
    bar.inc(1);

    bar.set_message("whole catalog, HNSW and exact");
    let (mut ann_ranks, mut exact_ranks, mut overlaps) = (Vec::new(), Vec::new(), Vec::new());
    for (query, &item) in queries.iter().zip(&split_items) {
        let own = bundle_item(item).expect("filtered");
        let ann = engine.index().search(query, 10, None, &SearchParams::default())?;
        let exact = engine.index().exact_search(query, 10, None)?;
        let rank = |hits: &[vitrine_core::index::Hit]| hits.iter().position(|h| h.item == own).unwrap_or(usize::MAX);
        ann_ranks.push(rank(&ann));
        exact_ranks.push(rank(&exact));
        overlaps.push(recall(&ann, &exact));
    }
    bar.inc(1);

    bar.set_message("text-guided retrieval");
    let (mut tgir_queries, mut tgir_targets) = (Vec::new(), Vec::new());
    // A bundle without a head has no figure for its task (an empty table, not zeros).
    let triplets = if engine.has_head(OptionalHead::Tgir) { tgir_triplets(catalog) } else { Vec::new() };
    for triplet in triplets.into_iter().filter(|t| t.split == split) {
        let (Some(reference), Some(&target)) = (bundle_item(triplet.reference), gallery_position.get(&triplet.target)) else { continue };
        let reference = engine.index().item_vector(reference).expect("an item of the index");
        tgir_queries.push(engine.tgir_query(&reference, as_query(&triplet.modification))?);
        tgir_targets.push(target);
    }
    let tgir = tgir_recalls(&tgir_queries, &tgir_targets, &gallery, &category_of);
    let tgir_mean = [0, 1].map(|i| mean(&tgir.values().map(|r| r.at[i].1).collect::<Vec<_>>()));
    bar.inc(1);

    bar.set_message("outfit completion");
    let category_id: HashMap<&str, u16> = engine.categories().iter().enumerate().map(|(i, c)| (c.as_str(), i as u16)).collect();
    let (mut ocir_queries, mut ocir_answers) = (Vec::new(), Vec::new());
    let questions = if engine.has_head(OptionalHead::Ocir) { outfit_questions(catalog) } else { Vec::new() };
    for question in questions.into_iter().filter(|q| q.split == split) {
        let Some(&answer) = gallery_position.get(&question.answer) else { continue };
        let outfit: Vec<Vec<f32>> = question
            .context
            .iter()
            .filter_map(|&i| bundle_item(i))
            .take(MAX_OUTFIT_ITEMS)
            .map(|p| engine.index().item_vector(p).expect("an item of the index"))
            .collect();
        if outfit.is_empty() {
            continue;
        }
        ocir_queries.push(engine.ocir_query(&outfit, category_id[question.category.as_str()])?);
        ocir_answers.push(answer);
    }
    let ocir = ocir_recalls(&ocir_queries, &ocir_answers, &gallery, &category_of);
    let ocir_weighted = weighted_recalls(&ocir, ocir_queries.len().max(1) as f64);
    bar.inc(1);
    bar.finish_and_clear();

    Ok(BundleEval {
        split: split.to_string(),
        items: split_items.len(),
        tir_random100,
        negatives_filled,
        tir_full_gallery,
        tgir,
        tgir_mean,
        ocir,
        ocir_weighted,
        category_accuracy: 100.0 * category_hits as f64 / split_items.len().max(1) as f64,
        whole_catalog_r10_ann: recall_at(&ann_ranks, 10),
        whole_catalog_r10_exact: recall_at(&exact_ranks, 10),
        ann_recall_at_10: 100.0 * mean(&overlaps),
        bundle_items: engine.products().len(),
    })
}

/// The bundle's figures beside the teacher's (`vitrine-train eval` JSON), as markdown.
pub fn comparison_markdown(bundle: &BundleEval, teacher: &vitrine_trainer::eval::EvalReport) -> String {
    let row = |name: &str, ours: f64, theirs: f64| {
        let ratio = if theirs > 0.0 { format!("{:.1}%", 100.0 * ours / theirs) } else { "–".to_string() };
        format!("| {name} | {theirs:.2} | {ours:.2} | {ratio} |\n")
    };
    let mut out = format!(
        "Split `{}`: {} items (bundle: {} items in all).\n\n| figure | teacher | bundle | bundle / teacher |\n|---|---|---|---|\n",
        bundle.split, bundle.items, bundle.bundle_items
    );
    for (i, k) in [1, 5, 10].iter().enumerate() {
        out += &row(&format!("TIR R@{k} random-100"), bundle.tir_random100[i], teacher.xmr_random100.tir[i]);
    }
    for (i, k) in [1, 5, 10].iter().enumerate() {
        out += &row(&format!("TIR R@{k} full split gallery"), bundle.tir_full_gallery[i], teacher.xmr_full_gallery.tir[i]);
    }
    out += &row("TGIR R@10 (mean over categories)", bundle.tgir_mean[0], teacher.tgir_mean[0]);
    out += &row("TGIR R@50 (mean over categories)", bundle.tgir_mean[1], teacher.tgir_mean[1]);
    for (i, k) in [10, 30, 50].iter().enumerate() {
        out += &row(&format!("OCIR R@{k} (weighted)"), bundle.ocir_weighted[i], teacher.ocir_weighted[i]);
    }
    out += &format!(
        "\nCategory head on item text: {:.2}% top-1 (the teacher's CR head, on photo and text: {:.2}%).\n\
         Whole bundle, split item's own product in the top 10 of all {} items: HNSW + re-rank {:.2}%, exact {:.2}%; \
         ANN recall@10 against exact search {:.2}%.\n",
        bundle.category_accuracy,
        teacher.cr.accuracy,
        bundle.bundle_items,
        bundle.whole_catalog_r10_ann,
        bundle.whole_catalog_r10_exact,
        bundle.ann_recall_at_10
    );
    out
}
