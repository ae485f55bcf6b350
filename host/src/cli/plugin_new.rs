//! `weir plugin new NAME --lang rust|python|js`: a ready-to-build plugin
//! project from the templates in `guest-sdk/templates`, compiled into the
//! binary: the plugin (state, a timer, a side output), sample events, and a
//! sample test (`weir plugin test --expect`, plus native tests for Rust).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Lang {
    Rust,
    Python,
    Js,
}

#[derive(clap::Args)]
pub(crate) struct NewArgs {
    /// The plugin's name: its directory, and its crate or component name
    /// (lowercase letters, digits, `-` and `_`).
    name: String,
    /// The language to write it in.
    #[arg(long, value_enum)]
    lang: Lang,
    /// Create the plugin's directory in this one.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// (Rust) The `weir-sdk` crate to depend on; by default the one of the
    /// checkout this `weir` was built from.
    #[arg(long, value_name = "DIR")]
    sdk: Option<PathBuf>,
}

/// Where this binary's own checkout keeps the Rust SDK.
const BUILT_SDK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../guest-sdk");

const README: &str = include_str!("../../../guest-sdk/templates/shared/README.md");
const EVENTS: &str = include_str!("../../../guest-sdk/templates/shared/events.jsonl");
const EXPECTED_JSON_STATE: &str = include_str!("../../../guest-sdk/templates/shared/expected.json");
const GITIGNORE: &str = include_str!("../../../guest-sdk/templates/shared/gitignore");

/// (path in the project, template) of each language's own files.
fn files(lang: Lang) -> &'static [(&'static str, &'static str)] {
    match lang {
        Lang::Rust => &[
            (
                "Cargo.toml",
                include_str!("../../../guest-sdk/templates/rust/Cargo.toml"),
            ),
            (
                ".cargo/config.toml",
                include_str!("../../../guest-sdk/templates/rust/.cargo/config.toml"),
            ),
            (
                "src/lib.rs",
                include_str!("../../../guest-sdk/templates/rust/src/lib.rs"),
            ),
            (
                "expected.json",
                include_str!("../../../guest-sdk/templates/rust/expected.json"),
            ),
            // The versions Weir itself is built and tested with.
            ("Cargo.lock", include_str!("../../../Cargo.lock")),
        ],
        Lang::Python => &[
            (
                "app.py",
                include_str!("../../../guest-sdk/templates/python/app.py"),
            ),
            // Python and JavaScript states are JSON: one result for both.
            ("expected.json", EXPECTED_JSON_STATE),
        ],
        Lang::Js => &[
            (
                "app.js",
                include_str!("../../../guest-sdk/templates/js/app.js"),
            ),
            // Python and JavaScript states are JSON: one result for both.
            ("expected.json", EXPECTED_JSON_STATE),
        ],
    }
}

pub(crate) fn new(args: NewArgs) -> anyhow::Result<()> {
    check_name(&args.name)?;
    let root = args.dir.join(&args.name);
    if root.exists() && root.read_dir().map_or(true, |mut d| d.next().is_some()) {
        bail!("{} already exists and is not empty", root.display());
    }
    let (lang, sdk) = match args.lang {
        Lang::Rust => ("Rust", toml_string(&rust_sdk(args.sdk.as_deref())?)),
        Lang::Python => ("Python", String::new()),
        Lang::Js => ("JavaScript", String::new()),
    };
    let fill = |template: &str| {
        template
            .replace("{{name}}", &args.name)
            .replace("{{lang}}", lang)
            .replace("{{sdk}}", &sdk)
    };
    let common = [
        ("README.md", README),
        ("events.jsonl", EVENTS),
        (".gitignore", GITIGNORE),
    ];
    for (path, template) in common.iter().chain(files(args.lang)) {
        let path = root.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, fill(template))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    println!("{}", root.display());
    eprintln!(
        "created a {lang} plugin in {dir}; try:\n  cd {dir}\n  weir plugin build .\n  \
         weir plugin test . --events events.jsonl --expect expected.json",
        dir = root.display()
    );
    Ok(())
}

/// A name that works as a directory, a crate and a component file name.
fn check_name(name: &str) -> anyhow::Result<()> {
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && name.len() <= 64;
    if !valid {
        bail!(
            "invalid plugin name {name:?}: use lowercase letters, digits, `-` and `_`, \
             starting with a letter (at most 64)"
        );
    }
    Ok(())
}

/// The `weir-sdk` crate a Rust plugin depends on, as an absolute path.
fn rust_sdk(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let dir = given.unwrap_or(Path::new(BUILT_SDK));
    match dir.canonicalize() {
        Ok(dir) if dir.join("Cargo.toml").is_file() => Ok(dir),
        _ => bail!(
            "the Rust SDK (the weir-sdk crate) is not at {}: pass --sdk with the `guest-sdk` \
             directory of a Weir checkout",
            dir.display()
        ),
    }
}

/// `s` as a TOML string (quoted and escaped).
fn toml_string(path: &Path) -> String {
    toml::Value::String(path.display().to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_fit_a_crate_and_a_file() {
        for good in ["counter", "fraud-rules", "a_b2"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Counter",
            "2fast",
            "a/b",
            "..",
            "with space",
            &"a".repeat(65),
        ] {
            let error = check_name(bad).unwrap_err().to_string();
            assert!(error.contains("invalid plugin name"), "{bad}: {error}");
        }
    }

    #[test]
    fn the_sdk_path_is_quoted_for_toml() {
        for path in ["/a/b", "/a/b \"c\"", "/it's/here", r"C:\sdk"] {
            let line = format!("path = {}", toml_string(Path::new(path)));
            let parsed: toml::Table = toml::from_str(&line).unwrap();
            assert_eq!(parsed["path"].as_str(), Some(path), "{line}");
        }
    }
}
