//! `cargo +nightly fuzz run packet_stream`: see fuzz/README.md and [`plexwire_fuzz::checks::packet_stream`].

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| plexwire_fuzz::checks::packet_stream(data));
