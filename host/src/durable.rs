//! Durable writes: what Weir acknowledges, it has on stable storage.
//!
//! A file is durable once its data is fsynced *and* the directory entry that
//! names it is fsynced (on Linux a new name lives in its directory, not in
//! the file). This module owns the few ways Weir writes files that an answer
//! or a restart relies on:
//!
//! - [`write_atomic`]: a whole file replaced all or nothing (a unique
//!   temporary name in the same directory, fsync, rename, fsync the
//!   directory). A crash leaves the old content or the new, never half.
//! - [`create_dir_all`]: directories whose existence must survive a crash
//!   (each new one's parent is fsynced).
//! - [`GroupSync`]: fsync of an append-only file shared by concurrent
//!   writers (group commit): every writer waits until its bytes are durable,
//!   and one fsync covers every append made before it started.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};

/// Fsyncs the directory `dir`, making the names created, renamed or removed
/// in it durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The directory holding `path` (`.` for a bare name).
fn parent_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// A temporary name beside `path` that no other writer (thread or process)
/// uses: `.<name>.tmp-<pid>-<n>`.
fn temp_name(path: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut name = OsString::from(".");
    name.push(path.file_name().unwrap_or_else(|| "file".as_ref()));
    name.push(format!(".tmp-{}-{n}", std::process::id()));
    parent_of(path).join(name)
}

/// Replaces `path` with `bytes`, all or nothing, durably: on return the new
/// content survives a crash or a power loss; a crash before leaves the old.
/// The parent directory must exist.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = temp_name(path);
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(parent_of(path))
}

/// `std::fs::create_dir_all`, durably: every directory it creates is named
/// in a parent that is fsynced afterwards.
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_all(parent)?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => sync_dir(parent_of(dir)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Group commit for an append-only file.
///
/// Writers append (under their own lock), then call [`GroupSync::wait`]
/// with the offset their bytes end at. One of the waiters becomes the
/// leader: it asks `sync` (given by every waiter; the leader's runs) for
/// the offset written so far, fsyncs, and publishes it; every waiter whose
/// offset it covers returns. Writers that arrive during an fsync are served
/// by the next one, so N concurrent writers cost about two fsyncs, not N.
///
/// An fsync that fails poisons the group: what was written may or may not
/// be on disk, and Linux may have dropped the dirty pages, so retrying
/// would acknowledge lost bytes. Every later wait fails.
#[derive(Debug, Default)]
pub struct GroupSync {
    state: Mutex<SyncState>,
    done: Condvar,
}

#[derive(Debug, Default)]
struct SyncState {
    /// Everything before this offset is durable.
    synced: u64,
    /// A leader is fsyncing.
    syncing: bool,
    /// Why the group is unusable.
    failed: Option<String>,
    /// Fsyncs done, for tests and benchmarks.
    syncs: u64,
}

impl GroupSync {
    /// A group whose file is durable up to `synced` already.
    pub fn new(synced: u64) -> Self {
        Self {
            state: Mutex::new(SyncState {
                synced,
                ..SyncState::default()
            }),
            done: Condvar::new(),
        }
    }

    /// Offsets before this are durable.
    pub fn synced(&self) -> u64 {
        self.lock().synced
    }

    /// How many fsyncs the group has made.
    pub fn syncs(&self) -> u64 {
        self.lock().syncs
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SyncState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Returns once everything before `offset` is durable. `sync` makes the
    /// file durable and returns the offset it covered (at least `offset`:
    /// the caller's bytes were written before it called `wait`).
    pub fn wait(&self, offset: u64, mut sync: impl FnMut() -> io::Result<u64>) -> io::Result<()> {
        let mut state = self.lock();
        loop {
            if let Some(why) = &state.failed {
                return Err(io::Error::other(why.clone()));
            }
            if state.synced >= offset {
                return Ok(());
            }
            if state.syncing {
                state = self.done.wait(state).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            // Lead: one fsync for everything written so far.
            state.syncing = true;
            drop(state);
            let result = sync();
            state = self.lock();
            state.syncing = false;
            state.syncs += 1;
            let failed = match result {
                Ok(covered) => {
                    state.synced = state.synced.max(covered);
                    None
                }
                Err(e) => {
                    state.failed = Some(format!("an earlier fsync failed: {e}"));
                    Some(e)
                }
            };
            self.done.notify_all();
            if let Some(e) = failed {
                return Err(e);
            }
            if state.synced < offset {
                // `sync` broke its contract: say so rather than spin.
                return Err(io::Error::other(format!(
                    "an fsync covered up to {}, short of {offset}",
                    state.synced
                )));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn write_atomic_replaces_the_whole_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("record.json");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second, longer").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second, longer");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["record.json"], "only the file itself is left");
    }

    #[test]
    fn a_failed_write_atomic_leaves_the_old_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("record.json");
        write_atomic(&path, b"old").unwrap();
        // A directory where the file should go: the rename fails.
        let blocked = dir.path().join("blocked");
        std::fs::create_dir(&blocked).unwrap();
        std::fs::write(blocked.join("inside"), b"x").unwrap();
        assert!(write_atomic(&blocked, b"new").is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert!(
            std::fs::read_dir(dir.path()).unwrap().all(|e| !e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains(".tmp-")),
            "the temporary is removed"
        );
    }

    #[test]
    fn concurrent_write_atomic_calls_never_share_a_temporary() {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let path = dir.path().join("cache.bin");
        let writers: Vec<_> = (0..8u8)
            .map(|i| {
                let path = path.clone();
                std::thread::spawn(move || {
                    for _ in 0..20 {
                        write_atomic(&path, &[i; 4096]).unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), 4096);
        assert!(
            bytes.iter().all(|&b| b == bytes[0]),
            "one writer's whole file"
        );
    }

    #[test]
    fn create_dir_all_makes_every_missing_level() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b/c");
        create_dir_all(&deep).unwrap();
        assert!(deep.is_dir());
        create_dir_all(&deep).unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"").unwrap();
        assert!(create_dir_all(&file.join("x")).is_err());
    }

    #[test]
    fn group_sync_serves_concurrent_writers_with_fewer_fsyncs() {
        let group = Arc::new(GroupSync::new(0));
        let written = Arc::new(AtomicU64::new(0));
        let waiters: Vec<_> = (0..16)
            .map(|_| {
                let group = group.clone();
                let written = written.clone();
                std::thread::spawn(move || {
                    let end = written.fetch_add(10, Ordering::SeqCst) + 10;
                    group
                        .wait(end, || {
                            // A slow fsync, so that others queue behind it.
                            std::thread::sleep(Duration::from_millis(20));
                            Ok(written.load(Ordering::SeqCst))
                        })
                        .unwrap();
                    assert!(
                        group.synced() >= end,
                        "returned before its bytes were synced"
                    );
                })
            })
            .collect();
        for w in waiters {
            w.join().unwrap();
        }
        assert_eq!(group.synced(), 160);
        assert!(
            group.syncs() < 16,
            "{} fsyncs for 16 writers",
            group.syncs()
        );
    }

    #[test]
    fn a_failed_fsync_fails_its_waiter_and_every_later_one() {
        let group = GroupSync::new(0);
        let err = group
            .wait(5, || Err(io::Error::other("disk on fire")))
            .unwrap_err();
        assert!(err.to_string().contains("disk on fire"));
        let later = group.wait(6, || Ok(6)).unwrap_err();
        assert!(
            later.to_string().contains("earlier fsync failed"),
            "{later}"
        );
        assert_eq!(group.synced(), 0);
    }

    #[test]
    fn a_wait_already_covered_does_not_sync() {
        let group = GroupSync::new(100);
        group
            .wait(50, || panic!("no fsync needed for durable bytes"))
            .unwrap();
    }
}
