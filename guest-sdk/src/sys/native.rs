//! The native backend: an in-memory host with Weir's semantics (state scoped
//! to the current key, one timer per (key, timestamp, domain), outputs
//! stamped with the current item's timestamp, contract violations fail loudly
//! where the real host traps), so plugins are unit-tested with `cargo test`.
//!
//! A `TestHost` belongs to a `testing::Harness`. It is moved into a
//! thread-local only while the harness calls into the plugin, so two
//! harnesses in one test never share anything.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use crate::testing::Output;
use crate::{Level, TimeDomain, Timer};

thread_local! {
    static HOST: RefCell<Option<TestHost>> = const { RefCell::new(None) };
}

/// Output names only the host writes to, as on the host.
const HOST_OUTPUTS: [&str; 2] = ["late", "dead-letter"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StateKind {
    Value,
    Map,
    List,
}

/// Where a state of one key lives: (state name, key).
type Slot = (String, Vec<u8>);

/// The content of one key's map state, ordered by map-key bytes.
type ByteMap = BTreeMap<Vec<u8>, Vec<u8>>;

/// The item in scope: on the real host, the item a change or read names.
#[derive(Debug)]
struct Scope {
    key: Vec<u8>,
    timestamp: Option<i64>,
}

/// State, timers, clocks and recorded effects of one test host.
#[derive(Debug)]
pub(crate) struct TestHost {
    scope: Option<Scope>,
    watermark: i64,
    processing_time: i64,
    kinds: BTreeMap<String, StateKind>,
    values: BTreeMap<Slot, Vec<u8>>,
    maps: BTreeMap<Slot, ByteMap>,
    lists: BTreeMap<Slot, Vec<Vec<u8>>>,
    // (timestamp, key): the set's order is the firing order.
    event_timers: BTreeSet<(i64, Vec<u8>)>,
    processing_timers: BTreeSet<(i64, Vec<u8>)>,
    outputs: BTreeMap<String, Vec<Output>>,
    logs: Vec<(Level, String)>,
    counters: BTreeMap<String, u64>,
}

impl Default for TestHost {
    fn default() -> Self {
        TestHost {
            scope: None,
            // Nothing has been promised yet.
            watermark: i64::MIN,
            processing_time: 0,
            kinds: BTreeMap::new(),
            values: BTreeMap::new(),
            maps: BTreeMap::new(),
            lists: BTreeMap::new(),
            event_timers: BTreeSet::new(),
            processing_timers: BTreeSet::new(),
            outputs: BTreeMap::new(),
            logs: Vec::new(),
            counters: BTreeMap::new(),
        }
    }
}

impl TestHost {
    /// Runs `f` (a call into the plugin) with this host installed and, if
    /// given, the item `(key, timestamp)` in scope. The host comes back even
    /// if the plugin panics, so a harness stays usable after `catch_unwind`.
    pub(crate) fn call<R>(
        &mut self,
        item: Option<(&[u8], Option<i64>)>,
        f: impl FnOnce() -> R,
    ) -> R {
        struct Restore<'a>(&'a mut TestHost);
        impl Drop for Restore<'_> {
            fn drop(&mut self) {
                if let Some(mut host) = HOST.with(|cell| cell.borrow_mut().take()) {
                    host.scope = None;
                    *self.0 = host;
                }
            }
        }

        let mut host = std::mem::take(self);
        host.scope = item.map(|(key, timestamp)| Scope {
            key: key.to_vec(),
            timestamp,
        });
        HOST.with(|cell| {
            let mut installed = cell.borrow_mut();
            // Only a plugin driving another harness from inside its own call gets here.
            assert!(
                installed.is_none(),
                "a Weir test host is already in a plugin call"
            );
            *installed = Some(host);
        });
        let _restore = Restore(self);
        f()
    }

    pub(crate) fn watermark(&self) -> i64 {
        self.watermark
    }

    pub(crate) fn processing_time(&self) -> i64 {
        self.processing_time
    }

    /// Moves the watermark forward (never back, like the host's).
    pub(crate) fn advance_watermark(&mut self, watermark: i64) {
        self.watermark = self.watermark.max(watermark);
    }

    /// Moves the wall clock forward (never back).
    pub(crate) fn advance_processing_time(&mut self, now: i64) {
        self.processing_time = self.processing_time.max(now);
    }

    /// Removes and returns the first timer of `domain` that is due, in
    /// (timestamp, key) order.
    pub(crate) fn pop_due_timer(&mut self, domain: TimeDomain) -> Option<Timer> {
        let now = match domain {
            TimeDomain::EventTime => self.watermark,
            TimeDomain::ProcessingTime => self.processing_time,
        };
        let timers = self.timers_mut(domain);
        let (timestamp, _) = timers.first()?;
        if *timestamp > now {
            return None;
        }
        let (timestamp, key) = timers.pop_first()?;
        Some(Timer::new(key, timestamp, domain))
    }

    pub(crate) fn pending_timers(&self, key: &[u8]) -> Vec<(i64, TimeDomain)> {
        let event = self.event_timers.iter().map(|t| (t, TimeDomain::EventTime));
        let processing = self
            .processing_timers
            .iter()
            .map(|t| (t, TimeDomain::ProcessingTime));
        let mut pending: Vec<_> = event
            .chain(processing)
            .filter(|((_, k), _)| k == key)
            .map(|((timestamp, _), domain)| (*timestamp, domain))
            .collect();
        pending.sort_unstable();
        pending
    }

    pub(crate) fn value(&self, key: &[u8], name: &str) -> Option<&[u8]> {
        self.values
            .get(&(name.to_owned(), key.to_vec()))
            .map(Vec::as_slice)
    }

    pub(crate) fn map(&self, key: &[u8], name: &str) -> Option<&ByteMap> {
        self.maps.get(&(name.to_owned(), key.to_vec()))
    }

    pub(crate) fn list(&self, key: &[u8], name: &str) -> Option<&[Vec<u8>]> {
        self.lists
            .get(&(name.to_owned(), key.to_vec()))
            .map(Vec::as_slice)
    }

    pub(crate) fn outputs(&self, name: &str) -> &[Output] {
        self.outputs.get(name).map_or(&[], Vec::as_slice)
    }

    pub(crate) fn take_outputs(&mut self, name: &str) -> Vec<Output> {
        self.outputs.remove(name).unwrap_or_default()
    }

    pub(crate) fn logs(&self) -> &[(Level, String)] {
        &self.logs
    }

    pub(crate) fn counters(&self) -> &BTreeMap<String, u64> {
        &self.counters
    }

    fn timers_mut(&mut self, domain: TimeDomain) -> &mut BTreeSet<(i64, Vec<u8>)> {
        match domain {
            TimeDomain::EventTime => &mut self.event_timers,
            TimeDomain::ProcessingTime => &mut self.processing_timers,
        }
    }

    fn declare(&mut self, name: &str, kind: StateKind) {
        let declared = *self.kinds.entry(name.to_owned()).or_insert(kind);
        assert!(
            declared == kind,
            "state \"{name}\" was declared as {declared:?} and then as {kind:?}: a name keeps one kind (the host traps)"
        );
    }

    /// The current item, or a panic naming the call: the host traps when a
    /// plugin touches state, timers or outputs outside an item (in `open`).
    fn scope(&self, call: &str) -> &Scope {
        self.scope.as_ref().unwrap_or_else(|| {
            panic!("{call} outside an event or timer: state, timers and outputs exist only while an item is handled, not in `open` (the host traps)")
        })
    }

    /// The storage slot of state `name` for the current key.
    fn slot(&self, name: &str, call: &str) -> Slot {
        (name.to_owned(), self.scope(call).key.clone())
    }

    fn record(&mut self, output: &str, key: Option<&[u8]>, value: &[u8]) {
        let timestamp = self.scope("emit").timestamp;
        self.outputs
            .entry(output.to_owned())
            .or_default()
            .push(Output {
                key: key.map(<[u8]>::to_vec),
                value: value.to_vec(),
                timestamp,
            });
    }
}

/// Runs `f` on the installed host.
fn with_host<R>(f: impl FnOnce(&mut TestHost) -> R) -> R {
    HOST.with(|cell| {
        let mut host = cell.borrow_mut();
        let host = host.as_mut().expect(
            "no Weir test host is installed: run the plugin through weir_sdk::testing::Harness",
        );
        f(host)
    })
}

pub(crate) fn emit(key: Option<&[u8]>, value: &[u8]) {
    with_host(|host| host.record("main", key, value));
}

pub(crate) fn emit_to(output: &str, key: Option<&[u8]>, value: &[u8]) {
    // As on the host: `main` names the main output, the others are refused.
    assert!(
        !output.is_empty() && !HOST_OUTPUTS.contains(&output),
        "emit-to {output:?}: {HOST_OUTPUTS:?} are the host's and names must not be empty (the host traps)"
    );
    with_host(|host| host.record(output, key, value));
}

pub(crate) fn register_timer(domain: TimeDomain, timestamp: i64) {
    with_host(|host| {
        let key = host.scope("register a timer").key.clone();
        host.timers_mut(domain).insert((timestamp, key));
    });
}

pub(crate) fn delete_timer(domain: TimeDomain, timestamp: i64) {
    with_host(|host| {
        let key = host.scope("delete a timer").key.clone();
        host.timers_mut(domain).remove(&(timestamp, key));
    });
}

pub(crate) fn watermark() -> i64 {
    with_host(|host| host.watermark)
}

pub(crate) fn processing_time() -> i64 {
    with_host(|host| host.processing_time)
}

pub(crate) fn log(level: Level, message: &str) {
    with_host(|host| host.logs.push((level, message.to_owned())));
}

pub(crate) fn counter_add(name: &str, delta: u64) {
    with_host(|host| {
        let counter = host.counters.entry(name.to_owned()).or_default();
        *counter = counter.saturating_add(delta);
    });
}

/// A value state, resolved by name on every access.
pub(crate) struct RawValueState {
    name: String,
}

impl RawValueState {
    pub(crate) fn new(name: &str) -> Self {
        with_host(|host| host.declare(name, StateKind::Value));
        RawValueState {
            name: name.to_owned(),
        }
    }

    /// `f` of the current key's value, if set.
    pub(crate) fn get_with<R>(&self, f: impl FnOnce(Option<&[u8]>) -> R) -> R {
        let value = with_host(|host| {
            host.values
                .get(&host.slot(&self.name, "value-state.get"))
                .cloned()
        });
        f(value.as_deref())
    }

    pub(crate) fn set(&self, value: &[u8]) {
        with_host(|host| {
            let slot = host.slot(&self.name, "value-state.set");
            host.values.insert(slot, value.to_vec());
        });
    }

    pub(crate) fn clear(&self) {
        with_host(|host| {
            let slot = host.slot(&self.name, "value-state.clear");
            host.values.remove(&slot);
        });
    }
}

/// A map state, resolved by name on every access.
pub(crate) struct RawMapState {
    name: String,
}

impl RawMapState {
    pub(crate) fn new(name: &str) -> Self {
        with_host(|host| host.declare(name, StateKind::Map));
        RawMapState {
            name: name.to_owned(),
        }
    }

    fn read<R>(&self, call: &str, f: impl FnOnce(Option<&ByteMap>) -> R) -> R {
        with_host(|host| f(host.maps.get(&host.slot(&self.name, call))))
    }

    fn write<R>(&self, call: &str, f: impl FnOnce(&mut ByteMap) -> R) -> R {
        with_host(|host| {
            let slot = host.slot(&self.name, call);
            let map = host.maps.entry(slot.clone()).or_default();
            let result = f(map);
            // An empty map is no map, so readers see "no state" for the key.
            if map.is_empty() {
                host.maps.remove(&slot);
            }
            result
        })
    }

    pub(crate) fn get(&self, map_key: &[u8]) -> Option<Vec<u8>> {
        self.read("map-state.get", |map| map?.get(map_key).cloned())
    }

    pub(crate) fn put(&self, map_key: &[u8], value: &[u8]) {
        self.write("map-state.put", |map| {
            map.insert(map_key.to_vec(), value.to_vec())
        });
    }

    pub(crate) fn remove(&self, map_key: &[u8]) {
        self.write("map-state.remove", |map| map.remove(map_key));
    }

    pub(crate) fn contains(&self, map_key: &[u8]) -> bool {
        self.read("map-state.contains", |map| {
            map.is_some_and(|m| m.contains_key(map_key))
        })
    }

    pub(crate) fn entries(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.read("map-state.entries", |map| {
            map.into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.read("map-state.is-empty", |map| {
            map.is_none_or(BTreeMap::is_empty)
        })
    }

    pub(crate) fn clear(&self) {
        self.write("map-state.clear", BTreeMap::clear);
    }
}

/// A list state, resolved by name on every access.
pub(crate) struct RawListState {
    name: String,
}

impl RawListState {
    pub(crate) fn new(name: &str) -> Self {
        with_host(|host| host.declare(name, StateKind::List));
        RawListState {
            name: name.to_owned(),
        }
    }

    pub(crate) fn append(&self, value: &[u8]) {
        with_host(|host| {
            let slot = host.slot(&self.name, "list-state.append");
            host.lists.entry(slot).or_default().push(value.to_vec());
        });
    }

    pub(crate) fn read(&self) -> Vec<Vec<u8>> {
        with_host(|host| {
            host.lists
                .get(&host.slot(&self.name, "list-state.read"))
                .cloned()
                .unwrap_or_default()
        })
    }

    pub(crate) fn clear(&self) {
        with_host(|host| {
            let slot = host.slot(&self.name, "list-state.clear");
            host.lists.remove(&slot);
        });
    }
}
