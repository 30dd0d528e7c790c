//! The canonical catalog (DESIGN.md §4) and its importers.
//!
//! Every importer reads its source format into [`Item`]s through a
//! [`CatalogBuilder`], which applies the checks shared by all formats (duplicate
//! ids, empty text, oversized fields, split validity) and the user's
//! [`BadRowPolicy`]: strict imports fail listing every bad row with file and
//! line; skip imports keep the good rows and report each bad one. Nothing is
//! dropped without a [`RowError`] in the [`ImportReport`].

mod error;
mod schema;

pub mod canonical;
mod csv_rows;
pub mod fashiongen;
pub mod fashioniq;
pub mod hm;
#[cfg(not(target_arch = "wasm32"))]
pub mod images;
mod json_rows;
pub mod mapped;
pub mod polyvore;
pub mod split_rule;

pub use error::{CatalogError, Result, RowError, RowProblem, SourceLoc};
pub use schema::{attr, Basket, Item, Split};

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Serialize;

/// What to do with a bad row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BadRowPolicy {
    /// Fail the import, listing the bad rows.
    #[default]
    Strict,
    /// Keep the good rows; report the bad ones.
    Skip,
}

/// Options shared by all importers.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub policy: BadRowPolicy,
    /// Longest accepted text field, in bytes. Longer ones are bad rows: they are
    /// almost always a broken export (an unclosed quote swallowing the file).
    pub max_field_bytes: usize,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions { policy: BadRowPolicy::Strict, max_field_bytes: 16 * 1024 }
    }
}

impl ImportOptions {
    pub fn skip() -> Self {
        ImportOptions { policy: BadRowPolicy::Skip, ..Default::default() }
    }
}

/// Counts and bad rows of one import.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ImportReport {
    /// Data rows read from all files.
    pub rows_read: u64,
    /// Items kept.
    pub items_kept: u64,
    /// Bad rows, in the order found.
    #[serde(skip)]
    pub errors: Vec<RowError>,
}

impl ImportReport {
    /// Bad rows counted by [`RowProblem::kind`].
    pub fn error_counts(&self) -> BTreeMap<&'static str, usize> {
        let mut counts = BTreeMap::new();
        for e in &self.errors {
            *counts.entry(e.problem.kind()).or_default() += 1;
        }
        counts
    }

    pub fn count(&self, kind: &str) -> usize {
        self.errors.iter().filter(|e| e.problem.kind() == kind).count()
    }
}

/// A catalog in the canonical schema, ready for the later stages.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// Folder that relative image paths resolve against.
    pub root: PathBuf,
    pub items: Vec<Item>,
    pub baskets: Vec<Basket>,
    /// Item id → split; empty when the catalog has no split file.
    pub splits: HashMap<String, Split>,
    pub report: ImportReport,
    index: HashMap<String, usize>,
}

impl Catalog {
    /// An empty catalog whose relative image paths resolve against `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Catalog { root: root.into(), ..Default::default() }
    }

    /// Position of the item with this id.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    pub fn get(&self, id: &str) -> Option<&Item> {
        self.index_of(id).map(|i| &self.items[i])
    }

    pub fn split_of(&self, id: &str) -> Option<Split> {
        self.splits.get(id).copied()
    }

    /// Items of one split, in catalog order.
    pub fn items_in(&self, split: Split) -> impl Iterator<Item = (usize, &Item)> {
        self.items.iter().enumerate().filter(move |(_, it)| self.split_of(&it.id) == Some(split))
    }

    /// The file path of an item's image (relative paths resolve against `root`);
    /// `None` for URLs.
    pub fn image_path(&self, image: &str) -> Option<PathBuf> {
        if image.contains("://") {
            return None;
        }
        let p = Path::new(image);
        Some(if p.is_absolute() { p.to_path_buf() } else { self.root.join(p) })
    }

    /// Rebuilds the id index after `items` changed.
    fn reindex(&mut self) {
        self.index = self.items.iter().enumerate().map(|(i, it)| (it.id.clone(), i)).collect();
    }

    /// Applies the bad-row policy to problems found after import (e.g. by the
    /// image check): strict fails listing them; skip drops the named items (and
    /// their split entries and basket slots) and records the errors.
    pub fn reject(&mut self, bad: Vec<(String, RowError)>, policy: BadRowPolicy) -> Result<()> {
        if bad.is_empty() {
            return Ok(());
        }
        if policy == BadRowPolicy::Strict {
            return Err(strict_failure(bad.into_iter().map(|(_, e)| e).collect()));
        }
        let ids: HashSet<String> = bad.iter().map(|(id, _)| id.clone()).collect();
        self.items.retain(|it| !ids.contains(&it.id));
        self.splits.retain(|id, _| !ids.contains(id));
        for basket in &mut self.baskets {
            basket.items.retain(|id| !ids.contains(id));
        }
        self.report.errors.extend(bad.into_iter().map(|(_, e)| e));
        self.report.items_kept = self.items.len() as u64;
        self.reindex();
        Ok(())
    }
}

/// The formats a catalog folder can be opened from without further options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetectedFormat {
    Canonical,
    HmArticles,
}

/// Recognises the format of a catalog folder.
pub fn detect_format(dir: &Path) -> Result<DetectedFormat> {
    if canonical::detect(dir) {
        Ok(DetectedFormat::Canonical)
    } else if hm::detect(dir) {
        Ok(DetectedFormat::HmArticles)
    } else {
        Err(CatalogError::NotACatalog {
            path: dir.to_path_buf(),
            reason: format!(
                "no `{}` (canonical catalog) or `{}` (H&M export) in it; import other formats with `vitrine catalog import --format …`",
                canonical::ITEMS_FILE,
                hm::ARTICLES_FILE
            ),
        })
    }
}

/// Opens a catalog folder in any format [`detect_format`] recognises.
pub fn open(dir: &Path, options: ImportOptions) -> Result<Catalog> {
    match detect_format(dir)? {
        DetectedFormat::Canonical => canonical::import_dir(dir, options),
        DetectedFormat::HmArticles => hm::import_dir(dir, options),
    }
}

pub(crate) fn strict_failure(errors: Vec<RowError>) -> CatalogError {
    let count = errors.len();
    CatalogError::BadRows { count, first: errors.into_iter().take(20).collect() }
}

/// Collects items, baskets and splits from an importer, applying the checks
/// shared by every format.
pub struct CatalogBuilder {
    options: ImportOptions,
    catalog: Catalog,
    first_seen: HashMap<String, SourceLoc>,
    /// Ids of data rows rejected by the shared checks: their split rows are not
    /// reported again.
    rejected_ids: HashSet<String>,
    split_rows: Vec<(SourceLoc, String, Split)>,
}

impl CatalogBuilder {
    pub fn new(root: impl Into<PathBuf>, options: ImportOptions) -> Self {
        CatalogBuilder {
            options,
            catalog: Catalog::new(root),
            first_seen: HashMap::new(),
            rejected_ids: HashSet::new(),
            split_rows: Vec::new(),
        }
    }

    pub fn options(&self) -> &ImportOptions {
        &self.options
    }

    /// Counts one data row read from a source file.
    pub fn row_read(&mut self) {
        self.catalog.report.rows_read += 1;
    }

    /// Records a bad row found by the importer itself (parse errors, bad UTF-8).
    pub fn bad_row(&mut self, loc: SourceLoc, problem: RowProblem) {
        self.catalog.report.errors.push(RowError { loc, problem });
    }

    /// Records a bad row whose id is known: split and basket entries of that id
    /// are then not reported again.
    pub fn reject_row(&mut self, id: String, loc: SourceLoc, problem: RowProblem) {
        // A duplicate of an admitted id rejects the duplicate row, not the id.
        if !self.first_seen.contains_key(&id) {
            self.rejected_ids.insert(id);
        }
        self.bad_row(loc, problem);
    }

    /// Adds an item after the shared checks (id present, text present, fields
    /// within limits, id unique); returns whether it was admitted. Importers
    /// record a row's split only for admitted items.
    pub fn push_item(&mut self, item: Item) -> bool {
        let id = item.id.clone();
        match self.admit(item) {
            Ok(()) => true,
            Err(error) => {
                self.reject_row(id, error.loc, error.problem);
                false
            }
        }
    }

    fn admit(&mut self, item: Item) -> std::result::Result<(), RowError> {
        let loc = item.source.clone();
        let bad = |problem| Err(RowError { loc: loc.clone(), problem });
        if item.id.trim().is_empty() {
            return bad(RowProblem::MissingField { field: "id".into() });
        }
        if item.title.trim().is_empty() && item.description.trim().is_empty() {
            return bad(RowProblem::EmptyText);
        }
        if item.category.trim().is_empty() {
            return bad(RowProblem::MissingField { field: "category".into() });
        }
        let limit = self.options.max_field_bytes;
        let named =
            [("title", &item.title), ("description", &item.description), ("category", &item.category), ("subcategory", &item.subcategory)];
        let fields =
            named.into_iter().map(|(f, v)| (f.to_string(), v)).chain(item.attributes.iter().map(|(k, v)| (format!("attributes.{k}"), v)));
        for (field, value) in fields {
            if value.len() > limit {
                return bad(RowProblem::OversizedField { field, len: value.len(), limit });
            }
        }
        if let Some(first) = self.first_seen.get(&item.id) {
            return bad(RowProblem::DuplicateId { id: item.id.clone(), first: first.clone() });
        }
        self.first_seen.insert(item.id.clone(), loc);
        self.catalog.items.push(item);
        Ok(())
    }

    pub fn push_basket(&mut self, basket: Basket) {
        self.catalog.baskets.push(basket);
    }

    /// Records a split assignment; validated against the items in [`finish`](Self::finish).
    pub fn push_split(&mut self, loc: SourceLoc, id: String, split: Split) {
        self.split_rows.push((loc, id, split));
    }

    /// Validates splits and categories, applies the bad-row policy and returns the catalog.
    pub fn finish(mut self) -> Result<Catalog> {
        self.catalog.reindex();
        for (loc, id, split) in std::mem::take(&mut self.split_rows) {
            if self.catalog.index_of(&id).is_none() {
                if !self.rejected_ids.contains(&id) {
                    self.bad_row(loc, RowProblem::UnknownId { id });
                }
                continue;
            }
            self.catalog.splits.insert(id, split);
        }
        for mut basket in std::mem::take(&mut self.catalog.baskets) {
            basket.items.retain(|id| !self.rejected_ids.contains(id));
            match basket.items.iter().find(|id| self.catalog.index_of(id).is_none()) {
                Some(unknown) => {
                    let problem = RowProblem::UnknownId { id: unknown.clone() };
                    self.bad_row(basket.source.clone(), problem);
                }
                None => self.catalog.baskets.push(basket),
            }
        }
        if self.options.policy == BadRowPolicy::Strict && !self.catalog.report.errors.is_empty() {
            return Err(strict_failure(std::mem::take(&mut self.catalog.report.errors)));
        }
        self.catalog.report.items_kept = self.catalog.items.len() as u64;
        Ok(self.catalog)
    }
}
