//! The sandbox limits of one plugin instance: memory, tables and call time.
//!
//! All are enforced by wasmtime and turned into typed errors that say which
//! limit was hit and by how much, so a dead-letter record explains itself.
//! Memory and table caps are per instance (a store), not per linear memory
//! or table: a component with many memories shares one budget among them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How often the ticker advances the engine's epoch; the resolution of deadlines.
pub(crate) const TICK: Duration = Duration::from_millis(5);

/// Ticks since the engine started, advanced by the ticker thread. Reading an
/// atomic is far cheaper than the clock, and `scope.enter` runs per event.
pub(crate) static TICKS: AtomicU64 = AtomicU64::new(0);

pub(crate) fn now_ticks() -> u64 {
    TICKS.load(Ordering::Relaxed)
}

/// Why a plugin call was stopped by the sandbox.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SandboxError {
    #[error(
        "plugin memory limit exceeded: growing its linear memories from {current} to {requested} bytes in all, the cap is {max} bytes per instance"
    )]
    MemoryExceeded {
        current: usize,
        requested: usize,
        max: usize,
    },
    #[error(
        "plugin table limit exceeded: growing its tables from {current} to {requested} elements in all, the cap is {max} elements per instance"
    )]
    TablesExceeded {
        current: usize,
        requested: usize,
        max: usize,
    },
    #[error("plugin call exceeded its deadline of {limit_ms} ms")]
    DeadlineExceeded { limit_ms: u64 },
    /// A WASI call that would wait (a poll with nothing ready): the
    /// deadline cannot interrupt a thread parked in the host.
    #[error("plugin called {call}, which would wait: a plugin cannot wait or sleep")]
    WouldBlock { call: &'static str },
    /// A call of `wasi:sockets`, linked (the toolchains import it) but
    /// never granted.
    #[error("plugin called {call}: a plugin has no network")]
    NoNetwork { call: String },
}

/// Table elements (function references, 8 bytes each in the host) one
/// instance may hold in all its tables together; real plugins hold a few
/// thousand (a componentize-py plugin about 5 700).
pub(crate) const MAX_TABLE_ELEMENTS: usize = 50_000;
/// Linear memories, tables and core instances one plugin instance may have.
/// Toolchains emit one memory and a few tables and core instances (a
/// componentize-py plugin: 1 memory, 2 tables, 14 core instances); the pool
/// reserves address space for every memory and table it may hand out, so a
/// component with more is refused at instantiation.
pub(crate) const MAX_MEMORIES: u32 = 2;
pub(crate) const MAX_TABLES: u32 = 4;
pub(crate) const MAX_CORE_INSTANCES: u32 = 32;

/// Caps the linear memories and tables of one instance, in total.
pub(crate) struct MemoryLimiter {
    max_bytes: usize,
    /// Bytes of all its linear memories.
    bytes: usize,
    /// The last growth allowed, undone if wasmtime then fails it.
    last_growth: usize,
    /// Elements of all its tables.
    elements: usize,
    last_table_growth: usize,
}

impl MemoryLimiter {
    pub(crate) fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            bytes: 0,
            last_growth: 0,
            elements: 0,
            last_table_growth: 0,
        }
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let growth = desired.saturating_sub(current);
        let requested = self.bytes.saturating_add(growth);
        if requested > self.max_bytes {
            return Err(SandboxError::MemoryExceeded {
                current: self.bytes,
                requested,
                max: self.max_bytes,
            }
            .into());
        }
        self.bytes = requested;
        self.last_growth = growth;
        Ok(true)
    }

    /// The growth did not happen (`memory.grow` returns -1 to the plugin,
    /// as wasmtime's default does): it no longer counts.
    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.bytes -= std::mem::take(&mut self.last_growth);
        Ok(())
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let growth = desired.saturating_sub(current);
        let requested = self.elements.saturating_add(growth);
        if requested > MAX_TABLE_ELEMENTS {
            return Err(SandboxError::TablesExceeded {
                current: self.elements,
                requested,
                max: MAX_TABLE_ELEMENTS,
            }
            .into());
        }
        self.elements = requested;
        self.last_table_growth = growth;
        Ok(true)
    }

    fn table_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.elements -= std::mem::take(&mut self.last_table_growth);
        Ok(())
    }

    fn instances(&self) -> usize {
        MAX_CORE_INSTANCES as usize
    }

    fn tables(&self) -> usize {
        MAX_TABLES as usize
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES as usize
    }
}

/// The deadline of one call, in ticks.
pub(crate) struct Deadline {
    pub(crate) limit_ms: u64,
    pub(crate) limit_ticks: u64,
    /// When the current call started.
    pub(crate) started: u64,
}

impl Deadline {
    pub(crate) fn new(limit_ms: u64) -> Self {
        let tick_ms = TICK.as_millis() as u64;
        Self {
            limit_ms,
            limit_ticks: limit_ms.div_ceil(tick_ms).max(1),
            started: now_ticks(),
        }
    }

    pub(crate) fn restart(&mut self) {
        self.started = now_ticks();
    }

    pub(crate) fn expired(&self) -> bool {
        // `>` rather than `>=`: the call may have started just before a tick.
        now_ticks().saturating_sub(self.started) > self.limit_ticks
    }
}

#[cfg(test)]
mod tests {
    //! Components made here byte by byte (a core module with a memory or a
    //! table, instantiated N times) under the engine's real configuration:
    //! the limits hold whatever toolchain made the component.
    use wasmtime::Store;
    use wasmtime::component::{Component, Linker};

    use super::*;

    const PAGE: usize = 64 << 10;

    fn leb(mut n: u32) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return out;
            }
            out.push(byte | 0x80);
        }
    }

    fn section(id: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![id];
        out.extend(leb(body.len() as u32));
        out.extend_from_slice(body);
        out
    }

    /// A core module defining one memory of `pages` and/or one funcref
    /// table of `elements`.
    fn module(pages: Option<u32>, elements: Option<u32>) -> Vec<u8> {
        let mut out = b"\0asm\x01\0\0\0".to_vec();
        if let Some(elements) = elements {
            out.extend(section(4, &[&[1, 0x70, 0][..], &leb(elements)].concat()));
        }
        if let Some(pages) = pages {
            out.extend(section(5, &[&[1, 0][..], &leb(pages)].concat()));
        }
        out
    }

    /// A component instantiating `module` `copies` times.
    fn component(module: &[u8], copies: u32) -> Vec<u8> {
        let mut out = b"\0asm\x0d\0\x01\0".to_vec();
        out.extend(section(1, module));
        let mut instances = leb(copies);
        for _ in 0..copies {
            instances.extend([0, 0, 0]);
        }
        out.extend(section(2, &instances));
        out
    }

    /// Compiles and instantiates `bytes` under a limiter of `max_bytes`:
    /// the error, if any. (The pool refuses a component with too many
    /// memories or tables when it compiles, so at upload.)
    fn instantiate(bytes: &[u8], max_bytes: usize) -> Result<(), String> {
        let engine = wasmtime::Engine::new(&super::super::config()).unwrap();
        let component = Component::new(&engine, bytes).map_err(|e| format!("{e:#}"))?;
        let mut store = Store::new(&engine, MemoryLimiter::new(max_bytes));
        store.limiter(|limiter| limiter);
        Linker::new(&engine)
            .instantiate(&mut store, &component)
            .map(drop)
            .map_err(|e| format!("{e:#}"))
    }

    #[test]
    fn the_memory_cap_is_for_all_the_memories_of_an_instance_together() {
        let cap = 16 * PAGE;
        let ten_pages = module(Some(10), None);
        // One memory of 10 pages fits; two, 20 pages in all, do not, though
        // each alone is below the cap.
        instantiate(&component(&ten_pages, 1), cap).unwrap();
        let error = instantiate(&component(&ten_pages, 2), cap).unwrap_err();
        assert!(
            error.contains(&format!(
                "from {} to {} bytes in all, the cap is {cap} bytes per instance",
                10 * PAGE,
                20 * PAGE
            )),
            "{error}"
        );
    }

    #[test]
    fn a_component_with_more_memories_than_the_limit_is_refused() {
        let one_page = module(Some(1), None);
        instantiate(&component(&one_page, MAX_MEMORIES), 1 << 30).unwrap();
        let error = instantiate(&component(&one_page, MAX_MEMORIES + 1), 1 << 30).unwrap_err();
        assert!(
            error.contains("3 Wasm linear memories, which exceeds the configured maximum of 2"),
            "{error}"
        );
        let error = instantiate(&component(&module(None, None), 200), 1 << 30).unwrap_err();
        assert!(error.contains("instance"), "{error}");
    }

    #[test]
    fn table_elements_are_capped_for_all_the_tables_of_an_instance_together() {
        let per_table = 20_000;
        let table = module(None, Some(per_table));
        instantiate(&component(&table, 2), PAGE).unwrap();
        let error = instantiate(&component(&table, 3), PAGE).unwrap_err();
        assert!(
            error.contains(&format!(
                "from {} to {} elements in all, the cap is {MAX_TABLE_ELEMENTS} elements per instance",
                2 * per_table,
                3 * per_table
            )),
            "{error}"
        );
        let small = module(None, Some(1));
        let error = instantiate(&component(&small, MAX_TABLES + 1), PAGE).unwrap_err();
        assert!(
            error.contains("5 tables, which exceeds the configured maximum of 4"),
            "{error}"
        );
    }

    #[test]
    fn a_growth_wasmtime_refuses_does_not_count_against_the_cap() {
        use wasmtime::ResourceLimiter as _;
        let mut limiter = MemoryLimiter::new(10 * PAGE);
        assert!(limiter.memory_growing(0, 8 * PAGE, None).unwrap());
        limiter
            .memory_grow_failed(wasmtime::Error::msg("no"))
            .unwrap();
        assert!(limiter.memory_growing(0, 8 * PAGE, None).unwrap());
        assert!(limiter.memory_growing(0, 3 * PAGE, None).is_err());
    }
}
