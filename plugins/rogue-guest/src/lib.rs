//! Test-only: a plugin written against the raw bindings instead of the SDK,
//! returning what a buggy or hostile guest might. Each event's value names
//! the misbehaviour; anything else is emitted unchanged:
//!
//! - `stray-change`: a change for an item it was not given
//! - `stray-failure`: a failure for an item it was not given
//! - `undeclared`: a write to a state id it never declared
//! - `wrong-kind`: a value state cleared as if it were a map
//! - `sneak-late`: an emit to the host-only `late` output
//!
//! The host must dead-letter or count each of these and go on. It also
//! declares state version 7 and answers `migrate` with no results at all, so
//! a swap to it must be refused with the reason.
//!
//! Wasm only: its exports carry component names (`weir:plugin/handler@…`)
//! that a native shared library cannot, and it has nothing to test natively.
#![cfg(target_arch = "wasm32")]

#[allow(clippy::all, missing_docs)]
mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "weir:plugin/processor",
    });
}

use bindings::exports::weir::plugin::handler::{Guest, StoredValue};
use bindings::weir::plugin::state::{self, StateKind};
use bindings::weir::plugin::types::{
    BatchResult, Change, Effect, EventBatch, Failure, OutputRecord, TimerBatch, ValueWrite,
};

struct Rogue;

fn change(item: u32, effect: Effect) -> Change {
    Change { item, effect }
}

impl Guest for Rogue {
    fn open(_config: String) -> Result<(), String> {
        Ok(())
    }

    fn process(events: EventBatch) -> BatchResult {
        let counter = state::declare("counter", StateKind::Value);
        let mut result = BatchResult {
            changes: Vec::new(),
            failures: Vec::new(),
        };
        // Every event's key (if any) and value sit back to back in `bytes`.
        let mut at = 0;
        for (item, event) in (0u32..).zip(&events.events) {
            at += usize::try_from(event.key_len).unwrap_or(0);
            let value = &events.bytes[at..at + event.value_len as usize];
            at += event.value_len as usize;
            let what = String::from_utf8_lossy(value);
            let stray = item + 1000;
            if what.contains("stray-change") {
                let write = ValueWrite {
                    state: counter,
                    value: b"x".to_vec(),
                };
                result.changes.push(change(stray, Effect::ValueSet(write)));
            } else if what.contains("stray-failure") {
                result.failures.push(Failure {
                    item: stray,
                    reason: "a failure for nobody".into(),
                });
            } else if what.contains("undeclared") {
                let write = ValueWrite {
                    state: 77,
                    value: Vec::new(),
                };
                result.changes.push(change(item, Effect::ValueSet(write)));
            } else if what.contains("wrong-kind") {
                result.changes.push(change(item, Effect::MapClear(counter)));
            } else if what.contains("sneak-late") {
                let record = OutputRecord {
                    output: Some("late".into()),
                    key: None,
                    value: b"sneaky".to_vec(),
                };
                result.changes.push(change(item, Effect::Emit(record)));
            } else {
                let record = OutputRecord {
                    output: None,
                    key: None,
                    value: value.to_vec(),
                };
                result.changes.push(change(item, Effect::Emit(record)));
            }
        }
        result
    }

    fn on_timer(_fired: TimerBatch) -> BatchResult {
        BatchResult {
            changes: Vec::new(),
            failures: Vec::new(),
        }
    }

    fn state_version() -> u32 {
        7
    }

    fn migrate(_from: u32, _items: Vec<StoredValue>) -> Result<Vec<Option<Vec<u8>>>, String> {
        Ok(Vec::new())
    }
}

bindings::export!(Rogue with_types_in bindings);
