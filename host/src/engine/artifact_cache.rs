//! Compiled components on disk, keyed by the component's digest and the
//! engine's compatibility hash, so a second `weir run` (or a restart) skips
//! Cranelift entirely.

use std::hash::{Hash, Hasher};
use std::path::PathBuf;

use wasmtime::component::Component;

use super::EngineError;

#[derive(Clone)]
pub struct ArtifactCache {
    dir: PathBuf,
    engine_hash: String,
}

impl ArtifactCache {
    pub(crate) fn new(dir: PathBuf, engine: &wasmtime::Engine) -> Self {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Self {
            dir: dir.join("components"),
            engine_hash: format!("{:016x}", hasher.finish()),
        }
    }

    pub(crate) fn load_or_compile(
        &self,
        engine: &wasmtime::Engine,
        digest: &str,
        bytes: &[u8],
    ) -> Result<Component, EngineError> {
        let path = self
            .dir
            .join(format!("{digest}-{}.cwasm", self.engine_hash));
        if path.exists() {
            // SAFETY: `deserialize_file` trusts the file to be wasmtime's own
            // output. This one is: only `load_or_compile` writes into this
            // directory, under a name that binds the source digest and the
            // engine configuration, and wasmtime still checks the header's
            // version and settings. A file it rejects is recompiled below.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(component) => return Ok(component),
                Err(e) => {
                    tracing::warn!(path = %path.display(), "discarding cached component: {e:#}")
                }
            }
        }
        let component = Component::new(engine, bytes)
            .map_err(|e| EngineError::NotAComponent(format!("{e:#}")))?;
        // A cache that cannot be written only costs the next start a compile.
        if let Err(e) = self.store(&path, &component) {
            tracing::warn!(path = %path.display(), "cannot cache compiled component: {e}");
        }
        Ok(component)
    }

    /// Removes the compiled forms of `digest` (for any engine configuration).
    pub(crate) fn forget(&self, digest: &str) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let prefix = format!("{digest}-");
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    fn store(&self, path: &std::path::Path, component: &Component) -> Result<(), String> {
        let bytes = component.serialize().map_err(|e| e.to_string())?;
        std::fs::create_dir_all(&self.dir).map_err(|e| e.to_string())?;
        // Write then rename, so a reader never sees half a file.
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, bytes).map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, path).map_err(|e| e.to_string())
    }
}
