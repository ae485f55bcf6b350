//! Controlling a running pipeline from another thread: hot swap.
//!
//! A swap compiles the new component and tries its `open` on a scratch host
//! before the pipeline sees anything, so a version that cannot start is
//! refused while the old one runs on. Then the source hands the new version
//! to every subtask at the same batch boundary; each moves its state and
//! timers into an instance of the new version and opens it. Every event is
//! processed by exactly one version, and none is lost or processed twice:
//! the swap is a message in the event stream, not a pause of it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Sender, unbounded};

use super::source_task::SwapRequest;
use super::subtask_host::SubtaskHost;
use crate::checkpoint::PluginIdentity;
use crate::engine::{Engine, EngineError, PluginInstance};
use crate::state::MemoryBackend;

#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    #[error("the new plugin does not load: {0}")]
    Load(#[from] EngineError),
    #[error("the new plugin refused to open, the old version keeps running: {0}")]
    Refused(String),
    #[error("the pipeline is not running any more")]
    NotRunning,
    #[error("subtasks {failed:?} kept the old version ({reason}); the others run the new one")]
    Partial { failed: Vec<usize>, reason: String },
}

/// What a completed swap reports.
#[derive(Debug, Clone)]
pub struct SwapReport {
    pub digest: String,
    /// The longest time one subtask spent switching (instantiate + open).
    pub max_pause: Duration,
}

/// A handle to a running pipeline; cheap to clone.
#[derive(Clone)]
pub struct PipelineControl {
    pub(crate) swaps: Sender<SwapRequest>,
    pub(crate) parallelism: usize,
    pub(crate) memory_bytes: usize,
    pub(crate) call_timeout_ms: u64,
    /// What the next checkpoint records as the plugin.
    pub(crate) identity: Arc<Mutex<PluginIdentity>>,
}

impl PipelineControl {
    /// Replaces the plugin of every subtask with `component` opened with
    /// `config`; returns once all of them run it.
    pub fn swap(
        &self,
        engine: &Engine,
        component: &[u8],
        config: &serde_json::Value,
    ) -> Result<SwapReport, SwapError> {
        let plugin = engine.load::<SubtaskHost>(component)?;
        let config_text: Arc<str> = config.to_string().into();
        // Trial open: `open` sees no state, clock or entropy, so an open
        // that succeeds here succeeds in every subtask.
        let scratch = SubtaskHost::new("swap-trial".into(), 0, Box::new(MemoryBackend::default()));
        let mut trial =
            PluginInstance::new(&plugin, scratch, self.memory_bytes, self.call_timeout_ms)
                .map_err(|(e, _)| SwapError::Load(e))?;
        match trial.open(&config_text) {
            Ok(Ok(())) => {}
            Ok(Err(reason)) => return Err(SwapError::Refused(reason)),
            Err(trap) => return Err(SwapError::Refused(trap.message)),
        }
        drop(trial);

        let (reply, outcomes) = unbounded();
        self.swaps
            .send(SwapRequest {
                plugin: plugin.clone(),
                config: config_text,
                reply,
            })
            .map_err(|_| SwapError::NotRunning)?;
        // No timeout: the swap takes effect where the stream reaches it, and
        // a request cannot be taken back once queued. If the pipeline ends
        // first, the request is dropped with it and the channel says so.
        let mut max_pause = Duration::ZERO;
        let mut failed = Vec::new();
        let mut reason = String::new();
        for answered in 0..self.parallelism {
            match outcomes.recv() {
                Ok((_, Ok(pause))) => max_pause = max_pause.max(pause),
                Ok((subtask, Err(why))) => {
                    failed.push(subtask);
                    reason = why;
                }
                Err(_) if answered == 0 => return Err(SwapError::NotRunning),
                Err(_) => {
                    return Err(SwapError::Partial {
                        failed,
                        reason: "the pipeline stopped during the swap".into(),
                    });
                }
            }
        }
        if !failed.is_empty() {
            failed.sort_unstable();
            return Err(SwapError::Partial { failed, reason });
        }
        if let Ok(mut identity) = self.identity.lock() {
            identity.digest = plugin.digest().to_owned();
            identity.config = config.clone();
        }
        Ok(SwapReport {
            digest: plugin.digest().to_owned(),
            max_pause,
        })
    }
}
