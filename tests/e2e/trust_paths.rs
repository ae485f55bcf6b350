//! What an API client may name on the server's machine (docs/api.md, "Paths
//! and the data dir"): state and checkpoint directories are the server's;
//! file paths resolve inside `<data-dir>/files/` or an `--allow-path` root;
//! no two pipelines write one file; one server per data dir; a delete
//! removes only what the server made, and never a re-created pipeline's
//! files.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use weir_test_artifacts::COUNTER;

use crate::serve::{Server, committed_output, send};

fn counter_spec(name: &str, digest: &str, sink: &Value) -> Value {
    json!({
        "name": name,
        "source": {"kind": "http"},
        "key_by": {"field": "/user"},
        "plugin": {"digest": digest},
        "checkpoint": {"interval_ms": 200},
        "sink": [{"output": "main", "kind": "file", "path": sink}],
    })
}

fn events(from: u64, count: u64) -> Vec<u8> {
    (from..from + count)
        .map(|seq| format!("{{\"user\":\"u{}\",\"seq\":{seq}}}\n", seq % 3))
        .collect::<String>()
        .into_bytes()
}

/// A server that allows nothing beyond its data dir, or also `allow`.
fn server(dir: &Path, allow: &[PathBuf]) -> Server {
    let mut args = Vec::new();
    for root in allow {
        std::fs::create_dir_all(root).unwrap();
        args.push(std::ffi::OsStr::new("--allow-path"));
        args.push(root.as_os_str());
    }
    Server::start_with(&dir.join("data"), None, &args)
}

fn refused(answer: &(u16, Value), code: u16, field: &str) {
    assert_eq!(answer.0, code, "{}", answer.1);
    let detail = answer.1.to_string();
    assert!(
        detail.contains(field),
        "the refusal names {field}: {detail}"
    );
}

#[test]
fn a_spec_naming_its_own_state_or_checkpoint_dir_is_refused_and_delete_leaves_that_folder_intact() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), &[]);
    let digest = server.upload(COUNTER, "counter");
    let canary = dir.path().join("canary");
    std::fs::create_dir_all(canary.join("p")).unwrap();
    std::fs::write(canary.join("p/keep.txt"), "keep").unwrap();

    let mut spec = counter_spec("p", &digest, &json!("out.jsonl"));
    spec["state"] = json!({"dir": canary});
    refused(
        &server.json("POST", "/v1/pipelines", &spec),
        400,
        "state.dir",
    );
    // The data dir itself with the name `plugins`: a delete would have
    // removed the registry.
    let mut spec = counter_spec("plugins", &digest, &json!("out.jsonl"));
    spec["checkpoint"]["dir"] = json!(server.data_dir);
    refused(
        &server.json("POST", "/v1/pipelines", &spec),
        400,
        "checkpoint.dir",
    );

    // The server's own choice is still accepted, and a delete removes only
    // what the server made.
    let (code, created) = server.json(
        "POST",
        "/v1/pipelines",
        &counter_spec("p", &digest, &json!("out.jsonl")),
    );
    assert_eq!(code, 201, "{created}");
    let (code, _) = server.call("DELETE", "/v1/pipelines/p", None);
    assert_eq!(code, 204);
    assert_eq!(
        std::fs::read_to_string(canary.join("p/keep.txt")).unwrap(),
        "keep"
    );
    let (code, plugin) = server.call("GET", &format!("/v1/plugins/{digest}"), None);
    assert_eq!(code, 200, "the registry is intact: {plugin}");
}

#[test]
fn a_sink_or_source_outside_the_allowed_roots_is_refused_and_the_file_is_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), &[]);
    let digest = server.upload(COUNTER, "counter");
    let victim = dir.path().join("victim.txt");
    std::fs::write(&victim, "precious\n").unwrap();

    refused(
        &server.json(
            "POST",
            "/v1/pipelines",
            &counter_spec("p", &digest, &json!(victim)),
        ),
        400,
        "sink[0].path",
    );
    let mut spec = counter_spec("p", &digest, &json!("out.jsonl"));
    spec["source"] = json!({"kind": "file", "path": victim});
    refused(
        &server.json("POST", "/v1/pipelines", &spec),
        400,
        "source.path",
    );
    let mut spec = counter_spec("p", &digest, &json!("out.jsonl"));
    spec["restore_from"] = json!(dir.path());
    refused(
        &server.json("POST", "/v1/pipelines", &spec),
        400,
        "restore_from",
    );
    // A sink into the server's own folders.
    let (code, _) = server.call("GET", "/v1/plugins", None);
    assert_eq!(code, 200);
    let into_registry = server
        .data_dir
        .join("plugins")
        .join(format!("{digest}.wasm"));
    refused(
        &server.json(
            "POST",
            "/v1/pipelines",
            &counter_spec("p", &digest, &json!(into_registry)),
        ),
        400,
        "sink[0].path",
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    assert!(
        std::fs::metadata(&into_registry).unwrap().len() > 0,
        "the plugin is intact"
    );

    // Savepoints may not be written outside either.
    let (code, _) = server.json(
        "POST",
        "/v1/pipelines",
        &counter_spec("p", &digest, &json!("out.jsonl")),
    );
    assert_eq!(code, 201);
    let outside = dir.path().join("sp");
    refused(
        &server.json(
            "POST",
            "/v1/pipelines/p/savepoints",
            &json!({"to": outside}),
        ),
        400,
        "to",
    );
    refused(
        &server.json("POST", "/v1/pipelines/p/stop", &json!({"to": outside})),
        400,
        "to",
    );
    assert_eq!(
        server.status("p")["state"],
        "running",
        "a refused stop stops nothing"
    );
    assert!(!outside.exists());
}

#[test]
fn an_allowed_path_lets_a_sink_through_and_relative_paths_land_in_the_files_folder() {
    let dir = tempfile::tempdir().unwrap();
    let allowed = dir.path().join("allowed");
    let server = server(dir.path(), std::slice::from_ref(&allowed));
    let digest = server.upload(COUNTER, "counter");
    let out = allowed.join("out.jsonl");
    let (code, created) = server.json(
        "POST",
        "/v1/pipelines",
        &counter_spec("a", &digest, &json!(out)),
    );
    assert_eq!(code, 201, "{created}");
    let (code, created) = server.json(
        "POST",
        "/v1/pipelines",
        &counter_spec("b", &digest, &json!("b.jsonl")),
    );
    assert_eq!(code, 201, "{created}");
    send(&server, "a", &events(0, 6));
    send(&server, "b", &events(0, 4));
    assert_eq!(committed_output(&server, "a", &out, 6).len(), 6);
    let relative = server.data_dir.join("files/b.jsonl");
    assert_eq!(committed_output(&server, "b", &relative, 4).len(), 4);
    // A savepoint into the allowed root.
    let savepoint = allowed.join("sp-a");
    let (code, stopped) = server.json("POST", "/v1/pipelines/a/stop", &json!({"to": savepoint}));
    assert_eq!(code, 200, "{stopped}");
    assert!(savepoint.join("MANIFEST.json").exists());
}

#[test]
fn dot_dot_and_symlink_escapes_from_an_allowed_root_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let allowed = dir.path().join("allowed");
    let server = server(dir.path(), std::slice::from_ref(&allowed));
    let digest = server.upload(COUNTER, "counter");
    let victim = dir.path().join("victim.txt");
    std::fs::write(&victim, "precious\n").unwrap();
    std::os::unix::fs::symlink(dir.path(), allowed.join("up")).unwrap();
    std::os::unix::fs::symlink(&victim, allowed.join("victim-link")).unwrap();
    std::os::unix::fs::symlink(dir.path(), server.data_dir.join("files/up")).unwrap();
    for escape in [
        json!(allowed.join("../victim.txt")),
        json!(allowed.join("up/victim.txt")),
        json!(allowed.join("victim-link")),
        json!("../plugins/x.wasm"),
        json!("up/victim.txt"),
    ] {
        refused(
            &server.json(
                "POST",
                "/v1/pipelines",
                &counter_spec("p", &digest, &escape),
            ),
            400,
            "sink[0].path",
        );
    }
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
}

#[test]
fn a_second_pipeline_writing_the_first_ones_file_is_refused_and_the_first_ones_output_is_intact() {
    let dir = tempfile::tempdir().unwrap();
    let allowed = dir.path().join("allowed");
    let server = server(dir.path(), std::slice::from_ref(&allowed));
    let digest = server.upload(COUNTER, "counter");
    let out = allowed.join("out.jsonl");
    let (code, created) = server.json(
        "POST",
        "/v1/pipelines",
        &counter_spec("first", &digest, &json!(out)),
    );
    assert_eq!(code, 201, "{created}");
    send(&server, "first", &events(0, 6));
    assert_eq!(committed_output(&server, "first", &out, 6).len(), 6);
    let before = std::fs::read(&out).unwrap();

    // The same file under another name, and a stopped first pipeline still
    // owns its file.
    std::fs::create_dir_all(allowed.join("sub")).unwrap();
    let (code, _) = server.call("POST", "/v1/pipelines/first/stop", None);
    assert_eq!(code, 200);
    for other in [json!(out), json!(allowed.join("sub/../out.jsonl"))] {
        let answer = server.json(
            "POST",
            "/v1/pipelines",
            &counter_spec("second", &digest, &other),
        );
        refused(&answer, 409, "\\\"first\\\"");
    }
    // Two sinks of one pipeline on one file by two names.
    let mut spec = counter_spec("second", &digest, &json!(allowed.join("two.jsonl")));
    spec["sink"]
        .as_array_mut()
        .unwrap()
        .push(json!({"output": "main", "kind": "file", "path": allowed.join("sub/../two.jsonl")}));
    refused(
        &server.json("POST", "/v1/pipelines", &spec),
        400,
        "sink[1].path",
    );
    assert_eq!(std::fs::read(&out).unwrap(), before);

    let (code, started) = server.call("POST", "/v1/pipelines/first/start", None);
    assert_eq!(code, 200, "{started}");
    send(&server, "first", &events(6, 3));
    assert_eq!(committed_output(&server, "first", &out, 9).len(), 9);
}

#[test]
fn a_second_server_on_the_same_data_dir_refuses_to_start_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), &[]);
    let mut second = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
        .arg(&server.data_dir)
        .env_remove("WEIR_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let began = Instant::now();
    let status = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break status;
        }
        if began.elapsed() > Duration::from_secs(30) {
            let _ = second.kill();
            let _ = second.wait();
            panic!("a second server on the same data dir kept running");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("pid {}", server.pid())) && stderr.contains("in use"),
        "{stderr}"
    );
    // The first one still serves.
    let (code, _) = server.call("GET", "/v1/pipelines", None);
    assert_eq!(code, 200);
}

#[test]
fn a_pipeline_re_created_while_its_delete_runs_keeps_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), &[]);
    let digest = server.upload(COUNTER, "counter");
    let record = server.data_dir.join("pipelines/p/pipeline.json");
    for round in 0..3 {
        // A new output file each time: a file sink refuses to empty one
        // that holds records of an earlier pipeline.
        let mut spec = counter_spec("p", &digest, &json!(format!("first-{round}.jsonl")));
        spec["parallelism"] = json!(4);
        let (code, created) = server.json("POST", "/v1/pipelines", &spec);
        assert_eq!(code, 201, "round {round}: {created}");
        send(&server, "p", &events(0, 300));
        let url = format!("{}/v1/pipelines/p", server.url);
        let delete = std::thread::spawn(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into();
            agent.delete(&url).call().unwrap().status().as_u16()
        });
        // Create again as soon as the name is free.
        spec["sink"][0]["path"] = json!(format!("again-{round}.jsonl"));
        let began = Instant::now();
        loop {
            let (code, answer) = server.json("POST", "/v1/pipelines", &spec);
            if code == 201 {
                break;
            }
            assert_eq!(code, 409, "round {round}: {answer}");
            assert!(
                began.elapsed() < Duration::from_secs(60),
                "round {round}: {answer}"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(delete.join().unwrap(), 204);
        assert!(record.exists(), "round {round}: the new record survived");
        assert!(
            server.data_dir.join("state/p").exists(),
            "round {round}: the new state survived"
        );
        assert_eq!(server.status("p")["state"], "running");
        let (code, _) = server.call("DELETE", "/v1/pipelines/p", None);
        assert_eq!(code, 204);
    }
}

#[test]
fn checkpoint_interval_and_retention_are_bounded_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), &[]);
    let digest = server.upload(COUNTER, "counter");
    let mut spec = counter_spec("p", &digest, &json!("out.jsonl"));
    spec["checkpoint"] = json!({"interval_ms": 10});
    refused(
        &server.json("POST", "/v1/pipelines", &spec),
        400,
        "checkpoint.interval_ms",
    );
    spec["checkpoint"] = json!({"interval_ms": 200, "retain": 1_000_000});
    refused(
        &server.json("POST", "/v1/pipelines", &spec),
        400,
        "checkpoint.retain",
    );
}

#[test]
fn listing_checkpoints_reads_their_manifests_not_their_state() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), &[]);
    let digest = server.upload(COUNTER, "counter");
    let (code, _) = server.json(
        "POST",
        "/v1/pipelines",
        &counter_spec("p", &digest, &json!("out.jsonl")),
    );
    assert_eq!(code, 201);
    send(&server, "p", &events(0, 30));
    let (code, _) = server.call("POST", "/v1/pipelines/p/stop", None);
    assert_eq!(code, 200);
    let (code, listed) = server.call("GET", "/v1/pipelines/p/checkpoints", None);
    assert_eq!(code, 200);
    let newest = listed["checkpoints"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    // Damage a state file of the newest checkpoint: the listing does not
    // read it (a restore would, and refuse it).
    let chk = PathBuf::from(newest["path"].as_str().unwrap());
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(chk.join("MANIFEST.json")).unwrap()).unwrap();
    let file = manifest["files"][0]["path"].as_str().unwrap();
    std::fs::write(chk.join(file), b"damaged").unwrap();
    let (code, again) = server.call("GET", "/v1/pipelines/p/checkpoints", None);
    assert_eq!(code, 200);
    assert_eq!(
        again["checkpoints"].as_array().unwrap().last(),
        Some(&newest)
    );
}
