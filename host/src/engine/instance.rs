//! One live plugin instance: its store and its exports.
//!
//! Every call runs under the sandbox limits. A call that traps (including a
//! deadline or memory cap hit) poisons the instance: the component model
//! forbids re-entering it, so the runtime replaces it with a fresh one.

use wasmtime::Store;

use super::batch::{Changes, EventBlock, Timer, empty_timer_batch, pack_timers};
use super::bindings::{BatchResult, Processor, StoredValue, TimerBatch};
use super::limits::SandboxError;
use super::wasi::Sandbox;
use super::{EngineError, Plugin, PluginHost, StoreData};

/// What stopped a plugin call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallErrorKind {
    /// The call ran past its deadline.
    Deadline,
    /// The plugin tried to grow its memory past the cap.
    Memory,
    /// The plugin trapped (a panic, an unreachable, a bad host call).
    Trap,
}

impl CallErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CallErrorKind::Deadline => "deadline",
            CallErrorKind::Memory => "memory",
            CallErrorKind::Trap => "trap",
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct CallError {
    pub kind: CallErrorKind,
    pub message: String,
}

/// What `migrate` made of a batch of stored values: each one's new bytes,
/// or `None` to drop it.
pub type Migrated = Vec<Option<Vec<u8>>>;

pub struct PluginInstance<H: 'static> {
    store: Store<StoreData<H>>,
    bindings: Processor,
    poisoned: bool,
    /// The packed timers of the last call, kept for their buffers.
    timers: TimerBatch,
}

impl<H: PluginHost> PluginInstance<H> {
    /// Instantiates `plugin` around `host` with a fresh sandbox.
    pub fn new(
        plugin: &Plugin<H>,
        host: H,
        memory_bytes: usize,
        call_timeout_ms: u64,
    ) -> Result<Self, (EngineError, H)> {
        let data = StoreData {
            sandbox: Sandbox::new(memory_bytes, call_timeout_ms),
            host,
        };
        let mut store = Store::new(plugin.pre.engine(), data);
        store.limiter(|d| &mut d.sandbox.limiter);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|ctx| {
            let deadline = &ctx.data().sandbox.deadline;
            if deadline.expired() {
                Err(SandboxError::DeadlineExceeded {
                    limit_ms: deadline.limit_ms,
                }
                .into())
            } else {
                Ok(wasmtime::UpdateDeadline::Continue(1))
            }
        });
        match plugin.pre.instantiate(&mut store) {
            Ok(bindings) => Ok(Self {
                store,
                bindings,
                poisoned: false,
                timers: empty_timer_batch(),
            }),
            Err(e) => {
                let host = store.into_data().host;
                Err((EngineError::Instantiate(format!("{e:#}")), host))
            }
        }
    }

    /// Calls the plugin's `open`. `Ok(Err(reason))` is the plugin refusing.
    pub fn open(&mut self, config: &str) -> Result<Result<(), String>, CallError> {
        self.before_call()?;
        let result = self
            .bindings
            .weir_plugin_handler()
            .call_open(&mut self.store, config);
        self.after_call(result)
    }

    /// Calls `process` on a batch; returns what the batch changed.
    pub fn process(&mut self, events: &EventBlock) -> Result<Changes, CallError> {
        self.before_call()?;
        let result = self
            .bindings
            .weir_plugin_handler()
            .call_process(&mut self.store, events.as_batch());
        self.after_call(result).and_then(checked)
    }

    /// Calls `on-timer` on a batch of fired timers.
    pub fn on_timer(&mut self, timers: &[Timer]) -> Result<Changes, CallError> {
        self.before_call()?;
        pack_timers(timers, &mut self.timers).map_err(too_large)?;
        let result = self
            .bindings
            .weir_plugin_handler()
            .call_on_timer(&mut self.store, &self.timers);
        self.after_call(result).and_then(checked)
    }

    /// The version of the format the plugin keeps its state in.
    pub fn state_version(&mut self) -> Result<u32, CallError> {
        self.before_call()?;
        let result = self
            .bindings
            .weir_plugin_handler()
            .call_state_version(&mut self.store);
        self.after_call(result)
    }

    /// Calls `migrate` on a batch of stored values written in state version
    /// `from`. `Ok(Err(reason))` is the plugin refusing; a result of another
    /// length than `items` is refused here, for the plugin.
    pub fn migrate(
        &mut self,
        from: u32,
        items: &[StoredValue],
    ) -> Result<Result<Migrated, String>, CallError> {
        self.before_call()?;
        let result = self
            .bindings
            .weir_plugin_handler()
            .call_migrate(&mut self.store, from, items);
        Ok(self.after_call(result)?.and_then(|out| {
            if out.len() == items.len() {
                Ok(out)
            } else {
                Err(format!(
                    "migrate returned {} results for {} stored values",
                    out.len(),
                    items.len()
                ))
            }
        }))
    }

    pub fn host(&mut self) -> &mut H {
        &mut self.store.data_mut().host
    }

    pub fn into_host(self) -> H {
        self.store.into_data().host
    }

    fn before_call(&mut self) -> Result<(), CallError> {
        if self.poisoned {
            return Err(CallError {
                kind: CallErrorKind::Trap,
                message: "the plugin instance trapped earlier and cannot be called again".into(),
            });
        }
        self.store.data_mut().sandbox.deadline.restart();
        Ok(())
    }

    fn after_call<T>(&mut self, result: wasmtime::Result<T>) -> Result<T, CallError> {
        result.map_err(|e| {
            self.poisoned = true;
            classify(e)
        })
    }
}

/// A batch the contract cannot carry is the item's problem, like a batch
/// that does not fit the plugin's memory: the replay isolates the item.
fn too_large(error: super::batch::TooLarge) -> CallError {
    CallError {
        kind: CallErrorKind::Memory,
        message: error.to_string(),
    }
}

/// A result whose changes cannot be unpacked fails the call like a trap (the
/// replay isolates the item whose changes are malformed); the instance
/// itself is sound, so it is not poisoned.
fn checked(result: BatchResult) -> Result<Changes, CallError> {
    Changes::new(result).map_err(|e| CallError {
        kind: CallErrorKind::Trap,
        message: e.to_string(),
    })
}

fn classify(error: wasmtime::Error) -> CallError {
    if let Some(sandbox) = error.downcast_ref::<SandboxError>() {
        let kind = match sandbox {
            SandboxError::MemoryExceeded { .. } | SandboxError::TablesExceeded { .. } => {
                CallErrorKind::Memory
            }
            SandboxError::DeadlineExceeded { .. } => CallErrorKind::Deadline,
            SandboxError::WouldBlock { .. } | SandboxError::NoNetwork { .. } => CallErrorKind::Trap,
        };
        return CallError {
            kind,
            message: sandbox.to_string(),
        };
    }
    // `{:#}` keeps the trap code and the host error that caused it, without
    // the wasm backtrace (which names guest-internal frames).
    let message = match error.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => format!("plugin trapped: {trap}"),
        None => format!("plugin call failed: {}", root_message(&error)),
    };
    CallError {
        kind: CallErrorKind::Trap,
        message,
    }
}

fn root_message(error: &wasmtime::Error) -> String {
    let mut chain = error
        .chain()
        .map(|c| c.to_string())
        .filter(|s| !s.starts_with("error while executing"));
    chain.next().unwrap_or_else(|| error.to_string())
}
