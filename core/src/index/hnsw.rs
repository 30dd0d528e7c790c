//! The HNSW graph: built by instant-distance 0.6.1, searched here.
//!
//! instant-distance builds the graph (its neighbour-selection heuristic and
//! layer assignment). Its own search is not used because it fixes `ef` when the
//! graph is built, keeps a copy of every point inside the graph, and indexes
//! its arrays unchecked, which a graph decoded from a damaged file must not
//! allow. So after the build the graph is taken out through instant-distance's
//! serde support (its points serialise as our item numbers) into [`Graph`], and
//! [`Graph::search`] repeats instant-distance's search step for step, with `ef`
//! chosen per query; a test checks that both return the same neighbours.
//!
//! Nodes are numbered in instant-distance's order (nodes of the upper layers
//! first, the entry point is node 0): layer `l` holds nodes `0..nodes(l)`;
//! [`Graph::item`] maps a node to its item.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use instant_distance::{Builder, Heuristic, Point};
use serde::{Deserialize, Serialize, Serializer};
use serde_big_array::BigArray;

use super::quantize::QuantizedVectors;
use super::{BuildParams, IndexError};

/// instant-distance's `M`: links per node on the upper layers; layer 0 has `2M`.
pub const M: usize = 32;

/// The distance the graph is built and searched with: one minus the inner
/// product of two quantised vectors (cosine distance for unit vectors).
pub fn distance(vectors: &QuantizedVectors, codes: &[i8], scale: f32, item: usize) -> f32 {
    1.0 - vectors.score_quantized(codes, scale, item)
}

/// The adjacency lists of one layer.
#[derive(Debug, Clone, PartialEq)]
pub struct Layer {
    /// `offsets[node]..offsets[node + 1]` index `neighbours`.
    offsets: Vec<u32>,
    neighbours: Vec<u32>,
}

impl Layer {
    /// A layer from each node's neighbour list; see [`Layer::from_degrees`].
    pub fn from_lists<'a>(lists: impl IntoIterator<Item = &'a [u32]>, max_links: usize) -> Result<Self, IndexError> {
        let mut degrees = Vec::new();
        let mut neighbours = Vec::new();
        for list in lists {
            degrees.push(list.len());
            neighbours.extend_from_slice(list);
        }
        Layer::from_degrees(degrees, neighbours, max_links)
    }

    /// A layer from the number of links of each node and all links, node after
    /// node, checked: at most `max_links` a node, each to a node of the layer.
    /// Each node's links are kept in ascending order: the order never changes
    /// what a search finds, and a fixed one makes equal graphs compare equal.
    pub fn from_degrees(degrees: impl IntoIterator<Item = usize>, mut neighbours: Vec<u32>, max_links: usize) -> Result<Self, IndexError> {
        let mut offsets = vec![0u32];
        let mut end = 0usize;
        for degree in degrees {
            if degree > max_links {
                return Err(IndexError::Invalid(format!("node {} has {degree} links, over {max_links}", offsets.len() - 1)));
            }
            end += degree;
            offsets.push(u32::try_from(end).map_err(|_| IndexError::Invalid("over 2³² links in one layer".into()))?);
        }
        if end != neighbours.len() {
            return Err(IndexError::Invalid(format!("a layer's nodes have {end} links in all, but it lists {}", neighbours.len())));
        }
        for pair in offsets.windows(2) {
            neighbours[pair[0] as usize..pair[1] as usize].sort_unstable();
        }
        let nodes = offsets.len() - 1;
        if let Some(&bad) = neighbours.iter().find(|&&n| n as usize >= nodes) {
            return Err(IndexError::Invalid(format!("a link to node {bad} in a layer of {nodes} nodes")));
        }
        Ok(Layer { offsets, neighbours })
    }

    pub fn nodes(&self) -> usize {
        self.offsets.len() - 1
    }

    pub fn neighbours(&self, node: u32) -> &[u32] {
        let node = node as usize;
        &self.neighbours[self.offsets[node] as usize..self.offsets[node + 1] as usize]
    }

    pub fn links(&self) -> usize {
        self.neighbours.len()
    }
}

/// An HNSW graph over the items of a [`QuantizedVectors`].
#[derive(Debug, Clone, PartialEq)]
pub struct Graph {
    /// The item of each node.
    items: Vec<u32>,
    /// Layer 0 (every node) first, then the upper layers, each a prefix of
    /// the one below.
    layers: Vec<Layer>,
}

impl Graph {
    /// Builds the graph of `vectors` with instant-distance.
    pub fn build(vectors: &QuantizedVectors, params: &BuildParams) -> Result<Self, IndexError> {
        let count = u32::try_from(vectors.len()).ok().filter(|&n| n < u32::MAX).ok_or(IndexError::TooMany { items: vectors.len() })?;
        let points: Vec<BuildPoint> = (0..count).map(|item| BuildPoint { vectors, item }).collect();
        let builder = Builder::default()
            .seed(params.seed)
            .ef_construction(params.ef_construction)
            .select_heuristic(Some(Heuristic { extend_candidates: false, keep_pruned: params.keep_pruned }));
        let hnsw = in_thread_pool(params.parallel, || builder.build_hnsw(points).0)?;
        let bytes = postcard::to_allocvec(&hnsw).expect("serialising to memory cannot fail");
        let built: BuiltGraph = postcard::from_bytes(&bytes).expect("instant-distance 0.6.1's serde layout");
        Graph::from_built(built)
    }

    fn from_built(built: BuiltGraph) -> Result<Self, IndexError> {
        let valid = |list: &[u32]| list.iter().position(|&n| n == u32::MAX).unwrap_or(list.len());
        let mut layers = vec![Layer::from_lists(built.zero.iter().map(|node| &node.0[..valid(&node.0)]), 2 * M)?];
        // instant-distance lists its upper layers from the lowest up.
        for upper in &built.layers {
            layers.push(Layer::from_lists(upper.iter().map(|node| &node.0[..valid(&node.0)]), M)?);
        }
        let item_count = built.points.len();
        Graph::from_parts(built.points, if item_count == 0 { Vec::new() } else { layers })
    }

    /// Takes decoded parts, checking what a search relies on beyond each
    /// [`Layer`]'s own checks: the nodes are a permutation of the items, layer
    /// 0 holds every node, each upper layer a non-empty prefix of the one below.
    pub fn from_parts(items: Vec<u32>, layers: Vec<Layer>) -> Result<Self, IndexError> {
        let n = items.len();
        let mut seen = vec![false; n];
        for &item in &items {
            match seen.get_mut(item as usize) {
                Some(slot) if !*slot => *slot = true,
                _ => return Err(IndexError::Invalid(format!("the graph's node list names item {item} twice or out of 0..{n}"))),
            }
        }
        match layers.first() {
            None if n > 0 => return Err(IndexError::Invalid(format!("{n} items but no graph"))),
            Some(zero) if zero.nodes() != n => {
                return Err(IndexError::Invalid(format!("layer 0 has {} nodes for {n} items", zero.nodes())))
            }
            _ => {}
        }
        for (level, pair) in layers.windows(2).enumerate() {
            if pair[1].nodes() == 0 || pair[1].nodes() > pair[0].nodes() {
                return Err(IndexError::Invalid(format!(
                    "layer {} has {} nodes, layer {level} {}",
                    level + 1,
                    pair[1].nodes(),
                    pair[0].nodes()
                )));
            }
        }
        Ok(Graph { items, layers })
    }

    pub fn items(&self) -> &[u32] {
        &self.items
    }

    pub fn item(&self, node: u32) -> u32 {
        self.items[node as usize]
    }

    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// The `ef` nodes nearest to a query by `distance_to_item` (nearest
    /// first), found as instant-distance searches: greedy on the upper layers
    /// from node 0, then a beam of width `ef` on layer 0.
    pub fn search(&self, distance_to_item: impl Fn(usize) -> f32, ef: usize) -> Vec<Candidate> {
        if self.items.is_empty() {
            return Vec::new();
        }
        let mut search = Search::new(self.items.len(), |node: u32| distance_to_item(self.items[node as usize] as usize));
        search.push(0);
        for (level, layer) in self.layers.iter().enumerate().rev() {
            search.ef = if level == 0 { ef.max(1) } else { 1 };
            search.search(layer);
            if level > 0 {
                search.cull();
            }
        }
        search.nearest
    }
}

/// A node and its distance to the query; ordered by distance, then node.
#[derive(Debug, Clone, Copy)]
pub struct Candidate {
    pub distance: f32,
    pub node: u32,
}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        self.distance.total_cmp(&other.distance).then(self.node.cmp(&other.node))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Candidate {}

/// instant-distance's search state (`Search` in its lib.rs), with a bit set
/// for the visited nodes.
struct Search<D> {
    distance: D,
    visited: Vec<u64>,
    candidates: BinaryHeap<Reverse<Candidate>>,
    /// Sorted, nearest first.
    nearest: Vec<Candidate>,
    ef: usize,
}

impl<D: Fn(u32) -> f32> Search<D> {
    fn new(nodes: usize, distance: D) -> Self {
        Search { distance, visited: vec![0; nodes.div_ceil(64)], candidates: BinaryHeap::new(), nearest: Vec::new(), ef: 1 }
    }

    /// Whether `node` was not visited before; marks it.
    fn visit(&mut self, node: u32) -> bool {
        let (word, bit) = (node as usize / 64, 1u64 << (node % 64));
        let fresh = self.visited[word] & bit == 0;
        self.visited[word] |= bit;
        fresh
    }

    fn push(&mut self, node: u32) {
        if !self.visit(node) {
            return;
        }
        let candidate = Candidate { distance: (self.distance)(node), node };
        // A visited node is never pushed twice, so it cannot be found.
        let at = self.nearest.binary_search(&candidate).unwrap_or_else(|at| at);
        if at < self.ef {
            self.nearest.insert(at, candidate);
            self.candidates.push(Reverse(candidate));
        }
    }

    fn search(&mut self, layer: &Layer) {
        while let Some(Reverse(candidate)) = self.candidates.pop() {
            if self.nearest.last().is_some_and(|furthest| candidate.distance > furthest.distance) {
                break;
            }
            for &neighbour in layer.neighbours(candidate.node) {
                self.push(neighbour);
            }
            self.nearest.truncate(self.ef);
        }
    }

    /// Goes down a layer: the nearest nodes so far are the entry points.
    fn cull(&mut self) {
        self.candidates.clear();
        self.candidates.extend(self.nearest.iter().map(|&c| Reverse(c)));
        self.visited.fill(0);
        for node in self.nearest.iter().map(|c| c.node).collect::<Vec<_>>() {
            self.visit(node);
        }
    }
}

/// What instant-distance builds on: an item of the vectors being indexed.
/// It serialises as the item number, which is how the built graph tells which
/// item each node is.
#[derive(Clone, Copy)]
pub struct BuildPoint<'a> {
    pub vectors: &'a QuantizedVectors,
    pub item: u32,
}

impl Point for BuildPoint<'_> {
    fn distance(&self, other: &Self) -> f32 {
        let item = self.item as usize;
        distance(other.vectors, self.vectors.codes(item), self.vectors.scale(item), other.item as usize)
    }
}

impl Serialize for BuildPoint<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u32(self.item)
    }
}

/// instant-distance 0.6.1's `Hnsw` as its serde derive writes it (fields in
/// order; `PointId` is a `u32` newtype, `u32::MAX` ends a short list).
#[derive(Deserialize)]
struct BuiltGraph {
    #[serde(rename = "ef_search")]
    _ef_search: usize,
    points: Vec<u32>,
    zero: Vec<ZeroNode>,
    layers: Vec<Vec<UpperNode>>,
}

#[derive(Deserialize)]
struct ZeroNode(#[serde(with = "BigArray")] [u32; 2 * M]);

#[derive(Deserialize)]
struct UpperNode(#[serde(with = "BigArray")] [u32; M]);

/// Runs `build` in a pool of one thread (the same graph for the same seed:
/// instant-distance inserts in parallel otherwise) or, when `parallel`, in
/// rayon's global pool. WebAssembly has no threads to choose from.
fn in_thread_pool<T: Send>(parallel: bool, build: impl FnOnce() -> T + Send) -> Result<T, IndexError> {
    #[cfg(not(target_arch = "wasm32"))]
    if !parallel {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().map_err(|e| IndexError::ThreadPool(e.to_string()))?;
        return Ok(pool.install(build));
    }
    #[cfg(target_arch = "wasm32")]
    let _ = parallel;
    Ok(build())
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::index::quantize::quantize_into;

    fn random_vectors(n: usize, dim: usize, seed: u64) -> QuantizedVectors {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let values: Vec<f32> = (0..n * dim).map(|_| rng.gen_range(-1.0..1.0)).collect();
        QuantizedVectors::quantize(dim, &values).unwrap()
    }

    /// Our search over the extracted graph returns exactly what
    /// instant-distance's own search returns, for the `ef` it was built with.
    #[test]
    fn search_matches_instant_distance() {
        let (dim, ef) = (24, 40);
        let vectors = random_vectors(1500, dim, 1);
        let queries = random_vectors(40, dim, 2);
        let params = BuildParams { ef_construction: ef, ..BuildParams::default() };
        let points: Vec<BuildPoint> = (0..vectors.len() as u32).map(|item| BuildPoint { vectors: &vectors, item }).collect();
        let heuristic = Heuristic { extend_candidates: false, keep_pruned: params.keep_pruned };
        let builder = Builder::default().seed(params.seed).ef_construction(ef).ef_search(ef).select_heuristic(Some(heuristic));
        let theirs = in_thread_pool(false, || builder.build_hnsw(points).0).unwrap();
        let ours = Graph::build(&vectors, &params).unwrap();
        assert_eq!(ours.items().len(), 1500);
        assert!(ours.layers().len() >= 2, "1500 points make more than one layer");
        let mut search = instant_distance::Search::default();
        for q in 0..queries.len() as u32 {
            let query = BuildPoint { vectors: &queries, item: q };
            let expected: Vec<(u32, f32)> = theirs.search(&query, &mut search).map(|hit| (hit.point.item, hit.distance)).collect();
            let (codes, scale) = (queries.codes(q as usize), queries.scale(q as usize));
            let got: Vec<(u32, f32)> =
                ours.search(|item| distance(&vectors, codes, scale, item), ef).iter().map(|c| (ours.item(c.node), c.distance)).collect();
            assert_eq!(got, expected, "query {q}");
        }
    }

    #[test]
    fn the_same_seed_builds_the_same_graph() {
        let vectors = random_vectors(800, 16, 3);
        let params = BuildParams { ef_construction: 30, ..BuildParams::default() };
        let a = Graph::build(&vectors, &params).unwrap();
        assert_eq!(a, Graph::build(&vectors, &params).unwrap());
        assert_ne!(a, Graph::build(&vectors, &BuildParams { seed: params.seed + 1, ..params }).unwrap());
    }

    #[test]
    fn small_and_empty_graphs() {
        let empty = Graph::build(&random_vectors(0, 8, 4), &BuildParams::default()).unwrap();
        assert!(empty.layers().is_empty() && empty.search(|_| 0.0, 10).is_empty());
        let vectors = random_vectors(3, 8, 5);
        let graph = Graph::build(&vectors, &BuildParams::default()).unwrap();
        let mut codes = vec![0i8; 8];
        let scale = quantize_into(&vectors.dequantize(2), &mut codes);
        let found = graph.search(|item| distance(&vectors, &codes, scale, item), 10);
        assert_eq!(found.len(), 3);
        assert_eq!(graph.item(found[0].node), 2, "an item is nearest to itself");
    }

    #[test]
    fn damaged_parts_are_rejected() {
        let layer = |lists: &[&[u32]]| Layer::from_lists(lists.iter().copied(), 2 * M).unwrap();
        assert!(Layer::from_lists([&[0u32, 5][..], &[0]], 2 * M).is_err(), "link out of the layer");
        assert!(Graph::from_parts(vec![0, 0], vec![layer(&[&[1], &[0]])]).is_err(), "item twice");
        assert!(Graph::from_parts(vec![0, 2], vec![layer(&[&[1], &[0]])]).is_err(), "item out of range");
        assert!(Graph::from_parts(vec![0, 1], vec![]).is_err(), "no layer");
        assert!(Graph::from_parts(vec![0, 1], vec![layer(&[&[]])]).is_err(), "layer 0 too small");
        let zero = layer(&[&[1], &[0]]);
        assert!(Graph::from_parts(vec![1, 0], vec![zero.clone(), layer(&[&[1], &[0], &[0]])]).is_err(), "upper layer too large");
        assert!(Graph::from_parts(vec![1, 0], vec![zero.clone(), layer(&[])]).is_err(), "empty upper layer");
        assert!(Graph::from_parts(vec![1, 0], vec![zero, layer(&[&[]])]).is_ok());
    }
}
