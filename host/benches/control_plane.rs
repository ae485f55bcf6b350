//! The control plane's figures, against the goals of issue 4, through a real
//! `weir serve` on 127.0.0.1:
//!
//! - HTTP ingest: JSON-lines batches posted by two clients; events accepted
//!   per second (durably queued) and processed per second (end to end).
//! - Hot swap under load: the pause each swap reports, p50 / p99 / max, and
//!   that no event was lost.
//! - Upload to running: POST the component (validated and compiled, nothing
//!   cached), create a pipeline with it, until it runs.
//!
//! `cargo bench -p weir --bench control_plane` (WEIR_BENCH_EVENTS, default
//! 1 000 000; WEIR_BENCH_SWAPS, default 50).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use weir_test_artifacts::{COUNTER, COUNTER_V2, FRAUD_DETECTOR};

struct Server {
    child: Child,
    url: String,
    agent: ureq::Agent,
}

impl Server {
    fn start(data_dir: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .env_remove("WEIR_TOKEN")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting weir serve");
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        let url = loop {
            line.clear();
            assert!(
                stderr.read_line(&mut line).unwrap() > 0,
                "weir serve exited"
            );
            if let Some(rest) = line.trim().strip_prefix("weir serve listening on ") {
                break rest.split_whitespace().next().unwrap().to_owned();
            }
        };
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
        Self { child, url, agent }
    }

    fn call(&self, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
        // The content type `weir serve` takes on each route (415 otherwise).
        let content_type = if path.starts_with("/v1/plugins") {
            "application/wasm"
        } else if path.ends_with("/events") {
            "application/x-ndjson"
        } else {
            "application/json"
        };
        let request = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.url))
            .header("Content-Type", content_type)
            .body(body.to_vec())
            .unwrap();
        let mut response = self.agent.run(request).expect("request");
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    fn upload(&self, bytes: &[u8]) -> String {
        let (code, info) = self.call("POST", "/v1/plugins", bytes);
        assert!(code == 201 || code == 200, "{code} {info}");
        info["digest"].as_str().unwrap().to_owned()
    }

    fn create(&self, spec: &Value) {
        let (code, status) = self.call("POST", "/v1/pipelines", spec.to_string().as_bytes());
        assert_eq!(code, 201, "{status}");
    }

    fn status(&self, name: &str) -> Value {
        self.call("GET", &format!("/v1/pipelines/{name}"), b"").1
    }

    fn send(&self, name: &str, body: &[u8]) {
        loop {
            let (code, answer) = self.call("POST", &format!("/v1/pipelines/{name}/events"), body);
            match code {
                200 => return,
                429 => std::thread::sleep(Duration::from_millis(20)),
                _ => panic!("ingest: {code} {answer}"),
            }
        }
    }

    fn wait_processed(&self, name: &str, events: u64) {
        let began = Instant::now();
        while self.status(name)["events_in"].as_u64() != Some(events) {
            assert!(
                began.elapsed() < Duration::from_secs(300),
                "{}",
                self.status(name)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn spec(name: &str, digest: &str) -> Value {
    json!({
        "name": name,
        "parallelism": 2,
        "source": {"kind": "http"},
        "key_by": {"field": "/user"},
        "plugin": {"digest": digest},
        "state": {"backend": "memory"},
        "sink": [{"output": "main", "kind": "null"}],
    })
}

fn batch(from: u64, count: u64) -> Vec<u8> {
    let mut body = Vec::with_capacity(count as usize * 32);
    for seq in from..from + count {
        writeln!(body, "{{\"user\":\"u{}\",\"seq\":{seq}}}", seq % 10_000).unwrap();
    }
    body
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn main() {
    let events = env_u64("WEIR_BENCH_EVENTS", 1_000_000);
    let swaps = env_u64("WEIR_BENCH_SWAPS", 50) as usize;
    const BATCH: u64 = 10_000;
    println!(
        "weir control plane benchmark ({} cores)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    // HTTP ingest.
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let counter = server.upload(&std::fs::read(COUNTER).unwrap());
    server.create(&spec("ingest", &counter));
    let bodies: Vec<Vec<u8>> = (0..events / BATCH)
        .map(|i| batch(i * BATCH, BATCH))
        .collect();
    let began = Instant::now();
    std::thread::scope(|s| {
        for client in 0..2 {
            let (server, bodies) = (&server, &bodies);
            s.spawn(move || {
                for body in bodies.iter().skip(client).step_by(2) {
                    server.send("ingest", body);
                }
            });
        }
    });
    let accepted = began.elapsed();
    server.wait_processed("ingest", events);
    let processed = began.elapsed();
    println!(
        "http ingest: {events} events in batches of {BATCH}: accepted {:.0} events/s ({:.2} s), processed end to end {:.0} events/s ({:.2} s)",
        events as f64 / accepted.as_secs_f64(),
        accepted.as_secs_f64(),
        events as f64 / processed.as_secs_f64(),
        processed.as_secs_f64()
    );
    drop(server);

    // Hot swap under load.
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let v1 = server.upload(&std::fs::read(COUNTER).unwrap());
    let v2 = server.upload(&std::fs::read(COUNTER_V2).unwrap());
    server.create(&spec("swap", &v1));
    let total = (events / BATCH) * BATCH;
    let mut pauses = Vec::new();
    let mut round_trips = Vec::new();
    std::thread::scope(|s| {
        let server = &server;
        let sender = s.spawn(move || {
            for i in 0..total / BATCH {
                server.send("swap", &batch(i * BATCH, BATCH));
            }
        });
        for i in 0..swaps {
            let digest = if i % 2 == 0 { &v2 } else { &v1 };
            let began = Instant::now();
            let (code, answer) = server.call(
                "PUT",
                "/v1/pipelines/swap/plugin",
                json!({"digest": digest}).to_string().as_bytes(),
            );
            assert_eq!(code, 200, "{answer}");
            round_trips.push(began.elapsed().as_secs_f64() * 1000.0);
            pauses.push(answer["pause_ms"].as_f64().unwrap());
            std::thread::sleep(Duration::from_millis(20));
        }
        sender.join().unwrap();
    });
    server.wait_processed("swap", total);
    let status = server.status("swap");
    let lost = total - status["outputs"]["main"].as_u64().unwrap();
    pauses.sort_by(f64::total_cmp);
    round_trips.sort_by(f64::total_cmp);
    println!(
        "hot swap under load: {swaps} swaps while {total} events streamed: pause p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; request round trip p50 {:.1} ms, p99 {:.1} ms; events lost {lost}",
        percentile(&pauses, 50.0),
        percentile(&pauses, 99.0),
        pauses.last().unwrap(),
        percentile(&round_trips, 50.0),
        percentile(&round_trips, 99.0),
    );
    drop(server);

    // Upload to running, with nothing compiled before (a fresh data dir).
    let fraud = std::fs::read(FRAUD_DETECTOR).unwrap();
    let mut padded = fraud.clone();
    pad_to(&mut padded, 2 << 20);
    for (what, bytes) in [
        ("fraud-detector", &fraud),
        ("fraud-detector padded to 2 MiB", &padded),
    ] {
        let mut times = Vec::new();
        for _ in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let server = Server::start(&dir.path().join("data"));
            let began = Instant::now();
            let digest = server.upload(bytes);
            server.create(&spec("fresh", &digest));
            times.push(began.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        println!(
            "upload to running: {what} ({} bytes): median {:.0} ms (runs {:?})",
            bytes.len(),
            times[1],
            times.iter().map(|t| t.round()).collect::<Vec<_>>()
        );
    }
}

/// Appends a custom section so the component is `size` bytes: what a bigger
/// component costs to send, hash, validate and store.
fn pad_to(component: &mut Vec<u8>, size: usize) {
    let name = b"weir-bench-padding";
    let payload = size.saturating_sub(component.len() + name.len() + 12);
    let mut section = Vec::new();
    leb128(&mut section, name.len() as u64);
    section.extend_from_slice(name);
    section.resize(section.len() + payload, 0);
    component.push(0); // custom section id
    let mut len = Vec::new();
    leb128(&mut len, section.len() as u64);
    component.extend_from_slice(&len);
    component.extend_from_slice(&section);
}

fn leb128(out: &mut Vec<u8>, mut n: u64) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}
