//! `weir plugin upload|list|delete`: the plugin registry of `weir serve`,
//! and the helpers other client commands use to name a plugin (a `.wasm`
//! file is uploaded first, a digest may be shortened to a unique prefix).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde_json::Value;

use super::client::{Body, Client, segment};
use super::remote::{Remote, cell, list_of, short};
use super::table;

#[derive(clap::Args)]
pub(crate) struct UploadArgs {
    /// The component (`.wasm`, from `weir plugin build`).
    file: PathBuf,
    /// Defaults to the file's name without `.wasm`.
    #[arg(long)]
    name: Option<String>,
    /// Defaults (on the server) to the first 12 digits of the digest.
    #[arg(long)]
    version: Option<String>,
    #[command(flatten)]
    remote: Remote,
}

#[derive(clap::Args)]
pub(crate) struct ListArgs {
    #[command(flatten)]
    remote: Remote,
}

#[derive(clap::Args)]
pub(crate) struct DeleteArgs {
    /// The plugin's digest, or a unique prefix of it (at least 6 digits).
    digest: String,
    #[command(flatten)]
    remote: Remote,
}

pub(crate) fn upload(args: UploadArgs) -> anyhow::Result<()> {
    let client = args.remote.client()?;
    let (info, created) = upload_file(
        &client,
        &args.file,
        args.name.as_deref(),
        args.version.as_deref(),
    )?;
    args.remote.print(&info, |info| {
        let verb = if created {
            "uploaded"
        } else {
            "already stored"
        };
        format!("{verb}\n{}", describe(info))
    });
    Ok(())
}

pub(crate) fn list(args: ListArgs) -> anyhow::Result<()> {
    let answer = args.remote.client()?.get("/v1/plugins")?;
    args.remote.print(&answer, plugin_table);
    Ok(())
}

pub(crate) fn delete(args: DeleteArgs) -> anyhow::Result<()> {
    let client = args.remote.client()?;
    let digest = resolve_digest(&client, &args.digest)?;
    let answer = client.delete(&format!("/v1/plugins/{}", segment(&digest)))?;
    args.remote
        .print(&answer, |_| format!("deleted plugin {}", short(&digest)));
    Ok(())
}

/// Uploads a component: its `PluginInfo`, and whether it was new (`201`)
/// rather than already stored (`200`).
pub(crate) fn upload_file(
    client: &Client,
    file: &Path,
    name: Option<&str>,
    version: Option<&str>,
) -> anyhow::Result<(Value, bool)> {
    let bytes =
        std::fs::read(file).with_context(|| format!("reading the component {}", file.display()))?;
    let stem = file.file_stem().map(|s| s.to_string_lossy().into_owned());
    let mut query = Vec::new();
    if let Some(name) = name.map(str::to_owned).or(stem) {
        query.push(("name", name));
    }
    if let Some(version) = version {
        query.push(("version", version.to_owned()));
    }
    let query: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let reply = client.send(
        "POST",
        "/v1/plugins",
        &query,
        Body::Bytes {
            content_type: "application/wasm",
            bytes: &bytes,
        },
    )?;
    let created = reply.status == 201;
    Ok((reply.into_result()?, created))
}

/// A plugin as named on the command line: a component file, or a digest.
pub(crate) enum PluginArg {
    File(PathBuf),
    Digest(String),
}

impl PluginArg {
    /// A path ending in `.wasm` or naming a file is a file; anything else a digest.
    pub fn parse(text: &str) -> Self {
        let path = Path::new(text);
        let is_wasm = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("wasm"));
        if is_wasm || path.is_file() {
            PluginArg::File(path.to_owned())
        } else {
            PluginArg::Digest(text.to_owned())
        }
    }

    /// The full digest, uploading a file first; with the `PluginInfo` when
    /// an upload gave it.
    pub fn into_digest(self, client: &Client) -> anyhow::Result<(String, Option<Value>)> {
        match self {
            PluginArg::File(file) => {
                let (info, _) = upload_file(client, &file, None, None)?;
                let digest = info["digest"]
                    .as_str()
                    .context("the server's answer to the upload has no digest")?
                    .to_owned();
                Ok((digest, Some(info)))
            }
            PluginArg::Digest(prefix) => Ok((resolve_digest(client, &prefix)?, None)),
        }
    }
}

const MIN_PREFIX: usize = 6;

/// A full digest as is; a prefix of at least six digits resolved against
/// the registry, which must hold exactly one match.
pub(crate) fn resolve_digest(client: &Client, prefix: &str) -> anyhow::Result<String> {
    let prefix = prefix.trim().to_ascii_lowercase();
    if prefix.len() == 64 && prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(prefix);
    }
    if prefix.len() < MIN_PREFIX || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!(
            "{prefix:?} is neither a .wasm file nor a digest (64 hex digits, or a unique prefix of at least {MIN_PREFIX})"
        );
    }
    let plugins = client.get("/v1/plugins")?;
    match_prefix(&plugins, &prefix)
}

fn match_prefix(plugins: &Value, prefix: &str) -> anyhow::Result<String> {
    let digests: Vec<&str> = list_of(plugins, "plugins")
        .iter()
        .filter_map(|p| p["digest"].as_str())
        .filter(|d| d.starts_with(prefix))
        .collect();
    match digests.as_slice() {
        [one] => Ok((*one).to_owned()),
        [] => bail!("no plugin's digest starts with {prefix}"),
        many => bail!(
            "{prefix} is ambiguous: it starts {} digests ({}); give more digits",
            many.len(),
            many.iter().map(|d| short(d)).collect::<Vec<_>>().join(", ")
        ),
    }
}

fn describe(info: &Value) -> String {
    format!(
        "digest:   {}\nname:     {}\nversion:  {}\nsize:     {} bytes\n",
        cell(&info["digest"]),
        cell(&info["name"]),
        cell(&info["version"]),
        cell(&info["size"])
    )
}

/// `GET /v1/plugins` as a table.
pub(crate) fn plugin_table(answer: &Value) -> String {
    let rows: Vec<Vec<String>> = list_of(answer, "plugins")
        .iter()
        .map(|p| {
            let used_by: Vec<String> = p["used_by"]
                .as_array()
                .map(|names| names.iter().map(cell).collect())
                .unwrap_or_default();
            vec![
                short(&cell(&p["digest"])).to_owned(),
                cell(&p["name"]),
                cell(&p["version"]),
                cell(&p["size"]),
                if used_by.is_empty() {
                    "-".to_owned()
                } else {
                    used_by.join(",")
                },
            ]
        })
        .collect();
    table::render(&["digest", "name", "version", "size", "used by"], &rows)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn digest(start: &str) -> String {
        format!("{start}{}", "0".repeat(64 - start.len()))
    }

    fn registry() -> Value {
        json!({"plugins": [
            {"digest": digest("abcdef1"), "name": "fraud", "version": "1.2.0", "size": 81234,
             "world": "weir:plugin/processor@0.1.0", "uploaded_ms": 1, "used_by": ["fraud", "fraud-eu"]},
            {"digest": digest("abcdef2"), "name": "counter", "version": "0.1.0", "size": 100,
             "world": "weir:plugin/processor@0.1.0", "uploaded_ms": 2, "used_by": []},
        ]})
    }

    #[test]
    fn the_plugin_table_shows_short_digests_and_users() {
        assert_eq!(
            plugin_table(&registry()),
            "digest        name     version  size   used by\n\
             abcdef100000  fraud    1.2.0    81234  fraud,fraud-eu\n\
             abcdef200000  counter  0.1.0    100    -\n"
        );
        assert_eq!(
            plugin_table(&json!({"plugins": []})),
            "digest  name  version  size  used by\n"
        );
    }

    #[test]
    fn a_unique_prefix_names_its_plugin() {
        assert_eq!(
            match_prefix(&registry(), "abcdef2").unwrap(),
            digest("abcdef2")
        );
        let error = match_prefix(&registry(), "abcdef").unwrap_err().to_string();
        assert!(error.contains("ambiguous"), "{error}");
        let error = match_prefix(&registry(), "ffffff").unwrap_err().to_string();
        assert_eq!(error, "no plugin's digest starts with ffffff");
    }

    #[test]
    fn a_wasm_path_is_a_file_and_anything_else_a_digest() {
        assert!(matches!(
            PluginArg::parse("x/fraud.wasm"),
            PluginArg::File(_)
        ));
        assert!(matches!(PluginArg::parse("abcdef12"), PluginArg::Digest(_)));
        let file = tempfile::NamedTempFile::new().unwrap();
        let path = file.path().to_str().unwrap();
        assert!(matches!(PluginArg::parse(path), PluginArg::File(_)));
    }
}
