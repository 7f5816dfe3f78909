//! `cargo +nightly fuzz run bincode_packet`: see fuzz/README.md and [`plexwire_fuzz::checks::bincode_packet`].

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| plexwire_fuzz::checks::bincode_packet(data));
