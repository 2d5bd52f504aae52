//! Fuzz target `wire_request`: see `lanseed_fuzz::wire_request` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lanseed_fuzz::wire_request(data));
