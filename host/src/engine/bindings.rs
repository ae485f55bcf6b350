//! Host bindings generated from `wit/`, the one source of the contract.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "processor",
    // A host call can fail (a state backend error, a read outside a batch):
    // that traps the plugin instead of panicking the host.
    imports: { default: trappable },
});

pub use self::exports::weir::plugin::handler::StoredValue;
pub use self::weir::plugin::state::StateKind as WitStateKind;
pub use self::weir::plugin::types::{
    BatchResult, ChangeOp, EventBatch, EventHeaders, Failure, PackedChange, PackedEvent,
    PackedTimer, TimeDomain, TimerBatch,
};
