//! W1: keeps the large transactions.
//!
//! A transaction passes when `amount_cents > min_exclusive`; it goes to the
//! main output as the text `<user_id>:<amount_cents>` (not JSON), keyed by
//! the event's key.

use serde::Deserialize;
use weir_sdk::{Context, Error, Event, Processor};

/// The plugin's config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Amounts strictly above this pass.
    #[serde(default = "default_min_exclusive")]
    pub min_exclusive: u64,
}

fn default_min_exclusive() -> u64 {
    50_000
}

impl Default for Config {
    fn default() -> Self {
        Config {
            min_exclusive: default_min_exclusive(),
        }
    }
}

/// An input record (other fields, like `ts`, are ignored).
#[derive(Debug, Deserialize)]
struct Transaction {
    user_id: u64,
    amount_cents: u64,
}

/// The amount filter.
pub struct AmountFilter {
    config: Config,
    // Reused across events: the output is formatted on the hot path.
    line: Vec<u8>,
}

impl Processor for AmountFilter {
    type Config = Config;

    fn open(config: Config) -> Result<Self, Error> {
        Ok(AmountFilter {
            config,
            line: Vec::with_capacity(32),
        })
    }

    fn process(&mut self, ctx: &mut Context, event: &Event) -> Result<(), Error> {
        let transaction: Transaction = event.json()?;
        if transaction.amount_cents > self.config.min_exclusive {
            // itoa, not `write!`: the formatting machinery was a tenth of
            // the plugin's time.
            let mut digits = itoa::Buffer::new();
            self.line.clear();
            self.line
                .extend_from_slice(digits.format(transaction.user_id).as_bytes());
            self.line.push(b':');
            self.line
                .extend_from_slice(digits.format(transaction.amount_cents).as_bytes());
            ctx.emit(&self.line);
        }
        Ok(())
    }
}

weir_sdk::export!(AmountFilter);

#[cfg(test)]
mod tests {
    use serde_json::json;
    use weir_sdk::testing::Harness;

    use super::*;

    fn transaction(user_id: u64, amount_cents: u64) -> Event {
        let value = json!({"user_id": user_id, "amount_cents": amount_cents, "ts": 1});
        Event::new_json(user_id.to_string(), &value).with_timestamp(1)
    }

    fn main_output(harness: &Harness<AmountFilter>) -> Vec<String> {
        let outputs = harness.outputs("main").iter();
        outputs
            .map(|o| String::from_utf8(o.value.clone()).unwrap())
            .collect()
    }

    #[test]
    fn amounts_above_the_threshold_pass_as_user_and_amount_text() {
        let mut h = Harness::<AmountFilter>::open(Config::default()).unwrap();
        h.process(transaction(42, 50_001)).unwrap();
        assert_eq!(main_output(&h), ["42:50001"]);
        let output = &h.outputs("main")[0];
        assert_eq!(output.key.as_deref(), Some(&b"42"[..]));
        assert_eq!(output.timestamp, Some(1));
    }

    #[test]
    fn amounts_at_or_below_the_threshold_are_dropped() {
        let mut h = Harness::<AmountFilter>::open(Config::default()).unwrap();
        h.process(transaction(1, 50_000)).unwrap();
        h.process(transaction(2, 0)).unwrap();
        h.process(transaction(3, 99_999)).unwrap();
        assert_eq!(main_output(&h), ["3:99999"]);
    }

    #[test]
    fn the_threshold_comes_from_config() {
        let mut h = Harness::<AmountFilter>::open_json(r#"{"min_exclusive": 10}"#).unwrap();
        h.process(transaction(1, 10)).unwrap();
        h.process(transaction(2, 11)).unwrap();
        assert_eq!(main_output(&h), ["2:11"]);
        let mut h = Harness::<AmountFilter>::open_json("null").unwrap();
        h.process(transaction(1, 50_000)).unwrap();
        h.process(transaction(2, 50_001)).unwrap();
        assert_eq!(
            main_output(&h),
            ["2:50001"],
            "an absent config is the default"
        );
    }

    #[test]
    fn a_malformed_transaction_is_rejected() {
        let mut h = Harness::<AmountFilter>::open(Config::default()).unwrap();
        let error = h.process(Event::new("1", r#"{"user_id": 1}"#)).unwrap_err();
        assert!(
            error.message().contains("missing field `amount_cents`"),
            "{error}"
        );
        assert!(h.process(Event::new("1", "{")).is_err());
        assert!(main_output(&h).is_empty());
    }
}
