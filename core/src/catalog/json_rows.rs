//! Rows of JSON files for the JSON importers: the elements of a top-level
//! array (or entries of a top-level object), each with the line where it
//! starts, plus helpers to read typed fields with row-level errors.

use std::path::Path;

use serde_json::{Map, Value};

use super::{CatalogError, Result, RowProblem, SourceLoc};

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
