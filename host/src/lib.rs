//! Weir: stateful, event-time stream processing whose user logic is a
//! sandboxed WebAssembly component.
//!
//! - [`spec`]: the pipeline spec (TOML/JSON) and its validation.
//! - [`engine`]: the wasmtime embedding (compile, validate, sandbox, call).
//! - [`runtime`]: sources → event time → key-by → subtasks → sinks.
//! - [`state`]: keyed state backends.
//! - [`connectors`]: sources and sinks.
//! - [`durable`]: crash-safe, fsynced file writes.
//! - [`api`]: the control plane (`weir serve`, the HTTP API).
//! - [`cli`]: the `weir` command line.

pub mod api;
pub mod checkpoint;
pub mod cli;
pub mod connectors;
pub mod durable;
pub mod engine;
/// The fuzz targets' entry points (`fuzz/`, `scripts/fuzz.sh`); not an API.
#[doc(hidden)]
pub mod fuzzing;
pub mod runtime;
pub mod spec;
pub mod state;
#[cfg(test)]
mod test_rng;
