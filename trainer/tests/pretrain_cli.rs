//! `vitrine-train` end to end on a generated catalog: the image tokenizer,
//! pretraining with all six tasks, and a run killed with SIGKILL after a
//! checkpoint that `--resume` brings to the same weights as an uninterrupted run.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use vitrine_core::synth::{generate, SynthSpec};

const MODELS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../models");

fn small_recipe(dir: &Path) -> PathBuf {
    let recipe = include_str!("../recipes/cpu.toml")
        .replace("steps = 300\nbatch_size = 32", "steps = 12\nbatch_size = 8")
        .replace("max_text_tokens = 48", "max_text_tokens = 24")
        .replace("warmup_steps = 20", "warmup_steps = 2")
        .replace("decay_steps = [200, 260]", "decay_steps = [9]")
        .replace("checkpoint_every = 50", "checkpoint_every = 3")
        .replace("[vqvae]\nsteps = 300\nbatch_size = 16", "[vqvae]\nsteps = 4\nbatch_size = 4\nchannels = [8, 8, 16, 16, 16]")
        .replace("min_df = 10", "min_df = 3")
        // Every pretext task (the cpu recipe pretrains with ITC alone).
        .replace("[tasks]\nitc = 1.0\n", "[tasks]\nitc = 0.2\nmvc = 0.2\nitm = 0.15\nmlm = 0.15\nmpfc = 0.15\npac = 0.15\n")
        // A seed whose first 12 steps draw every task.
        .replace("seed = 7", "seed = 3");
    let path = dir.join("test.toml");
    std::fs::write(&path, recipe).unwrap();
    path
}

fn train(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vitrine-train"));
    command.args(args).args(["--models", MODELS]).env("RUST_LOG", "warn");
    command
}

fn check(out: Output) -> String {
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    text
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn pretraining_runs_every_task_and_resumes_after_kill_9_to_the_same_weights() {
    assert!(Path::new(MODELS).join("all-MiniLM-L6-v2/model.safetensors").is_file(), "run `cargo xtask setup` first");
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("catalog");
    generate(&catalog, &SynthSpec { groups: 16, baskets: 4, ..Default::default() }).unwrap();
    let recipe = small_recipe(dir.path());
    let vqvae = dir.path().join("vqvae");
    check(train(&["vqvae", "--catalog", s(&catalog), "--config", s(&recipe), "--out", s(&vqvae)]).output().unwrap());

    let pretrain = |run: &Path, resume: bool| {
        let mut c = train(&["pretrain", "--catalog", s(&catalog), "--config", s(&recipe), "--vqvae", s(&vqvae), "--run", s(run)]);
        if resume {
            c.arg("--resume");
        }
        c
    };
    let whole = dir.path().join("whole");
    let report = check(pretrain(&whole, false).output().unwrap());
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(whole.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["steps"], 12);
    let tasks: Vec<&String> = summary["tasks"].as_object().unwrap().keys().collect();
    assert_eq!(tasks, ["itc", "itm", "mlm", "mpfc", "mvc", "pac"], "{report}");
    for task in tasks {
        assert!(report.lines().any(|l| l.starts_with(task.as_str())), "the report lists {task}: {report}");
    }
    let losses = |run: &Path| -> Vec<(u64, String, f64)> {
        std::fs::read_to_string(run.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let m: serde_json::Value = serde_json::from_str(l).unwrap();
                (m["step"].as_u64().unwrap(), m["task"].as_str().unwrap().to_string(), m["loss"].as_f64().unwrap())
            })
            .collect()
    };
    let uninterrupted = losses(&whole);
    assert_eq!(uninterrupted.iter().map(|m| m.0).collect::<Vec<_>>(), (0..12).collect::<Vec<_>>());
    assert!(uninterrupted.iter().all(|m| m.2.is_finite() && m.2 > 0.0));

    // Kill -9 as soon as the first checkpoint exists, then resume.
    let killed = dir.path().join("killed");
    let mut child = pretrain(&killed, false).spawn().unwrap();
    let started = Instant::now();
    while !killed.join("latest").is_file() {
        assert!(started.elapsed() < Duration::from_secs(300), "no checkpoint within 5 minutes");
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it could be killed");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    check(pretrain(&killed, true).output().unwrap());
    let weights = |run: &Path| std::fs::read(run.join("step-000012/model.safetensors")).unwrap();
    assert!(weights(&whole) == weights(&killed), "the resumed run ends with other weights than the uninterrupted one");
    assert_eq!(losses(&killed), uninterrupted, "each step's metrics once, with the same losses");
}
