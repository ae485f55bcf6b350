//! Keyed state through a real component: value, map and list state, with
//! keys repeating inside a batch (reads see the batch's earlier writes) and
//! across batches (reads see what the host applied).

use std::collections::{BTreeMap, HashMap};

use serde_json::{Value, json};

use crate::support::{toml_path, weir_run};
use weir_test_artifacts::STATE_PROBE;

const EVENTS: u64 = 3000;

#[derive(Default)]
struct Model {
    count: u64,
    history: Vec<u64>,
    seen: BTreeMap<u64, u64>,
}

/// The probe's rules, independently: what each event should observe.
fn expected() -> HashMap<u64, Value> {
    let mut keys: HashMap<u64, Model> = HashMap::new();
    let mut out = HashMap::new();
    for n in 0..EVENTS {
        let m = keys.entry(n % 3).or_default();
        m.count += 1;
        m.history.push(n);
        m.seen.insert(n % 3, n);
        if n % 5 == 0 {
            m.seen.remove(&(n % 3));
        }
        if n % 7 == 0 {
            m.history.clear();
        }
        if n % 11 == 0 {
            m.seen.clear();
        }
        let seen: Vec<(u64, u64)> = m.seen.iter().map(|(k, v)| (*k, *v)).collect();
        out.insert(
            n,
            json!({"n": n, "count": m.count, "history": m.history, "seen": seen, "has_zero": m.seen.contains_key(&0)}),
        );
    }
    out
}

pub fn state_probe() {
    check_state_probe(STATE_PROBE, "");
}

/// Runs the probe component `wasm` (the Rust one or a port of it) on keys
/// that repeat within and across batches, and checks what each event read.
/// `extra` is appended to the spec (a `[limits]` section, say).
pub fn check_state_probe(wasm: &str, extra: &str) {
    let spec = format!(
        r#"
name = "state"
parallelism = 2
[source]
kind = "file"
path = "in.jsonl"
[key_by]
field = "/k"
[plugin]
wasm = {wasm}
[[sink]]
output = "main"
kind = "file"
path = "out.jsonl"
{extra}"#,
        wasm = toml_path(wasm)
    );
    let input: String = (0..EVENTS)
        .map(|n| format!("{{\"k\":\"key{}\",\"n\":{n}}}\n", n % 3))
        .collect();
    let run = weir_run(&spec, &[("in.jsonl", &input)]);
    assert!(run.succeeded(), "weir run failed:\n{}", run.stderr());
    let expected = expected();
    let out = run.lines("out.jsonl");
    assert_eq!(out.len(), EVENTS as usize);
    for observed in out {
        let n = observed["n"].as_u64().unwrap();
        assert_eq!(observed, expected[&n], "event {n}");
    }
}

#[test]
fn value_map_and_list_state_read_their_own_writes_within_and_across_batches() {
    state_probe();
}
