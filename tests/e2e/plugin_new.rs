//! `weir plugin new`, then `weir plugin build` and `weir plugin test`, from
//! an empty directory, in every language: what a new author does first.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::support::{WEIR, cache_dir};

fn weir(cwd: &Path, args: &[&str]) -> Output {
    Command::new(WEIR)
        .current_dir(cwd)
        .args(args)
        .env("WEIR_CACHE_DIR", cache_dir())
        // Rust plugins share one target directory across test runs, so
        // the SDK and serde compile once.
        .env(
            "CARGO_TARGET_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("new-plugins"),
        )
        .output()
        .expect("running weir")
}

fn succeed(cwd: &Path, args: &[&str]) -> String {
    let output = weir(cwd, args);
    assert!(
        output.status.success(),
        "weir {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Creates, builds and tests a plugin of `lang` in an empty directory;
/// returns the project and what `weir plugin test --json` reports.
fn new_build_and_test(lang: &str) -> (tempfile::TempDir, Value) {
    let dir = tempfile::tempdir().unwrap();
    let name = format!("first-{lang}");
    let created = succeed(dir.path(), &["plugin", "new", &name, "--lang", lang]);
    let project = dir.path().join(&name);
    assert_eq!(created.trim(), format!("./{name}"));
    for file in ["README.md", "events.jsonl", "expected.json"] {
        assert!(project.join(file).is_file(), "{lang}: no {file}");
    }
    let built = succeed(&project, &["plugin", "build", "."]);
    assert!(Path::new(built.trim()).is_file(), "{built}");
    // The sample test passes as created.
    succeed(
        &project,
        &[
            "plugin",
            "test",
            ".",
            "--events",
            "events.jsonl",
            "--expect",
            "expected.json",
        ],
    );
    let report = succeed(
        &project,
        &["plugin", "test", ".", "--events", "events.jsonl", "--json"],
    );
    (dir, serde_json::from_str(&report).unwrap())
}

/// The template's behaviour, the same in every language: counts to
/// `main`, amounts of 1000 or more to `large`, one `idle` report per key
/// when the watermark passes its last event + 60 s.
fn check_template_outputs(lang: &str, report: &Value) {
    assert_eq!(report["events_in"], 6, "{lang}");
    let values = |output: &str| -> Vec<Value> {
        report["outputs"][output]
            .as_array()
            .unwrap_or_else(|| panic!("{lang}: no output {output}: {report}"))
            .iter()
            .map(|r| r["value"].clone())
            .collect()
    };
    let counts: Vec<(String, u64)> = values("main")
        .iter()
        .map(|v| {
            (
                v["key"].as_str().unwrap().to_owned(),
                v["count"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected = [
        ("alice", 1),
        ("bob", 1),
        ("alice", 2),
        ("alice", 3),
        ("bob", 2),
        ("carol", 1),
    ];
    assert_eq!(counts, expected.map(|(k, n)| (k.to_owned(), n)), "{lang}");
    let large: Vec<i64> = values("large")
        .iter()
        .map(|v| v["amount"].as_i64().unwrap())
        .collect();
    assert_eq!(large, [1200, 5000], "{lang}");
    let idle = values("idle");
    assert_eq!(idle.len(), 3, "{lang}: {idle:?}");
    assert_eq!(
        idle[0],
        serde_json::json!({"key": "alice", "count": 3, "last_seen": 30000})
    );
    // The timer's output carries the timer's time.
    assert_eq!(report["outputs"]["idle"][0]["timestamp"], 90_000, "{lang}");
    let state = report["state"].as_object().unwrap();
    assert_eq!(state.len(), 3, "{lang}: {state:?}");
}

#[test]
fn a_new_rust_plugin_builds_tests_and_passes_its_own_tests() {
    let (dir, report) = new_build_and_test("rust");
    check_template_outputs("rust", &report);
    // The crate's native tests (the SDK's harness, no wasm) pass too.
    let project = dir.path().join("first-rust");
    let output = Command::new(env!("CARGO"))
        .current_dir(&project)
        .args(["test", "--quiet"])
        .env(
            "CARGO_TARGET_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("new-plugins"),
        )
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "cargo test in the new crate failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn a_new_python_plugin_builds_and_tests() {
    let (_dir, report) = new_build_and_test("python");
    check_template_outputs("python", &report);
    // Python states are JSON, so the report shows them as they are.
    let alice = &report["state"]["alice"];
    assert_eq!(
        alice[0],
        serde_json::json!({"name": "count", "kind": "value", "value": 3})
    );
}

#[test]
fn a_new_javascript_plugin_builds_and_tests() {
    let (_dir, report) = new_build_and_test("js");
    check_template_outputs("js", &report);
    let bob = &report["state"]["bob"];
    assert_eq!(
        bob[1],
        serde_json::json!({"name": "last_seen", "kind": "value", "value": 70000})
    );
}

#[test]
fn a_result_that_differs_from_the_expected_one_fails_and_says_where() {
    let dir = tempfile::tempdir().unwrap();
    succeed(dir.path(), &["plugin", "new", "drift", "--lang", "python"]);
    let project = dir.path().join("drift");
    let events = std::fs::read_to_string(project.join("events.jsonl")).unwrap();
    std::fs::write(
        project.join("events.jsonl"),
        events.replace("\"amount\": 1200", "\"amount\": 12"),
    )
    .unwrap();
    let output = weir(
        &project,
        &[
            "plugin",
            "test",
            ".",
            "--events",
            "events.jsonl",
            "--expect",
            "expected.json",
        ],
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("differs from expected.json") && stderr.contains("/outputs/large"),
        "{stderr}"
    );
}

#[test]
fn new_refuses_a_bad_name_and_a_directory_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let output = weir(dir.path(), &["plugin", "new", "Bad Name", "--lang", "js"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("invalid plugin name"));
    std::fs::create_dir(dir.path().join("taken")).unwrap();
    std::fs::write(dir.path().join("taken/app.py"), "mine").unwrap();
    let output = weir(dir.path(), &["plugin", "new", "taken", "--lang", "python"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("not empty"));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("taken/app.py")).unwrap(),
        "mine"
    );
}
