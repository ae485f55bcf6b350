//! In-memory keyed state: one hash table per key group (`table.rs`), keyed
//! by the user key.
//!
//! All states of one key sit in one entry (plugins declare few states), so a
//! state call costs one hash lookup of the key and a scan of a tiny vector,
//! and a key whose last state is cleared disappears: memory follows live keys.
//!
//! Short keys and small values live inline in the table's slot rather than
//! in allocations of their own: a lookup among many keys is bound by cache
//! misses, and a boxed key, a boxed list of states and a boxed value made it
//! four dependent misses instead of one (W2 spends most of its state time
//! there). Maps and lists, rarer, sit behind one more pointer.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::path::Path;

use smallvec::SmallVec;

use super::table::KeyTable;
use super::{
    EntrySink, KeyState, KeyedStateBackend, MapEntries, StateEntry, StateError, StateId,
    append_value,
};
use crate::runtime::key_groups::KEY_GROUPS;

/// Bytes kept inline up to `INLINE` of them (user ids, small encoded values).
const INLINE: usize = 16;
type Bytes = SmallVec<[u8; INLINE]>;

#[derive(Default)]
struct KeyEntry {
    values: SmallVec<[(StateId, Bytes); 1]>,
    collections: Option<Box<Collections>>,
}

#[derive(Default)]
struct Collections {
    maps: Vec<(StateId, OrderedMap)>,
    lists: Vec<(StateId, Vec<Vec<u8>>)>,
}

impl KeyEntry {
    fn is_empty(&self) -> bool {
        self.values.is_empty() && self.collections.is_none()
    }

    fn maps(&self) -> &[(StateId, OrderedMap)] {
        self.collections.as_ref().map_or(&[], |c| &c.maps)
    }

    fn lists(&self) -> &[(StateId, Vec<Vec<u8>>)] {
        self.collections.as_ref().map_or(&[], |c| &c.lists)
    }

    fn collections_mut(&mut self) -> &mut Collections {
        self.collections.get_or_insert_default()
    }

    /// Drops the maps-and-lists box once both are empty, so that
    /// `is_empty` stays exact.
    fn tidy(&mut self) {
        if self
            .collections
            .as_ref()
            .is_some_and(|c| c.maps.is_empty() && c.lists.is_empty())
        {
            self.collections = None;
        }
    }
}

type OrderedMap = BTreeMap<Vec<u8>, Vec<u8>>;
type Group = KeyTable<KeyEntry>;

pub struct MemoryBackend {
    groups: Vec<Group>,
}

impl Default for MemoryBackend {
    fn default() -> Self {
        Self {
            groups: (0..KEY_GROUPS).map(|_| Group::default()).collect(),
        }
    }
}

fn find<T>(slots: &[(StateId, T)], state: StateId) -> Option<&T> {
    slots.iter().find(|(id, _)| *id == state).map(|(_, v)| v)
}

fn find_mut<T>(slots: &mut [(StateId, T)], state: StateId) -> Option<&mut T> {
    slots
        .iter_mut()
        .find(|(id, _)| *id == state)
        .map(|(_, v)| v)
}

fn position<T>(slots: &[(StateId, T)], state: StateId) -> Option<usize> {
    slots.iter().position(|(id, _)| *id == state)
}

fn remove<T>(slots: &mut Vec<(StateId, T)>, state: StateId) {
    if let Some(i) = position(slots, state) {
        slots.swap_remove(i);
    }
}

impl MemoryBackend {
    fn entry(&self, kg: u16, key: &[u8]) -> Option<&KeyEntry> {
        self.groups[usize::from(kg)].get(key)
    }

    fn entry_mut(&mut self, kg: u16, key: &[u8]) -> &mut KeyEntry {
        self.groups[usize::from(kg)].get_or_insert(key)
    }

    /// Applies `f` to the key's entry if present, dropping the entry once empty.
    fn update(&mut self, kg: u16, key: &[u8], f: impl FnOnce(&mut KeyEntry)) {
        let group = &mut self.groups[usize::from(kg)];
        let Some(entry) = group.get_mut(key) else {
            return;
        };
        f(entry);
        entry.tidy();
        if entry.is_empty() {
            group.remove(key);
        }
    }
}

impl KeyedStateBackend for MemoryBackend {
    fn value_get(
        &mut self,
        kg: u16,
        state: StateId,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self
            .entry(kg, key)
            .and_then(|e| find(&e.values, state))
            .map(|v| v.to_vec()))
    }

    fn value_get_into(
        &mut self,
        kg: u16,
        state: StateId,
        key: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<bool, StateError> {
        let value = self.entry(kg, key).and_then(|e| find(&e.values, state));
        Ok(append_value(out, value.map(|v| &v[..])))
    }

    fn value_set(
        &mut self,
        kg: u16,
        state: StateId,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), StateError> {
        let entry = self.entry_mut(kg, key);
        let value = Bytes::from_slice(value);
        match find_mut(&mut entry.values, state) {
            Some(slot) => *slot = value,
            None => entry.values.push((state, value)),
        }
        Ok(())
    }

    fn value_clear(&mut self, kg: u16, state: StateId, key: &[u8]) -> Result<(), StateError> {
        self.update(kg, key, |e| {
            if let Some(i) = position(&e.values, state) {
                e.values.swap_remove(i);
            }
        });
        Ok(())
    }

    fn map_get(
        &mut self,
        kg: u16,
        state: StateId,
        key: &[u8],
        map_key: &[u8],
    ) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self
            .entry(kg, key)
            .and_then(|e| find(e.maps(), state))
            .and_then(|m| m.get(map_key))
            .cloned())
    }

    fn map_put(
        &mut self,
        kg: u16,
        state: StateId,
        key: &[u8],
        map_key: Vec<u8>,
        value: Vec<u8>,
    ) -> Result<(), StateError> {
        let maps = &mut self.entry_mut(kg, key).collections_mut().maps;
        match find_mut(maps, state) {
            Some(map) => {
                map.insert(map_key, value);
            }
            None => maps.push((state, BTreeMap::from([(map_key, value)]))),
        }
        Ok(())
    }

    fn map_remove(
        &mut self,
        kg: u16,
        state: StateId,
        key: &[u8],
        map_key: &[u8],
    ) -> Result<(), StateError> {
        self.update(kg, key, |e| {
            let Some(c) = e.collections.as_mut() else {
                return;
            };
            if let Some(map) = find_mut(&mut c.maps, state) {
                map.remove(map_key);
                if map.is_empty() {
                    remove(&mut c.maps, state);
                }
            }
        });
        Ok(())
    }

    fn map_entries(
        &mut self,
        kg: u16,
        state: StateId,
        key: &[u8],
    ) -> Result<MapEntries, StateError> {
        Ok(self
            .entry(kg, key)
            .and_then(|e| find(e.maps(), state))
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default())
    }

    fn map_clear(&mut self, kg: u16, state: StateId, key: &[u8]) -> Result<(), StateError> {
        self.update(kg, key, |e| {
            if let Some(c) = e.collections.as_mut() {
                remove(&mut c.maps, state);
            }
        });
        Ok(())
    }

    fn list_append(
        &mut self,
        kg: u16,
        state: StateId,
        key: &[u8],
        value: Vec<u8>,
    ) -> Result<(), StateError> {
        let lists = &mut self.entry_mut(kg, key).collections_mut().lists;
        match find_mut(lists, state) {
            Some(list) => list.push(value),
            None => lists.push((state, vec![value])),
        }
        Ok(())
    }

    fn list_read(
        &mut self,
        kg: u16,
        state: StateId,
        key: &[u8],
    ) -> Result<Vec<Vec<u8>>, StateError> {
        Ok(self
            .entry(kg, key)
            .and_then(|e| find(e.lists(), state))
            .cloned()
            .unwrap_or_default())
    }

    fn list_clear(&mut self, kg: u16, state: StateId, key: &[u8]) -> Result<(), StateError> {
        self.update(kg, key, |e| {
            if let Some(c) = e.collections.as_mut() {
                remove(&mut c.lists, state);
            }
        });
        Ok(())
    }

    fn key_count(&self) -> u64 {
        self.groups.iter().map(|g| g.len() as u64).sum()
    }

    fn key_state(&mut self, kg: u16, key: &[u8]) -> Result<KeyState, StateError> {
        let Some(entry) = self.entry(kg, key) else {
            return Ok(KeyState::default());
        };
        Ok(KeyState {
            values: entry
                .values
                .iter()
                .map(|(id, v)| (*id, v.to_vec()))
                .collect(),
            maps: entry
                .maps()
                .iter()
                .map(|(id, m)| (*id, m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()))
                .collect(),
            lists: entry.lists().to_vec(),
        })
    }

    fn export(&mut self, sink: &mut EntrySink<'_>) -> Result<(), StateError> {
        for (kg, group) in self.groups.iter().enumerate() {
            let kg = kg as u16;
            for (key, entry) in group.iter() {
                for (state, value) in &entry.values {
                    sink(StateEntry::Value {
                        kg,
                        state: *state,
                        key: key.to_vec(),
                        value: value.to_vec(),
                    })?;
                }
                for (state, map) in entry.maps() {
                    for (map_key, value) in map {
                        sink(StateEntry::MapEntry {
                            kg,
                            state: *state,
                            key: key.to_vec(),
                            map_key: map_key.clone(),
                            value: value.clone(),
                        })?;
                    }
                }
                for (state, items) in entry.lists() {
                    sink(StateEntry::List {
                        kg,
                        state: *state,
                        key: key.to_vec(),
                        items: items.clone(),
                    })?;
                }
            }
        }
        Ok(())
    }

    fn retain_key_groups(&mut self, keep: RangeInclusive<u16>) -> Result<(), StateError> {
        for (kg, group) in self.groups.iter_mut().enumerate() {
            if !keep.contains(&(kg as u16)) {
                *group = Group::default();
            }
        }
        Ok(())
    }

    fn native_checkpoint(&mut self, _dir: &Path) -> Result<bool, StateError> {
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::behaviour;

    #[test]
    fn values_are_scoped_by_key_and_state() {
        behaviour::values_are_scoped_by_key_and_state(&mut MemoryBackend::default());
    }

    #[test]
    fn a_key_whose_last_state_is_cleared_is_forgotten() {
        behaviour::a_key_whose_last_state_is_cleared_is_forgotten(&mut MemoryBackend::default());
    }

    #[test]
    fn maps_keep_entries_ordered_and_drop_when_emptied() {
        behaviour::maps_keep_entries_ordered_and_drop_when_emptied(&mut MemoryBackend::default());
    }

    #[test]
    fn export_then_import_restores_the_same_state() {
        let mut b = MemoryBackend::default();
        b.value_set(1, 0, b"a", b"v").unwrap();
        b.map_put(1, 1, b"a", b"m".to_vec(), b"x".to_vec()).unwrap();
        b.list_append(100, 2, b"z", b"1".to_vec()).unwrap();
        b.list_append(100, 2, b"z", b"2".to_vec()).unwrap();
        let mut entries = Vec::new();
        b.export(&mut |e| {
            entries.push(e);
            Ok(())
        })
        .unwrap();
        assert_eq!(entries.len(), 3);
        let mut restored = MemoryBackend::default();
        for e in entries {
            restored.import(e).unwrap();
        }
        assert_eq!(
            restored.key_state(1, b"a").unwrap(),
            b.key_state(1, b"a").unwrap()
        );
        assert_eq!(restored.list_read(100, 2, b"z").unwrap().len(), 2);
        restored.retain_key_groups(0..=63).unwrap();
        assert_eq!(restored.key_count(), 1);
    }

    #[test]
    fn lists_append_in_order() {
        behaviour::lists_append_in_order(&mut MemoryBackend::default());
    }
}
