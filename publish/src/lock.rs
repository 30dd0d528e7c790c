//! One publisher at a time: an OS file lock (`File::try_lock`) on
//! `<root>/.lock`, which also holds the holder's pid for the message a second
//! publisher gets. The system lets go of the lock when its process ends,
//! killed or not: a lock is never stale, so nothing is ever taken over, and
//! two publishers can never both hold it. The file itself stays.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::Path;

use crate::fsio::io_error;
use crate::PublishError;

pub(crate) const LOCK_FILE: &str = ".lock";

/// Held while it lives; dropping it (or the process ending) releases the lock.
pub(crate) struct Lock {
    _file: File,
}

impl Lock {
    pub(crate) fn acquire(root: &Path) -> Result<Lock, PublishError> {
        let path = root.join(LOCK_FILE);
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io_error(&path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path)
                    .ok()
                    .and_then(|text| text.trim().parse::<u32>().ok())
                    .map_or_else(|| "another publisher".to_string(), |pid| format!("pid {pid}"));
                return Err(PublishError::Locked { path, holder });
            }
            Err(TryLockError::Error(source)) => return Err(PublishError::Io { path, source }),
        }
        file.set_len(0)
            .and_then(|()| file.write_all(std::process::id().to_string().as_bytes()))
            .and_then(|()| file.sync_all())
            .map_err(io_error(&path))?;
        Ok(Lock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_refuses_a_second_publisher_naming_the_holder_and_is_free_once_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = Lock::acquire(dir.path()).unwrap();
        match Lock::acquire(dir.path()) {
            Err(PublishError::Locked { holder, .. }) => assert_eq!(holder, format!("pid {}", std::process::id())),
            Err(other) => panic!("{other}"),
            Ok(_) => panic!("two publishers held the lock"),
        }
        drop(first);
        let _again = Lock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn a_lock_file_left_by_a_killed_publisher_stops_no_one_and_two_newcomers_cannot_both_take_it() {
        let dir = tempfile::tempdir().unwrap();
        // What a killed publisher leaves: the file, naming a pid, with no lock on it.
        std::fs::write(dir.path().join(LOCK_FILE), "999999").unwrap();
        let first = Lock::acquire(dir.path()).unwrap();
        assert!(matches!(Lock::acquire(dir.path()), Err(PublishError::Locked { .. })));
        drop(first);
    }
}
