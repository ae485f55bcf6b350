//! Building a Python plugin (a directory with an `app.py`) into a component
//! with componentize-py. The SDK (`guest-sdk/python`) and the contract
//! (`wit/`) are compiled into the `weir` binary and unpacked for each build,
//! so a plugin builds the same wherever the binary runs, against the
//! contract the binary's host speaks.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use super::plugin_build::{build_with_tool, copy_sources, find_tool};

/// The module componentize-py wraps: `app.py` in the plugin's directory.
pub(crate) const APP_MODULE: &str = "app";

/// The componentize-py release Python plugins are built and tested with.
const COMPONENTIZE_PY_VERSION: &str = "0.17.2";

/// The contract and the Python SDK, as (path, text) below the build's root.
const SOURCES: &[(&str, &str)] = &[
    ("wit/weir.wit", include_str!("../../../wit/weir.wit")),
    (
        "python/weir_sdk/__init__.py",
        include_str!("../../../guest-sdk/python/weir_sdk/__init__.py"),
    ),
    (
        "python/weir_sdk/_batch.py",
        include_str!("../../../guest-sdk/python/weir_sdk/_batch.py"),
    ),
    (
        "python/weir_sdk/context.py",
        include_str!("../../../guest-sdk/python/weir_sdk/context.py"),
    ),
    (
        "python/weir_sdk/processor.py",
        include_str!("../../../guest-sdk/python/weir_sdk/processor.py"),
    ),
    (
        "python/weir_sdk/state.py",
        include_str!("../../../guest-sdk/python/weir_sdk/state.py"),
    ),
];

/// Whether `dir` holds a Python plugin.
pub(crate) fn is_python_plugin(dir: &Path) -> bool {
    dir.join(format!("{APP_MODULE}.py")).is_file()
}

/// Builds the Python plugin in `dir` into `OUT_DIR/NAME.wasm` (NAME: the
/// directory's name; `OUT_DIR` defaults to `DIR/build`) and returns that
/// path. componentize-py's messages go to stderr as they come.
pub(crate) fn build_python(dir: &Path, out_dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    let dir = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    if !is_python_plugin(&dir) {
        bail!(
            "{} has no {APP_MODULE}.py: a Python plugin's directory holds its module `{APP_MODULE}`",
            dir.display()
        );
    }
    let tool = componentize_py()?;
    let sources = tempfile::tempdir().context("creating a directory for the SDK")?;
    for (path, text) in SOURCES {
        let file = sources.path().join(path);
        std::fs::create_dir_all(file.parent().expect("SDK files are in directories"))?;
        std::fs::write(&file, text).with_context(|| format!("writing {}", file.display()))?;
    }
    // componentize-py writes __pycache__ beside the modules it reads: it
    // reads a copy, so the plugin's directory stays as its author left it.
    let app = sources.path().join("app");
    copy_sources(&dir, &app)?;
    build_with_tool(&dir, out_dir, "Python", "componentize-py", |staged| {
        let mut command = Command::new(&tool);
        command
            .current_dir(&app)
            .arg("--quiet")
            .arg("--wit-path")
            .arg(sources.path().join("wit"))
            .args(["--world", "processor", "componentize", APP_MODULE])
            .arg("--python-path")
            .arg(&app)
            .arg("--python-path")
            .arg(sources.path().join("python"))
            .arg("--output")
            .arg(staged);
        command
    })
}

/// componentize-py from the venv `scripts/setup.sh` makes
/// (`$WEIR_PY_VENV`, else `~/.cache/weir/py-venv`), else from `PATH`.
fn componentize_py() -> anyhow::Result<OsString> {
    if let Some(tool) = find_tool(
        "WEIR_PY_VENV",
        "py-venv",
        "bin/componentize-py",
        "componentize-py",
    ) {
        return Ok(tool);
    }
    bail!(
        "componentize-py is missing: Python plugins are built with it. Install it with \
         `scripts/setup.sh` (a venv at $WEIR_PY_VENV or ~/.cache/weir/py-venv), or \
         `pip install componentize-py=={COMPONENTIZE_PY_VERSION}` into a venv on PATH"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_of_the_python_sdk_is_compiled_in() {
        let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk/python/weir_sdk");
        let mut on_disk: Vec<String> = std::fs::read_dir(sdk)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".py"))
            .map(|name| format!("python/weir_sdk/{name}"))
            .collect();
        on_disk.sort();
        let mut embedded: Vec<&str> = SOURCES
            .iter()
            .map(|(path, _)| *path)
            .filter(|path| path.starts_with("python/"))
            .collect();
        embedded.sort();
        assert_eq!(embedded, on_disk);
    }
}
