//! Errors of catalog import: file-level failures and row-level problems that
//! always name the file and line so the user can fix the source.

use std::fmt;
use std::path::{Path, PathBuf};

/// Where a row came from: the file and its 1-based line number.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct SourceLoc {
    pub file: PathBuf,
    pub line: u64,
}

impl SourceLoc {
    pub fn new(file: impl AsRef<Path>, line: u64) -> Self {
        SourceLoc { file: file.as_ref().to_path_buf(), line }
    }
}

impl fmt::Display for SourceLoc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// The kinds of bad rows an importer reports. Each has a stable short name
/// ([`RowProblem::kind`]) used for counting in reports.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RowProblem {
    #[error("field `{field}` is not valid UTF-8 (byte {valid_up_to} of the field)")]
    BadUtf8 { field: String, valid_up_to: usize },
    #[error("field `{field}` is missing or empty")]
    MissingField { field: String },
    #[error("no text: title and description are both empty")]
    EmptyText,
    #[error("duplicate id `{id}` (first seen at {first})")]
    DuplicateId { id: String, first: SourceLoc },
    #[error("field `{field}` is {len} bytes, over the limit of {limit}")]
    OversizedField { field: String, len: usize, limit: usize },
    #[error("image `{path}` does not exist")]
    MissingImage { path: String },
    #[error("image `{path}` does not decode: {reason}")]
    CorruptImage { path: String, reason: String },
    #[error("malformed row: {reason}")]
    Malformed { reason: String },
    #[error("unknown id `{id}`: not in the catalog")]
    UnknownId { id: String },
    #[error("unknown split `{split}`: expected train, val or test")]
    UnknownSplit { split: String },
    #[error("{field} `{value}` of a {split} item never occurs in the train split, so no model can learn it")]
    UnknownCategory { field: String, value: String, split: String },
}

impl RowProblem {
    /// A stable short name for counting problems by kind.
    pub fn kind(&self) -> &'static str {
        match self {
            RowProblem::BadUtf8 { .. } => "bad_utf8",
            RowProblem::MissingField { .. } => "missing_field",
            RowProblem::EmptyText => "empty_text",
            RowProblem::DuplicateId { .. } => "duplicate_id",
            RowProblem::OversizedField { .. } => "oversized_field",
            RowProblem::MissingImage { .. } => "missing_image",
            RowProblem::CorruptImage { .. } => "corrupt_image",
            RowProblem::Malformed { .. } => "malformed",
            RowProblem::UnknownId { .. } => "unknown_id",
            RowProblem::UnknownSplit { .. } => "unknown_split",
            RowProblem::UnknownCategory { .. } => "unknown_category",
        }
    }
}

/// One bad row: where it is and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{loc}: {problem}")]
pub struct RowError {
    pub loc: SourceLoc,
    pub problem: RowProblem,
}

/// Failures that stop an import as a whole.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}:1: missing column `{column}` (the header has: {header})")]
    MissingColumn { path: PathBuf, column: String, header: String },
    #[error("{path}:{line}: {reason}")]
    Parse { path: PathBuf, line: u64, reason: String },
    #[error("{}", bad_rows_message(.count, .first))]
    BadRows { count: usize, first: Vec<RowError> },
    #[error("{path} is not a catalog: {reason}")]
    NotACatalog { path: PathBuf, reason: String },
    #[error("invalid column mapping: {0}")]
    Mapping(String),
}

fn bad_rows_message(count: &usize, first: &[RowError]) -> String {
    let mut msg = format!("{count} bad row(s) in strict mode (re-run with skip mode to import the good rows and report these):");
    for e in first {
        msg.push_str("\n  ");
        msg.push_str(&e.to_string());
    }
    if *count > first.len() {
        msg.push_str(&format!("\n  … and {} more", count - first.len()));
    }
    msg
}

impl CatalogError {
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        CatalogError::Io { path: path.as_ref().to_path_buf(), source }
    }
}

pub type Result<T, E = CatalogError> = std::result::Result<T, E>;
