//! The pipeline runtime: source → event time → key-by → subtasks → sinks.
//!
//! The runtime owns the semantics (keys, key groups, watermarks, timers,
//! late data, error policy); the engine only runs the plugin; connectors
//! only move bytes. Data flows one way: source task → subtasks → sinks,
//! over bounded channels, so a slow sink slows the source. Checkpoint
//! barriers and plugin swaps travel in the same channels as the data, so
//! each takes effect at one point of the stream in every task.
//!
//! The data plane runs on dedicated OS threads rather than async tasks: each
//! subtask spends its life in synchronous wasm calls, and a thread per
//! subtask keeps those off any async executor the control plane uses.

mod control;
mod coordinator;
pub mod histogram;
pub(crate) mod json_field;
pub mod key_groups;
mod liveness;
mod migration;
mod outputs;
mod pipeline;
mod sink_task;
mod source_task;
mod subtask;
mod subtask_host;
pub(crate) mod timer_service;
pub(crate) mod timers;
pub(crate) mod watermarks;

pub use control::{ControlError, LiveStatus, PipelineControl, SwapError, SwapReport};
pub use coordinator::{CheckpointStats, CompletedCheckpoint};
pub use outputs::RunMetrics;
pub use pipeline::{Pipeline, RunOptions, RunSummary};
pub use source_task::SourceProgress;
pub use subtask::{KeyStateView, NamedState, SubtaskReport};
pub(crate) use subtask_host::SubtaskHost;

use crate::connectors::ConnectorError;
use crate::engine::EngineError;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Connector(#[from] ConnectorError),
    #[error("the plugin's open failed in subtask {subtask}: {reason}")]
    PluginOpen { subtask: usize, reason: String },
    #[error("the plugin failed in subtask {subtask} ({kind}) and on_error = \"fail\": {reason}")]
    PluginFailed {
        subtask: usize,
        kind: String,
        reason: String,
    },
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    #[error(transparent)]
    Restore(#[from] crate::checkpoint::CheckpointError),
    #[error("a sink stopped accepting records")]
    SinkClosed,
    #[error("cannot start a pipeline thread: {0}")]
    Spawn(std::io::Error),
    #[error("a pipeline thread panicked: {0}")]
    Panicked(String),
    /// A task stopped answering (see `liveness`): the pipeline was aborted.
    #[error("the pipeline stopped answering and was failed: {0}")]
    Unresponsive(String),
}

/// The wall clock in ms since the Unix epoch: processing time.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
