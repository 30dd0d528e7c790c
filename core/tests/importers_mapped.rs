//! The generic CSV / JSON Lines importer driven by a column mapping.

use std::path::{Path, PathBuf};

use vitrine_core::catalog::mapped::{import_csv, import_file, import_jsonl, ColumnMapping};
use vitrine_core::catalog::{attr, CatalogError, ImportOptions, RowProblem, Split};

const MAPPING: &str = r#"{
    "id": "sku", "group_id": "parent_sku", "title": "name", "description": "desc",
    "category": "cat", "subcategory": "subcat", "images": "image_urls", "images_separator": "|",
    "attributes": {"colour": "color", "print": "pattern"},
    "price": "price", "url": "link", "split": "split"
}"#;

const HEADER: &str = "sku,parent_sku,name,desc,cat,subcat,color,pattern,image_urls,price,link,split\n";

fn mapping() -> ColumnMapping {
    ColumnMapping::from_json(MAPPING).expect("the test mapping parses")
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write test file");
    path
}

/// (problem kind, line) of each bad row, in order.
fn bad_rows(report: &vitrine_core::catalog::ImportReport) -> Vec<(&'static str, u64)> {
    report.errors.iter().map(|e| (e.problem.kind(), e.loc.line)).collect()
}

#[test]
fn csv_rows_map_to_items() {
    let dir = tempfile::tempdir().unwrap();
    let csv = format!(
        "{HEADER}\
         1001-r,1001,Linen shirt,Relaxed fit,Shirts,Casual,red,solid,img/1001-r.jpg| img/1001-r-back.jpg ,39.90,https://shop.example/1001-r,train\n\
         1001-b,1001,Linen shirt,\"Relaxed fit,\nin blue\",Shirts,Casual,blue,stripe,img/1001-b.jpg,39.90,,val\n\
         2002,,Pleated skirt,,Skirts,,,,https://cdn.example/2002.jpg,,,\n"
    );
    let path = write(dir.path(), "export.csv", csv.as_bytes());
    let root = dir.path().join("photos");

    let catalog = import_csv(&path, &mapping(), &root, ImportOptions::default()).unwrap();

    assert_eq!(catalog.report.rows_read, 3);
    assert_eq!(catalog.report.items_kept, 3);
    assert!(catalog.report.errors.is_empty());
    let red = catalog.get("1001-r").unwrap();
    assert_eq!(red.group_id, "1001");
    assert_eq!(red.title, "Linen shirt");
    assert_eq!(red.description, "Relaxed fit");
    assert_eq!((red.category.as_str(), red.subcategory.as_str()), ("Shirts", "Casual"));
    assert_eq!(red.attribute(attr::COLOUR), Some("red"));
    assert_eq!(red.attribute(attr::PRINT), Some("solid"));
    assert_eq!(red.images, ["img/1001-r.jpg", "img/1001-r-back.jpg"]);
    assert_eq!(catalog.image_path(&red.images[0]), Some(root.join("img/1001-r.jpg")));
    assert_eq!(red.price, Some(39.90));
    assert_eq!(red.url.as_deref(), Some("https://shop.example/1001-r"));
    assert_eq!((red.source.file.as_path(), red.source.line), (path.as_path(), 2));

    let blue = catalog.get("1001-b").unwrap();
    assert_eq!(blue.description, "Relaxed fit,\nin blue");
    assert_eq!(blue.url, None);
    assert_eq!(blue.source.line, 3);

    // No parent: the item is its own group; a URL is not a file.
    let skirt = catalog.get("2002").unwrap();
    assert_eq!(skirt.group_id, "2002");
    assert_eq!(skirt.source.line, 5, "the quoted newline above moves this row to line 5");
    assert!(skirt.attributes.is_empty());
    assert_eq!(skirt.price, None);
    assert_eq!(catalog.image_path(&skirt.images[0]), None);

    assert_eq!(catalog.split_of("1001-r"), Some(Split::Train));
    assert_eq!(catalog.split_of("1001-b"), Some(Split::Val));
    assert_eq!(catalog.split_of("2002"), None);
}

#[test]
fn jsonl_objects_map_to_items() {
    let dir = tempfile::tempdir().unwrap();
    let jsonl = concat!(
        r#"{"sku": 1001, "name": "Linen shirt", "cat": "Shirts", "image_urls": ["a.jpg", "b.jpg"], "price": 39.9, "color": "red"}"#,
        "\n\n",
        r#"{"sku": "2002", "parent_sku": "20", "name": "Pleated skirt", "desc": null, "cat": "Skirts", "image_urls": "c.jpg|d.jpg", "split": "test"}"#,
        "\n"
    );
    let path = write(dir.path(), "export.jsonl", jsonl.as_bytes());

    let catalog = import_file(&path, &mapping(), dir.path(), ImportOptions::default()).unwrap();

    assert_eq!(catalog.report.rows_read, 2, "blank lines are not rows");
    let shirt = catalog.get("1001").unwrap();
    assert_eq!(shirt.group_id, "1001");
    assert_eq!(shirt.images, ["a.jpg", "b.jpg"]);
    assert_eq!(shirt.price, Some(39.9));
    assert_eq!(shirt.attribute(attr::COLOUR), Some("red"));
    assert_eq!(shirt.source.line, 1);
    let skirt = catalog.get("2002").unwrap();
    assert_eq!(skirt.group_id, "20");
    assert_eq!(skirt.description, "");
    assert_eq!(skirt.images, ["c.jpg", "d.jpg"]);
    assert_eq!(catalog.image_path("c.jpg"), Some(dir.path().join("c.jpg")));
    assert_eq!(skirt.source.line, 3);
    assert_eq!(catalog.split_of("2002"), Some(Split::Test));
}

#[test]
fn mapping_needs_id_title_and_category_and_rejects_unknown_keys() {
    let minimal = ColumnMapping::from_json(r#"{"id": "sku", "title": "name", "category": "cat"}"#).unwrap();
    assert_eq!(minimal.columns().collect::<Vec<_>>(), ["sku", "name", "cat"]);

    let missing = ColumnMapping::from_json(r#"{"id": "sku", "title": "name"}"#).unwrap_err();
    assert!(matches!(missing, CatalogError::Mapping(_)));
    assert!(missing.to_string().contains("category"), "{missing}");

    let typo = ColumnMapping::from_json(r#"{"id": "sku", "title": "name", "category": "cat", "colour": "c"}"#).unwrap_err();
    assert!(typo.to_string().contains("colour"), "{typo}");

    let empty = ColumnMapping::from_json(r#"{"id": "", "title": "name", "category": "cat"}"#).unwrap_err();
    assert!(empty.to_string().contains("`id`"), "{empty}");

    let spaced = r#"{"id": "sku", "title": "name", "category": "cat", "images": "photos", "images_separator": " "}"#;
    assert_eq!(ColumnMapping::from_json(spaced).unwrap().images_separator.as_deref(), Some(" "));

    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "mapping.json", MAPPING.as_bytes());
    assert_eq!(ColumnMapping::from_file(&path).unwrap(), mapping());
    let broken = write(dir.path(), "broken.json", b"{\"id\": \"sku\"");
    let error = ColumnMapping::from_file(&broken).unwrap_err();
    assert!(matches!(error, CatalogError::Mapping(_)));
    assert!(error.to_string().starts_with("invalid column mapping: ") && error.to_string().contains("broken.json"), "{error}");
}

#[test]
fn a_mapped_column_missing_from_the_header_fails_naming_file_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "export.csv", b"sku,name,cat\n1,Shirt,Shirts\n");

    let error = import_csv(&path, &mapping(), dir.path(), ImportOptions::skip()).unwrap_err();

    match &error {
        CatalogError::MissingColumn { path: file, column, .. } => {
            assert_eq!(file, &path);
            assert_eq!(column, "parent_sku");
        }
        other => panic!("expected MissingColumn, got {other}"),
    }
    let message = error.to_string();
    assert!(message.contains("export.csv") && message.contains("parent_sku"), "{message}");
}

/// One good row between each kind of bad row. Lines: 1 header, 2 good,
/// 3 bad UTF-8, 4 good, 5 duplicate of line 2, 6 empty text, 7 oversized,
/// 8 unknown split, 9 too few fields, 10 bad price, 11 missing id, 12 good.
fn bad_rows_csv(dir: &Path) -> PathBuf {
    let long = "x".repeat(300);
    let mut csv = HEADER.as_bytes().to_vec();
    csv.extend_from_slice(b"a1,a,Shirt,Good,Shirts,,,,a1.jpg,10,,train\n");
    csv.extend_from_slice(b"a2,a,Caf\xe9 shirt,Good,Shirts,,,,a2.jpg,10,,train\n");
    csv.extend_from_slice(b"a3,a,Shirt,Good,Shirts,,,,a3.jpg,10,,train\n");
    csv.extend_from_slice(b"a1,a,Shirt again,Good,Shirts,,,,a1.jpg,10,,train\n");
    csv.extend_from_slice(b"a4,a,,,Shirts,,,,a4.jpg,10,,train\n");
    csv.extend_from_slice(format!("a5,a,Shirt,{long},Shirts,,,,a5.jpg,10,,train\n").as_bytes());
    csv.extend_from_slice(b"a6,a,Shirt,Good,Shirts,,,,a6.jpg,10,,holdout\n");
    csv.extend_from_slice(b"a7,a,Shirt,Good,Shirts\n");
    csv.extend_from_slice(b"a8,a,Shirt,Good,Shirts,,,,a8.jpg,ten euros,,train\n");
    csv.extend_from_slice(b",a,Shirt,Good,Shirts,,,,a9.jpg,10,,train\n");
    csv.extend_from_slice(b"b1,b,Skirt,Good,Skirts,,,,b1.jpg,20,,test\n");
    write(dir, "export.csv", &csv)
}

fn small_fields(options: ImportOptions) -> ImportOptions {
    ImportOptions { max_field_bytes: 256, ..options }
}

#[test]
fn skip_mode_keeps_the_good_rows_and_reports_each_bad_one_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = bad_rows_csv(dir.path());

    let catalog = import_csv(&path, &mapping(), dir.path(), small_fields(ImportOptions::skip())).unwrap();

    let kept: Vec<&str> = catalog.items.iter().map(|it| it.id.as_str()).collect();
    assert_eq!(kept, ["a1", "a3", "b1"]);
    assert_eq!(catalog.report.rows_read, 11);
    assert_eq!(catalog.report.items_kept, 3);
    let mut found = bad_rows(&catalog.report);
    found.sort_by_key(|&(_, line)| line);
    assert_eq!(
        found,
        [
            ("bad_utf8", 3),
            ("duplicate_id", 5),
            ("empty_text", 6),
            ("oversized_field", 7),
            ("unknown_split", 8),
            ("malformed", 9),
            ("malformed", 10),
            ("missing_field", 11),
        ]
    );
    assert!(catalog.report.errors.iter().all(|e| e.loc.file == path));
    let problem = |line: u64| &catalog.report.errors.iter().find(|e| e.loc.line == line).unwrap().problem;
    assert!(matches!(problem(3), RowProblem::BadUtf8 { field, valid_up_to: 3 } if field == "name"));
    assert!(matches!(problem(5), RowProblem::DuplicateId { id, first } if id == "a1" && first.line == 2));
    assert!(matches!(problem(7), RowProblem::OversizedField { field, len: 300, limit: 256 } if field == "description"));
    assert!(matches!(problem(8), RowProblem::UnknownSplit { split } if split == "holdout"));
    assert!(problem(9).to_string().contains("5 fields where the header has 12"), "{}", problem(9));
    assert!(problem(10).to_string().contains("price") && problem(10).to_string().contains("ten euros"), "{}", problem(10));
    assert!(matches!(problem(11), RowProblem::MissingField { field } if field == "sku"));
    assert_eq!(catalog.get("a1").unwrap().title, "Shirt", "the first of two rows with one id is kept");
}

#[test]
fn strict_mode_fails_listing_every_bad_row_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = bad_rows_csv(dir.path());

    let error = import_csv(&path, &mapping(), dir.path(), small_fields(ImportOptions::default())).unwrap_err();

    assert!(matches!(error, CatalogError::BadRows { count: 8, .. }), "{error}");
    let message = error.to_string();
    for line in [3, 5, 6, 7, 8, 9, 10, 11] {
        assert!(message.contains(&format!("export.csv:{line}:")), "line {line} missing from:\n{message}");
    }
}

#[test]
fn jsonl_bad_lines_are_reported_at_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut jsonl = Vec::new();
    jsonl.extend_from_slice(br#"{"sku": "a1", "name": "Shirt", "cat": "Shirts"}"#);
    jsonl.extend_from_slice(b"\n{\"sku\": \"a2\", \"name\": \"Caf\xe9\", \"cat\": \"Shirts\"}\n");
    jsonl.extend_from_slice(b"{\"sku\": \"a3\", \"name\": \"Shirt\", \"cat\": \n");
    jsonl.extend_from_slice(b"[\"not\", \"an\", \"object\"]\n");
    jsonl.extend_from_slice(br#"{"sku": "a4", "name": {"en": "Shirt"}, "cat": "Shirts"}"#);
    jsonl.extend_from_slice(b"\n");
    jsonl.extend_from_slice(br#"{"sku": "a5", "name": "Shirt", "cat": "Shirts", "split": "later"}"#);
    jsonl.extend_from_slice(b"\n");
    jsonl.extend_from_slice(br#"{"sku": "a6", "name": "Shirt", "cat": "Shirts"}"#);
    let path = write(dir.path(), "export.jsonl", &jsonl);

    let catalog = import_jsonl(&path, &mapping(), dir.path(), ImportOptions::skip()).unwrap();

    let kept: Vec<&str> = catalog.items.iter().map(|it| it.id.as_str()).collect();
    assert_eq!(kept, ["a1", "a6"]);
    assert_eq!(bad_rows(&catalog.report), [("bad_utf8", 2), ("malformed", 3), ("malformed", 4), ("malformed", 5), ("unknown_split", 6)]);
    assert!(catalog.report.errors[3].problem.to_string().contains("name"), "{}", catalog.report.errors[3].problem);

    let error = import_jsonl(&path, &mapping(), dir.path(), ImportOptions::default()).unwrap_err();
    let message = error.to_string();
    for line in 2..=6 {
        assert!(message.contains(&format!("export.jsonl:{line}:")), "line {line} missing from:\n{message}");
    }
}

#[test]
fn an_unknown_extension_is_not_guessed() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "export.xlsx", b"");
    let error = import_file(&path, &mapping(), dir.path(), ImportOptions::default()).unwrap_err();
    assert!(matches!(error, CatalogError::NotACatalog { .. }));
    assert!(error.to_string().contains("export.xlsx"), "{error}");
}

#[test]
fn image_templates_name_photos_by_any_column_and_untrusted_values_cannot_leave_the_folder() {
    let dir = tempfile::tempdir().unwrap();
    let mapping = ColumnMapping::from_json(
        r#"{"id": "id", "title": "name", "category": "cat", "attributes": {"colour": "colour"},
            "image_template": ["images/{id}.jpg", "images/{id}-{colour}.jpg"]}"#,
    )
    .unwrap();
    let csv = "id,name,cat,colour\n\
               15970,Shirt,Topwear,Navy Blue\n\
               ../../etc/passwd,Shirt,Topwear,Red\n\
               16001,Skirt,Bottomwear,\n\
               16002,Dress,Dress,.\n";
    let path = write(dir.path(), "styles.csv", csv.as_bytes());

    let catalog = import_csv(&path, &mapping, dir.path(), ImportOptions::skip()).unwrap();

    let shirt = catalog.get("15970").unwrap();
    assert_eq!(shirt.images, ["images/15970.jpg", "images/15970-Navy Blue.jpg"]);
    assert_eq!(catalog.image_path(&shirt.images[0]), Some(dir.path().join("images/15970.jpg")));
    // A path separator in a value, an empty value and a lone dot are bad rows, each named.
    assert_eq!(bad_rows(&catalog.report), [("malformed", 3), ("missing_field", 4), ("malformed", 5)]);
    let messages: Vec<String> = catalog.report.errors.iter().map(|e| e.problem.to_string()).collect();
    assert!(messages[0].contains("field `id`") && messages[0].contains("../../etc/passwd"), "{messages:?}");
    assert!(messages[1].contains("`colour`"), "{messages:?}");
    assert_eq!(catalog.items.len(), 1);

    // One template as a plain string; a template whose column the header lacks is named.
    let one = ColumnMapping::from_json(r#"{"id": "id", "title": "name", "category": "cat", "image_template": "{sku}.png"}"#).unwrap();
    let error = import_csv(&path, &one, dir.path(), ImportOptions::skip()).unwrap_err().to_string();
    assert!(error.contains("sku"), "{error}");
    let broken = ColumnMapping::from_json(r#"{"id": "id", "title": "name", "category": "cat", "image_template": "img/{id.jpg"}"#);
    assert!(broken.unwrap_err().to_string().contains("img/{id.jpg"));
}
