//! The sandbox: a misbehaving plugin costs one event, never the host.
//!
//! The hostile-plugin suite (below the first tests) drives the probe into
//! each way a plugin could hold its subtask or the host's memory: sleeping
//! or polling in `open` and `process`, a huge state value, a list that
//! grows without end, a new output or counter name per event, a log flood.
//! (Many memories and table growth cannot be written in Rust: the engine's
//! unit tests build such components byte by byte, `engine::limits::tests`.)

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{Run, WEIR, build_plugin, cache_dir, toml_path, weir_run};
use weir_test_artifacts::SANDBOX_PROBE;

fn spec(on_error: &str) -> String {
    probe_spec(on_error, 16, "")
}

/// The probe's spec, with `memory_mb` and `config` (TOML, for `[plugin]`).
fn probe_spec(on_error: &str, memory_mb: u32, config: &str) -> String {
    format!(
        r#"
name = "probe"
on_error = "{on_error}"
[source]
kind = "file"
path = "in.jsonl"
[key_by]
field = "/action"
[plugin]
wasm = {wasm}
{config}
[limits]
call_timeout_ms = 100
memory_mb = {memory_mb}
[[sink]]
output = "main"
kind = "file"
path = "main.jsonl"
[[sink]]
output = "dead-letter"
kind = "file"
path = "dead.jsonl"
"#,
        wasm = toml_path(SANDBOX_PROBE)
    )
}

/// The `(error, reason)` of the dead letter whose original value mentions `what`.
fn dead_letter(dead: &[Value], what: &str) -> (String, String) {
    let record = dead
        .iter()
        .find(|d| d["value"].as_str().unwrap().contains(what))
        .unwrap_or_else(|| panic!("no dead-letter record for {what}: {dead:?}"));
    (
        record["error"].as_str().unwrap().to_owned(),
        record["reason"].as_str().unwrap().to_owned(),
    )
}

fn events(actions: &[&str]) -> String {
    actions
        .iter()
        .map(|a| format!("{{\"action\":\"{a}\"}}\n"))
        .collect()
}

#[test]
pub fn sandbox_probe() {
    let input = events(&[
        "ok",
        "loop",
        "ok",
        "alloc",
        "ok",
        "panic",
        "ok",
        "open-file",
        "reject",
        "ok",
    ]);
    let run = weir_run(&spec("dead-letter"), &[("in.jsonl", &input)]);
    assert!(
        run.succeeded(),
        "the pipeline must survive its plugin:\n{}",
        run.stderr()
    );

    let main: Vec<String> = run
        .lines("main.jsonl")
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(main.iter().filter(|l| *l == "ok").count(), 5, "{main:?}");
    // No preopened directory: the plugin cannot open a file.
    assert!(main.iter().any(|l| l.starts_with("denied:")), "{main:?}");
    assert!(!main.iter().any(|l| l.starts_with("opened:")), "{main:?}");

    let dead = run.lines("dead.jsonl");
    let reason_of = |action: &str| dead_letter(&dead, action);
    assert_eq!(dead.len(), 4, "{dead:?}");
    let (kind, reason) = reason_of("loop");
    assert_eq!(kind, "deadline");
    assert!(reason.contains("100 ms"), "{reason}");
    let (kind, reason) = reason_of("alloc");
    assert_eq!(kind, "memory");
    assert!(reason.contains("memory limit exceeded"), "{reason}");
    let (kind, reason) = reason_of("panic");
    assert_eq!(kind, "trap");
    assert!(
        reason.contains("boom"),
        "the panic message reaches the dead letter: {reason}"
    );
    let (kind, reason) = reason_of("reject");
    assert_eq!(kind, "rejected");
    assert!(reason.contains("rejected on purpose"), "{reason}");

    let errors = &run.summary()["errors"];
    for kind in ["deadline", "memory", "trap", "rejected"] {
        assert_eq!(errors[kind], 1, "{errors}");
    }
}

#[test]
fn with_on_error_fail_a_trap_stops_the_pipeline_with_the_reason() {
    let run = weir_run(
        &spec("fail"),
        &[("in.jsonl", &events(&["ok", "panic", "ok"]))],
    );
    assert!(!run.succeeded());
    let stderr = run.stderr();
    assert!(stderr.contains("on_error = \"fail\""), "{stderr}");
    assert!(stderr.contains("boom"), "{stderr}");
}

/// A guest that returns nonsense costs the events it was given, with a
/// reason each, and nothing else.
pub fn rogue_guest() {
    let spec = format!(
        r#"
name = "rogue"
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
path = "main.jsonl"
[[sink]]
output = "dead-letter"
kind = "file"
path = "dead.jsonl"
[[sink]]
output = "late"
kind = "file"
path = "late.jsonl"
"#,
        wasm = toml_path(weir_test_artifacts::ROGUE_GUEST)
    );
    let input: String = [
        "ok-1",
        "stray-change",
        "stray-failure",
        "undeclared",
        "wrong-kind",
        "sneak-late",
        "no-value",
        "bad-name",
        "bad-lengths",
        "bad-op",
        "ok-2",
    ]
    .iter()
    .map(|what| format!("{{\"k\":\"a\",\"what\":\"{what}\"}}\n"))
    .collect();
    let run = weir_run(&spec, &[("in.jsonl", &input)]);
    assert!(
        run.succeeded(),
        "the host must survive its guest:\n{}",
        run.stderr()
    );

    let main: Vec<String> = run
        .lines("main.jsonl")
        .iter()
        .map(|v| v["what"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(main, vec!["ok-1", "ok-2"]);
    assert!(
        run.lines("late.jsonl").is_empty(),
        "a plugin cannot write to `late`"
    );

    let dead = run.lines("dead.jsonl");
    let reason_of = |what: &str| dead_letter(&dead, what).1;
    assert_eq!(dead.len(), 7, "{dead:?}");
    assert!(reason_of("undeclared").contains("never declared"));
    assert!(reason_of("wrong-kind").contains("a value state, as a map state"));
    assert!(reason_of("sneak-late").contains("`late` and `dead-letter` are the host's"));
    assert!(reason_of("no-value").contains("value-set change without its value"));
    assert!(reason_of("bad-name").contains("not UTF-8"));
    let invalid = dead.iter().filter(|d| {
        let value = d["value"].as_str().unwrap();
        !value.contains("bad-lengths") && !value.contains("bad-op")
    });
    assert!(invalid.clone().all(|d| d["error"] == "invalid-change"));
    // A result whose lengths do not add up fails the whole call; the replay
    // one item at a time pins it on the item that caused it.
    let (error, reason) = dead_letter(&dead, "bad-lengths");
    assert_eq!(error, "trap", "{dead:?}");
    assert!(reason.contains("malformed batch result"), "{reason}");
    let (error, reason) = dead_letter(&dead, "bad-op");
    assert_eq!(error, "trap", "{dead:?}");
    assert!(
        reason.contains("change 0 has op 200, not a change-op"),
        "{reason}"
    );
    // Changes and failures for items it was not given are counted, not
    // pinned on an innocent event.
    assert!(run.summary()["errors"]["bad-item-index"].as_u64().unwrap() >= 1);
}

#[test]
fn a_guest_returning_nonsense_costs_only_its_own_events() {
    rogue_guest();
}

/// `weir run` of `spec` on `input`, killed and failed if it has not
/// finished within `limit` (a plugin holding its subtask would hang it).
fn weir_run_within(spec: &str, input: &str, limit: Duration) -> Run {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.jsonl"), input).unwrap();
    std::fs::write(dir.path().join("pipeline.toml"), spec).unwrap();
    let stderr = std::fs::File::create(dir.path().join("stderr.txt")).unwrap();
    let mut child = Command::new(WEIR)
        .current_dir(dir.path())
        .args([
            "run",
            "--quiet",
            "--summary-json",
            "summary.json",
            "pipeline.toml",
        ])
        .env("WEIR_CACHE_DIR", cache_dir())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("running weir");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!(
                "weir run did not finish within {limit:?}: the plugin held its subtask\n{}",
                read(&dir.path().join("stderr.txt"))
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = Output {
        status,
        stdout: Vec::new(),
        stderr: std::fs::read(dir.path().join("stderr.txt")).unwrap(),
    };
    Run { dir, output }
}

fn read(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
}

/// Events `{"action": ..., "n": ...}`.
fn numbered(action: &str, ns: impl IntoIterator<Item = u64>) -> String {
    ns.into_iter()
        .map(|n| format!("{{\"action\":\"{action}\",\"n\":{n}}}\n"))
        .collect()
}

fn main_values(run: &Run) -> Vec<String> {
    run.lines("main.jsonl")
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

/// Far below the hour the probe asks for, far above what the run needs.
const PATIENCE: Duration = Duration::from_secs(60);

#[test]
fn a_plugin_that_sleeps_or_polls_in_process_does_not_hold_its_subtask() {
    let started = Instant::now();
    let run = weir_run_within(
        &spec("dead-letter"),
        &events(&["ok", "sleep", "ok", "poll", "ok"]),
        PATIENCE,
    );
    assert!(run.succeeded(), "{}", run.stderr());
    // Time does not pass for a plugin: its hour is over at once.
    let main = main_values(&run);
    assert_eq!(main, ["ok", "slept", "ok", "polled", "ok"]);
    assert!(run.lines("dead.jsonl").is_empty());
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_plugin_that_sleeps_or_polls_in_open_still_starts() {
    for action in ["sleep", "poll"] {
        let config = format!("config = {{ on_open = \"{action}\" }}");
        let run = weir_run_within(
            &probe_spec("dead-letter", 16, &config),
            &events(&["ok"]),
            PATIENCE,
        );
        assert!(run.succeeded(), "{action}: {}", run.stderr());
        assert_eq!(main_values(&run), ["ok"], "{action}");
    }
}

#[test]
fn a_state_value_over_the_limit_costs_its_event_a_dead_letter_naming_the_limit() {
    let run = weir_run(
        &spec("dead-letter"),
        &[("in.jsonl", &numbered("big-value", [1000, 2 << 20, 1000]))],
    );
    assert!(run.succeeded(), "{}", run.stderr());
    assert_eq!(main_values(&run), ["stored", "stored"]);
    let dead = run.lines("dead.jsonl");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["error"], "invalid-change", "{dead:?}");
    let reason = dead[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("value of 2097")
            && reason.contains("limit is 1048576 bytes per state value"),
        "{reason}"
    );
}

#[test]
fn a_list_that_grows_without_end_is_stopped_at_the_read_budget() {
    use crate::serve::{Server, send};
    use serde_json::json;
    const EVENTS: u64 = 40;

    // Each event in its own batch (the next is sent once the last is in),
    // so each read returns the whole list so far from the host: within a
    // batch the SDK keeps the batch's own appends in the plugin.
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None);
    let digest = server.upload(SANDBOX_PROBE, "probe");
    let dead_path = dir.path().join("dead.jsonl");
    let spec = json!({
        "name": "list",
        "source": {"kind": "http"},
        "key_by": {"field": "/action"},
        "plugin": {"digest": digest},
        // The plugin's own 128 MiB would last far longer than the 16 MiB
        // read budget; decoding the list takes more than 100 ms.
        "limits": {"memory_mb": 128, "call_timeout_ms": 10000},
        "sink": [
            {"output": "main", "kind": "file", "path": dir.path().join("main.jsonl")},
            {"output": "dead-letter", "kind": "file", "path": &dead_path},
        ],
    });
    let (code, created) = server.json("POST", "/v1/pipelines", &spec);
    assert_eq!(code, 201, "{created}");
    for sent in 1..=EVENTS {
        // 512 KiB items: the list passes the budget at about 32.
        send(
            &server,
            "list",
            numbered("grow-list", [512 << 10]).as_bytes(),
        );
        server.wait_for("list", Duration::from_secs(30), |s| s["events_in"] == sent);
    }
    let status = server.wait_for("list", Duration::from_secs(30), |s| {
        s["outputs"]["main"].as_u64().unwrap_or(0)
            + s["outputs"]["dead-letter"].as_u64().unwrap_or(0)
            == EVENTS
    });
    let read = status["outputs"]["main"].as_u64().unwrap();
    assert!((30..=32).contains(&read), "{status}");
    // Every later event's read is refused, so its append is not applied
    // either: the list stops growing.
    let began = Instant::now();
    let dead = loop {
        let dead = std::fs::read_to_string(&dead_path).unwrap_or_default();
        if dead.lines().count() as u64 == EVENTS - read || began.elapsed() > PATIENCE {
            break dead;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(dead.lines().count() as u64, EVENTS - read, "{dead:.2000}");
    for line in dead.lines() {
        let record: Value = serde_json::from_str(line).unwrap();
        assert_eq!(record["error"], "trap", "{record}");
        let reason = record["reason"].as_str().unwrap();
        assert!(
            reason.contains("list-read")
                && reason.contains("limit is 16777216 bytes per state read"),
            "{reason}"
        );
    }
}

#[test]
fn a_new_output_name_per_event_is_refused_past_the_limit_per_pipeline() {
    let run = weir_run(
        &spec("dead-letter"),
        &[("in.jsonl", &numbered("new-output", 0..100))],
    );
    assert!(run.succeeded(), "{}", run.stderr());
    let outputs = run.summary()["outputs"].clone();
    let names: Vec<&String> = outputs
        .as_object()
        .unwrap()
        .keys()
        .filter(|name| name.starts_with("out-"))
        .collect();
    assert_eq!(names.len(), 64, "{outputs}");
    let dead = run.lines("dead.jsonl");
    assert_eq!(dead.len(), 36, "{dead:?}");
    for record in &dead {
        assert_eq!(record["error"], "invalid-change", "{record}");
        let reason = record["reason"].as_str().unwrap();
        assert!(
            reason.contains("limit is 64 output names per pipeline"),
            "{reason}"
        );
    }
}

#[test]
fn a_new_counter_name_per_event_is_refused_past_the_limit_per_pipeline() {
    let run = weir_run(
        &spec("dead-letter"),
        &[("in.jsonl", &numbered("new-counter", 0..300))],
    );
    assert!(run.succeeded(), "{}", run.stderr());
    let counters = run.summary()["counters"].clone();
    assert_eq!(counters.as_object().unwrap().len(), 256, "{counters}");
    let dead = run.lines("dead.jsonl");
    assert_eq!(dead.len(), 44, "{dead:?}");
    let reason = dead[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("limit is 256 counter names per pipeline"),
        "{reason}"
    );
}

#[test]
fn a_log_flood_is_cut_and_rate_limited() {
    // 5 000 lines of 10 KiB: 50 MB of stderr if nothing bounded it.
    let run = weir_run(
        &spec("dead-letter"),
        &[("in.jsonl", &numbered("log-flood", [5000]))],
    );
    assert!(run.succeeded(), "{}", run.stderr());
    let stderr = run.stderr();
    assert!(stderr.len() < 1 << 20, "{} bytes of stderr", stderr.len());
    assert!(
        stderr.contains("(cut: 10240 bytes, the limit is 4096)"),
        "{stderr:.2000}"
    );
    assert!(stderr.contains("plugin log rate limit reached (100 lines a second per subtask)"));
    assert!(run.lines("dead.jsonl").is_empty());
}

fn sandbox_probe_py() -> &'static str {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    build_plugin("sandbox-probe-py", "componentize-py", &BUILT)
}

#[test]
fn a_python_plugin_that_sleeps_in_open_or_process_does_not_hold_its_subtask() {
    let spec = format!(
        r#"
name = "probe-py"
[source]
kind = "file"
path = "in.jsonl"
[key_by]
field = "/action"
[plugin]
wasm = {wasm}
config = {{ on_open = "sleep" }}
[limits]
call_timeout_ms = 5000
[[sink]]
output = "main"
kind = "file"
path = "main.jsonl"
[[sink]]
output = "dead-letter"
kind = "file"
path = "dead.jsonl"
"#,
        wasm = toml_path(sandbox_probe_py())
    );
    // Compiling CPython to native code takes a while on the first run.
    let run = weir_run_within(&spec, &events(&["ok", "sleep", "ok"]), PATIENCE * 3);
    assert!(run.succeeded(), "{}", run.stderr());
    assert_eq!(main_values(&run), ["ok", "slept", "ok"]);
    assert!(run.lines("dead.jsonl").is_empty());
}

#[test]
fn a_pipeline_the_instance_pool_cannot_serve_is_refused_at_create_and_the_others_run() {
    use crate::serve::{Server, send};
    use serde_json::json;

    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None);
    let digest = server.upload(SANDBOX_PROBE, "probe");
    let spec = |name: &str, parallelism: u32| {
        json!({
            "name": name,
            "parallelism": parallelism,
            "source": {"kind": "http"},
            "key_by": {"field": "/action"},
            "plugin": {"digest": digest},
            "sink": [{"output": "main", "kind": "file",
                      "path": dir.path().join(format!("{name}.jsonl"))}],
        })
    };
    // A pipeline of parallelism 128 reserves 257 of the pool's 512 slots.
    let (code, created) = server.json("POST", "/v1/pipelines", &spec("wide", 128));
    assert_eq!(code, 201, "{created}");
    let (code, refused) = server.json("POST", "/v1/pipelines", &spec("wider", 128));
    assert_eq!(code, 422, "{refused}");
    let detail = refused["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("instance pool is full") && detail.contains("needs 257"),
        "{refused}"
    );
    // The running pipeline, and a new one that fits, still work.
    let (code, created) = server.json("POST", "/v1/pipelines", &spec("narrow", 1));
    assert_eq!(code, 201, "{created}");
    for pipeline in ["wide", "narrow"] {
        send(&server, pipeline, &events(&["ok", "ok"]).into_bytes());
        server.wait_for(pipeline, Duration::from_secs(30), |s| {
            s["outputs"]["main"] == 2
        });
    }
}
