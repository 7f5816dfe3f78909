//! `cargo +nightly fuzz run first_frame`: see fuzz/README.md and [`plexwire_fuzz::checks::first_frame`].

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| plexwire_fuzz::checks::first_frame(data));
