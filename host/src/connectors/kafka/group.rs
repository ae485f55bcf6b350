//! A member of the source's consumer group that reads nothing itself: it
//! takes part in the group protocol, so Kafka shares the topics' partitions
//! out between the processes of the group, and tells its owner what it was
//! given and what it must give up. The owner runs each partition it holds
//! (see `cli::run_group`).
//!
//! The owner is told of a revocation inside the rebalance, before the
//! partitions are released: with the eager protocol (librdkafka's default
//! assignors) the group waits for that, so the next owner of a partition
//! never starts before its last checkpoint is written.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::{METADATA_TIMEOUT, client_config, kafka_err};
use crate::connectors::ConnectorError;
use crate::spec::KafkaSourceSpec;

/// A topic and a partition number.
pub type TopicPartition = (String, i32);

/// What runs the partitions a member holds.
pub trait PartitionOwner: Send {
    /// Partitions given to this process.
    fn assigned(&mut self, partitions: &[TopicPartition]);
    /// Partitions taken away: stopped and checkpointed when this returns.
    /// Also called for partitions it no longer runs.
    fn revoked(&mut self, partitions: &[TopicPartition]);
}

pub struct MemberContext<O> {
    owner: Mutex<O>,
}

impl<O: PartitionOwner> ClientContext for MemberContext<O> {}

fn listed(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect()
}

impl<O: PartitionOwner> MemberContext<O> {
    fn owner(&self) -> MutexGuard<'_, O> {
        // A panic in the owner ends the process's run anyway; its state is
        // still the best account of what runs.
        self.owner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<O: PartitionOwner> ConsumerContext for MemberContext<O> {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => self.owner().revoked(&listed(tpl)),
            Rebalance::Assign(_) => {}
            Rebalance::Error(e) => tracing::warn!("kafka group rebalance: {e}"),
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            // The member only holds the assignment; each partition's own
            // pipeline reads it.
            if let Err(e) = consumer.pause(tpl) {
                tracing::warn!("pausing the group member's partitions: {e}");
            }
            self.owner().assigned(&listed(tpl));
        }
    }
}

pub struct GroupMember<O: PartitionOwner> {
    consumer: BaseConsumer<MemberContext<O>>,
}

impl<O: PartitionOwner> GroupMember<O> {
    /// Joins `spec.group` for `spec.topics`; the assignment arrives through
    /// `poll`.
    pub fn join(spec: &KafkaSourceSpec, owner: O) -> Result<Self, ConnectorError> {
        let consumer: BaseConsumer<MemberContext<O>> = client_config(
            &spec.brokers,
            &spec.properties,
            &[
                ("group.id", &spec.group),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                // Paused at once, but keep what a fetch before the pause
                // brings small.
                ("queued.max.messages.kbytes", "1024"),
                ("enable.partition.eof", "false"),
            ],
        )?
        .create(
            MemberContext {
                owner: Mutex::new(owner),
            },
            "creating the group member",
        )?;
        let topics: Vec<&str> = spec.topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(kafka_err(format!("joining group {:?}", spec.group)))?;
        Ok(Self { consumer })
    }

    /// Every partition of the topics, from the brokers' metadata.
    pub fn partitions_of(&self, topics: &[String]) -> Result<Vec<TopicPartition>, ConnectorError> {
        let mut all = Vec::new();
        for topic in topics {
            let metadata = self
                .consumer
                .fetch_metadata(Some(topic), METADATA_TIMEOUT)
                .map_err(kafka_err(format!(
                    "reading the metadata of topic {topic:?}"
                )))?;
            for t in metadata.topics().iter().filter(|t| t.name() == topic) {
                all.extend(t.partitions().iter().map(|p| (topic.clone(), p.id())));
            }
        }
        all.sort();
        Ok(all)
    }

    /// Serves the group protocol (rebalances call the owner from here) for
    /// up to `timeout`.
    pub fn poll(&self, timeout: Duration) {
        match self.consumer.poll(timeout) {
            // Fetched before the pause took hold: its pipeline reads it.
            Some(Ok(_)) | None => {}
            Some(Err(e)) => {
                tracing::warn!("kafka group member: {e} (librdkafka retries on its own)")
            }
        }
    }

    pub fn owner(&self) -> MutexGuard<'_, O> {
        self.consumer.context().owner()
    }

    /// Commits checkpointed offsets to the group, for lag tools
    /// (asynchronously; nothing reads them back).
    pub fn commit(&self, offsets: &[(TopicPartition, u64)]) {
        if offsets.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), offset) in offsets {
            if tpl
                .add_partition_offset(topic, *partition, Offset::Offset(*offset as i64))
                .is_err()
            {
                return;
            }
        }
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
            tracing::warn!("committing offsets to the group: {e}");
        }
    }

    /// Leaves the group: the owner's partitions are stopped first, so the
    /// members that get them next start from their last checkpoints.
    pub fn leave(&self, held: &[TopicPartition]) {
        self.owner().revoked(held);
        self.consumer.unsubscribe();
    }
}
