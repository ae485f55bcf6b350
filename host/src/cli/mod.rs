//! The `weir` command line. `anyhow` lives here, at the edge: library errors
//! are typed, and this layer adds the context a person needs.

mod client;
mod event_batches;
mod js_build;
mod pipeline_view;
mod plugin_build;
mod plugin_new;
mod plugin_test;
mod python_build;
mod remote;
mod remote_pipeline;
mod remote_plugin;
mod run;
mod run_group;
mod savepoint;
mod spec_json;
mod table;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "weir",
    version,
    about = "Stateful stream processing with hot-swappable WebAssembly plugins"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one pipeline in the foreground until its source ends, then print a summary.
    Run(run::RunArgs),
    /// Run the control plane: pipelines managed over HTTP (docs/api.md).
    Serve(crate::api::ServeArgs),
    /// Build plugins, and manage the plugins of a `weir serve`.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Manage the pipelines of a `weir serve`.
    #[command(subcommand)]
    Pipeline(remote_pipeline::PipelineCommand),
    /// Portable snapshots of a pipeline's state.
    #[command(subcommand)]
    Savepoint(savepoint::SavepointCommand),
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Build a plugin into a component and print its path: a Rust crate
    /// (cargo, target wasm32-wasip2) or a Python plugin, a directory with an
    /// `app.py` (componentize-py, into DIR/build/).
    Build {
        /// The plugin's directory.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Put the component in this directory (default: cargo's target
        /// directory for a crate, DIR/build for a Python plugin).
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
    /// Create a ready-to-build plugin project (with sample events and a
    /// sample test) in Rust, Python or JavaScript.
    New(plugin_new::NewArgs),
    /// Run a plugin on sample events in the real host (memory state, one
    /// subtask) and print every output record, side outputs included, and
    /// each key's final state.
    Test(plugin_test::TestArgs),
    /// Upload a component to a `weir serve`'s plugin registry.
    Upload(remote_plugin::UploadArgs),
    /// List the plugins of a `weir serve`.
    List(remote_plugin::ListArgs),
    /// Delete a plugin no pipeline uses from a `weir serve`.
    Delete(remote_plugin::DeleteArgs),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Serve(args) => crate::api::serve(args),
        Command::Savepoint(command) => savepoint::run(command),
        Command::Pipeline(command) => remote_pipeline::run(command),
        Command::Plugin(PluginCommand::New(args)) => plugin_new::new(args),
        Command::Plugin(PluginCommand::Test(args)) => plugin_test::test(args),
        Command::Plugin(PluginCommand::Upload(args)) => remote_plugin::upload(args),
        Command::Plugin(PluginCommand::List(args)) => remote_plugin::list(args),
        Command::Plugin(PluginCommand::Delete(args)) => remote_plugin::delete(args),
        Command::Plugin(PluginCommand::Build { dir, out_dir }) => {
            plugin_build::build_into(&dir, out_dir.as_deref()).map(|path| {
                println!("{}", path.display());
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr (stdout may be a sink). `WEIR_LOG` filters, like RUST_LOG.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
