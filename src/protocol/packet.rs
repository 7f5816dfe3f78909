//! The packet: one flat struct for every packet type, as on the wire.

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::ResultCode;

/// The native protocol version announced in HELLO.
pub const PROTOCOL_VERSION: u32 = 1;

/// What a packet is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[non_exhaustive]
pub enum PacketType {
    /// worker → broker: `capacity` slots (native: and the `pipelines` served).
    Register,
    /// broker → worker: drain and disconnect.
    Shutdown,
    /// client → broker → worker: run `pipeline` with `variables` under `cookie`.
    Run,
    /// client → broker → worker: cancel the run `cookie`.
    Cancel,
    /// worker → broker → client (or broker → client): the run's one final outcome.
    Result,
    /// Native, worker → broker → client: an intermediate value (`result`) of run `cookie`.
    Event,
    /// Native: liveness probe; answered with PONG.
    Ping,
    /// Native: answer to PING.
    Pong,
    /// Native: the first packet of a native peer: version, codec, role, token.
    Hello,
    /// Native, client → broker → worker: the client has taken `credit` more
    /// events of run `cookie` from its buffer; the worker may send that many
    /// more (per-run flow control, see `Packet::credit`).
    Credit,
}

impl PacketType {
    /// Every type, in wire order.
    pub const ALL: [PacketType; 10] = [
        PacketType::Register,
        PacketType::Shutdown,
        PacketType::Run,
        PacketType::Cancel,
        PacketType::Result,
        PacketType::Event,
        PacketType::Ping,
        PacketType::Pong,
        PacketType::Hello,
        PacketType::Credit,
    ];

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PacketType::Register => "REGISTER",
            PacketType::Shutdown => "SHUTDOWN",
            PacketType::Run => "RUN",
            PacketType::Cancel => "CANCEL",
            PacketType::Result => "RESULT",
            PacketType::Event => "EVENT",
            PacketType::Ping => "PING",
            PacketType::Pong => "PONG",
            PacketType::Hello => "HELLO",
            PacketType::Credit => "CREDIT",
        }
    }

    /// Whether ReasonChip 0.0.6 knows this type.
    pub fn is_legacy(self) -> bool {
        matches!(
            self,
            PacketType::Register
                | PacketType::Shutdown
                | PacketType::Run
                | PacketType::Cancel
                | PacketType::Result
        )
    }
}

impl fmt::Display for PacketType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PacketType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        PacketType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| format!("unknown packet_type `{s}`"))
    }
}

/// A payload: the UTF-8 text of one JSON value, kept as bytes.
///
/// The broker never parses payloads; it hands the same bytes from one
/// connection to another whatever codec each uses. On a JSON connection a
/// payload travels as a JSON string containing the text (ReasonChip's
/// `variables`/`result` convention); on a bincode connection it travels as
/// raw bytes, unescaped.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Payload(Bytes);

impl Payload {
    /// Serializes `value` as a JSON payload.
    pub fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<Payload, serde_json::Error> {
        serde_json::to_vec(value).map(|v| Payload(Bytes::from(v)))
    }

    /// Wraps text that is already JSON. Not validated: a broker passes
    /// payloads through, and whoever decodes them reports invalid JSON.
    pub fn from_json_text(text: impl Into<String>) -> Payload {
        Payload(Bytes::from(text.into()))
    }

    /// Wraps bytes known to be UTF-8 (checked).
    pub fn from_utf8_bytes(bytes: Bytes) -> Result<Payload, std::str::Utf8Error> {
        std::str::from_utf8(&bytes)?;
        Ok(Payload(bytes))
    }

    /// Wraps bytes the caller has already verified to be UTF-8.
    #[cfg_attr(not(feature = "bincode"), allow(dead_code))]
    pub(crate) fn from_verified_utf8(bytes: Bytes) -> Payload {
        debug_assert!(std::str::from_utf8(&bytes).is_ok());
        Payload(bytes)
    }

    /// Parses the payload.
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.0)
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        // Every constructor guarantees UTF-8.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The bytes of the JSON text.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the text is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 64;
        let s = self.as_str();
        if s.len() <= SHOWN {
            write!(f, "Payload({s})")
        } else {
            let cut = (0..=SHOWN)
                .rev()
                .find(|i| s.is_char_boundary(*i))
                .unwrap_or(0);
            write!(f, "Payload({}… {} bytes)", &s[..cut], s.len())
        }
    }
}

/// Which side of the broker a peer is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Role {
    /// Sends RUN, receives RESULT/EVENT.
    Client,
    /// Sends REGISTER/RESULT/EVENT, receives RUN/CANCEL/SHUTDOWN.
    Worker,
    /// The broker (in its own HELLO answer).
    Broker,
}

/// The body of a HELLO packet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Protocol version spoken ([`PROTOCOL_VERSION`]).
    pub version: u32,
    /// What the peer is.
    pub role: Role,
    /// Codec name of the connection (`"json"` or `"bincode"`), for logs.
    pub codec: String,
    /// Shared-secret token, if the listener requires one.
    #[serde(default)]
    pub token: Option<String>,
}

/// One packet. Every packet type uses this same struct; unused fields are `None`.
///
/// The first ten fields are ReasonChip's `SocketPacket`, in its order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// What the packet is for.
    pub packet_type: PacketType,
    /// The run it concerns (RUN, CANCEL, RESULT, EVENT).
    pub cookie: Option<Uuid>,
    /// Worker slots (REGISTER). Signed so that a negative value reaches
    /// validation (and a BAD_PACKET answer) instead of failing to decode.
    pub capacity: Option<i64>,
    /// The pipeline to run (RUN).
    pub pipeline: Option<String>,
    /// The pipeline's input (RUN).
    pub variables: Option<Payload>,
    /// Run without a client waiting for the result (RUN).
    pub detach: Option<bool>,
    /// The outcome (RESULT).
    pub rc: Option<ResultCode>,
    /// What went wrong (RESULT).
    pub error: Option<String>,
    /// Where it went wrong (RESULT).
    pub stacktrace: Option<Vec<String>>,
    /// The pipeline's value (RESULT OK) or the event's value (EVENT).
    pub result: Option<Payload>,
    /// Native: HELLO body.
    pub hello: Option<Hello>,
    /// Native: the pipelines a worker serves (REGISTER); none = all.
    pub pipelines: Option<Vec<String>>,
    /// Native: the run's time limit in milliseconds (RUN).
    pub timeout_ms: Option<u64>,
    /// Native, per-run flow control: on a RUN, how many EVENTs the client
    /// can take before it grants more (none: no limit); on a CREDIT, how
    /// many more it grants.
    pub credit: Option<u32>,
    /// Native: on REGISTER, the worker's name; on RUN, the name of the only
    /// worker that may run it.
    pub worker: Option<String>,
    /// Native: on REGISTER, the worker's labels (`key=value`); on RUN, the
    /// labels a worker must have (all of them) to run it.
    pub labels: Option<Vec<String>>,
    /// Native, RUN: the run's priority in the wait queue (0, the default,
    /// to [`MAX_PRIORITY`]; higher first, in order of arrival within one).
    pub priority: Option<u8>,
}

/// The highest [`Packet::priority`]; higher values count as this.
pub const MAX_PRIORITY: u8 = 9;

impl Packet {
    /// A packet of `packet_type` with every other field empty.
    pub fn new(packet_type: PacketType) -> Packet {
        Packet {
            packet_type,
            cookie: None,
            capacity: None,
            pipeline: None,
            variables: None,
            detach: None,
            rc: None,
            error: None,
            stacktrace: None,
            result: None,
            hello: None,
            pipelines: None,
            timeout_ms: None,
            credit: None,
            worker: None,
            labels: None,
            priority: None,
        }
    }

    /// `REGISTER {capacity, pipelines}`.
    pub fn register(capacity: i64, pipelines: Option<Vec<String>>) -> Packet {
        Packet {
            capacity: Some(capacity),
            pipelines,
            ..Packet::new(PacketType::Register)
        }
    }

    /// `RUN {cookie, pipeline, variables, detach}`.
    pub fn run(
        cookie: Uuid,
        pipeline: impl Into<String>,
        variables: Option<Payload>,
        detach: bool,
    ) -> Packet {
        Packet {
            cookie: Some(cookie),
            pipeline: Some(pipeline.into()),
            variables,
            detach: Some(detach),
            ..Packet::new(PacketType::Run)
        }
    }

    /// `CREDIT {cookie, credit}`: `credit` more events of run `cookie` may come.
    pub fn credit(cookie: Uuid, credit: u32) -> Packet {
        Packet {
            cookie: Some(cookie),
            credit: Some(credit),
            ..Packet::new(PacketType::Credit)
        }
    }

    /// `CANCEL {cookie}`.
    pub fn cancel(cookie: Uuid) -> Packet {
        Packet {
            cookie: Some(cookie),
            ..Packet::new(PacketType::Cancel)
        }
    }

    /// A successful `RESULT {cookie, rc: OK, result}`.
    pub fn ok(cookie: Uuid, result: Option<Payload>) -> Packet {
        Packet {
            cookie: Some(cookie),
            rc: Some(ResultCode::Ok),
            result,
            ..Packet::new(PacketType::Result)
        }
    }

    /// A failed `RESULT {cookie, rc, error}`.
    pub fn error(cookie: Option<Uuid>, rc: ResultCode, error: impl Into<String>) -> Packet {
        Packet {
            cookie,
            rc: Some(rc),
            error: Some(error.into()),
            ..Packet::new(PacketType::Result)
        }
    }

    /// `EVENT {cookie, result}`.
    pub fn event(cookie: Uuid, data: Payload) -> Packet {
        Packet {
            cookie: Some(cookie),
            result: Some(data),
            ..Packet::new(PacketType::Event)
        }
    }

    /// `HELLO {hello}`.
    pub fn hello(role: Role, codec: &str, token: Option<String>) -> Packet {
        Packet {
            hello: Some(Hello {
                version: PROTOCOL_VERSION,
                role,
                codec: codec.to_owned(),
                token,
            }),
            ..Packet::new(PacketType::Hello)
        }
    }

    /// This packet as a ReasonChip 0.0.6 peer may see it: native packet types
    /// are not representable (`None`), native result codes become the nearest
    /// legacy code with the real outcome spelled out in `error`, and native
    /// fields are dropped.
    pub fn to_legacy(&self) -> Option<Packet> {
        if !self.packet_type.is_legacy() {
            return None;
        }
        let mut p = self.clone();
        p.hello = None;
        p.pipelines = None;
        p.timeout_ms = None;
        p.credit = None;
        p.worker = None;
        p.labels = None;
        p.priority = None;
        if let Some(rc) = p.rc.filter(|rc| !rc.is_legacy()) {
            p.rc = Some(rc.legacy_equivalent());
            let what = p.error.take().unwrap_or_default();
            p.error = Some(if what.is_empty() {
                rc.as_str().to_owned()
            } else {
                format!("{rc}: {what}")
            });
        }
        Some(p)
    }

    /// About how many bytes this packet holds in memory and on the wire;
    /// what byte budgets on queues count.
    pub fn size_hint(&self) -> usize {
        let text = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        let payload = |p: &Option<Payload>| p.as_ref().map_or(0, Payload::len);
        let list = |l: &Option<Vec<String>>| {
            l.as_ref()
                .map_or(0, |v| v.iter().map(|s| s.len() + 8).sum())
        };
        64 + text(&self.pipeline)
            + payload(&self.variables)
            + text(&self.error)
            + list(&self.stacktrace)
            + payload(&self.result)
            + list(&self.pipelines)
            + text(&self.worker)
            + list(&self.labels)
    }

    /// Whether this packet needs a native peer (a native type, code or field).
    pub fn is_native(&self) -> bool {
        !self.packet_type.is_legacy()
            || self.rc.is_some_and(|rc| !rc.is_legacy())
            || self.hello.is_some()
            || self.pipelines.is_some()
            || self.timeout_ms.is_some()
            || self.credit.is_some()
            || self.worker.is_some()
            || self.labels.is_some()
            || self.priority.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_codes_reach_legacy_peers_as_the_nearest_legacy_code() {
        let c = Uuid::nil();
        let p = Packet::error(Some(c), ResultCode::Cancelled, "cancelled by the client")
            .to_legacy()
            .unwrap();
        assert_eq!(p.rc, Some(ResultCode::Exception));
        assert_eq!(
            p.error.as_deref(),
            Some("CANCELLED: cancelled by the client")
        );
        let p = Packet::error(Some(c), ResultCode::UnknownPipeline, "")
            .to_legacy()
            .unwrap();
        assert_eq!(p.rc, Some(ResultCode::NoCapacity));
        assert_eq!(p.error.as_deref(), Some("UNKNOWN_PIPELINE"));
        assert!(Packet::event(c, Payload::from_json_text("1"))
            .to_legacy()
            .is_none());
        let ok = Packet::ok(c, None);
        assert_eq!(ok.to_legacy().unwrap(), ok);
        for rc in ResultCode::ALL {
            assert!(rc.legacy_equivalent().is_legacy());
            assert_eq!(rc.as_str().parse::<ResultCode>().unwrap(), rc);
        }
    }

    #[test]
    fn payload_debug_is_bounded() {
        let p = Payload::to_json(&"é".repeat(100)).unwrap();
        let s = format!("{p:?}");
        assert!(s.len() < 120 && s.contains("bytes"), "{s}");
    }
}
