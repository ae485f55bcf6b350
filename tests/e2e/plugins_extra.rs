//! The test plugins other suites lean on: `counter` / `counter-v2` (per-key
//! counts stamped with the build that counted them) and `other-world` (a
//! component of a foreign world).

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use serde_json::{Value, json};
use weir::engine::{Engine, EngineError};
use weir::runtime::{Pipeline, PipelineError, RunOptions, SwapError};
use weir::spec::PipelineSpec;
use weir_test_artifacts::{COUNTER, COUNTER_V2, OTHER_WORLD, PASSTHROUGH};

use crate::support::{read_jsonl, toml_path, weir_run};

fn file_spec(wasm: &str, config: &str) -> String {
    format!(
        r#"
name = "count"
parallelism = 2
[source]
kind = "file"
path = "in.jsonl"
[key_by]
field = "/user"
[plugin]
wasm = {wasm}
config = {config}
[[sink]]
output = "main"
kind = "file"
path = "out.jsonl"
"#,
        wasm = toml_path(wasm)
    )
}

/// 300 events over users u0..u4 (60 each), `seq` 0..300, and 5 without a seq.
fn input() -> String {
    let mut lines: String = (0..300)
        .map(|i| format!("{{\"user\":\"u{}\",\"seq\":{i}}}\n", i % 5))
        .collect();
    lines.push_str(&"{\"user\":\"u0\"}\n".repeat(5));
    lines
}

/// Runs `wasm` on [`input`] and checks what every counter build must give:
/// per key the counts 1..=n in order, every seq once, all from `version`.
fn check_counts(wasm: &str, version: &str) {
    let run = weir_run(&file_spec(wasm, "{}"), &[("in.jsonl", &input())]);
    assert!(run.succeeded(), "weir run failed:\n{}", run.stderr());
    let lines = run.lines("out.jsonl");
    assert_eq!(lines.len(), 305);
    let mut counts: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut seqs = Vec::new();
    for line in &lines {
        assert_eq!(line["version"], version, "{line}");
        let key = line["key"].as_str().unwrap().to_owned();
        counts
            .entry(key)
            .or_default()
            .push(line["count"].as_u64().unwrap());
        match &line["seq"] {
            Value::Null => {}
            seq => seqs.push(seq.as_u64().unwrap()),
        }
    }
    let expected = |n: u64| (1..=n).collect::<Vec<u64>>();
    assert_eq!(counts.len(), 5);
    for (key, seen) in &counts {
        let n = if key == "u0" { 65 } else { 60 };
        assert_eq!(seen, &expected(n), "counts of {key}");
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (0..300).collect::<Vec<u64>>());
}

#[test]
pub fn counter() {
    check_counts(COUNTER, "counter");
}

#[test]
pub fn counter_v2() {
    check_counts(COUNTER_V2, "counter-v2");
}

#[test]
fn the_two_counter_builds_are_different_components() {
    let v1 = std::fs::read(COUNTER).unwrap();
    let v2 = std::fs::read(COUNTER_V2).unwrap();
    assert_ne!(v1, v2);
}

#[test]
fn a_counter_told_to_fail_open_stops_the_start_with_its_reason() {
    let spec = file_spec(COUNTER, "{ fail_open = true }");
    let run = weir_run(&spec, &[("in.jsonl", &input())]);
    assert!(!run.succeeded(), "the start must fail");
    let stderr = run.stderr();
    assert!(
        stderr.contains("refusing to open: fail_open is set"),
        "{stderr}"
    );
}

fn engine() -> Engine {
    Engine::new(Some(crate::support::cache_dir())).unwrap()
}

fn generator_spec(dir: &std::path::Path, wasm: &str) -> PipelineSpec {
    PipelineSpec::from_toml(&format!(
        r#"
name = "count"
parallelism = 2
[source]
kind = "generator"
events = 1000000
[key_by]
field = "/user_id"
[plugin]
wasm = {wasm:?}
[[sink]]
output = "main"
kind = "file"
path = {path:?}
"#,
        path = dir.join("out.jsonl"),
    ))
    .unwrap()
}

/// Swapping counter for counter-v2 mid-stream: every key counts on from
/// where the old build left it (state carried), and per key the version
/// only moves forward. A refused swap and one to another world's component
/// first change nothing.
#[test]
fn a_swap_to_counter_v2_carries_every_count_over() {
    let dir = tempfile::tempdir().unwrap();
    let spec = generator_spec(dir.path(), COUNTER);
    let engine = engine();
    let v1 = std::fs::read(COUNTER).unwrap();
    let v2 = std::fs::read(COUNTER_V2).unwrap();
    let pipeline =
        Pipeline::start(&engine, &spec, &v1, Instant::now(), RunOptions::default()).unwrap();
    let control = pipeline.control();
    let runner = std::thread::spawn(move || pipeline.run(|_, _| {}).unwrap());
    std::thread::sleep(std::time::Duration::from_millis(50));
    let refused = control.swap(&engine, &v2, &json!({"fail_open": true}));
    let foreign = std::fs::read(OTHER_WORLD).unwrap();
    let foreign = control.swap(&engine, &foreign, &json!({}));
    let swapped = control.swap(&engine, &v2, &json!({}));
    let summary = runner.join().unwrap();
    assert!(summary.errors.is_empty(), "{:?}", summary.errors);
    match refused {
        Err(SwapError::Refused(reason)) => {
            assert!(reason.contains("fail_open is set"), "{reason}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(
        matches!(foreign, Err(SwapError::Load(EngineError::WorldMismatch(_)))),
        "{foreign:?}"
    );
    assert!(swapped.is_ok(), "{swapped:?}");

    let lines = read_jsonl(&dir.path().join("out.jsonl"));
    assert_eq!(lines.len(), 1_000_000);
    let mut per_key: HashMap<&str, (u64, bool)> = HashMap::new();
    let mut versions = BTreeMap::new();
    for line in &lines {
        let version = line["version"].as_str().unwrap();
        *versions.entry(version).or_insert(0u64) += 1;
        let is_v2 = match version {
            "counter" => false,
            "counter-v2" => true,
            other => panic!("unknown version {other}"),
        };
        let (last, was_v2) = per_key.entry(line["key"].as_str().unwrap()).or_default();
        assert_eq!(line["count"].as_u64().unwrap(), *last + 1, "{line}");
        assert!(is_v2 || !*was_v2, "a key went back to v1: {line}");
        *last += 1;
        *was_v2 = is_v2;
    }
    assert!(
        versions.get("counter-v2").copied().unwrap_or(0) > 0,
        "{versions:?}"
    );
}

/// A component of another world is refused at load, naming the world the
/// host wants: by `weir run`, and by `Pipeline::start` as a typed error.
#[test]
pub fn other_world() {
    let run = weir_run(&file_spec(OTHER_WORLD, "{}"), &[("in.jsonl", &input())]);
    assert!(!run.succeeded(), "a pipeline of another world must not run");
    let stderr = run.stderr();
    assert!(
        stderr.contains("does not implement the weir:plugin/processor world"),
        "{stderr}"
    );

    let component = std::fs::read(OTHER_WORLD).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let spec = generator_spec(dir.path(), PASSTHROUGH);
    let error = Pipeline::start(
        &engine(),
        &spec,
        &component,
        Instant::now(),
        RunOptions::default(),
    )
    .err()
    .expect("a pipeline of another world's component must not start");
    assert!(
        matches!(error, PipelineError::Engine(EngineError::WorldMismatch(_))),
        "{error:?}"
    );
}
