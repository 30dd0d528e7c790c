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

/// A shop's product export given as the catalog: a CSV or JSON Lines file and its column mapping.
pub struct ShopFile {
    file: PathBuf,
    format: &'static str,
    mapping: PathBuf,
}

impl ShopFile {
    /// `Some` when `catalog` is a file (it then needs `mapping`); `None` for a folder.
    pub fn of(catalog: &Path, mapping: Option<PathBuf>) -> Result<Option<ShopFile>> {
        if !catalog.is_file() {
            anyhow::ensure!(mapping.is_none(), "--mapping is for a .csv or .jsonl catalog file; {} is not a file", catalog.display());
            return Ok(None);
        }
        let format = match catalog.extension().and_then(OsStr::to_str).map(str::to_ascii_lowercase).as_deref() {
            Some("csv") => "csv",
            Some("jsonl" | "ndjson") => "jsonl",
            _ => anyhow::bail!("{}: a catalog file must be .csv or .jsonl (or give a catalog folder)", catalog.display()),
        };
        let mapping = mapping.with_context(|| {
            format!("{} needs --mapping FILE: a JSON column mapping, e.g. {{\"id\": \"sku\", \"title\": \"name\", \"category\": \"cat\", \"image_template\": \"images/{{sku}}.jpg\"}}", catalog.display())
        })?;
        anyhow::ensure!(mapping.is_file(), "the mapping {} is not a file", mapping.display());
        Ok(Some(ShopFile { file: catalog.to_path_buf(), format, mapping }))
    }

    /// Imports the file into `runs/demo/imported/<file stem>/` (a canonical
    /// folder with a split drawn by `vitrine catalog import`; bad rows are
    /// reported and left out), again only when the file or the mapping is newer.
    /// The folder's `images` links to the file's folder, which the mapping's
    /// photo paths are relative to: the store serves the photos from there.
    pub fn import(&self, root: &Path, bin_dir: &Path, steps: &mut crate::util::Steps) -> Result<PathBuf> {
        let stem = self.file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "shop".into());
        let out = root.join("runs/demo/imported").join(&stem);
        let link = out.join("images");
        let items = out.join("items.jsonl");
        let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
        steps.cached_step(
            &format!("import {} with {} (vitrine catalog import)", self.file.display(), self.mapping.display()),
            || {
                let current = match (modified(&items), modified(&self.file), modified(&self.mapping)) {
                    (Some(imported), Some(file), Some(mapping)) => imported > file && imported > mapping,
                    _ => false,
                };
                Ok(current.then(|| format!("{} is newer than the file and the mapping", items.display())))
            },
            || {
                let source_dir = std::path::absolute(&self.file)?.parent().context("the catalog file has no folder")?.to_path_buf();
                std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
                if link.symlink_metadata().is_ok() {
                    std::fs::remove_file(&link).with_context(|| format!("cannot replace {}", link.display()))?;
                }
                std::os::unix::fs::symlink(&source_dir, &link).with_context(|| format!("cannot link {}", link.display()))?;
                // Read through the link, so the photos' paths in the canonical catalog stay under `images/`.
                let source = link.join(self.file.file_name().context("the catalog file has no name")?);
                let mut c = cmd(bin_dir.join("vitrine"));
                c.args(["catalog", "import"]).arg(&source).args(["--format", self.format, "--mapping"]).arg(&self.mapping);
                c.arg("--out").arg(&out).arg("--skip-bad-rows");
                run(&mut c)?;
                Ok(out.display().to_string())
            },
        )?;
        Ok(out)
    }
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
