//! The browser tests' fixture: a bundle built from a generated catalog (no
//! external data) with a briefly fine-tuned model, in about a minute on two
//! cores, exactly as `tests/build_bundle.rs` builds one.
//!
//! ```text
//! cargo run --release -p vitrine-index-builder --example fixture_bundle -- --out target/e2e-bundle
//! cargo run --release -p vitrine-index-builder --example fixture_bundle -- --shop-csv --out target/e2e-bundle-without-outfits
//! ```
//!
//! `--shop-csv` takes the whole path of a shop's own export instead: the
//! generated catalog written as one CSV (id, name, description, category,
//! type, colour, pattern; photos named by id) with no split, no colour groups
//! and no baskets, read through a column mapping (`image_template`), split by
//! the import's rule. Its bundle learns "like this, but…" from attribute
//! differences, has no outfit head, and the widget offers no "Complete the look".
//!
//! Writes `OUT/bundle/` (folder layout), `OUT/catalog.vitrine` (single file),
//! `OUT/catalog/` (the generated catalog, its photos under `catalog/images/`)
//! and `OUT/fixture.json` (what the tests may rely on: categories, the hostile
//! title's product id). One product's title is markup
//! (`<img src=x onerror=alert(1)>`): the storefront must show it as text.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tch::Device;
use vitrine_core::bundle::{Bundle, Limits};
use vitrine_core::catalog::mapped::{self, ColumnMapping};
use vitrine_core::catalog::split_rule::{self, SplitRatios};
use vitrine_core::catalog::{self, attr, canonical, BadRowPolicy, Catalog, ImportOptions, Split};
use vitrine_core::engine::Engine;
use vitrine_core::index::BuildParams;
use vitrine_core::model::compact::OptionalHead;
use vitrine_core::synth::{generate, SynthSpec};
use vitrine_core::tasks::Labels;
use vitrine_index_builder::build::{build_catalog, single_file, BuildInputs, EmbeddingSource, StageTimes, Teacher};
use vitrine_index_builder::distill::DistillOptions;
use vitrine_trainer::catalog_inputs::{CatalogInputs, ItemTexts};
use vitrine_trainer::finetune::{finetune, Start};
use vitrine_trainer::pretrain::ModelPaths;
use vitrine_trainer::recipe::Recipe;
use vitrine_trainer::teacher::load_finetuned;

const MODELS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../models");
/// The title the storefront must render as text, never as markup.
pub const HOSTILE_TITLE: &str = "<img src=x onerror=alert(1)>";
const HOSTILE_ID: &str = "xss-0001";
/// Enough for "<material> <garment>" searches to find that garment.
const FINETUNE_STEPS: u64 = 20;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mut out = PathBuf::from("target/e2e-bundle");
    let mut shop_csv = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--out" => out = PathBuf::from(args.next().context("--out needs a folder")?),
            "--shop-csv" => shop_csv = true,
            other => bail!("unknown argument {other:?} (usage: fixture_bundle [--shop-csv] [--out DIR])"),
        }
    }
    let start = std::time::Instant::now();
    let models = Path::new(MODELS);
    if !models.join("all-MiniLM-L6-v2/model.safetensors").is_file() {
        bail!("{} has no MiniLM: run `cargo xtask setup` first", models.display());
    }
    if out.exists() {
        std::fs::remove_dir_all(&out).with_context(|| format!("cannot clear {}", out.display()))?;
    }
    std::fs::create_dir_all(&out)?;
    let work = out.join("work");

    // The generated catalog, plus one product whose title is markup.
    let source = out.join("catalog");
    let mut generated = generate(&source, &SynthSpec { groups: 36, baskets: 60, ..Default::default() })?;
    let mut hostile = generated.items[0].clone();
    hostile.id = HOSTILE_ID.to_string();
    hostile.group_id = "gxss".to_string();
    hostile.title = HOSTILE_TITLE.to_string();
    generated.splits.insert(HOSTILE_ID.to_string(), Split::Train);
    generated.items.push(hostile.clone());
    let catalog = if shop_csv {
        import_as_shop_csv(&generated, &source)?
    } else {
        canonical::write_dir(&generated, &source)?;
        catalog::open(&source, ImportOptions::default())?
    };
    if catalog.get(HOSTILE_ID).map(|i| i.title.as_str()) != Some(HOSTILE_TITLE) {
        bail!("the hostile product did not survive the catalog import");
    }
    let labels = Labels::from_catalog(&catalog, BadRowPolicy::Skip)?;

    let paths = ModelPaths {
        bert: models.join("all-MiniLM-L6-v2"),
        image_encoder: models.join("efficientnet-lite0/model.safetensors"),
        vqvae: None,
        feature_cache: Some(work.join("cache")),
    };
    let mut recipe = Recipe::load("cpu")?;
    recipe.max_text_tokens = 32;
    recipe.finetune.steps = FINETUNE_STEPS;
    recipe.finetune.batch_size = 8;
    recipe.checkpoint_every = FINETUNE_STEPS;
    let run = finetune(&catalog, &recipe, &paths, Start::Towers, &work.join("finetune"), false)?;
    let finetuned = load_finetuned(&run.checkpoint, 32, Device::Cpu)?;
    let inputs = CatalogInputs::new(
        &catalog,
        ItemTexts::Plain,
        &finetuned.tokenizer,
        &recipe,
        &paths.image_encoder,
        &work.join("cache"),
        Device::Cpu,
    )?;
    let teacher = Teacher { finetuned: &finetuned, catalog: &catalog, labels: &labels, inputs: &inputs, device: Device::Cpu };
    let options = DistillOptions { dim: 64, steps: 300, batch: 32, ..Default::default() };
    let params = BuildParams::default();
    let build_inputs = BuildInputs {
        checkpoint: &run.checkpoint,
        max_query_tokens: 32,
        distill: &options,
        student: None,
        text_encoder_bits: Default::default(),
        index: &params,
        search_ef: None,
        out: &out,
    };
    let report = build_catalog(&teacher, EmbeddingSource::Embed(&work.join("embeddings")), &build_inputs, StageTimes::default())?;
    std::fs::remove_dir_all(&work).ok();

    // What the browser will see: the queries the tests make, answered natively.
    let bundle = Bundle::read_single_file(&single_file(&out), &Limits::default())?;
    let engine = Engine::from_bundle(bundle)?;
    let hostile_item = engine.products().iter().position(|p| p.title == HOSTILE_TITLE).context("hostile product not in the bundle")?;
    for query in ["leather boots", "cotton t-shirt", "wool skirt", "red dress"] {
        let hits = engine.search(query, 5, None)?;
        let shown: Vec<String> = hits
            .iter()
            .map(|h| format!("{} ({})", engine.products()[h.item as usize].title, engine.products()[h.item as usize].category))
            .collect();
        println!("{query:>16}: {}", shown.join(", "));
    }
    // The tests find the hostile product by searching for its title.
    let hits = engine.search(HOSTILE_TITLE, 20, None)?;
    let hostile_rank = hits.iter().position(|h| h.item as usize == hostile_item);
    println!("the hostile title's product ranks {hostile_rank:?} (0-based) for its own title");
    let fixture = serde_json::json!({
        "items": report.items,
        "categories": engine.categories(),
        "heads": report_heads(&engine),
        "hostile": { "id": HOSTILE_ID, "item": hostile_item, "title": HOSTILE_TITLE, "rank_for_its_title": hostile_rank },
        "bundle_bytes": report.total_bytes,
    });
    std::fs::write(out.join("fixture.json"), serde_json::to_string_pretty(&fixture)?)?;
    println!(
        "fixture bundle: {} items, {} categories, {} bytes in {} ({:.0} s)",
        report.items,
        engine.categories().len(),
        report.total_bytes,
        out.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Writes `generated` into `dir` as a shop's export would be (`shop.csv`,
/// `mapping.json`, photos `images/<id>.jpg`; nothing else) and imports it
/// as `vitrine catalog import --format csv` does, drawing the split.
fn import_as_shop_csv(generated: &Catalog, dir: &Path) -> Result<Catalog> {
    for file in [canonical::ITEMS_FILE, canonical::BASKETS_FILE, canonical::SPLITS_FILE] {
        std::fs::remove_file(dir.join(file)).ok();
    }
    let mut rows = csv::Writer::from_path(dir.join("shop.csv"))?;
    rows.write_record(["id", "name", "description", "category", "type", "colour", "pattern"])?;
    for item in &generated.items {
        let photo = dir.join(format!("images/{}.jpg", item.id));
        if !photo.exists() {
            std::fs::copy(generated.image_path(&item.images[0]).context("a local photo")?, &photo)?;
        }
        let attribute = |key: &str| item.attribute(key).unwrap_or_default();
        rows.write_record([
            item.id.as_str(),
            &item.title,
            &item.description,
            &item.category,
            &item.subcategory,
            attribute(attr::COLOUR),
            attribute(attr::PRINT),
        ])?;
    }
    rows.flush()?;
    let mapping = serde_json::json!({
        "id": "id", "title": "name", "description": "description", "category": "category", "subcategory": "type",
        "attributes": {"colour": "colour", "print": "pattern"}, "image_template": "images/{id}.jpg",
    });
    std::fs::write(dir.join("mapping.json"), serde_json::to_vec_pretty(&mapping)?)?;
    let mapping = ColumnMapping::from_file(&dir.join("mapping.json"))?;
    let mut catalog = mapped::import_csv(&dir.join("shop.csv"), &mapping, dir, ImportOptions::default())?;
    if !catalog.splits.is_empty() || catalog.items.iter().any(|item| item.group_id != item.id) || !catalog.baskets.is_empty() {
        bail!("the shop's CSV should have given no split, no groups and no baskets");
    }
    let assignment = split_rule::assign_missing(&mut catalog, SplitRatios::default(), 7);
    println!("shop.csv: {} items imported, {:?} drawn for train/val/test", catalog.items.len(), assignment.drawn);
    Ok(catalog)
}

/// The optional heads the bundle has, by name.
fn report_heads(engine: &Engine) -> Vec<&'static str> {
    OptionalHead::ALL.into_iter().filter(|&h| engine.has_head(h)).map(OptionalHead::name).collect()
}
