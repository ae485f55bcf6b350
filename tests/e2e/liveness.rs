//! Liveness: nothing a pipeline waits on (a sink that never answers, a
//! plugin slow to open, a FIFO, an endless line, a bad ingest body) keeps
//! `weir serve` from answering, stopping, or starting.

use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use weir_test_artifacts::{PASSTHROUGH, SANDBOX_PROBE};

use crate::serve::Server;
use crate::support::{toml_path, weir_run};

/// A local address nothing listens on (a broker that never answers).
fn dead_broker() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr.to_string()
}

/// Runs `call` on a thread and fails if it does not answer within `limit`
/// (on a server that hangs, the test fails instead of hanging too).
fn within<T: Send + 'static>(limit: Duration, call: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(call());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("no answer within {limit:?}"))
}

/// An http pipeline whose sink is a Kafka producer to a broker that never
/// answers: its first checkpoint's flush never completes.
fn stuck_sink_spec(name: &str, digest: &str, answer_timeout_ms: u64) -> Value {
    json!({
        "name": name,
        "source": {"kind": "http"},
        "key_by": {"field": "/k"},
        "plugin": {"digest": digest},
        "limits": {"answer_timeout_ms": answer_timeout_ms},
        "checkpoint": {"interval_ms": 200},
        "sink": [{"output": "main", "kind": "kafka", "brokers": dead_broker(), "topic": "out"}],
    })
}

fn send_some_events(server: &Server, name: &str) {
    let body: String = (0..100).map(|i| format!("{{\"k\":\"k{i}\"}}\n")).collect();
    let (code, answer) = server.call(
        "POST",
        &format!("/v1/pipelines/{name}/events"),
        Some(body.as_bytes()),
    );
    assert_eq!(code, 200, "{answer}");
}

#[test]
fn a_sink_that_never_answers_fails_its_pipeline_naming_it_and_delete_answers_in_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None);
    let digest = server.upload(PASSTHROUGH, "passthrough");
    let (code, created) = server.json(
        "POST",
        "/v1/pipelines",
        &stuck_sink_spec("stuck", &digest, 2000),
    );
    assert_eq!(code, 201, "{created}");
    send_some_events(&server, "stuck");
    // The checkpoint's flush waits on the broker for minutes; after 2 s in
    // that one step the sink is declared stuck and the pipeline failed.
    let status = server.wait_for("stuck", Duration::from_secs(20), |s| s["state"] == "failed");
    let error = status["error"].as_str().unwrap();
    assert!(
        error.contains("sink 0 (output main) has been staging or committing a checkpoint for")
            && error.contains("limits.answer_timeout_ms = 2000"),
        "{error}"
    );
    // The server answers everything meanwhile, and a delete is quick.
    let (code, _) = server.call("GET", "/healthz", None);
    assert_eq!(code, 200);
    let began = Instant::now();
    let (code, answer) = within(Duration::from_secs(15), {
        let url = server.url.clone();
        move || delete(&url, "stuck")
    });
    assert!(code == 204 || code == 200, "{code} {answer}");
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "{:?}",
        began.elapsed()
    );
    server.terminate();
}

#[test]
fn a_checkpoint_request_on_a_stuck_pipeline_answers_json_within_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None);
    let digest = server.upload(PASSTHROUGH, "passthrough");
    let (code, created) = server.json(
        "POST",
        "/v1/pipelines",
        &stuck_sink_spec("slow", &digest, 3000),
    );
    assert_eq!(code, 201, "{created}");
    send_some_events(&server, "slow");
    let began = Instant::now();
    let (code, answer) = server.call("POST", "/v1/pipelines/slow/checkpoints", None);
    // 504 if this request gave up first, 409 if the watchdog failed the
    // pipeline first; either way a JSON answer within the timeout.
    assert!(code == 504 || code == 409, "{code} {answer}");
    assert!(
        answer["error"].is_string() && answer["detail"].is_string(),
        "{answer}"
    );
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "{:?}",
        began.elapsed()
    );
    let status = server.wait_for("slow", Duration::from_secs(10), |s| s["state"] == "failed");
    assert!(
        status["error"]
            .as_str()
            .unwrap()
            .contains("sink 0 (output main)"),
        "{status}"
    );
}

#[test]
fn sigterm_ends_a_server_whose_pipeline_is_stuck_within_its_answer_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None);
    let digest = server.upload(PASSTHROUGH, "passthrough");
    let (code, created) = server.json(
        "POST",
        "/v1/pipelines",
        &stuck_sink_spec("stuck", &digest, 8000),
    );
    assert_eq!(code, 201, "{created}");
    send_some_events(&server, "stuck");
    // Let the first checkpoint reach the sink's flush (and stay there).
    std::thread::sleep(Duration::from_secs(1));
    let status = server.status("stuck");
    assert_eq!(status["state"], "running", "{status}");
    let began = Instant::now();
    within(Duration::from_secs(40), move || server.terminate());
    // The stop waits its 8 s answer timeout, then gives the pipeline up.
    assert!(
        began.elapsed() < Duration::from_secs(25),
        "{:?}",
        began.elapsed()
    );
}

#[test]
fn the_server_listens_and_answers_while_a_pipeline_is_slow_to_resume() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, None);
    let digest = server.upload(SANDBOX_PROBE, "probe");
    let spec = json!({
        "name": "slow-open",
        "source": {"kind": "http"},
        "key_by": {"field": "/action"},
        "plugin": {"digest": digest},
        "sink": [{"output": "main", "kind": "null"}],
    });
    let (code, created) = server.json("POST", "/v1/pipelines", &spec);
    assert_eq!(code, 201, "{created}");
    server.terminate();
    // At the next start, the plugin's `open` spins until its 8 s deadline.
    let record_path = data.join("pipelines/slow-open/pipeline.json");
    let mut record: Value = serde_json::from_slice(&std::fs::read(&record_path).unwrap()).unwrap();
    record["spec"]["plugin"]["config"] = json!({"on_open": "loop"});
    record["spec"]["limits"]["call_timeout_ms"] = json!(8000);
    std::fs::write(&record_path, serde_json::to_vec(&record).unwrap()).unwrap();

    let began = Instant::now();
    let server = Server::start(&data, None);
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "the server listened only after {:?}",
        began.elapsed()
    );
    let (code, _) = server.call("GET", "/healthz", None);
    assert_eq!(code, 200);
    assert_eq!(server.status("slow-open")["state"], "resuming");
    let (code, list) = server.call("GET", "/v1/pipelines", None);
    assert_eq!(code, 200, "{list}");
    // Then the open runs out and the resume fails, with the reason.
    let status = server.wait_for("slow-open", Duration::from_secs(30), |s| {
        s["state"] == "failed"
    });
    assert!(
        status["error"].as_str().unwrap().contains("open"),
        "{status}"
    );
}

#[test]
fn a_fifo_as_a_file_source_is_refused_at_once_naming_its_path_and_kind() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None);
    let fifo = dir.path().join("events.fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let digest = server.upload(PASSTHROUGH, "passthrough");
    let spec = json!({
        "name": "fifo",
        "source": {"kind": "file", "path": fifo},
        "key_by": {"field": "/k"},
        "plugin": {"digest": digest},
        "sink": [{"output": "main", "kind": "null"}],
    });
    let url = server.url.clone();
    let (code, answer) = within(Duration::from_secs(10), move || {
        post_json(&url, "/v1/pipelines", &spec)
    });
    assert_eq!(code, 400, "{answer}");
    let detail = answer["detail"].as_str().unwrap();
    // (The path policy refuses it first, the file source itself if the
    // path turns into a FIFO later: either names the path and what is
    // wrong with it.)
    assert!(
        detail.starts_with("source.path: ")
            && detail.contains("events.fifo")
            && detail.contains("not a regular file"),
        "{detail}"
    );
    // Nobody was left waiting on the FIFO: the server answers, and the
    // pipeline does not exist.
    let (code, _) = server.call("GET", "/v1/pipelines/fifo", None);
    assert_eq!(code, 404);

    // A regular file at create that is a FIFO at the next start: the file
    // source refuses it without waiting for a writer.
    let input = dir.path().join("events.jsonl");
    std::fs::write(&input, "{\"k\":\"a\"}\n").unwrap();
    let spec = json!({
        "name": "later",
        "source": {"kind": "file", "path": input},
        "key_by": {"field": "/k"},
        "plugin": {"digest": digest},
        "sink": [{"output": "main", "kind": "null"}],
    });
    let (code, created) = server.json("POST", "/v1/pipelines", &spec);
    assert_eq!(code, 201, "{created}");
    server.wait_for("later", Duration::from_secs(20), |s| {
        s["state"] == "finished"
    });
    std::fs::remove_file(&input).unwrap();
    let made = Command::new("mkfifo").arg(&input).status().unwrap();
    assert!(made.success());
    let url = server.url.clone();
    let (code, answer) = within(Duration::from_secs(10), move || {
        request(&url, "POST", "/v1/pipelines/later/start", None)
    });
    assert!(code == 400 || code == 409, "{code} {answer}");
    let detail = answer["detail"].as_str().unwrap();
    assert!(
        detail.contains("events.jsonl") && detail.contains("not a regular file"),
        "{detail}"
    );
    let (code, _) = server.call("GET", "/healthz", None);
    assert_eq!(code, 200);
}

#[test]
fn a_line_over_the_limit_goes_to_dead_letter_with_the_limit_and_the_run_goes_on() {
    let spec = format!(
        r#"
name = "long-lines"
[source]
kind = "file"
path = "in.jsonl"
max_line_bytes = 4096
[key_by]
field = "/k"
[plugin]
wasm = {wasm}
[[sink]]
output = "main"
kind = "file"
path = "out.jsonl"
[[sink]]
output = "dead-letter"
kind = "file"
path = "dead.jsonl"
"#,
        wasm = toml_path(PASSTHROUGH)
    );
    // A valid event, only too long; then the run must go on.
    let long = format!("{{\"k\":\"a\",\"pad\":\"{}\"}}", "x".repeat(3 << 20));
    let input = format!("{{\"k\":\"a\",\"n\":1}}\n{long}\n{{\"k\":\"b\",\"n\":2}}\n");
    let run = weir_run(&spec, &[("in.jsonl", &input)]);
    assert!(run.succeeded(), "weir run failed:\n{}", run.stderr());
    let out: Vec<u64> = run
        .lines("out.jsonl")
        .iter()
        .map(|v| v["n"].as_u64().unwrap())
        .collect();
    assert_eq!(out, vec![1, 2]);
    let dead = run.lines("dead.jsonl");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["error"], "too-large");
    let reason = dead[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!("a line of {} bytes", long.len()))
            && reason.contains("limit of 4096 bytes (source.max_line_bytes)"),
        "{reason}"
    );
    let value = dead[0]["value"].as_str().unwrap();
    assert!(value.len() <= 1024 && long.starts_with(value), "{value}");
    assert_eq!(dead[0]["offset"], 16);
}

#[test]
fn an_ingest_body_with_a_bad_line_is_refused_naming_the_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None);
    let digest = server.upload(PASSTHROUGH, "passthrough");
    let spec = json!({
        "name": "ingest",
        "source": {"kind": "http"},
        "key_by": {"field": "/k"},
        "plugin": {"digest": digest},
        "sink": [{"output": "main", "kind": "null"}],
    });
    let (code, created) = server.json("POST", "/v1/pipelines", &spec);
    assert_eq!(code, 201, "{created}");
    // One event spread over lines, broken on its third line.
    let (code, answer) = server.call(
        "POST",
        "/v1/pipelines/ingest/events",
        Some(b"{\n  \"k\": \"a\",\n  \"n\": tru,\n  \"m\": 1\n}\n"),
    );
    assert_eq!(code, 400, "{answer}");
    let detail = answer["detail"].as_str().unwrap();
    assert!(detail.starts_with("line 3, column"), "{detail}");
    // JSON lines with a bad fourth line: nothing accepted, line 4 named.
    let (code, answer) = server.call(
        "POST",
        "/v1/pipelines/ingest/events",
        Some(b"{\"k\":\"a\"}\n{\"k\":\"b\"}\n{\"k\":\"c\"}\n{\"k\":}\n"),
    );
    assert_eq!(code, 400, "{answer}");
    let detail = answer["detail"].as_str().unwrap();
    assert!(detail.starts_with("line 4: not a JSON event"), "{detail}");
    // A pretty-printed event keeps its keys in the order sent.
    let (code, answer) = server.call(
        "POST",
        "/v1/pipelines/ingest/events",
        Some(b"{\n  \"k\": \"a\",\n  \"b\": 1\n}\n"),
    );
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["accepted"], 1);
    let log = std::fs::read_dir(dir.path().join("data/pipelines/ingest/ingest"))
        .unwrap()
        .filter_map(|e| std::fs::read(e.unwrap().path()).ok())
        .flatten()
        .collect::<Vec<u8>>();
    let log = String::from_utf8_lossy(&log);
    assert!(log.contains("{\"k\":\"a\",\"b\":1}"), "{log}");
}

/// `DELETE /v1/pipelines/{name}` with a client of its own (for `within`).
fn delete(url: &str, name: &str) -> (u16, Value) {
    request(url, "DELETE", &format!("/v1/pipelines/{name}"), None)
}

fn post_json(url: &str, path: &str, body: &Value) -> (u16, Value) {
    request(url, "POST", path, Some(body.to_string().into_bytes()))
}

fn request(url: &str, method: &str, path: &str, body: Option<Vec<u8>>) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut request = ureq::http::Request::builder()
        .method(method)
        .uri(format!("{url}{path}"));
    if body.is_some() {
        request = request.header("Content-Type", "application/json");
    }
    let mut response = agent
        .run(request.body(body.unwrap_or_default()).unwrap())
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}
