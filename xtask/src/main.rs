//! vitrine's task runner, run as `cargo xtask <command>` (an alias in
//! `.cargo/config.toml`).
//!
//! - `setup [--gpu]`: installs everything the build, the tests and the demo need
//!   (Python venv with libtorch, model files, wasm tools, npm packages, Chromium).
//!   Every step checks first whether it is already done, so running it again is
//!   cheap.
//! - `test`: set-up, then every test of the workspace, the WebAssembly smoke test,
//!   and the browser tests (the demo store in headless Chromium over a fixture
//!   bundle built from a generated catalog).
//! - `demo`: the main job (`xtask/src/demo.rs`): set-up, build, train on a
//!   catalog, build its bundle, serve the demo store.
//! - `e2e`: set-up, then only the browser tests (what `test` runs last).

mod demo;
mod setup;
mod util;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use crate::util::{cmd, run, Steps};

#[derive(Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", about = "vitrine's set-up, demo and test runner")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what the build, tests and demo need; safe to run again.
    Setup {
        /// Install the full PyTorch 2.11.0 with its CUDA libraries (for training on a GPU)
        /// instead of the CPU-only libtorch.
        #[arg(long)]
        gpu: bool,
    },
    /// Set up, then run all tests: `cargo test --workspace`, the WebAssembly smoke test and the browser tests.
    Test,
    /// The main job: set up, build, train with the cpu recipe on a catalog, build its bundle,
    /// then serve the demo store on 127.0.0.1 and print its address. Finished stages are reused.
    Demo {
        /// Catalog folder, or a shop's product export (a .csv or .jsonl file, with --mapping)
        /// (default: ../shared/data/hm when present, else a generated catalog).
        #[arg(long)]
        catalog: Option<PathBuf>,
        /// Column mapping (JSON) of a .csv or .jsonl catalog; see `vitrine catalog import`.
        #[arg(long)]
        mapping: Option<PathBuf>,
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Stop after building, without serving.
        #[arg(long)]
        no_serve: bool,
    },
    /// Set up, then only the browser tests (the wasm build, www/pkg, the fixture bundle, headless Chromium).
    E2e,
}

fn main() {
    let cli = Cli::parse();
    let result = workspace_root().and_then(|root| {
        std::env::set_current_dir(&root).with_context(|| format!("cannot enter {}", root.display()))?;
        match cli.command {
            Command::Setup { gpu } => setup::setup(&root, gpu).map(|_| ()),
            Command::Test => test(&root),
            Command::Demo { catalog, mapping, port, no_serve } => main_job(&root, catalog, mapping, port, no_serve),
            Command::E2e => e2e(&root),
        }
    });
    if let Err(err) = result {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}

fn workspace_root() -> Result<PathBuf> {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = manifest_dir.parent().context("xtask has no parent folder")?;
    Ok(root.to_path_buf())
}

const WASM_TARGET: &str = "wasm32-unknown-unknown";
/// Cargo's output folder: `CARGO_TARGET_DIR` when set, else `target/`.
fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), |dir| root.join(dir))
}

/// The release build of the wasm engine.
fn wasm_artifact(root: &Path) -> PathBuf {
    target_dir(root).join(WASM_TARGET).join("release/vitrine_wasm.wasm")
}

fn test(root: &Path) -> Result<()> {
    let tools = setup::setup(root, false)?;
    let mut steps = Steps::new("test", 7);
    // Every part runs even when an earlier one fails; the failures are listed at the end.
    let mut failures = Vec::new();

    let mut summary = String::from("did not run");
    let cargo_result = steps.step("cargo test --workspace --no-fail-fast", || {
        let result = util::cargo_test(cmd(util::cargo()).args(["test", "--workspace", "--no-fail-fast"]));
        summary = match &result {
            Ok(s) => s.to_string(),
            Err(e) => format!("{e:#}"),
        };
        result.map(|s| s.to_string())
    });
    if let Err(e) = cargo_result {
        eprintln!("error: {e:#}");
        failures.push("cargo test --workspace");
    }

    let out_dir = target_dir(root).join("wasm-node");
    let mut wasm = || -> Result<()> {
        steps.step(&format!("build vitrine-wasm for {WASM_TARGET} (release)"), || {
            build_wasm()?;
            Ok(util::size_note(&wasm_artifact(root)))
        })?;
        steps.step("wasm-bindgen --target nodejs into target/wasm-node", || {
            run(cmd(&tools.wasm_bindgen).args(["--target", "nodejs", "--out-dir"]).arg(&out_dir).arg(wasm_artifact(root)))?;
            Ok(String::new())
        })?;
        steps.step("WebAssembly smoke test in node (wasm/tests/tokenize.mjs)", || {
            run(cmd("node").arg("wasm/tests/tokenize.mjs").arg(&out_dir).arg(root.join(setup::MINILM_DIR).join("tokenizer.json")))?;
            Ok(String::new())
        })
    };
    if let Err(e) = wasm() {
        eprintln!("error: {e:#}");
        failures.push("WebAssembly smoke test");
    }

    if let Err(e) = browser_tests(root, &tools, &mut steps) {
        eprintln!("error: {e:#}");
        failures.push("browser tests");
    }

    println!("cargo test: {summary}");
    if failures.is_empty() {
        println!("all tests passed");
        Ok(())
    } else {
        bail!("tests failed: {}", failures.join(", "))
    }
}

/// The browser tests' steps (after the release wasm build): www/pkg, the
/// fixture bundle (rebuilt when its example binary is newer), then the demo store in
/// headless Chromium (www/tests/run.mjs).
fn browser_tests(root: &Path, tools: &setup::Tools, steps: &mut Steps) -> Result<()> {
    let fixture = target_dir(root).join("e2e-bundle");
    let without_outfits = target_dir(root).join("e2e-bundle-without-outfits");
    let e2e_out = target_dir(root).join("e2e");
    build_www_pkg(root, tools, steps)?;
    let example = target_dir(root).join("release/examples/fixture_bundle");
    steps.cached_step(
        "fixture bundles for the browser tests: a canonical catalog, and a shop's CSV without split, groups or baskets (index-builder/examples/fixture_bundle.rs)",
        || {
            // Built first (a no-op when current): a bundle older than its builder is rebuilt.
            run(cmd(util::cargo()).args(["build", "--release", "-p", "vitrine-index-builder", "--example", "fixture_bundle"]))?;
            let fresh = fixture_is_fresh(&fixture, &example) && fixture_is_fresh(&without_outfits, &example);
            Ok(fresh.then(|| format!("{} and {}", fixture.display(), without_outfits.display())))
        },
        || {
            run(cmd(&example).arg("--out").arg(&fixture))?;
            run(cmd(&example).args(["--shop-csv", "--out"]).arg(&without_outfits))?;
            Ok(format!("{}; {}", util::size_note(&fixture.join("catalog.vitrine")), util::size_note(&without_outfits.join("catalog.vitrine"))))
        },
    )?;
    steps.step("browser tests in headless Chromium (www/tests/run.mjs)", || {
        run(cmd("node")
            .arg("www/tests/run.mjs")
            .arg("--fixture")
            .arg(&fixture)
            .arg("--fixture-without-outfits")
            .arg(&without_outfits)
            .arg("--out")
            .arg(&e2e_out))?;
        Ok(format!("query latency in {}", e2e_out.join("latency.json").display()))
    })
}

/// Set-up, the release wasm build and the browser tests only.
fn e2e(root: &Path) -> Result<()> {
    let tools = setup::setup(root, false)?;
    let mut steps = Steps::new("e2e", 4);
    steps.step(&format!("build vitrine-wasm for {WASM_TARGET} (release)"), || {
        build_wasm()?;
        Ok(util::size_note(&wasm_artifact(root)))
    })?;
    browser_tests(root, &tools, &mut steps)?;
    println!("browser tests passed");
    Ok(())
}

/// The browser package in www/pkg from the release wasm build: wasm-bindgen
/// `--target web`, then wasm-opt `-O` (about two minutes on two cores), skipped
/// when www/pkg was made from a wasm build with the same SHA-256.
fn build_www_pkg(root: &Path, tools: &setup::Tools, steps: &mut Steps) -> Result<()> {
    use sha2::{Digest, Sha256};
    let pkg = root.join("www/pkg");
    let wasm_file = pkg.join("vitrine_wasm_bg.wasm");
    let stamp = pkg.join(".built-from");
    let artifact = wasm_artifact(root);
    let source_hash = || -> Result<String> {
        let bytes = std::fs::read(&artifact).with_context(|| format!("cannot read {}", artifact.display()))?;
        Ok(format!("{:x}", Sha256::digest(&bytes)))
    };
    steps.cached_step(
        "browser package www/pkg (wasm-bindgen --target web, wasm-opt -O)",
        || {
            let current = wasm_file.is_file() && std::fs::read_to_string(&stamp).ok() == Some(source_hash()?);
            Ok(current.then(|| util::size_note(&wasm_file)))
        },
        || {
            let hash = source_hash()?;
            // A run stopped half-way leaves no stamp, so the next one rebuilds.
            let _ = std::fs::remove_file(&stamp);
            run(cmd(&tools.wasm_bindgen).args(["--target", "web", "--out-dir"]).arg(&pkg).arg(&artifact))?;
            let before = std::fs::metadata(&wasm_file).with_context(|| format!("{} missing", wasm_file.display()))?.len();
            run(cmd(&tools.wasm_opt).arg("-O").arg(&wasm_file).arg("-o").arg(&wasm_file))?;
            let after = std::fs::metadata(&wasm_file)?.len();
            std::fs::write(&stamp, hash).with_context(|| format!("cannot write {}", stamp.display()))?;
            Ok(format!("{}: {} → {} after wasm-opt", wasm_file.display(), util::bytes(before), util::bytes(after)))
        },
    )
}

/// Whether the fixture bundle exists and is newer than the example binary that builds it.
fn fixture_is_fresh(fixture: &Path, example: &Path) -> bool {
    let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    match (modified(&fixture.join("fixture.json")), modified(example)) {
        (Some(built), Some(source)) => built > source,
        _ => false,
    }
}

fn build_wasm() -> Result<()> {
    run(cmd(util::cargo()).args(["build", "-p", "vitrine-wasm", "--target", WASM_TARGET, "--release"]))
}

fn main_job(root: &Path, catalog: Option<PathBuf>, mapping: Option<PathBuf>, port: u16, no_serve: bool) -> Result<()> {
    let started = std::time::Instant::now();
    let (catalog, generate) = demo::pick_catalog(root, catalog);
    let shop_file = demo::ShopFile::of(&catalog, mapping)?;
    let tools = setup::setup(root, false)?;
    let mut steps = Steps::new("demo", if shop_file.is_some() { 9 } else { 8 });
    steps.step("cargo build --workspace --release", || {
        run(cmd(util::cargo()).args(["build", "--workspace", "--release"]))?;
        Ok(String::new())
    })?;
    steps.step(&format!("build vitrine-wasm for {WASM_TARGET} (release)"), || {
        build_wasm()?;
        Ok(util::size_note(&wasm_artifact(root)))
    })?;
    let wasm_file = root.join("www/pkg/vitrine_wasm_bg.wasm");
    build_www_pkg(root, &tools, &mut steps)?;
    let bin_dir = target_dir(root).join("release");
    let catalog = match &shop_file {
        Some(file) => file.import(root, &bin_dir, &mut steps)?,
        None => catalog,
    };
    let build = demo::build_bundle(root, &bin_dir, &catalog, generate, &mut steps)?;
    println!("demo: ready in {:.0} s", started.elapsed().as_secs_f64());
    println!("  - bundle: {}", util::size_note(&build.join("catalog.vitrine")));
    println!("  - browser package: {}", util::size_note(&wasm_file));
    if no_serve {
        return Ok(());
    }
    demo::serve(root, &build, &catalog.join("images"), port)
}
