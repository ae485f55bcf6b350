//! Outputs: from the tasks that produce records to the sink threads.
//!
//! Every output (`main`, `late`, `dead-letter`, and each side output a plugin
//! names) is counted; an output with sinks fans its records out to them over
//! bounded channels, so a slow sink slows its producers instead of growing
//! memory. An output nobody sinks is counted and reported in the summary.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crossbeam_channel::Sender;
use rustc_hash::FxHashMap;

use super::liveness::{Activity, Liveness};
use crate::connectors::OutputRecord;

/// How many record batches may wait for one sink.
pub(crate) const SINK_QUEUE: usize = 64;

/// Counters of one run, shared by all of its tasks.
#[derive(Default)]
pub struct RunMetrics {
    pub events_in: AtomicU64,
    outputs: Mutex<BTreeMap<String, u64>>,
    errors: Mutex<BTreeMap<String, u64>>,
    counters: Mutex<BTreeMap<String, u64>>,
    first_event: std::sync::OnceLock<Instant>,
    /// Wall time of each plugin call (one call handles a batch).
    pub call_latency: super::histogram::LatencyHistogram,
}

impl RunMetrics {
    pub(crate) fn add_output(&self, output: &str, n: u64) {
        *self
            .outputs
            .lock()
            .expect("metrics lock")
            .entry(output.to_owned())
            .or_default() += n;
    }

    pub(crate) fn add_error(&self, kind: &str) {
        *self
            .errors
            .lock()
            .expect("metrics lock")
            .entry(kind.to_owned())
            .or_default() += 1;
    }

    pub(crate) fn add_counters(&self, counters: &mut FxHashMap<String, u64>) {
        let mut all = self.counters.lock().expect("metrics lock");
        for (name, n) in counters.drain() {
            *all.entry(name).or_default() += n;
        }
    }

    pub(crate) fn mark_first_event(&self) {
        self.first_event.get_or_init(Instant::now);
    }

    pub fn first_event(&self) -> Option<Instant> {
        self.first_event.get().copied()
    }

    pub fn outputs(&self) -> BTreeMap<String, u64> {
        self.outputs.lock().expect("metrics lock").clone()
    }

    pub fn errors(&self) -> BTreeMap<String, u64> {
        self.errors.lock().expect("metrics lock").clone()
    }

    pub fn counters(&self) -> BTreeMap<String, u64> {
        self.counters.lock().expect("metrics lock").clone()
    }
}

/// What a sink thread receives from one producer (the source or a subtask).
pub(crate) enum SinkMessage {
    Records {
        producer: usize,
        records: Vec<OutputRecord>,
    },
    /// The producer's records of checkpoint `id`'s epoch all came before this.
    Barrier { producer: usize, id: u64 },
}

/// A copy of every record of every output, with its output's name, in the
/// order producers sent them: what `weir plugin test` shows. Only for small
/// inputs (`RunOptions::inspect`): it grows without bound.
pub(crate) type Captured = Arc<Mutex<Vec<(String, OutputRecord)>>>;

/// Where each output's records go: a producer-side handle, one per task.
#[derive(Clone)]
pub(crate) struct OutputRouter {
    producer: usize,
    sinks: FxHashMap<String, Vec<Sender<SinkMessage>>>,
    /// Every sink once, for barriers.
    all: Vec<Sender<SinkMessage>>,
    captured: Option<Captured>,
    /// The producer's liveness: a wait for room in a full sink queue shows
    /// as backpressure and ends when the pipeline is aborted.
    watched: Option<(Arc<Liveness>, Arc<Activity>)>,
}

impl OutputRouter {
    pub(crate) fn new(
        sinks: FxHashMap<String, Vec<Sender<SinkMessage>>>,
        captured: Option<Captured>,
    ) -> Self {
        let all = sinks.values().flatten().cloned().collect();
        Self {
            producer: 0,
            sinks,
            all,
            captured,
            watched: None,
        }
    }

    /// This handle, with its producer's liveness.
    pub(crate) fn watched(self, liveness: Arc<Liveness>, activity: Arc<Activity>) -> Self {
        Self {
            watched: Some((liveness, activity)),
            ..self
        }
    }

    fn deliver(&self, to: &Sender<SinkMessage>, message: SinkMessage) -> Result<(), SinkGone> {
        match &self.watched {
            Some((liveness, activity)) => {
                liveness.send(to, message, activity).map_err(|_| SinkGone)
            }
            None => to.send(message).map_err(|_| SinkGone),
        }
    }

    /// The handle of producer `producer` (subtasks are `0..p`, the source `p`).
    pub(crate) fn for_producer(&self, producer: usize) -> Self {
        Self {
            producer,
            ..self.clone()
        }
    }

    /// Tells every sink that this producer's epoch `id` is complete.
    pub(crate) fn barrier(&self, id: u64) -> Result<(), SinkGone> {
        for sink in &self.all {
            self.deliver(
                sink,
                SinkMessage::Barrier {
                    producer: self.producer,
                    id,
                },
            )?;
        }
        Ok(())
    }

    /// Sends a batch of one output's records to its sinks, blocking while a
    /// sink is full. `Err` means a sink has stopped (it failed).
    pub(crate) fn send(
        &self,
        metrics: &RunMetrics,
        output: &str,
        records: Vec<OutputRecord>,
    ) -> Result<(), SinkGone> {
        if records.is_empty() {
            return Ok(());
        }
        metrics.add_output(output, records.len() as u64);
        if let Some(captured) = &self.captured {
            let copies = records.iter().map(|r| (output.to_owned(), r.clone()));
            captured.lock().expect("capture lock").extend(copies);
        }
        let Some(senders) = self.sinks.get(output) else {
            return Ok(());
        };
        let message = |records| SinkMessage::Records {
            producer: self.producer,
            records,
        };
        if let Some((last, rest)) = senders.split_last() {
            for sender in rest {
                self.deliver(sender, message(records.clone()))?;
            }
            self.deliver(last, message(records))?;
        }
        Ok(())
    }
}

/// A sink thread hung up: it failed, and its error is reported when joined.
#[derive(Debug)]
pub(crate) struct SinkGone;

/// Per-task buffer of the outputs of one applied batch, in order.
#[derive(Default)]
pub(crate) struct OutputBuffer {
    names: Vec<String>,
    ids: FxHashMap<String, usize>,
    records: Vec<(usize, OutputRecord)>,
}

impl OutputBuffer {
    pub(crate) fn id(&mut self, name: &str) -> usize {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = self.names.len();
        self.names.push(name.to_owned());
        self.ids.insert(name.to_owned(), id);
        id
    }

    /// The id of `name`, if this buffer has seen it.
    pub(crate) fn known(&self, name: &str) -> Option<usize> {
        self.ids.get(name).copied()
    }

    pub(crate) fn push(&mut self, id: usize, record: OutputRecord) {
        self.records.push((id, record));
    }

    /// Sends everything buffered, grouped by output, and empties the buffer.
    pub(crate) fn flush(
        &mut self,
        router: &OutputRouter,
        metrics: &RunMetrics,
    ) -> Result<(), SinkGone> {
        if self.records.is_empty() {
            return Ok(());
        }
        let mut by_output: Vec<Vec<OutputRecord>> = vec![Vec::new(); self.names.len()];
        for (id, record) in self.records.drain(..) {
            by_output[id].push(record);
        }
        for (name, records) in self.names.iter().zip(by_output) {
            router.send(metrics, name, records)?;
        }
        Ok(())
    }
}
