//! Paths of the plugin components built for the tests (see build.rs).

include!(concat!(env!("OUT_DIR"), "/plugins.rs"));
