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
//! This module also holds the JSON row reading shared by the JSON importers:
//! [`json_rows`] splits a JSON array (or object) file into its top-level
//! elements with the line where each starts, so that a bad element is a bad row
//! at its own line rather than a failed file.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::canonical::read_jsonl;
use super::csv_rows::{CsvRow, CsvRows};
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
        Ok(())
    }

    /// Every source column the mapping reads.
    pub fn columns(&self) -> impl Iterator<Item = &str> {
        let optional = [&self.group_id, &self.description, &self.subcategory, &self.images, &self.price, &self.url, &self.split];
        [&self.id, &self.title, &self.category]
            .into_iter()
            .chain(optional.into_iter().flatten())
            .chain(self.attributes.values())
            .map(String::as_str)
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
        let images = match &self.images {
            Some(column) => row.list(column, self.images_separator.as_deref())?,
            None => Vec::new(),
        };
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
    if let Some(split) = split {
        builder.push_split(loc, item.id.clone(), split);
    }
    builder.push_item(item);
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

// ---------------------------------------------------------------------------
// JSON rows shared by the JSON importers.

/// Reads a whole file.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| CatalogError::io(path, e))
}

/// The top-level value a JSON file must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JsonTopLevel {
    /// `[element, …]`: each element is a row.
    Array,
    /// `{"key": value, …}`: each entry is a row.
    Object,
}

/// One top-level element of a JSON array, or entry of a JSON object, not yet
/// parsed, with the line where it starts.
pub(crate) struct JsonRow<'a> {
    pub loc: SourceLoc,
    /// The entry's key as raw JSON (a quoted string); empty for array elements.
    key: &'a [u8],
    value: &'a [u8],
}

impl JsonRow<'_> {
    /// The entry's key (rows of a [`JsonTopLevel::Object`] file).
    pub fn key(&self) -> std::result::Result<String, RowProblem> {
        match parse_json(self.key)? {
            Value::String(key) => Ok(key),
            _ => Err(RowProblem::Malformed { reason: "the key is not a string".into() }),
        }
    }

    /// The parsed value; bad UTF-8 or bad JSON are problems of this row only.
    pub fn value(&self) -> std::result::Result<Value, RowProblem> {
        parse_json(self.value)
    }
}

/// Splits a JSON file into its top-level rows. Only the structure (brackets,
/// strings, commas) is checked here, and a broken structure fails the file at
/// its line; each row's content is parsed later by [`JsonRow::value`].
pub(crate) fn json_rows<'a>(path: &Path, bytes: &'a [u8], top: JsonTopLevel) -> Result<Vec<JsonRow<'a>>> {
    let mut scan = Scanner { path, bytes, pos: 0, line: 1 };
    if bytes.starts_with(b"\xEF\xBB\xBF") {
        scan.pos = 3;
    }
    scan.skip_whitespace();
    let (open, close, what) = match top {
        JsonTopLevel::Array => (b'[', b']', "a JSON array"),
        JsonTopLevel::Object => (b'{', b'}', "a JSON object"),
    };
    if scan.peek() != Some(open) {
        return Err(CatalogError::NotACatalog { path: path.to_path_buf(), reason: format!("expected {what}") });
    }
    scan.pos += 1;
    scan.skip_whitespace();
    let mut rows = Vec::new();
    if scan.peek() == Some(close) {
        scan.pos += 1;
    } else {
        loop {
            scan.skip_whitespace();
            let line = scan.line;
            let key = match top {
                JsonTopLevel::Array => &bytes[0..0],
                JsonTopLevel::Object => {
                    let key = scan.string()?;
                    scan.skip_whitespace();
                    scan.expect(b':')?;
                    scan.skip_whitespace();
                    key
                }
            };
            let value = scan.value()?;
            rows.push(JsonRow { loc: SourceLoc::new(path, line), key, value });
            scan.skip_whitespace();
            match scan.peek() {
                Some(b',') => scan.pos += 1,
                Some(c) if c == close => {
                    scan.pos += 1;
                    break;
                }
                found => return Err(scan.error(format!("expected `,` or `{}`, found {}", close as char, describe(found)))),
            }
        }
    }
    scan.skip_whitespace();
    if scan.pos < bytes.len() {
        return Err(scan.error(format!("unexpected text after the closing `{}`", close as char)));
    }
    Ok(rows)
}

/// Finds the boundaries of JSON values, counting lines.
struct Scanner<'p, 'a> {
    path: &'p Path,
    bytes: &'a [u8],
    pos: usize,
    line: u64,
}

impl<'a> Scanner<'_, 'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn error(&self, reason: String) -> CatalogError {
        CatalogError::Parse { path: self.path.to_path_buf(), line: self.line, reason }
    }

    fn skip_whitespace(&mut self) {
        while let Some(b) = self.peek().filter(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n')) {
            if b == b'\n' {
                self.line += 1;
            }
            self.pos += 1;
        }
    }

    fn expect(&mut self, wanted: u8) -> Result<()> {
        match self.peek() {
            Some(b) if b == wanted => {
                self.pos += 1;
                Ok(())
            }
            found => Err(self.error(format!("expected `{}`, found {}", wanted as char, describe(found)))),
        }
    }

    /// Skips one value: a string, an array or object, or a scalar.
    fn value(&mut self) -> Result<&'a [u8]> {
        let start = self.pos;
        match self.peek() {
            Some(b'"') => {
                self.string()?;
            }
            Some(b'[' | b'{') => self.container()?,
            _ => {
                while self.peek().is_some_and(|b| !matches!(b, b',' | b']' | b'}' | b' ' | b'\t' | b'\r' | b'\n')) {
                    self.pos += 1;
                }
                if self.pos == start {
                    return Err(self.error(format!("expected a value, found {}", describe(self.peek()))));
                }
            }
        }
        Ok(&self.bytes[start..self.pos])
    }

    /// Skips a quoted string, returning it with its quotes.
    fn string(&mut self) -> Result<&'a [u8]> {
        let (start, start_line) = (self.pos, self.line);
        self.expect(b'"')?;
        loop {
            match self.peek() {
                None => {
                    self.line = start_line;
                    return Err(self.error("unterminated string".into()));
                }
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(&self.bytes[start..self.pos]);
                }
                Some(b'\\') => self.pos += 2,
                Some(b) => {
                    if b == b'\n' {
                        self.line += 1;
                    }
                    self.pos += 1;
                }
            }
        }
    }

    /// Skips an array or object, checking that brackets pair up.
    fn container(&mut self) -> Result<()> {
        let mut closers = Vec::new();
        loop {
            match self.peek() {
                None => return Err(self.error("unexpected end of file inside a value".into())),
                Some(b'"') => {
                    self.string()?;
                    continue;
                }
                Some(b'[') => closers.push(b']'),
                Some(b'{') => closers.push(b'}'),
                Some(b @ (b']' | b'}')) => {
                    if closers.pop() != Some(b) {
                        return Err(self.error(format!("unexpected `{}`", b as char)));
                    }
                    if closers.is_empty() {
                        self.pos += 1;
                        return Ok(());
                    }
                }
                Some(b'\n') => self.line += 1,
                Some(_) => {}
            }
            self.pos += 1;
        }
    }
}

fn describe(byte: Option<u8>) -> String {
    match byte {
        None => "the end of the file".into(),
        Some(b) if b.is_ascii_graphic() => format!("`{}`", b as char),
        Some(b) => format!("byte 0x{b:02x}"),
    }
}

/// Parses one JSON value; bad UTF-8 and bad JSON are row problems.
pub(crate) fn parse_json(bytes: &[u8]) -> std::result::Result<Value, RowProblem> {
    let text = std::str::from_utf8(bytes).map_err(|e| bad_utf8(bytes, e.valid_up_to()))?;
    serde_json::from_str(text).map_err(|e| RowProblem::Malformed { reason: format!("invalid JSON: {e}") })
}

/// A bad UTF-8 problem naming the top-level field that holds the bad bytes
/// when the rest of the row is a JSON object, or the whole row otherwise.
fn bad_utf8(bytes: &[u8], valid_up_to: usize) -> RowProblem {
    let in_field = |(key, value): (String, Value)| {
        let text = match value {
            Value::String(text) => text,
            other => other.to_string(),
        };
        let at = text.find(char::REPLACEMENT_CHARACTER).or_else(|| key.find(char::REPLACEMENT_CHARACTER).map(|_| 0))?;
        Some(RowProblem::BadUtf8 { field: key, valid_up_to: at })
    };
    match serde_json::from_str::<Value>(&String::from_utf8_lossy(bytes)) {
        Ok(Value::Object(object)) => object.into_iter().find_map(in_field),
        _ => None,
    }
    .unwrap_or(RowProblem::BadUtf8 { field: "(row)".into(), valid_up_to })
}

/// The row's value as a JSON object.
pub(crate) fn json_object(value: Value) -> std::result::Result<Map<String, Value>, RowProblem> {
    match value {
        Value::Object(object) => Ok(object),
        other => Err(RowProblem::Malformed { reason: format!("expected a JSON object, found {}", kind_of(&other)) }),
    }
}

/// A text field, trimmed: a string, or a number or boolean written out; empty
/// when missing or null.
pub(crate) fn json_text(object: &Map<String, Value>, field: &str) -> std::result::Result<String, RowProblem> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(value) => scalar_text(value)
            .ok_or_else(|| RowProblem::Malformed { reason: format!("field `{field}` is {}, expected text", kind_of(value)) }),
    }
}

/// A text field that must be present and non-empty.
pub(crate) fn json_required(object: &Map<String, Value>, field: &str) -> std::result::Result<String, RowProblem> {
    match json_text(object, field)? {
        text if text.is_empty() => Err(RowProblem::MissingField { field: field.to_string() }),
        text => Ok(text),
    }
}

/// A list field: an array of texts (empty ones left out), or a single text;
/// empty when missing or null.
pub(crate) fn json_list(object: &Map<String, Value>, field: &str) -> std::result::Result<Vec<String>, RowProblem> {
    let values = match object.get(field) {
        Some(Value::Array(values)) => values,
        _ => return Ok(Some(json_text(object, field)?).filter(|t| !t.is_empty()).into_iter().collect()),
    };
    let mut texts = Vec::with_capacity(values.len());
    for (index, value) in values.iter().enumerate() {
        let text = scalar_text(value)
            .ok_or_else(|| RowProblem::Malformed { reason: format!("field `{field}[{index}]` is {}, expected text", kind_of(value)) })?;
        if !text.is_empty() {
            texts.push(text);
        }
    }
    Ok(texts)
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => Some(String::new()),
        Value::Array(_) | Value::Object(_) => None,
    }
}

/// "an array", "a number", … for error messages.
pub(crate) fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
