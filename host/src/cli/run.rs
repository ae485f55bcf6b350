//! `weir run SPEC`: one pipeline in the foreground, on the embedded default.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};

use super::plugin_build;
use crate::checkpoint::{self, SnapshotKind};
use crate::engine::Engine;
use crate::runtime::{Pipeline, RunOptions, RunSummary};
use crate::spec::PipelineSpec;

#[derive(clap::Args)]
pub(crate) struct RunArgs {
    /// The pipeline spec (TOML). Relative paths inside it are relative to the
    /// current directory.
    spec: PathBuf,
    /// Also write the summary as JSON to this file.
    #[arg(long, value_name = "FILE")]
    summary_json: Option<PathBuf>,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
    /// Ignore (and delete) the pipeline's checkpoints and start over: its
    /// exactly-once file outputs are rewritten from nothing. Without it, a
    /// pipeline whose checkpoints cannot be restored does not run.
    #[arg(long)]
    fresh: bool,
    /// Stop after this many source records (counted from the pipeline's
    /// first start) with a checkpoint, without draining timers; take a
    /// savepoint from it with `weir savepoint create`.
    #[arg(long, value_name = "RECORDS")]
    stop_after: Option<u64>,
}

pub(crate) fn run(args: RunArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let spec = PipelineSpec::from_toml_file(&args.spec)
        .with_context(|| format!("invalid pipeline spec {}", args.spec.display()))?;
    let component_path = match (&spec.plugin.crate_dir, &spec.plugin.wasm) {
        (Some(dir), _) => plugin_build::build(dir).context("plugin.crate")?,
        (None, Some(path)) => path.clone(),
        (None, None) => anyhow::bail!(
            "plugin.digest names a component in `weir serve`'s registry; \
             `weir run` needs `plugin.wasm` or `plugin.crate`"
        ),
    };
    let component = std::fs::read(&component_path).with_context(|| {
        format!(
            "plugin: cannot read the component {}",
            component_path.display()
        )
    })?;
    let engine = Engine::new(Engine::default_cache_dir()).context("starting the wasm engine")?;
    if let crate::spec::SourceSpec::Kafka(k) = &spec.source
        && k.scale_out.is_some()
    {
        anyhow::ensure!(
            !args.fresh,
            "--fresh: with source.scale_out the checkpoints are shared by the group; to start \
             the group over, stop every process and delete {}/{}",
            k.scale_out.as_ref().map_or("", |s| s.shared.as_str()),
            spec.name
        );
        anyhow::ensure!(
            args.stop_after.is_none(),
            "--stop-after is for savepoints, which a pipeline with source.scale_out does not take"
        );
        let summaries = super::run_group::run(&spec, &engine, component)
            .with_context(|| format!("pipeline {:?} failed", spec.name))?;
        let total = super::run_group::merge(&summaries, started.elapsed());
        let partitions = summaries
            .iter()
            .map(|((topic, p), s)| serde_json::json!({"partition": format!("{topic}/{p}"), "events_in": s.events_in}))
            .collect();
        return report(
            &args,
            &spec,
            &total,
            &component_path,
            [("partitions".to_owned(), partitions)]
                .into_iter()
                .collect(),
        );
    }
    let restore = checkpoint::resume_point(&spec, args.fresh, |problem| {
        eprintln!("warning: {problem}");
    })
    .context("finding a checkpoint to resume from")?;
    if let Some(r) = &restore {
        let m = &r.manifest;
        eprintln!(
            "resuming from {} {} ({}, {} state files, {} bytes){}",
            match m.kind {
                SnapshotKind::Checkpoint => "checkpoint",
                SnapshotKind::Savepoint => "savepoint",
            },
            m.id,
            r.dir.display(),
            m.files.len(),
            m.size_bytes,
            if m.finished {
                "; it was taken at the end of input, so nothing is left to do (--fresh starts over)"
            } else {
                ""
            }
        );
    }
    let options = RunOptions {
        restore,
        stop_after: args.stop_after,
        report: Some(|line| eprintln!("  {line}")),
        ingest: None,
        inspect: false,
        start_over: args.fresh,
    };
    let pipeline = Pipeline::start(&engine, &spec, &component, started, options)
        .with_context(|| format!("starting pipeline {:?}", spec.name))?;

    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} {bar:30} {percent:>3}%  {msg}")
            .expect("static template"),
    );
    let summary = pipeline
        .run(|metrics, progress| {
            bar.set_length(progress.total.load(Ordering::Relaxed));
            bar.set_position(progress.done.load(Ordering::Relaxed));
            bar.set_message(format!(
                "{} events in",
                metrics.events_in.load(Ordering::Relaxed)
            ));
        })
        .with_context(|| format!("pipeline {:?} failed", spec.name))?;
    bar.finish_and_clear();

    report(
        &args,
        &spec,
        &summary,
        &component_path,
        serde_json::Map::new(),
    )
}

/// Prints the run's summary and writes `--summary-json`, with `extra`
/// fields added to it.
fn report(
    args: &RunArgs,
    spec: &PipelineSpec,
    summary: &RunSummary,
    component: &std::path::Path,
    extra: serde_json::Map<String, serde_json::Value>,
) -> anyhow::Result<()> {
    eprint!("{}", render_summary(spec, summary, component));
    if let Some(path) = &args.summary_json {
        let mut json = summary_json(spec, summary);
        if let Some(fields) = json.as_object_mut() {
            fields.extend(extra);
        }
        std::fs::write(path, json.to_string())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn render_summary(spec: &PipelineSpec, s: &RunSummary, component: &std::path::Path) -> String {
    use std::fmt::Write;
    let secs = s.wall_time.as_secs_f64();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "pipeline {:?} {} in {:.2} s (parallelism {})",
        spec.name,
        if s.stopped { "stopped" } else { "finished" },
        secs,
        spec.parallelism
    );
    let _ = writeln!(
        out,
        "  events in          {:>12}  ({:.0} events/s)",
        s.events_in,
        s.events_in as f64 / secs.max(1e-9)
    );
    for (name, count, has_sink) in &s.outputs {
        let note = if *has_sink {
            ""
        } else {
            "  (no sink: counted, not written)"
        };
        let _ = writeln!(out, "  output {:<12}{:>12}{note}", name, count);
    }
    for (kind, count) in &s.errors {
        let _ = writeln!(out, "  errors {:<12}{:>12}", kind, count);
    }
    for (name, count) in &s.counters {
        let _ = writeln!(out, "  counter {:<11}{:>12}", name, count);
    }
    let _ = writeln!(out, "  keys in state      {:>12}", s.keys_in_state);
    if s.pending_event_timers > 0 {
        let _ = writeln!(out, "  event timers left  {:>12}", s.pending_event_timers);
    }
    if s.discarded_processing_timers > 0 {
        let _ = writeln!(
            out,
            "  processing-time timers discarded at end of input: {}",
            s.discarded_processing_timers
        );
    }
    if let Some(first) = s.first_event_after {
        let _ = writeln!(
            out,
            "  first event after  {:>9.1} ms",
            first.as_secs_f64() * 1000.0
        );
    }
    if let Some(c) = &s.checkpoints {
        if let Some((kind, id)) = &c.restored_from {
            let _ = writeln!(out, "  resumed from       {kind} {id}");
        }
        let _ = write!(
            out,
            "  checkpoints        {:>12} completed, {} failed",
            c.completed, c.failed
        );
        if let (Some(id), Some(ms), Some(bytes)) =
            (c.last_id, c.last_duration_ms, c.last_size_bytes)
        {
            let age = c
                .last_completed_at
                .map_or(0.0, |t| t.elapsed().as_secs_f64());
            let _ = write!(
                out,
                "; last: {id}, {ms} ms, {bytes} bytes, {age:.1} s ago; mean {} ms",
                c.total_duration_ms / c.completed.max(1)
            );
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(
        out,
        "  plugin             {} (sha256 {})",
        component.display(),
        s.plugin_digest.get(..12).unwrap_or("-")
    );
    out
}

fn summary_json(spec: &PipelineSpec, s: &RunSummary) -> serde_json::Value {
    let outputs: serde_json::Map<String, serde_json::Value> = s
        .outputs
        .iter()
        .map(|(name, n, _)| (name.clone(), (*n).into()))
        .collect();
    let errors: serde_json::Map<String, serde_json::Value> = s
        .errors
        .iter()
        .map(|(kind, n)| (kind.clone(), (*n).into()))
        .collect();
    let counters: serde_json::Map<String, serde_json::Value> = s
        .counters
        .iter()
        .map(|(name, n)| (name.clone(), (*n).into()))
        .collect();
    serde_json::json!({
        "pipeline": spec.name,
        "parallelism": spec.parallelism,
        "events_in": s.events_in,
        "outputs": outputs,
        "errors": errors,
        "counters": counters,
        "keys_in_state": s.keys_in_state,
        "pending_event_timers": s.pending_event_timers,
        "discarded_processing_timers": s.discarded_processing_timers,
        "plugin_digest": s.plugin_digest,
        "first_event_ms": s.first_event_after.map(|d| d.as_secs_f64() * 1000.0),
        "wall_time_s": s.wall_time.as_secs_f64(),
        "stopped": s.stopped,
        "checkpoints": s.checkpoints,
        "events_per_s": s.events_in as f64 / s.wall_time.as_secs_f64().max(1e-9),
    })
}
