//! Fuzz target `zip_read`: see `lanseed_fuzz::zip_read` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lanseed_fuzz::zip_read(data));
