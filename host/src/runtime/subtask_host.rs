//! What a plugin instance can reach: the keyed state, timers and outputs of
//! its subtask, always scoped to the item (event or timer) in hand.
//!
//! This is the runtime's side of the WIT imports. It checks every call (no
//! state outside an item, no kind confusion, no reserved output names) and
//! turns a bad call into a trap with a message, never a host panic.

use wasmtime::component::Resource;

use super::outputs::OutputBuffer;
use super::timer_service::{TimeDomain, TimerService};
use crate::connectors::OutputRecord;
use crate::engine::bindings::weir::plugin::{log, output, state, timers};
use crate::engine::{ListStateHandle, MapStateHandle, PluginHost, ValueStateHandle};
use crate::spec::{DEAD_LETTER_OUTPUT, LATE_OUTPUT, MAIN_OUTPUT};
use crate::state::{KeyedStateBackend, StateCatalog, StateId, StateKind};

/// The key, key group and time of one item of the batch in hand.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ItemScope {
    pub(crate) key_group: u16,
    key_start: u32,
    key_len: u32,
    pub(crate) timestamp: Option<i64>,
}

/// The scopes of the current batch; keys are packed into one buffer so that
/// preparing a batch allocates nothing per item.
#[derive(Default)]
pub(crate) struct BatchScope {
    keys: Vec<u8>,
    items: Vec<ItemScope>,
    current: Option<usize>,
}

impl BatchScope {
    pub(crate) fn clear(&mut self) {
        self.keys.clear();
        self.items.clear();
        self.current = None;
    }

    pub(crate) fn push(&mut self, key_group: u16, key: &[u8], timestamp: Option<i64>) {
        self.items.push(ItemScope {
            key_group,
            key_start: self.keys.len() as u32,
            key_len: key.len() as u32,
            timestamp,
        });
        self.keys.extend_from_slice(key);
    }

    /// The item the plugin last entered, if any.
    pub(crate) fn current(&self) -> Option<usize> {
        self.current
    }
}

pub(crate) struct SubtaskHost {
    pub(crate) pipeline: String,
    pub(crate) subtask: usize,
    pub(crate) backend: Box<dyn KeyedStateBackend>,
    pub(crate) catalog: StateCatalog,
    pub(crate) timers: TimerService,
    pub(crate) outputs: OutputBuffer,
    pub(crate) scope: BatchScope,
    pub(crate) watermark: i64,
    /// Where the current item's outputs start, to drop them if it traps.
    pub(crate) item_output_mark: usize,
    /// The last error the plugin logged in this batch: a panic message
    /// reaches the host this way before the trap.
    pub(crate) last_error_log: Option<String>,
    pub(crate) counters: rustc_hash::FxHashMap<String, u64>,
    main_output: usize,
}

fn no_item() -> wasmtime::Error {
    wasmtime::Error::msg(
        "state, timers and outputs are only available while handling an event or a timer \
         (after scope.enter), not in open",
    )
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
            timers: TimerService::default(),
            outputs,
            scope: BatchScope::default(),
            watermark: i64::MIN,
            item_output_mark: 0,
            last_error_log: None,
            counters: Default::default(),
            main_output,
        }
    }

    /// The current item's timestamp.
    fn item_timestamp(&self) -> wasmtime::Result<Option<i64>> {
        let i = self.scope.current.ok_or_else(no_item)?;
        Ok(self.scope.items[i].timestamp)
    }

    fn state_id<T: 'static>(
        &self,
        handle: &Resource<T>,
        kind: StateKind,
    ) -> wasmtime::Result<StateId> {
        let id = handle.rep();
        // The component model hands back only handles we created, so the id
        // exists; the kind check guards against a confused guest SDK.
        if self.catalog.kind(id) != kind {
            return Err(wasmtime::Error::msg(format!(
                "state {:?} is a {} state, used as a {kind} state",
                self.catalog.name(id),
                self.catalog.kind(id)
            )));
        }
        Ok(id)
    }

    fn declare<T: 'static>(
        &mut self,
        name: &str,
        kind: StateKind,
    ) -> wasmtime::Result<Resource<T>> {
        let id = self
            .catalog
            .declare(name, kind)
            .map_err(wasmtime::Error::msg)?;
        Ok(Resource::new_own(id))
    }

    fn emit_record(
        &mut self,
        output: usize,
        key: Option<Vec<u8>>,
        value: Vec<u8>,
    ) -> wasmtime::Result<()> {
        let timestamp = self.item_timestamp()?;
        self.outputs.push(
            output,
            OutputRecord {
                key,
                value,
                timestamp,
            },
        );
        Ok(())
    }
}

/// Evaluates `body` with the current item's key group and key, borrowing
/// the scope and the rest of the host separately (no copy of the key).
macro_rules! with_key {
    ($self:ident, |$kg:ident, $key:ident| $body:expr) => {{
        let i = $self.scope.current.ok_or_else(no_item)?;
        let item = $self.scope.items[i];
        let $kg = item.key_group;
        let $key =
            &$self.scope.keys[item.key_start as usize..(item.key_start + item.key_len) as usize];
        $body
    }};
}

fn state_err(e: crate::state::StateError) -> wasmtime::Error {
    wasmtime::Error::msg(e.to_string())
}

impl PluginHost for SubtaskHost {
    fn enter(&mut self, index: u32) -> wasmtime::Result<()> {
        let index = index as usize;
        if index >= self.scope.items.len() {
            return Err(wasmtime::Error::msg(format!(
                "scope.enter({index}) but the batch has {} items",
                self.scope.items.len()
            )));
        }
        if self.scope.current.is_some_and(|c| index < c) {
            return Err(wasmtime::Error::msg(format!(
                "scope.enter({index}) after entering item {}: items must be handled in order",
                self.scope.current.unwrap_or(0)
            )));
        }
        self.scope.current = Some(index);
        self.item_output_mark = self.outputs.mark();
        Ok(())
    }
}

impl state::Host for SubtaskHost {}

impl state::HostValueState for SubtaskHost {
    fn new(&mut self, name: String) -> wasmtime::Result<Resource<ValueStateHandle>> {
        self.declare(&name, StateKind::Value)
    }

    fn get(&mut self, this: Resource<ValueStateHandle>) -> wasmtime::Result<Option<Vec<u8>>> {
        let id = self.state_id(&this, StateKind::Value)?;
        with_key!(self, |kg, key| self
            .backend
            .value_get(kg, id, key)
            .map_err(state_err))
    }

    fn set(&mut self, this: Resource<ValueStateHandle>, value: Vec<u8>) -> wasmtime::Result<()> {
        let id = self.state_id(&this, StateKind::Value)?;
        with_key!(self, |kg, key| self
            .backend
            .value_set(kg, id, key, value)
            .map_err(state_err))
    }

    fn clear(&mut self, this: Resource<ValueStateHandle>) -> wasmtime::Result<()> {
        let id = self.state_id(&this, StateKind::Value)?;
        with_key!(self, |kg, key| self
            .backend
            .value_clear(kg, id, key)
            .map_err(state_err))
    }

    fn drop(&mut self, _rep: Resource<ValueStateHandle>) -> wasmtime::Result<()> {
        Ok(())
    }
}

impl state::HostMapState for SubtaskHost {
    fn new(&mut self, name: String) -> wasmtime::Result<Resource<MapStateHandle>> {
        self.declare(&name, StateKind::Map)
    }

    fn get(
        &mut self,
        this: Resource<MapStateHandle>,
        map_key: Vec<u8>,
    ) -> wasmtime::Result<Option<Vec<u8>>> {
        let id = self.state_id(&this, StateKind::Map)?;
        with_key!(self, |kg, key| self
            .backend
            .map_get(kg, id, key, &map_key)
            .map_err(state_err))
    }

    fn put(
        &mut self,
        this: Resource<MapStateHandle>,
        map_key: Vec<u8>,
        value: Vec<u8>,
    ) -> wasmtime::Result<()> {
        let id = self.state_id(&this, StateKind::Map)?;
        with_key!(self, |kg, key| self
            .backend
            .map_put(kg, id, key, map_key, value)
            .map_err(state_err))
    }

    fn remove(&mut self, this: Resource<MapStateHandle>, map_key: Vec<u8>) -> wasmtime::Result<()> {
        let id = self.state_id(&this, StateKind::Map)?;
        with_key!(self, |kg, key| self
            .backend
            .map_remove(kg, id, key, &map_key)
            .map_err(state_err))
    }

    fn contains(
        &mut self,
        this: Resource<MapStateHandle>,
        map_key: Vec<u8>,
    ) -> wasmtime::Result<bool> {
        let id = self.state_id(&this, StateKind::Map)?;
        with_key!(self, |kg, key| self
            .backend
            .map_get(kg, id, key, &map_key)
            .map(|v| v.is_some())
            .map_err(state_err))
    }

    fn entries(
        &mut self,
        this: Resource<MapStateHandle>,
    ) -> wasmtime::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let id = self.state_id(&this, StateKind::Map)?;
        with_key!(self, |kg, key| self
            .backend
            .map_entries(kg, id, key)
            .map_err(state_err))
    }

    fn is_empty(&mut self, this: Resource<MapStateHandle>) -> wasmtime::Result<bool> {
        let id = self.state_id(&this, StateKind::Map)?;
        with_key!(self, |kg, key| self
            .backend
            .map_entries(kg, id, key)
            .map(|e| e.is_empty())
            .map_err(state_err))
    }

    fn clear(&mut self, this: Resource<MapStateHandle>) -> wasmtime::Result<()> {
        let id = self.state_id(&this, StateKind::Map)?;
        with_key!(self, |kg, key| self
            .backend
            .map_clear(kg, id, key)
            .map_err(state_err))
    }

    fn drop(&mut self, _rep: Resource<MapStateHandle>) -> wasmtime::Result<()> {
        Ok(())
    }
}

impl state::HostListState for SubtaskHost {
    fn new(&mut self, name: String) -> wasmtime::Result<Resource<ListStateHandle>> {
        self.declare(&name, StateKind::List)
    }

    fn append(&mut self, this: Resource<ListStateHandle>, value: Vec<u8>) -> wasmtime::Result<()> {
        let id = self.state_id(&this, StateKind::List)?;
        with_key!(self, |kg, key| self
            .backend
            .list_append(kg, id, key, value)
            .map_err(state_err))
    }

    fn read(&mut self, this: Resource<ListStateHandle>) -> wasmtime::Result<Vec<Vec<u8>>> {
        let id = self.state_id(&this, StateKind::List)?;
        with_key!(self, |kg, key| self
            .backend
            .list_read(kg, id, key)
            .map_err(state_err))
    }

    fn clear(&mut self, this: Resource<ListStateHandle>) -> wasmtime::Result<()> {
        let id = self.state_id(&this, StateKind::List)?;
        with_key!(self, |kg, key| self
            .backend
            .list_clear(kg, id, key)
            .map_err(state_err))
    }

    fn drop(&mut self, _rep: Resource<ListStateHandle>) -> wasmtime::Result<()> {
        Ok(())
    }
}

impl timers::Host for SubtaskHost {
    fn register_event_time(&mut self, timestamp: i64) -> wasmtime::Result<()> {
        with_key!(self, |kg, key| self.timers.register(
            TimeDomain::EventTime,
            kg,
            key,
            timestamp
        ));
        Ok(())
    }

    fn delete_event_time(&mut self, timestamp: i64) -> wasmtime::Result<()> {
        with_key!(self, |_kg, key| self.timers.delete(
            TimeDomain::EventTime,
            key,
            timestamp
        ));
        Ok(())
    }

    fn register_processing_time(&mut self, timestamp: i64) -> wasmtime::Result<()> {
        with_key!(self, |kg, key| self.timers.register(
            TimeDomain::ProcessingTime,
            kg,
            key,
            timestamp
        ));
        Ok(())
    }

    fn delete_processing_time(&mut self, timestamp: i64) -> wasmtime::Result<()> {
        with_key!(self, |_kg, key| self.timers.delete(
            TimeDomain::ProcessingTime,
            key,
            timestamp
        ));
        Ok(())
    }

    fn current_watermark(&mut self) -> wasmtime::Result<i64> {
        Ok(self.watermark)
    }

    fn current_processing_time(&mut self) -> wasmtime::Result<i64> {
        Ok(super::now_ms())
    }
}

impl output::Host for SubtaskHost {
    fn emit(&mut self, key: Option<Vec<u8>>, value: Vec<u8>) -> wasmtime::Result<()> {
        self.emit_record(self.main_output, key, value)
    }

    fn emit_to(
        &mut self,
        output: String,
        key: Option<Vec<u8>>,
        value: Vec<u8>,
    ) -> wasmtime::Result<()> {
        if output == MAIN_OUTPUT {
            return self.emit_record(self.main_output, key, value);
        }
        if output.is_empty() || output == LATE_OUTPUT || output == DEAD_LETTER_OUTPUT {
            return Err(wasmtime::Error::msg(format!(
                "a plugin cannot emit to the output {output:?}: `late` and `dead-letter` are the host's, and names must not be empty"
            )));
        }
        let id = self.outputs.id(&output);
        self.emit_record(id, key, value)
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
