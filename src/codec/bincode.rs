//! The bincode codec: compact binary envelopes (bincode 2.0.1, serde API).
//!
//! Payloads travel as raw bytes, not as escaped strings, and decoding borrows
//! from the frame: a payload in a decoded packet is a zero-copy slice of the
//! frame it came in, and no length read from the wire is ever used to
//! allocate (strings and byte strings are checked against the bytes actually
//! present before anything is copied).

use std::fmt;
use std::marker::PhantomData;

use bytes::Bytes;
use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Codec, CodecError, CodecKind};
use crate::protocol::{Hello, Packet, PacketType, Payload, ResultCode, Role};

/// Compact binary envelopes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bincode;

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// HELLO's body with borrowed strings: bincode's owned `String` decoding
/// would allocate a length read from the wire before checking it.
#[derive(Serialize, Deserialize)]
struct WireHello<'a> {
    version: u32,
    role: Role,
    #[serde(borrow)]
    codec: &'a str,
    #[serde(borrow)]
    token: Option<&'a str>,
}

#[derive(Serialize, Deserialize)]
struct Wire<'a> {
    packet_type: PacketType,
    cookie: Option<Uuid>,
    capacity: Option<i64>,
    #[serde(borrow)]
    pipeline: Option<&'a str>,
    #[serde(borrow)]
    variables: Option<&'a str>,
    detach: Option<bool>,
    rc: Option<ResultCode>,
    #[serde(borrow)]
    error: Option<&'a str>,
    #[serde(borrow, deserialize_with = "str_list")]
    stacktrace: Option<Vec<&'a str>>,
    #[serde(borrow)]
    result: Option<&'a str>,
    #[serde(borrow)]
    hello: Option<WireHello<'a>>,
    #[serde(borrow, deserialize_with = "str_list")]
    pipelines: Option<Vec<&'a str>>,
    timeout_ms: Option<u64>,
    credit: Option<u32>,
    #[serde(borrow)]
    worker: Option<&'a str>,
    #[serde(borrow, deserialize_with = "str_list")]
    labels: Option<Vec<&'a str>>,
    priority: Option<u8>,
}

/// An optional list of borrowed strings, grown as its elements arrive.
///
/// serde's own `Vec` preallocates from the count on the wire (up to 1 MiB),
/// so a 19-byte frame claiming billions of stack-trace lines cost a megabyte
/// before failing. Each element takes at least a byte of the frame, so growing
/// on demand keeps the allocation proportional to the frame.
fn str_list<'de: 'a, 'a, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<&'a str>>, D::Error> {
    struct List<'a>(PhantomData<&'a str>);

    impl<'de: 'a, 'a> Visitor<'de> for List<'a> {
        type Value = Option<Vec<&'a str>>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an optional list of strings")
        }

        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            d.deserialize_seq(self)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut v = Vec::new();
            while let Some(s) = seq.next_element::<&'a str>()? {
                v.push(s);
            }
            Ok(Some(v))
        }
    }

    d.deserialize_option(List(PhantomData))
}

impl Codec for Bincode {
    fn kind(&self) -> CodecKind {
        CodecKind::Bincode
    }

    fn encode(&self, p: &Packet) -> Result<Bytes, CodecError> {
        let wire = Wire {
            packet_type: p.packet_type,
            cookie: p.cookie,
            capacity: p.capacity,
            pipeline: p.pipeline.as_deref(),
            variables: p.variables.as_ref().map(Payload::as_str),
            detach: p.detach,
            rc: p.rc,
            error: p.error.as_deref(),
            stacktrace: p
                .stacktrace
                .as_ref()
                .map(|v| v.iter().map(String::as_str).collect()),
            result: p.result.as_ref().map(Payload::as_str),
            hello: p.hello.as_ref().map(|h| WireHello {
                version: h.version,
                role: h.role,
                codec: &h.codec,
                token: h.token.as_deref(),
            }),
            pipelines: p
                .pipelines
                .as_ref()
                .map(|v| v.iter().map(String::as_str).collect()),
            timeout_ms: p.timeout_ms,
            credit: p.credit,
            worker: p.worker.as_deref(),
            labels: p
                .labels
                .as_ref()
                .map(|v| v.iter().map(String::as_str).collect()),
            priority: p.priority,
        };
        // Sized up front: growing from empty costs several reallocations per packet.
        let mut out = Vec::with_capacity(p.size_hint());
        bincode::serde::encode_into_std_write(&wire, &mut out, config())
            .map_err(|e| CodecError::Bincode(e.to_string()))?;
        Ok(Bytes::from(out))
    }

    fn decode(&self, frame: &Bytes) -> Result<Packet, CodecError> {
        let (w, used): (Wire<'_>, usize) =
            bincode::serde::borrow_decode_from_slice(frame, config())
                .map_err(|e| CodecError::Bincode(e.to_string()))?;
        if used != frame.len() {
            return Err(CodecError::Invalid(format!(
                "{} bytes after the end of the packet",
                frame.len() - used
            )));
        }
        // bincode has checked that these are UTF-8; slicing the frame shares its buffer.
        let payload =
            |s: Option<&str>| s.map(|s| Payload::from_verified_utf8(frame.slice_ref(s.as_bytes())));
        let owned = |v: Option<Vec<&str>>| v.map(|v| v.into_iter().map(str::to_owned).collect());
        Ok(Packet {
            packet_type: w.packet_type,
            cookie: w.cookie,
            capacity: w.capacity,
            pipeline: w.pipeline.map(str::to_owned),
            variables: payload(w.variables),
            detach: w.detach,
            rc: w.rc,
            error: w.error.map(str::to_owned),
            stacktrace: owned(w.stacktrace),
            result: payload(w.result),
            hello: w.hello.map(|h| Hello {
                version: h.version,
                role: h.role,
                codec: h.codec.to_owned(),
                token: h.token.map(str::to_owned),
            }),
            pipelines: owned(w.pipelines),
            timeout_ms: w.timeout_ms,
            credit: w.credit,
            worker: w.worker.map(str::to_owned),
            labels: owned(w.labels),
            priority: w.priority,
        })
    }
}
