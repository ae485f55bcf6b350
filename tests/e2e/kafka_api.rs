//! Kafka client properties in specs sent to `weir serve`: only the allowlist
//! (and what the operator adds at start) reaches librdkafka, and credentials
//! read from the server's environment never come back out (docs/kafka.md).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use weir_test_artifacts::PASSTHROUGH;

use crate::tansu::Broker;

/// A `weir serve` whose stderr goes to a file (to search its logs).
struct Server {
    child: Child,
    url: String,
    log: PathBuf,
    agent: ureq::Agent,
}

impl Server {
    fn start(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
        let log = dir.join("serve.log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_weir"));
        command
            .args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
            .arg(dir.join("data"))
            .args(args)
            .current_dir(dir)
            .env_remove("WEIR_TOKEN")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("starting weir serve");
        let began = Instant::now();
        let url = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            // Whole lines only: the server may be writing the last one.
            let whole = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
            if let Some(rest) = whole
                .lines()
                .find_map(|l| l.trim().strip_prefix("weir serve listening on "))
            {
                break rest.split_whitespace().next().unwrap().to_owned();
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("weir serve exited ({status}): {text}");
            }
            assert!(began.elapsed() < Duration::from_secs(60), "{text}");
            std::thread::sleep(Duration::from_millis(50));
        };
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        Server {
            child,
            url,
            log,
            agent,
        }
    }

    fn call(&self, method: &str, path: &str, content_type: &str, body: &[u8]) -> (u16, Value) {
        let mut request = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.url));
        if !content_type.is_empty() {
            request = request.header("Content-Type", content_type);
        }
        let request = request.body(body.to_vec()).unwrap();
        let mut response = self.agent.run(request).unwrap();
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    fn upload_passthrough(&self) -> String {
        let wasm = std::fs::read(PASSTHROUGH).unwrap();
        let (status, info) = self.call(
            "POST",
            "/v1/plugins?name=passthrough&version=1",
            "application/wasm",
            &wasm,
        );
        assert!(status == 201 || status == 200, "{status} {info}");
        info["digest"].as_str().unwrap().to_owned()
    }

    fn create(&self, spec: &Value) -> (u16, Value) {
        self.call(
            "POST",
            "/v1/pipelines",
            "application/json",
            spec.to_string().as_bytes(),
        )
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Records of `in` (bounded) to topic `out`, through the passthrough plugin.
fn spec(
    name: &str,
    digest: &str,
    brokers: &str,
    source_properties: Value,
    sink_properties: Value,
) -> Value {
    json!({
        "name": name,
        "source": {
            "kind": "kafka", "brokers": brokers, "topics": ["in"], "group": name,
            "bounded": true, "properties": source_properties,
        },
        "key_by": { "field": "record-key" },
        "plugin": { "digest": digest },
        "sink": [{
            "output": "main", "kind": "kafka", "brokers": brokers, "topic": "out",
            "properties": sink_properties,
        }],
    })
}

fn detail(body: &Value) -> String {
    body["detail"]
        .as_str()
        .map_or_else(|| body.to_string(), str::to_owned)
}

#[test]
fn over_http_kafka_properties_that_load_code_or_name_server_files_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[], &[]);
    let digest = server.upload_passthrough();
    // Nothing listens on port 1: a property that got through would fail at
    // connect (or, for plugin.library.paths, at dlopen), not by name.
    let brokers = "127.0.0.1:1";
    for (i, (at, property, value, why)) in [
        (
            "source",
            "plugin.library.paths",
            "/tmp/weir-evil.so",
            "loads code",
        ),
        ("source", "ssl.ca.location", "/etc/shadow", "names a file"),
        (
            "sink[0]",
            "sasl.kerberos.kinit.cmd",
            "touch /tmp/pwned",
            "shell",
        ),
        ("sink[0]", "sasl.password", "hunter2", "sasl.password.env"),
    ]
    .into_iter()
    .enumerate()
    {
        let properties = json!({ property: value });
        let (source, sink) = if at == "source" {
            (properties, json!({}))
        } else {
            (json!({}), properties)
        };
        let name = format!("refused-{i}");
        let (status, body) = server.create(&spec(&name, &digest, brokers, source, sink));
        let detail = detail(&body);
        assert_eq!(status, 400, "{property}: {body}");
        assert!(
            detail.starts_with(&format!("{at}.properties.{property}: ")),
            "{detail}"
        );
        assert!(detail.contains(why), "{detail}");
        assert!(!detail.contains("hunter2"), "{detail}");
        let (status, _) = server.call("GET", &format!("/v1/pipelines/{name}"), "", b"");
        assert_eq!(status, 404, "a refused spec creates nothing");
    }
    assert!(!server.log_text().contains("dlopen"));
}

#[test]
fn the_operator_allows_a_property_at_start_and_only_that_one() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &["--kafka-allow-property", "ssl.ca.location"],
        &[],
    );
    let digest = server.upload_passthrough();
    let ca = dir.path().join("no-such-ca.pem");
    let (status, body) = server.create(&spec(
        "allowed",
        &digest,
        "127.0.0.1:1",
        json!({ "security.protocol": "ssl", "ssl.ca.location": ca.display().to_string() }),
        json!({}),
    ));
    // Past the allowlist: librdkafka itself now reads (and misses) the file.
    let detail = detail(&body);
    assert_ne!(status, 201, "{body}");
    assert!(!detail.contains("weir serve does not let"), "{detail}");
    assert!(detail.contains("ssl.ca.location"), "{detail}");
    let (status, body) = server.create(&spec(
        "still-refused",
        &digest,
        "127.0.0.1:1",
        json!({ "ssl.key.location": "/etc/ssl/private/server.key" }),
        json!({}),
    ));
    assert_eq!(status, 400, "{body}");
    assert!(detail_of_starts(
        &body,
        "source.properties.ssl.key.location: "
    ));
}

fn detail_of_starts(body: &Value, prefix: &str) -> bool {
    detail(body).starts_with(prefix)
}

#[test]
fn a_kafka_credential_from_the_servers_environment_is_used_but_never_shown() {
    const CANARY: &str = "canary-8d1e5f-secret";
    let broker = Broker::start();
    broker.create_topic("in", 1);
    broker.create_topic("out", 1);
    broker.produce(
        "in",
        (0..5).map(|i| {
            (
                format!("k{i}").into_bytes(),
                format!("{{\"n\":{i}}}").into_bytes(),
            )
        }),
    );
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &[],
        &[
            ("WEIR_KAFKA_PASSWORD", CANARY),
            ("WEIR_KAFKA_BAD_MECHANISM", CANARY),
        ],
    );
    let digest = server.upload_passthrough();

    // Used: the sink's producer gets it (plaintext here: tansu 0.6 serves
    // no TLS, and its PLAIN accepts any password, so the broker cannot tell).
    let (status, body) = server.create(&spec(
        "with-secret",
        &digest,
        &broker.brokers(),
        json!({}),
        json!({ "sasl.username": "weir", "sasl.password.env": "WEIR_KAFKA_PASSWORD" }),
    ));
    assert_eq!(status, 201, "{body}");
    let began = Instant::now();
    let status = loop {
        let (_, status) = server.call("GET", "/v1/pipelines/with-secret", "", b"");
        if status["state"] == "finished" || status["state"] == "failed" {
            break status;
        }
        assert!(began.elapsed() < Duration::from_secs(60), "{status}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status["state"], "finished", "{status}");
    assert_eq!(broker.read_all("out").len(), 5);
    let text = status.to_string();
    assert!(!text.contains(CANARY), "{text}");
    // The stored spec names the variable, and holds no credential.
    let stored =
        std::fs::read_to_string(dir.path().join("data/pipelines/with-secret/pipeline.json"))
            .unwrap();
    assert!(stored.contains("WEIR_KAFKA_PASSWORD"), "{stored}");
    assert!(!stored.contains(CANARY), "{stored}");

    // A value librdkafka refuses: its error quotes the value it was given.
    let (status, body) = server.create(&spec(
        "bad-secret",
        &digest,
        &broker.brokers(),
        json!({ "security.protocol": "sasl_plaintext", "sasl.mechanism.env": "WEIR_KAFKA_BAD_MECHANISM" }),
        json!({}),
    ));
    assert!(status >= 400, "{body}");
    let text = body.to_string();
    assert!(text.contains("SASL mechanism: <redacted>"), "{text}");
    assert!(!text.contains(CANARY), "{text}");
    let (_, list) = server.call("GET", "/v1/pipelines", "", b"");
    assert!(!list.to_string().contains(CANARY), "{list}");
    assert!(!server.log_text().contains(CANARY), "{}", server.log_text());
}
