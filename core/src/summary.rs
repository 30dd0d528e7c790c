//! The summary `vitrine catalog check` prints: what a catalog holds and what
//! the task datasets derived from it count, per split.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

use crate::catalog::images::ImageCheck;
use crate::catalog::{BadRowPolicy, Catalog, CatalogError, Split};
use crate::tasks::{has_variant_groups, outfit_questions, tgir_triplets, Labels};

/// Counts over one catalog.
#[derive(Debug, Clone, Serialize)]
pub struct CatalogSummary {
    pub items: usize,
    pub categories: usize,
    pub subcategories: usize,
    pub groups: usize,
    pub baskets: usize,
    pub empty_descriptions: usize,
    pub items_per_split: BTreeMap<String, usize>,
    pub items_without_split: usize,
    pub tgir_triplets: BTreeMap<String, usize>,
    /// Where the TGIR triplets come from: `variant groups` or `attribute differences`.
    pub tgir_source: &'static str,
    pub ocir_questions: BTreeMap<String, usize>,
    /// Val/test items whose category or subcategory is absent from train
    /// (left out of CR/SCR).
    pub unseen_labels: BTreeMap<String, usize>,
    pub images: Option<ImageCheck>,
    pub rows_read: u64,
    /// Bad rows by kind (empty in a strict import, which fails instead).
    pub bad_rows: BTreeMap<&'static str, usize>,
}

impl CatalogSummary {
    pub fn compute(catalog: &Catalog, images: Option<ImageCheck>) -> Result<Self, CatalogError> {
        let distinct =
            |f: fn(&crate::catalog::Item) -> &str| catalog.items.iter().map(f).filter(|v| !v.is_empty()).collect::<BTreeSet<_>>().len();
        let per_split = |splits: Vec<Split>| {
            let mut counts: BTreeMap<String, usize> = Split::ALL.iter().map(|s| (s.to_string(), 0)).collect();
            for split in splits {
                *counts.entry(split.to_string()).or_default() += 1;
            }
            counts
        };
        let labels = Labels::from_catalog(catalog, BadRowPolicy::Skip)?;
        let mut unseen_labels = BTreeMap::new();
        for error in &labels.unseen {
            if let crate::catalog::RowProblem::UnknownCategory { field, .. } = &error.problem {
                *unseen_labels.entry(field.clone()).or_default() += 1;
            }
        }
        Ok(CatalogSummary {
            items: catalog.items.len(),
            categories: distinct(|it| &it.category),
            subcategories: distinct(|it| &it.subcategory),
            groups: distinct(|it| &it.group_id),
            baskets: catalog.baskets.len(),
            empty_descriptions: catalog.items.iter().filter(|it| it.description.trim().is_empty()).count(),
            items_per_split: per_split(catalog.items.iter().filter_map(|it| catalog.split_of(&it.id)).collect()),
            items_without_split: catalog.items.iter().filter(|it| catalog.split_of(&it.id).is_none()).count(),
            tgir_triplets: per_split(tgir_triplets(catalog).into_iter().map(|t| t.split).collect()),
            tgir_source: if has_variant_groups(catalog) { "variant groups" } else { "attribute differences" },
            ocir_questions: per_split(outfit_questions(catalog).into_iter().map(|q| q.split).collect()),
            unseen_labels,
            images,
            rows_read: catalog.report.rows_read,
            bad_rows: catalog.report.error_counts(),
        })
    }
}

impl fmt::Display for CatalogSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let splits = |counts: &BTreeMap<String, usize>| {
            let total: usize = counts.values().sum();
            let parts: Vec<String> = Split::ALL.iter().map(|s| format!("{s} {}", counts.get(s.as_str()).copied().unwrap_or(0))).collect();
            format!("{total} ({})", parts.join(", "))
        };
        writeln!(f, "items               {}", self.items)?;
        writeln!(f, "categories          {}", self.categories)?;
        writeln!(f, "subcategories       {}", self.subcategories)?;
        writeln!(f, "groups              {}", self.groups)?;
        writeln!(f, "baskets             {}", self.baskets)?;
        writeln!(f, "empty descriptions  {}", self.empty_descriptions)?;
        writeln!(f, "split               {}", splits(&self.items_per_split))?;
        if self.items_without_split > 0 {
            writeln!(f, "without a split     {}", self.items_without_split)?;
        }
        writeln!(f, "TGIR triplets       {} from {}", splits(&self.tgir_triplets), self.tgir_source)?;
        writeln!(f, "OCIR questions      {}", splits(&self.ocir_questions))?;
        for (field, count) in &self.unseen_labels {
            writeln!(f, "val/test items with a {field} unseen in train: {count} (left out of that recognition task)")?;
        }
        match &self.images {
            Some(check) => writeln!(
                f,
                "images              {} checked, {} missing, {} corrupt, {} remote (not fetched)",
                check.checked, check.missing, check.corrupt, check.remote
            )?,
            None => writeln!(f, "images              not checked")?,
        }
        writeln!(f, "rows read           {}", self.rows_read)?;
        if self.bad_rows.is_empty() {
            writeln!(f, "bad rows            0")?;
        } else {
            let parts: Vec<String> = self.bad_rows.iter().map(|(kind, n)| format!("{kind} {n}")).collect();
            writeln!(f, "bad rows            {} ({})", self.bad_rows.values().sum::<usize>(), parts.join(", "))?;
        }
        Ok(())
    }
}
