//! `weir savepoint`: portable snapshots of a pipeline's state, taken from its
//! newest complete checkpoint (stop a run with `weir run --stop-after` for a
//! savepoint at a chosen point).

use std::path::PathBuf;

use anyhow::{Context, bail};

use crate::checkpoint::{CheckpointStore, export_savepoint, load_checkpoint};
use crate::spec::PipelineSpec;

#[derive(clap::Subcommand)]
pub(crate) enum SavepointCommand {
    /// Write a self-contained savepoint of the pipeline's newest checkpoint to a directory.
    Create {
        /// The pipeline spec (TOML): names the pipeline and its checkpoint directory.
        #[arg(long)]
        spec: PathBuf,
        /// Where to write the savepoint (must not exist).
        #[arg(long)]
        to: PathBuf,
    },
    /// List the pipeline's complete checkpoints.
    List {
        #[arg(long)]
        spec: PathBuf,
    },
}

pub(crate) fn run(command: SavepointCommand) -> anyhow::Result<()> {
    match command {
        SavepointCommand::Create { spec, to } => {
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
        SavepointCommand::List { spec } => {
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
    }
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
