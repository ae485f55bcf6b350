//! Python plugins: built by `weir plugin build` with componentize-py (the
//! Python SDK in guest-sdk/python), then run like any component.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::json;

use crate::run_pipeline::check_w2_at_one_million;
use crate::state::check_state_probe;
use crate::support::{WEIR, build_plugin, cache_dir, read_jsonl, toml_path, weir_run};

/// CPython interprets inside wasm: a batch of 1 024 events can take about
/// 100 ms on a loaded 2-core machine, the default deadline per call.
const PYTHON_LIMITS: &str = "[limits]\ncall_timeout_ms = 2000\n";

fn build(name: &str, slot: &'static OnceLock<PathBuf>) -> &'static str {
    build_plugin(name, "componentize-py", slot)
}

pub(crate) fn fraud_detector_py() -> &'static str {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    build("fraud-detector-py", &BUILT)
}

fn state_probe_py() -> &'static str {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    build("state-probe-py", &BUILT)
}

#[test]
fn the_python_fraud_detector_gives_the_reference_alerts_at_one_million_events() {
    let run = check_w2_at_one_million(fraud_detector_py(), 2, PYTHON_LIMITS);
    // The same JSON shape as the Rust plugin's, field order included.
    let first = std::fs::read_to_string(run.path("alerts.jsonl")).unwrap();
    let first = first.lines().next().unwrap();
    assert!(
        first.starts_with(r#"{"user_id":"#) && first.contains(r#","window_start":"#),
        "{first}"
    );
    let summary = run.summary();
    eprintln!(
        "fraud-detector-py: {:.0} events/s at parallelism 2",
        summary["events_per_s"].as_f64().unwrap()
    );
}

#[test]
fn python_states_read_their_own_writes_within_and_across_batches() {
    check_state_probe(state_probe_py(), PYTHON_LIMITS);
}

#[test]
fn a_python_config_the_plugin_refuses_stops_the_run_with_its_message() {
    let spec = format!(
        r#"
name = "fraud-py"
[source]
kind = "generator"
events = 10
[key_by]
field = "/user_id"
[plugin]
wasm = {wasm}
config = {{ threshold = 0 }}
"#,
        wasm = toml_path(fraud_detector_py())
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
fn building_a_directory_that_is_no_plugin_names_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(WEIR)
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

#[test]
fn without_componentize_py_the_build_says_how_to_install_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.py"), "").unwrap();
    let empty = tempfile::tempdir().unwrap();
    let output = Command::new(WEIR)
        .args(["plugin", "build"])
        .arg(dir.path())
        .env("WEIR_PY_VENV", empty.path())
        .env("PATH", empty.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("componentize-py is missing") && stderr.contains("scripts/setup.sh"),
        "{stderr}"
    );
}

pub(crate) fn counter_py() -> &'static str {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    build("counter-py", &BUILT)
}

fn counter_py_v2() -> &'static str {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    build("counter-py-v2", &BUILT)
}

pub(crate) fn counter_spec(name: &str, wasm: &str, restore: &str, output: &str) -> String {
    format!(
        r#"
name = "{name}"
{restore}
[source]
kind = "file"
path = "in.jsonl"
[key_by]
field = "/k"
[plugin]
wasm = {wasm}
[checkpoint]
interval_ms = 600000
dir = "checkpoints"
[[sink]]
output = "main"
kind = "file"
path = "{output}"
{PYTHON_LIMITS}"#,
        wasm = toml_path(wasm)
    )
}

pub(crate) fn weir_in(dir: &Path, args: &[&str]) -> String {
    let output = Command::new(WEIR)
        .current_dir(dir)
        .args(args)
        .env("WEIR_CACHE_DIR", cache_dir())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "weir {args:?} failed:\n{stderr}");
    stderr
}

#[test]
fn a_python_plugin_migrates_the_state_of_its_previous_version_on_restore() {
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
        "count-v2",
        counter_py_v2(),
        "restore_from = \"sp\"",
        "out-v2.jsonl",
    );
    std::fs::write(dir.path().join("pipeline.toml"), v2).unwrap();
    let stderr = weir_in(dir.path(), &["run", "--quiet", "pipeline.toml"]);
    assert!(stderr.contains("resuming from savepoint"), "{stderr}");

    let before = read_jsonl(&dir.path().join("out.jsonl"));
    assert_eq!(before.len(), 20);
    assert_eq!(before[19], json!({"key": "b", "count": 10, "seq": 19}));
    let after = read_jsonl(&dir.path().join("out-v2.jsonl"));
    assert_eq!(after.len(), 20);
    for line in &after {
        let seq = line["seq"].as_u64().unwrap();
        // Each key's count goes on from the migrated 10.
        assert_eq!(line["count"], seq / 2 + 1, "{line}");
        assert_eq!(line["migrated"], true, "{line}");
    }
}
