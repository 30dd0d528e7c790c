//! Publishing bundle folders, as a nightly job would: versions, the kept
//! history and its files, rollback, damaged sources, leftovers of killed runs,
//! and the pointer and history formats (writer against reader).

mod common;

use std::path::Path;

use common::write_bundle;
use serde_json::json;
use vitrine_core::bundle::{Manifest, PartName};
use vitrine_publish::{
    FormatError, History, Pointer, PublishDir, PublishError, VersionRecord, FORMAT_VERSION, HISTORY_FILE, POINTER_FILE, POINTER_FORMAT,
};

/// A temporary folder with bundle folders `a/`, `b/`, `c/` (same model parts,
/// different products) and an empty publish folder `site/`.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        for (name, seed) in [("a", 1), ("b", 2), ("c", 3)] {
            write_bundle(&dir.path().join(name), 30, seed);
        }
        Setup { dir }
    }

    fn bundle(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    fn site(&self) -> PublishDir {
        PublishDir::open(&self.dir.path().join("site")).unwrap()
    }
}

fn product_ids(site: &PublishDir, manifest: &str) -> Vec<String> {
    site.read_version(manifest).unwrap().contents.products.iter().map(|p| p.id.clone()).collect()
}

fn bundle_files(site: &PublishDir) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(site.root().join("bundle")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// The file a bundle folder's manifest gives `part`.
fn part_file(manifest: &Manifest, part: PartName) -> String {
    manifest.part(part).unwrap().file.clone()
}

fn source_manifest(folder: &Path) -> Manifest {
    serde_json::from_slice(&std::fs::read(folder.join("manifest.json")).unwrap()).unwrap()
}

#[test]
fn two_versions_are_published_kept_and_read_back() {
    let setup = Setup::new();
    let site = setup.site();
    assert_eq!(site.current().unwrap(), None);
    assert_eq!(site.history().unwrap(), History::default());

    let first = site.publish_report(&setup.bundle("a"), json!({"run": "night 1"}), 5).unwrap();
    assert_eq!(first.pointer.version, 1);
    assert_eq!(first.previous, None);
    assert_eq!((first.files_copied, first.files_shared), (6, 0), "five parts and the manifest");
    let second = site.publish_report(&setup.bundle("b"), json!({"run": "night 2"}), 5).unwrap();
    assert_eq!(second.pointer.version, 2);
    assert_eq!(second.previous, Some(1));
    // The model's parts are the same in both bundles: only the index, the products and the manifest are new.
    assert_eq!((second.files_copied, second.files_shared), (3, 3));
    assert_eq!((second.kept.as_slice(), second.deleted.as_slice()), (&[1, 2][..], &[][..]));

    let current = site.current().unwrap().unwrap();
    assert_eq!(current, second.pointer);
    assert_eq!(current.format, POINTER_FORMAT);
    assert_eq!(current.format_version, FORMAT_VERSION);
    assert!(current.manifest.starts_with("bundle/manifest.") && current.manifest.ends_with(".json"), "{}", current.manifest);
    assert!(current.published_at.ends_with('Z') && current.published_at.len() == 20, "{}", current.published_at);
    let history = site.history().unwrap();
    assert_eq!(history.version_numbers(), [1, 2]);
    assert_eq!(history.versions[0].details, json!({"run": "night 1"}));
    assert_eq!(history.versions[1].manifest, current.manifest);

    // Both versions read back whole, each with its own products.
    let ids_a = product_ids(&site, &history.versions[0].manifest);
    let ids_b = product_ids(&site, &history.versions[1].manifest);
    assert!(ids_a.iter().all(|id| id.starts_with("1-")) && ids_b.iter().all(|id| id.starts_with("2-")));
    // The manifest is named by its bytes' hash, and is the source's manifest byte for byte.
    let bytes = std::fs::read(site.root().join(&current.manifest)).unwrap();
    assert_eq!(bytes, std::fs::read(setup.bundle("b").join("manifest.json")).unwrap());
    assert_eq!(current.manifest, format!("bundle/manifest.{}.json", &vitrine_core::bundle::sha256_hex(&bytes)[..16]));
    // 5 + 2 parts (three shared) and two manifests; no temporary file, and the lock released.
    assert_eq!(bundle_files(&site).len(), 9, "{:?}", bundle_files(&site));
    assert!(lock_is_free(&site));
}

#[test]
fn keep_one_deletes_the_older_version_but_not_its_shared_parts() {
    let setup = Setup::new();
    let site = setup.site();
    let first = site.publish(&setup.bundle("a"), json!(null), 1).unwrap();
    let report = site.publish_report(&setup.bundle("b"), json!(null), 1).unwrap();
    assert_eq!(report.kept, [2]);
    assert_eq!(report.deleted, [1]);
    assert_eq!(report.files_deleted, 3, "a's index, products and manifest");
    assert_eq!(site.history().unwrap().version_numbers(), [2]);

    let files = bundle_files(&site);
    let (a, b) = (source_manifest(&setup.bundle("a")), source_manifest(&setup.bundle("b")));
    assert!(!site.root().join(&first.manifest).exists(), "version 1's manifest is still there");
    for part in [PartName::Index, PartName::Products] {
        assert!(!files.contains(&part_file(&a, part)), "version 1's {part} is still there");
        assert!(files.contains(&part_file(&b, part)));
    }
    for part in [PartName::TextEncoder, PartName::Heads, PartName::Tokenizer] {
        assert_eq!(part_file(&a, part), part_file(&b, part));
        assert!(files.contains(&part_file(&b, part)), "shared {part} was deleted");
    }
    assert_eq!(files.len(), 6);
    product_ids(&site, &report.pointer.manifest);
}

#[test]
fn rollback_moves_the_pointer_back_and_forward() {
    let setup = Setup::new();
    let site = setup.site();
    assert!(matches!(site.rollback(None), Err(PublishError::NothingPublished { .. })));
    for name in ["a", "b", "c"] {
        site.publish(&setup.bundle(name), json!(null), 5).unwrap();
    }
    let history = site.history().unwrap();
    assert_eq!(site.rollback(None).unwrap().version, 2);
    let current = site.current().unwrap().unwrap();
    assert_eq!((current.version, current.manifest.as_str()), (2, history.versions[1].manifest.as_str()));
    assert_eq!(current.published_at, history.versions[1].published_at);
    assert_eq!(site.rollback(None).unwrap().version, 1);
    let error = site.rollback(None).unwrap_err();
    assert!(matches!(error, PublishError::NoEarlier { current: 1, .. }), "{error}");
    assert!(error.to_string().contains("oldest kept version"), "{error}");
    assert_eq!(site.rollback(Some(3)).unwrap().version, 3);
    assert_eq!(site.current().unwrap().unwrap().version, 3);
    let error = site.rollback(Some(9)).unwrap_err();
    assert!(error.to_string().contains("version 9 is not kept") && error.to_string().contains("[1, 2, 3]"), "{error}");
    // Rolling back leaves the history alone; the next publish numbers on from its newest.
    site.rollback(Some(1)).unwrap();
    assert_eq!(site.history().unwrap(), history);
    assert_eq!(site.publish(&setup.bundle("b"), json!(null), 5).unwrap().version, 4);
}

#[test]
fn a_damaged_source_is_refused_by_file_name_and_the_current_version_stays() {
    let setup = Setup::new();
    let site = setup.site();
    let first = site.publish(&setup.bundle("a"), json!(null), 5).unwrap();
    let b = source_manifest(&setup.bundle("b"));
    let products = setup.bundle("b").join(part_file(&b, PartName::Products));
    let index = setup.bundle("b").join(part_file(&b, PartName::Index));
    let original = std::fs::read(&products).unwrap();

    std::fs::write(&products, &original[..original.len() / 2]).unwrap();
    let error = site.publish(&setup.bundle("b"), json!(null), 5).unwrap_err();
    assert!(matches!(error, PublishError::PartSize { .. }), "{error}");
    let message = error.to_string();
    assert!(message.contains(&products.display().to_string()) && message.contains("rebuild"), "{message}");

    let mut flipped = original.clone();
    flipped[10] ^= 0x20;
    std::fs::write(&products, &flipped).unwrap();
    let error = site.publish(&setup.bundle("b"), json!(null), 5).unwrap_err();
    assert!(matches!(error, PublishError::PartHash { .. }), "{error}");
    assert!(error.to_string().contains(&products.display().to_string()), "{error}");

    std::fs::write(&products, &original).unwrap();
    std::fs::remove_file(&index).unwrap();
    let error = site.publish(&setup.bundle("b"), json!(null), 5).unwrap_err();
    assert!(error.to_string().contains(&index.display().to_string()), "{error}");

    let error = site.publish(setup.dir.path(), json!(null), 5).unwrap_err();
    assert!(matches!(error, PublishError::NoManifest { .. }), "{error}");

    assert_eq!(site.current().unwrap().unwrap(), first);
    assert_eq!(site.history().unwrap().version_numbers(), [1]);
    product_ids(&site, &first.manifest);
    assert!(bundle_files(&site).iter().all(|f| !f.starts_with(".tmp-")), "{:?}", bundle_files(&site));
    assert!(lock_is_free(&site));
}

#[test]
fn a_damaged_part_already_in_the_folder_is_copied_again() {
    let setup = Setup::new();
    let site = setup.site();
    site.publish(&setup.bundle("a"), json!(null), 5).unwrap();
    let shared = site.root().join("bundle").join(part_file(&source_manifest(&setup.bundle("a")), PartName::Heads));
    std::fs::write(&shared, b"bit rot").unwrap();
    let report = site.publish_report(&setup.bundle("b"), json!(null), 5).unwrap();
    assert_eq!((report.files_copied, report.files_shared), (4, 2));
    product_ids(&site, &report.pointer.manifest);
}

#[test]
fn leftovers_of_a_killed_run_and_a_stale_lock_do_not_stop_the_next_publish() {
    let setup = Setup::new();
    let site = setup.site();
    site.publish(&setup.bundle("a"), json!(null), 5).unwrap();
    // A killed run: temporary files, an orphan part, and its lock naming a process that is gone.
    std::fs::write(site.root().join(".tmp-99999-current.json"), b"{\"format\": ").unwrap();
    std::fs::write(site.root().join("bundle/.tmp-99999-index.0123456789abcdef.bin"), b"half a part").unwrap();
    std::fs::write(site.root().join("bundle/index.0123456789abcdef.bin"), b"a part no version lists").unwrap();
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = gone.id();
    gone.wait().unwrap();
    std::fs::write(site.root().join(".lock"), dead_pid.to_string()).unwrap();

    let report = site.publish_report(&setup.bundle("b"), json!(null), 5).unwrap();
    assert_eq!(report.pointer.version, 2);
    assert_eq!(report.leftovers_removed, 2);
    assert_eq!(report.files_deleted, 1, "the orphan part");
    let files = bundle_files(&site);
    assert!(!files.iter().any(|f| f.starts_with(".tmp-") || f == "index.0123456789abcdef.bin"), "{files:?}");
    assert!(!site.root().join(".tmp-99999-current.json").exists());
    assert!(lock_is_free(&site));
}

#[test]
fn a_running_publisher_holds_the_lock() {
    let setup = Setup::new();
    let site = setup.site();
    // Another publisher at work: it holds the OS lock and has written its pid.
    let held = std::fs::File::create(site.root().join(".lock")).unwrap();
    held.lock().unwrap();
    std::fs::write(site.root().join(".lock"), std::process::id().to_string()).unwrap();
    let error = site.publish(&setup.bundle("a"), json!(null), 5).unwrap_err();
    assert!(matches!(error, PublishError::Locked { .. }), "{error}");
    assert!(error.to_string().contains(".lock") && error.to_string().contains(&format!("pid {}", std::process::id())), "{error}");
    assert!(matches!(site.rollback(None), Err(PublishError::Locked { .. })));
    assert_eq!(site.current().unwrap(), None);
    // Released (its process ended): the next publisher goes ahead.
    drop(held);
    site.publish(&setup.bundle("a"), json!(null), 5).unwrap();
}

/// Whether no publisher holds the publish folder's lock.
fn lock_is_free(site: &PublishDir) -> bool {
    std::fs::File::open(site.root().join(".lock")).is_ok_and(|f| f.try_lock().is_ok())
}

#[test]
fn keep_must_keep_the_new_version() {
    let setup = Setup::new();
    let error = setup.site().publish(&setup.bundle("a"), json!(null), 0).unwrap_err();
    assert!(matches!(error, PublishError::KeepZero), "{error}");
}

#[test]
fn republishing_the_same_bundle_copies_nothing_and_makes_a_new_version() {
    let setup = Setup::new();
    let site = setup.site();
    let first = site.publish(&setup.bundle("a"), json!(null), 5).unwrap();
    let again = site.publish_report(&setup.bundle("a"), json!(null), 5).unwrap();
    assert_eq!((again.pointer.version, again.files_copied, again.files_shared), (2, 0, 5));
    assert_eq!(again.pointer.manifest, first.manifest);
    // keep=1 drops version 1, whose files version 2 still uses.
    let report = site.publish_report(&setup.bundle("a"), json!(null), 1).unwrap();
    assert_eq!((report.deleted.as_slice(), report.files_deleted), (&[1, 2][..], 0));
    product_ids(&site, &report.pointer.manifest);
}

// The formats: what the writer writes, the reader reads; what it cannot read, it refuses by name.

fn record(version: u64) -> VersionRecord {
    VersionRecord {
        version,
        manifest: format!("bundle/manifest.{version:016x}.json"),
        published_at: "2025-11-27T03:12:09Z".into(),
        details: json!({"val": {"xmr_r1": 0.41}}),
    }
}

#[test]
fn pointer_and_history_round_trip() {
    let pointer = Pointer::new(7, "bundle/manifest.0123456789abcdef.json".into(), "2025-11-27T03:12:09Z".into());
    assert_eq!(Pointer::parse(&pointer.to_json()).unwrap(), pointer);
    let written: serde_json::Value = serde_json::from_slice(&pointer.to_json()).unwrap();
    assert_eq!(written["format"], "vitrine-published");
    assert_eq!(written["format_version"], 1);
    let history = History { versions: vec![record(3), record(4)] };
    assert_eq!(History::parse(&history.to_json()).unwrap(), history);
    let written: serde_json::Value = serde_json::from_slice(&history.to_json()).unwrap();
    assert_eq!(written["format"], "vitrine-publish-history");
    assert_eq!(written["format_version"], 1);
    // Fields this reader does not know (a later version's additions) are ignored.
    let mut extended = written.clone();
    extended["mirror"] = json!("https://cdn.example/");
    assert_eq!(History::parse(&serde_json::to_vec(&extended).unwrap()).unwrap(), history);
}

#[test]
fn another_format_or_a_newer_version_is_refused_by_name() {
    let pointer = serde_json::to_value(Pointer::new(1, "bundle/manifest.0123456789abcdef.json".into(), "t".into())).unwrap();
    let with = |key: &str, value: serde_json::Value| {
        let mut v = pointer.clone();
        v[key] = value;
        serde_json::to_vec(&v).unwrap()
    };
    let error = Pointer::parse(&with("format", json!("vitrine-bundle"))).unwrap_err();
    assert!(matches!(error, FormatError::WrongFormat { .. }) && error.to_string().contains("\"vitrine-bundle\""), "{error}");
    let error = Pointer::parse(&with("format_version", json!(2))).unwrap_err();
    assert!(error.to_string().contains("version 2") && error.to_string().contains("update vitrine"), "{error}");
    assert!(matches!(Pointer::parse(&with("format_version", json!(0))), Err(FormatError::UnknownVersion)));
    let error = Pointer::parse(&with("manifest", json!("../../etc/passwd"))).unwrap_err();
    assert!(error.to_string().contains("field `manifest`"), "{error}");
    assert!(matches!(Pointer::parse(&with("version", json!(0))), Err(FormatError::BadField { .. })));
    // A history is not a pointer, nor the other way round.
    let history = History { versions: vec![record(1)] }.to_json();
    assert!(matches!(Pointer::parse(&history), Err(FormatError::WrongFormat { .. })));
    assert!(matches!(History::parse(&with("format_version", json!(1))), Err(FormatError::WrongFormat { .. })));
    let error = History::parse(&History { versions: vec![record(2), record(2)] }.to_json()).unwrap_err();
    assert!(error.to_string().contains("versions[1].version"), "{error}");

    // Through the folder: the error names the file.
    let dir = tempfile::tempdir().unwrap();
    let site = PublishDir::open(&dir.path().join("site")).unwrap();
    std::fs::write(site.root().join(POINTER_FILE), with("format_version", json!(2))).unwrap();
    let error = site.current().unwrap_err();
    assert!(error.to_string().contains("current.json") && error.to_string().contains("update vitrine"), "{error}");
    std::fs::write(site.root().join(HISTORY_FILE), b"{\"format\": \"something-else\", \"format_version\": 1}").unwrap();
    let error = site.history().unwrap_err();
    assert!(error.to_string().contains("history.json") && error.to_string().contains("something-else"), "{error}");
}
