//! Plugins in three languages side by side: the W2 fraud detector in Rust,
//! Python and JavaScript, through the real runtime. For each: the
//! component's size, the first start (compile to native code, instantiate,
//! `open`), a start from the compiled-artifact cache (what a restart or a
//! re-upload costs), and W2 throughput at parallelism 2.
//!
//! `cargo bench -p weir --bench languages` (the Python and JavaScript
//! plugins are built with `weir plugin build`, so scripts/setup.sh first).
//! `WEIR_BENCH_EVENTS` sets N for Rust (default 1 000 000),
//! `WEIR_BENCH_SLOW_EVENTS` for Python and JavaScript (default 200 000).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use weir::engine::Engine;
use weir::runtime::{Pipeline, RunOptions};
use weir::spec::PipelineSpec;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Builds `plugins/NAME` with `weir plugin build` into `out` and returns the component.
fn build(name: &str, out: &Path) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins")
        .join(name);
    let output = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["plugin", "build"])
        .arg(&dir)
        .arg("--out-dir")
        .arg(out)
        .output()
        .expect("running weir plugin build");
    assert!(
        output.status.success(),
        "weir plugin build {name} failed (run scripts/setup.sh):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    PathBuf::from(String::from_utf8(output.stdout).unwrap().trim())
}

fn w2_spec(wasm: &Path, events: u64) -> PipelineSpec {
    PipelineSpec::from_toml(&format!(
        r#"
name = "languages"
parallelism = 2
[source]
kind = "generator"
events = {events}
[event_time]
field = "/ts"
[key_by]
field = "/user_id"
[plugin]
wasm = {wasm:?}
config = {{ threshold = 5, window_ms = 60000 }}
[limits]
call_timeout_ms = 5000
[[sink]]
output = "alerts"
kind = "null"
"#
    ))
    .expect("benchmark spec")
}

/// `Pipeline::start` on `engine`: load (compile or read the cache), then
/// one instance per subtask, instantiated and opened.
fn start(engine: &Engine, spec: &PipelineSpec, component: &[u8]) -> (Pipeline, Duration) {
    let began = Instant::now();
    let pipeline =
        Pipeline::start(engine, spec, component, began, RunOptions::default()).expect("start");
    (pipeline, began.elapsed())
}

struct Row {
    language: &'static str,
    size: usize,
    first_start: Duration,
    cached_start: Duration,
    events: u64,
    rate: f64,
    alerts: u64,
}

fn measure(language: &'static str, wasm: &Path, events: u64) -> Row {
    let component = std::fs::read(wasm).unwrap();
    let spec = w2_spec(wasm, events);
    // A fresh artifact cache: the first start compiles.
    let cache = tempfile::tempdir().unwrap();
    let engine = Engine::new(Some(cache.path().to_owned())).unwrap();
    let (pipeline, first_start) = start(&engine, &spec, &component);
    drop(pipeline);
    // Another engine on the same cache: what a restarted server pays.
    let engine = Engine::new(Some(cache.path().to_owned())).unwrap();
    let (pipeline, cached_start) = start(&engine, &spec, &component);
    let summary = pipeline.run(|_, _| {}).expect("run");
    let alerts = summary
        .outputs
        .iter()
        .find(|(name, _, _)| name == "alerts")
        .map_or(0, |(_, n, _)| *n);
    Row {
        language,
        size: component.len(),
        first_start,
        cached_start,
        events,
        rate: events as f64 / summary.wall_time.as_secs_f64(),
        alerts,
    }
}

fn main() {
    let events = env_u64("WEIR_BENCH_EVENTS", 1_000_000);
    let slow_events = env_u64("WEIR_BENCH_SLOW_EVENTS", 200_000);
    let out = tempfile::tempdir().unwrap();
    let rows = [
        measure(
            "Rust",
            Path::new(weir_test_artifacts::FRAUD_DETECTOR),
            events,
        ),
        measure(
            "Python",
            &build("fraud-detector-py", out.path()),
            slow_events,
        ),
        measure(
            "JavaScript",
            &build("fraud-detector-js", out.path()),
            slow_events,
        ),
    ];
    println!(
        "| plugin | component | first start (compile) | start from cache | W2 events | W2 events/s (p = 2) | alerts |"
    );
    println!("|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {:.1} MB | {:.2} s | {:.1} ms | {} | {:.0} | {} |",
            r.language,
            r.size as f64 / 1e6,
            r.first_start.as_secs_f64(),
            r.cached_start.as_secs_f64() * 1e3,
            r.events,
            r.rate,
            r.alerts
        );
    }
}
