#![no_main]
// The property checks live in dirhost::fuzzing (shared with tests/hostile_fuzz.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| dirhost::fuzzing::run("stats_credentials", data));
