//! `weir plugin test PLUGIN --events FILE`: runs a plugin in the real host
//! (memory state, one subtask) on a file of sample events and shows what it
//! did: every record of every output, side outputs included, and the state
//! each key holds at the end. With `--expect`, compares that with a golden
//! file: a plugin's sample test in any language.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use serde_json::{Map, Value, json};

use super::plugin_build;
use crate::api::states_json;
use crate::connectors::{Origin, OutputRecord};
use crate::engine::Engine;
use crate::runtime::{Pipeline, RunOptions, RunSummary};
use crate::spec::{DEAD_LETTER_OUTPUT, PipelineSpec};

#[derive(clap::Args)]
pub(crate) struct TestArgs {
    /// A component (`.wasm`) or a plugin directory (built first, like
    /// `weir plugin build`).
    plugin: PathBuf,
    /// Sample events, one JSON value per line, in event-time order.
    #[arg(long, value_name = "FILE.jsonl")]
    events: PathBuf,
    /// The plugin's config, as JSON.
    #[arg(long, default_value = "{}")]
    config: String,
    /// JSON pointer to each event's key.
    #[arg(long, value_name = "POINTER", default_value = "/key")]
    key_by: String,
    /// JSON pointer to each event's time in ms (event time advances through
    /// the file with it); `none` runs without event time.
    #[arg(long, value_name = "POINTER", default_value = "/ts")]
    event_time: String,
    /// How far behind the latest event time the watermark trails.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    max_out_of_orderness_ms: u64,
    /// Print the result as JSON (the shape `--expect` compares).
    #[arg(long)]
    json: bool,
    /// Compare the result with this JSON file (written by `--json`, say) and
    /// fail if they differ.
    #[arg(long, value_name = "FILE.json")]
    expect: Option<PathBuf>,
}

pub(crate) fn test(args: TestArgs) -> anyhow::Result<()> {
    // Cheap checks first: a build can take a minute.
    let config: Value = serde_json::from_str(&args.config)
        .with_context(|| format!("--config is not JSON: {}", args.config))?;
    if !args.events.is_file() {
        bail!("--events {}: no such file", args.events.display());
    }
    let component_path = if args.plugin.is_dir() {
        plugin_build::build(&args.plugin).context("building the plugin")?
    } else {
        args.plugin.clone()
    };
    let component = std::fs::read(&component_path)
        .with_context(|| format!("cannot read the component {}", component_path.display()))?;
    let spec = test_spec(&args, &component_path, config)?;

    let engine = Engine::new(Engine::default_cache_dir()).context("starting the wasm engine")?;
    let options = RunOptions {
        inspect: true,
        ..RunOptions::default()
    };
    let summary = Pipeline::start(&engine, &spec, &component, Instant::now(), options)
        .context("starting the plugin")?
        .run(|_, _| {})
        .context("running the plugin")?;
    let report = report_json(&summary);

    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&summary, &report));
    }
    if let Some(expected) = &args.expect {
        let text = std::fs::read_to_string(expected)
            .with_context(|| format!("reading {}", expected.display()))?;
        let wanted: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", expected.display()))?;
        let differences = differences(&wanted, &report);
        if !differences.is_empty() {
            bail!(
                "the result differs from {}:\n  {}",
                expected.display(),
                differences.join("\n  ")
            );
        }
        eprintln!("ok: the result matches {}", expected.display());
    }
    Ok(())
}

/// A one-subtask, memory-state pipeline over the events file, with no
/// sinks: the run keeps every output record itself.
fn test_spec(args: &TestArgs, component: &Path, config: Value) -> anyhow::Result<PipelineSpec> {
    let absolute = |path: &Path| -> anyhow::Result<PathBuf> {
        std::path::absolute(path).with_context(|| format!("resolving {}", path.display()))
    };
    let mut spec = json!({
        "name": "plugin-test",
        "parallelism": 1,
        "source": {"kind": "file", "path": absolute(&args.events)?},
        "key_by": {"field": args.key_by},
        "plugin": {"wasm": absolute(component)?, "config": config},
        "state": {"backend": "memory"},
    });
    if args.event_time != "none" {
        spec["event_time"] = json!({
            "field": args.event_time,
            "max_out_of_orderness_ms": args.max_out_of_orderness_ms,
        });
    }
    PipelineSpec::from_json(spec.to_string().as_bytes()).context("invalid test options")
}

/// What the plugin did, as JSON: records by output, state by key, and the
/// counts a reader checks first.
fn report_json(summary: &RunSummary) -> Value {
    // Two threads write dead letters (the source those it cannot key or
    // time, the subtask those the plugin refuses): put them in input order,
    // so that the report is the same on every run. (One subtask writes every
    // other output, in order.)
    let mut captured: Vec<&(String, OutputRecord)> = summary.captured.iter().collect();
    captured.sort_by_key(|(output, record)| match record.origin {
        Origin::Record {
            split,
            offset,
            index,
        } if output == DEAD_LETTER_OUTPUT => (split, offset, index),
        _ => (0, 0, 0),
    });
    let mut outputs: Map<String, Value> = Map::new();
    for (output, record) in captured {
        let records = outputs
            .entry(output.clone())
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(records) = records {
            records.push(record_json(record));
        }
    }
    let state: Map<String, Value> = summary
        .final_state
        .iter()
        .map(|(key, view)| (text(key), Value::Array(states_json(view))))
        .collect();
    let errors: Map<String, Value> = summary
        .errors
        .iter()
        .map(|(kind, n)| (kind.clone(), (*n).into()))
        .collect();
    json!({
        "events_in": summary.events_in,
        "outputs": outputs,
        "state": state,
        "pending_event_timers": summary.pending_event_timers,
        "errors": errors,
    })
}

fn record_json(record: &OutputRecord) -> Value {
    let value = serde_json::from_slice::<Value>(&record.value)
        .unwrap_or_else(|_| Value::String(text(&record.value)));
    json!({
        "key": record.key.as_deref().map(text),
        "timestamp": record.timestamp,
        "value": value,
    })
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The report for people: outputs by name, then
/// each key's state.
fn render(summary: &RunSummary, report: &Value) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "{} events in", summary.events_in);
    for (output, records) in report["outputs"].as_object().into_iter().flatten() {
        let records = records.as_array().map_or(&[][..], Vec::as_slice);
        let _ = writeln!(out, "\noutput {output} ({} records)", records.len());
        for record in records {
            let key = record["key"].as_str().unwrap_or("-");
            let ts = record["timestamp"]
                .as_i64()
                .map_or_else(|| "-".to_owned(), |t| t.to_string());
            let _ = writeln!(out, "  key {key}  ts {ts}  {}", record["value"]);
        }
    }
    let state = report["state"].as_object();
    let keys = state.map_or(0, Map::len);
    let _ = writeln!(
        out,
        "\nstate at the end of input, after the last timers fired ({keys} keys)"
    );
    for (key, states) in state.into_iter().flatten() {
        let _ = writeln!(out, "  key {key}");
        for s in states.as_array().into_iter().flatten() {
            let shown = s.get("value").or(s.get("entries")).or(s.get("items"));
            let _ = writeln!(
                out,
                "    {} ({}) = {}",
                s["name"].as_str().unwrap_or("?"),
                s["kind"].as_str().unwrap_or("?"),
                shown.unwrap_or(&Value::Null)
            );
        }
    }
    if summary.pending_event_timers > 0 {
        let _ = writeln!(
            out,
            "\n{} event-time timers never fired",
            summary.pending_event_timers
        );
    }
    out
}

/// Where `actual` departs from `expected`, as JSON pointers with both sides.
fn differences(expected: &Value, actual: &Value) -> Vec<String> {
    fn walk(path: &str, expected: &Value, actual: &Value, out: &mut Vec<String>) {
        match (expected, actual) {
            (Value::Object(e), Value::Object(a)) => {
                for (k, ev) in e {
                    let p = format!("{path}/{k}");
                    match a.get(k) {
                        Some(av) => walk(&p, ev, av, out),
                        None => out.push(format!("{p}: expected {ev}, missing")),
                    }
                }
                for (k, av) in a {
                    if !e.contains_key(k) {
                        out.push(format!("{path}/{k}: not expected, got {av}"));
                    }
                }
            }
            (Value::Array(e), Value::Array(a)) if e.len() == a.len() => {
                for (i, (ev, av)) in e.iter().zip(a).enumerate() {
                    walk(&format!("{path}/{i}"), ev, av, out);
                }
            }
            (Value::Array(e), Value::Array(a)) => out.push(format!(
                "{}: expected {} items, got {}: {}",
                if path.is_empty() { "/" } else { path },
                e.len(),
                a.len(),
                actual
            )),
            _ if expected != actual => out.push(format!(
                "{}: expected {expected}, got {actual}",
                if path.is_empty() { "/" } else { path }
            )),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk("", expected, actual, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_name_the_pointer_and_both_sides() {
        let expected = json!({"outputs": {"main": [{"value": 1}, {"value": 2}]}, "events_in": 2});
        assert!(differences(&expected, &expected).is_empty());
        let actual = json!({"outputs": {"main": [{"value": 1}, {"value": 3}]}, "errors": {}});
        assert_eq!(
            differences(&expected, &actual),
            [
                "/events_in: expected 2, missing",
                "/outputs/main/1/value: expected 2, got 3",
                "/errors: not expected, got {}",
            ]
        );
        let shorter = json!({"outputs": {"main": [{"value": 1}]}, "events_in": 2});
        assert_eq!(
            differences(&expected, &shorter),
            [r#"/outputs/main: expected 2 items, got 1: [{"value":1}]"#]
        );
    }
}
