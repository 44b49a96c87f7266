//! `polycache::fuzzing::config` under libFuzzer; see docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| polycache::fuzzing::config(data));
