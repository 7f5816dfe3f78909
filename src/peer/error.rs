//! Why a packet-stream operation failed: one error type for the packet
//! layer, so that a caller matches on what happened (the peer went away,
//! the peer does not serve a channel, a packet was malformed) and reads a
//! message that says what to do about it.

use super::packet::MalformedPacket;

/// Why a request, a response or the connection failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum PacketError {
    /// The peer sent bytes that are not a packet; the connection was closed.
    #[error("malformed packet from the peer ({0}); the connection was closed")]
    Malformed(#[from] MalformedPacket),
    /// A request is larger than the connection's packet limit.
    #[error(
        "request of {size} bytes exceeds the {max}-byte packet limit (raise max_packet_size, \
         or `?max_frame_size=N` on the endpoint, on both sides)"
    )]
    TooLarge {
        /// The encoded packet's size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Request flags that do not fit the 64-bit flagword.
    #[error("request flags {flags} do not fit the packet's flagword (at most {max})")]
    FlagsTooLarge {
        /// The flags given.
        flags: u64,
        /// The largest that fits.
        max: u64,
    },
    /// This end said it sends no more requests (`end_requests`, `close`).
    #[error(
        "this end has ended its requests (end_requests() or close() was called); \
         submit before closing, or open a new connection"
    )]
    RequestsEnded,
    /// Every tag of the channel has been used (2^64 requests).
    #[error("channel {channel} has used up its tags; use another channel or a new connection")]
    TagsExhausted {
        /// The channel.
        channel: u64,
    },
    /// The connection is closed; nothing more can be sent.
    #[error("the packet connection is closed ({reason}); open a new one")]
    Closed {
        /// Why it closed.
        reason: String,
    },
    /// The peer sent EOF (or closed the stream) before answering.
    #[error(
        "the peer ended the connection ({reason}) before answering request tag {tag} on \
         channel {channel}; the request may or may not have run"
    )]
    Unanswered {
        /// The request's channel.
        channel: u64,
        /// Its tag.
        tag: u64,
        /// How the connection ended.
        reason: String,
    },
    /// The peer does not serve the channel: it answered with the 20240630
    /// library's literal `unknown channel %d`.
    #[error(
        "the peer does not serve channel {channel}: it answered `unknown channel %d`, as a \
         cs.packetstream 20240630 peer does for every channel but 0; use channel 0, or a peer \
         that registers channel {channel}"
    )]
    UnknownChannel {
        /// The channel asked for.
        channel: u64,
    },
    /// The peer answered "not ok" (from [`PacketConnection::call_decoded`](super::PacketConnection::call_decoded)
    /// and the typed layer, which want a value).
    #[error("the peer answered not ok (flags {flags}): {message}")]
    NotOk {
        /// The response flags.
        flags: u64,
        /// The response payload, as text (lossy UTF-8).
        message: String,
    },
    /// An ok response whose payload could not be decoded.
    #[error("cannot decode the response: {0}")]
    Decode(String),
}
