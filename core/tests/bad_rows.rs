//! Every kind of bad input gives an error naming the file and line, fails a
//! strict import, and loses none of the good rows in skip mode.

use std::fs;
use std::path::Path;

use vitrine_core::catalog::{self, hm, images, BadRowPolicy, Catalog, ImportOptions, Split};
use vitrine_core::tasks::Labels;

const HEADER: &str = "article_id,product_code,prod_name,product_type_name,product_group_name,graphical_appearance_name,colour_group_name,perceived_colour_value_name,perceived_colour_master_name,department_name,index_name,index_group_name,section_name,garment_group_name,detail_desc";

/// One good article row; `n` picks the id and product code.
fn row(n: u32, title: &str, desc: &str, group: &str) -> String {
    format!(
        "{n:010},{:07},{title},T-shirt,{group},Solid,Black,Dark,Black,Jersey,Ladieswear,Ladieswear,Womens,Jersey Fancy,{desc}",
        n / 1000
    )
}

/// Writes an H&M-format export with good rows 1..=4 (lines 2..=5), then the
/// given bad lines, then good rows 5..=6; every article gets a valid photo and
/// every article is in the train split unless `splits` says otherwise.
fn export(dir: &Path, bad_lines: &[Vec<u8>], splits: &str) {
    let mut csv = format!("{HEADER}\n").into_bytes();
    for n in 1..=4 {
        csv.extend(row(n * 1000, "Shirt", "Soft jersey top.", "Upper body").bytes().chain(*b"\n"));
    }
    for line in bad_lines {
        csv.extend(line);
        csv.push(b'\n');
    }
    for n in 5..=6 {
        csv.extend(row(n * 1000, "Shirt", "Soft jersey top.", "Upper body").bytes().chain(*b"\n"));
    }
    fs::write(dir.join(hm::ARTICLES_FILE), csv).unwrap();
    for n in 1..=9 {
        write_photo(dir, &format!("{:010}", n * 1000));
    }
    fs::write(dir.join(hm::SPLITS_FILE), splits).unwrap();
}

fn write_photo(dir: &Path, id: &str) {
    let path = dir.join(format!("images/{}/{id}.jpg", &id[..3]));
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::RgbImage::from_pixel(8, 12, image::Rgb([200, 10, 10])).save(&path).unwrap();
}

fn good_ids() -> Vec<String> {
    [1, 2, 3, 4, 5, 6].iter().map(|n| format!("{:010}", n * 1000)).collect()
}

fn all_train(extra: &[u32]) -> String {
    let mut s = "article_id,split\n".to_string();
    for n in [1, 2, 3, 4, 5, 6].iter().chain(extra) {
        s.push_str(&format!("{:010},train\n", n * 1000));
    }
    s
}

/// Imports `dir` strict (must fail, message naming `file:line`) and skipping
/// (must keep every good row and report exactly one bad row at that line).
fn assert_bad_row(dir: &Path, file: &str, line: u64, kind: &str) -> Catalog {
    let strict =
        hm::import_dir(dir, ImportOptions::default()).and_then(|mut c| images::verify(&mut c, BadRowPolicy::Strict, || {}).map(|_| c));
    let message = strict.expect_err("strict import must fail").to_string();
    assert!(message.contains(&format!("{file}:{line}")), "error names {file}:{line}: {message}");
    let mut skipped = hm::import_dir(dir, ImportOptions::skip()).expect("skip import succeeds");
    images::verify(&mut skipped, BadRowPolicy::Skip, || {}).unwrap();
    let ids: Vec<_> = skipped.items.iter().map(|it| it.id.clone()).collect();
    for id in good_ids() {
        assert!(ids.contains(&id), "good row {id} kept");
    }
    assert_eq!(skipped.report.errors.len(), 1, "{:?}", skipped.report.errors);
    let error = &skipped.report.errors[0];
    assert_eq!(error.problem.kind(), kind);
    assert!(error.loc.file.ends_with(file) && error.loc.line == line, "reported at {}", error.loc);
    skipped
}

#[test]
fn missing_column_names_file_and_column() {
    let dir = tempfile::tempdir().unwrap();
    export(dir.path(), &[], &all_train(&[]));
    let text = fs::read_to_string(dir.path().join(hm::ARTICLES_FILE)).unwrap();
    fs::write(dir.path().join(hm::ARTICLES_FILE), text.replacen(",prod_name,", ",name,", 1)).unwrap();
    let message = hm::import_dir(dir.path(), ImportOptions::skip()).unwrap_err().to_string();
    assert!(message.contains("articles.csv:1") && message.contains("missing column `prod_name`"), "{message}");
}

#[test]
fn bad_utf8_is_a_bad_row() {
    let dir = tempfile::tempdir().unwrap();
    let mut bad = row(7000, "Shirt", "", "Upper body").into_bytes();
    bad.extend(b"caf\xe9 latte");
    export(dir.path(), &[bad], &all_train(&[7]));
    let catalog = assert_bad_row(dir.path(), "articles.csv", 6, "bad_utf8");
    assert!(catalog.report.errors[0].to_string().contains("detail_desc"));
}

#[test]
fn duplicate_id_is_a_bad_row() {
    let dir = tempfile::tempdir().unwrap();
    export(dir.path(), &[row(2000, "Shirt again", "Same id.", "Upper body").into_bytes()], &all_train(&[]));
    let catalog = assert_bad_row(dir.path(), "articles.csv", 6, "duplicate_id");
    assert!(catalog.report.errors[0].to_string().contains("articles.csv:3"), "names the first occurrence");
}

#[test]
fn missing_image_is_a_bad_row() {
    let dir = tempfile::tempdir().unwrap();
    export(dir.path(), &[row(7000, "Shirt", "Top.", "Upper body").into_bytes()], &all_train(&[7]));
    fs::remove_file(dir.path().join("images/000/0000007000.jpg")).unwrap();
    let catalog = assert_bad_row(dir.path(), "articles.csv", 6, "missing_image");
    assert!(catalog.split_of("0000007000").is_none(), "its split entry goes with it");
}

#[test]
fn corrupt_jpeg_is_a_bad_row() {
    let dir = tempfile::tempdir().unwrap();
    export(dir.path(), &[row(7000, "Shirt", "Top.", "Upper body").into_bytes()], &all_train(&[7]));
    let path = dir.path().join("images/000/0000007000.jpg");
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    assert_bad_row(dir.path(), "articles.csv", 6, "corrupt_image");
}

#[test]
fn empty_text_is_a_bad_row() {
    let dir = tempfile::tempdir().unwrap();
    export(dir.path(), &[row(7000, "", "", "Upper body").into_bytes()], &all_train(&[7]));
    assert_bad_row(dir.path(), "articles.csv", 6, "empty_text");
}

#[test]
fn oversized_field_is_a_bad_row() {
    let dir = tempfile::tempdir().unwrap();
    let huge = "x".repeat(ImportOptions::default().max_field_bytes + 1);
    export(dir.path(), &[row(7000, "Shirt", &huge, "Upper body").into_bytes()], &all_train(&[7]));
    let catalog = assert_bad_row(dir.path(), "articles.csv", 6, "oversized_field");
    assert!(catalog.report.errors[0].to_string().contains("description"));
}

#[test]
fn malformed_row_is_a_bad_row() {
    let dir = tempfile::tempdir().unwrap();
    export(dir.path(), &[b"0000007000,0000007,only three fields".to_vec()], &all_train(&[]));
    assert_bad_row(dir.path(), "articles.csv", 6, "malformed");
}

#[test]
fn unknown_split_value_is_a_bad_row() {
    let dir = tempfile::tempdir().unwrap();
    export(dir.path(), &[], &(all_train(&[]) + "0000007000,holdout\n"));
    write_photo(dir.path(), "0000007000");
    let message = hm::import_dir(dir.path(), ImportOptions::default()).unwrap_err().to_string();
    assert!(message.contains("splits.csv:8") && message.contains("unknown split `holdout`"), "{message}");
}

#[test]
fn unknown_category_in_a_split_is_reported_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    // Line 6: a test article whose category no train article has.
    export(dir.path(), &[row(7000, "Cap", "A cap.", "Accessories").into_bytes()], &(all_train(&[]) + "0000007000,test\n"));
    let catalog = hm::import_dir(dir.path(), ImportOptions::default()).expect("the catalog itself is fine");
    let message = Labels::from_catalog(&catalog, BadRowPolicy::Strict).unwrap_err().to_string();
    assert!(message.contains("articles.csv:6") && message.contains("`Accessories`"), "{message}");
    let labels = Labels::from_catalog(&catalog, BadRowPolicy::Skip).unwrap();
    assert_eq!(labels.unseen.len(), 1);
    assert_eq!(labels.category[&Split::Train].len(), 6, "every train row keeps its label");
    assert!(labels.category.get(&Split::Test).is_none());
    assert_eq!(catalog.items.len(), 7, "the item stays in the catalog for retrieval");
}

#[test]
fn split_row_for_an_unknown_article_is_a_bad_row() {
    let dir = tempfile::tempdir().unwrap();
    export(dir.path(), &[], &(all_train(&[]) + "0000009999,val\n"));
    let catalog = catalog::hm::import_dir(dir.path(), ImportOptions::skip()).unwrap();
    assert_eq!(catalog.items.len(), 6);
    let error = &catalog.report.errors[0];
    assert_eq!((error.problem.kind(), error.loc.line), ("unknown_id", 8));
}
