//! `weir pipeline ...`: pipelines on a `weir serve`, one route each
//! (docs/api.md). The server validates and decides; these commands only
//! shape the request and print the answer.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use super::client::{Body, Client, segment};
use super::event_batches::{self, MAX_BYTES, MAX_LINES};
use super::pipeline_view::{pipeline_table, plugin_name, status_block};
use super::plugin_build;
use super::remote::{Remote, cell, short};
use super::remote_plugin::{PluginArg, upload_file};
use super::spec_json::{self, PluginSource};

#[derive(clap::Subcommand)]
pub(crate) enum PipelineCommand {
    /// Create and start a pipeline from a spec file (TOML, or JSON by extension).
    Create {
        /// The spec. A `plugin.wasm` (or `plugin.crate`) in it is uploaded
        /// (or built and uploaded) and replaced by its digest.
        spec: PathBuf,
        /// Run this plugin instead of the spec's: a `.wasm` file (uploaded
        /// first) or a digest (or a unique prefix of one). The spec's
        /// `plugin.config` is kept.
        #[arg(long, value_name = "FILE_OR_DIGEST")]
        plugin: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// List the pipelines.
    List {
        #[command(flatten)]
        remote: Remote,
    },
    /// Show one pipeline's status.
    Status {
        name: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Hot-swap a running pipeline's plugin.
    Swap {
        name: String,
        /// A `.wasm` file (uploaded first) or a digest (or a unique prefix of one).
        #[arg(long, value_name = "FILE_OR_DIGEST")]
        plugin: String,
        /// The new version's config, as JSON (default `{}`).
        #[arg(long, value_name = "JSON")]
        config: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Stop a pipeline at a checkpoint, so that `start` resumes exactly there.
    Stop {
        name: String,
        /// Also export that checkpoint as a portable savepoint.
        #[arg(long)]
        savepoint: bool,
        /// Where the server writes the savepoint (implies --savepoint).
        #[arg(long, value_name = "DIR")]
        to: Option<PathBuf>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Start a stopped, failed or finished pipeline from its latest checkpoint.
    Start {
        name: String,
        /// Start from this savepoint instead.
        #[arg(long, value_name = "DIR", conflicts_with = "from_scratch")]
        from: Option<PathBuf>,
        /// Forget the pipeline's checkpoints and start over from nothing:
        /// its state is dropped and its file outputs are rewritten. Without
        /// it, a pipeline whose checkpoints cannot be restored stays failed.
        #[arg(long)]
        from_scratch: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Stop a pipeline and remove its spec, state and checkpoints.
    Delete {
        name: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Take a checkpoint now and wait for it to complete.
    Checkpoint {
        name: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Send the events of a JSON-lines file to a pipeline with an `http` source.
    Send {
        name: String,
        /// One JSON event per line.
        file: PathBuf,
        #[command(flatten)]
        remote: Remote,
    },
}

pub(crate) fn run(command: PipelineCommand) -> anyhow::Result<()> {
    match command {
        PipelineCommand::Create {
            spec,
            plugin,
            remote,
        } => create(&spec, plugin.as_deref(), &remote),
        PipelineCommand::List { remote } => {
            let answer = remote.client()?.get("/v1/pipelines")?;
            remote.print(&answer, pipeline_table);
            Ok(())
        }
        PipelineCommand::Status { name, remote } => {
            let answer = remote.client()?.get(&pipeline_path(&name, ""))?;
            remote.print(&answer, status_block);
            Ok(())
        }
        PipelineCommand::Swap {
            name,
            plugin,
            config,
            remote,
        } => swap(&name, &plugin, config.as_deref(), &remote),
        PipelineCommand::Stop {
            name,
            savepoint,
            to,
            remote,
        } => {
            let mut body = json!({});
            if savepoint || to.is_some() {
                body["savepoint"] = json!(true);
            }
            if let Some(to) = to {
                body["to"] = server_path(&to)?;
            }
            let answer = remote
                .client()?
                .post(&pipeline_path(&name, "/stop"), &body)?;
            remote.print(&answer, |status| match status["savepoint"].as_str() {
                Some(path) => format!("stopped {name}; savepoint at {path}"),
                None => format!("stopped {name}"),
            });
            Ok(())
        }
        PipelineCommand::Start {
            name,
            from,
            from_scratch,
            remote,
        } => {
            let mut body = json!({});
            if let Some(from) = from {
                body["from"] = server_path(&from)?;
            }
            if from_scratch {
                body["from_scratch"] = json!(true);
            }
            let answer = remote
                .client()?
                .post(&pipeline_path(&name, "/start"), &body)?;
            remote.print(&answer, |status| {
                format!("started {name} ({})", cell(&status["state"]))
            });
            Ok(())
        }
        PipelineCommand::Delete { name, remote } => {
            let answer = remote.client()?.delete(&pipeline_path(&name, ""))?;
            remote.print(&answer, |_| format!("deleted {name}"));
            Ok(())
        }
        PipelineCommand::Checkpoint { name, remote } => {
            let answer = remote
                .client()?
                .post(&pipeline_path(&name, "/checkpoints"), &json!({}))?;
            remote.print(&answer, |c| {
                format!(
                    "checkpoint {} of {name}: took {} ms, {} bytes",
                    cell(&c["id"]),
                    cell(&c["duration_ms"]),
                    cell(&c["size_bytes"])
                )
            });
            Ok(())
        }
        PipelineCommand::Send { name, file, remote } => send(&name, &file, &remote),
    }
}

/// `/v1/pipelines/{name}{rest}`.
pub(crate) fn pipeline_path(name: &str, rest: &str) -> String {
    format!("/v1/pipelines/{}{rest}", segment(name))
}

/// A directory the server reads or writes, made absolute: the server runs
/// on this machine (a local control plane) but in its own directory.
pub(crate) fn server_path(path: &Path) -> anyhow::Result<Value> {
    let absolute =
        std::path::absolute(path).with_context(|| format!("resolving {}", path.display()))?;
    Ok(Value::String(absolute.to_string_lossy().into_owned()))
}

fn create(spec_path: &Path, plugin: Option<&str>, remote: &Remote) -> anyhow::Result<()> {
    let client = remote.client()?;
    let mut spec = spec_json::read_spec(spec_path)?;
    let digest = match plugin {
        Some(plugin) => Some(PluginArg::parse(plugin).into_digest(&client)?.0),
        None => match spec_json::plugin_source(&spec) {
            Some(PluginSource::Wasm(file)) => Some(upload_digest(&client, &file)?),
            Some(PluginSource::Crate(dir)) => {
                let file = plugin_build::build(&dir).context("plugin.crate")?;
                Some(upload_digest(&client, &file)?)
            }
            // Already a digest, or no plugin: the server judges.
            Some(PluginSource::Digest(_)) | None => None,
        },
    };
    if let Some(digest) = digest {
        spec_json::set_plugin_digest(&mut spec, &digest)?;
    }
    let answer = client.post("/v1/pipelines", &spec)?;
    remote.print(&answer, status_block);
    Ok(())
}

fn upload_digest(client: &Client, file: &Path) -> anyhow::Result<String> {
    let (info, _) = upload_file(client, file, None, None)?;
    info["digest"]
        .as_str()
        .map(str::to_owned)
        .context("the server's answer to the upload has no digest")
}

fn swap(name: &str, plugin: &str, config: Option<&str>, remote: &Remote) -> anyhow::Result<()> {
    let client = remote.client()?;
    let config: Option<Value> = config
        .map(|c| serde_json::from_str(c).context("--config is not JSON"))
        .transpose()?;
    let (digest, _) = PluginArg::parse(plugin).into_digest(&client)?;
    let mut body = json!({ "digest": digest });
    if let Some(config) = config {
        body["config"] = config;
    }
    let answer = client.put(&pipeline_path(name, "/plugin"), &body)?;
    remote.print(&answer, |result| {
        format!(
            "swapped {name} to {} ({}) in {:.2} ms",
            plugin_name(result),
            short(&digest),
            result["pause_ms"].as_f64().unwrap_or(f64::NAN)
        )
    });
    Ok(())
}

/// How often a `429` is retried before giving up on a batch.
const MAX_RETRIES: u32 = 120;

fn send(name: &str, file: &Path, remote: &Remote) -> anyhow::Result<()> {
    let client = remote.client()?;
    let reader = std::io::BufReader::new(
        std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?,
    );
    let path = pipeline_path(name, "/events");
    let mut accepted = 0u64;
    for batch in event_batches::batches(reader, MAX_LINES, MAX_BYTES) {
        let batch = batch.with_context(|| format!("reading {}", file.display()))?;
        accepted += send_batch(&client, &path, &batch.body).with_context(|| {
            format!(
                "sending lines {}.. of {} ({accepted} events accepted before)",
                batch.first_line,
                file.display()
            )
        })?;
    }
    remote.print(&json!({ "accepted": accepted }), |_| {
        format!("{name} accepted {accepted} events")
    });
    Ok(())
}

/// One batch, retried while the server answers `429` (it is behind; it
/// says when to come back).
fn send_batch(client: &Client, path: &str, body: &str) -> anyhow::Result<u64> {
    for _ in 0..MAX_RETRIES {
        let reply = client.send(
            "POST",
            path,
            &[],
            Body::Bytes {
                content_type: "application/x-ndjson",
                bytes: body.as_bytes(),
            },
        )?;
        if reply.status == 429 {
            let wait = reply.retry_after.unwrap_or(1).clamp(1, 60);
            std::thread::sleep(Duration::from_secs(wait));
            continue;
        }
        let answer = reply.into_result()?;
        return answer["accepted"]
            .as_u64()
            .context("the server's answer has no `accepted` count");
    }
    bail!("the server was still too busy after {MAX_RETRIES} retries")
}
