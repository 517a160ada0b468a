//! `blk_chains`: see `moat_fuzz::blk`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| moat_fuzz::blk::run(data));
