//! Running one pipeline to the end of a bounded source (or to a stop).
//!
//! Everything that can fail before the first event (the plugin does not
//! load, a file cannot be opened, a checkpoint cannot be restored, the
//! plugin's `open` refuses) fails here, before any thread starts. Then: one
//! thread per sink, per subtask and for the source, joined by bounded
//! channels; the caller's thread coordinates checkpoints and reports
//! progress until they finish.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded, unbounded};
use rustc_hash::FxHashMap;

use super::PipelineError;
use super::control::{LiveStatus, PipelineControl};
use super::coordinator::{
    Ack, CheckpointStats, CompletedCheckpoint, Coordinator, PipelineIdentity,
};
use super::key_groups::key_group_range;
use super::liveness::{ABORT_GRACE, Liveness};
use super::outputs::{Captured, OutputRouter, RunMetrics, SINK_QUEUE, SinkMessage};
use super::sink_task::SinkTask;
use super::source_task::{SourceCheckpointing, SourceProgress, SourceTask};
use super::subtask::{KeyStateView, Subtask, SubtaskConfig, SubtaskReport};
use super::subtask_host::SubtaskHost;
use super::timer_service::TimeDomain;
use super::watermarks::WatermarkTracker;
use crate::checkpoint::{
    self, BackendConfig, CheckpointStore, LoadedCheckpoint, PluginIdentity, SnapshotKind,
};
use crate::connectors::{self, OutputRecord, SinkMode, SinkState};
use crate::engine::Engine;
use crate::spec::{PipelineSpec, SinkSpec};
use crate::state::RocksDbOptions;

/// Subtask input batches that may queue per subtask: backpressure bound.
const SUBTASK_QUEUE: usize = 16;
/// How often the progress callback runs.
const TICK: Duration = Duration::from_millis(100);

/// An on-demand checkpoint request: where the answer goes.
type CheckpointRequest = Sender<Result<CompletedCheckpoint, String>>;

/// How to start a run, beyond its spec.
#[derive(Debug, Default)]
pub struct RunOptions {
    /// Resume from this checkpoint or savepoint.
    pub restore: Option<LoadedCheckpoint>,
    /// Stop after this many source records (counted from the pipeline's
    /// first start) with a checkpoint, without draining timers: the state a
    /// savepoint is taken from.
    pub stop_after: Option<u64>,
    /// Told about restore progress (a restore of much state takes a while).
    pub report: Option<fn(&str)>,
    /// The ingest log an `http` source reads.
    pub ingest: Option<Arc<connectors::IngestLog>>,
    /// The user asked to start from scratch: with nothing restored, the
    /// exactly-once file sinks empty what earlier runs committed (else
    /// such output is refused, never silently truncated).
    pub start_over: bool,
    /// Keep a copy of every output record and report every key's final
    /// state in the summary (`weir plugin test`; small inputs only).
    pub inspect: bool,
}

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub events_in: u64,
    /// Records per output, and whether a sink took them.
    pub outputs: Vec<(String, u64, bool)>,
    pub errors: Vec<(String, u64)>,
    pub counters: Vec<(String, u64)>,
    pub keys_in_state: u64,
    pub pending_event_timers: u64,
    pub discarded_processing_timers: u64,
    pub plugin_digest: String,
    /// From `Pipeline::start` to the first event reaching a subtask.
    pub first_event_after: Option<Duration>,
    pub wall_time: Duration,
    /// `None` when the spec keeps no checkpoints.
    pub checkpoints: Option<CheckpointStats>,
    /// True if the run stopped at `stop_after` rather than the end of input.
    pub stopped: bool,
    /// With `RunOptions::inspect`: every output record, with its output's
    /// name, in the order they were produced (per producer).
    pub captured: Vec<(String, OutputRecord)>,
    /// With `RunOptions::inspect`: the state of every key at the end, by key.
    pub final_state: Vec<(Vec<u8>, KeyStateView)>,
}

/// A pipeline whose plugin is loaded and opened, ready to run.
pub struct Pipeline {
    spec: PipelineSpec,
    started: Instant,
    digest: String,
    subtasks: Vec<Subtask>,
    source: SourceTask,
    sinks: Vec<(String, SinkTask)>,
    subtask_inputs: Vec<Receiver<super::subtask::SubtaskInput>>,
    metrics: Arc<RunMetrics>,
    progress: Arc<SourceProgress>,
    coordinator: Option<(Coordinator, Receiver<Ack>, Receiver<CheckpointRequest>)>,
    drained: Arc<AtomicUsize>,
    control: PipelineControl,
    captured: Option<Captured>,
    liveness: Arc<Liveness>,
}

impl Pipeline {
    /// Loads the plugin, opens (or restores) the source, sinks and state,
    /// instantiates and opens one plugin instance per subtask. `started` is
    /// when the user asked.
    pub fn start(
        engine: &Engine,
        spec: &PipelineSpec,
        component: &[u8],
        started: Instant,
        options: RunOptions,
    ) -> Result<Self, PipelineError> {
        let plugin = engine.load::<SubtaskHost>(component)?;
        // Before anything opens: a pipeline the shared instance pool cannot
        // serve is refused, and the running ones keep their instances.
        let instances = engine.reserve_instances(&spec.name, spec.parallelism)?;
        let restore = options.restore.as_ref();
        if let Some(r) = restore {
            check_compatible(spec, r)?;
        }
        if options.stop_after.is_some() && spec.checkpoint.is_none() {
            return Err(PipelineError::Checkpoint(
                "stopping with a savepoint needs a [checkpoint] section in the spec".into(),
            ));
        }
        let mut source = connectors::open_source(&spec.source, options.ingest.as_ref())?;
        if let Some(r) = restore {
            source.seek(&r.manifest.source.position)?;
        }
        let sink_context = connectors::SinkContext {
            pipeline: spec.name.clone(),
            splits: source.split_names().into(),
        };
        let metrics = Arc::new(RunMetrics::default());
        let checkpointing = spec.checkpoint.is_some();
        let parallelism = spec.parallelism as usize;
        // Every subtask and the source produce records for the sinks.
        let producers = parallelism + 1;
        let (acks_tx, acks_rx) = unbounded::<Ack>();
        let drained = Arc::new(AtomicUsize::new(0));
        let liveness = Liveness::new(spec.limits.answer_timeout());

        let mut senders: FxHashMap<String, Vec<Sender<SinkMessage>>> = FxHashMap::default();
        let mut sinks = Vec::new();
        let mut commit_senders = Vec::new();
        for (index, sink_spec) in spec.sinks.iter().enumerate() {
            let mode = if checkpointing {
                SinkMode::Checkpointed {
                    restore: restored_sink(restore, index, sink_spec)?,
                    start_over: options.start_over,
                }
            } else {
                SinkMode::Direct
            };
            let sink = connectors::open_sink(sink_spec, mode, &sink_context)?;
            let (tx, rx) = bounded::<SinkMessage>(SINK_QUEUE);
            let (commit_tx, commit_rx) = unbounded::<u64>();
            senders
                .entry(sink_spec.output().to_owned())
                .or_default()
                .push(tx);
            commit_senders.push(commit_tx);
            sinks.push((
                sink_spec.output().to_owned(),
                SinkTask {
                    index,
                    sink,
                    producers,
                    records: rx,
                    commits: commit_rx,
                    acks: acks_tx.clone(),
                    drained: drained.clone(),
                    liveness: liveness.clone(),
                    activity: liveness
                        .task(format!("sink {index} (output {})", sink_spec.output())),
                },
            ));
        }
        let captured = options.inspect.then(Captured::default);
        let router = OutputRouter::new(senders, captured.clone());

        let plugin_config: Arc<str> = spec.plugin.config.to_string().into();
        let config = Arc::new(SubtaskConfig {
            memory_bytes: (spec.limits.memory_mb as usize) << 20,
            call_timeout_ms: spec.limits.call_timeout_ms,
            on_error: spec.on_error,
            inspect: options.inspect,
            liveness: liveness.clone(),
            _instances: instances,
        });
        let restored_watermark =
            restore.map_or(i64::MIN, |r| r.manifest.source.watermarks.watermark);
        // Output and counter names are bounded per pipeline, across subtasks.
        let names = Arc::new(super::subtask_host::PipelineNames::default());
        let mut subtasks = Vec::with_capacity(parallelism);
        let mut inputs = Vec::with_capacity(parallelism);
        let mut subtask_inputs = Vec::with_capacity(parallelism);
        for index in 0..parallelism {
            let backend_config = BackendConfig {
                kind: spec.state.backend,
                dir: spec
                    .state
                    .dir
                    .join(&spec.name)
                    .join(format!("subtask-{index}")),
                rocksdb: RocksDbOptions {
                    cache_entries: spec.state.cache_entries,
                    ..RocksDbOptions::default()
                },
            };
            let mut host = match restore {
                Some(r) => {
                    let began = Instant::now();
                    let restored =
                        checkpoint::restore_subtask(r, index, spec.parallelism, &backend_config)?;
                    if let Some(report) = options.report {
                        report(&format!(
                            "restored subtask {}/{parallelism} (state and {} timers) in {} ms",
                            index + 1,
                            restored.timers.len(TimeDomain::EventTime)
                                + restored.timers.len(TimeDomain::ProcessingTime),
                            began.elapsed().as_millis()
                        ));
                    }
                    let mut host = SubtaskHost::new(spec.name.clone(), index, restored.backend);
                    host.catalog = restored.catalog;
                    host.timers = restored.timers;
                    host
                }
                None => {
                    let (backend, timers) = backend_config.open_empty()?;
                    let mut host = SubtaskHost::new(spec.name.clone(), index, backend);
                    host.timers = timers;
                    host
                }
            };
            host.watermark = restored_watermark;
            host.names = names.clone();
            subtasks.push(Subtask::start(
                index,
                plugin_config.clone(),
                key_group_range(index, spec.parallelism),
                plugin.clone(),
                host,
                config.clone(),
                router.for_producer(index),
                metrics.clone(),
                checkpointing.then(|| acks_tx.clone()),
                restore.map(|r| r.manifest.plugin.state_version),
            )?);
            let (tx, rx) = bounded(SUBTASK_QUEUE);
            inputs.push(tx);
            subtask_inputs.push(rx);
        }

        let event_time = spec.event_time.as_ref();
        let mut watermarks = WatermarkTracker::new(
            source.splits(),
            event_time.map_or(0, |et| et.max_out_of_orderness_ms),
            event_time.and_then(|et| et.idle_timeout_ms),
        );
        if let Some(r) = restore {
            let recorded: Vec<String> = r
                .manifest
                .source
                .position
                .iter()
                .map(|p| p.split.clone())
                .collect();
            let snapshot = &r.manifest.source.watermarks;
            watermarks.restore(&snapshot.for_splits(&recorded, &source.split_names()));
        }

        let (trigger_tx, trigger_rx) = bounded::<()>(1);
        let (outcomes_tx, outcomes_rx) = unbounded();
        let (commands_tx, commands_rx) = unbounded();
        let (requests_tx, requests_rx) = unbounded();
        let progress = Arc::new(SourceProgress::default());
        let live = Arc::new(LiveStatus {
            metrics: metrics.clone(),
            progress: progress.clone(),
            checkpoints: Arc::default(),
            swaps: AtomicU64::new(0),
            last_swap_pause_ns: AtomicU64::new(0),
        });
        let identity = Arc::new(Mutex::new(PluginIdentity {
            digest: plugin.digest().to_owned(),
            config: spec.plugin.config.clone(),
            state_version: subtasks.first().map_or(0, Subtask::state_version),
        }));
        let control = PipelineControl {
            commands: commands_tx,
            checkpoints: spec.checkpoint.is_some().then_some(requests_tx),
            live: live.clone(),
            parallelism,
            memory_bytes: config.memory_bytes,
            call_timeout_ms: config.call_timeout_ms,
            identity: identity.clone(),
            liveness: liveness.clone(),
        };
        let store = spec
            .checkpoint
            .as_ref()
            .map(|c| CheckpointStore::new(&c.dir, &spec.name));
        let coordinator = spec
            .checkpoint
            .as_ref()
            .zip(store.clone())
            .map(|(c, store)| {
                let last_started = store.next_id().saturating_sub(1);
                let identity = PipelineIdentity {
                    name: spec.name.clone(),
                    spec: serde_json::to_value(spec).unwrap_or_default(),
                    key_by: spec.key_by.field.clone(),
                    plugin: identity.clone(),
                    sinks: spec
                        .sinks
                        .iter()
                        .map(|s| (s.output().to_owned(), sink_target(s)))
                        .collect(),
                };
                let coordinator = Coordinator::new(
                    store,
                    identity,
                    Duration::from_millis(c.interval_ms),
                    c.retain,
                    parallelism,
                    trigger_tx,
                    commit_senders,
                    outcomes_tx,
                    restore.map(|r| {
                        let kind = match r.manifest.kind {
                            SnapshotKind::Checkpoint => "checkpoint",
                            SnapshotKind::Savepoint => "savepoint",
                        };
                        (kind.to_owned(), r.manifest.id)
                    }),
                    live.checkpoints.clone(),
                    last_started,
                );
                (coordinator, acks_rx, requests_rx)
            });
        let source_activity = liveness.task("the source");
        let source = SourceTask {
            source,
            records_read: restore.map_or(0, |r| r.manifest.source.records),
            stop_after: options.stop_after,
            checkpointing: store.map(|store| SourceCheckpointing {
                next_id: store.next_id(),
                store,
                trigger: trigger_rx,
                acks: acks_tx.clone(),
                outcomes: outcomes_rx,
                started: Vec::new(),
            }),
            commands: commands_rx,
            timestamps: spec.timestamp_source(),
            keys: spec.key_source(),
            watermarks,
            subtasks: inputs,
            router: router
                .for_producer(parallelism)
                .watched(liveness.clone(), source_activity.clone()),
            metrics: metrics.clone(),
            progress: progress.clone(),
            liveness: liveness.clone(),
            activity: source_activity,
        };
        Ok(Self {
            spec: spec.clone(),
            started,
            digest: plugin.digest().to_owned(),
            subtasks,
            source,
            sinks,
            subtask_inputs,
            metrics,
            progress,
            coordinator,
            drained,
            control,
            captured,
            liveness,
        })
    }

    /// A handle to swap the plugin while the pipeline runs.
    pub fn control(&self) -> PipelineControl {
        self.control.clone()
    }

    /// Runs to the end of the source. `on_tick` is called about ten times a
    /// second from the calling thread, for progress display.
    pub fn run(
        self,
        mut on_tick: impl FnMut(&RunMetrics, &SourceProgress),
    ) -> Result<RunSummary, PipelineError> {
        let Pipeline {
            spec,
            started,
            digest,
            subtasks,
            source,
            sinks,
            subtask_inputs,
            metrics,
            progress,
            coordinator,
            drained,
            control,
            captured,
            liveness,
        } = self;
        // The source ends when the input does; a swap after that fails.
        drop(control);
        let run_started = Instant::now();
        let mut sink_handles = Vec::new();
        // Every log line of the pipeline's threads names the pipeline.
        let span = || tracing::info_span!("pipeline", pipeline = %spec.name);
        for (output, task) in sinks {
            let span = span();
            let handle = std::thread::Builder::new()
                .name(format!("weir-sink-{output}"))
                .spawn(move || span.in_scope(|| task.run()))
                .map_err(PipelineError::Spawn)?;
            sink_handles.push((output, handle));
        }
        let sink_count = sink_handles.len();
        // Each subtask and the source hold a sender until they end, so the
        // loop below learns at once that the last one has (instead of at
        // its next tick, which a short run would wait for).
        let (alive, ended) = crossbeam_channel::bounded::<()>(0);
        let mut workers: Vec<JoinHandle<Result<SubtaskReport, PipelineError>>> = Vec::new();
        for (subtask, input) in subtasks.into_iter().zip(subtask_inputs) {
            let name = format!("weir-{}-{}", spec.name, workers.len());
            let span = span();
            let alive = alive.clone();
            workers.push(
                std::thread::Builder::new()
                    .name(name)
                    .spawn(move || {
                        let _alive = alive;
                        span.in_scope(|| subtask.run(input))
                    })
                    .map_err(PipelineError::Spawn)?,
            );
        }
        let source_handle = std::thread::Builder::new()
            .name(format!("weir-{}-source", spec.name))
            .spawn({
                let span = span();
                move || {
                    let _alive = alive;
                    span.in_scope(|| source.run())
                }
            })
            .map_err(PipelineError::Spawn)?;

        let mut coordinator = coordinator;
        let mut last_tick = Instant::now();
        let mut ended = ended;
        let mut all_ended = false;
        loop {
            // The watchdog: a task stuck in one step fails the pipeline
            // (the loop wakes at least every tick).
            if liveness.reason().is_none()
                && let Some(stuck) = liveness.stuck()
            {
                liveness.abort(stuck);
            }
            if let Some(reason) = liveness.reason() {
                if let Some((coordinator, _, _)) = &mut coordinator {
                    coordinator.abandon_in_flight(&format!("the pipeline was aborted: {reason}"));
                }
                break;
            }
            let tasks_done = all_ended
                || (source_handle.is_finished() && workers.iter().all(|w| w.is_finished()));
            let sinks_done = drained.load(Ordering::SeqCst) == sink_count;
            match &mut coordinator {
                None => {
                    if tasks_done {
                        break;
                    }
                    if let Err(RecvTimeoutError::Disconnected) = ended.recv_timeout(TICK) {
                        all_ended = true;
                    }
                }
                Some((coordinator, acks, requests)) => {
                    // Wake for the next tick, or for the next checkpoint if
                    // one can be triggered; once the tasks are done, soon,
                    // to see the sinks finish.
                    let mut until = last_tick + TICK;
                    if coordinator.is_idle() && !tasks_done {
                        until = until.min(coordinator.next_due());
                    }
                    if tasks_done {
                        until = Instant::now();
                    }
                    let wait = until
                        .saturating_duration_since(Instant::now())
                        .max(Duration::from_millis(1));
                    let received = crossbeam_channel::select! {
                        recv(acks) -> ack => ack.map(Some).map_err(|_| RecvTimeoutError::Disconnected),
                        recv(ended) -> _ => {
                            // Disconnected: every task has ended. Never again.
                            all_ended = true;
                            ended = crossbeam_channel::never();
                            Ok(None)
                        }
                        recv(requests) -> request => {
                            match request {
                                Ok(reply) => coordinator.request(reply),
                                // Nobody holds the control any more.
                                Err(_) => *requests = crossbeam_channel::never(),
                            }
                            Ok(None)
                        }
                        default(wait) => Err(RecvTimeoutError::Timeout),
                    };
                    match received {
                        Ok(Some(ack)) => coordinator.handle(ack),
                        Ok(None) => {}
                        // Every task has finished and every sink has seen
                        // its last barrier: what has not completed now
                        // never will.
                        Err(RecvTimeoutError::Timeout) if tasks_done && sinks_done => {
                            if acks.is_empty() {
                                coordinator
                                    .abandon_in_flight("the pipeline stopped before it completed");
                                break;
                            }
                        }
                        Err(RecvTimeoutError::Timeout) => {}
                        // Nobody can send acks any more: all tasks are gone.
                        Err(RecvTimeoutError::Disconnected) => {
                            if tasks_done {
                                coordinator
                                    .abandon_in_flight("the pipeline stopped before it completed");
                                break;
                            }
                            std::thread::sleep(TICK);
                        }
                    }
                    if !tasks_done {
                        coordinator.maybe_trigger(Instant::now());
                    }
                }
            }
            if last_tick.elapsed() >= TICK {
                on_tick(&metrics, &progress);
                last_tick = Instant::now();
            }
        }
        on_tick(&metrics, &progress);
        let last_checkpoint = coordinator
            .as_ref()
            .map_or(Ok(()), |(c, _, _)| c.check_last());
        // Sinks end once no more commits can come.
        let checkpoint_stats = coordinator.map(|(c, _, _)| c.stats.clone());

        // Join everything, then report the root cause: an abort's reason
        // first, a sink's own error before the "sink closed" its producers
        // saw, a subtask's before the source's. Every join is bounded: a
        // thread that does not end is left behind and named.
        let mut joins = BoundedJoins::new(&liveness);
        let source_result = joins.join(source_handle, "the source");
        let mut reports = Vec::new();
        let mut subtask_error = None;
        for (index, worker) in workers.into_iter().enumerate() {
            match joins.join(worker, &format!("subtask {index}")) {
                Ok(report) => reports.push(report),
                Err(e) => {
                    subtask_error.get_or_insert(e);
                }
            }
        }
        let mut sink_error = None;
        for (output, handle) in sink_handles {
            if let Err(e) = joins.join(handle, &format!("the sink of output {output}")) {
                tracing::error!(output, "sink failed: {e}");
                sink_error.get_or_insert(e);
            }
        }
        if let Some(reason) = liveness.reason() {
            return Err(PipelineError::Unresponsive(joins.report(reason)));
        }
        if let Some(e) = sink_error.or(subtask_error) {
            return Err(e);
        }
        let stopped = source_result?;
        last_checkpoint.map_err(PipelineError::Checkpoint)?;

        let routed: Vec<&str> = spec.sinks.iter().map(|s| s.output()).collect();
        Ok(RunSummary {
            events_in: metrics.events_in.load(Ordering::Relaxed),
            outputs: metrics
                .outputs()
                .into_iter()
                .map(|(name, n)| {
                    let has_sink = routed.contains(&name.as_str());
                    (name, n, has_sink)
                })
                .collect(),
            errors: metrics.errors().into_iter().collect(),
            counters: metrics.counters().into_iter().collect(),
            keys_in_state: reports.iter().map(|r| r.keys_in_state).sum(),
            pending_event_timers: reports.iter().map(|r| r.pending_event_timers).sum(),
            discarded_processing_timers: reports
                .iter()
                .map(|r| r.discarded_processing_timers)
                .sum(),
            plugin_digest: digest,
            first_event_after: metrics
                .first_event()
                .map(|t| t.saturating_duration_since(started)),
            wall_time: run_started.elapsed(),
            checkpoints: checkpoint_stats,
            stopped,
            captured: captured.map_or_else(Vec::new, |c| {
                std::mem::take(&mut *c.lock().expect("capture lock"))
            }),
            final_state: {
                let mut keys: Vec<_> = reports.into_iter().flat_map(|r| r.final_state).collect();
                keys.sort_by(|a, b| a.0.cmp(&b.0));
                keys
            },
        })
    }
}

/// Refuses a restore that would put state where it does not belong.
fn check_compatible(spec: &PipelineSpec, restore: &LoadedCheckpoint) -> Result<(), PipelineError> {
    let m = &restore.manifest;
    if m.key_by != spec.key_by.field {
        return Err(PipelineError::Restore(
            crate::checkpoint::CheckpointError::Incompatible(format!(
                "{} keyed its state by {:?}, this spec keys by {:?}; keyed state would be split (start over with --fresh)",
                restore.dir.display(),
                m.key_by,
                spec.key_by.field
            )),
        ));
    }
    Ok(())
}

/// Where a sink writes, to recognise it across runs.
fn sink_target(spec: &SinkSpec) -> Option<String> {
    match spec {
        SinkSpec::File { path, .. } => Some(path.display().to_string()),
        SinkSpec::Kafka(kafka) => Some(format!("kafka:{}", kafka.topic)),
        SinkSpec::Stdout { .. } | SinkSpec::Null { .. } => None,
    }
}

/// What sink `index` resumes from. A checkpoint's sink with the same output
/// and target resumes where it committed. A sink restored from a savepoint,
/// or one the checkpoint does not know, starts empty, and so must not write
/// over an existing file (that output belongs to another run).
fn restored_sink<'a>(
    restore: Option<&'a LoadedCheckpoint>,
    index: usize,
    spec: &SinkSpec,
) -> Result<Option<&'a SinkState>, PipelineError> {
    let Some(restore) = restore else {
        return Ok(None);
    };
    let target = sink_target(spec);
    if restore.manifest.kind == SnapshotKind::Checkpoint {
        let recorded = restore
            .manifest
            .sinks
            .iter()
            .find(|r| r.output == spec.output() && r.target == target);
        if let Some(recorded) = recorded {
            return Ok(recorded.state.as_ref());
        }
    }
    if let SinkSpec::File { path, .. } = spec
        && std::fs::metadata(path).is_ok_and(|m| m.len() > 0)
    {
        let why = match restore.manifest.kind {
            SnapshotKind::Savepoint => "a run started from a savepoint writes new outputs",
            SnapshotKind::Checkpoint => "the checkpoint has no record of this sink",
        };
        return Err(PipelineError::Checkpoint(format!(
            "sink[{index}] would overwrite {}: {why}; choose another path or remove the file",
            path.display()
        )));
    }
    tracing::info!(
        output = spec.output(),
        "sink {index} starts empty: the restored snapshot has no state for it"
    );
    Ok(None)
}

/// Joins the threads of a run without waiting on a stuck one: while they
/// end, the watchdog keeps watching (a sink still writing or committing its
/// last checkpoint takes as long as it makes progress); once the run is
/// aborted, the threads get a short grace, and one still running then is
/// left behind (its handle dropped) and named.
struct BoundedJoins<'a> {
    liveness: &'a Liveness,
    /// Set once the run is aborted.
    deadline: Option<Instant>,
    left_behind: Vec<String>,
}

impl<'a> BoundedJoins<'a> {
    fn new(liveness: &'a Liveness) -> Self {
        Self {
            liveness,
            deadline: liveness.reason().map(|_| Instant::now() + ABORT_GRACE),
            left_behind: Vec::new(),
        }
    }

    fn join<T>(
        &mut self,
        handle: JoinHandle<Result<T, PipelineError>>,
        name: &str,
    ) -> Result<T, PipelineError> {
        while !handle.is_finished() {
            if self.deadline.is_none() {
                if let Some(stuck) = self.liveness.stuck() {
                    self.liveness.abort(stuck);
                }
                if self.liveness.reason().is_some() {
                    self.deadline = Some(Instant::now() + ABORT_GRACE);
                }
            }
            if self.deadline.is_some_and(|d| Instant::now() >= d) {
                self.left_behind.push(name.to_owned());
                return Err(PipelineError::Unresponsive(format!("{name} did not end")));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        join(handle)
    }

    /// The reason of an abort, with the threads left behind.
    fn report(&self, reason: &str) -> String {
        if self.left_behind.is_empty() {
            reason.to_owned()
        } else {
            format!(
                "{reason}; left running (until the server restarts): {}",
                self.left_behind.join(", ")
            )
        }
    }
}

fn join<T>(handle: JoinHandle<Result<T, PipelineError>>) -> Result<T, PipelineError> {
    handle.join().unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "unknown panic".into());
        Err(PipelineError::Panicked(message))
    })
}
