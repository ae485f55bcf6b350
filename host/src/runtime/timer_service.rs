//! The pending timers of one subtask, in event time and in processing time.
//!
//! A timer is (domain, key, timestamp) and also carries its key's key group.
//! Registering the same timer twice keeps one; timers fire in (timestamp, key
//! bytes) order.
//!
//! It owns: the timers, their deduplication, their firing order, and an
//! interned copy of each key that has pending timers.
//!
//! It must never: read a clock or decide when to fire (the caller passes the
//! watermark or processing time to `pop_due`), call into the plugin, or
//! allocate per operation on the hot path beyond the `Vec<u8>` key of each
//! fired timer (once the tables have grown, a register allocates only when it
//! opens a new timestamp and the B-tree splits a node, about one in six).
//!
//! Layout, chosen for the common pattern "register at now + delay, fire what
//! is due", which touches only the two ends of the time range:
//! - keys are interned into slots (bytes inline up to 22, `Arc` beyond);
//! - per domain, a hash set of live `(timestamp, key id)` pairs deduplicates
//!   and answers "is this timer still pending";
//! - per domain, a B-tree maps each timestamp to a bucket of key ids. A
//!   bucket is sorted by key only when it fires. `delete` removes from the set
//!   and leaves a tombstone in the bucket (or drops the bucket when it was its
//!   last live timer); buckets are compacted when tombstones dominate.
//!
//! A key's slot lives while any bucket entry (live or tombstone) names it, so
//! an id is never reused under a tombstone.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum TimeDomain {
    EventTime,
    ProcessingTime,
}

impl TimeDomain {
    const ALL: [TimeDomain; 2] = [TimeDomain::EventTime, TimeDomain::ProcessingTime];

    fn index(self) -> usize {
        match self {
            TimeDomain::EventTime => 0,
            TimeDomain::ProcessingTime => 1,
        }
    }
}

/// A timer taken out by `pop_due`, to be delivered to the plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FiredTimer {
    pub(crate) key: Vec<u8>,
    pub(crate) key_group: u16,
    pub(crate) timestamp: i64,
    pub(crate) domain: TimeDomain,
}

/// A pending timer, borrowed from the service (for snapshots and inspection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PendingTimer<'a> {
    pub(crate) domain: TimeDomain,
    pub(crate) key: &'a [u8],
    pub(crate) key_group: u16,
    pub(crate) timestamp: i64,
}

/// Index of a key slot; 32 bits keep buckets and the live set small.
type KeyId = u32;

const INLINE_KEY: usize = 22;

/// Key bytes that hash and compare as `[u8]`. Short keys (user ids, numbers)
/// live inline so that interning compares them without a pointer chase.
#[derive(Debug, Clone)]
enum KeyBytes {
    Inline { len: u8, buf: [u8; INLINE_KEY] },
    Shared(Arc<[u8]>),
}

impl KeyBytes {
    const EMPTY: KeyBytes = KeyBytes::Inline {
        len: 0,
        buf: [0; INLINE_KEY],
    };

    fn new(key: &[u8]) -> KeyBytes {
        if key.len() <= INLINE_KEY {
            let mut buf = [0; INLINE_KEY];
            buf[..key.len()].copy_from_slice(key);
            KeyBytes::Inline {
                len: key.len() as u8,
                buf,
            }
        } else {
            KeyBytes::Shared(Arc::from(key))
        }
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            KeyBytes::Inline { len, buf } => &buf[..usize::from(*len)],
            KeyBytes::Shared(bytes) => bytes,
        }
    }
}

impl Borrow<[u8]> for KeyBytes {
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

// Hash and Eq must agree with `[u8]` for lookups by `&[u8]` to work.
impl Hash for KeyBytes {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state);
    }
}

impl PartialEq for KeyBytes {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for KeyBytes {}

#[derive(Debug)]
struct KeySlot {
    bytes: KeyBytes,
    /// The first 8 bytes, big-endian, zero-padded: sorting a bucket compares
    /// these first and the full bytes only on a tie.
    prefix: u64,
    key_group: u16,
    /// Bucket entries (live or tombstone, both domains) naming this slot.
    refs: u32,
}

#[derive(Debug, Default)]
struct KeyTable {
    ids: FxHashMap<KeyBytes, KeyId>,
    slots: Vec<KeySlot>,
    free: Vec<KeyId>,
}

impl KeyTable {
    fn intern(&mut self, key: &[u8], key_group: u16) -> KeyId {
        if let Some(&id) = self.ids.get(key) {
            debug_assert_eq!(
                self.slots[id as usize].key_group, key_group,
                "one key registered under two key groups"
            );
            return id;
        }
        let bytes = KeyBytes::new(key);
        let slot = KeySlot {
            bytes: bytes.clone(),
            prefix: prefix_of(key),
            key_group,
            refs: 0,
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = slot;
                id
            }
            None => {
                self.slots.push(slot);
                KeyId::try_from(self.slots.len() - 1)
                    .expect("fewer than 2^32 keys with pending timers")
            }
        };
        self.ids.insert(bytes, id);
        id
    }

    fn slot(&self, id: KeyId) -> &KeySlot {
        &self.slots[id as usize]
    }

    /// Drops one bucket reference; frees the slot when it was the last.
    fn unref(&mut self, id: KeyId) {
        let slot = &mut self.slots[id as usize];
        slot.refs -= 1;
        if slot.refs == 0 {
            let bytes = std::mem::replace(&mut slot.bytes, KeyBytes::EMPTY);
            self.ids.remove(bytes.as_slice());
            self.free.push(id);
        }
    }
}

fn prefix_of(key: &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    let n = key.len().min(8);
    buf[..n].copy_from_slice(&key[..n]);
    u64::from_be_bytes(buf)
}

/// The timers of one timestamp: key ids in registration order, possibly with
/// tombstones and duplicates (deleted, then registered again).
#[derive(Debug)]
struct Bucket {
    ids: Vec<KeyId>,
    /// Live timers among `ids`; a bucket with none is removed at once, so the
    /// first bucket's timestamp is always the next timer's.
    live: usize,
}

/// Tombstones a bucket may hold beyond its live count before compaction
/// (tiny under test, so that the randomized test compacts often).
const TOMBSTONE_SLACK: usize = if cfg!(test) { 2 } else { 16 };

/// Recycled bucket vectors up to this capacity, so opening a timestamp does
/// not allocate in steady state; larger ones are freed.
const SPARE_MAX_CAPACITY: usize = 1024;
const SPARE_MAX_COUNT: usize = 64;

/// The timers of one domain.
#[derive(Debug, Default)]
struct DomainTimers {
    live: FxHashSet<(i64, KeyId)>,
    buckets: BTreeMap<i64, Bucket>,
}

/// Keeps one entry per live id of the bucket at `ts`, unreferencing the rest;
/// returns the new live count.
fn compact(
    ids: &mut Vec<KeyId>,
    ts: i64,
    live: &FxHashSet<(i64, KeyId)>,
    keys: &mut KeyTable,
) -> usize {
    ids.sort_unstable();
    let mut kept = 0;
    let mut previous = None;
    for read in 0..ids.len() {
        let id = ids[read];
        if previous != Some(id) && live.contains(&(ts, id)) {
            ids[kept] = id;
            kept += 1;
        } else {
            keys.unref(id);
        }
        previous = Some(id);
    }
    ids.truncate(kept);
    kept
}

/// The pending timers of one subtask.
#[derive(Debug, Default)]
pub(crate) struct TimerService {
    keys: KeyTable,
    domains: [DomainTimers; 2],
    spare: Vec<Vec<KeyId>>,
    /// Reused by `pop_due` to sort a bucket: (prefix, id).
    scratch: Vec<(u64, KeyId)>,
}

impl TimerService {
    pub(crate) fn new() -> TimerService {
        TimerService::default()
    }

    /// Registers a timer; returns `false` if the same (domain, key, ts) was
    /// already pending. `key_group` must be the key's group (the same for
    /// every registration of the key).
    pub(crate) fn register(
        &mut self,
        domain: TimeDomain,
        key_group: u16,
        key: &[u8],
        ts: i64,
    ) -> bool {
        let id = self.keys.intern(key, key_group);
        let timers = &mut self.domains[domain.index()];
        // A freshly interned key has no timers, so it cannot be a duplicate
        // and its slot cannot be left unreferenced.
        if !timers.live.insert((ts, id)) {
            return false;
        }
        self.keys.slots[id as usize].refs += 1;
        let spare = &mut self.spare;
        let bucket = timers.buckets.entry(ts).or_insert_with(|| Bucket {
            ids: spare.pop().unwrap_or_default(),
            live: 0,
        });
        bucket.ids.push(id);
        bucket.live += 1;
        true
    }

    /// Deletes a pending timer; returns whether there was one.
    pub(crate) fn delete(&mut self, domain: TimeDomain, key: &[u8], ts: i64) -> bool {
        let Some(&id) = self.keys.ids.get(key) else {
            return false;
        };
        let timers = &mut self.domains[domain.index()];
        if !timers.live.remove(&(ts, id)) {
            return false;
        }
        // Every live timer has a bucket; `if let` only avoids a panic path.
        if let Some(bucket) = timers.buckets.get_mut(&ts) {
            bucket.live -= 1;
            if bucket.live == 0 {
                if let Some(bucket) = timers.buckets.remove(&ts) {
                    self.release(bucket.ids);
                }
            } else if bucket.ids.len() > 2 * bucket.live + TOMBSTONE_SLACK {
                bucket.live = compact(&mut bucket.ids, ts, &timers.live, &mut self.keys);
            }
        }
        true
    }

    /// Removes every timer of `domain` with `timestamp <= up_to` and appends
    /// them to `out` in firing order; returns how many. Timers registered
    /// while the caller handles them (even at `<= up_to`) stay pending until
    /// the next call, so loop until it returns 0 to fire those too.
    pub(crate) fn pop_due(
        &mut self,
        domain: TimeDomain,
        up_to: i64,
        out: &mut Vec<FiredTimer>,
    ) -> usize {
        let before = out.len();
        while let Some(first) = self.domains[domain.index()].buckets.first_entry() {
            if *first.key() > up_to {
                break;
            }
            let (ts, bucket) = first.remove_entry();
            let Self {
                keys,
                domains,
                scratch,
                ..
            } = self;
            let live = &mut domains[domain.index()].live;
            scratch.clear();
            // A second entry for one id (deleted, registered again) finds
            // the timer already taken by the first.
            for &id in &bucket.ids {
                if live.remove(&(ts, id)) {
                    scratch.push((keys.slot(id).prefix, id));
                }
            }
            if scratch.len() > 1 {
                scratch.sort_unstable_by(|a, b| {
                    a.0.cmp(&b.0).then_with(|| {
                        keys.slot(a.1)
                            .bytes
                            .as_slice()
                            .cmp(keys.slot(b.1).bytes.as_slice())
                    })
                });
            }
            out.extend(scratch.iter().map(|&(_, id)| {
                let slot = keys.slot(id);
                FiredTimer {
                    key: slot.bytes.as_slice().to_vec(),
                    key_group: slot.key_group,
                    timestamp: ts,
                    domain,
                }
            }));
            self.release(bucket.ids);
        }
        out.len() - before
    }

    /// Unreferences every entry of a removed bucket and keeps the vector.
    fn release(&mut self, mut ids: Vec<KeyId>) {
        for &id in &ids {
            self.keys.unref(id);
        }
        if ids.capacity() <= SPARE_MAX_CAPACITY && self.spare.len() < SPARE_MAX_COUNT {
            ids.clear();
            self.spare.push(ids);
        }
    }

    /// The earliest pending timestamp of `domain`.
    pub(crate) fn next_timestamp(&self, domain: TimeDomain) -> Option<i64> {
        self.domains[domain.index()]
            .buckets
            .first_key_value()
            .map(|(&ts, _)| ts)
    }

    /// Pending timers of `domain`.
    pub(crate) fn len(&self, domain: TimeDomain) -> usize {
        self.domains[domain.index()].live.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.domains.iter().all(|d| d.live.is_empty())
    }

    /// Every pending timer, event time first, then in no particular order
    /// within a domain (hash order: stable for one history of operations,
    /// but sort before persisting if byte-identical snapshots matter).
    pub(crate) fn iter(&self) -> impl Iterator<Item = PendingTimer<'_>> {
        let keys = &self.keys;
        TimeDomain::ALL.into_iter().flat_map(move |domain| {
            self.domains[domain.index()]
                .live
                .iter()
                .map(move |&(ts, id)| PendingTimer {
                    domain,
                    key: keys.slot(id).bytes.as_slice(),
                    key_group: keys.slot(id).key_group,
                    timestamp: ts,
                })
        })
    }

    /// Drops every timer whose key group `keep` rejects (after rescaling,
    /// the groups this subtask no longer owns). O(timers).
    pub(crate) fn retain_key_groups(&mut self, mut keep: impl FnMut(u16) -> bool) {
        let keys = &mut self.keys;
        for timers in &mut self.domains {
            timers.live.retain(|&(_, id)| keep(keys.slot(id).key_group));
            let mut kept = BTreeMap::new();
            for (ts, mut bucket) in std::mem::take(&mut timers.buckets) {
                bucket.live = compact(&mut bucket.ids, ts, &timers.live, keys);
                if bucket.live > 0 {
                    kept.insert(ts, bucket);
                }
            }
            timers.buckets = kept;
        }
    }

    /// The pending timers of one key, sorted by (timestamp, domain). A scan
    /// of all timers: for inspection, not for the hot path.
    pub(crate) fn pending_for_key(&self, key: &[u8]) -> Vec<(i64, TimeDomain)> {
        let Some(&id) = self.keys.ids.get(key) else {
            return Vec::new();
        };
        let mut found: Vec<(i64, TimeDomain)> = TimeDomain::ALL
            .into_iter()
            .flat_map(|domain| {
                self.domains[domain.index()]
                    .live
                    .iter()
                    .filter(move |&&(_, k)| k == id)
                    .map(move |&(ts, _)| (ts, domain))
            })
            .collect();
        found.sort_unstable_by_key(|&(ts, domain)| (ts, domain.index()));
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const ET: TimeDomain = TimeDomain::EventTime;
    const PT: TimeDomain = TimeDomain::ProcessingTime;

    fn pop(t: &mut TimerService, domain: TimeDomain, up_to: i64) -> Vec<(Vec<u8>, i64)> {
        let mut out = Vec::new();
        let n = t.pop_due(domain, up_to, &mut out);
        assert_eq!(n, out.len());
        assert!(out.iter().all(|f| f.domain == domain));
        out.into_iter().map(|f| (f.key, f.timestamp)).collect()
    }

    fn fired(list: &[(&str, i64)]) -> Vec<(Vec<u8>, i64)> {
        list.iter()
            .map(|&(k, ts)| (k.as_bytes().to_vec(), ts))
            .collect()
    }

    #[test]
    fn registering_the_same_timer_twice_keeps_one() {
        let mut t = TimerService::new();
        assert!(t.register(ET, 3, b"k", 10));
        assert!(!t.register(ET, 3, b"k", 10));
        assert_eq!(t.len(ET), 1);
        assert_eq!(pop(&mut t, ET, 10), fired(&[("k", 10)]));
        assert!(t.is_empty());
    }

    #[test]
    fn the_same_key_and_time_in_two_domains_are_two_timers() {
        let mut t = TimerService::new();
        t.register(ET, 0, b"k", 10);
        t.register(PT, 0, b"k", 10);
        assert_eq!((t.len(ET), t.len(PT)), (1, 1));
        assert_eq!(pop(&mut t, ET, 100), fired(&[("k", 10)]));
        assert_eq!(t.len(PT), 1);
        assert_eq!(pop(&mut t, PT, 100), fired(&[("k", 10)]));
    }

    #[test]
    fn deleting_removes_the_timer_and_says_whether_it_existed() {
        let mut t = TimerService::new();
        t.register(ET, 0, b"k", 10);
        t.register(ET, 0, b"k", 20);
        assert!(t.delete(ET, b"k", 10));
        assert!(!t.delete(ET, b"k", 10));
        assert!(!t.delete(PT, b"k", 20), "other domain");
        assert!(!t.delete(ET, b"other", 20), "unknown key");
        assert_eq!(t.len(ET), 1);
        assert_eq!(pop(&mut t, ET, i64::MAX), fired(&[("k", 20)]));
    }

    #[test]
    fn fires_in_timestamp_then_key_order() {
        let mut t = TimerService::new();
        for (k, ts) in [
            ("b", 20),
            ("a", 20),
            ("c", 10),
            ("a", 30),
            ("b", 10),
            ("", 20),
        ] {
            t.register(ET, 0, k.as_bytes(), ts);
        }
        assert_eq!(
            pop(&mut t, ET, 100),
            fired(&[
                ("b", 10),
                ("c", 10),
                ("", 20),
                ("a", 20),
                ("b", 20),
                ("a", 30)
            ])
        );
    }

    #[test]
    fn keys_sharing_an_eight_byte_prefix_order_by_their_full_bytes() {
        let mut t = TimerService::new();
        let keys: [&[u8]; 6] = [
            b"abcdefgh2",
            b"abcdefgh10",
            b"abcdefgh",
            b"a\0",
            b"a",
            b"abcdefgh1",
        ];
        for k in keys {
            t.register(ET, 0, k, 5);
        }
        let mut out = Vec::new();
        t.pop_due(ET, 5, &mut out);
        let got: Vec<&[u8]> = out.iter().map(|f| f.key.as_slice()).collect();
        let mut want = keys.to_vec();
        want.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn pop_due_fires_timers_at_exactly_up_to_and_keeps_later_ones() {
        let mut t = TimerService::new();
        for ts in [9, 10, 11] {
            t.register(ET, 0, b"k", ts);
        }
        assert_eq!(pop(&mut t, ET, 8), fired(&[]));
        assert_eq!(pop(&mut t, ET, 10), fired(&[("k", 9), ("k", 10)]));
        assert_eq!(t.next_timestamp(ET), Some(11));
        assert_eq!(pop(&mut t, ET, 10), fired(&[]));
        assert_eq!(pop(&mut t, ET, 11), fired(&[("k", 11)]));
        assert_eq!(t.next_timestamp(ET), None);
    }

    #[test]
    fn pop_due_appends_the_key_group_and_keeps_what_out_already_held() {
        let mut t = TimerService::new();
        t.register(PT, 77, b"user", 1);
        let earlier = FiredTimer {
            key: b"x".to_vec(),
            key_group: 1,
            timestamp: 0,
            domain: ET,
        };
        let mut out = vec![earlier.clone()];
        assert_eq!(t.pop_due(PT, 1, &mut out), 1);
        assert_eq!(
            out,
            vec![
                earlier,
                FiredTimer {
                    key: b"user".to_vec(),
                    key_group: 77,
                    timestamp: 1,
                    domain: PT,
                }
            ]
        );
    }

    #[test]
    fn extreme_timestamps_fire_with_extreme_bounds() {
        let mut t = TimerService::new();
        t.register(ET, 0, b"k", i64::MAX);
        t.register(ET, 0, b"k", i64::MIN);
        assert_eq!(pop(&mut t, ET, i64::MIN), fired(&[("k", i64::MIN)]));
        assert_eq!(pop(&mut t, ET, i64::MAX), fired(&[("k", i64::MAX)]));
    }

    #[test]
    fn re_registering_after_firing_creates_a_new_timer() {
        let mut t = TimerService::new();
        t.register(ET, 0, b"k", 10);
        assert_eq!(pop(&mut t, ET, 10), fired(&[("k", 10)]));
        assert!(t.register(ET, 0, b"k", 10));
        assert_eq!(t.len(ET), 1);
        assert_eq!(pop(&mut t, ET, 10), fired(&[("k", 10)]));
    }

    #[test]
    fn a_timer_deleted_and_registered_again_fires_once() {
        let mut t = TimerService::new();
        t.register(ET, 0, b"k", 10);
        t.register(ET, 0, b"j", 5);
        assert!(t.delete(ET, b"k", 10));
        assert!(t.register(ET, 0, b"k", 10));
        assert_eq!(t.len(ET), 2);
        assert_eq!(pop(&mut t, ET, 100), fired(&[("j", 5), ("k", 10)]));
        assert!(t.is_empty());
    }

    #[test]
    fn next_timestamp_skips_deleted_timers() {
        let mut t = TimerService::new();
        t.register(ET, 0, b"a", 5);
        t.register(ET, 0, b"b", 7);
        t.register(PT, 0, b"a", 1);
        assert_eq!(t.next_timestamp(ET), Some(5));
        t.delete(ET, b"a", 5);
        assert_eq!(t.next_timestamp(ET), Some(7));
        assert_eq!(t.next_timestamp(PT), Some(1));
        t.delete(ET, b"b", 7);
        assert_eq!(t.next_timestamp(ET), None);
    }

    #[test]
    fn retain_key_groups_drops_the_timers_of_rejected_groups() {
        let mut t = TimerService::new();
        for g in 0..8u16 {
            let key = format!("key{g}");
            t.register(ET, g, key.as_bytes(), 100 - i64::from(g));
            t.register(PT, g, key.as_bytes(), i64::from(g));
        }
        t.delete(ET, b"key2", 98);
        t.retain_key_groups(|g| g % 2 == 0);
        assert_eq!((t.len(ET), t.len(PT)), (3, 4));
        assert!(t.iter().all(|p| p.key_group % 2 == 0));
        assert_eq!(t.next_timestamp(ET), Some(94));
        assert_eq!(
            pop(&mut t, ET, i64::MAX),
            fired(&[("key6", 94), ("key4", 96), ("key0", 100)])
        );
        assert!(t.pending_for_key(b"key1").is_empty());
        assert!(t.register(ET, 1, b"key1", 5), "a dropped key can come back");
    }

    #[test]
    fn pending_for_key_lists_both_domains_in_timestamp_order() {
        let mut t = TimerService::new();
        t.register(ET, 0, b"k", 30);
        t.register(PT, 0, b"k", 10);
        t.register(ET, 0, b"k", 10);
        t.register(ET, 0, b"other", 20);
        assert_eq!(t.pending_for_key(b"k"), vec![(10, ET), (10, PT), (30, ET)]);
        assert!(t.pending_for_key(b"nobody").is_empty());
    }

    #[test]
    fn iter_yields_every_pending_timer_event_time_first() {
        let mut t = TimerService::new();
        t.register(PT, 2, b"p", 1);
        t.register(ET, 1, b"e", 2);
        t.register(ET, 1, b"e", 3);
        t.delete(ET, b"e", 3);
        let all: Vec<PendingTimer<'_>> = t.iter().collect();
        assert_eq!(
            all,
            vec![
                PendingTimer {
                    domain: ET,
                    key: b"e",
                    key_group: 1,
                    timestamp: 2
                },
                PendingTimer {
                    domain: PT,
                    key: b"p",
                    key_group: 2,
                    timestamp: 1
                },
            ]
        );
    }

    #[test]
    fn deletes_compact_a_crowded_bucket_and_free_its_keys() {
        let mut t = TimerService::new();
        for i in 0..10_000u32 {
            t.register(ET, 0, &i.to_be_bytes(), 5);
        }
        for i in 10..10_000u32 {
            assert!(t.delete(ET, &i.to_be_bytes(), 5));
        }
        let bucket = &t.domains[ET.index()].buckets[&5];
        assert_eq!(bucket.live, 10);
        assert!(bucket.ids.len() <= 2 * 10 + TOMBSTONE_SLACK + 1);
        assert!(
            t.keys.ids.len() <= bucket.ids.len(),
            "{} keys interned",
            t.keys.ids.len()
        );
        assert_eq!(t.next_timestamp(ET), Some(5));
        assert_eq!(pop(&mut t, ET, i64::MAX).len(), 10);
        assert!(t.keys.ids.is_empty());
        assert!(
            t.keys
                .slots
                .iter()
                .all(|s| s.refs == 0 && s.bytes.as_slice().is_empty())
        );
    }

    #[test]
    fn compaction_keeps_one_entry_for_a_timer_registered_again_after_delete() {
        let mut t = TimerService::new();
        t.register(ET, 0, b"k", 5);
        t.register(ET, 0, b"j", 5);
        t.delete(ET, b"k", 5);
        t.register(ET, 0, b"k", 5);
        for i in 0..100u32 {
            t.register(ET, 0, &i.to_be_bytes(), 5);
            t.delete(ET, &i.to_be_bytes(), 5);
        }
        assert_eq!(t.domains[ET.index()].buckets[&5].live, 2);
        t.delete(ET, b"k", 5);
        t.delete(ET, b"j", 5);
        assert_eq!(t.next_timestamp(ET), None);
        assert!(t.keys.ids.is_empty());
    }

    #[test]
    fn deleting_the_last_timer_of_a_timestamp_frees_its_key() {
        let mut t = TimerService::new();
        t.register(PT, 0, b"k", 5);
        t.delete(PT, b"k", 5);
        assert!(t.keys.ids.is_empty());
        assert!(t.domains[PT.index()].buckets.is_empty());
    }

    #[test]
    fn long_keys_are_interned_and_ordered_like_short_ones() {
        let long_a = vec![b'a'; 100];
        let mut long_b = long_a.clone();
        long_b.push(b'b');
        let mut t = TimerService::new();
        t.register(ET, 0, &long_b, 1);
        t.register(ET, 0, &long_a, 1);
        assert!(!t.register(ET, 0, &long_a, 1));
        t.register(ET, 0, b"a", 1);
        assert_eq!(t.pending_for_key(&long_b), vec![(1, ET)]);
        let mut out = Vec::new();
        t.pop_due(ET, 1, &mut out);
        let keys: Vec<&[u8]> = out.iter().map(|f| f.key.as_slice()).collect();
        assert_eq!(keys, vec![&b"a"[..], &long_a, &long_b]);
    }

    /// xorshift64: deterministic, so a failure reproduces.
    fn rng(mut seed: u64) -> impl FnMut(u64) -> u64 {
        move |n| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        }
    }

    #[test]
    fn agrees_with_an_ordered_map_model_under_random_operations() {
        let mut next = rng(0xdead_beef_cafe_f00d);
        // Keys with shared prefixes and lengths around 8 stress the tie-break.
        let keys: Vec<Vec<u8>> = (0..40u32)
            .map(|i| {
                let mut k = b"prefix__".to_vec();
                k.truncate((i % 10) as usize);
                k.extend(std::iter::repeat_n(b'z', (i / 10) as usize));
                k.push(i as u8);
                k
            })
            .collect();
        let group = |k: &[u8]| u16::from(*k.last().unwrap());
        let mut t = TimerService::new();
        let mut model: BTreeMap<(usize, i64, Vec<u8>), u16> = BTreeMap::new();
        let mut now = [0i64; 2];
        for step in 0..60_000 {
            // Alternate wide spreads with crowded timestamps (tombstones, compaction).
            let spread = if step % 20_000 < 10_000 { 50 } else { 6 };
            let domain = TimeDomain::ALL[next(2) as usize];
            let d = domain.index();
            let key = &keys[next(keys.len() as u64) as usize];
            match next(10) {
                0..=4 => {
                    let ts = now[d] + next(spread) as i64 - 5;
                    let fresh = model.insert((d, ts, key.clone()), group(key)).is_none();
                    assert_eq!(
                        t.register(domain, group(key), key, ts),
                        fresh,
                        "step {step}"
                    );
                }
                5..=6 => {
                    let ts = now[d] + next(spread) as i64 - 5;
                    let existed = model.remove(&(d, ts, key.clone())).is_some();
                    assert_eq!(t.delete(domain, key, ts), existed, "step {step}");
                }
                7..=8 => {
                    now[d] += next(8) as i64;
                    let mut out = Vec::new();
                    t.pop_due(domain, now[d], &mut out);
                    let due: Vec<(usize, i64, Vec<u8>)> = model
                        .range((d, i64::MIN, Vec::new())..)
                        .take_while(|((md, ts, _), _)| *md == d && *ts <= now[d])
                        .map(|(k, _)| k.clone())
                        .collect();
                    let expected: Vec<FiredTimer> = due
                        .iter()
                        .map(|k| FiredTimer {
                            key: k.2.clone(),
                            key_group: model.remove(k).unwrap(),
                            timestamp: k.1,
                            domain,
                        })
                        .collect();
                    assert_eq!(out, expected, "step {step}");
                }
                _ if next(200) == 0 => {
                    let modulus = 1 + next(4) as u16;
                    t.retain_key_groups(|g| g % modulus != 0);
                    model.retain(|_, g| *g % modulus != 0);
                }
                _ => {}
            }
            for domain in TimeDomain::ALL {
                let d = domain.index();
                let in_model = model
                    .range((d, i64::MIN, Vec::new())..)
                    .take_while(|(k, _)| k.0 == d);
                assert_eq!(t.len(domain), in_model.clone().count(), "step {step}");
                assert_eq!(
                    t.next_timestamp(domain),
                    in_model.map(|(k, _)| k.1).next(),
                    "step {step}"
                );
            }
        }
        let mut all: Vec<(usize, i64, Vec<u8>, u16)> = t
            .iter()
            .map(|p| (p.domain.index(), p.timestamp, p.key.to_vec(), p.key_group))
            .collect();
        all.sort();
        let expected: Vec<(usize, i64, Vec<u8>, u16)> = model
            .iter()
            .map(|((d, ts, k), g)| (*d, *ts, k.clone(), *g))
            .collect();
        assert_eq!(all, expected);
        for key in &keys {
            let want: Vec<(i64, TimeDomain)> = {
                let mut v: Vec<(i64, TimeDomain)> = model
                    .keys()
                    .filter(|(_, _, k)| k == key)
                    .map(|(d, ts, _)| (*ts, TimeDomain::ALL[*d]))
                    .collect();
                v.sort_by_key(|&(ts, d)| (ts, d.index()));
                v
            };
            assert_eq!(t.pending_for_key(key), want);
        }
    }

    #[test]
    #[ignore = "micro-benchmark: cargo test --release -- --ignored --nocapture"]
    fn benchmark_register_and_pop_with_a_million_timers() {
        use std::hint::black_box;
        use std::time::Instant;
        const KEYS: u64 = 100_000;
        const PENDING: i64 = 1_000_000;
        const WINDOW: i64 = 60_000;
        let keys: Vec<Vec<u8>> = (0..KEYS)
            .map(|k| (10_000 + k).to_string().into_bytes())
            .collect();
        let group = |k: usize| (k % 128) as u16;
        let mut next = rng(7);

        // Event i at time i registers a timer at i + WINDOW (+ jitter), so
        // that about a million are pending once the window is full; steady
        // state fires about one timer per event.
        let mut t = TimerService::new();
        let events_per_ms = PENDING / WINDOW + 1;
        let mut ts = 0i64;
        let fill = Instant::now();
        for i in 0..PENDING {
            ts = i / events_per_ms;
            let k = next(KEYS) as usize;
            t.register(
                TimeDomain::EventTime,
                group(k),
                &keys[k],
                ts + WINDOW + next(1_000) as i64,
            );
        }
        let fill = fill.elapsed();
        println!(
            "fill: {:.1} ns/register ({} pending over {} keys)",
            fill.as_nanos() as f64 / PENDING as f64,
            t.len(ET),
            t.keys.ids.len()
        );

        let mut out = Vec::with_capacity(1024);
        let steady = 2_000_000i64;
        let (mut fired_count, mut reg_time, mut pop_time) = (0usize, 0u128, 0u128);
        let start = Instant::now();
        for i in 0..steady {
            let now = ts + i / events_per_ms;
            let k = next(KEYS) as usize;
            let r = Instant::now();
            black_box(t.register(ET, group(k), &keys[k], now + WINDOW + next(1_000) as i64));
            let p = Instant::now();
            out.clear();
            fired_count += t.pop_due(ET, now, &mut out);
            pop_time += p.elapsed().as_nanos();
            reg_time += (p - r).as_nanos();
            black_box(&out);
        }
        let total = start.elapsed();
        println!(
            "steady: {:.1} ns/event (register + pop_due, {fired_count} fired for {steady} registered, \
             {} pending); timed separately: register {:.1} ns, pop_due {:.1} ns per event \
             (Instant overhead included)",
            total.as_nanos() as f64 / steady as f64,
            t.len(ET),
            reg_time as f64 / steady as f64,
            pop_time as f64 / steady as f64,
        );

        let mut t = TimerService::new();
        let start = Instant::now();
        let n = 1_000_000i64;
        for i in 0..n {
            let k = (i as u64 % KEYS) as usize;
            t.register(ET, group(k), &keys[k], i);
            t.delete(ET, &keys[k], i);
        }
        println!(
            "register+delete: {:.1} ns/pair",
            start.elapsed().as_nanos() as f64 / n as f64
        );
    }
}
