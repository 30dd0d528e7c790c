//! The backend's nightly loop end to end on a generated catalog, through the
//! binaries as a cron job runs them: a first cycle pretrains, fine-tunes,
//! builds and publishes version 1; the catalog then gains, changes and loses
//! items and a second cycle warm-starts from the published model and
//! publishes version 2; a deliberately broken candidate is refused by the
//! regression gate and a `kill -9` during publishing leaves version 2 served;
//! `vitrine rollback` goes back to version 1.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use tch::Device;
use vitrine_core::bundle::{Bundle, Limits};
use vitrine_core::synth::{generate, SynthSpec};
use vitrine_trainer::checkpoint::{self, Checkpointer, TrainerState};
use vitrine_trainer::optim::AdamW;
use vitrine_trainer::pretrain::optimizer_config;
use vitrine_trainer::recipe::Recipe;
use vitrine_trainer::teacher::load_finetuned;

mod support;

const MODELS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../models");

/// The workspace's binaries, built by `cargo test --workspace` beside the test binaries' folder.
fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().and_then(Path::parent).unwrap().join(name);
    assert!(
        path.is_file(),
        "{} is missing: run the workspace's tests (`cargo test --workspace`) or build it (`cargo build -p vitrine -p vitrine-trainer -p vitrine-index-builder`)",
        path.display()
    );
    path
}

/// The shared tiny recipe with a longer fine-tune (the gate needs a model
/// that beats random weights), written where `--config` can read it.
fn write_recipe(path: &Path) {
    let mut recipe = support::tiny_recipe(24);
    recipe.batch_size = 8;
    recipe.finetune.steps = 24;
    recipe.finetune.batch_size = 8;
    recipe.finetune.lr = 2e-4;
    std::fs::write(path, toml::to_string(&recipe).unwrap()).unwrap();
}

struct Loop {
    dir: tempfile::TempDir,
    recipe: PathBuf,
}

impl Loop {
    fn publish(&self) -> PathBuf {
        self.dir.path().join("publish")
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn nightly(&self, catalog: &Path, extra: &[&str]) -> Command {
        let mut command = Command::new(bin("vitrine"));
        command.arg("nightly").arg("--catalog").arg(catalog).arg("--publish").arg(self.publish()).arg("--state").arg(self.state());
        command.arg("--config").arg(&self.recipe).arg("--models").arg(MODELS);
        command.args(["--distill-steps", "30", "--max-examples", "300", "--dim", "32", "--keep", "2"]).args(extra);
        command
    }

    fn pointer(&self) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.publish().join("current.json")).unwrap()).unwrap()
    }

    /// The bundle the pointer names, read and checked as the widget reads it.
    fn served(&self) -> Bundle {
        let manifest = self.publish().join(self.pointer()["manifest"].as_str().unwrap());
        Bundle::read_manifest_file(&manifest, &Limits::default()).unwrap()
    }

    fn audits(&self) -> Vec<serde_json::Value> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.state().join("audit")).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        files.iter().map(|f| serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap()).collect()
    }
}

fn run(mut command: Command) -> Output {
    let output = command.output().unwrap();
    eprintln!("{}", String::from_utf8_lossy(&output.stdout));
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    output
}

/// `(photos, encoded)` of each photo feature store pass in a run's log.
fn feature_store_passes(output: &Output) -> Vec<(u64, u64)> {
    let log = String::from_utf8_lossy(&output.stdout).to_string() + &String::from_utf8_lossy(&output.stderr);
    // The log may be coloured: drop ANSI escapes before reading `key=value`.
    let plain = strip_ansi(&log);
    let field = |line: &str, key: &str| -> u64 {
        let start = line.find(&format!(" {key}=")).unwrap_or_else(|| panic!("no {key} in {line}")) + key.len() + 2;
        line[start..].split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
    };
    plain.lines().filter(|l| l.contains("photo feature store")).map(|l| (field(l, "photos"), field(l, "encoded"))).collect()
}

fn strip_ansi(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // An escape runs to its final letter, e.g. `ESC[2m`.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}

fn ids(bundle: &Bundle) -> Vec<String> {
    bundle.contents.products.iter().map(|p| p.id.clone()).collect()
}

/// The catalog of the second night: four more garment groups, one group
/// gone, one title changed.
fn updated_catalog(dir: &Path) -> PathBuf {
    let catalog = dir.join("catalog-2");
    generate(&catalog, &SynthSpec { groups: 24, baskets: 16, ..Default::default() }).unwrap();
    let keep = |line: &str| !line.contains("g0001-");
    let items: Vec<String> = std::fs::read_to_string(catalog.join("items.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| keep(l))
        .map(|l| if l.contains("\"g0002-00\"") { l.replacen("\"title\":\"", "\"title\":\"Renamed ", 1) } else { l.to_string() })
        .collect();
    std::fs::write(catalog.join("items.jsonl"), items.join("\n") + "\n").unwrap();
    for file in ["splits.csv", "baskets.jsonl"] {
        let text = std::fs::read_to_string(catalog.join(file)).unwrap();
        let kept: Vec<&str> = text.lines().filter(|l| keep(l)).collect();
        std::fs::write(catalog.join(file), kept.join("\n") + "\n").unwrap();
    }
    catalog
}

/// A candidate with the published model's shapes and random weights.
fn broken_candidate(published_model: &Path, out: &Path) -> PathBuf {
    let model = load_finetuned(published_model, 24, Device::Cpu).unwrap();
    tch::no_grad(|| {
        for (_, mut variable) in model.vs.variables() {
            let noise = variable.randn_like();
            variable.copy_(&noise);
        }
    });
    let recipe = Recipe::load("cpu").unwrap();
    let optimizer = AdamW::new(optimizer_config(&recipe)).unwrap();
    let config = checkpoint::read_config(published_model).unwrap();
    Checkpointer::new(out, 0)
        .save(1, &model.vs, &optimizer, &config, Some(&published_model.join("tokenizer.json")), &TrainerState::default())
        .unwrap()
}

#[test]
fn two_nightly_cycles_publish_gate_survive_a_kill_and_roll_back() {
    assert!(Path::new(MODELS).join("all-MiniLM-L6-v2/model.safetensors").is_file(), "run `cargo xtask setup` first");
    let dir = tempfile::tempdir().unwrap();
    let recipe = dir.path().join("tiny.toml");
    write_recipe(&recipe);
    let nightly = Loop { dir, recipe };

    // Night 1: nothing published; pretraining from the towers.
    let catalog_1 = nightly.dir.path().join("catalog-1");
    generate(&catalog_1, &SynthSpec { groups: 20, baskets: 16, ..Default::default() }).unwrap();
    let first = run(nightly.nightly(&catalog_1, &["--pretrain"]));
    assert!(first.status.success(), "first night failed");
    assert_eq!(nightly.pointer()["version"], 1);
    let version_1 = nightly.served();
    assert!(ids(&version_1).contains(&"g0001-00".to_string()));

    // Night 2: the updated catalog, warm-started from version 1's model.
    let catalog_2 = updated_catalog(nightly.dir.path());
    // With the index options a large catalog would use, passed through to the build.
    let second = run(nightly.nightly(&catalog_2, &["--refine", "--search-ef", "64"]));
    assert!(second.status.success(), "second night failed");
    assert_eq!(nightly.pointer()["version"], 2);
    let version_2 = nightly.served();
    assert!(version_1.contents.index.vectors().refinement().is_none() && version_1.contents.model_config.get("search_ef").is_none());
    assert!(version_2.contents.index.vectors().refinement().is_some(), "night 2's index has no refinement codes");
    assert_eq!(version_2.contents.model_config["search_ef"], 64);
    let served = ids(&version_2);
    assert!(served.contains(&"g0023-00".to_string()), "an added item is missing");
    assert!(!served.iter().any(|id| id.starts_with("g0001-")), "a removed item is still served");
    let renamed = version_2.contents.products.iter().find(|p| p.id == "g0002-00").unwrap();
    assert!(renamed.title.starts_with("Renamed "), "{}", renamed.title);
    let audits = nightly.audits();
    assert_eq!(audits.len(), 2);
    assert_eq!(audits[1]["decision"], "published");
    let changes = &audits[1]["catalog"];
    assert!(changes["added"].as_u64().unwrap() >= 8 && changes["changed"] == 1, "{changes}");
    assert!(changes["removed"].as_u64().unwrap() >= 2, "{changes}");
    assert_eq!(audits[1]["comparisons"].as_array().unwrap().len(), 6, "the gate compared every task");
    assert_eq!(audits[1]["published_version"], 1);
    let stages: Vec<&str> = audits[1]["stages"].as_array().unwrap().iter().map(|s| s["stage"].as_str().unwrap()).collect();
    assert_eq!(stages.len(), 6, "{stages:?}");
    assert!(stages[1].starts_with("fine-tuning") && stages[4].starts_with("building the bundle"), "{stages:?}");
    // The stages that run a tool note its peak memory; reading the catalog runs none.
    let peaks: Vec<Option<u64>> = audits[1]["stages"].as_array().unwrap().iter().map(|s| s["peak_rss_bytes"].as_u64()).collect();
    assert!(peaks[0].is_none() && peaks[1..5].iter().all(|p| p.is_some_and(|bytes| bytes > 50 << 20)), "{peaks:?}");
    // Only the added items' photos went through the frozen image encoder;
    // every later pass of the night found them all in the store.
    let passes = feature_store_passes(&second);
    assert!(passes.len() >= 3, "{passes:?}");
    let (photos, encoded) = passes[0];
    assert!(encoded >= 4 && encoded < photos / 2, "night 2 encoded {encoded} of {photos} photos");
    assert!(passes[1..].iter().all(|&(_, encoded)| encoded == 0), "{passes:?}");
    // The warm start kept the published model's heads (same labels).
    let finetune_summary: serde_json::Value = serde_json::from_slice(
        &std::fs::read(Path::new(audits[1]["candidate_checkpoint"].as_str().unwrap()).parent().unwrap().join("summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(finetune_summary["kept_heads"], true);

    // Night 3: a broken candidate is refused; version 2 stays.
    let history: serde_json::Value = serde_json::from_slice(&std::fs::read(nightly.publish().join("history.json")).unwrap()).unwrap();
    let published_model = PathBuf::from(history["versions"][1]["details"]["checkpoint"].as_str().unwrap());
    let broken = broken_candidate(&published_model, &nightly.dir.path().join("broken"));
    let refused = run(nightly.nightly(&catalog_2, &["--candidate", broken.to_str().unwrap(), "--tolerance", "0.5"]));
    assert!(!refused.status.success(), "a broken candidate was published");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("was not published") && stderr.contains("fell by"), "{stderr}");
    assert_eq!(nightly.pointer()["version"], 2);
    let audit = nightly.audits().pop().unwrap();
    assert_eq!(audit["decision"], "refused");
    let last_stage = audit["stages"].as_array().unwrap().last().unwrap()["stage"].as_str().unwrap().to_string();
    assert!(last_stage.starts_with("evaluating the published"), "a refused night went on to {last_stage}");
    assert!(audit["comparisons"].as_array().unwrap().iter().any(|c| c["regressed"] == true));

    // Night 4: killed while publishing (paused between the copied files and
    // the pointer switch): version 2 is still served, whole.
    let mut child = nightly
        .nightly(&catalog_2, &["--candidate", published_model.to_str().unwrap()])
        .env("VITRINE_PUBLISH_PAUSE_MS", "600000")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    while let Some(Ok(line)) = lines.next() {
        let publishing = line.contains("publishing (bundle files first");
        seen.push(line);
        if publishing {
            break;
        }
    }
    assert!(seen.last().is_some_and(|l| l.contains("publishing")), "never reached publishing: {seen:?}");
    // The pause follows the copy; give the copy time to finish and the pause to start.
    std::thread::sleep(std::time::Duration::from_secs(5));
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(nightly.pointer()["version"], 2);
    assert_eq!(ids(&nightly.served()), served);

    // Rollback to version 1, from the kept versions.
    let mut rollback = Command::new(bin("vitrine"));
    rollback.arg("rollback").arg("--publish").arg(nightly.publish());
    let rollback = run(rollback);
    assert!(rollback.status.success());
    assert_eq!(nightly.pointer()["version"], 1);
    assert_eq!(ids(&nightly.served()), ids(&version_1));
}
