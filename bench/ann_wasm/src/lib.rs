//! Benchmark only (bench/ann_wasm.sh, bench/ann_wasm.mjs): the shipped index
//! code, `vitrine_core::index::AnnIndex` decoded from the bundle's `index`
//! part encoding and searched with `AnnIndex::search` and `SearchParams`,
//! exported to JavaScript so that node can time one search at a time in
//! WebAssembly. Nothing here is part of the engine (wasm/) or its API.
//!
//! The queries and the f32 item vectors are copied into wasm memory once;
//! each timed call names a query by its number and keeps its result ids for
//! [`AnnBench::last`], read after the clock stops. The references:
//! `AnnIndex::exact_search` (every item, int8 codes scored against the f32
//! query, as the re-rank scores them), `vitrine_core::index::exact_search_f32`
//! (the project's reference f32 scan, a plain loop) and a bench-local f32 scan
//! with 16 independent partial sums, which LLVM turns into simd128 code
//! (what a tuned brute-force f32 scan costs).

use vitrine_core::index::{exact_search_f32, AnnIndex, Hit, SearchParams};
use wasm_bindgen::prelude::*;

#[wasm_bindgen]
pub struct AnnBench {
    index: AnnIndex,
    vectors: Vec<f32>,
    queries: Vec<f32>,
    last: Vec<u32>,
    last_scores: Vec<f32>,
}

fn js(e: impl std::fmt::Display) -> JsError {
    JsError::new(&e.to_string())
}

/// `Σ a[i] · b[i]` with 16 independent partial sums (vectorised without reassociation).
fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 16;
    let mut acc = [0f32; LANES];
    for (x, y) in a.chunks_exact(LANES).zip(b.chunks_exact(LANES)) {
        for lane in 0..LANES {
            acc[lane] += x[lane] * y[lane];
        }
    }
    let tail = a.len() - a.len() % LANES;
    let rest: f32 = a[tail..].iter().zip(&b[tail..]).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + rest
}

/// The `k` best of `hits`, best first (higher score, then lower item), as core's top-k.
fn top_k(mut hits: Vec<Hit>, k: usize) -> Vec<Hit> {
    let order = |a: &Hit, b: &Hit| b.score.total_cmp(&a.score).then(a.item.cmp(&b.item));
    if hits.len() > k && k > 0 {
        hits.select_nth_unstable_by(k - 1, order);
    }
    hits.truncate(k);
    hits.sort_unstable_by(order);
    hits
}

#[wasm_bindgen]
impl AnnBench {
    /// Decodes an index in the bundle's `index` part encoding (`AnnIndex::from_bytes`).
    #[wasm_bindgen(constructor)]
    pub fn new(index_bytes: &[u8]) -> Result<AnnBench, JsError> {
        let index = AnnIndex::from_bytes(index_bytes).map_err(js)?;
        Ok(AnnBench { index, vectors: Vec::new(), queries: Vec::new(), last: Vec::new(), last_scores: Vec::new() })
    }

    /// Decodes an index and drops it: the load time alone.
    pub fn decode_only(index_bytes: &[u8]) -> Result<usize, JsError> {
        Ok(AnnIndex::from_bytes(index_bytes).map_err(js)?.len())
    }

    /// The number of indexed items.
    pub fn items(&self) -> usize {
        self.index.len()
    }

    pub fn dim(&self) -> usize {
        self.index.dim()
    }

    /// The items' original f32 vectors (`len × dim`), for the f32 scans.
    pub fn set_vectors(&mut self, vectors: Vec<f32>) -> Result<(), JsError> {
        if vectors.len() != self.index.len() * self.index.dim() {
            return Err(js(format!("{} values for {} items of {} dims", vectors.len(), self.index.len(), self.index.dim())));
        }
        self.vectors = vectors;
        Ok(())
    }

    /// The queries (`count × dim`); returns the count.
    pub fn set_queries(&mut self, queries: Vec<f32>) -> Result<usize, JsError> {
        if queries.len() % self.index.dim() != 0 {
            return Err(js("the queries are not a whole number of vectors"));
        }
        self.queries = queries;
        Ok(self.queries.len() / self.index.dim())
    }

    fn query(&self, q: usize) -> &[f32] {
        let dim = self.index.dim();
        &self.queries[q * dim..(q + 1) * dim]
    }

    fn keep(&mut self, hits: Vec<Hit>) -> usize {
        self.last.clear();
        self.last.extend(hits.iter().map(|h| h.item));
        self.last_scores.clear();
        self.last_scores.extend(hits.iter().map(|h| h.score));
        self.last.len()
    }

    /// The shipped search path: `AnnIndex::search(query, k, None, SearchParams { ef, rerank, .. })`.
    pub fn search(&mut self, q: usize, k: usize, ef: usize, rerank: usize) -> Result<usize, JsError> {
        let params = SearchParams { ef, rerank, ..SearchParams::default() };
        let hits = self.index.search(self.query(q), k, None, &params).map_err(js)?;
        Ok(self.keep(hits))
    }

    /// The engine's own call: `AnnIndex::search` with `SearchParams::default()`.
    pub fn search_default(&mut self, q: usize, k: usize) -> Result<usize, JsError> {
        let hits = self.index.search(self.query(q), k, None, &SearchParams::default()).map_err(js)?;
        Ok(self.keep(hits))
    }

    /// Not the shipped path, a diagnostic: the shipped search's `ef` best
    /// (`AnnIndex::search` with k = ef), re-scored against the items' f32
    /// vectors, the `k` best kept. Says whether the graph's candidates hold the
    /// exact f32 top k, i.e. what a re-rank with finer item vectors would reach.
    pub fn search_f32_rerank(&mut self, q: usize, k: usize, ef: usize) -> Result<usize, JsError> {
        let params = SearchParams { ef, rerank: ef, ..SearchParams::default() };
        let candidates = self.index.search(self.query(q), ef.max(k), None, &params).map_err(js)?;
        let dim = self.index.dim();
        let query = self.query(q);
        let hits = candidates
            .iter()
            .map(|c| {
                let at = c.item as usize * dim;
                Hit { item: c.item, score: dot_f32(&self.vectors[at..at + dim], query) }
            })
            .collect();
        let hits = top_k(hits, k);
        Ok(self.keep(hits))
    }

    /// Exact int8 scan: `AnnIndex::exact_search` over every item.
    pub fn exact_int8(&mut self, q: usize, k: usize) -> Result<usize, JsError> {
        let hits = self.index.exact_search(self.query(q), k, None).map_err(js)?;
        Ok(self.keep(hits))
    }

    /// Exact f32 scan, the project's reference loop (`exact_search_f32`): the ground truth.
    pub fn exact_f32(&mut self, q: usize, k: usize) -> usize {
        let hits = exact_search_f32(self.index.dim(), &self.vectors, self.query(q), k);
        self.keep(hits)
    }

    /// Exact f32 scan with a vectorised dot product (bench-local).
    pub fn exact_f32_simd(&mut self, q: usize, k: usize) -> usize {
        let dim = self.index.dim();
        let query = self.query(q);
        let hits =
            self.vectors.chunks_exact(dim).enumerate().map(|(item, xs)| Hit { item: item as u32, score: dot_f32(xs, query) }).collect();
        let hits = top_k(hits, k);
        self.keep(hits)
    }

    /// The items of the last call, best first.
    pub fn last(&self) -> Vec<u32> {
        self.last.clone()
    }

    /// Their scores.
    pub fn last_scores(&self) -> Vec<f32> {
        self.last_scores.clone()
    }
}
