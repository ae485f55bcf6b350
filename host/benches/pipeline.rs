//! The throughput benchmark: W1 and W2 on the fixed generator, through the
//! real runtime and the real plugin components, against W2 in plain Rust.
//!
//! `cargo bench -p weir --bench pipeline` prints the figures and rewrites
//! BENCHMARKS.md. `WEIR_BENCH_EVENTS` overrides N (default 20 000 000),
//! `WEIR_BENCH_RUNS` the runs per configuration (default 2, the best kept).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use weir::connectors::write_generator_value;
use weir::engine::Engine;
use weir::runtime::{Pipeline, RunOptions, RunSummary};
use weir::spec::PipelineSpec;

struct Row {
    name: String,
    events: u64,
    secs: f64,
    cpu_secs: f64,
    outputs: u64,
}

impl Row {
    fn rate(&self) -> f64 {
        self.events as f64 / self.secs
    }

    fn cpu_ns_per_event(&self) -> f64 {
        self.cpu_secs * 1e9 / self.events as f64
    }
}

/// User + system CPU time of this process, from /proc (Linux).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may contain spaces) start at ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    (ticks(11) + ticks(12)) / 100.0
}

fn spec(workload: &str, events: u64, parallelism: u32) -> PipelineSpec {
    let (wasm, event_time, sink_output) = match workload {
        "W1" => (weir_test_artifacts::AMOUNT_FILTER, "", "main"),
        "passthrough" => (weir_test_artifacts::PASSTHROUGH, "", "main"),
        _ => (
            weir_test_artifacts::FRAUD_DETECTOR,
            "[event_time]\nfield = \"/ts\"\n",
            "alerts",
        ),
    };
    PipelineSpec::from_toml(&format!(
        r#"
name = "bench"
parallelism = {parallelism}
[source]
kind = "generator"
events = {events}
{event_time}
[key_by]
field = "/user_id"
[plugin]
wasm = {wasm:?}
[[sink]]
output = "{sink_output}"
kind = "null"
"#
    ))
    .expect("benchmark spec")
}

fn run_weir(engine: &Engine, workload: &str, events: u64, parallelism: u32) -> Row {
    let spec = spec(workload, events, parallelism);
    let component = std::fs::read(spec.plugin.wasm.as_ref().unwrap()).unwrap();
    let pipeline = Pipeline::start(
        engine,
        &spec,
        &component,
        Instant::now(),
        RunOptions::default(),
    )
    .expect("start");
    let cpu = cpu_seconds();
    let summary: RunSummary = pipeline.run(|_, _| {}).expect("run");
    let outputs = summary.outputs.iter().map(|(_, n, _)| n).sum();
    Row {
        name: format!("Weir {workload}, parallelism {parallelism}"),
        events,
        secs: summary.wall_time.as_secs_f64(),
        cpu_secs: cpu_seconds() - cpu,
        outputs,
    }
}

/// W2 as plain native Rust over the same generator: JSON out and back in,
/// a hash map of windows and a timer heap, one thread. The limit.
fn run_native_w2(events: u64) -> Row {
    #[derive(serde::Deserialize)]
    struct Tx {
        user_id: u64,
        ts: i64,
    }
    let started = Instant::now();
    let cpu = cpu_seconds();
    let mut windows: HashMap<u64, (i64, u32)> = HashMap::new();
    let mut timers: std::collections::BinaryHeap<std::cmp::Reverse<(i64, u64)>> =
        Default::default();
    let mut alerts = 0u64;
    let mut value = Vec::with_capacity(64);
    for i in 0..events {
        value.clear();
        write_generator_value(i, &mut value);
        let tx: Tx = serde_json::from_slice(&value).unwrap();
        // Timers due at the watermark (ts − 1) fire first, as in the runtime.
        while let Some(std::cmp::Reverse((at, user))) = timers.peek().copied() {
            if at > tx.ts - 1 {
                break;
            }
            timers.pop();
            if windows.get(&user).is_some_and(|w| w.0 + 60_000 == at) {
                windows.remove(&user);
            }
        }
        let window = windows.entry(tx.user_id).or_insert((i64::MIN, 0));
        if window.1 == 0 || tx.ts >= window.0 + 60_000 {
            *window = (tx.ts, 1);
            timers.push(std::cmp::Reverse((tx.ts + 60_000, tx.user_id)));
        } else {
            window.1 += 1;
            if window.1 == 5 {
                alerts += 1;
            }
        }
    }
    Row {
        name: "native Rust W2, 1 thread".into(),
        events,
        secs: started.elapsed().as_secs_f64(),
        cpu_secs: cpu_seconds() - cpu,
        outputs: alerts,
    }
}

/// Time from `weir run` starting to its first event reaching a subtask,
/// with the component already in the cache (the second of two runs).
fn first_event_ms(dir: &Path) -> f64 {
    let spec_path = dir.join("first-event.toml");
    let spec = format!(
        "name = \"first\"\n[source]\nkind = \"generator\"\nevents = 1000\n[key_by]\nfield = \"/user_id\"\n[plugin]\nwasm = {:?}\n",
        weir_test_artifacts::FRAUD_DETECTOR
    );
    std::fs::write(&spec_path, spec).unwrap();
    let summary = dir.join("first-event.json");
    let mut best = f64::MAX;
    for _ in 0..5 {
        let status = Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(["run", "--quiet", "--summary-json"])
            .arg(&summary)
            .arg(&spec_path)
            .env("WEIR_CACHE_DIR", dir.join("cache"))
            .status()
            .unwrap();
        assert!(status.success());
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
        best = best.min(json["first_event_ms"].as_f64().unwrap());
    }
    best
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem_kb: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("MemTotal:")
                .and_then(|m| m.trim().trim_end_matches(" kB").parse().ok())
        })
        .unwrap_or(0);
    format!(
        "{model}, {cores} cores, {:.0} GiB",
        mem_kb as f64 / (1 << 20) as f64
    )
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument filters nothing here.
    let events: u64 = std::env::var("WEIR_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000_000);
    let scratch = tempfile::tempdir().unwrap();
    let engine = Engine::new(Some(scratch.path().join("cache"))).unwrap();

    let runs: usize = std::env::var("WEIR_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
        .max(1);
    let native = (0..runs)
        .map(|_| run_native_w2(events))
        .max_by(|a, b| a.rate().total_cmp(&b.rate()))
        .expect("at least one run");
    eprintln!("{}: {:.2} M events/s", native.name, native.rate() / 1e6);
    let mut rows = Vec::new();
    for (workload, parallelism) in [
        ("W1", 1),
        ("W1", 2),
        ("W2", 1),
        ("W2", 2),
        ("passthrough", 1),
    ] {
        // Best of `runs`: this is a shared VM, and a neighbour's load only
        // ever makes a run slower.
        let row = (0..runs)
            .map(|_| run_weir(&engine, workload, events, parallelism))
            .max_by(|a, b| a.rate().total_cmp(&b.rate()))
            .expect("at least one run");
        eprintln!(
            "{}: {:.2} M events/s, {} outputs",
            row.name,
            row.rate() / 1e6,
            row.outputs
        );
        rows.push(row);
    }
    let first_event = first_event_ms(scratch.path());
    eprintln!("first event after {first_event:.1} ms");

    let mut md = String::new();
    let _ = writeln!(
        md,
        "Produced by `cargo bench -p weir --bench pipeline` (N = {events} generator events, memory state, null sinks, best of {runs} runs).\n"
    );
    let _ = writeln!(md, "Machine: {}.\n", machine());
    let _ = writeln!(
        md,
        "| run | events/s | CPU ns/event | outputs | native W2 / this |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|");
    for row in rows.iter().chain(std::iter::once(&native)) {
        // The ratio compares like with like: W2 runs against native W2.
        let ratio = if row.name.contains("W2") {
            format!("{:.2}×", native.rate() / row.rate())
        } else {
            "—".into()
        };
        let _ = writeln!(
            md,
            "| {} | {:.2} M | {:.0} | {} | {ratio} |",
            row.name,
            row.rate() / 1e6,
            row.cpu_ns_per_event(),
            row.outputs,
        );
    }
    let _ = writeln!(
        md,
        "\nTime from `weir run` start to the first event reaching the plugin (component cached, best of 5): {first_event:.1} ms."
    );
    print!("{md}");

    // Only the block between the markers is the benchmark's; the rest of the
    // file (the analysis) is written by people.
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../BENCHMARKS.md");
    let old = std::fs::read_to_string(&out).unwrap_or_default();
    let (start, end) = ("<!-- bench:start -->", "<!-- bench:end -->");
    let updated = match (old.find(start), old.find(end)) {
        (Some(a), Some(b)) if a < b => format!("{}{start}\n{md}{}", &old[..a], &old[b..]),
        _ => format!("# Benchmarks\n\n{start}\n{md}{end}\n"),
    };
    std::fs::write(&out, updated).unwrap();
    eprintln!("wrote {}", out.display());
}
