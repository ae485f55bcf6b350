//! A subtask's pending timers: in memory (`TimerService`) with the memory
//! backend, in the RocksDB database (`RocksTimers`) with the RocksDB backend,
//! where they take no memory per key and ride in native checkpoints.

use super::timer_service::{FiredTimer, PendingTimer, TimeDomain, TimerService};
use crate::state::{RocksTimers, StateError, StoredTimer};

pub(crate) enum Timers {
    Heap(TimerService),
    Rocks(RocksTimers),
}

fn tag(domain: TimeDomain) -> u8 {
    match domain {
        TimeDomain::EventTime => 0,
        TimeDomain::ProcessingTime => 1,
    }
}

fn from_tag(tag: u8) -> TimeDomain {
    if tag == 0 {
        TimeDomain::EventTime
    } else {
        TimeDomain::ProcessingTime
    }
}

impl Default for Timers {
    fn default() -> Self {
        Timers::Heap(TimerService::new())
    }
}

impl Timers {
    /// Registers a timer; false if it was already pending.
    pub(crate) fn register(
        &mut self,
        domain: TimeDomain,
        kg: u16,
        key: &[u8],
        ts: i64,
    ) -> Result<bool, StateError> {
        match self {
            Timers::Heap(t) => Ok(t.register(domain, kg, key, ts)),
            Timers::Rocks(t) => t.register(tag(domain), kg, key, ts),
        }
    }

    /// Deletes a pending timer; false if there was none.
    pub(crate) fn delete(
        &mut self,
        domain: TimeDomain,
        key: &[u8],
        ts: i64,
    ) -> Result<bool, StateError> {
        match self {
            Timers::Heap(t) => Ok(t.delete(domain, key, ts)),
            Timers::Rocks(t) => t.delete(tag(domain), key, ts),
        }
    }

    /// Removes timers of `domain` due at `up_to` into `out`, in order: all
    /// of them in memory, at most `limit` from RocksDB (which may hold more
    /// than fits in memory). Fewer than `limit` means none is left due.
    pub(crate) fn pop_due(
        &mut self,
        domain: TimeDomain,
        up_to: i64,
        limit: usize,
        out: &mut Vec<FiredTimer>,
    ) -> Result<usize, StateError> {
        match self {
            Timers::Heap(t) => Ok(t.pop_due(domain, up_to, out)),
            Timers::Rocks(t) => {
                let mut fired = Vec::with_capacity(limit.min(1 << 16));
                let n = t.pop_due(tag(domain), up_to, limit, &mut fired)?;
                out.extend(fired.into_iter().map(|s: StoredTimer| FiredTimer {
                    key: s.key,
                    key_group: s.kg,
                    timestamp: s.ts,
                    domain,
                }));
                Ok(n)
            }
        }
    }

    pub(crate) fn next_timestamp(&mut self, domain: TimeDomain) -> Result<Option<i64>, StateError> {
        match self {
            Timers::Heap(t) => Ok(t.next_timestamp(domain)),
            Timers::Rocks(t) => t.next_timestamp(tag(domain)),
        }
    }

    pub(crate) fn len(&self, domain: TimeDomain) -> usize {
        match self {
            Timers::Heap(t) => t.len(domain),
            Timers::Rocks(t) => t.len(tag(domain)),
        }
    }

    /// The in-memory timers, which a snapshot writes out; `None` when they
    /// live in the RocksDB database (its native checkpoint holds them).
    pub(crate) fn in_memory(&self) -> Option<impl Iterator<Item = PendingTimer<'_>>> {
        match self {
            Timers::Heap(t) => Some(t.iter()),
            Timers::Rocks(_) => None,
        }
    }
}

/// A timer read back from a snapshot, with its domain decoded.
pub(crate) fn stored_domain(timer: &StoredTimer) -> TimeDomain {
    from_tag(timer.domain)
}
