//! Errors of the broker, worker and client layers.

use std::time::Duration;

use crate::codec::CodecError;
use crate::protocol::ResultCode;
use crate::transport::TransportError;

/// Setting up or keeping a connection failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The transport failed (connect, bind, I/O, frame size).
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// A packet could not be encoded or decoded.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The opening exchange failed.
    #[error("handshake with {peer} failed: {reason}")]
    Handshake {
        /// Who.
        peer: String,
        /// The result code the broker refused us with (`UNAUTHORIZED` for a
        /// missing or wrong token, `BAD_PACKET` for the wrong listener);
        /// `None` when the failure was not a refusal (a timeout, a version
        /// mismatch, a bad setting on our side). Match on this, never on the
        /// message.
        rc: Option<ResultCode>,
        /// What went wrong, and what to do.
        reason: String,
    },
    /// The broker closed the connection (end of stream or reset) right after
    /// our HELLO, without answering: what a ReasonChip 0.0.6 broker does with
    /// a packet type it does not know. Clients and workers that may fall back
    /// (`fallback_to_legacy`, the default) reconnect in legacy mode on this
    /// error; it reaches the caller only when they may not, or when there is
    /// no endpoint to reconnect to (a connection handed in by the caller).
    #[error(
        "{peer} closed the connection right after our HELLO without answering: it is most \
         likely a ReasonChip (legacy) broker; allow the legacy fallback (`fallback_to_legacy`, \
         i.e. leave out --native) or connect in legacy mode (`legacy`, --legacy)"
    )]
    ClosedAfterHello {
        /// Who.
        peer: String,
    },
    /// Connecting to an endpoint did not finish in time.
    #[error(
        "connecting to {endpoint} did not finish within {after:?}; check that the broker is \
         running and reachable at that address (a firewall may drop packets silently), or \
         raise `connect_timeout`"
    )]
    ConnectTimeout {
        /// The endpoint's URL.
        endpoint: String,
        /// How long the attempt was given.
        after: Duration,
    },
    /// The peer closed the connection.
    #[error("the connection to {0} closed")]
    Closed(String),
}

/// A run did not produce a value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The run ended with a non-OK result code (from the worker or the broker).
    #[error("pipeline `{pipeline}` failed with {rc}: {error}")]
    Failed {
        /// The pipeline.
        pipeline: String,
        /// The result code.
        rc: ResultCode,
        /// The message that came with it.
        error: String,
        /// The stack trace that came with it (may be empty).
        stacktrace: Vec<String>,
    },
    /// The per-call timeout passed; the run was cancelled at the broker.
    #[error("pipeline `{pipeline}` timed out after {after:?} (the run was cancelled)")]
    Timeout {
        /// The pipeline.
        pipeline: String,
        /// The timeout.
        after: Duration,
    },
    /// The connection to the broker was lost before the result arrived.
    #[error("the broker went away before pipeline `{pipeline}` finished")]
    BrokerWentAway {
        /// The pipeline.
        pipeline: String,
    },
    /// The variables could not be serialized, or the result not deserialized into the asked type.
    #[error("pipeline `{pipeline}`: {what}: {source}")]
    Serde {
        /// The pipeline.
        pipeline: String,
        /// Which side failed.
        what: &'static str,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

impl RunError {
    /// The result code this error corresponds to.
    pub fn rc(&self) -> ResultCode {
        match self {
            RunError::Failed { rc, .. } => *rc,
            RunError::Timeout { .. } => ResultCode::Timeout,
            RunError::BrokerWentAway { .. } => ResultCode::BrokerWentAway,
            RunError::Serde { .. } => ResultCode::Exception,
        }
    }
}
