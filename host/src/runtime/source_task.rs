//! The source task: read records, assign event time, key them, and route
//! each to the subtask that owns its key group, with the watermark after
//! every batch.
//!
//! Batches are cut every `BATCH` source records, whatever their speed, so the
//! watermark sequence each subtask sees, and thus which events are late, is a
//! function of the input alone. A record whose key or timestamp cannot be
//! read goes to `dead-letter` with the reason; it is never dropped.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use std::path::PathBuf;

use crossbeam_channel::{Receiver, Sender};
use serde_json::json;

use super::coordinator::Ack;
use super::json_field::{self, JsonPointer};
use super::key_groups::{key_group, subtask_of};
use super::liveness::{Activity, Liveness, NotSent, Step};
use super::outputs::{OutputRouter, RunMetrics};
use super::subtask::{KeyStateView, SubtaskInput, SwapDecision, SwapStep};
use super::subtask_host::SubtaskHost;
use super::watermarks::WatermarkTracker;
use super::{PipelineError, now_ms};
use crate::checkpoint::{CheckpointStore, SourceCheckpoint};
use crate::connectors::{Origin, OutputRecord, Source, SourcePosition, SourceRecord};
use crate::engine::{EventBlockBuilder, Plugin};
use crate::spec::{DEAD_LETTER_OUTPUT, KeySource, TimestampSource};

/// Source records per batch (and per watermark update).
pub(crate) const BATCH: usize = 1024;

/// Source progress, read by the progress bar and the status route.
pub struct SourceProgress {
    pub done: AtomicU64,
    pub total: AtomicU64,
    /// The watermark sent with the last batch (`i64::MIN` before any).
    pub watermark: AtomicI64,
}

impl Default for SourceProgress {
    fn default() -> Self {
        Self {
            done: AtomicU64::new(0),
            total: AtomicU64::new(0),
            watermark: AtomicI64::new(i64::MIN),
        }
    }
}

/// What the source needs to start checkpoints.
pub(crate) struct SourceCheckpointing {
    pub(crate) store: CheckpointStore,
    pub(crate) next_id: u64,
    /// Requests from the coordinator.
    pub(crate) trigger: Receiver<()>,
    pub(crate) acks: Sender<Ack>,
    /// Outcomes of checkpoints from the coordinator: `Ok(id)` complete,
    /// `Err(id)` abandoned.
    pub(crate) outcomes: Receiver<Result<u64, u64>>,
    /// Checkpoints started and not yet complete, with their positions.
    pub(crate) started: Vec<(u64, SourcePosition)>,
}

/// How long the source waits for its last checkpoint to complete, to tell
/// a source that mirrors checkpoints (Kafka commits its offsets then). It
/// waits this long when the checkpoint can neither complete nor fail before
/// the source task ends: a subtask or sink that failed with it in flight.
const LAST_CHECKPOINT_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

pub(crate) struct SourceTask {
    pub(crate) source: Box<dyn Source>,
    /// Records read since the pipeline first started (across restores).
    pub(crate) records_read: u64,
    /// Stop (with a checkpoint, without draining) after this many records.
    pub(crate) stop_after: Option<u64>,
    pub(crate) checkpointing: Option<SourceCheckpointing>,
    /// Swaps, state queries and stops from the pipeline's control, served
    /// at the next batch boundary.
    pub(crate) commands: Receiver<SourceCommand>,
    pub(crate) timestamps: Option<TimestampSource>,
    pub(crate) keys: KeySource,
    pub(crate) watermarks: WatermarkTracker,
    pub(crate) subtasks: Vec<Sender<SubtaskInput>>,
    pub(crate) router: OutputRouter,
    pub(crate) metrics: Arc<RunMetrics>,
    pub(crate) progress: Arc<SourceProgress>,
    pub(crate) liveness: Arc<Liveness>,
    /// What the source is doing, for the pipeline's watchdog.
    pub(crate) activity: Arc<Activity>,
}

/// What the pipeline's control asks of the source task.
pub(crate) enum SourceCommand {
    Swap(SwapRequest),
    /// Read one key's state in the subtask that owns it.
    Query {
        key: Vec<u8>,
        reply: Sender<Result<KeyStateView, String>>,
    },
    /// Stop at a checkpoint, without draining.
    Stop,
}

/// How long an unbounded source with nothing to read waits for input before
/// the task looks at its commands again.
const IDLE_WAIT: std::time::Duration = std::time::Duration::from_millis(5);

/// A swap on its way to the subtasks; each reports on `steps` and, in a
/// two-phase swap, takes one decision from `decision`.
pub(crate) struct SwapRequest {
    pub(crate) plugin: Plugin<SubtaskHost>,
    pub(crate) config: Arc<str>,
    pub(crate) steps: Sender<SwapStep>,
    pub(crate) decision: Option<Receiver<SwapDecision>>,
}

/// Whether a checkpoint is the source's last, and why.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Last {
    No,
    EndOfInput,
    Stop,
}

/// One subtask's part of a batch.
struct Routed {
    events: EventBlockBuilder,
    key_groups: Vec<u16>,
    origins: Vec<Origin>,
}

impl Routed {
    fn with_capacity(n: usize) -> Self {
        Self {
            events: EventBlockBuilder::with_capacity(n),
            key_groups: Vec::with_capacity(n),
            origins: Vec::with_capacity(n),
        }
    }
}

/// Why a record could not be keyed or timed.
struct Unroutable {
    error: &'static str,
    reason: String,
}

impl SourceTask {
    /// Reads to the end of input; `Ok(true)` if it stopped at `stop_after`.
    pub(crate) fn run(mut self) -> Result<bool, PipelineError> {
        let parallelism = self.subtasks.len();
        let mut records: Vec<SourceRecord> = Vec::with_capacity(BATCH);
        let mut watermark = self.watermarks.current();
        let split_names = self.source.split_names();
        let mut finished = Vec::new();
        let mut rejected = Vec::new();
        loop {
            self.activity.set(Step::Idle);
            if let Some(reason) = self.liveness.reason() {
                return Err(PipelineError::Unresponsive(reason.to_owned()));
            }
            self.serve_outcomes(false);
            if self
                .stop_after
                .is_some_and(|stop| self.records_read >= stop)
            {
                self.stop()?;
                return Ok(true);
            }
            while let Ok(command) = self.commands.try_recv() {
                match command {
                    SourceCommand::Swap(swap) => {
                        for subtask in &self.subtasks {
                            let message = SubtaskInput::Swap {
                                plugin: swap.plugin.clone(),
                                config: swap.config.clone(),
                                steps: swap.steps.clone(),
                                decision: swap.decision.clone(),
                            };
                            if self.deliver(subtask, message).is_err() {
                                return Ok(false);
                            }
                        }
                    }
                    SourceCommand::Query { key, reply } => {
                        let kg = key_group(&key);
                        let message = SubtaskInput::Query {
                            key,
                            key_group: kg,
                            reply,
                        };
                        let to = &self.subtasks[subtask_of(kg, parallelism as u32)];
                        if self.deliver(to, message).is_err() {
                            return Ok(false);
                        }
                    }
                    SourceCommand::Stop => {
                        // Without checkpoints there is nothing to stop at:
                        // the subtasks end when this task drops their inputs.
                        if self.checkpointing.is_some() {
                            self.stop()?;
                        }
                        return Ok(true);
                    }
                }
            }
            let requested = self
                .checkpointing
                .as_ref()
                .is_some_and(|c| c.trigger.try_recv().is_ok());
            if requested
                && !self.checkpoint_barrier(Last::No, |id, dir| SubtaskInput::Barrier {
                    id,
                    dir,
                    stop: false,
                })?
            {
                return Ok(false);
            }
            records.clear();
            // Batches end at multiples of BATCH from the very first record,
            // so a restored run sees the watermarks an uninterrupted one does.
            let mut max = BATCH - (self.records_read % BATCH as u64) as usize;
            if let Some(stop) = self.stop_after {
                max = max.min((stop - self.records_read) as usize);
            }
            self.activity.set(Step::Reading);
            let more = self.source.read_batch(&mut records, max)?;
            if records.is_empty() && more {
                // An unbounded source with nothing new: wait a little, then
                // serve commands and let idle splits release the watermark.
                self.source.wait_for_input(IDLE_WAIT);
            }
            self.activity.set(Step::Idle);
            self.records_read += records.len() as u64;
            let now = now_ms();
            let mut batches: Vec<Routed> = (0..parallelism)
                .map(|_| Routed::with_capacity(BATCH / parallelism + 16))
                .collect();
            let mut dead = Vec::new();
            self.source.take_rejected(&mut rejected);
            let rejects = rejected.len();
            for r in rejected.drain(..) {
                self.metrics.add_error(r.error);
                let split = split_names.get(r.split).map_or("?", String::as_str);
                let origin = Origin::Record {
                    split: r.split as u32,
                    offset: r.offset,
                    index: 0,
                };
                dead.push(OutputRecord {
                    value: json!({
                        "error": r.error,
                        "reason": format!("{} (source split {split}, offset {})", r.reason, r.offset),
                        "split": split,
                        "offset": r.offset,
                        "value": String::from_utf8_lossy(&r.prefix),
                    })
                    .to_string()
                    .into_bytes(),
                    key: None,
                    timestamp: None,
                    origin,
                });
            }
            self.metrics
                .events_in
                .fetch_add(records.len() as u64, Ordering::Relaxed);
            for mut record in records.drain(..) {
                let headers = std::mem::take(&mut record.headers);
                let routed = self.route(&record, now).and_then(|(key, timestamp)| {
                    let kg = key_group(&key);
                    let routed = &mut batches[subtask_of(kg, parallelism as u32)];
                    routed
                        .events
                        .push(Some(&key), &record.value, timestamp, headers)
                        .map_err(|e| Unroutable {
                            error: "too-large",
                            reason: e.to_string(),
                        })?;
                    routed.key_groups.push(kg);
                    routed.origins.push(Origin::Record {
                        split: record.split as u32,
                        offset: record.offset,
                        index: 0,
                    });
                    Ok(timestamp)
                });
                match routed {
                    Ok(timestamp) => {
                        if let Some(ts) = timestamp {
                            self.watermarks.observe(record.split, ts, now);
                        }
                    }
                    Err(why) => {
                        let split = split_names.get(record.split).map_or("?", String::as_str);
                        dead.push(OutputRecord {
                            value: json!({
                                "error": why.error,
                                "reason": format!(
                                    "{} (source split {split}, offset {})",
                                    why.reason, record.offset
                                ),
                                "split": split,
                                "offset": record.offset,
                                "value": String::from_utf8_lossy(&record.value),
                            })
                            .to_string()
                            .into_bytes(),
                            key: record.key,
                            timestamp: record.timestamp,
                            origin: Origin::Record {
                                split: record.split as u32,
                                offset: record.offset,
                                index: 0,
                            },
                        })
                    }
                }
            }
            if !dead.is_empty() {
                for _ in rejects..dead.len() {
                    self.metrics.add_error("unroutable");
                }
                self.router
                    .send(&self.metrics, DEAD_LETTER_OUTPUT, dead)
                    .map_err(|_| PipelineError::SinkClosed)?;
            }
            self.source.take_finished_splits(&mut finished);
            for split in finished.drain(..) {
                self.watermarks.finish_split(split);
            }
            self.watermarks.check_idle(now);
            let next_watermark = self.watermarks.current();
            for (routed, subtask) in batches.into_iter().zip(&self.subtasks) {
                if routed.events.is_empty() && next_watermark == watermark {
                    continue;
                }
                let message = SubtaskInput::Batch {
                    events: routed.events.build(),
                    key_groups: routed.key_groups,
                    origins: routed.origins,
                    watermark: next_watermark,
                };
                // A subtask that hung up has failed; it reports why when joined.
                if self.deliver(subtask, message).is_err() {
                    return Ok(false);
                }
            }
            watermark = next_watermark;
            self.progress.watermark.store(watermark, Ordering::Relaxed);
            let (done, total) = self.source.progress();
            self.progress.done.store(done, Ordering::Relaxed);
            self.progress
                .total
                .store(total.unwrap_or(0), Ordering::Relaxed);
            if !more {
                break;
            }
        }
        if self.checkpointing.is_some() {
            // The final checkpoint commits the sinks' last epoch.
            self.checkpoint_barrier(Last::EndOfInput, |id, dir| SubtaskInput::End {
                checkpoint: Some((id, dir)),
            })?;
            self.serve_outcomes(true);
        } else {
            for subtask in &self.subtasks {
                let _ = self.deliver(subtask, SubtaskInput::End { checkpoint: None });
            }
        }
        Ok(false)
    }

    /// Sends to a subtask, waiting while its queue is full unless the
    /// pipeline is aborted. `Err`: the subtask is gone or the pipeline
    /// aborted; either way this task ends.
    fn deliver(&self, to: &Sender<SubtaskInput>, message: SubtaskInput) -> Result<(), NotSent> {
        self.liveness.send(to, message, &self.activity)
    }

    /// Stops without draining: a last checkpoint, then every task ends.
    fn stop(&mut self) -> Result<(), PipelineError> {
        self.checkpoint_barrier(Last::Stop, |id, dir| SubtaskInput::Barrier {
            id,
            dir,
            stop: true,
        })?;
        self.serve_outcomes(true);
        Ok(())
    }

    /// Tells the source about completed checkpoints. With `to_the_last`,
    /// waits until every started checkpoint has an outcome (the coordinator
    /// reports abandoned ones too) or the coordinator is gone.
    fn serve_outcomes(&mut self, to_the_last: bool) {
        let Some(c) = self.checkpointing.as_mut() else {
            return;
        };
        // Only a source that mirrors checkpoints needs the last outcome.
        let to_the_last = to_the_last && self.source.mirrors_checkpoints();
        let deadline = std::time::Instant::now() + LAST_CHECKPOINT_WAIT;
        loop {
            let outcome = if to_the_last && !c.started.is_empty() {
                match c.outcomes.recv_deadline(deadline) {
                    Ok(outcome) => outcome,
                    Err(_) => return,
                }
            } else {
                match c.outcomes.try_recv() {
                    Ok(outcome) => outcome,
                    Err(_) => return,
                }
            };
            match outcome {
                Ok(id) => {
                    let done = c.started.iter().rposition(|(started, _)| *started <= id);
                    if let Some(at) = done {
                        let (_, position) = c.started.drain(..=at).next_back().expect("one");
                        if let Err(e) = self.source.checkpoint_complete(&position) {
                            tracing::warn!(checkpoint = id, "{e}");
                        }
                    }
                }
                Err(id) => c.started.retain(|(started, _)| *started != id),
            }
        }
    }

    /// Starts a checkpoint: records the position, then sends `message` (a
    /// barrier, or the end of input carrying one) to every subtask and a
    /// barrier to every sink. Returns false if a subtask has hung up.
    fn checkpoint_barrier(
        &mut self,
        last: Last,
        message: impl Fn(u64, Arc<PathBuf>) -> SubtaskInput,
    ) -> Result<bool, PipelineError> {
        let Some(c) = self.checkpointing.as_mut() else {
            return Ok(true);
        };
        let id = c.next_id;
        c.next_id += 1;
        let dir = match c.store.in_progress_dir(id) {
            Ok(dir) => Arc::new(dir),
            // A periodic checkpoint can be skipped; the last one cannot.
            Err(e) if last == Last::No => {
                tracing::warn!(checkpoint = id, "checkpoint skipped: {e}");
                return Ok(true);
            }
            Err(e) => {
                return Err(PipelineError::Checkpoint(format!(
                    "cannot write the last checkpoint: {e}"
                )));
            }
        };
        let position = self.source.position();
        c.started.push((id, position.clone()));
        let _ = c.acks.send(Ack::Source {
            id,
            created_ms: now_ms(),
            source: SourceCheckpoint {
                position,
                records: self.records_read,
                watermarks: self.watermarks.snapshot(),
            },
            finished: last == Last::EndOfInput,
            last: last != Last::No,
        });
        for subtask in &self.subtasks {
            if self.deliver(subtask, message(id, dir.clone())).is_err() {
                return Ok(false);
            }
        }
        self.router
            .barrier(id)
            .map_err(|_| PipelineError::SinkClosed)?;
        Ok(true)
    }

    /// The key and event time of a record.
    fn route<'r>(
        &self,
        record: &'r SourceRecord,
        now: i64,
    ) -> Result<(Cow<'r, [u8]>, Option<i64>), Unroutable> {
        let timestamp = match &self.timestamps {
            None => None,
            Some(TimestampSource::Processing) => Some(now),
            Some(TimestampSource::Record) => Some(record.timestamp.ok_or_else(|| Unroutable {
                error: "timestamp",
                reason: "event_time.field = \"record\" but the record has no timestamp".into(),
            })?),
            Some(TimestampSource::Field(pointer)) => Some(read_timestamp(pointer, &record.value)?),
        };
        let key = match &self.keys {
            KeySource::RecordKey => {
                record
                    .key
                    .as_deref()
                    .map(Cow::Borrowed)
                    .ok_or_else(|| Unroutable {
                        error: "key",
                        reason: "key_by.field = \"record-key\" but the record has no key".into(),
                    })?
            }
            KeySource::Field(pointer) => read_key(pointer, &record.value)?,
        };
        Ok((key, timestamp))
    }
}

fn read_timestamp(pointer: &JsonPointer, value: &[u8]) -> Result<i64, Unroutable> {
    let unroutable = |reason: String| Unroutable {
        error: "timestamp",
        reason,
    };
    match pointer.lookup(value) {
        Ok(Some(raw)) => json_field::parse_i64(raw).ok_or_else(|| {
            unroutable(format!(
                "event_time.field {pointer}: {} is not an integer timestamp in ms",
                String::from_utf8_lossy(raw)
            ))
        }),
        Ok(None) => Err(unroutable(format!(
            "event_time.field {pointer}: missing in the event"
        ))),
        Err(e) => Err(unroutable(format!(
            "event_time.field {pointer}: the event is not valid JSON: {e}"
        ))),
    }
}

fn read_key<'v>(pointer: &JsonPointer, value: &'v [u8]) -> Result<Cow<'v, [u8]>, Unroutable> {
    let unroutable = |reason: String| Unroutable {
        error: "key",
        reason,
    };
    match pointer.lookup(value) {
        Ok(Some(raw)) => Ok(json_field::key_bytes(raw)),
        Ok(None) => Err(unroutable(format!(
            "key_by.field {pointer}: missing in the event"
        ))),
        Err(e) => Err(unroutable(format!(
            "key_by.field {pointer}: the event is not valid JSON: {e}"
        ))),
    }
}
