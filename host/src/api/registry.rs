//! The plugin registry: uploaded components, content-addressed by sha256.
//!
//! A component is validated (a component, of the `weir:plugin/processor`
//! world, compiles) before anything is stored, and its compiled form goes to
//! the engine's artifact cache, so neither a pipeline start nor a restart of
//! the server compiles it again. On disk, under `<data-dir>/plugins`:
//! `<digest>.wasm` and `<digest>.json` (its metadata), each written to a
//! temporary name, fsynced and renamed, so a crash never leaves half a
//! plugin and an acknowledged upload survives a power loss.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::Digest;

use super::upload_gate::UploadGate;
use crate::engine::{Engine, EngineError};
use crate::runtime::SubtaskHost;

/// The world every plugin implements.
pub const WORLD: &str = "weir:plugin/processor@0.1.0";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PluginInfo {
    pub digest: String,
    pub name: String,
    pub version: String,
    pub size: u64,
    pub world: String,
    pub uploaded_ms: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Invalid(#[from] EngineError),
    #[error("{0}")]
    BadName(String),
    #[error("no plugin with digest {0}")]
    NotFound(String),
    #[error("plugin registry I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub struct Registry {
    dir: PathBuf,
    index: Mutex<BTreeMap<String, PluginInfo>>,
    /// Two uploads of the same bytes must not write the same files at once;
    /// uploads of different bytes compile side by side, boundedly.
    uploading: UploadGate,
}

impl Registry {
    /// Opens the registry in `dir`, reading what earlier runs stored.
    pub fn open(dir: &Path) -> Result<Self, RegistryError> {
        let io = |source| RegistryError::Io {
            path: dir.to_owned(),
            source,
        };
        crate::durable::create_dir_all(dir).map_err(io)?;
        let mut index = BTreeMap::new();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            if path.extension().is_some_and(|e| e == "json") {
                match std::fs::read(&path)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<PluginInfo>(&b).ok())
                {
                    Some(info) if path.with_extension("wasm").exists() => {
                        index.insert(info.digest.clone(), info);
                    }
                    _ => {
                        tracing::warn!(path = %path.display(), "ignoring unreadable plugin metadata")
                    }
                }
            }
        }
        Ok(Self {
            dir: dir.to_owned(),
            index: Mutex::new(index),
            uploading: UploadGate::default(),
        })
    }

    /// Validates and stores `bytes`; `Ok((info, false))` if they were stored
    /// already (the upload is idempotent).
    pub fn upload(
        &self,
        engine: &Engine,
        bytes: &[u8],
        name: Option<&str>,
        version: Option<&str>,
    ) -> Result<(PluginInfo, bool), RegistryError> {
        let digest = hex::encode(sha2::Sha256::digest(bytes));
        let mut turn = self.uploading.digest(&digest);
        if let Some(info) = self.get(&digest) {
            return Ok((info, false));
        }
        for (what, value) in [("name", name), ("version", version)] {
            if let Some(v) = value
                && (v.is_empty() || v.len() > 128 || !v.chars().all(|c| c.is_ascii_graphic()))
            {
                return Err(RegistryError::BadName(format!(
                    "plugin {what} {v:?}: use 1 to 128 printable ASCII characters without spaces"
                )));
            }
        }
        // Compiles (into the engine's artifact cache) and checks the world.
        turn.compile_slot();
        engine.load::<SubtaskHost>(bytes)?;
        let info = PluginInfo {
            digest: digest.clone(),
            name: name.unwrap_or("plugin").to_owned(),
            version: version.unwrap_or(&digest[..12]).to_owned(),
            size: bytes.len() as u64,
            world: WORLD.into(),
            uploaded_ms: crate::runtime::now_ms(),
        };
        let wasm = self.dir.join(format!("{digest}.wasm"));
        write_atomically(&wasm, bytes)?;
        let meta = serde_json::to_vec_pretty(&info).expect("plain data");
        write_atomically(&self.dir.join(format!("{digest}.json")), &meta)?;
        self.index
            .lock()
            .expect("registry lock")
            .insert(digest, info.clone());
        Ok((info, true))
    }

    pub fn get(&self, digest: &str) -> Option<PluginInfo> {
        self.index
            .lock()
            .expect("registry lock")
            .get(digest)
            .cloned()
    }

    /// Newest first.
    pub fn list(&self) -> Vec<PluginInfo> {
        let mut all: Vec<PluginInfo> = self
            .index
            .lock()
            .expect("registry lock")
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| {
            b.uploaded_ms
                .cmp(&a.uploaded_ms)
                .then(a.digest.cmp(&b.digest))
        });
        all
    }

    /// The component bytes of `digest`.
    pub fn bytes(&self, digest: &str) -> Result<Vec<u8>, RegistryError> {
        if self.get(digest).is_none() {
            return Err(RegistryError::NotFound(digest.to_owned()));
        }
        let path = self.dir.join(format!("{digest}.wasm"));
        std::fs::read(&path).map_err(|source| RegistryError::Io { path, source })
    }

    /// Deletes the component, its metadata and its compiled form.
    pub fn delete(&self, engine: &Engine, digest: &str) -> Result<(), RegistryError> {
        let mut index = self.index.lock().expect("registry lock");
        if index.remove(digest).is_none() {
            return Err(RegistryError::NotFound(digest.to_owned()));
        }
        for ext in ["json", "wasm"] {
            let path = self.dir.join(format!("{digest}.{ext}"));
            std::fs::remove_file(&path).map_err(|source| RegistryError::Io { path, source })?;
        }
        engine.forget(digest);
        Ok(())
    }
}

/// Durable before the upload is answered: fsynced, renamed, directory
/// fsynced (`durable::write_atomic`).
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), RegistryError> {
    crate::durable::write_atomic(path, bytes).map_err(|source| RegistryError::Io {
        path: path.to_owned(),
        source,
    })
}
