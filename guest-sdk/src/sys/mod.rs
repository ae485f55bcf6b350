//! The two backends behind one internal API: on wasm the component's imports
//! (`wasm.rs`), natively an in-memory test host (`native.rs`). Both provide
//! the same items: `RawValueState`, `RawMapState`, `RawListState` (byte
//! states: get/set/clear, map and list operations), `emit`, `emit_to`,
//! `register_timer`, `delete_timer`, `watermark`, `processing_time`, `log`
//! and `counter_add`. Nothing above this module knows which one it runs on.

#[cfg(not(target_arch = "wasm32"))]
pub(crate) mod native;
#[cfg(target_arch = "wasm32")]
pub(crate) mod wasm;

#[cfg(not(target_arch = "wasm32"))]
pub(crate) use native::*;
#[cfg(target_arch = "wasm32")]
pub(crate) use wasm::*;
