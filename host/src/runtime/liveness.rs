//! Liveness: a pipeline whose task stops answering is failed, never waited
//! for without limit.
//!
//! The epoch deadline interrupts a plugin that computes too long, but not a
//! thread blocked outside wasm (a host call that never returns, a sink
//! write that never completes, a future bug). So every task of a pipeline
//! (each subtask, each sink, the source) publishes the step it is in and
//! since when, and the pipeline's coordinating thread checks them every
//! tick: a task in one step (one plugin call, one snapshot, one write) for
//! longer than `limits.answer_timeout_ms` is stuck, and the pipeline is
//! aborted with a reason naming the task and the step. Every wait of the
//! control on the pipeline (a query, a checkpoint, each phase of a swap, a
//! stop) has the same bound and aborts the same way when it runs out.
//!
//! An abort closes a channel every blocking wait of the tasks also selects
//! on, so every task that can end does, at once; the threads that cannot
//! (the stuck one) are left behind and named, and the run reports the
//! pipeline failed. Waiting for input and waiting for room in a full queue
//! (backpressure) never count as stuck: they are somebody else's step.

use std::sync::atomic::{AtomicI64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::now_ms;

/// How long the threads of an aborted pipeline get to end before they are
/// left behind.
pub(crate) const ABORT_GRACE: Duration = Duration::from_secs(2);

/// What a task is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Step {
    /// Waiting for input (not stuck: nothing to do).
    Idle = 0,
    /// Waiting for room in a full queue (not stuck: the task downstream is
    /// the slow one, and is watched itself).
    Backpressure,
    /// In a call of the plugin (`process`, `on-timer`).
    Plugin,
    /// Instantiating and opening the plugin (a swap).
    Opening,
    /// Writing its part of a checkpoint.
    Snapshot,
    /// Reading one key's state for a query.
    Query,
    /// Reading the source.
    Reading,
    /// Writing records to a sink.
    Writing,
    /// Staging or committing a checkpoint in a sink.
    Committing,
}

impl Step {
    const ALL: [Step; 9] = [
        Step::Idle,
        Step::Backpressure,
        Step::Plugin,
        Step::Opening,
        Step::Snapshot,
        Step::Query,
        Step::Reading,
        Step::Writing,
        Step::Committing,
    ];

    fn describe(self) -> &'static str {
        match self {
            Step::Idle => "waiting for input",
            Step::Backpressure => "waiting for room downstream",
            Step::Plugin => "in a call of the plugin",
            Step::Opening => "opening the plugin",
            Step::Snapshot => "writing its part of a checkpoint",
            Step::Query => "reading a key's state",
            Step::Reading => "reading the source",
            Step::Writing => "writing records",
            Step::Committing => "staging or committing a checkpoint",
        }
    }

    /// Whether a long time in this step means the task is stuck.
    fn can_stall(self) -> bool {
        !matches!(self, Step::Idle | Step::Backpressure)
    }
}

/// The step one task is in, and since when (ms since the Unix epoch).
pub(crate) struct Activity {
    name: String,
    step: AtomicU8,
    since_ms: AtomicI64,
}

impl Activity {
    /// Enters `step` (again: a new plugin call is a new step).
    pub(crate) fn set(&self, step: Step) {
        self.since_ms.store(now_ms(), Ordering::Relaxed);
        self.step.store(step as u8, Ordering::Relaxed);
    }

    fn step(&self) -> Step {
        Step::ALL[self.step.load(Ordering::Relaxed) as usize]
    }

    /// How long the task has been in its step, in ms.
    fn for_ms(&self, now: i64) -> i64 {
        (now - self.since_ms.load(Ordering::Relaxed)).max(0)
    }

    fn describe(&self, now: i64) -> String {
        format!(
            "{} has been {} for {:.1} s",
            self.name,
            self.step().describe(),
            self.for_ms(now) as f64 / 1000.0
        )
    }
}

/// The tasks of one pipeline, its answer timeout, and its abort.
pub(crate) struct Liveness {
    timeout: Duration,
    tasks: Mutex<Vec<Arc<Activity>>>,
    reason: OnceLock<String>,
    /// Dropped on abort, which disconnects `closed`.
    close: Mutex<Option<Sender<()>>>,
    closed: Receiver<()>,
}

impl Liveness {
    pub(crate) fn new(timeout: Duration) -> Arc<Self> {
        let (close, closed) = crossbeam_channel::bounded(0);
        Arc::new(Self {
            timeout,
            tasks: Mutex::new(Vec::new()),
            reason: OnceLock::new(),
            close: Mutex::new(Some(close)),
            closed,
        })
    }

    /// Registers a task (named for people: "subtask 2", "sink 0 (main)").
    pub(crate) fn task(&self, name: impl Into<String>) -> Arc<Activity> {
        let activity = Arc::new(Activity {
            name: name.into(),
            step: AtomicU8::new(Step::Idle as u8),
            since_ms: AtomicI64::new(now_ms()),
        });
        self.lock_tasks().push(activity.clone());
        activity
    }

    fn lock_tasks(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Activity>>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long any one step, or any wait of the control, may take.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Fails the pipeline for `reason` (the first reason given wins) and
    /// tells every task to end. Returns false if it already was.
    pub(crate) fn abort(&self, reason: String) -> bool {
        let first = self.reason.set(reason).is_ok();
        if first {
            tracing::error!("aborting the pipeline: {}", self.reason().unwrap_or(""));
        }
        drop(self.close.lock().unwrap_or_else(|p| p.into_inner()).take());
        first
    }

    /// Why the pipeline was aborted, if it was.
    pub(crate) fn reason(&self) -> Option<&str> {
        self.reason.get().map(String::as_str)
    }

    /// Disconnects when the pipeline is aborted: for tasks to select on.
    pub(crate) fn closed(&self) -> &Receiver<()> {
        &self.closed
    }

    /// The first task stuck in one step for longer than the timeout.
    pub(crate) fn stuck(&self) -> Option<String> {
        let now = now_ms();
        let limit = self.timeout.as_millis() as i64;
        self.lock_tasks()
            .iter()
            .find(|t| t.step().can_stall() && t.for_ms(now) > limit)
            .map(|t| {
                format!(
                    "{} (over limits.answer_timeout_ms = {limit})",
                    t.describe(now)
                )
            })
    }

    /// What every busy task is doing, for a wait that ran out.
    pub(crate) fn busy(&self) -> String {
        let now = now_ms();
        let busy: Vec<String> = self
            .lock_tasks()
            .iter()
            .filter(|t| t.step() != Step::Idle)
            .map(|t| t.describe(now))
            .collect();
        if busy.is_empty() {
            "every task is waiting for input".into()
        } else {
            busy.join("; ")
        }
    }

    /// Sends `message` on a bounded channel, waiting while it is full
    /// (marked as backpressure on `activity`) unless the pipeline is
    /// aborted. `Err` means the message was not delivered: the receiver is
    /// gone, or the pipeline was aborted.
    pub(crate) fn send<T>(
        &self,
        to: &Sender<T>,
        message: T,
        activity: &Activity,
    ) -> Result<(), NotSent> {
        let message = match to.try_send(message) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Disconnected(_)) => return Err(NotSent::Gone),
            Err(TrySendError::Full(m)) => m,
        };
        let before = activity.step();
        activity.set(Step::Backpressure);
        let sent = crossbeam_channel::select! {
            send(to, message) -> sent => sent.map_err(|_| NotSent::Gone),
            recv(self.closed) -> _ => Err(NotSent::Aborted),
        };
        activity.set(before);
        sent
    }
}

/// Why `Liveness::send` did not deliver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotSent {
    Gone,
    Aborted,
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn a_task_in_one_step_past_the_timeout_is_stuck_and_named_with_its_step() {
        let liveness = Liveness::new(Duration::from_millis(50));
        let idle = liveness.task("subtask 0");
        let busy = liveness.task("sink 1 (output main)");
        busy.set(Step::Committing);
        assert_eq!(liveness.stuck(), None, "not yet past the timeout");
        std::thread::sleep(Duration::from_millis(80));
        let stuck = liveness.stuck().expect("the sink is stuck");
        assert!(
            stuck.starts_with(
                "sink 1 (output main) has been staging or committing a checkpoint for"
            ),
            "{stuck}"
        );
        assert!(stuck.contains("limits.answer_timeout_ms = 50"), "{stuck}");
        // Waiting for input or for room downstream is never stuck.
        busy.set(Step::Backpressure);
        idle.set(Step::Idle);
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(liveness.stuck(), None);
        // A new step (the next plugin call) starts the clock again.
        idle.set(Step::Plugin);
        assert_eq!(liveness.stuck(), None);
    }

    #[test]
    fn an_abort_keeps_the_first_reason_and_ends_a_send_blocked_on_a_full_queue() {
        let liveness = Liveness::new(Duration::from_secs(1));
        let activity = liveness.task("the source");
        let (to, _never_read) = crossbeam_channel::bounded::<u32>(1);
        assert_eq!(liveness.send(&to, 1, &activity), Ok(()));
        let blocked = {
            let liveness = liveness.clone();
            let activity = activity.clone();
            std::thread::spawn(move || {
                let began = Instant::now();
                (liveness.send(&to, 2, &activity), began.elapsed())
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            liveness
                .busy()
                .contains("the source has been waiting for room downstream")
        );
        assert!(liveness.abort("subtask 3 has been in a call of the plugin for 31 s".into()));
        assert!(!liveness.abort("a later reason".into()));
        let (sent, waited) = blocked.join().unwrap();
        assert_eq!(sent, Err(NotSent::Aborted));
        assert!(waited < Duration::from_secs(1), "{waited:?}");
        assert_eq!(
            liveness.reason(),
            Some("subtask 3 has been in a call of the plugin for 31 s")
        );
        assert!(liveness.closed().recv().is_err(), "closed disconnects");
    }
}
