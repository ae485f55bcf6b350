//! The WASI world a plugin sees: nothing.
//!
//! Rust, Python and JavaScript toolchains import WASI even when the plugin
//! never uses it (a `HashMap` seeds itself from `wasi:random`), so the host
//! links WASI but grants no capability: no preopened directories, no
//! environment, no arguments, no network address, stdio that goes nowhere, a
//! wall clock frozen at the Unix epoch and randomness from a fixed seed, so
//! that replaying the same input gives the same output. Time reaches a
//! plugin only through the `timers` interface.

use std::time::Duration;

use rand::SeedableRng;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::StoreData;
use super::limits::{Deadline, MemoryLimiter};

/// The fixed seed of a plugin's randomness.
const RANDOM_SEED: u64 = 0x5745_4952; // "WEIR"

pub(crate) struct Sandbox {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) deadline: Deadline,
}

impl Sandbox {
    pub(crate) fn new(memory_bytes: usize, call_timeout_ms: u64) -> Self {
        let wasi = WasiCtx::builder()
            .wall_clock(FrozenClock)
            .monotonic_clock(FrozenClock)
            .secure_random(rand::rngs::StdRng::seed_from_u64(RANDOM_SEED))
            .insecure_random(rand::rngs::StdRng::seed_from_u64(RANDOM_SEED))
            .insecure_random_seed(u128::from(RANDOM_SEED))
            .allow_ip_name_lookup(false)
            .allow_tcp(false)
            .allow_udp(false)
            .build();
        Self {
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter {
                max_bytes: memory_bytes,
            },
            deadline: Deadline::new(call_timeout_ms),
        }
    }
}

impl<H: Send> WasiView for StoreData<H> {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.sandbox.wasi,
            table: &mut self.sandbox.table,
        }
    }
}

/// A clock that never moves: plugins read time through `timers`.
struct FrozenClock;

impl wasmtime_wasi::HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl wasmtime_wasi::HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }

    fn now(&self) -> u64 {
        0
    }
}
