//! Compiled components on disk, keyed by the component's digest and the
//! engine's compatibility hash, so a second `weir run` (or a restart) skips
//! Cranelift entirely.
//!
//! A cache file is native code that wasmtime maps and runs, so nothing is
//! loaded that this cache did not write for that key: each file is
//! `WEIRCW01`, the sha256 of key and payload, then `Component::serialize`'s
//! payload, written atomically and fsynced. A file that fails the check
//! (damaged, cut short, another key's) is recompiled and overwritten.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
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
        let key = self.key(digest);
        let path = self.dir.join(format!("{key}.cwasm"));
        match self.load(engine, &key, &path) {
            Cached::Loaded(component) => return Ok(component),
            Cached::Missing => {}
            Cached::Refused(why) => {
                tracing::warn!(path = %path.display(), "recompiling a cached component: {why}")
            }
        }
        let component = Component::new(engine, bytes)
            .map_err(|e| EngineError::NotAComponent(format!("{e:#}")))?;
        // A cache that cannot be written only costs the next start a compile.
        if let Err(e) = self.store(&key, &path, &component) {
            tracing::warn!(path = %path.display(), "cannot cache compiled component: {e}");
        }
        Ok(component)
    }

    /// `<digest>-<engine hash>`: the name of a compiled form, and what its
    /// checksum binds it to.
    fn key(&self, digest: &str) -> String {
        format!("{digest}-{}", self.engine_hash)
    }

    /// The compiled form stored under `key`, if it verifies.
    fn load(&self, engine: &wasmtime::Engine, key: &str, path: &Path) -> Cached {
        let file = match std::fs::read(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Cached::Missing,
            Err(e) => return Cached::Refused(format!("cannot read it: {e}")),
        };
        let Some(serialized) = verified(key, &file) else {
            return Cached::Refused(
                "it fails its sha256 (damaged, cut short, or not written by this cache)".into(),
            );
        };
        // SAFETY: `Component::deserialize` maps these bytes as native code
        // and trusts them to be `Component::serialize` output of a
        // compatible engine; anything else is undefined behaviour. They
        // are: `verified` checked, on this very buffer (nothing can change
        // it between check and use), a sha256 over the key and the bytes
        // that `store` computed from `Component::serialize` output before
        // writing. So these are the bytes this cache serialized for this
        // source digest and this engine configuration (the key holds the
        // digest and wasmtime's compatibility hash, which covers its
        // version, target and settings). Files are written atomically
        // (`durable::write_atomic`), so a crash leaves no half file under
        // the key. The cache directory is trusted like the binary: whoever
        // can write it with a matching checksum can run code as Weir.
        match unsafe { Component::deserialize(engine, serialized) } {
            Ok(component) => Cached::Loaded(component),
            Err(e) => Cached::Refused(format!("wasmtime rejects it: {e:#}")),
        }
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

    /// Writes `component`'s compiled form under `key`: a header with the
    /// sha256 of key and bytes, then the bytes; atomically and fsynced.
    fn store(&self, key: &str, path: &Path, component: &Component) -> Result<(), String> {
        let serialized = component.serialize().map_err(|e| e.to_string())?;
        let mut file = Vec::with_capacity(HEADER_LEN + serialized.len());
        file.extend_from_slice(MAGIC);
        file.extend_from_slice(&checksum(key, &serialized));
        file.extend_from_slice(&serialized);
        crate::durable::create_dir_all(&self.dir).map_err(|e| e.to_string())?;
        crate::durable::write_atomic(path, &file).map_err(|e| e.to_string())
    }
}

/// What the cache holds under a key.
enum Cached {
    Loaded(Component),
    Missing,
    /// Present but not to be loaded: why.
    Refused(String),
}

/// Leads every cache file; a new layout gets a new one.
const MAGIC: &[u8; 8] = b"WEIRCW01";
const HEADER_LEN: usize = MAGIC.len() + 32;

fn checksum(key: &str, serialized: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update((key.len() as u64).to_le_bytes());
    hasher.update(key.as_bytes());
    hasher.update(serialized);
    hasher.finalize().into()
}

/// The serialized component inside a cache file, if the file is whole and
/// was written for `key`.
fn verified<'a>(key: &str, file: &'a [u8]) -> Option<&'a [u8]> {
    let rest = file.strip_prefix(MAGIC)?;
    let (sum, serialized) = rest.split_at_checked(32)?;
    (sum == checksum(key, serialized)).then_some(serialized)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest component: a header and nothing else.
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\x00\x01\x00";

    fn engine() -> wasmtime::Engine {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        wasmtime::Engine::new(&config).unwrap()
    }

    fn cached_file(dir: &Path) -> PathBuf {
        let mut files: Vec<_> = std::fs::read_dir(dir.join("components"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(files.len(), 1, "one file, no temporaries: {files:?}");
        files.pop().unwrap()
    }

    #[test]
    fn a_compiled_component_is_stored_verified_and_loaded_again() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine();
        let cache = ArtifactCache::new(dir.path().to_owned(), &engine);
        cache
            .load_or_compile(&engine, "d1", EMPTY_COMPONENT)
            .unwrap();
        let path = cached_file(dir.path());
        let key = cache.key("d1");
        assert!(matches!(
            cache.load(&engine, &key, &path),
            Cached::Loaded(_)
        ));
        // The same bytes under another key (a copied or renamed file) are
        // not that key's.
        assert!(matches!(
            cache.load(&engine, &cache.key("d2"), &path),
            Cached::Refused(_)
        ));
    }

    #[test]
    fn a_corrupted_cache_file_is_not_loaded_but_recompiled_and_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine();
        let cache = ArtifactCache::new(dir.path().to_owned(), &engine);
        cache
            .load_or_compile(&engine, "d1", EMPTY_COMPONENT)
            .unwrap();
        let path = cached_file(dir.path());
        let good = std::fs::read(&path).unwrap();
        let key = cache.key("d1");
        type Damage = Box<dyn Fn(&mut Vec<u8>)>;
        let damaged: [Damage; 3] = [
            // A flipped bit in the native code.
            Box::new(|b: &mut Vec<u8>| *b.last_mut().unwrap() ^= 1),
            Box::new(|b: &mut Vec<u8>| {
                let middle = HEADER_LEN + (b.len() - HEADER_LEN) / 2;
                b[middle] ^= 0x80;
            }),
            // Cut short.
            Box::new(|b: &mut Vec<u8>| b.truncate(b.len() / 2)),
        ];
        for damage in damaged {
            let mut bytes = good.clone();
            damage(&mut bytes);
            std::fs::write(&path, &bytes).unwrap();
            assert!(
                matches!(cache.load(&engine, &key, &path), Cached::Refused(_)),
                "a damaged file is refused"
            );
            cache
                .load_or_compile(&engine, "d1", EMPTY_COMPONENT)
                .unwrap();
            assert_eq!(
                std::fs::read(cached_file(dir.path())).unwrap(),
                good,
                "recompiled and written again"
            );
        }
    }
}
