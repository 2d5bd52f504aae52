//! Fuzz target `manifest`: see `lanseed_fuzz::manifest` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lanseed_fuzz::manifest(data));
