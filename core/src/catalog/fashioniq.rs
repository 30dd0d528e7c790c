//! Importer for FashionIQ's annotation files: relative captions and image
//! splits for the `dress`, `shirt` and `toptee` categories, in the folder layout
//! of the official release:
//!
//! ```text
//! captions/cap.dress.train.json      [{"candidate": "B003FGW7MK", "target": "B008BHCT58",
//!                                      "captions": ["is solid black with no sleeves",
//!                                                   "is black with straps"]}, …]
//! image_splits/split.dress.train.json ["B009PMCJLW", "B0084Y8XIU", …]
//! ```
//!
//! Test caption files have no `target`. FashionIQ ships no photos or titles,
//! so it is not a [`Catalog`](super::Catalog): it is a set of
//! (candidate, modification text, target) triplets over product ids (ASINs),
//! and the ASINs of each category and split.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::json_rows::{json_object, json_required, json_rows, json_text, kind_of, read_file, JsonTopLevel};
use super::{BadRowPolicy, CatalogError, ImportOptions, Result, RowError, RowProblem, SourceLoc, Split};

/// Folder of the caption files, `cap.{category}.{split}.json`.
pub const CAPTIONS_DIR: &str = "captions";
/// Folder of the image split files, `split.{category}.{split}.json`.
pub const IMAGE_SPLITS_DIR: &str = "image_splits";

/// Bad rows listed in a strict-mode failure.

/// A reference product, the target product, and the two captions that
/// describe how the target differs from the reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptionTriplet {
    pub category: String,
    pub split: Split,
    /// ASIN of the reference product.
    pub candidate: String,
    /// ASIN of the wanted product; `None` in test files.
    pub target: Option<String>,
    /// The annotators' captions as written (one of them may be empty).
    pub captions: Vec<String>,
    pub source: SourceLoc,
}

impl CaptionTriplet {
    /// The captions as one modification text; see [`modification_text`].
    pub fn modification_text(&self) -> String {
        modification_text(&self.captions)
    }
}

/// Joins captions into one modification text: each trimmed, empty ones left
/// out, joined with " and " (`["is solid black with no sleeves", "is black with straps"]`
/// → `"is solid black with no sleeves and is black with straps"`).
pub fn modification_text(captions: &[String]) -> String {
    captions.iter().map(|c| c.trim()).filter(|c| !c.is_empty()).collect::<Vec<_>>().join(" and ")
}

/// The product ids (ASINs) of one category and split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSplit {
    pub category: String,
    pub split: Split,
    pub asins: Vec<String>,
    pub file: PathBuf,
}

/// Rows read and kept from one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileCount {
    pub file: PathBuf,
    pub rows_read: u64,
    pub rows_kept: u64,
}

/// Per-file counts and bad rows of a FashionIQ import.
#[derive(Debug, Clone, Default)]
pub struct FashionIqReport {
    /// Caption files first, then image split files, each by category and split.
    pub files: Vec<FileCount>,
    /// Bad rows, in the order found.
    pub errors: Vec<RowError>,
}

/// The FashionIQ annotations.
#[derive(Debug, Clone, Default)]
pub struct FashionIq {
    pub triplets: Vec<CaptionTriplet>,
    pub image_splits: Vec<ImageSplit>,
    pub report: FashionIqReport,
}

impl FashionIq {
    /// Triplets of one category and split, in file order.
    pub fn triplets_of<'a>(&'a self, category: &'a str, split: Split) -> impl Iterator<Item = &'a CaptionTriplet> {
        self.triplets.iter().filter(move |t| t.category == category && t.split == split)
    }
}

/// Imports a FashionIQ folder: `captions/` is required, `image_splits/` is
/// read when present. Bad rows fail the import (strict) or are left out and
/// reported (skip).
pub fn import_dir(dir: &Path, options: ImportOptions) -> Result<FashionIq> {
    let caption_dir = dir.join(CAPTIONS_DIR);
    let caption_files = if caption_dir.is_dir() { annotation_files(&caption_dir, "cap.")? } else { Vec::new() };
    if caption_files.is_empty() {
        return Err(CatalogError::NotACatalog {
            path: dir.to_path_buf(),
            reason: format!("no `{CAPTIONS_DIR}/cap.<category>.<split>.json` file"),
        });
    }
    let split_dir = dir.join(IMAGE_SPLITS_DIR);
    let split_files = if split_dir.is_dir() { annotation_files(&split_dir, "split.")? } else { Vec::new() };

    let mut fashioniq = FashionIq::default();
    for file in &caption_files {
        read_captions(file, &options, &mut fashioniq)?;
    }
    for file in &split_files {
        read_image_split(file, &options, &mut fashioniq)?;
    }
    if options.policy == BadRowPolicy::Strict && !fashioniq.report.errors.is_empty() {
        return Err(super::strict_failure(std::mem::take(&mut fashioniq.report.errors)));
    }
    Ok(fashioniq)
}

/// An annotation file and the category and split its name gives.
struct AnnotationFile {
    path: PathBuf,
    category: String,
    split: Split,
}

/// The files `{prefix}{category}.{split}.json` of a folder, by category and split.
fn annotation_files(dir: &Path, prefix: &str) -> Result<Vec<AnnotationFile>> {
    let entries = std::fs::read_dir(dir).map_err(|e| CatalogError::io(dir, e))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| CatalogError::io(dir, e))?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
        let Some((category, split)) = name.strip_prefix(prefix).and_then(|n| n.strip_suffix(".json")).and_then(|n| n.rsplit_once('.'))
        else {
            continue;
        };
        let split = split.parse().map_err(|split| CatalogError::NotACatalog {
            path: path.clone(),
            reason: format!("`{split}` in the file name is not a split (expected train, val or test)"),
        })?;
        files.push(AnnotationFile { category: category.to_string(), split, path });
    }
    files.sort_by(|a, b| (&a.category, a.split).cmp(&(&b.category, b.split)));
    Ok(files)
}

fn read_captions(file: &AnnotationFile, options: &ImportOptions, fashioniq: &mut FashionIq) -> Result<()> {
    let bytes = read_file(&file.path)?;
    let mut count = FileCount { file: file.path.clone(), rows_read: 0, rows_kept: 0 };
    for row in json_rows(&file.path, &bytes, JsonTopLevel::Array)? {
        count.rows_read += 1;
        match row.value().and_then(json_object).and_then(|object| triplet(&object, file, &row.loc, options)) {
            Ok(triplet) => {
                fashioniq.triplets.push(triplet);
                count.rows_kept += 1;
            }
            Err(problem) => fashioniq.report.errors.push(RowError { loc: row.loc, problem }),
        }
    }
    fashioniq.report.files.push(count);
    Ok(())
}

fn triplet(
    object: &Map<String, Value>,
    file: &AnnotationFile,
    loc: &SourceLoc,
    options: &ImportOptions,
) -> std::result::Result<CaptionTriplet, RowProblem> {
    let candidate = json_required(object, "candidate")?;
    let target = match file.split {
        Split::Test => Some(json_text(object, "target")?).filter(|t| !t.is_empty()),
        Split::Train | Split::Val => Some(json_required(object, "target")?),
    };
    let captions = captions(object, options)?;
    Ok(CaptionTriplet { category: file.category.clone(), split: file.split, candidate, target, captions, source: loc.clone() })
}

/// Exactly two strings, at least one of them not blank.
fn captions(object: &Map<String, Value>, options: &ImportOptions) -> std::result::Result<Vec<String>, RowProblem> {
    let values = match object.get("captions") {
        None | Some(Value::Null) => return Err(RowProblem::MissingField { field: "captions".into() }),
        Some(Value::Array(values)) => values,
        Some(other) => return Err(RowProblem::Malformed { reason: format!("`captions` is {}, expected 2 strings", kind_of(other)) }),
    };
    if values.len() != 2 {
        return Err(RowProblem::Malformed { reason: format!("`captions` has {} entries, expected 2 strings", values.len()) });
    }
    let mut captions = Vec::with_capacity(2);
    for (index, value) in values.iter().enumerate() {
        let Value::String(caption) = value else {
            return Err(RowProblem::Malformed { reason: format!("`captions[{index}]` is {}, expected a string", kind_of(value)) });
        };
        if caption.len() > options.max_field_bytes {
            let (len, limit) = (caption.len(), options.max_field_bytes);
            return Err(RowProblem::OversizedField { field: format!("captions[{index}]"), len, limit });
        }
        captions.push(caption.clone());
    }
    if modification_text(&captions).is_empty() {
        return Err(RowProblem::EmptyText);
    }
    Ok(captions)
}

fn read_image_split(file: &AnnotationFile, options: &ImportOptions, fashioniq: &mut FashionIq) -> Result<()> {
    let bytes = read_file(&file.path)?;
    let mut count = FileCount { file: file.path.clone(), rows_read: 0, rows_kept: 0 };
    let mut asins = Vec::new();
    for row in json_rows(&file.path, &bytes, JsonTopLevel::Array)? {
        count.rows_read += 1;
        match row.value().and_then(|value| asin(&value, options)) {
            Ok(asin) => {
                asins.push(asin);
                count.rows_kept += 1;
            }
            Err(problem) => fashioniq.report.errors.push(RowError { loc: row.loc, problem }),
        }
    }
    fashioniq.report.files.push(count);
    fashioniq.image_splits.push(ImageSplit { category: file.category.clone(), split: file.split, asins, file: file.path.clone() });
    Ok(())
}

fn asin(value: &Value, options: &ImportOptions) -> std::result::Result<String, RowProblem> {
    match value {
        Value::String(asin) if asin.trim().is_empty() => Err(RowProblem::MissingField { field: "asin".into() }),
        Value::String(asin) if asin.len() > options.max_field_bytes => {
            Err(RowProblem::OversizedField { field: "asin".into(), len: asin.len(), limit: options.max_field_bytes })
        }
        Value::String(asin) => Ok(asin.trim().to_string()),
        other => Err(RowProblem::Malformed { reason: format!("expected an ASIN string, found {}", kind_of(other)) }),
    }
}
