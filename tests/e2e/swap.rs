//! Hot swap on a running pipeline, through the library (the HTTP route of
//! the control plane calls the same `PipelineControl::swap`).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use weir::engine::Engine;
use weir::runtime::{Pipeline, RunOptions, SwapError};
use weir::spec::PipelineSpec;
use weir_test_artifacts::{FRAUD_DETECTOR, PASSTHROUGH};

use crate::support::read_jsonl;

fn engine() -> Engine {
    Engine::new(Some(crate::support::cache_dir())).unwrap()
}

fn spec(
    dir: &std::path::Path,
    wasm: &str,
    events: u64,
    config: &str,
    output: &str,
) -> PipelineSpec {
    PipelineSpec::from_toml(&format!(
        r#"
name = "swap"
parallelism = 2
[source]
kind = "generator"
events = {events}
[event_time]
field = "/ts"
[key_by]
field = "/user_id"
[plugin]
wasm = {wasm:?}
config = {config}
[[sink]]
output = "{output}"
kind = "file"
path = {path:?}
"#,
        path = dir.join("out.jsonl"),
    ))
    .unwrap()
}

/// Swaps `configs` in turn into a running pipeline of `events` events,
/// spread over the run: the `i`-th once the source has read `i + 1` parts
/// of `configs.len() + 2` (by progress, not time, so that a fast machine
/// cannot finish the run before the swaps). Returns the swap results and
/// the run's output lines.
fn run_with_swaps(
    spec: &PipelineSpec,
    wasm: &str,
    events: u64,
    configs: &[Value],
) -> (Vec<Result<Duration, SwapError>>, Vec<Value>) {
    let engine = engine();
    let component = std::fs::read(wasm).unwrap();
    let pipeline = Pipeline::start(
        &engine,
        spec,
        &component,
        Instant::now(),
        RunOptions::default(),
    )
    .unwrap();
    let control = pipeline.control();
    let live = control.live().clone();
    let runner = std::thread::spawn(move || pipeline.run(|_, _| {}).unwrap());
    let parts = configs.len() as u64 + 2;
    let mut results = Vec::new();
    for (i, config) in (1..).zip(configs) {
        let milestone = events * i / parts;
        while live.progress.done.load(Ordering::Relaxed) < milestone && !runner.is_finished() {
            std::thread::sleep(Duration::from_millis(1));
        }
        results.push(
            control
                .swap(&engine, &component, config)
                .map(|report| report.max_pause),
        );
    }
    let summary = runner.join().unwrap();
    assert!(summary.errors.is_empty(), "{:?}", summary.errors);
    let path = match &spec.sinks[0] {
        weir::spec::SinkSpec::File { path, .. } => path.clone(),
        _ => unreachable!("file sink"),
    };
    (results, read_jsonl(&path))
}

/// Swapping the fraud detector between two configs with the same meaning,
/// again and again mid-stream, changes nothing in the alerts: every window
/// (keyed state) and timer carried across every swap.
#[test]
fn state_and_timers_carry_across_swaps() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(
        dir.path(),
        FRAUD_DETECTOR,
        1_000_000,
        "{ threshold = 5 }",
        "alerts",
    );
    let configs: Vec<Value> = (0..6)
        .map(|i| {
            if i % 2 == 0 {
                json!({"threshold": 5, "window_ms": 60000})
            } else {
                json!({"threshold": 5})
            }
        })
        .collect();
    let (results, alerts) = run_with_swaps(&spec, FRAUD_DETECTOR, 1_000_000, &configs);
    let done = results.iter().filter(|r| r.is_ok()).count();
    assert!(
        done >= 3,
        "only {done} swaps happened while running: {results:?}"
    );
    assert_eq!(alerts.len(), 2_056);
    let users: u64 = alerts.iter().map(|a| a["user_id"].as_u64().unwrap()).sum();
    assert_eq!(users, 103_597_187);
}

/// Every event is processed by exactly one version, and per key the
/// versions only ever move forward.
#[test]
fn every_event_is_handled_by_exactly_one_version() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(
        dir.path(),
        PASSTHROUGH,
        3_000_000,
        "{ tag = \"v0\" }",
        "main",
    );
    let configs: Vec<Value> = (1..=5).map(|i| json!({"tag": format!("v{i}")})).collect();
    let (results, lines) = run_with_swaps(&spec, PASSTHROUGH, 3_000_000, &configs);
    let swapped = results.iter().filter(|r| r.is_ok()).count();
    assert!(
        swapped >= 2,
        "only {swapped} swaps happened while running: {results:?}"
    );
    assert_eq!(lines.len(), 3_000_000, "one output per input");
    let mut per_key: HashMap<u64, Vec<(i64, u32)>> = HashMap::new();
    let mut versions_seen = std::collections::BTreeSet::new();
    for line in &lines {
        let version: u32 = line["tag"].as_str().unwrap()[1..].parse().unwrap();
        versions_seen.insert(version);
        let value = &line["value"];
        per_key
            .entry(value["user_id"].as_u64().unwrap())
            .or_default()
            .push((value["ts"].as_i64().unwrap(), version));
    }
    assert!(versions_seen.len() > swapped.min(2), "{versions_seen:?}");
    for (key, mut seen) in per_key {
        seen.sort_unstable();
        assert!(
            seen.windows(2).all(|w| w[0].1 <= w[1].1),
            "key {key}: a version went backwards"
        );
    }
    // Swaps that completed pause a subtask for well under a second.
    for pause in results.iter().flatten() {
        assert!(*pause < Duration::from_secs(1), "{pause:?}");
    }
}

/// A version whose `open` refuses is refused before the pipeline sees it;
/// the old version runs on and the results are untouched.
#[test]
fn a_swap_whose_open_fails_leaves_the_old_version_running() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(
        dir.path(),
        FRAUD_DETECTOR,
        1_000_000,
        "{ threshold = 5 }",
        "alerts",
    );
    let (results, alerts) =
        run_with_swaps(&spec, FRAUD_DETECTOR, 1_000_000, &[json!({"threshold": 0})]);
    match &results[0] {
        Err(SwapError::Refused(reason)) => assert!(reason.contains("threshold"), "{reason}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(alerts.len(), 2_056);
}
