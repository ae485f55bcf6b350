//! State migration: when a plugin whose `state-version` is higher than the
//! state's takes over (by a swap or a restore), every stored value goes
//! through the plugin's `migrate` before the plugin takes traffic.
//!
//! Migration is staged: `prepare` reads the whole state and collects the
//! rewritten values without changing anything, so a plugin that refuses (or
//! traps) halfway leaves the state as it was and the old version running;
//! `apply` writes them once every subtask is ready. The staged rewrites sit
//! in memory: a migration needs room for one subtask's state.

use crate::engine::{PluginInstance, StoredValue, WitStateKind};
use crate::state::{KeyedStateBackend, StateEntry, StateError, StateKind};

use super::subtask_host::SubtaskHost;

/// Stored values handed to the plugin per `migrate` call.
const MIGRATE_BATCH: usize = 1024;

/// One rewritten state entry; `None` values are removed.
pub(crate) enum Rewrite {
    Value {
        kg: u16,
        state: u32,
        key: Vec<u8>,
        value: Option<Vec<u8>>,
    },
    MapEntry {
        kg: u16,
        state: u32,
        key: Vec<u8>,
        map_key: Vec<u8>,
        value: Option<Vec<u8>>,
    },
    List {
        kg: u16,
        state: u32,
        key: Vec<u8>,
        items: Vec<Vec<u8>>,
    },
}

/// Whether state in version `state` must be migrated for a plugin of
/// version `plugin`; an error if the plugin is older than the state.
pub(crate) fn needed(state: u32, plugin: u32) -> Result<bool, String> {
    if plugin < state {
        return Err(format!(
            "the state is in state version {state}, and this plugin reads state version {plugin}: \
             a plugin cannot read state written by a newer one"
        ));
    }
    Ok(plugin > state)
}

/// Runs `instance`'s `migrate` over every value its host's state holds,
/// written in state version `from`; changes nothing.
pub(crate) fn prepare(
    instance: &mut PluginInstance<SubtaskHost>,
    from: u32,
) -> Result<Vec<Rewrite>, String> {
    let host = instance.host();
    let mut entries = Vec::new();
    host.backend
        .export(&mut |entry| {
            entries.push(entry);
            Ok(())
        })
        .map_err(|e| format!("reading the state to migrate: {e}"))?;
    let mut items = Vec::new();
    for entry in &entries {
        let (state, values): (u32, Vec<&[u8]>) = match entry {
            StateEntry::Value { state, value, .. } => (*state, vec![value]),
            StateEntry::MapEntry { state, value, .. } => (*state, vec![value]),
            StateEntry::List { state, items, .. } => {
                (*state, items.iter().map(Vec::as_slice).collect())
            }
        };
        let (name, kind) = (host.catalog.name(state), host.catalog.kind(state));
        items.extend(values.into_iter().map(|value| StoredValue {
            state: name.to_owned(),
            kind: match kind {
                StateKind::Value => WitStateKind::Value,
                StateKind::Map => WitStateKind::Map,
                StateKind::List => WitStateKind::List,
            },
            value: value.to_vec(),
        }));
    }
    let mut migrated = Vec::with_capacity(items.len());
    for chunk in items.chunks(MIGRATE_BATCH) {
        match instance.migrate(from, chunk) {
            Ok(Ok(out)) => migrated.extend(out),
            Ok(Err(reason)) => return Err(format!("the plugin refused to migrate: {reason}")),
            Err(trap) => return Err(format!("migrate failed: {}", trap.message)),
        }
    }
    let mut migrated = migrated.into_iter();
    let mut next = || migrated.next().expect("one result per stored value");
    Ok(entries
        .into_iter()
        .map(|entry| match entry {
            StateEntry::Value { kg, state, key, .. } => Rewrite::Value {
                kg,
                state,
                key,
                value: next(),
            },
            StateEntry::MapEntry {
                kg,
                state,
                key,
                map_key,
                ..
            } => Rewrite::MapEntry {
                kg,
                state,
                key,
                map_key,
                value: next(),
            },
            StateEntry::List {
                kg,
                state,
                key,
                items,
            } => Rewrite::List {
                kg,
                state,
                key,
                items: items.iter().filter_map(|_| next()).collect(),
            },
        })
        .collect())
}

/// Writes staged rewrites.
pub(crate) fn apply(
    backend: &mut dyn KeyedStateBackend,
    rewrites: Vec<Rewrite>,
) -> Result<(), StateError> {
    for rewrite in rewrites {
        match rewrite {
            Rewrite::Value {
                kg,
                state,
                key,
                value: Some(value),
            } => backend.value_set(kg, state, &key, &value)?,
            Rewrite::Value { kg, state, key, .. } => backend.value_clear(kg, state, &key)?,
            Rewrite::MapEntry {
                kg,
                state,
                key,
                map_key,
                value: Some(value),
            } => backend.map_put(kg, state, &key, map_key, value)?,
            Rewrite::MapEntry {
                kg,
                state,
                key,
                map_key,
                ..
            } => backend.map_remove(kg, state, &key, &map_key)?,
            Rewrite::List {
                kg,
                state,
                key,
                items,
            } => {
                backend.list_clear(kg, state, &key)?;
                for item in items {
                    backend.list_append(kg, state, &key, item)?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plugin_may_move_forward_but_never_back() {
        assert_eq!(needed(0, 0), Ok(false));
        assert_eq!(needed(0, 2), Ok(true));
        let err = needed(3, 1).unwrap_err();
        assert!(err.contains("state version 3"), "{err}");
    }
}
