//! The checkpoint coordinator: triggers checkpoints, collects every task's
//! part, seals the checkpoint, and tells the sinks to commit.
//!
//! The source starts a checkpoint (on the coordinator's request, at the end
//! of input, or when told to stop): it records its position and watermark,
//! acknowledges, and sends a barrier after its last batch of the epoch to
//! every subtask and sink. Each subtask snapshots its state when the barrier
//! reaches it and passes the barrier on to the sinks; each sink pre-commits
//! once every producer's barrier is in. One checkpoint is in flight at a time.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use crate::checkpoint::{
    CheckpointStore, Manifest, PluginIdentity, SinkCheckpoint, SnapshotKind, SourceCheckpoint,
    SubtaskCheckpoint,
};
use crate::connectors::SinkState;

/// A task's part of checkpoint `id`, sent to the coordinator.
pub(crate) enum Ack {
    Source {
        id: u64,
        created_ms: i64,
        source: SourceCheckpoint,
        finished: bool,
        /// The source's last checkpoint (end of input or stop): the run is
        /// only complete once it is sealed.
        last: bool,
    },
    Subtask {
        id: u64,
        index: usize,
        result: Result<SubtaskCheckpoint, String>,
        /// The plugin the subtask ran when the barrier reached it: what its
        /// state was written with.
        plugin: PluginIdentity,
    },
    Sink {
        id: u64,
        index: usize,
        result: Result<Option<SinkState>, String>,
    },
}

/// Checkpoint statistics for the run summary (and later, metrics).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CheckpointStats {
    pub completed: u64,
    pub failed: u64,
    pub last_id: Option<u64>,
    pub last_duration_ms: Option<u64>,
    pub last_size_bytes: Option<u64>,
    /// Total time from trigger to complete, for the mean.
    pub total_duration_ms: u64,
    #[serde(skip)]
    pub last_completed_at: Option<Instant>,
    /// The checkpoint or savepoint the run started from: (kind, id).
    pub restored_from: Option<(String, u64)>,
}

/// What the manifest needs that no task knows.
pub(crate) struct PipelineIdentity {
    pub(crate) name: String,
    pub(crate) spec: serde_json::Value,
    pub(crate) key_by: String,
    /// Shared with the pipeline's control: a swap changes it.
    pub(crate) plugin: Arc<Mutex<PluginIdentity>>,
    /// Per sink, in spec order: (output, where it writes).
    pub(crate) sinks: Vec<(String, Option<String>)>,
}

struct InFlight {
    id: u64,
    /// The plugin as of the barrier (subtask 0's; without a migration,
    /// subtasks agree on the state version even if a swap was half done).
    plugin: Option<PluginIdentity>,
    started: Instant,
    created_ms: i64,
    source: Option<SourceCheckpoint>,
    finished: bool,
    subtasks: Vec<Option<SubtaskCheckpoint>>,
    sinks: Vec<Option<Option<SinkState>>>,
    failure: Option<String>,
}

impl InFlight {
    fn complete(&self) -> bool {
        self.source.is_some()
            && self.subtasks.iter().all(Option::is_some)
            && self.sinks.iter().all(Option::is_some)
    }
}

/// Someone waiting for a checkpoint that starts after they asked.
pub(crate) struct CheckpointWaiter {
    /// The first checkpoint id that counts.
    from_id: u64,
    reply: Sender<Result<CompletedCheckpoint, String>>,
}

/// A checkpoint taken on request.
#[derive(Debug, Clone)]
pub struct CompletedCheckpoint {
    pub id: u64,
    pub duration_ms: u64,
    pub size_bytes: u64,
    pub dir: std::path::PathBuf,
}

pub(crate) struct Coordinator {
    store: CheckpointStore,
    identity: PipelineIdentity,
    interval: Duration,
    retain: usize,
    parallelism: usize,
    /// Asks the source to start a checkpoint.
    trigger: Sender<()>,
    commits: Vec<Sender<u64>>,
    /// Tells the source which checkpoints completed (`Ok`) or were
    /// abandoned (`Err`).
    source_outcomes: Sender<Result<u64, u64>>,
    /// Oldest first. Usually one; the final checkpoint at the end of input
    /// may start while a periodic one is still collecting its parts.
    in_flight: Vec<InFlight>,
    /// A trigger was sent and the source has not started it yet.
    requested: bool,
    last_trigger: Instant,
    pub(crate) stats: CheckpointStats,
    /// The source's last checkpoint, once started, and whether it sealed.
    last: Option<(u64, bool)>,
    /// Why the most recent checkpoint failed, for the final report.
    last_failure: Option<String>,
    /// The highest checkpoint id the source has started.
    last_started: u64,
    /// On-demand requests not yet answered; a checkpoint is due at once
    /// while there are any.
    waiters: Vec<CheckpointWaiter>,
    /// A copy of `stats` for readers on other threads (status, metrics).
    shared: Arc<Mutex<CheckpointStats>>,
}

impl Coordinator {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        store: CheckpointStore,
        identity: PipelineIdentity,
        interval: Duration,
        retain: usize,
        parallelism: usize,
        trigger: Sender<()>,
        commits: Vec<Sender<u64>>,
        source_outcomes: Sender<Result<u64, u64>>,
        restored_from: Option<(String, u64)>,
        shared: Arc<Mutex<CheckpointStats>>,
        last_started: u64,
    ) -> Self {
        let stats = CheckpointStats {
            restored_from,
            ..CheckpointStats::default()
        };
        if let Ok(mut copy) = shared.lock() {
            *copy = stats.clone();
        }
        Self {
            store,
            identity,
            interval,
            retain,
            parallelism,
            trigger,
            commits,
            source_outcomes,
            in_flight: Vec::new(),
            requested: false,
            last_trigger: Instant::now(),
            stats,
            last: None,
            last_failure: None,
            last_started,
            waiters: Vec::new(),
            shared,
        }
    }

    /// When the next checkpoint is due: now if someone asked for one.
    pub(crate) fn next_due(&self) -> Instant {
        if self.waiters.is_empty() {
            self.last_trigger + self.interval
        } else {
            self.last_trigger
        }
    }

    /// Asks for a checkpoint that starts after now; the answer goes to `reply`
    /// once it completes (or fails).
    pub(crate) fn request(&mut self, reply: Sender<Result<CompletedCheckpoint, String>>) {
        self.waiters.push(CheckpointWaiter {
            from_id: self.last_started + 1,
            reply,
        });
    }

    /// Requests a checkpoint if one is due and none is under way.
    pub(crate) fn maybe_trigger(&mut self, now: Instant) {
        if self.in_flight.is_empty() && !self.requested && now >= self.next_due() {
            // A source that has ended no longer listens; that is fine.
            self.requested = self.trigger.try_send(()).is_ok();
            self.last_trigger = now;
        }
    }

    pub(crate) fn is_idle(&self) -> bool {
        self.in_flight.is_empty()
    }

    pub(crate) fn handle(&mut self, ack: Ack) {
        match ack {
            Ack::Source {
                id,
                created_ms,
                source,
                finished,
                last,
            } => {
                self.requested = false;
                self.last_started = self.last_started.max(id);
                if last {
                    self.last = Some((id, false));
                }
                self.in_flight.push(InFlight {
                    id,
                    plugin: None,
                    started: Instant::now(),
                    created_ms,
                    source: Some(source),
                    finished,
                    subtasks: vec![None; self.parallelism],
                    sinks: vec![None; self.identity.sinks.len()],
                    failure: None,
                });
            }
            Ack::Subtask {
                id,
                index,
                result,
                plugin,
            } => {
                let Some(flight) = self.in_flight.iter_mut().find(|f| f.id == id) else {
                    return;
                };
                if index == 0 {
                    flight.plugin = Some(plugin);
                }
                match result {
                    Ok(part) => flight.subtasks[index] = Some(part),
                    Err(e) => {
                        flight
                            .failure
                            .get_or_insert(format!("subtask {index}: {e}"));
                        // Keep counting parts so the checkpoint closes.
                        flight.subtasks[index] = Some(placeholder(index));
                    }
                }
            }
            Ack::Sink { id, index, result } => {
                let Some(flight) = self.in_flight.iter_mut().find(|f| f.id == id) else {
                    return;
                };
                match result {
                    Ok(state) => flight.sinks[index] = Some(state),
                    Err(e) => {
                        flight.failure.get_or_insert(format!("sink {index}: {e}"));
                        flight.sinks[index] = Some(None);
                    }
                }
            }
        }
        // Parts arrive in barrier order, so checkpoints complete oldest first.
        while self.in_flight.first().is_some_and(InFlight::complete) {
            let flight = self.in_flight.remove(0);
            self.seal(flight);
        }
        self.publish();
    }

    fn publish(&self) {
        if let Ok(mut copy) = self.shared.lock() {
            *copy = self.stats.clone();
        }
    }

    /// Answers the waiters that checkpoint `id` counts for.
    fn answer(&mut self, id: u64, outcome: Result<CompletedCheckpoint, String>) {
        self.waiters.retain(|w| {
            if id >= w.from_id {
                let _ = w.reply.send(outcome.clone());
                false
            } else {
                true
            }
        });
    }

    /// Gives up on a checkpoint that can no longer complete (the pipeline
    /// stopped before every part came in).
    pub(crate) fn abandon_in_flight(&mut self, why: &str) {
        for flight in std::mem::take(&mut self.in_flight) {
            self.abandon(flight, why);
        }
        for waiter in self.waiters.drain(..) {
            let _ = waiter.reply.send(Err(format!("no checkpoint: {why}")));
        }
        self.publish();
    }

    /// `Err` if the source's last checkpoint started and did not seal: what
    /// came after the checkpoint before it is then not committed.
    pub(crate) fn check_last(&self) -> Result<(), String> {
        match self.last {
            Some((id, false)) => Err(format!(
                "the last checkpoint ({id}) did not complete ({}); output after checkpoint {} is not committed; run again to resume from there",
                self.last_failure.as_deref().unwrap_or("unknown reason"),
                self.stats
                    .last_id
                    .map_or("none".to_owned(), |id| id.to_string())
            )),
            _ => Ok(()),
        }
    }

    fn abandon(&mut self, flight: InFlight, why: &str) {
        tracing::warn!(checkpoint = flight.id, "checkpoint abandoned: {why}");
        self.last_failure = Some(why.to_owned());
        self.stats.failed += 1;
        self.store.discard_in_progress(flight.id);
        let _ = self.source_outcomes.send(Err(flight.id));
        self.answer(
            flight.id,
            Err(format!("checkpoint {} failed: {why}", flight.id)),
        );
    }

    fn seal(&mut self, flight: InFlight) {
        if let Some(why) = &flight.failure {
            let why = why.clone();
            self.abandon(flight, &why);
            return;
        }
        let duration = flight.started.elapsed();
        let mut manifest = Manifest {
            format: crate::checkpoint::FORMAT_VERSION,
            id: flight.id,
            kind: SnapshotKind::Checkpoint,
            created_ms: flight.created_ms,
            duration_ms: duration.as_millis() as u64,
            size_bytes: 0,
            finished: flight.finished,
            pipeline: self.identity.name.clone(),
            spec: self.identity.spec.clone(),
            key_by: self.identity.key_by.clone(),
            plugin: flight.plugin.clone().unwrap_or_else(|| {
                self.identity
                    .plugin
                    .lock()
                    .map(|p| p.clone())
                    .unwrap_or_else(|p| p.into_inner().clone())
            }),
            source: flight.source.clone().expect("complete"),
            subtasks: flight.subtasks.iter().flatten().cloned().collect(),
            sinks: self
                .identity
                .sinks
                .iter()
                .zip(&flight.sinks)
                .enumerate()
                .map(|(index, ((output, target), state))| SinkCheckpoint {
                    index,
                    output: output.clone(),
                    target: target.clone(),
                    state: state.clone().flatten(),
                })
                .collect(),
            files: Vec::new(),
        };
        match self.store.complete(&mut manifest) {
            Ok(_) => {
                tracing::info!(
                    checkpoint = flight.id,
                    duration_ms = manifest.duration_ms,
                    size_bytes = manifest.size_bytes,
                    "checkpoint complete"
                );
                self.stats.completed += 1;
                self.stats.last_id = Some(flight.id);
                self.stats.last_duration_ms = Some(manifest.duration_ms);
                self.stats.last_size_bytes = Some(manifest.size_bytes);
                self.stats.total_duration_ms += manifest.duration_ms;
                self.stats.last_completed_at = Some(Instant::now());
                if let Some((id, sealed)) = &mut self.last {
                    *sealed |= *id == flight.id;
                }
                for commit in &self.commits {
                    let _ = commit.send(flight.id);
                }
                let _ = self.source_outcomes.send(Ok(flight.id));
                self.answer(
                    flight.id,
                    Ok(CompletedCheckpoint {
                        id: flight.id,
                        duration_ms: manifest.duration_ms,
                        size_bytes: manifest.size_bytes,
                        dir: self.store.dir_of(flight.id),
                    }),
                );
                if let Err(e) = self.store.retain(self.retain) {
                    tracing::warn!("cannot drop old checkpoints: {e}");
                }
            }
            Err(e) => {
                tracing::error!(checkpoint = flight.id, "cannot seal the checkpoint: {e}");
                let _ = self.source_outcomes.send(Err(flight.id));
                self.last_failure = Some(format!("sealing it failed: {e}"));
                self.stats.failed += 1;
                self.answer(flight.id, Err(format!("sealing it failed: {e}")));
            }
        }
    }
}

/// Stands in for the part of a subtask whose snapshot failed (the
/// checkpoint is abandoned, never sealed with it).
fn placeholder(index: usize) -> SubtaskCheckpoint {
    SubtaskCheckpoint {
        index,
        key_groups: [0, 0],
        states: Vec::new(),
        state: crate::checkpoint::StateFiles::Portable {
            file: String::new(),
            entries: 0,
        },
        timers: None,
        timer_count: 0,
    }
}
