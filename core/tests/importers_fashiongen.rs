//! The FashionGen `*_info.json` importer.

use std::path::{Path, PathBuf};

use vitrine_core::catalog::fashiongen::{import_dir, import_file, split_of_file, ATTRIBUTE_IDS};
use vitrine_core::catalog::{CatalogError, ImportOptions, RowProblem, Split};

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write test file");
    path
}

const TRAIN: &str = r#"[
    {
        "id": 12,
        "title": "Wool overcoat",
        "description": "Long sleeve coat in navy.",
        "category_id": 3,
        "subcategory_id": 41,
        "attributes_id": [5, 17],
        "images": ["images/12_0.png", "images/12_1.png", "images/12_2.png"]
    },
    {"id": "13", "title": "Silk scarf", "description": "", "category_id": "7", "subcategory_id": "70",
     "attributes_id": [], "images": ["images/13_0.png"]},
    {"id": 14, "title": "Leather boots", "description": "Ankle boots.", "category_id": 5,
     "images": ["/data/fashiongen/14_0.png"]}
]
"#;

const VALIDATION: &str = r#"[{"id": 21, "title": "Denim jacket", "description": "Cropped.", "category_id": 3,
  "subcategory_id": 42, "attributes_id": "8", "images": ["images/21_0.png"]}]"#;

#[test]
fn info_files_map_to_items_with_the_split_of_their_file() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "train_info.json", TRAIN.as_bytes());
    write(dir.path(), "validation_info.json", VALIDATION.as_bytes());
    write(dir.path(), "notes.json", b"not an info file");

    let catalog = import_dir(dir.path(), ImportOptions::default()).unwrap();

    assert_eq!(catalog.report.rows_read, 4);
    assert_eq!(catalog.report.items_kept, 4);
    let ids: Vec<&str> = catalog.items.iter().map(|it| it.id.as_str()).collect();
    assert_eq!(ids, ["12", "13", "14", "21"], "train first, then val");

    let coat = catalog.get("12").unwrap();
    assert_eq!(coat.group_id, "12");
    assert_eq!(coat.title, "Wool overcoat");
    assert_eq!(coat.description, "Long sleeve coat in navy.");
    assert_eq!((coat.category.as_str(), coat.subcategory.as_str()), ("3", "41"));
    assert_eq!(coat.attribute(ATTRIBUTE_IDS), Some("5 17"));
    assert_eq!(coat.images.len(), 3, "every view is an image of the item");
    assert_eq!(catalog.image_path(&coat.images[1]), Some(dir.path().join("images/12_1.png")));
    assert_eq!((coat.source.file.clone(), coat.source.line), (dir.path().join("train_info.json"), 2));

    let scarf = catalog.get("13").unwrap();
    assert_eq!(scarf.source.line, 11);
    assert!(scarf.attributes.is_empty());
    let boots = catalog.get("14").unwrap();
    assert_eq!(boots.subcategory, "");
    assert_eq!(catalog.image_path(&boots.images[0]), Some(PathBuf::from("/data/fashiongen/14_0.png")));
    assert_eq!(catalog.get("21").unwrap().attribute(ATTRIBUTE_IDS), Some("8"));

    assert_eq!(catalog.split_of("12"), Some(Split::Train));
    assert_eq!(catalog.split_of("21"), Some(Split::Val));
}

#[test]
fn file_names_give_the_split() {
    assert_eq!(split_of_file(Path::new("x/train_info.json")), Some(Split::Train));
    assert_eq!(split_of_file(Path::new("val_info.json")), Some(Split::Val));
    assert_eq!(split_of_file(Path::new("validation_info.json")), Some(Split::Val));
    assert_eq!(split_of_file(Path::new("test_info.json")), Some(Split::Test));
    assert_eq!(split_of_file(Path::new("extra_info.json")), None);
    assert_eq!(split_of_file(Path::new("train.json")), None);
}

#[test]
fn a_single_file_imports_with_its_folder_as_root() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "test_info.json", VALIDATION.as_bytes());

    let catalog = import_file(&path, ImportOptions::default()).unwrap();

    assert_eq!(catalog.root, dir.path());
    assert_eq!(catalog.split_of("21"), Some(Split::Test));
}

/// Lines: 2 good, 3 no images, 4 not an object, 5 duplicate of line 2,
/// 6 bad UTF-8, 7 no text, 8 title is an object, 9 no category, 10 invalid
/// JSON number, 11 good.
fn bad_rows_file(dir: &Path) -> PathBuf {
    let mut json = b"[\n".to_vec();
    json.extend_from_slice(br#"  {"id": 1, "title": "Coat", "category_id": 3, "images": ["1.png"]},"#);
    json.extend_from_slice(b"\n");
    json.extend_from_slice(br#"  {"id": 2, "title": "Coat", "category_id": 3, "images": []},"#);
    json.extend_from_slice(b"\n  \"just a string\",\n");
    json.extend_from_slice(br#"  {"id": 1, "title": "Coat", "category_id": 3, "images": ["1b.png"]},"#);
    json.extend_from_slice(b"\n  {\"id\": 4, \"title\": \"Caf\xe9 coat\", \"category_id\": 3, \"images\": [\"4.png\"]},\n");
    json.extend_from_slice(br#"  {"id": 5, "title": " ", "description": "", "category_id": 3, "images": ["5.png"]},"#);
    json.extend_from_slice(b"\n");
    json.extend_from_slice(br#"  {"id": 6, "title": {"en": "Coat"}, "category_id": 3, "images": ["6.png"]},"#);
    json.extend_from_slice(b"\n");
    json.extend_from_slice(br#"  {"id": 7, "title": "Coat", "images": ["7.png"]},"#);
    json.extend_from_slice(b"\n");
    json.extend_from_slice(br#"  {"id": 8, "title": "Coat", "category_id": 03, "images": ["8.png"]},"#);
    json.extend_from_slice(b"\n");
    json.extend_from_slice(br#"  {"id": 9, "title": "Boots", "category_id": 3, "images": ["9.png"]}"#);
    json.extend_from_slice(b"\n]\n");
    write(dir, "train_info.json", &json)
}

#[test]
fn skip_mode_keeps_the_good_products_and_reports_each_bad_one_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = bad_rows_file(dir.path());

    let catalog = import_dir(dir.path(), ImportOptions::skip()).unwrap();

    let ids: Vec<&str> = catalog.items.iter().map(|it| it.id.as_str()).collect();
    assert_eq!(ids, ["1", "9"]);
    assert_eq!(catalog.report.rows_read, 10);
    let mut found: Vec<(&str, u64)> = catalog.report.errors.iter().map(|e| (e.problem.kind(), e.loc.line)).collect();
    found.sort_by_key(|&(_, line)| line);
    assert_eq!(
        found,
        [
            ("missing_field", 3),
            ("malformed", 4),
            ("duplicate_id", 5),
            ("bad_utf8", 6),
            ("empty_text", 7),
            ("malformed", 8),
            ("missing_field", 9),
            ("malformed", 10),
        ]
    );
    assert!(catalog.report.errors.iter().all(|e| e.loc.file == path));
    let problem = |line: u64| &catalog.report.errors.iter().find(|e| e.loc.line == line).unwrap().problem;
    assert!(matches!(problem(3), RowProblem::MissingField { field } if field == "images"));
    assert!(matches!(problem(6), RowProblem::BadUtf8 { field, valid_up_to: 3 } if field == "title"));
    assert!(matches!(problem(9), RowProblem::MissingField { field } if field == "category_id"));
}

#[test]
fn strict_mode_fails_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    bad_rows_file(dir.path());

    let error = import_dir(dir.path(), ImportOptions::default()).unwrap_err();

    assert!(matches!(error, CatalogError::BadRows { count: 8, .. }), "{error}");
    let message = error.to_string();
    for line in 3..=10 {
        assert!(message.contains(&format!("train_info.json:{line}:")), "line {line} missing from:\n{message}");
    }
}

#[test]
fn a_broken_file_fails_at_its_line() {
    let dir = tempfile::tempdir().unwrap();

    write(dir.path(), "train_info.json", b"{\"id\": 1}\n");
    let error = import_dir(dir.path(), ImportOptions::skip()).unwrap_err();
    assert!(matches!(error, CatalogError::NotACatalog { .. }), "{error}");
    assert!(error.to_string().contains("train_info.json"), "{error}");

    write(dir.path(), "train_info.json", b"[\n  {\"id\": 1,\n   \"title\": \"Coat\n");
    let error = import_dir(dir.path(), ImportOptions::skip()).unwrap_err();
    assert!(error.to_string().contains("train_info.json:3: unterminated string"), "{error}");

    write(dir.path(), "train_info.json", b"[\n  {\"id\": 1}\n  {\"id\": 2}\n]");
    let error = import_dir(dir.path(), ImportOptions::skip()).unwrap_err();
    assert!(error.to_string().contains("train_info.json:3: expected `,` or `]`"), "{error}");

    std::fs::remove_file(dir.path().join("train_info.json")).unwrap();
    let error = import_dir(dir.path(), ImportOptions::skip()).unwrap_err();
    assert!(matches!(error, CatalogError::NotACatalog { .. }), "{error}");
}
