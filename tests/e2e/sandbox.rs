//! The sandbox: a misbehaving plugin costs one event, never the host.

use serde_json::Value;

use crate::support::{toml_path, weir_run};
use weir_test_artifacts::SANDBOX_PROBE;

fn spec(on_error: &str) -> String {
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
[limits]
call_timeout_ms = 100
memory_mb = 16
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
