//! The WASI world a plugin sees: nothing, and nothing to wait for.
//!
//! Rust, Python and JavaScript toolchains import WASI even when the plugin
//! never uses it (a `HashMap` seeds itself from `wasi:random`), so the host
//! links the WASI interfaces those toolchains import but grants no
//! capability: no preopened directories (so no file can be opened), no
//! environment, no arguments, stdio that goes nowhere, a wall clock frozen
//! at the Unix epoch and randomness from a fixed seed, so that replaying the
//! same input gives the same output. Time reaches a plugin only through the
//! `timers` interface. `wasi:sockets` (which componentize-py imports) is
//! linked to functions that trap, naming the call: no socket ever exists.
//!
//! Nothing a plugin calls may block: the epoch deadline interrupts running
//! wasm only, so a plugin parked in a host call would hold its subtask's
//! thread for ever. So `wasi:clocks/monotonic-clock` is frozen too and its
//! subscriptions are ready at once (a sleep returns at once), and
//! `wasi:io/poll` is the host's own: it answers which pollables are ready
//! without waiting, and traps, naming the call, where wasmtime-wasi's would
//! wait for one.

use std::time::Duration;

use rand::SeedableRng;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, HasData, Linker, Resource, ResourceTable, ResourceType};
use wasmtime_wasi::cli::{WasiCli, WasiCliView};
use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView};
use wasmtime_wasi::filesystem::{WasiFilesystem, WasiFilesystemView};
use wasmtime_wasi::p2::bindings::{self as p2, sync};
use wasmtime_wasi::p2::{DynPollable, Pollable};
use wasmtime_wasi::random::WasiRandom;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::StoreData;
use super::limits::{Deadline, MemoryLimiter, SandboxError};

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
            limiter: MemoryLimiter::new(memory_bytes),
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

/// Links the WASI interfaces a plugin may import, none of which can block.
/// (`wasi:sockets`: [`sockets_as_traps`]; other WASI interfaces are not
/// linked, so a component that imports one fails to load, naming it.)
pub(crate) fn add_to_linker<T: WasiView + 'static>(l: &mut Linker<T>) -> wasmtime::Result<()> {
    use p2::{cli, clocks, filesystem, random};

    p2::io::error::add_to_linker::<T, Table>(l, |t| t.ctx().table)?;
    // Streams exist only for stdio: stdin is closed and stdout/stderr are
    // sinks, so even their `blocking-*` methods return at once.
    sync::io::streams::add_to_linker::<T, Table>(l, |t| t.ctx().table)?;
    sync::io::poll::add_to_linker::<T, NoWait>(l, |t| NoWaitView(t.ctx().table))?;
    clocks::wall_clock::add_to_linker::<T, WasiClocks>(l, T::clocks)?;
    clocks::monotonic_clock::add_to_linker::<T, NoWait>(l, |t| NoWaitView(t.ctx().table))?;
    random::random::add_to_linker::<T, WasiRandom>(l, |t| t.ctx().ctx.random())?;
    random::insecure::add_to_linker::<T, WasiRandom>(l, |t| t.ctx().ctx.random())?;
    random::insecure_seed::add_to_linker::<T, WasiRandom>(l, |t| t.ctx().ctx.random())?;
    cli::exit::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::environment::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::stdin::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::stdout::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::stderr::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_input::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_output::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stdin::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stdout::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stderr::add_to_linker::<T, WasiCli>(l, T::cli)?;
    // libc asks for the preopened directories before any path operation:
    // there are none, so no descriptor (and no blocking file I/O) exists.
    filesystem::preopens::add_to_linker::<T, WasiFilesystem>(l, T::filesystem)?;
    sync::filesystem::types::add_to_linker::<T, WasiFilesystem>(l, T::filesystem)?;
    Ok(())
}

/// Links every function `component` imports from `wasi:sockets/*` to a
/// trap that names it, and each socket resource type to one no handle of
/// which is ever made.
pub(crate) fn sockets_as_traps<T: 'static>(
    linker: &mut Linker<T>,
    component: &Component,
) -> wasmtime::Result<()> {
    const SOCKETS: &str = "wasi:sockets/";
    let engine = component.engine();
    let ty = component.component_type();
    let instances = || {
        ty.imports(engine)
            .filter_map(|(name, import)| match import.ty {
                ComponentItem::ComponentInstance(instance) => Some((name, instance)),
                _ => None,
            })
    };
    // Resource types other imports define (`wasi:io/streams`'s streams),
    // which a socket interface re-exports: they are linked already, and a
    // second definition would not match the first.
    let mut defined: Vec<ResourceType> = Vec::new();
    for (_, instance) in instances().filter(|(name, _)| !name.starts_with(SOCKETS)) {
        for (_, export) in instance.exports(engine) {
            if let ComponentItem::Resource(resource) = export.ty {
                defined.push(resource);
            }
        }
    }
    for (name, instance) in instances().filter(|(name, _)| name.starts_with(SOCKETS)) {
        let mut stubs = linker.instance(name)?;
        for (export, item) in instance.exports(engine) {
            match item.ty {
                ComponentItem::ComponentFunc(_) => {
                    let call = format!("{name}#{export}");
                    stubs.func_new(export, move |_, _, _, _| {
                        Err(SandboxError::NoNetwork { call: call.clone() }.into())
                    })?;
                }
                ComponentItem::Resource(resource) if !defined.contains(&resource) => {
                    defined.push(resource);
                    stubs.resource(export, ResourceType::host::<NoSocket>(), |_, _| Ok(()))?;
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// The host type of `wasi:sockets` resources: never instantiated.
struct NoSocket;

/// The resource table, for the `wasi:io` interfaces wasmtime-wasi
/// implements on it.
struct Table;

impl HasData for Table {
    type Data<'a> = &'a mut ResourceTable;
}

/// The host's `wasi:io/poll` and `wasi:clocks/monotonic-clock`.
struct NoWait;

impl HasData for NoWait {
    type Data<'a> = NoWaitView<'a>;
}

pub(crate) struct NoWaitView<'a>(&'a mut ResourceTable);

/// A clock subscription: time does not pass for a plugin, so whatever it
/// waits for has already come.
struct AlreadyDue;

#[wasmtime_wasi::async_trait]
impl Pollable for AlreadyDue {
    async fn ready(&mut self) {}
}

impl NoWaitView<'_> {
    fn already_due(&mut self) -> wasmtime::Result<Resource<DynPollable>> {
        let due = self.0.push(AlreadyDue)?;
        wasmtime_wasi::p2::subscribe(self.0, due)
    }

    /// Whether `pollable` is ready now; never waits (wasmtime-wasi's
    /// `ready` polls the pollable's future once).
    fn is_ready(&mut self, pollable: &Resource<DynPollable>) -> wasmtime::Result<bool> {
        sync::io::poll::HostPollable::ready(self.0, Resource::new_borrow(pollable.rep()))
    }
}

impl p2::clocks::monotonic_clock::Host for NoWaitView<'_> {
    fn now(&mut self) -> wasmtime::Result<u64> {
        Ok(0)
    }

    fn resolution(&mut self) -> wasmtime::Result<u64> {
        Ok(1_000_000_000)
    }

    fn subscribe_instant(&mut self, _when: u64) -> wasmtime::Result<Resource<DynPollable>> {
        self.already_due()
    }

    fn subscribe_duration(&mut self, _duration: u64) -> wasmtime::Result<Resource<DynPollable>> {
        self.already_due()
    }
}

impl sync::io::poll::Host for NoWaitView<'_> {
    fn poll(&mut self, pollables: Vec<Resource<DynPollable>>) -> wasmtime::Result<Vec<u32>> {
        if pollables.is_empty() {
            return Err(SandboxError::WouldBlock {
                call: "wasi:io/poll.poll (with no pollables)",
            }
            .into());
        }
        let mut ready = Vec::new();
        for (index, pollable) in pollables.iter().enumerate() {
            if self.is_ready(pollable)? {
                ready.push(u32::try_from(index)?);
            }
        }
        if ready.is_empty() {
            return Err(SandboxError::WouldBlock {
                call: "wasi:io/poll.poll",
            }
            .into());
        }
        Ok(ready)
    }
}

impl sync::io::poll::HostPollable for NoWaitView<'_> {
    fn ready(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<bool> {
        self.is_ready(&pollable)
    }

    fn block(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        if self.is_ready(&pollable)? {
            Ok(())
        } else {
            Err(SandboxError::WouldBlock {
                call: "wasi:io/poll.[method]pollable.block",
            }
            .into())
        }
    }

    fn drop(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        sync::io::poll::HostPollable::drop(self.0, pollable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sync::io::poll::{Host as _, HostPollable as _};

    /// A pollable that is never ready: what a socket or a pipe would be.
    struct Never;

    #[wasmtime_wasi::async_trait]
    impl Pollable for Never {
        async fn ready(&mut self) {
            std::future::pending::<()>().await
        }
    }

    fn never(table: &mut ResourceTable) -> Resource<DynPollable> {
        let never = table.push(Never).unwrap();
        wasmtime_wasi::p2::subscribe(table, never).unwrap()
    }

    #[test]
    fn a_sleep_is_over_at_once() {
        use p2::clocks::monotonic_clock::Host as _;
        let mut table = ResourceTable::new();
        let mut view = NoWaitView(&mut table);
        let hour = view.subscribe_duration(3_600_000_000_000).unwrap();
        let started = std::time::Instant::now();
        view.block(Resource::new_borrow(hour.rep())).unwrap();
        let due = view.subscribe_instant(u64::MAX).unwrap();
        assert_eq!(
            view.poll(vec![
                Resource::new_borrow(hour.rep()),
                Resource::new_borrow(due.rep())
            ])
            .unwrap(),
            [0, 1]
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        view.drop(hour).unwrap();
        view.drop(due).unwrap();
        assert_eq!(view.now().unwrap(), 0, "the monotonic clock is frozen");
    }

    #[test]
    fn waiting_for_what_is_not_ready_traps_naming_the_call_instead_of_blocking() {
        let mut table = ResourceTable::new();
        let pending = never(&mut table);
        let mut view = NoWaitView(&mut table);
        assert!(!view.ready(Resource::new_borrow(pending.rep())).unwrap());
        let error = view.block(Resource::new_borrow(pending.rep())).unwrap_err();
        assert!(error.to_string().contains("pollable.block"), "{error}");
        let error = view
            .poll(vec![Resource::new_borrow(pending.rep())])
            .unwrap_err();
        let message = error.to_string();
        assert!(message.contains("wasi:io/poll.poll"), "{message}");
        assert!(message.contains("cannot wait"), "{message}");
        // Among ready ones, only the ready ones are reported, at once.
        let due = {
            let due = view.0.push(AlreadyDue).unwrap();
            wasmtime_wasi::p2::subscribe(view.0, due).unwrap()
        };
        assert_eq!(
            view.poll(vec![
                Resource::new_borrow(pending.rep()),
                Resource::new_borrow(due.rep())
            ])
            .unwrap(),
            [1]
        );
        assert!(view.poll(Vec::new()).is_err());
    }
}
