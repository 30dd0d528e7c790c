//! The paper's ablation study on a catalog: for each row, pretrain with a
//! subset of the pretext tasks (or not at all), give every row the same
//! multi-task fine-tune, evaluate on the test split, and tabulate the
//! meta-sum. Every run lives in its own folder under the output folder and a
//! row whose report exists is not run again, so an interrupted study resumes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vitrine_core::catalog::{BadRowPolicy, Catalog, Split};
use vitrine_core::tasks::Labels;

use crate::catalog_inputs::{CatalogInputs, ItemTexts};
use crate::error::{file_err, TrainError};
use crate::eval::{evaluate, EvalReport};
use crate::finetune::{finetune, Start};
use crate::pretrain::{pretrain, ModelPaths};
use crate::recipe::Recipe;
use crate::schedule::Task;
use crate::teacher::load_finetuned;

/// One row of the ablation table.
#[derive(Debug, Clone, PartialEq)]
pub struct AblationRow {
    pub name: &'static str,
    /// Pretext tasks pretrained with (paper probabilities); empty: no pretraining.
    pub tasks: Vec<Task>,
    pub share_text_fusion: bool,
}

/// The paper's rows, by name.
pub fn paper_rows() -> Vec<AblationRow> {
    use Task::*;
    let row = |name, tasks: &[Task], share| AblationRow { name, tasks: tasks.to_vec(), share_text_fusion: share };
    vec![
        row("none", &[], true),
        row("itc", &[Itc], true),
        row("mlm", &[Mlm], true),
        row("mpfc", &[Mpfc], true),
        row("mvc", &[Mvc], true),
        row("pac", &[Pac], true),
        row("itc+mlm+mpfc", &[Itc, Mlm, Mpfc], true),
        row("+itm", &[Itc, Mlm, Mpfc, Itm], true),
        row("+mvc", &[Itc, Mlm, Mpfc, Itm, Mvc], true),
        row("all", &Task::ALL, true),
        row("all-unshared", &Task::ALL, false),
    ]
}

/// The report of one (row, seed) run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RowResult {
    pub row: String,
    pub seed: u64,
    pub recipe: String,
    pub pretrain_steps: u64,
    pub finetune_steps: u64,
    pub commit: String,
    pub report: EvalReport,
}

/// The commit the trainer was built from.
pub const COMMIT: &str = env!("VITRINE_COMMIT");

/// Runs `rows` × `seeds` into `out` and returns every result (old and new).
pub fn run_ablation(
    catalog: &Catalog,
    recipe: &Recipe,
    paths: &ModelPaths,
    rows: &[AblationRow],
    seeds: &[u64],
    out: &Path,
) -> Result<Vec<RowResult>, TrainError> {
    std::fs::create_dir_all(out).map_err(file_err(out))?;
    // One feature cache for every run on this catalog.
    let paths = ModelPaths { feature_cache: Some(paths.feature_cache.clone().unwrap_or_else(|| out.join("cache"))), ..paths.clone() };
    let labels = Labels::from_catalog(catalog, BadRowPolicy::Skip)?;
    let mut results = Vec::new();
    for &seed in seeds {
        for row in rows {
            let report_path = out.join(format!("{}-seed{seed}.json", file_name(row.name)));
            if let Ok(text) = std::fs::read_to_string(&report_path) {
                if let Ok(result) = serde_json::from_str::<RowResult>(&text) {
                    tracing::info!(row = row.name, seed, "already evaluated");
                    results.push(result);
                    continue;
                }
            }
            tracing::info!(row = row.name, seed, "ablation row");
            let result = run_row(catalog, recipe, &paths, &labels, row, seed, out)?;
            let tmp = report_path.with_extension("json.tmp");
            std::fs::write(&tmp, serde_json::to_string_pretty(&result).expect("results serialise")).map_err(file_err(&tmp))?;
            std::fs::rename(&tmp, &report_path).map_err(file_err(&report_path))?;
            results.push(result);
        }
    }
    Ok(results)
}

fn file_name(row: &str) -> String {
    row.replace('+', "plus-")
}

fn run_row(
    catalog: &Catalog,
    recipe: &Recipe,
    paths: &ModelPaths,
    labels: &Labels,
    row: &AblationRow,
    seed: u64,
    out: &Path,
) -> Result<RowResult, TrainError> {
    let dir = out.join("runs").join(format!("{}-seed{seed}", file_name(row.name)));
    let mut recipe = recipe.clone();
    recipe.seed = seed;
    recipe.share_text_fusion = row.share_text_fusion;
    let pretrained: Option<PathBuf> = if row.tasks.is_empty() {
        None
    } else {
        recipe.tasks = Task::paper_probabilities().into_iter().filter(|(t, _)| row.tasks.contains(t)).collect();
        let run = dir.join("pretrain");
        let summary = pretrain(catalog, &recipe, paths, &run, true)?;
        Some(summary.checkpoint)
    };
    let start = match &pretrained {
        Some(checkpoint) => Start::Pretrained(checkpoint),
        None => Start::Towers,
    };
    let finetuned = finetune(catalog, &recipe, paths, start, &dir.join("finetune"), true)?;
    let device = recipe.device();
    let model = load_finetuned(&finetuned.checkpoint, recipe.max_text_tokens, device)?;
    let inputs =
        CatalogInputs::new(catalog, ItemTexts::Plain, &model.tokenizer, &recipe, &paths.image_encoder, &paths.cache_for(&dir), device)?;
    let report = evaluate(&model, catalog, labels, &inputs, Split::Test, device)?;
    Ok(RowResult {
        row: row.name.to_string(),
        seed,
        recipe: recipe.name.clone(),
        pretrain_steps: if row.tasks.is_empty() { 0 } else { recipe.steps },
        finetune_steps: recipe.finetune.steps,
        commit: COMMIT.to_string(),
        report,
    })
}

/// The ablation table: per row, the mean over seeds of each task's score and
/// of the meta-sum, with the spread (max − min) of the meta-sum.
pub fn ablation_markdown(results: &[RowResult], rows: &[AblationRow]) -> String {
    let mut by_row: BTreeMap<&str, Vec<&RowResult>> = BTreeMap::new();
    for r in results {
        by_row.entry(r.row.as_str()).or_default().push(r);
    }
    let mut md = String::new();
    let _ = writeln!(md, "| row | seeds | ITR | TIR | TGIR | SCR | OCIR | meta-sum | spread |");
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|");
    for row in rows {
        let Some(runs) = by_row.get(row.name) else { continue };
        let mean = |f: &dyn Fn(&EvalReport) -> f64| runs.iter().map(|r| f(&r.report)).sum::<f64>() / runs.len() as f64;
        let avg3 = |x: &[f64; 3]| x.iter().sum::<f64>() / 3.0;
        let metas: Vec<f64> = runs.iter().map(|r| r.report.meta_sum).collect();
        let spread = metas.iter().cloned().fold(f64::MIN, f64::max) - metas.iter().cloned().fold(f64::MAX, f64::min);
        let _ = writeln!(
            md,
            "| {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
            row.name,
            runs.iter().map(|r| r.seed.to_string()).collect::<Vec<_>>().join(","),
            mean(&|r| avg3(&r.xmr_random100.itr)),
            mean(&|r| avg3(&r.xmr_random100.tir)),
            mean(&|r| (r.tgir_mean[0] + r.tgir_mean[1]) / 2.0),
            mean(&|r| (r.scr.accuracy + r.scr.macro_f1) / 2.0),
            mean(&|r| avg3(&r.ocir_weighted)),
            mean(&|r| r.meta_sum),
            spread,
        );
    }
    md
}
