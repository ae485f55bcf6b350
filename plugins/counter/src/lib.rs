// Test-only: counts events per key and says which build counted them.
//
// For every event it emits `{"key": <key>, "count": <n so far>, "version":
// <crate name>, "seq": <the event's "seq" or null>}` to the main output.
// `counter-v2` is this same source under another crate name, so a test can
// swap one for the other and see both the version change and the count
// (keyed state) carry on. `{"fail_open": true}` makes `open` refuse, for
// tests of refused starts and swaps.
//
// Plain comments, not `//!`: counter-v2 `include!`s this file, and an
// included file cannot carry inner doc comments.

use serde::{Deserialize, Serialize};
use weir_sdk::{Context, Error, Event, Processor, ValueState};

/// The crate name: `counter` or `counter-v2`, fixed at compile time.
pub const VERSION: &str = env!("CARGO_PKG_NAME");

/// The name of the per-key count state.
pub const COUNT_STATE: &str = "count";

/// The reason `open` gives when told to fail.
pub const REFUSAL: &str = "refusing to open: fail_open is set";

/// The plugin's config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Make `open` fail.
    #[serde(default)]
    pub fail_open: bool,
}

/// What goes to the main output (field order is part of the format).
#[derive(Debug, Serialize)]
struct Count<'a> {
    key: &'a str,
    count: u64,
    version: &'static str,
    seq: serde_json::Value,
}

/// The only field of an input event the counter reads.
#[derive(Debug, Deserialize)]
struct Input {
    #[serde(default)]
    seq: serde_json::Value,
}

/// The counter.
pub struct Counter {
    count: ValueState<u64>,
}

impl Processor for Counter {
    type Config = Config;

    fn open(config: Config) -> Result<Self, Error> {
        if config.fail_open {
            return Err(Error::msg(REFUSAL));
        }
        Ok(Counter {
            count: ValueState::new(COUNT_STATE),
        })
    }

    fn process(&mut self, ctx: &mut Context, event: &Event) -> Result<(), Error> {
        let count = self.count.get()?.unwrap_or(0).saturating_add(1);
        self.count.set(&count)?;
        // Events that are not JSON objects are counted too, with no seq.
        let seq = event
            .json::<Input>()
            .map(|input| input.seq)
            .unwrap_or_default();
        let key = String::from_utf8_lossy(ctx.key());
        ctx.emit_json(&Count {
            key: &key,
            count,
            version: VERSION,
            seq,
        })
    }
}

weir_sdk::export!(Counter);

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};
    use weir_sdk::testing::Harness;

    use super::*;

    fn outputs(h: &Harness<Counter>) -> Vec<Value> {
        let outputs = h.outputs("main").iter();
        outputs.map(|o| o.json().unwrap()).collect()
    }

    #[test]
    fn each_event_emits_the_running_count_of_its_key() {
        let mut h = Harness::<Counter>::open(Config::default()).unwrap();
        for (key, seq) in [("a", 1), ("b", 2), ("a", 3)] {
            h.process(Event::new_json(key, &json!({"seq": seq})))
                .unwrap();
        }
        assert_eq!(
            outputs(&h),
            [
                json!({"key": "a", "count": 1, "version": VERSION, "seq": 1}),
                json!({"key": "b", "count": 1, "version": VERSION, "seq": 2}),
                json!({"key": "a", "count": 2, "version": VERSION, "seq": 3}),
            ]
        );
        assert_eq!(h.state::<u64>("a", COUNT_STATE), Some(2));
        assert_eq!(h.state::<u64>("b", COUNT_STATE), Some(1));
    }

    #[test]
    fn an_event_without_a_seq_gets_a_null_seq() {
        let mut h = Harness::<Counter>::open(Config::default()).unwrap();
        h.process(Event::new_json("k", &json!({"other": 1})))
            .unwrap();
        h.process(Event::new("k", "not json")).unwrap();
        h.process(Event::new_json("k", &json!({"seq": "s-1"})))
            .unwrap();
        let seqs: Vec<Value> = outputs(&h).iter().map(|o| o["seq"].clone()).collect();
        assert_eq!(seqs, [Value::Null, Value::Null, json!("s-1")]);
        assert_eq!(h.state::<u64>("k", COUNT_STATE), Some(3));
    }

    #[test]
    fn the_version_is_the_crate_name() {
        assert!(VERSION == "counter" || VERSION == "counter-v2", "{VERSION}");
    }

    #[test]
    fn fail_open_makes_open_refuse() {
        let error = Harness::<Counter>::open_json(r#"{"fail_open": true}"#)
            .err()
            .unwrap();
        assert_eq!(error.message(), REFUSAL);
        assert!(Harness::<Counter>::open_json(r#"{"fail_open": false}"#).is_ok());
        assert!(Harness::<Counter>::open_json("{}").is_ok());
    }
}
