//! `weir serve` against the network (docs/api.md, "Security"): who may ask
//! (`Host`, `Origin`, the token, content types), how it may be exposed
//! (a token or `--insecure` off loopback, TLS), and how long a connection
//! may hold it (header-read and idle timeouts, the connection cap).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::serve::Server;

/// A `weir serve` started with `args`; killed when dropped.
struct Serve {
    child: Child,
    url: String,
}

impl Serve {
    fn start(data: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_weir"));
        command
            .args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
            .arg(data)
            .args(args)
            .env_remove("WEIR_TOKEN")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
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
        std::thread::spawn(move || {
            let mut sink = String::new();
            while stderr.read_line(&mut sink).is_ok_and(|n| n > 0) {
                sink.clear();
            }
        });
        Serve { child, url }
    }

    /// `host:port`.
    fn addr(&self) -> &str {
        self.url.split("://").nth(1).unwrap()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `weir serve` that should refuse to start: its exit code and stderr.
fn refused_start(data: &Path, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["serve", "--data-dir"])
        .arg(data)
        .args(args)
        .env_remove("WEIR_TOKEN")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let began = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if began.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("weir serve {args:?} started instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// One hand-made HTTP/1.1 request (`head` without the blank line, then
/// `body`): the status, the headers (lower-cased names) and the body.
fn raw(addr: &str, head: &str, body: &[u8]) -> (u16, String, Value) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "{head}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(body).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (headers, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = headers
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = serde_json::from_str(body).unwrap_or(Value::String(body.to_owned()));
    (status, headers.to_ascii_lowercase(), body)
}

fn spec() -> Vec<u8> {
    json!({"name": "p", "source": {"kind": "http"}, "key_by": {"field": "/k"},
           "plugin": {"digest": "ab".repeat(32)}})
    .to_string()
    .into_bytes()
}

#[test]
fn a_text_plain_post_from_a_foreign_origin_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = Serve::start(&dir.path().join("data"), &[], &[]);
    let addr = server.addr();
    // What a web page on the user's machine can send without a preflight.
    for origin in ["http://attacker.example", "http://localhost:3000", "null"] {
        let (status, headers, body) = raw(
            addr,
            &format!(
                "POST /v1/pipelines HTTP/1.1\r\nHost: {addr}\r\nOrigin: {origin}\r\nContent-Type: text/plain"
            ),
            &spec(),
        );
        assert_eq!(status, 403, "{origin}: {headers}{body}");
        assert_eq!(body["error"], "forbidden", "{body}");
        assert!(body["detail"].as_str().unwrap().contains(origin), "{body}");
    }
    // Browsers mark even a simple cross-site GET.
    let (status, _, body) = raw(
        addr,
        &format!("GET /v1/pipelines HTTP/1.1\r\nHost: {addr}\r\nSec-Fetch-Site: cross-site"),
        b"",
    );
    assert_eq!(status, 403, "{body}");
    // The server's own origin, and no origin at all (the CLI, curl), pass.
    let (status, _, body) = raw(
        addr,
        &format!("GET /v1/pipelines HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://{addr}"),
        b"",
    );
    assert_eq!((status, body), (200, json!({"pipelines": []})));
}

#[test]
fn a_request_naming_another_host_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = Serve::start(
        &dir.path().join("data"),
        &["--allow-host", "weir.internal"],
        &[],
    );
    let addr = server.addr();
    let port = addr.rsplit(':').next().unwrap();
    // A name rebound to 127.0.0.1 by its owner.
    let (status, _, body) = raw(
        addr,
        &format!("GET /v1/pipelines HTTP/1.1\r\nHost: rebound.attacker.example:{port}"),
        b"",
    );
    assert_eq!(status, 421, "{body}");
    assert_eq!(body["error"], "misdirected_request", "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("--allow-host"),
        "{body}"
    );
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("weir.internal:{port}"),
    ] {
        let (status, _, body) = raw(
            addr,
            &format!("GET /v1/pipelines HTTP/1.1\r\nHost: {host}"),
            b"",
        );
        assert_eq!(status, 200, "{host}: {body}");
    }
}

#[test]
fn a_body_without_the_content_type_of_its_route_is_415() {
    let dir = tempfile::tempdir().unwrap();
    let server = Serve::start(&dir.path().join("data"), &[], &[]);
    let addr = server.addr();
    let cases = [
        ("POST /v1/pipelines", "text/plain", "application/json"),
        ("POST /v1/pipelines", "", "application/json"),
        (
            "PUT /v1/pipelines/p/plugin",
            "text/plain",
            "application/json",
        ),
        (
            "POST /v1/plugins?name=x",
            "application/json",
            "application/wasm",
        ),
        (
            "POST /v1/pipelines/p/events",
            "text/plain",
            "application/x-ndjson",
        ),
    ];
    for (route, given, expected) in cases {
        let typed = if given.is_empty() {
            String::new()
        } else {
            format!("\r\nContent-Type: {given}")
        };
        let (status, _, body) = raw(
            addr,
            &format!("{route} HTTP/1.1\r\nHost: {addr}{typed}"),
            &spec(),
        );
        assert_eq!(status, 415, "{route} with {given:?}: {body}");
        assert_eq!(body["error"], "unsupported_media_type", "{body}");
        assert!(
            body["detail"].as_str().unwrap().contains(expected),
            "{route}: {body}"
        );
    }
    // The right type reaches the handler (which wants a plugin it lacks).
    let (status, _, body) = raw(
        addr,
        &format!("POST /v1/pipelines HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json"),
        &spec(),
    );
    assert_eq!(status, 404, "{body}");
}

#[test]
fn unknown_routes_wrong_methods_and_bad_path_parameters_answer_json() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), None);
    let (status, missing) = server.call("GET", "/v1/nothing-here", None);
    assert_eq!(status, 404);
    assert_eq!(missing["error"], "not_found", "{missing}");
    let (status, _, wrong) = raw(
        server.url.strip_prefix("http://").unwrap(),
        "PATCH /v1/pipelines HTTP/1.1\r\nHost: 127.0.0.1",
        b"",
    );
    assert_eq!(status, 405, "{wrong}");
    assert_eq!(wrong["error"], "method_not_allowed", "{wrong}");
    assert_eq!(
        wrong["detail"],
        "/v1/pipelines does not take PATCH; the Allow header lists the methods it takes"
    );
    // A name that is not UTF-8 once percent-decoded.
    let (status, bad) = server.call("GET", "/v1/pipelines/%FF%FE", None);
    assert_eq!(status, 400, "{bad}");
    assert_eq!(bad["error"], "bad_request", "{bad}");
}

#[test]
fn a_non_loopback_bind_without_a_token_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (code, stderr) = refused_start(&data, &["--addr", "0.0.0.0:0"], &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("without a token"), "{stderr}");
    assert!(stderr.contains("--insecure"), "{stderr}");
    assert!(!data.exists(), "nothing was touched before refusing");
}

#[test]
fn the_token_comes_from_a_file_and_never_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (code, stderr) = refused_start(&data, &["--token", "s3cret"], &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("--token-file"), "{stderr}");

    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret\n").unwrap();
    let server = Serve::start(&data, &["--token-file", token_file.to_str().unwrap()], &[]);
    let addr = server.addr();
    let get = |auth: &str| {
        raw(
            addr,
            &format!("GET /v1/pipelines HTTP/1.1\r\nHost: {addr}{auth}"),
            b"",
        )
    };
    assert_eq!(get("").0, 401);
    assert_eq!(get("\r\nAuthorization: Bearer s3cre").0, 401);
    assert_eq!(get("\r\nAuthorization: Bearer s3cret2").0, 401);
    let (status, _, body) = get("\r\nAuthorization: Bearer s3cret");
    assert_eq!(status, 200, "{body}");
    // The CLI reads it from a file too.
    let output = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["pipeline", "list", "--json", "--server", &server.url])
        .arg("--token-file")
        .arg(&token_file)
        .env_remove("WEIR_TOKEN")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn tls_serves_with_a_self_signed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let server = Serve::start(
        &dir.path().join("data"),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        &[("WEIR_TOKEN", "s3cret")],
    );
    assert!(server.url.starts_with("https://"), "{}", server.url);

    let roots = ureq::tls::RootCerts::new_with_certs(&[ureq::tls::Certificate::from_der(
        certified.cert.der(),
    )
    .to_owned()]);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .tls_config(ureq::tls::TlsConfig::builder().root_certs(roots).build())
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent
        .get(format!("{}/v1/pipelines", server.url))
        .header("Authorization", "Bearer s3cret")
        .call()
        .expect("an HTTPS request");
    assert_eq!(response.status(), 200);
    let body: Value = serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(body, json!({"pipelines": []}));

    // Plain HTTP on the TLS port gets no answer.
    let plain = format!("http://{}/healthz", server.addr());
    assert!(agent.get(&plain).call().is_err());

    // The CLI trusts the certificate it is given.
    let cli = |ca: Option<&Path>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_weir"));
        command
            .args(["pipeline", "list", "--json", "--server", &server.url])
            .env("WEIR_TOKEN", "s3cret");
        if let Some(ca) = ca {
            command.arg("--ca-cert").arg(ca);
        }
        command.output().unwrap()
    };
    let trusted = cli(Some(&cert));
    assert!(
        trusted.status.success(),
        "{}",
        String::from_utf8_lossy(&trusted.stderr)
    );
    assert!(
        !cli(None).status.success(),
        "an unknown issuer is not trusted"
    );
}

/// Writes one more header line every 100 ms until the server closes the
/// connection; how long that took.
fn trickle_until_closed(stream: &mut TcpStream, limit: Duration) -> Duration {
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let began = Instant::now();
    let mut buffer = [0u8; 1024];
    loop {
        assert!(began.elapsed() < limit, "still open after {limit:?}");
        if stream.write_all(b"X-Slow: 1\r\n").is_err() {
            return began.elapsed();
        }
        match stream.read(&mut buffer) {
            Ok(0) => return began.elapsed(),
            // An answer (408, say) before the close is fine.
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return began.elapsed(),
        }
    }
}

#[test]
fn the_header_read_timeout_closes_slow_and_idle_connections() {
    let dir = tempfile::tempdir().unwrap();
    let server = Serve::start(&dir.path().join("data"), &["--header-timeout", "1"], &[]);
    let addr = server.addr();

    // Slowloris: a request head that never ends.
    let mut slow = TcpStream::connect(addr).unwrap();
    write!(slow, "GET /healthz HTTP/1.1\r\nHost: {addr}\r\n").unwrap();
    let open_for = trickle_until_closed(&mut slow, Duration::from_secs(10));
    assert!(open_for < Duration::from_secs(4), "{open_for:?}");

    // A kept-alive connection that asks nothing more.
    let mut idle = TcpStream::connect(addr).unwrap();
    write!(idle, "GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = [0u8; 512];
    let n = idle.read(&mut answer).unwrap();
    assert!(answer[..n].starts_with(b"HTTP/1.1 200"));
    let began = Instant::now();
    let rest = idle.read(&mut answer);
    assert!(
        matches!(rest, Ok(0) | Err(_)) && began.elapsed() < Duration::from_secs(4),
        "{rest:?} after {:?}",
        began.elapsed()
    );
}

#[test]
fn connections_past_the_cap_wait_until_one_closes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Serve::start(&dir.path().join("data"), &["--max-connections", "1"], &[]);
    let addr = server.addr();
    let holder = TcpStream::connect(addr).unwrap();
    // Give the server a moment to accept the holder first.
    std::thread::sleep(Duration::from_millis(300));
    let mut waiting = TcpStream::connect(addr).unwrap();
    write!(
        waiting,
        "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    waiting
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let mut answer = Vec::new();
    assert!(
        waiting.read_to_end(&mut answer).is_err() && answer.is_empty(),
        "answered past the cap: {}",
        String::from_utf8_lossy(&answer)
    );
    drop(holder);
    waiting
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    waiting.read_to_end(&mut answer).unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}
