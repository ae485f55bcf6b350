//! The Python and JavaScript SDKs' timers, clocks, side outputs, logs and
//! counters, through `weir run` with `plugins/timer-probe-{py,js}`: what
//! fires, what a delete cancels, and what is left at the end.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::Value;

use crate::support::{build_plugin, toml_path, weir_run};

fn input() -> String {
    let mut input = String::new();
    for line in [
        r#"{"k":"a","id":"e1","ts":1000,"timer":5000}"#,
        r#"{"k":"a","id":"e2","ts":1001,"timer":6000}"#,
        r#"{"k":"a","id":"e3","ts":1002,"cancel":6000}"#,
        // Due at once: fires after the batch, as the clock is checked.
        r#"{"k":"b","id":"soon","ts":1003,"after_ms":0}"#,
        r#"{"k":"b","id":"gone","ts":1004,"after_ms_cancelled":3600000}"#,
        // Still pending when the input ends: discarded and counted.
        r#"{"k":"b","id":"later","ts":1005,"after_ms":3600000}"#,
        // A fractional time is truncated to whole ms, in both SDKs.
        r#"{"k":"e","id":"frac","ts":1005,"timer":7000.9}"#,
    ] {
        input.push_str(line);
        input.push('\n');
    }
    // More than a batch, so that the due processing-time timer fires while
    // events still stream.
    for i in 0..3_000 {
        let _ = writeln!(
            input,
            r#"{{"k":"c{}","id":"x","ts":{}}}"#,
            i % 10,
            1_006 + i
        );
    }
    input.push_str(r#"{"k":"d","id":"end","ts":10000}"#);
    input
}

fn check_timer_probe(wasm: &str) {
    let spec = format!(
        r#"
name = "timers"
[source]
kind = "file"
path = "in.jsonl"
[event_time]
field = "/ts"
[key_by]
field = "/k"
[plugin]
wasm = {wasm}
[limits]
call_timeout_ms = 5000
[[sink]]
output = "main"
kind = "file"
path = "main.jsonl"
[[sink]]
output = "echo"
kind = "file"
path = "echo.jsonl"
"#,
        wasm = toml_path(wasm)
    );
    let input = input();
    let run = weir_run(&spec, &[("in.jsonl", &input)]);
    assert!(run.succeeded(), "weir run failed:\n{}", run.stderr());
    let main = run.lines("main.jsonl");
    let timers: Vec<&Value> = main.iter().filter(|r| r.get("timer").is_some()).collect();
    let event_timers: Vec<(i64, &str)> = timers
        .iter()
        .filter(|t| t["processing_time"] == false)
        .map(|t| (t["timer"].as_i64().unwrap(), t["key"].as_str().unwrap()))
        .collect();
    assert_eq!(
        event_timers,
        [(5000, "a"), (7000, "e")],
        "6000 was deleted: {timers:?}"
    );
    let processing: Vec<&&Value> = timers
        .iter()
        .filter(|t| t["processing_time"] == true)
        .collect();
    assert_eq!(processing.len(), 1, "{timers:?}");
    assert_eq!(processing[0]["key"], "b");

    // The event-time timer fired once the watermark passed 5000: after
    // every event before it (the last filler is at 4005 ms).
    let position = |f: &dyn Fn(&Value) -> bool| main.iter().position(f).unwrap();
    assert!(position(&|r| r["ts"] == 4005) < position(&|r| r["timer"] == 5000));
    let e2 = &main[position(&|r| r["event"] == "e2")];
    assert_eq!(e2["ts"], 1001);
    // (JavaScript numbers are doubles: i64::MIN comes back as a float.)
    assert!(e2["watermark"].as_f64().unwrap() < 1001.0, "{e2}");

    // Every event went to the side output as it came.
    let echo = run.lines("echo.jsonl");
    assert_eq!(echo.len(), input.lines().count());
    assert_eq!(echo[0]["id"], "e1");

    let summary = run.summary();
    assert_eq!(
        summary["counters"]["processing-time-timers"], 1,
        "{summary}"
    );
    assert_eq!(summary["counters"]["event-time-timers"], 2, "{summary}");
    assert_eq!(summary["discarded_processing_timers"], 1, "{summary}");
    assert_eq!(summary["pending_event_timers"], 0, "{summary}");
}

#[test]
fn python_timers_fire_delete_and_report_leftovers() {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    check_timer_probe(build_plugin("timer-probe-py", "componentize-py", &BUILT));
}

#[test]
fn javascript_timers_fire_delete_and_report_leftovers() {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    check_timer_probe(build_plugin("timer-probe-js", "componentize-js", &BUILT));
}
