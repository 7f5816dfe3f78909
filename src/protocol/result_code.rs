//! Result codes: ReasonChip's ten, and plexwire's five native ones.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The outcome carried by a RESULT packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[non_exhaustive]
pub enum ResultCode {
    /// The pipeline finished; `result` holds its value (or null).
    Ok,
    /// The packet was malformed (missing cookie or pipeline, bad capacity, …).
    BadPacket,
    /// This kind of peer may not send this packet type.
    UnsupportedPacketType,
    /// No worker slot was free (and the wait queue, if any, was full).
    NoCapacity,
    /// CANCEL for a cookie with no route.
    CookieNotFound,
    /// RUN whose cookie is already routed.
    CookieCollision,
    /// The worker running the pipeline disconnected.
    WorkerWentAway,
    /// The connection to the broker was lost (made locally by clients).
    BrokerWentAway,
    /// The pipeline raised an error.
    ProcessorException,
    /// Any other failure.
    Exception,
    /// Native: the run was cancelled.
    Cancelled,
    /// Native: the run's deadline passed.
    Timeout,
    /// Native: no registered worker serves this pipeline.
    UnknownPipeline,
    /// Native: authentication failed.
    Unauthorized,
    /// Native: a packet or payload exceeded a size limit.
    TooLarge,
}

impl ResultCode {
    /// Every code, in wire order.
    pub const ALL: [ResultCode; 15] = [
        ResultCode::Ok,
        ResultCode::BadPacket,
        ResultCode::UnsupportedPacketType,
        ResultCode::NoCapacity,
        ResultCode::CookieNotFound,
        ResultCode::CookieCollision,
        ResultCode::WorkerWentAway,
        ResultCode::BrokerWentAway,
        ResultCode::ProcessorException,
        ResultCode::Exception,
        ResultCode::Cancelled,
        ResultCode::Timeout,
        ResultCode::UnknownPipeline,
        ResultCode::Unauthorized,
        ResultCode::TooLarge,
    ];

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ResultCode::Ok => "OK",
            ResultCode::BadPacket => "BAD_PACKET",
            ResultCode::UnsupportedPacketType => "UNSUPPORTED_PACKET_TYPE",
            ResultCode::NoCapacity => "NO_CAPACITY",
            ResultCode::CookieNotFound => "COOKIE_NOT_FOUND",
            ResultCode::CookieCollision => "COOKIE_COLLISION",
            ResultCode::WorkerWentAway => "WORKER_WENT_AWAY",
            ResultCode::BrokerWentAway => "BROKER_WENT_AWAY",
            ResultCode::ProcessorException => "PROCESSOR_EXCEPTION",
            ResultCode::Exception => "EXCEPTION",
            ResultCode::Cancelled => "CANCELLED",
            ResultCode::Timeout => "TIMEOUT",
            ResultCode::UnknownPipeline => "UNKNOWN_PIPELINE",
            ResultCode::Unauthorized => "UNAUTHORIZED",
            ResultCode::TooLarge => "TOO_LARGE",
        }
    }

    /// Whether ReasonChip 0.0.6 knows this code.
    pub fn is_legacy(self) -> bool {
        !matches!(
            self,
            ResultCode::Cancelled
                | ResultCode::Timeout
                | ResultCode::UnknownPipeline
                | ResultCode::Unauthorized
                | ResultCode::TooLarge
        )
    }

    /// The nearest code ReasonChip 0.0.6 knows. A real ReasonChip client treats
    /// an unknown `rc` as a broken connection, so legacy peers only ever see these.
    pub fn legacy_equivalent(self) -> ResultCode {
        match self {
            ResultCode::Cancelled | ResultCode::Timeout => ResultCode::Exception,
            ResultCode::UnknownPipeline => ResultCode::NoCapacity,
            ResultCode::Unauthorized | ResultCode::TooLarge => ResultCode::BadPacket,
            other => other,
        }
    }
}

impl fmt::Display for ResultCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ResultCode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ResultCode::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| format!("unknown result code `{s}`"))
    }
}
