//! Test-only: exercises value, map and list state on every event, so the
//! end-to-end tests can compare what a real component sees against a model
//! (keys repeat within a batch, where the guest SDK's overlay answers reads,
//! and across batches, where the host's state does).
//!
//! For an event `{"n": N}`: count += 1; append N to `history`; put
//! `N % 3 → N` in `seen`; then remove `N % 3` if `N % 5 == 0`, clear
//! `history` if `N % 7 == 0`, clear `seen` if `N % 11 == 0`; emit what the
//! states hold afterwards.

use serde::{Deserialize, Serialize};
use weir_sdk::{Context, Error, Event, ListState, MapState, Processor, ValueState};

#[derive(Deserialize)]
struct Input {
    n: u64,
}

/// What the states hold after an event.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Observed {
    pub n: u64,
    pub count: u64,
    pub history: Vec<u64>,
    pub seen: Vec<(u64, u64)>,
    pub has_zero: bool,
}

pub struct StateProbe {
    count: ValueState<u64>,
    seen: MapState<u64, u64>,
    history: ListState<u64>,
}

impl Processor for StateProbe {
    type Config = ();

    fn open(_: ()) -> Result<Self, Error> {
        Ok(StateProbe {
            count: ValueState::new("count"),
            seen: MapState::new("seen"),
            history: ListState::new("history"),
        })
    }

    fn process(&mut self, ctx: &mut Context, event: &Event) -> Result<(), Error> {
        let n = event.json::<Input>()?.n;
        let count = self.count.get()?.unwrap_or(0) + 1;
        self.count.set(&count)?;
        self.history.append(&n)?;
        self.seen.put(&(n % 3), &n)?;
        if n % 5 == 0 {
            self.seen.remove(&(n % 3))?;
        }
        if n % 7 == 0 {
            self.history.clear();
        }
        if n % 11 == 0 {
            self.seen.clear();
        }
        ctx.emit_json(&Observed {
            n,
            count,
            history: self.history.read()?,
            seen: self.seen.entries()?,
            has_zero: self.seen.contains(&0)?,
        })
    }
}

weir_sdk::export!(StateProbe);

#[cfg(test)]
mod tests {
    use super::*;
    use weir_sdk::testing::Harness;

    #[test]
    fn the_states_follow_the_rules_in_the_harness() {
        let mut h = Harness::<StateProbe>::open(()).unwrap();
        for n in [1u64, 2, 5, 7] {
            h.process(Event::new("k", format!("{{\"n\":{n}}}")))
                .unwrap();
        }
        let last: Observed = serde_json::from_slice(&h.outputs("main")[3].value).unwrap();
        // 7 clears the history (after appending 7); 5 removed key 2 (5 % 3).
        assert_eq!(last.count, 4);
        assert_eq!(last.history, Vec::<u64>::new());
        assert_eq!(last.seen, vec![(1, 7)]);
        assert!(!last.has_zero);
    }
}
