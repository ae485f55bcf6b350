//! One sink thread: writes one sink's records and takes part in checkpoints.
//!
//! Every producer (each subtask and the source) sends a barrier after its
//! last record of a checkpoint's epoch. Records a producer sends after its
//! barrier wait until every producer's barrier is in (alignment), so what
//! the sink pre-commits for a checkpoint is exactly that checkpoint's epoch.
//! When the coordinator reports the checkpoint complete, the sink commits.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crossbeam_channel::{Receiver, Sender, select};

use super::PipelineError;
use super::coordinator::Ack;
use super::liveness::{Activity, Liveness, Step};
use super::outputs::SinkMessage;
use crate::connectors::Sink;

pub(crate) struct SinkTask {
    pub(crate) index: usize,
    pub(crate) sink: Box<dyn Sink>,
    pub(crate) producers: usize,
    pub(crate) records: Receiver<SinkMessage>,
    /// Ids of completed checkpoints, from the coordinator.
    pub(crate) commits: Receiver<u64>,
    pub(crate) acks: Sender<Ack>,
    /// Counts sinks whose producers have all hung up.
    pub(crate) drained: Arc<AtomicUsize>,
    pub(crate) liveness: Arc<Liveness>,
    /// What this sink is doing, for the pipeline's watchdog.
    pub(crate) activity: Arc<Activity>,
}

/// Barrier alignment across producers.
struct Alignment {
    aligned: Vec<bool>,
    arrived: usize,
    /// Messages of aligned producers, in arrival order (per producer, FIFO).
    held: Vec<SinkMessage>,
}

/// Counts a sink as drained however its thread ends (an error or a panic
/// included), so the coordinator never waits for a sink that is gone.
struct DrainedGuard(Arc<AtomicUsize>);

impl Drop for DrainedGuard {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl SinkTask {
    pub(crate) fn run(mut self) -> Result<(), PipelineError> {
        let mut drained = Some(DrainedGuard(self.drained.clone()));
        let mut alignment = Alignment {
            aligned: vec![false; self.producers],
            arrived: 0,
            held: Vec::new(),
        };
        let mut commits = self.commits.clone();
        let closed = self.liveness.closed().clone();
        loop {
            self.activity.set(Step::Idle);
            select! {
                recv(self.records) -> message => match message {
                    Ok(message) => self.handle(message, &mut alignment)?,
                    Err(_) => break,
                },
                recv(commits) -> id => match id {
                    Ok(id) => {
                        self.activity.set(Step::Committing);
                        self.sink.commit(id)?
                    }
                    // No more checkpoints will complete.
                    Err(_) => commits = crossbeam_channel::never(),
                },
                // The pipeline was aborted: what is not committed is not
                // flushed either (a restart replays it from the checkpoint).
                recv(closed) -> _ => {
                    return Err(PipelineError::Unresponsive(
                        self.liveness.reason().unwrap_or("aborted").to_owned(),
                    ));
                }
            }
        }
        self.activity.set(Step::Writing);
        self.sink.flush()?;
        drop(drained.take());
        // Producers are done; their final checkpoint may still complete.
        self.activity.set(Step::Idle);
        for id in self.commits.iter() {
            self.activity.set(Step::Committing);
            self.sink.commit(id)?;
            self.activity.set(Step::Idle);
        }
        Ok(())
    }

    fn handle(&mut self, message: SinkMessage, a: &mut Alignment) -> Result<(), PipelineError> {
        let producer = match &message {
            SinkMessage::Records { producer, .. } | SinkMessage::Barrier { producer, .. } => {
                *producer
            }
        };
        if a.aligned.get(producer).copied().unwrap_or(false) {
            a.held.push(message);
            return Ok(());
        }
        match message {
            SinkMessage::Records { records, .. } => {
                self.activity.set(Step::Writing);
                self.sink.write(&records)?
            }
            SinkMessage::Barrier { id, .. } => {
                let Some(slot) = a.aligned.get_mut(producer) else {
                    return Ok(());
                };
                *slot = true;
                a.arrived += 1;
                if a.arrived == self.producers {
                    self.activity.set(Step::Committing);
                    let result = self.sink.pre_commit(id);
                    let failed = result.as_ref().err().map(ToString::to_string);
                    let _ = self.acks.send(Ack::Sink {
                        id,
                        index: self.index,
                        result: result.map_err(|e| e.to_string()),
                    });
                    // A sink that could not stage its epoch may have lost
                    // it: fail, and let a restart replay from the last
                    // complete checkpoint.
                    if let Some(why) = failed {
                        return Err(PipelineError::Checkpoint(format!(
                            "sink {} could not stage checkpoint {id}: {why}",
                            self.index
                        )));
                    }
                    a.aligned.iter_mut().for_each(|x| *x = false);
                    a.arrived = 0;
                    // Replay what waited, in order; it may align again.
                    for message in std::mem::take(&mut a.held) {
                        self.handle(message, a)?;
                    }
                }
            }
        }
        Ok(())
    }
}
