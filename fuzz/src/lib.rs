//! Support for plexwire's fuzz targets.
//!
//! [`checks`] holds every property the targets assert, one function per
//! target, taking plain bytes (or a [`Packet`](plexwire::protocol::Packet)).
//! It depends on nothing the root crate's tests lack, so
//! `tests/fuzz_regressions.rs` includes the very same file with `#[path]` and
//! replays the committed corpus and every crash input under plain
//! `cargo test`. [`arb`] turns fuzzer bytes into structured packets with
//! `arbitrary`, for the `packet_roundtrip` target only.

pub mod arb;
pub mod checks;
