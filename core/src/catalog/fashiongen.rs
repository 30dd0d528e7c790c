//! Importer for FashionGen's `*_info.json` files: one JSON array per split
//! (`train_info.json`, `val_info.json` or `validation_info.json`,
//! `test_info.json`) of products, each with all its views:
//!
//! ```text
//! [{"id": 12, "title": "Wool overcoat", "description": "Long sleeve coat in navy.",
//!   "category_id": 3, "subcategory_id": 41, "attributes_id": [5, 17],
//!   "images": ["images/12_0.png", "images/12_1.png"]}, …]
//! ```
//!
//! Ids may be numbers or strings. Category and subcategory are ids, kept as
//! text (`"3"`); `attributes_id` becomes the attribute `attributes_id`, its ids
//! joined by spaces. FashionGen has no colour variants, so each item is its own
//! group. Image paths resolve against the folder of the info file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::json_rows::{json_list, json_object, json_required, json_rows, json_text, read_file, JsonTopLevel};
use super::{Catalog, CatalogBuilder, CatalogError, ImportOptions, Item, Result, RowProblem, SourceLoc, Split};

/// File names end with this; the part before it names the split.
pub const INFO_SUFFIX: &str = "_info.json";

/// Attribute key of the space-separated FashionGen attribute ids.
pub const ATTRIBUTE_IDS: &str = "attributes_id";

/// Imports every `*_info.json` file of a folder; the split of each item comes
/// from its file's name.
pub fn import_dir(dir: &Path, options: ImportOptions) -> Result<Catalog> {
    let files = info_files(dir)?;
    if files.is_empty() {
        return Err(CatalogError::NotACatalog {
            path: dir.to_path_buf(),
            reason: "no `*_info.json` file (train_info.json, val_info.json, test_info.json)".into(),
        });
    }
    let mut builder = CatalogBuilder::new(dir, options);
    for (path, split) in files {
        read_info_file(&path, split, &mut builder)?;
    }
    builder.finish()
}

/// Imports one info file; its items get the split its name gives, if any.
pub fn import_file(path: &Path, options: ImportOptions) -> Result<Catalog> {
    let root = path.parent().unwrap_or(Path::new(""));
    let mut builder = CatalogBuilder::new(root, options);
    read_info_file(path, split_of_file(path), &mut builder)?;
    builder.finish()
}

/// The split an info file holds: `train_info.json` → train,
/// `val_info.json` or `validation_info.json` → val, `test_info.json` → test.
pub fn split_of_file(path: &Path) -> Option<Split> {
    path.file_name()?.to_str()?.strip_suffix(INFO_SUFFIX)?.parse().ok()
}

/// The info files of a folder, train first, then val, test, and any others.
fn info_files(dir: &Path) -> Result<Vec<(PathBuf, Option<Split>)>> {
    let entries = std::fs::read_dir(dir).map_err(|e| CatalogError::io(dir, e))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| CatalogError::io(dir, e))?.path();
        let is_info = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(INFO_SUFFIX));
        if is_info && path.is_file() {
            let split = split_of_file(&path);
            files.push((path, split));
        }
    }
    files.sort_by(|(a, a_split), (b, b_split)| (a_split.is_none(), a_split, a).cmp(&(b_split.is_none(), b_split, b)));
    Ok(files)
}

fn read_info_file(path: &Path, split: Option<Split>, builder: &mut CatalogBuilder) -> Result<()> {
    let bytes = read_file(path)?;
    for row in json_rows(path, &bytes, JsonTopLevel::Array)? {
        builder.row_read();
        match row.value().and_then(json_object).and_then(|product| item(&product, &row.loc)) {
            Ok(item) => {
                let id = item.id.clone();
                if let (true, Some(split)) = (builder.push_item(item), split) {
                    builder.push_split(row.loc, id, split);
                }
            }
            Err(problem) => builder.bad_row(row.loc, problem),
        }
    }
    Ok(())
}

fn item(product: &Map<String, Value>, loc: &SourceLoc) -> std::result::Result<Item, RowProblem> {
    let id = json_required(product, "id")?;
    let images = json_list(product, "images")?;
    if images.is_empty() {
        return Err(RowProblem::MissingField { field: "images".into() });
    }
    let attribute_ids = json_list(product, ATTRIBUTE_IDS)?.join(" ");
    let attributes: BTreeMap<String, String> =
        Some(attribute_ids).filter(|ids| !ids.is_empty()).map(|ids| (ATTRIBUTE_IDS.to_string(), ids)).into_iter().collect();
    Ok(Item {
        group_id: id.clone(),
        title: json_text(product, "title")?,
        description: json_text(product, "description")?,
        category: json_required(product, "category_id")?,
        subcategory: json_text(product, "subcategory_id")?,
        attributes,
        images,
        price: None,
        url: None,
        source: loc.clone(),
        id,
    })
}
