//! `mmio_registers`: see `moat_fuzz::mmio`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| moat_fuzz::mmio::run(data));
