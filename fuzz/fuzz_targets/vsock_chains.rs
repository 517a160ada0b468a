//! `vsock_chains`: see `moat_fuzz::vsock`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| moat_fuzz::vsock::run(data));
