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

    /// Writes timers kept in memory in front of RocksDB to the database,
    /// before its native checkpoint.
    pub(crate) fn flush(&mut self) -> Result<(), StateError> {
        match self {
            Timers::Heap(_) => Ok(()),
            Timers::Rocks(t) => t.flush(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{KeyedStateBackend, RocksDbBackend, RocksDbOptions};

    /// A pseudo-random walk of registrations, deletions, firings, flushes
    /// and checkpoint restores: the RocksDB store (timers in memory and in
    /// the database) must answer exactly as the in-memory timer service.
    #[test]
    fn rocksdb_timers_behave_like_the_in_memory_service() {
        let dir = tempfile::tempdir().unwrap();
        let mut backend =
            RocksDbBackend::open(&dir.path().join("db"), RocksDbOptions::default()).unwrap();
        let mut rocks = Timers::Rocks(backend.timer_store().unwrap());
        let mut heap = Timers::default();
        let mut seed = 0x5EEDu64;
        let mut next = |n: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        let mut restores = 0;
        for step in 0..20_000 {
            let domain = if next(4) == 0 {
                TimeDomain::ProcessingTime
            } else {
                TimeDomain::EventTime
            };
            let key = format!("k{}", next(20)).into_bytes();
            let ts = next(400) as i64 - 50;
            match next(100) {
                0..=49 => {
                    let kg = next(8) as u16;
                    assert_eq!(
                        rocks.register(domain, kg, &key, ts).unwrap(),
                        heap.register(domain, kg, &key, ts).unwrap(),
                        "register at step {step}"
                    );
                }
                50..=69 => assert_eq!(
                    rocks.delete(domain, &key, ts).unwrap(),
                    heap.delete(domain, &key, ts).unwrap(),
                    "delete at step {step}"
                ),
                70..=89 => {
                    let up_to = next(400) as i64 - 50;
                    let limit = 1 + next(6) as usize;
                    let (mut a, mut b) = (Vec::new(), Vec::new());
                    // The heap hands out every due timer at once.
                    while rocks.pop_due(domain, up_to, limit, &mut a).unwrap() == limit {}
                    heap.pop_due(domain, up_to, usize::MAX, &mut b).unwrap();
                    let view = |v: &[FiredTimer]| -> Vec<(i64, Vec<u8>, u16)> {
                        v.iter()
                            .map(|t| (t.timestamp, t.key.clone(), t.key_group))
                            .collect()
                    };
                    assert_eq!(view(&a), view(&b), "fired at step {step}");
                }
                90..=98 => rocks.flush().unwrap(),
                _ => {
                    // Checkpoint and restore, as a crash and restart would.
                    rocks.flush().unwrap();
                    restores += 1;
                    let checkpoint = dir.path().join(format!("chk-{restores}"));
                    backend.native_checkpoint(&checkpoint).unwrap();
                    drop(rocks);
                    backend = RocksDbBackend::restore(
                        &checkpoint,
                        &dir.path().join(format!("db-{restores}")),
                        RocksDbOptions::default(),
                    )
                    .unwrap();
                    rocks = Timers::Rocks(backend.timer_store().unwrap());
                }
            }
            for d in [TimeDomain::EventTime, TimeDomain::ProcessingTime] {
                assert_eq!(rocks.len(d), heap.len(d), "len at step {step}");
                assert_eq!(
                    rocks.next_timestamp(d).unwrap(),
                    heap.next_timestamp(d).unwrap(),
                    "next timestamp at step {step}"
                );
            }
        }
        assert!(restores > 50);
    }
}
