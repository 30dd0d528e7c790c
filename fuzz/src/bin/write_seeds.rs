//! Writes the fuzzers' seed corpora into `corpus/`: a small valid single-file
//! bundle for `read_bundle`, and its index and products parts for
//! `decode_parts`, so that the fuzzers start from inputs that get far.

use std::fs;
use std::path::Path;

use vitrine_core::bundle::{category_ids, encode_products, BundleContents, Product};
use vitrine_core::index::synthetic::Clusters;
use vitrine_core::index::{AnnIndex, BuildParams};

fn main() -> std::io::Result<()> {
    let names = ["Bags", "Dresses", "Shoes"];
    let dim = 8;
    let (vectors, labels) = Clusters::new(dim, 4, 0.8, 1).sample(40, 2);
    let products: Vec<Product> = labels
        .iter()
        .enumerate()
        .map(|(i, &c)| Product {
            id: format!("{i:04}"),
            title: format!("product {i}"),
            category: names[c % names.len()].to_string(),
            subcategory: String::new(),
            image: format!("{i}.jpg"),
            group_id: format!("g{}", i / 2),
        })
        .collect();
    let (categories, ids) = category_ids(&products).expect("three categories");
    let index =
        AnnIndex::build(dim, &vectors, ids, &BuildParams { ef_construction: 16, ..BuildParams::default() }).expect("a small index builds");
    let contents = BundleContents {
        model_config: serde_json::json!({"dims": dim}),
        categories,
        text_encoder: b"weights".to_vec(),
        heads: b"heads".to_vec(),
        tokenizer: b"{}".to_vec(),
        index,
        products,
    };
    let bundle = contents.to_single_file().expect("consistent contents");
    write(Path::new("corpus/read_bundle/valid.vitrine"), &bundle)?;
    write(Path::new("corpus/decode_parts/index.bin"), &contents.index.to_bytes())?;
    write(Path::new("corpus/decode_parts/products.jsonl"), &encode_products(&contents.products))
}

fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    fs::create_dir_all(path.parent().expect("a corpus folder"))?;
    fs::write(path, bytes)
}
