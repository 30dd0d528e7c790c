//! Importer for any shop's export: a CSV file with a header, or JSON Lines (one
//! JSON object per line), read through a [`ColumnMapping`] that says which
//! column holds which catalog field.
//!
//! ```text
//! sku,parent_sku,name,desc,cat,color,image_urls,price,split
//! 1001-r,1001,Linen shirt,Relaxed fit,Shirts,red,img/1001-r.jpg|img/1001-r-back.jpg,39.90,train
//! ```
//!
//! with the mapping (a JSON file; only `id`, `title` and `category` are required)
//!
//! ```text
//! {"id": "sku", "group_id": "parent_sku", "title": "name", "description": "desc",
//!  "category": "cat", "images": "image_urls", "images_separator": "|",
//!  "attributes": {"colour": "color"}, "price": "price", "split": "split"}
//! ```
//!
//! In JSON Lines the mapped names are object keys, and an images field may also
//! be a JSON array.
//!
//! An export without image paths names its photos by a column instead:
//! `"image_template": "images/{sku}.jpg"` (or a list of templates, one per
//! photo) makes each row's paths from its own values, any column in braces.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::canonical::read_jsonl;
use super::csv_rows::{CsvRow, CsvRows};
use super::json_rows::{json_list, json_object, json_text};
use super::{Catalog, CatalogBuilder, CatalogError, ImportOptions, Item, Result, RowProblem, SourceLoc, Split};

/// Which source column (CSV header name or JSON key) holds each catalog field.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnMapping {
    pub id: String,
    /// Items sharing this value are the same garment in another colour; each
    /// item is its own group when absent.
    #[serde(default)]
    pub group_id: Option<String>,
    pub title: String,
    #[serde(default)]
    pub description: Option<String>,
    pub category: String,
    #[serde(default)]
    pub subcategory: Option<String>,
    /// Image paths (relative to the import root, or absolute) or URLs.
    #[serde(default)]
    pub images: Option<String>,
    /// Separates several images in one text field, e.g. `"|"`; without it the
    /// field is a single image.
    #[serde(default)]
    pub images_separator: Option<String>,
    /// Image paths made from each row, one per template (after those of
    /// `images`): `{column}` is that column's value, e.g. `"images/{id}.jpg"`.
    #[serde(default)]
    pub image_template: ImageTemplates,
    /// Attribute key (e.g. [`attr::COLOUR`](super::attr::COLOUR)) → column.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    #[serde(default)]
    pub price: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
    /// Column with `train`, `val` or `test` (empty: no split).
    #[serde(default)]
    pub split: Option<String>,
}

/// One image path template or a list of them, as the mapping gives them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(from = "OneOrMany")]
pub struct ImageTemplates(pub Vec<String>);

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl From<OneOrMany> for ImageTemplates {
    fn from(value: OneOrMany) -> Self {
        match value {
            OneOrMany::One(template) => ImageTemplates(vec![template]),
            OneOrMany::Many(templates) => ImageTemplates(templates),
        }
    }
}

/// A piece of an image template: literal text or a column's value.
#[derive(Debug, PartialEq, Eq)]
enum TemplatePart<'a> {
    Text(&'a str),
    Column(&'a str),
}

/// The parts of `template`, or why it is not one (an unclosed or stray brace,
/// an empty column name, no column at all: every row would name one file).
fn template_parts(template: &str) -> std::result::Result<Vec<TemplatePart<'_>>, String> {
    let mut parts = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find(['{', '}']) {
        if rest.as_bytes()[open] == b'}' {
            return Err(format!("image_template `{template}`: `}}` without `{{`"));
        }
        if open > 0 {
            parts.push(TemplatePart::Text(&rest[..open]));
        }
        let after = &rest[open + 1..];
        let close = after.find('}').ok_or_else(|| format!("image_template `{template}`: `{{` without `}}`"))?;
        let column = &after[..close];
        if column.trim().is_empty() || column.contains('{') {
            return Err(format!("image_template `{template}`: `{{{column}}}` names no column"));
        }
        parts.push(TemplatePart::Column(column));
        rest = &after[close + 1..];
    }
    if !rest.is_empty() {
        parts.push(TemplatePart::Text(rest));
    }
    if !parts.iter().any(|p| matches!(p, TemplatePart::Column(_))) {
        return Err(format!("image_template `{template}` names no column in braces, so every row would get the same photo"));
    }
    Ok(parts)
}

impl ColumnMapping {
    /// Parses a mapping from its JSON text.
    pub fn from_json(text: &str) -> Result<Self> {
        let mapping: ColumnMapping = serde_json::from_str(text).map_err(|e| CatalogError::Mapping(e.to_string()))?;
        mapping.validate()?;
        Ok(mapping)
    }

    /// Reads a mapping from a JSON file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| CatalogError::io(path, e))?;
        Self::from_json(&text).map_err(|e| match e {
            CatalogError::Mapping(reason) => CatalogError::Mapping(format!("{}: {reason}", path.display())),
            other => other,
        })
    }

    /// Checks that every mapped name and the images separator are non-empty.
    pub fn validate(&self) -> Result<()> {
        if self.images_separator.as_deref() == Some("") {
            return Err(CatalogError::Mapping("`images_separator` is empty".into()));
        }
        let named = [("id", Some(&self.id)), ("title", Some(&self.title)), ("category", Some(&self.category))];
        let optional = [
            ("group_id", self.group_id.as_ref()),
            ("description", self.description.as_ref()),
            ("subcategory", self.subcategory.as_ref()),
            ("images", self.images.as_ref()),
            ("price", self.price.as_ref()),
            ("url", self.url.as_ref()),
            ("split", self.split.as_ref()),
        ];
        for (field, column) in named.into_iter().chain(optional) {
            if column.is_some_and(|c| c.trim().is_empty()) {
                return Err(CatalogError::Mapping(format!("`{field}` maps to an empty column name")));
            }
        }
        if let Some((key, _)) = self.attributes.iter().find(|(k, c)| k.trim().is_empty() || c.trim().is_empty()) {
            return Err(CatalogError::Mapping(format!("attribute `{key}` has an empty key or column name")));
        }
        for template in &self.image_template.0 {
            template_parts(template).map_err(CatalogError::Mapping)?;
        }
        Ok(())
    }

    /// Every source column the mapping reads (image templates included).
    pub fn columns(&self) -> impl Iterator<Item = &str> {
        let optional = [&self.group_id, &self.description, &self.subcategory, &self.images, &self.price, &self.url, &self.split];
        let in_templates = self.image_template.0.iter().flat_map(|t| template_parts(t).unwrap_or_default()).filter_map(|p| match p {
            TemplatePart::Column(column) => Some(column),
            TemplatePart::Text(_) => None,
        });
        [&self.id, &self.title, &self.category]
            .into_iter()
            .chain(optional.into_iter().flatten())
            .chain(self.attributes.values())
            .map(String::as_str)
            .chain(in_templates)
    }

    /// The row's path of each image template. A value that is empty, or that
    /// could step out of the photo folder (a path separator, `..`), is a bad
    /// row: catalog text never chooses which file is read.
    fn templated_images(&self, row: &impl RowFields) -> std::result::Result<Vec<String>, RowProblem> {
        let mut paths = Vec::with_capacity(self.image_template.0.len());
        for template in &self.image_template.0 {
            let mut path = String::new();
            for part in template_parts(template).map_err(|reason| RowProblem::Malformed { reason })? {
                match part {
                    TemplatePart::Text(text) => path.push_str(text),
                    TemplatePart::Column(column) => {
                        let value = row.text(column)?;
                        if value.is_empty() {
                            return Err(RowProblem::MissingField { field: column.to_string() });
                        }
                        if value.contains(['/', '\\', '\0']) || value == "." || value == ".." {
                            return Err(RowProblem::Malformed {
                                reason: format!("field `{column}`: `{value}` cannot be part of a file name (image_template `{template}`)"),
                            });
                        }
                        path.push_str(&value);
                    }
                }
            }
            paths.push(path);
        }
        Ok(paths)
    }

    /// Builds the item of one row, and the split the row names.
    fn item(&self, row: &impl RowFields, loc: &SourceLoc) -> std::result::Result<(Item, Option<Split>), RowProblem> {
        let optional = |column: &Option<String>| column.as_deref().map_or(Ok(String::new()), |c| row.text(c));
        let id = row.text(&self.id)?;
        if id.is_empty() {
            return Err(RowProblem::MissingField { field: self.id.clone() });
        }
        let group_id = match optional(&self.group_id)? {
            group if group.is_empty() => id.clone(),
            group => group,
        };
        let mut attributes = BTreeMap::new();
        for (key, column) in &self.attributes {
            let value = row.text(column)?;
            if !value.is_empty() {
                attributes.insert(key.clone(), value);
            }
        }
        let mut images = match &self.images {
            Some(column) => row.list(column, self.images_separator.as_deref())?,
            None => Vec::new(),
        };
        images.extend(self.templated_images(row)?);
        let price = match &self.price {
            Some(column) => parse_price(column, &row.text(column)?)?,
            None => None,
        };
        let url = Some(optional(&self.url)?).filter(|u| !u.is_empty());
        let split = match optional(&self.split)? {
            split if split.is_empty() => None,
            split => Some(split.parse().map_err(|split| RowProblem::UnknownSplit { split })?),
        };
        let item = Item {
            group_id,
            title: row.text(&self.title)?,
            description: optional(&self.description)?,
            category: row.text(&self.category)?,
            subcategory: optional(&self.subcategory)?,
            attributes,
            images,
            price,
            url,
            source: loc.clone(),
            id,
        };
        Ok((item, split))
    }
}

fn parse_price(column: &str, text: &str) -> std::result::Result<Option<f64>, RowProblem> {
    if text.is_empty() {
        return Ok(None);
    }
    match text.parse::<f64>() {
        Ok(price) if price.is_finite() && price >= 0.0 => Ok(Some(price)),
        _ => Err(RowProblem::Malformed { reason: format!("field `{column}`: `{text}` is not a price") }),
    }
}

/// Imports a CSV export. Every mapped column must be in the header.
pub fn import_csv(path: &Path, mapping: &ColumnMapping, root: &Path, options: ImportOptions) -> Result<Catalog> {
    mapping.validate()?;
    let rows = CsvRows::open(path)?;
    let columns = mapping.columns().map(|c| Ok((c, rows.column(c)?))).collect::<Result<HashMap<_, _>>>()?;
    let mut builder = CatalogBuilder::new(root, options);
    rows.import_each(&mut builder, |row| mapping.item(&CsvFields { row, columns: &columns }, &row.loc), push_mapped);
    builder.finish()
}

/// Imports a JSON Lines export: one JSON object per line; blank lines are skipped.
pub fn import_jsonl(path: &Path, mapping: &ColumnMapping, root: &Path, options: ImportOptions) -> Result<Catalog> {
    mapping.validate()?;
    let mut builder = CatalogBuilder::new(root, options);
    read_jsonl(path, &mut builder, |builder, loc, value: Value| match json_object(value).and_then(|object| mapping.item(&object, &loc)) {
        Ok(row) => push_mapped(builder, loc, row),
        Err(problem) => builder.bad_row(loc, problem),
    })?;
    builder.finish()
}

/// Imports a `.csv`, `.jsonl` or `.ndjson` export, choosing by the extension.
pub fn import_file(path: &Path, mapping: &ColumnMapping, root: &Path, options: ImportOptions) -> Result<Catalog> {
    let extension = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("csv") => import_csv(path, mapping, root, options),
        Some("jsonl" | "ndjson") => import_jsonl(path, mapping, root, options),
        _ => Err(CatalogError::NotACatalog {
            path: path.to_path_buf(),
            reason: "unknown extension: expected .csv, .jsonl or .ndjson".into(),
        }),
    }
}

fn push_mapped(builder: &mut CatalogBuilder, loc: SourceLoc, (item, split): (Item, Option<Split>)) {
    let id = item.id.clone();
    if let (true, Some(split)) = (builder.push_item(item), split) {
        builder.push_split(loc, id, split);
    }
}

/// The mapped columns of one row, CSV or JSON.
trait RowFields {
    /// The column's text, trimmed; empty when absent or null.
    fn text(&self, column: &str) -> std::result::Result<String, RowProblem>;

    /// The column's values: the text cut at `separator` (or the whole text).
    fn list(&self, column: &str, separator: Option<&str>) -> std::result::Result<Vec<String>, RowProblem> {
        Ok(split_list(&self.text(column)?, separator))
    }
}

fn split_list(text: &str, separator: Option<&str>) -> Vec<String> {
    let parts: Vec<&str> = match separator {
        Some(separator) => text.split(separator).collect(),
        None => vec![text],
    };
    parts.into_iter().map(str::trim).filter(|p| !p.is_empty()).map(str::to_string).collect()
}

struct CsvFields<'a> {
    row: &'a CsvRow<'a>,
    /// Header position of every mapped column, all resolved before the rows are read.
    columns: &'a HashMap<&'a str, usize>,
}

impl RowFields for CsvFields<'_> {
    fn text(&self, column: &str) -> std::result::Result<String, RowProblem> {
        match self.columns.get(column) {
            Some(&index) => self.row.get(index).map(str::to_string),
            None => Ok(String::new()),
        }
    }
}

impl RowFields for Map<String, Value> {
    fn text(&self, column: &str) -> std::result::Result<String, RowProblem> {
        json_text(self, column)
    }

    fn list(&self, column: &str, separator: Option<&str>) -> std::result::Result<Vec<String>, RowProblem> {
        match self.get(column) {
            Some(Value::Array(_)) => json_list(self, column),
            _ => Ok(split_list(&self.text(column)?, separator)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_split_into_text_and_columns_and_bad_ones_say_why() {
        let parts = template_parts("images/{id}_{view}.jpg").unwrap();
        assert_eq!(
            parts,
            [
                TemplatePart::Text("images/"),
                TemplatePart::Column("id"),
                TemplatePart::Text("_"),
                TemplatePart::Column("view"),
                TemplatePart::Text(".jpg")
            ]
        );
        assert_eq!(template_parts("{id}").unwrap(), [TemplatePart::Column("id")]);
        for (bad, says) in
            [("images/{id.jpg", "without `}`"), ("images/id}.jpg", "without `{`"), ("a/{}.jpg", "names no column"), ("a.jpg", "same photo")]
        {
            let reason = template_parts(bad).unwrap_err();
            assert!(reason.contains(says) && reason.contains(bad), "{bad}: {reason}");
        }
    }
}
