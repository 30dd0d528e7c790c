//! The main job: a catalog → the trained model → the bundle → the demo store,
//! served on 127.0.0.1.
//!
//! Stages (the cpu recipe): VQ-VAE image tokenizer (when the recipe has
//! MPFC), pretraining with the recipe's pretext tasks, multi-task
//! fine-tuning, `vitrine-index build`, then the browser package and the server. Every stage writes into `runs/demo/<catalog
//! name>/` and is skipped when its output is complete (an interrupted
//! training resumes from its last checkpoint), so a second run goes straight
//! to serving; the image features are cached once per catalog.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::util::{cmd, run, Steps};

/// Where the demo's catalog comes from: `--catalog`, else the H&M export beside
/// the project, else a generated catalog.
pub fn pick_catalog(root: &Path, catalog: Option<PathBuf>) -> (PathBuf, bool) {
    if let Some(path) = catalog {
        return (path, false);
    }
    let hm = root.join("../shared/data/hm");
    if hm.join("articles.csv").is_file() {
        return (hm, false);
    }
    (root.join("runs/demo/generated-catalog"), true)
}

/// `<bin> <command> --catalog … --config cpu --cache … <extra>`.
fn stage(bin_dir: &Path, bin: &str, command: &str, catalog: &Path, cache: &Path, extra: &[&OsStr]) -> Result<()> {
    let mut c = cmd(bin_dir.join(bin));
    c.arg(command).arg("--catalog").arg(catalog).args(["--config", "cpu"]).arg("--cache").arg(cache).args(extra);
    run(&mut c)
}

/// Whether the cpu recipe pretrains with MPFC, whose targets are the VQ-VAE's codes.
fn cpu_recipe_has_mpfc(root: &Path) -> Result<bool> {
    let path = root.join("trainer/recipes/cpu.toml");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let recipe: toml::Table = text.parse().with_context(|| format!("parsing {}", path.display()))?;
    let weight = recipe.get("tasks").and_then(|tasks| tasks.get("mpfc")).and_then(|w| w.as_float().or(w.as_integer().map(|i| i as f64)));
    Ok(weight.is_some_and(|w| w > 0.0))
}

/// Trains and builds the bundle for `catalog`; returns the build folder.
pub fn build_bundle(root: &Path, bin_dir: &Path, catalog: &Path, generate: bool, steps: &mut Steps) -> Result<PathBuf> {
    let name = catalog.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "catalog".into());
    let runs = root.join("runs/demo").join(&name);
    let (vqvae, pretrain, finetune, build) = (runs.join("vqvae"), runs.join("pretrain"), runs.join("finetune"), runs.join("bundle"));
    let cache = runs.join("cache");

    steps.cached_step(
        &format!("catalog {}", catalog.display()),
        || Ok(catalog.is_dir().then(|| "present".to_string())),
        || {
            anyhow::ensure!(generate, "no catalog at {}", catalog.display());
            run(cmd(bin_dir.join("vitrine")).args(["catalog", "generate", "--out"]).arg(catalog))?;
            Ok(String::new())
        },
    )?;
    let has_mpfc = cpu_recipe_has_mpfc(root)?;
    if has_mpfc {
        steps.cached_step(
            "VQ-VAE image tokenizer (vitrine-train vqvae)",
            || Ok(vqvae.join("vqvae.safetensors").is_file().then(String::new)),
            || {
                stage(bin_dir, "vitrine-train", "vqvae", catalog, &cache, &[OsStr::new("--out"), vqvae.as_os_str()])?;
                Ok(String::new())
            },
        )?;
    } else {
        steps.skipped_step("VQ-VAE image tokenizer (vitrine-train vqvae)", "the cpu recipe pretrains without MPFC");
    }
    let pretrain_inputs: Vec<&OsStr> = if has_mpfc { vec![OsStr::new("--vqvae"), vqvae.as_os_str()] } else { Vec::new() };
    let finetune_inputs = [OsStr::new("--from"), pretrain.as_os_str()];
    let trainings = [
        ("pretraining with the recipe's pretext tasks (vitrine-train pretrain)", "pretrain", &pretrain, pretrain_inputs.as_slice()),
        ("multi-task fine-tuning (vitrine-train finetune)", "finetune", &finetune, finetune_inputs.as_slice()),
    ];
    for (title, command, folder, inputs) in trainings {
        steps.cached_step(
            title,
            || Ok(folder.join("summary.json").is_file().then(String::new)),
            || {
                let mut extra = vec![OsStr::new("--run"), folder.as_os_str()];
                extra.extend_from_slice(inputs);
                // An interrupted run continues from its last checkpoint.
                if folder.join("latest").exists() {
                    extra.push(OsStr::new("--resume"));
                }
                stage(bin_dir, "vitrine-train", command, catalog, &cache, &extra)?;
                Ok(String::new())
            },
        )?;
    }
    steps.cached_step(
        "bundle (vitrine-index build)",
        || Ok(build.join("build-report.json").is_file().then(|| crate::util::size_note(&build.join("catalog.vitrine")))),
        || {
            // --max-examples bounds the teacher's passes over the train split on two cores.
            let extra = [
                OsStr::new("--checkpoint"),
                finetune.as_os_str(),
                OsStr::new("--out"),
                build.as_os_str(),
                OsStr::new("--max-examples"),
                OsStr::new("4000"),
            ];
            stage(bin_dir, "vitrine-index", "build", catalog, &cache, &extra)?;
            Ok(crate::util::size_note(&build.join("catalog.vitrine")))
        },
    )?;
    Ok(build)
}

/// Serves the demo store until interrupted, printing its address.
pub fn serve(root: &Path, build: &Path, images: &Path, port: u16) -> Result<()> {
    println!("demo: serving the store (Ctrl-C stops it)");
    let status = cmd("node")
        .arg(root.join("www/serve.mjs"))
        .arg("--bundle")
        .arg(build)
        .arg("--images")
        .arg(images)
        .arg("--port")
        .arg(port.to_string())
        .status()
        .context("cannot start node www/serve.mjs")?;
    anyhow::ensure!(status.success(), "the demo server stopped: {status}");
    Ok(())
}
