//! The transport layer of [plexwire](https://docs.rs/plexwire).
//!
//! This crate knows nothing of packets. It provides:
//!
//! - the [`ClientTransport`] and [`ServerTransport`] traits every backend implements;
//! - [`Endpoint`] URLs that name a backend and an address (`tcp://127.0.0.1:51500`,
//!   `unix:///tmp/x.sock`, `mem://name`, …), parsed with the `url` crate;
//! - the [`Registry`] of backends: each backend crate describes itself with
//!   a [`Backend`] (schemes, options, cargo feature, connect, bind, loopback
//!   variants for test suites); this crate holds no list of them;
//! - [`Connection`]: what a backend hands over — a byte stream or a message
//!   channel — and its split into a [`FrameSender`] and a [`FrameReceiver`];
//! - [`Framing`]s, values a protocol picks: [`FrameCodec`], the u32
//!   big-endian length prefix (ReasonChip, plexwire), and [`BsuintCodec`],
//!   cs.packetstream's base-128 prefix, each with an explicit maximum frame size;
//! - [`Handshakes`]: the bounded-handshake accept loop of every listener
//!   whose connections need a handshake (TLS, QUIC, HTTPS);
//! - the in-memory backend, [`MemTransport`] and [`MemListener`].
//!
//! Backends live in their own crates (`plexwire-tcp`, `plexwire-unix`, …) and
//! are selected with cargo features of the `plexwire` crate, which registers
//! the compiled-in ones (`plexwire::transport::registry()`).

#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![forbid(unsafe_code)]

mod accept;
mod bsuint;
mod connection;
mod endpoint;
mod error;
mod framing;
mod mem;
mod registry;
mod traits;

pub use accept::{
    HandshakeLimits, Handshakes, Incoming, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_MAX_HANDSHAKES,
    FAILURE_REPORT_INTERVAL,
};
pub use bsuint::{bsuint_len, parse_bsuint, put_bsuint, BsuintCodec, MAX_BSUINT_HEADER};
pub use connection::{
    BoxFrameSink, BoxFrameStream, BoxMessageSink, BoxRead, BoxWrite, Connection, FrameReceiver,
    FrameSender, Framing, Io, Lane, LaneEnds, LaneSink, Message, MessageKind, PartialBudget,
    PeerInfo,
};
pub use endpoint::{
    encode_url_part, Address, Endpoint, DEFAULT_MAX_FRAME_SIZE, MAX_FRAME_SIZE_OPTION,
};
pub use error::TransportError;
pub use framing::{FrameCodec, HEADER_LEN, RESERVE_AHEAD};
pub use mem::{backend as mem_backend, pair as mem_pair, MemListener, MemTransport};
pub use registry::{
    AddressShape, Backend, BindFn, ConnectFn, DevCerts, DuplicateScheme, Loopback, LoopbackEnv,
    LoopbackFn, OptionSpec, Registry, SchemeSpec, ValueCheck, UNIX_SOCKET_OPTIONS,
};
pub use traits::{ClientTransport, ServerTransport};
