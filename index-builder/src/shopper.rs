//! Shopper queries (DESIGN.md section 3): "<colour> <garment type>" made from
//! the catalog's structured colour and product-type fields, which the indexed
//! text does not say, judged by those same fields. Precision@10 for colour and
//! type together, colour alone and type alone, over the whole catalog and over
//! one split alone, for the bundle through the engine beside what a shop would
//! use instead (BM25 over title + description, all-MiniLM-L6-v2 embeddings of
//! title + description) and the chance line (the right type every time, the
//! colour left to chance within it). Ties between scores are broken by a
//! seeded hash of the item id, never by catalog order (colour variants sit
//! next to each other there).

use std::collections::{BTreeMap, HashMap};

use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use vitrine_core::catalog::{attr, Catalog, Split};
use vitrine_core::engine::{Engine, EngineError};
use vitrine_core::hash::Fnv1a;
use vitrine_core::lexical::Bm25Index;
use vitrine_core::model::text_encoder::TextEncoder;
use vitrine_core::model::ModelError;

/// Results judged per query.
pub const K: usize = 10;
/// A (colour, type) pair becomes a query when the catalog has at least this many such items…
const MIN_CATALOG_ITEMS: usize = 10;
/// …and the split at least this many.
const MIN_SPLIT_ITEMS: usize = 2;

/// Queries whose top results the report lists, for reading.
const EXAMPLE_QUERIES: usize = 8;

/// One shopper query and the fields that judge it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShopperQuery {
    pub text: String,
    pub colour: String,
    pub product_type: String,
    /// The category most items of the product type belong to.
    pub category: String,
}

/// Colour values that name no colour a shopper would type.
fn is_named_colour(colour: &str) -> bool {
    !(colour.is_empty() || colour.starts_with("Other") || colour == "Unknown" || colour == "Transparent")
}

fn is_named_type(product_type: &str) -> bool {
    !(product_type.is_empty() || product_type == "Unknown" || product_type.starts_with("Other"))
}

/// Up to `count` queries, a seeded sample of the (colour, product type) pairs
/// with enough items in the catalog and in `split`.
pub fn shopper_queries(catalog: &Catalog, split: Split, count: usize, seed: u64) -> Vec<ShopperQuery> {
    let mut pairs: BTreeMap<(&str, &str), (usize, usize)> = BTreeMap::new();
    let mut type_categories: HashMap<&str, BTreeMap<&str, usize>> = HashMap::new();
    for item in &catalog.items {
        *type_categories.entry(item.subcategory.as_str()).or_default().entry(item.category.as_str()).or_default() += 1;
        let Some(colour) = item.attribute(attr::COLOUR) else { continue };
        if !is_named_colour(colour) || !is_named_type(&item.subcategory) {
            continue;
        }
        let counts = pairs.entry((colour, item.subcategory.as_str())).or_default();
        counts.0 += 1;
        counts.1 += usize::from(catalog.split_of(&item.id) == Some(split));
    }
    let mut queries: Vec<ShopperQuery> = pairs
        .into_iter()
        .filter(|(_, (in_catalog, in_split))| *in_catalog >= MIN_CATALOG_ITEMS && *in_split >= MIN_SPLIT_ITEMS)
        .map(|((colour, product_type), _)| {
            let category = type_categories[product_type]
                .iter()
                .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
                .map(|(category, _)| category.to_string())
                .unwrap_or_default();
            ShopperQuery {
                text: format!("{} {}", colour.to_lowercase(), product_type.to_lowercase()),
                colour: colour.to_string(),
                product_type: product_type.to_string(),
                category,
            }
        })
        .collect();
    queries.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    queries.truncate(count);
    queries
}

/// Precision@10 for colour and type together, colour alone and type alone (percent).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Precisions {
    pub colour_and_type: f64,
    pub colour: f64,
    pub product_type: f64,
}

/// One method's figures on one corpus.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MethodFigures {
    pub method: String,
    pub corpus: String,
    pub precision_at_10: Precisions,
}

/// One query's top results, for reading.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Example {
    pub query: String,
    pub method: String,
    /// "colour / type" of the top results, best first.
    pub top: Vec<String>,
}

/// What `vitrine-index shopper` reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShopperReport {
    pub split: String,
    pub queries: Vec<ShopperQuery>,
    pub corpus_items: BTreeMap<String, usize>,
    pub figures: Vec<MethodFigures>,
    /// Queries whose category intent ranks their product type's category first.
    pub category_intent_hits: usize,
    /// The queries the category intent gets wrong, with the category it puts first.
    pub category_intent_misses: Vec<(String, String)>,
    pub examples: Vec<Example>,
}

#[derive(Debug, thiserror::Error)]
pub enum ShopperError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("MiniLM text embeddings: {0}")]
    Model(#[from] ModelError),
}

/// The top `K` of `corpus` (catalog indices) by `score`, ties broken by a seeded hash of the id.
fn top_k(catalog: &Catalog, corpus: &[usize], score: impl Fn(usize) -> f32, seed: u64) -> Vec<usize> {
    let tie_break = |i: usize| Fnv1a::default().write(&seed.to_le_bytes()).write(catalog.items[i].id.as_bytes()).finish();
    let mut scored: Vec<(f32, u64, usize)> = corpus.iter().map(|&i| (score(i), tie_break(i), i)).collect();
    let k = K.min(scored.len());
    let order = |a: &(f32, u64, usize), b: &(f32, u64, usize)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    if k < scored.len() {
        scored.select_nth_unstable_by(k, order);
        scored.truncate(k);
    }
    scored.sort_by(order);
    scored.into_iter().map(|(_, _, i)| i).collect()
}

fn judge(catalog: &Catalog, query: &ShopperQuery, top: &[usize]) -> [usize; 3] {
    let mut hits = [0usize; 3];
    for &i in top {
        let item = &catalog.items[i];
        let colour = item.attribute(attr::COLOUR) == Some(query.colour.as_str());
        let product_type = item.subcategory == query.product_type;
        hits[0] += usize::from(colour && product_type);
        hits[1] += usize::from(colour);
        hits[2] += usize::from(product_type);
    }
    hits
}

/// Mean hits per query (colour + type, colour, type; expected hits allowed) as precision@K.
fn precisions(hits: impl ExactSizeIterator<Item = [f64; 3]>) -> Precisions {
    let queries = hits.len().max(1);
    let sums = hits.fold([0.0; 3], |sums, h| [sums[0] + h[0], sums[1] + h[1], sums[2] + h[2]]);
    let precision = |j: usize| 100.0 * sums[j] / (K * queries) as f64;
    Precisions { colour_and_type: precision(0), colour: precision(1), product_type: precision(2) }
}

/// The chance line on `corpus`: `K` items of the query's type drawn at random
/// (all of them when fewer), judged in expectation.
fn chance(catalog: &Catalog, queries: &[ShopperQuery], corpus: &[usize]) -> Precisions {
    precisions(queries.iter().map(|q| {
        let of_type: Vec<usize> = corpus.iter().copied().filter(|&i| catalog.items[i].subcategory == q.product_type).collect();
        let right_colour = of_type.iter().filter(|&&i| catalog.items[i].attribute(attr::COLOUR) == Some(q.colour.as_str())).count();
        let drawn = K.min(of_type.len()) as f64;
        let colour = drawn * right_colour as f64 / of_type.len().max(1) as f64;
        [colour, colour, drawn]
    }))
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Runs the queries of `split` against `engine` (a bundle of `catalog`), BM25
/// and `minilm` (the pretrained sentence encoder) on the whole catalog and on
/// `split` alone.
pub fn run_shopper_queries(
    engine: &Engine,
    catalog: &Catalog,
    minilm: &TextEncoder,
    split: Split,
    count: usize,
    seed: u64,
) -> Result<ShopperReport, ShopperError> {
    let queries = shopper_queries(catalog, split, count, seed);
    let bundle_position: HashMap<&str, u32> =
        engine.products().iter().enumerate().map(|(p, product)| (product.id.as_str(), p as u32)).collect();
    let catalog_index: HashMap<u32, usize> =
        catalog.items.iter().enumerate().filter_map(|(i, item)| bundle_position.get(item.id.as_str()).map(|&p| (p, i))).collect();
    // Only items the bundle holds, so that every method ranks the same corpus.
    let whole: Vec<usize> = {
        let mut items: Vec<usize> = catalog_index.values().copied().collect();
        items.sort_unstable();
        items
    };
    let in_split: Vec<usize> = whole.iter().copied().filter(|&i| catalog.split_of(&catalog.items[i].id) == Some(split)).collect();
    let corpora = [("whole catalog".to_string(), &whole), (format!("{} split", split.as_str()), &in_split)];

    let bar = indicatif::ProgressBar::new(whole.len() as u64).with_prefix("MiniLM embeddings of title + description");
    bar.set_style(indicatif::ProgressStyle::with_template("{prefix} {bar:20} {pos}/{len}").expect("valid template"));
    let texts: Vec<String> = catalog.items.iter().map(|item| item.text()).collect();
    let mut minilm_vectors: Vec<Vec<f32>> = vec![Vec::new(); catalog.items.len()];
    for chunk in whole.chunks(64) {
        let batch: Vec<&str> = chunk.iter().map(|&i| texts[i].as_str()).collect();
        for (&i, vector) in chunk.iter().zip(minilm.embed_batch(&batch)?) {
            minilm_vectors[i] = vector;
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let bm25 = Bm25Index::new(&texts);

    let vitrine_vectors: HashMap<usize, Vec<f32>> =
        catalog_index.iter().map(|(&p, &i)| (i, engine.index().item_vector(p).expect("an item of the index"))).collect();
    let methods = ["vitrine (bundle, engine)", "BM25, title + description", "MiniLM, title + description"];
    let mut hits: BTreeMap<(usize, usize), Vec<[usize; 3]>> = BTreeMap::new();
    let mut examples = Vec::new();
    let (mut category_intent_hits, mut category_intent_misses) = (0, Vec::new());
    for query in &queries {
        let vitrine_query = engine.embed_query(&query.text)?;
        let minilm_query = minilm.embed(&query.text)?;
        let bm25_scores = bm25.scores(&query.text);
        for (c, (_, corpus)) in corpora.iter().enumerate() {
            let tops = [
                if c == 0 {
                    // The whole catalog through the shipped path: HNSW and exact re-rank.
                    engine.search(&query.text, K, None)?.iter().map(|h| catalog_index[&h.item]).collect()
                } else {
                    top_k(catalog, corpus, |i| dot(&vitrine_vectors[&i], &vitrine_query), seed)
                },
                top_k(catalog, corpus, |i| bm25_scores[i], seed),
                top_k(catalog, corpus, |i| dot(&minilm_vectors[i], &minilm_query), seed),
            ];
            for (m, top) in tops.iter().enumerate() {
                hits.entry((m, c)).or_default().push(judge(catalog, query, top));
                if c == 0 && examples.len() < methods.len() * EXAMPLE_QUERIES {
                    let top = top
                        .iter()
                        .take(5)
                        .map(|&i| {
                            let item = &catalog.items[i];
                            format!("{} / {}", item.attribute(attr::COLOUR).unwrap_or("?"), item.subcategory)
                        })
                        .collect();
                    examples.push(Example { query: query.text.clone(), method: methods[m].to_string(), top });
                }
            }
        }
        let intent = engine.category_intent(&query.text)?;
        let first = intent.first().map(|&(id, _)| engine.categories()[usize::from(id)].clone()).unwrap_or_default();
        if first == query.category {
            category_intent_hits += 1;
        } else {
            category_intent_misses.push((query.text.clone(), first));
        }
    }

    let mut figures = Vec::new();
    for (c, (corpus_name, corpus)) in corpora.iter().enumerate() {
        for (m, method) in methods.iter().enumerate() {
            let precision_at_10 = precisions(hits[&(m, c)].iter().map(|h| h.map(|n| n as f64)));
            figures.push(MethodFigures { method: method.to_string(), corpus: corpus_name.clone(), precision_at_10 });
        }
        figures.push(MethodFigures {
            method: "chance (right type, colour by chance)".into(),
            corpus: corpus_name.clone(),
            precision_at_10: chance(catalog, &queries, corpus),
        });
    }
    Ok(ShopperReport {
        split: split.as_str().to_string(),
        corpus_items: corpora.iter().map(|(name, corpus)| (name.clone(), corpus.len())).collect(),
        queries,
        figures,
        category_intent_hits,
        category_intent_misses,
        examples,
    })
}

/// The report as Markdown: the precision table, the category intent and the examples.
pub fn shopper_markdown(report: &ShopperReport) -> String {
    let mut out = String::new();
    let corpus_sizes: Vec<String> = report.corpus_items.iter().map(|(name, n)| format!("{name}: {n} items")).collect();
    out.push_str(&format!(
        "{} queries \"<colour> <product type>\" ({}), precision@{K} in percent:\n\n",
        report.queries.len(),
        corpus_sizes.join(", ")
    ));
    out.push_str("| method | corpus | colour + type | colour | type |\n|---|---|---|---|---|\n");
    for f in &report.figures {
        let p = f.precision_at_10;
        out.push_str(&format!("| {} | {} | {:.1} | {:.1} | {:.1} |\n", f.method, f.corpus, p.colour_and_type, p.colour, p.product_type));
    }
    let n = report.queries.len().max(1);
    out.push_str(&format!(
        "\nCategory intent: the query's own category first for {} of {} queries ({:.1}%)",
        report.category_intent_hits,
        report.queries.len(),
        100.0 * report.category_intent_hits as f64 / n as f64
    ));
    let misses: Vec<String> = report.category_intent_misses.iter().take(8).map(|(q, c)| format!("\"{q}\" → {c}")).collect();
    if !misses.is_empty() {
        out.push_str(&format!("; misses include {}", misses.join(", ")));
    }
    out.push_str(
        ".\n\nTop 5 over the whole catalog (colour / type), first queries of the sample:\n\n| query | method | top 5 |\n|---|---|---|\n",
    );
    for e in &report.examples {
        out.push_str(&format!("| {} | {} | {} |\n", e.query, e.method, e.top.join("; ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use vitrine_core::catalog::Item;

    fn item(id: &str, colour: &str, product_type: &str) -> Item {
        Item {
            id: id.into(),
            group_id: id.into(),
            title: format!("{product_type} {id}"),
            description: String::new(),
            category: "Garment".into(),
            subcategory: product_type.into(),
            attributes: [(attr::COLOUR.to_string(), colour.to_string())].into(),
            images: Vec::new(),
            price: None,
            url: None,
            source: Default::default(),
        }
    }

    #[test]
    fn chance_is_the_colour_share_within_the_type_and_ties_never_follow_catalog_order() {
        let mut catalog = Catalog::new("/nowhere");
        for i in 0..20 {
            catalog.items.push(item(&format!("a{i}"), if i < 5 { "Black" } else { "White" }, "Dress"));
        }
        let queries =
            [ShopperQuery { text: "black dress".into(), colour: "Black".into(), product_type: "Dress".into(), category: "Garment".into() }];
        let corpus: Vec<usize> = (0..20).collect();
        let p = chance(&catalog, &queries, &corpus);
        assert!((p.colour_and_type - 25.0).abs() < 1e-9 && (p.product_type - 100.0).abs() < 1e-9, "{p:?}");
        // Every score ties: the seeded order is not the first ten of the catalog.
        let top = top_k(&catalog, &corpus, |_| 1.0, 7);
        assert_eq!(top.len(), K);
        assert_ne!(top, (0..10).collect::<Vec<_>>());
        assert_eq!(judge(&catalog, &queries[0], &(0..10).collect::<Vec<_>>()), [5, 5, 10]);
    }
}
