//! Test-only: a plugin written against the raw bindings instead of the SDK,
//! returning what a buggy or hostile guest might. Each event's value names
//! the misbehaviour; anything else is emitted unchanged:
//!
//! - `stray-change`: a change for an item it was not given
//! - `stray-failure`: a failure for an item it was not given
//! - `undeclared`: a write to a state id it never declared
//! - `wrong-kind`: a value state cleared as if it were a map
//! - `sneak-late`: an emit to the host-only `late` output
//! - `no-value`: a value write without its value
//! - `bad-name`: an emit to an output whose name is not UTF-8
//! - `bad-lengths`: a change whose lengths run past the result's bytes,
//!   which makes the whole batch's result unreadable
//! - `bad-op`: a change whose op is not a `change-op`, likewise
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
    BatchResult, ChangeOp, EventBatch, Failure, TimeDomain, TimerBatch,
};

struct Rogue;

/// Appends a change with these byte fields (name, key, value) to `result`,
/// as its 32 bytes (`packed-change` in the WIT).
fn push(result: &mut BatchResult, item: u32, op: ChangeOp, state: u32, fields: [Option<&[u8]>; 3]) {
    let lens = fields.map(|field| match field {
        Some(bytes) => {
            result.bytes.extend_from_slice(bytes);
            bytes.len() as i32
        }
        None => -1,
    });
    let changes = &mut result.changes;
    changes.extend_from_slice(&item.to_le_bytes());
    changes.extend_from_slice(&[op as u8, TimeDomain::EventTime as u8, 0, 0]);
    changes.extend_from_slice(&state.to_le_bytes());
    for len in lens {
        changes.extend_from_slice(&len.to_le_bytes());
    }
    changes.extend_from_slice(&0i64.to_le_bytes());
}

/// Where the last change's value length sits in `changes`.
fn last_value_len(result: &mut BatchResult) -> &mut [u8] {
    let end = result.changes.len() - 8;
    &mut result.changes[end - 4..end]
}

impl Guest for Rogue {
    fn open(_config: String) -> Result<(), String> {
        Ok(())
    }

    fn process(events: EventBatch) -> BatchResult {
        let counter = state::declare("counter", StateKind::Value);
        let mut result = empty();
        // Every event's key (if any) and value sit back to back in `bytes`;
        // each event's 24-byte record starts with their lengths.
        let mut at = 0;
        for (item, record) in (0u32..).zip(events.events.chunks_exact(24)) {
            let len =
                |field: usize| i32::from_le_bytes(record[field..field + 4].try_into().unwrap());
            at += usize::try_from(len(0)).unwrap_or(0);
            let value = &events.bytes[at..at + len(4) as usize];
            at += len(4) as usize;
            let what = String::from_utf8_lossy(value);
            let stray = item + 1000;
            let r = &mut result;
            if what.contains("stray-change") {
                push(
                    r,
                    stray,
                    ChangeOp::ValueSet,
                    counter,
                    [None, None, Some(b"x")],
                );
            } else if what.contains("stray-failure") {
                result.failures.push(Failure {
                    item: stray,
                    reason: "a failure for nobody".into(),
                });
            } else if what.contains("undeclared") {
                push(r, item, ChangeOp::ValueSet, 77, [None, None, Some(b"")]);
            } else if what.contains("wrong-kind") {
                push(r, item, ChangeOp::MapClear, counter, [None; 3]);
            } else if what.contains("sneak-late") {
                push(
                    r,
                    item,
                    ChangeOp::Emit,
                    0,
                    [Some(b"late"), None, Some(b"sneaky")],
                );
            } else if what.contains("no-value") {
                push(r, item, ChangeOp::ValueSet, counter, [None; 3]);
            } else if what.contains("bad-name") {
                push(
                    r,
                    item,
                    ChangeOp::Emit,
                    0,
                    [Some(b"\xff"), None, Some(b"v")],
                );
            } else if what.contains("bad-lengths") {
                push(r, item, ChangeOp::Emit, 0, [None, None, Some(value)]);
                let len = last_value_len(r);
                let wrong = i32::from_le_bytes((&*len).try_into().unwrap()) + 1000;
                len.copy_from_slice(&wrong.to_le_bytes());
            } else if what.contains("bad-op") {
                push(r, item, ChangeOp::Emit, 0, [None, None, Some(value)]);
                let at = r.changes.len() - 28;
                r.changes[at] = 200;
            } else {
                push(r, item, ChangeOp::Emit, 0, [None, None, Some(value)]);
            }
        }
        result
    }

    fn on_timer(_fired: TimerBatch) -> BatchResult {
        empty()
    }

    fn state_version() -> u32 {
        7
    }

    fn migrate(_from: u32, _items: Vec<StoredValue>) -> Result<Vec<Option<Vec<u8>>>, String> {
        Ok(Vec::new())
    }
}

fn empty() -> BatchResult {
    BatchResult {
        bytes: Vec::new(),
        changes: Vec::new(),
        failures: Vec::new(),
    }
}

bindings::export!(Rogue with_types_in bindings);
