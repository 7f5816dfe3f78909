//! The JSON codec: ReasonChip's `SocketPacket` encoding, exactly.
//!
//! Sending: compact, the ten ReasonChip keys always present and in
//! ReasonChip's order (unset ones `null`), cookies as canonical lower-case
//! hyphenated UUIDs, `variables`/`result` as strings containing JSON text,
//! native keys (`hello`, `pipelines`, `timeout_ms`) only when set.
//!
//! Receiving, as ReasonChip's pydantic model in lax mode: missing keys are
//! null, unknown keys are ignored, cookies in any textual UUID form, integers
//! given as strings are accepted.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use serde::de::{self, Deserializer, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Codec, CodecError, CodecKind};
use crate::protocol::{Hello, Packet, PacketType, Payload, ResultCode};

/// ReasonChip-compatible JSON.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Json;

impl Codec for Json {
    fn kind(&self) -> CodecKind {
        CodecKind::Json
    }

    fn encode(&self, packet: &Packet) -> Result<Bytes, CodecError> {
        // A Vec takes serde_json's many small writes faster than BytesMut's io::Write.
        let mut out = Vec::with_capacity(packet.size_hint() + 192);
        serde_json::to_writer(&mut out, &Out(packet)).map_err(CodecError::Json)?;
        Ok(Bytes::from(out))
    }

    fn encoded_len(&self, packet: &Packet) -> Result<usize, CodecError> {
        /// Counts what serde_json writes, keeping none of it.
        struct Count(usize);
        impl std::io::Write for Count {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0 += buf.len();
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut count = Count(0);
        serde_json::to_writer(&mut count, &Out(packet)).map_err(CodecError::Json)?;
        Ok(count.0)
    }

    fn decode(&self, frame: &Bytes) -> Result<Packet, CodecError> {
        let wire: In = serde_json::from_slice(frame).map_err(CodecError::Json)?;
        wire.into_packet()
    }
}

struct Out<'a>(&'a Packet);

fn payload_str(p: &Option<Payload>) -> Option<&str> {
    p.as_ref().map(Payload::as_str)
}

impl Serialize for Out<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let p = self.0;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("packet_type", p.packet_type.as_str())?;
        m.serialize_entry("cookie", &p.cookie)?;
        m.serialize_entry("capacity", &p.capacity)?;
        m.serialize_entry("pipeline", &p.pipeline)?;
        m.serialize_entry("variables", &payload_str(&p.variables))?;
        m.serialize_entry("detach", &p.detach)?;
        m.serialize_entry("rc", &p.rc.map(ResultCode::as_str))?;
        m.serialize_entry("error", &p.error)?;
        m.serialize_entry("stacktrace", &p.stacktrace)?;
        m.serialize_entry("result", &payload_str(&p.result))?;
        if let Some(h) = &p.hello {
            m.serialize_entry("hello", h)?;
        }
        if let Some(ps) = &p.pipelines {
            m.serialize_entry("pipelines", ps)?;
        }
        if let Some(t) = &p.timeout_ms {
            m.serialize_entry("timeout_ms", t)?;
        }
        if let Some(c) = &p.credit {
            m.serialize_entry("credit", c)?;
        }
        if let Some(w) = &p.worker {
            m.serialize_entry("worker", w)?;
        }
        if let Some(l) = &p.labels {
            m.serialize_entry("labels", l)?;
        }
        if let Some(pr) = &p.priority {
            m.serialize_entry("priority", pr)?;
        }
        m.end()
    }
}

#[derive(Deserialize)]
struct In<'a> {
    #[serde(borrow, default)]
    packet_type: Option<Cow<'a, str>>,
    #[serde(default, deserialize_with = "lax_uuid")]
    cookie: Option<Uuid>,
    #[serde(default, deserialize_with = "lax_int")]
    capacity: Option<i64>,
    #[serde(default)]
    pipeline: Option<String>,
    #[serde(default)]
    variables: Option<String>,
    #[serde(default, deserialize_with = "lax_bool")]
    detach: Option<bool>,
    #[serde(borrow, default)]
    rc: Option<Cow<'a, str>>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    stacktrace: Option<Vec<String>>,
    #[serde(default)]
    result: Option<String>,
    #[serde(default)]
    hello: Option<Hello>,
    #[serde(default)]
    pipelines: Option<Vec<String>>,
    #[serde(default)]
    timeout_ms: Option<u64>,
    #[serde(default)]
    credit: Option<u32>,
    #[serde(default)]
    worker: Option<String>,
    #[serde(default)]
    labels: Option<Vec<String>>,
    #[serde(default)]
    priority: Option<u8>,
}

impl In<'_> {
    fn into_packet(self) -> Result<Packet, CodecError> {
        let packet_type: PacketType = self
            .packet_type
            .as_deref()
            .ok_or_else(|| CodecError::Invalid("`packet_type` is missing".into()))?
            .parse()
            .map_err(CodecError::Invalid)?;
        let rc = match self.rc.as_deref() {
            Some(s) => Some(s.parse::<ResultCode>().map_err(CodecError::Invalid)?),
            None => None,
        };
        Ok(Packet {
            packet_type,
            cookie: self.cookie,
            capacity: self.capacity,
            pipeline: self.pipeline,
            variables: self.variables.map(Payload::from_json_text),
            detach: self.detach,
            rc,
            error: self.error,
            stacktrace: self.stacktrace,
            result: self.result.map(Payload::from_json_text),
            hello: self.hello,
            pipelines: self.pipelines,
            timeout_ms: self.timeout_ms,
            credit: self.credit,
            worker: self.worker,
            labels: self.labels,
            priority: self.priority,
        })
    }
}

/// `null`, or a UUID in any form Python's `uuid.UUID(str)` accepts: optional
/// `urn:uuid:` prefix, optional braces, hyphens anywhere, either case.
fn lax_uuid<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Uuid>, D::Error> {
    let s: Option<Cow<'de, str>> = Option::deserialize(d)?;
    let Some(s) = s else { return Ok(None) };
    if let Ok(u) = Uuid::try_parse(&s) {
        return Ok(Some(u));
    }
    let t = s.trim().replace("urn:", "").replace("uuid:", "");
    let hex: String = t
        .trim_matches(|c| c == '{' || c == '}')
        .chars()
        .filter(|c| *c != '-')
        .collect();
    if hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        if let Ok(u) = Uuid::try_parse(&hex) {
            return Ok(Some(u));
        }
    }
    Err(de::Error::custom(format!("cookie `{s}` is not a UUID")))
}

/// An integer given as a number (integral floats included) or as a string, like pydantic's lax mode.
struct LaxInt;

impl<'de> Visitor<'de> for LaxInt {
    type Value = Option<i64>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an integer, a string holding an integer, or null")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(LaxInt)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Some(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        i64::try_from(v)
            .map(Some)
            .map_err(|_| E::custom(format!("{v} is out of range")))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        if v.fract() == 0.0 && v.abs() < 9.0e18 {
            Ok(Some(v as i64))
        } else {
            Err(E::custom(format!("{v} is not a whole number")))
        }
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        v.trim()
            .parse::<i64>()
            .map(Some)
            .map_err(|_| E::custom(format!("`{v}` is not an integer")))
    }
}

fn lax_int<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    d.deserialize_option(LaxInt)
}

/// A boolean, or one of pydantic's lax spellings (0/1, "true"/"false", "yes"/"no", "on"/"off").
fn lax_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Lax<'a> {
        Bool(bool),
        Int(i64),
        #[serde(borrow)]
        Str(Cow<'a, str>),
    }
    let v: Option<Lax<'de>> = Option::deserialize(d)?;
    Ok(match v {
        None => None,
        Some(Lax::Bool(b)) => Some(b),
        Some(Lax::Int(0)) => Some(false),
        Some(Lax::Int(1)) => Some(true),
        Some(Lax::Str(s)) => match s.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" | "t" | "y" => Some(true),
            "false" | "0" | "no" | "off" | "f" | "n" => Some(false),
            _ => return Err(de::Error::custom(format!("`{s}` is not a boolean"))),
        },
        Some(Lax::Int(i)) => return Err(de::Error::custom(format!("{i} is not a boolean"))),
    })
}
