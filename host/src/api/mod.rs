//! The control plane: `weir serve`, an HTTP API (axum) over many pipelines
//! in one process (docs/api.md).
//!
//! `routes` translates HTTP; `pipelines` owns the pipelines' lifecycle and
//! persistence; `registry` owns uploaded plugins; `metrics` renders the
//! runtime's figures. The control plane talks to a running pipeline only
//! through `runtime::PipelineControl`; it never touches the data plane's
//! threads or state directly.

mod error;
mod ingest_body;
mod metrics;
mod pipelines;
mod registry;
mod routes;
mod state_view;
mod supervise;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

pub use error::ApiError;
pub use pipelines::Pipelines;
pub use registry::{PluginInfo, Registry, WORLD};
pub use routes::{AppState, DEFAULT_BODY_LIMIT, EVENTS_BODY_LIMIT, PLUGIN_BODY_LIMIT, router};
pub(crate) use state_view::states_json;

use crate::engine::Engine;

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Where to listen. Loopback unless told otherwise.
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub addr: SocketAddr,
    /// Plugins, pipeline specs, state, checkpoints and ingest logs live here.
    #[arg(long, default_value = "weir-data")]
    pub data_dir: PathBuf,
    /// Require `Authorization: Bearer <token>` on every route but /healthz.
    #[arg(long, env = "WEIR_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// Runs the control plane until SIGINT or SIGTERM; then stops every running
/// pipeline at a checkpoint, so the next start resumes them where they were.
pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("weir-api")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let engine = Engine::new(Some(args.data_dir.join("compiled")))
            .context("starting the wasm engine")?;
        let data_dir = args.data_dir.clone();
        let pipelines = tokio::task::spawn_blocking(move || Pipelines::open(engine, &data_dir))
            .await
            .context("opening the data dir")??;
        let state = Arc::new(AppState {
            pipelines: pipelines.clone(),
            token: args.token.filter(|t| !t.is_empty()),
        });
        let listener = tokio::net::TcpListener::bind(args.addr)
            .await
            .with_context(|| format!("cannot listen on {}", args.addr))?;
        let addr = listener.local_addr()?;
        // The one line tools and tests wait for.
        eprintln!(
            "weir serve listening on http://{addr} (data dir {})",
            args.data_dir.display()
        );
        axum::serve(listener, router(state))
            .with_graceful_shutdown(shutdown_signal())
            .await
            .context("serving HTTP")?;
        eprintln!("stopping pipelines at a checkpoint");
        tokio::task::spawn_blocking(move || pipelines.shutdown()).await?;
        anyhow::Ok(())
    })
}

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
