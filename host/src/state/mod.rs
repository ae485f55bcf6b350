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
mod table;

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
    /// `value_get` appending the value to `out` (a batch read packs many
    /// values into one buffer); false if the key holds none.
    fn value_get_into(
        &mut self,
        kg: u16,
        state: StateId,
        key: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<bool, StateError> {
        Ok(append_value(
            out,
            self.value_get(kg, state, key)?.as_deref(),
        ))
    }
    /// Sets the value; it takes a slice because the writes come from a
    /// plugin's packed result, and a small value is stored inline.
    fn value_set(
        &mut self,
        kg: u16,
        state: StateId,
        key: &[u8],
        value: &[u8],
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
    fn import(&mut self, entry: StateEntry) -> Result<(), StateError> {
        import_entry(self, entry)
    }
    /// Drops all state outside `keep` (after restoring a wider range).
    fn retain_key_groups(&mut self, keep: RangeInclusive<u16>) -> Result<(), StateError>;
    /// Writes a durable native checkpoint into `dir` (which must not exist
    /// yet) and returns true, or returns false if the backend has no native
    /// format (the caller then writes a portable snapshot from `export`).
    fn native_checkpoint(&mut self, dir: &Path) -> Result<bool, StateError>;
}

/// Appends `value`, if there is one, to `out`; whether there was.
pub(crate) fn append_value(out: &mut Vec<u8>, value: Option<&[u8]>) -> bool {
    if let Some(value) = value {
        out.extend_from_slice(value);
    }
    value.is_some()
}

/// `import` through the ordinary writes; a backend with a faster path for
/// some entries handles those and hands the rest here.
pub(crate) fn import_entry<B: KeyedStateBackend + ?Sized>(
    b: &mut B,
    entry: StateEntry,
) -> Result<(), StateError> {
    match entry {
        StateEntry::Value {
            kg,
            state,
            key,
            value,
        } => b.value_set(kg, state, &key, &value),
        StateEntry::MapEntry {
            kg,
            state,
            key,
            map_key,
            value,
        } => b.map_put(kg, state, &key, map_key, value),
        StateEntry::List {
            kg,
            state,
            key,
            items,
        } => {
            for item in items {
                b.list_append(kg, state, &key, item)?;
            }
            Ok(())
        }
    }
}

/// Behaviour every backend must show, run by each backend's tests.
#[cfg(test)]
pub(crate) mod behaviour {
    use super::KeyedStateBackend;

    pub(crate) fn values_are_scoped_by_key_and_state(b: &mut dyn KeyedStateBackend) {
        b.value_set(3, 0, b"alice", b"1").unwrap();
        b.value_set(3, 1, b"alice", b"2").unwrap();
        b.value_set(3, 0, b"bob", b"3").unwrap();
        assert_eq!(b.value_get(3, 0, b"alice").unwrap().unwrap(), b"1");
        assert_eq!(b.value_get(3, 1, b"alice").unwrap().unwrap(), b"2");
        assert_eq!(b.value_get(3, 0, b"bob").unwrap().unwrap(), b"3");
        assert_eq!(b.value_get(3, 1, b"bob").unwrap(), None);
        assert_eq!(b.key_count(), 2);
    }

    pub(crate) fn a_key_whose_last_state_is_cleared_is_forgotten(b: &mut dyn KeyedStateBackend) {
        b.value_set(1, 0, b"k", b"v").unwrap();
        b.list_append(1, 2, b"k", b"x".to_vec()).unwrap();
        b.value_clear(1, 0, b"k").unwrap();
        assert_eq!(b.key_count(), 1);
        b.list_clear(1, 2, b"k").unwrap();
        assert_eq!(b.key_count(), 0);
    }

    pub(crate) fn maps_keep_entries_ordered_and_drop_when_emptied(b: &mut dyn KeyedStateBackend) {
        b.map_put(0, 0, b"k", b"b".to_vec(), b"2".to_vec()).unwrap();
        b.map_put(0, 0, b"k", b"a".to_vec(), b"1".to_vec()).unwrap();
        assert_eq!(
            b.map_entries(0, 0, b"k").unwrap(),
            vec![
                (b"a".to_vec(), b"1".to_vec()),
                (b"b".to_vec(), b"2".to_vec())
            ]
        );
        assert_eq!(b.map_get(0, 0, b"k", b"a").unwrap().unwrap(), b"1");
        b.map_remove(0, 0, b"k", b"a").unwrap();
        b.map_remove(0, 0, b"k", b"b").unwrap();
        assert_eq!(b.key_count(), 0);
    }

    pub(crate) fn lists_append_in_order(b: &mut dyn KeyedStateBackend) {
        for v in [b"1", b"2", b"3"] {
            b.list_append(9, 4, b"k", v.to_vec()).unwrap();
        }
        assert_eq!(
            b.list_read(9, 4, b"k").unwrap(),
            vec![b"1".to_vec(), b"2".to_vec(), b"3".to_vec()]
        );
        let view = b.key_state(9, b"k").unwrap();
        assert_eq!(view.lists.len(), 1);
    }
}
