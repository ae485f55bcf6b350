//! The source task: read records, assign event time, key them, and route
//! each to the subtask that owns its key group, with the watermark after
//! every batch.
//!
//! Batches are cut every `BATCH` source records, whatever their speed, so the
//! watermark sequence each subtask sees, and thus which events are late, is a
//! function of the input alone. A record whose key or timestamp cannot be
//! read goes to `dead-letter` with the reason; it is never dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_channel::Sender;
use serde_json::json;

use super::json_field::{self, JsonPointer};
use super::key_groups::{key_group, subtask_of};
use super::outputs::{OutputRouter, RunMetrics};
use super::subtask::SubtaskInput;
use super::watermarks::WatermarkTracker;
use super::{PipelineError, now_ms};
use crate::connectors::{OutputRecord, Source, SourceRecord};
use crate::engine::Event;
use crate::spec::{DEAD_LETTER_OUTPUT, KeySource, TimestampSource};

/// Source records per batch (and per watermark update).
pub(crate) const BATCH: usize = 1024;

/// Source progress, read by the progress bar.
#[derive(Default)]
pub struct SourceProgress {
    pub done: AtomicU64,
    pub total: AtomicU64,
}

pub(crate) struct SourceTask {
    pub(crate) source: Box<dyn Source>,
    pub(crate) timestamps: Option<TimestampSource>,
    pub(crate) keys: KeySource,
    pub(crate) watermarks: WatermarkTracker,
    pub(crate) subtasks: Vec<Sender<SubtaskInput>>,
    pub(crate) router: OutputRouter,
    pub(crate) metrics: Arc<RunMetrics>,
    pub(crate) progress: Arc<SourceProgress>,
}

/// Why a record could not be keyed or timed.
struct Unroutable {
    error: &'static str,
    reason: String,
}

impl SourceTask {
    pub(crate) fn run(mut self) -> Result<(), PipelineError> {
        let parallelism = self.subtasks.len();
        let mut records: Vec<SourceRecord> = Vec::with_capacity(BATCH);
        let mut watermark = i64::MIN;
        loop {
            records.clear();
            let more = self.source.read_batch(&mut records, BATCH)?;
            let now = now_ms();
            let mut batches: Vec<(Vec<Event>, Vec<u16>)> = (0..parallelism)
                .map(|_| {
                    (
                        Vec::with_capacity(BATCH / parallelism + 16),
                        Vec::with_capacity(BATCH / parallelism + 16),
                    )
                })
                .collect();
            let mut dead = Vec::new();
            self.metrics
                .events_in
                .fetch_add(records.len() as u64, Ordering::Relaxed);
            for record in records.drain(..) {
                match self.route(&record, now) {
                    Ok((key, timestamp)) => {
                        if let Some(ts) = timestamp {
                            self.watermarks.observe(record.split, ts, now);
                        }
                        let kg = key_group(&key);
                        let (events, groups) = &mut batches[subtask_of(kg, parallelism as u32)];
                        events.push(Event {
                            key: Some(key),
                            value: record.value,
                            timestamp,
                            headers: record.headers,
                        });
                        groups.push(kg);
                    }
                    Err(why) => dead.push(OutputRecord {
                        value: json!({
                            "error": why.error,
                            "reason": why.reason,
                            "value": String::from_utf8_lossy(&record.value),
                        })
                        .to_string()
                        .into_bytes(),
                        key: record.key,
                        timestamp: record.timestamp,
                    }),
                }
            }
            if !dead.is_empty() {
                for _ in &dead {
                    self.metrics.add_error("unroutable");
                }
                self.router
                    .send(&self.metrics, DEAD_LETTER_OUTPUT, dead)
                    .map_err(|_| PipelineError::SinkClosed)?;
            }
            self.watermarks.check_idle(now);
            let next_watermark = self.watermarks.current();
            for ((events, key_groups), subtask) in batches.into_iter().zip(&self.subtasks) {
                if events.is_empty() && next_watermark == watermark {
                    continue;
                }
                let message = SubtaskInput::Batch {
                    events,
                    key_groups,
                    watermark: next_watermark,
                };
                // A subtask that hung up has failed; it reports why when joined.
                if subtask.send(message).is_err() {
                    return Ok(());
                }
            }
            watermark = next_watermark;
            let (done, total) = self.source.progress();
            self.progress.done.store(done, Ordering::Relaxed);
            self.progress
                .total
                .store(total.unwrap_or(0), Ordering::Relaxed);
            if !more {
                break;
            }
        }
        for subtask in &self.subtasks {
            let _ = subtask.send(SubtaskInput::End);
        }
        Ok(())
    }

    /// The key and event time of a record.
    fn route(&self, record: &SourceRecord, now: i64) -> Result<(Vec<u8>, Option<i64>), Unroutable> {
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
            KeySource::RecordKey => record.key.clone().ok_or_else(|| Unroutable {
                error: "key",
                reason: "key_by.field = \"record-key\" but the record has no key".into(),
            })?,
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

fn read_key(pointer: &JsonPointer, value: &[u8]) -> Result<Vec<u8>, Unroutable> {
    let unroutable = |reason: String| Unroutable {
        error: "key",
        reason,
    };
    match pointer.lookup(value) {
        Ok(Some(raw)) => Ok(json_field::key_bytes(raw).into_owned()),
        Ok(None) => Err(unroutable(format!(
            "key_by.field {pointer}: missing in the event"
        ))),
        Err(e) => Err(unroutable(format!(
            "key_by.field {pointer}: the event is not valid JSON: {e}"
        ))),
    }
}
