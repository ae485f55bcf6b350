//! Test-only: the counter (see `plugins/counter`) with a new state format,
//! to test state migration. It keeps `{n, migrated}` per key where the
//! counter kept a bare `u64`, so it declares state version 1 and migrates
//! version 0 counts. It refuses to migrate a count of exactly 13, so tests
//! can make a migration fail on chosen data.
//!
//! For every event it emits `{"key", "count", "version": "counter-v3",
//! "seq", "migrated"}`, where `migrated` says whether this key's count came
//! from the old format.

use serde::{Deserialize, Serialize};
use weir_sdk::{Context, Error, Event, Processor, ValueState, decode_stored, encode_stored};

/// The count state, in its new format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Count {
    pub n: u64,
    /// Carried over from a state version 0 count.
    pub migrated: bool,
}

/// The count a migration refuses, for tests of a failed migration.
pub const UNMIGRATABLE: u64 = 13;

#[derive(Debug, Serialize)]
struct Output<'a> {
    key: &'a str,
    count: u64,
    version: &'static str,
    seq: serde_json::Value,
    migrated: bool,
}

#[derive(Debug, Deserialize)]
struct Input {
    #[serde(default)]
    seq: serde_json::Value,
}

pub struct CounterV3 {
    count: ValueState<Count>,
}

impl Processor for CounterV3 {
    type Config = serde_json::Value;

    const STATE_VERSION: u32 = 1;

    fn open(_config: serde_json::Value) -> Result<Self, Error> {
        Ok(CounterV3 {
            count: ValueState::new("count"),
        })
    }

    fn process(&mut self, ctx: &mut Context, event: &Event) -> Result<(), Error> {
        let before = self.count.get()?.unwrap_or(Count {
            n: 0,
            migrated: false,
        });
        let count = Count {
            n: before.n + 1,
            ..before
        };
        self.count.set(&count)?;
        let seq = event
            .json::<Input>()
            .map(|input| input.seq)
            .unwrap_or_default();
        let key = String::from_utf8_lossy(ctx.key());
        ctx.emit_json(&Output {
            key: &key,
            count: count.n,
            version: "counter-v3",
            seq,
            migrated: count.migrated,
        })
    }

    fn migrate(from: u32, state: &str, value: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        if from != 0 || state != "count" {
            return Err(Error::msg(format_args!(
                "cannot migrate state {state:?} from version {from}"
            )));
        }
        let n: u64 = decode_stored(state, value)?;
        if n == UNMIGRATABLE {
            return Err(Error::msg(
                "a count of 13 is unlucky: refusing to migrate it",
            ));
        }
        encode_stored(state, &Count { n, migrated: true }).map(Some)
    }
}

weir_sdk::export!(CounterV3);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_0_count_becomes_a_migrated_count() {
        let old = encode_stored("count", &41u64).unwrap();
        let new = CounterV3::migrate(0, "count", &old).unwrap().unwrap();
        let count: Count = decode_stored("count", &new).unwrap();
        assert_eq!(
            count,
            Count {
                n: 41,
                migrated: true
            }
        );
    }

    #[test]
    fn thirteen_and_unknown_states_are_refused() {
        let old = encode_stored("count", &13u64).unwrap();
        assert!(CounterV3::migrate(0, "count", &old).is_err());
        assert!(CounterV3::migrate(0, "other", &old).is_err());
        assert!(CounterV3::migrate(1, "count", &old).is_err());
    }
}
