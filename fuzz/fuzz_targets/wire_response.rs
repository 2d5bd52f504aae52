//! Fuzz target `wire_response`: see `lanseed_fuzz::wire_response` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lanseed_fuzz::wire_response(data));
