//! `agent_frames`: see `moat_fuzz::agent`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| moat_fuzz::agent::run(data));
