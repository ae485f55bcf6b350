//! Building a JavaScript plugin (a directory with an `app.js`) into a
//! component with componentize-js. The SDK (`guest-sdk/js`) and the
//! contract (`wit/`) are compiled into the `weir` binary and unpacked for
//! each build, so a plugin builds the same wherever the binary runs, against
//! the contract the binary's host speaks.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use super::plugin_build::{build_with_tool, copy_sources, find_tool};

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
    build_with_tool(&dir, out_dir, "JavaScript", "componentize-js", |staged| {
        let mut command = Command::new(&tool);
        command
            .current_dir(&app)
            .arg(APP_MODULE)
            .arg("--wit")
            .arg(&wit)
            .args(["--world-name", "processor", "--disable"])
            .args(DISABLED_FEATURES)
            .arg("--out")
            .arg(staged);
        command
    })
}

/// componentize-js from the directory `scripts/setup.sh` installs it into
/// (`$WEIR_JS_DIR`, else `~/.cache/weir/js-tools`), else from `PATH`.
fn componentize_js() -> anyhow::Result<OsString> {
    if let Some(tool) = find_tool(
        "WEIR_JS_DIR",
        "js-tools",
        "node_modules/.bin/componentize-js",
        "componentize-js",
    ) {
        return Ok(tool);
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
