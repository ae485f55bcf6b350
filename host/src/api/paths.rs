//! Where a spec or request sent to `weir serve` may point: this module owns
//! the confinement of every server path an API client names (a file
//! source's and a file sink's `path`, `restore_from`, a savepoint's `to`,
//! a start's `from`).
//!
//! A path resolves after symlinks and `..` (an existing path is
//! canonicalized; a new file's parent must exist and is canonicalized) and
//! must then lie inside `<data-dir>/files/` (where relative paths resolve)
//! or inside a root the operator allowed at start (`weir serve
//! --allow-path DIR`). Nothing resolves into the server's own folders of the
//! data dir (plugins, pipelines, state, checkpoints, compiled artifacts,
//! ingest logs), not even through an allowed root that contains the data
//! dir; snapshots the server made (`savepoints/`, `checkpoints/`) may be
//! read back as a start's `from` or a spec's `restore_from`. `weir run`
//! never comes here: a local run keeps free paths.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The folder of the data dir that holds users' files.
pub const FILES_DIR: &str = "files";
/// The server's own snapshot folders, readable as a restore source.
const SNAPSHOT_DIRS: [&str; 2] = ["savepoints", "checkpoints"];
/// The exactly-once file sink stages a file's epochs in a sibling folder
/// `.<name>.weir-staging` that it empties on open: no path may name one.
const STAGING_SUFFIX: &str = ".weir-staging";

/// What the server will do with a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read a regular file (a file source).
    ReadFile,
    /// Read a checkpoint or savepoint directory (`restore_from`, `from`).
    ReadSnapshot,
    /// Create or truncate a regular file (a file sink).
    WriteFile,
    /// Create a new directory (a savepoint's `to`).
    CreateDir,
}

#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error("{field}: {path} cannot be resolved: {source}")]
    Unresolvable {
        field: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{field}: {path} resolves to {resolved}, outside the folders this server lets API \
         clients use ({allowed}); use a path under {files} or ask the operator to start \
         weir serve with --allow-path"
    )]
    Outside {
        field: String,
        path: PathBuf,
        resolved: PathBuf,
        allowed: String,
        files: PathBuf,
    },
    #[error(
        "{field}: {path} resolves to {resolved}, inside the server's own folders of the data \
         dir; only {files} holds users' files"
    )]
    ServerFolder {
        field: String,
        path: PathBuf,
        resolved: PathBuf,
        files: PathBuf,
    },
    #[error("{field}: {path} {problem}")]
    Unusable {
        field: String,
        path: PathBuf,
        problem: &'static str,
    },
    #[error("--allow-path {path}: {problem}")]
    BadRoot { path: PathBuf, problem: String },
}

/// The folders a server lets API clients name, all canonical.
#[derive(Debug, Clone)]
pub struct PathPolicy {
    data_dir: PathBuf,
    files: PathBuf,
    snapshots: Vec<PathBuf>,
    allowed: Vec<PathBuf>,
}

impl PathPolicy {
    /// The policy of a server on `data_dir` (which must exist) with the
    /// operator's extra roots; creates `<data-dir>/files/`.
    pub fn new(data_dir: &Path, allow: &[PathBuf]) -> Result<Self, PathError> {
        let files = data_dir.join(FILES_DIR);
        std::fs::create_dir_all(&files).map_err(|source| PathError::Unresolvable {
            field: "--data-dir".into(),
            path: files.clone(),
            source,
        })?;
        let canonical = |path: &Path| {
            std::fs::canonicalize(path).map_err(|source| PathError::Unresolvable {
                field: "--data-dir".into(),
                path: path.to_owned(),
                source,
            })
        };
        let data_dir = canonical(data_dir)?;
        let files = canonical(&files)?;
        let snapshots = SNAPSHOT_DIRS.iter().map(|d| data_dir.join(d)).collect();
        let mut allowed = Vec::new();
        for root in allow {
            let resolved = std::fs::canonicalize(root).map_err(|e| PathError::BadRoot {
                path: root.clone(),
                problem: format!("cannot be resolved: {e}"),
            })?;
            if !resolved.is_dir() {
                return Err(PathError::BadRoot {
                    path: root.clone(),
                    problem: "is not a directory".into(),
                });
            }
            if resolved.starts_with(&data_dir) && !resolved.starts_with(&files) {
                return Err(PathError::BadRoot {
                    path: root.clone(),
                    problem: format!(
                        "lies inside the server's own folders of the data dir {}",
                        data_dir.display()
                    ),
                });
            }
            allowed.push(resolved);
        }
        Ok(Self {
            data_dir,
            files,
            snapshots,
            allowed,
        })
    }

    /// `<data-dir>/files/`, canonical: where relative paths resolve.
    pub fn files_dir(&self) -> &Path {
        &self.files
    }

    /// Resolves `path` (named by the request field `field`) for `access`:
    /// the canonical path the server will use, or why it may not.
    pub fn resolve(&self, field: &str, path: &Path, access: Access) -> Result<PathBuf, PathError> {
        let unusable = |problem| PathError::Unusable {
            field: field.to_owned(),
            path: path.to_owned(),
            problem,
        };
        let unresolvable = |source| PathError::Unresolvable {
            field: field.to_owned(),
            path: path.to_owned(),
            source,
        };
        if path.as_os_str().is_empty() {
            return Err(unusable("is empty"));
        }
        let joined = if path.is_absolute() {
            path.to_owned()
        } else {
            self.files.join(path)
        };
        let creates = matches!(access, Access::WriteFile | Access::CreateDir);
        let resolved = match std::fs::canonicalize(&joined) {
            Ok(resolved) => resolved,
            Err(e) if creates && e.kind() == std::io::ErrorKind::NotFound => {
                // A dangling symlink would be followed by the create.
                if joined.symlink_metadata().is_ok() {
                    return Err(unusable("is a symlink to nothing"));
                }
                let (Some(parent), Some(name)) = (joined.parent(), joined.file_name()) else {
                    return Err(unusable("names no file"));
                };
                std::fs::canonicalize(parent)
                    .map_err(unresolvable)?
                    .join(name)
            }
            Err(e) => return Err(unresolvable(e)),
        };
        if resolved
            .components()
            .any(|c| c.as_os_str().to_string_lossy().ends_with(STAGING_SUFFIX))
        {
            return Err(unusable("lies in a file sink's staging folder"));
        }
        let in_files = resolved.starts_with(&self.files);
        let server_snapshot = access == Access::ReadSnapshot
            && self.snapshots.iter().any(|s| resolved.starts_with(s));
        if !in_files && !server_snapshot {
            if resolved.starts_with(&self.data_dir) {
                return Err(PathError::ServerFolder {
                    field: field.to_owned(),
                    path: path.to_owned(),
                    resolved,
                    files: self.files.clone(),
                });
            }
            if !self.allowed.iter().any(|root| resolved.starts_with(root)) {
                return Err(PathError::Outside {
                    field: field.to_owned(),
                    path: path.to_owned(),
                    resolved,
                    allowed: self.describe_roots(),
                    files: self.files.clone(),
                });
            }
        }
        let meta = std::fs::metadata(&resolved).ok();
        match access {
            Access::ReadFile if !meta.as_ref().is_some_and(|m| m.is_file()) => {
                Err(unusable("is not a regular file"))
            }
            Access::ReadSnapshot if !meta.as_ref().is_some_and(|m| m.is_dir()) => {
                Err(unusable("is not a directory"))
            }
            // A sink writing into a savepoint or checkpoint would let a
            // plugin's output replace files a later `start {"from"}` loads.
            Access::WriteFile
                if resolved
                    .ancestors()
                    .skip(1)
                    .any(|dir| dir.join(crate::checkpoint::MANIFEST).exists()) =>
            {
                Err(unusable("lies in a savepoint or checkpoint folder"))
            }
            Access::WriteFile => match meta {
                Some(m) if !m.is_file() => Err(unusable("is not a regular file")),
                // Another name of the same file may lie anywhere.
                Some(m) if m.nlink() > 1 => Err(unusable("has other hard links")),
                _ => Ok(resolved),
            },
            Access::CreateDir if meta.is_some() => Err(unusable("already exists")),
            _ => Ok(resolved),
        }
    }

    fn describe_roots(&self) -> String {
        let mut roots = vec![self.files.display().to_string()];
        roots.extend(self.allowed.iter().map(|r| r.display().to_string()));
        roots.join(", ")
    }
}

/// The files one pipeline reads and writes, resolved: what two pipelines
/// must not share.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileClaims {
    pub source: Option<PathBuf>,
    /// (field, path) of each file sink.
    pub sinks: Vec<(String, PathBuf)>,
}

impl FileClaims {
    /// Why this pipeline's sinks clash with each other or with its source:
    /// two names of one file (a symlink, `..`) that the spec's own check of
    /// the literal paths cannot see.
    pub fn own_clash(&self) -> Option<String> {
        for (i, (field, path)) in self.sinks.iter().enumerate() {
            if self.source.as_ref() == Some(path) {
                return Some(format!(
                    "{field}: {} is this pipeline's own source",
                    path.display()
                ));
            }
            if let Some((other, _)) = self.sinks[..i].iter().find(|(_, p)| p == path) {
                return Some(format!(
                    "{field}: {} is already written by {other}",
                    path.display()
                ));
            }
        }
        None
    }

    /// Why this pipeline's sinks clash with `other`'s files (another
    /// pipeline's, named `other_name`): a sink onto its sink or its source.
    pub fn clash_with(&self, other_name: &str, other: &FileClaims) -> Option<String> {
        for (field, path) in &self.sinks {
            if other.sinks.iter().any(|(_, p)| p == path) {
                return Some(format!(
                    "{field}: {} is already written by pipeline {other_name:?}",
                    path.display()
                ));
            }
            if other.source.as_ref() == Some(path) {
                return Some(format!(
                    "{field}: {} is the source of pipeline {other_name:?}",
                    path.display()
                ));
            }
        }
        // And the converse: the order two pipelines were created in must
        // not decide which one may exist (a file sink truncates its file
        // when it starts afresh).
        if let Some(source) = &self.source
            && let Some((field, _)) = other.sinks.iter().find(|(_, p)| p == source)
        {
            return Some(format!(
                "source.path: {} is written by pipeline {other_name:?} ({field})",
                source.display()
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(source: Option<&str>, sinks: &[&str]) -> FileClaims {
        FileClaims {
            source: source.map(PathBuf::from),
            sinks: sinks
                .iter()
                .enumerate()
                .map(|(i, s)| (format!("sink[{i}].path"), PathBuf::from(s)))
                .collect(),
        }
    }

    #[test]
    fn two_pipelines_cannot_write_one_file_nor_onto_each_others_source() {
        let first = claims(Some("/f/in"), &["/f/out"]);
        let err = claims(None, &["/f/x", "/f/out"])
            .clash_with("first", &first)
            .unwrap();
        assert!(
            err.starts_with("sink[1].path: ") && err.contains("\"first\""),
            "{err}"
        );
        assert!(
            claims(None, &["/f/in"])
                .clash_with("first", &first)
                .is_some()
        );
        assert!(
            claims(Some("/f/out"), &[])
                .clash_with("first", &first)
                .is_some()
        );
        assert!(
            claims(Some("/f/in"), &[])
                .clash_with("first", &first)
                .is_none()
        );
        assert!(
            claims(None, &["/f/other"])
                .clash_with("first", &first)
                .is_none()
        );
    }

    #[test]
    fn one_pipeline_cannot_write_one_file_twice_nor_its_own_source() {
        assert!(claims(None, &["/f/a", "/f/a"]).own_clash().is_some());
        assert!(claims(Some("/f/a"), &["/f/a"]).own_clash().is_some());
        assert!(claims(Some("/f/a"), &["/f/b"]).own_clash().is_none());
    }

    struct Fixture {
        _tmp: tempfile::TempDir,
        root: PathBuf,
        data: PathBuf,
    }

    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(tmp.path()).unwrap();
        let data = root.join("data");
        std::fs::create_dir_all(data.join("plugins")).unwrap();
        std::fs::create_dir_all(data.join("savepoints/p/sp-1")).unwrap();
        std::fs::create_dir_all(root.join("outside")).unwrap();
        std::fs::write(root.join("outside/secret"), "x").unwrap();
        Fixture {
            _tmp: tmp,
            root,
            data,
        }
    }

    fn policy(f: &Fixture, allow: &[&str]) -> PathPolicy {
        let allow: Vec<PathBuf> = allow.iter().map(|a| f.root.join(a)).collect();
        PathPolicy::new(&f.data, &allow).unwrap()
    }

    #[test]
    fn relative_paths_resolve_inside_the_files_folder() {
        let f = fixture();
        let p = policy(&f, &[]);
        let got = p.resolve("sink[0].path", Path::new("out.jsonl"), Access::WriteFile);
        assert_eq!(got.unwrap(), f.data.join("files/out.jsonl"));
    }

    #[test]
    fn a_path_outside_every_root_is_refused_naming_the_field() {
        let f = fixture();
        let p = policy(&f, &[]);
        let err = p
            .resolve(
                "source.path",
                &f.root.join("outside/secret"),
                Access::ReadFile,
            )
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("source.path: "), "{err}");
        assert!(err.contains("--allow-path"), "{err}");
    }

    #[test]
    fn an_allowed_root_lets_its_paths_through() {
        let f = fixture();
        let p = policy(&f, &["outside"]);
        let got = p.resolve(
            "source.path",
            &f.root.join("outside/secret"),
            Access::ReadFile,
        );
        assert_eq!(got.unwrap(), f.root.join("outside/secret"));
    }

    #[test]
    fn dot_dot_cannot_climb_out_of_the_files_folder() {
        let f = fixture();
        let p = policy(&f, &[]);
        for escape in ["../plugins/x.wasm", "../../outside/secret", "a/../../x"] {
            assert!(
                p.resolve("sink[0].path", Path::new(escape), Access::WriteFile)
                    .is_err(),
                "{escape}"
            );
        }
    }

    #[test]
    fn a_symlink_out_of_the_files_folder_is_refused() {
        let f = fixture();
        let p = policy(&f, &[]);
        let link = f.data.join("files/link");
        std::os::unix::fs::symlink(f.root.join("outside"), &link).unwrap();
        let err = p.resolve("sink[0].path", Path::new("link/secret"), Access::WriteFile);
        assert!(matches!(err, Err(PathError::Outside { .. })), "{err:?}");
        let dangling = f.data.join("files/dangling");
        std::os::unix::fs::symlink(f.root.join("outside/new"), &dangling).unwrap();
        let err = p.resolve("sink[0].path", Path::new("dangling"), Access::WriteFile);
        assert!(err.is_err(), "{err:?}");
    }

    #[test]
    fn an_allowed_root_holding_the_data_dir_still_keeps_the_server_folders_out() {
        let f = fixture();
        let p = policy(&f, &["."]);
        let err = p.resolve("sink[0].path", &f.data.join("plugins/x"), Access::WriteFile);
        assert!(
            matches!(err, Err(PathError::ServerFolder { .. })),
            "{err:?}"
        );
        assert!(
            p.resolve("sink[0].path", &f.data.join("files/x"), Access::WriteFile)
                .is_ok()
        );
    }

    #[test]
    fn the_servers_savepoints_can_be_restored_from_but_not_written() {
        let f = fixture();
        let p = policy(&f, &[]);
        let sp = f.data.join("savepoints/p/sp-1");
        assert!(p.resolve("from", &sp, Access::ReadSnapshot).is_ok());
        assert!(
            p.resolve("to", &f.data.join("savepoints/p/sp-2"), Access::CreateDir)
                .is_err()
        );
    }

    #[test]
    fn a_new_file_needs_an_existing_parent() {
        let f = fixture();
        let p = policy(&f, &[]);
        let err = p.resolve("sink[0].path", Path::new("no/such/out"), Access::WriteFile);
        assert!(
            matches!(err, Err(PathError::Unresolvable { .. })),
            "{err:?}"
        );
    }

    #[test]
    fn hard_linked_and_non_regular_sink_targets_are_refused() {
        let f = fixture();
        let p = policy(&f, &["outside"]);
        let linked = f.data.join("files/linked");
        std::fs::hard_link(f.root.join("outside/secret"), &linked).unwrap();
        assert!(
            p.resolve("sink[0].path", &linked, Access::WriteFile)
                .is_err()
        );
        assert!(
            p.resolve("sink[0].path", Path::new("."), Access::WriteFile)
                .is_err()
        );
    }

    #[test]
    fn a_staging_folder_cannot_be_named() {
        let f = fixture();
        let p = policy(&f, &[]);
        std::fs::create_dir_all(f.data.join("files/.out.weir-staging")).unwrap();
        let err = p.resolve(
            "sink[0].path",
            Path::new(".out.weir-staging/epoch-000000000001.jsonl"),
            Access::WriteFile,
        );
        assert!(err.is_err());
    }

    #[test]
    fn a_sink_cannot_write_into_a_savepoint_folder() {
        let f = fixture();
        let p = policy(&f, &[]);
        std::fs::create_dir_all(f.data.join("files/sp/subtask-0")).unwrap();
        std::fs::write(f.data.join("files/sp/MANIFEST.json"), b"{}").unwrap();
        for target in ["sp/MANIFEST.json", "sp/subtask-0/state.bin", "sp/new.jsonl"] {
            let err = p
                .resolve("sink[0].path", Path::new(target), Access::WriteFile)
                .expect_err(target)
                .to_string();
            assert!(
                err.contains("savepoint or checkpoint folder"),
                "{target}: {err}"
            );
        }
        // Beside it is fine.
        p.resolve("sink[0].path", Path::new("out.jsonl"), Access::WriteFile)
            .unwrap();
    }

    #[test]
    fn an_allowed_root_inside_the_server_folders_is_refused_at_start() {
        let f = fixture();
        let err = PathPolicy::new(&f.data, &[f.data.join("plugins")]).unwrap_err();
        assert!(matches!(err, PathError::BadRoot { .. }), "{err:?}");
    }
}
