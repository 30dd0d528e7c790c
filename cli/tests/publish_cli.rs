//! `vitrine publish` and `vitrine rollback` as a user (or a nightly job) runs
//! them, and `kill -9` in the middle of a publish.

#[path = "../../publish/tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::write_bundle;
use vitrine_publish::{PublishDir, PAUSE_ENV};

fn vitrine(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vitrine")).args(args).env_remove(PAUSE_ENV).output().expect("vitrine runs")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn publish_and_rollback_print_what_they_did() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, site) = (dir.path().join("a"), dir.path().join("b"), dir.path().join("site"));
    write_bundle(&a, 20, 1);
    write_bundle(&b, 20, 2);
    let details = dir.path().join("details.json");
    std::fs::write(&details, r#"{"val": {"xmr_r1": 0.41}}"#).unwrap();

    let out = vitrine(&["publish", "--bundle", path(&a), "--to", path(&site), "--details", path(&details)]);
    assert!(out.status.success(), "{}", text(&out));
    let printed = text(&out);
    assert!(printed.contains("published version 1 (bundle/manifest.") && printed.contains("it was none"), "{printed}");
    assert!(printed.contains("copied 6 files") && printed.contains("kept versions [1]"), "{printed}");

    let out = vitrine(&["publish", "--bundle", path(&b), "--to", path(&site), "--keep", "1"]);
    assert!(out.status.success(), "{}", text(&out));
    let printed = text(&out);
    assert!(printed.contains("published version 2") && printed.contains("it was version 1"), "{printed}");
    assert!(printed.contains("copied 3 files") && printed.contains("3 parts already there"), "{printed}");
    assert!(printed.contains("kept versions [2]; deleted versions [1] (3 files"), "{printed}");

    let out = vitrine(&["publish", "--bundle", path(&a), "--to", path(&site)]);
    assert!(out.status.success(), "{}", text(&out));
    let out = vitrine(&["rollback", "--publish", path(&site)]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("current version 2") && text(&out).contains("it was version 3"), "{}", text(&out));
    let out = vitrine(&["rollback", "--publish", path(&site), "--to", "3"]);
    assert!(out.status.success() && text(&out).contains("current version 3"), "{}", text(&out));
    let out = vitrine(&["rollback", "--publish", path(&site), "--to", "1"]);
    assert!(!out.status.success() && text(&out).contains("version 1 is not kept"), "{}", text(&out));

    let history = PublishDir::open(&site).unwrap().history().unwrap();
    assert_eq!(history.version_numbers(), [2, 3]);

    let out = vitrine(&["publish", "--bundle", path(dir.path()), "--to", path(&site)]);
    assert!(!out.status.success() && text(&out).contains("has no manifest.json"), "{}", text(&out));
    std::fs::write(&details, "not json").unwrap();
    let out = vitrine(&["publish", "--bundle", path(&a), "--to", path(&site), "--details", path(&details)]);
    assert!(!out.status.success() && text(&out).contains("details.json is not valid JSON"), "{}", text(&out));
}

/// Starts a publish that pauses before switching the pointer; returns once it has paused.
fn publish_paused(bundle: &Path, site: &Path) -> std::process::Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vitrine"))
        .args(["publish", "--bundle", path(bundle), "--to", path(site)])
        .env(PAUSE_ENV, "60000")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    for line in stderr.lines() {
        if line.unwrap().starts_with(PAUSE_ENV) {
            return child;
        }
    }
    panic!("the publisher ended without pausing: {:?}", child.wait());
}

#[test]
fn kill_9_during_a_publish_leaves_the_previous_version_current_and_the_next_publish_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, site) = (dir.path().join("a"), dir.path().join("b"), dir.path().join("site"));
    write_bundle(&a, 20, 1);
    write_bundle(&b, 20, 2);
    assert!(vitrine(&["publish", "--bundle", path(&a), "--to", path(&site)]).status.success());
    let published = PublishDir::open(&site).unwrap();
    let before = published.current().unwrap().unwrap();

    // Everything of version 2 is copied and checked; the pointer is not switched yet.
    let mut child = publish_paused(&b, &site);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert_eq!(published.current().unwrap().unwrap(), before);
    assert_eq!(published.history().unwrap().version_numbers(), [1]);
    let bundle = published.read_version(&before.manifest).unwrap();
    assert!(bundle.contents.products.iter().all(|p| p.id.starts_with("1-")));
    // The killed publisher's lock file stays, but the system released its lock.
    let lock = std::fs::File::open(site.join(".lock")).expect("the killed publisher's lock file");
    lock.try_lock().expect("a killed publisher holds no lock");
    drop(lock);

    let out = vitrine(&["publish", "--bundle", path(&b), "--to", path(&site)]);
    assert!(out.status.success(), "{}", text(&out));
    let after = published.current().unwrap().unwrap();
    assert_eq!(after.version, 2);
    assert!(published.read_version(&after.manifest).unwrap().contents.products.iter().all(|p| p.id.starts_with("2-")));
    assert!(std::fs::File::open(site.join(".lock")).unwrap().try_lock().is_ok(), "the lock is released after the publish");
}

#[test]
fn kill_9_at_any_moment_leaves_a_complete_current_version() {
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site");
    let bundles: Vec<_> = (1..=3)
        .map(|seed| {
            let folder = dir.path().join(format!("b{seed}"));
            write_bundle(&folder, 20, seed);
            folder
        })
        .collect();
    let published = PublishDir::open(&site).unwrap();
    // Kills after 0, 1, 2, … ms: at whatever step the publisher has reached, with keep=1 deleting as it goes.
    for round in 0..24u64 {
        let bundle = &bundles[round as usize % bundles.len()];
        let before = published.current().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_vitrine"))
            .args(["publish", "--bundle", path(bundle), "--to", path(&site), "--keep", "1"])
            .env_remove(PAUSE_ENV)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(round));
        child.kill().ok();
        child.wait().unwrap();
        match published.current().unwrap() {
            Some(now) => {
                assert!(before.as_ref().is_none_or(|b| now.version >= b.version), "round {round}: went back from {before:?} to {now:?}");
                published.read_version(&now.manifest).unwrap_or_else(|e| panic!("round {round}: version {} is broken: {e}", now.version));
            }
            None => assert!(before.is_none(), "round {round}: current.json disappeared"),
        }
    }
    let out = vitrine(&["publish", "--bundle", path(&bundles[0]), "--to", path(&site), "--keep", "1"]);
    assert!(out.status.success(), "{}", text(&out));
    let now = published.current().unwrap().unwrap();
    published.read_version(&now.manifest).unwrap();
    assert_eq!(published.history().unwrap().version_numbers(), [now.version]);
}
