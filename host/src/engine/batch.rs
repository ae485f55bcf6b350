//! The runtime's events and fired timers, and how a batch of them is packed
//! for a plugin call: every key and value in one buffer, so that lowering a
//! batch into the plugin costs a few copies instead of a call into the
//! plugin's allocator for every key, value and header list.

use super::bindings::{EventBatch, EventHeaders, PackedEvent, PackedTimer, TimeDomain, TimerBatch};

/// One input record, as sources produce it and plugins receive it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// The key the pipeline keyed this event by (`key_by`).
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    /// Event time, in milliseconds since the Unix epoch, when assigned.
    pub timestamp: Option<i64>,
    pub headers: Vec<(String, Vec<u8>)>,
}

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

pub(crate) fn empty_event_batch() -> EventBatch {
    EventBatch {
        bytes: Vec::new(),
        events: Vec::new(),
        headers: Vec::new(),
    }
}

pub(crate) fn empty_timer_batch() -> TimerBatch {
    TimerBatch {
        keys: Vec::new(),
        timers: Vec::new(),
    }
}

/// Packs `events` into `batch`, reusing its buffers.
pub(crate) fn pack_events(events: &[Event], batch: &mut EventBatch) -> Result<(), TooLarge> {
    batch.bytes.clear();
    batch.events.clear();
    batch.headers.clear();
    for (index, event) in (0u32..).zip(events) {
        let key_len = match &event.key {
            Some(key) => {
                batch.bytes.extend_from_slice(key);
                i32::try_from(key.len()).map_err(|_| TooLarge(key.len()))?
            }
            None => -1,
        };
        batch.bytes.extend_from_slice(&event.value);
        batch.events.push(PackedEvent {
            key_len,
            value_len: u32::try_from(event.value.len()).map_err(|_| TooLarge(event.value.len()))?,
            timestamp: event.timestamp,
        });
        if !event.headers.is_empty() {
            batch.headers.push(EventHeaders {
                event: index,
                headers: event.headers.clone(),
            });
        }
    }
    Ok(())
}

/// Packs `timers` into `batch`, reusing its buffers.
pub(crate) fn pack_timers(timers: &[Timer], batch: &mut TimerBatch) -> Result<(), TooLarge> {
    batch.keys.clear();
    batch.timers.clear();
    for timer in timers {
        batch.keys.extend_from_slice(&timer.key);
        batch.timers.push(PackedTimer {
            key_len: u32::try_from(timer.key.len()).map_err(|_| TooLarge(timer.key.len()))?,
            timestamp: timer.timestamp,
            domain: timer.domain,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_pack_keys_then_values_and_only_the_headers_present() {
        let events = [
            Event {
                key: Some(b"k1".to_vec()),
                value: b"v-one".to_vec(),
                timestamp: Some(5),
                headers: Vec::new(),
            },
            Event {
                key: None,
                value: b"v2".to_vec(),
                timestamp: None,
                headers: vec![("h".into(), b"x".to_vec())],
            },
            Event {
                key: Some(Vec::new()),
                value: Vec::new(),
                timestamp: Some(-1),
                headers: Vec::new(),
            },
        ];
        let mut batch = empty_event_batch();
        // Leftovers of a previous batch must not leak into the next.
        pack_events(&events, &mut batch).unwrap();
        pack_events(&events, &mut batch).unwrap();
        assert_eq!(batch.bytes, b"k1v-onev2");
        let lens: Vec<_> = batch
            .events
            .iter()
            .map(|e| (e.key_len, e.value_len, e.timestamp))
            .collect();
        assert_eq!(lens, [(2, 5, Some(5)), (-1, 2, None), (0, 0, Some(-1))]);
        assert_eq!(batch.headers.len(), 1);
        assert_eq!(batch.headers[0].event, 1);
        assert_eq!(batch.headers[0].headers, [("h".to_owned(), b"x".to_vec())]);
    }

    #[test]
    fn timers_pack_their_keys_back_to_back() {
        let timers = [
            Timer {
                key: b"abc".to_vec(),
                timestamp: 7,
                domain: TimeDomain::EventTime,
            },
            Timer {
                key: b"d".to_vec(),
                timestamp: 9,
                domain: TimeDomain::ProcessingTime,
            },
        ];
        let mut batch = empty_timer_batch();
        pack_timers(&timers, &mut batch).unwrap();
        assert_eq!(batch.keys, b"abcd");
        let packed: Vec<_> = batch
            .timers
            .iter()
            .map(|t| (t.key_len, t.timestamp, t.domain))
            .collect();
        assert_eq!(
            packed,
            [
                (3, 7, TimeDomain::EventTime),
                (1, 9, TimeDomain::ProcessingTime)
            ]
        );
    }
}
