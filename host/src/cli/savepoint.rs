//! `weir savepoint`: portable snapshots of a pipeline's state. With
//! `--spec`, locally, from the newest complete checkpoint of a `weir run`
//! pipeline (stop a run with `weir run --stop-after` for a savepoint at a
//! chosen point); with a pipeline name instead, on a `weir serve`.

use std::path::PathBuf;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use super::remote::{Remote, cell, list_of};
use super::remote_pipeline::{pipeline_path, server_path};
use super::table;
use crate::checkpoint::{CheckpointStore, export_savepoint, load_checkpoint};
use crate::spec::PipelineSpec;

#[derive(clap::Subcommand)]
pub(crate) enum SavepointCommand {
    /// Write a self-contained savepoint: of a local pipeline's newest
    /// checkpoint (--spec), or of a checkpoint a `weir serve` takes now (PIPELINE).
    Create {
        /// The pipeline on the server.
        #[arg(conflicts_with = "spec", required_unless_present = "spec")]
        pipeline: Option<String>,
        /// The local pipeline's spec (TOML): names it and its checkpoint directory.
        #[arg(long)]
        spec: Option<PathBuf>,
        /// Where to write the savepoint (must not exist). Required with
        /// --spec; on a server it defaults to its data dir.
        #[arg(long, required_unless_present = "pipeline")]
        to: Option<PathBuf>,
        #[command(flatten)]
        remote: Remote,
    },
    /// List a pipeline's checkpoints: a local one's (--spec) or one on a server's (PIPELINE).
    List {
        /// The pipeline on the server.
        #[arg(conflicts_with = "spec", required_unless_present = "spec")]
        pipeline: Option<String>,
        /// The local pipeline's spec (TOML).
        #[arg(long)]
        spec: Option<PathBuf>,
        #[command(flatten)]
        remote: Remote,
    },
}

pub(crate) fn run(command: SavepointCommand) -> anyhow::Result<()> {
    match command {
        SavepointCommand::Create {
            pipeline: Some(name),
            to,
            remote,
            ..
        } => create_on_server(&name, to.as_deref(), &remote),
        SavepointCommand::List {
            pipeline: Some(name),
            remote,
            ..
        } => list_on_server(&name, &remote),
        SavepointCommand::Create {
            spec: Some(spec),
            to: Some(to),
            ..
        } => {
            let store = store_of(&spec)?;
            let latest = store
                .latest_valid(false, |problem| eprintln!("warning: {problem}"))
                .with_context(|| {
                    format!(
                        "no usable checkpoint in {}; run the pipeline with a [checkpoint] section first",
                        store.root().display()
                    )
                })?;
            let manifest = export_savepoint(&latest, &to)
                .with_context(|| format!("writing the savepoint to {}", to.display()))?;
            println!(
                "savepoint of checkpoint {} written to {} ({} bytes); start from it with restore_from = {:?}",
                manifest.id,
                to.display(),
                manifest.size_bytes,
                to.display().to_string()
            );
            Ok(())
        }
        SavepointCommand::List {
            spec: Some(spec), ..
        } => {
            let store = store_of(&spec)?;
            println!(
                "{:>6}  {:>19}  {:>10}  {:>12}  finished",
                "id", "created (ms)", "took (ms)", "bytes"
            );
            for id in store.ids() {
                match load_checkpoint(&store.dir_of(id)) {
                    Ok(c) => println!(
                        "{:>6}  {:>19}  {:>10}  {:>12}  {}",
                        id,
                        c.manifest.created_ms,
                        c.manifest.duration_ms,
                        c.manifest.size_bytes,
                        c.manifest.finished
                    ),
                    Err(e) => println!("{id:>6}  unusable: {e}"),
                }
            }
            Ok(())
        }
        SavepointCommand::Create { .. } | SavepointCommand::List { .. } => {
            unreachable!("clap requires a pipeline or --spec (and --to with --spec)")
        }
    }
}

fn create_on_server(
    name: &str,
    to: Option<&std::path::Path>,
    remote: &Remote,
) -> anyhow::Result<()> {
    let mut body = json!({});
    if let Some(to) = to {
        body["to"] = server_path(to)?;
    }
    let answer = remote
        .client()?
        .post(&pipeline_path(name, "/savepoints"), &body)?;
    remote.print(&answer, |savepoint| {
        format!(
            "savepoint of checkpoint {} of {name} written to {} ({} bytes); start from it with `weir pipeline start {name} --from {}`",
            cell(&savepoint["id"]),
            cell(&savepoint["path"]),
            cell(&savepoint["size_bytes"]),
            cell(&savepoint["path"])
        )
    });
    Ok(())
}

fn list_on_server(name: &str, remote: &Remote) -> anyhow::Result<()> {
    let answer = remote.client()?.get(&pipeline_path(name, "/checkpoints"))?;
    remote.print(&answer, checkpoint_table);
    Ok(())
}

/// `GET .../checkpoints` as a table, in the columns of the local listing.
fn checkpoint_table(answer: &Value) -> String {
    let rows: Vec<Vec<String>> = list_of(answer, "checkpoints")
        .iter()
        .map(|c| {
            [
                "id",
                "kind",
                "created_ms",
                "duration_ms",
                "size_bytes",
                "finished",
            ]
            .iter()
            .map(|field| cell(&c[*field]))
            .collect()
        })
        .collect();
    table::render(
        &[
            "id",
            "kind",
            "created (ms)",
            "took (ms)",
            "bytes",
            "finished",
        ],
        &rows,
    )
}

fn store_of(spec: &std::path::Path) -> anyhow::Result<CheckpointStore> {
    let spec = PipelineSpec::from_toml_file(spec)
        .with_context(|| format!("invalid pipeline spec {}", spec.display()))?;
    let Some(c) = &spec.checkpoint else {
        bail!(
            "pipeline {:?} keeps no checkpoints: its spec has no [checkpoint] section",
            spec.name
        );
    };
    Ok(CheckpointStore::new(&c.dir, &spec.name))
}
