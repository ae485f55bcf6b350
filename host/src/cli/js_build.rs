//! Building a JavaScript plugin (a directory with an `app.js`) into a
//! component with componentize-js. The SDK (`guest-sdk/js`) and the
//! contract (`wit/`) are compiled into the `weir` binary and unpacked for
//! each build, so a plugin builds the same wherever the binary runs, against
//! the contract the binary's host speaks.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use super::plugin_build::copy_sources;

/// The module componentize-js wraps: `app.js` in the plugin's directory.
pub(crate) const APP_MODULE: &str = "app.js";

/// The componentize-js release JavaScript plugins are built and tested with.
const COMPONENTIZE_JS_VERSION: &str = "0.23.0";

/// The name plugins import the SDK by (`import … from "weir-sdk"`).
/// componentize-js resolves a bare module name as a path from the directory
/// it runs in, so the SDK is unpacked there as a file of that name.
const SDK_MODULE: &str = "weir-sdk";

/// The contract and the JavaScript SDK.
const WIT: &str = include_str!("../../../wit/weir.wit");
const SDK: &str = include_str!("../../../guest-sdk/js/index.js");

/// What the component must not import: StarlingMonkey's WASI features
/// (stdio, random, clocks, wasi:http and its fetch event). With them
/// disabled the component imports only the `weir:plugin` interfaces.
const DISABLED_FEATURES: &[&str] = &["stdio", "random", "clocks", "http", "fetch-event"];

/// Whether `dir` holds a JavaScript plugin.
pub(crate) fn is_js_plugin(dir: &Path) -> bool {
    dir.join(APP_MODULE).is_file()
}

/// Builds the JavaScript plugin in `dir` into `OUT_DIR/NAME.wasm` (NAME: the
/// directory's name; `OUT_DIR` defaults to `DIR/build`) and returns that
/// path. componentize-js's messages go to stderr as they come.
pub(crate) fn build_js(dir: &Path, out_dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    let dir = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    if !is_js_plugin(&dir) {
        bail!(
            "{} has no {APP_MODULE}: a JavaScript plugin's directory holds its module `{APP_MODULE}`",
            dir.display()
        );
    }
    let tool = componentize_js()?;
    let sources = tempfile::tempdir().context("creating a directory for the SDK")?;
    let wit = sources.path().join("weir.wit");
    std::fs::write(&wit, WIT).with_context(|| format!("writing {}", wit.display()))?;
    // componentize-js reads a copy, beside which the SDK is unpacked, so the
    // plugin's directory stays as its author left it.
    let app = sources.path().join("app");
    copy_sources(&dir, &app)?;
    let sdk = app.join(SDK_MODULE);
    std::fs::write(&sdk, SDK).with_context(|| format!("writing {}", sdk.display()))?;
    let name = dir.file_name().map_or_else(
        || "plugin".into(),
        |n| n.to_string_lossy().replace('-', "_"),
    );
    let out_dir = out_dir.map_or_else(|| dir.join("build"), Path::to_path_buf);
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    // Built beside the result and renamed, so that a concurrent build of
    // the same plugin never leaves (or reads) half a component.
    let staging = tempfile::Builder::new()
        .prefix(".building-")
        .tempdir_in(&out_dir)
        .with_context(|| format!("creating a directory in {}", out_dir.display()))?;
    let staged = staging.path().join(format!("{name}.wasm"));
    let status = Command::new(&tool)
        .current_dir(&app)
        .arg(APP_MODULE)
        .arg("--wit")
        .arg(&wit)
        .args(["--world-name", "processor", "--disable"])
        .args(DISABLED_FEATURES)
        .arg("--out")
        .arg(&staged)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .status()
        .with_context(|| format!("running {}", tool.to_string_lossy()))?;
    if !status.success() || !staged.is_file() {
        bail!(
            "building the JavaScript plugin {} failed (see componentize-js's messages above)",
            dir.display()
        );
    }
    let out = out_dir.join(format!("{name}.wasm"));
    std::fs::rename(&staged, &out).with_context(|| format!("writing {}", out.display()))?;
    Ok(out)
}

/// componentize-js from the directory `scripts/setup.sh` installs it into
/// (`$WEIR_JS_DIR`, else `~/.cache/weir/js-tools`), else from `PATH`.
fn componentize_js() -> anyhow::Result<OsString> {
    let tools = std::env::var_os("WEIR_JS_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/weir/js-tools"))
        });
    if let Some(tool) = tools
        .map(|tools| tools.join("node_modules/.bin/componentize-js"))
        .filter(|tool| tool.is_file())
    {
        return Ok(tool.into_os_string());
    }
    let on_path = Command::new("componentize-js")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|out| out.status.success());
    if on_path {
        return Ok("componentize-js".into());
    }
    bail!(
        "componentize-js is missing: JavaScript plugins are built with it (and Node.js). \
         Install it with `scripts/setup.sh` (into $WEIR_JS_DIR or ~/.cache/weir/js-tools), \
         or `npm install --prefix DIR @bytecodealliance/componentize-js@{COMPONENTIZE_JS_VERSION}` \
         with DIR/node_modules/.bin on PATH"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_javascript_sdk_is_one_module_and_it_is_compiled_in() {
        let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk/js");
        let modules: Vec<String> = std::fs::read_dir(&sdk)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".js") || name.ends_with(".mjs"))
            .collect();
        // The build unpacks one file as `weir-sdk`: a second module would be missing.
        assert_eq!(modules, ["index.js"]);
        assert_eq!(SDK, std::fs::read_to_string(sdk.join("index.js")).unwrap());
        assert!(SDK.contains("export function exportProcessor"));
    }
}
