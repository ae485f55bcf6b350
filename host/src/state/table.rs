//! The memory backend's table of keys: open addressing with linear probing,
//! each slot holding its key's hash, the key and the entry side by side.
//!
//! Why not a Swiss table: there a lookup reads the control bytes, then the
//! slot, two cache misses among many keys, and an insert of a key the read
//! did not find misses again on the slot. Here the first slot probed is
//! where the key would be, so a lookup is one miss, and the insert that
//! follows a failed read finds that line in cache. W2's state accesses are
//! dominated by exactly these misses (BENCHMARKS.md).
//!
//! Deletion shifts the following slots of the run back (no tombstones), so a
//! table whose keys come and go stays as fast as a fresh one.

use std::hash::BuildHasher;

use rustc_hash::FxBuildHasher;
use smallvec::{Array, SmallVec};

/// An empty slot has hash 0; a key's hash is never 0. Keys up to `A`'s
/// length live inline in their slot.
struct Slot<V, A: Array<Item = u8>> {
    hash: u64,
    key: SmallVec<A>,
    value: V,
}

pub(super) struct KeyTable<V, A: Array<Item = u8> = [u8; 16]> {
    slots: Vec<Slot<V, A>>,
    len: usize,
}

impl<V: Default, A: Array<Item = u8>> Default for KeyTable<V, A> {
    fn default() -> Self {
        KeyTable {
            slots: Vec::new(),
            len: 0,
        }
    }
}

fn hash_of(key: &[u8]) -> u64 {
    FxBuildHasher.hash_one(key) | 1
}

impl<V: Default, A: Array<Item = u8>> KeyTable<V, A> {
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// The slot a hash starts probing at (Fibonacci hashing: the top bits
    /// of the product, which mix every bit of the hash).
    fn home(&self, hash: u64) -> usize {
        let bits = self.slots.len().trailing_zeros();
        (hash.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - bits)) as usize
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    /// Where `key` is, or `Err` with the empty slot that ends its run.
    fn find(&self, hash: u64, key: &[u8]) -> Result<usize, usize> {
        let mask = self.mask();
        let mut i = self.home(hash);
        loop {
            let slot = &self.slots[i];
            if slot.hash == 0 {
                return Err(i);
            }
            if slot.hash == hash && slot.key[..] == *key {
                return Ok(i);
            }
            i = (i + 1) & mask;
        }
    }

    pub(super) fn get(&self, key: &[u8]) -> Option<&V> {
        if self.len == 0 {
            return None;
        }
        let i = self.find(hash_of(key), key).ok()?;
        Some(&self.slots[i].value)
    }

    pub(super) fn get_mut(&mut self, key: &[u8]) -> Option<&mut V> {
        if self.len == 0 {
            return None;
        }
        let i = self.find(hash_of(key), key).ok()?;
        Some(&mut self.slots[i].value)
    }

    /// The entry of `key`, created empty (`V::default()`) if absent.
    pub(super) fn get_or_insert(&mut self, key: &[u8]) -> &mut V {
        // At most 3/4 full, so that runs stay short.
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.grow();
        }
        let hash = hash_of(key);
        let i = match self.find(hash, key) {
            Ok(i) => i,
            Err(i) => {
                self.slots[i] = Slot {
                    hash,
                    key: SmallVec::from_slice(key),
                    value: V::default(),
                };
                self.len += 1;
                i
            }
        };
        &mut self.slots[i].value
    }

    /// Removes `key` if present, moving later slots of its run back so that
    /// no lookup stops short of them.
    pub(super) fn remove(&mut self, key: &[u8]) {
        if self.len == 0 {
            return;
        }
        let Ok(mut hole) = self.find(hash_of(key), key) else {
            return;
        };
        self.slots[hole] = empty();
        self.len -= 1;
        let mask = self.mask();
        let mut i = (hole + 1) & mask;
        while self.slots[i].hash != 0 {
            // A slot may move back into the hole unless its home lies
            // (cyclically) after the hole and at or before the slot itself.
            let home = self.home(self.slots[i].hash);
            let stays = if hole <= i {
                hole < home && home <= i
            } else {
                hole < home || home <= i
            };
            if !stays {
                self.slots.swap(hole, i);
                hole = i;
            }
            i = (i + 1) & mask;
        }
    }

    fn grow(&mut self) {
        let capacity = (self.slots.len() * 2).max(8);
        let old = std::mem::replace(
            &mut self.slots,
            std::iter::repeat_with(empty).take(capacity).collect(),
        );
        let mask = self.mask();
        for slot in old.into_iter().filter(|s| s.hash != 0) {
            // The keys are distinct: the first empty slot of the run is its.
            let mut i = self.home(slot.hash);
            while self.slots[i].hash != 0 {
                i = (i + 1) & mask;
            }
            self.slots[i] = slot;
        }
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&[u8], &V)> {
        self.slots
            .iter()
            .filter(|s| s.hash != 0)
            .map(|s| (&s.key[..], &s.value))
    }

    pub(super) fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.slots
            .iter_mut()
            .filter(|s| s.hash != 0)
            .map(|s| &mut s.value)
    }

    /// Empties the table, keeping its allocation.
    pub(super) fn clear(&mut self) {
        self.slots.iter_mut().for_each(|s| *s = empty());
        self.len = 0;
    }

    /// Keeps only the keys `keep` accepts (rebuilding the table: a rare
    /// operation, on restore).
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&[u8], &V) -> bool) {
        let old = std::mem::take(&mut self.slots);
        self.len = 0;
        for slot in old.into_iter().filter(|s| s.hash != 0) {
            if keep(&slot.key, &slot.value) {
                *self.get_or_insert(&slot.key) = slot.value;
            }
        }
    }
}

fn empty<V: Default, A: Array<Item = u8>>() -> Slot<V, A> {
    Slot {
        hash: 0,
        key: SmallVec::new(),
        value: V::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::rng;
    use std::collections::HashMap;

    /// Every key in the table is reachable from its home slot without
    /// crossing an empty slot, and `len` counts the keys.
    fn check(table: &KeyTable<u64>) {
        let keys: Vec<&[u8]> = table.iter().map(|(k, _)| k).collect();
        assert_eq!(keys.len(), table.len());
        for key in keys {
            assert!(table.find(hash_of(key), key).is_ok());
        }
    }

    #[test]
    fn behaves_like_a_hash_map_under_random_inserts_updates_and_removals() {
        let mut next = rng(0x5eed);
        let mut table = KeyTable::<u64>::default();
        let mut model = HashMap::<Vec<u8>, u64>::new();
        for step in 0..200_000u64 {
            // Few distinct keys, so that runs collide and removals shift;
            // some too long to be inline.
            let n = next(3_000);
            let key = if n.is_multiple_of(7) {
                format!("a long key that does not fit inline {n}").into_bytes()
            } else {
                n.to_string().into_bytes()
            };
            match next(4) {
                0 | 1 => {
                    *table.get_or_insert(&key) = step;
                    model.insert(key.clone(), step);
                }
                2 => {
                    table.remove(&key);
                    model.remove(&key);
                }
                _ => {
                    if let Some(v) = table.get_mut(&key) {
                        *v += 1;
                    }
                    if let Some(v) = model.get_mut(&key) {
                        *v += 1;
                    }
                }
            }
            assert_eq!(table.get(&key), model.get(&key));
            if step % 10_000 == 0 {
                check(&table);
            }
        }
        check(&table);
        let mut all: Vec<(Vec<u8>, u64)> = table.iter().map(|(k, v)| (k.to_vec(), *v)).collect();
        let mut expected: Vec<(Vec<u8>, u64)> = model.into_iter().collect();
        all.sort();
        expected.sort();
        assert_eq!(all, expected);
    }

    #[test]
    fn removing_every_key_leaves_an_empty_table_that_still_works() {
        let mut table = KeyTable::<u64>::default();
        let keys: Vec<Vec<u8>> = (0..1_000u32).map(|i| i.to_be_bytes().to_vec()).collect();
        for (i, key) in keys.iter().enumerate() {
            *table.get_or_insert(key) = i as u64;
        }
        for key in keys.iter().rev() {
            table.remove(key);
            table.remove(key);
        }
        assert_eq!(table.len(), 0);
        assert_eq!(table.iter().count(), 0);
        assert_eq!(table.get(&keys[3]), None);
        *table.get_or_insert(b"") = 9;
        assert_eq!(table.get(b""), Some(&9));
    }

    #[test]
    fn retain_and_clear_keep_what_they_should() {
        let mut table = KeyTable::<u64, [u8; 24]>::default();
        for i in 0..500u64 {
            *table.get_or_insert(format!("key {i}").as_bytes()) = i;
        }
        table.retain(|_, v| v % 3 == 0);
        assert_eq!(table.len(), 167);
        assert_eq!(table.get(b"key 9"), Some(&9));
        assert_eq!(table.get(b"key 10"), None);
        table.values_mut().for_each(|v| *v += 1);
        assert_eq!(table.get(b"key 9"), Some(&10));
        table.clear();
        assert_eq!(table.len(), 0);
        assert_eq!(table.get(b"key 9"), None);
        *table.get_or_insert(b"key 9") = 1;
        assert_eq!(table.iter().count(), 1);
    }
}
