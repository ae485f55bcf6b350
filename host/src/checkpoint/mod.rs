//! Checkpoints and savepoints: consistent snapshots of a whole pipeline.
//!
//! A checkpoint is a directory `chk-<id>` under `<checkpoint.dir>/<pipeline>`
//! holding one snapshot per subtask (keyed state, pending timers, declared
//! states) and a `MANIFEST.json` with the source position, the watermark,
//! the sinks' commit state, the plugin identity, the spec, and the size and
//! CRC32 of every file. It is written as `chk-<id>.inprogress` and renamed
//! once complete, so a half-written checkpoint never looks like one; a
//! restore checks every file against the manifest and falls back to the
//! previous checkpoint when one does not match (and says so). A pipeline
//! whose checkpoints all fail to verify does not run: it never starts over
//! from nothing unless the user asks (`--fresh`, `from_scratch`).
//!
//! Keyed state is stored either natively (a RocksDB checkpoint: hard-linked
//! SST files, so unchanged data is not copied again) or portably (framed
//! postcard records, backend-independent). A savepoint is a checkpoint whose
//! state is all portable and that lives wherever the user puts it.
//!
//! This module owns the on-disk format and restore; the runtime decides when
//! to snapshot and carries the barriers.

mod frames;
mod shared;
mod snapshot;
mod store;

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use shared::{SharedCheckpoint, SharedCheckpoints, SharedError};
pub(crate) use snapshot::{BackendConfig, restore_subtask, write_subtask};
pub(crate) use store::read_manifest;
pub use store::{CheckpointStore, LoadedCheckpoint, export_savepoint, load_checkpoint};

use crate::connectors::{SinkState, SourcePosition};
use crate::runtime::watermarks::WatermarkSnapshot;
use crate::state::{StateError, StateKind};

pub const MANIFEST: &str = "MANIFEST.json";
/// 2: RocksDB checkpoints hold the pending timers (format 1 kept them in a file).
pub(crate) const FORMAT_VERSION: u32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Corrupt(String),
    #[error("the checkpoint cannot be restored into this pipeline: {0}")]
    Incompatible(String),
    /// Checkpoints exist but none can be restored: the pipeline must not
    /// start over on its own.
    #[error(
        "no checkpoint in {} can be restored ({}); the pipeline does not start over from \
         nothing on its own: repair or restore the checkpoints, or start it from scratch \
         (`weir pipeline start --from-scratch`, `POST .../start {{\"from_scratch\": true}}`, \
         `weir run --fresh`), which discards its state and rewrites its output",
        .root.display(),
        .problems.join("; ")
    )]
    Unusable {
        root: PathBuf,
        problems: Vec<String>,
    },
    #[error(transparent)]
    State(#[from] StateError),
}

impl CheckpointError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        CheckpointError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// What a checkpoint or savepoint is, in `MANIFEST.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub id: u64,
    pub kind: SnapshotKind,
    /// Wall clock (ms since the Unix epoch) when it was triggered.
    pub created_ms: i64,
    /// From trigger to complete.
    pub duration_ms: u64,
    /// Bytes of all its files (shared hard links counted in full).
    pub size_bytes: u64,
    /// Taken at the end of a bounded source: nothing is left to process.
    pub finished: bool,
    pub pipeline: String,
    /// The spec it was taken with (for people and for compatibility checks).
    pub spec: serde_json::Value,
    pub key_by: String,
    pub plugin: PluginIdentity,
    pub source: SourceCheckpoint,
    pub subtasks: Vec<SubtaskCheckpoint>,
    pub sinks: Vec<SinkCheckpoint>,
    pub files: Vec<FileEntry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotKind {
    Checkpoint,
    Savepoint,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PluginIdentity {
    pub digest: String,
    pub config: serde_json::Value,
    /// The format of the state (the plugin's `state-version`): a plugin with
    /// a higher one migrates the state when it is restored.
    #[serde(default)]
    pub state_version: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourceCheckpoint {
    pub position: SourcePosition,
    /// Records read before the position: batches are cut at multiples of
    /// the batch size from here on, as in a run that never stopped.
    pub records: u64,
    pub(crate) watermarks: WatermarkSnapshot,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubtaskCheckpoint {
    pub index: usize,
    pub key_groups: [u16; 2],
    /// Declared states in id order: entries refer to states by index here.
    pub states: Vec<DeclaredState>,
    pub state: StateFiles,
    /// Frame file of pending timers; `None` when they are in the RocksDB
    /// checkpoint (`state`).
    pub timers: Option<String>,
    pub timer_count: u64,
}

impl SubtaskCheckpoint {
    pub fn key_group_range(&self) -> RangeInclusive<u16> {
        self.key_groups[0]..=self.key_groups[1]
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeclaredState {
    pub name: String,
    pub kind: StateKind,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "format", rename_all = "lowercase")]
pub enum StateFiles {
    /// A frame file of `StateEntry` records.
    Portable { file: String, entries: u64 },
    /// A RocksDB checkpoint directory.
    Rocksdb { dir: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SinkCheckpoint {
    pub index: usize,
    pub output: String,
    /// Where it writes, to match it on restore (`None` for stdout/null).
    pub target: Option<String>,
    pub state: Option<SinkState>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Relative to the checkpoint directory.
    pub path: String,
    pub size: u64,
    pub crc32: u32,
}

/// Runs `scan`, which can only report `StateError`s, over `each`, which may
/// fail with any `CheckpointError`: that error comes back as itself rather
/// than flattened into a state error.
fn feed<T>(
    scan: impl FnOnce(&mut dyn FnMut(T) -> Result<(), StateError>) -> Result<(), StateError>,
    mut each: impl FnMut(T) -> Result<(), CheckpointError>,
) -> Result<(), CheckpointError> {
    let mut failed = None;
    let scanned = scan(&mut |item| {
        each(item).map_err(|e| {
            let message = e.to_string();
            failed = Some(e);
            StateError::Io(message)
        })
    });
    match failed {
        Some(e) => Err(e),
        None => scanned.map_err(Into::into),
    }
}

/// Where a run of `spec` starts: its own newest checkpoint that verifies,
/// else (it has none at all) the spec's `restore_from`, else nothing.
/// `fresh` (the user asked to start from scratch) forgets its own
/// checkpoints first. Unusable checkpoints are reported through `report`
/// and skipped in favour of an older one that verifies; if none verifies
/// this is `CheckpointError::Unusable` (see `CheckpointStore::resume`). A
/// `restore_from` that does not verify is an error (the user asked for it).
pub fn resume_point(
    spec: &crate::spec::PipelineSpec,
    fresh: bool,
    report: impl FnMut(&str),
) -> Result<Option<LoadedCheckpoint>, CheckpointError> {
    if let Some(c) = &spec.checkpoint {
        let store = CheckpointStore::new(&c.dir, &spec.name);
        if fresh {
            store.clear()?;
        } else if let Some(latest) = store.resume(report)? {
            return Ok(Some(latest));
        }
    }
    match &spec.restore_from {
        Some(path) => load_checkpoint(path)
            .map(Some)
            .map_err(|e| CheckpointError::Corrupt(format!("restore_from {}: {e}", path.display()))),
        None => Ok(None),
    }
}
