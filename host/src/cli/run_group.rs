//! `weir run` of a spec with `[source.scale_out]`: this process is one of
//! the group that shares the Kafka topics' partitions.
//!
//! Kafka's group protocol decides which process holds which partition (a
//! `GroupMember` that reads nothing). Each partition held runs as a
//! pipeline of its own, reading that partition only, with its checkpoints
//! under `<checkpoint.dir>/<pipeline>/partitions/<topic>.<partition>`; every
//! completed one is copied to the shared storage. A partition taken away is
//! stopped at a checkpoint (copied before the group hands it on); a
//! partition given is restored from its newest shared checkpoint, whoever
//! wrote it. Keying by the record key (checked by the spec) keeps each key's
//! state inside one partition, so a partition's state is whole on its own.
//!
//! A member that dies is noticed by the group after its session timeout;
//! its partitions resume elsewhere from their last shared checkpoints:
//! state exactly as it was, outputs since then written again (the Kafka
//! sink's `weir-origin` header marks them).
//!
//! A bounded run ends when every partition of the topics has a finished
//! checkpoint in the shared storage, whichever process ran it; an
//! unbounded one on SIGINT or SIGTERM, after handing its partitions back.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::checkpoint::{self, CheckpointStore, SharedCheckpoints};
use crate::connectors::{GroupMember, PartitionOwner, TopicPartition};
use crate::engine::Engine;
use crate::runtime::{Pipeline, PipelineControl, PipelineError, RunOptions, RunSummary};
use crate::spec::{KafkaSourceSpec, PipelineSpec, SourceSpec};

/// How often finished partitions and new checkpoints are looked for.
const TICK: Duration = Duration::from_millis(200);

struct Running {
    control: PipelineControl,
    thread: JoinHandle<Result<RunSummary, PipelineError>>,
}

/// The partitions this process runs.
struct Partitions {
    spec: PipelineSpec,
    engine: Engine,
    component: Arc<Vec<u8>>,
    shared: SharedCheckpoints,
    running: BTreeMap<TopicPartition, Running>,
    /// The newest checkpoint of each partition copied to the shared storage.
    uploaded: BTreeMap<TopicPartition, u64>,
    /// Partitions known to have a finished checkpoint in the shared storage.
    finished: BTreeSet<TopicPartition>,
    /// Offsets of checkpoints copied since the last commit to the group.
    to_commit: Vec<(TopicPartition, u64)>,
    summaries: Vec<(TopicPartition, RunSummary)>,
    /// The first thing that went wrong; the run ends with it.
    failure: Option<anyhow::Error>,
}

fn name((topic, partition): &TopicPartition) -> String {
    format!("{topic}/{partition}")
}

fn kafka(spec: &PipelineSpec) -> &KafkaSourceSpec {
    match &spec.source {
        SourceSpec::Kafka(k) => k,
        _ => unreachable!("scale_out is a Kafka source's"),
    }
}

impl Partitions {
    /// The spec of one partition's pipeline: that partition only, with
    /// checkpoints and working state of its own.
    fn partition_spec(&self, tp: &TopicPartition) -> PipelineSpec {
        let mut spec = self.spec.clone();
        let own = |dir: &std::path::Path| self.partition_dir(dir, tp);
        if let SourceSpec::Kafka(k) = &mut spec.source {
            k.topics = vec![tp.0.clone()];
            k.only_partition = Some(tp.clone());
            k.scale_out = None;
        }
        if let Some(c) = &mut spec.checkpoint {
            c.dir = own(&c.dir);
        }
        spec.state.dir = own(&spec.state.dir);
        spec
    }

    /// A partition's own directory under `dir`.
    fn partition_dir(
        &self,
        dir: &std::path::Path,
        (topic, partition): &TopicPartition,
    ) -> std::path::PathBuf {
        dir.join(&self.spec.name)
            .join("partitions")
            .join(format!("{topic}.{partition}"))
    }

    /// Where a partition's pipeline keeps its checkpoints (looked at every
    /// tick, so without building its whole spec).
    fn local_store(&self, tp: &TopicPartition) -> CheckpointStore {
        let dir = &self
            .spec
            .checkpoint
            .as_ref()
            .expect("validated: scale_out")
            .dir;
        CheckpointStore::new(&self.partition_dir(dir, tp), &self.spec.name)
    }

    fn fail(&mut self, error: anyhow::Error) {
        eprintln!("error: {error:#}");
        self.failure.get_or_insert(error);
    }

    /// Starts a partition from its newest shared checkpoint (or its start
    /// position if it has none).
    fn start(&mut self, tp: &TopicPartition) -> anyhow::Result<()> {
        let latest = self
            .shared
            .latest(&tp.0, tp.1)
            .with_context(|| format!("finding the checkpoint of {}", name(tp)))?;
        if latest.as_ref().is_some_and(|c| c.finished) {
            self.finished.insert(tp.clone());
            eprintln!("  {}: finished (by an earlier owner)", name(tp));
            return Ok(());
        }
        let store = self.local_store(tp);
        if let Some(c) = &latest {
            self.shared
                .download(&tp.0, tp.1, c, &store)
                .with_context(|| format!("fetching the checkpoint of {}", name(tp)))?;
            self.uploaded.insert(tp.clone(), c.id);
        } else {
            // Nothing shared: what is here is from before the group
            // started over (or never reached it), not to be resumed.
            store.clear()?;
        }
        let spec = self.partition_spec(tp);
        let restore = checkpoint::resume_point(&spec, false, |problem| {
            eprintln!("warning: {}: {problem}", name(tp));
        })?;
        match &restore {
            Some(r) => eprintln!("  {}: resuming from checkpoint {}", name(tp), r.manifest.id),
            None => eprintln!("  {}: starting", name(tp)),
        }
        let options = RunOptions {
            restore,
            ..RunOptions::default()
        };
        let pipeline = Pipeline::start(
            &self.engine,
            &spec,
            &self.component,
            Instant::now(),
            options,
        )
        .with_context(|| format!("starting partition {}", name(tp)))?;
        let control = pipeline.control();
        let thread = std::thread::Builder::new()
            .name(format!("weir-{}.{}", tp.0, tp.1))
            .spawn(move || pipeline.run(|_, _| {}))
            .context("starting a partition's thread")?;
        self.running.insert(tp.clone(), Running { control, thread });
        Ok(())
    }

    /// Copies the partition's newest local checkpoint to the shared
    /// storage, if it is newer than the last one copied.
    fn upload(&mut self, tp: &TopicPartition) -> anyhow::Result<()> {
        let store = self.local_store(tp);
        let Some(&id) = store.ids().last() else {
            return Ok(());
        };
        if self.uploaded.get(tp).is_some_and(|&done| done >= id) {
            return Ok(());
        }
        let dir = store.dir_of(id);
        let manifest = checkpoint::read_manifest(&dir)?;
        let retain = self.spec.checkpoint.as_ref().map_or(1, |c| c.retain);
        self.shared
            .upload(&tp.0, tp.1, &dir, &manifest, retain)
            .with_context(|| format!("copying checkpoint {id} of {}", name(tp)))?;
        self.uploaded.insert(tp.clone(), id);
        if manifest.finished {
            self.finished.insert(tp.clone());
        }
        if let Some(p) = manifest.source.position.first() {
            self.to_commit.push((tp.clone(), p.offset));
        }
        Ok(())
    }

    /// Joins a partition's pipeline thread and keeps its summary.
    fn join(&mut self, tp: &TopicPartition, running: Running) {
        match running.thread.join() {
            Ok(Ok(summary)) => self.summaries.push((tp.clone(), summary)),
            Ok(Err(e)) => {
                let e = anyhow::Error::new(e).context(format!("partition {}", name(tp)));
                self.fail(e);
            }
            Err(_) => self.fail(anyhow::anyhow!("partition {} panicked", name(tp))),
        }
        if let Err(e) = self.upload(tp) {
            self.fail(e);
        }
    }

    /// Copies new checkpoints, and collects partitions that reached the end
    /// of a bounded input (or failed).
    fn tick(&mut self) {
        let held: Vec<TopicPartition> = self.running.keys().cloned().collect();
        for tp in held {
            if self.running[&tp].thread.is_finished() {
                let running = self.running.remove(&tp).expect("held");
                self.join(&tp, running);
                if self.finished.contains(&tp) {
                    eprintln!("  {}: finished", name(&tp));
                }
            } else if let Err(e) = self.upload(&tp) {
                // Not fatal: the next checkpoint is tried again, and a
                // restore from an older one is still consistent.
                eprintln!("warning: {e:#}");
            }
        }
    }
}

impl PartitionOwner for Partitions {
    fn assigned(&mut self, partitions: &[TopicPartition]) {
        let names: Vec<String> = partitions.iter().map(name).collect();
        eprintln!("group: holding [{}]", names.join(", "));
        for tp in partitions {
            if self.failure.is_some() {
                return;
            }
            if self.running.contains_key(tp) || self.finished.contains(tp) {
                continue;
            }
            if let Err(e) = self.start(tp) {
                self.fail(e);
            }
        }
    }

    fn revoked(&mut self, partitions: &[TopicPartition]) {
        let mut stopping = Vec::new();
        for tp in partitions {
            if let Some(running) = self.running.remove(tp) {
                // Already ended (bounded input) if it is not running.
                let _ = running.control.stop();
                stopping.push((tp.clone(), running));
            }
        }
        if stopping.is_empty() {
            return;
        }
        let names: Vec<String> = stopping.iter().map(|(tp, _)| name(tp)).collect();
        eprintln!("group: releasing [{}]", names.join(", "));
        for (tp, running) in stopping {
            self.join(&tp, running);
        }
    }
}

/// Set by SIGINT or SIGTERM: leave the group and end.
fn shutdown_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    let set = flag.clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the signal handler")?;
    std::thread::Builder::new()
        .name("weir-signals".into())
        .spawn(move || {
            runtime.block_on(async {
                let mut term =
                    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    {
                        Ok(term) => term,
                        Err(_) => return,
                    };
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
                set.store(true, Ordering::SeqCst);
            })
        })
        .context("starting the signal handler")?;
    Ok(flag)
}

/// Runs this process's share of the group until the input is done (bounded)
/// or a signal; returns the summaries of the partitions it ran.
pub(crate) fn run(
    spec: &PipelineSpec,
    engine: &Engine,
    component: Vec<u8>,
) -> anyhow::Result<Vec<(TopicPartition, RunSummary)>> {
    let source = kafka(spec);
    let scale_out = source.scale_out.as_ref().expect("called with scale_out");
    let shared = SharedCheckpoints::open(&scale_out.shared, &spec.name)?;
    let stop = shutdown_flag()?;
    let owner = Partitions {
        spec: spec.clone(),
        engine: engine.clone(),
        component: Arc::new(component),
        shared,
        running: BTreeMap::new(),
        uploaded: BTreeMap::new(),
        finished: BTreeSet::new(),
        to_commit: Vec::new(),
        summaries: Vec::new(),
        failure: None,
    };
    let member = GroupMember::join(source, owner)?;
    let all = member.partitions_of(&source.topics)?;
    eprintln!(
        "group {:?}: joined for {} partitions of [{}]",
        source.group,
        all.len(),
        source.topics.join(", ")
    );
    let mut last_finish_check = Instant::now();
    loop {
        member.poll(TICK);
        let mut owner = member.owner();
        owner.tick();
        let commits = std::mem::take(&mut owner.to_commit);
        if owner.failure.is_some() || stop.load(Ordering::SeqCst) {
            break;
        }
        // Bounded: done when every partition has a finished checkpoint,
        // whoever ran it (looked up now and then: it reads the storage).
        if source.bounded && last_finish_check.elapsed() >= Duration::from_secs(1) {
            last_finish_check = Instant::now();
            let mut done = true;
            for tp in &all {
                if owner.finished.contains(tp) {
                    continue;
                }
                match owner.shared.latest(&tp.0, tp.1) {
                    Ok(Some(c)) if c.finished => {
                        owner.finished.insert(tp.clone());
                    }
                    Ok(_) => done = false,
                    Err(e) => {
                        eprintln!("warning: {e}");
                        done = false;
                    }
                }
            }
            if done && owner.running.is_empty() {
                break;
            }
        }
        drop(owner);
        member.commit(&commits);
    }
    let held: Vec<TopicPartition> = member.owner().running.keys().cloned().collect();
    member.leave(&held);
    let (failure, summaries) = {
        let mut owner = member.owner();
        (owner.failure.take(), std::mem::take(&mut owner.summaries))
    };
    drop(member);
    match failure {
        Some(e) => Err(e),
        None => Ok(summaries),
    }
}

/// One summary for the partitions this process ran: counts added up (a
/// partition run twice, after a rebalance, counts twice), `wall_time` the
/// process's.
pub(crate) fn merge(summaries: &[(TopicPartition, RunSummary)], wall_time: Duration) -> RunSummary {
    fn add(into: &mut Vec<(String, u64)>, name: &str, n: u64) {
        match into.iter_mut().find(|(k, _)| k == name) {
            Some((_, total)) => *total += n,
            None => into.push((name.to_owned(), n)),
        }
    }
    let mut total = RunSummary {
        events_in: 0,
        outputs: Vec::new(),
        errors: Vec::new(),
        counters: Vec::new(),
        keys_in_state: 0,
        pending_event_timers: 0,
        discarded_processing_timers: 0,
        plugin_digest: String::new(),
        first_event_after: None,
        wall_time,
        checkpoints: None,
        stopped: false,
        captured: Vec::new(),
        final_state: Vec::new(),
    };
    let mut outputs: Vec<(String, u64)> = Vec::new();
    let mut routed = BTreeSet::new();
    for (_, s) in summaries {
        total.events_in += s.events_in;
        for (name, n, has_sink) in &s.outputs {
            add(&mut outputs, name, *n);
            if *has_sink {
                routed.insert(name.clone());
            }
        }
        for (kind, n) in &s.errors {
            add(&mut total.errors, kind, *n);
        }
        for (name, n) in &s.counters {
            add(&mut total.counters, name, *n);
        }
        total.keys_in_state += s.keys_in_state;
        total.pending_event_timers += s.pending_event_timers;
        total.discarded_processing_timers += s.discarded_processing_timers;
        total.plugin_digest.clone_from(&s.plugin_digest);
        total.stopped |= s.stopped;
    }
    total.outputs = outputs
        .into_iter()
        .map(|(name, n)| {
            let has_sink = routed.contains(&name);
            (name, n, has_sink)
        })
        .collect();
    total
}
