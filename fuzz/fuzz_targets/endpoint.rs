//! `cargo +nightly fuzz run endpoint`: see fuzz/README.md and [`plexwire_fuzz::checks::endpoint`].

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| plexwire_fuzz::checks::endpoint(data));
