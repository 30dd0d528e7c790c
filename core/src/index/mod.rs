//! The approximate nearest-neighbour index the browser searches: item vectors
//! in the compact space (256-d by default, any dimension works) stored as int8
//! with one scale per vector ([`quantize`]), an HNSW graph over them
//! ([`hnsw`], built by instant-distance), and an exact re-rank of the graph's
//! candidates with the query at full precision.
//!
//! Scores are inner products of the query with the stored item vectors; for
//! unit vectors (as the index builder writes them) that is cosine similarity.
//! A search walks the graph with the query quantised like the items (int8 ×
//! int8, [`kernel::dot_i8`]), then scores the best `rerank` nodes exactly
//! against the f32 query (f32 × int8, [`kernel::dot_f32_i8`]).
//!
//! Every item has a category id (`u16`, an index into the bundle's category
//! list). A search for one category over-fetches from the graph in proportion
//! to how rare the category is and keeps that category's items; a small
//! category, or one of which too few items survive, is searched exactly over
//! its own items, so a category with at least `k` items always yields `k`.
//!
//! With a [`quantize::Refinement`] (`BuildParams::refine`), the re-rank and
//! exact scores add each item's 4-bit residual code to its int8 one.
//!
//! [`AnnIndex::exact_search`] (int8, every item) and [`exact_search_f32`] (the
//! original vectors) are the references for recall ([`recall`]).

mod encode;
pub mod hnsw;
pub mod kernel;
pub mod quantize;
pub mod synthetic;

use std::cmp::Ordering;

use hnsw::Graph;
use quantize::{quantize_into, QuantizedVectors};

/// The compact space's default dimension.
pub const DEFAULT_DIM: usize = 256;
/// The most dimensions an index takes (int8 sums stay exact in i32 far past it).
pub const MAX_DIM: usize = 16_384;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("vectors must have 1 to {MAX_DIM} dimensions, not {dim}")]
    Dim { dim: usize },
    #[error("{values} values are not a whole number of {dim}-dimensional vectors")]
    Shape { values: usize, dim: usize },
    #[error("item {item} has a value that is not finite")]
    NotFinite { item: usize },
    #[error("{items} items are too many for one index")]
    TooMany { items: usize },
    #[error("{items} items but {categories} category ids")]
    CategoryCount { items: usize, categories: usize },
    #[error("the query has {got} dimensions; the index has {dim}")]
    QueryDim { got: usize, dim: usize },
    #[error("the query has a value that is not finite")]
    QueryNotFinite,
    #[error("the index does not decode: {0}")]
    Decode(#[from] postcard::Error),
    #[error("the index is inconsistent: {0}")]
    Invalid(String),
    #[error("no thread pool for the build: {0}")]
    ThreadPool(String),
}

pub(crate) fn check_dim(dim: usize) -> Result<(), IndexError> {
    if (1..=MAX_DIM).contains(&dim) {
        Ok(())
    } else {
        Err(IndexError::Dim { dim })
    }
}

/// How the graph is built.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BuildParams {
    /// Beam width while inserting (HNSW's `efConstruction`).
    pub ef_construction: usize,
    /// Seeds the layer of every node.
    pub seed: u64,
    /// Fill each node's links up to HNSW's limit with the neighbours that the
    /// diversity heuristic pruned (instant-distance's `keep_pruned`). Off by
    /// default: bench/results/ann.md measured two to three times the links (a
    /// graph twice as large to ship) and a slower build, for recall that the
    /// default reaches anyway with a wider beam (`ef` 64 instead of 40).
    pub keep_pruned: bool,
    /// Insert on all of rayon's threads: faster, but the graph then depends
    /// on thread timing; one thread gives the same graph for the same seed
    /// (so that rebuilt bundle parts keep their content hash).
    pub parallel: bool,
    /// Store a 4-bit [`quantize::Refinement`] of every vector, so that
    /// candidates are re-scored close to the f32 vectors (+50% index bytes
    /// at 256-d; for large, dense catalogs).
    pub refine: bool,
}

impl Default for BuildParams {
    fn default() -> Self {
        BuildParams { ef_construction: 100, seed: 0x7669_7472_696e_6521, keep_pruned: false, parallel: false, refine: false }
    }
}

/// How a query is answered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SearchParams {
    /// Beam width on the graph's bottom layer (HNSW's `ef`); at least `k` is used.
    pub ef: usize,
    /// How many of the graph's nearest nodes are scored exactly; at least `k`.
    pub rerank: usize,
    /// A category with at most this many items is searched exactly over its
    /// items instead of through the graph. Scoring an item exactly costs a
    /// twentieth (11.8k items) to a hundredth (100k) of widening the beam by
    /// one, so an exact search of a category beats over-fetching from the
    /// graph, in time and recall, until the category is a large share of a
    /// large catalog (bench/results/ann.md).
    pub exact_category_below: usize,
}

impl Default for SearchParams {
    fn default() -> Self {
        SearchParams { ef: 100, rerank: 100, exact_category_below: 32_768 }
    }
}

/// One result: an item and its score (inner product with the query).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    pub item: u32,
    pub score: f32,
}

/// Best first: higher score, then lower item number.
fn best_first(a: &Hit, b: &Hit) -> Ordering {
    b.score.total_cmp(&a.score).then(a.item.cmp(&b.item))
}

/// Keeps the `k` best hits, sorted best first.
fn top_k(mut hits: Vec<Hit>, k: usize) -> Vec<Hit> {
    if hits.len() > k && k > 0 {
        hits.select_nth_unstable_by(k - 1, best_first);
    }
    hits.truncate(k);
    hits.sort_unstable_by(best_first);
    hits
}

/// The int8 vectors, their categories and the graph over them.
#[derive(Debug, Clone, PartialEq)]
pub struct AnnIndex {
    vectors: QuantizedVectors,
    categories: Vec<u16>,
    /// The items of each category id, ascending (derived from `categories`).
    category_items: Vec<Vec<u32>>,
    graph: Graph,
}

impl AnnIndex {
    /// Quantises `vectors` (`n × dim` f32, row after row) and builds the
    /// graph; `categories` holds each item's category id.
    pub fn build(dim: usize, vectors: &[f32], categories: Vec<u16>, params: &BuildParams) -> Result<Self, IndexError> {
        let mut quantized = QuantizedVectors::quantize(dim, vectors)?;
        if params.refine {
            quantized.refine(vectors)?;
        }
        Self::from_quantized(quantized, categories, params)
    }

    /// Builds the graph over already quantised vectors.
    pub fn from_quantized(vectors: QuantizedVectors, categories: Vec<u16>, params: &BuildParams) -> Result<Self, IndexError> {
        let graph = Graph::build(&vectors, params)?;
        Self::from_parts(vectors, categories, graph)
    }

    fn from_parts(vectors: QuantizedVectors, categories: Vec<u16>, graph: Graph) -> Result<Self, IndexError> {
        if categories.len() != vectors.len() {
            return Err(IndexError::CategoryCount { items: vectors.len(), categories: categories.len() });
        }
        if graph.items().len() != vectors.len() {
            return Err(IndexError::Invalid(format!("a graph of {} nodes for {} items", graph.items().len(), vectors.len())));
        }
        // Ids are u16, so this allocates at most 65536 lists.
        let count = categories.iter().map(|&c| usize::from(c) + 1).max().unwrap_or(0);
        let mut category_items = vec![Vec::new(); count];
        for (item, &category) in categories.iter().enumerate() {
            category_items[usize::from(category)].push(item as u32);
        }
        Ok(AnnIndex { vectors, categories, category_items, graph })
    }

    pub fn len(&self) -> usize {
        self.vectors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.vectors.is_empty()
    }

    pub fn dim(&self) -> usize {
        self.vectors.dim()
    }

    pub fn vectors(&self) -> &QuantizedVectors {
        &self.vectors
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Each item's category id.
    pub fn categories(&self) -> &[u16] {
        &self.categories
    }

    /// One more than the highest category id in use.
    pub fn category_count(&self) -> usize {
        self.category_items.len()
    }

    /// The items of a category, ascending; empty for an unknown id.
    pub fn items_in_category(&self, category: u16) -> &[u32] {
        self.category_items.get(usize::from(category)).map_or(&[], Vec::as_slice)
    }

    /// An item's vector as stored (dequantised), e.g. as the query for
    /// similar items. `None` past the last item.
    pub fn item_vector(&self, item: u32) -> Option<Vec<f32>> {
        ((item as usize) < self.len()).then(|| self.vectors.dequantize(item as usize))
    }

    fn check_query(&self, query: &[f32]) -> Result<(), IndexError> {
        if query.len() != self.dim() {
            return Err(IndexError::QueryDim { got: query.len(), dim: self.dim() });
        }
        if query.iter().any(|x| !x.is_finite()) {
            return Err(IndexError::QueryNotFinite);
        }
        Ok(())
    }

    /// The `k` items (of `category`, when given) with the highest scores
    /// that the graph finds, best first. Fewer only when fewer items match.
    pub fn search(&self, query: &[f32], k: usize, category: Option<u16>, params: &SearchParams) -> Result<Vec<Hit>, IndexError> {
        self.check_query(query)?;
        let Some(category) = category else {
            return Ok(self.graph_search(query, k, params.ef, params.rerank, |_| true));
        };
        let members = self.items_in_category(category);
        if members.len() <= params.exact_category_below.max(k) {
            return Ok(self.score_exactly(query, k, members.iter().copied()));
        }
        // A category of a tenth of the items needs about ten times the beam
        // for as many of its items to show up among the nearest nodes.
        let ef = params.ef.max(k).saturating_mul(self.len().div_ceil(members.len())).min(self.len());
        let hits = self.graph_search(query, k, ef, params.rerank.max(ef), |item| self.categories[item as usize] == category);
        if hits.len() < k {
            return Ok(self.score_exactly(query, k, members.iter().copied()));
        }
        Ok(hits)
    }

    fn graph_search(&self, query: &[f32], k: usize, ef: usize, rerank: usize, keep: impl Fn(u32) -> bool) -> Vec<Hit> {
        let mut codes = vec![0i8; self.dim()];
        let scale = quantize_into(query, &mut codes);
        let nearest = self.graph.search(|item| hnsw::distance(&self.vectors, &codes, scale, item), ef.max(k));
        let candidates = nearest.iter().map(|c| self.graph.item(c.node)).filter(|&item| keep(item)).take(rerank.max(k));
        self.score_exactly(query, k, candidates)
    }

    fn score_exactly(&self, query: &[f32], k: usize, items: impl Iterator<Item = u32>) -> Vec<Hit> {
        top_k(items.map(|item| Hit { item, score: self.vectors.score(query, item as usize) }).collect(), k)
    }

    /// The exact `k` best items (of `category`, when given) by the same
    /// scores as [`AnnIndex::search`], comparing the query with every item.
    pub fn exact_search(&self, query: &[f32], k: usize, category: Option<u16>) -> Result<Vec<Hit>, IndexError> {
        self.check_query(query)?;
        Ok(match category {
            Some(category) => self.score_exactly(query, k, self.items_in_category(category).iter().copied()),
            None => self.score_exactly(query, k, 0..self.len() as u32),
        })
    }
}

/// The exact `k` best of `vectors` (`n × dim` f32, row after row) by inner
/// product with `query`: the reference the quantised index is measured against.
pub fn exact_search_f32(dim: usize, vectors: &[f32], query: &[f32], k: usize) -> Vec<Hit> {
    let hits = vectors
        .chunks_exact(dim)
        .enumerate()
        .map(|(item, xs)| Hit { item: item as u32, score: xs.iter().zip(query).map(|(x, q)| x * q).sum() })
        .collect();
    top_k(hits, k)
}

/// The share of `reference` items that `found` contains (recall@k for
/// `k = reference.len()`); 1 for an empty reference.
pub fn recall(found: &[Hit], reference: &[Hit]) -> f64 {
    if reference.is_empty() {
        return 1.0;
    }
    let hits = reference.iter().filter(|r| found.iter().any(|f| f.item == r.item)).count();
    hits as f64 / reference.len() as f64
}
