//! Structured packets for the `packet_roundtrip` target.
//!
//! `Packet` has no `Arbitrary` impl (the library does not depend on
//! `arbitrary`), so a mirror struct derives it and maps onto `Packet`. Enum
//! fields are drawn as an index into the `ALL` tables, so every packet type,
//! result code and role is reachable and a new variant is picked up without
//! touching this file.

use arbitrary::Arbitrary;
use plexwire::protocol::{Hello, Packet, PacketType, Payload, ResultCode, Role};
use uuid::Uuid;

const ROLES: [Role; 3] = [Role::Client, Role::Worker, Role::Broker];

/// A payload as applications make them, plus raw text that is not JSON at
/// all (the broker passes payloads through unparsed, so codecs must too).
#[derive(Debug, Arbitrary)]
pub enum ArbPayload {
    /// `Payload::from_json_text` of any string, JSON or not.
    Raw(String),
    /// A JSON string value.
    Str(String),
    /// A JSON integer.
    Int(i64),
    /// A JSON number (NaN and infinities become `null`).
    Float(f64),
    /// A JSON array of strings.
    List(Vec<String>),
}

impl ArbPayload {
    fn into_payload(self) -> Payload {
        match self {
            ArbPayload::Raw(s) => Payload::from_json_text(s),
            ArbPayload::Str(s) => Payload::to_json(&s).expect("a string serializes"),
            ArbPayload::Int(n) => Payload::to_json(&n).expect("an integer serializes"),
            ArbPayload::Float(f) => Payload::to_json(&f).expect("a float serializes"),
            ArbPayload::List(v) => Payload::to_json(&v).expect("a list serializes"),
        }
    }
}

/// HELLO's body.
#[derive(Debug, Arbitrary)]
pub struct ArbHello {
    version: u32,
    role: u8,
    codec: String,
    token: Option<String>,
}

/// Every field of `Packet`, each independently present or not.
#[derive(Debug, Arbitrary)]
pub struct ArbPacket {
    packet_type: u8,
    cookie: Option<u128>,
    capacity: Option<i64>,
    pipeline: Option<String>,
    variables: Option<ArbPayload>,
    detach: Option<bool>,
    rc: Option<u8>,
    error: Option<String>,
    stacktrace: Option<Vec<String>>,
    result: Option<ArbPayload>,
    hello: Option<ArbHello>,
    pipelines: Option<Vec<String>>,
    timeout_ms: Option<u64>,
    credit: Option<u32>,
    worker: Option<String>,
    labels: Option<Vec<String>>,
    priority: Option<u8>,
}

impl ArbPacket {
    /// The packet this describes.
    pub fn into_packet(self) -> Packet {
        let pick = |i: u8, n: usize| usize::from(i) % n;
        Packet {
            packet_type: PacketType::ALL[pick(self.packet_type, PacketType::ALL.len())],
            cookie: self.cookie.map(Uuid::from_u128),
            capacity: self.capacity,
            pipeline: self.pipeline,
            variables: self.variables.map(ArbPayload::into_payload),
            detach: self.detach,
            rc: self
                .rc
                .map(|i| ResultCode::ALL[pick(i, ResultCode::ALL.len())]),
            error: self.error,
            stacktrace: self.stacktrace,
            result: self.result.map(ArbPayload::into_payload),
            hello: self.hello.map(|h| Hello {
                version: h.version,
                role: ROLES[pick(h.role, ROLES.len())],
                codec: h.codec,
                token: h.token,
            }),
            pipelines: self.pipelines,
            timeout_ms: self.timeout_ms,
            credit: self.credit,
            worker: self.worker,
            labels: self.labels,
            priority: self.priority,
        }
    }
}
