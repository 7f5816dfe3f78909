//! The transport layer's error type.
//!
//! Every variant that a user will read says what happened and, where there is
//! something to do about it, what to do.

use std::io;

/// An error from parsing an endpoint, connecting, listening, or moving frames.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The endpoint URL could not be parsed.
    #[error("invalid endpoint `{url}`: {reason}")]
    InvalidEndpoint {
        /// The URL as given.
        url: String,
        /// What is wrong with it, and what a valid one looks like.
        reason: String,
    },

    /// The endpoint names a backend that this build does not contain.
    #[error("endpoint `{url}` needs the `{feature}` cargo feature of plexwire (build with `--features {feature}`)")]
    FeatureDisabled {
        /// The URL as given.
        url: String,
        /// The cargo feature that provides the backend.
        feature: &'static str,
    },

    /// A backend was handed an endpoint of another scheme.
    #[error("the {backend} backend cannot serve endpoint `{url}`")]
    WrongBackend {
        /// The URL as given.
        url: String,
        /// The backend that refused it.
        backend: &'static str,
    },

    /// Connecting failed.
    #[error("could not connect to `{url}`: {source} (is a plexwire listener running there?)")]
    Connect {
        /// The URL connected to.
        url: String,
        /// Why.
        #[source]
        source: io::Error,
    },

    /// Binding a listener failed.
    #[error("could not listen on `{url}`: {source}")]
    Bind {
        /// The URL bound.
        url: String,
        /// Why.
        #[source]
        source: io::Error,
    },

    /// The TLS settings of an endpoint cannot be used: a file is missing or
    /// holds no certificate or key, options contradict each other, or one
    /// that the endpoint needs is absent.
    #[error("TLS settings of `{url}`: {reason}")]
    TlsConfig {
        /// The URL (or, for settings made in code, the endpoint they were used with).
        url: String,
        /// What is wrong, and what to do.
        reason: String,
    },

    /// The TLS handshake failed: a certificate was rejected (which check
    /// failed is in `reason`), or the two sides share no TLS version.
    #[error("TLS handshake with `{url}` failed: {reason}")]
    Tls {
        /// The URL connected to, or the listener's URL on the accepting side.
        url: String,
        /// Which check failed, from this side's point of view, and what to do.
        reason: String,
    },

    /// A listener gave up on an incoming connection whose handshake (TLS,
    /// QUIC, …) did not finish in time ([`Handshakes`](crate::Handshakes)).
    #[error("{what} from `{remote}` on `{url}` did not finish within {after:?}; is the client speaking this protocol (or stalled)?")]
    HandshakeTimeout {
        /// What was handshaken: "TLS handshake".
        what: &'static str,
        /// The listener's URL.
        url: String,
        /// The client's address.
        remote: String,
        /// The time allowed.
        after: std::time::Duration,
    },

    /// A frame longer than the connection's limit was announced or offered.
    ///
    /// On receive, the announced size is never allocated: the connection ends.
    #[error("frame of {size} bytes exceeds the {max}-byte limit (raise it with `?max_frame_size=N` on the endpoint on both sides)")]
    FrameTooLarge {
        /// The size announced by the peer (receive) or offered by the caller (send).
        size: usize,
        /// The connection's maximum frame size.
        max: usize,
    },

    /// The stream ended in the middle of a frame.
    #[error("connection closed in the middle of a frame ({got} of {expected} bytes received)")]
    Truncated {
        /// Bytes of the frame (including its header) that arrived.
        got: usize,
        /// Bytes the frame needed.
        expected: usize,
    },

    /// A frame's length prefix is malformed (the peer does not speak this framing).
    #[error("malformed frame header: {reason} (is the peer speaking another protocol?)")]
    BadPrefix {
        /// What is wrong with it.
        reason: String,
    },

    /// The bytes buffered in unfinished frames, by this connection and the
    /// others sharing its [`PartialBudget`](crate::PartialBudget), would pass
    /// the budget's limit: this connection (the one that grew past it) ends.
    #[error("unfinished frames would hold {used} bytes across connections, over the {limit}-byte budget ({buffered} of them on this connection); the connection is closed (finish frames sooner, or raise the budget: the broker's `partial_frame_bytes`)")]
    PartialBudget {
        /// Bytes of an unfinished frame on this connection.
        buffered: usize,
        /// Bytes all connections on the budget would hold.
        used: usize,
        /// The budget.
        limit: usize,
    },

    /// The connection is closed; nothing more can be sent.
    #[error("connection closed")]
    Closed,

    /// Any other I/O error on an established connection.
    #[error("transport I/O error: {0}")]
    Io(#[from] io::Error),
}

impl TransportError {
    /// Whether this error means the peer is gone (as opposed to a local or protocol fault).
    pub fn is_disconnect(&self) -> bool {
        match self {
            TransportError::Closed | TransportError::Truncated { .. } => true,
            TransportError::Io(e) => matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::UnexpectedEof
            ),
            _ => false,
        }
    }
}
