//! The wasmtime embedding: compile, validate against the world, instantiate,
//! enforce limits, call.
//!
//! One shared [`Engine`] per process, with the pooling allocator so that an
//! instance costs microseconds, an on-disk cache of compiled components, and
//! a ticker thread that drives epoch deadlines. The engine knows nothing of
//! keys, state or outputs: it calls into a `PluginHost` the runtime provides.

mod artifact_cache;
mod batch;
pub mod bindings;
mod instance;
mod limits;
mod pool;
mod wasi;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, InstanceAllocationStrategy, PoolingAllocationConfig};

pub use artifact_cache::ArtifactCache;
pub use batch::{Change, Changes};
pub use batch::{EventBlock, EventBlockBuilder, EventRef, Timer, TooLarge};
pub use bindings::{ChangeOp, Failure, StoredValue, TimeDomain, WitStateKind};
pub use instance::{CallError, CallErrorKind, PluginInstance};
pub use limits::SandboxError;
pub use pool::{Reservation, slots_for};

use bindings::ProcessorPre;
use sha2::Digest;

/// Everything the runtime must implement for a plugin to run: the WIT imports.
pub trait PluginHost:
    bindings::weir::plugin::types::Host
    + bindings::weir::plugin::state::Host
    + bindings::weir::plugin::timers::Host
    + bindings::weir::plugin::log::Host
    + Send
    + 'static
{
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("failed to configure the wasm engine: {0}")]
    Config(String),
    #[error("not a WebAssembly component: {0}")]
    NotAComponent(String),
    #[error("the component does not implement the weir:plugin/processor world: {0}")]
    WorldMismatch(String),
    #[error("failed to instantiate the plugin: {0}")]
    Instantiate(String),
    #[error(
        "the server's plugin instance pool is full: pipeline {pipeline:?} of parallelism {parallelism} needs {needed} instance slots (one per subtask, as many again for a swap, and one for its trial), and only {free} of {total} are free (running pipelines hold the rest)"
    )]
    PoolFull {
        pipeline: String,
        parallelism: u32,
        needed: u32,
        free: u32,
        total: u32,
    },
}

/// The wasm engine shared by every pipeline of the process.
#[derive(Clone)]
pub struct Engine {
    inner: wasmtime::Engine,
    cache: Option<ArtifactCache>,
    ledger: Arc<pool::Ledger>,
    _ticker: Arc<EpochTicker>,
}

/// The wasmtime configuration every engine uses: epoch deadlines and a pool
/// in which every one of its `pool::SLOTS` instance slots can hold the
/// largest instance the per-instance limits allow, so that a pipeline which
/// reserved its slots always gets its instances.
fn config() -> Config {
    use limits::{MAX_CORE_INSTANCES, MAX_MEMORIES, MAX_TABLES};
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    let mut pooling = PoolingAllocationConfig::default();
    pooling.total_component_instances(pool::SLOTS);
    pooling.max_core_instances_per_component(MAX_CORE_INSTANCES);
    pooling.max_memories_per_component(MAX_MEMORIES);
    pooling.max_tables_per_component(MAX_TABLES);
    pooling.total_core_instances(pool::SLOTS * MAX_CORE_INSTANCES);
    pooling.total_memories(pool::SLOTS * MAX_MEMORIES);
    pooling.total_tables(pool::SLOTS * MAX_TABLES);
    pooling.max_memory_size((crate::spec::MAX_MEMORY_MB as usize) << 20);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
    config
}

impl Engine {
    /// An engine whose compiled components are cached under `cache_dir`.
    pub fn new(cache_dir: Option<PathBuf>) -> Result<Self, EngineError> {
        let inner =
            wasmtime::Engine::new(&config()).map_err(|e| EngineError::Config(e.to_string()))?;
        let cache = cache_dir.map(|dir| ArtifactCache::new(dir, &inner));
        let ticker = Arc::new(EpochTicker::start(inner.clone()));
        Ok(Self {
            inner,
            cache,
            ledger: pool::Ledger::new(pool::SLOTS),
            _ticker: ticker,
        })
    }

    /// Reserves the pool's instance slots a pipeline of `parallelism` may
    /// hold at once ([`slots_for`]), until the reservation is dropped; a
    /// pipeline that cannot get them must not start.
    pub fn reserve_instances(
        &self,
        pipeline: &str,
        parallelism: u32,
    ) -> Result<Reservation, EngineError> {
        self.ledger.reserve(pipeline, parallelism)
    }

    /// The default cache: `$WEIR_CACHE_DIR`, else `$XDG_CACHE_HOME/weir`, else `~/.cache/weir`.
    pub fn default_cache_dir() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os("WEIR_CACHE_DIR") {
            return Some(PathBuf::from(dir));
        }
        if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
            return Some(PathBuf::from(dir).join("weir"));
        }
        std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache").join("weir"))
    }

    /// Compiles (or loads from the cache) a component and checks it against
    /// the `weir:plugin/processor` world, before anything runs it.
    pub fn load<H: PluginHost>(&self, bytes: &[u8]) -> Result<Plugin<H>, EngineError> {
        if !is_component(bytes) {
            return Err(EngineError::NotAComponent(
                "expected a component (`wasm32-wasip2` output); a core wasm module or other bytes were given"
                    .into(),
            ));
        }
        let digest = hex::encode(sha2::Sha256::digest(bytes));
        let component = match &self.cache {
            Some(cache) => cache.load_or_compile(&self.inner, &digest, bytes)?,
            None => Component::new(&self.inner, bytes)
                .map_err(|e| EngineError::NotAComponent(format!("{e:#}")))?,
        };
        let mut linker = Linker::<StoreData<H>>::new(&self.inner);
        wasi::add_to_linker(&mut linker).map_err(|e| EngineError::Config(e.to_string()))?;
        wasi::sockets_as_traps(&mut linker, &component)
            .map_err(|e| EngineError::Config(format!("{e:#}")))?;
        bindings::Processor::add_to_linker::<_, HasSelf<H>>(&mut linker, |d| &mut d.host)
            .map_err(|e| EngineError::Config(e.to_string()))?;
        let pre = linker
            .instantiate_pre(&component)
            .map_err(|e| EngineError::WorldMismatch(format!("{e:#}")))?;
        let pre =
            ProcessorPre::new(pre).map_err(|e| EngineError::WorldMismatch(format!("{e:#}")))?;
        Ok(Plugin {
            digest,
            size: bytes.len(),
            pre,
        })
    }
}

impl Engine {
    /// Drops the cached compiled form of a component (its plugin was deleted).
    pub fn forget(&self, digest: &str) {
        if let Some(cache) = &self.cache {
            cache.forget(digest);
        }
    }
}

/// `\0asm` followed by the component layer's version/layer bytes.
fn is_component(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && &bytes[0..4] == b"\0asm" && bytes[6..8] == [0x01, 0x00]
}

/// A compiled, validated plugin, ready to instantiate cheaply.
pub struct Plugin<H: 'static> {
    digest: String,
    size: usize,
    pre: ProcessorPre<StoreData<H>>,
}

impl<H> Clone for Plugin<H> {
    fn clone(&self) -> Self {
        Self {
            digest: self.digest.clone(),
            size: self.size,
            pre: self.pre.clone(),
        }
    }
}

impl<H: PluginHost> Plugin<H> {
    /// The sha256 of the component bytes, hex.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    pub fn size(&self) -> usize {
        self.size
    }
}

/// The data of one wasmtime store: the sandbox and the runtime's host.
pub struct StoreData<H> {
    sandbox: wasi::Sandbox,
    pub(crate) host: H,
}

/// Advances the engine epoch every `limits::TICK` until dropped.
struct EpochTicker {
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl EpochTicker {
    fn start(engine: wasmtime::Engine) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("weir-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(limits::TICK);
                    limits::TICKS.fetch_add(1, Ordering::Relaxed);
                    engine.increment_epoch();
                }
            })
            .expect("spawning the epoch ticker thread");
        Self { stop }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
