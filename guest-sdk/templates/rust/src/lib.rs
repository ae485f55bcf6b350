//! {{name}}: a Weir plugin.
//!
//! Per key it counts events (state `count`) and emits the running count to
//! `main`; events of at least `large_amount` also go to the side output
//! `large`; and once a key has seen no event for `idle_ms` of event time, a
//! timer reports it to the side output `idle`.

use serde::{Deserialize, Serialize};
use weir_sdk::{Context, Error, Event, Processor, Timer, ValueState};

/// The plugin's config (the pipeline's `[plugin] config`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub large_amount: u64,
    pub idle_ms: i64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            large_amount: 1_000,
            idle_ms: 60_000,
        }
    }
}

/// The fields of an event this plugin reads.
#[derive(Debug, Deserialize)]
struct Input {
    amount: u64,
}

#[derive(Serialize)]
struct Count<'a> {
    key: &'a str,
    count: u64,
}

#[derive(Serialize)]
struct Idle<'a> {
    key: &'a str,
    count: u64,
    last_seen: i64,
}

pub struct Plugin {
    config: Config,
    count: ValueState<u64>,
    last_seen: ValueState<i64>,
}

impl Processor for Plugin {
    type Config = Config;

    fn open(config: Config) -> Result<Self, Error> {
        if config.idle_ms <= 0 {
            return Err(Error::msg("idle_ms must be positive"));
        }
        Ok(Plugin {
            config,
            count: ValueState::new("count"),
            last_seen: ValueState::new("last_seen"),
        })
    }

    fn process(&mut self, ctx: &mut Context, event: &Event) -> Result<(), Error> {
        let input: Input = event.json()?;
        let key = String::from_utf8_lossy(ctx.key()).into_owned();
        let count = self.count.get()?.unwrap_or(0) + 1;
        self.count.set(&count)?;
        ctx.emit_json(&Count { key: &key, count })?;
        if input.amount >= self.config.large_amount {
            ctx.emit_to("large", event.value());
        }
        if let Some(ts) = ctx.timestamp() {
            self.last_seen.set(&ts)?;
            ctx.register_event_time_timer(ts + self.config.idle_ms);
        }
        Ok(())
    }

    fn on_timer(&mut self, ctx: &mut Context, timer: &Timer) -> Result<(), Error> {
        // Only the timer of the key's latest event reports; earlier ones are stale.
        let Some(last_seen) = self.last_seen.get()? else {
            return Ok(());
        };
        if timer.timestamp() == last_seen + self.config.idle_ms {
            let key = String::from_utf8_lossy(ctx.key()).into_owned();
            let count = self.count.get()?.unwrap_or(0);
            ctx.emit_json_to(
                "idle",
                &Idle {
                    key: &key,
                    count,
                    last_seen,
                },
            )?;
        }
        Ok(())
    }
}

weir_sdk::export!(Plugin);

/// Native tests: `cargo test` runs the plugin without wasm.
#[cfg(test)]
mod tests {
    use serde_json::json;
    use weir_sdk::testing::Harness;

    use super::*;

    fn event(key: &str, ts: i64, amount: u64) -> Event {
        Event::new_json(key, &json!({"key": key, "ts": ts, "amount": amount})).with_timestamp(ts)
    }

    #[test]
    fn counts_per_key_and_routes_large_amounts() {
        let mut h = Harness::<Plugin>::open(Config::default()).unwrap();
        h.process(event("alice", 1_000, 250)).unwrap();
        h.process(event("alice", 2_000, 5_000)).unwrap();
        h.process(event("bob", 3_000, 10)).unwrap();
        assert_eq!(h.state::<u64>("alice", "count"), Some(2));
        assert_eq!(h.outputs("main").len(), 3);
        assert_eq!(h.outputs("large").len(), 1);
    }

    #[test]
    fn an_idle_key_is_reported_once() {
        let mut h = Harness::<Plugin>::open(Config::default()).unwrap();
        h.process(event("alice", 1_000, 1)).unwrap();
        h.process(event("alice", 5_000, 1)).unwrap();
        h.advance_watermark(65_000).unwrap();
        let idle: Vec<serde_json::Value> =
            h.outputs("idle").iter().map(|o| o.json().unwrap()).collect();
        assert_eq!(idle, [json!({"key": "alice", "count": 2, "last_seen": 5_000})]);
    }
}
