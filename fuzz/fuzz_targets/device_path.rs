//! Fuzz target `device_path`: see `lanseed_fuzz::device_path` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lanseed_fuzz::device_path(data));
