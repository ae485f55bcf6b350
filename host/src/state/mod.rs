//! Keyed state backends.
//!
//! A backend stores the state of the key groups one subtask owns. Every call
//! names the key group, the declared state and the key; the runtime scopes it
//! to the current item, so a plugin can only ever touch the key it handles.
//! Backends know nothing of plugins, timers or outputs.

mod catalog;
mod memory;

pub use catalog::{StateCatalog, StateId, StateKind};
pub use memory::MemoryBackend;

/// Errors a backend can raise. The memory backend raises none; durable
/// backends raise I/O errors here.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state backend I/O failed: {0}")]
    Io(String),
}

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
}
