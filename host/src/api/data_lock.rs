//! One server per data dir: `weir serve` holds an exclusive lock on
//! `<data-dir>/LOCK` for its whole life, with its pid (and, once bound, its
//! address) inside, so that a second server on the same data dir refuses to
//! start naming the holder instead of running the same pipelines twice.
//!
//! The lock is an advisory `flock` (std's `File::try_lock`): the kernel
//! drops it when the process ends, however it ends, so a crash never leaves
//! a stale lock behind; the file's contents are only for the message.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub const LOCK_FILE: &str = "LOCK";

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "the data dir {dir} is in use by another weir serve ({holder}); stop it, or give this \
         one another --data-dir"
    )]
    Held { dir: PathBuf, holder: String },
    #[error("cannot lock the data dir {dir}: {source}")]
    Io {
        dir: PathBuf,
        source: std::io::Error,
    },
}

/// Held for as long as the server runs; dropping it releases the lock.
#[derive(Debug)]
pub struct DataDirLock {
    file: File,
}

impl DataDirLock {
    /// Creates `data_dir` if needed and takes its lock, or says who has it.
    pub fn acquire(data_dir: &Path) -> Result<Self, LockError> {
        let io = |source| LockError::Io {
            dir: data_dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(data_dir).map_err(io)?;
        // Not truncated on open: the holder's pid must survive our look.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(data_dir.join(LOCK_FILE))
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(LockError::Held {
                    dir: data_dir.to_owned(),
                    holder: if holder.is_empty() {
                        "pid unknown".into()
                    } else {
                        holder.to_owned()
                    },
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        let mut lock = Self { file };
        lock.write(&format!("pid {}", std::process::id()))
            .map_err(io)?;
        Ok(lock)
    }

    /// Adds the address the server listens on, for the next one's message.
    pub fn record_addr(&mut self, addr: SocketAddr) {
        let text = format!("pid {}, listening on {addr}", std::process::id());
        if let Err(e) = self.write(&text) {
            tracing::warn!("cannot record the address in the data dir's lock file: {e}");
        }
    }

    fn write(&mut self, text: &str) -> std::io::Result<()> {
        self.file.set_len(0)?;
        self.file.rewind()?;
        self.file.write_all(format!("{text}\n").as_bytes())?;
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_one_data_dir_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = DataDirLock::acquire(dir.path()).unwrap();
        first.record_addr("127.0.0.1:7070".parse().unwrap());
        let err = DataDirLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id())) && err.contains("127.0.0.1:7070"),
            "{err}"
        );
        drop(first);
        DataDirLock::acquire(dir.path()).expect("free again once the holder is gone");
    }
}
