//! The pipelines of one server: what is persisted of each, its current run,
//! and the lifecycle commands the routes give (create, start, stop, swap,
//! delete, checkpoint, savepoint, query).
//!
//! Under `<data-dir>/pipelines/<name>/`, `pipeline.json` holds the effective
//! spec (defaults filled, the plugin it runs now) and whether the user wants
//! it running; a restarted server starts every pipeline that should run,
//! from its latest checkpoint. Each run is a `runtime::Pipeline` on its own
//! thread; this module only talks to it through `PipelineControl`. Blocking
//! calls here are meant for `spawn_blocking`, never the async executor.
//!
//! A spec sent over HTTP names no server directory: state and checkpoints
//! go to `<data-dir>/state/<name>` and `<data-dir>/checkpoints/<name>`, the
//! only directories (with `pipelines/<name>`) a delete removes; its file
//! paths resolve under the server's `PathPolicy` (see `paths`), and no two
//! pipelines' sinks (or a sink and a source) resolve to one file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::error::{ApiError, ApiResult};
use super::ingest_body::{INGEST_PATIENCE, json_lines};
use super::paths::{Access, FileClaims, PathError, PathPolicy};
use super::registry::{PluginInfo, Registry, RegistryError};
use super::state_view;
use super::supervise::{RateMeter, trim_ingest_log};
use crate::checkpoint::{self, CheckpointStore, SnapshotKind};
use crate::connectors::IngestLog;
use crate::engine::Engine;
use crate::runtime::{
    ControlError, LiveStatus, Pipeline, PipelineControl, RunOptions, SwapError, now_ms,
};
use crate::spec::{KafkaPropertyPolicy, PipelineSpec, SinkSpec, SourceSpec};

/// Checkpoints of a pipeline created over HTTP: at most this often...
pub const MIN_SERVE_CHECKPOINT_INTERVAL_MS: u64 = 100;
/// ...and at most this many kept (each holds a copy or hard links of the
/// whole state).
pub const MAX_SERVE_CHECKPOINT_RETAIN: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Desired {
    Running,
    Stopped,
}

/// What survives a restart of the server.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    spec: Value,
    desired: Desired,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum RunState {
    /// Wanted running at the server's start, and not started yet: the
    /// server answers while its pipelines resume in the background.
    Resuming,
    Running,
    Stopped,
    Finished,
    Failed(String),
}

struct Run {
    state: RunState,
    control: Option<PipelineControl>,
    /// The figures of the current (or last) run.
    live: Option<Arc<LiveStatus>>,
    thread: Option<JoinHandle<()>>,
    started: Option<Instant>,
    /// What the current (or last) run started from, and the unusable
    /// checkpoints it skipped to get there (status `resumed_from`).
    resumed_from: Option<Value>,
}

struct Managed {
    name: String,
    dir: PathBuf,
    record: Mutex<Record>,
    run: Mutex<Run>,
    ingest: Option<Arc<IngestLog>>,
    /// One lifecycle command at a time per pipeline (a stop does not race a
    /// start or a swap).
    lifecycle: Mutex<()>,
    /// Events per second over the last second or so, as f64 bits.
    rate: AtomicU64,
    /// What `GET .../checkpoints` shows of each retained checkpoint, read
    /// from its manifest once.
    listed: Mutex<BTreeMap<u64, Value>>,
}

pub struct Pipelines {
    engine: Engine,
    data_dir: PathBuf,
    /// Where API clients' paths may resolve.
    policy: PathPolicy,
    pub registry: Registry,
    entries: Mutex<BTreeMap<String, Arc<Managed>>>,
    /// Digests a swap in progress is moving to: in use, not deletable.
    swapping: Mutex<Vec<String>>,
    /// Which Kafka client properties a spec may set (checked at every
    /// start, so a narrower list at restart applies to stored specs too).
    kafka: KafkaPropertyPolicy,
    /// Set by `shutdown`: no pipeline resumes any more.
    shutting_down: AtomicBool,
}

/// How long a lifecycle command waits for the one before it on the same
/// pipeline (a start restoring much state, a stop waiting for its
/// pipeline) before it is answered 409.
const LIFECYCLE_PATIENCE: Duration = Duration::from_secs(10);
/// How long a run that was aborted may take to end (its own joins are
/// bounded by a shorter grace).
const ABORTED_RUN_GRACE: Duration = Duration::from_secs(5);

/// Marks a digest as the target of a swap while alive.
struct InUse<'a> {
    set: &'a Mutex<Vec<String>>,
    digest: String,
}

impl<'a> InUse<'a> {
    fn mark(set: &'a Mutex<Vec<String>>, digest: &str) -> Self {
        set.lock().expect("lock").push(digest.to_owned());
        Self {
            set,
            digest: digest.to_owned(),
        }
    }
}

impl Drop for InUse<'_> {
    fn drop(&mut self) {
        let mut set = self.set.lock().expect("lock");
        if let Some(i) = set.iter().position(|d| *d == self.digest) {
            set.swap_remove(i);
        }
    }
}

impl Pipelines {
    /// Opens the data dir; the pipelines that were running are marked
    /// `resuming`, for `resume` to start once the server listens.
    pub fn open(
        engine: Engine,
        data_dir: &Path,
        policy: PathPolicy,
        kafka: KafkaPropertyPolicy,
    ) -> anyhow::Result<Arc<Self>> {
        let registry = Registry::open(&data_dir.join("plugins"))?;
        let this = Arc::new(Self {
            engine,
            data_dir: data_dir.to_owned(),
            policy,
            registry,
            entries: Mutex::new(BTreeMap::new()),
            swapping: Mutex::new(Vec::new()),
            shutting_down: AtomicBool::new(false),
            kafka,
        });
        let root = data_dir.join("pipelines");
        std::fs::create_dir_all(&root)?;
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("pipeline.json").exists())
            .collect();
        dirs.sort();
        for dir in dirs {
            let loaded = std::fs::read(dir.join("pipeline.json"))
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Record>(&b).map_err(|e| e.to_string()));
            let record = match loaded {
                Ok(record) => record,
                Err(e) => {
                    tracing::error!(dir = %dir.display(), "skipping a pipeline whose record is unreadable: {e}");
                    continue;
                }
            };
            let spec = match parse_spec(&record.spec) {
                Ok(spec) => spec,
                Err(e) => {
                    tracing::error!(dir = %dir.display(), "skipping a pipeline whose spec no longer validates: {e}");
                    continue;
                }
            };
            let managed = match this.manage(&spec, record) {
                Ok(m) => m,
                Err(e) => {
                    tracing::error!(pipeline = spec.name, "cannot load: {e}");
                    continue;
                }
            };
            let wanted = managed.record.lock().expect("lock").desired == Desired::Running;
            this.entries
                .lock()
                .expect("lock")
                .insert(spec.name.clone(), managed.clone());
            if wanted {
                managed.run.lock().expect("lock").state = RunState::Resuming;
            }
        }
        Ok(this)
    }

    /// Starts every pipeline that was running when the server stopped, one
    /// after the other; meant for a thread of its own, after the server
    /// listens (a pipeline that is slow to start, or never starts, must not
    /// keep the API from answering). A pipeline deleted or stopped while it
    /// waited is not started.
    pub fn resume(&self) {
        for managed in self.all() {
            if self.shutting_down.load(Ordering::SeqCst) {
                return;
            }
            let Ok(_one_at_a_time) = self.lock_lifecycle(&managed) else {
                continue;
            };
            let wanted = managed.record.lock().expect("lock").desired == Desired::Running;
            if !wanted || managed.run.lock().expect("lock").state != RunState::Resuming {
                continue;
            }
            tracing::info!(pipeline = managed.name, "resuming");
            if let Err(e) = self.start_run(&managed, None) {
                tracing::error!(pipeline = managed.name, "cannot resume: {e}");
                managed.run.lock().expect("lock").state = RunState::Failed(e.to_string());
            }
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    fn manage(&self, spec: &PipelineSpec, record: Record) -> ApiResult<Arc<Managed>> {
        let dir = self.data_dir.join("pipelines").join(&spec.name);
        let ingest = match spec.source {
            SourceSpec::Http { max_pending_bytes } => Some(
                IngestLog::open(&dir.join("ingest"), max_pending_bytes)
                    .map_err(|e| ApiError::Internal(e.to_string()))?,
            ),
            _ => None,
        };
        Ok(Arc::new(Managed {
            name: spec.name.clone(),
            dir,
            record: Mutex::new(record),
            run: Mutex::new(Run {
                state: RunState::Stopped,
                control: None,
                live: None,
                thread: None,
                started: None,
                resumed_from: None,
            }),
            ingest,
            lifecycle: Mutex::new(()),
            rate: AtomicU64::new(0),
            listed: Mutex::new(BTreeMap::new()),
        }))
    }

    /// Every pipeline, by name (a copy: no lock is held while they are used).
    fn all(&self) -> Vec<Arc<Managed>> {
        self.entries
            .lock()
            .expect("lock")
            .values()
            .cloned()
            .collect()
    }

    fn get(&self, name: &str) -> ApiResult<Arc<Managed>> {
        self.entries
            .lock()
            .expect("lock")
            .get(name)
            .cloned()
            .ok_or_else(|| ApiError::NotFound(format!("no pipeline named {name:?}")))
    }

    /// Creates a pipeline from a JSON spec and starts it.
    pub fn create(&self, body: &[u8]) -> ApiResult<Value> {
        let raw: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::BadRequest(format!("the spec is not valid JSON: {e}")))?;
        let mut effective = self.with_serve_defaults(raw)?;
        let spec = parse_spec(&effective)?;
        check_serve_bounds(&spec)?;
        // The record keeps the resolved paths: what was checked is what
        // runs, and what other pipelines are checked against.
        self.confine(&mut effective, &spec)?;
        let spec = parse_spec(&effective)?;
        let digest = spec
            .plugin
            .digest
            .clone()
            .expect("checked by with_serve_defaults");
        if self.registry.get(&digest).is_none() {
            return Err(ApiError::NotFound(format!(
                "plugin.digest: no plugin {digest} in the registry; upload it first (POST /v1/plugins)"
            )));
        }
        let record = Record {
            spec: effective,
            desired: Desired::Running,
        };
        // Reserve the name before anything touches the file system, and
        // hold the new pipeline's lifecycle lock until it runs (a start or
        // delete of the same name waits).
        let managed = {
            let mut entries = self.entries.lock().expect("lock");
            if entries.contains_key(&spec.name) {
                return Err(ApiError::Conflict(format!(
                    "a pipeline named {:?} exists (or is being deleted); delete it first or choose another name",
                    spec.name
                )));
            }
            let managed = self.manage(&spec, record.clone())?;
            entries.insert(spec.name.clone(), managed.clone());
            managed
        };
        let _one_at_a_time = managed.lifecycle.lock().expect("lock");
        let undo = |e: ApiError| {
            self.entries.lock().expect("lock").remove(&spec.name);
            let _ = std::fs::remove_dir_all(&managed.dir);
            e
        };
        // Checkpoints left by something else of this name are neither
        // resumed nor deleted.
        if let Some(c) = &spec.checkpoint {
            let store = CheckpointStore::new(&c.dir, &spec.name);
            if !store.ids().is_empty() {
                return Err(undo(ApiError::Conflict(format!(
                    "{} holds checkpoints this server did not make for {:?}; remove them or choose another name",
                    store.root().display(),
                    spec.name
                ))));
            }
        }
        persist(&managed.dir, &record).map_err(undo)?;
        // A pipeline that cannot start is not created.
        self.start_run(&managed, None).map_err(undo)?;
        Ok(self.status_of(&managed))
    }

    /// The JSON spec as `weir serve` runs it: RocksDB state, checkpoints on,
    /// both under the data dir unless the spec says otherwise; the plugin
    /// named by digest.
    fn with_serve_defaults(&self, mut spec: Value) -> ApiResult<Value> {
        let Some(object) = spec.as_object_mut() else {
            return Err(ApiError::BadRequest(
                "the spec must be a JSON object".into(),
            ));
        };
        // serde also reads a struct from a JSON array, which would pass
        // every check below unseen.
        for section in ["source", "plugin", "state", "checkpoint"] {
            if object
                .get(section)
                .is_some_and(|v| !(v.is_object() || section == "checkpoint" && v.is_null()))
            {
                return Err(ApiError::BadRequest(format!(
                    "{section}: must be a JSON object"
                )));
            }
        }
        if let Some(sinks) = object.get("sink").and_then(Value::as_array)
            && let Some(i) = sinks.iter().position(|s| !s.is_object())
        {
            return Err(ApiError::BadRequest(format!(
                "sink[{i}]: must be a JSON object"
            )));
        }
        if let Some(plugin) = object.get("plugin").and_then(Value::as_object) {
            if plugin.contains_key("wasm") || plugin.contains_key("crate") {
                return Err(ApiError::BadRequest(
                    "plugin: under weir serve a plugin is named by `digest`; upload the component \
                     (POST /v1/plugins) and set plugin.digest"
                        .into(),
                ));
            }
            if !plugin.contains_key("digest") {
                return Err(ApiError::BadRequest(
                    "plugin.digest: missing; name an uploaded component by its sha256".into(),
                ));
            }
        }
        let dir = |sub: &str| Value::String(self.data_dir.join(sub).display().to_string());
        let state = object.entry("state").or_insert_with(|| json!({}));
        if let Some(state) = state.as_object_mut() {
            state.entry("backend").or_insert_with(|| json!("rocksdb"));
            self.server_dir("state", state.get("dir"))?;
            state.insert("dir".into(), dir("state"));
        }
        let checkpoint = object.entry("checkpoint").or_insert_with(|| json!({}));
        if checkpoint.is_null() {
            *checkpoint = json!({});
        }
        if let Some(checkpoint) = checkpoint.as_object_mut() {
            self.server_dir("checkpoint", checkpoint.get("dir"))?;
            checkpoint.insert("dir".into(), dir("checkpoints"));
        }
        Ok(spec)
    }

    /// `<section>.dir` of a spec sent over HTTP: the server chooses it (a
    /// delete removes `<dir>/<name>`), so anything but its own choice is
    /// refused rather than silently replaced.
    fn server_dir(&self, section: &str, given: Option<&Value>) -> ApiResult<()> {
        let default = self.data_dir.join(match section {
            "state" => "state",
            _ => "checkpoints",
        });
        match given {
            None | Some(Value::Null) => Ok(()),
            Some(Value::String(s)) if same_dir(Path::new(s), &default) => Ok(()),
            Some(other) => Err(ApiError::BadRequest(format!(
                "{section}.dir: under weir serve the server chooses this directory ({}); \
                 remove the field (got {other})",
                default.display()
            ))),
        }
    }

    /// Resolves the file paths `spec` names under the path policy, and
    /// writes the resolved ones into `effective`: the files it claims.
    fn confine(&self, effective: &mut Value, spec: &PipelineSpec) -> ApiResult<FileClaims> {
        let mut claims = FileClaims::default();
        if let SourceSpec::File { path, .. } = &spec.source {
            let resolved = self.resolve("source.path", path, Access::ReadFile)?;
            effective["source"]["path"] = path_json("source.path", &resolved)?;
            claims.source = Some(resolved);
        }
        for (i, sink) in spec.sinks.iter().enumerate() {
            if let SinkSpec::File { path, .. } = sink {
                let field = format!("sink[{i}].path");
                let resolved = self.resolve(&field, path, Access::WriteFile)?;
                effective["sink"][i]["path"] = path_json(&field, &resolved)?;
                claims.sinks.push((field, resolved));
            }
        }
        if let Some(from) = &spec.restore_from {
            let resolved = self.resolve("restore_from", from, Access::ReadSnapshot)?;
            effective["restore_from"] = path_json("restore_from", &resolved)?;
        }
        match claims.own_clash() {
            Some(clash) => Err(ApiError::BadRequest(clash)),
            None => Ok(claims),
        }
    }

    fn resolve(&self, field: &str, path: &Path, access: Access) -> ApiResult<PathBuf> {
        self.policy
            .resolve(field, path, access)
            .map_err(|e: PathError| ApiError::BadRequest(e.to_string()))
    }

    /// Refuses `claims` if one of its sinks would write a file another
    /// pipeline (running or not) writes or reads. Every pipeline is
    /// registered before it checks, so of two that clash the later one to
    /// check always sees the other.
    fn check_clashes(&self, name: &str, claims: &FileClaims) -> ApiResult<()> {
        for other in self.all().iter().filter(|m| m.name != name) {
            let spec = other.record.lock().expect("lock").spec.clone();
            let Ok(theirs) = parse_spec(&spec).map(|s| claims_of(&s)) else {
                continue;
            };
            if let Some(clash) = claims.clash_with(&other.name, &theirs) {
                return Err(ApiError::Conflict(clash));
            }
        }
        Ok(())
    }

    /// The directories this server made for pipeline `name`: all a delete
    /// removes.
    fn owned_dirs(&self, name: &str) -> [PathBuf; 3] {
        [
            self.data_dir.join("state").join(name),
            self.data_dir.join("checkpoints").join(name),
            self.data_dir.join("pipelines").join(name),
        ]
    }

    /// Starts a run of `managed` from `from` (a savepoint), else from its
    /// latest checkpoint that verifies, else (it never completed one) from
    /// the start. Checkpoints that exist but cannot be restored fail the
    /// start (see `checkpoint::resume_point`).
    fn start_run(&self, managed: &Arc<Managed>, from: Option<&Path>) -> ApiResult<()> {
        self.start_run_with(managed, from, false)
    }

    /// `start_run`, or with `from_scratch` (the user asked) a run that
    /// forgets the pipeline's checkpoints and rewrites its output.
    fn start_run_with(
        &self,
        managed: &Arc<Managed>,
        from: Option<&Path>,
        from_scratch: bool,
    ) -> ApiResult<()> {
        let record = managed.record.lock().expect("lock").clone();
        let mut effective = record.spec.clone();
        let spec = parse_spec(&effective)?;
        // Checked again at every start: a record written by an older server,
        // a root no longer allowed, or a symlink changed since the create.
        self.server_dir("state", Some(&json!(spec.state.dir)))?;
        if let Some(c) = &spec.checkpoint {
            self.server_dir("checkpoint", Some(&json!(c.dir)))?;
        }
        let claims = self.confine(&mut effective, &spec)?;
        self.check_clashes(&managed.name, &claims)?;
        let spec = parse_spec(&effective)?;
        self.kafka
            .check(&spec)
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let digest = spec.plugin.digest.clone().unwrap_or_default();
        let component = self.registry.bytes(&digest).map_err(registry_error)?;
        let mut skipped = Vec::new();
        let restore = match from {
            Some(path) => Some(checkpoint::load_checkpoint(path).map_err(|e| {
                ApiError::BadRequest(format!(
                    "from: {} is not a usable savepoint: {e}",
                    path.display()
                ))
            })?),
            None => checkpoint::resume_point(&spec, from_scratch, |problem| {
                tracing::warn!(pipeline = spec.name, "{problem}");
                skipped.push(problem.to_owned());
            })
            .map_err(|e| ApiError::Conflict(format!("cannot resume: {e}")))?,
        };
        let resumed_from = match &restore {
            Some(r) => json!({
                "kind": kind_name(r.manifest.kind),
                "id": r.manifest.id,
                "skipped": skipped,
            }),
            None if from_scratch => json!({"kind": "scratch"}),
            None => json!({"kind": "start"}),
        };
        if let Some(r) = &restore {
            tracing::info!(
                pipeline = spec.name,
                "resuming from {} {}",
                kind_name(r.manifest.kind),
                r.manifest.id
            );
        }
        let options = RunOptions {
            restore,
            stop_after: None,
            report: Some(|line| tracing::info!("{line}")),
            ingest: managed.ingest.clone(),
            inspect: false,
            start_over: from_scratch,
        };
        let pipeline = Pipeline::start(&self.engine, &spec, &component, Instant::now(), options)
            .map_err(|e| match e {
                crate::runtime::PipelineError::PluginOpen { .. }
                | crate::runtime::PipelineError::Engine(_) => {
                    ApiError::PluginRefused(e.to_string())
                }
                // A FIFO or a device as a file source: the spec is wrong.
                crate::runtime::PipelineError::Connector(
                    ref c @ crate::connectors::ConnectorError::NotAFile { .. },
                ) => ApiError::BadRequest(format!("source.path: {c}")),
                other => ApiError::Conflict(format!("cannot start: {other}")),
            })?;
        let control = pipeline.control();
        let live = control.live().clone();
        let runner = managed.clone();
        let store = spec
            .checkpoint
            .as_ref()
            .map(|c| CheckpointStore::new(&c.dir, &spec.name));
        // Hold the run lock while the thread starts: a run that ends at once
        // records its end after this records its start.
        let mut run = managed.run.lock().expect("lock");
        let thread = std::thread::Builder::new()
            .name(format!("weir-{}-run", spec.name))
            .spawn(move || {
                let span = tracing::info_span!("pipeline", pipeline = %runner.name);
                let _in_pipeline = span.enter();
                let mut rate = RateMeter::default();
                let mut trimmed_after = None;
                let result = pipeline.run(|metrics, _| {
                    if let Some(r) = rate.sample(metrics.events_in.load(Ordering::Relaxed)) {
                        runner.rate.store(r.to_bits(), Ordering::Relaxed);
                    }
                    if let (Some(log), Some(store)) = (&runner.ingest, &store) {
                        trim_ingest_log(log, store, &mut trimmed_after);
                    }
                });
                let mut run = runner.run.lock().expect("lock");
                run.control = None;
                runner.rate.store(0f64.to_bits(), Ordering::Relaxed);
                run.state = match result {
                    Ok(summary) if summary.stopped => RunState::Stopped,
                    Ok(_) => RunState::Finished,
                    Err(e) => {
                        tracing::error!(pipeline = runner.name, "failed: {e}");
                        RunState::Failed(e.to_string())
                    }
                };
            })
            .map_err(|e| ApiError::Internal(format!("cannot start a thread: {e}")))?;
        run.state = RunState::Running;
        run.control = Some(control);
        run.live = Some(live);
        run.thread = Some(thread);
        run.started = Some(Instant::now());
        run.resumed_from = Some(resumed_from);
        Ok(())
    }

    /// Stops a running pipeline at a checkpoint and waits for it, within
    /// its answer timeout: a pipeline that does not stop by then is failed
    /// (aborted), and one whose run does not even end then is left behind.
    fn stop_run(managed: &Managed) -> ApiResult<()> {
        let (control, thread) = {
            let mut run = managed.run.lock().expect("lock");
            (run.control.clone(), run.thread.take())
        };
        if let Some(control) = &control {
            // It may have ended on its own meanwhile: that is a stop too.
            let _ = control.stop();
        }
        let mut unresponsive = false;
        if let Some(thread) = thread {
            let patience = control
                .as_ref()
                .map_or(ABORTED_RUN_GRACE, |c| c.answer_timeout());
            let mut ended = wait_for(&thread, patience);
            if !ended && let Some(control) = &control {
                control.give_up("the pipeline did not stop");
                ended = wait_for(&thread, ABORTED_RUN_GRACE);
            }
            if ended {
                let _ = thread.join();
            } else {
                // Dropping the handle leaves the thread behind.
                let mut run = managed.run.lock().expect("lock");
                run.control = None;
                run.state = RunState::Failed(format!(
                    "the pipeline did not stop within {} s and its run did not end when aborted; its threads are left running",
                    patience.as_secs()
                ));
            }
            unresponsive = control.as_ref().is_some_and(|c| c.aborted().is_some()) || !ended;
        }
        let run = managed.run.lock().expect("lock");
        match &run.state {
            RunState::Failed(e) if unresponsive => Err(ApiError::Unresponsive(format!(
                "the pipeline did not answer and was failed: {e}"
            ))),
            RunState::Failed(e) => Err(ApiError::Conflict(format!(
                "the pipeline failed while stopping: {e}"
            ))),
            _ => Ok(()),
        }
    }

    pub fn list(&self) -> Value {
        let entries = self.all();
        json!({ "pipelines": entries.iter().map(|m| self.status_of(m)).collect::<Vec<_>>() })
    }

    pub fn status(&self, name: &str) -> ApiResult<Value> {
        let managed = self.get(name)?;
        Ok(self.status_of(&managed))
    }

    fn status_of(&self, managed: &Managed) -> Value {
        let record = managed.record.lock().expect("lock").clone();
        let run = managed.run.lock().expect("lock");
        let (state, error) = match &run.state {
            RunState::Resuming => ("resuming", None),
            RunState::Running => ("running", None),
            RunState::Stopped => ("stopped", None),
            RunState::Finished => ("finished", None),
            RunState::Failed(e) => ("failed", Some(e.clone())),
        };
        // The state version is known only while the plugin runs.
        let (digest, config, state_version) = match &run.control {
            Some(control) => {
                let p = control.plugin();
                (p.digest, p.config, Some(p.state_version))
            }
            None => (
                record.spec["plugin"]["digest"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                record.spec["plugin"]["config"].clone(),
                None,
            ),
        };
        let info = self.registry.get(&digest);
        let mut status = json!({
            "name": managed.name,
            "state": state,
            "error": error,
            "parallelism": record.spec["parallelism"].as_u64().unwrap_or(1),
            "source": record.spec["source"]["kind"],
            "plugin": {
                "digest": digest,
                "name": info.as_ref().map(|i| i.name.clone()),
                "version": info.as_ref().map(|i| i.version.clone()),
                "config": if config.is_null() { json!({}) } else { config },
                "state_version": state_version,
            },
            "events_in": 0,
            "events_per_s": 0.0,
            "outputs": {},
            "errors": {},
            "watermark": null,
            "watermark_lag_ms": null,
            "last_checkpoint": null,
            "checkpoints": {"completed": 0, "failed": 0},
            "swaps": 0,
            "last_swap_pause_ms": null,
            "uptime_s": run.started.filter(|_| run.state == RunState::Running).map(|t| t.elapsed().as_secs_f64()),
            "resumed_from": run.resumed_from,
        });
        if let Some(live) = &run.live {
            let m = &live.metrics;
            status["events_in"] = m.events_in.load(Ordering::Relaxed).into();
            status["events_per_s"] = f64::from_bits(managed.rate.load(Ordering::Relaxed)).into();
            status["outputs"] = json!(m.outputs());
            status["errors"] = json!(m.errors());
            let watermark = live.progress.watermark.load(Ordering::Relaxed);
            if watermark != i64::MIN && watermark != i64::MAX {
                status["watermark"] = watermark.into();
                status["watermark_lag_ms"] = (now_ms() - watermark).into();
            }
            let c = live.checkpoint_stats();
            status["checkpoints"] = json!({"completed": c.completed, "failed": c.failed});
            if let (Some(id), Some(ms), Some(bytes)) =
                (c.last_id, c.last_duration_ms, c.last_size_bytes)
            {
                status["last_checkpoint"] = json!({
                    "id": id,
                    "duration_ms": ms,
                    "size_bytes": bytes,
                    "age_s": c.last_completed_at.map(|t| t.elapsed().as_secs_f64()),
                });
            }
            let swaps = live.swaps.load(Ordering::Relaxed);
            status["swaps"] = swaps.into();
            if swaps > 0 {
                status["last_swap_pause_ms"] =
                    (live.last_swap_pause_ns.load(Ordering::Relaxed) as f64 / 1e6).into();
            }
        }
        status
    }

    /// Takes the pipeline's lifecycle lock, then checks that it is still the
    /// registered pipeline of its name (a delete may have won the race).
    fn lock_lifecycle<'a>(
        &self,
        managed: &'a Arc<Managed>,
    ) -> ApiResult<std::sync::MutexGuard<'a, ()>> {
        let guard = lock_within(&managed.lifecycle, LIFECYCLE_PATIENCE).ok_or_else(|| {
            ApiError::Conflict(format!(
                "pipeline {:?} is busy: another start, stop, swap or delete of it has run for over {} s; retry later",
                managed.name,
                LIFECYCLE_PATIENCE.as_secs()
            ))
        })?;
        let current = self
            .entries
            .lock()
            .expect("lock")
            .get(&managed.name)
            .cloned();
        match current {
            Some(current) if Arc::ptr_eq(&current, managed) => Ok(guard),
            _ => Err(ApiError::NotFound(format!(
                "no pipeline named {:?} (it was just deleted)",
                managed.name
            ))),
        }
    }

    fn control(&self, managed: &Managed) -> ApiResult<PipelineControl> {
        managed
            .run
            .lock()
            .expect("lock")
            .control
            .clone()
            .ok_or_else(|| {
                ApiError::Conflict(format!("pipeline {:?} is not running", managed.name))
            })
    }

    /// The hot swap: answers once every subtask runs `digest`.
    pub fn swap(&self, name: &str, body: &[u8]) -> ApiResult<Value> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct SwapBody {
            digest: String,
            #[serde(default)]
            config: Option<Value>,
        }
        let request: SwapBody = parse_body(body)?;
        let managed = self.get(name)?;
        let _one_at_a_time = self.lock_lifecycle(&managed)?;
        let control = self.control(&managed)?;
        // The target counts as in use from here: it cannot be deleted while
        // the swap runs.
        let _in_use = InUse::mark(&self.swapping, &request.digest);
        let component = self
            .registry
            .bytes(&request.digest)
            .map_err(registry_error)?;
        // No config: a new version of the same plugin keeps the current one.
        let config = request.config.unwrap_or_else(|| control.plugin().config);
        let report = control
            .swap(&self.engine, &component, &config)
            .map_err(|e| match e {
                SwapError::Load(_) | SwapError::Refused(_) => {
                    ApiError::PluginRefused(e.to_string())
                }
                SwapError::NotRunning => ApiError::Conflict(e.to_string()),
                SwapError::Partial { .. } => ApiError::Internal(e.to_string()),
                SwapError::Unresponsive(m) => ApiError::Unresponsive(format!(
                    "the pipeline did not answer and was failed: {m}"
                )),
            })?;
        // A restart runs what runs now; a checkpoint right after the swap
        // makes it durable before the answer (a restore resumes with the
        // plugin its checkpoint names).
        {
            let mut record = managed.record.lock().expect("lock");
            record.spec["plugin"] = json!({ "digest": report.digest, "config": config });
            persist(&managed.dir, &record)?;
        }
        let checkpoint = control.checkpoint().map(|c| c.id).map_err(|e| {
            tracing::warn!(pipeline = name, "no checkpoint after the swap: {e}");
        });
        let info = self.registry.get(&report.digest);
        Ok(json!({
            "checkpoint": checkpoint.ok(),
            "digest": report.digest,
            "name": info.as_ref().map(|i| i.name.clone()),
            "version": info.as_ref().map(|i| i.version.clone()),
            "config": config,
            "pause_ms": report.max_pause.as_secs_f64() * 1000.0,
            "swaps": control.live().swaps.load(Ordering::Relaxed),
        }))
    }

    pub fn checkpoint(&self, name: &str) -> ApiResult<Value> {
        let managed = self.get(name)?;
        let done = self
            .control(&managed)?
            .checkpoint()
            .map_err(control_error)?;
        Ok(json!({"id": done.id, "duration_ms": done.duration_ms, "size_bytes": done.size_bytes}))
    }

    pub fn checkpoints(&self, name: &str) -> ApiResult<Value> {
        let managed = self.get(name)?;
        let spec = parse_spec(&managed.record.lock().expect("lock").spec)?;
        let list: Vec<Value> = match &spec.checkpoint {
            None => Vec::new(),
            Some(c) => {
                // One directory listing per request; each checkpoint's
                // manifest is read once (never its state files: verifying
                // those is a restore's job, and costs a read of all state).
                let store = CheckpointStore::new(&c.dir, &spec.name);
                let ids = store.ids();
                let mut listed = managed.listed.lock().expect("lock");
                listed.retain(|id, _| ids.binary_search(id).is_ok());
                for id in ids {
                    if listed.contains_key(&id) {
                        continue;
                    }
                    let dir = store.dir_of(id);
                    if let Ok(m) = checkpoint::read_manifest(&dir) {
                        listed.insert(
                            id,
                            json!({"id": m.id, "kind": kind_name(m.kind), "created_ms": m.created_ms,
                                   "duration_ms": m.duration_ms, "size_bytes": m.size_bytes,
                                   "finished": m.finished, "path": dir}),
                        );
                    }
                }
                listed.values().cloned().collect()
            }
        };
        Ok(json!({ "checkpoints": list }))
    }

    /// A checkpoint now (or the latest, if the pipeline is not running),
    /// exported as a portable savepoint.
    pub fn savepoint(&self, name: &str, body: &[u8]) -> ApiResult<Value> {
        #[derive(Deserialize, Default)]
        #[serde(deny_unknown_fields)]
        struct SavepointBody {
            #[serde(default)]
            to: Option<PathBuf>,
        }
        let request: SavepointBody = parse_optional_body(body)?;
        let to = match &request.to {
            Some(to) => Some(self.resolve("to", to, Access::CreateDir)?),
            None => None,
        };
        let managed = self.get(name)?;
        let running = managed.run.lock().expect("lock").control.clone();
        let source = match running {
            Some(control) => {
                let done = control.checkpoint().map_err(control_error)?;
                done.dir
            }
            None => self.latest_checkpoint(&managed)?,
        };
        self.export(&managed, &source, to)
    }

    fn latest_checkpoint(&self, managed: &Managed) -> ApiResult<PathBuf> {
        let spec = parse_spec(&managed.record.lock().expect("lock").spec)?;
        let c = spec
            .checkpoint
            .as_ref()
            .ok_or_else(|| ApiError::Conflict("the pipeline keeps no checkpoints".into()))?;
        CheckpointStore::new(&c.dir, &spec.name)
            .latest_valid(false, |p| tracing::warn!("{p}"))
            .map(|c| c.dir)
            .ok_or_else(|| {
                ApiError::Conflict(format!(
                    "pipeline {:?} has no usable checkpoint yet",
                    managed.name
                ))
            })
    }

    fn export(
        &self,
        managed: &Managed,
        checkpoint_dir: &Path,
        to: Option<PathBuf>,
    ) -> ApiResult<Value> {
        let loaded = checkpoint::load_checkpoint(checkpoint_dir)
            .map_err(|e| ApiError::Internal(format!("reading the checkpoint back: {e}")))?;
        let to = to.unwrap_or_else(|| {
            self.data_dir
                .join("savepoints")
                .join(&managed.name)
                .join(format!("sp-{}-{}", loaded.manifest.id, now_ms()))
        });
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(|e| {
                ApiError::BadRequest(format!("to: cannot create {}: {e}", parent.display()))
            })?;
        }
        let manifest = checkpoint::export_savepoint(&loaded, &to)
            .map_err(|e| ApiError::BadRequest(format!("to: {e}")))?;
        Ok(json!({"id": manifest.id, "path": to, "size_bytes": manifest.size_bytes}))
    }

    pub fn stop(&self, name: &str, body: &[u8]) -> ApiResult<Value> {
        #[derive(Deserialize, Default)]
        #[serde(deny_unknown_fields)]
        struct StopBody {
            #[serde(default)]
            savepoint: bool,
            #[serde(default)]
            to: Option<PathBuf>,
        }
        let request: StopBody = parse_optional_body(body)?;
        // Before stopping: a refused path must not leave it stopped.
        let to = match &request.to {
            Some(to) => Some(self.resolve("to", to, Access::CreateDir)?),
            None => None,
        };
        let managed = self.get(name)?;
        let _one_at_a_time = self.lock_lifecycle(&managed)?;
        let resuming = {
            let mut run = managed.run.lock().expect("lock");
            let resuming = run.state == RunState::Resuming;
            if resuming {
                // Not started yet: it never will be.
                run.state = RunState::Stopped;
            }
            resuming
        };
        if !resuming {
            self.control(&managed)?;
            let stopped = Self::stop_run(&managed);
            // A pipeline failed for not answering is stopped too: it does
            // not resume at the server's next start.
            if let Err(e @ ApiError::Unresponsive(_)) = stopped {
                let mut record = managed.record.lock().expect("lock");
                record.desired = Desired::Stopped;
                persist(&managed.dir, &record)?;
                return Err(e);
            }
            stopped?;
        }
        {
            let mut record = managed.record.lock().expect("lock");
            record.desired = Desired::Stopped;
            persist(&managed.dir, &record)?;
        }
        let mut status = self.status_of(&managed);
        if request.savepoint || to.is_some() {
            let latest = self.latest_checkpoint(&managed)?;
            status["savepoint"] = self.export(&managed, &latest, to)?["path"].clone();
        }
        Ok(status)
    }

    pub fn start(&self, name: &str, body: &[u8]) -> ApiResult<Value> {
        #[derive(Deserialize, Default)]
        #[serde(deny_unknown_fields)]
        struct StartBody {
            #[serde(default)]
            from: Option<PathBuf>,
            /// Forget the checkpoints and rewrite the output: the only way
            /// a pipeline with checkpoints starts over from nothing.
            #[serde(default)]
            from_scratch: bool,
        }
        let request: StartBody = parse_optional_body(body)?;
        if request.from_scratch && request.from.is_some() {
            return Err(ApiError::BadRequest(
                "from and from_scratch: choose one (a savepoint to start from, or nothing)".into(),
            ));
        }
        let from = match &request.from {
            Some(from) => Some(self.resolve("from", from, Access::ReadSnapshot)?),
            None => None,
        };
        let managed = self.get(name)?;
        let _one_at_a_time = self.lock_lifecycle(&managed)?;
        if managed.run.lock().expect("lock").control.is_some() {
            return Err(ApiError::Conflict(format!(
                "pipeline {name:?} is already running"
            )));
        }
        if let Some(thread) = managed.run.lock().expect("lock").thread.take() {
            let _ = thread.join();
        }
        self.start_run_with(&managed, from.as_deref(), request.from_scratch)?;
        let mut record = managed.record.lock().expect("lock");
        record.desired = Desired::Running;
        persist(&managed.dir, &record)?;
        drop(record);
        Ok(self.status_of(&managed))
    }

    /// Stops the pipeline and removes its record, state and checkpoints.
    pub fn delete(&self, name: &str) -> ApiResult<()> {
        let managed = self.get(name)?;
        let _one_at_a_time = self.lock_lifecycle(&managed)?;
        // A failed stop still deletes: the user wants it gone.
        let _ = Self::stop_run(&managed);
        // The directories go while the name is still taken: a create of the
        // same name meanwhile is refused, never has its new files removed.
        // Only what this server made goes, whatever the record names.
        for dir in self.owned_dirs(name) {
            if let Err(e) = std::fs::remove_dir_all(&dir)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(dir = %dir.display(), "cannot remove: {e}");
            }
        }
        self.entries.lock().expect("lock").remove(name);
        Ok(())
    }

    /// Appends events to an http pipeline's ingest log (all or nothing).
    pub fn ingest(&self, name: &str, body: &[u8]) -> ApiResult<Value> {
        let managed = self.get(name)?;
        let log = managed.ingest.clone().ok_or_else(|| {
            ApiError::Conflict(format!(
                "pipeline {name:?} does not read events over HTTP (its source is not `http`)"
            ))
        })?;
        // A pipeline still resuming after a server restart takes events:
        // the log is durable and the run reads it from its checkpointed
        // position once it starts.
        {
            let run = managed.run.lock().expect("lock");
            if run.control.is_none() && run.state != RunState::Resuming {
                return Err(ApiError::Conflict(format!(
                    "pipeline {name:?} is not running; start it before sending events"
                )));
            }
        }
        let (lines, count) = json_lines(body)?;
        log.append(&lines, INGEST_PATIENCE).map_err(|e| match e {
            crate::connectors::IngestError::Full { .. } => ApiError::TooManyRequests {
                detail: e.to_string(),
                retry_after_s: 1,
            },
            other => ApiError::Internal(other.to_string()),
        })?;
        Ok(json!({ "accepted": count }))
    }

    /// The state one key holds now.
    pub fn query(&self, name: &str, key: &str) -> ApiResult<Value> {
        let managed = self.get(name)?;
        let view = self
            .control(&managed)?
            .query(key.as_bytes().to_vec())
            .map_err(control_error)?;
        if view.states.is_empty() {
            return Err(ApiError::NotFound(format!(
                "key {key:?} holds no state in pipeline {name:?}"
            )));
        }
        let states = state_view::states_json(&view);
        Ok(
            json!({"key": key, "subtask": view.subtask, "key_group": view.key_group, "states": states,
                "truncated": view.truncated}),
        )
    }

    /// Which pipelines name `digest` (their plugin, running or not, or the
    /// target of a swap under way).
    pub fn users_of(&self, digest: &str) -> Vec<String> {
        if self
            .swapping
            .lock()
            .expect("lock")
            .iter()
            .any(|d| d == digest)
        {
            return vec!["(a swap in progress)".into()];
        }
        let entries = self.all();
        entries
            .iter()
            .filter(|m| {
                let record_uses = m.record.lock().expect("lock").spec["plugin"]["digest"] == digest;
                let running_uses = m
                    .run
                    .lock()
                    .expect("lock")
                    .control
                    .as_ref()
                    .is_some_and(|c| c.plugin().digest == digest);
                record_uses || running_uses
            })
            .map(|m| m.name.clone())
            .collect()
    }

    pub fn plugin_json(&self, info: &PluginInfo) -> Value {
        let mut v = serde_json::to_value(info).expect("plain data");
        v["used_by"] = json!(self.users_of(&info.digest));
        v
    }

    /// Stops every running pipeline at a checkpoint, keeping them marked as
    /// running so the next start of the server resumes them.
    ///
    /// Bounded: the pipelines stop side by side, each within its answer
    /// timeout (one that does not is failed and left behind, and resumes
    /// at the next start), and none resumes after this is called.
    pub fn shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        let entries = self.all();
        std::thread::scope(|scope| {
            for managed in &entries {
                scope.spawn(move || {
                    // After a start under way (a resume) has finished; a
                    // command that keeps the lock longer does not hold the
                    // shutdown up.
                    let _one_at_a_time = lock_within(&managed.lifecycle, LIFECYCLE_PATIENCE);
                    if let Err(e) = Self::stop_run(managed) {
                        tracing::warn!(pipeline = managed.name, "at shutdown: {e}");
                    }
                });
            }
        });
    }

    /// For `/metrics`: (name, running, live figures) of every pipeline.
    pub fn snapshot(&self) -> Vec<(String, bool, Option<Arc<LiveStatus>>)> {
        let entries = self.all();
        entries
            .iter()
            .map(|m| {
                let run = m.run.lock().expect("lock");
                (m.name.clone(), run.control.is_some(), run.live.clone())
            })
            .collect()
    }
}

fn parse_spec(spec: &Value) -> ApiResult<PipelineSpec> {
    let bytes = serde_json::to_vec(spec).expect("a Value serializes");
    PipelineSpec::from_json(&bytes).map_err(|e| ApiError::BadRequest(e.to_string()))
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            ApiError::BadRequest(format!("invalid body: {}", e.inner()))
        } else {
            ApiError::BadRequest(format!("{path}: {}", e.inner()))
        }
    })
}

/// An optional JSON body: empty means all defaults.
fn parse_optional_body<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> ApiResult<T> {
    if body.trim_ascii().is_empty() {
        Ok(T::default())
    } else {
        parse_body(body)
    }
}

/// Saves the record durably (fsynced, atomically replaced) before the
/// request that changed it is answered.
fn persist(dir: &Path, record: &Record) -> ApiResult<()> {
    let io = |e: std::io::Error| ApiError::Internal(format!("saving {}: {e}", dir.display()));
    crate::durable::create_dir_all(dir).map_err(io)?;
    let bytes = serde_json::to_vec_pretty(record).expect("plain data");
    crate::durable::write_atomic(&dir.join("pipeline.json"), &bytes).map_err(io)
}

/// Limits on what a spec sent over HTTP may ask of the server's disk.
fn check_serve_bounds(spec: &PipelineSpec) -> ApiResult<()> {
    let Some(c) = &spec.checkpoint else {
        return Ok(());
    };
    if c.interval_ms < MIN_SERVE_CHECKPOINT_INTERVAL_MS {
        return Err(ApiError::BadRequest(format!(
            "checkpoint.interval_ms: under weir serve must be at least \
             {MIN_SERVE_CHECKPOINT_INTERVAL_MS}, got {}",
            c.interval_ms
        )));
    }
    if c.retain > MAX_SERVE_CHECKPOINT_RETAIN {
        return Err(ApiError::BadRequest(format!(
            "checkpoint.retain: under weir serve must be at most \
             {MAX_SERVE_CHECKPOINT_RETAIN}, got {}",
            c.retain
        )));
    }
    Ok(())
}

/// The files a validated spec reads and writes, as it names them.
fn claims_of(spec: &PipelineSpec) -> FileClaims {
    FileClaims {
        source: match &spec.source {
            SourceSpec::File { path, .. } => Some(path.clone()),
            _ => None,
        },
        sinks: spec
            .sinks
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s {
                SinkSpec::File { path, .. } => Some((format!("sink[{i}].path"), path.clone())),
                _ => None,
            })
            .collect(),
    }
}

/// A resolved path as the JSON string the record keeps.
fn path_json(field: &str, path: &Path) -> ApiResult<Value> {
    path.to_str().map(Value::from).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "{field}: resolves to {}, which is not UTF-8",
            path.display()
        ))
    })
}

/// Two names of one directory (the data dir may be named relatively).
fn same_dir(a: &Path, b: &Path) -> bool {
    a == b
        || matches!(
            (std::fs::canonicalize(a), std::fs::canonicalize(b)),
            (Ok(x), Ok(y)) if x == y
        )
}

fn kind_name(kind: SnapshotKind) -> &'static str {
    match kind {
        SnapshotKind::Checkpoint => "checkpoint",
        SnapshotKind::Savepoint => "savepoint",
    }
}

pub(crate) fn registry_error(e: RegistryError) -> ApiError {
    match e {
        RegistryError::NotFound(d) => ApiError::NotFound(format!("no plugin {d} in the registry")),
        RegistryError::Invalid(e) => ApiError::BadRequest(e.to_string()),
        RegistryError::BadName(m) => ApiError::BadRequest(m),
        e @ RegistryError::Io { .. } => ApiError::Internal(e.to_string()),
    }
}

fn control_error(e: ControlError) -> ApiError {
    match e {
        ControlError::NotRunning | ControlError::NoCheckpoints => ApiError::Conflict(e.to_string()),
        ControlError::Failed(m) => ApiError::Conflict(m),
        ControlError::Unresponsive(m) => {
            ApiError::Unresponsive(format!("the pipeline did not answer and was failed: {m}"))
        }
    }
}

/// Waits up to `patience` for `thread` to end; whether it has.
fn wait_for(thread: &JoinHandle<()>, patience: Duration) -> bool {
    let deadline = Instant::now() + patience;
    while !thread.is_finished() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// Locks `lock`, waiting up to `patience` (a `std` mutex has no timed lock).
fn lock_within(lock: &Mutex<()>, patience: Duration) -> Option<std::sync::MutexGuard<'_, ()>> {
    let deadline = Instant::now() + patience;
    loop {
        match lock.try_lock() {
            Ok(guard) => return Some(guard),
            Err(std::sync::TryLockError::Poisoned(p)) => return Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(std::sync::TryLockError::WouldBlock) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plugin_state_or_checkpoint_section_given_as_an_array_is_refused() {
        let data = tempfile::tempdir().unwrap();
        let policy = PathPolicy::new(data.path(), &[]).unwrap();
        let pipelines = Pipelines::open(
            Engine::new(None).unwrap(),
            data.path(),
            policy,
            KafkaPropertyPolicy::api([]),
        )
        .unwrap();
        // serde takes a struct from a JSON array too: these must not slip
        // past the object-only checks of the serve defaults.
        for section in [
            r#""plugin": [null, "/tmp/x.wasm"]"#,
            r#""plugin": {"digest": "0"}, "state": ["rocksdb", "/tmp"]"#,
            r#""plugin": {"digest": "0"}, "checkpoint": [10000, "/tmp"]"#,
        ] {
            let body = format!(
                r#"{{"name": "plugins", "source": {{"kind": "generator", "events": 1}},
                    "key_by": {{"field": "/u"}}, {section}}}"#
            );
            match pipelines.create(body.as_bytes()) {
                Err(ApiError::BadRequest(detail)) => assert!(
                    detail.contains("must be a JSON object"),
                    "{section}: {detail}"
                ),
                other => panic!("{section}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_file_source_or_sink_given_as_an_array_is_refused() {
        let data = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(data.path().join("files")).unwrap();
        std::fs::write(data.path().join("files/in.json"), "{}\n").unwrap();
        let policy = PathPolicy::new(data.path(), &[]).unwrap();
        let pipelines = Pipelines::open(
            Engine::new(None).unwrap(),
            data.path(),
            policy,
            KafkaPropertyPolicy::api([]),
        )
        .unwrap();
        for (source, sink) in [
            (r#"["file", "in.json"]"#, "[]"),
            (
                r#"{"kind": "generator", "events": 1}"#,
                r#"[["file", "main", "out.json"]]"#,
            ),
        ] {
            let body = format!(
                r#"{{"name": "p", "source": {source}, "key_by": {{"field": "/u"}},
                    "plugin": {{"digest": "{}"}}, "sink": {sink}}}"#,
                "0".repeat(64)
            );
            match pipelines.create(body.as_bytes()) {
                Err(ApiError::BadRequest(detail)) => {
                    assert!(detail.contains("must be a JSON object"), "{detail}")
                }
                other => panic!("{source} {sink}: {other:?}"),
            }
        }
    }
}
