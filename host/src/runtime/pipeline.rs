//! Running one pipeline to the end of a bounded source.
//!
//! Everything that can fail before the first event (the plugin does not
//! load, a file cannot be opened, the plugin's `open` refuses) fails here,
//! before any thread starts. Then: one thread per sink, per subtask and for
//! the source, joined bounded channels between them; the caller's thread
//! reports progress until they finish.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::bounded;
use rustc_hash::FxHashMap;

use super::PipelineError;
use super::outputs::{OutputRouter, RunMetrics, SINK_QUEUE};
use super::source_task::{SourceProgress, SourceTask};
use super::subtask::{Subtask, SubtaskConfig, SubtaskReport};
use super::subtask_host::SubtaskHost;
use super::watermarks::WatermarkTracker;
use crate::connectors::{self, OutputRecord};
use crate::engine::Engine;
use crate::spec::{PipelineSpec, StateBackendKind};
use crate::state::{KeyedStateBackend, MemoryBackend};

/// Subtask input batches that may queue per subtask: backpressure bound.
const SUBTASK_QUEUE: usize = 16;

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
}

/// A pipeline whose plugin is loaded and opened, ready to run.
pub struct Pipeline {
    spec: PipelineSpec,
    started: Instant,
    digest: String,
    subtasks: Vec<Subtask>,
    source: SourceTask,
    sinks: Vec<(String, JoinHandle<Result<(), PipelineError>>)>,
    subtask_inputs: Vec<crossbeam_channel::Receiver<super::subtask::SubtaskInput>>,
    metrics: Arc<RunMetrics>,
    progress: Arc<SourceProgress>,
}

impl Pipeline {
    /// Loads the plugin, opens the source and sinks, instantiates and opens
    /// one plugin instance per subtask. `started` is when the user asked.
    pub fn start(
        engine: &Engine,
        spec: &PipelineSpec,
        component: &[u8],
        started: Instant,
    ) -> Result<Self, PipelineError> {
        let plugin = engine.load::<SubtaskHost>(component)?;
        let source = connectors::open_source(&spec.source)?;
        let metrics = Arc::new(RunMetrics::default());

        let mut senders: FxHashMap<String, Vec<_>> = FxHashMap::default();
        let mut opened = Vec::new();
        for sink_spec in &spec.sinks {
            opened.push((
                sink_spec.output().to_owned(),
                connectors::open_sink(sink_spec)?,
            ));
        }
        let mut sinks = Vec::new();
        for (output, mut sink) in opened {
            let (tx, rx) = bounded::<Vec<OutputRecord>>(SINK_QUEUE);
            senders.entry(output.clone()).or_default().push(tx);
            let name = format!("weir-sink-{output}");
            let handle = std::thread::Builder::new()
                .name(name)
                .spawn(move || -> Result<(), PipelineError> {
                    for batch in rx {
                        sink.write(&batch)?;
                    }
                    sink.flush()?;
                    Ok(())
                })
                .map_err(PipelineError::Spawn)?;
            sinks.push((output, handle));
        }
        let router = OutputRouter::new(senders);

        let config = Arc::new(SubtaskConfig {
            plugin_config: spec.plugin.config.to_string(),
            memory_bytes: (spec.limits.memory_mb as usize) << 20,
            call_timeout_ms: spec.limits.call_timeout_ms,
            on_error: spec.on_error,
        });
        let parallelism = spec.parallelism as usize;
        let mut subtasks = Vec::with_capacity(parallelism);
        let mut inputs = Vec::with_capacity(parallelism);
        let mut subtask_inputs = Vec::with_capacity(parallelism);
        for index in 0..parallelism {
            let backend: Box<dyn KeyedStateBackend> = match spec.state.backend {
                StateBackendKind::Memory => Box::new(MemoryBackend::default()),
            };
            let host = SubtaskHost::new(spec.name.clone(), index, backend);
            subtasks.push(Subtask::start(
                index,
                plugin.clone(),
                host,
                config.clone(),
                router.clone(),
                metrics.clone(),
            )?);
            let (tx, rx) = bounded(SUBTASK_QUEUE);
            inputs.push(tx);
            subtask_inputs.push(rx);
        }

        let event_time = spec.event_time.as_ref();
        let watermarks = WatermarkTracker::new(
            source.splits(),
            event_time.map_or(0, |et| et.max_out_of_orderness_ms),
            event_time.and_then(|et| et.idle_timeout_ms),
        );
        let progress = Arc::new(SourceProgress::default());
        let source = SourceTask {
            source,
            timestamps: spec.timestamp_source(),
            keys: spec.key_source(),
            watermarks,
            subtasks: inputs,
            router,
            metrics: metrics.clone(),
            progress: progress.clone(),
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
        })
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
        } = self;
        let run_started = Instant::now();
        let mut workers: Vec<JoinHandle<Result<SubtaskReport, PipelineError>>> = Vec::new();
        for (subtask, input) in subtasks.into_iter().zip(subtask_inputs) {
            let name = format!("weir-{}-{}", spec.name, workers.len());
            workers.push(
                std::thread::Builder::new()
                    .name(name)
                    .spawn(move || subtask.run(input))
                    .map_err(PipelineError::Spawn)?,
            );
        }
        let source_handle = std::thread::Builder::new()
            .name(format!("weir-{}-source", spec.name))
            .spawn(move || source.run())
            .map_err(PipelineError::Spawn)?;

        while !source_handle.is_finished() || workers.iter().any(|w| !w.is_finished()) {
            on_tick(&metrics, &progress);
            std::thread::sleep(Duration::from_millis(100));
        }
        on_tick(&metrics, &progress);

        // Join everything, then report the root cause: a sink's own error
        // before the "sink closed" its producers saw, a subtask's before the
        // source's.
        let source_result = join(source_handle);
        let mut reports = Vec::new();
        let mut subtask_error = None;
        for worker in workers {
            match join(worker) {
                Ok(report) => reports.push(report),
                Err(e) => {
                    subtask_error.get_or_insert(e);
                }
            }
        }
        let mut sink_error = None;
        for (output, handle) in sinks {
            if let Err(e) = join(handle) {
                tracing::error!(output, "sink failed: {e}");
                sink_error.get_or_insert(e);
            }
        }
        if let Some(e) = sink_error.or(subtask_error) {
            return Err(e);
        }
        source_result?;

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
        })
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
