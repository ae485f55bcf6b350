//! The checkpoints of one pipeline on disk: listing, completing, keeping the
//! last K, verifying, and exporting a savepoint.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::frames::{FrameWriter, read_frames};
use super::snapshot::TimerRecord;
use super::{
    CheckpointError, FORMAT_VERSION, FileEntry, MANIFEST, Manifest, SnapshotKind, StateFiles, feed,
};
use crate::runtime::timers::stored_domain;
use crate::state::{StateEntry, StoredTimer, read_rocksdb_checkpoint, read_rocksdb_timers};

const COMPLETE_PREFIX: &str = "chk-";
pub(super) const MANIFEST_CRC: &str = "MANIFEST.json.crc32";
const IN_PROGRESS: &str = ".inprogress";
const CORRUPT: &str = ".corrupt";

/// A checkpoint (or savepoint) that passed verification.
#[derive(Debug, Clone)]
pub struct LoadedCheckpoint {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

/// `<checkpoint.dir>/<pipeline>`: where one pipeline's checkpoints live.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    root: PathBuf,
}

impl CheckpointStore {
    pub fn new(dir: &Path, pipeline: &str) -> Self {
        Self {
            root: dir.join(pipeline),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Ids of complete checkpoints, oldest first.
    pub fn ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self
            .names()
            .iter()
            .filter_map(|n| n.strip_prefix(COMPLETE_PREFIX)?.parse().ok())
            .collect();
        ids.sort_unstable();
        ids
    }

    fn names(&self) -> Vec<String> {
        std::fs::read_dir(&self.root)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The id after every checkpoint ever started here (complete, in
    /// progress or set aside as corrupt), so a new one never reuses a name.
    pub fn next_id(&self) -> u64 {
        self.names()
            .iter()
            .filter_map(|n| {
                let rest = n.strip_prefix(COMPLETE_PREFIX)?;
                rest.split('.').next()?.parse::<u64>().ok()
            })
            .max()
            .map_or(1, |id| id + 1)
    }

    pub fn dir_of(&self, id: u64) -> PathBuf {
        self.root.join(format!("{COMPLETE_PREFIX}{id}"))
    }

    /// Where checkpoint `id` is written until it is complete.
    pub fn in_progress_dir(&self, id: u64) -> Result<PathBuf, CheckpointError> {
        let dir = self
            .root
            .join(format!("{COMPLETE_PREFIX}{id}{IN_PROGRESS}"));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| CheckpointError::io(&dir, e))?;
        }
        crate::durable::create_dir_all(&dir).map_err(|e| CheckpointError::io(&dir, e))?;
        Ok(dir)
    }

    /// Drops an abandoned checkpoint's partial files.
    pub fn discard_in_progress(&self, id: u64) {
        let dir = self
            .root
            .join(format!("{COMPLETE_PREFIX}{id}{IN_PROGRESS}"));
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Seals checkpoint `manifest.id`: lists and checksums its files, writes
    /// the manifest, and renames the directory into place (the commit point).
    pub fn complete(&self, manifest: &mut Manifest) -> Result<PathBuf, CheckpointError> {
        let dir = self
            .root
            .join(format!("{COMPLETE_PREFIX}{}{IN_PROGRESS}", manifest.id));
        let previous = self.ids().last().and_then(|&id| {
            let dir = self.dir_of(id);
            read_manifest(&dir).ok().map(|m| (id, dir, m.files))
        });
        manifest.files = list_files(
            &dir,
            previous
                .as_ref()
                .map(|(id, dir, files)| (*id, dir.as_path(), files.as_slice())),
        )?;
        manifest.size_bytes = manifest.files.iter().map(|f| f.size).sum();
        write_manifest(&dir, manifest)?;
        let done = self.dir_of(manifest.id);
        std::fs::rename(&dir, &done).map_err(|e| CheckpointError::io(&done, e))?;
        sync_dir(&self.root)?;
        Ok(done)
    }

    /// Keeps the newest `keep` complete checkpoints; drops older ones and any
    /// left in progress.
    pub fn retain(&self, keep: usize) -> Result<(), CheckpointError> {
        let ids = self.ids();
        let newest = ids.last().copied();
        for &id in ids.iter().rev().skip(keep) {
            let dir = self.dir_of(id);
            std::fs::remove_dir_all(&dir).map_err(|e| CheckpointError::io(&dir, e))?;
        }
        for name in self.names() {
            let stale = name
                .strip_suffix(IN_PROGRESS)
                .and_then(|n| n.strip_prefix(COMPLETE_PREFIX)?.parse::<u64>().ok());
            if stale.is_some_and(|id| newest.is_some_and(|newest| id < newest)) {
                let dir = self.root.join(&name);
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
        Ok(())
    }

    /// Where the pipeline resumes: its newest checkpoint that verifies, or
    /// `None` if it never completed one. Never silently nothing when it
    /// did: if no checkpoint verifies (or every one was set aside as
    /// corrupt earlier), this is `CheckpointError::Unusable`, naming each
    /// checkpoint and why. Falling back past unusable checkpoints to an
    /// older one is reported through `report`, and the corrupt ones it
    /// skipped are renamed `chk-<id>.corrupt` so they are never tried again.
    pub fn resume(
        &self,
        mut report: impl FnMut(&str),
    ) -> Result<Option<LoadedCheckpoint>, CheckpointError> {
        let mut problems = Vec::new();
        let mut corrupt = Vec::new();
        for id in self.ids().into_iter().rev() {
            let dir = self.dir_of(id);
            match load_checkpoint(&dir) {
                Ok(loaded) => {
                    if !problems.is_empty() {
                        report(&format!(
                            "resuming from checkpoint {id}, the newest that verifies; skipped: {}",
                            problems.join("; ")
                        ));
                        for id in corrupt {
                            self.set_aside(id);
                        }
                    }
                    return Ok(Some(loaded));
                }
                Err(e) => {
                    let problem = format!("checkpoint {id} ({}) is unusable: {e}", dir.display());
                    report(&problem);
                    if matches!(e, CheckpointError::Corrupt(_)) {
                        corrupt.push(id);
                    }
                    problems.push(problem);
                }
            }
        }
        for name in self.names() {
            if let Some(id) = name
                .strip_suffix(CORRUPT)
                .and_then(|n| n.strip_prefix(COMPLETE_PREFIX))
            {
                problems.push(format!(
                    "checkpoint {id} was set aside as corrupt ({})",
                    self.root.join(&name).display()
                ));
            }
        }
        if problems.is_empty() {
            Ok(None)
        } else {
            Err(CheckpointError::Unusable {
                root: self.root.clone(),
                problems,
            })
        }
    }

    fn set_aside(&self, id: u64) {
        let aside = self.root.join(format!("{COMPLETE_PREFIX}{id}{CORRUPT}"));
        let _ = std::fs::remove_dir_all(&aside);
        let _ = std::fs::rename(self.dir_of(id), &aside);
    }

    /// The newest checkpoint that verifies. Each one that does not is
    /// reported through `report` and the one before it is tried. With
    /// `set_aside`, a corrupt one is renamed `chk-<id>.corrupt` so it is
    /// never tried again.
    pub fn latest_valid(
        &self,
        set_aside: bool,
        mut report: impl FnMut(&str),
    ) -> Option<LoadedCheckpoint> {
        for id in self.ids().into_iter().rev() {
            let dir = self.dir_of(id);
            match load_checkpoint(&dir) {
                Ok(loaded) => return Some(loaded),
                Err(e) => {
                    report(&format!(
                        "checkpoint {id} ({}) is unusable: {e}",
                        dir.display()
                    ));
                    if set_aside && matches!(e, CheckpointError::Corrupt(_)) {
                        self.set_aside(id);
                    }
                }
            }
        }
        None
    }

    /// Forgets every checkpoint (`--fresh`).
    pub fn clear(&self) -> Result<(), CheckpointError> {
        if self.root.exists() {
            std::fs::remove_dir_all(&self.root).map_err(|e| CheckpointError::io(&self.root, e))?;
        }
        Ok(())
    }
}

/// Reads and verifies a checkpoint or savepoint directory: the manifest
/// parses, and every file it lists exists with its size and CRC32.
pub fn load_checkpoint(dir: &Path) -> Result<LoadedCheckpoint, CheckpointError> {
    let manifest = read_manifest(dir)?;
    if manifest.format != FORMAT_VERSION {
        return Err(CheckpointError::Incompatible(format!(
            "format {} (this Weir reads format {FORMAT_VERSION})",
            manifest.format
        )));
    }
    for f in &manifest.files {
        let path = dir.join(&f.path);
        let (size, crc) = checksum(&path).map_err(|e| match e {
            CheckpointError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                CheckpointError::Corrupt(format!("{} is missing", f.path))
            }
            other => other,
        })?;
        if size != f.size {
            return Err(CheckpointError::Corrupt(format!(
                "{} has {size} bytes, the manifest says {}",
                f.path, f.size
            )));
        }
        if crc != f.crc32 {
            return Err(CheckpointError::Corrupt(format!(
                "{} fails its checksum (crc32 {crc:08x}, the manifest says {:08x})",
                f.path, f.crc32
            )));
        }
    }
    Ok(LoadedCheckpoint {
        dir: dir.to_owned(),
        manifest,
    })
}

/// Writes a self-contained, portable copy of `checkpoint` to `to` (which
/// must not exist): every subtask's state as portable records, whatever
/// backend wrote it. Written beside `to` and renamed, so it is all or nothing.
pub fn export_savepoint(
    checkpoint: &LoadedCheckpoint,
    to: &Path,
) -> Result<Manifest, CheckpointError> {
    if to.exists() {
        return Err(CheckpointError::Incompatible(format!(
            "{} already exists; savepoints are never overwritten",
            to.display()
        )));
    }
    let name = to
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "savepoint".into());
    let staging = to.with_file_name(format!(".{name}{IN_PROGRESS}"));
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(|e| CheckpointError::io(&staging, e))?;
    }
    std::fs::create_dir_all(&staging).map_err(|e| CheckpointError::io(&staging, e))?;
    let mut manifest = checkpoint.manifest.clone();
    manifest.kind = SnapshotKind::Savepoint;
    for subtask in &mut manifest.subtasks {
        let dir = staging.join(format!("subtask-{}", subtask.index));
        std::fs::create_dir_all(&dir).map_err(|e| CheckpointError::io(&dir, e))?;
        let file = format!("subtask-{}/state.bin", subtask.index);
        let mut out = FrameWriter::create(&staging.join(&file))?;
        let mut write = |entry: StateEntry| -> Result<(), CheckpointError> { out.write(&entry) };
        match &subtask.state {
            StateFiles::Portable { file, .. } => {
                read_frames(&checkpoint.dir.join(file), &mut write)?;
            }
            StateFiles::Rocksdb { dir } => {
                let dir = checkpoint.dir.join(dir);
                let range = subtask.key_group_range();
                feed(|sink| read_rocksdb_checkpoint(&dir, range, sink), write)?;
            }
        }
        let entries = out.finish()?;
        let timers_file = format!("subtask-{}/timers.bin", subtask.index);
        match &subtask.timers {
            Some(file) => {
                let from = checkpoint.dir.join(file);
                std::fs::copy(&from, staging.join(&timers_file))
                    .map_err(|e| CheckpointError::io(&from, e))?;
            }
            None => {
                let StateFiles::Rocksdb { dir } = &subtask.state else {
                    return Err(CheckpointError::Corrupt(format!(
                        "subtask {} records neither a timer file nor a RocksDB checkpoint",
                        subtask.index
                    )));
                };
                let mut out = FrameWriter::create(&staging.join(&timers_file))?;
                let dir = checkpoint.dir.join(dir);
                let range = subtask.key_group_range();
                feed(
                    |sink| read_rocksdb_timers(&dir, range, sink),
                    |t: StoredTimer| {
                        out.write(&TimerRecord {
                            domain: stored_domain(&t),
                            kg: t.kg,
                            key: t.key,
                            ts: t.ts,
                        })
                    },
                )?;
                out.finish()?;
            }
        }
        subtask.state = StateFiles::Portable { file, entries };
        subtask.timers = Some(timers_file);
    }
    manifest.files = list_files(&staging, None)?;
    manifest.size_bytes = manifest.files.iter().map(|f| f.size).sum();
    write_manifest(&staging, &manifest)?;
    std::fs::rename(&staging, to).map_err(|e| CheckpointError::io(to, e))?;
    Ok(manifest)
}

pub(crate) fn read_manifest(dir: &Path) -> Result<Manifest, CheckpointError> {
    let path = dir.join(MANIFEST);
    let missing = |e: std::io::Error, name: &str| match e.kind() {
        std::io::ErrorKind::NotFound => {
            CheckpointError::Corrupt(format!("{} has no {name}", dir.display()))
        }
        _ => CheckpointError::io(&path, e),
    };
    let bytes = std::fs::read(&path).map_err(|e| missing(e, MANIFEST))?;
    // The manifest carries the positions and lengths a restore trusts, so
    // a damaged one must not parse its way through.
    let recorded =
        std::fs::read_to_string(dir.join(MANIFEST_CRC)).map_err(|e| missing(e, MANIFEST_CRC))?;
    let crc = crc32fast::hash(&bytes);
    if u32::from_str_radix(recorded.trim(), 16).ok() != Some(crc) {
        return Err(CheckpointError::Corrupt(format!(
            "{MANIFEST} fails its checksum (crc32 {crc:08x}, {MANIFEST_CRC} says {})",
            recorded.trim()
        )));
    }
    let manifest: Manifest = serde_json::from_slice(&bytes)
        .map_err(|e| CheckpointError::Corrupt(format!("{MANIFEST} does not parse: {e}")))?;
    check_manifest_paths(&manifest)?;
    Ok(manifest)
}

/// Every file a manifest names must lie inside its own directory: a
/// savepoint can come from an API client (`start {"from": ...}`), and its
/// manifest's CRC proves nothing about who wrote it, so an absolute path or
/// a `..` would make a restore read any file of the server.
fn check_manifest_paths(manifest: &Manifest) -> Result<(), CheckpointError> {
    let named =
        manifest
            .files
            .iter()
            .map(|f| f.path.as_str())
            .chain(manifest.subtasks.iter().flat_map(|s| {
                let state = match &s.state {
                    StateFiles::Portable { file, .. } => file.as_str(),
                    StateFiles::Rocksdb { dir } => dir.as_str(),
                };
                std::iter::once(state).chain(s.timers.as_deref())
            }));
    for path in named {
        let inside = !path.is_empty()
            && Path::new(path)
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !inside {
            return Err(CheckpointError::Corrupt(format!(
                "{MANIFEST} names {path:?}, which is not a path inside the checkpoint"
            )));
        }
    }
    Ok(())
}

fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<(), CheckpointError> {
    let path = dir.join(MANIFEST);
    let bytes = serde_json::to_vec_pretty(manifest)
        .map_err(|e| CheckpointError::Corrupt(format!("encoding the manifest: {e}")))?;
    let crc_path = dir.join(MANIFEST_CRC);
    std::fs::write(&crc_path, format!("{:08x}\n", crc32fast::hash(&bytes)))
        .map_err(|e| CheckpointError::io(&crc_path, e))?;
    std::fs::write(&path, bytes).map_err(|e| CheckpointError::io(&path, e))?;
    for p in [&path, &crc_path] {
        File::open(p)
            .and_then(|f| f.sync_all())
            .map_err(|e| CheckpointError::io(p, e))?;
    }
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), CheckpointError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| CheckpointError::io(dir, e))
}

/// Every file under `dir` with size and CRC32, each computed from the
/// file's bytes now. A file that is the very same file (a hard link: same
/// device and inode) as one of the previous checkpoint's (`id`, `dir`,
/// files) is an SST they share: its CRC must still be the one recorded
/// there, else the file changed on disk after that checkpoint (both are
/// damaged) and this checkpoint fails rather than certify it. Taking the
/// old CRC over unread would seal a checkpoint whose bytes no one checked.
/// Reading shared files costs I/O per checkpoint (mostly from the page
/// cache, as they were just linked); it buys a manifest that says what
/// was on disk when it was written.
fn list_files(
    dir: &Path,
    previous: Option<(u64, &Path, &[FileEntry])>,
) -> Result<Vec<FileEntry>, CheckpointError> {
    use std::os::unix::fs::MetadataExt;
    let mut files = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(current) = stack.pop() {
        // The names in every directory are made durable with the files
        // (each file's data was fsynced by whoever wrote it).
        sync_dir(&current)?;
        let entries = std::fs::read_dir(&current).map_err(|e| CheckpointError::io(&current, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| CheckpointError::io(&current, e))?;
            let path = entry.path();
            let meta = entry
                .metadata()
                .map_err(|e| CheckpointError::io(&path, e))?;
            if meta.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path
                .strip_prefix(dir)
                .map_err(|_| CheckpointError::Corrupt(format!("{} escapes", path.display())))?
                .to_string_lossy()
                .into_owned();
            if rel == MANIFEST || rel == MANIFEST_CRC {
                continue;
            }
            let shared = previous.and_then(|(id, previous_dir, files)| {
                let same = std::fs::metadata(previous_dir.join(&rel))
                    .is_ok_and(|m| m.dev() == meta.dev() && m.ino() == meta.ino());
                files
                    .iter()
                    .find(|f| same && f.path == rel)
                    .map(|f| (id, f))
            });
            let (size, crc32) = checksum(&path)?;
            if let Some((id, f)) = shared
                && (f.size, f.crc32) != (size, crc32)
            {
                return Err(CheckpointError::Corrupt(format!(
                    "{rel} is shared with checkpoint {id} but changed on disk since: it has {size} \
                     bytes, crc32 {crc32:08x}; checkpoint {id} recorded {} bytes, crc32 {:08x}",
                    f.size, f.crc32
                )));
            }
            files.push(FileEntry {
                path: rel,
                size,
                crc32,
            });
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

fn checksum(path: &Path) -> Result<(u64, u32), CheckpointError> {
    let mut file = File::open(path).map_err(|e| CheckpointError::io(path, e))?;
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| CheckpointError::io(path, e))?;
        if n == 0 {
            return Ok((size, hasher.finalize()));
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Seek, SeekFrom, Write};
    use std::os::unix::fs::MetadataExt;

    use super::*;
    use crate::checkpoint::{PluginIdentity, SourceCheckpoint};
    use crate::runtime::key_groups::key_group;
    use crate::runtime::watermarks::WatermarkSnapshot;
    use crate::state::{KeyedStateBackend, RocksDbBackend, RocksDbOptions};

    fn manifest(id: u64) -> Manifest {
        Manifest {
            format: FORMAT_VERSION,
            id,
            kind: SnapshotKind::Checkpoint,
            created_ms: 0,
            duration_ms: 0,
            size_bytes: 0,
            finished: false,
            pipeline: "p".into(),
            spec: serde_json::Value::Null,
            key_by: "record-key".into(),
            plugin: PluginIdentity {
                digest: "d".into(),
                config: serde_json::Value::Null,
                state_version: 0,
            },
            source: SourceCheckpoint {
                position: Vec::new(),
                records: id,
                watermarks: WatermarkSnapshot {
                    watermark: 0,
                    split_max_timestamps: Vec::new(),
                },
            },
            subtasks: Vec::new(),
            sinks: Vec::new(),
            files: Vec::new(),
        }
    }

    /// Completes checkpoint `id` with one file of `bytes`.
    fn small_checkpoint(store: &CheckpointStore, id: u64, bytes: &[u8]) {
        let dir = store.in_progress_dir(id).unwrap();
        std::fs::create_dir_all(dir.join("subtask-0")).unwrap();
        std::fs::write(dir.join("subtask-0/state.bin"), bytes).unwrap();
        store.complete(&mut manifest(id)).unwrap();
    }

    /// Completes checkpoint `id` holding a RocksDB checkpoint of `backend`.
    fn rocks_checkpoint(
        store: &CheckpointStore,
        id: u64,
        backend: &mut RocksDbBackend,
    ) -> Result<PathBuf, CheckpointError> {
        let dir = store.in_progress_dir(id).unwrap();
        assert!(
            backend
                .native_checkpoint(&dir.join("subtask-0/rocksdb"))
                .unwrap()
        );
        store.complete(&mut manifest(id))
    }

    fn fill(backend: &mut RocksDbBackend, keys: std::ops::Range<u32>) {
        for i in keys {
            let key = format!("user-{i}");
            backend
                .value_set(key_group(key.as_bytes()), 0, key.as_bytes(), &[7; 100])
                .unwrap();
        }
    }

    #[test]
    fn a_manifest_naming_a_file_outside_its_checkpoint_is_refused_even_with_a_good_crc() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("secret"), b"not yours").unwrap();
        for escape in ["../secret", "/etc/passwd", "a/../../secret", ""] {
            let dir = tmp.path().join("sp");
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let mut m = manifest(1);
            m.files.push(FileEntry {
                path: escape.into(),
                size: 9,
                crc32: crc32fast::hash(b"not yours"),
            });
            // The writer's own CRC: what anyone crafting a savepoint can do.
            write_manifest(&dir, &m).unwrap();
            let Err(err) = load_checkpoint(&dir) else {
                panic!("{escape:?} was loaded");
            };
            let err = err.to_string();
            assert!(
                err.contains("not a path inside the checkpoint"),
                "{escape}: {err}"
            );
        }
        // A plain relative path still loads.
        let dir = tmp.path().join("ok");
        std::fs::create_dir_all(dir.join("subtask-0")).unwrap();
        std::fs::write(dir.join("subtask-0/state.bin"), b"x").unwrap();
        let mut m = manifest(1);
        m.files.push(FileEntry {
            path: "subtask-0/state.bin".into(),
            size: 1,
            crc32: crc32fast::hash(b"x"),
        });
        write_manifest(&dir, &m).unwrap();
        load_checkpoint(&dir).unwrap();
    }

    fn flip_byte_in_the_middle(path: &Path) {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        let at = file.metadata().unwrap().len() / 2;
        let mut byte = [0u8];
        file.seek(SeekFrom::Start(at)).unwrap();
        file.read_exact(&mut byte).unwrap();
        file.seek(SeekFrom::Start(at)).unwrap();
        file.write_all(&[byte[0] ^ 0x01]).unwrap();
        file.sync_all().unwrap();
    }

    #[test]
    fn a_flipped_byte_in_an_sst_shared_by_retained_checkpoints_is_detected() {
        let tmp = tempfile::tempdir().unwrap();
        let store = CheckpointStore::new(&tmp.path().join("checkpoints"), "p");
        let options = RocksDbOptions {
            cache_entries: 64,
            block_cache_bytes: 1 << 20,
        };
        let mut backend = RocksDbBackend::open(&tmp.path().join("work"), options).unwrap();
        fill(&mut backend, 0..2000);
        let first = rocks_checkpoint(&store, 1, &mut backend).unwrap();
        fill(&mut backend, 2000..2100);
        let second = rocks_checkpoint(&store, 2, &mut backend).unwrap();

        // An SST both hold: one file, hard-linked.
        let rocks = Path::new("subtask-0/rocksdb");
        let shared = std::fs::read_dir(first.join(rocks))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                p.extension().is_some_and(|e| e == "sst")
                    && std::fs::metadata(second.join(rocks).join(p.file_name().unwrap()))
                        .is_ok_and(|m| m.ino() == std::fs::metadata(p).unwrap().ino())
            })
            .expect("the checkpoints share an SST");
        let name = shared.file_name().unwrap().to_string_lossy().into_owned();
        flip_byte_in_the_middle(&shared);

        // Neither checkpoint restores, and the pipeline does not start over.
        let mut reported = Vec::new();
        let err = store
            .resume(|p| reported.push(p.to_owned()))
            .expect_err("nothing verifies");
        let message = err.to_string();
        assert!(matches!(err, CheckpointError::Unusable { .. }), "{message}");
        assert!(
            message.contains("checkpoint 2") && message.contains("checkpoint 1"),
            "{message}"
        );
        assert!(
            message.contains(&name) && message.contains("checksum"),
            "{message}"
        );
        assert!(!message.contains("set aside"), "nothing was set aside");
        assert_eq!(store.ids(), [1, 2], "the checkpoints stay where they were");

        // The working database shares that SST too: a new checkpoint that
        // links it is refused instead of certified with the old CRC.
        let err = rocks_checkpoint(&store, 3, &mut backend).expect_err("the SST changed");
        assert!(
            err.to_string().contains(&name) && err.to_string().contains("changed on disk"),
            "{err}"
        );
        assert_eq!(store.ids(), [1, 2]);
    }

    #[test]
    fn resume_falls_back_to_an_older_checkpoint_that_verifies_and_says_so() {
        let tmp = tempfile::tempdir().unwrap();
        let store = CheckpointStore::new(tmp.path(), "p");
        small_checkpoint(&store, 1, b"one");
        small_checkpoint(&store, 2, b"two, longer");
        let state = store.dir_of(2).join("subtask-0/state.bin");
        std::fs::write(&state, b"two").unwrap();
        let mut reported = Vec::new();
        let resumed = store
            .resume(|p| reported.push(p.to_owned()))
            .unwrap()
            .expect("checkpoint 1 verifies");
        assert_eq!(resumed.manifest.id, 1);
        let said = reported.join("\n");
        assert!(
            said.contains("checkpoint 2") && said.contains("state.bin"),
            "{said}"
        );
        assert!(said.contains("resuming from checkpoint 1"), "{said}");
        assert!(store.root().join("chk-2.corrupt").exists());
        assert_eq!(store.ids(), [1]);
    }

    #[test]
    fn resume_starts_from_nothing_only_when_there_never_was_a_checkpoint() {
        let tmp = tempfile::tempdir().unwrap();
        let store = CheckpointStore::new(tmp.path(), "p");
        assert!(store.resume(|_| {}).unwrap().is_none());
        small_checkpoint(&store, 1, b"one");
        std::fs::remove_file(store.dir_of(1).join(MANIFEST)).unwrap();
        let err = store.resume(|_| {}).expect_err("checkpoint 1 is unusable");
        assert!(
            err.to_string().contains("checkpoint 1") && err.to_string().contains("from scratch"),
            "{err}"
        );
        // Set aside earlier, and nothing else left: still not a fresh start.
        std::fs::rename(store.dir_of(1), store.root().join("chk-1.corrupt")).unwrap();
        let err = store
            .resume(|_| {})
            .expect_err("its only checkpoint was corrupt");
        assert!(err.to_string().contains("set aside"), "{err}");
        store.clear().unwrap();
        assert!(store.resume(|_| {}).unwrap().is_none());
    }
}
