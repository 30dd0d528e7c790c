//! Small valid bundle folders, written in-process with vitrine-core's bundle
//! writer (no model, no catalog): the publisher only moves and checks bytes.
//! Shared by vitrine-publish's tests and the `vitrine publish` command's.

use std::path::Path;

use vitrine_core::bundle::{category_ids, BundleContents, Manifest, Product};
use vitrine_core::index::synthetic::Clusters;
use vitrine_core::index::{AnnIndex, BuildParams};

const DIM: usize = 8;

/// Writes a bundle folder of `items` products into `dir`. Bundles with
/// different `seed`s share the text encoder, heads and tokenizer parts and
/// differ in the index and products; the products' ids are `<seed>-<i>`.
pub fn write_bundle(dir: &Path, items: usize, seed: u64) -> Manifest {
    let (vectors, labels) = Clusters::new(DIM, 4, 0.8, 1).sample(items, seed);
    let names = ["Shoes", "Bags", "Dresses"];
    let products: Vec<Product> = labels
        .iter()
        .enumerate()
        .map(|(i, &c)| Product {
            id: format!("{seed}-{i}"),
            title: format!("product {i} of bundle {seed}"),
            category: names[c % names.len()].to_string(),
            subcategory: String::new(),
            image: format!("images/{seed}-{i}.jpg"),
            group_id: String::new(),
        })
        .collect();
    let (categories, ids) = category_ids(&products).unwrap();
    let index = AnnIndex::build(DIM, &vectors, ids, &BuildParams { ef_construction: 20, ..BuildParams::default() }).unwrap();
    let contents = BundleContents {
        model_config: serde_json::json!({"compact_dim": DIM}),
        categories,
        text_encoder: b"text encoder weights".repeat(50),
        heads: b"heads weights".repeat(10),
        tokenizer: br#"{"version": "1.0"}"#.to_vec(),
        index,
        products,
    };
    contents.write_folder(dir).unwrap()
}
