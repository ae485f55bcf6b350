//! Keyed state backends.
//!
//! A backend stores the state of the key groups one subtask owns. Every call
//! names the key group, the declared state and the key; the runtime scopes it
//! to the current item, so a plugin can only ever touch the key it handles.
//! Backends know nothing of plugins, timers or outputs.

mod catalog;
mod memory;
mod rocks;
mod rocks_timers;

use std::ops::RangeInclusive;
use std::path::Path;

pub use catalog::{StateCatalog, StateId, StateKind};
pub use memory::MemoryBackend;
pub use rocks::{RocksDbBackend, RocksDbOptions, read_rocksdb_checkpoint};
pub use rocks_timers::{RocksTimers, StoredTimer, read_rocksdb_timers};

/// Errors a backend can raise. The memory backend raises none; durable
/// backends raise I/O errors here.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state backend I/O failed: {0}")]
    Io(String),
    #[error("state backend data is corrupt: {0}")]
    Corrupt(String),
}

/// One unit of keyed state, independent of any backend: what portable
/// snapshots (memory checkpoints, savepoints) carry and what a restore loads.
/// `state` ids refer to the snapshot's own catalog.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum StateEntry {
    Value {
        kg: u16,
        state: StateId,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    MapEntry {
        kg: u16,
        state: StateId,
        key: Vec<u8>,
        map_key: Vec<u8>,
        value: Vec<u8>,
    },
    List {
        kg: u16,
        state: StateId,
        key: Vec<u8>,
        items: Vec<Vec<u8>>,
    },
}

impl StateEntry {
    pub fn key_group(&self) -> u16 {
        match self {
            StateEntry::Value { kg, .. }
            | StateEntry::MapEntry { kg, .. }
            | StateEntry::List { kg, .. } => *kg,
        }
    }
}

/// Receives entries one at a time, so a snapshot never sits in memory whole.
pub type EntrySink<'a> = dyn FnMut(StateEntry) -> Result<(), StateError> + 'a;

/// The entries of one map state, ordered by map key.
pub type MapEntries = Vec<(Vec<u8>, Vec<u8>)>;

/// The state of one key, as the host shows it to people (never to plugins).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyState {
    pub values: Vec<(StateId, Vec<u8>)>,
    pub maps: Vec<(StateId, MapEntries)>,
    pub lists: Vec<(StateId, Vec<Vec<u8>>)>,
}

/// Keyed state of one subtask. `kg` is always `key_groups::key_group(key)`.
pub trait KeyedStateBackend: Send {
    fn value_get(
        &mut self,
        kg: u16,
        state: StateId,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, StateError>;
    fn value_set(
        &mut self,
        kg: u16,
        state: StateId,
        key: &[u8],
        value: Vec<u8>,
    ) -> Result<(), StateError>;
    fn value_clear(&mut self, kg: u16, state: StateId, key: &[u8]) -> Result<(), StateError>;

    fn map_get(
        &mut self,
        kg: u16,
        state: StateId,
        key: &[u8],
        map_key: &[u8],
    ) -> Result<Option<Vec<u8>>, StateError>;
    fn map_put(
        &mut self,
        kg: u16,
        state: StateId,
        key: &[u8],
        map_key: Vec<u8>,
        value: Vec<u8>,
    ) -> Result<(), StateError>;
    fn map_remove(
        &mut self,
        kg: u16,
        state: StateId,
        key: &[u8],
        map_key: &[u8],
    ) -> Result<(), StateError>;
    fn map_entries(
        &mut self,
        kg: u16,
        state: StateId,
        key: &[u8],
    ) -> Result<MapEntries, StateError>;
    fn map_clear(&mut self, kg: u16, state: StateId, key: &[u8]) -> Result<(), StateError>;

    fn list_append(
        &mut self,
        kg: u16,
        state: StateId,
        key: &[u8],
        value: Vec<u8>,
    ) -> Result<(), StateError>;
    fn list_read(
        &mut self,
        kg: u16,
        state: StateId,
        key: &[u8],
    ) -> Result<Vec<Vec<u8>>, StateError>;
    fn list_clear(&mut self, kg: u16, state: StateId, key: &[u8]) -> Result<(), StateError>;

    /// Keys that hold any state.
    fn key_count(&self) -> u64;
    /// Everything one key holds.
    fn key_state(&mut self, kg: u16, key: &[u8]) -> Result<KeyState, StateError>;

    /// Streams every entry to `sink`, key group by key group (the order
    /// within one key group is the backend's own).
    fn export(&mut self, sink: &mut EntrySink<'_>) -> Result<(), StateError>;
    /// Loads one entry (restore). A list entry appends its items.
    fn import(&mut self, entry: StateEntry) -> Result<(), StateError>;
    /// Drops all state outside `keep` (after restoring a wider range).
    fn retain_key_groups(&mut self, keep: RangeInclusive<u16>) -> Result<(), StateError>;
    /// Writes a durable native checkpoint into `dir` (which must not exist
    /// yet) and returns true, or returns false if the backend has no native
    /// format (the caller then writes a portable snapshot from `export`).
    fn native_checkpoint(&mut self, dir: &Path) -> Result<bool, StateError>;
}
