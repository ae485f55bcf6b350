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
//!
//! Timers registered since the last flush wait in memory (`fresh`, keyed
//! like the database) and reach RocksDB only at a checkpoint or when too
//! many wait: a window's timer usually fires before the next checkpoint, so
//! it never costs a database read, write or delete. A registration later
//! than every timer in the database needs no read to know it is new.

use std::collections::BTreeMap;
use std::ops::{Bound, RangeInclusive};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rocksdb::{DB, DBRawIterator, ReadOptions, WriteBatch, WriteOptions};

use super::StateError;

pub(crate) const TIMERS_CF: &str = "timers";

/// The most timers kept in memory before they are written to RocksDB (at
/// about 100 bytes each, some 25 MiB).
const FRESH_LIMIT: usize = 1 << 18;

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
    /// Timers registered since the last flush, by their database key.
    fresh: BTreeMap<Vec<u8>, u16>,
    fresh_len: [usize; 2],
    /// Pending timers per domain in the database.
    db_len: [usize; 2],
    /// The earliest pending timestamp per domain in the database; `None`
    /// when unknown.
    db_next: [Option<Option<i64>>; 2],
    /// No timer of the domain in the database is below this (all below
    /// have fired).
    floor: [i64; 2],
    /// No timer of the domain in the database is above this.
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
fn bound(domain: u8, ts: i64) -> [u8; 9] {
    let mut b = [0u8; 9];
    b[0] = domain;
    b[1..].copy_from_slice(&flip(ts).to_be_bytes());
    b
}

/// Where a domain's timers after `ts` begin: `[domain][ts + 1]`, or the
/// next domain's first key.
fn bound_after(domain: u8, ts: i64) -> Vec<u8> {
    match ts.checked_add(1) {
        Some(after) => bound(domain, after).to_vec(),
        None => vec![domain + 1],
    }
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
            fresh: BTreeMap::new(),
            fresh_len: [0; 2],
            db_len: [0; 2],
            db_next: [None; 2],
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
        (store.db_len, store.ceiling) = (len, ceiling);
        Ok(store)
    }

    fn cf(&self) -> Result<&rocksdb::ColumnFamily, StateError> {
        self.db
            .cf_handle(TIMERS_CF)
            .ok_or_else(|| StateError::Corrupt(format!("{} has no timers", self.path.display())))
    }

    /// Whether the timer in `key_buf` is in the database.
    fn in_db(&self, domain: u8, ts: i64) -> Result<bool, StateError> {
        let d = usize::from(domain);
        if self.db_len[d] == 0 || ts > self.ceiling[d] || ts < self.floor[d] {
            return Ok(false);
        }
        let cf = self.cf()?;
        self.db
            .get_pinned_cf(cf, &self.key_buf)
            .map(|v| v.is_some())
            .map_err(|e| db_err("read a timer", &self.path, e))
    }

    /// Registers a timer; false if the same one was pending.
    pub fn register(
        &mut self,
        domain: u8,
        kg: u16,
        key: &[u8],
        ts: i64,
    ) -> Result<bool, StateError> {
        encode(&mut self.key_buf, domain, ts, key);
        if self.fresh.contains_key(&self.key_buf) || self.in_db(domain, ts)? {
            return Ok(false);
        }
        self.fresh.insert(self.key_buf.clone(), kg);
        self.fresh_len[usize::from(domain)] += 1;
        if self.fresh.len() >= FRESH_LIMIT {
            self.flush()?;
        }
        Ok(true)
    }

    /// Deletes a pending timer; false if there was none.
    pub fn delete(&mut self, domain: u8, key: &[u8], ts: i64) -> Result<bool, StateError> {
        let d = usize::from(domain);
        encode(&mut self.key_buf, domain, ts, key);
        if self.fresh.remove(&self.key_buf).is_some() {
            self.fresh_len[d] -= 1;
            return Ok(true);
        }
        if !self.in_db(domain, ts)? {
            return Ok(false);
        }
        let cf = self.cf()?;
        self.db
            .delete_cf_opt(cf, &self.key_buf, &self.write_opts)
            .map_err(|e| db_err("delete a timer", &self.path, e))?;
        self.db_len[d] -= 1;
        if self.db_next[d] == Some(Some(ts)) {
            self.db_next[d] = None;
        }
        Ok(true)
    }

    /// Writes the timers waiting in memory to the database; a native
    /// checkpoint must come after this to hold every pending timer.
    pub fn flush(&mut self) -> Result<(), StateError> {
        if self.fresh.is_empty() {
            return Ok(());
        }
        let mut batch = WriteBatch::default();
        let cf = self.cf()?;
        for (raw, kg) in &self.fresh {
            batch.put_cf(cf, raw, kg.to_be_bytes());
        }
        self.db
            .write_opt(batch, &self.write_opts)
            .map_err(|e| db_err("write timers", &self.path, e))?;
        for d in 0..2u8 {
            let i = usize::from(d);
            let Some((first, last)) = self.fresh_span(d)? else {
                continue;
            };
            self.floor[i] = self.floor[i].min(first);
            self.ceiling[i] = self.ceiling[i].max(last);
            if let Some(next) = &mut self.db_next[i] {
                *next = Some(next.map_or(first, |n| n.min(first)));
            }
            self.db_len[i] += self.fresh_len[i];
        }
        self.fresh_len = [0; 2];
        self.fresh.clear();
        Ok(())
    }

    /// The fresh timers of `domain` with `from <= ts <= to`, in order.
    fn fresh_range(
        &self,
        domain: u8,
        from: i64,
        to: i64,
    ) -> impl Iterator<Item = (&Vec<u8>, &u16)> + '_ {
        let lower = bound(domain, from);
        let upper = bound_after(domain, to);
        self.fresh
            .range::<[u8], _>((Bound::Included(&lower[..]), Bound::Excluded(&upper[..])))
    }

    /// The earliest and latest timestamps of `domain`'s fresh timers.
    fn fresh_span(&self, domain: u8) -> Result<Option<(i64, i64)>, StateError> {
        let lower = bound(domain, i64::MIN);
        let upper = [domain + 1];
        let mut range = self
            .fresh
            .range::<[u8], _>((Bound::Included(&lower[..]), Bound::Excluded(&upper[..])));
        let ts = |raw: &[u8]| decode(raw, &[0, 0], &self.path).map(|t| t.ts);
        let Some((first, _)) = range.next() else {
            return Ok(None);
        };
        let first = ts(first)?;
        let last = range.next_back().map_or(Ok(first), |(raw, _)| ts(raw))?;
        Ok(Some((first, last)))
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
        if self.len(domain) == 0 || self.next_timestamp(domain)?.is_none_or(|next| next > up_to) {
            return Ok(0);
        }
        // The first `limit` due of each side, merged by (time, key).
        let mut stored = Vec::new();
        let floor = self.floor[d];
        if self.db_len[d] > 0 && self.db_next(domain)?.is_some_and(|next| next <= up_to) {
            self.scan(domain, domain, floor, up_to, |t| {
                stored.push(t);
                Ok(stored.len() < limit)
            })?;
        }
        let db_exhausted = stored.len() < limit;
        let fresh = self
            .fresh_range(domain, i64::MIN, up_to)
            .take(limit)
            .map(|(raw, kg)| decode(raw, &kg.to_be_bytes(), &self.path))
            .collect::<Result<Vec<_>, _>>()?;
        let (mut i, mut j) = (0, 0);
        while i + j < limit {
            let take_stored = match (stored.get(i), fresh.get(j)) {
                (Some(a), Some(b)) => (a.ts, &a.key) <= (b.ts, &b.key),
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            if take_stored {
                out.push(stored[i].clone());
                i += 1;
            } else {
                out.push(fresh[j].clone());
                j += 1;
            }
        }

        let mut key = Vec::with_capacity(64);
        for t in &fresh[..j] {
            encode(&mut key, t.domain, t.ts, &t.key);
            self.fresh.remove(&key);
        }
        self.fresh_len[d] -= j;
        if i > 0 {
            let mut batch = WriteBatch::default();
            let cf = self.cf()?;
            for t in &stored[..i] {
                encode(&mut key, t.domain, t.ts, &t.key);
                batch.delete_cf(cf, &key);
            }
            self.db
                .write_opt(batch, &self.write_opts)
                .map_err(|e| db_err("delete fired timers", &self.path, e))?;
            self.db_len[d] -= i;
            self.db_next[d] = None;
        }
        // Every due one taken: none is left at or below `up_to`; otherwise
        // more may wait at the last timestamp taken.
        self.floor[d] = if i == stored.len() && db_exhausted {
            up_to.saturating_add(1)
        } else if i > 0 {
            stored[i - 1].ts
        } else {
            floor
        }
        .max(floor);
        Ok(i + j)
    }

    /// The earliest pending timestamp of `domain` in the database.
    fn db_next(&mut self, domain: u8) -> Result<Option<i64>, StateError> {
        let d = usize::from(domain);
        if self.db_len[d] == 0 {
            return Ok(None);
        }
        if let Some(next) = self.db_next[d] {
            return Ok(next);
        }
        let mut first = None;
        self.scan(domain, domain, self.floor[d], i64::MAX, |t| {
            first = Some(t.ts);
            Ok(false)
        })?;
        self.db_next[d] = Some(first);
        Ok(first)
    }

    /// The earliest pending timestamp of `domain`.
    pub fn next_timestamp(&mut self, domain: u8) -> Result<Option<i64>, StateError> {
        let fresh = self.fresh_span(domain)?.map(|(first, _)| first);
        Ok(match (fresh, self.db_next(domain)?) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    pub fn len(&self, domain: u8) -> usize {
        let d = usize::from(domain);
        self.db_len[d] + self.fresh_len[d]
    }

    /// Calls `each` on the timers of domains `first..=last` with `from <=
    /// ts <= to` in the database, in order, while it returns true.
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
            opts.set_iterate_range(bound(domain, from).to_vec()..bound_after(domain, to));
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

    #[test]
    fn timers_fire_in_order_and_survive_a_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let backend =
            RocksDbBackend::open(&dir.path().join("db"), RocksDbOptions::default()).unwrap();
        let mut timers = backend.timer_store().unwrap();
        // Ties fire by key, whatever the key group (as in memory).
        assert!(timers.register(0, 3, b"b", 20).unwrap());
        assert!(timers.register(0, 7, b"a", 20).unwrap());
        assert!(!timers.register(0, 3, b"a", 20).unwrap());
        assert!(timers.register(0, 1, b"z", -5).unwrap());
        assert!(timers.register(1, 1, b"p", 7).unwrap());
        assert!(timers.register(0, 9, b"late", 100).unwrap());
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
        assert!(timers.register(0, 2, b"again", 10).unwrap());
        assert_eq!(timers.next_timestamp(0).unwrap(), Some(10));

        let mut backend = backend;
        let checkpoint = dir.path().join("chk");
        timers.flush().unwrap();
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

    #[test]
    fn timers_in_memory_and_in_the_database_fire_as_one_ordered_set() {
        let dir = tempfile::tempdir().unwrap();
        let backend =
            RocksDbBackend::open(&dir.path().join("db"), RocksDbOptions::default()).unwrap();
        let mut timers = backend.timer_store().unwrap();
        for ts in [10, 30, 50] {
            assert!(timers.register(0, 1, b"d", ts).unwrap());
        }
        timers.flush().unwrap();
        assert!(timers.fresh.is_empty());
        // In memory now: "c" sorts before "d" at 30.
        for ts in [20, 30, 40] {
            assert!(timers.register(0, 2, b"c", ts).unwrap());
        }
        assert!(!timers.register(0, 1, b"d", 30).unwrap());
        assert!(!timers.register(0, 2, b"c", 20).unwrap());
        assert!(timers.register(1, 0, b"p", 15).unwrap());
        assert_eq!((timers.len(0), timers.len(1)), (6, 1));
        assert_eq!(timers.next_timestamp(0).unwrap(), Some(10));
        assert!(timers.delete(0, b"d", 50).unwrap());
        assert!(timers.delete(0, b"c", 40).unwrap());
        assert!(!timers.delete(0, b"c", 40).unwrap());
        assert!(!timers.delete(0, b"d", 50).unwrap());

        let mut fired = Vec::new();
        assert_eq!(timers.pop_due(0, 35, 3, &mut fired).unwrap(), 3);
        assert_eq!(timers.pop_due(0, 35, 3, &mut fired).unwrap(), 1);
        let order: Vec<(i64, &[u8], u16)> = fired
            .iter()
            .map(|t| (t.ts, t.key.as_slice(), t.kg))
            .collect();
        assert_eq!(
            order,
            vec![
                (10, &b"d"[..], 1),
                (20, b"c", 2),
                (30, b"c", 2),
                (30, b"d", 1)
            ]
        );
        assert_eq!((timers.len(0), timers.len(1)), (0, 1));
        assert_eq!(timers.next_timestamp(0).unwrap(), None);

        // Below every fired one and written out: still known and fired.
        assert!(timers.register(0, 1, b"e", 5).unwrap());
        timers.flush().unwrap();
        assert!(!timers.register(0, 1, b"e", 5).unwrap());
        assert_eq!(timers.next_timestamp(0).unwrap(), Some(5));
        fired.clear();
        assert_eq!(timers.pop_due(0, 100, 10, &mut fired).unwrap(), 1);
        assert_eq!(fired[0].key, b"e");
    }

    #[test]
    fn too_many_timers_in_memory_are_written_to_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let backend =
            RocksDbBackend::open(&dir.path().join("db"), RocksDbOptions::default()).unwrap();
        let mut timers = backend.timer_store().unwrap();
        let n = FRESH_LIMIT as i64 + 10;
        for ts in (0..n).rev() {
            assert!(timers.register(0, 0, b"k", ts).unwrap());
        }
        assert_eq!(timers.fresh.len(), 10);
        assert_eq!(timers.len(0), n as usize);
        assert!(!timers.register(0, 0, b"k", 7).unwrap());
        let mut fired = Vec::new();
        while timers.pop_due(0, i64::MAX, 4096, &mut fired).unwrap() == 4096 {}
        assert_eq!(fired.len(), n as usize);
        assert!(fired.windows(2).all(|w| w[0].ts < w[1].ts));
        assert_eq!(timers.len(0), 0);
    }
}
