//! A subtask's pending timers: in memory (`TimerService`) with the memory
//! backend, in the RocksDB database (`RocksTimers`) with the RocksDB backend,
//! where they take no memory per key and ride in native checkpoints.
//!
//! With RocksDB, timers registered since the last checkpoint wait in memory
//! and reach the database at the next checkpoint (or past `FRESH_LIMIT`): a
//! window's timer usually fires before then and never costs a database
//! read, write or delete.

use super::timer_service::{FiredTimer, PendingTimer, TimeDomain, TimerService};
use crate::state::{RocksTimers, StateError, StoredTimer};

/// The most new timers kept in memory in front of RocksDB (about 100 bytes
/// each, so some 6 MiB): W2's 100 000 users keep about 45 000 windows open.
const FRESH_LIMIT: usize = 1 << 16;

pub(crate) enum Timers {
    Heap(TimerService),
    Rocks {
        /// Registered since the last flush; never also in `stored`.
        fresh: TimerService,
        stored: RocksTimers,
    },
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

/// Moves the fresh timers into the database.
fn flush(fresh: &mut TimerService, stored: &mut RocksTimers) -> Result<(), StateError> {
    if fresh.is_empty() {
        return Ok(());
    }
    stored.insert(
        fresh
            .iter()
            .map(|t| (tag(t.domain), t.key_group, t.key, t.timestamp)),
    )?;
    *fresh = TimerService::new();
    Ok(())
}

impl Timers {
    /// Timers kept in RocksDB, behind an in-memory layer of new ones.
    pub(crate) fn rocks(stored: RocksTimers) -> Timers {
        Timers::Rocks {
            fresh: TimerService::new(),
            stored,
        }
    }

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
            Timers::Rocks { fresh, stored } => {
                if stored.contains(tag(domain), ts, key)? || !fresh.register(domain, kg, key, ts) {
                    return Ok(false);
                }
                if fresh.len(TimeDomain::EventTime) + fresh.len(TimeDomain::ProcessingTime)
                    >= FRESH_LIMIT
                {
                    flush(fresh, stored)?;
                }
                Ok(true)
            }
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
            Timers::Rocks { fresh, stored } => {
                Ok(fresh.delete(domain, key, ts) || stored.delete(tag(domain), key, ts)?)
            }
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
            Timers::Rocks { fresh, stored } => {
                // Grown as needed: most calls find nothing due in the database.
                let mut from_db = Vec::new();
                let mut n = stored.pop_due(tag(domain), up_to, limit, &mut from_db)?;
                let fresh_due = fresh.next_timestamp(domain).is_some_and(|ts| ts <= up_to);
                if n == limit && fresh_due {
                    // More may be due in the database than one call takes,
                    // some of it before fresh ones (rare: a large state at
                    // a big jump of time). Store all and take in one order.
                    stored.insert(
                        from_db
                            .iter()
                            .map(|t| (t.domain, t.kg, t.key.as_slice(), t.ts)),
                    )?;
                    flush(fresh, stored)?;
                    from_db.clear();
                    n = stored.pop_due(tag(domain), up_to, limit, &mut from_db)?;
                }
                let fired = |s: StoredTimer| FiredTimer {
                    key: s.key,
                    key_group: s.kg,
                    timestamp: s.ts,
                    domain,
                };
                if !fresh_due || n == limit {
                    out.extend(from_db.into_iter().map(fired));
                    return Ok(n);
                }
                // Every due timer of the database is in `from_db`: merge
                // the two ordered runs by (time, key).
                let mut from_memory = Vec::new();
                n += fresh.pop_due(domain, up_to, &mut from_memory);
                let mut stored_run = from_db.into_iter().map(fired).peekable();
                let mut memory_run = from_memory.into_iter().peekable();
                loop {
                    let next = match (stored_run.peek(), memory_run.peek()) {
                        (Some(a), Some(b)) => {
                            if (a.timestamp, &a.key) <= (b.timestamp, &b.key) {
                                stored_run.next()
                            } else {
                                memory_run.next()
                            }
                        }
                        (Some(_), None) => stored_run.next(),
                        (None, _) => memory_run.next(),
                    };
                    let Some(t) = next else { break };
                    out.push(t);
                }
                Ok(n)
            }
        }
    }

    /// Writes the timers kept in memory in front of RocksDB to the
    /// database; its native checkpoint must come after this.
    pub(crate) fn flush(&mut self) -> Result<(), StateError> {
        match self {
            Timers::Heap(_) => Ok(()),
            Timers::Rocks { fresh, stored } => flush(fresh, stored),
        }
    }

    pub(crate) fn next_timestamp(&mut self, domain: TimeDomain) -> Result<Option<i64>, StateError> {
        match self {
            Timers::Heap(t) => Ok(t.next_timestamp(domain)),
            Timers::Rocks { fresh, stored } => {
                let stored = stored.next_timestamp(tag(domain))?;
                Ok(match (fresh.next_timestamp(domain), stored) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                })
            }
        }
    }

    pub(crate) fn len(&self, domain: TimeDomain) -> usize {
        match self {
            Timers::Heap(t) => t.len(domain),
            Timers::Rocks { fresh, stored } => fresh.len(domain) + stored.len(tag(domain)),
        }
    }

    /// The in-memory timers, which a snapshot writes out; `None` when they
    /// live in the RocksDB database (its native checkpoint holds them once
    /// `flush` has run).
    pub(crate) fn in_memory(&self) -> Option<impl Iterator<Item = PendingTimer<'_>>> {
        match self {
            Timers::Heap(t) => Some(t.iter()),
            Timers::Rocks { .. } => None,
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
        let mut rocks = Timers::rocks(backend.timer_store().unwrap());
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
                    rocks = Timers::rocks(backend.timer_store().unwrap());
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

    #[test]
    fn past_the_limit_new_timers_go_to_rocksdb_and_still_fire_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let backend =
            RocksDbBackend::open(&dir.path().join("db"), RocksDbOptions::default()).unwrap();
        let mut timers = Timers::rocks(backend.timer_store().unwrap());
        let n = FRESH_LIMIT as i64 + 10;
        for ts in (0..n).rev() {
            assert!(timers.register(TimeDomain::EventTime, 0, b"k", ts).unwrap());
        }
        let Timers::Rocks { fresh, stored } = &timers else {
            unreachable!()
        };
        assert_eq!(
            (fresh.len(TimeDomain::EventTime), stored.len(0)),
            (10, FRESH_LIMIT)
        );
        assert!(!timers.register(TimeDomain::EventTime, 0, b"k", 7).unwrap());
        assert!(
            !timers
                .register(TimeDomain::EventTime, 0, b"k", n - 1)
                .unwrap()
        );
        let mut fired = Vec::new();
        while timers
            .pop_due(TimeDomain::EventTime, i64::MAX, 4096, &mut fired)
            .unwrap()
            >= 4096
        {}
        assert_eq!(fired.len(), n as usize);
        assert!(fired.windows(2).all(|w| w[0].timestamp < w[1].timestamp));
        assert_eq!(timers.len(TimeDomain::EventTime), 0);
    }
}
