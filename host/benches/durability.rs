//! The durability benchmark: W2 on RocksDB and with periodic checkpoints,
//! the cost of a checkpoint and of a restore of 1 M keys, and peak memory
//! with state far larger than RocksDB's caches.
//!
//! `cargo bench -p weir --bench durability` prints the figures and rewrites
//! the durability block of BENCHMARKS.md. `WEIR_BENCH_EVENTS` overrides N for
//! the throughput runs (default 20 000 000), `WEIR_BENCH_RUNS` the runs per
//! configuration (default 2, the best kept), `WEIR_BENCH_BIG_EVENTS` N for the
//! large-state run (default 10 000 000).

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use weir::checkpoint::CheckpointStore;
use weir::engine::Engine;
use weir::runtime::{Pipeline, RunOptions, RunSummary};
use weir::spec::PipelineSpec;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Setup<'a> {
    dir: &'a Path,
    name: &'a str,
    events: u64,
    users: u64,
    backend: &'a str,
    checkpoint_ms: Option<u64>,
    key_by: &'a str,
    window_ms: u64,
}

impl Setup<'_> {
    fn spec(&self) -> PipelineSpec {
        let checkpoint = self
            .checkpoint_ms
            .map(|ms| {
                format!(
                    "[checkpoint]\ninterval_ms = {ms}\ndir = {:?}\n",
                    self.dir.join("checkpoints")
                )
            })
            .unwrap_or_default();
        PipelineSpec::from_toml(&format!(
            r#"
name = "{name}"
[source]
kind = "generator"
events = {events}
users = {users}
[event_time]
field = "/ts"
[key_by]
field = "{key_by}"
[plugin]
wasm = {wasm:?}
config = {{ threshold = 5, window_ms = {window_ms} }}
[state]
backend = "{backend}"
dir = {state:?}
{checkpoint}
[[sink]]
output = "alerts"
kind = "null"
"#,
            name = self.name,
            events = self.events,
            users = self.users,
            key_by = self.key_by,
            wasm = weir_test_artifacts::FRAUD_DETECTOR,
            window_ms = self.window_ms,
            backend = self.backend,
            state = self.dir.join("state"),
        ))
        .expect("benchmark spec")
    }
}

fn run(engine: &Engine, spec: &PipelineSpec, options: RunOptions) -> RunSummary {
    let component = std::fs::read(spec.plugin.wasm.as_ref().unwrap()).unwrap();
    Pipeline::start(engine, spec, &component, Instant::now(), options)
        .expect("start")
        .run(|_, _| {})
        .expect("run")
}

/// W2 at parallelism 1: events/s, and checkpoint figures when on.
fn throughput(engine: &Engine, dir: &Path, backend: &str, checkpoint_ms: Option<u64>) -> String {
    let events = env_u64("WEIR_BENCH_EVENTS", 20_000_000);
    let runs = env_u64("WEIR_BENCH_RUNS", 2).max(1);
    let mut best: Option<RunSummary> = None;
    for _ in 0..runs {
        let scratch = tempfile::tempdir_in(dir).unwrap();
        let spec = Setup {
            dir: scratch.path(),
            name: "w2",
            events,
            users: 100_000,
            backend,
            checkpoint_ms,
            key_by: "/user_id",
            window_ms: 60_000,
        }
        .spec();
        let summary = run(engine, &spec, RunOptions::default());
        if best
            .as_ref()
            .is_none_or(|b| summary.wall_time < b.wall_time)
        {
            best = Some(summary);
        }
    }
    let s = best.expect("one run");
    let rate = events as f64 / s.wall_time.as_secs_f64();
    let checkpoints = s.checkpoints.as_ref().map_or("—".to_owned(), |c| {
        format!(
            "{} (mean {} ms, last {} bytes)",
            c.completed,
            c.total_duration_ms / c.completed.max(1),
            c.last_size_bytes.unwrap_or(0)
        )
    });
    let every = checkpoint_ms.map_or("none".to_owned(), |ms| format!("every {} s", ms / 1000));
    let line = format!(
        "| W2, {backend}, checkpoints {every} | {:.2} M | {checkpoints} |",
        rate / 1e6
    );
    eprintln!("{line}");
    line
}

/// 1 M keys, each with a value and a pending timer: the duration of the
/// checkpoint a stop takes, and of restoring it into a new pipeline.
fn checkpoint_and_restore(engine: &Engine, dir: &Path, backend: &str) -> String {
    let keys = 1_000_000;
    let scratch = tempfile::tempdir_in(dir).unwrap();
    let setup = Setup {
        dir: scratch.path(),
        name: "keys",
        events: keys + 1,
        users: 100_000,
        backend,
        checkpoint_ms: Some(3_600_000),
        // Every event its own key, and windows that never close.
        key_by: "/ts",
        window_ms: 1_000_000_000_000,
    };
    let spec = setup.spec();
    let summary = run(
        engine,
        &spec,
        RunOptions {
            stop_after: Some(keys),
            ..RunOptions::default()
        },
    );
    let stats = summary.checkpoints.expect("checkpoints on");
    let store = CheckpointStore::new(&scratch.path().join("checkpoints"), "keys");
    let latest = store
        .latest_valid(false, |p| panic!("{p}"))
        .expect("a checkpoint");
    let component = std::fs::read(spec.plugin.wasm.as_ref().unwrap()).unwrap();
    let started = Instant::now();
    let pipeline = Pipeline::start(
        engine,
        &spec,
        &component,
        started,
        RunOptions {
            restore: Some(latest),
            ..RunOptions::default()
        },
    )
    .expect("restore");
    let restore = started.elapsed();
    drop(pipeline);
    let line = format!(
        "| {backend} | {keys} | {} ms | {} MB | {} ms |",
        stats.last_duration_ms.unwrap_or(0),
        stats.last_size_bytes.unwrap_or(0) / 1_000_000,
        restore.as_millis()
    );
    eprintln!("{line}");
    line
}

/// Peak RSS (VmHWM) of a `weir run` of `spec_path`, polled until it exits.
fn peak_rss_mb(spec_path: &Path, cache: &Path, stop_after: u64) -> (f64, Duration, String) {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args([
            "run",
            "--quiet",
            "--stop-after",
            &stop_after.to_string(),
            "--summary-json",
        ])
        .arg(spec_path.with_extension("json"))
        .arg(spec_path)
        .env("WEIR_CACHE_DIR", cache)
        .spawn()
        .unwrap();
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak_kb = 0u64;
    while child.try_wait().unwrap().is_none() {
        let status = std::fs::read_to_string(&status_path).unwrap_or_default();
        if let Some(kb) = status.lines().find_map(|l| {
            l.strip_prefix("VmHWM:")
                .and_then(|v| v.trim().trim_end_matches(" kB").parse::<u64>().ok())
        }) {
            peak_kb = peak_kb.max(kb);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let summary = std::fs::read_to_string(spec_path.with_extension("json")).unwrap_or_default();
    (peak_kb as f64 / 1024.0, started.elapsed(), summary)
}

fn large_state(dir: &Path) -> String {
    let events = env_u64("WEIR_BENCH_BIG_EVENTS", 10_000_000);
    // 7 M users drawn 10 M times: about 5.3 M distinct keys.
    let users = events * 7 / 10;
    let scratch = tempfile::tempdir_in(dir).unwrap();
    let spec = Setup {
        dir: scratch.path(),
        name: "big",
        // Stop (without draining the timers) once all N are in.
        events: events + 1,
        users,
        backend: "rocksdb",
        checkpoint_ms: Some(10_000),
        key_by: "/user_id",
        window_ms: 1_000_000_000_000,
    };
    let text = toml::to_string(&spec.spec()).unwrap();
    let spec_path = scratch.path().join("big.toml");
    std::fs::write(&spec_path, text).unwrap();
    let (peak, took, summary) = peak_rss_mb(&spec_path, &dir.join("cache"), events);
    let summary: serde_json::Value = serde_json::from_str(&summary).unwrap_or_default();
    let line = format!(
        "| rocksdb, N = {events}, {} keys in state, {} timers pending at the stop | {:.0} MiB | {:.1} s |",
        summary["keys_in_state"],
        summary["pending_event_timers"],
        peak,
        took.as_secs_f64()
    );
    eprintln!("{line}");
    line
}

fn main() {
    let scratch = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    let engine = Engine::new(Some(scratch.path().join("cache"))).unwrap();
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Produced by `cargo bench -p weir --bench durability` (parallelism 1, null sinks).\n"
    );
    let _ = writeln!(md, "| run | events/s | checkpoints completed |");
    let _ = writeln!(md, "|---|---:|---|");
    for (backend, every) in [
        ("memory", None),
        ("memory", Some(10_000)),
        ("rocksdb", None),
        ("rocksdb", Some(10_000)),
    ] {
        let _ = writeln!(
            md,
            "{}",
            throughput(&engine, scratch.path(), backend, every)
        );
    }
    let _ = writeln!(
        md,
        "\n| backend | keys (each with a value and a timer) | checkpoint | size | restore |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|");
    for backend in ["memory", "rocksdb"] {
        let _ = writeln!(
            md,
            "{}",
            checkpoint_and_restore(&engine, scratch.path(), backend)
        );
    }
    let _ = writeln!(md, "\n| large state | peak RSS | wall time |");
    let _ = writeln!(md, "|---|---:|---:|");
    let _ = writeln!(md, "{}", large_state(scratch.path()));
    print!("{md}");

    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../BENCHMARKS.md");
    let old = std::fs::read_to_string(&out).unwrap_or_default();
    let (start, end) = ("<!-- durability:start -->", "<!-- durability:end -->");
    let updated = match (old.find(start), old.find(end)) {
        (Some(a), Some(b)) if a < b => format!("{}{start}\n{md}{}", &old[..a], &old[b..]),
        _ => format!("{old}\n## Durability\n\n{start}\n{md}{end}\n"),
    };
    std::fs::write(&out, updated).unwrap();
    eprintln!("wrote {}", out.display());
}
