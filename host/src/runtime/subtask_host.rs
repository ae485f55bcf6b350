//! What a plugin instance can reach: the keyed state, timers and outputs of
//! its subtask, always through an item of the batch in hand.
//!
//! This is the runtime's side of the WIT contract. Reads are host calls
//! (`value-get(state, item)`...); writes come back as the batch's changes and
//! are applied here, in order, after the call. Every state id, item index and
//! output name a plugin hands over is checked: a bad one traps the call (for
//! reads) or rejects the item (for changes), never a host panic.
//!
//! What a plugin can make the host hold is bounded too (docs/api.md,
//! "Limits"): the size of a state value, of a read's result, the number of
//! output and counter names per pipeline, and the size and rate of log
//! lines. A write over a limit rejects its item and a read over one traps
//! the call, so the item goes to `dead-letter` with a reason naming the
//! limit; log lines over a limit are cut or dropped, with a notice.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::outputs::OutputBuffer;
use super::timer_service::TimeDomain;
use super::timers::Timers;
use crate::connectors::{Origin, OutputRecord};
use crate::engine::bindings::weir::plugin::state::StateKind as WitStateKind;
use crate::engine::bindings::weir::plugin::{log, state, timers, types};
use crate::engine::{Change, ChangeOp, PluginHost, bindings};
use crate::spec::{DEAD_LETTER_OUTPUT, LATE_OUTPUT, MAIN_OUTPUT};
use crate::state::{KeyedStateBackend, StateCatalog, StateError, StateId, StateKind};

/// The largest state value a plugin may write: a value state's value, a map
/// entry (key and value together) or a list item.
pub const MAX_STATE_VALUE_BYTES: usize = 1 << 20;
/// The most one state read (`value-get-batch`, `map-entries`, `list-read`)
/// may return: the host builds the result before the plugin sees it.
pub const MAX_READ_BYTES: usize = 16 << 20;
/// Distinct output names a pipeline's plugin may emit to, besides `main`.
pub const MAX_OUTPUT_NAMES: usize = 64;
/// Distinct counter names a pipeline's plugin may add to.
pub const MAX_COUNTER_NAMES: usize = 256;
/// The longest output or counter name, in bytes.
pub const MAX_NAME_BYTES: usize = 256;
/// The longest log line kept; a longer one is cut.
pub const MAX_LOG_LINE_BYTES: usize = 4096;
/// Log lines a subtask's plugin may write per second; the rest are dropped.
pub const MAX_LOG_LINES_PER_SECOND: u32 = 100;

/// A limit on what a plugin may make the host hold.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LimitError {
    #[error(
        "the plugin wrote a {what} of {len} bytes: the limit is {MAX_STATE_VALUE_BYTES} bytes per state value"
    )]
    StateValue { what: &'static str, len: usize },
    #[error(
        "the plugin's {call} would return {len} bytes or more: the limit is {MAX_READ_BYTES} bytes per state read"
    )]
    Read { call: &'static str, len: usize },
    #[error(
        "the plugin emitted to a new output {name:?}: the limit is {MAX_OUTPUT_NAMES} output names per pipeline"
    )]
    OutputNames { name: String },
    #[error(
        "the plugin added to a new counter {name:?}: the limit is {MAX_COUNTER_NAMES} counter names per pipeline"
    )]
    CounterNames { name: String },
    #[error("the plugin used a {what} name of {len} bytes: the limit is {MAX_NAME_BYTES} bytes")]
    NameLength { what: &'static str, len: usize },
}

/// The output and counter names a pipeline's plugin has used, shared by its
/// subtasks, so that their number is bounded per pipeline (each becomes a
/// series in `/metrics` and a line in the summary).
#[derive(Debug, Default)]
pub(crate) struct PipelineNames {
    outputs: Mutex<rustc_hash::FxHashSet<String>>,
    counters: Mutex<rustc_hash::FxHashSet<String>>,
}

impl PipelineNames {
    fn admit(
        names: &Mutex<rustc_hash::FxHashSet<String>>,
        name: &str,
        limit: usize,
    ) -> Result<(), ()> {
        let mut names = names.lock().unwrap_or_else(|e| e.into_inner());
        if names.contains(name) {
            return Ok(());
        }
        if names.len() >= limit {
            return Err(());
        }
        names.insert(name.to_owned());
        Ok(())
    }

    fn admit_output(&self, name: &str) -> Result<(), LimitError> {
        check_name("output", name)?;
        Self::admit(&self.outputs, name, MAX_OUTPUT_NAMES).map_err(|()| LimitError::OutputNames {
            name: name.to_owned(),
        })
    }

    fn admit_counter(&self, name: &str) -> Result<(), LimitError> {
        check_name("counter", name)?;
        Self::admit(&self.counters, name, MAX_COUNTER_NAMES).map_err(|()| {
            LimitError::CounterNames {
                name: name.to_owned(),
            }
        })
    }
}

fn check_name(what: &'static str, name: &str) -> Result<(), LimitError> {
    if name.len() > MAX_NAME_BYTES {
        return Err(LimitError::NameLength {
            what,
            len: name.len(),
        });
    }
    Ok(())
}

/// A state value of `len` bytes the plugin writes, checked against its limit.
fn check_value(what: &'static str, len: usize) -> Result<(), LimitError> {
    if len > MAX_STATE_VALUE_BYTES {
        return Err(LimitError::StateValue { what, len });
    }
    Ok(())
}

/// A read's result of `len` bytes so far, checked against the budget.
fn check_read(call: &'static str, len: usize) -> wasmtime::Result<()> {
    if len > MAX_READ_BYTES {
        return Err(LimitError::Read { call, len }.into());
    }
    Ok(())
}

/// The log lines of one subtask's plugin in the current second.
struct LogBudget {
    second: Instant,
    lines: u32,
}

impl Default for LogBudget {
    fn default() -> Self {
        Self {
            second: Instant::now(),
            lines: 0,
        }
    }
}

impl LogBudget {
    /// Whether a line may be written now; the first line dropped in a
    /// second is replaced by a notice.
    fn admit(&mut self, pipeline: &str, subtask: usize) -> bool {
        let now = Instant::now();
        if now.duration_since(self.second) >= Duration::from_secs(1) {
            self.second = now;
            self.lines = 0;
        }
        self.lines = self.lines.saturating_add(1);
        if self.lines == MAX_LOG_LINES_PER_SECOND + 1 {
            tracing::warn!(
                pipeline,
                subtask,
                "plugin log rate limit reached ({MAX_LOG_LINES_PER_SECOND} lines a second per subtask): dropping its lines for the rest of this second"
            );
        }
        self.lines <= MAX_LOG_LINES_PER_SECOND
    }
}

/// `message` cut to `MAX_LOG_LINE_BYTES` (at a character boundary).
fn cut_log_line(mut message: String) -> String {
    if message.len() > MAX_LOG_LINE_BYTES {
        let total = message.len();
        let mut end = MAX_LOG_LINE_BYTES;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push_str(&format!(
            "... (cut: {total} bytes, the limit is {MAX_LOG_LINE_BYTES})"
        ));
    }
    message
}

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
    Limit(#[from] LimitError),
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
    /// The output and counter names of the whole pipeline.
    pub(crate) names: Arc<PipelineNames>,
    log_budget: LogBudget,
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
            names: Default::default(),
            log_budget: LogBudget::default(),
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
                let value = value()?;
                check_value("value", value.len())?;
                self.backend.value_set(kg, id, key, value)?;
            }
            ChangeOp::ValueClear => {
                let id = state(StateKind::Value)?;
                self.backend.value_clear(kg, id, key)?;
            }
            ChangeOp::MapPut => {
                let id = state(StateKind::Map)?;
                let (map_key, value) = (map_key()?, value()?);
                check_value("map entry", map_key.len() + value.len())?;
                let (map_key, value) = (map_key.to_vec(), value.to_vec());
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
                let value = value()?;
                check_value("list item", value.len())?;
                self.backend.list_append(kg, id, key, value.to_vec())?;
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
                        match self.outputs.known(name) {
                            Some(id) => id,
                            None => {
                                self.names.admit_output(name)?;
                                self.outputs.id(name)
                            }
                        }
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
            check_read("value-get-batch", values.bytes.len())?;
            let len = if present {
                // Bounded by the read budget, far below 2 GiB.
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
        let entries = self.backend.map_entries(kg, id, key).map_err(state_err)?;
        check_read(
            "map-entries",
            entries.iter().map(|(k, v)| k.len() + v.len()).sum(),
        )?;
        Ok(entries)
    }

    fn list_read(&mut self, state: u32, item: u32) -> wasmtime::Result<Vec<Vec<u8>>> {
        let id = checked(&self.catalog, state, StateKind::List)?;
        let (kg, key) = read_item(&self.scope, item)?;
        let items = self.backend.list_read(kg, id, key).map_err(state_err)?;
        check_read("list-read", items.iter().map(Vec::len).sum())?;
        Ok(items)
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
        let message = cut_log_line(message);
        let (pipeline, subtask) = (&self.pipeline, self.subtask);
        if !self.log_budget.admit(pipeline, subtask) {
            // Dropped, but a panic's message still reaches the dead letter.
            if matches!(level, log::Level::Error) {
                self.last_error_log = Some(message);
            }
            return Ok(());
        }
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
        match self.counters.get_mut(&name) {
            Some(count) => *count += delta,
            None => {
                self.names.admit_counter(&name)?;
                self.counters.insert(name, delta);
            }
        }
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

    fn change<'a>(op: ChangeOp, state: u32, fields: [Option<&'a [u8]>; 3]) -> Change<'a> {
        let [name, key, value] = fields;
        Change {
            item: 0,
            op,
            state,
            domain: bindings::TimeDomain::EventTime,
            timestamp: 0,
            name,
            key,
            value,
        }
    }

    #[test]
    fn a_state_write_over_the_value_limit_rejects_its_item_naming_the_limit() {
        let mut host = host_with_batch(&[b"a"]);
        let value = host.declare("v".into(), WitStateKind::Value).unwrap();
        let map = host.declare("m".into(), WitStateKind::Map).unwrap();
        let list = host.declare("l".into(), WitStateKind::List).unwrap();
        let at_limit = vec![7u8; MAX_STATE_VALUE_BYTES];
        let over = vec![7u8; MAX_STATE_VALUE_BYTES + 1];
        host.apply(change(
            ChangeOp::ValueSet,
            value,
            [None, None, Some(&at_limit)],
        ))
        .unwrap();
        host.apply(change(
            ChangeOp::ListAppend,
            list,
            [None, None, Some(&at_limit)],
        ))
        .unwrap();
        for (op, state, key) in [
            (ChangeOp::ValueSet, value, None),
            (ChangeOp::ListAppend, list, None),
            (ChangeOp::MapPut, map, Some(&b"k"[..])),
        ] {
            let error = host
                .apply(change(op, state, [None, key, Some(&over)]))
                .unwrap_err()
                .to_string();
            assert!(
                error.contains(&format!("limit is {MAX_STATE_VALUE_BYTES} bytes")),
                "{error}"
            );
        }
        // A map entry counts its key too.
        let error = host
            .apply(change(
                ChangeOp::MapPut,
                map,
                [None, Some(b"kk"), Some(&at_limit)],
            ))
            .unwrap_err()
            .to_string();
        assert!(error.contains("map entry"), "{error}");
        assert_eq!(
            host.value_get(value, 0).unwrap().map(|v| v.len()),
            Some(MAX_STATE_VALUE_BYTES),
            "the value within the limit was kept, the one over it refused"
        );
    }

    #[test]
    fn a_read_over_the_budget_traps_naming_the_limit() {
        let mut host = host_with_batch(&[b"a", b"b"]);
        let list = host.declare("l".into(), WitStateKind::List).unwrap();
        let map = host.declare("m".into(), WitStateKind::Map).unwrap();
        let item = vec![1u8; MAX_STATE_VALUE_BYTES];
        for n in 0..=MAX_READ_BYTES / MAX_STATE_VALUE_BYTES {
            let kg = key_group(b"a");
            host.backend
                .list_append(kg, list, b"a", item.clone())
                .unwrap();
            let map_key = (n as u32).to_be_bytes().to_vec();
            host.backend
                .map_put(kg, map, b"a", map_key, item.clone())
                .unwrap();
        }
        for call in [
            host.list_read(list, 0).map(|_| ()),
            host.map_entries(map, 0).map(|_| ()),
        ] {
            let error = call.unwrap_err().to_string();
            assert!(
                error.contains(&format!("limit is {MAX_READ_BYTES} bytes per state read")),
                "{error}"
            );
        }
        assert!(host.list_read(list, 1).unwrap().is_empty());

        // A batch read stops building its result once over the budget.
        let mut host = host_with_batch(&vec![&b"k"[..]; 17]);
        let value = host.declare("v".into(), WitStateKind::Value).unwrap();
        host.backend
            .value_set(key_group(b"k"), value, b"k", &item)
            .unwrap();
        let error = host.value_get_batch(value).unwrap_err().to_string();
        assert!(error.contains("value-get-batch"), "{error}");
    }

    #[test]
    fn output_and_counter_names_are_bounded_per_pipeline_across_subtasks() {
        let names = Arc::new(PipelineNames::default());
        let mut subtasks: Vec<SubtaskHost> = (0..2)
            .map(|_| {
                let mut host = host_with_batch(&[b"a"]);
                host.names = names.clone();
                host
            })
            .collect();
        let emit = |host: &mut SubtaskHost, name: &str| {
            host.apply(change(
                ChangeOp::Emit,
                0,
                [Some(name.as_bytes()), None, Some(b"x")],
            ))
        };
        // `main` is not counted; the subtasks share the other names.
        emit(&mut subtasks[0], "main").unwrap();
        for n in 0..MAX_OUTPUT_NAMES {
            emit(&mut subtasks[n % 2], &format!("out-{n}")).unwrap();
        }
        let error = emit(&mut subtasks[1], "one-more").unwrap_err().to_string();
        assert!(
            error.contains(&format!(
                "limit is {MAX_OUTPUT_NAMES} output names per pipeline"
            )),
            "{error}"
        );
        // Names already in use stay usable, from any subtask.
        emit(&mut subtasks[0], "out-1").unwrap();
        let long = "x".repeat(MAX_NAME_BYTES + 1);
        let fresh = &mut host_with_batch(&[b"a"]);
        let error = emit(fresh, &long).unwrap_err().to_string();
        assert!(error.contains("output name of 257 bytes"), "{error}");

        use log::Host as _;
        for n in 0..MAX_COUNTER_NAMES {
            subtasks[n % 2].counter_add(format!("c-{n}"), 1).unwrap();
        }
        // Flushed counters (drained) still count against the limit.
        subtasks[0].counters.clear();
        subtasks[0].counter_add("c-0".into(), 1).unwrap();
        let error = subtasks[0]
            .counter_add("c-new".into(), 1)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(&format!(
                "limit is {MAX_COUNTER_NAMES} counter names per pipeline"
            )),
            "{error}"
        );
    }

    #[test]
    fn log_lines_are_cut_to_their_limit_and_a_flood_is_dropped() {
        let line = cut_log_line("é".repeat(MAX_LOG_LINE_BYTES));
        assert!(line.len() < MAX_LOG_LINE_BYTES + 100, "{}", line.len());
        assert!(line.ends_with(&format!(
            "(cut: {} bytes, the limit is {MAX_LOG_LINE_BYTES})",
            2 * MAX_LOG_LINE_BYTES
        )));
        assert_eq!(cut_log_line("short".into()), "short");

        let mut budget = LogBudget::default();
        let admitted = (0..10 * MAX_LOG_LINES_PER_SECOND)
            .filter(|_| budget.admit("t", 0))
            .count();
        assert_eq!(admitted, MAX_LOG_LINES_PER_SECOND as usize);
        budget.second -= Duration::from_secs(1);
        assert!(budget.admit("t", 0), "a new second has a new budget");

        // A dropped error line is still the message a trap reports.
        use log::Host as _;
        let mut host = host_with_batch(&[]);
        host.log_budget.lines = MAX_LOG_LINES_PER_SECOND;
        host.log(log::Level::Error, "boom".into()).unwrap();
        assert_eq!(host.last_error_log.as_deref(), Some("boom"));
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
