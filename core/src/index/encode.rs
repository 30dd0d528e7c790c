//! The index as bytes: the bundle's `index` part.
//!
//! Encoding: [postcard] 1.x (its wire format is stable: integers `u16`/`u32`/
//! `usize` as LEB128 varints, `f32` as 4 little-endian bytes, a sequence or
//! byte string as a varint length then its elements) of this structure, in
//! this field order:
//!
//! | field | type | what |
//! |---|---|---|
//! | `dim` | u32 | dimensions of every vector |
//! | `codes` | bytes | `n × dim` int8 codes (two's complement), item after item |
//! | `scales` | seq of f32 | one per item |
//! | `categories` | seq of u16 | each item's category id |
//! | `nodes` | seq of u32 | the item of each graph node (a permutation of `0..n`) |
//! | `layers` | seq of layer | layer 0 (all `n` nodes) first, then each upper layer |
//!
//! optionally followed (bundle format 2) by the vectors' refinement
//! ([`super::quantize::Refinement`]), in the same encoding:
//!
//! | field | type | what |
//! |---|---|---|
//! | `packed` | bytes | `n × ⌈dim / 2⌉` bytes: two 4-bit codes each, stored as v + 8, the even dimension low |
//! | `scales` | seq of f32 | one per item |
//!
//! A layer is `degrees` (bytes: the number of links of each of its nodes)
//! followed by `links` (seq of u32): each node's neighbour list sorted
//! ascending and written as gaps (the first neighbour, then each difference to
//! the previous one), so that the varints stay short.
//!
//! Decoding never allocates much more than the input: postcard checks every
//! byte string against the bytes left and serde pre-allocates at most 1 MiB
//! for a sequence whose length it has not yet seen through; everything is then
//! checked ([`super::hnsw::Graph::from_parts`]) before a search can use it.

use serde::{Deserialize, Serialize};

use super::hnsw::{Graph, Layer, M};
use super::quantize::QuantizedVectors;
use super::{AnnIndex, IndexError};

#[derive(Serialize, Deserialize)]
struct IndexFile {
    dim: u32,
    #[serde(with = "serde_bytes")]
    codes: Vec<u8>,
    scales: Vec<f32>,
    categories: Vec<u16>,
    nodes: Vec<u32>,
    layers: Vec<LayerFile>,
}

#[derive(Serialize, Deserialize)]
struct RefinementFile {
    #[serde(with = "serde_bytes")]
    packed: Vec<u8>,
    scales: Vec<f32>,
}

#[derive(Serialize, Deserialize)]
struct LayerFile {
    #[serde(with = "serde_bytes")]
    degrees: Vec<u8>,
    links: Vec<u32>,
}

impl LayerFile {
    fn encode(layer: &Layer) -> Self {
        let mut degrees = Vec::with_capacity(layer.nodes());
        let mut links = Vec::with_capacity(layer.links());
        for node in 0..layer.nodes() as u32 {
            // Layers keep links ascending, so the gaps are never negative; at
            // most 2M = 64 links make the degree fit a byte.
            let neighbours = layer.neighbours(node);
            degrees.push(neighbours.len() as u8);
            let mut previous = 0;
            links.extend(neighbours.iter().map(|&n| n - std::mem::replace(&mut previous, n)));
        }
        LayerFile { degrees, links }
    }

    fn decode(self, max_links: usize) -> Result<Layer, IndexError> {
        let LayerFile { degrees, links } = self;
        let mut neighbours = links;
        let mut gaps = neighbours.iter_mut();
        for &degree in &degrees {
            // Back from gaps to neighbours, in place; a count past the links
            // is caught by Layer::from_degrees.
            let mut previous = 0u32;
            for link in gaps.by_ref().take(usize::from(degree)) {
                previous = previous.checked_add(*link).ok_or_else(|| IndexError::Invalid("a link past 2³²".into()))?;
                *link = previous;
            }
        }
        Layer::from_degrees(degrees.iter().map(|&d| usize::from(d)), neighbours, max_links)
    }
}

impl AnnIndex {
    /// The index in its file encoding (see the module documentation).
    pub fn to_bytes(&self) -> Vec<u8> {
        let file = IndexFile {
            dim: self.dim() as u32,
            codes: self.vectors.all_codes().iter().map(|&c| c as u8).collect(),
            scales: self.vectors.scales().to_vec(),
            categories: self.categories.clone(),
            nodes: self.graph.items().to_vec(),
            layers: self.graph.layers().iter().map(LayerFile::encode).collect(),
        };
        let mut bytes = postcard::to_allocvec(&file).expect("serialising to memory cannot fail");
        if let Some((packed, scales)) = self.vectors.refinement() {
            let refinement = RefinementFile { packed: packed.to_vec(), scales: scales.to_vec() };
            bytes.extend(postcard::to_allocvec(&refinement).expect("serialising to memory cannot fail"));
        }
        bytes
    }

    /// Reads [`AnnIndex::to_bytes`]'s encoding, checking that every part fits.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, IndexError> {
        let (file, rest): (IndexFile, &[u8]) = postcard::take_from_bytes(bytes)?;
        let mut vectors = QuantizedVectors::from_parts(file.dim as usize, file.codes.into_iter().map(|c| c as i8).collect(), file.scales)?;
        if !rest.is_empty() {
            let (refinement, rest): (RefinementFile, &[u8]) = postcard::take_from_bytes(rest)?;
            if !rest.is_empty() {
                return Err(IndexError::Invalid(format!("{} bytes after the end of the index", rest.len())));
            }
            vectors = vectors.with_refinement(refinement.packed, refinement.scales)?;
        }
        let layers = file
            .layers
            .into_iter()
            .enumerate()
            .map(|(level, layer)| layer.decode(if level == 0 { 2 * M } else { M }))
            .collect::<Result<Vec<_>, _>>()?;
        let graph = Graph::from_parts(file.nodes, layers)?;
        AnnIndex::from_parts(vectors, file.categories, graph)
    }
}
