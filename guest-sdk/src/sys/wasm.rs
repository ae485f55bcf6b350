//! The wasm backend: the `weir:plugin/processor` world as wit-bindgen
//! generates it from `wit/`. Reads cross into the host; writes, timers and
//! outputs are collected as the batch's changes (with an overlay so reads
//! see them) and cross back once, as the batch's result.

use crate::{Event, Level, TimeDomain, Timer};

/// Bindings of the `processor` world. Public (hidden) because `export!`
/// expands in the plugin's crate and invokes wit-bindgen's export macro,
/// which refers to the generated types through this path.
#[doc(hidden)]
#[allow(clippy::all, missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "weir:plugin/processor",
        pub_export_macro: true,
        export_macro_name: "__export_weir_handler",
        default_bindings_module: "::weir_sdk::__private::bindings",
    });

    pub use self::exports::weir::plugin::handler::{Guest, StoredValue};
    pub use self::weir::plugin::types::{BatchResult, EventBatch, Failure, TimerBatch};
}

use std::cell::RefCell;
use std::collections::BTreeMap;

use rustc_hash::FxHashMap;

use bindings::weir::plugin::state::{self as host_state, StateKind};
use bindings::weir::plugin::types::{ChangeOp, TimeDomain as WitTimeDomain};
use bindings::weir::plugin::{log as host_log, timers};

/// The batch in hand: the item being handled, the changes made so far (the
/// batch's result, packed: fixed-size records and one buffer of their bytes)
/// and an overlay of them per (state, key), so that reads see the writes
/// made earlier in the same batch: the host applies the changes only after
/// the call returns. The overlay knows a key by the index of the batch's
/// first item with that key (the host says which), so it never hashes key
/// bytes, and the value overlay points into `bytes`, so a write costs one
/// copy of the value.
#[derive(Default)]
struct Batch {
    item: u32,
    /// How many items the batch has.
    len: u32,
    /// The current item's key, as the index of the batch's first item with
    /// the same key.
    key: u32,
    /// The changes, 32 bytes each.
    changes: Vec<u8>,
    /// The byte fields of `changes`, back to back.
    bytes: Vec<u8>,
    /// The value states written in this batch.
    values: Written,
    maps: FxHashMap<(u32, u32), MapOverlay>,
    lists: FxHashMap<(u32, u32), ListOverlay>,
    reads: ValueReads,
}

/// Per (state, key id): where in the batch's `bytes` the last `value-set`
/// put its value, or that it was cleared. Key ids are indices of the batch's
/// items, so a slot is found by indexing, not hashing; a slot counts only
/// if stamped with the current batch, so nothing is cleared between batches.
struct Written {
    /// Never 0, the stamp of a slot never written.
    batch: u32,
    /// Indexed by state id, then by key id.
    slots: Vec<Vec<Slot>>,
}

#[derive(Clone, Copy, Default)]
struct Slot {
    batch: u32,
    start: u32,
    /// `CLEARED` for a cleared value.
    len: u32,
}

const CLEARED: u32 = u32::MAX;

impl Default for Written {
    fn default() -> Self {
        Written {
            batch: 1,
            slots: Vec::new(),
        }
    }
}

impl Written {
    /// `None` if not written in this batch; `Some(None)` if cleared.
    fn get(&self, state: u32, key: u32) -> Option<Option<(usize, usize)>> {
        let slot = self.slots.get(state as usize)?.get(key as usize)?;
        (slot.batch == self.batch)
            .then(|| (slot.len != CLEARED).then_some((slot.start as usize, slot.len as usize)))
    }

    fn set(&mut self, state: u32, key: u32, value: Option<(usize, usize)>) {
        let (state, key) = (state as usize, key as usize);
        if self.slots.len() <= state {
            self.slots.resize_with(state + 1, Vec::new);
        }
        let slots = &mut self.slots[state];
        if slots.len() <= key {
            slots.resize(key + 1, Slot::default());
        }
        // Lossless: this is wasm32, where usize is 32 bits.
        let (start, len) = value.map_or((0, CLEARED), |(start, len)| (start as u32, len as u32));
        slots[key] = Slot {
            batch: self.batch,
            start,
            len,
        };
    }

    /// Forgets every slot at once.
    fn next_batch(&mut self) {
        self.batch = self.batch.wrapping_add(1);
        if self.batch == 0 {
            self.slots
                .iter_mut()
                .flatten()
                .for_each(|slot| *slot = Slot::default());
            self.batch = 1;
        }
    }
}

/// Value-state reads through one host call per batch instead of one per
/// item (`value-get-batch`), for the states worth it: those the previous
/// batch read for at least half of its items. A plugin that reads a state
/// for most events (a window, a count) crosses into the host once per batch;
/// one that reads rarely does not pay for reading every item's value.
///
/// Indexed by state id: the host hands out small, dense ids.
#[derive(Default)]
struct ValueReads {
    /// Per state: the items of this batch that read it.
    counts: Vec<u32>,
    /// Per state: whether the previous batch read it densely.
    dense: Vec<bool>,
    /// Per state: this batch's values, fetched at the first read.
    fetched: Vec<Option<Fetched>>,
}

struct Fetched {
    bytes: Vec<u8>,
    /// Per item: the start of its value in `bytes` and its length, or `None`.
    spans: Vec<Option<(u32, u32)>>,
}

impl Fetched {
    fn new(values: host_state::BatchValues) -> Self {
        let mut start = 0u32;
        let spans = values
            .lengths
            .iter()
            .map(|&len| {
                let len = u32::try_from(len).ok()?;
                let span = (start, len);
                start += len;
                Some(span)
            })
            .collect();
        Fetched {
            bytes: values.bytes,
            spans,
        }
    }

    fn get(&self, item: u32) -> Option<&[u8]> {
        let (start, len) = (*self.spans.get(item as usize)?)?;
        self.bytes.get(start as usize..(start + len) as usize)
    }
}

impl ValueReads {
    /// Item `item` of the batch reads `state`: `Some` if the value comes
    /// from a whole-batch fetch, `None` if it is to be read alone.
    fn read(&mut self, state: u32, item: u32) -> Option<Option<&[u8]>> {
        let index = state as usize;
        if index >= self.counts.len() {
            self.counts.resize(index + 1, 0);
            self.dense.resize(index + 1, false);
            self.fetched.resize_with(index + 1, || None);
        }
        self.counts[index] += 1;
        if self.fetched[index].is_none() {
            if !self.dense[index] {
                return None;
            }
            let values = host_state::value_get_batch(state);
            self.fetched[index] = Some(Fetched::new(values));
        }
        self.fetched[index].as_ref().map(|f| f.get(item))
    }

    /// The batch of `len` items ended: remember which states it read densely.
    fn end_batch(&mut self, len: u32) {
        for (dense, reads) in self.dense.iter_mut().zip(&mut self.counts) {
            *dense = reads.saturating_mul(2) >= len && *reads > 0;
            *reads = 0;
        }
        self.fetched.iter_mut().for_each(|f| *f = None);
    }
}

#[derive(Default)]
struct MapOverlay {
    cleared: bool,
    entries: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

#[derive(Default)]
struct ListOverlay {
    cleared: bool,
    appended: Vec<Vec<u8>>,
}

thread_local! {
    static BATCH: RefCell<Batch> = RefCell::new(Batch::default());
}

fn with_batch<R>(f: impl FnOnce(&mut Batch) -> R) -> R {
    BATCH.with(|batch| f(&mut batch.borrow_mut()))
}

/// Starts a batch of `len` items.
pub(crate) fn begin_batch(len: u32) {
    with_batch(|b| {
        b.len = len;
        b.values.next_batch();
    });
}

/// Starts handling item `item` of the batch in hand, whose key is that of
/// item `first_of_key`.
pub(crate) fn begin_item(item: u32, first_of_key: u32) {
    with_batch(|b| {
        b.item = item;
        b.key = first_of_key;
    });
}

/// Ends the batch: its changes in order with their bytes, and a clean slate
/// for the next one. The returned buffers are freed after the call; the next
/// batch's start at their size, so they grow only when batches do.
pub(crate) fn take_changes() -> (Vec<u8>, Vec<u8>) {
    with_batch(|b| {
        b.maps.clear();
        b.lists.clear();
        let len = b.len;
        b.reads.end_batch(len);
        let bytes = Vec::with_capacity(b.bytes.len());
        let changes = Vec::with_capacity(b.changes.len());
        (
            std::mem::replace(&mut b.bytes, bytes),
            std::mem::replace(&mut b.changes, changes),
        )
    })
}

/// Appends a change of the current item in the contract's 32-byte layout
/// (`packed-change` in the WIT); `fields` are its name, key and value bytes,
/// each absent or not.
fn push(b: &mut Batch, op: ChangeOp, state: u32, fields: [Option<&[u8]>; 3]) {
    push_with_time(b, op, state, fields, (WitTimeDomain::EventTime, 0));
}

/// [`push`] for a timer change, which also carries its domain and time.
fn push_with_time(
    b: &mut Batch,
    op: ChangeOp,
    state: u32,
    fields: [Option<&[u8]>; 3],
    (domain, timestamp): (WitTimeDomain, i64),
) {
    let lens = fields.map(|field| match field {
        Some(bytes) => {
            b.bytes.extend_from_slice(bytes);
            // Beyond 2 GiB the contract cannot carry it: trap, which
            // dead-letters the item.
            i32::try_from(bytes.len()).expect("a change's field is under 2 GiB")
        }
        None => -1,
    });
    let mut record = [0u8; 32];
    record[0..4].copy_from_slice(&b.item.to_le_bytes());
    record[4] = op as u8;
    record[5] = domain as u8;
    record[8..12].copy_from_slice(&state.to_le_bytes());
    for (at, len) in [12, 16, 20].into_iter().zip(lens) {
        record[at..at + 4].copy_from_slice(&len.to_le_bytes());
    }
    record[24..32].copy_from_slice(&timestamp.to_le_bytes());
    b.changes.extend_from_slice(&record);
}

/// Appends a change of `state` with no bytes.
fn push_clear(b: &mut Batch, op: ChangeOp, state: u32) {
    push(b, op, state, [None; 3]);
}

fn declare(name: &str, kind: StateKind) -> u32 {
    host_state::declare(name, kind)
}

pub(crate) struct RawValueState {
    id: u32,
}

impl RawValueState {
    pub(crate) fn new(name: &str) -> Self {
        RawValueState {
            id: declare(name, StateKind::Value),
        }
    }

    /// `f` of the current key's value, if set, without copying it out of
    /// the batch. `f` runs with the batch borrowed: it must not touch state.
    pub(crate) fn get_with<R>(&self, f: impl FnOnce(Option<&[u8]>) -> R) -> R {
        with_batch(|b| {
            if let Some(slot) = b.values.get(self.id, b.key) {
                return f(slot.map(|(start, len)| &b.bytes[start..start + len]));
            }
            let item = b.item;
            match b.reads.read(self.id, item) {
                Some(value) => f(value),
                None => f(host_state::value_get(self.id, item).as_deref()),
            }
        })
    }

    pub(crate) fn set(&self, value: &[u8]) {
        with_batch(|b| {
            let key = b.key;
            let span = (b.bytes.len(), value.len());
            b.values.set(self.id, key, Some(span));
            push(b, ChangeOp::ValueSet, self.id, [None, None, Some(value)]);
        });
    }

    pub(crate) fn clear(&self) {
        with_batch(|b| {
            let key = b.key;
            b.values.set(self.id, key, None);
            push_clear(b, ChangeOp::ValueClear, self.id);
        });
    }
}

pub(crate) struct RawMapState {
    id: u32,
}

impl RawMapState {
    pub(crate) fn new(name: &str) -> Self {
        RawMapState {
            id: declare(name, StateKind::Map),
        }
    }

    pub(crate) fn get(&self, map_key: &[u8]) -> Option<Vec<u8>> {
        let (item, pending) = with_batch(|b| {
            let overlay = b.maps.get(&(self.id, b.key));
            let pending = overlay.and_then(|o| match o.entries.get(map_key) {
                Some(entry) => Some(entry.clone()),
                None if o.cleared => Some(None),
                None => None,
            });
            (b.item, pending)
        });
        match pending {
            Some(value) => value,
            None => host_state::map_get(self.id, item, map_key),
        }
    }

    pub(crate) fn put(&self, map_key: &[u8], value: &[u8]) {
        with_batch(|b| {
            let key = b.key;
            let overlay = b.maps.entry((self.id, key)).or_default();
            overlay
                .entries
                .insert(map_key.to_vec(), Some(value.to_vec()));
            let fields = [None, Some(map_key), Some(value)];
            push(b, ChangeOp::MapPut, self.id, fields);
        });
    }

    pub(crate) fn remove(&self, map_key: &[u8]) {
        with_batch(|b| {
            let key = b.key;
            let overlay = b.maps.entry((self.id, key)).or_default();
            overlay.entries.insert(map_key.to_vec(), None);
            push(b, ChangeOp::MapRemove, self.id, [None, Some(map_key), None]);
        });
    }

    pub(crate) fn contains(&self, map_key: &[u8]) -> bool {
        self.get(map_key).is_some()
    }

    pub(crate) fn entries(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let (item, overlay) = with_batch(|b| {
            let overlay = b
                .maps
                .get(&(self.id, b.key))
                .map(|o| (o.cleared, o.entries.clone()));
            (b.item, overlay)
        });
        let Some((cleared, pending)) = overlay else {
            return host_state::map_entries(self.id, item);
        };
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = if cleared {
            BTreeMap::new()
        } else {
            host_state::map_entries(self.id, item).into_iter().collect()
        };
        for (k, v) in pending {
            match v {
                Some(v) => merged.insert(k, v),
                None => merged.remove(&k),
            };
        }
        merged.into_iter().collect()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries().is_empty()
    }

    pub(crate) fn clear(&self) {
        with_batch(|b| {
            let key = b.key;
            let overlay = b.maps.entry((self.id, key)).or_default();
            overlay.cleared = true;
            overlay.entries.clear();
            push_clear(b, ChangeOp::MapClear, self.id);
        });
    }
}

pub(crate) struct RawListState {
    id: u32,
}

impl RawListState {
    pub(crate) fn new(name: &str) -> Self {
        RawListState {
            id: declare(name, StateKind::List),
        }
    }

    pub(crate) fn append(&self, value: &[u8]) {
        with_batch(|b| {
            let key = b.key;
            let overlay = b.lists.entry((self.id, key)).or_default();
            overlay.appended.push(value.to_vec());
            push(b, ChangeOp::ListAppend, self.id, [None, None, Some(value)]);
        });
    }

    pub(crate) fn read(&self) -> Vec<Vec<u8>> {
        let (item, overlay) = with_batch(|b| {
            let overlay = b
                .lists
                .get(&(self.id, b.key))
                .map(|o| (o.cleared, o.appended.clone()));
            (b.item, overlay)
        });
        match overlay {
            None => host_state::list_read(self.id, item),
            Some((true, appended)) => appended,
            Some((false, appended)) => {
                let mut list = host_state::list_read(self.id, item);
                list.extend(appended);
                list
            }
        }
    }

    pub(crate) fn clear(&self) {
        with_batch(|b| {
            let key = b.key;
            let overlay = b.lists.entry((self.id, key)).or_default();
            overlay.cleared = true;
            overlay.appended.clear();
            push_clear(b, ChangeOp::ListClear, self.id);
        });
    }
}

pub(crate) fn emit(key: Option<&[u8]>, value: &[u8]) {
    emit_record(None, key, value);
}

pub(crate) fn emit_to(name: &str, key: Option<&[u8]>, value: &[u8]) {
    emit_record(Some(name), key, value);
}

fn emit_record(output: Option<&str>, key: Option<&[u8]>, value: &[u8]) {
    with_batch(|b| {
        let fields = [output.map(str::as_bytes), key, Some(value)];
        push(b, ChangeOp::Emit, 0, fields);
    });
}

fn timer_change(op: ChangeOp, domain: TimeDomain, timestamp: i64) {
    let domain = match domain {
        TimeDomain::EventTime => WitTimeDomain::EventTime,
        TimeDomain::ProcessingTime => WitTimeDomain::ProcessingTime,
    };
    with_batch(|b| push_with_time(b, op, 0, [None; 3], (domain, timestamp)));
}

pub(crate) fn register_timer(domain: TimeDomain, timestamp: i64) {
    timer_change(ChangeOp::TimerRegister, domain, timestamp);
}

pub(crate) fn delete_timer(domain: TimeDomain, timestamp: i64) {
    timer_change(ChangeOp::TimerDelete, domain, timestamp);
}

pub(crate) fn watermark() -> i64 {
    timers::current_watermark()
}

pub(crate) fn processing_time() -> i64 {
    timers::current_processing_time()
}

pub(crate) fn log(level: Level, message: &str) {
    let level = match level {
        Level::Trace => host_log::Level::Trace,
        Level::Debug => host_log::Level::Debug,
        Level::Info => host_log::Level::Info,
        Level::Warn => host_log::Level::Warn,
        Level::Error => host_log::Level::Error,
    };
    host_log::log(level, message);
}

pub(crate) fn counter_add(name: &str, delta: u64) {
    host_log::counter_add(name, delta);
}

/// Routes panic messages to the host's log before the trap, because a trap
/// alone tells the host nothing about why the plugin died.
pub(crate) fn install_panic_hook() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let message = info
                .payload_as_str()
                .unwrap_or("(a non-string panic payload)");
            let line = match info.location() {
                Some(at) => format!("panicked at {}:{}: {message}", at.file(), at.line()),
                None => format!("panicked: {message}"),
            };
            log(Level::Error, &line);
        }));
    });
}

/// Walks a packed event batch, handing `f` each event with its index and the
/// index of the batch's first event with its key. One `Event` is refilled for
/// every item, so the plugin allocates its buffers once per batch rather
/// than per event.
pub(crate) fn for_each_event(batch: bindings::EventBatch, mut f: impl FnMut(u32, u32, &Event)) {
    let bindings::EventBatch {
        bytes,
        events,
        headers,
    } = batch;
    let mut headers = headers.into_iter().peekable();
    let mut event = Event::default();
    let mut at = 0;
    for (index, record) in (0u32..).zip(events.chunks_exact(EVENT_SIZE)) {
        // The layout of `packed-event` in the WIT.
        let key_len = i32_at(record, 0);
        let key = usize::try_from(key_len)
            .ok()
            .map(|len| take(&bytes, &mut at, len));
        refill(&mut event.key, key);
        event.value.clear();
        event
            .value
            .extend_from_slice(take(&bytes, &mut at, u32_at(record, 4) as usize));
        event.timestamp = (record[12] == 1).then(|| i64_at(record, 16));
        event.headers = match headers.next_if(|h| h.event == index) {
            Some(h) => h.headers,
            None => Vec::new(),
        };
        f(index, u32_at(record, 8), &event);
    }
}

/// Walks a packed batch of fired timers like [`for_each_event`].
pub(crate) fn for_each_timer(batch: bindings::TimerBatch, mut f: impl FnMut(u32, u32, &Timer)) {
    let mut timer = Timer::new(Vec::new(), 0, TimeDomain::EventTime);
    let mut at = 0;
    for (index, record) in (0u32..).zip(batch.timers.chunks_exact(TIMER_SIZE)) {
        // The layout of `packed-timer` in the WIT.
        let key_len = u32_at(record, 0) as usize;
        timer.key.clear();
        timer
            .key
            .extend_from_slice(take(&batch.keys, &mut at, key_len));
        timer.domain = match record[8] {
            0 => TimeDomain::EventTime,
            1 => TimeDomain::ProcessingTime,
            other => panic!("the host sent a timer with time domain {other}"),
        };
        timer.timestamp = i64_at(record, 16);
        f(index, u32_at(record, 4), &timer);
    }
}

/// The size of an event in `event-batch.events` and of a timer in
/// `timer-batch.timers`.
pub(crate) const EVENT_SIZE: usize = 24;
pub(crate) const TIMER_SIZE: usize = 24;

#[inline(always)]
fn i32_at(record: &[u8], at: usize) -> i32 {
    i32::from_le_bytes(record[at..at + 4].try_into().expect("4 bytes"))
}

#[inline(always)]
fn u32_at(record: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(record[at..at + 4].try_into().expect("4 bytes"))
}

#[inline(always)]
fn i64_at(record: &[u8], at: usize) -> i64 {
    i64::from_le_bytes(record[at..at + 8].try_into().expect("8 bytes"))
}

/// The next `len` bytes of a packed batch.
#[inline(always)]
fn take<'a>(bytes: &'a [u8], at: &mut usize, len: usize) -> &'a [u8] {
    let slice = bytes
        .get(*at..*at + len)
        .expect("the host packs every key and value of a batch into its bytes");
    *at += len;
    slice
}

fn refill(slot: &mut Option<Vec<u8>>, bytes: Option<&[u8]>) {
    match (slot.as_mut(), bytes) {
        (Some(buf), Some(bytes)) => {
            buf.clear();
            buf.extend_from_slice(bytes);
        }
        (None, Some(bytes)) => *slot = Some(bytes.to_vec()),
        (_, None) => *slot = None,
    }
}
