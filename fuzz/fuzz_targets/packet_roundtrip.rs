//! `cargo +nightly fuzz run packet_roundtrip`: structured packets (built with
//! `arbitrary`) through both codecs, the framing and first-frame detection;
//! see fuzz/README.md and [`plexwire_fuzz::checks::packet_roundtrip`].

#![no_main]

use libfuzzer_sys::fuzz_target;
use plexwire_fuzz::arb::ArbPacket;

fuzz_target!(|p: ArbPacket| plexwire_fuzz::checks::packet_roundtrip(&p.into_packet()));
