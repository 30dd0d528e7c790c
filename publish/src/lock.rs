//! One publisher at a time: `<root>/.lock`, created with `create_new` and
//! holding the publisher's pid, removed when it is done. A lock whose
//! process is gone (a killed publisher) is taken over with a warning.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::fsio::io_error;
use crate::PublishError;

pub(crate) const LOCK_FILE: &str = ".lock";

/// A lock file without a pid younger than this may be a publisher between
/// creating it and writing its pid; an older one was left by a killed run.
const EMPTY_LOCK_GRACE: Duration = Duration::from_secs(10);

/// Held while it lives; dropping it removes the lock file.
pub(crate) struct Lock {
    path: PathBuf,
}

impl Lock {
    pub(crate) fn acquire(root: &Path) -> Result<Lock, PublishError> {
        let path = root.join(LOCK_FILE);
        // Two tries: the second after taking over a stale lock.
        for _ in 0..2 {
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut file) => {
                    let lock = Lock { path };
                    file.write_all(std::process::id().to_string().as_bytes())
                        .and_then(|()| file.sync_all())
                        .map_err(io_error(&lock.path))?;
                    return Ok(lock);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(source) => return Err(PublishError::Io { path, source }),
            }
            let holder = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                // Released between our two calls: try again.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(PublishError::Io { path, source }),
            };
            match holder.trim().parse::<u32>() {
                Ok(pid) if is_running(pid) => return Err(PublishError::Locked { path, holder: format!("pid {pid}") }),
                Ok(pid) => eprintln!("warning: taking over {}: its publisher (pid {pid}) is no longer running", path.display()),
                Err(_) => {
                    let age =
                        std::fs::metadata(&path).and_then(|m| m.modified()).ok().and_then(|t| SystemTime::now().duration_since(t).ok());
                    if age.is_none_or(|age| age < EMPTY_LOCK_GRACE) {
                        return Err(PublishError::Locked { path, holder: "a publisher that is starting".into() });
                    }
                    eprintln!("warning: taking over {}: it names no running publisher ({:?})", path.display(), holder.trim());
                }
            }
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(PublishError::Io { path, source }),
            }
        }
        Err(PublishError::Locked { path, holder: "another publisher that just took it".into() })
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        // A lock left behind is taken over by the next run once its pid is gone.
        std::fs::remove_file(&self.path).ok();
    }
}

/// Whether process `pid` runs, from `/proc` (a zombie does not count: a
/// killed publisher whose parent has not reaped it yet). Without `/proc`
/// it cannot be told, and the lock's holder is taken to run.
fn is_running(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    let proc = Path::new("/proc");
    if !proc.join("self").exists() {
        return true;
    }
    match std::fs::read_to_string(proc.join(pid.to_string()).join("stat")) {
        // `pid (comm) S …`: the state follows the last parenthesis.
        Ok(stat) => !matches!(stat.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next()), Some('Z' | 'X')),
        Err(_) => false,
    }
}
