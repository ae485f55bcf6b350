//! The control plane: `weir serve`, an HTTP API (axum) over many pipelines
//! in one process (docs/api.md).
//!
//! `routes` translates HTTP; `pipelines` owns the pipelines' lifecycle and
//! persistence; `registry` owns uploaded plugins; `metrics` renders the
//! runtime's figures. The control plane talks to a running pipeline only
//! through `runtime::PipelineControl`; it never touches the data plane's
//! threads or state directly.

mod data_lock;
mod error;
mod http_guard;
mod ingest_body;
mod listen;
mod metrics;
mod paths;
mod pipelines;
mod registry;
mod routes;
mod state_view;
mod supervise;
mod upload_gate;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

pub use data_lock::{DataDirLock, LockError};
pub use error::ApiError;
pub use paths::{FILES_DIR, PathError, PathPolicy};
pub use pipelines::Pipelines;
pub use registry::{PluginInfo, Registry, WORLD};
pub use routes::{AppState, DEFAULT_BODY_LIMIT, EVENTS_BODY_LIMIT, PLUGIN_BODY_LIMIT, router};
pub(crate) use state_view::states_json;

use crate::engine::Engine;
use crate::spec::KafkaPropertyPolicy;

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Where to listen. Loopback unless told otherwise.
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub addr: SocketAddr,
    /// Plugins, pipeline specs, state, checkpoints and ingest logs live here;
    /// one server per data dir (a second one refuses to start). API clients'
    /// files go in its `files/` folder, where relative spec paths resolve.
    #[arg(long, default_value = "weir-data")]
    pub data_dir: PathBuf,
    /// A folder API clients may also name in specs and requests (file
    /// sources and sinks, restore_from, savepoint to/from), after symlinks
    /// and `..` are resolved; repeatable. Without it, only
    /// `<data-dir>/files/` is theirs.
    #[arg(long = "allow-path", value_name = "DIR")]
    pub allow_paths: Vec<PathBuf>,
    /// A librdkafka client property API clients may also set in a Kafka
    /// source's or sink's `properties` (any value), beyond the allowlist of
    /// docs/kafka.md; repeatable. Each one added is trusted: some name
    /// server files, load code or run commands.
    #[arg(long = "kafka-allow-property", value_name = "NAME")]
    pub kafka_allow_properties: Vec<String>,
    /// The token, allowed hosts, TLS, timeouts and connection cap.
    #[command(flatten)]
    pub http: listen::HttpArgs,
}

/// Runs the control plane until SIGINT or SIGTERM; then stops every running
/// pipeline at a checkpoint, so the next start resumes them where they were.
pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // The token, TLS files and exposure rules first: a refusal to start
    // should come before the data dir is touched.
    let http = listen::HttpSettings::load(&args.http, args.addr, std::env::var("WEIR_TOKEN").ok())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("weir-api")
        .build()
        .context("starting the async runtime")?;
    let served = runtime.block_on(async move {
        // Before anything reads or writes the data dir.
        let mut data_lock = DataDirLock::acquire(&args.data_dir)?;
        let policy = PathPolicy::new(&args.data_dir, &args.allow_paths)?;
        let engine = Engine::new(Some(args.data_dir.join("compiled")))
            .context("starting the wasm engine")?;
        let data_dir = args.data_dir.clone();
        let kafka = KafkaPropertyPolicy::api(args.kafka_allow_properties.clone());
        let pipelines =
            tokio::task::spawn_blocking(move || Pipelines::open(engine, &data_dir, policy, kafka))
                .await
                .context("opening the data dir")??;
        let state = Arc::new(AppState {
            pipelines: pipelines.clone(),
            guard: http.guard(args.addr.ip()),
        });
        let listener = tokio::net::TcpListener::bind(args.addr)
            .await
            .with_context(|| format!("cannot listen on {}", args.addr))?;
        let addr = listener.local_addr()?;
        data_lock.record_addr(addr);
        // The one line tools and tests wait for.
        eprintln!(
            "weir serve listening on {}://{addr} (data dir {})",
            http.scheme(),
            args.data_dir.display()
        );
        // Only now do the pipelines start: the API answers meanwhile (their
        // status says "resuming"), and one that is slow to start, or never
        // starts, cannot keep the server from listening.
        let resuming = pipelines.clone();
        std::thread::Builder::new()
            .name("weir-resume".into())
            .spawn(move || resuming.resume())
            .context("starting the thread that resumes pipelines")?;
        listen::serve(listener, router(state), &http, shutdown_signal()).await;
        eprintln!("stopping pipelines at a checkpoint");
        // Each pipeline stops within its answer timeout; this bounds the
        // whole (one that has not stopped resumes from its last checkpoint
        // at the next start).
        let stopping = tokio::task::spawn_blocking(move || pipelines.shutdown());
        match tokio::time::timeout(SHUTDOWN_LIMIT, stopping).await {
            Ok(stopped) => stopped?,
            Err(_) => eprintln!(
                "pipelines still stopping after {} s: exiting without them",
                SHUTDOWN_LIMIT.as_secs()
            ),
        }
        // Released only once every pipeline has stopped (or been given up).
        drop(data_lock);
        anyhow::Ok(())
    });
    // Threads still blocked in a pipeline are not waited for.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    served
}

/// The longest SIGTERM waits for pipelines to stop.
const SHUTDOWN_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = interrupt => {}
        _ = async {
            match terminate.as_mut() {
                Some(s) => { s.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}
