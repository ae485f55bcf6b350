//! The wasm backend: the imports of the `weir:plugin/processor` world, as
//! wit-bindgen generates them from `wit/`, plus the conversions between the
//! generated types and the SDK's. It must stay a thin veneer: every call here
//! crosses into the host.

use crate::{Event, Level, TimeDomain, Timer};

/// Bindings of the `processor` world. Public (hidden) because `export!`
/// expands in the plugin's crate and invokes wit-bindgen's export macro,
/// which refers to the generated types through this path.
#[doc(hidden)]
#[allow(clippy::all, missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "weir:plugin/processor",
        pub_export_macro: true,
        export_macro_name: "__export_weir_handler",
        default_bindings_module: "::weir_sdk::__private::bindings",
    });

    pub use self::exports::weir::plugin::handler::Guest;
    pub use self::weir::plugin::types::{Event, Failure, Timer};
}

use bindings::weir::plugin::{log as host_log, output, timers};

pub(crate) use bindings::weir::plugin::scope::enter;
pub(crate) use bindings::weir::plugin::state::{
    ListState as RawListState, MapState as RawMapState, ValueState as RawValueState,
};

pub(crate) fn emit(key: Option<&[u8]>, value: &[u8]) {
    output::emit(key, value);
}

pub(crate) fn emit_to(name: &str, key: Option<&[u8]>, value: &[u8]) {
    output::emit_to(name, key, value);
}

pub(crate) fn register_timer(domain: TimeDomain, timestamp: i64) {
    match domain {
        TimeDomain::EventTime => timers::register_event_time(timestamp),
        TimeDomain::ProcessingTime => timers::register_processing_time(timestamp),
    }
}

pub(crate) fn delete_timer(domain: TimeDomain, timestamp: i64) {
    match domain {
        TimeDomain::EventTime => timers::delete_event_time(timestamp),
        TimeDomain::ProcessingTime => timers::delete_processing_time(timestamp),
    }
}

pub(crate) fn watermark() -> i64 {
    timers::current_watermark()
}

pub(crate) fn processing_time() -> i64 {
    timers::current_processing_time()
}

pub(crate) fn log(level: Level, message: &str) {
    let level = match level {
        Level::Trace => host_log::Level::Trace,
        Level::Debug => host_log::Level::Debug,
        Level::Info => host_log::Level::Info,
        Level::Warn => host_log::Level::Warn,
        Level::Error => host_log::Level::Error,
    };
    host_log::log(level, message);
}

pub(crate) fn counter_add(name: &str, delta: u64) {
    host_log::counter_add(name, delta);
}

/// Routes panic messages to the host's log before the trap, because a trap
/// alone tells the host nothing about why the plugin died.
pub(crate) fn install_panic_hook() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let message = info
                .payload_as_str()
                .unwrap_or("(a non-string panic payload)");
            let line = match info.location() {
                Some(at) => format!("panicked at {}:{}: {message}", at.file(), at.line()),
                None => format!("panicked: {message}"),
            };
            log(Level::Error, &line);
        }));
    });
}

impl From<bindings::Event> for Event {
    fn from(event: bindings::Event) -> Self {
        Event {
            key: event.key,
            value: event.value,
            timestamp: event.timestamp,
            headers: event.headers,
        }
    }
}

impl From<bindings::Timer> for Timer {
    fn from(timer: bindings::Timer) -> Self {
        let domain = match timer.domain {
            bindings::weir::plugin::types::TimeDomain::EventTime => TimeDomain::EventTime,
            bindings::weir::plugin::types::TimeDomain::ProcessingTime => TimeDomain::ProcessingTime,
        };
        Timer::new(timer.key, timer.timestamp, domain)
    }
}
