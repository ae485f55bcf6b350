//! The control plane end to end: a real `weir serve` on 127.0.0.1, real
//! HTTP, real plugins.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use weir_test_artifacts::{
    COUNTER, COUNTER_V2, COUNTER_V3, FRAUD_DETECTOR, OTHER_WORLD, PASSTHROUGH, ROGUE_GUEST,
};

use crate::support::read_jsonl;

/// A `weir serve` child process; killed when dropped.
pub struct Server {
    child: Child,
    pub url: String,
    pub data_dir: PathBuf,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Server {
    /// A server whose API clients may also use the data dir's parent (the
    /// test's temporary folder, where tests keep their inputs and outputs).
    pub fn start(data_dir: &Path, token: Option<&str>) -> Self {
        let parent = data_dir.parent().unwrap();
        std::fs::create_dir_all(parent).unwrap();
        Self::start_with(
            data_dir,
            token,
            &[std::ffi::OsStr::new("--allow-path"), parent.as_os_str()],
        )
    }

    /// A server started with `extra` arguments and nothing allowed beyond
    /// them.
    pub fn start_with(data_dir: &Path, token: Option<&str>, extra: &[&std::ffi::OsStr]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_weir"));
        command
            .args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .current_dir(data_dir.parent().unwrap())
            .env_remove("WEIR_TOKEN")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // From the environment: `weir serve` takes no token on its command line.
        if let Some(token) = token {
            command.env("WEIR_TOKEN", token);
        }
        let mut child = command.spawn().expect("starting weir serve");
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        let url = loop {
            line.clear();
            if stderr.read_line(&mut line).unwrap() == 0 {
                let _ = child.wait();
                panic!("weir serve exited before listening");
            }
            if let Some(rest) = line.trim().strip_prefix("weir serve listening on ") {
                break rest.split_whitespace().next().unwrap().to_owned();
            }
        };
        // Keep draining stderr so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sink = String::new();
            while stderr.read_line(&mut sink).is_ok_and(|n| n > 0) {
                sink.clear();
            }
        });
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        Self {
            child,
            url,
            data_dir: data_dir.to_owned(),
            token: token.map(str::to_owned),
            agent,
        }
    }

    /// One request; the status and the JSON body (`Null` if none).
    pub fn call(&self, method: &str, path: &str, body: Option<&[u8]>) -> (u16, Value) {
        self.call_with_token(method, path, body, self.token.as_deref())
    }

    pub fn call_with_token(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        token: Option<&str>,
    ) -> (u16, Value) {
        let url = format!("{}{path}", self.url);
        let mut request = ureq::http::Request::builder().method(method).uri(&url);
        if body.is_some() {
            request = request.header("Content-Type", content_type_of(method, path));
        }
        let request = match token {
            Some(t) => request.header("Authorization", format!("Bearer {t}")),
            None => request,
        };
        let mut response = self
            .agent
            .run(request.body(body.unwrap_or_default().to_vec()).unwrap())
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    pub fn json(&self, method: &str, path: &str, body: &Value) -> (u16, Value) {
        self.call(method, path, Some(body.to_string().as_bytes()))
    }

    pub fn upload(&self, wasm: &str, name: &str) -> String {
        let bytes = std::fs::read(wasm).unwrap();
        let (status, info) = self.call(
            "POST",
            &format!("/v1/plugins?name={name}&version=1"),
            Some(&bytes),
        );
        assert!(status == 201 || status == 200, "{status} {info}");
        info["digest"].as_str().unwrap().to_owned()
    }

    pub fn status(&self, pipeline: &str) -> Value {
        let (code, status) = self.call("GET", &format!("/v1/pipelines/{pipeline}"), None);
        assert_eq!(code, 200, "{status}");
        status
    }

    /// Polls the status until `done` holds (or panics after `limit`).
    pub fn wait_for(
        &self,
        pipeline: &str,
        limit: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let began = Instant::now();
        loop {
            let status = self.status(pipeline);
            if done(&status) {
                return status;
            }
            assert!(
                began.elapsed() < limit,
                "pipeline {pipeline} did not get there in {limit:?}: {status}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no shutdown, no last checkpoint.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and wait for the orderly shutdown.
    pub fn terminate(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The content type `weir serve` takes for a body on `path`.
pub fn content_type_of(method: &str, path: &str) -> &'static str {
    let path = path.split('?').next().unwrap_or(path);
    if method == "POST" && path == "/v1/plugins" {
        "application/wasm"
    } else if path.ends_with("/events") {
        "application/x-ndjson"
    } else {
        "application/json"
    }
}

fn counter_spec(name: &str, digest: &str, parallelism: u32, out: &Path) -> Value {
    json!({
        "name": name,
        "parallelism": parallelism,
        "source": {"kind": "http"},
        "key_by": {"field": "/user"},
        "plugin": {"digest": digest},
        "checkpoint": {"interval_ms": 200},
        "sink": [{"output": "main", "kind": "file", "path": out}],
    })
}

/// `count` events `{"user": "u<k>", "seq": <n>}` as JSON lines, from `from`.
fn events(from: u64, count: u64, users: u64) -> Vec<u8> {
    let mut body = Vec::new();
    for seq in from..from + count {
        writeln!(body, "{{\"user\":\"u{}\",\"seq\":{seq}}}", seq % users).unwrap();
    }
    body
}

/// Sends `body`, retrying while the server answers 429.
pub(crate) fn send(server: &Server, pipeline: &str, body: &[u8]) -> u64 {
    loop {
        let (code, answer) = server.call(
            "POST",
            &format!("/v1/pipelines/{pipeline}/events"),
            Some(body),
        );
        match code {
            200 => return answer["accepted"].as_u64().unwrap(),
            429 => std::thread::sleep(Duration::from_millis(100)),
            _ => panic!("ingest: {code} {answer}"),
        }
    }
}

/// Commits what the pipeline has processed with a checkpoint, then reads
/// the file sink once it holds at least `expected` lines and stops growing.
/// (The sink appends a checkpoint's records just after the checkpoint
/// completes, so a reader can catch an append half done: only whole lines
/// count.)
pub(crate) fn committed_output(
    server: &Server,
    pipeline: &str,
    out: &Path,
    expected: usize,
) -> Vec<Value> {
    let (code, c) = server.call(
        "POST",
        &format!("/v1/pipelines/{pipeline}/checkpoints"),
        None,
    );
    assert_eq!(code, 201, "{c}");
    let began = Instant::now();
    let mut last = usize::MAX;
    loop {
        let text = std::fs::read_to_string(out).unwrap_or_default();
        let whole = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
        let lines: Vec<Value> = whole
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
            .collect();
        if (lines.len() >= expected && lines.len() == last)
            || began.elapsed() > Duration::from_secs(30)
        {
            return lines;
        }
        last = lines.len();
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn upload_create_ingest_query_status_and_delete_over_raw_http() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None);
    let (code, health) = server.call("GET", "/healthz", None);
    assert_eq!((code, health), (200, Value::String("ok".into())));

    let digest = server.upload(COUNTER, "counter");
    // The same bytes again: the same plugin, 200 instead of 201.
    let (code, again) = server.call(
        "POST",
        "/v1/plugins?name=counter&version=1",
        Some(&std::fs::read(COUNTER).unwrap()),
    );
    assert_eq!(code, 200, "{again}");
    assert_eq!(again["digest"], digest.as_str());
    assert_eq!(again["world"], "weir:plugin/processor@0.1.0");

    let out = dir.path().join("counts.jsonl");
    let (code, created) = server.json(
        "POST",
        "/v1/pipelines",
        &counter_spec("counts", &digest, 2, &out),
    );
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["state"], "running");
    assert_eq!(created["plugin"]["name"], "counter");
    let (code, taken) = server.json(
        "POST",
        "/v1/pipelines",
        &counter_spec("counts", &digest, 2, &out),
    );
    assert_eq!(code, 409, "{taken}");

    assert_eq!(send(&server, "counts", &events(0, 1000, 10)), 1000);
    // One event as a (pretty-printed) JSON document is fine too.
    assert_eq!(
        send(
            &server,
            "counts",
            b"{\n \"user\": \"u3\",\n \"seq\": 1000\n}"
        ),
        1
    );
    let (code, bad) = server.call(
        "POST",
        "/v1/pipelines/counts/events",
        Some(b"{\"user\":\"u1\"}\nnot json\n"),
    );
    assert_eq!(code, 400, "{bad}");
    assert!(bad["detail"].as_str().unwrap().contains("line 2"), "{bad}");

    let status = server.wait_for("counts", Duration::from_secs(30), |s| {
        s["outputs"]["main"] == 1001
    });
    assert_eq!(status["events_in"], 1001);
    assert_eq!(status["source"], "http");

    // u3 got events 3, 13, ..., 993 and 1000: 101 of them.
    let (code, state) = server.call("GET", "/v1/pipelines/counts/state/u3", None);
    assert_eq!(code, 200, "{state}");
    assert_eq!(state["key"], "u3");
    assert_eq!(state["states"][0]["name"], "count");
    let (code, none) = server.call("GET", "/v1/pipelines/counts/state/nobody", None);
    assert_eq!(code, 404, "{none}");

    let lines = committed_output(&server, "counts", &out, 1001);
    assert_eq!(lines.len(), 1001);
    let last_u3 = lines
        .iter()
        .filter(|l| l["key"] == "u3")
        .map(|l| l["count"].as_u64().unwrap())
        .max();
    assert_eq!(last_u3, Some(101));

    let (code, listed) = server.call("GET", "/v1/pipelines", None);
    assert_eq!(code, 200);
    assert_eq!(listed["pipelines"][0]["name"], "counts");
    let (code, metrics) = server.call("GET", "/metrics", None);
    assert_eq!(code, 200);
    let metrics = metrics.as_str().unwrap().to_owned();
    assert!(
        metrics.contains("weir_events_in_total{pipeline=\"counts\"} 1001"),
        "{metrics}"
    );
    assert!(metrics.contains("weir_events_out_total{pipeline=\"counts\",output=\"main\"} 1001"));
    assert!(metrics.contains("weir_plugin_call_seconds_count{pipeline=\"counts\"}"));

    // In use: the plugin cannot go.
    let (code, conflict) = server.call("DELETE", &format!("/v1/plugins/{digest}"), None);
    assert_eq!(code, 409, "{conflict}");
    let (code, _) = server.call("DELETE", "/v1/pipelines/counts", None);
    assert_eq!(code, 204);
    let (code, gone) = server.call("GET", "/v1/pipelines/counts", None);
    assert_eq!((code, gone["error"].as_str()), (404, Some("not_found")));
    assert!(!server.data_dir.join("checkpoints/counts").exists());
    let (code, _) = server.call("DELETE", &format!("/v1/plugins/{digest}"), None);
    assert_eq!(code, 204);
    let (_, plugins) = server.call("GET", "/v1/plugins", None);
    assert_eq!(plugins["plugins"], json!([]));
    let compiled = std::fs::read_dir(server.data_dir.join("compiled/components")).unwrap();
    assert_eq!(
        compiled.count(),
        0,
        "the compiled form went with the plugin"
    );
}

#[test]
fn swapping_twenty_times_under_load_processes_every_event_once_and_carries_state() {
    const EVENTS: u64 = 300_000;
    const USERS: u64 = 1_000;
    const SWAPS: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None);
    let v1 = server.upload(COUNTER, "counter");
    let v2 = server.upload(COUNTER_V2, "counter-v2");
    let out = dir.path().join("counts.jsonl");
    let (code, created) = server.json("POST", "/v1/pipelines", &counter_spec("load", &v1, 2, &out));
    assert_eq!(code, 201, "{created}");

    // The sender and the swapper pace each other, so that the swaps are
    // spread over the stream and every version handles some events: batch
    // `i` waits for swap `i / 4`, and each swap waits for new events.
    const BATCH: u64 = 3_000;
    let swaps_done = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let sender = scope.spawn(|| {
            for i in 0..EVENTS / BATCH {
                while swaps_done.load(std::sync::atomic::Ordering::SeqCst)
                    < SWAPS.min(i as usize / 4)
                {
                    std::thread::sleep(Duration::from_millis(1));
                }
                send(&server, "load", &events(i * BATCH, BATCH, USERS));
            }
        });
        let mut pauses = Vec::new();
        let mut seen = 0;
        for i in 0..SWAPS {
            server.wait_for("load", Duration::from_secs(60), |s| {
                s["events_in"].as_u64().unwrap() > seen
            });
            let digest = if i % 2 == 0 { &v2 } else { &v1 };
            let (code, swapped) = server.json(
                "PUT",
                "/v1/pipelines/load/plugin",
                &json!({"digest": digest}),
            );
            assert_eq!(code, 200, "swap {i}: {swapped}");
            assert_eq!(swapped["digest"], digest.as_str());
            pauses.push(swapped["pause_ms"].as_f64().unwrap());
            seen = server.status("load")["events_in"].as_u64().unwrap();
            swaps_done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        sender.join().unwrap();
        eprintln!("swap pauses (ms): {pauses:?}");
    });
    let status = server.wait_for("load", Duration::from_secs(120), |s| {
        s["outputs"]["main"] == EVENTS
    });
    assert_eq!(status["swaps"], SWAPS as u64);
    assert_eq!(
        status["plugin"]["digest"],
        v1.as_str(),
        "an even number of swaps ends on v1"
    );

    let mut lines = committed_output(&server, "load", &out, EVENTS as usize);
    assert_eq!(
        lines.len() as u64,
        EVENTS,
        "every input produced exactly one output"
    );
    lines.sort_by_key(|l| l["seq"].as_u64().unwrap());
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["seq"], i as u64, "each event once: {line}");
    }
    // The stream switches version exactly once per swap, at one point for
    // every key: sorted by input order, the version changes 20 times (each
    // swap waited for events after the one before).
    let changes = lines
        .windows(2)
        .filter(|w| w[0]["version"] != w[1]["version"])
        .count();
    assert_eq!(changes, SWAPS, "versions switch only at swaps");
    assert_eq!(lines[0]["version"], "counter");
    // Per key, the count runs 1, 2, 3, ... across every version.
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for line in &lines {
        let count = counts
            .entry(line["key"].as_str().unwrap().to_owned())
            .or_default();
        *count += 1;
        assert_eq!(
            line["count"], *count,
            "state carried across versions: {line}"
        );
    }
    assert_eq!(counts.len() as u64, USERS);
}

#[test]
fn a_swap_to_a_plugin_whose_open_fails_keeps_the_old_version_running() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None);
    let v1 = server.upload(COUNTER, "counter");
    let v2 = server.upload(COUNTER_V2, "counter-v2");
    let out = dir.path().join("counts.jsonl");
    let (code, _) = server.json(
        "POST",
        "/v1/pipelines",
        &counter_spec("refuse", &v1, 2, &out),
    );
    assert_eq!(code, 201);
    send(&server, "refuse", &events(0, 100, 7));

    let (code, refused) = server.json(
        "PUT",
        "/v1/pipelines/refuse/plugin",
        &json!({"digest": v2, "config": {"fail_open": true}}),
    );
    assert_eq!(code, 422, "{refused}");
    assert_eq!(refused["error"], "plugin_refused");
    assert!(
        refused["detail"].as_str().unwrap().contains("fail_open"),
        "{refused}"
    );
    // Unknown digest, bad body: 4xx, not 500.
    let (code, unknown) = server.json(
        "PUT",
        "/v1/pipelines/refuse/plugin",
        &json!({"digest": "ab".repeat(32)}),
    );
    assert_eq!(code, 404, "{unknown}");
    let (code, bad) = server.call(
        "PUT",
        "/v1/pipelines/refuse/plugin",
        Some(b"{\"digest\": 5}"),
    );
    assert_eq!(code, 400, "{bad}");

    send(&server, "refuse", &events(100, 100, 7));
    server.wait_for("refuse", Duration::from_secs(30), |s| {
        s["outputs"]["main"] == 200
    });
    let status = server.status("refuse");
    assert_eq!(status["state"], "running");
    assert_eq!(status["plugin"]["digest"], v1.as_str());
    assert_eq!(status["swaps"], 0);
    let lines = committed_output(&server, "refuse", &out, 200);
    assert_eq!(lines.len(), 200);
    assert!(lines.iter().all(|l| l["version"] == "counter"));
}

#[test]
fn bad_uploads_are_refused_with_a_reason_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None);
    let cases: [(&str, Vec<u8>, &str); 3] = [
        (
            "random bytes",
            b"these are not wasm at all".to_vec(),
            "not a WebAssembly component",
        ),
        // The smallest valid core module: magic and version 1.
        (
            "a core module",
            b"\0asm\x01\0\0\0".to_vec(),
            "core wasm module",
        ),
        (
            "another world",
            std::fs::read(OTHER_WORLD).unwrap(),
            "weir:plugin/processor",
        ),
    ];
    for (what, bytes, reason) in cases {
        let (code, answer) = server.call("POST", "/v1/plugins", Some(&bytes));
        assert_eq!(code, 400, "{what}: {answer}");
        assert_eq!(answer["error"], "bad_request", "{what}");
        assert!(
            answer["detail"].as_str().unwrap().contains(reason),
            "{what}: {answer}"
        );
    }
    // 65 MiB announced: refused before the body is read.
    let (code, head) = raw_post_announcing(&server.url, "/v1/plugins", 65 << 20);
    assert_eq!(code, 413, "{head}");
    let (_, plugins) = server.call("GET", "/v1/plugins", None);
    assert_eq!(plugins["plugins"], json!([]));
    let stored: Vec<_> = std::fs::read_dir(server.data_dir.join("plugins"))
        .unwrap()
        .collect();
    assert!(stored.is_empty(), "{stored:?}");

    // Specs: a bad field is named, an unknown plugin is 404, a path plugin is refused.
    let (code, bad) = server.json(
        "POST",
        "/v1/pipelines",
        &json!({"name": "x", "source": {"kind": "http"},
        "key_by": {"field": "/k"}, "plugin": {"digest": "ab".repeat(32)}, "parallelism": 0}),
    );
    assert_eq!(code, 400, "{bad}");
    assert!(
        bad["detail"].as_str().unwrap().starts_with("parallelism"),
        "{bad}"
    );
    let (code, unknown) = server.json(
        "POST",
        "/v1/pipelines",
        &json!({"name": "x", "source": {"kind": "http"},
        "key_by": {"field": "/k"}, "plugin": {"digest": "ab".repeat(32)}}),
    );
    assert_eq!(code, 404, "{unknown}");
    let (code, path) = server.json(
        "POST",
        "/v1/pipelines",
        &json!({"name": "x", "source": {"kind": "http"},
        "key_by": {"field": "/k"}, "plugin": {"wasm": PASSTHROUGH}}),
    );
    assert_eq!(code, 400, "{path}");
    let (code, not_json) = server.call("POST", "/v1/pipelines", Some(b"name = 'toml'"));
    assert_eq!(code, 400, "{not_json}");
}

/// Sends headers announcing `length` bytes and only a little of them; the
/// status line of the answer.
fn raw_post_announcing(url: &str, path: &str, length: usize) -> (u16, String) {
    let addr = url.strip_prefix("http://").unwrap();
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {length}\r\n\r\n"
    )
    .unwrap();
    let _ = stream.write_all(&[0u8; 1024]);
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut head = [0u8; 512];
    let n = stream.read(&mut head).unwrap();
    let head = String::from_utf8_lossy(&head[..n]).into_owned();
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, head)
}

#[test]
fn with_a_token_every_route_but_healthz_needs_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), Some("s3cret"));
    let routes = [
        ("GET", "/v1/plugins"),
        ("POST", "/v1/plugins"),
        ("GET", "/v1/plugins/abc"),
        ("DELETE", "/v1/plugins/abc"),
        ("GET", "/v1/pipelines"),
        ("POST", "/v1/pipelines"),
        ("GET", "/v1/pipelines/p"),
        ("DELETE", "/v1/pipelines/p"),
        ("PUT", "/v1/pipelines/p/plugin"),
        ("POST", "/v1/pipelines/p/checkpoints"),
        ("GET", "/v1/pipelines/p/checkpoints"),
        ("POST", "/v1/pipelines/p/savepoints"),
        ("POST", "/v1/pipelines/p/stop"),
        ("POST", "/v1/pipelines/p/start"),
        ("POST", "/v1/pipelines/p/events"),
        ("GET", "/v1/pipelines/p/state/k"),
        ("GET", "/v1/openapi.json"),
        ("GET", "/metrics"),
    ];
    for (method, path) in routes {
        for token in [None, Some("wrong")] {
            let (code, answer) = server.call_with_token(method, path, Some(b"{}"), token);
            assert_eq!(code, 401, "{method} {path} with {token:?}: {answer}");
            assert_eq!(answer["error"], "unauthorized");
        }
    }
    let (code, _) = server.call_with_token("GET", "/healthz", None, None);
    assert_eq!(code, 200);
    let (code, listed) = server.call("GET", "/v1/pipelines", None);
    assert_eq!(code, 200, "{listed}");
    let (code, doc) = server.call("GET", "/v1/openapi.json", None);
    assert_eq!(code, 200);
    assert_eq!(doc["openapi"], "3.1.0");
}

#[test]
fn a_killed_server_resumes_its_pipelines_from_checkpoints_with_no_loss_and_no_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, None);
    let fraud = server.upload(FRAUD_DETECTOR, "fraud");
    let counter = server.upload(COUNTER, "counter");
    let alerts = dir.path().join("alerts.jsonl");
    let (code, created) = server.json(
        "POST",
        "/v1/pipelines",
        &json!({
            "name": "fraud",
            "parallelism": 2,
            "source": {"kind": "generator", "events": 1_000_000},
            "event_time": {"field": "/ts"},
            "key_by": {"field": "/user_id"},
            "plugin": {"digest": fraud, "config": {"threshold": 5, "window_ms": 60000}},
            "checkpoint": {"interval_ms": 200},
            "sink": [{"output": "alerts", "kind": "file", "path": alerts}],
        }),
    );
    assert_eq!(code, 201, "{created}");
    let counts = dir.path().join("counts.jsonl");
    let (code, _) = server.json(
        "POST",
        "/v1/pipelines",
        &counter_spec("counts", &counter, 2, &counts),
    );
    assert_eq!(code, 201);
    assert_eq!(send(&server, "counts", &events(0, 20_000, 100)), 20_000);
    // Kill once both pipelines have checkpointed part of their input.
    server.wait_for("fraud", Duration::from_secs(60), |s| {
        !s["last_checkpoint"].is_null() && s["events_in"].as_u64().unwrap() >= 200_000
    });
    server.wait_for("counts", Duration::from_secs(60), |s| {
        !s["last_checkpoint"].is_null()
    });
    server.kill();

    let server = Server::start(&data, None);
    assert_eq!(
        send(&server, "counts", &events(20_000, 10_000, 100)),
        10_000
    );
    // The server listens before its pipelines resume: wait past both.
    let status = server.wait_for("fraud", Duration::from_secs(120), |s| {
        s["state"] != "running" && s["state"] != "resuming"
    });
    assert_eq!(status["state"], "finished", "{status}");
    let alerts = read_jsonl(&alerts);
    assert_eq!(
        alerts.len(),
        2_056,
        "the reference alerts, no gap and no duplicate"
    );
    let users: u64 = alerts.iter().map(|a| a["user_id"].as_u64().unwrap()).sum();
    assert_eq!(users, 103_597_187);

    // The http pipeline: every event acknowledged before the kill is
    // processed exactly once.
    server.wait_for("counts", Duration::from_secs(60), |s| {
        s["state"] == "running"
    });
    server.wait_for("counts", Duration::from_secs(60), |s| {
        s["outputs"]["main"].as_u64().unwrap_or(0) >= 10_000
    });
    let lines = committed_output(&server, "counts", &counts, 30_000);
    let seqs: HashSet<u64> = lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert_eq!(lines.len(), 30_000, "no duplicate");
    assert_eq!(seqs.len(), 30_000, "no loss");
}

#[test]
fn stop_with_a_savepoint_and_start_again_resumes_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None);
    let counter = server.upload(COUNTER, "counter");
    let out = dir.path().join("counts.jsonl");
    let (code, _) = server.json(
        "POST",
        "/v1/pipelines",
        &counter_spec("sp", &counter, 1, &out),
    );
    assert_eq!(code, 201);
    send(&server, "sp", &events(0, 500, 5));
    server.wait_for("sp", Duration::from_secs(30), |s| {
        s["outputs"]["main"] == 500
    });
    let savepoint = dir.path().join("sp-1");
    let (code, stopped) = server.json("POST", "/v1/pipelines/sp/stop", &json!({"to": savepoint}));
    assert_eq!(code, 200, "{stopped}");
    assert_eq!(stopped["state"], "stopped");
    assert!(savepoint.join("MANIFEST.json").exists());
    let (code, refused) = server.call(
        "POST",
        "/v1/pipelines/sp/events",
        Some(b"{\"user\":\"u1\",\"seq\":500}"),
    );
    assert_eq!(code, 409, "{refused}");
    let (code, listed) = server.call("GET", "/v1/pipelines/sp/checkpoints", None);
    assert_eq!(code, 200);
    assert!(
        !listed["checkpoints"].as_array().unwrap().is_empty(),
        "{listed}"
    );

    let (code, started) = server.call("POST", "/v1/pipelines/sp/start", None);
    assert_eq!(code, 200, "{started}");
    assert_eq!(started["state"], "running");
    send(&server, "sp", &events(500, 500, 5));
    server.wait_for("sp", Duration::from_secs(30), |s| {
        s["outputs"]["main"] == 500
    });
    let lines = committed_output(&server, "sp", &out, 1000);
    assert_eq!(lines.len(), 1000);
    // Counts continue from the stop: u0 saw 200 events, the last has count 200.
    let u0 = lines
        .iter()
        .filter(|l| l["key"] == "u0")
        .map(|l| l["count"].as_u64().unwrap())
        .max();
    assert_eq!(u0, Some(200));
    let (code, made) = server.call("POST", "/v1/pipelines/sp/savepoints", None);
    assert_eq!(code, 201, "{made}");
    assert!(
        Path::new(made["path"].as_str().unwrap())
            .join("MANIFEST.json")
            .exists()
    );

    // An orderly shutdown stops at a checkpoint; the next start resumes.
    server.terminate();
    let server = Server::start(&dir.path().join("data"), None);
    // It listens first, then resumes its pipelines in the background.
    server.wait_for("sp", Duration::from_secs(30), |s| s["state"] == "running");
    send(&server, "sp", &events(1000, 5, 5));
    server.wait_for("sp", Duration::from_secs(30), |s| s["outputs"]["main"] == 5);
    let lines = committed_output(&server, "sp", &out, 1005);
    assert_eq!(lines.len(), 1005);
    assert_eq!(lines.last().unwrap()["count"], 201);
}

/// `weir <args>` against `server`; stdout, or a panic with stderr.
fn cli(server: &Server, cwd: &Path, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .args(["--server", &server.url])
        .current_dir(cwd)
        .env_remove("WEIR_TOKEN")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "weir {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn the_cli_uploads_creates_sends_swaps_and_deletes_against_a_real_server() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let server = Server::start(&cwd.join("data"), None);
    std::fs::write(
        cwd.join("counts.toml"),
        format!(
            r#"
name = "counts"
parallelism = 2
[source]
kind = "http"
[key_by]
field = "/user"
[plugin]
wasm = {wasm:?}
[checkpoint]
interval_ms = 200
[[sink]]
output = "main"
kind = "file"
path = {out:?}
"#,
            wasm = COUNTER,
            out = cwd.join("counts.jsonl"),
        ),
    )
    .unwrap();
    std::fs::write(cwd.join("events.jsonl"), events(0, 1000, 10)).unwrap();

    let created = cli(&server, cwd, &["pipeline", "create", "counts.toml"]);
    assert!(created.contains("counts"), "{created}");
    let sent = cli(
        &server,
        cwd,
        &["pipeline", "send", "counts", "events.jsonl"],
    );
    assert!(sent.contains("1000"), "{sent}");
    server.wait_for("counts", Duration::from_secs(30), |s| {
        s["outputs"]["main"] == 1000
    });
    let status: Value = serde_json::from_str(&cli(
        &server,
        cwd,
        &["pipeline", "status", "counts", "--json"],
    ))
    .unwrap();
    assert_eq!(status["events_in"], 1000);
    assert_eq!(status["plugin"]["name"], "counter");
    let human = cli(&server, cwd, &["pipeline", "status", "counts"]);
    assert!(human.contains("running"), "{human}");

    let swapped = cli(
        &server,
        cwd,
        &["pipeline", "swap", "counts", "--plugin", COUNTER_V2],
    );
    assert!(
        swapped.contains("swapped counts to counter_v2"),
        "{swapped}"
    );
    cli(
        &server,
        cwd,
        &["pipeline", "send", "counts", "events.jsonl"],
    );
    server.wait_for("counts", Duration::from_secs(30), |s| {
        s["outputs"]["main"] == 2000
    });
    cli(&server, cwd, &["pipeline", "checkpoint", "counts"]);
    let lines = committed_output(&server, "counts", &cwd.join("counts.jsonl"), 2000);
    assert_eq!(lines.len(), 2000);
    assert!(lines[1000..].iter().all(|l| l["version"] == "counter-v2"));
    assert_eq!(
        lines.last().unwrap()["count"],
        200,
        "u9's count carried across the swap"
    );

    let listed = cli(&server, cwd, &["pipeline", "list"]);
    assert!(
        listed.contains("counts") && listed.contains("running"),
        "{listed}"
    );
    let plugins = cli(&server, cwd, &["plugin", "list"]);
    assert!(plugins.contains("counter_v2"), "{plugins}");
    let savepoints = cli(&server, cwd, &["savepoint", "list", "counts"]);
    assert!(!savepoints.trim().is_empty());
    cli(&server, cwd, &["pipeline", "delete", "counts"]);
    let (code, _) = server.call("GET", "/v1/pipelines/counts", None);
    assert_eq!(code, 404);
    let digest = server.upload(COUNTER, "counter");
    cli(&server, cwd, &["plugin", "delete", &digest[..12]]);
    assert_eq!(
        server.call("GET", &format!("/v1/plugins/{digest}"), None).0,
        404
    );
}

#[test]
pub fn counter_v3() {
    // A swap to a newer state version migrates every count before the new
    // version takes traffic; a swap back to the older one is refused.
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None);
    let v0 = server.upload(COUNTER, "counter");
    let v3 = server.upload(COUNTER_V3, "counter-v3");
    let out = dir.path().join("counts.jsonl");
    let (code, _) = server.json(
        "POST",
        "/v1/pipelines",
        &counter_spec("migrate", &v0, 2, &out),
    );
    assert_eq!(code, 201);
    send(&server, "migrate", &events(0, 1000, 10));
    server.wait_for("migrate", Duration::from_secs(30), |s| {
        s["outputs"]["main"] == 1000
    });
    let (code, swapped) = server.json(
        "PUT",
        "/v1/pipelines/migrate/plugin",
        &json!({"digest": v3}),
    );
    assert_eq!(code, 200, "{swapped}");
    send(&server, "migrate", &events(1000, 1000, 10));
    server.wait_for("migrate", Duration::from_secs(30), |s| {
        s["outputs"]["main"] == 2000
    });
    let lines = committed_output(&server, "migrate", &out, 2000);
    assert_eq!(lines.len(), 2000);
    for line in &lines[..1000] {
        assert_eq!(line["version"], "counter");
    }
    for line in &lines[1000..] {
        assert_eq!(line["version"], "counter-v3", "{line}");
        assert_eq!(
            line["migrated"], true,
            "every key's count was migrated: {line}"
        );
    }
    assert_eq!(
        lines.last().unwrap()["count"],
        200,
        "counts carried through the migration"
    );

    let (code, back) = server.json(
        "PUT",
        "/v1/pipelines/migrate/plugin",
        &json!({"digest": v0}),
    );
    assert_eq!(code, 422, "{back}");
    assert!(
        back["detail"].as_str().unwrap().contains("state version 1"),
        "{back}"
    );
    assert_eq!(server.status("migrate")["plugin"]["digest"], v3.as_str());

    // A restore brings the state version along: a new pipeline started from
    // a savepoint of the old format with counter-v3 migrates at the start.
    let (code, _) = server.json(
        "POST",
        "/v1/pipelines",
        &counter_spec("old", &v0, 1, &dir.path().join("old.jsonl")),
    );
    assert_eq!(code, 201);
    send(&server, "old", &events(0, 50, 5));
    server.wait_for("old", Duration::from_secs(30), |s| {
        s["outputs"]["main"] == 50
    });
    let savepoint = dir.path().join("old-sp");
    let (code, stopped) = server.json("POST", "/v1/pipelines/old/stop", &json!({"to": savepoint}));
    assert_eq!(code, 200, "{stopped}");
    let mut spec = counter_spec("new", &v3, 2, &dir.path().join("new.jsonl"));
    spec["restore_from"] = json!(savepoint);
    let (code, created) = server.json("POST", "/v1/pipelines", &spec);
    assert_eq!(code, 201, "{created}");
    send(&server, "new", &events(50, 5, 5));
    server.wait_for("new", Duration::from_secs(30), |s| {
        s["outputs"]["main"] == 5
    });
    let lines = committed_output(&server, "new", &dir.path().join("new.jsonl"), 5);
    assert_eq!(lines.len(), 5);
    assert!(
        lines
            .iter()
            .all(|l| l["count"] == 11 && l["migrated"] == true),
        "{lines:?}"
    );
}

#[test]
fn failed_migrations_leave_every_subtask_on_the_old_version() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None);
    let v0 = server.upload(COUNTER, "counter");
    let v3 = server.upload(COUNTER_V3, "counter-v3");
    let rogue = server.upload(ROGUE_GUEST, "rogue");
    let out = dir.path().join("counts.jsonl");
    let (code, _) = server.json(
        "POST",
        "/v1/pipelines",
        &counter_spec("stuck", &v0, 2, &out),
    );
    assert_eq!(code, 201);
    // Twenty keys over both subtasks with 5 events each, and one with 13:
    // only the subtask that owns it can fail to migrate.
    send(&server, "stuck", &events(0, 100, 20));
    let mut lucky = Vec::new();
    for seq in 100..113 {
        writeln!(lucky, "{{\"user\":\"lucky\",\"seq\":{seq}}}").unwrap();
    }
    send(&server, "stuck", &lucky);
    server.wait_for("stuck", Duration::from_secs(30), |s| {
        s["outputs"]["main"] == 113
    });
    let (code, refused) = server.json("PUT", "/v1/pipelines/stuck/plugin", &json!({"digest": v3}));
    assert_eq!(code, 422, "{refused}");
    let detail = refused["detail"].as_str().unwrap();
    assert!(
        detail.contains("unlucky") && detail.contains("every subtask keeps the old version"),
        "{detail}"
    );
    let (code, rogue) = server.json(
        "PUT",
        "/v1/pipelines/stuck/plugin",
        &json!({"digest": rogue}),
    );
    assert_eq!(code, 422, "{rogue}");
    assert!(
        rogue["detail"]
            .as_str()
            .unwrap()
            .contains("migrate returned 0 results"),
        "{rogue}"
    );

    send(&server, "stuck", &events(113, 40, 20));
    server.wait_for("stuck", Duration::from_secs(30), |s| {
        s["outputs"]["main"] == 153
    });
    let lines = committed_output(&server, "stuck", &out, 153);
    assert_eq!(lines.len(), 153);
    assert!(
        lines.iter().all(|l| l["version"] == "counter"),
        "no subtask switched"
    );
    // The counts went on from where they were: 5 events, then 2 more each.
    for line in &lines[113..] {
        let seq = line["seq"].as_u64().unwrap();
        assert_eq!(
            line["count"].as_u64().unwrap(),
            6 + (seq - 113) / 20,
            "{line}"
        );
    }
    assert_eq!(server.status("stuck")["swaps"], 0);
}
