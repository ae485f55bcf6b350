//! The Kafka source: every partition of the spec's topics, assigned to one
//! consumer, one split each (`topic/partition`, sorted), its position the
//! next offset to read.
//!
//! Offsets live in Weir's checkpoints: the consumer never commits on its
//! own, and a restore seeks every partition to its checkpointed offset.
//! After a checkpoint completes, its offsets are also committed to the group
//! (asynchronously), so that lag tools see how far the pipeline is; nothing
//! reads them back. Start offsets are resolved to numbers at open, so a
//! position is always an offset, never "the beginning".
//!
//! A bounded source reads each partition up to the high watermark it saw at
//! open and then reports the partition finished (it stops holding the
//! watermark back); the source ends when every partition has. The end is
//! the larger of what ListOffsets said at open and the high watermark of
//! the first fetch response: tansu 0.6 answers ListOffsets(latest) with the
//! newest batch's base offset + 1, short of the end of the log.

use std::mem::ManuallyDrop;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use rustc_hash::FxHashMap;

use super::{METADATA_TIMEOUT, client_config, kafka_err};
use crate::connectors::{ConnectorError, Source, SourcePosition, SourceRecord, SplitPosition};
use crate::spec::{KafkaSourceSpec, KafkaStart};

/// At most one warning about consumer errors (the broker is away, say:
/// librdkafka reconnects on its own) per this long.
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(5);

struct Partition {
    topic: String,
    partition: i32,
    /// `topic/partition`.
    name: String,
    /// The offset of the next record to hand out.
    next: u64,
    /// Where the partition started (for progress).
    first: u64,
    /// The partition's oldest offset at open.
    low: u64,
    /// Where the consumer fetches from: `next`, or before it after a seek
    /// (`resume_overlap`); records before `next` are skipped.
    fetch_from: u64,
    /// Bounded: the high watermark at open.
    end: Option<u64>,
    /// Bounded: `end` has been checked against a fetch response.
    end_confirmed: bool,
    done: bool,
}

pub struct KafkaSource {
    /// Dropped on a thread of its own, within a time limit (see `Drop`).
    consumer: ManuallyDrop<BaseConsumer>,
    partitions: Vec<Partition>,
    /// Topic → split index per partition number.
    index: FxHashMap<String, Vec<Option<usize>>>,
    assigned: bool,
    /// A record `wait_for_input` received, handed out by the next batch.
    pending: Option<(usize, SourceRecord)>,
    finished: Vec<usize>,
    records: u64,
    last_error_log: Option<Instant>,
    resume_overlap: u64,
    /// Whether completed checkpoints' offsets are committed to the group
    /// here (not when a group member elsewhere owns the assignment).
    commits: bool,
    /// Why a partition went back past where it was fetched from (its log
    /// was truncated or recreated): the source fails rather than skip.
    rewound: Option<String>,
}

impl KafkaSource {
    /// Connects, finds the partitions of the topics, and resolves where each
    /// starts (and, bounded, ends). Fails if a topic does not exist or the
    /// brokers cannot be reached.
    pub fn open(spec: &KafkaSourceSpec) -> Result<Self, ConnectorError> {
        let consumer: BaseConsumer = client_config(
            &spec.brokers,
            &spec.properties,
            &[
                ("group.id", &spec.group),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                // A checkpointed offset the broker no longer has (retention
                // deleted it) resumes at the oldest record left, never at
                // the newest: skipping records silently is loss.
                ("auto.offset.reset", "earliest"),
                ("enable.partition.eof", "false"),
            ],
        )?
        .create(
            rdkafka::consumer::DefaultConsumerContext,
            "creating the consumer",
        )?;
        let mut partitions = Vec::new();
        for topic in &spec.topics {
            let metadata = consumer
                .fetch_metadata(Some(topic), METADATA_TIMEOUT)
                .map_err(kafka_err(format!(
                    "reading the metadata of topic {topic:?} from {}",
                    spec.brokers
                )))?;
            let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
                return Err(no_topic(topic, &spec.brokers));
            };
            if found.error().is_some() || found.partitions().is_empty() {
                return Err(no_topic(topic, &spec.brokers));
            }
            let mut numbers: Vec<i32> = found.partitions().iter().map(|p| p.id()).collect();
            numbers.sort_unstable();
            if let Some((only_topic, only)) = &spec.only_partition {
                numbers.retain(|p| only_topic == topic && p == only);
                if only_topic == topic && numbers.is_empty() {
                    return Err(no_topic(&format!("{topic}/{only}"), &spec.brokers));
                }
            }
            for partition in numbers {
                let (low, high) = consumer
                    .fetch_watermarks(topic, partition, METADATA_TIMEOUT)
                    .map_err(kafka_err(format!(
                        "reading the offsets of {topic}/{partition}"
                    )))?;
                let (low, high) = (low.max(0) as u64, high.max(0) as u64);
                let start = match spec.start {
                    KafkaStart::Earliest => low,
                    KafkaStart::Latest => high,
                    KafkaStart::Timestamp(ms) => {
                        offset_for_time(&consumer, topic, partition, ms)?.unwrap_or(high)
                    }
                };
                partitions.push(Partition {
                    topic: topic.clone(),
                    partition,
                    name: format!("{topic}/{partition}"),
                    next: start,
                    first: start,
                    low,
                    fetch_from: start,
                    end: spec.bounded.then_some(high),
                    end_confirmed: false,
                    done: false,
                });
            }
        }
        let mut index: FxHashMap<String, Vec<Option<usize>>> = FxHashMap::default();
        for (i, p) in partitions.iter().enumerate() {
            let slots = index.entry(p.topic.clone()).or_default();
            let at = p.partition as usize;
            if slots.len() <= at {
                slots.resize(at + 1, None);
            }
            slots[at] = Some(i);
        }
        let mut source = Self {
            consumer: ManuallyDrop::new(consumer),
            partitions,
            index,
            assigned: false,
            pending: None,
            finished: Vec::new(),
            records: 0,
            last_error_log: None,
            resume_overlap: spec.resume_overlap,
            commits: spec.only_partition.is_none(),
            rewound: None,
        };
        source.mark_done();
        Ok(source)
    }

    fn fail_if_rewound(&mut self) -> Result<(), ConnectorError> {
        match self.rewound.take() {
            Some(reason) => Err(ConnectorError::Seek(reason)),
            None => Ok(()),
        }
    }

    /// Marks bounded partitions that have reached their (confirmed) end.
    fn mark_done(&mut self) {
        for i in 0..self.partitions.len() {
            self.confirm_end(i);
            let p = &mut self.partitions[i];
            if !p.done && p.end_confirmed && p.end.is_some_and(|end| p.next >= end) {
                p.done = true;
                self.finished.push(i);
            }
        }
    }

    /// Raises a bounded partition's end to the high watermark of the first
    /// fetch response, once there is one.
    fn confirm_end(&mut self, i: usize) {
        let p = &self.partitions[i];
        if p.end_confirmed || p.end.is_none() || !self.assigned {
            return;
        }
        if let Some(high) = self.fetched_high_watermark(p) {
            let p = &mut self.partitions[i];
            p.end = p.end.map(|end| end.max(high));
            p.end_confirmed = true;
        }
    }

    /// The high watermark librdkafka has cached from the last fetch
    /// response of `p`, if one came.
    fn fetched_high_watermark(&self, p: &Partition) -> Option<u64> {
        let topic = std::ffi::CString::new(p.topic.as_str()).ok()?;
        let (mut low, mut high) = (-1i64, -1i64);
        // SAFETY: the client handle is valid while `self.consumer` lives,
        // `topic` is a NUL-terminated string that outlives the call, and
        // `low`/`high` are valid for writes. The call only reads
        // librdkafka's local cache (no network, no callbacks).
        let err = unsafe {
            rdkafka::bindings::rd_kafka_get_watermark_offsets(
                self.consumer.client().native_ptr(),
                topic.as_ptr(),
                p.partition,
                &mut low,
                &mut high,
            )
        };
        let ok = err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR;
        u64::try_from(high).ok().filter(|_| ok)
    }

    fn all_done(&self) -> bool {
        self.partitions.iter().all(|p| p.done)
    }

    /// Assigns the partitions still to read, each at its next offset.
    fn assign(&mut self) -> Result<(), ConnectorError> {
        if self.assigned {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for p in self.partitions.iter().filter(|p| !p.done) {
            tpl.add_partition_offset(&p.topic, p.partition, Offset::Offset(p.fetch_from as i64))
                .map_err(kafka_err(format!("assigning {}", p.name)))?;
        }
        self.consumer
            .assign(&tpl)
            .map_err(kafka_err("assigning the partitions"))?;
        self.assigned = true;
        Ok(())
    }

    /// The split a message belongs to and the record it makes, unless it is
    /// not to be read (its partition is done, or it lies past a bounded end).
    /// `Err`: the partition went back past where it was fetched from.
    fn accept(&self, m: &BorrowedMessage<'_>) -> Result<Option<(usize, SourceRecord)>, String> {
        let split = self
            .index
            .get(m.topic())
            .and_then(|slots| slots.get(usize::try_from(m.partition()).ok()?).copied())
            .flatten();
        let (Some(split), Ok(offset)) = (split, u64::try_from(m.offset())) else {
            return Ok(None);
        };
        let p = &self.partitions[split];
        // librdkafka never hands out a record below the offset it was told
        // to fetch from, unless the partition no longer has that offset and
        // `auto.offset.reset` moved it back: the records between are not
        // the ones the checkpoint counted, and skipping them would be loss.
        if offset < p.fetch_from && !p.done {
            return Err(format!(
                "partition {} went back from offset {} to {offset}: its log was truncated \
                 or the topic recreated since the checkpoint (start over with --fresh)",
                p.name, p.fetch_from
            ));
        }
        if p.done || offset < p.next {
            return Ok(None);
        }
        let headers = record_headers(m);
        Ok(Some((
            split,
            SourceRecord {
                key: m.key().map(<[u8]>::to_vec),
                value: m.payload().unwrap_or_default().to_vec(),
                timestamp: m.timestamp().to_millis(),
                headers,
                split,
                offset,
            },
        )))
    }

    /// Hands a record out (unless it lies past a bounded end): from here
    /// on the position is past it. Returns whether it was handed out.
    fn emit(&mut self, split: usize, record: SourceRecord, out: &mut Vec<SourceRecord>) -> bool {
        self.confirm_end(split);
        let p = &mut self.partitions[split];
        let ended = |p: &Partition, at: u64| p.end_confirmed && p.end.is_some_and(|end| at >= end);
        if p.done || ended(p, record.offset) {
            if !p.done && ended(p, p.next) {
                p.done = true;
                self.finished.push(split);
            }
            return false;
        }
        p.next = record.offset + 1;
        if ended(p, p.next) {
            p.done = true;
            self.finished.push(split);
        }
        self.records += 1;
        out.push(record);
        true
    }

    /// A bounded partition whose last offsets are not records (transaction
    /// markers) never hands out its end: ask the consumer where it is.
    fn check_positions(&mut self) {
        if self.partitions.iter().all(|p| p.end.is_none() || p.done) {
            return;
        }
        self.mark_done();
        let Ok(positions) = self.consumer.position() else {
            return;
        };
        for (i, p) in self.partitions.iter_mut().enumerate() {
            if p.done || p.end.is_none() || !p.end_confirmed {
                continue;
            }
            let at = positions
                .find_partition(&p.topic, p.partition)
                .and_then(|e| e.offset().to_raw())
                .and_then(|o| u64::try_from(o).ok());
            if let (Some(at), Some(end)) = (at, p.end)
                && at >= end
                && at > p.next
            {
                p.next = end;
                p.done = true;
                self.finished.push(i);
            }
        }
    }

    fn log_error(&mut self, error: &rdkafka::error::KafkaError) {
        let now = Instant::now();
        if self
            .last_error_log
            .is_none_or(|last| now.duration_since(last) >= ERROR_LOG_INTERVAL)
        {
            self.last_error_log = Some(now);
            tracing::warn!("kafka consumer: {error} (librdkafka retries on its own)");
        }
    }
}

/// A record's headers. Names are bytes on the wire: one that is not UTF-8
/// is taken lossily, where rdkafka's `Headers::iter` would panic, and the
/// source would fail on the same record after every restart.
fn record_headers(m: &BorrowedMessage<'_>) -> Vec<(String, Vec<u8>)> {
    use rdkafka::bindings as rd;
    let mut headers: *mut rd::rd_kafka_headers_t = std::ptr::null_mut();
    // SAFETY: `m.ptr()` is a valid message while `m` lives; the call only
    // fills `headers` with a pointer owned by the message (or leaves it null).
    let err = unsafe { rd::rd_kafka_message_headers(m.ptr(), &mut headers) };
    if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || headers.is_null() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for idx in 0.. {
        let (mut name, mut value, mut size) = (std::ptr::null(), std::ptr::null(), 0usize);
        // SAFETY: `headers` belongs to the message, which outlives this
        // loop; the out-pointers are valid for writes. Past the last header
        // the call returns an error and writes nothing.
        let err =
            unsafe { rd::rd_kafka_header_get_all(headers, idx, &mut name, &mut value, &mut size) };
        if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
            break;
        }
        // SAFETY: librdkafka hands out a NUL-terminated name and `size`
        // value bytes (or a null value), both living as long as the message.
        let name = unsafe { std::ffi::CStr::from_ptr(name) };
        let value = if value.is_null() {
            Vec::new()
        } else {
            unsafe { std::slice::from_raw_parts(value.cast::<u8>(), size) }.to_vec()
        };
        out.push((name.to_string_lossy().into_owned(), value));
    }
    out
}

/// How long closing the consumer may hold up the end of a pipeline.
const CLOSE_LIMIT: Duration = Duration::from_secs(10);

impl Drop for KafkaSource {
    /// Closing a consumer waits for librdkafka to close, which can retry
    /// for ever while a group commit is outstanding and the broker does not
    /// answer (librdkafka issue #3740). Those commits only inform lag tools,
    /// so the source lets go after `CLOSE_LIMIT` and the close goes on in
    /// the background.
    fn drop(&mut self) {
        // SAFETY: `drop` runs once and nothing uses the field after this.
        let consumer = unsafe { ManuallyDrop::take(&mut self.consumer) };
        let (closed_tx, closed_rx) = std::sync::mpsc::channel::<()>();
        let closing = std::thread::Builder::new()
            .name("weir-kafka-close".into())
            .spawn(move || {
                drop(consumer);
                let _ = closed_tx.send(());
            });
        if closing.is_ok() && closed_rx.recv_timeout(CLOSE_LIMIT).is_err() {
            tracing::warn!(
                "the kafka consumer did not close within {CLOSE_LIMIT:?}; leaving it to close in the background"
            );
        }
    }
}

fn no_topic(topic: &str, brokers: &str) -> ConnectorError {
    ConnectorError::Open {
        path: format!("kafka topic {topic}").into(),
        source: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{brokers} has no topic {topic:?} (or it has no partitions); create it first"),
        ),
    }
}

/// The first offset of `topic/partition` at or after `ms`; `None` if every
/// record is older.
fn offset_for_time(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    ms: i64,
) -> Result<Option<u64>, ConnectorError> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(ms))
        .map_err(kafka_err(format!("looking up {topic}/{partition} at {ms}")))?;
    let found = consumer
        .offsets_for_times(tpl, METADATA_TIMEOUT)
        .map_err(kafka_err(format!("looking up {topic}/{partition} at {ms}")))?;
    Ok(found
        .find_partition(topic, partition)
        .and_then(|e| match e.offset() {
            Offset::Offset(o) => u64::try_from(o).ok(),
            _ => None,
        }))
}

impl Source for KafkaSource {
    fn read_batch(
        &mut self,
        out: &mut Vec<SourceRecord>,
        max: usize,
    ) -> Result<bool, ConnectorError> {
        self.assign()?;
        self.fail_if_rewound()?;
        let mut taken = 0;
        if max > 0
            && let Some((split, record)) = self.pending.take()
            && self.emit(split, record, out)
        {
            taken += 1;
        }
        while taken < max && !self.all_done() {
            match self.consumer.poll(Duration::ZERO) {
                None => {
                    self.check_positions();
                    break;
                }
                Some(Ok(m)) => {
                    let accepted = self.accept(&m);
                    drop(m);
                    match accepted {
                        Ok(Some((split, record))) => {
                            if self.emit(split, record, out) {
                                taken += 1;
                            }
                        }
                        Ok(None) => {}
                        Err(reason) => {
                            self.rewound.get_or_insert(reason);
                            break;
                        }
                    }
                }
                Some(Err(e)) => {
                    self.log_error(&e);
                    break;
                }
            }
        }
        self.fail_if_rewound()?;
        Ok(!self.all_done() || self.pending.is_some())
    }

    fn splits(&self) -> usize {
        self.partitions.len()
    }

    fn progress(&self) -> (u64, Option<u64>) {
        let bounded = self.partitions.iter().all(|p| p.end.is_some());
        if bounded {
            let done = self.partitions.iter().map(|p| p.next - p.first).sum();
            let total = self
                .partitions
                .iter()
                .map(|p| p.end.unwrap_or(p.first).saturating_sub(p.first))
                .sum();
            (done, Some(total))
        } else {
            (self.records, None)
        }
    }

    fn progress_unit(&self) -> &'static str {
        "records"
    }

    fn position(&self) -> SourcePosition {
        self.partitions
            .iter()
            .map(|p| SplitPosition {
                split: p.name.clone(),
                offset: p.next,
            })
            .collect()
    }

    fn wait_for_input(&mut self, max: Duration) {
        if self.pending.is_some() || self.all_done() || self.assign().is_err() {
            return;
        }
        match self.consumer.poll(max) {
            Some(Ok(m)) => {
                let accepted = self.accept(&m);
                drop(m);
                match accepted {
                    Ok(record) => self.pending = record,
                    Err(reason) => {
                        self.rewound.get_or_insert(reason);
                    }
                }
            }
            Some(Err(e)) => self.log_error(&e),
            None => self.check_positions(),
        }
    }

    fn seek(&mut self, position: &SourcePosition) -> Result<(), ConnectorError> {
        let mut next = Vec::with_capacity(self.partitions.len());
        for p in position {
            let Some(i) = self.partitions.iter().position(|q| q.name == p.split) else {
                let ours: Vec<&str> = self.partitions.iter().map(|q| q.name.as_str()).collect();
                return Err(ConnectorError::Seek(format!(
                    "the checkpoint read {}, which is not one of this source's partitions [{}]; \
                     the topics changed (start over with --fresh)",
                    p.split,
                    ours.join(", ")
                )));
            };
            next.push((i, p.offset));
        }
        // Partitions the checkpoint does not know were added since: all of
        // their records came after it, so they are read from the oldest
        // whatever `start` says (`latest` would skip what came in between).
        for p in &mut self.partitions {
            if !position.iter().any(|known| known.split == p.name) {
                (p.next, p.fetch_from, p.first) = (p.low, p.low, p.low);
            }
        }
        for (i, offset) in next {
            let p = &mut self.partitions[i];
            p.next = offset;
            p.fetch_from = offset.saturating_sub(self.resume_overlap);
            p.first = p.first.min(offset);
        }
        if self.assigned {
            self.consumer
                .unassign()
                .map_err(kafka_err("unassigning the partitions"))?;
            self.assigned = false;
        }
        self.pending = None;
        self.mark_done();
        Ok(())
    }

    fn take_finished_splits(&mut self, out: &mut Vec<usize>) {
        out.append(&mut self.finished);
    }

    fn mirrors_checkpoints(&self) -> bool {
        true
    }

    fn checkpoint_complete(&mut self, position: &SourcePosition) -> Result<(), ConnectorError> {
        if !self.commits {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for p in position {
            let Some(q) = self.partitions.iter().find(|q| q.name == p.split) else {
                continue;
            };
            tpl.add_partition_offset(&q.topic, q.partition, Offset::Offset(p.offset as i64))
                .map_err(kafka_err(format!("committing {}", q.name)))?;
        }
        // Asynchronous: the result comes back through `poll`, and closing the
        // consumer waits for what is outstanding.
        self.consumer
            .commit(&tpl, CommitMode::Async)
            .map_err(kafka_err("committing offsets to the group"))
    }
}
