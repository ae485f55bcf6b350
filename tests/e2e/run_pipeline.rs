//! The reference workloads through `weir run`: their figures are fixed.

use crate::support::{Run, toml_path, weir_run, weir_run_with_env};
use weir_test_artifacts::{AMOUNT_FILTER, FRAUD_DETECTOR, PASSTHROUGH};

const BASE_TS: i64 = 1_700_000_000_000;

/// W2 over `events` generated events through the component `wasm`; `extra`
/// is appended to the spec (a `[limits]` section, say).
fn w2_spec(wasm: &str, events: u64, parallelism: u32, extra: &str) -> String {
    format!(
        r#"
name = "fraud"
parallelism = {parallelism}
[source]
kind = "generator"
events = {events}
[event_time]
field = "/ts"
[key_by]
field = "/user_id"
[plugin]
wasm = {wasm}
config = {{ threshold = 5, window_ms = 60000 }}
[[sink]]
output = "alerts"
kind = "file"
path = "alerts.jsonl"
{extra}"#,
        wasm = toml_path(wasm)
    )
}

/// The W2 alerts of the first 1 M generator events: 2 056 of them, with
/// these sums of users and of times (in any order).
pub(crate) fn assert_reference_alerts(alerts: &[serde_json::Value]) {
    assert_eq!(alerts.len(), 2_056, "the reference alerts");
    let users: u64 = alerts.iter().map(|a| a["user_id"].as_u64().unwrap()).sum();
    let ts: i64 = alerts
        .iter()
        .map(|a| a["ts"].as_i64().unwrap() - BASE_TS)
        .sum();
    assert_eq!(users, 103_597_187);
    assert_eq!(ts, 1_073_632_637);
}

/// Runs W2 on 1 M events through `wasm` and checks the reference figures;
/// returns the run for more checks.
pub(crate) fn check_w2_at_one_million(wasm: &str, parallelism: u32, extra: &str) -> Run {
    let run = weir_run(&w2_spec(wasm, 1_000_000, parallelism, extra), &[]);
    assert!(run.succeeded(), "weir run failed:\n{}", run.stderr());
    assert_reference_alerts(&run.lines("alerts.jsonl"));
    let summary = run.summary();
    assert_eq!(summary["events_in"], 1_000_000);
    assert_eq!(run.output_count("alerts"), 2_056);
    // Every window's timer fired at the end of input and cleared its state.
    assert_eq!(summary["keys_in_state"], 0);
    assert_eq!(summary["pending_event_timers"], 0);
    assert!(
        summary["errors"].as_object().unwrap().is_empty(),
        "{summary}"
    );
    run
}

#[test]
pub fn fraud_detector() {
    check_w2_at_one_million(FRAUD_DETECTOR, 1, "");
}

#[test]
fn fraud_detector_gives_the_same_alerts_at_parallelism_two() {
    check_w2_at_one_million(FRAUD_DETECTOR, 2, "");
}

#[test]
pub fn amount_filter() {
    let spec = format!(
        r#"
name = "big-spenders"
parallelism = 2
[source]
kind = "generator"
events = 1000000
[key_by]
field = "/user_id"
[plugin]
wasm = {wasm}
[[sink]]
output = "main"
kind = "file"
path = "out.jsonl"
"#,
        wasm = toml_path(AMOUNT_FILTER)
    );
    let run = weir_run(&spec, &[]);
    assert!(run.succeeded(), "weir run failed:\n{}", run.stderr());
    assert_eq!(run.output_count("main"), 499_923);
    let lines = run.lines("out.jsonl");
    assert_eq!(lines.len(), 499_923);
    // The first generated event (user 91033, 50767 cents) passes the filter.
    assert!(lines.iter().any(|l| l == "91033:50767"));
    assert!(lines.iter().all(|l| {
        let amount: u64 = l
            .as_str()
            .unwrap()
            .split(':')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        amount > 50_000
    }));
}

#[test]
pub fn passthrough() {
    let spec = format!(
        r#"
name = "copy"
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
"#,
        wasm = toml_path(PASSTHROUGH)
    );
    let input: String = (0..3000)
        .map(|i| format!("{{\"k\":\"key{}\",\"n\":{i}}}\n", i % 7))
        .collect();
    let run = weir_run(&spec, &[("in.jsonl", &input)]);
    assert!(run.succeeded(), "weir run failed:\n{}", run.stderr());
    let mut out: Vec<u64> = run
        .lines("out.jsonl")
        .iter()
        .map(|v| v["n"].as_u64().unwrap())
        .collect();
    out.sort_unstable();
    assert_eq!(out, (0..3000).collect::<Vec<u64>>());
}

#[test]
fn a_plugin_crate_named_in_the_spec_is_built_by_weir_run() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let crate_dir = root.join("plugins/passthrough").canonicalize().unwrap();
    let spec = format!(
        r#"
name = "built"
[source]
kind = "generator"
events = 10
[key_by]
field = "/user_id"
[plugin]
crate = {dir}
[[sink]]
output = "main"
kind = "file"
path = "out.jsonl"
"#,
        dir = toml_path(crate_dir.to_str().unwrap())
    );
    // Its own target directory: the `cargo test` running this test may hold
    // the lock on the workspace's.
    let target = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-target");
    let run = weir_run_with_env(&spec, &[], &[("CARGO_TARGET_DIR", &target)]);
    assert!(run.succeeded(), "weir run failed:\n{}", run.stderr());
    assert_eq!(run.lines("out.jsonl").len(), 10);
}

#[test]
fn weir_plugin_build_prints_the_path_of_the_component() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let crate_dir = root.join("plugins/passthrough");
    let target = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-target");
    let output = std::process::Command::new(crate::support::WEIR)
        .args(["plugin", "build"])
        .arg(&crate_dir)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let path = String::from_utf8(output.stdout).unwrap();
    let path = std::path::Path::new(path.trim());
    assert!(path.ends_with("passthrough.wasm"), "{}", path.display());
    let bytes = std::fs::read(path).unwrap();
    // A component, not a core module: the layer field of the preamble is 1.
    assert_eq!(&bytes[..4], b"\0asm");
    assert_eq!(&bytes[6..8], &[1, 0]);
}

#[test]
fn weir_plugin_build_names_a_directory_that_is_not_a_crate() {
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(crate::support::WEIR)
        .args(["plugin", "build"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("neither a Cargo.toml nor an app.py"),
        "{stderr}"
    );
}
