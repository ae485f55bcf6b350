//! Write Weir stream-processing plugins in Rust.
//!
//! A plugin is a keyed process function: implement [`Processor`], declare
//! typed state ([`ValueState`], [`MapState`], [`ListState`]) in `open`, react
//! to events and timers through [`Context`], and export it with
//! [`export!`]. Build with `cargo build --target wasm32-wasip2` to get a
//! component the host loads; run `cargo test` natively to exercise it
//! against the in-memory host in `testing` (native targets only).
//!
//! ```
//! use serde::Deserialize;
//! use weir_sdk::{Context, Error, Event, Processor, ValueState};
//!
//! #[derive(Deserialize, Default)]
//! struct Config {
//!     /// Emit every `every`-th event of a key (0 or absent: every event).
//!     #[serde(default)]
//!     every: u64,
//! }
//!
//! /// Counts events per key and emits the running count.
//! struct Counter {
//!     every: u64,
//!     count: ValueState<u64>,
//! }
//!
//! impl Processor for Counter {
//!     type Config = Config;
//!
//!     fn open(config: Config) -> Result<Self, Error> {
//!         Ok(Counter { every: config.every.max(1), count: ValueState::new("count") })
//!     }
//!
//!     fn process(&mut self, ctx: &mut Context, _event: &Event) -> Result<(), Error> {
//!         let count = self.count.get()?.unwrap_or(0) + 1;
//!         self.count.set(&count)?;
//!         if count % self.every == 0 {
//!             ctx.emit(count.to_string());
//!         }
//!         Ok(())
//!     }
//! }
//!
//! weir_sdk::export!(Counter);
//!
//! // Natively, the same plugin runs against the in-memory test host.
//! # #[cfg(not(target_arch = "wasm32"))] {
//! use weir_sdk::testing::Harness;
//!
//! let mut harness = Harness::<Counter>::open_json(r#"{"every": 2}"#)?;
//! for _ in 0..3 {
//!     harness.process(Event::new("alice", "x").with_timestamp(5))?;
//! }
//! harness.process(Event::new("bob", "x"))?;
//! let outputs = harness.outputs("main");
//! assert_eq!(outputs.len(), 1);
//! assert_eq!(outputs[0].value, b"2");
//! assert_eq!(outputs[0].key.as_deref(), Some(&b"alice"[..]));
//! assert_eq!(outputs[0].timestamp, Some(5));
//! assert_eq!(harness.state::<u64>("alice", "count"), Some(3));
//! assert_eq!(harness.state::<u64>("bob", "count"), Some(1));
//! # }
//! # Ok::<(), Error>(())
//! ```

mod config;
mod context;
mod error;
mod event;
mod export;
mod json;
mod level;
mod processor;
mod state;
mod sys;
mod timer;

#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

pub use context::Context;
pub use error::Error;
pub use event::Event;
pub use level::Level;
pub use processor::Processor;
pub use state::{ListState, MapState, ValueState, decode_stored, encode_stored};
pub use timer::{TimeDomain, Timer};

/// Items `export!` expands to; not part of the API.
#[doc(hidden)]
pub mod __private {
    #[cfg(target_arch = "wasm32")]
    pub use crate::export::Export;
    pub use crate::export::assert_processor;
    #[cfg(target_arch = "wasm32")]
    pub use crate::sys::wasm::bindings;
}
