//! The Kafka parts of the spec: the source's and the sink's sections, and
//! their checks.
//!
//! Client properties pass through to librdkafka, except the ones Weir owns
//! because its guarantees rest on them (offsets are Weir's, not
//! auto-committed; the sink's producer is idempotent): setting one of those
//! is an error, not a silent override. A property `<name>.env` sets `<name>`
//! from the environment variable it names (credentials stay out of specs).
//!
//! Which other properties a spec may set depends on who wrote it
//! ([`KafkaPropertyPolicy`]): `weir run`'s own file any; a spec sent to
//! `weir serve` only the allowlist ([`API_ALLOWED`]) and what the operator
//! adds, since librdkafka properties can load code, run commands and read
//! server files.

use std::collections::{BTreeMap, BTreeSet};

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

/// The suffix of a property whose value names the environment variable the
/// property's value is read from (`sasl.password.env = "KAFKA_PASSWORD"`).
pub const ENV_SUFFIX: &str = ".env";

/// The property a `<property>.env` sets, if `name` is one.
pub fn from_env(name: &str) -> Option<&str> {
    name.strip_suffix(ENV_SUFFIX).filter(|p| !p.is_empty())
}

fn check_properties(
    path: &str,
    properties: &BTreeMap<String, String>,
    owned: &[(&str, &str)],
) -> Result<(), SpecError> {
    for (name, value) in properties {
        let at = || format!("{path}.properties.{name}");
        let property = from_env(name).unwrap_or(name);
        if let Some((_, why)) = owned.iter().find(|(owned, _)| *owned == property) {
            return Err(field(
                &at(),
                format!("Weir sets this property itself: {why}"),
            ));
        }
        if from_env(name).is_some() {
            if properties.contains_key(property) {
                return Err(field(
                    &at(),
                    format!("{property} is also set directly; set one of the two"),
                ));
            }
            if value.is_empty()
                || !value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_')
            {
                return Err(field(
                    &at(),
                    format!(
                        "{value:?} is not an environment variable name (letters, digits and '_')"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Properties that carry credentials. A spec sent to `weir serve` gives them
/// only as `<name>.env` (the spec is stored in the data dir); their
/// values are never part of an error message.
pub const SECRET_PROPERTIES: &[&str] = &[
    "sasl.password",
    "ssl.key.pem",
    "ssl.key.password",
    "ssl.keystore.password",
    "sasl.oauthbearer.client.secret",
    "sasl.oauthbearer.config",
];

/// The prefix of the environment variables a spec sent to `weir serve` may
/// read credentials from: the operator decides which secrets API clients
/// may use by naming them so, and nothing else of the server's environment
/// (its token, cloud credentials) can be sent to a broker a client chooses.
pub const API_ENV_PREFIX: &str = "WEIR_KAFKA_";

/// What value an allowed property takes.
#[derive(Debug, Clone, Copy)]
pub enum Allowed {
    /// Any value (librdkafka checks it).
    Any,
    /// `true` or `false`.
    Bool,
    /// A whole number.
    Number,
    /// A whole number no larger than librdkafka's default: a size of memory
    /// the client buffers, which an API client may lower but not raise.
    AtMost(u64),
    /// One of these (case-insensitive).
    OneOf(&'static [&'static str]),
    /// Only through `<name>.env` naming a `WEIR_KAFKA_` variable.
    EnvOnly,
}

/// The client properties a spec sent to `weir serve` may set: tuning,
/// timeouts and the choice of TLS and SASL. Nothing here names a file,
/// loads code, runs a command, changes logging, or takes a credential
/// inline. What is left out on purpose, and why (docs/kafka.md):
/// `*.location`, `ssl.keystore.*`, `ssl.crl.*` (server files);
/// `plugin.library.paths`, `ssl.engine.*`, `ssl.providers` (load code);
/// `sasl.kerberos.*` and the GSSAPI mechanism (librdkafka runs
/// `sasl.kerberos.kinit.cmd` through a shell, with the principal in it);
/// `sasl.oauthbearer.*` and the OAUTHBEARER mechanism (tokens fetched from
/// URLs the spec names, or unsigned); `debug`, `log*`, `statistics.*`
/// (protocol dumps in the server's logs); `partition.assignment.strategy`
/// and `group.protocol` (the scale-out hand-over relies on the eager
/// assignors).
pub const API_ALLOWED: &[(&str, Allowed)] = &[
    // Any client.
    ("client.id", Allowed::Any),
    ("client.rack", Allowed::Any),
    ("socket.timeout.ms", Allowed::Number),
    ("socket.connection.setup.timeout.ms", Allowed::Number),
    ("socket.keepalive.enable", Allowed::Bool),
    ("socket.nagle.disable", Allowed::Bool),
    ("connections.max.idle.ms", Allowed::Number),
    ("reconnect.backoff.ms", Allowed::Number),
    ("reconnect.backoff.max.ms", Allowed::Number),
    ("retry.backoff.ms", Allowed::Number),
    ("retry.backoff.max.ms", Allowed::Number),
    ("request.timeout.ms", Allowed::Number),
    ("metadata.max.age.ms", Allowed::Number),
    ("topic.metadata.refresh.interval.ms", Allowed::Number),
    ("topic.metadata.refresh.fast.interval.ms", Allowed::Number),
    ("topic.metadata.refresh.sparse", Allowed::Bool),
    (
        "broker.address.family",
        Allowed::OneOf(&["any", "v4", "v6"]),
    ),
    (
        "client.dns.lookup",
        Allowed::OneOf(&[
            "use_all_dns_ips",
            "resolve_canonical_bootstrap_servers_only",
        ]),
    ),
    ("api.version.request", Allowed::Bool),
    ("api.version.request.timeout.ms", Allowed::Number),
    ("broker.version.fallback", Allowed::Any),
    ("allow.auto.create.topics", Allowed::Bool),
    ("message.max.bytes", Allowed::AtMost(1_000_000)),
    ("receive.message.max.bytes", Allowed::AtMost(100_000_000)),
    // Consumers.
    ("fetch.max.bytes", Allowed::AtMost(52_428_800)),
    ("fetch.message.max.bytes", Allowed::AtMost(1_048_576)),
    ("max.partition.fetch.bytes", Allowed::AtMost(1_048_576)),
    ("fetch.min.bytes", Allowed::Number),
    ("fetch.wait.max.ms", Allowed::Number),
    ("fetch.error.backoff.ms", Allowed::Number),
    ("fetch.queue.backoff.ms", Allowed::Number),
    ("queued.min.messages", Allowed::AtMost(100_000)),
    ("queued.max.messages.kbytes", Allowed::AtMost(65_536)),
    ("session.timeout.ms", Allowed::Number),
    ("heartbeat.interval.ms", Allowed::Number),
    ("max.poll.interval.ms", Allowed::Number),
    ("coordinator.query.interval.ms", Allowed::Number),
    ("group.instance.id", Allowed::Any),
    (
        "isolation.level",
        Allowed::OneOf(&["read_committed", "read_uncommitted"]),
    ),
    ("check.crcs", Allowed::Bool),
    // Producers (the sink's producer is idempotent: acks must be all).
    ("linger.ms", Allowed::Number),
    ("queue.buffering.max.ms", Allowed::Number),
    ("queue.buffering.max.messages", Allowed::AtMost(100_000)),
    ("queue.buffering.max.kbytes", Allowed::AtMost(1_048_576)),
    ("batch.num.messages", Allowed::AtMost(10_000)),
    ("batch.size", Allowed::AtMost(1_000_000)),
    (
        "compression.type",
        Allowed::OneOf(&["none", "gzip", "snappy", "lz4", "zstd"]),
    ),
    (
        "compression.codec",
        Allowed::OneOf(&["none", "gzip", "snappy", "lz4", "zstd"]),
    ),
    ("compression.level", Allowed::Any),
    ("acks", Allowed::OneOf(&["all", "-1"])),
    ("request.required.acks", Allowed::OneOf(&["all", "-1"])),
    ("message.timeout.ms", Allowed::Number),
    ("delivery.timeout.ms", Allowed::Number),
    ("retries", Allowed::Number),
    ("message.send.max.retries", Allowed::Number),
    ("max.in.flight.requests.per.connection", Allowed::Number),
    ("max.in.flight", Allowed::Number),
    (
        "partitioner",
        Allowed::OneOf(&[
            "random",
            "consistent",
            "consistent_random",
            "murmur2",
            "murmur2_random",
            "fnv1a",
            "fnv1a_random",
        ]),
    ),
    ("sticky.partitioning.linger.ms", Allowed::Number),
    // TLS and SASL: which, not with what files.
    (
        "security.protocol",
        Allowed::OneOf(&["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"]),
    ),
    (
        "sasl.mechanism",
        Allowed::OneOf(&["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]),
    ),
    (
        "sasl.mechanisms",
        Allowed::OneOf(&["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]),
    ),
    ("sasl.username", Allowed::Any),
    ("sasl.password", Allowed::EnvOnly),
    (
        "ssl.endpoint.identification.algorithm",
        Allowed::OneOf(&["none", "https"]),
    ),
    ("enable.ssl.certificate.verification", Allowed::Bool),
    // Certificates are public: inline PEM. The private key is a secret.
    ("ssl.ca.pem", Allowed::Any),
    ("ssl.certificate.pem", Allowed::Any),
    ("ssl.key.pem", Allowed::EnvOnly),
    ("ssl.key.password", Allowed::EnvOnly),
    ("ssl.cipher.suites", Allowed::Any),
    ("ssl.curves.list", Allowed::Any),
    ("ssl.sigalgs.list", Allowed::Any),
];

/// Which client properties (beyond the ones Weir owns) a spec may set.
#[derive(Debug, Clone)]
pub enum KafkaPropertyPolicy {
    /// `weir run`: the spec is the operator's own file, run with the
    /// operator's rights, so any property librdkafka knows (files, plugins
    /// and inline credentials included) and any environment variable.
    Trusted,
    /// `weir serve`: [`API_ALLOWED`], plus the names the operator allows at
    /// start (`--kafka-allow-property`, any value); credentials only from
    /// `WEIR_KAFKA_*` variables.
    Api { extra: BTreeSet<String> },
}

impl KafkaPropertyPolicy {
    /// The policy of `weir serve`, with the names its operator added.
    pub fn api(extra: impl IntoIterator<Item = String>) -> Self {
        Self::Api {
            extra: extra.into_iter().collect(),
        }
    }

    /// Checks every Kafka section's properties of a (validated) spec.
    pub fn check(&self, spec: &super::PipelineSpec) -> Result<(), SpecError> {
        self.check_with_env(spec, |name| std::env::var_os(name).is_some())
    }

    /// [`Self::check`], with `is_set` telling which environment variables
    /// the server has.
    pub fn check_with_env(
        &self,
        spec: &super::PipelineSpec,
        is_set: impl Fn(&str) -> bool,
    ) -> Result<(), SpecError> {
        let Self::Api { extra } = self else {
            return Ok(());
        };
        if let super::SourceSpec::Kafka(source) = &spec.source {
            check_api_properties("source", &source.properties, extra, &is_set)?;
        }
        for (i, sink) in spec.sinks.iter().enumerate() {
            if let super::SinkSpec::Kafka(sink) = sink {
                check_api_properties(&format!("sink[{i}]"), &sink.properties, extra, &is_set)?;
            }
        }
        Ok(())
    }
}

fn check_api_properties(
    path: &str,
    properties: &BTreeMap<String, String>,
    extra: &BTreeSet<String>,
    is_set: &impl Fn(&str) -> bool,
) -> Result<(), SpecError> {
    for (name, value) in properties {
        let at = format!("{path}.properties.{name}");
        if let Some(property) = from_env(name) {
            if !extra.contains(property)
                && !API_ALLOWED.iter().any(|(allowed, _)| *allowed == property)
            {
                return Err(field(&at, refused(property)));
            }
            if !value.starts_with(API_ENV_PREFIX) {
                return Err(field(
                    &at,
                    format!(
                        "a spec sent to weir serve reads credentials only from environment \
                         variables whose names start with {API_ENV_PREFIX} (the ones the \
                         operator set for API clients), not {value:?}"
                    ),
                ));
            }
            if !is_set(value) {
                return Err(field(
                    &at,
                    format!("the server's environment has no {value}"),
                ));
            }
            continue;
        }
        if extra.contains(name) {
            continue;
        }
        let Some((_, allowed)) = API_ALLOWED
            .iter()
            .find(|(allowed, _)| *allowed == name.as_str())
        else {
            return Err(field(&at, refused(name)));
        };
        let v = value.trim();
        let problem = match allowed {
            Allowed::Any => None,
            Allowed::Bool => (v != "true" && v != "false").then(|| "must be true or false".into()),
            Allowed::Number => v
                .parse::<u64>()
                .is_err()
                .then(|| "must be a whole number".into()),
            Allowed::AtMost(max) => match v.parse::<u64>() {
                Ok(n) if n <= *max => None,
                _ => Some(format!(
                    "must be a whole number of at most {max} (librdkafka's default: memory the \
                     client buffers, which an API client may lower but not raise; the operator \
                     can lift this with weir serve --kafka-allow-property {name})"
                )),
            },
            Allowed::OneOf(values) => (!values.iter().any(|ok| ok.eq_ignore_ascii_case(v)))
                .then(|| format!("{v:?} is not one of {}", values.join(", "))),
            Allowed::EnvOnly => Some(format!(
                "a credential is not taken inline by weir serve (the spec is stored in the \
                 server's data dir): set {name}{ENV_SUFFIX} to the name of a server environment \
                 variable starting with {API_ENV_PREFIX}"
            )),
        };
        if let Some(problem) = problem {
            return Err(field(&at, problem));
        }
    }
    Ok(())
}

/// Why a property off the allowlist is refused, as precisely as known.
fn refused(name: &str) -> String {
    let why = if name.ends_with(".location") || name.starts_with("ssl.keystore.") {
        "it names a file on the server"
    } else if name == "plugin.library.paths"
        || name.starts_with("ssl.engine.")
        || name == "ssl.providers"
    {
        "it loads code into the server"
    } else if name.starts_with("sasl.kerberos.") {
        "Kerberos runs `sasl.kerberos.kinit.cmd` through a shell on the server"
    } else if name.starts_with("sasl.oauthbearer.") {
        "OAUTHBEARER fetches tokens from URLs the spec names, or takes unsigned ones"
    } else if name == "debug" || name.starts_with("log") || name.starts_with("statistics.") {
        "it writes protocol details into the server's logs"
    } else {
        "it is not on the allowlist of properties safe for an API client (docs/kafka.md)"
    };
    format!(
        "weir serve does not let a spec set {name}: {why}; the operator can allow it with \
         `weir serve --kafka-allow-property {name}`"
    )
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
    use super::KafkaPropertyPolicy;
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

    /// The spec with these source properties (a TOML inline table's body).
    fn with_source_properties(properties: &str) -> PipelineSpec {
        PipelineSpec::from_toml(&KAFKA.replace(
            "group = \"weir-fraud\"",
            &format!("group = \"weir-fraud\"\nproperties = {{ {properties} }}"),
        ))
        .unwrap()
    }

    fn api_error(policy: &KafkaPropertyPolicy, properties: &str) -> String {
        policy
            .check_with_env(&with_source_properties(properties), |name| {
                name == "WEIR_KAFKA_PASSWORD"
            })
            .unwrap_err()
            .to_string()
    }

    fn api_accepts(policy: &KafkaPropertyPolicy, properties: &str) {
        let spec = with_source_properties(properties);
        if let Err(e) = policy.check_with_env(&spec, |name| name == "WEIR_KAFKA_PASSWORD") {
            panic!("{properties}: {e}");
        }
    }

    #[test]
    fn an_api_spec_cannot_load_code_name_server_files_or_run_commands() {
        let api = KafkaPropertyPolicy::api([]);
        for (property, why) in [
            ("plugin.library.paths", "loads code"),
            ("ssl.ca.location", "names a file"),
            ("ssl.key.location", "names a file"),
            ("ssl.keystore.location", "names a file"),
            ("ssl.engine.location", "names a file"),
            ("ssl.providers", "loads code"),
            ("sasl.kerberos.kinit.cmd", "through a shell"),
            ("sasl.oauthbearer.token.endpoint.url", "OAUTHBEARER"),
            ("debug", "logs"),
            ("log_level", "logs"),
            ("some.future.property", "allowlist"),
        ] {
            let err = api_error(&api, &format!("\"{property}\" = \"/tmp/x.so\""));
            assert!(
                err.starts_with(&format!("source.properties.{property}: ")),
                "{err}"
            );
            assert!(err.contains(why), "{property}: {err}");
            assert!(
                err.contains(&format!("--kafka-allow-property {property}")),
                "{err}"
            );
        }
        // Sinks too, with their path.
        let spec = PipelineSpec::from_toml(&KAFKA.replace(
            "topic = \"alerts\"",
            "topic = \"alerts\"\nproperties = { \"plugin.library.paths\" = \"evil.so\" }",
        ))
        .unwrap();
        let err = api.check(&spec).unwrap_err().to_string();
        assert!(
            err.starts_with("sink[0].properties.plugin.library.paths: "),
            "{err}"
        );
        // Mechanisms that run commands or fetch tokens are values, refused too.
        let err = api_error(&api, "\"sasl.mechanism\" = \"GSSAPI\"");
        assert!(
            err.starts_with("source.properties.sasl.mechanism: "),
            "{err}"
        );
    }

    #[test]
    fn weir_run_keeps_every_property_librdkafka_knows() {
        api_accepts(
            &KafkaPropertyPolicy::Trusted,
            "\"ssl.ca.location\" = \"/etc/ca.pem\", \"sasl.password\" = \"inline\", \
             \"sasl.mechanism\" = \"GSSAPI\", \"ssl.key.password.env\" = \"ANY_NAME\"",
        );
    }

    #[test]
    fn allowed_properties_pass_with_values_in_bounds() {
        let api = KafkaPropertyPolicy::api([]);
        api_accepts(
            &api,
            "\"client.id\" = \"fraud\", \"fetch.max.bytes\" = \"1048576\", \
             \"session.timeout.ms\" = \"10000\", \"security.protocol\" = \"SASL_SSL\", \
             \"sasl.mechanism\" = \"SCRAM-SHA-512\", \"sasl.username\" = \"weir\", \
             \"sasl.password.env\" = \"WEIR_KAFKA_PASSWORD\", \
             \"ssl.endpoint.identification.algorithm\" = \"https\"",
        );
        let err = api_error(&api, "\"queued.max.messages.kbytes\" = \"2097151\"");
        assert!(err.contains("at most 65536"), "{err}");
        let err = api_error(&api, "\"security.protocol\" = \"carrier-pigeon\"");
        assert!(err.contains("not one of plaintext, ssl"), "{err}");
        let err = api_error(&api, "\"check.crcs\" = \"yes\"");
        assert!(err.contains("true or false"), "{err}");
    }

    #[test]
    fn the_operator_can_allow_more_properties_at_start() {
        let api = KafkaPropertyPolicy::api(["ssl.ca.location".to_owned()]);
        api_accepts(&api, "\"ssl.ca.location\" = \"/etc/kafka/ca.pem\"");
        // Only the ones named.
        let err = api_error(&api, "\"ssl.key.location\" = \"/etc/kafka/key.pem\"");
        assert!(
            err.starts_with("source.properties.ssl.key.location"),
            "{err}"
        );
        // A name allowed lifts its value bounds too.
        let api = KafkaPropertyPolicy::api(["fetch.max.bytes".to_owned()]);
        api_accepts(&api, "\"fetch.max.bytes\" = \"104857600\"");
    }

    #[test]
    fn an_api_spec_takes_credentials_only_from_weir_kafka_variables_of_the_server() {
        let api = KafkaPropertyPolicy::api([]);
        let err = api_error(&api, "\"sasl.password\" = \"hunter2\"");
        assert!(
            err.starts_with("source.properties.sasl.password: "),
            "{err}"
        );
        assert!(err.contains("sasl.password.env"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        let err = api_error(&api, "\"sasl.password.env\" = \"WEIR_TOKEN\"");
        assert!(err.contains("start with WEIR_KAFKA_"), "{err}");
        let err = api_error(&api, "\"sasl.password.env\" = \"WEIR_KAFKA_UNSET\"");
        assert!(err.contains("no WEIR_KAFKA_UNSET"), "{err}");
        // `.env` does not open a property that is not allowed.
        let err = api_error(
            &api,
            "\"plugin.library.paths.env\" = \"WEIR_KAFKA_PASSWORD\"",
        );
        assert!(err.contains("loads code"), "{err}");
    }

    #[test]
    fn a_property_and_its_env_form_are_not_both_set_and_the_variable_is_a_name() {
        let err = error_of(&KAFKA.replace(
            "group = \"weir-fraud\"",
            "group = \"weir-fraud\"\nproperties = { \"sasl.password\" = \"a\", \"sasl.password.env\" = \"B\" }",
        ));
        assert!(
            err.starts_with("source.properties.sasl.password.env: "),
            "{err}"
        );
        let err = error_of(&KAFKA.replace(
            "group = \"weir-fraud\"",
            "group = \"weir-fraud\"\nproperties = { \"sasl.password.env\" = \"A=B\" }",
        ));
        assert!(err.contains("not an environment variable name"), "{err}");
        let err = error_of(&KAFKA.replace(
            "group = \"weir-fraud\"",
            "group = \"weir-fraud\"\nproperties = { \"group.id.env\" = \"G\" }",
        ));
        assert!(
            err.starts_with("source.properties.group.id.env: Weir sets"),
            "{err}"
        );
    }

    #[test]
    fn a_kafka_source_needs_topics_and_a_group() {
        let err = error_of(&KAFKA.replace("[\"transactions\"]", "[]"));
        assert!(err.starts_with("source.topics:"), "{err}");
        let err = error_of(&KAFKA.replace("group = \"weir-fraud\"", "group = \"\""));
        assert!(err.starts_with("source.group:"), "{err}");
    }
}
