//! The Polyvore Outfits importer: items, outfits, splits and fill-in-the-blank
//! questions, on small folders written by the tests.

use std::path::{Path, PathBuf};

use vitrine_core::catalog::polyvore::{import_dir, PolyvoreVersion, METADATA_FILE};
use vitrine_core::catalog::{CatalogError, ImportOptions, RowProblem, Split};

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, text).expect("write test file");
    path
}

const METADATA: &str = r#"{
  "101": {"url_name": "striped tee", "description": "Cotton tee.", "categories": ["Tops"], "title": "Striped tee",
          "related": [], "category_id": "11", "semantic_category": "tops"},
  "102": {"url_name": "blue skinny jeans", "description": "", "categories": [], "title": "", "related": [],
          "category_id": 27, "semantic_category": "bottoms"},
  "103": {"url_name": "ankle boots", "title": "Ankle boots", "category_id": "41", "semantic_category": "shoes"},
  "104": {"url_name": "tote", "title": "Tote", "category_id": "5", "semantic_category": "bags"},
  "201": {"url_name": "shirt", "title": "Shirt", "category_id": "11", "semantic_category": "tops"},
  "202": {"url_name": "skirt", "title": "Skirt", "category_id": "28", "semantic_category": "bottoms"},
  "301": {"url_name": "blouse", "title": "Blouse", "category_id": "11", "semantic_category": "tops"},
  "302": {"url_name": "shorts", "title": "Shorts", "category_id": "29", "semantic_category": "bottoms"},
  "303": {"url_name": "sandals", "title": "Sandals", "category_id": "42", "semantic_category": "shoes"},
  "304": {"url_name": "cardigan", "title": "Cardigan", "category_id": "12", "semantic_category": "tops"},
  "305": {"url_name": "trousers", "title": "Trousers", "category_id": "27", "semantic_category": "bottoms"}
}"#;

fn outfit(set_id: &str, items: &[&str]) -> String {
    let items: Vec<String> = items.iter().enumerate().map(|(i, id)| format!(r#"{{"item_id": "{id}", "index": {}}}"#, i + 1)).collect();
    format!(r#"{{"name": "outfit {set_id}", "set_id": "{set_id}", "items": [{}]}}"#, items.join(", "))
}

fn array(rows: &[String]) -> String {
    format!("[\n{}\n]\n", rows.join(",\n"))
}

/// A dataset folder with both versions. Item 104 is worn in no disjoint outfit.
fn dataset(dir: &Path) {
    write(dir, METADATA_FILE, METADATA);
    write(dir, "disjoint/train.json", &array(&[outfit("s1", &["101", "102", "103"]), outfit("s2", &["101", "103"])]));
    write(dir, "disjoint/valid.json", &array(&[outfit("v1", &["201", "202"])]));
    write(dir, "disjoint/test.json", &array(&[outfit("t1", &["301", "302", "303"]), outfit("t2", &["304", "305"])]));
    write(
        dir,
        "disjoint/fill_in_blank_test.json",
        "[\n  {\"question\": [\"t1_1\", \"t1_2\"],\n   \"answers\": [\"t2_1\", \"t1_3\", \"t2_2\"],\n   \"blank_position\": 3}\n]\n",
    );
    write(dir, "nondisjoint/train.json", &array(&[outfit("n1", &["101", "104"])]));
    write(dir, "nondisjoint/test.json", &array(&[outfit("n2", &["101", "303"])]));
}

#[test]
fn disjoint_version_maps_items_outfits_splits_and_questions() {
    let dir = tempfile::tempdir().unwrap();
    dataset(dir.path());

    let polyvore = import_dir(dir.path(), PolyvoreVersion::Disjoint, ImportOptions::default()).unwrap();
    let catalog = &polyvore.catalog;

    assert!(catalog.report.errors.is_empty(), "{:?}", catalog.report.errors);
    let mut ids: Vec<&str> = catalog.items.iter().map(|it| it.id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["101", "102", "103", "201", "202", "301", "302", "303", "304", "305"], "104 is in no disjoint outfit");

    let tee = catalog.get("101").unwrap();
    assert_eq!(tee.group_id, "101");
    assert_eq!(tee.title, "Striped tee");
    assert_eq!(tee.description, "Cotton tee.");
    assert_eq!((tee.category.as_str(), tee.subcategory.as_str()), ("tops", "11"));
    assert_eq!(tee.images, ["images/101.jpg"]);
    assert_eq!(catalog.image_path(&tee.images[0]), Some(dir.path().join("images/101.jpg")));
    assert_eq!((tee.source.file.clone(), tee.source.line), (dir.path().join(METADATA_FILE), 2));
    let jeans = catalog.get("102").unwrap();
    assert_eq!(jeans.title, "blue skinny jeans", "an empty title falls back to url_name");
    assert_eq!(jeans.subcategory, "27");
    assert_eq!(jeans.source.line, 4);

    assert_eq!(catalog.baskets.len(), 5);
    assert_eq!(catalog.baskets[0].id, "s1");
    assert_eq!(catalog.baskets[0].items, ["101", "102", "103"]);
    assert_eq!(catalog.baskets[2].source, vitrine_core::catalog::SourceLoc::new(dir.path().join("disjoint/valid.json"), 2));

    assert_eq!(catalog.split_of("103"), Some(Split::Train));
    assert_eq!(catalog.split_of("202"), Some(Split::Val));
    assert_eq!(catalog.split_of("305"), Some(Split::Test));

    assert_eq!(polyvore.questions.len(), 1);
    let question = &polyvore.questions[0];
    assert_eq!(question.split, Split::Test);
    assert_eq!(question.context, ["301", "302"]);
    assert_eq!(question.answers, ["304", "303", "305"]);
    assert_eq!(question.correct, 1, "the answer from the question's own outfit");
    assert_eq!(question.blank_position, 3);
    assert_eq!((question.source.file.clone(), question.source.line), (dir.path().join("disjoint/fill_in_blank_test.json"), 2));
}

#[test]
fn nondisjoint_items_take_the_split_of_their_first_outfit_file() {
    let dir = tempfile::tempdir().unwrap();
    dataset(dir.path());

    let polyvore = import_dir(dir.path(), PolyvoreVersion::Nondisjoint, ImportOptions::default()).unwrap();
    let catalog = &polyvore.catalog;

    let mut ids: Vec<&str> = catalog.items.iter().map(|it| it.id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["101", "104", "303"]);
    assert_eq!(catalog.split_of("101"), Some(Split::Train), "worn in train and test outfits");
    assert_eq!(catalog.split_of("303"), Some(Split::Test));
    assert_eq!(catalog.baskets.len(), 2);
    assert!(polyvore.questions.is_empty());
}

/// Bad rows: metadata line 4 (invalid JSON) and 5 (no semantic_category);
/// train outfits line 3 (wears the invalid item), 4 (no set_id), 5 (wears an
/// unknown item), 6 (wears the item without category); questions line 3
/// (unknown position), 4 (no answer from the outfit), 5 (blank_position not a
/// number), 6 (names a dropped item).
fn bad_dataset(dir: &Path) {
    write(
        dir,
        METADATA_FILE,
        r#"{
  "101": {"title": "Tee", "semantic_category": "tops", "category_id": 11},
  "102": {"title": "Jeans", "semantic_category": "bottoms", "category_id": 27},
  "103": {"title": "Boots" "semantic_category": "shoes"},
  "104": {"title": "Bag", "category_id": 5},
  "105": {"title": "Cap", "semantic_category": "hats"}
}"#,
    );
    write(
        dir,
        "disjoint/train.json",
        r#"[
  {"set_id": "s1", "items": [{"item_id": "101", "index": 1}, {"item_id": "102", "index": 2}]},
  {"set_id": "s2", "items": [{"item_id": "101", "index": 1}, {"item_id": "103", "index": 2}]},
  {"items": [{"item_id": "102", "index": 1}]},
  {"set_id": "s4", "items": [{"item_id": "105", "index": 1}, {"item_id": "999", "index": 2}]},
  {"set_id": "s5", "items": [{"item_id": "104", "index": 1}]}
]"#,
    );
    write(
        dir,
        "disjoint/fill_in_blank_train.json",
        r#"[
  {"question": ["s1_1"], "answers": ["s1_2", "s2_1"], "blank_position": 2},
  {"question": ["s1_1"], "answers": ["s9_2", "s1_2"], "blank_position": 2},
  {"question": ["s1_1"], "answers": ["s2_1", "s2_2"], "blank_position": 2},
  {"question": ["s1_1"], "answers": ["s1_2"], "blank_position": "second"},
  {"question": ["s1_2"], "answers": ["s1_1", "s2_2"], "blank_position": 1}
]"#,
    );
}

#[test]
fn skip_mode_keeps_the_good_rows_and_reports_each_bad_one_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    bad_dataset(dir.path());

    let polyvore = import_dir(dir.path(), PolyvoreVersion::Disjoint, ImportOptions::skip()).unwrap();
    let catalog = &polyvore.catalog;

    let mut ids: Vec<&str> = catalog.items.iter().map(|it| it.id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["101", "102", "105"]);
    assert_eq!(catalog.baskets.iter().map(|b| b.id.as_str()).collect::<Vec<_>>(), ["s1"]);
    assert_eq!(polyvore.questions.len(), 1);
    assert_eq!(polyvore.questions[0].source.line, 2);
    assert_eq!(polyvore.questions[0].answers, ["102", "101"]);

    let file = |name: &str| dir.path().join(name);
    let mut found: Vec<(PathBuf, u64, &str)> =
        catalog.report.errors.iter().map(|e| (e.loc.file.clone(), e.loc.line, e.problem.kind())).collect();
    found.sort();
    let mut expected = vec![
        (file(METADATA_FILE), 4, "malformed"),
        (file(METADATA_FILE), 5, "missing_field"),
        (file("disjoint/train.json"), 3, "unknown_id"),
        (file("disjoint/train.json"), 4, "missing_field"),
        (file("disjoint/train.json"), 5, "unknown_id"),
        (file("disjoint/train.json"), 6, "unknown_id"),
        (file("disjoint/fill_in_blank_train.json"), 3, "unknown_id"),
        (file("disjoint/fill_in_blank_train.json"), 4, "malformed"),
        (file("disjoint/fill_in_blank_train.json"), 5, "malformed"),
        (file("disjoint/fill_in_blank_train.json"), 6, "unknown_id"),
    ];
    expected.sort();
    assert_eq!(found, expected);
    let problem =
        |name: &str, line: u64| &catalog.report.errors.iter().find(|e| e.loc.file == file(name) && e.loc.line == line).unwrap().problem;
    assert!(matches!(problem(METADATA_FILE, 5), RowProblem::MissingField { field } if field == "semantic_category"));
    assert!(matches!(problem("disjoint/train.json", 4), RowProblem::MissingField { field } if field == "set_id"));
    assert!(matches!(problem("disjoint/train.json", 5), RowProblem::UnknownId { id } if id == "999"));
    assert!(matches!(problem("disjoint/fill_in_blank_train.json", 3), RowProblem::UnknownId { id } if id == "s9_2"));
    assert!(matches!(problem("disjoint/fill_in_blank_train.json", 6), RowProblem::UnknownId { id } if id == "103"));
}

#[test]
fn strict_mode_fails_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    bad_dataset(dir.path());

    let error = import_dir(dir.path(), PolyvoreVersion::Disjoint, ImportOptions::default()).unwrap_err();

    assert!(matches!(error, CatalogError::BadRows { .. }), "{error}");
    let message = error.to_string();
    for place in [
        "polyvore_item_metadata.json:4:",
        "polyvore_item_metadata.json:5:",
        "train.json:4:",
        "train.json:5:",
        "fill_in_blank_train.json:3:",
        "fill_in_blank_train.json:4:",
    ] {
        assert!(message.contains(place), "{place} missing from:\n{message}");
    }
}

#[test]
fn a_version_without_outfits_or_metadata_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let error = import_dir(dir.path(), PolyvoreVersion::Disjoint, ImportOptions::skip()).unwrap_err();
    assert!(matches!(error, CatalogError::NotACatalog { .. }), "{error}");
    assert!(error.to_string().contains("disjoint"), "{error}");

    write(dir.path(), "disjoint/train.json", "[]");
    let error = import_dir(dir.path(), PolyvoreVersion::Disjoint, ImportOptions::skip()).unwrap_err();
    assert!(matches!(error, CatalogError::Io { .. }), "{error}");
    assert!(error.to_string().contains(METADATA_FILE), "{error}");
}
