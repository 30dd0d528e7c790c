//! The canonical catalog folder, written by `vitrine catalog import` and read
//! by every later stage:
//!
//! ```text
//! items.jsonl     one Item per line: {"id": "...", "group_id": "...", "title": "...", ...}
//! baskets.jsonl   optional; one Basket per line: {"id": "b1", "items": ["a", "b"]}
//! splits.csv      optional; header `id,split`, split is train, val or test
//! images/...      optional; image paths in items.jsonl are relative to the folder
//! ```

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{hm, Catalog, CatalogBuilder, CatalogError, ImportOptions, Result, RowProblem, SourceLoc};

pub const ITEMS_FILE: &str = "items.jsonl";
pub const BASKETS_FILE: &str = "baskets.jsonl";
pub const SPLITS_FILE: &str = "splits.csv";

/// Whether `dir` holds a canonical catalog.
pub fn detect(dir: &Path) -> bool {
    dir.join(ITEMS_FILE).is_file()
}

/// Reads a canonical catalog folder.
pub fn import_dir(dir: &Path, options: ImportOptions) -> Result<Catalog> {
    let mut builder = CatalogBuilder::new(dir, options);
    read_jsonl(&dir.join(ITEMS_FILE), &mut builder, |builder, loc, mut item: super::Item| {
        item.source = loc;
        builder.push_item(item);
    })?;
    let baskets = dir.join(BASKETS_FILE);
    if baskets.is_file() {
        read_jsonl(&baskets, &mut builder, |builder, loc, mut basket: super::Basket| {
            basket.source = loc;
            builder.push_basket(basket);
        })?;
    }
    let splits = dir.join(SPLITS_FILE);
    if splits.is_file() {
        hm::read_splits(&splits, "id", &mut builder)?;
    }
    builder.finish()
}

/// Reads a JSON-lines file; a line that is not valid UTF-8 or not a valid
/// record is a bad row naming its line. Blank lines are skipped.
pub(crate) fn read_jsonl<T: DeserializeOwned>(
    path: &Path,
    builder: &mut CatalogBuilder,
    mut accept: impl FnMut(&mut CatalogBuilder, SourceLoc, T),
) -> Result<()> {
    let file = File::open(path).map_err(|e| CatalogError::io(path, e))?;
    let max_line = builder.options().max_field_bytes.saturating_mul(8);
    for (index, line) in BufReader::new(file).split(b'\n').enumerate() {
        let line = line.map_err(|e| CatalogError::io(path, e))?;
        let loc = SourceLoc::new(path, index as u64 + 1);
        let text = match std::str::from_utf8(&line) {
            Ok(text) => text.trim(),
            Err(e) => {
                builder.row_read();
                builder.bad_row(loc, RowProblem::BadUtf8 { field: "line".into(), valid_up_to: e.valid_up_to() });
                continue;
            }
        };
        if text.is_empty() {
            continue;
        }
        builder.row_read();
        if text.len() > max_line {
            builder.bad_row(loc, RowProblem::OversizedField { field: "line".into(), len: text.len(), limit: max_line });
            continue;
        }
        match serde_json::from_str(text) {
            Ok(record) => accept(builder, loc, record),
            Err(e) => builder.bad_row(loc, RowProblem::Malformed { reason: e.to_string() }),
        }
    }
    Ok(())
}

/// Writes `catalog` as a canonical folder at `dir`. Image paths are rewritten
/// relative to `dir` so the folder can be moved together with its images.
/// Each file is written to a temporary name and renamed, so a crash never
/// leaves a half-written catalog file.
pub fn write_dir(catalog: &Catalog, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| CatalogError::io(dir, e))?;
    let target = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let items = catalog.items.iter().map(|item| {
        let mut item = item.clone();
        for image in &mut item.images {
            if let Some(path) = catalog.image_path(image) {
                let absolute = std::path::absolute(&path).unwrap_or(path);
                if let Some(relative) = pathdiff::diff_paths(&absolute, &target) {
                    *image = relative.to_string_lossy().into_owned();
                }
            }
        }
        item
    });
    write_jsonl(&dir.join(ITEMS_FILE), items)?;
    if !catalog.baskets.is_empty() {
        write_jsonl(&dir.join(BASKETS_FILE), catalog.baskets.iter())?;
    }
    if !catalog.splits.is_empty() {
        let mut rows: Vec<_> = catalog.items.iter().filter_map(|it| Some((it.id.as_str(), catalog.split_of(&it.id)?))).collect();
        rows.sort_by_key(|(_, split)| *split);
        let path = dir.join(SPLITS_FILE);
        write_atomically(&path, |out| {
            writeln!(out, "id,split")?;
            let mut writer = csv::Writer::from_writer(out);
            for (id, split) in rows {
                writer.write_record([id, split.as_str()])?;
            }
            writer.flush()
        })?;
    }
    Ok(())
}

fn write_jsonl<T: Serialize>(path: &Path, records: impl Iterator<Item = T>) -> Result<()> {
    write_atomically(path, |out| {
        for record in records {
            serde_json::to_writer(&mut *out, &record)?;
            out.write_all(b"\n")?;
        }
        Ok(())
    })
}

/// Writes through a temporary file in the same folder, then renames it over `path`.
pub(crate) fn write_atomically(path: &Path, write: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let result = File::create(&tmp).and_then(|file| {
        let mut out = BufWriter::new(file);
        write(&mut out)?;
        out.flush()?;
        out.get_ref().sync_all()
    });
    result.and_then(|()| std::fs::rename(&tmp, path)).map_err(|e| CatalogError::io(path, e))
}
