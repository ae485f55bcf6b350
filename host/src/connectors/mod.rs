//! Sources and sinks: how records enter and leave a pipeline.
//!
//! A source yields raw records and knows its position; a sink writes output
//! records. Neither knows about keys, time or plugins: the runtime assigns
//! those. Sources and sinks are built (files opened) before a pipeline
//! starts, so a bad path fails the start instead of the run.

mod exactly_once_file;
mod file_source;
mod generator;
mod http_source;
mod kafka;
mod sinks;

use std::path::PathBuf;

pub use exactly_once_file::{ExactlyOnceFileSink, FileSinkStart, FileSinkState, StagedEpoch};
pub use file_source::FileSource;
pub use generator::{
    DEFAULT_USERS, GeneratorSource, generator_record, generator_record_among,
    write_generator_value, write_generator_value_among,
};
pub use http_source::{HttpSource, IngestError, IngestLog};
pub use kafka::{
    GroupMember, KafkaSink, KafkaSinkState, KafkaSource, PartitionOwner, TopicPartition,
    headers as kafka_headers,
};
pub use sinks::{FileSink, NullSink, StdoutSink};

use crate::spec::{SinkSpec, SourceSpec};

/// A record as a source reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRecord {
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    /// The record's own timestamp (e.g. Kafka's), if the source has one.
    pub timestamp: Option<i64>,
    pub headers: Vec<(String, Vec<u8>)>,
    /// The source split (file, partition) it came from.
    pub split: usize,
    /// Where in its split it is, in the split's unit (Kafka offset,
    /// generator index, byte offset): with the split, what names the record
    /// in dead letters and labels its outputs.
    pub offset: u64,
}

/// What produced an output record: enough for a sink to label it the same
/// way in a run that replays it after a crash, so that consumers of an
/// at-least-once sink can drop the duplicates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Origin {
    /// Not known (the record was made outside a pipeline).
    #[default]
    Unknown,
    /// The `index`-th output of the source record at `offset` of `split`.
    Record { split: u32, offset: u64, index: u32 },
    /// The `index`-th output of a timer of the key whose FNV-1a hash is
    /// `key_hash`.
    Timer {
        event_time: bool,
        timestamp: i64,
        key_hash: u64,
        index: u32,
    },
}

impl Origin {
    /// The same origin, as the `index`-th output of its input.
    pub fn nth(self, n: u32) -> Origin {
        match self {
            Origin::Unknown => Origin::Unknown,
            Origin::Record { split, offset, .. } => Origin::Record {
                split,
                offset,
                index: n,
            },
            Origin::Timer {
                event_time,
                timestamp,
                key_hash,
                ..
            } => Origin::Timer {
                event_time,
                timestamp,
                key_hash,
                index: n,
            },
        }
    }
}

/// FNV-1a, 64 bits: a hash of a key that is the same in every build (the
/// labels of timer outputs must be the same across runs and versions).
pub fn stable_key_hash(key: &[u8]) -> u64 {
    key.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A record on its way to a sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputRecord {
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub timestamp: Option<i64>,
    pub origin: Origin,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot resume the source: {0}")]
    Seek(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("cannot resume a sink: {0}")]
    Resume(String),
    #[error("writing {what}: {source}")]
    Write {
        what: String,
        source: std::io::Error,
    },
    #[error("kafka: {what}: {source}")]
    Kafka {
        what: String,
        source: rdkafka::error::KafkaError,
    },
    #[error("kafka: {0}")]
    KafkaDelivery(String),
    /// A client property that cannot be set (its value is never shown: it
    /// may be a credential).
    #[error("kafka: properties.{property}: {message}")]
    KafkaConfig { property: String, message: String },
    /// A file source reads regular files only: a FIFO blocks its reader
    /// until someone writes, a device such as `/dev/zero` never ends.
    #[error(
        "{path} is {kind}, not a regular file: a file source reads regular files only (a FIFO or a device could block or never end)"
    )]
    NotAFile { path: PathBuf, kind: &'static str },
}

/// A record a source read but cannot pass on (a line over the length
/// limit): the source task sends it to `dead-letter` with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedRecord {
    pub split: usize,
    pub offset: u64,
    /// The dead-letter's `error` field.
    pub error: &'static str,
    pub reason: String,
    /// The start of what was read (never the whole of it).
    pub prefix: Vec<u8>,
}

/// Where a source is, per split, in the split's own unit (generator index,
/// file byte offset, Kafka offset): what a checkpoint records and a restore
/// rewinds to. The split name identifies it across runs ("generator", a
/// path, "topic/partition").
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SplitPosition {
    pub split: String,
    pub offset: u64,
}

pub type SourcePosition = Vec<SplitPosition>;

/// A bounded or unbounded stream of records.
pub trait Source: Send {
    /// Appends up to `max` records to `out`. Returns `false` once the source
    /// is exhausted (a bounded source), after appending whatever was left.
    fn read_batch(
        &mut self,
        out: &mut Vec<SourceRecord>,
        max: usize,
    ) -> Result<bool, ConnectorError>;
    /// The number of splits (watermarks are tracked per split).
    fn splits(&self) -> usize {
        1
    }
    /// (done, total) in the source's own unit, for progress.
    fn progress(&self) -> (u64, Option<u64>);
    /// What the progress unit is ("events", "bytes").
    fn progress_unit(&self) -> &'static str;
    /// The position after the last record read.
    fn position(&self) -> SourcePosition;
    /// An unbounded source with nothing to read: block up to `max` for input.
    fn wait_for_input(&mut self, max: std::time::Duration) {
        let _ = max;
    }
    /// Rewinds (or forwards) to a position `position` returned, possibly in
    /// an earlier run; fails if the position does not fit this source.
    fn seek(&mut self, position: &SourcePosition) -> Result<(), ConnectorError>;
    /// The names of the splits, by index (what positions call them).
    fn split_names(&self) -> Vec<String> {
        self.position().into_iter().map(|p| p.split).collect()
    }
    /// Appends the splits that have ended since the last call (a bounded
    /// source's partition that reached its end offset): they stop holding
    /// the watermark back.
    fn take_finished_splits(&mut self, _out: &mut Vec<usize>) {}
    /// Moves the records read since the last call that cannot be passed on
    /// (see `RejectedRecord`) to `out`.
    fn take_rejected(&mut self, _out: &mut Vec<RejectedRecord>) {}
    /// A checkpoint that recorded `position` is complete. A source that
    /// mirrors its progress elsewhere (Kafka's committed offsets) does it
    /// now; it must never be needed for correctness (the checkpoint is).
    fn checkpoint_complete(&mut self, _position: &SourcePosition) -> Result<(), ConnectorError> {
        Ok(())
    }
    /// Whether `checkpoint_complete` does anything: only then does the
    /// source task, at the end, wait for its last checkpoint's outcome.
    fn mirrors_checkpoints(&self) -> bool {
        false
    }
}

/// The offset of `split` in `position`, or a `Seek` error naming what is wrong.
fn split_offset(
    position: &SourcePosition,
    split: &str,
    source: &str,
) -> Result<u64, ConnectorError> {
    match position.as_slice() {
        [p] if p.split == split => Ok(p.offset),
        _ => {
            let recorded: Vec<String> = position
                .iter()
                .map(|p| format!("{}@{}", p.split, p.offset))
                .collect();
            Err(ConnectorError::Seek(format!(
                "the checkpoint was taken from [{}], not from this {source} source ({split})",
                recorded.join(", ")
            )))
        }
    }
}

/// What a checkpoint records of a sink that commits per checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum SinkState {
    File(FileSinkState),
    Kafka(KafkaSinkState),
}

/// A destination for one output.
pub trait Sink: Send {
    fn write(&mut self, records: &[OutputRecord]) -> Result<(), ConnectorError>;
    fn flush(&mut self) -> Result<(), ConnectorError>;
    /// At a checkpoint barrier: make everything written so far durable and
    /// return what a restore needs. `None`: an at-least-once sink.
    fn pre_commit(&mut self, _checkpoint: u64) -> Result<Option<SinkState>, ConnectorError> {
        self.flush()?;
        Ok(None)
    }
    /// The checkpoint is complete: make what it covers visible.
    fn commit(&mut self, _checkpoint: u64) -> Result<(), ConnectorError> {
        Ok(())
    }
}

/// Opens the source a spec names; an `http` source reads `ingest`, the log
/// its control plane appends to.
pub fn open_source(
    spec: &SourceSpec,
    ingest: Option<&std::sync::Arc<IngestLog>>,
) -> Result<Box<dyn Source>, ConnectorError> {
    Ok(match spec {
        SourceSpec::Generator {
            events,
            users,
            events_per_second,
        } => {
            let mut source = GeneratorSource::with_users(*events, *users);
            if let Some(rate) = events_per_second {
                source = source.limited_to(*rate);
            }
            Box::new(source)
        }
        SourceSpec::File {
            path,
            max_line_bytes,
        } => Box::new(FileSource::open(path, *max_line_bytes as usize)?),
        SourceSpec::Kafka(kafka) => Box::new(KafkaSource::open(kafka)?),
        SourceSpec::Http { .. } => match ingest {
            Some(log) => Box::new(HttpSource::new(log.clone())),
            None => {
                return Err(ConnectorError::Unsupported(
                    "the http source takes its events from `weir serve`; run this pipeline there"
                        .into(),
                ));
            }
        },
    })
}

/// How a pipeline opens its sinks.
pub enum SinkMode<'a> {
    /// No checkpoints: write as records come.
    Direct,
    /// Checkpoints: commit per checkpoint, resuming from `restore` if
    /// given. Without it, an output that holds committed records is
    /// refused unless `start_over` (the user asked to start from scratch).
    Checkpointed {
        restore: Option<&'a SinkState>,
        start_over: bool,
    },
}

/// What a sink may label its records with.
#[derive(Debug, Clone, Default)]
pub struct SinkContext {
    pub pipeline: String,
    /// The source's split names, by index (`Origin::Record::split`).
    pub splits: std::sync::Arc<[String]>,
}

pub fn open_sink(
    spec: &SinkSpec,
    mode: SinkMode<'_>,
    context: &SinkContext,
) -> Result<Box<dyn Sink>, ConnectorError> {
    Ok(match (spec, mode) {
        (SinkSpec::Stdout { .. }, _) => Box::new(StdoutSink),
        (SinkSpec::File { path, .. }, SinkMode::Direct) => Box::new(FileSink::create(path)?),
        (
            SinkSpec::File { path, .. },
            SinkMode::Checkpointed {
                restore,
                start_over,
            },
        ) => {
            let start = match restore {
                None if start_over => FileSinkStart::Overwrite,
                None => FileSinkStart::Empty,
                Some(SinkState::File(state)) => FileSinkStart::Restore(state),
                Some(other) => {
                    return Err(ConnectorError::Resume(format!(
                        "the checkpoint holds {other:?} for a file sink"
                    )));
                }
            };
            Box::new(ExactlyOnceFileSink::open(path, start)?)
        }
        (SinkSpec::Kafka(kafka), mode) => {
            let restore = match mode {
                SinkMode::Checkpointed {
                    restore: Some(SinkState::Kafka(state)),
                    ..
                } => Some(state),
                _ => None,
            };
            Box::new(KafkaSink::open(kafka, context, restore)?)
        }
        (SinkSpec::Null { .. }, _) => Box::new(NullSink),
    })
}
