//! The pipeline spec: one schema, TOML on disk and JSON over HTTP.
//!
//! This module owns parsing and validation. A spec that leaves here is known
//! to be runnable: every field a later stage reads has been checked, and every
//! error names the path of the offending field. It must never touch the file
//! system beyond reading the spec itself, nor start anything.

mod kafka;
mod validate;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::runtime::json_field::JsonPointer;

pub use kafka::{
    API_ALLOWED, API_ENV_PREFIX, Allowed, ENV_SUFFIX, EXACTLY_ONCE_REFUSED, KafkaPropertyPolicy,
    KafkaSinkSpec, KafkaSourceSpec, KafkaStart, SECRET_PROPERTIES, ScaleOutSpec, from_env,
};
pub use validate::{MAX_MEMORY_MB, MAX_PARALLELISM, SpecError};

/// A whole pipeline: source → event time → key-by → plugin → sinks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    pub name: String,
    #[serde(default = "default_parallelism")]
    pub parallelism: u32,
    pub source: SourceSpec,
    #[serde(default)]
    pub event_time: Option<EventTimeSpec>,
    pub key_by: KeyBySpec,
    pub plugin: PluginSpec,
    #[serde(default)]
    pub state: StateSpec,
    #[serde(default)]
    pub limits: LimitsSpec,
    /// Periodic checkpoints; without this section a run keeps no checkpoints
    /// and cannot resume.
    #[serde(default)]
    pub checkpoint: Option<CheckpointSpec>,
    /// A savepoint (or checkpoint) directory to start from when the pipeline
    /// has no checkpoint of its own yet.
    #[serde(default)]
    pub restore_from: Option<PathBuf>,
    /// What happens when the plugin traps, times out, hits its memory cap or
    /// rejects an event.
    #[serde(default)]
    pub on_error: OnError,
    #[serde(default, rename = "sink")]
    pub sinks: Vec<SinkSpec>,
}

fn default_parallelism() -> u32 {
    1
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum SourceSpec {
    /// The fixed test generator (see `connectors::generator`).
    Generator {
        events: u64,
        /// Distinct users (keys); the fixed workloads use the default 100 000.
        #[serde(default = "default_users")]
        users: u64,
        /// At most this many events per second (from the start of each
        /// run), like Flink's datagen `rows-per-second`; unlimited if unset.
        #[serde(default)]
        events_per_second: Option<u64>,
    },
    /// JSON lines from a file; one event per non-empty line.
    File {
        path: PathBuf,
        /// A longer line goes to `dead-letter` (never buffered whole).
        #[serde(default = "default_max_line_bytes")]
        max_line_bytes: u64,
    },
    /// Events posted to `weir serve` (`POST /v1/pipelines/{name}/events`),
    /// kept in a durable ingest log until every checkpoint has read them.
    Http {
        /// Accepted bytes the pipeline may lag behind before ingest waits,
        /// then answers 429.
        #[serde(default = "default_max_pending_bytes")]
        max_pending_bytes: u64,
    },
    /// The partitions of Kafka topics, one split each.
    Kafka(KafkaSourceSpec),
}

/// The default longest line a file source passes on: 1 MiB.
pub const DEFAULT_MAX_LINE_BYTES: u64 = 1 << 20;
/// The most `source.max_line_bytes` may be: 64 MiB.
pub const MAX_LINE_BYTES_LIMIT: u64 = 64 << 20;

fn default_max_line_bytes() -> u64 {
    DEFAULT_MAX_LINE_BYTES
}

fn default_max_pending_bytes() -> u64 {
    64 << 20
}

fn default_users() -> u64 {
    crate::connectors::DEFAULT_USERS
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventTimeSpec {
    /// A JSON pointer into the value (`/ts`), `record` for the record's own
    /// timestamp, or `processing` for the wall clock at ingestion.
    pub field: String,
    #[serde(default)]
    pub max_out_of_orderness_ms: u64,
    /// A split with no event for this long stops holding the watermark back.
    #[serde(default)]
    pub idle_timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyBySpec {
    /// A JSON pointer into the value (`/user_id`), or `record-key`.
    pub field: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginSpec {
    /// A plugin directory, built by `weir run`: a Rust crate (for
    /// wasm32-wasip2) or a Python plugin (an `app.py`, with componentize-py).
    #[serde(default, rename = "crate")]
    pub crate_dir: Option<PathBuf>,
    /// A component already built.
    #[serde(default)]
    pub wasm: Option<PathBuf>,
    /// A component in `weir serve`'s registry, by sha256.
    #[serde(default)]
    pub digest: Option<String>,
    /// Passed to the plugin's `open` as JSON.
    #[serde(default)]
    pub config: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateSpec {
    #[serde(default)]
    pub backend: StateBackendKind,
    /// Where the RocksDB backend keeps its working databases (scratch space:
    /// durability comes from checkpoints); `<dir>/<pipeline>/subtask-<i>`.
    #[serde(default = "default_state_dir")]
    pub dir: PathBuf,
    /// RocksDB: value-state entries held in the write-back cache.
    #[serde(default = "default_cache_entries")]
    pub cache_entries: usize,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("weir-data/state")
}

fn default_cache_entries() -> usize {
    crate::state::RocksDbOptions::default().cache_entries
}

impl Default for StateSpec {
    fn default() -> Self {
        Self {
            backend: StateBackendKind::default(),
            dir: default_state_dir(),
            cache_entries: default_cache_entries(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StateBackendKind {
    #[default]
    Memory,
    Rocksdb,
}

/// Consistent snapshots of the whole pipeline, kept under
/// `<dir>/<pipeline>/chk-<id>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointSpec {
    #[serde(default = "default_checkpoint_interval_ms")]
    pub interval_ms: u64,
    #[serde(default = "default_checkpoint_dir")]
    pub dir: PathBuf,
    /// How many complete checkpoints to keep (the newest ones).
    #[serde(default = "default_checkpoint_retain")]
    pub retain: usize,
}

fn default_checkpoint_interval_ms() -> u64 {
    10_000
}

fn default_checkpoint_dir() -> PathBuf {
    PathBuf::from("weir-data/checkpoints")
}

fn default_checkpoint_retain() -> usize {
    3
}

/// The sandbox of one plugin instance.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpec {
    /// Wall-clock budget of one plugin call: a batch of up to 1024 events or
    /// timers. A call that runs out is replayed one item at a time, each
    /// with the same budget, and the item that runs out alone is the one
    /// that fails.
    #[serde(default = "default_call_timeout_ms")]
    pub call_timeout_ms: u64,
    /// Linear memory cap of one plugin instance.
    #[serde(default = "default_memory_mb")]
    pub memory_mb: u64,
    /// The longest a task of the pipeline may stay in one step (a plugin
    /// call, a snapshot, a sink write) and the longest the server waits for
    /// the pipeline to answer (a checkpoint, a query, a swap, a stop) before
    /// it fails the pipeline naming the task. Default: 30 s, or twice
    /// `call_timeout_ms` if that is longer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer_timeout_ms: Option<u64>,
}

impl LimitsSpec {
    /// `answer_timeout_ms`, or its default.
    pub fn answer_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(
            self.answer_timeout_ms
                .unwrap_or_else(|| DEFAULT_ANSWER_TIMEOUT_MS.max(2 * self.call_timeout_ms)),
        )
    }
}

/// The default of `limits.answer_timeout_ms`.
pub const DEFAULT_ANSWER_TIMEOUT_MS: u64 = 30_000;
/// The bounds of `limits.answer_timeout_ms`.
pub const ANSWER_TIMEOUT_MS_RANGE: std::ops::RangeInclusive<u64> = 500..=3_600_000;

fn default_call_timeout_ms() -> u64 {
    100
}

fn default_memory_mb() -> u64 {
    64
}

impl Default for LimitsSpec {
    fn default() -> Self {
        Self {
            call_timeout_ms: default_call_timeout_ms(),
            memory_mb: default_memory_mb(),
            answer_timeout_ms: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnError {
    /// Send the event, with the reason, to the `dead-letter` output and go on.
    #[default]
    DeadLetter,
    /// Stop the pipeline with the error.
    Fail,
}

/// Where one output goes. `output` is `main`, `late`, `dead-letter`, or a
/// side output the plugin emits to.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum SinkSpec {
    /// One JSON line per record on standard output (at-least-once).
    Stdout { output: String },
    /// JSON lines written to a file; exactly-once when the pipeline keeps
    /// checkpoints (records become visible when their checkpoint completes).
    File { output: String, path: PathBuf },
    /// Counts records and drops them.
    Null { output: String },
    /// Records to a Kafka topic, through an idempotent producer flushed at
    /// every checkpoint (at-least-once, each record labelled for dropping
    /// duplicates).
    Kafka(KafkaSinkSpec),
}

impl SinkSpec {
    pub fn output(&self) -> &str {
        match self {
            SinkSpec::Stdout { output }
            | SinkSpec::File { output, .. }
            | SinkSpec::Null { output } => output,
            SinkSpec::Kafka(kafka) => &kafka.output,
        }
    }
}

/// Where a pipeline's event time comes from, once validated.
#[derive(Debug, Clone)]
pub(crate) enum TimestampSource {
    Field(JsonPointer),
    Record,
    Processing,
}

/// What a pipeline keys its events by, once validated.
#[derive(Debug, Clone)]
pub(crate) enum KeySource {
    Field(JsonPointer),
    RecordKey,
}

/// The names of the outputs the host itself writes to.
pub const MAIN_OUTPUT: &str = "main";
pub const LATE_OUTPUT: &str = "late";
pub const DEAD_LETTER_OUTPUT: &str = "dead-letter";

impl PipelineSpec {
    /// Reads and validates a TOML spec file.
    pub fn from_toml_file(path: &Path) -> Result<Self, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text)
    }

    /// Parses and validates a TOML spec.
    pub fn from_toml(text: &str) -> Result<Self, SpecError> {
        let value: toml::Value =
            toml::from_str(text).map_err(|e| SpecError::Syntax(e.to_string()))?;
        let spec: PipelineSpec =
            serde_path_to_error::deserialize(value).map_err(|e| SpecError::Field {
                path: e.path().to_string(),
                message: e.inner().to_string(),
            })?;
        spec.validate()?;
        Ok(spec)
    }

    /// Parses and validates a JSON spec.
    pub fn from_json(bytes: &[u8]) -> Result<Self, SpecError> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let spec: PipelineSpec =
            serde_path_to_error::deserialize(&mut de).map_err(|e| SpecError::Field {
                path: e.path().to_string(),
                message: e.inner().to_string(),
            })?;
        spec.validate()?;
        Ok(spec)
    }

    /// The validated timestamp source, if the pipeline has event time.
    pub(crate) fn timestamp_source(&self) -> Option<TimestampSource> {
        self.event_time
            .as_ref()
            .map(|et| validate::timestamp_source(&et.field).expect("validated spec"))
    }

    /// The validated key source.
    pub(crate) fn key_source(&self) -> KeySource {
        validate::key_source(&self.key_by.field).expect("validated spec")
    }
}
