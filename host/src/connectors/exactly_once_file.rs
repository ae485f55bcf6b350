//! The exactly-once file sink: JSON lines that become visible per checkpoint.
//!
//! Records of the epoch in progress go to a staging file beside the output
//! (`.<name>.weir-staging/open.jsonl`). At a checkpoint barrier the staging
//! file is made durable and renamed after the checkpoint (pre-commit); when
//! the checkpoint is complete its staged files are appended to the output
//! (commit). The checkpoint records, for every epoch not yet committed, where
//! in the output it starts and how long it is, so a restore can finish an
//! interrupted commit (truncate to the epoch's start, append it again) and
//! cut off anything committed after the restored checkpoint. Readers of the
//! output only ever see committed records, and a crash at any instant
//! followed by a restore leaves the output as an uninterrupted run would.
//!
//! Committed output is only ever cut back to what a restored checkpoint
//! committed. With nothing to restore, an output that holds records was
//! committed by checkpoints that are gone: it is refused, not emptied,
//! unless the user asked to start over (`FileSinkStart::Overwrite`).

use std::fs::{File, OpenOptions};
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::sinks::write_json_line;
use super::{ConnectorError, OutputRecord, Sink, SinkState};

/// What a checkpoint records for one exactly-once file sink.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSinkState {
    /// The output's length once every epoch up to this checkpoint is committed.
    pub committed_len: u64,
    /// Epochs staged but possibly not yet appended, oldest first.
    pub pending: Vec<StagedEpoch>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedEpoch {
    pub checkpoint: u64,
    /// Offset in the output where this epoch's records go.
    pub start: u64,
    pub len: u64,
}

/// How an exactly-once file sink starts.
#[derive(Debug, Clone, Copy)]
pub enum FileSinkStart<'a> {
    /// Bring the output back to exactly what this checkpoint committed.
    Restore(&'a FileSinkState),
    /// Nothing to restore: the output must be missing or empty.
    Empty,
    /// The user asked to start from scratch: the output is emptied.
    Overwrite,
}

pub struct ExactlyOnceFileSink {
    path: PathBuf,
    staging: PathBuf,
    output: File,
    open: Option<BufWriter<File>>,
    state: FileSinkState,
}

const OPEN_EPOCH: &str = "open.jsonl";

fn staged_name(checkpoint: u64) -> String {
    format!("epoch-{checkpoint:012}.jsonl")
}

impl ExactlyOnceFileSink {
    /// Opens the sink. With `Restore` the output is brought back to exactly
    /// what that checkpoint committed (finishing commits a crash
    /// interrupted); with `Empty` an output holding anything is refused
    /// and left as it is; with `Overwrite` it is emptied.
    pub fn open(path: &Path, start: FileSinkStart<'_>) -> Result<Self, ConnectorError> {
        let open_err = |source| ConnectorError::Open {
            path: path.to_owned(),
            source,
        };
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "output".into());
        let staging = parent.join(format!(".{name}.weir-staging"));
        std::fs::create_dir_all(&staging).map_err(open_err)?;
        let output = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)
            .map_err(open_err)?;
        let mut sink = Self {
            path: path.to_owned(),
            staging,
            output,
            open: None,
            state: FileSinkState::default(),
        };
        match start {
            FileSinkStart::Restore(state) => sink.recover(state)?,
            FileSinkStart::Empty => {
                let len = sink.output.metadata().map_err(|e| sink.err(e))?.len();
                if len > 0 {
                    return Err(sink.inconsistent(format!(
                        "it holds {len} bytes that earlier runs committed, and there is no \
                         checkpoint to resume them from; it is left as it is. Move it away, \
                         or start the pipeline from scratch to rewrite it"
                    )));
                }
            }
            FileSinkStart::Overwrite => sink.output.set_len(0).map_err(|e| sink.err(e))?,
        }
        sink.remove_staged_files()?;
        Ok(sink)
    }

    fn recover(&mut self, state: &FileSinkState) -> Result<(), ConnectorError> {
        for epoch in &state.pending {
            let staged = self.staging.join(staged_name(epoch.checkpoint));
            match std::fs::metadata(&staged) {
                Ok(meta) if meta.len() == epoch.len => self.append_staged(epoch, &staged)?,
                Ok(meta) => {
                    return Err(self.inconsistent(format!(
                        "staged epoch {} has {} bytes, the checkpoint says {}",
                        staged.display(),
                        meta.len(),
                        epoch.len
                    )));
                }
                // Already appended (the staged file goes only after that).
                Err(_) => {}
            }
        }
        let len = self.output.metadata().map_err(|e| self.err(e))?.len();
        if len < state.committed_len {
            return Err(self.inconsistent(format!(
                "it has {len} bytes but the checkpoint committed {}; it was changed outside Weir (start over with --fresh)",
                state.committed_len
            )));
        }
        // Whatever lies beyond was committed by a later checkpoint that is
        // not the one restored (it was corrupt): it will be produced again.
        self.output
            .set_len(state.committed_len)
            .map_err(|e| self.err(e))?;
        self.output.sync_data().map_err(|e| self.err(e))?;
        self.state = FileSinkState {
            committed_len: state.committed_len,
            pending: Vec::new(),
        };
        Ok(())
    }

    /// Appends one staged epoch at its recorded start, then drops the file.
    /// Idempotent: a crash in the middle is repaired by doing it again.
    fn append_staged(&mut self, epoch: &StagedEpoch, staged: &Path) -> Result<(), ConnectorError> {
        let len = self.output.metadata().map_err(|e| self.err(e))?.len();
        if len < epoch.start {
            return Err(self.inconsistent(format!(
                "it has {len} bytes but epoch {} starts at byte {}",
                epoch.checkpoint, epoch.start
            )));
        }
        self.output.set_len(epoch.start).map_err(|e| self.err(e))?;
        let mut from = File::open(staged).map_err(|e| self.err(e))?;
        std::io::copy(&mut from, &mut self.output).map_err(|e| self.err(e))?;
        self.output.sync_data().map_err(|e| self.err(e))?;
        std::fs::remove_file(staged).map_err(|e| self.err(e))
    }

    fn remove_staged_files(&self) -> Result<(), ConnectorError> {
        let entries = std::fs::read_dir(&self.staging).map_err(|e| self.err(e))?;
        for entry in entries.flatten() {
            std::fs::remove_file(entry.path()).map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    fn err(&self, source: std::io::Error) -> ConnectorError {
        ConnectorError::Write {
            what: self.path.display().to_string(),
            source,
        }
    }

    fn inconsistent(&self, why: String) -> ConnectorError {
        ConnectorError::Resume(format!("output {}: {why}", self.path.display()))
    }
}

/// An error of the staging area, naming the staged file, not the output.
fn staging_err(path: &Path, source: std::io::Error) -> ConnectorError {
    ConnectorError::Write {
        what: format!("{} (staged output)", path.display()),
        source,
    }
}

impl Sink for ExactlyOnceFileSink {
    fn write(&mut self, records: &[OutputRecord]) -> Result<(), ConnectorError> {
        if self.open.is_none() {
            let path = self.staging.join(OPEN_EPOCH);
            let file = File::create(&path).map_err(|e| staging_err(&path, e))?;
            self.open = Some(BufWriter::with_capacity(1 << 16, file));
        }
        let Some(out) = self.open.as_mut() else {
            return Ok(());
        };
        for r in records {
            if let Err(e) = write_json_line(out, &r.value) {
                return Err(self.err(e));
            }
        }
        Ok(())
    }

    /// Nothing becomes visible outside a checkpoint: staged data stays staged.
    fn flush(&mut self) -> Result<(), ConnectorError> {
        Ok(())
    }

    fn pre_commit(&mut self, checkpoint: u64) -> Result<Option<SinkState>, ConnectorError> {
        if let Some(out) = self.open.take() {
            let file = out.into_inner().map_err(|e| self.err(e.into_error()))?;
            file.sync_data().map_err(|e| self.err(e))?;
            let len = file.metadata().map_err(|e| self.err(e))?.len();
            let open = self.staging.join(OPEN_EPOCH);
            if len > 0 {
                std::fs::rename(&open, self.staging.join(staged_name(checkpoint)))
                    .map_err(|e| staging_err(&open, e))?;
                File::open(&self.staging)
                    .and_then(|dir| dir.sync_all())
                    .map_err(|e| staging_err(&self.staging, e))?;
                self.state.pending.push(StagedEpoch {
                    checkpoint,
                    start: self.state.committed_len,
                    len,
                });
                self.state.committed_len += len;
            } else {
                std::fs::remove_file(&open).map_err(|e| self.err(e))?;
            }
        }
        Ok(Some(SinkState::File(self.state.clone())))
    }

    fn commit(&mut self, checkpoint: u64) -> Result<(), ConnectorError> {
        while let Some(epoch) = self.state.pending.first().cloned() {
            if epoch.checkpoint > checkpoint {
                break;
            }
            let staged = self.staging.join(staged_name(epoch.checkpoint));
            self.append_staged(&epoch, &staged)?;
            self.state.pending.remove(0);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(value: &str) -> OutputRecord {
        OutputRecord {
            key: None,
            value: value.as_bytes().to_vec(),
            timestamp: None,
            origin: Default::default(),
        }
    }

    fn state(sink: &mut ExactlyOnceFileSink, checkpoint: u64) -> FileSinkState {
        match sink.pre_commit(checkpoint).unwrap() {
            Some(SinkState::File(state)) => state,
            other => panic!("unexpected sink state {other:?}"),
        }
    }

    #[test]
    fn records_become_visible_only_when_their_checkpoint_commits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let mut sink = ExactlyOnceFileSink::open(&path, FileSinkStart::Empty).unwrap();
        sink.write(&[record("1"), record("2")]).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
        let s1 = state(&mut sink, 1);
        assert_eq!(s1.committed_len, 4);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
        sink.write(&[record("3")]).unwrap();
        sink.commit(1).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "1\n2\n");
        state(&mut sink, 2);
        sink.commit(2).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "1\n2\n3\n");
    }

    #[test]
    fn a_restore_finishes_interrupted_commits_and_drops_later_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let mut sink = ExactlyOnceFileSink::open(&path, FileSinkStart::Empty).unwrap();
        sink.write(&[record("1")]).unwrap();
        let s1 = state(&mut sink, 1);
        sink.write(&[record("2")]).unwrap();
        let s2 = state(&mut sink, 2);
        // Crash after checkpoint 2 completed, before either commit ran.
        drop(sink);
        let sink = ExactlyOnceFileSink::open(&path, FileSinkStart::Restore(&s2)).unwrap();
        drop(sink);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "1\n2\n");
        // A half-done append is redone, not doubled.
        let mut sink = ExactlyOnceFileSink::open(&path, FileSinkStart::Restore(&s2)).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "1\n2\n");
        sink.write(&[record("3")]).unwrap();
        let s3 = state(&mut sink, 3);
        sink.commit(3).unwrap();
        assert_eq!(s3.committed_len, 6);
        drop(sink);
        // Restoring an older checkpoint (the newer one was corrupt) cuts
        // the output back to what that one committed.
        ExactlyOnceFileSink::open(&path, FileSinkStart::Restore(&s1)).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "1\n");
    }

    #[test]
    fn committed_output_without_a_checkpoint_is_refused_and_kept_unless_starting_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let mut sink = ExactlyOnceFileSink::open(&path, FileSinkStart::Empty).unwrap();
        sink.write(&[record("1"), record("2")]).unwrap();
        state(&mut sink, 1);
        sink.commit(1).unwrap();
        drop(sink);
        // Its checkpoint is gone: the committed records stay, byte for byte.
        let err = ExactlyOnceFileSink::open(&path, FileSinkStart::Empty)
            .err()
            .expect("refused")
            .to_string();
        assert!(
            err.contains("4 bytes") && err.contains("no checkpoint"),
            "{err}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"1\n2\n");
        // Only an explicit start over empties it.
        ExactlyOnceFileSink::open(&path, FileSinkStart::Overwrite).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"");
    }

    #[test]
    fn an_output_shorter_than_its_checkpoint_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let mut sink = ExactlyOnceFileSink::open(&path, FileSinkStart::Empty).unwrap();
        sink.write(&[record("1")]).unwrap();
        let s1 = state(&mut sink, 1);
        sink.commit(1).unwrap();
        drop(sink);
        std::fs::write(&path, "").unwrap();
        let err = ExactlyOnceFileSink::open(&path, FileSinkStart::Restore(&s1))
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains("changed outside Weir"), "{err}");
    }
}
