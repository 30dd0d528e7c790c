//! `vitrine-publish`: puts built bundles where storefronts load them, one
//! version after another, so that a nightly retrain can replace the live
//! catalog without a reader ever seeing half of it, and a bad version can be
//! rolled back.
//!
//! A publish folder (what a CDN or static server serves):
//!
//! ```text
//! <root>/current.json     the pointer the widget reads: version and manifest (format.rs); switched last
//! <root>/history.json     the kept versions, oldest first, with what the publisher said about each
//! <root>/bundle/          every kept version's parts, `<part>.<sha256 prefix>.<ext>`, shared between
//!                         versions, and each version's manifest as `manifest.<sha256 prefix>.json`
//! <root>/.lock            the publishers' OS file lock (one at a time), with the last holder's pid
//! ```
//!
//! Everything in `bundle/` is named by its content, so it never changes under
//! its name and may be cached forever; only `current.json` changes in place.
//! [`PublishDir::publish`] copies a bundle folder in (checking every part's
//! length and sha256 on the way), reads the copy back with vitrine-core's
//! bundle reader, records it in the history, then switches `current.json` to
//! it, and last deletes the versions past `keep` and the files no kept version
//! uses. Every file is written to a temporary name, fsynced and renamed, and
//! the folder fsynced, so a `kill -9` at any moment leaves `current.json`
//! naming a complete version (or absent before the first publish). A publish
//! killed after the history write but before the switch leaves its version in
//! the history, complete and checked, without ever having been current.
//!
//! `VITRINE_PUBLISH_PAUSE_MS` exists for crash tests: a publish sleeps that
//! long between having copied and checked everything and writing the history
//! and the pointer.

mod format;
mod fsio;
mod lock;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use vitrine_core::bundle::folder::MANIFEST_FILE;
use vitrine_core::bundle::{sha256_hex, Bundle, BundleError, Limits, Manifest};

pub use format::{now_rfc3339, FormatError, History, Pointer, VersionRecord, FORMAT_VERSION, HISTORY_FORMAT, POINTER_FORMAT};
pub use fsio::write_file_atomically;
use fsio::{check_file, copy_checked, file_sha256, io_error, remove_temp_files, sync_dir, write_atomic};
use lock::Lock;

/// The pointer's file name in a publish folder.
pub const POINTER_FILE: &str = "current.json";
/// The history's file name in a publish folder.
pub const HISTORY_FILE: &str = "history.json";
/// The folder of parts and manifests in a publish folder.
pub const BUNDLE_DIR: &str = "bundle";
/// Milliseconds a publish sleeps before it switches the pointer (crash tests only).
pub const PAUSE_ENV: &str = "VITRINE_PUBLISH_PAUSE_MS";

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: {source}", path.display())]
    Format { path: PathBuf, source: FormatError },
    #[error("{} has no {MANIFEST_FILE}: --bundle takes a bundle folder (an index builder's <out>/bundle/)", folder.display())]
    NoManifest { folder: PathBuf },
    #[error("{}: {source}", path.display())]
    Bundle { path: PathBuf, source: BundleError },
    #[error("{} is {found} bytes, but its manifest lists {expected}: the bundle folder is incomplete or damaged; rebuild it", path.display())]
    PartSize { path: PathBuf, expected: u64, found: u64 },
    #[error("{} is damaged: its sha256 is {actual}, its manifest says {expected}; rebuild the bundle folder", path.display())]
    PartHash { path: PathBuf, expected: String, actual: String },
    #[error("the published copy {} does not read back: {source}; current.json was left as it was", path.display())]
    Verify { path: PathBuf, source: BundleError },
    #[error("keep must be at least 1: the version being published is always kept")]
    KeepZero,
    #[error("{} is held by {holder}: wait for it to finish, or delete the file if no publisher is running", path.display())]
    Locked { path: PathBuf, holder: String },
    #[error("nothing is published in {} yet: publish a bundle first", root.display())]
    NothingPublished { root: PathBuf },
    #[error("version {version} is not kept in {}; the kept versions are {kept:?}", history.display())]
    NotKept { version: u64, kept: Vec<u64>, history: PathBuf },
    #[error("version {current} is the oldest kept version ({kept:?}): there is none before it to roll back to")]
    NoEarlier { current: u64, kept: Vec<u64> },
}

/// What a publish did, for the command line to print.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishReport {
    /// The new `current.json`.
    pub pointer: Pointer,
    /// The version that was current before, if any.
    pub previous: Option<u64>,
    /// Parts and the manifest copied in.
    pub files_copied: usize,
    pub bytes_copied: u64,
    /// Parts already in the folder under the same name (checked, not copied).
    pub files_shared: usize,
    pub bytes_shared: u64,
    /// The versions in the history now, oldest first.
    pub kept: Vec<u64>,
    /// The versions dropped from the history.
    pub deleted: Vec<u64>,
    /// Files in `bundle/` that no kept version uses, deleted.
    pub files_deleted: usize,
    pub bytes_deleted: u64,
    /// Temporary files of killed runs, removed.
    pub leftovers_removed: usize,
}

/// What a publish copied in, and what it found already there.
#[derive(Default)]
struct Copied {
    files_copied: usize,
    bytes_copied: u64,
    files_shared: usize,
    bytes_shared: u64,
}

/// A publish folder.
#[derive(Debug, Clone)]
pub struct PublishDir {
    root: PathBuf,
}

impl PublishDir {
    /// Opens a publish folder, creating it if missing.
    pub fn open(root: &Path) -> Result<PublishDir, PublishError> {
        std::fs::create_dir_all(root).map_err(io_error(root))?;
        Ok(PublishDir { root: root.to_path_buf() })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn bundle_dir(&self) -> PathBuf {
        self.root.join(BUNDLE_DIR)
    }

    /// The version `current.json` points at; `None` before the first publish.
    pub fn current(&self) -> Result<Option<Pointer>, PublishError> {
        let path = self.root.join(POINTER_FILE);
        match read_optional(&path)? {
            None => Ok(None),
            Some(bytes) => Pointer::parse(&bytes).map(Some).map_err(|source| PublishError::Format { path, source }),
        }
    }

    /// The kept versions, oldest first; empty before the first publish.
    pub fn history(&self) -> Result<History, PublishError> {
        let path = self.root.join(HISTORY_FILE);
        match read_optional(&path)? {
            None => Ok(History::default()),
            Some(bytes) => History::parse(&bytes).map_err(|source| PublishError::Format { path, source }),
        }
    }

    /// Reads a published version (a pointer's or history record's `manifest`)
    /// with vitrine-core's bundle reader: every part present, with its length
    /// and hash, decoded and consistent.
    pub fn read_version(&self, manifest: &str) -> Result<Bundle, PublishError> {
        let path = self.root.join(manifest);
        Bundle::read_manifest_file(&path, &Limits::default()).map_err(|source| PublishError::Verify { path, source })
    }

    /// Copies a bundle folder (an index builder's `<out>/bundle/`: manifest.json + parts) in,
    /// then switches current.json to it, last; keeps the newest `keep` versions (>= 1) and
    /// deletes older versions' manifests and parts no kept version uses.
    pub fn publish(&self, bundle_folder: &Path, details: serde_json::Value, keep: usize) -> Result<Pointer, PublishError> {
        self.publish_report(bundle_folder, details, keep).map(|report| report.pointer)
    }

    /// [`PublishDir::publish`], telling what it copied, kept and deleted.
    pub fn publish_report(&self, bundle_folder: &Path, details: serde_json::Value, keep: usize) -> Result<PublishReport, PublishError> {
        if keep == 0 {
            return Err(PublishError::KeepZero);
        }
        let _lock = Lock::acquire(&self.root)?;
        let bundle_dir = self.bundle_dir();
        std::fs::create_dir_all(&bundle_dir).map_err(io_error(&bundle_dir))?;
        let leftovers_removed = remove_temp_files(&self.root)? + remove_temp_files(&bundle_dir)?;
        let mut history = self.history()?;
        let previous = self.current()?;

        let source_manifest = bundle_folder.join(MANIFEST_FILE);
        let manifest_bytes = match read_optional(&source_manifest)? {
            Some(bytes) => bytes,
            None => return Err(PublishError::NoManifest { folder: bundle_folder.to_path_buf() }),
        };
        let manifest = Manifest::parse(&manifest_bytes, &Limits::default())
            .map_err(|source| PublishError::Bundle { path: source_manifest.clone(), source })?;
        let mut copied = Copied::default();
        for entry in &manifest.parts {
            let source = bundle_folder.join(&entry.file);
            if self.holds(&entry.file, entry.bytes, &entry.sha256)? {
                // Already here (an earlier version's): the source must still be sound.
                check_file(&source, entry.bytes, &entry.sha256)?;
                copied.files_shared += 1;
                copied.bytes_shared += entry.bytes;
            } else {
                copy_checked(&source, &bundle_dir, &entry.file, entry.bytes, &entry.sha256)?;
                copied.files_copied += 1;
                copied.bytes_copied += entry.bytes;
            }
        }
        let manifest_sha256 = sha256_hex(&manifest_bytes);
        let manifest_name = format!("manifest.{}.json", &manifest_sha256[..16]);
        if !self.holds(&manifest_name, manifest_bytes.len() as u64, &manifest_sha256)? {
            write_atomic(&bundle_dir, &manifest_name, &manifest_bytes)?;
            copied.files_copied += 1;
            copied.bytes_copied += manifest_bytes.len() as u64;
        }
        sync_dir(&bundle_dir)?;
        let manifest_field = format!("{BUNDLE_DIR}/{manifest_name}");
        self.read_version(&manifest_field)?;

        if let Some(ms) = std::env::var(PAUSE_ENV).ok().and_then(|v| v.parse::<u64>().ok()) {
            // The crash tests wait for this line, then kill the publisher.
            eprintln!("{PAUSE_ENV}: the new version's files are copied and checked; pausing {ms} ms before switching {POINTER_FILE}");
            std::thread::sleep(Duration::from_millis(ms));
        }
        // The history first: current.json must never name a version the history lacks,
        // or a later publish would number a version twice and delete its files.
        let newest = history.versions.last().map_or(0, |r| r.version);
        let version = newest.max(previous.as_ref().map_or(0, |p| p.version)) + 1;
        let published_at = now_rfc3339();
        history.versions.push(VersionRecord { version, manifest: manifest_field.clone(), published_at: published_at.clone(), details });
        self.write_root_file(HISTORY_FILE, &history.to_json())?;
        let pointer = Pointer::new(version, manifest_field, published_at);
        self.write_root_file(POINTER_FILE, &pointer.to_json())?;

        // Then what is past `keep` goes: first from the history, then its files.
        let dropped = history.versions.len().saturating_sub(keep);
        let deleted: Vec<u64> = history.versions.drain(..dropped).map(|r| r.version).collect();
        if !deleted.is_empty() {
            self.write_root_file(HISTORY_FILE, &history.to_json())?;
        }
        let (files_deleted, bytes_deleted) = self.sweep(&history)?;
        Ok(PublishReport {
            pointer,
            previous: previous.map(|p| p.version),
            files_copied: copied.files_copied,
            bytes_copied: copied.bytes_copied,
            files_shared: copied.files_shared,
            bytes_shared: copied.bytes_shared,
            kept: history.version_numbers(),
            deleted,
            files_deleted,
            bytes_deleted,
            leftovers_removed,
        })
    }

    /// Points current.json at an earlier kept version (`to`, or the one before the current one).
    pub fn rollback(&self, to: Option<u64>) -> Result<Pointer, PublishError> {
        let _lock = Lock::acquire(&self.root)?;
        remove_temp_files(&self.root)?;
        let current = self.current()?.ok_or_else(|| PublishError::NothingPublished { root: self.root.clone() })?;
        let history = self.history()?;
        let kept = history.version_numbers();
        let target = match to {
            Some(version) => {
                history.get(version).ok_or(PublishError::NotKept { version, kept: kept.clone(), history: self.root.join(HISTORY_FILE) })?
            }
            None => history
                .versions
                .iter()
                .rev()
                .find(|r| r.version < current.version)
                .ok_or(PublishError::NoEarlier { current: current.version, kept: kept.clone() })?,
        };
        self.read_version(&target.manifest)?;
        let pointer = Pointer::new(target.version, target.manifest.clone(), target.published_at.clone());
        if pointer != current {
            self.write_root_file(POINTER_FILE, &pointer.to_json())?;
        }
        Ok(pointer)
    }

    /// Whether `bundle/<name>` exists with this length and hash. A damaged
    /// copy is reported and will be replaced.
    fn holds(&self, name: &str, bytes: u64, sha256: &str) -> Result<bool, PublishError> {
        let path = self.bundle_dir().join(name);
        if !path.exists() {
            return Ok(false);
        }
        let (found_bytes, found) = file_sha256(&path)?;
        if found_bytes == bytes && found == sha256 {
            return Ok(true);
        }
        eprintln!("warning: {} is damaged (sha256 {found}, {found_bytes} bytes); copying it again", path.display());
        Ok(false)
    }

    fn write_root_file(&self, name: &str, bytes: &[u8]) -> Result<(), PublishError> {
        write_atomic(&self.root, name, bytes)?;
        sync_dir(&self.root)
    }

    /// Deletes the files in `bundle/` that no kept version uses: dropped
    /// versions' manifests and parts, and what killed publishes copied.
    /// Returns the files and bytes deleted.
    fn sweep(&self, history: &History) -> Result<(usize, u64), PublishError> {
        let bundle_dir = self.bundle_dir();
        let mut used = HashSet::new();
        for record in &history.versions {
            let path = self.root.join(&record.manifest);
            let parsed = std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|bytes| Manifest::parse(&bytes, &Limits::default()).map_err(|e| e.to_string()));
            match parsed {
                Ok(manifest) => used.extend(manifest.parts.into_iter().map(|p| p.file)),
                Err(e) => {
                    // Deleting by a manifest that cannot be read could delete a kept version's parts.
                    eprintln!(
                        "warning: nothing deleted from {}: kept version {}'s {}: {e}",
                        bundle_dir.display(),
                        record.version,
                        path.display()
                    );
                    return Ok((0, 0));
                }
            }
            used.insert(record.manifest.trim_start_matches("bundle/").to_string());
        }
        let (mut files, mut bytes) = (0, 0);
        for entry in std::fs::read_dir(&bundle_dir).map_err(io_error(&bundle_dir))? {
            let entry = entry.map_err(io_error(&bundle_dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if used.contains(&name) || !is_content_named(&name) {
                continue;
            }
            let path = entry.path();
            bytes += entry.metadata().map_err(io_error(&path))?.len();
            std::fs::remove_file(&path).map_err(io_error(&path))?;
            files += 1;
        }
        sync_dir(&bundle_dir)?;
        Ok((files, bytes))
    }
}

/// `<name>.<16 lowercase hex>.<ext>`: the files a publish writes into `bundle/`
/// (anything else there is not ours to delete).
fn is_content_named(name: &str) -> bool {
    let mut pieces = name.rsplitn(3, '.');
    let (_ext, hash, stem) = (pieces.next(), pieces.next(), pieces.next());
    matches!((hash, stem), (Some(hash), Some(stem)) if !stem.is_empty()
        && hash.len() == 16 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

/// A file's bytes, or `None` when it does not exist.
fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, PublishError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(PublishError::Io { path: path.to_path_buf(), source }),
    }
}
