//! Importer for the H&M articles export: `articles.csv` (one row per article,
//! the original 25 columns), optional `baskets.csv` (`basket_id,article_ids`
//! with space-separated ids), optional `splits.csv` (`article_id,split`), and
//! photos at `images/<first 3 digits>/<article_id>.jpg`.

use std::collections::BTreeMap;
use std::path::Path;

use super::csv_rows::{CsvRow, CsvRows};
use super::{attr, Basket, Catalog, CatalogBuilder, ImportOptions, Item, Result, RowProblem, Split};

pub const ARTICLES_FILE: &str = "articles.csv";
pub const BASKETS_FILE: &str = "baskets.csv";
pub const SPLITS_FILE: &str = "splits.csv";

/// H&M columns kept as attributes, and the attribute key each becomes.
const ATTRIBUTE_COLUMNS: [(&str, &str); 9] = [
    ("colour_group_name", attr::COLOUR),
    ("graphical_appearance_name", attr::PRINT),
    ("perceived_colour_master_name", "colour_family"),
    ("perceived_colour_value_name", "colour_tone"),
    ("department_name", "department"),
    ("index_name", "index"),
    ("index_group_name", "index_group"),
    ("section_name", "section"),
    ("garment_group_name", "garment_group"),
];

/// Whether `dir` looks like an H&M export.
pub fn detect(dir: &Path) -> bool {
    dir.join(ARTICLES_FILE).is_file()
}

/// Imports an H&M export folder.
pub fn import_dir(dir: &Path, options: ImportOptions) -> Result<Catalog> {
    let mut builder = CatalogBuilder::new(dir, options);
    read_articles(&dir.join(ARTICLES_FILE), &mut builder)?;
    let baskets = dir.join(BASKETS_FILE);
    if baskets.is_file() {
        read_baskets(&baskets, "basket_id", "article_ids", &mut builder)?;
    }
    let splits = dir.join(SPLITS_FILE);
    if splits.is_file() {
        read_splits(&splits, "article_id", &mut builder)?;
    }
    builder.finish()
}

struct ArticleColumns {
    id: usize,
    group: usize,
    title: usize,
    description: usize,
    category: usize,
    subcategory: usize,
    attributes: Vec<(usize, &'static str)>,
}

fn read_articles(path: &Path, builder: &mut CatalogBuilder) -> Result<()> {
    let rows = CsvRows::open(path)?;
    let columns = ArticleColumns {
        id: rows.column("article_id")?,
        group: rows.column("product_code")?,
        title: rows.column("prod_name")?,
        description: rows.column("detail_desc")?,
        category: rows.column("product_group_name")?,
        subcategory: rows.column("product_type_name")?,
        attributes: ATTRIBUTE_COLUMNS.iter().map(|(column, key)| Ok((rows.column(column)?, *key))).collect::<Result<_>>()?,
    };
    // Once the id is read, a later bad field rejects that id, so that its
    // split and basket entries are not reported a second time.
    let parse = |row: &CsvRow<'_>| {
        let id = row.required(columns.id)?;
        Ok(article(row, id, &columns).map_err(|problem| (id.to_string(), problem)))
    };
    rows.import_each(builder, parse, |builder, loc, article| match article {
        Ok(item) => {
            builder.push_item(item);
        }
        Err((id, problem)) => builder.reject_row(id, loc, problem),
    });
    Ok(())
}

fn article(row: &CsvRow<'_>, id: &str, c: &ArticleColumns) -> std::result::Result<Item, RowProblem> {
    let id = id.to_string();
    let mut attributes = BTreeMap::new();
    for &(index, key) in &c.attributes {
        let value = row.get(index)?;
        if !value.is_empty() {
            attributes.insert(key.to_string(), value.to_string());
        }
    }
    let image = format!("images/{}/{id}.jpg", id.get(..3).unwrap_or(&id));
    Ok(Item {
        group_id: row.required(c.group)?.to_string(),
        title: row.get(c.title)?.to_string(),
        description: row.get(c.description)?.to_string(),
        category: row.get(c.category)?.to_string(),
        subcategory: row.get(c.subcategory)?.to_string(),
        attributes,
        images: vec![image],
        price: None,
        url: None,
        source: row.loc.clone(),
        id,
    })
}

/// Reads baskets from a CSV with an id column and a column of space-separated item ids.
pub(crate) fn read_baskets(path: &Path, id_column: &str, items_column: &str, builder: &mut CatalogBuilder) -> Result<()> {
    let rows = CsvRows::open(path)?;
    let (id, items) = (rows.column(id_column)?, rows.column(items_column)?);
    let parse = |row: &CsvRow<'_>| {
        let items = row.required(items)?.split_whitespace().map(str::to_string).collect();
        Ok(Basket { id: row.required(id)?.to_string(), items, source: row.loc.clone() })
    };
    rows.import_each(builder, parse, |builder, _, basket| builder.push_basket(basket));
    Ok(())
}

/// Reads a split file: an id column and a `split` column (train, val or test).
pub(crate) fn read_splits(path: &Path, id_column: &str, builder: &mut CatalogBuilder) -> Result<()> {
    let rows = CsvRows::open(path)?;
    let (id, split) = (rows.column(id_column)?, rows.column("split")?);
    let parse = |row: &CsvRow<'_>| {
        let parsed: Split = row.required(split)?.parse().map_err(|split| RowProblem::UnknownSplit { split })?;
        Ok((row.required(id)?.to_string(), parsed))
    };
    rows.import_each(builder, parse, |builder, loc, (id, split)| builder.push_split(loc, id, split));
    Ok(())
}
