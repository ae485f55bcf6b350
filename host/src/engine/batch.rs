//! The runtime's events and fired timers, how a batch of them is packed for
//! a plugin call, and how the changes a plugin returns are unpacked: every
//! key and value in one buffer each way, so that crossing the boundary costs
//! a few copies instead of an allocation for every key, value and list.

use rustc_hash::FxHashMap;

use super::bindings::{
    BatchResult, ChangeOp, EventBatch, EventHeaders, Failure, PackedChange, PackedEvent,
    PackedTimer, TimeDomain, TimerBatch,
};

/// A timer that fired for `key`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timer {
    pub key: Vec<u8>,
    pub timestamp: i64,
    pub domain: TimeDomain,
}

/// A key or value too long for the contract's 32-bit lengths.
#[derive(Debug, thiserror::Error)]
#[error("an event key or value of {0} bytes is too large to hand to a plugin")]
pub struct TooLarge(pub usize);

pub(crate) fn empty_timer_batch() -> TimerBatch {
    TimerBatch {
        keys: Vec::new(),
        timers: Vec::new(),
    }
}

/// For each item in turn, the index of the first item with the same key.
/// The host hashes each key once here so that a plugin need not hash them
/// again in wasm (where it costs several times more) to tell keys apart.
struct FirstOfKey<'a> {
    seen: FxHashMap<&'a [u8], u32>,
}

impl<'a> FirstOfKey<'a> {
    fn new(len: usize) -> Self {
        let mut seen = FxHashMap::default();
        seen.reserve(len);
        FirstOfKey { seen }
    }

    fn of(&mut self, index: u32, key: &'a [u8]) -> u32 {
        *self.seen.entry(key).or_insert(index)
    }
}

/// The size of an event in `event-batch.events` (see `packed-event` in the
/// WIT for the layout).
pub const EVENT_SIZE: usize = 24;

/// Where `first-of-key` sits in an event's bytes.
const FIRST_OF_KEY: std::ops::Range<usize> = 8..12;

fn encode_event(event: &PackedEvent, out: &mut Vec<u8>) {
    out.extend_from_slice(&event.key_len.to_le_bytes());
    out.extend_from_slice(&event.value_len.to_le_bytes());
    out.extend_from_slice(&event.first_of_key.to_le_bytes());
    out.extend_from_slice(&[u8::from(event.timestamp.is_some()), 0, 0, 0]);
    out.extend_from_slice(&event.timestamp.unwrap_or(0).to_le_bytes());
}

/// The little-endian field at `at` of a packed record.
fn u32_at(record: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(record[at..at + 4].try_into().expect("4 bytes"))
}

fn i64_at(record: &[u8], at: usize) -> i64 {
    i64::from_le_bytes(record[at..at + 8].try_into().expect("8 bytes"))
}

/// An event's record, as `encode_event` wrote it (the host's own bytes).
fn decode_event(record: &[u8]) -> PackedEvent {
    PackedEvent {
        key_len: u32_at(record, 0) as i32,
        value_len: u32_at(record, 4),
        first_of_key: u32_at(record, 8),
        timestamp: (record[12] == 1).then(|| i64_at(record, 16)),
    }
}

/// The size of a timer in `timer-batch.timers` (see `packed-timer` in the
/// WIT for the layout).
pub const TIMER_SIZE: usize = 24;

fn encode_timer(timer: &PackedTimer, out: &mut Vec<u8>) {
    out.extend_from_slice(&timer.key_len.to_le_bytes());
    out.extend_from_slice(&timer.first_of_key.to_le_bytes());
    out.extend_from_slice(&[timer.domain as u8, 0, 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&timer.timestamp.to_le_bytes());
}

/// Events being packed into an [`EventBlock`], one at a time.
pub struct EventBlockBuilder {
    batch: EventBatch,
}

impl EventBlockBuilder {
    pub fn with_capacity(events: usize) -> Self {
        EventBlockBuilder {
            batch: EventBatch {
                bytes: Vec::new(),
                events: Vec::with_capacity(events * EVENT_SIZE),
                headers: Vec::new(),
            },
        }
    }

    /// Appends one event; an event whose key or value the contract's
    /// 32-bit lengths cannot carry is refused (and not appended).
    pub fn push(
        &mut self,
        key: Option<&[u8]>,
        value: &[u8],
        timestamp: Option<i64>,
        headers: Vec<(String, Vec<u8>)>,
    ) -> Result<(), TooLarge> {
        let key_len = match key {
            Some(key) => i32::try_from(key.len()).map_err(|_| TooLarge(key.len()))?,
            None => -1,
        };
        let value_len = u32::try_from(value.len()).map_err(|_| TooLarge(value.len()))?;
        let index = self.len() as u32;
        self.batch.bytes.extend_from_slice(key.unwrap_or_default());
        self.batch.bytes.extend_from_slice(value);
        let event = PackedEvent {
            key_len,
            value_len,
            timestamp,
            // Filled in by `build`, once every key is in.
            first_of_key: index,
        };
        encode_event(&event, &mut self.batch.events);
        if !headers.is_empty() {
            self.batch.headers.push(EventHeaders {
                event: index,
                headers,
            });
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.batch.events.len() / EVENT_SIZE
    }

    pub fn is_empty(&self) -> bool {
        self.batch.events.is_empty()
    }

    /// The block, with each event's `first-of-key` filled in.
    pub fn build(mut self) -> EventBlock {
        let EventBatch { bytes, events, .. } = &mut self.batch;
        let mut first = FirstOfKey::new(events.len() / EVENT_SIZE);
        let mut at = 0;
        for (index, record) in (0u32..).zip(events.chunks_exact_mut(EVENT_SIZE)) {
            let event = decode_event(record);
            let key_len = usize::try_from(event.key_len).unwrap_or(0);
            let first_of_key = first.of(index, &bytes[at..at + key_len]);
            record[FIRST_OF_KEY].copy_from_slice(&first_of_key.to_le_bytes());
            at += key_len + event.value_len as usize;
        }
        EventBlock { batch: self.batch }
    }
}

/// A batch of events packed as a plugin receives them (`event-batch`). The
/// source task packs each subtask's events once, on its own thread, and the
/// plugin call takes the block as it is: the subtask, which bounds
/// throughput, neither copies events nor frees what another thread allocated.
pub struct EventBlock {
    batch: EventBatch,
}

/// One event of an [`EventBlock`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventRef<'a> {
    /// The key the pipeline keyed this event by (`key_by`).
    pub key: Option<&'a [u8]>,
    pub value: &'a [u8],
    /// Event time, in milliseconds since the Unix epoch, when assigned.
    pub timestamp: Option<i64>,
    pub headers: &'a [(String, Vec<u8>)],
}

impl EventBlock {
    pub fn len(&self) -> usize {
        self.batch.events.len() / EVENT_SIZE
    }

    pub fn is_empty(&self) -> bool {
        self.batch.events.is_empty()
    }

    /// The events, in order.
    pub fn iter(&self) -> impl Iterator<Item = EventRef<'_>> {
        let EventBatch {
            bytes,
            events,
            headers,
        } = &self.batch;
        let mut at = 0;
        let mut headers = headers.iter().peekable();
        let events = events.chunks_exact(EVENT_SIZE).map(decode_event);
        (0u32..).zip(events).map(move |(index, event)| {
            let key = usize::try_from(event.key_len).ok().map(|len| {
                at += len;
                &bytes[at - len..at]
            });
            let value_len = event.value_len as usize;
            at += value_len;
            EventRef {
                key,
                value: &bytes[at - value_len..at],
                timestamp: event.timestamp,
                headers: match headers.next_if(|h| h.event == index) {
                    Some(h) => &h.headers,
                    None => &[],
                },
            }
        })
    }

    pub fn get(&self, index: usize) -> Option<EventRef<'_>> {
        self.iter().nth(index)
    }

    /// A new block of the events whose index `keep` accepts.
    pub fn select(&self, mut keep: impl FnMut(usize) -> bool) -> EventBlock {
        let mut block = EventBlockBuilder::with_capacity(self.len());
        for (index, event) in self.iter().enumerate() {
            if keep(index) {
                block
                    .push(
                        event.key,
                        event.value,
                        event.timestamp,
                        event.headers.to_vec(),
                    )
                    .expect("lengths that fitted the block fit a smaller one");
            }
        }
        block.build()
    }

    pub(crate) fn as_batch(&self) -> &EventBatch {
        &self.batch
    }
}

/// Packs `timers` into `batch`, reusing its buffers.
pub(crate) fn pack_timers(timers: &[Timer], batch: &mut TimerBatch) -> Result<(), TooLarge> {
    batch.keys.clear();
    batch.timers.clear();
    batch.timers.reserve(timers.len() * TIMER_SIZE);
    let mut first = FirstOfKey::new(timers.len());
    for (index, timer) in (0u32..).zip(timers) {
        batch.keys.extend_from_slice(&timer.key);
        let packed = PackedTimer {
            key_len: u32::try_from(timer.key.len()).map_err(|_| TooLarge(timer.key.len()))?,
            timestamp: timer.timestamp,
            domain: timer.domain,
            first_of_key: first.of(index, &timer.key),
        };
        encode_timer(&packed, &mut batch.timers);
    }
    Ok(())
}

/// A batch's result whose changes are well formed and whose lengths add up
/// to its bytes, so that walking them cannot run out of bytes.
pub struct Changes {
    changes: Vec<PackedChange>,
    /// The changes' byte fields, back to back.
    bytes: Vec<u8>,
    failures: Vec<Failure>,
}

/// A result's changes are not valid 32-byte changes, or their lengths do not
/// match its bytes: a plugin (or SDK) bug that makes every later change
/// unknowable.
#[derive(Debug, thiserror::Error)]
#[error("the plugin returned a malformed batch result: {problem}")]
pub struct Malformed {
    problem: String,
}

/// One change of a result, with its byte fields sliced out of the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change<'a> {
    pub item: u32,
    pub op: ChangeOp,
    pub state: u32,
    pub domain: TimeDomain,
    pub timestamp: i64,
    pub name: Option<&'a [u8]>,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
}

/// The size of a change in `batch-result.changes` (see `packed-change` in
/// the WIT for the layout).
pub const CHANGE_SIZE: usize = 32;

/// `change-op`'s cases by their index, which is how a change carries its op.
const OPS: [ChangeOp; 10] = [
    ChangeOp::ValueSet,
    ChangeOp::ValueClear,
    ChangeOp::MapPut,
    ChangeOp::MapRemove,
    ChangeOp::MapClear,
    ChangeOp::ListAppend,
    ChangeOp::ListClear,
    ChangeOp::TimerRegister,
    ChangeOp::TimerDelete,
    ChangeOp::Emit,
];

const DOMAINS: [TimeDomain; 2] = [TimeDomain::EventTime, TimeDomain::ProcessingTime];

fn decode(record: &[u8; CHANGE_SIZE], index: usize) -> Result<PackedChange, String> {
    let op = OPS
        .get(usize::from(record[4]))
        .ok_or_else(|| format!("change {index} has op {}, not a change-op", record[4]))?;
    let domain = DOMAINS
        .get(usize::from(record[5]))
        .ok_or_else(|| format!("change {index} has domain {}, not a time-domain", record[5]))?;
    // Reserved: a later contract may give them a meaning.
    if record[6..8] != [0, 0] {
        return Err(format!(
            "change {index} has bytes 6-7 {:?}, not zero",
            &record[6..8]
        ));
    }
    Ok(PackedChange {
        item: u32_at(record, 0),
        op: *op,
        domain: *domain,
        state: u32_at(record, 8),
        name_len: u32_at(record, 12) as i32,
        key_len: u32_at(record, 16) as i32,
        value_len: u32_at(record, 20) as i32,
        timestamp: i64_at(record, 24),
    })
}

/// `change` as its 32 bytes (what an SDK does; the host only reads them).
#[cfg(test)]
pub(crate) fn encode(change: &PackedChange, out: &mut Vec<u8>) {
    out.extend_from_slice(&change.item.to_le_bytes());
    out.push(change.op as u8);
    out.push(change.domain as u8);
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&change.state.to_le_bytes());
    for len in [change.name_len, change.key_len, change.value_len] {
        out.extend_from_slice(&len.to_le_bytes());
    }
    out.extend_from_slice(&change.timestamp.to_le_bytes());
}

impl Changes {
    /// Decodes `result`'s changes and checks their lengths against its bytes.
    pub(crate) fn new(result: BatchResult) -> Result<Self, Malformed> {
        let malformed = |problem: String| Malformed { problem };
        let records = result.changes.chunks_exact(CHANGE_SIZE);
        if !records.remainder().is_empty() {
            return Err(malformed(format!(
                "its changes are {} bytes, not a multiple of {CHANGE_SIZE}",
                result.changes.len()
            )));
        }
        let mut changes = Vec::with_capacity(records.len());
        let mut total: u64 = 0;
        for (index, record) in records.enumerate() {
            let change =
                decode(record.try_into().expect("exact chunks"), index).map_err(malformed)?;
            for len in [change.name_len, change.key_len, change.value_len] {
                match len {
                    -1 => {}
                    0.. => total += len as u64,
                    _ => {
                        return Err(malformed(format!(
                            "its changes' lengths include {len} (change {index})"
                        )));
                    }
                }
            }
            changes.push(change);
        }
        if total != result.bytes.len() as u64 {
            return Err(malformed(format!(
                "its changes' lengths add up to {total} bytes ({} bytes returned)",
                result.bytes.len()
            )));
        }
        let BatchResult {
            bytes, failures, ..
        } = result;
        Ok(Changes {
            changes,
            bytes,
            failures,
        })
    }

    /// The changes, in order.
    pub fn iter(&self) -> impl Iterator<Item = Change<'_>> {
        let bytes = &self.bytes[..];
        let mut at = 0;
        let mut take = move |len: i32| {
            let len = usize::try_from(len).ok()?;
            let slice = &bytes[at..at + len];
            at += len;
            Some(slice)
        };
        self.changes.iter().map(move |c: &PackedChange| Change {
            item: c.item,
            op: c.op,
            state: c.state,
            domain: c.domain,
            timestamp: c.timestamp,
            name: take(c.name_len),
            key: take(c.key_len),
            value: take(c.value_len),
        })
    }

    /// The items the plugin rejected.
    pub fn failures(&self) -> &[Failure] {
        &self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block() -> EventBlock {
        let mut block = EventBlockBuilder::with_capacity(1);
        let header = vec![("h".to_owned(), b"x".to_vec())];
        block
            .push(Some(b"k1"), b"v-one", Some(5), Vec::new())
            .unwrap();
        block.push(None, b"v2", None, header).unwrap();
        block.push(Some(b""), b"", Some(-1), Vec::new()).unwrap();
        block.push(Some(b"k1"), b"v4", Some(7), Vec::new()).unwrap();
        block.build()
    }

    fn firsts(batch: &EventBatch) -> Vec<u32> {
        let events = batch.events.chunks_exact(EVENT_SIZE);
        events.map(|e| decode_event(e).first_of_key).collect()
    }

    #[test]
    fn events_pack_keys_then_values_and_only_the_headers_present() {
        let block = block();
        let batch = block.as_batch();
        assert_eq!(batch.bytes, b"k1v-onev2k1v4");
        assert_eq!(batch.events.len(), 4 * EVENT_SIZE);
        // The layout the SDKs read (`packed-event` in the WIT), byte for byte.
        #[rustfmt::skip]
        let second: [u8; EVENT_SIZE] = [
            0xff, 0xff, 0xff, 0xff, // key-len -1: no key
            2, 0, 0, 0,             // value-len
            1, 0, 0, 0,             // first-of-key: itself
            0, 0, 0, 0,             // no timestamp
            0, 0, 0, 0, 0, 0, 0, 0,
        ];
        assert_eq!(batch.events[EVENT_SIZE..2 * EVENT_SIZE], second);
        #[rustfmt::skip]
        let third: [u8; EVENT_SIZE] = [
            0, 0, 0, 0,
            0, 0, 0, 0,
            1, 0, 0, 0,
            1, 0, 0, 0,
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // timestamp -1
        ];
        assert_eq!(batch.events[2 * EVENT_SIZE..3 * EVENT_SIZE], third);
        let lens: Vec<_> = batch
            .events
            .chunks_exact(EVENT_SIZE)
            .map(decode_event)
            .map(|e| (e.key_len, e.value_len, e.timestamp))
            .collect();
        assert_eq!(
            lens,
            [
                (2, 5, Some(5)),
                (-1, 2, None),
                (0, 0, Some(-1)),
                (2, 2, Some(7))
            ]
        );
        // No key and the empty key are the same state.
        assert_eq!(firsts(batch), [0, 1, 1, 0]);
        assert_eq!(batch.headers.len(), 1);
        assert_eq!(batch.headers[0].event, 1);
        assert_eq!(batch.headers[0].headers, [("h".to_owned(), b"x".to_vec())]);
    }

    #[test]
    fn timers_pack_their_keys_and_records() {
        let timer = |key: &[u8], timestamp, domain| Timer {
            key: key.to_vec(),
            timestamp,
            domain,
        };
        let timers = [
            timer(b"ab", 7, TimeDomain::EventTime),
            timer(b"c", -2, TimeDomain::ProcessingTime),
            timer(b"ab", 9, TimeDomain::EventTime),
        ];
        let mut batch = empty_timer_batch();
        // Leftovers of a previous batch must not leak into the next.
        pack_timers(&timers, &mut batch).unwrap();
        pack_timers(&timers, &mut batch).unwrap();
        assert_eq!(batch.keys, b"abcab");
        assert_eq!(batch.timers.len(), 3 * TIMER_SIZE);
        #[rustfmt::skip]
        let second: [u8; TIMER_SIZE] = [
            1, 0, 0, 0,             // key-len
            1, 0, 0, 0,             // first-of-key: itself
            1, 0, 0, 0, 0, 0, 0, 0, // processing-time
            0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // -2
        ];
        assert_eq!(batch.timers[TIMER_SIZE..2 * TIMER_SIZE], second);
        assert_eq!(
            batch.timers[2 * TIMER_SIZE + 4],
            0,
            "the first timer of key ab"
        );
    }

    #[test]
    fn a_block_reads_back_its_events_and_selects_some_into_a_new_one() {
        let block = block();
        let second = block.get(1).unwrap();
        assert_eq!(second.key, None);
        assert_eq!(second.value, b"v2");
        assert_eq!(second.headers, [("h".to_owned(), b"x".to_vec())]);
        assert_eq!(block.get(2).unwrap().key, Some(&b""[..]));
        assert_eq!(block.get(3).unwrap().value, b"v4");
        assert_eq!(block.get(4), None);
        // The first-of-key indices are the new block's own.
        let picked = block.select(|i| i != 0);
        assert_eq!(picked.len(), 3);
        assert_eq!(firsts(picked.as_batch()), [0, 0, 2]);
        let values: Vec<_> = picked.iter().map(|e| e.value).collect();
        assert_eq!(values, [&b"v2"[..], b"", b"v4"]);
        assert_eq!(picked.get(0).unwrap().headers.len(), 1);
        assert!(block.select(|_| false).is_empty());
    }

    fn packed(op: ChangeOp, item: u32, [name_len, key_len, value_len]: [i32; 3]) -> PackedChange {
        PackedChange {
            item,
            op,
            state: 3,
            domain: TimeDomain::ProcessingTime,
            timestamp: 9,
            name_len,
            key_len,
            value_len,
        }
    }

    fn result(bytes: &[u8], changes: Vec<PackedChange>) -> BatchResult {
        let mut records = Vec::new();
        changes.iter().for_each(|c| encode(c, &mut records));
        BatchResult {
            bytes: bytes.to_vec(),
            changes: records,
            failures: Vec::new(),
        }
    }

    #[test]
    fn ops_and_domains_are_listed_by_their_case_index() {
        for (index, op) in OPS.iter().enumerate() {
            assert_eq!(*op as usize, index);
        }
        // Stops compiling when `change-op` gains a case, which OPS must list.
        let listed = |op: ChangeOp| match op {
            ChangeOp::ValueSet
            | ChangeOp::ValueClear
            | ChangeOp::MapPut
            | ChangeOp::MapRemove
            | ChangeOp::MapClear
            | ChangeOp::ListAppend
            | ChangeOp::ListClear
            | ChangeOp::TimerRegister
            | ChangeOp::TimerDelete
            | ChangeOp::Emit => OPS.contains(&op),
        };
        assert!(OPS.iter().all(|&op| listed(op)));
        for (index, domain) in DOMAINS.iter().enumerate() {
            assert_eq!(*domain as usize, index);
        }
    }

    #[test]
    fn changes_that_are_not_whole_valid_records_are_refused() {
        let one = result(b"v", vec![packed(ChangeOp::Emit, 0, [-1, -1, 1])]);
        let mut cases = Vec::new();
        let mut short = one.clone();
        short.changes.pop();
        cases.push((short, "its changes are 31 bytes, not a multiple of 32"));
        let mut bad_op = one.clone();
        bad_op.changes[4] = 10;
        cases.push((bad_op, "change 0 has op 10, not a change-op"));
        let mut bad_domain = one.clone();
        bad_domain.changes[5] = 2;
        cases.push((bad_domain, "change 0 has domain 2, not a time-domain"));
        let mut reserved = one.clone();
        reserved.changes[7] = 1;
        cases.push((reserved, "change 0 has bytes 6-7 [0, 1], not zero"));
        for (result, problem) in cases {
            let message = Changes::new(result).err().unwrap().to_string();
            assert_eq!(
                message,
                format!("the plugin returned a malformed batch result: {problem}")
            );
        }
        assert!(Changes::new(one).is_ok());
    }

    #[test]
    fn changes_take_their_fields_from_the_bytes_in_order() {
        let changes = Changes::new(result(
            b"alertsk1vmkv2",
            vec![
                packed(ChangeOp::Emit, 0, [6, 2, 1]),
                packed(ChangeOp::TimerRegister, 1, [-1, -1, -1]),
                packed(ChangeOp::MapPut, 1, [-1, 2, 2]),
                packed(ChangeOp::ValueSet, 2, [-1, -1, 0]),
            ],
        ))
        .unwrap();
        let fields: Vec<_> = changes
            .iter()
            .map(|c| (c.item, c.op, c.name, c.key, c.value))
            .collect();
        let (b, none) = (|s: &'static [u8]| Some(s), None);
        assert_eq!(
            fields,
            [
                (0, ChangeOp::Emit, b(b"alerts"), b(b"k1"), b(b"v")),
                (1, ChangeOp::TimerRegister, none, none, none),
                (1, ChangeOp::MapPut, none, b(b"mk"), b(b"v2")),
                (2, ChangeOp::ValueSet, none, none, b(b"")),
            ]
        );
        let timer = changes.iter().nth(1).unwrap();
        assert_eq!(
            (timer.domain, timer.timestamp, timer.state),
            (TimeDomain::ProcessingTime, 9, 3)
        );
    }

    #[test]
    fn lengths_that_do_not_add_up_to_the_bytes_are_refused() {
        let cases = [
            (
                &b"abc"[..],
                [-1, -1, 4],
                "add up to 4 bytes (3 bytes returned)",
            ),
            (b"abc", [-1, 1, 1], "add up to 2 bytes (3 bytes returned)"),
            (b"abc", [-2, 4, 1], "include -2 (change 0)"),
            (b"", [i32::MAX, i32::MAX, 0], "add up to 4294967294 bytes"),
        ];
        for (bytes, lens, problem) in cases {
            let error = Changes::new(result(bytes, vec![packed(ChangeOp::Emit, 0, lens)]))
                .err()
                .unwrap();
            let message = error.to_string();
            assert!(message.starts_with("the plugin returned a malformed batch result"));
            assert!(message.contains(problem), "{message}");
        }
    }
}
