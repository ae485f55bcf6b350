//! Kafka through librdkafka (the `rdkafka` crate): the source reads the
//! partitions of topics, one split each, with the offsets in Weir's
//! checkpoints; the sink writes through an idempotent producer flushed at
//! every checkpoint barrier.
//!
//! This module owns the client configuration both share and the names of
//! the headers the sink labels records with. It never decides anything about
//! time or keys: the runtime does.

mod group;
mod sink;
mod source;

use std::collections::BTreeMap;

use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;

pub use group::{GroupMember, PartitionOwner, TopicPartition};
pub use sink::{KafkaSink, KafkaSinkState};
pub use source::KafkaSource;

use super::ConnectorError;

/// The headers every record the Kafka sink writes carries.
pub mod headers {
    /// The pipeline's name.
    pub const PIPELINE: &str = "weir-pipeline";
    /// The output (`alerts`, `main`, ...).
    pub const OUTPUT: &str = "weir-output";
    /// What produced the record, the same in a run that replays it after a
    /// crash: `topic/partition@offset#n` for the `n`-th output of a source
    /// record, `timer:event-time:ts:keyhash#n` for one of a timer. With the
    /// pipeline and the output, the key consumers drop duplicates by.
    pub const ORIGIN: &str = "weir-origin";
    /// The checkpoint epoch it was written in: the id of the checkpoint that
    /// commits it (informational; a replay writes it in another epoch).
    pub const EPOCH: &str = "weir-epoch";
    /// Its number within the sink's epoch (informational, as the epoch).
    pub const SEQ: &str = "weir-seq";
}

/// How long metadata and offset look-ups at start may take before the
/// source gives up (the broker is unreachable).
const METADATA_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A client configuration, and the credentials in it: errors of creating
/// the client go through [`Client::create`], which blanks them out.
struct Client {
    config: ClientConfig,
    secrets: Vec<String>,
}

/// A client configuration: the user's properties (a `<name>.env` read from
/// the environment variable it names), then Weir's own (which validation
/// keeps the user from setting).
fn client_config(
    brokers: &str,
    user: &BTreeMap<String, String>,
    weir: &[(&str, &str)],
) -> Result<Client, ConnectorError> {
    let mut config = ClientConfig::new();
    let mut secrets = Vec::new();
    for (name, value) in user {
        match crate::spec::from_env(name) {
            Some(property) => {
                let secret = std::env::var(value).map_err(|_| ConnectorError::KafkaConfig {
                    property: name.clone(),
                    message: format!("the environment has no {value} (or it is not UTF-8)"),
                })?;
                config.set(property, &secret);
                secrets.push(secret);
            }
            None => {
                if crate::spec::SECRET_PROPERTIES.contains(&name.as_str()) {
                    secrets.push(value.clone());
                }
                config.set(name, value);
            }
        }
    }
    config.set("bootstrap.servers", brokers);
    for (name, value) in weir {
        config.set(*name, *value);
    }
    secrets.retain(|s| !s.is_empty());
    Ok(Client { config, secrets })
}

impl Client {
    /// Creates the consumer or producer; an error (librdkafka's config
    /// errors echo the value set) never carries a credential.
    fn create<C, T>(&self, context: C, what: &str) -> Result<T, ConnectorError>
    where
        C: rdkafka::ClientContext,
        T: rdkafka::config::FromClientConfigAndContext<C>,
    {
        self.config
            .create_with_context(context)
            .map_err(|e| kafka_err(what)(self.redact(e)))
    }

    fn redact(&self, error: KafkaError) -> KafkaError {
        let blank = |text: String| {
            self.secrets.iter().fold(text, |text, secret| {
                text.replace(secret.as_str(), "<redacted>")
            })
        };
        match error {
            KafkaError::ClientConfig(code, desc, key, value) => {
                KafkaError::ClientConfig(code, blank(desc), key, blank(value))
            }
            KafkaError::ClientCreation(message) => KafkaError::ClientCreation(blank(message)),
            other => other,
        }
    }
}

fn kafka_err(what: impl Into<String>) -> impl FnOnce(KafkaError) -> ConnectorError {
    let what = what.into();
    move |source| ConnectorError::Kafka { what, source }
}

#[cfg(test)]
mod tests;
