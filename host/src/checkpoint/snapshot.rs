//! One subtask's part of a checkpoint: written from its backend, timers and
//! declared states; restored into a subtask that may own other key groups.

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::frames::{FrameWriter, read_frames};
use super::store::LoadedCheckpoint;
use super::{CheckpointError, DeclaredState, StateFiles, SubtaskCheckpoint, feed};
use crate::runtime::key_groups::key_group_range;
use crate::runtime::timer_service::TimeDomain;
use crate::runtime::timers::{Timers, stored_domain};
use crate::spec::StateBackendKind;
use crate::state::{
    KeyedStateBackend, MemoryBackend, RocksDbBackend, RocksDbOptions, StateCatalog, StateEntry,
    StateId, read_rocksdb_checkpoint, read_rocksdb_timers,
};

/// One pending timer in a snapshot.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct TimerRecord {
    pub(crate) domain: TimeDomain,
    pub(crate) kg: u16,
    pub(crate) key: Vec<u8>,
    pub(crate) ts: i64,
}

/// How a subtask's state backend is made.
#[derive(Debug, Clone)]
pub(crate) struct BackendConfig {
    pub(crate) kind: StateBackendKind,
    /// RocksDB: the working database of this subtask.
    pub(crate) dir: PathBuf,
    pub(crate) rocksdb: RocksDbOptions,
}

impl BackendConfig {
    /// An empty backend and its timer store.
    pub(crate) fn open_empty(
        &self,
    ) -> Result<(Box<dyn KeyedStateBackend>, Timers), CheckpointError> {
        Ok(match self.kind {
            StateBackendKind::Memory => (Box::new(MemoryBackend::default()), Timers::default()),
            StateBackendKind::Rocksdb => {
                let backend = RocksDbBackend::open(&self.dir, self.rocksdb.clone())?;
                let timers = Timers::rocks(backend.timer_store()?);
                (Box::new(backend), timers)
            }
        })
    }
}

/// Writes subtask `index`'s snapshot under `checkpoint_dir/subtask-<index>`.
pub(crate) fn write_subtask(
    checkpoint_dir: &Path,
    index: usize,
    key_groups: RangeInclusive<u16>,
    backend: &mut dyn KeyedStateBackend,
    catalog: &StateCatalog,
    timers: &mut Timers,
) -> Result<SubtaskCheckpoint, CheckpointError> {
    let rel = format!("subtask-{index}");
    let dir = checkpoint_dir.join(&rel);
    std::fs::create_dir_all(&dir).map_err(|e| CheckpointError::io(&dir, e))?;

    let native = format!("{rel}/rocksdb");
    timers.flush()?;
    let state = if backend.native_checkpoint(&checkpoint_dir.join(&native))? {
        StateFiles::Rocksdb { dir: native }
    } else {
        let file = format!("{rel}/state.bin");
        let mut out = FrameWriter::create(&checkpoint_dir.join(&file))?;
        feed(|sink| backend.export(sink), |entry| out.write(&entry))?;
        let entries = out.finish()?;
        StateFiles::Portable { file, entries }
    };

    // Timers in RocksDB are in its native checkpoint already.
    let (timers_file, timer_count) = match timers.in_memory() {
        Some(pending) => {
            let file = format!("{rel}/timers.bin");
            let mut out = FrameWriter::create(&checkpoint_dir.join(&file))?;
            for t in pending {
                out.write(&TimerRecord {
                    domain: t.domain,
                    kg: t.key_group,
                    key: t.key.to_vec(),
                    ts: t.timestamp,
                })?;
            }
            (Some(file), out.finish()?)
        }
        None => (
            None,
            (timers.len(TimeDomain::EventTime) + timers.len(TimeDomain::ProcessingTime)) as u64,
        ),
    };

    Ok(SubtaskCheckpoint {
        index,
        key_groups: [*key_groups.start(), *key_groups.end()],
        states: catalog
            .entries()
            .map(|(name, kind)| DeclaredState {
                name: name.to_owned(),
                kind,
            })
            .collect(),
        state,
        timers: timers_file,
        timer_count,
    })
}

/// What a subtask starts from after a restore.
pub(crate) struct RestoredSubtask {
    pub(crate) backend: Box<dyn KeyedStateBackend>,
    pub(crate) catalog: StateCatalog,
    pub(crate) timers: Timers,
}

/// Builds the state of subtask `index` of `parallelism` from a checkpoint
/// taken at any parallelism: the key groups it now owns are gathered from
/// whichever old subtasks held them.
pub(crate) fn restore_subtask(
    checkpoint: &LoadedCheckpoint,
    index: usize,
    parallelism: u32,
    config: &BackendConfig,
) -> Result<RestoredSubtask, CheckpointError> {
    let owned = key_group_range(index, parallelism);
    let sources: Vec<&SubtaskCheckpoint> = checkpoint
        .manifest
        .subtasks
        .iter()
        .filter(|s| overlap(&s.key_group_range(), &owned).is_some())
        .collect();

    let mut catalog = StateCatalog::default();
    // Same key groups, RocksDB on both sides: link the checkpoint's files
    // in, and the declared states keep their ids. Otherwise gather entries.
    let native = match sources.as_slice() {
        [only] if config.kind == StateBackendKind::Rocksdb && only.key_group_range() == owned => {
            match &only.state {
                StateFiles::Rocksdb { dir } => Some((*only, dir)),
                StateFiles::Portable { .. } => None,
            }
        }
        _ => None,
    };
    let (backend, mut timers) = if let Some((only, dir)) = native {
        for s in &only.states {
            declare(&mut catalog, s)?;
        }
        let backend = RocksDbBackend::restore(
            &checkpoint.dir.join(dir),
            &config.dir,
            config.rocksdb.clone(),
        )?;
        // The timers came with the database.
        let timers = Timers::rocks(backend.timer_store()?);
        return Ok(RestoredSubtask {
            backend: Box::new(backend),
            catalog,
            timers,
        });
    } else {
        let (mut backend, timers) = config.open_empty()?;
        for source in &sources {
            let ids: Vec<StateId> = source
                .states
                .iter()
                .map(|s| declare(&mut catalog, s))
                .collect::<Result<_, _>>()?;
            let range = overlap(&source.key_group_range(), &owned).unwrap_or(owned.clone());
            import_state(checkpoint, source, &ids, range, backend.as_mut())?;
        }
        (backend, timers)
    };
    for source in &sources {
        match (&source.timers, &source.state) {
            (Some(file), _) => {
                read_frames(&checkpoint.dir.join(file), |t: TimerRecord| {
                    if owned.contains(&t.kg) {
                        timers.register(t.domain, t.kg, &t.key, t.ts)?;
                    }
                    Ok(())
                })?;
            }
            (None, StateFiles::Rocksdb { dir }) => {
                read_rocksdb_timers(&checkpoint.dir.join(dir), owned.clone(), |t| {
                    timers.register(stored_domain(&t), t.kg, &t.key, t.ts)?;
                    Ok(())
                })?;
            }
            (None, StateFiles::Portable { .. }) => {
                return Err(CheckpointError::Corrupt(format!(
                    "subtask {} records neither a timer file nor a RocksDB checkpoint",
                    source.index
                )));
            }
        }
    }
    Ok(RestoredSubtask {
        backend,
        catalog,
        timers,
    })
}

fn declare(catalog: &mut StateCatalog, state: &DeclaredState) -> Result<StateId, CheckpointError> {
    catalog
        .declare(&state.name, state.kind)
        .map_err(CheckpointError::Incompatible)
}

/// Loads the entries of `range` from one old subtask, renumbering states.
fn import_state(
    checkpoint: &LoadedCheckpoint,
    source: &SubtaskCheckpoint,
    ids: &[StateId],
    range: RangeInclusive<u16>,
    backend: &mut dyn KeyedStateBackend,
) -> Result<(), CheckpointError> {
    let renumber = |entry: StateEntry| -> Result<StateEntry, CheckpointError> {
        let map = |state: StateId| {
            ids.get(state as usize).copied().ok_or_else(|| {
                CheckpointError::Corrupt(format!(
                    "subtask {} has an entry of undeclared state {state}",
                    source.index
                ))
            })
        };
        Ok(match entry {
            StateEntry::Value {
                kg,
                state,
                key,
                value,
            } => StateEntry::Value {
                kg,
                state: map(state)?,
                key,
                value,
            },
            StateEntry::MapEntry {
                kg,
                state,
                key,
                map_key,
                value,
            } => StateEntry::MapEntry {
                kg,
                state: map(state)?,
                key,
                map_key,
                value,
            },
            StateEntry::List {
                kg,
                state,
                key,
                items,
            } => StateEntry::List {
                kg,
                state: map(state)?,
                key,
                items,
            },
        })
    };
    let mut load = |entry: StateEntry| -> Result<(), CheckpointError> {
        if range.contains(&entry.key_group()) {
            backend.import(renumber(entry)?)?;
        }
        Ok(())
    };
    match &source.state {
        StateFiles::Portable { file, .. } => {
            read_frames(&checkpoint.dir.join(file), load)?;
        }
        StateFiles::Rocksdb { dir } => {
            let dir = checkpoint.dir.join(dir);
            feed(
                |sink| read_rocksdb_checkpoint(&dir, range.clone(), sink),
                &mut load,
            )?;
        }
    }
    Ok(())
}

fn overlap(a: &RangeInclusive<u16>, b: &RangeInclusive<u16>) -> Option<RangeInclusive<u16>> {
    let start = *a.start().max(b.start());
    let end = *a.end().min(b.end());
    (start <= end).then_some(start..=end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlaps_of_key_group_ranges() {
        assert_eq!(overlap(&(0..=63), &(32..=127)), Some(32..=63));
        assert_eq!(overlap(&(0..=41), &(42..=84)), None);
        assert_eq!(overlap(&(0..=127), &(5..=5)), Some(5..=5));
    }
}
