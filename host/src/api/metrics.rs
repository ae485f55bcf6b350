//! `GET /metrics`: every pipeline's live figures in the Prometheus text
//! format. The figures already live in the runtime's atomics (one source of
//! truth for the run summary, the status route and this); rendering them at
//! scrape time costs nothing per event, which a metrics registry fed from
//! the hot path would.

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::runtime::LiveStatus;
use crate::runtime::now_ms;

pub fn render(pipelines: &[(String, bool, Option<Arc<LiveStatus>>)]) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: &mut dyn FnMut(&mut String)| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        samples(&mut out);
    };
    let live = || {
        pipelines
            .iter()
            .filter_map(|(name, _, live)| live.as_ref().map(|l| (label(name), l)))
    };
    family(
        "weir_pipeline_up",
        "gauge",
        "1 while the pipeline runs.",
        &mut |o| {
            for (name, up, _) in pipelines {
                let _ = writeln!(
                    o,
                    "weir_pipeline_up{{pipeline=\"{}\"}} {}",
                    label(name),
                    *up as u8
                );
            }
        },
    );
    family(
        "weir_events_in_total",
        "counter",
        "Events read from the source.",
        &mut |o| {
            for (name, l) in live() {
                let n = l.metrics.events_in.load(Ordering::Relaxed);
                let _ = writeln!(o, "weir_events_in_total{{pipeline=\"{name}\"}} {n}");
            }
        },
    );
    family(
        "weir_events_out_total",
        "counter",
        "Records emitted, per output.",
        &mut |o| {
            for (name, l) in live() {
                for (output, n) in l.metrics.outputs() {
                    let _ = writeln!(
                        o,
                        "weir_events_out_total{{pipeline=\"{name}\",output=\"{}\"}} {n}",
                        label(&output)
                    );
                }
            }
        },
    );
    family(
        "weir_errors_total",
        "counter",
        "Failed items, by kind.",
        &mut |o| {
            for (name, l) in live() {
                for (kind, n) in l.metrics.errors() {
                    let _ = writeln!(
                        o,
                        "weir_errors_total{{pipeline=\"{name}\",kind=\"{}\"}} {n}",
                        label(&kind)
                    );
                }
            }
        },
    );
    family(
        "weir_plugin_call_seconds",
        "histogram",
        "Wall time of one plugin call (a call handles a batch of events or timers).",
        &mut |o| {
            for (name, l) in live() {
                let h = l.metrics.call_latency.snapshot();
                for (bound, count) in &h.cumulative {
                    let _ = writeln!(
                        o,
                        "weir_plugin_call_seconds_bucket{{pipeline=\"{name}\",le=\"{bound}\"}} {count}"
                    );
                }
                let _ = writeln!(
                    o,
                    "weir_plugin_call_seconds_bucket{{pipeline=\"{name}\",le=\"+Inf\"}} {}",
                    h.count
                );
                let _ = writeln!(
                    o,
                    "weir_plugin_call_seconds_sum{{pipeline=\"{name}\"}} {}",
                    h.sum_seconds
                );
                let _ = writeln!(
                    o,
                    "weir_plugin_call_seconds_count{{pipeline=\"{name}\"}} {}",
                    h.count
                );
            }
        },
    );
    family(
        "weir_checkpoints_total",
        "counter",
        "Checkpoints, by result.",
        &mut |o| {
            for (name, l) in live() {
                let c = l.checkpoint_stats();
                let _ = writeln!(
                    o,
                    "weir_checkpoints_total{{pipeline=\"{name}\",result=\"completed\"}} {}",
                    c.completed
                );
                let _ = writeln!(
                    o,
                    "weir_checkpoints_total{{pipeline=\"{name}\",result=\"failed\"}} {}",
                    c.failed
                );
            }
        },
    );
    family(
        "weir_checkpoint_duration_seconds",
        "gauge",
        "Duration of the last completed checkpoint.",
        &mut |o| {
            for (name, l) in live() {
                if let Some(ms) = l.checkpoint_stats().last_duration_ms {
                    let _ = writeln!(
                        o,
                        "weir_checkpoint_duration_seconds{{pipeline=\"{name}\"}} {}",
                        ms as f64 / 1000.0
                    );
                }
            }
        },
    );
    family(
        "weir_checkpoint_size_bytes",
        "gauge",
        "Size of the last completed checkpoint.",
        &mut |o| {
            for (name, l) in live() {
                if let Some(bytes) = l.checkpoint_stats().last_size_bytes {
                    let _ = writeln!(
                        o,
                        "weir_checkpoint_size_bytes{{pipeline=\"{name}\"}} {bytes}"
                    );
                }
            }
        },
    );
    family(
        "weir_watermark_lag_seconds",
        "gauge",
        "Wall clock minus the event-time watermark.",
        &mut |o| {
            for (name, l) in live() {
                let w = l.progress.watermark.load(Ordering::Relaxed);
                if w != i64::MIN && w != i64::MAX {
                    let _ = writeln!(
                        o,
                        "weir_watermark_lag_seconds{{pipeline=\"{name}\"}} {}",
                        (now_ms() - w) as f64 / 1000.0
                    );
                }
            }
        },
    );
    family(
        "weir_swaps_total",
        "counter",
        "Completed plugin hot swaps.",
        &mut |o| {
            for (name, l) in live() {
                let _ = writeln!(
                    o,
                    "weir_swaps_total{{pipeline=\"{name}\"}} {}",
                    l.swaps.load(Ordering::Relaxed)
                );
            }
        },
    );
    family(
        "weir_swap_pause_seconds",
        "gauge",
        "The longest subtask pause of the last swap.",
        &mut |o| {
            for (name, l) in live() {
                if l.swaps.load(Ordering::Relaxed) > 0 {
                    let ns = l.last_swap_pause_ns.load(Ordering::Relaxed);
                    let _ = writeln!(
                        o,
                        "weir_swap_pause_seconds{{pipeline=\"{name}\"}} {}",
                        ns as f64 / 1e9
                    );
                }
            }
        },
    );
    out
}

/// A label value with `\`, `"` and newlines escaped, as the format requires.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn a_stopped_pipeline_is_down_and_families_are_typed() {
        let text = render(&[("p".into(), false, None)]);
        assert!(text.contains("# TYPE weir_pipeline_up gauge\n"));
        assert!(text.contains("weir_pipeline_up{pipeline=\"p\"} 0\n"));
        assert!(text.contains("# TYPE weir_plugin_call_seconds histogram\n"));
    }
}
