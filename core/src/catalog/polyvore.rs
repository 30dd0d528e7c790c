//! Importer for Polyvore Outfits. The dataset folder holds the item metadata
//! and photos shared by its two versions, and one folder per version
//! (`disjoint`, `nondisjoint`) with its outfits and fill-in-the-blank questions:
//!
//! ```text
//! polyvore_item_metadata.json   {"154249722": {"url_name": "…", "title": "Skinny jeans",
//!                                  "description": "", "categories": […], "related": […],
//!                                  "category_id": "27", "semantic_category": "bottoms"}, …}
//! images/154249722.jpg
//! disjoint/train.json           [{"set_id": "210750761", "items": [{"item_id": "154249722", "index": 1}, …]}, …]
//! disjoint/valid.json, test.json
//! disjoint/fill_in_blank_test.json
//!                               [{"question": ["210750761_1", "210750761_2"],
//!                                 "answers": ["210750761_3", "199285568_4", …], "blank_position": 3}, …]
//! ```
//!
//! Items: category = `semantic_category`, subcategory = `category_id`, title =
//! `title` (or `url_name` when empty); each item is its own group. Only the
//! items worn in the version's outfits are imported. Outfits become baskets;
//! an item's split is that of the first outfit file it appears in (train,
//! valid, test). Questions name items as `<set_id>_<index>` in the outfits of
//! their own split.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::json_rows::{json_object, json_required, json_rows, json_text, kind_of, read_file, JsonTopLevel};
use super::{Basket, Catalog, CatalogBuilder, CatalogError, ImportOptions, Item, Result, RowError, RowProblem, SourceLoc, Split};

/// The item metadata file, in the dataset folder.
pub const METADATA_FILE: &str = "polyvore_item_metadata.json";

/// Which outfit split of Polyvore Outfits to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolyvoreVersion {
    /// No item appears in outfits of two splits.
    Disjoint,
    /// Splits share items; only outfits are disjoint.
    Nondisjoint,
}

impl PolyvoreVersion {
    /// The version's folder name.
    pub fn dir_name(self) -> &'static str {
        match self {
            PolyvoreVersion::Disjoint => "disjoint",
            PolyvoreVersion::Nondisjoint => "nondisjoint",
        }
    }
}

/// A fill-in-the-blank question: an outfit with one item hidden, and the
/// candidates to fill the blank with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolyvoreQuestion {
    pub split: Split,
    /// Item ids of the outfit's visible items.
    pub context: Vec<String>,
    /// Item ids of the candidates.
    pub answers: Vec<String>,
    /// Index in `answers` of the right one: the candidate from the question's outfit.
    pub correct: usize,
    /// Where the blank goes among the outfit's items, as in the file.
    pub blank_position: u64,
    pub source: SourceLoc,
}

/// A Polyvore version: its catalog (items, outfits as baskets, splits) and its
/// fill-in-the-blank questions.
#[derive(Debug, Clone)]
pub struct Polyvore {
    pub catalog: Catalog,
    pub questions: Vec<PolyvoreQuestion>,
}

/// The split's name in Polyvore file names.
fn file_split_name(split: Split) -> &'static str {
    match split {
        Split::Train => "train",
        Split::Val => "valid",
        Split::Test => "test",
    }
}

/// Imports one version of a Polyvore Outfits folder (`dir` holds the metadata
/// and `images/`). The version's outfit files that are present are read (at
/// least one is needed), and its `fill_in_blank_<split>.json` files when present.
pub fn import_dir(dir: &Path, version: PolyvoreVersion, options: ImportOptions) -> Result<Polyvore> {
    let version_dir = dir.join(version.dir_name());
    let outfit_files: Vec<(Split, PathBuf)> = Split::ALL
        .into_iter()
        .map(|split| (split, version_dir.join(format!("{}.json", file_split_name(split)))))
        .filter(|(_, path)| path.is_file())
        .collect();
    if outfit_files.is_empty() {
        return Err(CatalogError::NotACatalog { path: version_dir, reason: "no outfit file (train.json, valid.json, test.json)".into() });
    }
    let mut builder = CatalogBuilder::new(dir, options);
    let mut outfits = Vec::new();
    for (split, path) in &outfit_files {
        read_outfits(path, *split, &mut builder, &mut outfits)?;
    }
    let first_split = first_split_of_items(&outfits);
    let imported = read_metadata(&dir.join(METADATA_FILE), &first_split, &mut builder)?;
    for (id, (split, loc)) in first_split {
        if imported.contains(id) {
            builder.push_split(loc.clone(), id.to_string(), split);
        }
    }

    let mut questions = Vec::new();
    for split in Split::ALL {
        let path = version_dir.join(format!("fill_in_blank_{}.json", file_split_name(split)));
        if path.is_file() {
            read_questions(&path, split, &outfits, &mut builder, &mut questions)?;
        }
    }
    for outfit in outfits {
        let items = outfit.items.into_iter().map(|(_, id)| id).collect();
        builder.push_basket(Basket { id: outfit.set_id, items, source: outfit.source });
    }
    let mut catalog = builder.finish()?;
    questions.retain(|question| match question.items().find(|id| catalog.index_of(id).is_none()) {
        Some(dropped) => {
            let problem = RowProblem::UnknownId { id: dropped.to_string() };
            catalog.report.errors.push(RowError { loc: question.source.clone(), problem });
            false
        }
        None => true,
    });
    Ok(Polyvore { catalog, questions })
}

impl PolyvoreQuestion {
    /// Every item the question names: the context, then the answers.
    pub fn items(&self) -> impl Iterator<Item = &str> {
        self.context.iter().chain(&self.answers).map(String::as_str)
    }
}

struct Outfit {
    split: Split,
    set_id: String,
    /// (index in the outfit, item id)
    items: Vec<(String, String)>,
    source: SourceLoc,
}

fn read_outfits(path: &Path, split: Split, builder: &mut CatalogBuilder, outfits: &mut Vec<Outfit>) -> Result<()> {
    let bytes = read_file(path)?;
    for row in json_rows(path, &bytes, JsonTopLevel::Array)? {
        builder.row_read();
        match row.value().and_then(json_object).and_then(|object| outfit(&object, split, &row.loc)) {
            Ok(outfit) => outfits.push(outfit),
            Err(problem) => builder.bad_row(row.loc, problem),
        }
    }
    Ok(())
}

fn outfit(object: &Map<String, Value>, split: Split, loc: &SourceLoc) -> std::result::Result<Outfit, RowProblem> {
    let set_id = json_required(object, "set_id")?;
    let entries = match object.get("items") {
        Some(Value::Array(entries)) if !entries.is_empty() => entries,
        None | Some(Value::Null) | Some(Value::Array(_)) => return Err(RowProblem::MissingField { field: "items".into() }),
        Some(other) => return Err(RowProblem::Malformed { reason: format!("`items` is {}, expected an array", kind_of(other)) }),
    };
    let mut items = Vec::with_capacity(entries.len());
    for (position, entry) in entries.iter().enumerate() {
        let Value::Object(entry) = entry else {
            return Err(RowProblem::Malformed { reason: format!("`items[{position}]` is {}, expected an object", kind_of(entry)) });
        };
        let field = |name: &str| {
            json_required(entry, name).map_err(|problem| match problem {
                RowProblem::MissingField { .. } => RowProblem::MissingField { field: format!("items[{position}].{name}") },
                other => other,
            })
        };
        items.push((field("index")?, field("item_id")?));
    }
    Ok(Outfit { split, set_id, items, source: loc.clone() })
}

/// Each item's split and the outfit row where it first appears, outfits taken
/// in split order.
fn first_split_of_items(outfits: &[Outfit]) -> HashMap<&str, (Split, &SourceLoc)> {
    let mut first = HashMap::new();
    for outfit in outfits {
        for (_, id) in &outfit.items {
            first.entry(id.as_str()).or_insert((outfit.split, &outfit.source));
        }
    }
    first
}

/// Reads the metadata of the items worn in `outfits`; returns the ids of the
/// items handed to the builder.
fn read_metadata(path: &Path, worn: &HashMap<&str, (Split, &SourceLoc)>, builder: &mut CatalogBuilder) -> Result<HashSet<String>> {
    let bytes = read_file(path)?;
    let mut imported = HashSet::new();
    for row in json_rows(path, &bytes, JsonTopLevel::Object)? {
        let id = match row.key() {
            Ok(id) if !worn.contains_key(id.as_str()) => continue,
            Ok(id) => id,
            Err(problem) => {
                builder.row_read();
                builder.bad_row(row.loc, problem);
                continue;
            }
        };
        builder.row_read();
        match row.value().and_then(json_object).and_then(|metadata| item(id, &metadata, &row.loc)) {
            Ok(item) => {
                imported.insert(item.id.clone());
                builder.push_item(item);
            }
            Err(problem) => builder.bad_row(row.loc, problem),
        }
    }
    Ok(imported)
}

fn item(id: String, metadata: &Map<String, Value>, loc: &SourceLoc) -> std::result::Result<Item, RowProblem> {
    let title = match json_text(metadata, "title")? {
        title if title.is_empty() => json_text(metadata, "url_name")?,
        title => title,
    };
    Ok(Item {
        group_id: id.clone(),
        title,
        description: json_text(metadata, "description")?,
        category: json_required(metadata, "semantic_category")?,
        subcategory: json_text(metadata, "category_id")?,
        attributes: Default::default(),
        images: vec![format!("images/{id}.jpg")],
        price: None,
        url: None,
        source: loc.clone(),
        id,
    })
}

fn read_questions(
    path: &Path,
    split: Split,
    outfits: &[Outfit],
    builder: &mut CatalogBuilder,
    questions: &mut Vec<PolyvoreQuestion>,
) -> Result<()> {
    let positions: HashMap<String, &str> = outfits
        .iter()
        .filter(|outfit| outfit.split == split)
        .flat_map(|outfit| outfit.items.iter().map(|(index, id)| (format!("{}_{index}", outfit.set_id), id.as_str())))
        .collect();
    let bytes = read_file(path)?;
    for row in json_rows(path, &bytes, JsonTopLevel::Array)? {
        builder.row_read();
        match row.value().and_then(json_object).and_then(|object| question(&object, split, &positions, &row.loc)) {
            Ok(question) => questions.push(question),
            Err(problem) => builder.bad_row(row.loc, problem),
        }
    }
    Ok(())
}

fn question(
    object: &Map<String, Value>,
    split: Split,
    positions: &HashMap<String, &str>,
    loc: &SourceLoc,
) -> std::result::Result<PolyvoreQuestion, RowProblem> {
    let context_positions = position_list(object, "question")?;
    let answer_positions = position_list(object, "answers")?;
    let resolve = |positions_named: &[String]| -> std::result::Result<Vec<String>, RowProblem> {
        positions_named
            .iter()
            .map(|p| positions.get(p).map(|id| id.to_string()).ok_or_else(|| RowProblem::UnknownId { id: p.clone() }))
            .collect()
    };
    let set_of = |position: &str| position.rsplit_once('_').map(|(set_id, _)| set_id.to_string());
    let question_set = context_positions.first().and_then(|position| set_of(position));
    let from_question_set: Vec<usize> = (0..answer_positions.len()).filter(|&i| set_of(&answer_positions[i]) == question_set).collect();
    let [correct] = from_question_set[..] else {
        let reason = format!("{} answers come from the question's outfit, expected exactly 1", from_question_set.len());
        return Err(RowProblem::Malformed { reason });
    };
    let blank_position = match object.get("blank_position") {
        None | Some(Value::Null) => return Err(RowProblem::MissingField { field: "blank_position".into() }),
        Some(value) => value
            .as_u64()
            .ok_or_else(|| RowProblem::Malformed { reason: format!("`blank_position` is {value}, expected a whole number") })?,
    };
    Ok(PolyvoreQuestion {
        split,
        context: resolve(&context_positions)?,
        answers: resolve(&answer_positions)?,
        correct,
        blank_position,
        source: loc.clone(),
    })
}

/// A non-empty list of `<set_id>_<index>` strings.
fn position_list(object: &Map<String, Value>, field: &str) -> std::result::Result<Vec<String>, RowProblem> {
    let values = match object.get(field) {
        Some(Value::Array(values)) if !values.is_empty() => values,
        None | Some(Value::Null) | Some(Value::Array(_)) => return Err(RowProblem::MissingField { field: field.to_string() }),
        Some(other) => return Err(RowProblem::Malformed { reason: format!("`{field}` is {}, expected an array", kind_of(other)) }),
    };
    values
        .iter()
        .enumerate()
        .map(|(i, value)| match value {
            Value::String(position) if position.contains('_') => Ok(position.clone()),
            other => Err(RowProblem::Malformed { reason: format!("`{field}[{i}]` is {other}, expected \"<set_id>_<index>\"") }),
        })
        .collect()
}
