//! Running the real `weir` binary on a spec in a scratch directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const WEIR: &str = env!("CARGO_BIN_EXE_weir");

/// One `weir run` in its own directory; specs use paths relative to it.
pub struct Run {
    pub dir: tempfile::TempDir,
    pub output: Output,
}

impl Run {
    pub fn succeeded(&self) -> bool {
        self.output.status.success()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    /// The `--summary-json` of the run.
    pub fn summary(&self) -> Value {
        let text = std::fs::read_to_string(self.dir.path().join("summary.json"))
            .unwrap_or_else(|e| panic!("no summary ({e}); stderr:\n{}", self.stderr()));
        serde_json::from_str(&text).unwrap()
    }

    pub fn output_count(&self, output: &str) -> u64 {
        self.summary()["outputs"][output].as_u64().unwrap_or(0)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The JSON lines a file sink wrote.
    pub fn lines(&self, name: &str) -> Vec<Value> {
        read_jsonl(&self.path(name))
    }
}

pub fn read_jsonl(path: &Path) -> Vec<Value> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("bad JSON line {line:?}: {e}"))
        })
        .collect()
}

/// Writes `files` and `spec` (as pipeline.toml) into a new directory and runs
/// `weir run` there.
pub fn weir_run(spec: &str, files: &[(&str, &str)]) -> Run {
    weir_run_with_env(spec, files, &[])
}

/// `weir_run` with extra environment variables for the `weir` process.
pub fn weir_run_with_env(spec: &str, files: &[(&str, &str)], env: &[(&str, &Path)]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in files {
        std::fs::write(dir.path().join(name), content).unwrap();
    }
    std::fs::write(dir.path().join("pipeline.toml"), spec).unwrap();
    let output = Command::new(WEIR)
        .current_dir(dir.path())
        .args([
            "run",
            "--quiet",
            "--summary-json",
            "summary.json",
            "pipeline.toml",
        ])
        .env("WEIR_CACHE_DIR", cache_dir())
        .envs(env.iter().copied())
        .output()
        .expect("running weir");
    Run { dir, output }
}

/// Compiled components are cached across tests, as across runs.
pub fn cache_dir() -> PathBuf {
    std::env::temp_dir().join("weir-e2e-cache")
}

/// A TOML string literal for a path.
pub fn toml_path(path: &str) -> String {
    format!("{path:?}")
}

/// Builds `plugins/NAME` (a Python or JavaScript plugin, made with `tool`)
/// with `weir plugin build`, once per test run, into the target directory
/// (not the source tree, whose changes would make the next `cargo test`
/// rebuild the plugin artifacts).
pub fn build_plugin(
    name: &str,
    tool: &str,
    slot: &'static std::sync::OnceLock<PathBuf>,
) -> &'static str {
    slot.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../plugins")
            .join(name);
        let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("built-plugins");
        let output = Command::new(WEIR)
            .args(["plugin", "build"])
            .arg(&dir)
            .arg("--out-dir")
            .arg(&out_dir)
            .output()
            .expect("running weir plugin build");
        assert!(
            output.status.success(),
            "weir plugin build {} failed (is {tool} installed? run scripts/setup.sh):\n{}",
            dir.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        let built = PathBuf::from(String::from_utf8(output.stdout).unwrap().trim());
        assert!(built.starts_with(&out_dir), "{}", built.display());
        built
    })
    .to_str()
    .unwrap()
}

/// The ids of the `chk-<id>` directories in `dir` (none if it is missing).
pub fn checkpoint_ids(dir: &Path) -> impl Iterator<Item = u64> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix("chk-")?
                .parse::<u64>()
                .ok()
        })
}

/// The newest checkpoint id on disk of the pipeline `fraud` run in `dir`
/// (0 if none).
pub fn newest_checkpoint(dir: &Path) -> u64 {
    checkpoint_ids(&dir.join("checkpoints/fraud"))
        .max()
        .unwrap_or(0)
}

/// Waits until the run in `dir` has completed a checkpoint newer than
/// `after`, and returns its id.
pub fn wait_for_checkpoint(dir: &Path, after: u64, child: &mut Child) -> Option<u64> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(120) {
        if child.try_wait().unwrap().is_some() {
            return None;
        }
        let newest = newest_checkpoint(dir);
        if newest > after {
            return Some(newest);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no new checkpoint within 120 s");
}
