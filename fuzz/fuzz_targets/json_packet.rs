//! `cargo +nightly fuzz run json_packet`: see fuzz/README.md and [`plexwire_fuzz::checks::json_packet`].

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| plexwire_fuzz::checks::json_packet(data));
