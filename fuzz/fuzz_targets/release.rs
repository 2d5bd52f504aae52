//! Fuzz target `release`: see `lanseed_fuzz::release` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lanseed_fuzz::release(data));
