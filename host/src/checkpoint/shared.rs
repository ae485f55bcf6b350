//! Checkpoints in storage shared by the processes of a Kafka group
//! (scale-out): each partition's pipeline checkpoints locally as usual, and
//! every completed checkpoint is copied here, where the process that gets
//! the partition next takes it from.
//!
//! Layout under `<shared>/<pipeline>/<topic>/<partition>/`:
//! - `chk-<id>/INDEX.json`: the checkpoint's files and where each is kept;
//!   written last, so a checkpoint without it is incomplete and ignored;
//! - `chk-<id>/<path>`: its small and rewritten files (the manifest, RocksDB's
//!   MANIFEST/OPTIONS/CURRENT, portable snapshots);
//! - `files/<path>.<crc32>.<size>`: RocksDB SST files, which never change once
//!   written, shared by every checkpoint that holds them, so an incremental
//!   checkpoint uploads only its new SSTs.
//!
//! The storage goes through `object_store`: a local (or mounted) directory
//! in this build; S3 and the other object stores are that crate's features.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use super::store::{CheckpointStore, MANIFEST_CRC};
use super::{MANIFEST, Manifest};

const INDEX: &str = "INDEX.json";
const POOL: &str = "files";

#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    #[error("shared checkpoint storage {url:?}: {reason}")]
    Open { url: String, reason: String },
    #[error("shared checkpoint storage, {what}: {source}")]
    Store {
        what: String,
        source: object_store::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("shared checkpoint storage, {what}: {reason}")]
    Invalid { what: String, reason: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SharedError + '_ {
    move |source| SharedError::Io {
        path: path.to_owned(),
        source,
    }
}

fn store_err(what: impl Into<String>) -> impl FnOnce(object_store::Error) -> SharedError {
    let what = what.into();
    move |source| SharedError::Store { what, source }
}

/// One file of a shared checkpoint: its path in the checkpoint directory
/// and the object it is kept in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct IndexedFile {
    path: String,
    object: String,
}

/// `chk-<id>/INDEX.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SharedCheckpoint {
    pub id: u64,
    /// Taken at the end of a bounded partition: nothing is left to read.
    pub finished: bool,
    /// CRC32 of its `MANIFEST.json`, to tell whether a local copy is it.
    pub manifest_crc32: u32,
    files: Vec<IndexedFile>,
}

/// The shared checkpoints of one pipeline.
pub struct SharedCheckpoints {
    store: Arc<dyn ObjectStore>,
    pipeline: String,
    runtime: tokio::runtime::Runtime,
}

impl SharedCheckpoints {
    /// Opens `url`: a directory path or a `file://` URL (created if
    /// missing).
    pub fn open(url: &str, pipeline: &str) -> Result<Self, SharedError> {
        let dir = match url.split_once("://") {
            None => PathBuf::from(url),
            Some(("file", path)) => PathBuf::from(path),
            Some((scheme, _)) => {
                return Err(SharedError::Open {
                    url: url.into(),
                    reason: format!(
                        "{scheme}:// storage is not built into this weir (object_store's cloud \
                         features are off); use a directory every process reaches"
                    ),
                });
            }
        };
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let store = LocalFileSystem::new_with_prefix(&dir)
            .map_err(|e| SharedError::Open {
                url: url.into(),
                reason: e.to_string(),
            })?
            // As in an object store: a dropped checkpoint leaves no empty
            // directory behind to be listed.
            .with_automatic_cleanup(true);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(io(&dir))?;
        Ok(Self {
            store: Arc::new(store),
            pipeline: pipeline.into(),
            runtime,
        })
    }

    fn root(&self, topic: &str, partition: i32) -> String {
        format!("{}/{topic}/{partition}", self.pipeline)
    }

    fn object(&self, key: &str) -> Result<ObjectPath, SharedError> {
        ObjectPath::parse(key).map_err(|e| SharedError::Invalid {
            what: key.into(),
            reason: e.to_string(),
        })
    }

    /// The objects and sub-prefixes directly under `key`.
    fn list(&self, key: &str) -> Result<object_store::ListResult, SharedError> {
        let prefix = self.object(key)?;
        self.runtime
            .block_on(self.store.list_with_delimiter(Some(&prefix)))
            .map_err(store_err(format!("listing {key}")))
    }

    fn delete(&self, object: &ObjectPath) -> Result<(), SharedError> {
        self.runtime
            .block_on(self.store.delete(object))
            .map_err(store_err(format!("deleting {object}")))
    }

    /// Ids of the `chk-<id>` prefixes of a partition, newest first.
    fn ids(&self, root: &str) -> Result<Vec<u64>, SharedError> {
        let listed = self.list(root)?;
        let mut ids: Vec<u64> = listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename()?.strip_prefix("chk-")?.parse().ok())
            .collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        Ok(ids)
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, SharedError> {
        let path = self.object(key)?;
        let got = self.runtime.block_on(async {
            match self.store.get(&path).await {
                Ok(r) => r.bytes().await.map(Some),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        });
        got.map(|b| b.map(|b| b.to_vec()))
            .map_err(store_err(format!("reading {key}")))
    }

    fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), SharedError> {
        let path = self.object(key)?;
        self.runtime
            .block_on(self.store.put(&path, PutPayload::from(bytes)))
            .map(|_| ())
            .map_err(store_err(format!("writing {key}")))
    }

    /// The newest complete shared checkpoint of a partition.
    pub fn latest(
        &self,
        topic: &str,
        partition: i32,
    ) -> Result<Option<SharedCheckpoint>, SharedError> {
        let root = self.root(topic, partition);
        for id in self.ids(&root)? {
            let key = format!("{root}/chk-{id}/{INDEX}");
            if let Some(bytes) = self.get(&key)? {
                let index = serde_json::from_slice(&bytes).map_err(|e| SharedError::Invalid {
                    what: key,
                    reason: e.to_string(),
                })?;
                return Ok(Some(index));
            }
        }
        Ok(None)
    }

    /// Copies the local checkpoint `dir` (complete, described by
    /// `manifest`) of a partition (SSTs the pool holds already are not
    /// copied again; the caller knows which checkpoints it copied), then
    /// drops shared checkpoints older than the newest `retain`.
    pub fn upload(
        &self,
        topic: &str,
        partition: i32,
        dir: &Path,
        manifest: &Manifest,
        retain: usize,
    ) -> Result<(), SharedError> {
        let root = self.root(topic, partition);
        let manifest_bytes = std::fs::read(dir.join(MANIFEST)).map_err(io(dir))?;
        let manifest_crc32 = crc32fast::hash(&manifest_bytes);
        let chk = format!("{root}/chk-{}", manifest.id);
        let existing = self.pool(&root)?;
        let mut files = Vec::with_capacity(manifest.files.len() + 2);
        for f in &manifest.files {
            let object = if f.path.ends_with(".sst") {
                let flat = f.path.replace('/', "_");
                format!("{root}/{POOL}/{flat}.{:08x}.{}", f.crc32, f.size)
            } else {
                format!("{chk}/{}", f.path)
            };
            if !existing.contains(&object) {
                let path = dir.join(&f.path);
                self.put(&object, std::fs::read(&path).map_err(io(&path))?)?;
            }
            files.push(IndexedFile {
                path: f.path.clone(),
                object,
            });
        }
        let crc_path = dir.join(MANIFEST_CRC);
        for (name, bytes) in [
            (
                MANIFEST_CRC,
                std::fs::read(&crc_path).map_err(io(&crc_path))?,
            ),
            (MANIFEST, manifest_bytes),
        ] {
            let object = format!("{chk}/{name}");
            self.put(&object, bytes)?;
            files.push(IndexedFile {
                path: name.into(),
                object,
            });
        }
        let index = SharedCheckpoint {
            id: manifest.id,
            finished: manifest.finished,
            manifest_crc32,
            files,
        };
        let bytes = serde_json::to_vec(&index).expect("an index encodes");
        // The commit point: without its index a checkpoint does not exist.
        self.put(&format!("{chk}/{INDEX}"), bytes)?;
        self.retain(&root, retain)
    }

    /// The objects of a partition's SST pool.
    fn pool(&self, root: &str) -> Result<std::collections::HashSet<String>, SharedError> {
        Ok(self
            .list(&format!("{root}/{POOL}"))?
            .objects
            .into_iter()
            .map(|o| o.location.to_string())
            .collect())
    }

    fn delete_prefix(&self, key: &str) -> Result<(), SharedError> {
        let listed = self.list(key)?;
        for dir in &listed.common_prefixes {
            self.delete_prefix(dir.as_ref())?;
        }
        for object in listed.objects {
            self.delete(&object.location)?;
        }
        Ok(())
    }

    /// Keeps the newest `retain` complete checkpoints of a partition and the
    /// SSTs they use; drops the rest (and incomplete ones older than them).
    fn retain(&self, root: &str, retain: usize) -> Result<(), SharedError> {
        let ids = self.ids(root)?;
        let mut kept = Vec::new();
        let mut used = std::collections::HashSet::new();
        for id in &ids {
            if kept.len() == retain {
                break;
            }
            if let Some(bytes) = self.get(&format!("{root}/chk-{id}/{INDEX}"))?
                && let Ok(index) = serde_json::from_slice::<SharedCheckpoint>(&bytes)
            {
                used.extend(index.files.into_iter().map(|f| f.object));
                kept.push(*id);
            }
        }
        let Some(&oldest_kept) = kept.last() else {
            return Ok(());
        };
        for id in ids.into_iter().filter(|id| *id < oldest_kept) {
            self.delete_prefix(&format!("{root}/chk-{id}"))?;
        }
        for object in self.pool(root)? {
            if !used.contains(&object) {
                self.delete(&self.object(&object)?)?;
            }
        }
        Ok(())
    }

    /// Makes `checkpoint` the newest checkpoint of the local `store`: nothing
    /// to do if the store's newest is that very checkpoint, else it is
    /// copied in (as `chk-<id>`, after the store's older ones are dropped).
    pub fn download(
        &self,
        topic: &str,
        partition: i32,
        checkpoint: &SharedCheckpoint,
        store: &CheckpointStore,
    ) -> Result<(), SharedError> {
        if let Some(&newest) = store.ids().last() {
            let manifest = store.dir_of(newest).join(MANIFEST);
            if newest == checkpoint.id
                && std::fs::read(&manifest)
                    .is_ok_and(|bytes| crc32fast::hash(&bytes) == checkpoint.manifest_crc32)
            {
                return Ok(());
            }
        }
        store.clear().map_err(|e| SharedError::Invalid {
            what: store.root().display().to_string(),
            reason: e.to_string(),
        })?;
        let staging = store
            .in_progress_dir(checkpoint.id)
            .map_err(|e| SharedError::Invalid {
                what: store.root().display().to_string(),
                reason: e.to_string(),
            })?;
        for f in &checkpoint.files {
            let Some(bytes) = self.get(&f.object)? else {
                return Err(SharedError::Invalid {
                    what: format!("{}/chk-{}", self.root(topic, partition), checkpoint.id),
                    reason: format!("{} is missing", f.object),
                });
            };
            if f.path
                .split('/')
                .any(|part| part == ".." || part.is_empty())
            {
                return Err(SharedError::Invalid {
                    what: format!("{}/chk-{}", self.root(topic, partition), checkpoint.id),
                    reason: format!("{:?} is not a path inside a checkpoint", f.path),
                });
            }
            let path = staging.join(&f.path);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(io(parent))?;
            }
            std::fs::write(&path, bytes).map_err(io(&path))?;
        }
        let done = store.dir_of(checkpoint.id);
        std::fs::rename(&staging, &done).map_err(io(&done))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{PluginIdentity, SnapshotKind, SourceCheckpoint};
    use crate::connectors::SplitPosition;
    use crate::runtime::watermarks::WatermarkSnapshot;

    /// A complete checkpoint `id` in `store` holding `files` (path, bytes).
    fn checkpoint(store: &CheckpointStore, id: u64, files: &[(&str, &[u8])]) -> Manifest {
        let dir = store.in_progress_dir(id).unwrap();
        for (path, bytes) in files {
            let path = dir.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
        }
        let mut manifest = Manifest {
            format: crate::checkpoint::FORMAT_VERSION,
            id,
            kind: SnapshotKind::Checkpoint,
            created_ms: 0,
            duration_ms: 0,
            size_bytes: 0,
            finished: id == 3,
            pipeline: "p".into(),
            spec: serde_json::Value::Null,
            key_by: "record-key".into(),
            plugin: PluginIdentity {
                digest: "d".into(),
                config: serde_json::Value::Null,
                state_version: 0,
            },
            source: SourceCheckpoint {
                position: vec![SplitPosition {
                    split: "t/0".into(),
                    offset: id * 10,
                }],
                records: id * 10,
                watermarks: WatermarkSnapshot {
                    watermark: 0,
                    split_max_timestamps: vec![0],
                },
            },
            subtasks: Vec::new(),
            sinks: Vec::new(),
            files: Vec::new(),
        };
        store.complete(&mut manifest).unwrap();
        manifest
    }

    fn objects(root: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![root.to_owned()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(dir).unwrap().flatten() {
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                } else {
                    let rel = e.path().strip_prefix(root).unwrap().to_owned();
                    out.push(rel.to_string_lossy().into_owned());
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn a_checkpoint_goes_round_the_shared_storage_sharing_unchanged_ssts() {
        let tmp = tempfile::tempdir().unwrap();
        let shared =
            SharedCheckpoints::open(tmp.path().join("shared").to_str().unwrap(), "p").unwrap();
        let writer = CheckpointStore::new(&tmp.path().join("a"), "p");
        assert!(shared.latest("t", 0).unwrap().is_none());

        let one = checkpoint(
            &writer,
            1,
            &[("s0/000007.sst", b"seven"), ("s0/MANIFEST-1", b"m1")],
        );
        shared.upload("t", 0, &writer.dir_of(1), &one, 2).unwrap();
        let two = checkpoint(
            &writer,
            2,
            &[
                ("s0/000007.sst", b"seven"),
                ("s0/000009.sst", b"nine"),
                ("s0/MANIFEST-2", b"m2"),
            ],
        );
        shared.upload("t", 0, &writer.dir_of(2), &two, 2).unwrap();
        // The SST both hold is kept once.
        let root = tmp.path().join("shared/p/t/0");
        let pool: Vec<String> = objects(&root.join(POOL));
        assert_eq!(pool.len(), 2, "{pool:?}");

        // Another process's store gets checkpoint 2, files and manifest.
        let latest = shared.latest("t", 0).unwrap().unwrap();
        assert_eq!((latest.id, latest.finished), (2, false));
        let reader = CheckpointStore::new(&tmp.path().join("b"), "p");
        shared.download("t", 0, &latest, &reader).unwrap();
        let loaded = crate::checkpoint::load_checkpoint(&reader.dir_of(2)).unwrap();
        assert_eq!(loaded.manifest.source.position[0].offset, 20);
        assert_eq!(
            std::fs::read(reader.dir_of(2).join("s0/000009.sst")).unwrap(),
            b"nine"
        );

        // The third (finished) one, keeping only it: the SST only the older
        // ones used goes with them.
        let three = checkpoint(
            &writer,
            3,
            &[("s0/000009.sst", b"nine"), ("s0/MANIFEST-3", b"m3")],
        );
        shared.upload("t", 0, &writer.dir_of(3), &three, 1).unwrap();
        assert!(!root.join("chk-1").exists() && !root.join("chk-2").exists());
        assert_eq!(objects(&root.join(POOL)).len(), 1);
        assert!(shared.latest("t", 0).unwrap().unwrap().finished);
    }

    #[test]
    fn a_checkpoint_without_its_index_is_not_taken() {
        let tmp = tempfile::tempdir().unwrap();
        let shared =
            SharedCheckpoints::open(tmp.path().join("shared").to_str().unwrap(), "p").unwrap();
        let writer = CheckpointStore::new(&tmp.path().join("a"), "p");
        let one = checkpoint(&writer, 1, &[("state", b"one")]);
        shared.upload("t", 0, &writer.dir_of(1), &one, 3).unwrap();
        // A copy cut short: files there, no INDEX.json.
        let two = checkpoint(&writer, 2, &[("state", b"two")]);
        shared.upload("t", 0, &writer.dir_of(2), &two, 3).unwrap();
        std::fs::remove_file(tmp.path().join("shared/p/t/0/chk-2").join(INDEX)).unwrap();
        assert_eq!(shared.latest("t", 0).unwrap().unwrap().id, 1);
    }

    #[test]
    fn object_store_urls_this_build_lacks_are_refused_with_the_reason() {
        let err = SharedCheckpoints::open("s3://bucket/weir", "p")
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("s3:// storage is not built into this weir"),
            "{err}"
        );
    }
}
