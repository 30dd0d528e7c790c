//! Crash-safe file writes: every file goes to a temporary name in its own
//! folder, is fsynced, then renamed over its final name, and the folder is
//! fsynced; a `kill -9` leaves the old file or the new one, plus at most a
//! temporary file that the next run removes.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::PublishError;

/// Temporary files start with this; nothing else in a publish folder does.
const TEMP_PREFIX: &str = ".tmp-";

pub(crate) fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> PublishError + '_ {
    move |source| PublishError::Io { path: path.to_path_buf(), source }
}

fn temp_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{TEMP_PREFIX}{}-{name}", std::process::id()))
}

/// Writes `dir/name` through a fsynced temporary file and a rename; the
/// caller fsyncs `dir` (once for many files).
pub(crate) fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), PublishError> {
    let temp = temp_path(dir, name);
    let mut file = File::create(&temp).map_err(io_error(&temp))?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(io_error(&temp))?;
    let path = dir.join(name);
    std::fs::rename(&temp, &path).map_err(io_error(&path))
}

/// Writes `path` crash-safely on its own (temporary file, rename, folder
/// fsync): for callers outside a publish, e.g. the nightly audit records.
pub fn write_file_atomically(path: &Path, bytes: &[u8]) -> Result<(), PublishError> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| PublishError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file name"),
    })?;
    write_atomic(dir, name, bytes)?;
    sync_dir(dir)
}

/// Makes the renames in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), PublishError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_error(dir))
}

/// Removes what killed runs left: every temporary file in `dir`. Returns how many.
pub(crate) fn remove_temp_files(dir: &Path) -> Result<usize, PublishError> {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let path = entry.map_err(io_error(dir))?.path();
        if path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(TEMP_PREFIX)) {
            std::fs::remove_file(&path).map_err(io_error(&path))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// A file's length and lowercase hex sha256, read in chunks.
pub(crate) fn file_sha256(path: &Path) -> Result<(u64, String), PublishError> {
    let mut file = File::open(path).map_err(io_error(path))?;
    hash_stream(&mut file, path, |_| Ok(()))
}

/// Copies `source` to `dir/name` through a temporary file, checking on the
/// way that it has `bytes` bytes and the sha256 `sha256`; a mismatch leaves
/// `dir/name` untouched and names `source`. The caller fsyncs `dir`.
pub(crate) fn copy_checked(source: &Path, dir: &Path, name: &str, bytes: u64, sha256: &str) -> Result<(), PublishError> {
    check_size(source, bytes)?;
    let temp = temp_path(dir, name);
    let mut out = File::create(&temp).map_err(io_error(&temp))?;
    let mut input = File::open(source).map_err(io_error(source))?;
    let copied = hash_stream(&mut input, source, |chunk| out.write_all(chunk).map_err(io_error(&temp)))
        .and_then(|found| check_hash(source, bytes, sha256, found))
        .and_then(|()| out.sync_all().map_err(io_error(&temp)));
    if let Err(e) = copied {
        drop(out);
        std::fs::remove_file(&temp).ok();
        return Err(e);
    }
    let path = dir.join(name);
    std::fs::rename(&temp, &path).map_err(io_error(&path))
}

/// Checks `source` against its manifest entry without copying it.
pub(crate) fn check_file(source: &Path, bytes: u64, sha256: &str) -> Result<(), PublishError> {
    check_size(source, bytes)?;
    check_hash(source, bytes, sha256, file_sha256(source)?)
}

fn check_size(path: &Path, expected: u64) -> Result<(), PublishError> {
    let found = std::fs::metadata(path).map_err(io_error(path))?.len();
    if found != expected {
        return Err(PublishError::PartSize { path: path.to_path_buf(), expected, found });
    }
    Ok(())
}

fn check_hash(path: &Path, bytes: u64, sha256: &str, (found_bytes, found): (u64, String)) -> Result<(), PublishError> {
    // The file may change between the size check and the read.
    if found_bytes != bytes {
        return Err(PublishError::PartSize { path: path.to_path_buf(), expected: bytes, found: found_bytes });
    }
    if found != sha256 {
        return Err(PublishError::PartHash { path: path.to_path_buf(), expected: sha256.to_string(), actual: found });
    }
    Ok(())
}

fn hash_stream(
    input: &mut File,
    path: &Path,
    mut sink: impl FnMut(&[u8]) -> Result<(), PublishError>,
) -> Result<(u64, String), PublishError> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = input.read(&mut buffer).map_err(io_error(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        sink(&buffer[..n])?;
        total += n as u64;
    }
    Ok((total, hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()))
}
