//! JavaScript plugins: built by `weir plugin build` with componentize-js (the
//! JavaScript SDK in guest-sdk/js), then run like any component.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use serde_json::json;

use crate::python::{counter_py, counter_spec, weir_in};
use crate::run_pipeline::check_w2_at_one_million;
use crate::state::check_state_probe;
use crate::support::{WEIR, build_plugin, read_jsonl, toml_path, weir_run};

/// StarlingMonkey (SpiderMonkey) interprets inside wasm: a batch of 1 024
/// events can take well over 100 ms on a loaded 2-core machine, the default
/// deadline per call.
const JS_LIMITS: &str = "[limits]\ncall_timeout_ms = 5000\n";

fn build(name: &str, slot: &'static OnceLock<PathBuf>) -> &'static str {
    build_plugin(name, "componentize-js", slot)
}

pub(crate) fn fraud_detector_js() -> &'static str {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    build("fraud-detector-js", &BUILT)
}

fn state_probe_js() -> &'static str {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    build("state-probe-js", &BUILT)
}

#[test]
fn the_js_fraud_detector_gives_the_reference_alerts_at_one_million_events() {
    let run = check_w2_at_one_million(fraud_detector_js(), 2, JS_LIMITS);
    // The same JSON shape as the Rust plugin's, field order included.
    let first = std::fs::read_to_string(run.path("alerts.jsonl")).unwrap();
    let first = first.lines().next().unwrap();
    assert!(
        first.starts_with(r#"{"user_id":"#) && first.contains(r#","window_start":"#),
        "{first}"
    );
    let summary = run.summary();
    eprintln!(
        "fraud-detector-js: {:.0} events/s at parallelism 2",
        summary["events_per_s"].as_f64().unwrap()
    );
}

#[test]
fn js_states_read_their_own_writes_within_and_across_batches() {
    check_state_probe(state_probe_js(), JS_LIMITS);
}

#[test]
fn a_js_config_the_plugin_refuses_stops_the_run_with_its_message() {
    let spec = format!(
        r#"
name = "fraud-js"
[source]
kind = "generator"
events = 10
[key_by]
field = "/user_id"
[plugin]
wasm = {wasm}
config = {{ threshold = 0 }}
{JS_LIMITS}"#,
        wasm = toml_path(fraud_detector_js())
    );
    let run = weir_run(&spec, &[]);
    assert!(!run.succeeded());
    assert!(
        run.stderr().contains("threshold must be at least 1"),
        "{}",
        run.stderr()
    );
}

#[test]
fn without_componentize_js_the_build_says_how_to_install_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.js"), "").unwrap();
    let empty = tempfile::tempdir().unwrap();
    let output = Command::new(WEIR)
        .args(["plugin", "build"])
        .arg(dir.path())
        .env("WEIR_JS_DIR", empty.path())
        .env("PATH", empty.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("componentize-js is missing") && stderr.contains("scripts/setup.sh"),
        "{stderr}"
    );
}

#[test]
fn a_directory_that_is_no_plugin_names_the_javascript_kind_too() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(WEIR)
        .args(["plugin", "build"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("app.js") && stderr.contains("JavaScript plugin"),
        "{stderr}"
    );
}

fn counter_js_v2() -> &'static str {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    build("counter-js-v2", &BUILT)
}

/// Python and JavaScript plugins store state as the same JSON: a savepoint
/// of `counter-py` restores under `counter-js-v2` (state version 1), whose
/// `migrate` reads the counts Python wrote and rewrites them.
#[test]
fn a_js_plugin_migrates_the_state_a_python_plugin_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let input: String = (0..40)
        .map(|seq| format!("{{\"k\":\"{}\",\"seq\":{seq}}}\n", ["a", "b"][seq % 2]))
        .collect();
    std::fs::write(dir.path().join("in.jsonl"), input).unwrap();
    let v1 = counter_spec("count", counter_py(), "", "out.jsonl");
    std::fs::write(dir.path().join("pipeline.toml"), v1).unwrap();
    weir_in(
        dir.path(),
        &["run", "--quiet", "--stop-after", "20", "pipeline.toml"],
    );
    weir_in(
        dir.path(),
        &[
            "savepoint",
            "create",
            "--spec",
            "pipeline.toml",
            "--to",
            "sp",
        ],
    );
    let v2 = counter_spec(
        "count-js",
        counter_js_v2(),
        "restore_from = \"sp\"",
        "out-js.jsonl",
    );
    std::fs::write(dir.path().join("pipeline.toml"), v2).unwrap();
    let stderr = weir_in(dir.path(), &["run", "--quiet", "pipeline.toml"]);
    assert!(stderr.contains("resuming from savepoint"), "{stderr}");

    let before = read_jsonl(&dir.path().join("out.jsonl"));
    assert_eq!(before.len(), 20);
    assert_eq!(before[19], json!({"key": "b", "count": 10, "seq": 19}));
    let after = read_jsonl(&dir.path().join("out-js.jsonl"));
    assert_eq!(after.len(), 20);
    for line in &after {
        let seq = line["seq"].as_u64().unwrap();
        // Each key's count goes on from the migrated 10.
        assert_eq!(line["count"], seq / 2 + 1, "{line}");
        assert_eq!(line["migrated"], true, "{line}");
    }
}
