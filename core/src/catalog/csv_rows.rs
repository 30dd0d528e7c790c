//! Reading CSV files row by row with errors that name the file, line and field.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::{CatalogBuilder, CatalogError, Result, RowProblem, SourceLoc};

/// A CSV file with a header, read as raw bytes so that a field with bad UTF-8
/// is a bad row rather than a failed file.
pub struct CsvRows {
    path: PathBuf,
    header: Vec<String>,
    reader: csv::Reader<File>,
}

/// One data row and where it came from.
pub struct CsvRow<'a> {
    pub loc: SourceLoc,
    record: &'a csv::ByteRecord,
    header: &'a [String],
}

impl CsvRows {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| CatalogError::io(path, e))?;
        let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(file);
        let header = reader
            .byte_headers()
            .map_err(|e| CatalogError::Parse { path: path.to_path_buf(), line: 1, reason: e.to_string() })?
            .iter()
            .map(|h| String::from_utf8_lossy(h).trim().to_string())
            .collect();
        Ok(CsvRows { path: path.to_path_buf(), header, reader })
    }

    /// Index of a required column; a missing one fails naming the file and column.
    pub fn column(&self, name: &str) -> Result<usize> {
        self.header.iter().position(|h| h == name).ok_or_else(|| CatalogError::MissingColumn {
            path: self.path.clone(),
            column: name.to_string(),
            header: self.header.join(", "),
        })
    }

    /// Parses every data row with `parse` and hands the good ones to `accept`;
    /// bad rows (unparseable CSV, wrong field count, or rejected by `parse`) go
    /// to the builder's report with their line.
    pub fn import_each<T>(
        mut self,
        builder: &mut CatalogBuilder,
        parse: impl Fn(&CsvRow<'_>) -> std::result::Result<T, RowProblem>,
        mut accept: impl FnMut(&mut CatalogBuilder, SourceLoc, T),
    ) {
        let mut record = csv::ByteRecord::new();
        loop {
            let next_line = self.reader.position().line() + 1;
            let read = self.reader.read_byte_record(&mut record);
            if matches!(read, Ok(false)) {
                break;
            }
            builder.row_read();
            match read {
                Ok(_) => {
                    let line = record.position().map_or(next_line, |p| p.line());
                    let row = CsvRow { loc: SourceLoc::new(&self.path, line), record: &record, header: &self.header };
                    let parsed = if record.len() == self.header.len() {
                        parse(&row)
                    } else {
                        let reason = format!("{} fields where the header has {}", record.len(), self.header.len());
                        Err(RowProblem::Malformed { reason })
                    };
                    match parsed {
                        Ok(value) => accept(builder, row.loc, value),
                        Err(problem) => builder.bad_row(row.loc, problem),
                    }
                }
                Err(e) => {
                    let line = e.position().map_or(next_line, |p| p.line());
                    let fatal = matches!(e.kind(), csv::ErrorKind::Io(_));
                    builder.bad_row(SourceLoc::new(&self.path, line), RowProblem::Malformed { reason: e.to_string() });
                    if fatal {
                        break;
                    }
                }
            }
        }
    }
}

impl CsvRow<'_> {
    /// The field at `index` as text, trimmed.
    pub fn get(&self, index: usize) -> std::result::Result<&str, RowProblem> {
        let bytes = self.record.get(index).unwrap_or_default();
        std::str::from_utf8(bytes)
            .map(str::trim)
            .map_err(|e| RowProblem::BadUtf8 { field: self.header[index].clone(), valid_up_to: e.valid_up_to() })
    }

    /// The field at `index`, which must not be empty.
    pub fn required(&self, index: usize) -> std::result::Result<&str, RowProblem> {
        match self.get(index)? {
            "" => Err(RowProblem::MissingField { field: self.header[index].clone() }),
            value => Ok(value),
        }
    }
}
