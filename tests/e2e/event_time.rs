//! Event time: watermarks, late data and timers through the real binary.

use serde_json::Value;

use crate::support::{toml_path, weir_run};
use weir_test_artifacts::TIMER_ECHO;

const EVENTS: i64 = 2000;

/// Events at ts = 10 000 + 10·i over keys k0..k2; three timers; one event
/// out of order within the bound, one far behind the watermark.
fn input() -> String {
    let mut lines = Vec::new();
    for i in 0..EVENTS {
        let timer = match i {
            5 => ",\"timer\":12000",
            6 => ",\"timer\":11000",
            7 => ",\"timer\":40000",
            _ => "",
        };
        lines.push(format!(
            "{{\"k\":\"k{}\",\"id\":\"e{i}\",\"ts\":{}{timer}}}",
            i % 3,
            10_000 + 10 * i
        ));
        if i == 1500 {
            lines.push(format!(
                "{{\"k\":\"k0\",\"id\":\"ooo\",\"ts\":{}}}",
                10_000 + 10 * i - 50
            ));
        }
        if i == 1600 {
            lines.push("{\"k\":\"k1\",\"id\":\"late\",\"ts\":10000}".into());
        }
    }
    lines.join("\n")
}

fn spec() -> String {
    format!(
        r#"
name = "timers"
[source]
kind = "file"
path = "in.jsonl"
[event_time]
field = "/ts"
max_out_of_orderness_ms = 100
[key_by]
field = "/k"
[plugin]
wasm = {wasm}
[[sink]]
output = "main"
kind = "file"
path = "main.jsonl"
[[sink]]
output = "late"
kind = "file"
path = "late.jsonl"
"#,
        wasm = toml_path(TIMER_ECHO)
    )
}

fn position(main: &[Value], what: impl Fn(&Value) -> bool) -> usize {
    main.iter().position(what).expect("record present")
}

#[test]
pub fn timer_echo() {
    let run = weir_run(&spec(), &[("in.jsonl", &input())]);
    assert!(run.succeeded(), "weir run failed:\n{}", run.stderr());
    let main = run.lines("main.jsonl");
    let event = |id: &str| position(&main, |v| v["event"] == id);
    let timer = |ts: i64| position(&main, |v| v["timer"] == ts);

    // Every on-time event reached the plugin, the out-of-order one included.
    assert_eq!(
        main.iter().filter(|v| v.get("event").is_some()).count(),
        EVENTS as usize + 1
    );
    main.iter()
        .find(|v| v["event"] == "ooo")
        .expect("within the bound is on time");

    // The event far behind went to `late`, untouched.
    let late = run.lines("late.jsonl");
    assert_eq!(late.len(), 1);
    assert_eq!(late[0]["id"], "late");

    // Watermark = max seen − bound − 1, updated after each batch of 1024.
    let e1024 = &main[event("e1024")];
    assert_eq!(e1024["watermark"], 10_000 + 10 * 1023 - 100 - 1);

    // Timers fire in timestamp order once the watermark passes them: the two
    // early ones between the first and second batch, the last at the end.
    assert!(event("e1023") < timer(11_000));
    assert!(timer(11_000) < timer(12_000));
    assert!(timer(12_000) < event("e1024"));
    assert_eq!(timer(40_000), main.len() - 1);
    assert_eq!(main[timer(11_000)]["key"], "k0");
    assert_eq!(main[timer(12_000)]["key"], "k2");
}

#[test]
fn processing_time_timers_fire_by_the_wall_clock_and_leftovers_are_reported() {
    // One timer 1 ms out, due while 300 000 more events stream through (the
    // subtask checks the clock after every batch); one an hour out, still
    // pending when the bounded source ends.
    let mut input = String::from("{\"k\":\"a\",\"id\":\"soon\",\"after_ms\":1}\n");
    input.push_str("{\"k\":\"b\",\"id\":\"later\",\"after_ms\":3600000}\n");
    for i in 0..300_000 {
        input.push_str(&format!("{{\"k\":\"c{}\",\"id\":\"x\"}}\n", i % 100));
    }
    let spec = format!(
        r#"
name = "clock"
[source]
kind = "file"
path = "in.jsonl"
[key_by]
field = "/k"
[plugin]
wasm = {wasm}
[[sink]]
output = "main"
kind = "null"
"#,
        wasm = toml_path(TIMER_ECHO)
    );
    let run = weir_run(&spec, &[("in.jsonl", &input)]);
    assert!(run.succeeded(), "weir run failed:\n{}", run.stderr());
    let summary = run.summary();
    assert_eq!(
        summary["counters"]["processing-time-timers"], 1,
        "{summary}"
    );
    assert_eq!(summary["discarded_processing_timers"], 1, "{summary}");
    // Every event echoed, plus the one timer that fired.
    assert_eq!(run.output_count("main"), 300_002 + 1);
}
