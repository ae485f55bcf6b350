//! Semantic checks of a parsed spec. Each error names the field's path.

use std::collections::HashSet;
use std::path::PathBuf;

use super::{KeySource, PipelineSpec, SinkSpec, SourceSpec, StateBackendKind, TimestampSource};
use crate::runtime::json_field::JsonPointer;

/// Checkpoints more often than this cost more than they save.
pub const MIN_CHECKPOINT_INTERVAL_MS: u64 = 10;

/// The most subtasks a pipeline can have: one per key group.
pub const MAX_PARALLELISM: u32 = crate::runtime::key_groups::KEY_GROUPS as u32;
/// The largest per-instance memory cap the engine's pool is sized for.
pub const MAX_MEMORY_MB: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read spec {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("spec is not valid: {0}")]
    Syntax(String),
    /// `path` is `.` for the spec as a whole (a missing top-level field).
    #[error("{}{message}", if path == "." { String::new() } else { format!("{path}: ") })]
    Field { path: String, message: String },
}

pub(super) fn field(path: &str, message: impl Into<String>) -> SpecError {
    SpecError::Field {
        path: path.to_owned(),
        message: message.into(),
    }
}

pub(super) fn timestamp_source(text: &str) -> Result<TimestampSource, String> {
    match text {
        "record" => Ok(TimestampSource::Record),
        "processing" => Ok(TimestampSource::Processing),
        _ => JsonPointer::parse(text)
            .map(TimestampSource::Field)
            .map_err(|e| {
                format!("{text:?} is neither \"record\", \"processing\" nor a JSON pointer: {e}")
            }),
    }
}

pub(super) fn key_source(text: &str) -> Result<KeySource, String> {
    match text {
        "record-key" => Ok(KeySource::RecordKey),
        "" => Err("a JSON pointer (such as \"/user_id\") or \"record-key\" is required".into()),
        _ => JsonPointer::parse(text)
            .map(KeySource::Field)
            .map_err(|e| format!("{text:?} is neither \"record-key\" nor a JSON pointer: {e}")),
    }
}

impl PipelineSpec {
    pub(super) fn validate(&self) -> Result<(), SpecError> {
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(field(
                "name",
                format!(
                    "{:?} is not a valid pipeline name: use letters, digits, '-' and '_'",
                    self.name
                ),
            ));
        }
        if self.parallelism == 0 || self.parallelism > MAX_PARALLELISM {
            return Err(field(
                "parallelism",
                format!(
                    "must be between 1 and {MAX_PARALLELISM} (the number of key groups), got {}",
                    self.parallelism
                ),
            ));
        }
        let source_name = match &self.source {
            SourceSpec::Generator {
                users,
                events_per_second,
                ..
            } => {
                if *users == 0 {
                    return Err(field("source.users", "must be at least 1"));
                }
                if *events_per_second == Some(0) {
                    return Err(field(
                        "source.events_per_second",
                        "must be at least 1 (leave it out for no limit)",
                    ));
                }
                "generator"
            }
            SourceSpec::File {
                path,
                max_line_bytes,
            } => {
                if path.as_os_str().is_empty() {
                    return Err(field("source.path", "must not be empty"));
                }
                if !(1..=super::MAX_LINE_BYTES_LIMIT).contains(max_line_bytes) {
                    return Err(field(
                        "source.max_line_bytes",
                        format!("must be between 1 and {}", super::MAX_LINE_BYTES_LIMIT),
                    ));
                }
                "file"
            }
            SourceSpec::Http { max_pending_bytes } => {
                if *max_pending_bytes == 0 {
                    return Err(field("source.max_pending_bytes", "must be at least 1"));
                }
                "http"
            }
            SourceSpec::Kafka(kafka) => {
                super::kafka::validate_source(kafka)?;
                "kafka"
            }
        };
        // Only Kafka records carry a key and a timestamp of their own.
        let has_record_metadata = matches!(self.source, SourceSpec::Kafka(_));
        if let Some(et) = &self.event_time {
            match timestamp_source(&et.field).map_err(|m| field("event_time.field", m))? {
                TimestampSource::Record if has_record_metadata => {}
                TimestampSource::Record => {
                    return Err(field(
                        "event_time.field",
                        format!(
                            "the {source_name} source has no record timestamps; \
                             use a JSON pointer such as \"/ts\", or \"processing\""
                        ),
                    ));
                }
                TimestampSource::Field(_) | TimestampSource::Processing => {}
            }
            if et.idle_timeout_ms == Some(0) {
                return Err(field(
                    "event_time.idle_timeout_ms",
                    "must be positive (leave it out to never mark a source idle)",
                ));
            }
        }
        match key_source(&self.key_by.field).map_err(|m| field("key_by.field", m))? {
            KeySource::RecordKey if has_record_metadata => {}
            KeySource::RecordKey => {
                return Err(field(
                    "key_by.field",
                    format!(
                        "the {source_name} source has no record keys; \
                         use a JSON pointer into the value such as \"/user_id\""
                    ),
                ));
            }
            KeySource::Field(_) => {}
        }
        let named = [
            self.plugin.crate_dir.is_some(),
            self.plugin.wasm.is_some(),
            self.plugin.digest.is_some(),
        ];
        match named.iter().filter(|&&set| set).count() {
            0 => {
                return Err(field(
                    "plugin",
                    "name the plugin: set `crate` (a plugin crate to build), `wasm` (a built component) \
                     or `digest` (a component uploaded to `weir serve`)",
                ));
            }
            1 => {}
            _ => {
                return Err(field(
                    "plugin",
                    "set only one of `crate`, `wasm` and `digest`",
                ));
            }
        }
        if let Some(digest) = &self.plugin.digest
            && (digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(field(
                "plugin.digest",
                format!("{digest:?} is not a sha256 digest (64 hex digits)"),
            ));
        }
        if self.limits.call_timeout_ms == 0 || self.limits.call_timeout_ms > 60_000 {
            return Err(field(
                "limits.call_timeout_ms",
                format!(
                    "must be between 1 and 60000, got {}",
                    self.limits.call_timeout_ms
                ),
            ));
        }
        if let Some(answer) = self.limits.answer_timeout_ms
            && (!super::ANSWER_TIMEOUT_MS_RANGE.contains(&answer)
                || answer <= self.limits.call_timeout_ms)
        {
            return Err(field(
                "limits.answer_timeout_ms",
                format!(
                    "must be between {} and {} and longer than limits.call_timeout_ms ({}), got {answer}",
                    super::ANSWER_TIMEOUT_MS_RANGE.start(),
                    super::ANSWER_TIMEOUT_MS_RANGE.end(),
                    self.limits.call_timeout_ms
                ),
            ));
        }
        if self.limits.memory_mb == 0 || self.limits.memory_mb > MAX_MEMORY_MB {
            return Err(field(
                "limits.memory_mb",
                format!(
                    "must be between 1 and {MAX_MEMORY_MB}, got {}",
                    self.limits.memory_mb
                ),
            ));
        }
        if let Some(checkpoint) = &self.checkpoint {
            if checkpoint.interval_ms < MIN_CHECKPOINT_INTERVAL_MS {
                return Err(field(
                    "checkpoint.interval_ms",
                    format!(
                        "must be at least {MIN_CHECKPOINT_INTERVAL_MS}, got {}",
                        checkpoint.interval_ms
                    ),
                ));
            }
            if checkpoint.retain == 0 {
                return Err(field(
                    "checkpoint.retain",
                    "must keep at least 1 checkpoint",
                ));
            }
            if checkpoint.dir.as_os_str().is_empty() {
                return Err(field("checkpoint.dir", "must not be empty"));
            }
        }
        if self.state.backend == StateBackendKind::Rocksdb {
            if self.state.dir.as_os_str().is_empty() {
                return Err(field("state.dir", "must not be empty"));
            }
            if self.state.cache_entries == 0 {
                return Err(field("state.cache_entries", "must be at least 1"));
            }
        }
        if self
            .restore_from
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return Err(field("restore_from", "must not be empty"));
        }
        if let SourceSpec::Kafka(kafka) = &self.source
            && kafka.scale_out.is_some()
        {
            super::kafka::validate_scale_out(self)?;
        }
        let mut file_paths = HashSet::new();
        for (i, sink) in self.sinks.iter().enumerate() {
            if sink.output().is_empty() {
                return Err(field(&format!("sink[{i}].output"), "must not be empty"));
            }
            if let SinkSpec::Kafka(kafka) = sink {
                super::kafka::validate_sink(i, kafka)?;
            }
            if let SinkSpec::File { path, .. } = sink {
                if path.as_os_str().is_empty() {
                    return Err(field(&format!("sink[{i}].path"), "must not be empty"));
                }
                if !file_paths.insert(path.clone()) {
                    return Err(field(
                        &format!("sink[{i}].path"),
                        format!("{} is already written by another sink", path.display()),
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        name = "fraud"
        parallelism = 2
        [source]
        kind = "generator"
        events = 1000
        [event_time]
        field = "/ts"
        [key_by]
        field = "/user_id"
        [plugin]
        wasm = "fraud.wasm"
        config = { threshold = 5 }
        [[sink]]
        output = "alerts"
        kind = "file"
        path = "alerts.jsonl"
    "#;

    fn error_of(text: &str) -> String {
        PipelineSpec::from_toml(text).unwrap_err().to_string()
    }

    #[test]
    fn a_complete_spec_parses_with_defaults_filled_in() {
        let spec = PipelineSpec::from_toml(GOOD).unwrap();
        assert_eq!(spec.parallelism, 2);
        assert_eq!(spec.limits.call_timeout_ms, 100);
        assert_eq!(spec.limits.memory_mb, 64);
        assert_eq!(spec.on_error, super::super::OnError::DeadLetter);
        assert_eq!(spec.plugin.config["threshold"], 5);
        assert_eq!(spec.sinks.len(), 1);
    }

    #[test]
    fn an_unknown_source_kind_names_the_field_and_the_choices() {
        let err = error_of(&GOOD.replace("\"generator\"", "\"kafkaa\""));
        assert!(err.contains("source"), "{err}");
        assert!(err.contains("kafkaa"), "{err}");
        assert!(err.contains("generator"), "{err}");
    }

    #[test]
    fn a_generator_rate_of_zero_is_refused() {
        let err = error_of(&GOOD.replace("events = 1000", "events = 1000\nevents_per_second = 0"));
        assert!(err.starts_with("source.events_per_second:"), "{err}");
        let spec = GOOD.replace("events = 1000", "events = 1000\nevents_per_second = 5");
        assert!(PipelineSpec::from_toml(&spec).is_ok());
    }

    #[test]
    fn a_missing_plugin_section_is_reported() {
        let text = GOOD.replace("[plugin]", "[plugin_x]");
        let err = error_of(&text);
        assert!(err.contains("plugin"), "{err}");
    }

    #[test]
    fn a_plugin_without_crate_or_wasm_is_reported() {
        let err = error_of(&GOOD.replace("wasm = \"fraud.wasm\"", ""));
        assert!(err.starts_with("plugin:"), "{err}");
        assert!(err.contains("`crate`"), "{err}");
    }

    #[test]
    fn a_bad_json_pointer_names_the_field() {
        let err = error_of(&GOOD.replace("\"/user_id\"", "\"user_id\""));
        assert!(err.starts_with("key_by.field:"), "{err}");
        assert!(err.contains("'/'"), "{err}");
    }

    #[test]
    fn checkpoint_and_state_settings_are_checked() {
        let err = error_of(&format!("{GOOD}\n[checkpoint]\ninterval_ms = 1\n"));
        assert!(err.starts_with("checkpoint.interval_ms:"), "{err}");
        let err = error_of(&format!("{GOOD}\n[checkpoint]\nretain = 0\n"));
        assert!(err.starts_with("checkpoint.retain:"), "{err}");
        let err = error_of(&GOOD.replace(
            "[[sink]]",
            "[state]\nbackend = \"rocksdb\"\ncache_entries = 0\n[[sink]]",
        ));
        assert!(err.starts_with("state.cache_entries:"), "{err}");
        let err = error_of(&GOOD.replace("[[sink]]", "[state]\nbackend = \"rocks\"\n[[sink]]"));
        assert!(err.contains("rocks"), "{err}");
    }

    #[test]
    fn every_example_is_a_valid_spec() {
        let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let mut checked = 0;
        for entry in std::fs::read_dir(&examples).unwrap() {
            let spec = entry.unwrap().path().join("pipeline.toml");
            if spec.exists() {
                PipelineSpec::from_toml_file(&spec)
                    .unwrap_or_else(|e| panic!("{}: {e}", spec.display()));
                checked += 1;
            }
        }
        assert!(checked >= 2, "found {checked} examples");
    }

    #[test]
    fn zero_parallelism_is_rejected() {
        let err = error_of(&GOOD.replace("parallelism = 2", "parallelism = 0"));
        assert!(err.starts_with("parallelism:"), "{err}");
    }

    #[test]
    fn unknown_fields_are_rejected_with_their_path() {
        let err = error_of(&GOOD.replace("events = 1000", "events = 1000\nevnts = 3"));
        assert!(err.contains("evnts"), "{err}");
    }

    #[test]
    fn record_timestamps_need_a_source_that_has_them() {
        let err = error_of(&GOOD.replace("field = \"/ts\"", "field = \"record\""));
        assert!(err.starts_with("event_time.field:"), "{err}");
    }

    #[test]
    fn json_specs_use_the_same_schema() {
        let json = br#"{"name":"p","source":{"kind":"generator","events":5},
            "key_by":{"field":"/k"},"plugin":{"wasm":"x.wasm"},
            "sink":[{"output":"main","kind":"null"}]}"#;
        let spec = PipelineSpec::from_json(json).unwrap();
        assert_eq!(spec.parallelism, 1);
        let err = PipelineSpec::from_json(br#"{"name":"p"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("source"), "{err}");
    }

    #[test]
    fn two_file_sinks_cannot_share_a_path() {
        let text = format!(
            "{GOOD}\n[[sink]]\noutput = \"main\"\nkind = \"file\"\npath = \"alerts.jsonl\"\n"
        );
        let err = error_of(&text);
        assert!(err.starts_with("sink[1].path:"), "{err}");
    }
}
