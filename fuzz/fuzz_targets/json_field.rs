//! See `weir::fuzzing::json_field` for the input's layout and what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weir::fuzzing::json_field(data));
