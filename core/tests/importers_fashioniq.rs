//! The FashionIQ caption and image-split importer: on the real annotation files
//! when they are beside the project, and always on a small generated folder.

use std::path::{Path, PathBuf};

use vitrine_core::catalog::fashioniq::{import_dir, modification_text, FashionIq};
use vitrine_core::catalog::{CatalogError, ImportOptions, RowProblem, Split};

const REAL_DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data/fashioniq");

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, bytes).expect("write test file");
    path
}

/// Elements of a JSON array file, counted independently of the importer.
fn element_count(path: &Path) -> u64 {
    let text = std::fs::read_to_string(path).unwrap();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    value.as_array().expect("a JSON array").len() as u64
}

fn rows_kept(fashioniq: &FashionIq, path: &Path) -> u64 {
    let count = fashioniq.report.files.iter().find(|f| f.file == path).unwrap_or_else(|| panic!("{} not read", path.display()));
    assert_eq!(count.rows_read, count.rows_kept, "{}", path.display());
    count.rows_kept
}

#[test]
fn real_annotation_files_import_completely() {
    let dir = Path::new(REAL_DATA);
    if !dir.is_dir() {
        eprintln!("{REAL_DATA} is absent: checking a generated FashionIQ folder instead");
        generated_folder_counts_and_bad_rows();
        return;
    }

    let fashioniq = import_dir(dir, ImportOptions::default()).unwrap();

    assert!(fashioniq.report.errors.is_empty());
    assert_eq!(fashioniq.report.files.len(), 18);
    for category in ["dress", "shirt", "toptee"] {
        for split in Split::ALL {
            let captions = dir.join(format!("captions/cap.{category}.{split}.json"));
            let expected = element_count(&captions);
            assert_eq!(rows_kept(&fashioniq, &captions), expected, "{}", captions.display());
            let triplets: Vec<_> = fashioniq.triplets_of(category, split).collect();
            assert_eq!(triplets.len() as u64, expected, "{}", captions.display());
            assert!(triplets.iter().all(|t| t.target.is_some() == (split != Split::Test)));
            assert!(triplets.iter().all(|t| t.captions.len() == 2 && !t.modification_text().is_empty()));

            let image_split = dir.join(format!("image_splits/split.{category}.{split}.json"));
            let expected = element_count(&image_split);
            assert_eq!(rows_kept(&fashioniq, &image_split), expected, "{}", image_split.display());
            let asins = fashioniq.image_splits.iter().find(|s| s.category == category && s.split == split).unwrap();
            assert_eq!(asins.asins.len() as u64, expected);
        }
    }
    let first = fashioniq.triplets_of("dress", Split::Train).next().unwrap();
    assert_eq!(first.candidate, "B003FGW7MK");
    assert_eq!(first.target.as_deref(), Some("B008BHCT58"));
    assert_eq!(first.modification_text(), "is solid black with no sleeves and is black with straps");
    assert_eq!(first.source.line, 2);
}

/// A small folder: dress train (line 7 has one caption), dress test (no
/// targets), shirt val (line 3 has no candidate; CRLF line ends), and the
/// dress train split (line 4 is a number).
fn generated_folder(dir: &Path) {
    write(
        dir,
        "captions/cap.dress.train.json",
        br#"[
  {"target": "T1", "candidate": "C1", "captions": ["is solid black with no sleeves", " is black with straps "]},
  {"target": "T2", "candidate": "C2",
   "captions": ["", "is longer"]},
  {"target": "T3",
   "candidate": "C3",
   "captions": ["is red"]},
  {"target": "T4", "candidate": "C4", "captions": ["is blue", "is shorter"]}
]"#,
    );
    write(dir, "captions/cap.dress.test.json", br#"[{"candidate": "C9", "captions": ["has a belt", "is darker"]}]"#);
    write(
        dir,
        "captions/cap.shirt.val.json",
        b"[\r\n  {\"target\": \"S1\", \"candidate\": \"S0\", \"captions\": [\"a\", \"b\"]},\r\n  {\"target\": \"S2\", \"captions\": [\"a\", \"b\"]}\r\n]",
    );
    write(dir, "image_splits/split.dress.train.json", b"[\n  \"C1\",\n  \"T1\",\n  42,\n  \"C2\"\n]");
    write(dir, "captions/README.txt", b"not an annotation file");
}

#[test]
fn generated_folder_counts_and_bad_rows() {
    let dir = tempfile::tempdir().unwrap();
    generated_folder(dir.path());
    let captions = dir.path().join("captions");

    let fashioniq = import_dir(dir.path(), ImportOptions::skip()).unwrap();

    let counts: Vec<(String, u64, u64)> = fashioniq
        .report
        .files
        .iter()
        .map(|f| (f.file.file_name().unwrap().to_string_lossy().into_owned(), f.rows_read, f.rows_kept))
        .collect();
    assert_eq!(
        counts,
        [
            ("cap.dress.train.json".to_string(), 4, 3),
            ("cap.dress.test.json".to_string(), 1, 1),
            ("cap.shirt.val.json".to_string(), 2, 1),
            ("split.dress.train.json".to_string(), 4, 3),
        ]
    );
    let errors: Vec<(PathBuf, u64, &str)> =
        fashioniq.report.errors.iter().map(|e| (e.loc.file.clone(), e.loc.line, e.problem.kind())).collect();
    assert_eq!(
        errors,
        [
            (captions.join("cap.dress.train.json"), 5, "malformed"),
            (captions.join("cap.shirt.val.json"), 3, "missing_field"),
            (dir.path().join("image_splits/split.dress.train.json"), 4, "malformed"),
        ]
    );
    assert!(matches!(&fashioniq.report.errors[1].problem, RowProblem::MissingField { field } if field == "candidate"));

    let train: Vec<_> = fashioniq.triplets_of("dress", Split::Train).collect();
    assert_eq!(train.iter().map(|t| t.candidate.as_str()).collect::<Vec<_>>(), ["C1", "C2", "C4"]);
    assert_eq!(train[0].modification_text(), "is solid black with no sleeves and is black with straps");
    assert_eq!(train[1].modification_text(), "is longer");
    assert_eq!(train[2].source.line, 8);
    let test = fashioniq.triplets_of("dress", Split::Test).next().unwrap();
    assert_eq!((test.candidate.as_str(), test.target.as_deref()), ("C9", None));
    assert_eq!(fashioniq.triplets_of("shirt", Split::Val).next().unwrap().target.as_deref(), Some("S1"));
    assert_eq!(fashioniq.image_splits[0].asins, ["C1", "T1", "C2"]);
}

#[test]
fn strict_mode_fails_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    generated_folder(dir.path());

    let error = import_dir(dir.path(), ImportOptions::default()).unwrap_err();

    assert!(matches!(error, CatalogError::BadRows { count: 3, .. }), "{error}");
    let message = error.to_string();
    for place in ["cap.dress.train.json:5:", "cap.shirt.val.json:3:", "split.dress.train.json:4:"] {
        assert!(message.contains(place), "{place} missing from:\n{message}");
    }
    assert!(message.contains("captions"), "{message}");
}

#[test]
fn bad_caption_rows_are_told_apart() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "captions/cap.toptee.val.json",
        br#"[
  {"candidate": "C1", "captions": ["a", "b"]},
  {"target": "T2", "candidate": "C2", "captions": ["  ", ""]},
  {"target": "T3", "candidate": "C3", "captions": "is red"},
  {"target": "T4", "candidate": "C4", "captions": ["is red", 7]},
  {"target": "T5", "candidate": "C5"}
]"#,
    );

    let fashioniq = import_dir(dir.path(), ImportOptions::skip()).unwrap();

    assert!(fashioniq.triplets.is_empty());
    assert!(fashioniq.image_splits.is_empty(), "no image_splits folder");
    let problems: Vec<(u64, String)> = fashioniq.report.errors.iter().map(|e| (e.loc.line, e.problem.to_string())).collect();
    assert_eq!(problems.len(), 5, "{problems:?}");
    assert_eq!(problems[0], (2, "field `target` is missing or empty".to_string()));
    assert_eq!(problems[1].0, 3);
    assert!(problems[1].1.contains("no text"), "{problems:?}");
    assert!(problems[2].1.contains("`captions` is a string"), "{problems:?}");
    assert!(problems[3].1.contains("`captions[1]` is a number"), "{problems:?}");
    assert_eq!(problems[4], (6, "field `captions` is missing or empty".to_string()));
}

#[test]
fn folders_without_captions_or_with_unknown_splits_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let error = import_dir(dir.path(), ImportOptions::skip()).unwrap_err();
    assert!(matches!(error, CatalogError::NotACatalog { .. }), "{error}");
    assert!(error.to_string().contains(&dir.path().display().to_string()), "{error}");

    write(dir.path(), "captions/cap.dress.holdout.json", b"[]");
    let error = import_dir(dir.path(), ImportOptions::skip()).unwrap_err();
    assert!(matches!(error, CatalogError::NotACatalog { .. }), "{error}");
    assert!(error.to_string().contains("cap.dress.holdout.json"), "{error}");
}

#[test]
fn captions_join_into_one_modification_text() {
    let captions = [" is solid black with no sleeves".to_string(), "is black with straps ".to_string()];
    assert_eq!(modification_text(&captions), "is solid black with no sleeves and is black with straps");
    assert_eq!(modification_text(&["".to_string(), "is longer".to_string()]), "is longer");
    assert_eq!(modification_text(&[]), "");
}
