//! The real H&M sample beside the project (`../shared/data/hm`): the counts its
//! README states. CI has the data; elsewhere the test says so and checks nothing.

use std::path::PathBuf;

use vitrine_core::catalog::{self, ImportOptions, Split};
use vitrine_core::summary::CatalogSummary;

fn hm_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data/hm"));
    if dir.join("articles.csv").is_file() {
        return Some(dir);
    }
    assert!(std::env::var_os("CI").is_none(), "CI must have the H&M sample at {}", dir.display());
    eprintln!("no H&M sample at {}: nothing to check here", dir.display());
    None
}

#[test]
fn hm_sample_counts_match_its_readme() {
    let Some(dir) = hm_dir() else { return };
    let catalog = catalog::open(&dir, ImportOptions::default()).expect("the H&M sample imports strictly");
    let summary = CatalogSummary::compute(&catalog, None).unwrap();
    assert_eq!(summary.items, 11_800);
    assert_eq!(summary.categories, 15);
    assert_eq!(summary.subcategories, 107);
    assert_eq!(summary.empty_descriptions, 7);
    assert_eq!(summary.baskets, 7_032);
    let per_split = |m: &std::collections::BTreeMap<String, usize>| Split::ALL.map(|s| m[s.as_str()]);
    assert_eq!(per_split(&summary.items_per_split), [9_475, 1_153, 1_172]);
    assert_eq!(per_split(&summary.tgir_triplets), [18_810, 2_652, 3_140]);
    assert_eq!(per_split(&summary.ocir_questions), [32_115, 5_024, 5_053]);
    assert!(summary.bad_rows.is_empty());
}
