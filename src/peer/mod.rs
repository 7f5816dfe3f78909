//! The packet stream: a symmetric, tagged request/response connection with
//! channels, wire-compatible with cs.packetstream 20240630.
//!
//! Either end may call the other. A request carries an rq_type, flags and a
//! payload on a channel; its answer is the seed's `(ok, flags, payload)`.
//! Many requests may be in flight each way and are answered in any order.
//! ERQ ("end of requests") and EOF end a connection in order.
//!
//! The module is layered like the rest of plexwire:
//!
//! | file | what |
//! |---|---|
//! | [`packet`] | one packet's bytes: strict decode, minimal encode (fuzzed) |
//! | [`PacketCore`] | the protocol state, sans-IO: tags per channel, pending requests, served requests, ERQ/EOF |
//! | [`PacketConnection`] | the async shell on [`crate::link`], over any byte-stream backend or plain `AsyncRead + AsyncWrite` halves |
//! | [`RequestMap`], [`PacketRequest`] | a typed layer: the seed's `BaseRequest` / `HasPacketConnection` |
//!
//! Channels are provisioned on first use (a 20240630 peer has only channel
//! 0 and answers others `unknown channel %d`, which becomes
//! [`PacketError::UnknownChannel`]).
//!
//! ```
//! use plexwire::peer::{Handler, PacketConfig, PacketConnection};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (a, b) = tokio::io::duplex(1 << 16);
//! let (ar, aw) = tokio::io::split(a);
//! let (br, bw) = tokio::io::split(b);
//! let upper = Handler::new(|rq: plexwire::peer::IncomingRequest| async move {
//!     Ok::<_, std::io::Error>(String::from_utf8_lossy(&rq.payload).to_uppercase())
//! });
//! let server = PacketConnection::from_io(br, bw, "server", Some(upper), PacketConfig::default());
//! let client = PacketConnection::from_io(ar, aw, "client", None, PacketConfig::default());
//! let answer = client.call(2, 0, "hello", 0).await?;
//! assert!(answer.ok);
//! assert_eq!(&answer.payload[..], b"HELLO");
//! let (_, _) = tokio::join!(client.close(), async { server.join_recv().await; server.close().await });
//! # Ok(()) }
//! ```

mod connection;
mod core;
pub mod demo;
mod error;
pub mod packet;
mod typed;

pub use self::connection::{
    Handler, HandlerError, PacketConfig, PacketConnection, PacketWire, PendingResponse,
    DEFAULT_MAX_PENDING,
};
pub use self::core::{
    CoreConfig, Event, IncomingRequest, PacketCore, Reply, RequestId, Response,
    DEFAULT_MAX_PACKET_SIZE, DEFAULT_MAX_SERVING, EXCEPTION_DURING_HANDLER, NO_REQUEST_HANDLER,
    REJECTING_CANCELLED, REQUESTS_NO_LONGER_ALLOWED, UNKNOWN_CHANNEL,
};
pub use self::error::PacketError;
pub use self::packet::{MalformedPacket, Packet};
pub use self::typed::{Fulfil, PacketRequest, RequestMap};
