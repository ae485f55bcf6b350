//! The Kafka parts of the spec: the source's and the sink's sections, and
//! their checks.
//!
//! Client properties pass through to librdkafka, except the ones Weir owns
//! because its guarantees rest on them (offsets are Weir's, not
//! auto-committed; the sink's producer is idempotent): setting one of those
//! is an error, not a silent override.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::SpecError;
use super::validate::field;

/// `[source] kind = "kafka"`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceSpec {
    /// Bootstrap servers, `host:port[,host:port...]`.
    pub brokers: String,
    pub topics: Vec<String>,
    /// The consumer group offsets are committed to (after each completed
    /// checkpoint, for lag tools; Weir resumes from its checkpoints).
    pub group: String,
    /// Where a pipeline without a checkpoint starts.
    #[serde(default)]
    pub start: KafkaStart,
    /// Stop at the end offsets seen at start (tests, backfills).
    #[serde(default)]
    pub bounded: bool,
    /// Records to fetch again before each offset a restore resumes at (they
    /// are skipped). 0 for Kafka; a broker that answers a fetch in the
    /// middle of a record batch with the next batch (tansu 0.6) needs at
    /// least the producer's largest batch (librdkafka's `batch.num.messages`,
    /// 10 000 by default), or a restore skips the rest of that batch.
    #[serde(default)]
    pub resume_overlap: u64,
    /// librdkafka client properties (`fetch.max.bytes = "..."`).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// Share the partitions with every `weir run` of this spec in the same
    /// group (`[source.scale_out]`); see `cli::run_group`.
    #[serde(default)]
    pub scale_out: Option<ScaleOutSpec>,
    /// Set by the group runner, never by a spec: read this one partition
    /// only, outside the group (the runner's member holds the assignment
    /// and commits the offsets).
    #[serde(skip)]
    pub only_partition: Option<(String, i32)>,
}

/// `[source.scale_out]`: the topics' partitions are shared out between the
/// processes of the group by Kafka's group protocol; each partition runs as
/// a pipeline of its own whose checkpoints go to `shared`, where whichever
/// process gets the partition next restores them from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleOutSpec {
    /// Storage every process reaches: a directory (a path or `file://`
    /// URL), or an object-store URL.
    pub shared: String,
}

/// Where a Kafka source starts without a checkpoint: `"earliest"`,
/// `"latest"`, or a timestamp in ms (the first offset at or after it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum KafkaStart {
    #[default]
    Earliest,
    Latest,
    Timestamp(i64),
}

impl Serialize for KafkaStart {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            KafkaStart::Earliest => s.serialize_str("earliest"),
            KafkaStart::Latest => s.serialize_str("latest"),
            KafkaStart::Timestamp(ms) => s.serialize_i64(*ms),
        }
    }
}

impl<'de> Deserialize<'de> for KafkaStart {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = KafkaStart;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("\"earliest\", \"latest\" or a timestamp in ms")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<KafkaStart, E> {
                match v {
                    "earliest" => Ok(KafkaStart::Earliest),
                    "latest" => Ok(KafkaStart::Latest),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(v), &self)),
                }
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<KafkaStart, E> {
                if v < 0 {
                    return Err(E::invalid_value(serde::de::Unexpected::Signed(v), &self));
                }
                Ok(KafkaStart::Timestamp(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<KafkaStart, E> {
                i64::try_from(v)
                    .map(KafkaStart::Timestamp)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(v), &self))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// `[[sink]] kind = "kafka"`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkSpec {
    pub output: String,
    pub brokers: String,
    pub topic: String,
    /// Transactions per checkpoint. Not shipped: see `validate`.
    #[serde(default)]
    pub exactly_once: bool,
    /// librdkafka client properties.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

/// Properties of the consumer that Weir sets itself.
const SOURCE_OWNED: &[(&str, &str)] = &[
    ("bootstrap.servers", "set `brokers`"),
    ("group.id", "set `group`"),
    (
        "enable.auto.commit",
        "offsets are committed after each completed checkpoint, never automatically",
    ),
    (
        "enable.auto.offset.store",
        "offsets are committed after each completed checkpoint, never automatically",
    ),
];

/// Properties of the producer that Weir sets itself.
const SINK_OWNED: &[(&str, &str)] = &[
    ("bootstrap.servers", "set `brokers`"),
    (
        "enable.idempotence",
        "the sink's producer is always idempotent (no duplicates from its retries)",
    ),
    (
        "transactional.id",
        "the transactional mode is not shipped (see `exactly_once`)",
    ),
];

/// Why `exactly_once = true` is refused (docs/kafka.md says more).
pub const EXACTLY_ONCE_REFUSED: &str = "the transactional Kafka sink is not shipped: no broker \
    this project can test against implements transactions (tansu has no EndTxn; librdkafka's \
    mock cluster does not honour read_committed), and an untested transactional path is not \
    shipped. Leave it out: the sink is idempotent and at-least-once, a completed checkpoint never \
    leaves an output unwritten, and every record carries the `weir-origin` header consumers \
    drop duplicates by (docs/kafka.md)";

fn check_properties(
    path: &str,
    properties: &BTreeMap<String, String>,
    owned: &[(&str, &str)],
) -> Result<(), SpecError> {
    for name in properties.keys() {
        if let Some((_, why)) = owned.iter().find(|(owned, _)| owned == name) {
            return Err(field(
                &format!("{path}.properties.{name}"),
                format!("Weir sets this property itself: {why}"),
            ));
        }
    }
    Ok(())
}

fn check_brokers(path: &str, brokers: &str) -> Result<(), SpecError> {
    if brokers.trim().is_empty() {
        return Err(field(
            &format!("{path}.brokers"),
            "name at least one broker, as host:port",
        ));
    }
    Ok(())
}

pub(super) fn validate_source(spec: &KafkaSourceSpec) -> Result<(), SpecError> {
    check_brokers("source", &spec.brokers)?;
    if spec.topics.is_empty() {
        return Err(field("source.topics", "name at least one topic"));
    }
    for (i, topic) in spec.topics.iter().enumerate() {
        if topic.is_empty() || topic.contains('/') {
            return Err(field(
                &format!("source.topics[{i}]"),
                format!("{topic:?} is not a topic name"),
            ));
        }
        if spec.topics[..i].contains(topic) {
            return Err(field(
                &format!("source.topics[{i}]"),
                format!("{topic:?} is named twice"),
            ));
        }
    }
    if spec.group.is_empty() {
        return Err(field(
            "source.group",
            "name the consumer group (offsets are committed to it)",
        ));
    }
    if let Some(scale_out) = &spec.scale_out
        && scale_out.shared.trim().is_empty()
    {
        return Err(field(
            "source.scale_out.shared",
            "name the storage every process of the group reaches (a directory or a URL)",
        ));
    }
    check_properties("source", &spec.properties, SOURCE_OWNED)
}

/// What a spec must be for its partitions to be shared out: every record of
/// a key in one partition, so a partition's state is whole on its own.
pub(super) fn validate_scale_out(spec: &super::PipelineSpec) -> Result<(), SpecError> {
    use super::SinkSpec;
    if spec.key_by.field != "record-key" {
        return Err(field(
            "key_by.field",
            format!(
                "source.scale_out shares partitions, and state follows them: key by \"record-key\" \
                 (with producers that partition by key, as Kafka's do) so every record of a key is \
                 in one partition; {:?} could spread one key's records over partitions owned by \
                 different processes and split its state silently",
                spec.key_by.field
            ),
        ));
    }
    if spec.checkpoint.is_none() {
        return Err(field(
            "checkpoint",
            "source.scale_out hands partitions over through checkpoints: add a [checkpoint] section",
        ));
    }
    if spec.restore_from.is_some() {
        return Err(field(
            "restore_from",
            "a savepoint holds the state of every partition together; with source.scale_out \
             each partition restores from its own checkpoints in the shared storage",
        ));
    }
    for (i, sink) in spec.sinks.iter().enumerate() {
        if let SinkSpec::File { .. } = sink {
            return Err(field(
                &format!("sink[{i}]"),
                "a file sink writes one file on one machine, which partitions moving between \
                 processes cannot share; use a kafka sink with source.scale_out",
            ));
        }
    }
    Ok(())
}

pub(super) fn validate_sink(i: usize, spec: &KafkaSinkSpec) -> Result<(), SpecError> {
    let path = format!("sink[{i}]");
    check_brokers(&path, &spec.brokers)?;
    if spec.topic.is_empty() {
        return Err(field(&format!("{path}.topic"), "must not be empty"));
    }
    if spec.exactly_once {
        return Err(field(&format!("{path}.exactly_once"), EXACTLY_ONCE_REFUSED));
    }
    // Every checkpoint waits for the sink's deliveries, as long as this.
    for name in ["message.timeout.ms", "delivery.timeout.ms"] {
        if spec.properties.get(name).map(|v| v.trim()) == Some("0") {
            return Err(field(
                &format!("{path}.properties.{name}"),
                "0 means no limit, and every checkpoint waits for the sink's deliveries: with \
                 the broker down it would wait forever; give a limit in ms (librdkafka's \
                 default is 300000)",
            ));
        }
    }
    check_properties(&path, &spec.properties, SINK_OWNED)
}

#[cfg(test)]
mod tests {
    use crate::spec::{PipelineSpec, SinkSpec, SourceSpec};

    const KAFKA: &str = r#"
        name = "fraud"
        [source]
        kind = "kafka"
        brokers = "127.0.0.1:9092"
        topics = ["transactions"]
        group = "weir-fraud"
        [event_time]
        field = "record"
        [key_by]
        field = "record-key"
        [plugin]
        wasm = "fraud.wasm"
        [[sink]]
        output = "alerts"
        kind = "kafka"
        brokers = "127.0.0.1:9092"
        topic = "alerts"
    "#;

    fn error_of(text: &str) -> String {
        PipelineSpec::from_toml(text).unwrap_err().to_string()
    }

    #[test]
    fn a_kafka_pipeline_may_key_and_time_by_the_record() {
        let spec = PipelineSpec::from_toml(KAFKA).unwrap();
        let SourceSpec::Kafka(source) = &spec.source else {
            panic!("{:?}", spec.source)
        };
        assert_eq!(source.start, super::KafkaStart::Earliest);
        assert!(!source.bounded);
        assert!(matches!(&spec.sinks[0], SinkSpec::Kafka(k) if k.topic == "alerts"));
    }

    #[test]
    fn start_is_earliest_latest_or_a_timestamp() {
        let with = |start: &str| {
            KAFKA.replace(
                "group = \"weir-fraud\"",
                &format!("group = \"weir-fraud\"\nstart = {start}"),
            )
        };
        let spec = PipelineSpec::from_toml(&with("1700000000000")).unwrap();
        let SourceSpec::Kafka(source) = &spec.source else {
            panic!()
        };
        assert_eq!(
            source.start,
            super::KafkaStart::Timestamp(1_700_000_000_000)
        );
        let spec = PipelineSpec::from_toml(&with("\"latest\"")).unwrap();
        let SourceSpec::Kafka(source) = &spec.source else {
            panic!()
        };
        assert_eq!(source.start, super::KafkaStart::Latest);
        let err = error_of(&with("\"newest\""));
        assert!(err.contains("earliest"), "{err}");
    }

    #[test]
    fn exactly_once_is_refused_with_the_reason() {
        let err = error_of(&KAFKA.replace(
            "topic = \"alerts\"",
            "topic = \"alerts\"\nexactly_once = true",
        ));
        assert!(err.starts_with("sink[0].exactly_once:"), "{err}");
        assert!(err.contains("EndTxn"), "{err}");
        assert!(err.contains("read_committed"), "{err}");
    }

    #[test]
    fn properties_weir_owns_are_refused_with_their_path() {
        let err = error_of(&KAFKA.replace(
            "group = \"weir-fraud\"",
            "group = \"weir-fraud\"\nproperties = { \"enable.auto.commit\" = \"true\" }",
        ));
        assert!(
            err.starts_with("source.properties.enable.auto.commit:"),
            "{err}"
        );
        let err = error_of(&KAFKA.replace(
            "topic = \"alerts\"",
            "topic = \"alerts\"\nproperties = { \"enable.idempotence\" = \"false\" }",
        ));
        assert!(
            err.starts_with("sink[0].properties.enable.idempotence:"),
            "{err}"
        );
        let err = error_of(&KAFKA.replace(
            "topic = \"alerts\"",
            "topic = \"alerts\"\nproperties = { \"message.timeout.ms\" = \"0\" }",
        ));
        assert!(
            err.starts_with("sink[0].properties.message.timeout.ms: 0 means no limit"),
            "{err}"
        );
    }

    #[test]
    fn scale_out_needs_record_keys_checkpoints_and_no_file_sink() {
        let scaled = KAFKA
            .replace(
                "group = \"weir-fraud\"",
                "group = \"weir-fraud\"\nscale_out = { shared = \"/mnt/weir\" }",
            )
            .replace("[plugin]", "[checkpoint]\n[plugin]");
        let spec = PipelineSpec::from_toml(&scaled).unwrap();
        let SourceSpec::Kafka(source) = &spec.source else {
            panic!()
        };
        assert_eq!(source.scale_out.as_ref().unwrap().shared, "/mnt/weir");

        let err = error_of(&scaled.replace("\"record-key\"", "\"/user_id\""));
        assert!(err.starts_with("key_by.field:"), "{err}");
        assert!(err.contains("split its state"), "{err}");
        let err = error_of(&scaled.replace("[checkpoint]\n", ""));
        assert!(err.starts_with("checkpoint:"), "{err}");
        let err = error_of(&format!(
            "{scaled}\n[[sink]]\noutput = \"late\"\nkind = \"file\"\npath = \"late.jsonl\""
        ));
        assert!(err.starts_with("sink[1]:"), "{err}");
        let err = error_of(&scaled.replace("/mnt/weir", " "));
        assert!(err.starts_with("source.scale_out.shared:"), "{err}");
    }

    #[test]
    fn a_kafka_source_needs_topics_and_a_group() {
        let err = error_of(&KAFKA.replace("[\"transactions\"]", "[]"));
        assert!(err.starts_with("source.topics:"), "{err}");
        let err = error_of(&KAFKA.replace("group = \"weir-fraud\"", "group = \"\""));
        assert!(err.starts_with("source.group:"), "{err}");
    }
}
