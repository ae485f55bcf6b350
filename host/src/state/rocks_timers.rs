//! Pending timers in RocksDB: the `timers` column family of a subtask's
//! database, so timers take no memory per key and ride in the same native
//! checkpoints as the keyed state.
//!
//! A timer's key is `[domain u8][ts u64 BE, sign bit flipped][key]` and its
//! value the key group (u16 BE): one domain's timers sort by time, then key
//! bytes, the order the in-memory timer service fires them in, so firing is
//! a range scan from the front and both backends fire ties alike. Scans start at the
//! lowest timestamp that can still be pending (below it are only the
//! tombstones of fired timers), and the earliest timestamp per domain is
//! cached, so `next_timestamp` costs no read while nothing changes it.
//! Timers are written in batches (`insert`) by the runtime, which keeps new
//! ones in memory until a checkpoint (`runtime/timers.rs`); the lowest and
//! highest pending timestamps bound `contains`, so asking about a timer
//! later than every stored one costs no read.

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rocksdb::{DB, DBRawIterator, ReadOptions, WriteBatch, WriteOptions};

use super::StateError;

pub(crate) const TIMERS_CF: &str = "timers";

/// A fired or pending timer as the store hands it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTimer {
    pub domain: u8,
    pub kg: u16,
    pub key: Vec<u8>,
    pub ts: i64,
}

pub struct RocksTimers {
    db: Arc<DB>,
    path: PathBuf,
    write_opts: WriteOptions,
    /// Pending timers per domain.
    len: [usize; 2],
    /// The earliest pending timestamp per domain; `None` when unknown.
    next: [Option<Option<i64>>; 2],
    /// No timer of the domain is below this (all below have fired).
    floor: [i64; 2],
    /// No timer of the domain is above this.
    ceiling: [i64; 2],
    key_buf: Vec<u8>,
}

fn flip(ts: i64) -> u64 {
    (ts as u64) ^ (1 << 63)
}

fn unflip(bits: u64) -> i64 {
    (bits ^ (1 << 63)) as i64
}

fn encode(buf: &mut Vec<u8>, domain: u8, ts: i64, key: &[u8]) {
    buf.clear();
    buf.push(domain);
    buf.extend_from_slice(&flip(ts).to_be_bytes());
    buf.extend_from_slice(key);
}

fn decode(raw: &[u8], value: &[u8], path: &Path) -> Result<StoredTimer, StateError> {
    let (Some(ts), [a, b]) = (raw.get(1..9), value) else {
        return Err(StateError::Corrupt(format!(
            "{}: a timer entry of {} + {} bytes",
            path.display(),
            raw.len(),
            value.len()
        )));
    };
    let mut bits = [0u8; 8];
    bits.copy_from_slice(ts);
    Ok(StoredTimer {
        domain: raw[0],
        ts: unflip(u64::from_be_bytes(bits)),
        kg: u16::from_be_bytes([*a, *b]),
        key: raw[9..].to_vec(),
    })
}

/// `[domain][ts]`: where a domain's timers at or after `ts` begin.
fn bound(domain: u8, ts: i64) -> Vec<u8> {
    let mut b = vec![domain];
    b.extend_from_slice(&flip(ts).to_be_bytes());
    b
}

fn db_err(what: &str, path: &Path, e: rocksdb::Error) -> StateError {
    StateError::Io(format!("{what} ({}): {e}", path.display()))
}

impl RocksTimers {
    fn new(db: Arc<DB>, path: &Path) -> Self {
        let mut write_opts = WriteOptions::default();
        write_opts.disable_wal(true);
        Self {
            db,
            path: path.to_owned(),
            write_opts,
            len: [0; 2],
            next: [None; 2],
            floor: [i64::MIN; 2],
            ceiling: [i64::MIN; 2],
            key_buf: Vec::with_capacity(64),
        }
    }

    /// The store over `db`'s timer column family; counts what is pending
    /// (a restored database may hold timers).
    pub(crate) fn open(db: Arc<DB>, path: &Path) -> Result<Self, StateError> {
        let mut store = Self::new(db, path);
        let (mut len, mut ceiling) = ([0usize; 2], [i64::MIN; 2]);
        store.scan(0, 1, i64::MIN, i64::MAX, |t| {
            let d = usize::from(t.domain);
            if d < 2 {
                len[d] += 1;
                ceiling[d] = ceiling[d].max(t.ts);
            }
            Ok(true)
        })?;
        (store.len, store.ceiling) = (len, ceiling);
        Ok(store)
    }

    fn cf(&self) -> Result<&rocksdb::ColumnFamily, StateError> {
        self.db
            .cf_handle(TIMERS_CF)
            .ok_or_else(|| StateError::Corrupt(format!("{} has no timers", self.path.display())))
    }

    /// Whether the timer is pending; no read when its time is outside the
    /// pending ones'.
    pub fn contains(&mut self, domain: u8, ts: i64, key: &[u8]) -> Result<bool, StateError> {
        let d = usize::from(domain);
        if self.len[d] == 0 || ts < self.floor[d] || ts > self.ceiling[d] {
            return Ok(false);
        }
        encode(&mut self.key_buf, domain, ts, key);
        let cf = self.cf()?;
        self.db
            .get_pinned_cf(cf, &self.key_buf)
            .map(|v| v.is_some())
            .map_err(|e| db_err("read a timer", &self.path, e))
    }

    /// Writes timers `(domain, key group, key, ts)` known not to be
    /// pending, in one batch.
    pub fn insert<'a>(
        &mut self,
        timers: impl IntoIterator<Item = (u8, u16, &'a [u8], i64)>,
    ) -> Result<(), StateError> {
        let mut batch = WriteBatch::default();
        let cf = self.cf()?;
        let mut added = [0usize; 2];
        let (mut lowest, mut highest) = ([i64::MAX; 2], [i64::MIN; 2]);
        let mut raw = Vec::with_capacity(64);
        for (domain, kg, key, ts) in timers {
            let d = usize::from(domain);
            encode(&mut raw, domain, ts, key);
            batch.put_cf(cf, &raw, kg.to_be_bytes());
            added[d] += 1;
            lowest[d] = lowest[d].min(ts);
            highest[d] = highest[d].max(ts);
        }
        self.db
            .write_opt(batch, &self.write_opts)
            .map_err(|e| db_err("write timers", &self.path, e))?;
        for d in 0..2 {
            if added[d] == 0 {
                continue;
            }
            self.len[d] += added[d];
            self.floor[d] = self.floor[d].min(lowest[d]);
            self.ceiling[d] = self.ceiling[d].max(highest[d]);
            if let Some(next) = &mut self.next[d] {
                *next = Some(next.map_or(lowest[d], |n| n.min(lowest[d])));
            }
        }
        Ok(())
    }

    /// Deletes a pending timer; false if there was none.
    pub fn delete(&mut self, domain: u8, key: &[u8], ts: i64) -> Result<bool, StateError> {
        if !self.contains(domain, ts, key)? {
            return Ok(false);
        }
        // `contains` read the database, so `key_buf` holds this timer.
        let cf = self.cf()?;
        self.db
            .delete_cf_opt(cf, &self.key_buf, &self.write_opts)
            .map_err(|e| db_err("delete a timer", &self.path, e))?;
        let d = usize::from(domain);
        self.len[d] -= 1;
        if self.next[d] == Some(Some(ts)) {
            self.next[d] = None;
        }
        Ok(true)
    }

    /// Removes the timers of `domain` at or before `up_to`, at most `limit`
    /// of them (so firing millions at once never holds them all in memory),
    /// and appends them to `out` by time, then key. Returns how many; fewer
    /// than `limit` means none is left due.
    pub fn pop_due(
        &mut self,
        domain: u8,
        up_to: i64,
        limit: usize,
        out: &mut Vec<StoredTimer>,
    ) -> Result<usize, StateError> {
        let d = usize::from(domain);
        if self.len[d] == 0 || self.next_timestamp(domain)?.is_none_or(|next| next > up_to) {
            return Ok(0);
        }
        let before = out.len();
        let floor = self.floor[d];
        self.scan(domain, domain, floor, up_to, |t| {
            out.push(t);
            Ok(out.len() - before < limit)
        })?;
        let mut batch = WriteBatch::default();
        let cf = self.cf()?;
        let mut key = Vec::with_capacity(64);
        for t in &out[before..] {
            encode(&mut key, t.domain, t.ts, &t.key);
            batch.delete_cf(cf, &key);
        }
        self.db
            .write_opt(batch, &self.write_opts)
            .map_err(|e| db_err("delete fired timers", &self.path, e))?;
        let fired = out.len() - before;
        self.len[d] -= fired;
        // Stopped at the limit: more may wait at the last timestamp taken.
        self.floor[d] = match out.last() {
            Some(last) if fired == limit => last.ts,
            _ => up_to.saturating_add(1),
        }
        .max(floor);
        self.next[d] = None;
        Ok(fired)
    }

    /// The earliest pending timestamp of `domain`.
    pub fn next_timestamp(&mut self, domain: u8) -> Result<Option<i64>, StateError> {
        let d = usize::from(domain);
        if self.len[d] == 0 {
            return Ok(None);
        }
        if let Some(next) = self.next[d] {
            return Ok(next);
        }
        let mut first = None;
        self.scan(domain, domain, self.floor[d], i64::MAX, |t| {
            first = Some(t.ts);
            Ok(false)
        })?;
        self.next[d] = Some(first);
        Ok(first)
    }

    pub fn len(&self, domain: u8) -> usize {
        self.len[usize::from(domain)]
    }

    /// Calls `each` on the timers of domains `first..=last` with `from <=
    /// ts <= to`, in order, while it returns true.
    fn scan(
        &self,
        first: u8,
        last: u8,
        from: i64,
        to: i64,
        mut each: impl FnMut(StoredTimer) -> Result<bool, StateError>,
    ) -> Result<(), StateError> {
        let cf = self.cf()?;
        for domain in first..=last {
            let mut opts = ReadOptions::default();
            let upper = match to.checked_add(1) {
                Some(after) => bound(domain, after),
                None => vec![domain + 1],
            };
            opts.set_iterate_range(bound(domain, from)..upper);
            let mut iter: DBRawIterator<'_> = self.db.raw_iterator_cf_opt(cf, opts);
            iter.seek_to_first();
            while let Some((key, value)) = iter.item() {
                if !each(decode(key, value, &self.path)?)? {
                    return Ok(());
                }
                iter.next();
            }
            iter.status()
                .map_err(|e| db_err("read timers", &self.path, e))?;
        }
        Ok(())
    }
}

/// The pending timers of `key_groups` in a native checkpoint, read-only.
pub fn read_rocksdb_timers(
    checkpoint: &Path,
    key_groups: RangeInclusive<u16>,
    mut each: impl FnMut(StoredTimer) -> Result<(), StateError>,
) -> Result<(), StateError> {
    let opts = rocksdb::Options::default();
    let db = DB::open_cf_for_read_only(
        &opts,
        checkpoint,
        [rocksdb::DEFAULT_COLUMN_FAMILY_NAME, TIMERS_CF],
        false,
    )
    .map_err(|e| {
        StateError::Corrupt(format!(
            "cannot open the timers of RocksDB checkpoint {}: {e}",
            checkpoint.display()
        ))
    })?;
    let store = RocksTimers::new(Arc::new(db), checkpoint);
    store.scan(0, 1, i64::MIN, i64::MAX, |t| {
        if key_groups.contains(&t.kg) {
            each(t)?;
        }
        Ok(true)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{RocksDbBackend, RocksDbOptions};

    fn register(timers: &mut RocksTimers, domain: u8, kg: u16, key: &[u8], ts: i64) -> bool {
        if timers.contains(domain, ts, key).unwrap() {
            return false;
        }
        timers.insert([(domain, kg, key, ts)]).unwrap();
        true
    }

    #[test]
    fn timers_fire_in_order_and_survive_a_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let backend =
            RocksDbBackend::open(&dir.path().join("db"), RocksDbOptions::default()).unwrap();
        let mut timers = backend.timer_store().unwrap();
        // Ties fire by key, whatever the key group (as in memory).
        assert!(register(&mut timers, 0, 3, b"b", 20));
        assert!(register(&mut timers, 0, 7, b"a", 20));
        assert!(!register(&mut timers, 0, 3, b"a", 20));
        assert!(register(&mut timers, 0, 1, b"z", -5));
        assert!(register(&mut timers, 1, 1, b"p", 7));
        assert!(register(&mut timers, 0, 9, b"late", 100));
        assert_eq!(timers.len(0), 4);
        assert_eq!(timers.next_timestamp(0).unwrap(), Some(-5));
        assert!(timers.delete(0, b"late", 100).unwrap());
        assert!(!timers.delete(0, b"late", 100).unwrap());

        // A limit takes the first ones and leaves the rest due.
        let mut fired = Vec::new();
        assert_eq!(timers.pop_due(0, 20, 2, &mut fired).unwrap(), 2);
        assert_eq!(timers.pop_due(0, 20, 2, &mut fired).unwrap(), 1);
        let order: Vec<(i64, &[u8])> = fired.iter().map(|t| (t.ts, t.key.as_slice())).collect();
        assert_eq!(order, vec![(-5, &b"z"[..]), (20, b"a"), (20, b"b")]);
        assert_eq!(timers.next_timestamp(0).unwrap(), None);
        // A timer registered in the past after firing still fires.
        assert!(register(&mut timers, 0, 2, b"again", 10));
        assert_eq!(timers.next_timestamp(0).unwrap(), Some(10));

        let mut backend = backend;
        let checkpoint = dir.path().join("chk");
        crate::state::KeyedStateBackend::native_checkpoint(&mut backend, &checkpoint).unwrap();
        let mut seen = Vec::new();
        read_rocksdb_timers(&checkpoint, 0..=2, |t| {
            seen.push((t.domain, t.ts, t.key));
            Ok(())
        })
        .unwrap();
        assert_eq!(
            seen,
            vec![(0, 10, b"again".to_vec()), (1, 7, b"p".to_vec())]
        );
        let restored = RocksDbBackend::restore(
            &checkpoint,
            &dir.path().join("db2"),
            RocksDbOptions::default(),
        )
        .unwrap();
        let restored_timers = restored.timer_store().unwrap();
        assert_eq!((restored_timers.len(0), restored_timers.len(1)), (1, 1));
    }
}
