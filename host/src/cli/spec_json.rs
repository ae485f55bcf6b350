//! A pipeline spec file (TOML or JSON) as the JSON body `weir serve` takes,
//! and the one rewrite the client makes to it: naming the plugin by digest.
//! It never validates a spec: the server does, and names the field.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde_json::{Map, Value};

/// Reads `path` as JSON (`.json`) or TOML (anything else, as `weir run`).
pub(crate) fn read_spec(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the spec {}", path.display()))?;
    let is_json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    if is_json {
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
    } else {
        toml_to_json(&text).with_context(|| format!("{} is not TOML", path.display()))
    }
}

pub(crate) fn toml_to_json(text: &str) -> anyhow::Result<Value> {
    let table: toml::Table = toml::from_str(text)?;
    Ok(serde_json::to_value(table)?)
}

/// What the spec's `[plugin]` points at, before it is named by digest.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PluginSource {
    /// Already in the registry.
    Digest(String),
    /// A component file to upload.
    Wasm(PathBuf),
    /// A crate to build into a component, then upload.
    Crate(PathBuf),
}

/// The plugin of `spec`: its `digest` if set, else its `wasm`, else its
/// `crate`; `None` without any (the server will say what is missing).
pub(crate) fn plugin_source(spec: &Value) -> Option<PluginSource> {
    let plugin = spec.get("plugin")?;
    let field = |name: &str| plugin.get(name).and_then(Value::as_str);
    if let Some(digest) = field("digest") {
        return Some(PluginSource::Digest(digest.to_owned()));
    }
    if let Some(wasm) = field("wasm") {
        return Some(PluginSource::Wasm(wasm.into()));
    }
    field("crate").map(|dir| PluginSource::Crate(dir.into()))
}

/// Names the plugin by `digest`, keeping its `config` and dropping the
/// local ways of naming it (`wasm`, `crate`), which the server does not take.
pub(crate) fn set_plugin_digest(spec: &mut Value, digest: &str) -> anyhow::Result<()> {
    let Some(spec) = spec.as_object_mut() else {
        bail!("the spec is not a table/object");
    };
    let plugin = spec
        .entry("plugin")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(plugin) = plugin.as_object_mut() else {
        bail!("`plugin` in the spec is not a table/object");
    };
    plugin.remove("wasm");
    plugin.remove("crate");
    plugin.insert("digest".into(), Value::String(digest.to_owned()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const TOML_SPEC: &str = r#"
name = "fraud"
parallelism = 2
[source]
kind = "http"
[key_by]
field = "/user_id"
[plugin]
wasm = "fraud_detector.wasm"
config = { threshold = 5, window_ms = 60000, ratio = 0.5, tags = ["a"] }
[[sink]]
output = "alerts"
kind = "file"
path = "alerts.jsonl"
"#;

    #[test]
    fn a_toml_spec_becomes_the_same_json() {
        let spec = toml_to_json(TOML_SPEC).unwrap();
        assert_eq!(
            spec,
            json!({
                "name": "fraud",
                "parallelism": 2,
                "source": {"kind": "http"},
                "key_by": {"field": "/user_id"},
                "plugin": {
                    "wasm": "fraud_detector.wasm",
                    "config": {"threshold": 5, "window_ms": 60000, "ratio": 0.5, "tags": ["a"]}
                },
                "sink": [{"output": "alerts", "kind": "file", "path": "alerts.jsonl"}]
            })
        );
    }

    #[test]
    fn a_spec_file_is_read_by_its_extension() {
        let dir = tempfile::tempdir().unwrap();
        let toml = dir.path().join("p.toml");
        std::fs::write(&toml, TOML_SPEC).unwrap();
        let json = dir.path().join("p.json");
        std::fs::write(&json, read_spec(&toml).unwrap().to_string()).unwrap();
        assert_eq!(read_spec(&json).unwrap(), read_spec(&toml).unwrap());
        let broken = dir.path().join("broken.json");
        std::fs::write(&broken, TOML_SPEC).unwrap();
        let error = read_spec(&broken).unwrap_err();
        assert!(format!("{error:#}").contains("is not JSON"), "{error:#}");
    }

    #[test]
    fn the_digest_replaces_wasm_and_crate_and_keeps_the_config() {
        let mut spec = toml_to_json(TOML_SPEC).unwrap();
        spec["plugin"]["crate"] = json!("plugins/fraud-detector");
        set_plugin_digest(&mut spec, "ab12").unwrap();
        assert_eq!(
            spec["plugin"],
            json!({
                "digest": "ab12",
                "config": {"threshold": 5, "window_ms": 60000, "ratio": 0.5, "tags": ["a"]}
            })
        );
        assert_eq!(spec["name"], "fraud", "the rest is untouched");
    }

    #[test]
    fn a_spec_without_a_plugin_section_gets_one() {
        let mut spec = json!({"name": "p"});
        set_plugin_digest(&mut spec, "ab12").unwrap();
        assert_eq!(spec["plugin"], json!({"digest": "ab12"}));
        assert!(set_plugin_digest(&mut json!([]), "ab12").is_err());
    }

    #[test]
    fn the_plugin_source_prefers_the_digest_then_wasm_then_crate() {
        let spec = |plugin: Value| json!({ "plugin": plugin });
        assert_eq!(
            plugin_source(&spec(json!({"digest": "d", "wasm": "p.wasm"}))),
            Some(PluginSource::Digest("d".into()))
        );
        assert_eq!(
            plugin_source(&spec(json!({"wasm": "p.wasm", "crate": "c"}))),
            Some(PluginSource::Wasm("p.wasm".into()))
        );
        assert_eq!(
            plugin_source(&spec(json!({"crate": "c"}))),
            Some(PluginSource::Crate("c".into()))
        );
        assert_eq!(plugin_source(&spec(json!({"config": {}}))), None);
        assert_eq!(plugin_source(&json!({})), None);
    }
}
