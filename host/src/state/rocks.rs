//! Keyed state in RocksDB: state larger than memory, with incremental native
//! checkpoints.
//!
//! # Layout
//!
//! Everything lives in one column family. A key is
//! `[kg: u16 BE][state: u32 BE][kind: u8][key_len: u32 BE][key]`, and a map
//! entry appends its map key to that. The key group leads, so a range of key
//! groups is one contiguous range of RocksDB keys: `retain_key_groups` is two
//! range deletes and a rescale reads one range of a checkpoint. The kind tag
//! follows the state (a state id has one kind, so the tag never reorders
//! anything) and keeps the three kinds apart should ids ever collide; the
//! length prefix makes one key's map entries a prefix no other key shares.
//! An export therefore comes out ordered by key group, then state, then key
//! (shorter keys first, then bytewise), then map key. One column family
//! rather than one per kind keeps export, rescale and range deletes a single
//! scan, and a checkpoint needs no atomic flush across families.
//!
//! Values are stored as they are. A list is the concatenation of its items,
//! each `[len: u32 LE][bytes]`, built by an appending merge operator so that
//! `list_append` is a blind write rather than a read-modify-write.
//!
//! # Caching
//!
//! Value state — the state of almost every per-event read and write — goes
//! through a write-back cache keyed by the encoded RocksDB key. Reads fill it
//! (misses too, as `None`); writes and clears only mark entries dirty. When
//! an insert would take it past `cache_entries`, every dirty entry is written
//! back and the cache is emptied: bounded memory with no per-access LRU
//! bookkeeping. Map and list state go straight to RocksDB. Every operation
//! that reads RocksDB in bulk (checkpoint, export, key state, retain) writes
//! the cache back first; `key_count`, which only has `&self`, overlays it.
//! Pending timers follow the same policy one level up: new ones wait in
//! memory until the next checkpoint or a size cap (`runtime/timers.rs`), so
//! a timer that fires before then never reaches RocksDB.
//!
//! # Durability
//!
//! Writes skip the WAL: the working directory is scratch space and durability
//! comes from checkpoints. `Checkpoint::create_checkpoint` passes
//! `log_size_for_flush = 0`, which makes RocksDB flush the memtables first, so
//! a checkpoint holds every write without a WAL. It hard-links the immutable
//! SST files, so unchanged data is never copied twice.
//!
//! The backend is used by one subtask thread at a time; it is `Send`.

use std::fmt::Display;
use std::fs;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rocksdb::checkpoint::Checkpoint;
use rocksdb::{
    BlockBasedOptions, Cache, DB, DBCompressionType, DBRawIterator, DataBlockIndexType, ErrorKind,
    InfoLogger, LogLevel, MergeOperands, Options, PrefixRange, ReadOptions, WriteBatch,
    WriteOptions,
};
use smallvec::SmallVec;

use super::rocks_timers::{RocksTimers, TIMERS_CF};
use super::table::KeyTable;
use super::{
    EntrySink, KeyState, KeyedStateBackend, MapEntries, StateEntry, StateError, StateId,
    append_value,
};

/// Tuning of the RocksDB backend.
#[derive(Debug, Clone)]
pub struct RocksDbOptions {
    /// Max entries in the write-back cache of value state before it is
    /// written back. The default, 262 144, holds the W2 benchmark's 100 000
    /// hot keys with room to spare while staying near 40–50 MiB (an entry
    /// costs roughly 150–200 bytes with its key and a small value), the same
    /// order as the block cache and one memtable.
    pub cache_entries: usize,
    /// RocksDB block cache size in bytes (default 64 MiB), for data blocks.
    /// Index and filter blocks stay with their table readers (about 1.5
    /// bytes per key), so they are never evicted by data.
    pub block_cache_bytes: usize,
}

impl Default for RocksDbOptions {
    fn default() -> Self {
        Self {
            cache_entries: 1 << 18,
            block_cache_bytes: 64 << 20,
        }
    }
}

/// The kinds of state, as tagged in a RocksDB key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Value = 0,
    Map = 1,
    List = 2,
}

impl Kind {
    fn from_tag(tag: u8) -> Option<Kind> {
        match tag {
            0 => Some(Kind::Value),
            1 => Some(Kind::Map),
            2 => Some(Kind::List),
            _ => None,
        }
    }
}

/// `[kg][state][kind]`: the prefix shared by one state's entries in a group.
const RUN_LEN: usize = 2 + 4 + 1;
/// `[kg][state][kind][key_len]`: everything before the user key.
const HEADER_LEN: usize = RUN_LEN + 4;
/// Above every key: a valid key's kind tag is at most 2, below this run.
const KEY_SPACE_END: [u8; RUN_LEN] = [0xFF; RUN_LEN];
/// How many dirty values one write-back batch carries, so that a write-back
/// of a large cache does not build one huge batch in memory.
const WRITE_BACK_BATCH: usize = 16 * 1024;
/// Keyed state lives in the default column family, pending timers in their
/// own; both with the same options (the timers never use the merge operator).
fn column_families(opts: &Options) -> Vec<rocksdb::ColumnFamilyDescriptor> {
    // Timer entries are a few bytes each: small memtables keep the write
    // side bounded as the state's are.
    let mut timers = opts.clone();
    timers.set_write_buffer_size(16 << 20);
    vec![
        rocksdb::ColumnFamilyDescriptor::new(rocksdb::DEFAULT_COLUMN_FAMILY_NAME, opts.clone()),
        rocksdb::ColumnFamilyDescriptor::new(TIMERS_CF, timers),
    ]
}
/// The name RocksDB records for the list merge operator.
const LIST_MERGE_OPERATOR: &str = "weir.list.append";
/// Block cache of a read-only checkpoint scan: it reads every block once.
const CHECKPOINT_SCAN_CACHE_BYTES: usize = 8 << 20;

/// A cache key (an encoded key: 11 bytes of group, state, kind and length,
/// then the user key) and value, inline in the table's slot up to these
/// sizes. A lookup among many keys is bound by cache misses: with the key
/// and the value each behind a pointer, a hit was three dependent misses
/// (comparing the key was 14 % of W2's subtask on RocksDB), inline it is one.
type CacheValue = SmallVec<[u8; 16]>;

/// One cached value: `None` is a known absence (or a clear to write back).
#[derive(Default)]
struct Cached {
    value: Option<CacheValue>,
    dirty: bool,
}

pub struct RocksDbBackend {
    /// Shared with the subtask's timer store, which keeps pending timers in
    /// the `timers` column family of the same database (and so in the same
    /// checkpoints).
    db: Arc<DB>,
    path: PathBuf,
    write_opts: WriteOptions,
    read_opts: ReadOptions,
    /// Write-back cache of value state, keyed by the encoded RocksDB key.
    cache: KeyTable<Cached, [u8; 24]>,
    cache_entries: usize,
    /// The encoded key of the current operation, reused so that lookups do
    /// not allocate.
    key_buf: Vec<u8>,
    /// The encoded list items of the current append, reused likewise.
    item_buf: Vec<u8>,
}

impl RocksDbBackend {
    /// Opens (creating if needed) a fresh working database in `dir`; an
    /// existing DB in `dir` is removed first (working dirs are scratch space;
    /// durability comes from checkpoints).
    pub fn open(dir: &Path, options: RocksDbOptions) -> Result<Self, StateError> {
        let mut db_opts = db_options(&options);
        remove_db(&db_opts, dir)?;
        create_dir(dir)?;
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        let db = DB::open_cf_descriptors(&db_opts, dir, column_families(&db_opts))
            .map_err(|e| db_error("open RocksDB", dir, &e))?;
        Ok(Self::with_db(db, dir, &options))
    }

    /// Creates the working database `dir` from a native checkpoint written by
    /// `native_checkpoint`, then opens it. The checkpoint stays untouched and
    /// usable: its immutable SST files are hard-linked, every other file
    /// (MANIFEST, CURRENT, OPTIONS) is copied, since RocksDB appends to them.
    pub fn restore(
        checkpoint: &Path,
        dir: &Path,
        options: RocksDbOptions,
    ) -> Result<Self, StateError> {
        let db_opts = db_options(&options);
        remove_db(&db_opts, dir)?;
        create_dir(dir)?;
        copy_checkpoint(checkpoint, dir)?;
        // The files are the checkpoint's: failing to open them means the
        // checkpoint is unusable.
        let db =
            DB::open_cf_descriptors(&db_opts, dir, column_families(&db_opts)).map_err(|e| {
                StateError::Corrupt(format!(
                    "cannot open RocksDB restored from checkpoint {}: {e}",
                    checkpoint.display()
                ))
            })?;
        Ok(Self::with_db(db, dir, &options))
    }

    fn with_db(db: DB, dir: &Path, options: &RocksDbOptions) -> Self {
        let mut write_opts = WriteOptions::default();
        write_opts.disable_wal(true);
        Self {
            db: Arc::new(db),
            path: dir.to_path_buf(),
            write_opts,
            read_opts: ReadOptions::default(),
            cache: KeyTable::default(),
            // A cache of zero entries would write back on every insert and
            // still hold one entry; say so plainly.
            cache_entries: options.cache_entries.max(1),
            key_buf: Vec::with_capacity(64),
            item_buf: Vec::with_capacity(64),
        }
    }

    /// A store of pending timers in this database's `timers` column family.
    pub fn timer_store(&self) -> Result<RocksTimers, StateError> {
        RocksTimers::open(self.db.clone(), &self.path)
    }

    fn err(&self, what: &str, e: &rocksdb::Error) -> StateError {
        db_error(what, &self.path, e)
    }

    /// The value of the RocksDB key `key`, copied out.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        self.db
            .get_pinned_opt(key, &self.read_opts)
            .map(|v| v.map(|v| v.to_vec()))
            .map_err(|e| self.err("read", &e))
    }

    /// Caches `value` (`None`: absent) for the key in `key_buf`: `dirty`
    /// for a write or clear, to be written back; clean for a value just
    /// read. A full cache is written back and emptied first.
    fn cache_put(&mut self, value: Option<&[u8]>, dirty: bool) -> Result<(), StateError> {
        if self.cache.len() >= self.cache_entries
            && self.cache.get(self.key_buf.as_slice()).is_none()
        {
            self.empty_cache()?;
        }
        let value = value.map(CacheValue::from_slice);
        *self.cache.get_or_insert(&self.key_buf) = Cached { value, dirty };
        Ok(())
    }

    fn empty_cache(&mut self) -> Result<(), StateError> {
        self.write_back()?;
        // `clear` keeps the table's allocation, already bounded by
        // `cache_entries`, for the next round.
        self.cache.clear();
        Ok(())
    }

    /// Writes every dirty cached value into RocksDB. Entries are marked clean
    /// only once all batches are written, so a failed write-back loses
    /// nothing (writing an entry twice is harmless).
    fn write_back(&mut self) -> Result<(), StateError> {
        let mut batch = WriteBatch::default();
        for (key, cached) in self.cache.iter().filter(|(_, c)| c.dirty) {
            match &cached.value {
                Some(value) => batch.put(key, &value[..]),
                None => batch.delete(key),
            }
            if batch.len() >= WRITE_BACK_BATCH {
                let full = std::mem::take(&mut batch);
                self.db
                    .write_opt(full, &self.write_opts)
                    .map_err(|e| self.err("write back cached values", &e))?;
            }
        }
        if !batch.is_empty() {
            self.db
                .write_opt(batch, &self.write_opts)
                .map_err(|e| self.err("write back cached values", &e))?;
        }
        for cached in self.cache.values_mut() {
            cached.dirty = false;
        }
        Ok(())
    }

    /// The entries under `prefix` (a key's map), with the prefix cut off.
    fn scan_prefix(&self, prefix: &[u8]) -> Result<MapEntries, StateError> {
        let mut opts = ReadOptions::default();
        opts.set_iterate_range(PrefixRange(prefix));
        let mut iter = self.db.raw_iterator_opt(opts);
        iter.seek_to_first();
        let mut entries = Vec::new();
        while let Some((k, v)) = iter.item() {
            entries.push((k[prefix.len()..].to_vec(), v.to_vec()));
            iter.next();
        }
        iter.status().map_err(|e| self.err("scan a map", &e))?;
        Ok(entries)
    }

    /// The distinct `[kg][state][kind]` runs present in the database (in
    /// group `kg` only, if given), found by seeking from run to run: one
    /// seek per run, however many entries a run holds.
    fn runs(&self, kg: Option<u16>) -> Result<Vec<[u8; RUN_LEN]>, StateError> {
        let mut opts = bulk_read_options();
        if let Some(kg) = kg {
            opts.set_iterate_range(PrefixRange(kg.to_be_bytes()));
        }
        let mut iter = self.db.raw_iterator_opt(opts);
        iter.seek_to_first();
        let mut runs = Vec::new();
        while let Some(key) = iter.key() {
            let run: [u8; RUN_LEN] = key
                .get(..RUN_LEN)
                .and_then(|r| r.try_into().ok())
                .ok_or_else(|| corrupt_key(&self.path, key))?;
            runs.push(run);
            match successor(run) {
                Some(next) => iter.seek(next),
                None => break,
            }
        }
        iter.status().map_err(|e| self.err("list states", &e))?;
        Ok(runs)
    }

    /// The number of distinct keys holding state, with the cache's unwritten
    /// values overlaid. Exact, in bounded memory: per key group, the sorted
    /// runs of every state are merged, so no set of keys is ever built.
    fn count_keys(&self) -> Result<u64, StateError> {
        let cached = self.live_cached_keys();
        let mut runs = self.runs(None)?;
        let mut total = 0;
        let mut cached_rest = cached.as_slice();
        while !runs.is_empty() || !cached_rest.is_empty() {
            // The next group: the smaller of the next run's and the next
            // cached key's.
            let kg = match (runs.first(), cached_rest.first()) {
                (Some(run), Some((ckg, _))) => run_group(run).min(*ckg),
                (Some(run), None) => run_group(run),
                (None, Some((ckg, _))) => *ckg,
                (None, None) => break,
            };
            let split = runs.iter().take_while(|r| run_group(r) == kg).count();
            let group_runs: Vec<_> = runs.drain(..split).collect();
            let cached_split = cached_rest.iter().take_while(|(g, _)| *g == kg).count();
            let (group_cached, rest) = cached_rest.split_at(cached_split);
            cached_rest = rest;
            total += self.count_group_keys(&group_runs, group_cached)?;
        }
        Ok(total)
    }

    /// The user keys of cached live values, by group and key order.
    fn live_cached_keys(&self) -> Vec<(u16, &[u8])> {
        let mut keys: Vec<(u16, &[u8])> = self
            .cache
            .iter()
            .filter(|(_, c)| c.value.is_some())
            .filter_map(|(k, _)| Some((group_of(k)?, user_key(k)?)))
            .collect();
        keys.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| key_order(a.1, b.1)));
        keys
    }

    /// Counts the distinct keys of one group: a merge of the group's runs
    /// (each sorted by key) and its cached live keys.
    fn count_group_keys(
        &self,
        runs: &[[u8; RUN_LEN]],
        cached: &[(u16, &[u8])],
    ) -> Result<u64, StateError> {
        let mut streams = Vec::with_capacity(runs.len());
        for run in runs {
            let mut opts = bulk_read_options();
            opts.set_iterate_range(PrefixRange(run.as_slice()));
            let mut iter = self.db.raw_iterator_opt(opts);
            iter.seek_to_first();
            streams.push((iter, Kind::from_tag(run[RUN_LEN - 1])));
        }
        let mut count = 0;
        let mut cached = cached.iter().map(|(_, k)| *k).peekable();
        let mut current = Vec::new();
        loop {
            let mut next = cached.peek().copied();
            for (iter, _) in &streams {
                if let Some(k) = iter.key().and_then(user_key)
                    && next.is_none_or(|n| key_order(k, n).is_lt())
                {
                    next = Some(k);
                }
            }
            let Some(next) = next else { break };
            current.clear();
            current.extend_from_slice(next);
            let mut live = false;
            while cached.next_if(|k| *k == current.as_slice()).is_some() {
                live = true;
            }
            for (iter, kind) in &mut streams {
                // A map key has one entry per map key: skip them all.
                while let Some(raw) = iter.key()
                    && user_key(raw) == Some(current.as_slice())
                {
                    // A value cleared in the cache is gone, whatever RocksDB
                    // still holds.
                    let cleared = *kind == Some(Kind::Value)
                        && self.cache.get(raw).is_some_and(|c| c.value.is_none());
                    live |= !cleared;
                    iter.next();
                }
            }
            count += u64::from(live);
        }
        for (iter, _) in &streams {
            iter.status().map_err(|e| self.err("count keys", &e))?;
        }
        Ok(count)
    }

    /// Drops every entry in `from..to`: first the SST files wholly inside
    /// (cheap, and it frees the space now), then a range delete for the rest.
    fn drop_range(&self, from: &[u8], to: &[u8]) -> Result<(), StateError> {
        self.db
            .delete_file_in_range(from, to)
            .map_err(|e| self.err("drop key groups", &e))?;
        let mut batch = WriteBatch::default();
        batch.delete_range(from, to);
        self.db
            .write_opt(batch, &self.write_opts)
            .map_err(|e| self.err("drop key groups", &e))
    }
}

impl KeyedStateBackend for RocksDbBackend {
    fn value_get(
        &mut self,
        kg: u16,
        state: StateId,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, StateError> {
        encode_key(&mut self.key_buf, kg, state, Kind::Value, key)?;
        if let Some(cached) = self.cache.get(self.key_buf.as_slice()) {
            return Ok(cached.value.as_deref().map(<[u8]>::to_vec));
        }
        let value = self.get(&self.key_buf)?;
        self.cache_put(value.as_deref(), false)?;
        Ok(value)
    }

    fn value_get_into(
        &mut self,
        kg: u16,
        state: StateId,
        key: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<bool, StateError> {
        encode_key(&mut self.key_buf, kg, state, Kind::Value, key)?;
        match self.cache.get(self.key_buf.as_slice()) {
            // A cached value is copied straight into `out`.
            Some(cached) => Ok(append_value(out, cached.value.as_deref())),
            // A miss goes the ordinary way, which also caches the value.
            None => Ok(append_value(
                out,
                self.value_get(kg, state, key)?.as_deref(),
            )),
        }
    }

    fn value_set(
        &mut self,
        kg: u16,
        state: StateId,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), StateError> {
        encode_key(&mut self.key_buf, kg, state, Kind::Value, key)?;
        self.cache_put(Some(value), true)
    }

    fn value_clear(&mut self, kg: u16, state: StateId, key: &[u8]) -> Result<(), StateError> {
        encode_key(&mut self.key_buf, kg, state, Kind::Value, key)?;
        self.cache_put(None, true)
    }

    fn map_get(
        &mut self,
        kg: u16,
        state: StateId,
        key: &[u8],
        map_key: &[u8],
    ) -> Result<Option<Vec<u8>>, StateError> {
        encode_key(&mut self.key_buf, kg, state, Kind::Map, key)?;
        self.key_buf.extend_from_slice(map_key);
        self.get(&self.key_buf)
    }

    fn map_put(
        &mut self,
        kg: u16,
        state: StateId,
        key: &[u8],
        map_key: Vec<u8>,
        value: Vec<u8>,
    ) -> Result<(), StateError> {
        encode_key(&mut self.key_buf, kg, state, Kind::Map, key)?;
        self.key_buf.extend_from_slice(&map_key);
        self.db
            .put_opt(&self.key_buf, value, &self.write_opts)
            .map_err(|e| self.err("write a map entry", &e))
    }

    fn map_remove(
        &mut self,
        kg: u16,
        state: StateId,
        key: &[u8],
        map_key: &[u8],
    ) -> Result<(), StateError> {
        encode_key(&mut self.key_buf, kg, state, Kind::Map, key)?;
        self.key_buf.extend_from_slice(map_key);
        self.db
            .delete_opt(&self.key_buf, &self.write_opts)
            .map_err(|e| self.err("remove a map entry", &e))
    }

    fn map_entries(
        &mut self,
        kg: u16,
        state: StateId,
        key: &[u8],
    ) -> Result<MapEntries, StateError> {
        encode_key(&mut self.key_buf, kg, state, Kind::Map, key)?;
        self.scan_prefix(&self.key_buf)
    }

    fn map_clear(&mut self, kg: u16, state: StateId, key: &[u8]) -> Result<(), StateError> {
        encode_key(&mut self.key_buf, kg, state, Kind::Map, key)?;
        // Point deletes of the (usually few) entries rather than a range
        // delete: range tombstones, one per cleared map, would slow every
        // later read, and clearing an absent map then writes nothing.
        let entries = self.scan_prefix(&self.key_buf)?;
        if entries.is_empty() {
            return Ok(());
        }
        let mut batch = WriteBatch::default();
        let mut full_key = self.key_buf.clone();
        let prefix_len = full_key.len();
        for (map_key, _) in entries {
            full_key.truncate(prefix_len);
            full_key.extend_from_slice(&map_key);
            batch.delete(&full_key);
        }
        self.db
            .write_opt(batch, &self.write_opts)
            .map_err(|e| self.err("clear a map", &e))
    }

    fn list_append(
        &mut self,
        kg: u16,
        state: StateId,
        key: &[u8],
        value: Vec<u8>,
    ) -> Result<(), StateError> {
        encode_key(&mut self.key_buf, kg, state, Kind::List, key)?;
        self.item_buf.clear();
        push_item(&mut self.item_buf, &value)?;
        self.db
            .merge_opt(&self.key_buf, &self.item_buf, &self.write_opts)
            .map_err(|e| self.err("append to a list", &e))
    }

    fn list_read(
        &mut self,
        kg: u16,
        state: StateId,
        key: &[u8],
    ) -> Result<Vec<Vec<u8>>, StateError> {
        encode_key(&mut self.key_buf, kg, state, Kind::List, key)?;
        match self.get(&self.key_buf)? {
            Some(items) => decode_items(&items, &self.path),
            None => Ok(Vec::new()),
        }
    }

    fn list_clear(&mut self, kg: u16, state: StateId, key: &[u8]) -> Result<(), StateError> {
        encode_key(&mut self.key_buf, kg, state, Kind::List, key)?;
        self.db
            .delete_opt(&self.key_buf, &self.write_opts)
            .map_err(|e| self.err("clear a list", &e))
    }

    fn key_count(&self) -> u64 {
        // The trait gives no way to report an error here (the count is a
        // report, not state): log it instead.
        self.count_keys().unwrap_or_else(|e| {
            tracing::warn!("counting the keys in {}: {e}", self.path.display());
            0
        })
    }

    fn key_state(&mut self, kg: u16, key: &[u8]) -> Result<KeyState, StateError> {
        self.write_back()?;
        let mut view = KeyState::default();
        for run in self.runs(Some(kg))? {
            let (state, kind) = decode_run(&run, &self.path)?;
            encode_key(&mut self.key_buf, kg, state, kind, key)?;
            match kind {
                Kind::Value => {
                    if let Some(value) = self.get(&self.key_buf)? {
                        view.values.push((state, value));
                    }
                }
                Kind::Map => {
                    let entries = self.scan_prefix(&self.key_buf)?;
                    if !entries.is_empty() {
                        view.maps.push((state, entries));
                    }
                }
                Kind::List => {
                    if let Some(items) = self.get(&self.key_buf)? {
                        view.lists.push((state, decode_items(&items, &self.path)?));
                    }
                }
            }
        }
        Ok(view)
    }

    fn export(&mut self, sink: &mut EntrySink<'_>) -> Result<(), StateError> {
        self.write_back()?;
        stream_entries(&self.db, &self.path, None, sink)
    }

    fn import(&mut self, entry: StateEntry) -> Result<(), StateError> {
        match entry {
            StateEntry::List {
                kg,
                state,
                key,
                items,
            } => {
                if items.is_empty() {
                    return Ok(());
                }
                // All items in one merge operand: one write per list.
                encode_key(&mut self.key_buf, kg, state, Kind::List, &key)?;
                self.item_buf.clear();
                for item in &items {
                    push_item(&mut self.item_buf, item)?;
                }
                self.db
                    .merge_opt(&self.key_buf, &self.item_buf, &self.write_opts)
                    .map_err(|e| self.err("import a list", &e))
            }
            other => super::import_entry(self, other),
        }
    }

    fn retain_key_groups(&mut self, keep: RangeInclusive<u16>) -> Result<(), StateError> {
        self.write_back()?;
        self.cache
            .retain(|k, _| group_of(k).is_some_and(|kg| keep.contains(&kg)));
        if keep.is_empty() {
            return self.drop_range(&[], &KEY_SPACE_END);
        }
        let (start, end) = (*keep.start(), *keep.end());
        if start > 0 {
            self.drop_range(&[], &start.to_be_bytes())?;
        }
        if let Some(after) = end.checked_add(1) {
            self.drop_range(&after.to_be_bytes(), &KEY_SPACE_END)?;
        }
        Ok(())
    }

    fn native_checkpoint(&mut self, dir: &Path) -> Result<bool, StateError> {
        self.write_back()?;
        if let Some(parent) = dir.parent() {
            create_dir(parent)?;
        }
        let what = format!("write a checkpoint to {}", dir.display());
        Checkpoint::new(&*self.db)
            .and_then(|c| c.create_checkpoint(dir))
            .map_err(|e| self.err(&what, &e))?;
        Ok(true)
    }
}

/// Streams every entry of a native checkpoint directory whose key group is in
/// `key_groups` to `sink`, opening it read-only (never modifying it). Used
/// when rescaling and for savepoints (portable export).
pub fn read_rocksdb_checkpoint(
    checkpoint: &Path,
    key_groups: RangeInclusive<u16>,
    sink: &mut EntrySink<'_>,
) -> Result<(), StateError> {
    if key_groups.is_empty() {
        return Ok(());
    }
    let opts = db_options(&RocksDbOptions {
        block_cache_bytes: CHECKPOINT_SCAN_CACHE_BYTES,
        ..RocksDbOptions::default()
    });
    // A checkpoint taken with the WAL off holds at most an empty log: no
    // need to refuse one.
    let db = DB::open_for_read_only(&opts, checkpoint, false).map_err(|e| {
        StateError::Corrupt(format!(
            "cannot open RocksDB checkpoint {}: {e}",
            checkpoint.display()
        ))
    })?;
    stream_entries(&db, checkpoint, Some(key_groups), sink)
}

/// Streams the entries of `db` (of `key_groups` only, if given), decoded, in
/// key order.
fn stream_entries(
    db: &DB,
    path: &Path,
    key_groups: Option<RangeInclusive<u16>>,
    sink: &mut EntrySink<'_>,
) -> Result<(), StateError> {
    let mut opts = bulk_read_options();
    if let Some(groups) = key_groups {
        let lower = groups.start().to_be_bytes().to_vec();
        match groups.end().checked_add(1) {
            Some(upper) => opts.set_iterate_range(lower..upper.to_be_bytes().to_vec()),
            None => opts.set_iterate_range(lower..),
        }
    }
    let mut iter: DBRawIterator<'_> = db.raw_iterator_opt(opts);
    iter.seek_to_first();
    while let Some((key, value)) = iter.item() {
        sink(decode_entry(key, value, path)?)?;
        iter.next();
    }
    iter.status()
        .map_err(|e| db_error("read state entries", path, &e))
}

/// The RocksDB options of the working database and of checkpoint scans.
fn db_options(options: &RocksDbOptions) -> Options {
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(&Cache::new_lru_cache(options.block_cache_bytes));
    // Index and filter blocks stay with their table readers, outside the
    // block cache: in the cache, data blocks evicted them, and every miss
    // re-read and re-checksummed a whole filter block (a large state ran at
    // a few thousand events/s). They cost about 1.5 bytes per key: 15 MB
    // for 10 M keys.
    table.set_cache_index_and_filter_blocks(false);
    // Whole-key bloom filters: most value reads of a new key miss, and a
    // miss should not read a data block of every level.
    table.set_bloom_filter(10.0, false);
    // A hash index inside data blocks speeds point lookups; scans still work.
    table.set_data_block_index_type(DataBlockIndexType::BinaryAndHash);

    let mut opts = Options::default();
    opts.set_block_based_table_factory(&table);
    opts.set_merge_operator_associative(LIST_MERGE_OPERATOR, append_items);
    // lz4: cheap to (de)compress, and the only codec built in.
    opts.set_compression_type(DBCompressionType::Lz4);
    // Two 64 MiB memtables bound write-side memory.
    opts.set_write_buffer_size(64 << 20);
    opts.set_max_write_buffer_number(2);
    opts.set_memtable_whole_key_filtering(true);
    opts.set_memtable_prefix_bloom_ratio(0.02);
    // One flush and one compaction at a time: the subtasks need the cores.
    opts.set_max_background_jobs(2);
    opts.set_level_compaction_dynamic_level_bytes(true);
    // RocksDB's own log goes to tracing, not to a LOG file: no clutter in
    // working dirs, and a read-only checkpoint scan writes nothing at all.
    opts.set_info_logger(InfoLogger::new_callback_logger(
        LogLevel::Warn,
        // RocksDB prints its options dump whatever the threshold: only its
        // warnings and errors are ours to show.
        |level, message| match level {
            LogLevel::Warn => tracing::warn!(target: "weir::rocksdb", "{}", message.trim_end()),
            LogLevel::Error | LogLevel::Fatal => {
                tracing::error!(target: "weir::rocksdb", "{}", message.trim_end())
            }
            _ => tracing::debug!(target: "weir::rocksdb", "{}", message.trim_end()),
        },
    ));
    opts
}

/// Read options of bulk scans: they read each block once, so they should not
/// evict the hot blocks from the cache.
fn bulk_read_options() -> ReadOptions {
    let mut opts = ReadOptions::default();
    opts.fill_cache(false);
    opts
}

/// The merge operator of lists: operands are encoded items, so merging is
/// concatenation (and associative, so RocksDB may merge operands early).
fn append_items(_key: &[u8], existing: Option<&[u8]>, operands: &MergeOperands) -> Option<Vec<u8>> {
    let len = existing.map_or(0, <[u8]>::len) + operands.iter().map(<[u8]>::len).sum::<usize>();
    let mut merged = Vec::with_capacity(len);
    merged.extend_from_slice(existing.unwrap_or_default());
    for operand in operands {
        merged.extend_from_slice(operand);
    }
    Some(merged)
}

/// Writes `[kg][state][kind][key_len][key]` into `buf`.
fn encode_key(
    buf: &mut Vec<u8>,
    kg: u16,
    state: StateId,
    kind: Kind,
    key: &[u8],
) -> Result<(), StateError> {
    let len = u32::try_from(key.len())
        .map_err(|_| StateError::Io(format!("a key of {} bytes is too long", key.len())))?;
    buf.clear();
    buf.extend_from_slice(&kg.to_be_bytes());
    buf.extend_from_slice(&state.to_be_bytes());
    buf.push(kind as u8);
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(key);
    Ok(())
}

/// The parts of an encoded key.
struct DecodedKey<'a> {
    kg: u16,
    state: StateId,
    kind: Kind,
    key: &'a [u8],
    /// The map key of a map entry; empty otherwise.
    rest: &'a [u8],
}

fn decode_key<'a>(raw: &'a [u8], path: &Path) -> Result<DecodedKey<'a>, StateError> {
    let corrupt = || corrupt_key(path, raw);
    let header = raw.get(..HEADER_LEN).ok_or_else(corrupt)?;
    let (state, kind) = decode_run(&header[..RUN_LEN], path)?;
    let key_len = u32::from_be_bytes([header[7], header[8], header[9], header[10]]);
    let key_end = usize::try_from(key_len)
        .ok()
        .and_then(|len| HEADER_LEN.checked_add(len))
        .filter(|end| *end <= raw.len())
        .ok_or_else(corrupt)?;
    Ok(DecodedKey {
        kg: u16::from_be_bytes([header[0], header[1]]),
        state,
        kind,
        key: &raw[HEADER_LEN..key_end],
        rest: &raw[key_end..],
    })
}

/// The state and kind of a `[kg][state][kind]` run.
fn decode_run(run: &[u8], path: &Path) -> Result<(StateId, Kind), StateError> {
    let state = StateId::from_be_bytes([run[2], run[3], run[4], run[5]]);
    let kind = Kind::from_tag(run[6]).ok_or_else(|| corrupt_key(path, run))?;
    Ok((state, kind))
}

fn run_group(run: &[u8; RUN_LEN]) -> u16 {
    u16::from_be_bytes([run[0], run[1]])
}

/// The key group of an encoded key.
fn group_of(raw: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(raw.get(..2)?.try_into().ok()?))
}

/// The user key of an encoded key.
fn user_key(raw: &[u8]) -> Option<&[u8]> {
    let len = u32::from_be_bytes(raw.get(RUN_LEN..HEADER_LEN)?.try_into().ok()?);
    raw.get(HEADER_LEN..HEADER_LEN + usize::try_from(len).ok()?)
}

/// The order of user keys within one run: by length, then bytes, as the
/// length prefix sorts them.
fn key_order(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// The smallest run after `run`: the next key to seek to skip all of `run`.
fn successor(mut run: [u8; RUN_LEN]) -> Option<[u8; RUN_LEN]> {
    for byte in run.iter_mut().rev() {
        if *byte < 0xFF {
            *byte += 1;
            return Some(run);
        }
        *byte = 0;
    }
    None
}

fn decode_entry(raw: &[u8], value: &[u8], path: &Path) -> Result<StateEntry, StateError> {
    let k = decode_key(raw, path)?;
    if k.kind != Kind::Map && !k.rest.is_empty() {
        return Err(corrupt_key(path, raw));
    }
    Ok(match k.kind {
        Kind::Value => StateEntry::Value {
            kg: k.kg,
            state: k.state,
            key: k.key.to_vec(),
            value: value.to_vec(),
        },
        Kind::Map => StateEntry::MapEntry {
            kg: k.kg,
            state: k.state,
            key: k.key.to_vec(),
            map_key: k.rest.to_vec(),
            value: value.to_vec(),
        },
        Kind::List => StateEntry::List {
            kg: k.kg,
            state: k.state,
            key: k.key.to_vec(),
            items: decode_items(value, path)?,
        },
    })
}

/// Appends one list item, `[len: u32 LE][bytes]`, to `buf`.
fn push_item(buf: &mut Vec<u8>, item: &[u8]) -> Result<(), StateError> {
    let len = u32::try_from(item.len())
        .map_err(|_| StateError::Io(format!("a list item of {} bytes is too long", item.len())))?;
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(item);
    Ok(())
}

fn decode_items(mut bytes: &[u8], path: &Path) -> Result<Vec<Vec<u8>>, StateError> {
    let mut items = Vec::new();
    while !bytes.is_empty() {
        let item = bytes
            .split_first_chunk::<4>()
            .and_then(|(len, rest)| {
                let len = usize::try_from(u32::from_le_bytes(*len)).ok()?;
                rest.split_at_checked(len)
            })
            .ok_or_else(|| {
                StateError::Corrupt(format!("a list in {} is truncated", path.display()))
            })?;
        items.push(item.0.to_vec());
        bytes = item.1;
    }
    Ok(items)
}

fn corrupt_key(path: &Path, raw: &[u8]) -> StateError {
    StateError::Corrupt(format!(
        "malformed state key {raw:02x?} in {}",
        path.display()
    ))
}

/// A RocksDB error with what was being done and where. RocksDB's own
/// corruption reports (checksum mismatches, bad files) stay corruption.
fn db_error(what: &str, path: &Path, e: &rocksdb::Error) -> StateError {
    let message = format!("{what} ({}): {e}", path.display());
    match e.kind() {
        ErrorKind::Corruption => StateError::Corrupt(message),
        _ => StateError::Io(message),
    }
}

fn io_error(what: &str, path: &Path, e: impl Display) -> StateError {
    StateError::Io(format!("{what} {}: {e}", path.display()))
}

fn create_dir(dir: &Path) -> Result<(), StateError> {
    fs::create_dir_all(dir).map_err(|e| io_error("cannot create", dir, e))
}

/// Removes the database in `dir`, if any. RocksDB's destroy deletes only
/// its own files, so a mistaken `dir` loses nothing else.
fn remove_db(opts: &Options, dir: &Path) -> Result<(), StateError> {
    if !dir.exists() {
        return Ok(());
    }
    DB::destroy(opts, dir).map_err(|e| db_error("remove the old working RocksDB", dir, &e))
}

/// Fills the empty directory `dir` with the checkpoint's files: SST files
/// hard-linked (immutable, so sharing them is safe and costs nothing), every
/// other file copied (RocksDB appends to its MANIFEST, and must not append
/// to the checkpoint's).
fn copy_checkpoint(checkpoint: &Path, dir: &Path) -> Result<(), StateError> {
    let unreadable = |e: std::io::Error| {
        StateError::Corrupt(format!(
            "cannot read RocksDB checkpoint {}: {e}",
            checkpoint.display()
        ))
    };
    for entry in fs::read_dir(checkpoint).map_err(unreadable)? {
        let entry = entry.map_err(unreadable)?;
        if !entry.file_type().map_err(unreadable)?.is_file() {
            continue;
        }
        let name = entry.file_name();
        let from = entry.path();
        let to = dir.join(&name);
        if name.to_string_lossy().ends_with(".sst") {
            // A checkpoint on another filesystem cannot be linked: copy it.
            if fs::hard_link(&from, &to).is_err() {
                fs::copy(&from, &to).map_err(|e| io_error("cannot copy", &from, e))?;
            }
        } else {
            fs::copy(&from, &to).map_err(|e| io_error("cannot copy", &from, e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::os::unix::fs::MetadataExt;

    use super::*;
    use crate::runtime::key_groups::{KEY_GROUPS, key_group};
    use crate::state::MemoryBackend;
    use crate::state::behaviour;

    fn options(cache_entries: usize) -> RocksDbOptions {
        RocksDbOptions {
            cache_entries,
            block_cache_bytes: 1 << 20,
        }
    }

    fn open(dir: &tempfile::TempDir) -> RocksDbBackend {
        RocksDbBackend::open(&dir.path().join("work"), options(1024)).unwrap()
    }

    fn export_all(b: &mut dyn KeyedStateBackend) -> Vec<StateEntry> {
        let mut entries = Vec::new();
        b.export(&mut |e| {
            entries.push(e);
            Ok(())
        })
        .unwrap();
        entries
    }

    fn read_checkpoint(cp: &Path, groups: RangeInclusive<u16>) -> Vec<StateEntry> {
        let mut entries = Vec::new();
        read_rocksdb_checkpoint(cp, groups, &mut |e| {
            entries.push(e);
            Ok(())
        })
        .unwrap();
        entries
    }

    /// A total order on entries, to compare exports of backends whose order
    /// within a key group differs.
    fn sort_key(e: &StateEntry) -> (u16, StateId, &[u8], u8, &[u8]) {
        match e {
            StateEntry::Value { kg, state, key, .. } => (*kg, *state, key.as_slice(), 0, &[][..]),
            StateEntry::MapEntry {
                kg,
                state,
                key,
                map_key,
                ..
            } => (*kg, *state, key.as_slice(), 1, map_key.as_slice()),
            StateEntry::List { kg, state, key, .. } => (*kg, *state, key.as_slice(), 2, &[][..]),
        }
    }

    fn group_and_state(e: &StateEntry) -> (u16, StateId) {
        let (kg, state, ..) = sort_key(e);
        (kg, state)
    }

    fn sorted(mut entries: Vec<StateEntry>) -> Vec<StateEntry> {
        entries.sort_by(|a, b| sort_key(a).cmp(&sort_key(b)));
        entries
    }

    fn normalized(mut s: KeyState) -> KeyState {
        s.values.sort();
        s.maps.sort();
        s.lists.sort();
        s
    }

    /// Some state of every kind, spread over many key groups.
    fn fill(b: &mut RocksDbBackend, keys: std::ops::Range<u32>) {
        for i in keys {
            let key = format!("user-{i}");
            let kg = key_group(key.as_bytes());
            b.value_set(kg, 0, key.as_bytes(), &i.to_le_bytes())
                .unwrap();
            if i % 3 == 0 {
                b.map_put(kg, 1, key.as_bytes(), b"m".to_vec(), vec![1; 10])
                    .unwrap();
            }
            if i % 5 == 0 {
                b.list_append(kg, 2, key.as_bytes(), vec![2; 7]).unwrap();
                b.list_append(kg, 2, key.as_bytes(), vec![3; 2]).unwrap();
            }
        }
    }

    /// Every file of `dir` with its size and modification time.
    fn listing(dir: &Path) -> Vec<(String, u64, std::time::SystemTime)> {
        let mut files: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let meta = e.metadata().unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    meta.len(),
                    meta.modified().unwrap(),
                )
            })
            .collect();
        files.sort();
        files
    }

    fn sst_inodes(dir: &Path) -> BTreeSet<u64> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".sst"))
            .map(|e| e.metadata().unwrap().ino())
            .collect()
    }

    #[test]
    fn the_backend_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<RocksDbBackend>();
    }

    #[test]
    fn values_are_scoped_by_key_and_state() {
        let dir = tempfile::tempdir().unwrap();
        behaviour::values_are_scoped_by_key_and_state(&mut open(&dir));
    }

    #[test]
    fn a_key_whose_last_state_is_cleared_is_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        behaviour::a_key_whose_last_state_is_cleared_is_forgotten(&mut open(&dir));
    }

    #[test]
    fn key_count_sees_written_back_values_and_cached_clears() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = open(&dir);
        b.value_set(1, 0, b"k", b"v").unwrap();
        b.value_set(2, 0, b"j", b"v").unwrap();
        b.write_back().unwrap();
        b.value_clear(1, 0, b"k").unwrap();
        assert_eq!(b.key_count(), 1);
        b.value_set(1, 3, b"k", b"w").unwrap();
        assert_eq!(b.key_count(), 2);
    }

    #[test]
    fn maps_keep_entries_ordered_and_drop_when_emptied() {
        let dir = tempfile::tempdir().unwrap();
        behaviour::maps_keep_entries_ordered_and_drop_when_emptied(&mut open(&dir));
    }

    #[test]
    fn a_map_does_not_see_the_entries_of_a_longer_key() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = open(&dir);
        b.map_put(0, 0, b"k", b"a".to_vec(), b"1".to_vec()).unwrap();
        b.map_put(0, 0, b"kk", b"a".to_vec(), b"2".to_vec())
            .unwrap();
        assert_eq!(b.map_entries(0, 0, b"k").unwrap().len(), 1);
        b.map_clear(0, 0, b"k").unwrap();
        assert_eq!(b.map_entries(0, 0, b"kk").unwrap().len(), 1);
        assert_eq!(b.key_count(), 1);
    }

    #[test]
    fn lists_append_in_order() {
        let dir = tempfile::tempdir().unwrap();
        behaviour::lists_append_in_order(&mut open(&dir));
    }

    #[test]
    fn key_state_shows_every_state_of_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = open(&dir);
        b.value_set(5, 0, b"k", b"v").unwrap();
        b.map_put(5, 1, b"k", b"m".to_vec(), b"x".to_vec()).unwrap();
        b.list_append(5, 2, b"k", b"i".to_vec()).unwrap();
        b.value_set(5, 0, b"other", b"o").unwrap();
        let view = b.key_state(5, b"k").unwrap();
        assert_eq!(
            view,
            KeyState {
                values: vec![(0, b"v".to_vec())],
                maps: vec![(1, vec![(b"m".to_vec(), b"x".to_vec())])],
                lists: vec![(2, vec![b"i".to_vec()])],
            }
        );
        assert_eq!(b.key_state(5, b"none").unwrap(), KeyState::default());
    }

    #[test]
    fn export_then_import_restores_the_same_state() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = open(&dir);
        b.value_set(1, 0, b"a", b"v").unwrap();
        b.map_put(1, 1, b"a", b"m".to_vec(), b"x".to_vec()).unwrap();
        b.list_append(100, 2, b"z", b"1".to_vec()).unwrap();
        b.list_append(100, 2, b"z", b"2".to_vec()).unwrap();
        let entries = export_all(&mut b);
        assert_eq!(entries.len(), 3);
        let other = tempfile::tempdir().unwrap();
        let mut restored = open(&other);
        for e in entries.clone() {
            restored.import(e).unwrap();
        }
        assert_eq!(export_all(&mut restored), entries);
        restored.retain_key_groups(0..=63).unwrap();
        assert_eq!(restored.key_count(), 1);
    }

    #[test]
    fn opening_a_used_dir_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = open(&dir);
        fill(&mut b, 0..50);
        b.write_back().unwrap();
        drop(b);
        let mut b = open(&dir);
        assert_eq!(b.key_count(), 0);
        assert!(export_all(&mut b).is_empty());
    }

    /// A tiny deterministic generator (Knuth's MMIX LCG).
    struct Lcg(u64);

    impl Lcg {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) % n
        }

        fn bytes(&mut self) -> Vec<u8> {
            let len = self.below(6) as usize;
            (0..len).map(|_| self.below(256) as u8).collect()
        }
    }

    const VALUE_STATES: [StateId; 2] = [0, 1];
    const MAP_STATES: [StateId; 2] = [2, 3];
    const LIST_STATE: StateId = 4;

    fn compare_key(
        m: &mut MemoryBackend,
        r: &mut RocksDbBackend,
        kg: u16,
        key: &[u8],
        step: usize,
    ) {
        for s in VALUE_STATES {
            assert_eq!(
                m.value_get(kg, s, key).unwrap(),
                r.value_get(kg, s, key).unwrap(),
                "value {s} of {key:?} at step {step}"
            );
        }
        for s in MAP_STATES {
            assert_eq!(
                m.map_entries(kg, s, key).unwrap(),
                r.map_entries(kg, s, key).unwrap(),
                "map {s} of {key:?} at step {step}"
            );
        }
        assert_eq!(
            m.list_read(kg, LIST_STATE, key).unwrap(),
            r.list_read(kg, LIST_STATE, key).unwrap(),
            "list of {key:?} at step {step}"
        );
    }

    #[test]
    fn behaves_like_the_memory_backend_under_random_operations() {
        let dir = tempfile::tempdir().unwrap();
        // A tiny cache, so that write-backs and evictions happen mid-run.
        let mut r = RocksDbBackend::open(&dir.path().join("work"), options(16)).unwrap();
        let mut m = MemoryBackend::default();
        let keys: Vec<Vec<u8>> = (0..200).map(|i| format!("k{i}").into_bytes()).collect();
        let mut rng = Lcg(42);
        for step in 0..5000 {
            let key = &keys[rng.below(keys.len() as u64) as usize];
            let kg = key_group(key);
            let value_state = VALUE_STATES[rng.below(2) as usize];
            let map_state = MAP_STATES[rng.below(2) as usize];
            let map_key = vec![b'a' + rng.below(6) as u8];
            match rng.below(100) {
                0..25 => {
                    let v = rng.bytes();
                    m.value_set(kg, value_state, key, &v).unwrap();
                    r.value_set(kg, value_state, key, &v).unwrap();
                }
                25..35 => assert_eq!(
                    m.value_get(kg, value_state, key).unwrap(),
                    r.value_get(kg, value_state, key).unwrap()
                ),
                35..45 => {
                    m.value_clear(kg, value_state, key).unwrap();
                    r.value_clear(kg, value_state, key).unwrap();
                }
                45..60 => {
                    let v = rng.bytes();
                    m.map_put(kg, map_state, key, map_key.clone(), v.clone())
                        .unwrap();
                    r.map_put(kg, map_state, key, map_key, v).unwrap();
                }
                60..70 => {
                    m.map_remove(kg, map_state, key, &map_key).unwrap();
                    r.map_remove(kg, map_state, key, &map_key).unwrap();
                }
                70..73 => {
                    m.map_clear(kg, map_state, key).unwrap();
                    r.map_clear(kg, map_state, key).unwrap();
                }
                73..78 => assert_eq!(
                    m.map_get(kg, map_state, key, &map_key).unwrap(),
                    r.map_get(kg, map_state, key, &map_key).unwrap()
                ),
                78..92 => {
                    let v = rng.bytes();
                    m.list_append(kg, LIST_STATE, key, v.clone()).unwrap();
                    r.list_append(kg, LIST_STATE, key, v).unwrap();
                }
                92..95 => {
                    m.list_clear(kg, LIST_STATE, key).unwrap();
                    r.list_clear(kg, LIST_STATE, key).unwrap();
                }
                95..98 => assert_eq!(m.key_count(), r.key_count(), "step {step}"),
                _ => assert_eq!(
                    normalized(m.key_state(kg, key).unwrap()),
                    normalized(r.key_state(kg, key).unwrap()),
                    "key state of {key:?} at step {step}"
                ),
            }
            if step % 100 == 99 {
                for key in &keys {
                    compare_key(&mut m, &mut r, key_group(key), key, step);
                }
                assert_eq!(m.key_count(), r.key_count(), "step {step}");
            }
        }
        let exported = export_all(&mut r);
        assert!(
            exported
                .windows(2)
                .all(|w| group_and_state(&w[0]) <= group_and_state(&w[1])),
            "export is ordered by key group, then state"
        );
        assert_eq!(sorted(export_all(&mut m)), sorted(exported.clone()));

        // The export also round-trips through import.
        let other = tempfile::tempdir().unwrap();
        let mut imported = RocksDbBackend::open(other.path(), options(16)).unwrap();
        for e in exported.clone() {
            imported.import(e).unwrap();
        }
        assert_eq!(export_all(&mut imported), exported);
    }

    #[test]
    fn a_native_checkpoint_restores_and_is_never_modified() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = RocksDbBackend::open(&dir.path().join("work"), options(64)).unwrap();
        fill(&mut b, 0..500);
        let expected = export_all(&mut b);
        let cp = dir.path().join("checkpoints/1");
        assert!(b.native_checkpoint(&cp).unwrap());
        let files = listing(&cp);

        let restored_dir = dir.path().join("restored");
        let mut restored = RocksDbBackend::restore(&cp, &restored_dir, options(64)).unwrap();
        assert_eq!(export_all(&mut restored), expected);

        // Rewrite the restored database thoroughly: new data, a flush (into
        // the MANIFEST RocksDB appends to) and a full compaction (which
        // deletes the linked SST files).
        fill(&mut restored, 0..2000);
        restored.retain_key_groups(0..=10).unwrap();
        assert!(
            restored
                .native_checkpoint(&dir.path().join("other"))
                .unwrap()
        );
        restored.db.compact_range(None::<&[u8]>, None::<&[u8]>);
        drop(restored);

        // The checkpoint is untouched: it reads, and restores, as written.
        assert_eq!(read_checkpoint(&cp, 0..=KEY_GROUPS - 1), expected);
        let mut again =
            RocksDbBackend::restore(&cp, &dir.path().join("again"), options(64)).unwrap();
        assert_eq!(export_all(&mut again), expected);
        // Restoring over a used working dir replaces it.
        let mut over = RocksDbBackend::restore(&cp, &restored_dir, options(64)).unwrap();
        assert_eq!(export_all(&mut over), expected);
        assert_eq!(listing(&cp), files, "no file of the checkpoint changed");
    }

    #[test]
    fn a_partial_read_and_retain_keep_exactly_their_key_groups() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = RocksDbBackend::open(&dir.path().join("work"), options(64)).unwrap();
        fill(&mut b, 0..500);
        let all = export_all(&mut b);
        let cp = dir.path().join("cp");
        b.native_checkpoint(&cp).unwrap();

        let range = 30..=70;
        let part: Vec<_> = all
            .iter()
            .filter(|e| range.contains(&e.key_group()))
            .cloned()
            .collect();
        assert!(!part.is_empty() && part.len() < all.len());
        assert_eq!(read_checkpoint(&cp, range.clone()), part);
        assert_eq!(read_checkpoint(&cp, 0..=u16::MAX), all);

        let mut restored =
            RocksDbBackend::restore(&cp, &dir.path().join("restored"), options(64)).unwrap();
        // Values cached (read, or written and dirty) before the retain go
        // with their groups.
        let outside: Vec<_> = all
            .iter()
            .filter(|e| !range.contains(&e.key_group()))
            .map(|e| (sort_key(e).0, sort_key(e).2))
            .take(2)
            .collect();
        let [(read_kg, read_key), (set_kg, set_key)] = outside[..] else {
            panic!("two keys outside the range")
        };
        assert!(restored.value_get(read_kg, 0, read_key).unwrap().is_some());
        restored.value_set(set_kg, 0, set_key, b"new").unwrap();
        restored.retain_key_groups(range.clone()).unwrap();
        assert_eq!(export_all(&mut restored), part);
        let keys: BTreeSet<_> = part
            .iter()
            .map(|e| (sort_key(e).0, sort_key(e).2))
            .collect();
        assert_eq!(restored.key_count(), keys.len() as u64);
        assert_eq!(restored.value_get(read_kg, 0, read_key).unwrap(), None);
        assert_eq!(
            restored.key_state(set_kg, set_key).unwrap(),
            KeyState::default()
        );
    }

    #[test]
    fn a_second_checkpoint_shares_the_unchanged_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = RocksDbBackend::open(&dir.path().join("work"), options(64)).unwrap();
        fill(&mut b, 0..500);
        let first = dir.path().join("cp-1");
        b.native_checkpoint(&first).unwrap();
        fill(&mut b, 500..520);
        let second = dir.path().join("cp-2");
        b.native_checkpoint(&second).unwrap();

        let (first, second) = (sst_inodes(&first), sst_inodes(&second));
        assert!(!first.is_empty());
        assert!(
            first.is_subset(&second),
            "every file of the first checkpoint is linked, not copied, into the second"
        );
        assert!(second.len() > first.len(), "the new writes are a new file");
    }

    #[test]
    fn an_unusable_checkpoint_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let broken = dir.path().join("broken");
        fs::create_dir(&broken).unwrap();
        fs::write(broken.join("CURRENT"), "MANIFEST-000042\n").unwrap();
        let err = read_rocksdb_checkpoint(&broken, 0..=10, &mut |_| Ok(())).unwrap_err();
        assert!(matches!(err, StateError::Corrupt(_)), "{err}");
        let err = RocksDbBackend::restore(
            &dir.path().join("missing"),
            &dir.path().join("work"),
            options(16),
        )
        .err()
        .unwrap();
        assert!(matches!(err, StateError::Corrupt(_)), "{err}");
    }
}
