//! Sources and sinks: how records enter and leave a pipeline.
//!
//! A source yields raw records and knows its position; a sink writes output
//! records. Neither knows about keys, time or plugins: the runtime assigns
//! those. Sources and sinks are built (files opened) before a pipeline
//! starts, so a bad path fails the start instead of the run.

mod file_source;
mod generator;
mod sinks;

use std::path::PathBuf;

pub use file_source::FileSource;
pub use generator::{GeneratorSource, generator_record, write_generator_value};
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
}

/// A record on its way to a sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputRecord {
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub timestamp: Option<i64>,
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
    #[error("writing {what}: {source}")]
    Write {
        what: String,
        source: std::io::Error,
    },
}

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
}

/// A destination for one output.
pub trait Sink: Send {
    fn write(&mut self, records: &[OutputRecord]) -> Result<(), ConnectorError>;
    fn flush(&mut self) -> Result<(), ConnectorError>;
}

pub fn open_source(spec: &SourceSpec) -> Result<Box<dyn Source>, ConnectorError> {
    Ok(match spec {
        SourceSpec::Generator { events } => Box::new(GeneratorSource::new(*events)),
        SourceSpec::File { path } => Box::new(FileSource::open(path)?),
    })
}

pub fn open_sink(spec: &SinkSpec) -> Result<Box<dyn Sink>, ConnectorError> {
    Ok(match spec {
        SinkSpec::Stdout { .. } => Box::new(StdoutSink),
        SinkSpec::File { path, .. } => Box::new(FileSink::create(path)?),
        SinkSpec::Null { .. } => Box::new(NullSink),
    })
}
