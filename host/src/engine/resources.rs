//! Host types behind the WIT state resources.
//!
//! A resource handle's `rep` is the state id from the pipeline's catalog, so
//! a state call needs no table lookup; the component model still guarantees
//! a plugin can only use handles the host gave it.

/// `weir:plugin/state.value-state`.
pub struct ValueStateHandle;
/// `weir:plugin/state.map-state`.
pub struct MapStateHandle;
/// `weir:plugin/state.list-state`.
pub struct ListStateHandle;
