//! The client commands of the real `weir` binary against a stand-in server:
//! the requests they make and what they print of the answers.

use std::process::{Command, Output};

use serde_json::json;

use crate::fake_server::{Answer, FakeServer, Request};
use crate::support::{WEIR, toml_path};
use weir_test_artifacts::COUNTER;

fn digest(start: &str) -> String {
    format!("{start}{}", "0".repeat(64 - start.len()))
}

fn ok(status: u16, body: serde_json::Value) -> Answer {
    (status, Vec::new(), body.to_string())
}

fn plugin_info(digest: &str, name: &str) -> serde_json::Value {
    json!({"digest": digest, "name": name, "version": "0.1.0", "size": 1234,
           "world": "weir:plugin/processor@0.1.0", "uploaded_ms": 1, "used_by": []})
}

fn status(name: &str) -> serde_json::Value {
    json!({"name": name, "state": "running", "error": null, "parallelism": 1,
           "source": "http", "plugin": {"digest": digest("abcdef"), "name": "counter",
           "version": "0.1.0", "config": {}}, "events_in": 0, "events_per_s": 0.0,
           "outputs": {}, "errors": {}, "watermark": null, "watermark_lag_ms": null,
           "last_checkpoint": null, "checkpoints": {"completed": 0, "failed": 0},
           "swaps": 0, "last_swap_pause_ms": null, "uptime_s": 0.1})
}

fn weir(server: &FakeServer, dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(WEIR)
        .current_dir(dir)
        .args(args)
        .env("WEIR_SERVER", &server.url)
        .env_remove("WEIR_TOKEN")
        .output()
        .expect("running weir")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "weir failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn route(request: &Request) -> (&str, &str) {
    (request.method.as_str(), request.target.as_str())
}

#[test]
fn pipeline_create_uploads_the_specs_component_and_names_it_by_digest() {
    let dir = tempfile::tempdir().unwrap();
    let spec = format!(
        r#"
name = "count"
[source]
kind = "http"
[key_by]
field = "/user"
[plugin]
wasm = {wasm}
config = {{ fail_open = false }}
[[sink]]
output = "main"
kind = "file"
path = "out.jsonl"
"#,
        wasm = toml_path(COUNTER)
    );
    std::fs::write(dir.path().join("count.toml"), spec).unwrap();
    let uploaded = digest("c0ffee");
    let server = FakeServer::start(move |r| match route(r) {
        ("POST", t) if t.starts_with("/v1/plugins") => ok(201, plugin_info(&uploaded, "counter")),
        ("POST", "/v1/pipelines") => ok(201, status("count")),
        _ => ok(404, json!({"error": "not_found", "detail": "no route"})),
    });
    let output = weir(
        &server,
        dir.path(),
        &["pipeline", "create", "count.toml", "--token", "s3cret"],
    );
    assert!(stdout(&output).contains("state:            running"));

    let requests = server.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    let upload = &requests[0];
    assert_eq!(upload.target, "/v1/plugins?name=counter");
    assert_eq!(upload.header("content-type"), Some("application/wasm"));
    assert_eq!(upload.header("authorization"), Some("Bearer s3cret"));
    assert_eq!(upload.body, std::fs::read(COUNTER).unwrap());
    let create = requests[1].json();
    assert_eq!(
        create["plugin"],
        json!({"digest": digest("c0ffee"), "config": {"fail_open": false}})
    );
    assert_eq!(create["source"], json!({"kind": "http"}));
    assert_eq!(create["sink"][0]["path"], "out.jsonl");
}

#[test]
fn a_refusal_of_the_server_is_printed_as_its_detail_and_status() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.json"),
        r#"{"name": "p", "plugin": {"digest": "d"}}"#,
    )
    .unwrap();
    let server = FakeServer::start(|_| {
        ok(
            409,
            json!({"error": "conflict", "detail": "a pipeline named \"p\" exists"}),
        )
    });
    let output = weir(&server, dir.path(), &["pipeline", "create", "p.json"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr, "error: a pipeline named \"p\" exists (409)\n");
    assert_eq!(
        server.requests()[0].json(),
        json!({"name": "p", "plugin": {"digest": "d"}})
    );
}

#[test]
fn pipeline_swap_resolves_a_digest_prefix_and_reports_the_new_version() {
    let dir = tempfile::tempdir().unwrap();
    let server = FakeServer::start(|r| match route(r) {
        ("GET", "/v1/plugins") => ok(
            200,
            json!({"plugins": [plugin_info(&digest("abcdef1"), "counter-v2"),
                               plugin_info(&digest("123456"), "other")]}),
        ),
        ("PUT", "/v1/pipelines/count/plugin") => ok(
            200,
            json!({"digest": digest("abcdef1"), "name": "counter-v2", "version": "0.1.0",
                   "config": {"fail_open": false}, "pause_ms": 1.9, "swaps": 3}),
        ),
        _ => ok(404, json!({"error": "not_found", "detail": "no route"})),
    });
    let output = weir(
        &server,
        dir.path(),
        &[
            "pipeline",
            "swap",
            "count",
            "--plugin",
            "abcdef",
            "--config",
            r#"{"fail_open": false}"#,
        ],
    );
    assert_eq!(
        stdout(&output),
        "swapped count to counter-v2@0.1.0 (abcdef100000) in 1.90 ms\n"
    );
    let swap = &server.requests()[1];
    assert_eq!(
        swap.json(),
        json!({"digest": digest("abcdef1"), "config": {"fail_open": false}})
    );
}

#[test]
fn pipeline_send_cuts_the_file_into_batches_and_retries_after_429() {
    let dir = tempfile::tempdir().unwrap();
    let lines: String = (0..25_000)
        .map(|i| format!("{{\"user\":\"u{}\",\"seq\":{i}}}\n", i % 7))
        .collect();
    std::fs::write(dir.path().join("events.jsonl"), lines).unwrap();
    let busy_once = std::sync::atomic::AtomicBool::new(true);
    let server = FakeServer::start(move |r| {
        if busy_once.swap(false, std::sync::atomic::Ordering::Relaxed) {
            return (
                429,
                vec![("Retry-After", "1".to_owned())],
                json!({"error": "too_many_requests", "detail": "behind"}).to_string(),
            );
        }
        let accepted = r.text().lines().count();
        ok(200, json!({ "accepted": accepted }))
    });
    let output = weir(
        &server,
        dir.path(),
        &["pipeline", "send", "count", "events.jsonl"],
    );
    assert_eq!(stdout(&output), "count accepted 25000 events\n");
    let requests = server.requests();
    let sizes: Vec<usize> = requests.iter().map(|r| r.text().lines().count()).collect();
    assert_eq!(
        sizes,
        [10_000, 10_000, 10_000, 5_000],
        "the first was retried"
    );
    assert!(
        requests
            .iter()
            .all(|r| r.target == "/v1/pipelines/count/events")
    );
    assert_eq!(requests[0].body, requests[1].body);
}

#[test]
fn savepoint_create_with_a_pipeline_name_asks_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = FakeServer::start(|_| {
        ok(
            201,
            json!({"id": 8, "path": "/data/savepoints/count/sp-8", "size_bytes": 4096}),
        )
    });
    let output = weir(
        &server,
        dir.path(),
        &["savepoint", "create", "count", "--to", "sp"],
    );
    assert!(stdout(&output).contains("written to /data/savepoints/count/sp-8 (4096 bytes)"));
    let request = &server.requests()[0];
    assert_eq!(route(request), ("POST", "/v1/pipelines/count/savepoints"));
    let to = dir.path().canonicalize().unwrap().join("sp");
    assert_eq!(request.json(), json!({"to": to.to_str().unwrap()}));
}

#[test]
fn savepoint_create_takes_a_pipeline_name_or_a_spec_but_not_both() {
    let dir = tempfile::tempdir().unwrap();
    let server = FakeServer::start(|_| ok(500, json!({})));
    for args in [
        &[
            "savepoint",
            "create",
            "count",
            "--spec",
            "p.toml",
            "--to",
            "sp",
        ][..],
        &["savepoint", "create"][..],
        &["savepoint", "create", "--spec", "p.toml"][..],
        &["savepoint", "list", "count", "--spec", "p.toml"][..],
    ] {
        let output = weir(&server, dir.path(), args);
        assert_eq!(output.status.code(), Some(2), "{args:?} is a usage error");
    }
    assert!(server.requests().is_empty());
}

#[test]
fn without_a_server_the_error_says_to_start_one() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let output = Command::new(WEIR)
        .args(["plugin", "list", "--server"])
        .arg(format!("http://127.0.0.1:{port}"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with(&format!(
            "error: cannot reach the weir server at http://127.0.0.1:{port} (is `weir serve` running?)"
        )),
        "{stderr}"
    );
}
