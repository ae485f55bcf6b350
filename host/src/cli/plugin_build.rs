//! Building a plugin directory into a component: a Rust crate with cargo,
//! a Python plugin (an `app.py`) with componentize-py, a JavaScript plugin
//! (an `app.js`) with componentize-js.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use super::{js_build, python_build};

pub(crate) const WASM_TARGET: &str = "wasm32-wasip2";

/// Builds the plugin in `dir`, a Rust crate (`Cargo.toml`), a Python plugin
/// (`app.py`) or a JavaScript plugin (`app.js`), and returns the component's
/// path.
pub(crate) fn build(dir: &Path) -> anyhow::Result<PathBuf> {
    build_into(dir, None)
}

/// `build`, with the component in `out_dir` (a crate's is copied there
/// from cargo's target directory; a Python or JavaScript plugin's defaults
/// to `DIR/build`).
pub(crate) fn build_into(dir: &Path, out_dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    if !dir.join("Cargo.toml").is_file() && python_build::is_python_plugin(dir) {
        return python_build::build_python(dir, out_dir);
    }
    if !dir.join("Cargo.toml").is_file() && js_build::is_js_plugin(dir) {
        return js_build::build_js(dir, out_dir);
    }
    let built = build_crate(dir)?;
    let Some(out_dir) = out_dir else {
        return Ok(built);
    };
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let out = out_dir.join(built.file_name().context("cargo named no file")?);
    std::fs::copy(&built, &out).with_context(|| format!("copying to {}", out.display()))?;
    Ok(out)
}

/// Builds the crate in `dir` for `wasm32-wasip2` (release) and returns the
/// component's path. Cargo's own diagnostics go to stderr as they come.
fn build_crate(dir: &Path) -> anyhow::Result<PathBuf> {
    let manifest = dir.join("Cargo.toml");
    if !manifest.is_file() {
        bail!(
            "{} has neither a Cargo.toml nor an app.py (or an app.js): a plugin directory \
             is a Rust crate, a Python plugin or a JavaScript plugin",
            dir.display()
        );
    }
    let manifest = manifest
        .canonicalize()
        .with_context(|| format!("resolving {}", manifest.display()))?;
    ensure_wasm_target()?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // From the crate's directory, so that cargo finds the crate's (or its
    // workspace's) `.cargo/config.toml`, where plugin build flags live.
    let output = Command::new(&cargo)
        .current_dir(dir)
        .args([
            "build",
            "--release",
            "--target",
            WASM_TARGET,
            "--message-format=json-render-diagnostics",
            "--manifest-path",
        ])
        .arg(&manifest)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| {
            format!(
                "running {} (is Rust installed? see https://rustup.rs)",
                cargo.to_string_lossy()
            )
        })?;
    if !output.status.success() {
        bail!(
            "building the plugin crate {} failed (see cargo's messages above); \
             if it says the target may not be installed, run `rustup target add {WASM_TARGET}`",
            dir.display()
        );
    }
    find_component(&output.stdout, &manifest).with_context(|| {
        format!(
            "cargo built {} but produced no .wasm component (is its crate-type \"cdylib\"?)",
            dir.display()
        )
    })
}

/// Installs the wasm target through rustup when it is missing, so that the
/// first `weir run` on a fresh machine needs no manual step. Without rustup
/// the build itself reports what is missing.
fn ensure_wasm_target() -> anyhow::Result<()> {
    let Ok(listed) = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
    else {
        return Ok(());
    };
    if !listed.status.success()
        || String::from_utf8_lossy(&listed.stdout)
            .lines()
            .any(|t| t.trim() == WASM_TARGET)
    {
        return Ok(());
    }
    eprintln!("weir: installing the {WASM_TARGET} target with rustup (plugins compile to it)");
    let status = Command::new("rustup")
        .args(["target", "add", WASM_TARGET])
        .stdin(Stdio::null())
        .status()
        .context("running rustup")?;
    if !status.success() {
        bail!("`rustup target add {WASM_TARGET}` failed; plugins cannot be built without it");
    }
    Ok(())
}

/// The `.wasm` artifact of the package whose manifest is `manifest`, from
/// cargo's JSON messages.
fn find_component(messages: &[u8], manifest: &Path) -> Option<PathBuf> {
    let mut found = None;
    for line in messages.split(|&b| b == b'\n') {
        let Ok(message) = serde_json::from_slice::<serde_json::Value>(line) else {
            continue;
        };
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        if message["manifest_path"].as_str().map(Path::new) != Some(manifest) {
            continue;
        }
        for file in message["filenames"].as_array().into_iter().flatten() {
            if let Some(file) = file.as_str().filter(|f| f.ends_with(".wasm")) {
                found = Some(PathBuf::from(file));
            }
        }
    }
    found
}

/// Copies the plugin's directory `from` to `to`, without build products
/// (`build/`, `__pycache__/`) and hidden entries: Python and JavaScript
/// plugins are built from such a copy, so that their toolchains' droppings
/// stay out of the author's directory.
/// A plugin's component, built by a tool of another language's (`tool`,
/// for `language` plugins) into `OUT_DIR/NAME.wasm` (NAME: the directory's
/// name; `OUT_DIR` defaults to `DIR/build`). `command` sets the tool up to
/// write the component to the path it is given; the tool's messages go to
/// stderr as they come.
pub(crate) fn build_with_tool(
    dir: &Path,
    out_dir: Option<&Path>,
    language: &str,
    tool: &str,
    command: impl FnOnce(&Path) -> Command,
) -> anyhow::Result<PathBuf> {
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
    let mut command = command(&staged);
    let status = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .status()
        .with_context(|| format!("running {}", command.get_program().to_string_lossy()))?;
    if !status.success() || !staged.is_file() {
        bail!(
            "building the {language} plugin {} failed (see {tool}'s messages above)",
            dir.display()
        );
    }
    let out = out_dir.join(format!("{name}.wasm"));
    std::fs::rename(&staged, &out).with_context(|| format!("writing {}", out.display()))?;
    Ok(out)
}

/// A build tool: `RELATIVE` below where `scripts/setup.sh` installs it
/// (`$ENV_VAR`, else `~/.cache/weir/DEFAULT_DIR`) if it is there, else
/// `name` if it runs from `PATH`.
pub(crate) fn find_tool(
    env_var: &str,
    default_dir: &str,
    relative: &str,
    name: &str,
) -> Option<OsString> {
    let installed = std::env::var_os(env_var).map(PathBuf::from).or_else(|| {
        std::env::var_os("HOME")
            .map(|home| PathBuf::from(home).join(".cache/weir").join(default_dir))
    });
    if let Some(tool) = installed
        .map(|dir| dir.join(relative))
        .filter(|tool| tool.is_file())
    {
        return Some(tool.into_os_string());
    }
    let on_path = Command::new(name)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|out| out.status.success());
    on_path.then(|| name.into())
}

pub(crate) fn copy_sources(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        let skip =
            name.to_string_lossy().starts_with('.') || name == "build" || name == "__pycache__";
        if skip {
            continue;
        }
        let (source, target) = (entry.path(), to.join(&name));
        if entry.file_type()?.is_dir() {
            copy_sources(&source, &target)?;
        } else {
            std::fs::copy(&source, &target)
                .with_context(|| format!("copying {}", source.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_component_is_found_among_cargo_messages() {
        let messages = br#"{"reason":"compiler-artifact","manifest_path":"/x/dep/Cargo.toml","filenames":["/t/libdep.rlib"]}
{"reason":"compiler-artifact","manifest_path":"/x/p/Cargo.toml","filenames":["/t/p.wasm","/t/libp.rlib"]}
{"reason":"build-finished","success":true}"#;
        assert_eq!(
            find_component(messages, Path::new("/x/p/Cargo.toml")),
            Some(PathBuf::from("/t/p.wasm"))
        );
        assert_eq!(find_component(messages, Path::new("/x/q/Cargo.toml")), None);
    }
}
