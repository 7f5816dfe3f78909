//! `cargo +nightly fuzz run frame_decoder`: see fuzz/README.md and [`plexwire_fuzz::checks::frame_decoder`].

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| plexwire_fuzz::checks::frame_decoder(data));
