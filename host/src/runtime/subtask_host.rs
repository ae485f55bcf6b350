//! What a plugin instance can reach: the keyed state, timers and outputs of
//! its subtask, always through an item of the batch in hand.
//!
//! This is the runtime's side of the WIT contract. Reads are host calls
//! (`value-get(state, item)`...); writes come back as the batch's changes and
//! are applied here, in order, after the call. Every state id, item index and
//! output name a plugin hands over is checked: a bad one traps the call (for
//! reads) or rejects the item (for changes), never a host panic.

use super::outputs::OutputBuffer;
use super::timer_service::TimeDomain;
use super::timers::Timers;
use crate::connectors::{Origin, OutputRecord};
use crate::engine::bindings::weir::plugin::state::StateKind as WitStateKind;
use crate::engine::bindings::weir::plugin::{log, state, timers, types};
use crate::engine::{Change, ChangeOp, PluginHost, bindings};
use crate::spec::{DEAD_LETTER_OUTPUT, LATE_OUTPUT, MAIN_OUTPUT};
use crate::state::{KeyedStateBackend, StateCatalog, StateError, StateId, StateKind};

/// The key, key group and time of one item of the batch in hand.
#[derive(Debug, Clone, Copy)]
struct ItemScope {
    key_group: u16,
    key_start: u32,
    key_len: u32,
    timestamp: Option<i64>,
    origin: Origin,
    /// Outputs the item has emitted so far in this call.
    emitted: u32,
}

/// The items of the current batch; keys are packed into one buffer so that
/// preparing a batch allocates nothing per item.
#[derive(Default)]
pub(crate) struct BatchScope {
    keys: Vec<u8>,
    items: Vec<ItemScope>,
}

impl BatchScope {
    pub(crate) fn clear(&mut self) {
        self.keys.clear();
        self.items.clear();
    }

    pub(crate) fn push(
        &mut self,
        key_group: u16,
        key: &[u8],
        timestamp: Option<i64>,
        origin: Origin,
    ) {
        self.items.push(ItemScope {
            key_group,
            key_start: self.keys.len() as u32,
            key_len: key.len() as u32,
            timestamp,
            origin,
            emitted: 0,
        });
        self.keys.extend_from_slice(key);
    }

    /// The origin of the next output of `item`: its `n`-th.
    fn next_output(&mut self, item: u32) -> Origin {
        match self.items.get_mut(item as usize) {
            Some(scope) => {
                scope.emitted += 1;
                scope.origin.nth(scope.emitted - 1)
            }
            None => Origin::Unknown,
        }
    }

    fn get(&self, item: u32) -> Option<(u16, &[u8], Option<i64>)> {
        let scope = self.items.get(item as usize)?;
        let start = scope.key_start as usize;
        Some((
            scope.key_group,
            &self.keys[start..start + scope.key_len as usize],
            scope.timestamp,
        ))
    }
}

/// Why a change of the batch result could not be applied.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ChangeError {
    #[error("the plugin returned a change for item {item} of a {len}-item batch")]
    NoSuchItem { item: u32, len: usize },
    #[error("the plugin wrote to state id {0}, which it never declared")]
    NoSuchState(u32),
    #[error("the plugin used state {name:?}, a {kind} state, as a {used} state")]
    WrongKind {
        name: String,
        kind: StateKind,
        used: StateKind,
    },
    #[error(
        "a plugin cannot emit to the output {0:?}: `late` and `dead-letter` are the host's, and names must not be empty"
    )]
    ReservedOutput(String),
    #[error("the plugin emitted to an output whose name is not UTF-8")]
    OutputNameNotUtf8,
    #[error("the plugin returned a {} change without its {field}", op_name(*op))]
    Missing { op: ChangeOp, field: &'static str },
    #[error(transparent)]
    State(#[from] StateError),
}

pub(crate) struct SubtaskHost {
    pub(crate) pipeline: String,
    pub(crate) subtask: usize,
    pub(crate) backend: Box<dyn KeyedStateBackend>,
    pub(crate) catalog: StateCatalog,
    pub(crate) timers: Timers,
    pub(crate) outputs: OutputBuffer,
    pub(crate) scope: BatchScope,
    pub(crate) watermark: i64,
    /// The last error the plugin logged during the call: a panic message
    /// reaches the host this way before the trap.
    pub(crate) last_error_log: Option<String>,
    pub(crate) counters: rustc_hash::FxHashMap<String, u64>,
    main_output: usize,
}

/// The declared kind of `state`, checked against the kind it is used as.
fn checked(catalog: &StateCatalog, state: u32, used: StateKind) -> Result<StateId, ChangeError> {
    if state as usize >= catalog.len() {
        return Err(ChangeError::NoSuchState(state));
    }
    let kind = catalog.kind(state);
    if kind != used {
        return Err(ChangeError::WrongKind {
            name: catalog.name(state).to_owned(),
            kind,
            used,
        });
    }
    Ok(state)
}

/// The item a read names, or a trap that says what is wrong.
fn read_item(scope: &BatchScope, item: u32) -> wasmtime::Result<(u16, &[u8])> {
    match scope.get(item) {
        Some((kg, key, _)) => Ok((kg, key)),
        None if scope.items.is_empty() => Err(wasmtime::Error::msg(
            "state is only readable while handling a batch, not in open",
        )),
        None => Err(ChangeError::NoSuchItem {
            item,
            len: scope.items.len(),
        }
        .into()),
    }
}

impl SubtaskHost {
    pub(crate) fn new(
        pipeline: String,
        subtask: usize,
        backend: Box<dyn KeyedStateBackend>,
    ) -> Self {
        let mut outputs = OutputBuffer::default();
        let main_output = outputs.id(MAIN_OUTPUT);
        Self {
            pipeline,
            subtask,
            backend,
            catalog: StateCatalog::default(),
            timers: Timers::default(),
            outputs,
            scope: BatchScope::default(),
            watermark: i64::MIN,
            last_error_log: None,
            counters: Default::default(),
            main_output,
        }
    }

    /// Applies one change of the batch in hand to its item's key.
    pub(crate) fn apply(&mut self, change: Change<'_>) -> Result<(), ChangeError> {
        let item = change.item;
        let (kg, key, timestamp) = self.scope.get(item).ok_or(ChangeError::NoSuchItem {
            item,
            len: self.scope.items.len(),
        })?;
        let op = change.op;
        let missing = |field| ChangeError::Missing { op, field };
        let value = || change.value.ok_or(missing("value"));
        let map_key = || change.key.ok_or(missing("map key"));
        let state = |kind| checked(&self.catalog, change.state, kind);
        match op {
            ChangeOp::ValueSet => {
                let id = state(StateKind::Value)?;
                self.backend.value_set(kg, id, key, value()?)?;
            }
            ChangeOp::ValueClear => {
                let id = state(StateKind::Value)?;
                self.backend.value_clear(kg, id, key)?;
            }
            ChangeOp::MapPut => {
                let id = state(StateKind::Map)?;
                let (map_key, value) = (map_key()?.to_vec(), value()?.to_vec());
                self.backend.map_put(kg, id, key, map_key, value)?;
            }
            ChangeOp::MapRemove => {
                let id = state(StateKind::Map)?;
                self.backend.map_remove(kg, id, key, map_key()?)?;
            }
            ChangeOp::MapClear => {
                let id = state(StateKind::Map)?;
                self.backend.map_clear(kg, id, key)?;
            }
            ChangeOp::ListAppend => {
                let id = state(StateKind::List)?;
                self.backend.list_append(kg, id, key, value()?.to_vec())?;
            }
            ChangeOp::ListClear => {
                let id = state(StateKind::List)?;
                self.backend.list_clear(kg, id, key)?;
            }
            ChangeOp::TimerRegister => {
                let domain = domain(change.domain);
                self.timers.register(domain, kg, key, change.timestamp)?;
            }
            ChangeOp::TimerDelete => {
                let domain = domain(change.domain);
                self.timers.delete(domain, key, change.timestamp)?;
            }
            ChangeOp::Emit => {
                let value = value()?.to_vec();
                let output = match change.name {
                    None => self.main_output,
                    Some(name) if name == MAIN_OUTPUT.as_bytes() => self.main_output,
                    Some(name) => {
                        let name = std::str::from_utf8(name)
                            .map_err(|_| ChangeError::OutputNameNotUtf8)?;
                        if name.is_empty() || name == LATE_OUTPUT || name == DEAD_LETTER_OUTPUT {
                            return Err(ChangeError::ReservedOutput(name.to_owned()));
                        }
                        self.outputs.id(name)
                    }
                };
                let origin = self.scope.next_output(item);
                let record = OutputRecord {
                    key: change.key.map(<[u8]>::to_vec),
                    value,
                    timestamp,
                    origin,
                };
                self.outputs.push(output, record);
            }
        }
        Ok(())
    }
}

/// An op as the contract spells it.
fn op_name(op: ChangeOp) -> &'static str {
    match op {
        ChangeOp::ValueSet => "value-set",
        ChangeOp::ValueClear => "value-clear",
        ChangeOp::MapPut => "map-put",
        ChangeOp::MapRemove => "map-remove",
        ChangeOp::MapClear => "map-clear",
        ChangeOp::ListAppend => "list-append",
        ChangeOp::ListClear => "list-clear",
        ChangeOp::TimerRegister => "timer-register",
        ChangeOp::TimerDelete => "timer-delete",
        ChangeOp::Emit => "emit",
    }
}

fn domain(domain: bindings::TimeDomain) -> TimeDomain {
    match domain {
        bindings::TimeDomain::EventTime => TimeDomain::EventTime,
        bindings::TimeDomain::ProcessingTime => TimeDomain::ProcessingTime,
    }
}

fn state_err(e: StateError) -> wasmtime::Error {
    wasmtime::Error::msg(e.to_string())
}

impl PluginHost for SubtaskHost {}

impl types::Host for SubtaskHost {}

impl state::Host for SubtaskHost {
    fn declare(&mut self, name: String, kind: WitStateKind) -> wasmtime::Result<u32> {
        let kind = match kind {
            WitStateKind::Value => StateKind::Value,
            WitStateKind::Map => StateKind::Map,
            WitStateKind::List => StateKind::List,
        };
        self.catalog
            .declare(&name, kind)
            .map_err(wasmtime::Error::msg)
    }

    fn value_get(&mut self, state: u32, item: u32) -> wasmtime::Result<Option<Vec<u8>>> {
        let id = checked(&self.catalog, state, StateKind::Value)?;
        // Disjoint fields: the key borrows the scope, the call the backend.
        let (kg, key) = read_item(&self.scope, item)?;
        self.backend.value_get(kg, id, key).map_err(state_err)
    }

    fn value_get_batch(&mut self, state: u32) -> wasmtime::Result<state::BatchValues> {
        let id = checked(&self.catalog, state, StateKind::Value)?;
        read_item(&self.scope, 0)?;
        let items = self.scope.items.len();
        let mut values = state::BatchValues {
            bytes: Vec::new(),
            lengths: Vec::with_capacity(items),
        };
        for item in 0..items as u32 {
            let (kg, key) = read_item(&self.scope, item)?;
            let before = values.bytes.len();
            let present = self
                .backend
                .value_get_into(kg, id, key, &mut values.bytes)
                .map_err(state_err)?;
            let len = if present {
                // A plugin's memory is capped far below 2 GiB, so a value
                // it wrote always fits.
                i32::try_from(values.bytes.len() - before)
                    .map_err(|_| wasmtime::Error::msg("a state value exceeds 2 GiB"))?
            } else {
                -1
            };
            values.lengths.push(len);
        }
        Ok(values)
    }

    fn map_get(
        &mut self,
        state: u32,
        item: u32,
        map_key: Vec<u8>,
    ) -> wasmtime::Result<Option<Vec<u8>>> {
        let id = checked(&self.catalog, state, StateKind::Map)?;
        let (kg, key) = read_item(&self.scope, item)?;
        self.backend
            .map_get(kg, id, key, &map_key)
            .map_err(state_err)
    }

    fn map_entries(&mut self, state: u32, item: u32) -> wasmtime::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let id = checked(&self.catalog, state, StateKind::Map)?;
        let (kg, key) = read_item(&self.scope, item)?;
        self.backend.map_entries(kg, id, key).map_err(state_err)
    }

    fn list_read(&mut self, state: u32, item: u32) -> wasmtime::Result<Vec<Vec<u8>>> {
        let id = checked(&self.catalog, state, StateKind::List)?;
        let (kg, key) = read_item(&self.scope, item)?;
        self.backend.list_read(kg, id, key).map_err(state_err)
    }
}

impl timers::Host for SubtaskHost {
    fn current_watermark(&mut self) -> wasmtime::Result<i64> {
        Ok(self.watermark)
    }

    fn current_processing_time(&mut self) -> wasmtime::Result<i64> {
        Ok(super::now_ms())
    }
}

impl log::Host for SubtaskHost {
    fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        let (pipeline, subtask) = (&self.pipeline, self.subtask);
        match level {
            log::Level::Trace => tracing::trace!(pipeline, subtask, "plugin: {message}"),
            log::Level::Debug => tracing::debug!(pipeline, subtask, "plugin: {message}"),
            log::Level::Info => tracing::info!(pipeline, subtask, "plugin: {message}"),
            log::Level::Warn => tracing::warn!(pipeline, subtask, "plugin: {message}"),
            log::Level::Error => {
                tracing::error!(pipeline, subtask, "plugin: {message}");
                self.last_error_log = Some(message);
            }
        }
        Ok(())
    }

    fn counter_add(&mut self, name: String, delta: u64) -> wasmtime::Result<()> {
        *self.counters.entry(name).or_default() += delta;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::key_groups::key_group;
    use crate::state::MemoryBackend;
    use state::Host as _;

    fn host_with_batch(keys: &[&[u8]]) -> SubtaskHost {
        let mut host = SubtaskHost::new("t".into(), 0, Box::new(MemoryBackend::default()));
        for key in keys {
            host.scope
                .push(key_group(key), key, None, Origin::default());
        }
        host
    }

    #[test]
    fn a_batch_read_gives_each_item_what_a_single_read_gives() {
        let mut host = host_with_batch(&[b"a", b"b", b"c", b"a"]);
        let window = host.declare("window".into(), WitStateKind::Value).unwrap();
        let other = host.declare("other".into(), WitStateKind::Value).unwrap();
        host.backend
            .value_set(key_group(b"a"), window, b"a", b"one")
            .unwrap();
        // Present but empty is not absent.
        host.backend
            .value_set(key_group(b"c"), window, b"c", b"")
            .unwrap();
        host.backend
            .value_set(key_group(b"b"), other, b"b", b"x")
            .unwrap();

        let batch = host.value_get_batch(window).unwrap();
        assert_eq!(batch.lengths, [3, -1, 0, 3]);
        assert_eq!(batch.bytes, b"oneone");
        let mut start = 0;
        for (item, &len) in batch.lengths.iter().enumerate() {
            let from_batch = usize::try_from(len).ok().map(|len| {
                start += len;
                batch.bytes[start - len..start].to_vec()
            });
            assert_eq!(from_batch, host.value_get(window, item as u32).unwrap());
        }
    }

    #[test]
    fn a_batch_read_outside_a_batch_or_of_another_kind_traps_with_the_reason() {
        let mut host = host_with_batch(&[]);
        let window = host.declare("window".into(), WitStateKind::Value).unwrap();
        let seen = host.declare("seen".into(), WitStateKind::Map).unwrap();
        let error = host.value_get_batch(window).unwrap_err().to_string();
        assert!(error.contains("not in open"), "{error}");

        let mut host = host_with_batch(&[b"a"]);
        host.declare("window".into(), WitStateKind::Value).unwrap();
        host.declare("seen".into(), WitStateKind::Map).unwrap();
        let error = host.value_get_batch(seen).unwrap_err().to_string();
        assert!(error.contains("a map state, as a value state"), "{error}");
        let error = host.value_get_batch(7).unwrap_err().to_string();
        assert!(error.contains("never declared"), "{error}");
    }
}
