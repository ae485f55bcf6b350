//! Emits every event unchanged to the main output, with the event's key.
//!
//! With a `tag` in the config it wraps each (JSON) value instead, as
//! `{"tag":<tag>,"value":<value>}`, so tests can tell two versions of a
//! pipeline apart across a swap.

use serde::Deserialize;
use serde::de::IgnoredAny;
use weir_sdk::{Context, Error, Event, Processor};

/// The plugin's config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Wrap each value with this tag.
    #[serde(default)]
    pub tag: Option<String>,
}

/// The passthrough.
pub struct Passthrough {
    /// `{"tag":<tag>,"value":`, built once; `None` without a tag.
    prefix: Option<Vec<u8>>,
}

impl Processor for Passthrough {
    type Config = Config;

    fn open(config: Config) -> Result<Self, Error> {
        let prefix = match config.tag {
            Some(tag) => {
                let mut prefix = br#"{"tag":"#.to_vec();
                serde_json::to_writer(&mut prefix, &tag)?;
                prefix.extend_from_slice(br#","value":"#);
                Some(prefix)
            }
            None => None,
        };
        Ok(Passthrough { prefix })
    }

    fn process(&mut self, ctx: &mut Context, event: &Event) -> Result<(), Error> {
        let Some(prefix) = &self.prefix else {
            ctx.emit(event.value());
            return Ok(());
        };
        // Validated, not re-serialized: the value goes out byte for byte.
        event.json::<IgnoredAny>()?;
        let mut wrapped = Vec::with_capacity(prefix.len() + event.value().len() + 1);
        wrapped.extend_from_slice(prefix);
        wrapped.extend_from_slice(event.value());
        wrapped.push(b'}');
        ctx.emit(wrapped);
        Ok(())
    }
}

weir_sdk::export!(Passthrough);

#[cfg(test)]
mod tests {
    use serde_json::json;
    use weir_sdk::testing::{Harness, Output};

    use super::*;

    #[test]
    fn every_value_goes_out_unchanged_with_its_key_and_timestamp() {
        let mut h = Harness::<Passthrough>::open(Config::default()).unwrap();
        h.process(Event::new("k", "not even json").with_timestamp(9))
            .unwrap();
        h.process(Event::unkeyed(vec![0, 255])).unwrap();
        let key = Some(b"k".to_vec());
        assert_eq!(
            h.outputs("main"),
            [
                Output {
                    key,
                    value: b"not even json".to_vec(),
                    timestamp: Some(9)
                },
                Output {
                    key: None,
                    value: vec![0, 255],
                    timestamp: None
                },
            ]
        );
    }

    #[test]
    fn a_tag_wraps_the_original_json_value() {
        let mut h = Harness::<Passthrough>::open_json(r#"{"tag": "v\"2"}"#).unwrap();
        h.process(Event::new("k", r#"{"b": 1, "a": [true]}"#))
            .unwrap();
        let output = &h.outputs("main")[0];
        assert_eq!(
            output.value,
            br#"{"tag":"v\"2","value":{"b": 1, "a": [true]}}"#
        );
        assert_eq!(
            output.json::<serde_json::Value>().unwrap(),
            json!({"tag": "v\"2", "value": {"b": 1, "a": [true]}})
        );
        assert_eq!(output.key.as_deref(), Some(&b"k"[..]));
    }

    #[test]
    fn with_a_tag_a_value_that_is_not_json_is_rejected() {
        let mut h = Harness::<Passthrough>::open_json(r#"{"tag": "t"}"#).unwrap();
        assert!(h.process(Event::new("k", "{")).is_err());
        assert!(h.process(Event::new("k", "1 2")).is_err());
        assert!(h.outputs("main").is_empty());
    }

    #[test]
    fn an_empty_or_null_config_means_no_tag() {
        for config in ["", "null", "{}", r#"{"tag": null}"#] {
            let mut h = Harness::<Passthrough>::open_json(config).unwrap();
            h.process(Event::new("k", "1")).unwrap();
            assert_eq!(h.outputs("main")[0].value, b"1", "{config:?}");
        }
    }
}
