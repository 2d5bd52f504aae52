//! Fuzz target `release_file`: see `lanseed_fuzz::release_file` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lanseed_fuzz::release_file(data));
