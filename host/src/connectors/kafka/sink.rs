//! The Kafka sink: records of one output to one topic, through an
//! idempotent producer.
//!
//! At every checkpoint barrier it flushes the producer and fails the
//! checkpoint if any delivery failed, so a completed checkpoint never leaves
//! an output it covers unwritten: nothing is ever lost. It is at-least-once:
//! after a crash the replay from the last checkpoint writes the outputs of
//! the replayed tail again. Each record carries headers that say what
//! produced it (`weir-origin`), the same in the replay, so consumers can drop
//! the duplicates; see `headers`.
//!
//! Partitioning is by key with murmur2, as Kafka's Java clients do, unless
//! the properties choose another partitioner.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::util::Timeout;
use serde::{Deserialize, Serialize};

use super::{client_config, headers, kafka_err};
use crate::connectors::{ConnectorError, Origin, OutputRecord, Sink, SinkContext, SinkState};
use crate::spec::KafkaSinkSpec;

/// What a checkpoint records of a Kafka sink: which checkpoint it was, so a
/// restored sink numbers its epochs on from there.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KafkaSinkState {
    pub checkpoint: u64,
}

/// Counts failed deliveries (called on the producer's polling thread).
#[derive(Default)]
struct Deliveries {
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((error, _)) = result {
            self.failed.fetch_add(1, Ordering::SeqCst);
            let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
            first.get_or_insert_with(|| error.to_string());
        }
    }
}

pub struct KafkaSink {
    producer: ThreadedProducer<Deliveries>,
    deliveries: Arc<Deliveries>,
    topic: String,
    pipeline: Vec<u8>,
    output: Vec<u8>,
    splits: Arc<[String]>,
    /// The checkpoint that will commit what is written now.
    epoch: u64,
    /// Records written in this epoch.
    seq: u64,
    origin: String,
}

impl KafkaSink {
    pub fn open(
        spec: &KafkaSinkSpec,
        context: &SinkContext,
        restore: Option<&KafkaSinkState>,
    ) -> Result<Self, ConnectorError> {
        let mut client = client_config(
            &spec.brokers,
            &spec.properties,
            &[
                // No duplicates or reordering from the producer's own retries.
                ("enable.idempotence", "true"),
            ],
        )?;
        if !spec.properties.contains_key("partitioner") {
            client.config.set("partitioner", "murmur2_random");
        }
        let producer: ThreadedProducer<Deliveries> = client.create(
            Deliveries::default(),
            &format!("creating the producer for topic {}", spec.topic),
        )?;
        // The context lives in the producer; keep a handle on it.
        let deliveries = producer.context().clone();
        Ok(Self {
            producer,
            deliveries,
            topic: spec.topic.clone(),
            pipeline: context.pipeline.as_bytes().to_vec(),
            output: spec.output.as_bytes().to_vec(),
            splits: context.splits.clone(),
            epoch: restore.map_or(1, |s| s.checkpoint + 1),
            seq: 0,
            origin: String::new(),
        })
    }

    /// Fails if any delivery has failed since the sink opened.
    fn check_deliveries(&self) -> Result<(), ConnectorError> {
        let failed = self.deliveries.failed.load(Ordering::SeqCst);
        if failed == 0 {
            return Ok(());
        }
        let first = self
            .deliveries
            .first_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_default();
        Err(ConnectorError::KafkaDelivery(format!(
            "{failed} records could not be written to topic {} (first error: {first}); \
             the checkpoint that covers them fails, and a restart replays them",
            self.topic
        )))
    }

    fn write_origin(&mut self, origin: Origin) {
        use std::fmt::Write;
        self.origin.clear();
        let _ = match origin {
            Origin::Record {
                split,
                offset,
                index,
            } => match self.splits.get(split as usize) {
                Some(name) => write!(self.origin, "{name}@{offset}#{index}"),
                None => write!(self.origin, "split-{split}@{offset}#{index}"),
            },
            Origin::Timer {
                event_time,
                timestamp,
                key_hash,
                index,
            } => write!(
                self.origin,
                "timer:{}:{timestamp}:{key_hash:016x}#{index}",
                if event_time {
                    "event-time"
                } else {
                    "processing-time"
                }
            ),
            Origin::Unknown => write!(self.origin, "unknown:{}:{}", self.epoch, self.seq),
        };
    }

    fn flush_producer(&self) -> Result<(), ConnectorError> {
        // Bounded by the producer's `message.timeout.ms` (never 0: the spec
        // refuses it): a record not delivered by then fails, and so does
        // the checkpoint.
        self.producer
            .flush(Timeout::Never)
            .map_err(kafka_err(format!("flushing topic {}", self.topic)))?;
        self.check_deliveries()
    }
}

impl Sink for KafkaSink {
    fn write(&mut self, records: &[OutputRecord]) -> Result<(), ConnectorError> {
        self.check_deliveries()?;
        let mut itoa = itoa::Buffer::new();
        for r in records {
            self.write_origin(r.origin);
            let epoch = itoa.format(self.epoch).as_bytes().to_vec();
            let seq = itoa.format(self.seq).as_bytes().to_vec();
            let labels = OwnedHeaders::new_with_capacity(5)
                .insert(Header {
                    key: headers::PIPELINE,
                    value: Some(&self.pipeline),
                })
                .insert(Header {
                    key: headers::OUTPUT,
                    value: Some(&self.output),
                })
                .insert(Header {
                    key: headers::ORIGIN,
                    value: Some(self.origin.as_bytes()),
                })
                .insert(Header {
                    key: headers::EPOCH,
                    value: Some(&epoch),
                })
                .insert(Header {
                    key: headers::SEQ,
                    value: Some(&seq),
                });
            let mut record = BaseRecord::to(&self.topic)
                .payload(&r.value)
                .headers(labels);
            if let Some(key) = &r.key {
                record = record.key(key);
            }
            if let Some(ts) = r.timestamp {
                record = record.timestamp(ts);
            }
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    // The producer's queue is full: its thread is sending;
                    // wait for room (backpressure to the pipeline).
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err((e, _)) => {
                        return Err(kafka_err(format!("writing to topic {}", self.topic))(e));
                    }
                }
            }
            self.seq += 1;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ConnectorError> {
        self.flush_producer()
    }

    fn pre_commit(&mut self, checkpoint: u64) -> Result<Option<SinkState>, ConnectorError> {
        self.flush_producer()?;
        self.epoch = checkpoint + 1;
        self.seq = 0;
        Ok(Some(SinkState::Kafka(KafkaSinkState { checkpoint })))
    }
}
