//! Controlling a running pipeline from another thread: hot swap, on-demand
//! checkpoints, stop, queries of one key's state, and live figures.
//!
//! A swap compiles the new component and tries its `open` on a scratch host
//! before the pipeline sees anything, so a version that cannot start is
//! refused while the old one runs on. Then the source hands the new version
//! to every subtask at the same batch boundary; each moves its state and
//! timers into an instance of the new version and opens it. Every event is
//! processed by exactly one version, and none is lost or processed twice:
//! the swap is a message in the event stream, not a pause of it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{RecvTimeoutError, Sender, bounded, unbounded};

use super::coordinator::{CheckpointStats, CompletedCheckpoint};
use super::liveness::Liveness;
use super::outputs::RunMetrics;
use super::source_task::{SourceCommand, SourceProgress, SwapRequest};
use super::subtask::KeyStateView;
use super::subtask::SwapStep;
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
    /// A subtask did not answer in time: the pipeline was failed.
    #[error("{0}")]
    Unresponsive(String),
}

/// The subtasks' answers to one swap, as they come.
#[derive(Default)]
struct SwapTally {
    /// The subtasks that reported their preparation.
    answered: Vec<usize>,
    ready: usize,
    refused: Vec<usize>,
    reason: String,
    state_version: u32,
    switched: usize,
    /// Subtasks done with the swap after preparing it (switched or aborted).
    ended: usize,
    max_pause: Duration,
}

impl SwapTally {
    fn record(&mut self, step: SwapStep) {
        match step {
            SwapStep::Prepared {
                subtask,
                outcome: Ok(version),
            } => {
                self.answered.push(subtask);
                self.ready += 1;
                self.state_version = version;
            }
            SwapStep::Prepared {
                subtask,
                outcome: Err(why),
            } => {
                self.answered.push(subtask);
                self.refused.push(subtask);
                self.reason = why;
            }
            SwapStep::Switched { pause } => {
                self.switched += 1;
                self.ended += 1;
                self.max_pause = self.max_pause.max(pause);
            }
            SwapStep::Aborted => self.ended += 1,
        }
    }

    fn prepared(&self) -> usize {
        self.ready + self.refused.len()
    }

    /// The pipeline ended in the middle of the swap.
    fn stopped(self, parallelism: usize) -> SwapError {
        SwapError::Partial {
            failed: self.refused,
            reason: format!(
                "the pipeline stopped during the swap; {} of {parallelism} subtasks had switched",
                self.switched
            ),
        }
    }
}

/// What a completed swap reports.
#[derive(Debug, Clone)]
pub struct SwapReport {
    pub digest: String,
    /// The longest time one subtask spent switching (instantiate + open).
    pub max_pause: Duration,
}

/// Live figures of a running pipeline, shared with its tasks.
pub struct LiveStatus {
    pub metrics: Arc<RunMetrics>,
    pub progress: Arc<SourceProgress>,
    pub checkpoints: Arc<Mutex<CheckpointStats>>,
    pub swaps: AtomicU64,
    /// The pause of the last swap, in ns (0 before any).
    pub last_swap_pause_ns: AtomicU64,
}

impl LiveStatus {
    pub fn checkpoint_stats(&self) -> CheckpointStats {
        self.checkpoints
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("the pipeline is not running any more")]
    NotRunning,
    #[error("the pipeline keeps no checkpoints (its spec has no [checkpoint] section)")]
    NoCheckpoints,
    #[error("{0}")]
    Failed(String),
    /// The pipeline did not answer in time and was failed; says which task
    /// was doing what.
    #[error("{0}")]
    Unresponsive(String),
}

/// A handle to a running pipeline; cheap to clone.
#[derive(Clone)]
pub struct PipelineControl {
    pub(crate) commands: Sender<SourceCommand>,
    /// On-demand checkpoint requests to the pipeline's coordinator.
    pub(crate) checkpoints: Option<Sender<Sender<Result<CompletedCheckpoint, String>>>>,
    pub(crate) live: Arc<LiveStatus>,
    pub(crate) parallelism: usize,
    pub(crate) memory_bytes: usize,
    pub(crate) call_timeout_ms: u64,
    /// What the next checkpoint records as the plugin.
    pub(crate) identity: Arc<Mutex<PluginIdentity>>,
    /// Bounds every wait on the pipeline, and fails it when one runs out.
    pub(crate) liveness: Arc<Liveness>,
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
        // A plugin older than the state cannot read it: refuse before the
        // stream sees the swap. (A newer one migrates in the subtasks.)
        let current = self.plugin().state_version;
        let version = trial.state_version().map_err(|trap| {
            SwapError::Refused(format!("state-version failed: {}", trap.message))
        })?;
        // Only a migration can succeed in one subtask and fail in another
        // (it depends on each one's state): only then do the subtasks wait
        // for each other before switching.
        let two_phase = super::migration::needed(current, version).map_err(SwapError::Refused)?;
        drop(trial);

        let (steps_tx, steps) = unbounded();
        let (decide, decision) = unbounded();
        self.commands
            .send(SourceCommand::Swap(SwapRequest {
                plugin: plugin.clone(),
                config: config_text,
                steps: steps_tx,
                decision: two_phase.then_some(decision),
            }))
            .map_err(|_| SwapError::NotRunning)?;
        // Phase 1: every subtask prepares (instantiate, stage the state
        // migration, open) where the stream reaches the swap. A request
        // cannot be taken back once queued: if the pipeline ends first, the
        // request is dropped with it and the channel says so; if a subtask
        // does not answer in time, the pipeline is failed (it can no longer
        // be known which version each subtask will run).
        let mut tally = SwapTally::default();
        let deadline = Instant::now() + self.liveness.timeout();
        while tally.prepared() < self.parallelism {
            match steps.recv_deadline(deadline) {
                Ok(step) => tally.record(step),
                Err(RecvTimeoutError::Timeout) => {
                    let silent: Vec<usize> = (0..self.parallelism)
                        .filter(|i| !tally.answered.contains(i))
                        .collect();
                    return Err(SwapError::Unresponsive(
                        self.give_up(&format!("subtasks {silent:?} did not prepare the swap")),
                    ));
                }
                Err(_) if tally.prepared() == 0 => return Err(SwapError::NotRunning),
                Err(_) => return Err(tally.stopped(self.parallelism)),
            }
        }
        // Phase 2: all switch, or none. (In a one-phase swap the prepared
        // subtasks switch without waiting for a decision, and report on the
        // first channel.)
        let commit = tally.refused.is_empty();
        let steps = if two_phase {
            let (done, steps) = unbounded();
            for _ in 0..tally.ready {
                let _ = decide.send((commit, done.clone()));
            }
            steps
        } else {
            steps
        };
        drop(decide);
        let deadline = Instant::now() + self.liveness.timeout();
        while tally.ended < tally.ready {
            match steps.recv_deadline(deadline) {
                Ok(step) => tally.record(step),
                Err(RecvTimeoutError::Timeout) => {
                    return Err(SwapError::Unresponsive(self.give_up(&format!(
                        "{} of {} subtasks did not finish switching",
                        tally.ready - tally.ended,
                        tally.ready
                    ))));
                }
                Err(_) => return Err(tally.stopped(self.parallelism)),
            }
        }
        tally.refused.sort_unstable();
        if !commit && tally.switched > 0 {
            return Err(SwapError::Partial {
                failed: tally.refused,
                reason: tally.reason,
            });
        }
        if !commit {
            return Err(SwapError::Refused(format!(
                "subtask {} refused ({}); every subtask keeps the old version",
                tally
                    .refused
                    .iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                tally.reason
            )));
        }
        let (state_version, max_pause) = (tally.state_version, tally.max_pause);
        if let Ok(mut identity) = self.identity.lock() {
            identity.digest = plugin.digest().to_owned();
            identity.config = config.clone();
            identity.state_version = state_version;
        }
        self.live.swaps.fetch_add(1, Ordering::Relaxed);
        self.live
            .last_swap_pause_ns
            .store(max_pause.as_nanos() as u64, Ordering::Relaxed);
        Ok(SwapReport {
            digest: plugin.digest().to_owned(),
            max_pause,
        })
    }
}

impl PipelineControl {
    /// Live figures: counts, watermark, checkpoints, swaps.
    pub fn live(&self) -> &Arc<LiveStatus> {
        &self.live
    }

    /// The plugin the pipeline runs now (and the next checkpoint records).
    pub fn plugin(&self) -> PluginIdentity {
        self.identity
            .lock()
            .map(|p| p.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Takes a checkpoint that starts after this call; returns once it is
    /// complete.
    pub fn checkpoint(&self) -> Result<CompletedCheckpoint, ControlError> {
        let requests = self
            .checkpoints
            .as_ref()
            .ok_or(ControlError::NoCheckpoints)?;
        let (reply, answer) = bounded(1);
        requests.send(reply).map_err(|_| ControlError::NotRunning)?;
        match answer.recv_timeout(self.liveness.timeout()) {
            Ok(outcome) => outcome.map_err(ControlError::Failed),
            Err(RecvTimeoutError::Timeout) => Err(ControlError::Unresponsive(
                self.give_up("the checkpoint did not complete"),
            )),
            Err(RecvTimeoutError::Disconnected) => Err(self.ended()),
        }
    }

    /// Asks the pipeline to stop at a checkpoint, without draining; `run`
    /// returns once it has.
    pub fn stop(&self) -> Result<(), ControlError> {
        self.commands
            .send(SourceCommand::Stop)
            .map_err(|_| ControlError::NotRunning)
    }

    /// The state `key` holds now (read in the subtask that owns it, between
    /// two batches).
    pub fn query(&self, key: Vec<u8>) -> Result<KeyStateView, ControlError> {
        let (reply, answer) = bounded(1);
        self.commands
            .send(SourceCommand::Query { key, reply })
            .map_err(|_| ControlError::NotRunning)?;
        match answer.recv_timeout(self.liveness.timeout()) {
            Ok(view) => view.map_err(ControlError::Failed),
            Err(RecvTimeoutError::Timeout) => Err(ControlError::Unresponsive(
                self.give_up("the query was not answered"),
            )),
            Err(RecvTimeoutError::Disconnected) => Err(self.ended()),
        }
    }

    /// How long a wait on the pipeline may take (`limits.answer_timeout_ms`).
    pub fn answer_timeout(&self) -> Duration {
        self.liveness.timeout()
    }

    /// Fails the pipeline for `reason`: every task that can end does, the
    /// ones that cannot are left behind, and `run` returns the reason.
    pub fn abort(&self, reason: &str) {
        self.liveness.abort(reason.to_owned());
    }

    /// Why the pipeline was aborted, if it was.
    pub fn aborted(&self) -> Option<String> {
        self.liveness.reason().map(str::to_owned)
    }

    /// A wait for `what` ran out: fails the pipeline with a reason that says
    /// what every busy task was doing, and returns it.
    pub fn give_up(&self, what: &str) -> String {
        let reason = format!(
            "{what} within {} ms (limits.answer_timeout_ms): {}",
            self.liveness.timeout().as_millis(),
            self.liveness.busy()
        );
        self.liveness.abort(reason);
        // Another wait may have given up first: report the reason that holds.
        self.liveness.reason().unwrap_or_default().to_owned()
    }

    /// The pipeline ended while a request waited: why, if it was aborted.
    fn ended(&self) -> ControlError {
        match self.liveness.reason() {
            Some(reason) => ControlError::Unresponsive(reason.to_owned()),
            None => ControlError::NotRunning,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ends of a pipeline's channels that nobody reads.
    struct Silent {
        _source: crossbeam_channel::Receiver<SourceCommand>,
        _coordinator: crossbeam_channel::Receiver<Sender<Result<CompletedCheckpoint, String>>>,
    }

    /// A control whose pipeline never answers: its source task holds the
    /// command channel and its coordinator the checkpoint requests, and
    /// neither reads them (a subtask that never answers, seen from here).
    fn control_of_a_silent_pipeline(timeout: Duration) -> (PipelineControl, Silent) {
        let (commands, silent_source) = unbounded();
        let (checkpoints, silent_coordinator) = unbounded();
        let liveness = Liveness::new(timeout);
        liveness
            .task("subtask 0")
            .set(super::super::liveness::Step::Plugin);
        let control = PipelineControl {
            commands,
            checkpoints: Some(checkpoints),
            live: Arc::new(LiveStatus {
                metrics: Arc::default(),
                progress: Arc::default(),
                checkpoints: Arc::default(),
                swaps: AtomicU64::new(0),
                last_swap_pause_ns: AtomicU64::new(0),
            }),
            parallelism: 1,
            memory_bytes: 1 << 20,
            call_timeout_ms: 100,
            identity: Arc::new(Mutex::new(PluginIdentity {
                digest: String::new(),
                config: serde_json::Value::Null,
                state_version: 0,
            })),
            liveness,
        };
        let silent = Silent {
            _source: silent_source,
            _coordinator: silent_coordinator,
        };
        (control, silent)
    }

    #[test]
    fn a_query_nobody_answers_times_out_and_fails_the_pipeline_naming_the_busy_subtask() {
        let (control, _silent) = control_of_a_silent_pipeline(Duration::from_millis(200));
        let began = Instant::now();
        let Err(ControlError::Unresponsive(reason)) = control.query(b"k".to_vec()) else {
            panic!("a query with no answer must time out");
        };
        assert!(began.elapsed() < Duration::from_secs(2));
        assert!(
            reason.starts_with("the query was not answered within 200 ms (limits.answer_timeout_ms): subtask 0 has been in a call of the plugin for"),
            "{reason}"
        );
        assert_eq!(control.aborted().as_deref(), Some(reason.as_str()));
    }

    #[test]
    fn a_checkpoint_that_never_completes_times_out_and_a_later_wait_reports_the_first_reason() {
        let (control, _silent) = control_of_a_silent_pipeline(Duration::from_millis(100));
        let Err(ControlError::Unresponsive(first)) = control.checkpoint() else {
            panic!("a checkpoint that never completes must time out");
        };
        assert!(
            first.starts_with("the checkpoint did not complete within 100 ms"),
            "{first}"
        );
        let Err(ControlError::Unresponsive(second)) = control.query(b"k".to_vec()) else {
            panic!("the query must time out too");
        };
        assert_eq!(
            second, first,
            "the pipeline failed once, for the first reason"
        );
    }
}
