//! The sandbox limits of one plugin instance: linear memory and call time.
//!
//! Both are enforced by wasmtime and turned into typed errors that say which
//! limit was hit and by how much, so a dead-letter record explains itself.

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
        "plugin memory limit exceeded: growing linear memory from {current} to {requested} bytes, the cap is {max} bytes"
    )]
    MemoryExceeded {
        current: usize,
        requested: usize,
        max: usize,
    },
    #[error("plugin call exceeded its deadline of {limit_ms} ms")]
    DeadlineExceeded { limit_ms: u64 },
}

/// Caps the linear memory (and tables) of one instance.
pub(crate) struct MemoryLimiter {
    pub(crate) max_bytes: usize,
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            return Err(SandboxError::MemoryExceeded {
                current,
                requested: desired,
                max: self.max_bytes,
            }
            .into());
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables hold function references; a million is far beyond any real
        // plugin and keeps a runaway table from eating host memory.
        Ok(desired <= 1_000_000)
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
