//! The main job: a catalog → the trained model → the bundle → the demo store,
//! served on 127.0.0.1.
//!
//! Stages (the cpu recipe): VQ-VAE image tokenizer, pretraining with all six
//! pretext tasks, multi-task fine-tuning, `vitrine-index build`, then the
//! browser package and the server. Every stage writes into `runs/demo/<catalog
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
    steps.cached_step(
        "VQ-VAE image tokenizer (vitrine-train vqvae)",
        || Ok(vqvae.join("vqvae.safetensors").is_file().then(String::new)),
        || {
            stage(bin_dir, "vitrine-train", "vqvae", catalog, &cache, &[OsStr::new("--out"), vqvae.as_os_str()])?;
            Ok(String::new())
        },
    )?;
    let trainings = [
        ("pretraining, six pretext tasks (vitrine-train pretrain)", "pretrain", &pretrain, "--vqvae", &vqvae),
        ("multi-task fine-tuning (vitrine-train finetune)", "finetune", &finetune, "--from", &pretrain),
    ];
    for (title, command, folder, flag, input) in trainings {
        steps.cached_step(
            title,
            || Ok(folder.join("summary.json").is_file().then(String::new)),
            || {
                let mut extra = vec![OsStr::new("--run"), folder.as_os_str(), OsStr::new(flag), input.as_os_str()];
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
