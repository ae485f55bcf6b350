//! `PipelineStatus` (docs/api.md) for people: one table row per pipeline,
//! or a block for one. Every field may be missing or null (a server older
//! or newer than this client): it shows as `-`, never as a failure.

use serde_json::Value;

use super::remote::{cell, list_of, short};
use super::table;

/// `GET /v1/pipelines` as a table.
pub(crate) fn pipeline_table(answer: &Value) -> String {
    let rows: Vec<Vec<String>> = list_of(answer, "pipelines")
        .iter()
        .map(|p| {
            vec![
                cell(&p["name"]),
                cell(&p["state"]),
                plugin_name(&p["plugin"]),
                cell(&p["events_in"]),
                rate(&p["events_per_s"]),
                millis_as_seconds(&p["watermark_lag_ms"]),
                checkpoint_summary(&p["last_checkpoint"]),
            ]
        })
        .collect();
    table::render(
        &[
            "name",
            "state",
            "plugin",
            "events in",
            "events/s",
            "watermark lag",
            "last checkpoint",
        ],
        &rows,
    )
}

/// One `PipelineStatus` as a block of `label: value` lines.
pub(crate) fn status_block(status: &Value) -> String {
    let plugin = &status["plugin"];
    let mut lines: Vec<(&str, String)> = vec![
        ("name", cell(&status["name"])),
        ("state", cell(&status["state"])),
    ];
    if !status["error"].is_null() {
        lines.push(("error", cell(&status["error"])));
    }
    lines.extend([
        (
            "plugin",
            format!(
                "{} ({})",
                plugin_name(plugin),
                short(&cell(&plugin["digest"]))
            ),
        ),
        ("config", cell(&plugin["config"])),
        ("parallelism", cell(&status["parallelism"])),
        ("source", cell(&status["source"])),
        (
            "events in",
            format!(
                "{} ({}/s)",
                cell(&status["events_in"]),
                rate(&status["events_per_s"])
            ),
        ),
        ("outputs", counts(&status["outputs"])),
        ("errors", counts(&status["errors"])),
        (
            "watermark",
            match &status["watermark"] {
                Value::Null => "-".to_owned(),
                watermark => format!(
                    "{} (lag {})",
                    cell(watermark),
                    millis_as_seconds(&status["watermark_lag_ms"])
                ),
            },
        ),
        (
            "last checkpoint",
            checkpoint_detail(&status["last_checkpoint"]),
        ),
        (
            "checkpoints",
            format!(
                "{} completed, {} failed",
                cell(&status["checkpoints"]["completed"]),
                cell(&status["checkpoints"]["failed"])
            ),
        ),
        (
            "swaps",
            match &status["last_swap_pause_ms"] {
                Value::Null => cell(&status["swaps"]),
                pause => format!(
                    "{} (last paused {} ms)",
                    cell(&status["swaps"]),
                    cell(pause)
                ),
            },
        ),
        ("uptime", seconds(&status["uptime_s"])),
    ]);
    if let Some(path) = status["savepoint"].as_str() {
        lines.push(("savepoint", path.to_owned()));
    }
    let width = lines
        .iter()
        .map(|(label, _)| label.len())
        .max()
        .unwrap_or(0);
    lines
        .iter()
        .map(|(label, value)| {
            format!(
                "{:<width$}  {value}\n",
                format!("{label}:"),
                width = width + 1
            )
        })
        .collect()
}

/// `name@version`.
pub(crate) fn plugin_name(plugin: &Value) -> String {
    format!("{}@{}", cell(&plugin["name"]), cell(&plugin["version"]))
}

fn rate(value: &Value) -> String {
    match value.as_f64() {
        Some(rate) => format!("{rate:.1}"),
        None => cell(value),
    }
}

fn seconds(value: &Value) -> String {
    match value.as_f64() {
        Some(s) => format!("{s:.1} s"),
        None => cell(value),
    }
}

fn millis_as_seconds(value: &Value) -> String {
    match value.as_f64() {
        Some(ms) => format!("{:.1} s", ms / 1000.0),
        None => cell(value),
    }
}

/// `#7, 3.2 s ago`.
fn checkpoint_summary(checkpoint: &Value) -> String {
    if checkpoint.is_null() {
        return "-".to_owned();
    }
    format!(
        "#{}, {} ago",
        cell(&checkpoint["id"]),
        seconds(&checkpoint["age_s"])
    )
}

/// `#7, 3.2 s ago, took 12 ms, 4096 bytes`.
fn checkpoint_detail(checkpoint: &Value) -> String {
    if checkpoint.is_null() {
        return "-".to_owned();
    }
    format!(
        "{}, took {} ms, {} bytes",
        checkpoint_summary(checkpoint),
        cell(&checkpoint["duration_ms"]),
        cell(&checkpoint["size_bytes"])
    )
}

/// `{"main": 1000, "alerts": 3}` as `alerts=3 main=1000`; `-` when empty.
fn counts(map: &Value) -> String {
    let Some(map) = map.as_object().filter(|m| !m.is_empty()) else {
        return "-".to_owned();
    };
    let mut pairs: Vec<String> = map
        .iter()
        .map(|(k, v)| format!("{k}={}", cell(v)))
        .collect();
    pairs.sort();
    pairs.join(" ")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn status() -> Value {
        json!({
            "name": "fraud",
            "state": "running",
            "error": null,
            "parallelism": 2,
            "source": "http",
            "plugin": {"digest": "0123456789abcdef", "name": "fraud-detector", "version": "1.2.0",
                       "config": {"threshold": 5}},
            "events_in": 1000,
            "events_per_s": 950.0,
            "outputs": {"main": 1000, "alerts": 3},
            "errors": {"trap": 1},
            "watermark": 1_700_000_000_000_i64,
            "watermark_lag_ms": 1200,
            "last_checkpoint": {"id": 7, "duration_ms": 12, "size_bytes": 4096, "age_s": 3.2},
            "checkpoints": {"completed": 7, "failed": 0},
            "swaps": 2,
            "last_swap_pause_ms": 1.7,
            "uptime_s": 12.5
        })
    }

    #[test]
    fn the_pipeline_table_has_one_row_per_pipeline() {
        let stopped = json!({"name": "idle", "state": "stopped", "plugin": {"name": "counter", "version": "0.1.0"},
                             "events_in": 0, "events_per_s": 0, "watermark_lag_ms": null, "last_checkpoint": null});
        let table = pipeline_table(&json!({"pipelines": [status(), stopped]}));
        assert_eq!(
            table,
            "name   state    plugin                events in  events/s  watermark lag  last checkpoint\n\
             fraud  running  fraud-detector@1.2.0  1000       950.0     1.2 s          #7, 3.2 s ago\n\
             idle   stopped  counter@0.1.0         0          0.0       -              -\n"
        );
    }

    #[test]
    fn the_status_block_reads_as_sentences_of_figures() {
        let block = status_block(&status());
        let expected = "\
name:             fraud
state:            running
plugin:           fraud-detector@1.2.0 (0123456789ab)
config:           {\"threshold\":5}
parallelism:      2
source:           http
events in:        1000 (950.0/s)
outputs:          alerts=3 main=1000
errors:           trap=1
watermark:        1700000000000 (lag 1.2 s)
last checkpoint:  #7, 3.2 s ago, took 12 ms, 4096 bytes
checkpoints:      7 completed, 0 failed
swaps:            2 (last paused 1.7 ms)
uptime:           12.5 s
";
        assert_eq!(block, expected);
    }

    #[test]
    fn a_failed_pipeline_shows_why_and_missing_fields_show_as_dashes() {
        let block = status_block(&json!({"name": "p", "state": "failed", "error": "boom"}));
        assert!(block.contains("error:            boom\n"), "{block}");
        assert!(block.contains("plugin:           -@- (-)\n"), "{block}");
        assert!(block.contains("watermark:        -\n"), "{block}");
        assert!(block.contains("outputs:          -\n"), "{block}");
    }

    #[test]
    fn a_stop_with_a_savepoint_shows_its_path() {
        let mut stopped = status();
        stopped["savepoint"] = json!("/data/savepoints/fraud/sp-8");
        assert!(
            status_block(&stopped).ends_with("savepoint:        /data/savepoints/fraud/sp-8\n")
        );
    }
}
