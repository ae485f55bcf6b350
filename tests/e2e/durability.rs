//! What survives a crash, through the real binary: a server whose
//! checkpoints cannot be read does not start its pipeline over from nothing
//! (it fails, naming the checkpoint and why, and leaves the committed output
//! byte for byte as it was); it falls back to an older checkpoint only if
//! that one verifies, and says so; and it starts over only when asked.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use weir_test_artifacts::{COUNTER, FRAUD_DETECTOR};

use crate::serve::{Server, committed_output, send};
use crate::support::{WEIR, cache_dir, toml_path};

/// An http pipeline counting per user, one output line per event, with a
/// file sink, that checkpoints only when asked.
fn spec(digest: &str, out: &Path) -> Value {
    json!({
        "name": "counts",
        "parallelism": 2,
        "source": {"kind": "http"},
        "key_by": {"field": "/user"},
        "plugin": {"digest": digest},
        "checkpoint": {"interval_ms": 600_000, "retain": 3},
        "sink": [{"output": "main", "kind": "file", "path": out}],
    })
}

/// `count` events `{"user": "u<k>", "seq": <n>}`, from `from`.
fn events(from: u64, count: u64) -> Vec<u8> {
    let mut body = Vec::new();
    for seq in from..from + count {
        writeln!(body, "{{\"user\":\"u{}\",\"seq\":{seq}}}", seq % 17).unwrap();
    }
    body
}

/// A server with pipeline `counts` that has committed `batches` checkpoints
/// of 1000 events each; returns it and the output path.
fn server_with_checkpoints(data: &Path, batches: u64) -> (Server, PathBuf) {
    let server = Server::start(data, None);
    let digest = server.upload(COUNTER, "counter");
    // Users' files live in `<data>/files` (the server's own folders are off limits).
    let outputs = data.join("files");
    std::fs::create_dir_all(&outputs).unwrap();
    let out = outputs.join("counts.jsonl");
    let (code, created) = server.json("POST", "/v1/pipelines", &spec(&digest, &out));
    assert_eq!(code, 201, "{created}");
    for batch in 0..batches {
        assert_eq!(send(&server, "counts", &events(batch * 1000, 1000)), 1000);
        server.wait_for("counts", Duration::from_secs(60), |s| {
            s["events_in"].as_u64().unwrap_or(0) >= (batch + 1) * 1000
        });
        let lines = committed_output(&server, "counts", &out, (batch as usize + 1) * 1000);
        assert_eq!(lines.len(), (batch as usize + 1) * 1000);
    }
    (server, out)
}

/// Every complete checkpoint directory (`chk-<id>`) under `root`, by id.
fn checkpoint_dirs(root: &Path) -> Vec<(u64, PathBuf)> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if !entry.file_type().unwrap().is_dir() {
                continue;
            }
            match entry
                .file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("chk-")?.parse::<u64>().ok())
            {
                Some(id) => found.push((id, path)),
                None => stack.push(path),
            }
        }
    }
    found.sort();
    found
}

/// Cuts every file of a checkpoint in half.
fn cut_in_half(dir: &Path) {
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                stack.push(path);
            } else {
                cut_file_in_half(&path);
            }
        }
    }
}

fn cut_file_in_half(path: &Path) {
    let len = std::fs::metadata(path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
}

fn seqs(lines: &[Value]) -> HashSet<u64> {
    lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect()
}

#[test]
fn unreadable_checkpoints_fail_the_pipeline_with_the_reason_and_keep_the_output_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (server, out) = server_with_checkpoints(&data, 2);
    server.kill();
    let committed = std::fs::read(&out).unwrap();
    assert!(!committed.is_empty());
    let checkpoints = checkpoint_dirs(&data);
    assert!(checkpoints.len() >= 2, "{checkpoints:?}");
    for (_, dir) in &checkpoints {
        cut_in_half(dir);
    }

    let server = Server::start(&data, None);
    let status = server.wait_for("counts", Duration::from_secs(60), |s| {
        s["state"] == "failed"
    });
    let error = status["error"].as_str().unwrap();
    for (id, _) in &checkpoints {
        assert!(error.contains(&format!("checkpoint {id} ")), "{error}");
    }
    assert!(
        error.contains("checksum") || error.contains("bytes") || error.contains("parse"),
        "says why: {error}"
    );
    assert!(
        error.contains("from_scratch"),
        "says how to start over: {error}"
    );
    assert_eq!(
        std::fs::read(&out).unwrap(),
        committed,
        "the committed output is untouched"
    );

    // A plain start fails the same way, and still touches nothing.
    let (code, answer) = server.json("POST", "/v1/pipelines/counts/start", &json!({}));
    assert_eq!(code, 409, "{answer}");
    assert_eq!(std::fs::read(&out).unwrap(), committed);

    // Starting over is the user's call: the CLI's --from-scratch.
    let started = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["pipeline", "start", "counts", "--from-scratch", "--server"])
        .arg(&server.url)
        .env_remove("WEIR_TOKEN")
        .output()
        .unwrap();
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );
    let status = server.status("counts");
    assert_eq!(status["state"], "running", "{status}");
    assert_eq!(status["resumed_from"]["kind"], "scratch", "{status}");
    // The ingest log still holds every acknowledged event: a run from
    // scratch rewrites the output from all of them, once each.
    server.wait_for("counts", Duration::from_secs(60), |s| {
        s["events_in"].as_u64().unwrap_or(0) >= 2000
    });
    let lines = committed_output(&server, "counts", &out, 2000);
    assert_eq!(lines.len(), 2000);
    assert_eq!(seqs(&lines).len(), 2000);
}

#[test]
fn an_older_checkpoint_that_verifies_is_resumed_and_the_status_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (server, out) = server_with_checkpoints(&data, 2);
    server.kill();
    let checkpoints = checkpoint_dirs(&data);
    let (newest, newest_dir) = checkpoints.last().cloned().unwrap();
    let (older, _) = checkpoints[checkpoints.len() - 2].clone();
    // Only its manifest: its RocksDB files are hard links shared with the
    // older checkpoint, and cutting those would damage both.
    cut_file_in_half(&newest_dir.join("MANIFEST.json"));

    let server = Server::start(&data, None);
    let status = server.wait_for("counts", Duration::from_secs(60), |s| {
        s["state"] != "stopped" && !s["resumed_from"].is_null()
    });
    assert_eq!(status["state"], "running", "{status}");
    let resumed = &status["resumed_from"];
    assert_eq!(resumed["kind"], "checkpoint", "{status}");
    assert_eq!(resumed["id"], older, "{status}");
    let skipped = resumed["skipped"].to_string();
    assert!(
        skipped.contains(&format!("checkpoint {newest} ")),
        "{skipped}"
    );
    // Exactly once still: the events after the older checkpoint are read
    // again from the ingest log, and the output matches.
    assert_eq!(send(&server, "counts", &events(2000, 500)), 500);
    server.wait_for("counts", Duration::from_secs(60), |s| {
        s["events_in"].as_u64().unwrap_or(0) >= 1500
    });
    let lines = committed_output(&server, "counts", &out, 2500);
    assert_eq!(lines.len(), 2500, "no duplicate");
    assert_eq!(seqs(&lines).len(), 2500, "no loss");
}

/// `weir run` of the fraud detector over 200 000 generated events, with
/// checkpoints (taken only by `--stop-after`) if `checkpoints`.
fn run_local(dir: &Path, checkpoints: bool, extra: &[&str]) -> std::process::Output {
    let checkpoint = if checkpoints {
        "[checkpoint]\ninterval_ms = 600000\ndir = \"checkpoints\"\nretain = 3"
    } else {
        ""
    };
    let spec = format!(
        r#"
name = "fraud"
[source]
kind = "generator"
events = 200000
[event_time]
field = "/ts"
[key_by]
field = "/user_id"
[plugin]
wasm = {wasm}
config = {{ threshold = 5, window_ms = 60000 }}
[state]
backend = "memory"
dir = "state"
{checkpoint}
[[sink]]
output = "alerts"
kind = "file"
path = "alerts.jsonl"
"#,
        wasm = toml_path(FRAUD_DETECTOR),
    );
    std::fs::write(dir.join("pipeline.toml"), spec).unwrap();
    Command::new(WEIR)
        .current_dir(dir)
        .arg("run")
        .arg("--quiet")
        .args(extra)
        .arg("pipeline.toml")
        .env("WEIR_CACHE_DIR", cache_dir())
        .output()
        .unwrap()
}

#[test]
fn weir_run_with_unreadable_checkpoints_fails_and_only_fresh_starts_over() {
    let reference = tempfile::tempdir().unwrap();
    assert!(run_local(reference.path(), false, &[]).status.success());
    let reference = std::fs::read(reference.path().join("alerts.jsonl")).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let first = run_local(dir.path(), true, &["--stop-after", "100000"]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let alerts = dir.path().join("alerts.jsonl");
    let committed = std::fs::read(&alerts).unwrap();
    assert!(!committed.is_empty());
    let checkpoints = checkpoint_dirs(&dir.path().join("checkpoints"));
    assert_eq!(checkpoints.len(), 1, "{checkpoints:?}");
    cut_in_half(&checkpoints[0].1);

    let again = run_local(dir.path(), true, &[]);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success(), "it must not start over: {stderr}");
    assert!(
        stderr.contains("checkpoint 1 ") && stderr.contains("--fresh"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(&alerts).unwrap(),
        committed,
        "output untouched"
    );

    let fresh = run_local(dir.path(), true, &["--fresh"]);
    assert!(
        fresh.status.success(),
        "{}",
        String::from_utf8_lossy(&fresh.stderr)
    );
    assert!(
        std::fs::read(&alerts).unwrap() == reference,
        "a fresh run rewrites the output as an uninterrupted run"
    );
}
