//! Durability through the real binary: crashes (SIGKILL) at random moments,
//! restores at another parallelism, savepoints across plugin versions, and
//! corrupt checkpoints. The reference is always an uninterrupted run (or a
//! model of the rule), compared line for line.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use weir_test_artifacts::FRAUD_DETECTOR;

use crate::support::{WEIR, cache_dir, newest_checkpoint, toml_path, wait_for_checkpoint};

const BASE_TS: i64 = 1_700_000_000_000;

struct Spec<'a> {
    name: &'a str,
    events: u64,
    parallelism: u32,
    backend: &'a str,
    /// `None`: no `[checkpoint]` section (a plain, uninterrupted run).
    interval_ms: Option<u64>,
    threshold: u32,
    /// The generator's rate limit, if any.
    events_per_second: Option<u64>,
    restore_from: Option<&'a str>,
    output: &'a str,
    sink: &'a str,
}

impl Default for Spec<'_> {
    fn default() -> Self {
        Spec {
            name: "fraud",
            events: 2_000_000,
            parallelism: 1,
            backend: "memory",
            interval_ms: Some(200),
            threshold: 5,
            events_per_second: None,
            restore_from: None,
            output: "alerts.jsonl",
            sink: "file",
        }
    }
}

impl Spec<'_> {
    fn toml(&self) -> String {
        let restore = self
            .restore_from
            .map(|p| format!("restore_from = {}\n", toml_path(p)))
            .unwrap_or_default();
        format!(
            r#"
name = "{name}"
parallelism = {parallelism}
{restore}
[source]
kind = "generator"
events = {events}
{rate}
[event_time]
field = "/ts"
[key_by]
field = "/user_id"
[plugin]
wasm = {wasm}
config = {{ threshold = {threshold}, window_ms = 60000 }}
[state]
backend = "{backend}"
dir = "state"
{checkpoint}
[[sink]]
output = "alerts"
kind = "{sink}"
{path}
"#,
            sink = self.sink,
            path = if self.sink == "file" {
                format!("path = {}", toml_path(self.output))
            } else {
                String::new()
            },
            name = self.name,
            parallelism = self.parallelism,
            events = self.events,
            rate = self
                .events_per_second
                .map_or(String::new(), |n| format!("events_per_second = {n}")),
            threshold = self.threshold,
            backend = self.backend,
            checkpoint = self.interval_ms.map_or(String::new(), |ms| {
                format!("[checkpoint]\ninterval_ms = {ms}\ndir = \"checkpoints\"\nretain = 3")
            }),
            wasm = toml_path(FRAUD_DETECTOR),
        )
    }
}

fn weir(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(WEIR);
    command
        .current_dir(dir)
        .args(args)
        .env("WEIR_CACHE_DIR", cache_dir());
    command
}

fn run(dir: &Path, spec: &Spec<'_>, extra: &[&str]) -> Output {
    std::fs::write(dir.join("pipeline.toml"), spec.toml()).unwrap();
    let mut args = vec!["run", "--quiet", "--summary-json", "summary.json"];
    args.extend_from_slice(extra);
    args.push("pipeline.toml");
    let output = weir(dir, &args).output().expect("running weir");
    assert!(
        output.status.success(),
        "weir run failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn alerts(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("alerts.jsonl")).expect("alerts file")
}

fn sorted_lines(text: &str) -> Vec<&str> {
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_unstable();
    lines
}

/// The alerts of an uninterrupted run with checkpoints off (plain file sink).
fn reference_alerts(events: u64) -> String {
    let dir = tempfile::tempdir().unwrap();
    let spec = Spec {
        events,
        interval_ms: None,
        ..Spec::default()
    };
    std::fs::write(dir.path().join("pipeline.toml"), spec.toml()).unwrap();
    let output = weir(dir.path(), &["run", "--quiet", "pipeline.toml"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    alerts(dir.path())
}

/// splitmix64-driven moments, fixed seed: the same kills every run.
struct Moments(u64);

impl Moments {
    fn next_ms(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        lo + z % (hi - lo)
    }
}

/// W2 at N = 2 M, checkpoints every 200 ms, SIGKILLed at 5 random moments
/// (each after a checkpoint of its own run) and restarted each time: the
/// alerts file equals an uninterrupted run's.
fn crash_and_recover(backend: &str) {
    let reference = reference_alerts(2_000_000);
    assert!(
        reference.lines().count() > 4_000,
        "the reference has alerts"
    );
    let dir = tempfile::tempdir().unwrap();
    // Limited to 0.5 M events/s, so that each run lasts long enough for
    // its kill: unlimited, a fast machine finished the 2 M events before
    // the later kills came.
    let spec = Spec {
        backend,
        events_per_second: Some(500_000),
        ..Spec::default()
    };
    std::fs::write(dir.path().join("pipeline.toml"), spec.toml()).unwrap();
    let mut moments = Moments(0x5EED ^ backend.len() as u64);
    let mut killed_running = 0;
    for _ in 0..5 {
        let before = newest_checkpoint(dir.path());
        let mut child = weir(dir.path(), &["run", "--quiet", "pipeline.toml"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // The kill comes once this run has completed a checkpoint of its
        // own, at a random moment of the next interval (mid-processing or
        // mid-checkpoint): fixed moments after the start stopped hitting a
        // running pipeline once it finished N = 2 M between them.
        if wait_for_checkpoint(dir.path(), before, &mut child).is_some() {
            let wait = Duration::from_millis(moments.next_ms(0, 200));
            let start = Instant::now();
            while start.elapsed() < wait && child.try_wait().unwrap().is_none() {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        if child.try_wait().unwrap().is_none() {
            killed_running += 1;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    assert!(
        killed_running >= 4,
        "only {killed_running} of 5 kills hit a running pipeline"
    );
    let last = run(dir.path(), &spec, &[]);
    assert!(
        stderr(&last).contains("resuming from checkpoint"),
        "{}",
        stderr(&last)
    );
    let recovered = alerts(dir.path());
    assert_eq!(
        recovered.lines().count(),
        reference.lines().count(),
        "alert count after 5 crashes"
    );
    // Line for line: no duplicate, no gap, same order.
    assert!(recovered == reference, "the alerts differ after recovery");
    // Nothing staged is left behind once the run has finished.
    let staging = dir.path().join(".alerts.jsonl.weir-staging");
    assert_eq!(std::fs::read_dir(staging).unwrap().count(), 0);
}

#[test]
fn a_crash_at_any_moment_changes_nothing_with_rocksdb() {
    crash_and_recover("rocksdb");
}

#[test]
fn a_crash_at_any_moment_changes_nothing_with_the_memory_backend() {
    crash_and_recover("memory");
}

/// Stops at `stop_after` (a checkpoint), then resumes at another parallelism.
fn rescale(from: u32, to: u32, backend: &str) {
    let reference = reference_alerts(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let first = Spec {
        events: 1_000_000,
        parallelism: from,
        backend,
        interval_ms: Some(60_000),
        ..Spec::default()
    };
    let stopped = run(dir.path(), &first, &["--stop-after", "400000"]);
    assert!(stderr(&stopped).contains("stopped"), "{}", stderr(&stopped));
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["events_in"], 400_000);
    assert_eq!(summary["stopped"], true);
    let second = Spec {
        parallelism: to,
        ..first
    };
    let resumed = run(dir.path(), &second, &[]);
    assert!(stderr(&resumed).contains("resuming from checkpoint"));
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["events_in"], 600_000);
    assert_eq!(summary["keys_in_state"], 0);
    assert_eq!(
        sorted_lines(&alerts(dir.path())),
        sorted_lines(&reference),
        "alerts after rescaling {from} -> {to}"
    );
}

#[test]
fn restoring_at_parallelism_three_from_one_gives_the_same_alerts() {
    rescale(1, 3, "rocksdb");
}

#[test]
fn restoring_at_parallelism_one_from_two_gives_the_same_alerts() {
    rescale(2, 1, "memory");
}

/// The W2 rule with a threshold per event; with `forget_at`, all state is
/// dropped at that event (what a restore without state would do).
pub(crate) fn model_alerts(
    events: u64,
    threshold: impl Fn(u64) -> u32,
    forget_at: Option<u64>,
) -> Vec<(u64, i64, i64)> {
    let mut windows: std::collections::HashMap<u64, (i64, u32)> = Default::default();
    let mut alerts = Vec::new();
    for i in 0..events {
        if forget_at == Some(i) {
            windows.clear();
        }
        let mut z = (i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let user = (z >> 32) % 100_000;
        let ts = BASE_TS + i as i64;
        let window = windows.entry(user).or_insert((i64::MIN / 2, 0));
        if ts < window.0 + 60_000 {
            window.1 += 1;
        } else {
            *window = (ts, 1);
        }
        if window.1 == threshold(i) {
            alerts.push((user, window.0, ts));
        }
    }
    alerts
}

fn parse_alerts(text: &str) -> Vec<(u64, i64, i64)> {
    let mut alerts: Vec<(u64, i64, i64)> = text
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap();
            (
                v["user_id"].as_u64().unwrap(),
                v["window_start"].as_i64().unwrap(),
                v["ts"].as_i64().unwrap(),
            )
        })
        .collect();
    alerts.sort_unstable();
    alerts
}

#[test]
fn a_savepoint_carries_state_to_another_plugin_version_and_parallelism() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = Spec {
        events: 1_000_000,
        backend: "rocksdb",
        interval_ms: Some(60_000),
        ..Spec::default()
    };
    run(dir.path(), &v1, &["--stop-after", "500000"]);
    let created = weir(
        dir.path(),
        &[
            "savepoint",
            "create",
            "--spec",
            "pipeline.toml",
            "--to",
            "sp",
        ],
    )
    .output()
    .unwrap();
    assert!(created.status.success(), "{}", stderr(&created));
    assert!(dir.path().join("sp/MANIFEST.json").exists());

    // Another pipeline (no checkpoints of its own) starts from the
    // savepoint, with the memory backend, at parallelism 2, and threshold 3.
    // A run from a savepoint writes new outputs: it refuses to overwrite
    // the first run's file, and writes its own.
    let mut v2 = Spec {
        name: "fraud-v2",
        events: 1_000_000,
        parallelism: 2,
        threshold: 3,
        interval_ms: Some(60_000),
        restore_from: Some("sp"),
        ..Spec::default()
    };
    std::fs::write(dir.path().join("pipeline.toml"), v2.toml()).unwrap();
    let refused = weir(dir.path(), &["run", "--quiet", "pipeline.toml"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("would overwrite alerts.jsonl"),
        "{}",
        stderr(&refused)
    );
    v2.output = "alerts-v2.jsonl";
    let resumed = run(dir.path(), &v2, &[]);
    assert!(
        stderr(&resumed).contains("resuming from savepoint"),
        "{}",
        stderr(&resumed)
    );
    let first = parse_alerts(&alerts(dir.path()));
    let second =
        parse_alerts(&std::fs::read_to_string(dir.path().join("alerts-v2.jsonl")).unwrap());
    let split = BASE_TS + 500_000;
    assert!(first.iter().all(|a| a.2 < split) && second.iter().all(|a| a.2 >= split));
    let mut both: Vec<_> = first.into_iter().chain(second).collect();
    both.sort_unstable();
    let mut expected = model_alerts(1_000_000, |i| if i < 500_000 { 5 } else { 3 }, None);
    expected.sort_unstable();
    assert_eq!(both, expected);
    // Had the windows not been carried over, the alerts would differ.
    let mut forgotten = model_alerts(
        1_000_000,
        |i| if i < 500_000 { 5 } else { 3 },
        Some(500_000),
    );
    forgotten.sort_unstable();
    assert_ne!(both, forgotten);
}

#[test]
fn a_corrupt_checkpoint_is_reported_and_the_previous_one_is_used() {
    let reference = reference_alerts(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let spec = Spec {
        events: 1_000_000,
        interval_ms: Some(600_000),
        ..Spec::default()
    };
    run(dir.path(), &spec, &["--stop-after", "300000"]);
    run(dir.path(), &spec, &["--stop-after", "600000"]);
    // Cut the newest checkpoint's state file short.
    let newest = dir
        .path()
        .join("checkpoints/fraud/chk-2/subtask-0/state.bin");
    let bytes = std::fs::read(&newest).unwrap();
    std::fs::write(&newest, &bytes[..bytes.len() / 2]).unwrap();

    let last = run(dir.path(), &spec, &[]);
    let err = stderr(&last);
    assert!(
        err.contains("checkpoint 2") && err.contains("unusable") && err.contains("state.bin"),
        "{err}"
    );
    assert!(err.contains("resuming from checkpoint 1"), "{err}");
    assert!(dir.path().join("checkpoints/fraud/chk-2.corrupt").exists());
    assert!(
        alerts(dir.path()) == reference,
        "alerts differ from the reference"
    );
}

#[test]
fn a_finished_pipeline_resumes_to_nothing_and_fresh_starts_over() {
    let reference = reference_alerts(200_000);
    let dir = tempfile::tempdir().unwrap();
    let spec = Spec {
        events: 200_000,
        ..Spec::default()
    };
    run(dir.path(), &spec, &[]);
    assert!(alerts(dir.path()) == reference);
    let again = run(dir.path(), &spec, &[]);
    assert!(
        stderr(&again).contains("nothing is left to do"),
        "{}",
        stderr(&again)
    );
    assert!(alerts(dir.path()) == reference);
    let fresh = run(dir.path(), &spec, &["--fresh"]);
    assert!(!stderr(&fresh).contains("resuming"));
    assert!(alerts(dir.path()) == reference);
}

/// A sink that cannot stage its output (its staging directory vanished)
/// fails the run instead of dropping the epoch, and nothing uncommitted is
/// visible; running again completes with the reference output.
#[test]
fn a_sink_that_cannot_stage_fails_the_run_and_a_rerun_completes() {
    let reference = reference_alerts(2_000_000);
    let dir = tempfile::tempdir().unwrap();
    let spec = Spec {
        interval_ms: Some(600_000),
        ..Spec::default()
    };
    std::fs::write(dir.path().join("pipeline.toml"), spec.toml()).unwrap();
    let child = weir(dir.path(), &["run", "--quiet", "pipeline.toml"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let staging = dir.path().join(".alerts.jsonl.weir-staging");
    let start = Instant::now();
    while !staging.join("open.jsonl").exists() && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::fs::remove_dir_all(&staging).unwrap();
    let failed = child.wait_with_output().unwrap();
    assert!(!failed.status.success(), "the run must fail");
    assert!(
        stderr(&failed).contains("could not stage checkpoint"),
        "{}",
        stderr(&failed)
    );
    assert_eq!(alerts(dir.path()), "", "nothing uncommitted is visible");
    run(dir.path(), &spec, &[]);
    assert!(alerts(dir.path()) == reference);
}

/// A sink that fails (stdout closed early) ends a checkpointed run with an
/// error instead of hanging it.
#[test]
fn a_failing_sink_ends_a_checkpointed_run() {
    let dir = tempfile::tempdir().unwrap();
    let spec = Spec {
        sink: "stdout",
        ..Spec::default()
    };
    std::fs::write(dir.path().join("pipeline.toml"), spec.toml()).unwrap();
    let mut child = weir(dir.path(), &["run", "--quiet", "pipeline.toml"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read one alert, then close the pipe.
    let mut stdout = child.stdout.take().unwrap();
    let mut byte = [0u8; 1];
    std::io::Read::read_exact(&mut stdout, &mut byte).unwrap();
    drop(stdout);
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            panic!("the run hung after its sink failed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success());
}
