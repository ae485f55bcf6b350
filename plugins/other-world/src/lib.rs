//! Test-only: a valid component of a world that is not
//! `weir:plugin/processor` (it exports one `hello` function and nothing
//! else). The host must refuse to load it, naming the world, rather than
//! fail later when it calls an export that is not there.
//!
//! Wasm only, like rogue-guest: its export carries a component name a native
//! shared library cannot, and there is nothing to test natively.
#![cfg(target_arch = "wasm32")]

#[allow(clippy::all, missing_docs)]
mod bindings {
    wit_bindgen::generate!({
        inline: "package test:other; world other { export hello: func() -> string; }",
    });
}

struct Other;

impl bindings::Guest for Other {
    fn hello() -> String {
        "hello from another world".to_owned()
    }
}

bindings::export!(Other with_types_in bindings);
