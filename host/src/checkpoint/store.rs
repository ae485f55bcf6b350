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
        std::fs::create_dir_all(&dir).map_err(|e| CheckpointError::io(&dir, e))?;
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
            read_manifest(&dir).ok().map(|m| (dir, m.files))
        });
        manifest.files = list_files(
            &dir,
            previous
                .as_ref()
                .map(|(dir, files)| (dir.as_path(), files.as_slice())),
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

    /// The newest checkpoint that verifies. Each one that does not is
    /// reported through `report` and the one before it is tried. With
    /// `set_aside` (only the pipeline's own restore), a corrupt one is
    /// renamed `chk-<id>.corrupt` so it is never tried again.
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
                        let aside = self.root.join(format!("{COMPLETE_PREFIX}{id}{CORRUPT}"));
                        let _ = std::fs::remove_dir_all(&aside);
                        let _ = std::fs::rename(&dir, &aside);
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
    serde_json::from_slice(&bytes)
        .map_err(|e| CheckpointError::Corrupt(format!("{MANIFEST} does not parse: {e}")))
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

/// Every file under `dir` with size and CRC32. A file that is the very same
/// file (a hard link: same device and inode) as one of the previous
/// checkpoint's is an unchanged SST: its CRC is taken over, not recomputed.
fn list_files(
    dir: &Path,
    previous: Option<(&Path, &[FileEntry])>,
) -> Result<Vec<FileEntry>, CheckpointError> {
    use std::os::unix::fs::MetadataExt;
    let mut files = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(current) = stack.pop() {
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
            let reused = previous.and_then(|(previous_dir, files)| {
                let same = std::fs::metadata(previous_dir.join(&rel))
                    .is_ok_and(|m| m.dev() == meta.dev() && m.ino() == meta.ino());
                files
                    .iter()
                    .find(|f| same && f.path == rel && f.size == meta.len())
            });
            let (size, crc32) = match reused {
                Some(f) => (f.size, f.crc32),
                None => checksum(&path)?,
            };
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
