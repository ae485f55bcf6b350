//! One subtask: a plugin instance, the state and timers of its key groups,
//! and the loop that feeds it.
//!
//! The whole life of a subtask is `run`: receive a batch, route late events
//! to `late`, hand the rest to the plugin, advance the watermark, fire due
//! timers, flush outputs; fire processing-time timers when the wall clock
//! reaches them. A plugin failure never escapes as a panic: the item goes to
//! `dead-letter` (or the pipeline fails, by policy) and a trapped instance is
//! replaced by a fresh one before the next item.

use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use serde_json::json;

use super::coordinator::Ack;
use super::liveness::{Activity, Liveness, Step};
use super::migration::{self, Rewrite};
use super::outputs::{OutputRouter, RunMetrics, SinkGone};
use super::subtask_host::{BatchScope, SubtaskHost};
use super::timer_service::{FiredTimer, TimeDomain};
use super::{PipelineError, now_ms};
use crate::checkpoint::{self, PluginIdentity};
use crate::connectors::{Origin, OutputRecord, stable_key_hash};
use crate::engine::{CallError, EventBlock, Plugin, PluginInstance, Timer, bindings};
use crate::spec::{DEAD_LETTER_OUTPUT, LATE_OUTPUT, OnError};
use crate::state::{MapEntries, StateEntry, StateError};

/// What the source sends a subtask.
pub(crate) enum SubtaskInput {
    /// Events of this subtask's key groups (with each key group), then the
    /// watermark that holds after them.
    Batch {
        events: EventBlock,
        key_groups: Vec<u16>,
        /// Where each event came from (what its outputs are labelled with).
        origins: Vec<Origin>,
        watermark: i64,
    },
    /// Snapshot for checkpoint `id` into `dir`, then pass the barrier on to
    /// the sinks; with `stop`, then end (without draining).
    Barrier {
        id: u64,
        dir: Arc<PathBuf>,
        stop: bool,
    },
    /// Switch to another plugin (version or config) at this event boundary,
    /// keeping state and timers (migrated if the plugin's state version is
    /// newer). With a `decision` channel, two phases, so that either every
    /// subtask switches or none: prepare and report on `steps`, then wait for
    /// the decision. Without one (no migration, so nothing that can fail in
    /// one subtask and not another), switch as soon as prepared.
    Swap {
        plugin: Plugin<SubtaskHost>,
        config: Arc<str>,
        steps: Sender<SwapStep>,
        decision: Option<Receiver<SwapDecision>>,
    },
    /// Read the state of one key (for people: queryable state), between
    /// two batches, so the answer is the state after a whole batch.
    Query {
        key: Vec<u8>,
        key_group: u16,
        reply: Sender<Result<KeyStateView, String>>,
    },
    /// The bounded source is exhausted: the watermark goes to +∞, due timers
    /// fire, and the final checkpoint (if any) is taken.
    End {
        checkpoint: Option<(u64, Arc<PathBuf>)>,
    },
}

/// The state of one key, with the declared names of its states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyStateView {
    pub subtask: usize,
    pub key_group: u16,
    pub states: Vec<NamedState>,
    /// Whether states were left out to keep the view within its budget.
    pub truncated: bool,
}

/// The most state bytes one query answers with (`GET .../state/{key}`):
/// a key's map or list can be far larger than an HTTP answer should be.
pub const QUERY_VIEW_BYTES: usize = 4 << 20;

impl KeyStateView {
    /// This view cut to at most `budget` bytes of keys, values and items,
    /// in order; `truncated` says whether anything was left out.
    pub fn bounded(mut self, budget: usize) -> Self {
        let mut left = budget;
        let mut take = |len: usize| {
            let fits = len <= left;
            if fits {
                left -= len;
            }
            fits
        };
        let mut cut = false;
        // A value that does not fit is left out whole, not shown empty.
        self.states.retain_mut(|state| match state {
            NamedState::Value { value, .. } => {
                let fits = take(value.len());
                cut |= !fits;
                fits
            }
            NamedState::Map { entries, .. } => {
                let keep = entries
                    .iter()
                    .take_while(|(k, v)| take(k.len() + v.len()))
                    .count();
                cut |= keep < entries.len();
                entries.truncate(keep);
                true
            }
            NamedState::List { items, .. } => {
                let keep = items.iter().take_while(|i| take(i.len())).count();
                cut |= keep < items.len();
                items.truncate(keep);
                true
            }
        });
        self.truncated |= cut;
        self
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedState {
    Value { name: String, value: Vec<u8> },
    Map { name: String, entries: MapEntries },
    List { name: String, items: Vec<Vec<u8>> },
}

/// The most timers handed to the plugin in one call.
const TIMER_BATCH: usize = 1024;
/// The most due timers taken from a RocksDB timer store at once.
const TIMER_POP_LIMIT: usize = 64 * TIMER_BATCH;
/// Rounds of firing per watermark advance; a plugin that keeps registering
/// already-due timers from `on-timer` would otherwise never let go.
const MAX_TIMER_ROUNDS: usize = 10_000;

/// What a subtask leaves behind, for the summary.
#[derive(Debug, Default, Clone)]
pub struct SubtaskReport {
    pub keys_in_state: u64,
    pub pending_event_timers: u64,
    pub discarded_processing_timers: u64,
    /// Every key's state at the end, by key, if the run inspects.
    pub final_state: Vec<(Vec<u8>, KeyStateView)>,
}

/// The control's decision in a two-phase swap: switch or not, and where to
/// report. (A waiting subtask holds no sender of the first phase's steps,
/// so the control learns when a subtask that never prepared is gone.)
pub(crate) type SwapDecision = (bool, Sender<SwapStep>);

/// One subtask's part of a swap.
pub(crate) enum SwapStep {
    /// The new version is instantiated, its state migration staged and its
    /// `open` done (with the state version it brings), or why not.
    Prepared {
        subtask: usize,
        outcome: Result<u32, String>,
    },
    /// Switched, after pausing this long.
    Switched { pause: Duration },
    /// Told to abort: the old version runs on.
    Aborted,
}

/// A new version ready to take over: opened, its migration staged.
struct Prepared {
    instance: PluginInstance<SubtaskHost>,
    state_version: u32,
    rewrites: Vec<Rewrite>,
}

pub(crate) struct SubtaskConfig {
    pub(crate) memory_bytes: usize,
    pub(crate) call_timeout_ms: u64,
    pub(crate) on_error: OnError,
    /// Report the state of every key at the end (`RunOptions::inspect`).
    pub(crate) inspect: bool,
    /// Where each subtask says what it is doing (see `liveness`).
    pub(crate) liveness: Arc<Liveness>,
    /// The pipeline's slots in the engine's instance pool, held while any
    /// subtask lives.
    pub(crate) _instances: crate::engine::Reservation,
}

pub(crate) struct Subtask {
    index: usize,
    /// The config handed to `open` (it changes with a swap).
    plugin_config: Arc<str>,
    key_groups: RangeInclusive<u16>,
    /// Where checkpoint parts go; `None` when the pipeline keeps none.
    acks: Option<Sender<Ack>>,
    plugin: Plugin<SubtaskHost>,
    instance: Option<PluginInstance<SubtaskHost>>,
    config: Arc<SubtaskConfig>,
    router: OutputRouter,
    metrics: Arc<RunMetrics>,
    watermark: i64,
    /// The format the state is in (the running plugin's `state-version`).
    state_version: u32,
    /// What this subtask is doing, for the pipeline's watchdog.
    activity: Arc<Activity>,
}

impl Subtask {
    /// Instantiates the plugin, migrates restored state written in an older
    /// `restored_state_version`, and calls `open`; fails if the plugin refuses.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start(
        index: usize,
        plugin_config: Arc<str>,
        key_groups: RangeInclusive<u16>,
        plugin: Plugin<SubtaskHost>,
        host: SubtaskHost,
        config: Arc<SubtaskConfig>,
        router: OutputRouter,
        metrics: Arc<RunMetrics>,
        acks: Option<Sender<Ack>>,
        restored_state_version: Option<u32>,
    ) -> Result<Self, PipelineError> {
        let watermark = host.watermark;
        let activity = config.liveness.task(format!("subtask {index}"));
        let router = router.watched(config.liveness.clone(), activity.clone());
        let mut subtask = Self {
            index,
            plugin_config,
            key_groups,
            acks,
            plugin,
            instance: None,
            config,
            router,
            metrics,
            watermark,
            state_version: 0,
            activity,
        };
        match restored_state_version {
            None => {
                subtask.instantiate(host)?;
                subtask.state_version = subtask.instance().state_version().map_err(|trap| {
                    PipelineError::PluginOpen {
                        subtask: index,
                        reason: format!("state-version failed: {}", trap.message),
                    }
                })?;
            }
            Some(from) => {
                let (plugin, config) = (subtask.plugin.clone(), subtask.plugin_config.clone());
                let mut prepared =
                    subtask
                        .prepare(&plugin, &config, host, from)
                        .map_err(|failed| PipelineError::PluginOpen {
                            subtask: index,
                            reason: failed.0,
                        })?;
                let rewrites = std::mem::take(&mut prepared.rewrites);
                migration::apply(prepared.instance.host().backend.as_mut(), rewrites)?;
                subtask.instance = Some(prepared.instance);
                subtask.state_version = prepared.state_version;
            }
        }
        Ok(subtask)
    }

    /// The format the state is in.
    pub(crate) fn state_version(&self) -> u32 {
        self.state_version
    }

    fn instantiate(&mut self, host: SubtaskHost) -> Result<(), PipelineError> {
        let mut instance = PluginInstance::new(
            &self.plugin,
            host,
            self.config.memory_bytes,
            self.config.call_timeout_ms,
        )
        .map_err(|(e, _)| PipelineError::Engine(e))?;
        let open_error = match instance.open(&self.plugin_config) {
            Ok(Ok(())) => None,
            Ok(Err(reason)) => Some(reason),
            Err(trap) => Some(trap.message),
        };
        if let Some(reason) = open_error {
            return Err(PipelineError::PluginOpen {
                subtask: self.index,
                reason,
            });
        }
        self.instance = Some(instance);
        Ok(())
    }

    fn instance(&mut self) -> &mut PluginInstance<SubtaskHost> {
        self.instance
            .as_mut()
            .expect("a subtask always holds an instance between calls")
    }

    pub(crate) fn run(
        mut self,
        input: Receiver<SubtaskInput>,
    ) -> Result<SubtaskReport, PipelineError> {
        let span = tracing::info_span!("subtask", index = self.index);
        let _guard = span.enter();
        loop {
            self.activity.set(Step::Idle);
            let next_timer = self
                .instance()
                .host()
                .timers
                .next_timestamp(TimeDomain::ProcessingTime)?;
            let message = match next_timer {
                None => input.recv().ok(),
                Some(at) => {
                    let wait = Duration::from_millis(at.saturating_sub(now_ms()).max(0) as u64);
                    match input.recv_timeout(wait) {
                        Ok(message) => Some(message),
                        Err(RecvTimeoutError::Timeout) => {
                            self.fire_processing_timers()?;
                            continue;
                        }
                        Err(RecvTimeoutError::Disconnected) => None,
                    }
                }
            };
            match message {
                Some(SubtaskInput::Batch {
                    events,
                    key_groups,
                    origins,
                    watermark,
                }) => {
                    self.metrics.mark_first_event();
                    self.handle_events(events, key_groups, origins)?;
                    self.advance_watermark(watermark)?;
                    self.fire_processing_timers()?;
                }
                Some(SubtaskInput::Swap {
                    plugin,
                    config,
                    steps,
                    decision,
                }) => self.swap(plugin, config, steps, decision)?,
                Some(SubtaskInput::Query {
                    key,
                    key_group,
                    reply,
                }) => {
                    let view = self
                        .key_view(&key, key_group)
                        .map(|view| view.bounded(QUERY_VIEW_BYTES));
                    let _ = reply.send(view.map_err(|e| e.to_string()));
                }
                Some(SubtaskInput::Barrier { id, dir, stop }) => {
                    self.checkpoint(id, &dir)?;
                    if stop {
                        return self.finish();
                    }
                }
                Some(SubtaskInput::End { checkpoint }) => {
                    self.advance_watermark(i64::MAX)?;
                    if let Some((id, dir)) = checkpoint {
                        self.checkpoint(id, &dir)?;
                    }
                    return self.finish();
                }
                // The source stopped without `End`: it failed, and reports why.
                None => return self.finish(),
            }
        }
    }

    /// Moves state and timers (the host) into an instance of `plugin`,
    /// staging a migration if its state version is newer, and opens it; then
    /// reports and (in a two-phase swap) waits for the decision of the
    /// control: switch (applying the migration) or put the old version back. If preparing fails, the
    /// old version is put back around the same host at once: a failed swap
    /// changes nothing.
    fn swap(
        &mut self,
        plugin: Plugin<SubtaskHost>,
        config: Arc<str>,
        steps: Sender<SwapStep>,
        decision: Option<Receiver<SwapDecision>>,
    ) -> Result<(), PipelineError> {
        let started = std::time::Instant::now();
        self.activity.set(Step::Opening);
        let subtask = self.index;
        let host = self.instance.take().expect("instance present").into_host();
        let mut prepared = match self.prepare(&plugin, &config, host, self.state_version) {
            Ok(prepared) => prepared,
            Err(failed) => {
                let (reason, host) = *failed;
                // The old version opened with its config before; it does again.
                self.instantiate(host)?;
                let _ = steps.send(SwapStep::Prepared {
                    subtask,
                    outcome: Err(reason),
                });
                return Ok(());
            }
        };
        let _ = steps.send(SwapStep::Prepared {
            subtask,
            outcome: Ok(prepared.state_version),
        });
        let (commit, steps) = match decision {
            None => (true, steps),
            Some(decision) => {
                drop(steps);
                // Waiting for the control, which gives up (and drops the
                // channel) after its own timeout.
                self.activity.set(Step::Idle);
                // A control that went away decided nothing: keep the old version.
                match decision.recv() {
                    Ok(decided) => decided,
                    Err(_) => {
                        self.instantiate(prepared.instance.into_host())?;
                        return Ok(());
                    }
                }
            }
        };
        if commit {
            let rewrites = std::mem::take(&mut prepared.rewrites);
            migration::apply(prepared.instance.host().backend.as_mut(), rewrites)?;
            self.instance = Some(prepared.instance);
            self.plugin = plugin;
            self.plugin_config = config;
            self.state_version = prepared.state_version;
            let _ = steps.send(SwapStep::Switched {
                pause: started.elapsed(),
            });
        } else {
            self.instantiate(prepared.instance.into_host())?;
            let _ = steps.send(SwapStep::Aborted);
        }
        Ok(())
    }

    /// An instance of `plugin` around `host`, with the migration of state
    /// written in `state_version` staged (not applied) if the plugin's is
    /// newer, and opened; or why not (and the host back).
    fn prepare(
        &self,
        plugin: &Plugin<SubtaskHost>,
        config: &str,
        host: SubtaskHost,
        state_version: u32,
    ) -> Result<Prepared, Box<(String, SubtaskHost)>> {
        let mut instance = PluginInstance::new(
            plugin,
            host,
            self.config.memory_bytes,
            self.config.call_timeout_ms,
        )
        .map_err(|(e, host)| Box::new((e.to_string(), host)))?;
        let fail = |instance: PluginInstance<SubtaskHost>, why: String| {
            Box::new((why, instance.into_host()))
        };
        let version = match instance.state_version() {
            Ok(version) => version,
            Err(trap) => {
                return Err(fail(
                    instance,
                    format!("state-version failed: {}", trap.message),
                ));
            }
        };
        let rewrites = match migration::needed(state_version, version) {
            Ok(false) => Vec::new(),
            Ok(true) => match migration::prepare(&mut instance, state_version) {
                Ok(rewrites) => rewrites,
                Err(why) => return Err(fail(instance, why)),
            },
            Err(why) => return Err(fail(instance, why)),
        };
        let refused = match instance.open(config) {
            Ok(Ok(())) => {
                return Ok(Prepared {
                    instance,
                    state_version: version,
                    rewrites,
                });
            }
            Ok(Err(reason)) => reason,
            Err(trap) => trap.message,
        };
        Err(fail(instance, format!("open failed: {refused}")))
    }

    fn key_view(&mut self, key: &[u8], key_group: u16) -> Result<KeyStateView, StateError> {
        self.activity.set(Step::Query);
        let index = self.index;
        let host = self.instance().host();
        let state = host.backend.key_state(key_group, key)?;
        let name = |id| host.catalog.name(id).to_owned();
        let mut states: Vec<NamedState> = Vec::new();
        states.extend(
            state
                .values
                .into_iter()
                .map(|(id, value)| NamedState::Value {
                    name: name(id),
                    value,
                }),
        );
        states.extend(state.maps.into_iter().map(|(id, entries)| NamedState::Map {
            name: name(id),
            entries,
        }));
        states.extend(state.lists.into_iter().map(|(id, items)| NamedState::List {
            name: name(id),
            items,
        }));
        Ok(KeyStateView {
            subtask: index,
            key_group,
            states,
            truncated: false,
        })
    }

    /// Writes this subtask's part of checkpoint `id` and passes the barrier
    /// on. A snapshot that fails fails the checkpoint, not the pipeline.
    fn checkpoint(&mut self, id: u64, dir: &std::path::Path) -> Result<(), PipelineError> {
        let Some(acks) = self.acks.clone() else {
            return Ok(());
        };
        self.activity.set(Step::Snapshot);
        let index = self.index;
        let key_groups = self.key_groups.clone();
        let host = self.instance().host();
        let result = checkpoint::write_subtask(
            dir,
            index,
            key_groups,
            host.backend.as_mut(),
            &host.catalog,
            &mut host.timers,
        )
        .map_err(|e| e.to_string());
        if let Err(e) = &result {
            tracing::error!(checkpoint = id, "snapshot failed: {e}");
        }
        let plugin = PluginIdentity {
            digest: self.plugin.digest().to_owned(),
            config: serde_json::from_str(&self.plugin_config).unwrap_or_default(),
            state_version: self.state_version,
        };
        let _ = acks.send(Ack::Subtask {
            id,
            index,
            result,
            plugin,
        });
        self.router.barrier(id).map_err(sink_gone)
    }

    fn finish(&mut self) -> Result<SubtaskReport, PipelineError> {
        let final_state = if self.config.inspect {
            self.every_key_state()?
        } else {
            Vec::new()
        };
        let host = self.instance.as_mut().expect("instance present").host();
        self.metrics.add_counters(&mut host.counters);
        Ok(SubtaskReport {
            keys_in_state: host.backend.key_count(),
            pending_event_timers: host.timers.len(TimeDomain::EventTime) as u64,
            discarded_processing_timers: host.timers.len(TimeDomain::ProcessingTime) as u64,
            final_state,
        })
    }

    /// The state of every key this subtask holds, ordered by key.
    fn every_key_state(&mut self) -> Result<Vec<(Vec<u8>, KeyStateView)>, PipelineError> {
        let mut keys = std::collections::BTreeSet::new();
        let host = self.instance().host();
        host.backend.export(&mut |entry| {
            let (StateEntry::Value { kg, key, .. }
            | StateEntry::MapEntry { kg, key, .. }
            | StateEntry::List { kg, key, .. }) = entry;
            keys.insert((key, kg));
            Ok(())
        })?;
        keys.into_iter()
            .map(|(key, kg)| Ok((key.clone(), self.key_view(&key, kg)?)))
            .collect()
    }

    fn handle_events(
        &mut self,
        events: EventBlock,
        key_groups: Vec<u16>,
        origins: Vec<Origin>,
    ) -> Result<(), PipelineError> {
        let watermark = self.watermark;
        let late: Vec<usize> = (0..)
            .zip(events.iter())
            .filter(|(_, e)| e.timestamp.is_some_and(|ts| ts <= watermark))
            .map(|(i, _)| i)
            .collect();
        let (events, key_groups, origins) = if late.is_empty() {
            (events, key_groups, origins)
        } else {
            self.divert_late(&late, events, key_groups, origins)?
        };
        if events.is_empty() {
            return Ok(());
        }
        self.instance().host().watermark = watermark;
        self.run_batch(Items {
            batch: Batch::Events(&events),
            key_groups: &key_groups,
            origins: &origins,
        })
    }

    /// Events at or behind the watermark are late: they go to `late`,
    /// unchanged, instead of the plugin. Returns the others.
    fn divert_late(
        &mut self,
        late: &[usize],
        events: EventBlock,
        key_groups: Vec<u16>,
        origins: Vec<Origin>,
    ) -> Result<(EventBlock, Vec<u16>, Vec<Origin>), PipelineError> {
        let mut next = late.iter().peekable();
        let records = (0..)
            .zip(events.iter().zip(&origins))
            .filter(|(i, _)| next.next_if_eq(&i).is_some())
            .map(|(_, (e, &origin))| OutputRecord {
                key: e.key.map(<[u8]>::to_vec),
                value: e.value.to_vec(),
                timestamp: e.timestamp,
                origin,
            })
            .collect();
        self.send(LATE_OUTPUT, records)?;
        let on_time = |i: &usize| late.binary_search(i).is_err();
        Ok((
            events.select(|i| on_time(&i)),
            (0..key_groups.len())
                .filter(on_time)
                .map(|i| key_groups[i])
                .collect(),
            (0..origins.len())
                .filter(on_time)
                .map(|i| origins[i])
                .collect(),
        ))
    }

    fn advance_watermark(&mut self, watermark: i64) -> Result<(), PipelineError> {
        if watermark <= self.watermark {
            return Ok(());
        }
        self.watermark = watermark;
        self.instance().host().watermark = watermark;
        self.fire_timers(TimeDomain::EventTime, watermark)
    }

    fn fire_processing_timers(&mut self) -> Result<(), PipelineError> {
        let now = now_ms();
        let due = self
            .instance()
            .host()
            .timers
            .next_timestamp(TimeDomain::ProcessingTime)?
            .is_some_and(|ts| ts <= now);
        if due {
            self.fire_timers(TimeDomain::ProcessingTime, now)?;
        }
        Ok(())
    }

    fn fire_timers(&mut self, domain: TimeDomain, up_to: i64) -> Result<(), PipelineError> {
        let mut fired: Vec<FiredTimer> = Vec::new();
        let mut rounds = 0;
        while rounds < MAX_TIMER_ROUNDS {
            fired.clear();
            let n = self.instance().host().timers.pop_due(
                domain,
                up_to,
                TIMER_POP_LIMIT,
                &mut fired,
            )?;
            if n == 0 {
                return Ok(());
            }
            // A short pop drained what was due: the next one only finds
            // timers registered while firing. A full one is the same round.
            if n < TIMER_POP_LIMIT {
                rounds += 1;
            }
            let wit_domain = match domain {
                TimeDomain::EventTime => bindings::TimeDomain::EventTime,
                TimeDomain::ProcessingTime => bindings::TimeDomain::ProcessingTime,
            };
            let mut fired = fired.drain(..).peekable();
            while fired.peek().is_some() {
                let mut timers = Vec::with_capacity(TIMER_BATCH);
                let mut key_groups = Vec::with_capacity(TIMER_BATCH);
                let mut origins = Vec::with_capacity(TIMER_BATCH);
                for t in fired.by_ref().take(TIMER_BATCH) {
                    key_groups.push(t.key_group);
                    origins.push(Origin::Timer {
                        event_time: domain == TimeDomain::EventTime,
                        timestamp: t.timestamp,
                        key_hash: stable_key_hash(&t.key),
                        index: 0,
                    });
                    timers.push(Timer {
                        key: t.key,
                        timestamp: t.timestamp,
                        domain: wit_domain,
                    });
                }
                self.run_batch(Items {
                    batch: Batch::Timers(&timers),
                    key_groups: &key_groups,
                    origins: &origins,
                })?;
            }
        }
        tracing::warn!(
            "timers keep becoming due while firing; {} rounds reached, the rest waits for the next watermark",
            MAX_TIMER_ROUNDS
        );
        Ok(())
    }

    /// Hands a batch to the plugin and applies what it changed. If the call
    /// traps (or hits a limit), nothing of it was applied: the batch is
    /// replayed one item at a time on fresh instances, so the items that
    /// work take effect exactly once and each failing one is dead-lettered
    /// (or fails the pipeline). The sandbox gives a plugin no clock and no
    /// entropy of its own, so a replayed item does what it did the first time.
    fn run_batch(&mut self, items: Items<'_>) -> Result<(), PipelineError> {
        let len = items.key_groups.len();
        match self.call_and_apply(&items, 0..len)? {
            Ok(()) => return Ok(()),
            Err(error) if len == 1 => {
                self.replace_instance()?;
                return self.item_failed(&items, 0, error.kind.as_str(), &error.message);
            }
            Err(_) => self.replace_instance()?,
        }
        for i in 0..len {
            if let Err(error) = self.call_and_apply(&items, i..i + 1)? {
                self.replace_instance()?;
                self.item_failed(&items, i, error.kind.as_str(), &error.message)?;
            }
        }
        Ok(())
    }

    /// One plugin call on `items`: `Ok(Err(_))` if it trapped (nothing applied).
    fn call_and_apply(
        &mut self,
        given: &Items<'_>,
        items: std::ops::Range<usize>,
    ) -> Result<Result<(), CallError>, PipelineError> {
        let start = items.start;
        let called = items.len();
        let host = self.instance().host();
        prepare_scope(&mut host.scope, given, items.clone());
        host.last_error_log = None;
        // Each call is a step of its own: the watchdog measures one call.
        self.activity.set(Step::Plugin);
        let instance = self.instance();
        let began = std::time::Instant::now();
        let result = match given.batch {
            Batch::Events(events) if called == events.len() => instance.process(events),
            // A replay, one item at a time.
            Batch::Events(events) => instance.process(&events.select(|i| items.contains(&i))),
            Batch::Timers(timers) => instance.on_timer(&timers[items]),
        };
        self.metrics.call_latency.record(began.elapsed());
        let batch = match result {
            Ok(batch) => batch,
            Err(mut error) => {
                let host = self.instance().host();
                host.scope.clear();
                if let Some(logged) = host.last_error_log.take() {
                    error.message = format!("{}; the plugin logged: {logged}", error.message);
                }
                return Ok(Err(error));
            }
        };
        // Apply in order; a change the host cannot apply rejects its item
        // (the item's later changes are skipped, earlier ones stand).
        let host = self.instance().host();
        let mut invalid: Vec<(u32, String)> = Vec::new();
        let mut strays = 0;
        for change in batch.iter() {
            let item = change.item;
            // A change for an item the plugin was not given cannot be
            // attributed to an input: a plugin bug, counted and skipped.
            if item as usize >= called {
                strays += 1;
                continue;
            }
            if invalid.iter().any(|(failed, _)| *failed == item) {
                continue;
            }
            if let Err(e) = host.apply(change) {
                invalid.push((item, e.to_string()));
            }
        }
        host.scope.clear();
        self.flush()?;
        if strays > 0 {
            self.metrics.add_error("bad-item-index");
            tracing::warn!("the plugin returned {strays} changes for items it was not given");
        }
        for (item, reason) in invalid {
            self.item_failed(given, start + item as usize, "invalid-change", &reason)?;
        }
        for failure in batch.failures() {
            let index = start + failure.item as usize;
            if failure.item as usize >= called {
                // A plugin bug, not an input problem: say so and go on.
                self.metrics.add_error("bad-item-index");
                tracing::warn!(
                    "the plugin reported a failure for item {} it was not given: {}",
                    failure.item,
                    failure.reason
                );
                continue;
            }
            self.item_failed(given, index, "rejected", &failure.reason)?;
        }
        Ok(Ok(()))
    }

    /// One item failed: count it, then dead-letter it or fail the pipeline.
    fn item_failed(
        &mut self,
        batch: &Items<'_>,
        index: usize,
        kind: &str,
        reason: &str,
    ) -> Result<(), PipelineError> {
        let Items { batch, origins, .. } = *batch;
        // The dead letter is the item's output after whatever it emitted.
        let origin = origins
            .get(index)
            .copied()
            .unwrap_or_default()
            .nth(u32::MAX);
        self.metrics.add_error(kind);
        if self.config.on_error == OnError::Fail {
            return Err(PipelineError::PluginFailed {
                subtask: self.index,
                kind: kind.to_owned(),
                reason: reason.to_owned(),
            });
        }
        let record = match batch {
            Batch::Events(events) => {
                let e = events.get(index).expect("a failed item is in its batch");
                OutputRecord {
                    key: e.key.map(<[u8]>::to_vec),
                    value: json!({
                        "error": kind,
                        "reason": reason,
                        "key": e.key.map(String::from_utf8_lossy),
                        "timestamp": e.timestamp,
                        "value": String::from_utf8_lossy(e.value),
                    })
                    .to_string()
                    .into_bytes(),
                    timestamp: e.timestamp,
                    origin,
                }
            }
            Batch::Timers(timers) => {
                let t = &timers[index];
                OutputRecord {
                    key: Some(t.key.clone()),
                    value: json!({
                        "error": kind,
                        "reason": reason,
                        "key": String::from_utf8_lossy(&t.key),
                        "timer": t.timestamp,
                        "domain": match t.domain {
                            bindings::TimeDomain::EventTime => "event-time",
                            bindings::TimeDomain::ProcessingTime => "processing-time",
                        },
                    })
                    .to_string()
                    .into_bytes(),
                    timestamp: Some(t.timestamp),
                    origin,
                }
            }
        };
        self.send(DEAD_LETTER_OUTPUT, vec![record])
    }

    /// Swaps a trapped instance for a fresh one around the same host (state
    /// and timers are the host's, so nothing is lost).
    fn replace_instance(&mut self) -> Result<(), PipelineError> {
        let host = self.instance.take().expect("instance present").into_host();
        tracing::debug!("replacing a trapped plugin instance");
        self.instantiate(host)
    }

    fn flush(&mut self) -> Result<(), PipelineError> {
        let router = &self.router;
        let metrics = &self.metrics;
        let host = self.instance.as_mut().expect("instance present").host();
        host.outputs.flush(router, metrics).map_err(sink_gone)
    }

    fn send(&self, output: &str, records: Vec<OutputRecord>) -> Result<(), PipelineError> {
        self.router
            .send(&self.metrics, output, records)
            .map_err(sink_gone)
    }
}

fn sink_gone(_: SinkGone) -> PipelineError {
    PipelineError::SinkClosed
}

/// The items of one plugin call: events or timers, with their key groups
/// and origins.
#[derive(Clone, Copy)]
struct Items<'a> {
    batch: Batch<'a>,
    key_groups: &'a [u16],
    origins: &'a [Origin],
}

/// Which export a batch goes to, with its items.
#[derive(Clone, Copy)]
enum Batch<'a> {
    Events(&'a EventBlock),
    Timers(&'a [Timer]),
}

fn prepare_scope(scope: &mut BatchScope, items: &Items<'_>, range: std::ops::Range<usize>) {
    scope.clear();
    let origin = |i: usize| items.origins.get(i).copied().unwrap_or_default();
    let key_groups = &items.key_groups[range.clone()];
    match items.batch {
        Batch::Events(events) => {
            let events = events.iter().skip(range.start).take(range.len());
            for ((i, e), &kg) in range.clone().zip(events).zip(key_groups) {
                scope.push(kg, e.key.unwrap_or_default(), e.timestamp, origin(i));
            }
        }
        Batch::Timers(timers) => {
            for ((i, t), &kg) in range.clone().zip(&timers[range]).zip(key_groups) {
                scope.push(kg, &t.key, Some(t.timestamp), origin(i));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(states: Vec<NamedState>) -> KeyStateView {
        KeyStateView {
            subtask: 0,
            key_group: 0,
            states,
            truncated: false,
        }
    }

    #[test]
    fn a_query_view_within_its_budget_is_whole_and_not_marked() {
        let whole = view(vec![
            NamedState::Value {
                name: "v".into(),
                value: vec![1; 10],
            },
            NamedState::List {
                name: "l".into(),
                items: vec![vec![2; 10]; 3],
            },
        ]);
        assert_eq!(whole.clone().bounded(40), whole);
    }

    #[test]
    fn a_query_view_over_its_budget_is_cut_in_order_and_says_so() {
        let cut = view(vec![
            NamedState::Map {
                name: "m".into(),
                entries: vec![(vec![0; 4], vec![1; 6]); 5],
            },
            NamedState::Value {
                name: "big".into(),
                value: vec![9; 100],
            },
            NamedState::List {
                name: "l".into(),
                items: vec![vec![2; 10]; 3],
            },
        ])
        .bounded(45);
        assert!(cut.truncated);
        assert_eq!(
            cut.states,
            vec![
                NamedState::Map {
                    name: "m".into(),
                    entries: vec![(vec![0; 4], vec![1; 6]); 4],
                },
                NamedState::List {
                    name: "l".into(),
                    items: Vec::new(),
                },
            ],
            "the map keeps what fits (4 × 10 bytes), the 100-byte value is left out whole, the list gets nothing past the budget"
        );
    }
}
