//! `vitrine query`, run as a user would, on a generated catalog with the
//! sentence-transformers text encoder that `cargo xtask setup` fetches.

use std::path::Path;
use std::process::{Command, Output};

const MINILM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/all-MiniLM-L6-v2");

fn vitrine(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vitrine")).args(args).output().expect("vitrine runs")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// (score, id, whole line) of each result line.
fn results(out: &Output) -> Vec<(f32, String, String)> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(2)
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields[1].parse().unwrap(), fields[2].to_string(), line.to_string())
        })
        .collect()
}

#[test]
fn an_items_own_text_ranks_it_first_in_f32_and_int8() {
    assert!(Path::new(MINILM).join("model.safetensors").is_file(), "run `cargo xtask setup` first");
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().to_str().unwrap();
    assert!(vitrine(&["catalog", "generate", "--out", catalog, "--groups", "12", "--baskets", "2"]).status.success());
    // An item with a title full of terminal escapes and line breaks.
    let items = std::fs::read_to_string(dir.path().join("items.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(items.lines().next().unwrap()).unwrap();
    let (id, title, description) =
        (first["id"].as_str().unwrap(), first["title"].as_str().unwrap(), first["description"].as_str().unwrap());
    let hostile = format!("{title}\u{1b}[2J\nrm -rf");
    let items = items.replacen(&serde_json::to_string(title).unwrap(), &serde_json::to_string(&hostile).unwrap(), 1);
    std::fs::write(dir.path().join("items.jsonl"), items).unwrap();

    let query = format!("{hostile}. {description}");
    for extra in [&[][..], &["--int8"][..]] {
        let mut args = vec!["query", &query, "--checkpoint", MINILM, "--catalog", catalog, "--k", "5"];
        args.extend(extra);
        let out = vitrine(&args);
        assert!(out.status.success(), "{}", text(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!stdout.contains('\u{1b}'), "escape sequences are printed: {stdout}");
        assert!(stdout.lines().next().unwrap().contains(if extra.is_empty() { "f32" } else { "int8" }), "{stdout}");
        let ranked = results(&out);
        assert_eq!(ranked.len(), 5, "{stdout}");
        assert_eq!(ranked[0].1, id, "{stdout}");
        assert!(ranked[0].2.ends_with(&format!("{title} [2J rm -rf")), "{stdout}");
        assert!(ranked[0].0 > 0.99, "{stdout}");
        assert!(ranked.windows(2).all(|w| w[0].0 >= w[1].0), "scores descend: {stdout}");
    }

    // One split only: as many items as the split file gives it.
    let splits = std::fs::read_to_string(dir.path().join("splits.csv")).unwrap();
    let train = splits.lines().filter(|l| l.ends_with(",train")).count();
    let out = vitrine(&["query", "wool", "--checkpoint", MINILM, "--catalog", catalog, "--split", "train", "--k", "1"]);
    assert!(out.status.success(), "{}", text(&out));
    let header = String::from_utf8_lossy(&out.stdout).lines().next().unwrap().to_string();
    assert!(header.starts_with(&format!("{train} items of ")) && header.contains("(train split)"), "{header}");
}

#[test]
fn a_missing_checkpoint_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing-here");
    let out = vitrine(&["query", "red dress", "--checkpoint", missing.to_str().unwrap(), "--catalog", dir.path().to_str().unwrap()]);
    assert!(!out.status.success());
    let message = text(&out);
    assert!(message.contains("nothing-here") && message.contains("config.json"), "{message}");
}
