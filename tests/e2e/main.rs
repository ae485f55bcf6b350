//! End-to-end tests: the real `weir` binary, real plugin components.

mod client;
mod cross_language;
mod durability;
mod event_time;
mod fake_server;
mod http_guard;
mod js;
mod kafka;
mod kafka_api;
mod liveness;
mod plugin_new;
mod plugins_extra;
mod python;
mod recovery;
mod run_pipeline;
mod sandbox;
mod sdk_timers;
mod serve;
mod spec_errors;
mod state;
mod support;
mod swap;
mod tansu;
mod trust_paths;

/// Every plugin in plugins/ has a test named after it, or this fails to build.
mod tested {
    pub use crate::event_time::timer_echo;
    pub use crate::plugins_extra::{counter, counter_v2, other_world};
    pub use crate::run_pipeline::{amount_filter, fraud_detector, passthrough};
    pub use crate::sandbox::{rogue_guest, sandbox_probe};
    pub use crate::serve::counter_v3;
    pub use crate::state::state_probe;
}

macro_rules! assert_plugin_is_tested {
    ($name:ident) => {
        #[allow(unused_imports)]
        use tested::$name as _;
    };
}

weir_test_artifacts::for_each_plugin!(assert_plugin_is_tested);
