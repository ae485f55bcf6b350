//! Host bindings generated from `wit/` — the one source of the contract.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "processor",
    // A host call can fail (a state backend error, a call outside an item):
    // that traps the plugin instead of panicking the host.
    imports: { default: trappable },
    with: {
        "weir:plugin/state.value-state": super::resources::ValueStateHandle,
        "weir:plugin/state.map-state": super::resources::MapStateHandle,
        "weir:plugin/state.list-state": super::resources::ListStateHandle,
    },
});

pub use self::weir::plugin::types::{Event, Failure, TimeDomain, Timer};
