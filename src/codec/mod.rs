//! Codecs turn frames into [`Packet`]s and back. They know nothing of sockets.
//!
//! Two codecs exist, [`Json`] (feature `json`; ReasonChip's format) and
//! [`Bincode`] (feature `bincode`). Choose one statically as a type that
//! implements [`Codec`], or at run time with [`AnyCodec`]. A listener serves
//! both: [`detect`] reads a connection's first frame — a JSON connection's
//! first byte is `{`; a binary connection opens with a HELLO frame that starts
//! with [`BINARY_MAGIC`], then a codec id and the protocol version.

#[cfg(feature = "bincode")]
mod bincode;
#[cfg(feature = "json")]
mod json;

use std::fmt;
use std::str::FromStr;

use bytes::{BufMut, Bytes, BytesMut};

#[cfg(feature = "bincode")]
pub use self::bincode::Bincode;
#[cfg(feature = "json")]
pub use self::json::Json;
use crate::protocol::{Packet, PacketType, PROTOCOL_VERSION};

/// The first four bytes of a binary connection's HELLO frame.
pub const BINARY_MAGIC: [u8; 4] = *b"\0PXW";

/// Why a frame could not become a packet (or a packet a frame).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// Not valid JSON, or JSON of the wrong shape.
    #[error("invalid JSON packet: {0}")]
    Json(#[source] serde_json::Error),
    /// Not a valid bincode packet.
    #[error("invalid bincode packet: {0}")]
    Bincode(String),
    /// Well-formed, but not a valid packet (unknown packet type, unknown result code, …).
    #[error("invalid packet: {0}")]
    Invalid(String),
    /// The first frame names a codec this build does not contain.
    #[error("the peer speaks {codec}, which this build lacks (enable the `{codec}` cargo feature of plexwire)")]
    CodecDisabled {
        /// The codec's name and cargo feature.
        codec: &'static str,
    },
    /// The first frame is neither JSON nor a binary HELLO.
    #[error("unrecognised first frame (starts with {prefix}): expected a JSON packet (`{{`) or a plexwire binary HELLO")]
    UnrecognisedFirstFrame {
        /// The first bytes, in hex.
        prefix: String,
    },
    /// A binary HELLO with a protocol version this build does not speak.
    #[error("the peer speaks protocol version {got}; this build speaks {PROTOCOL_VERSION}")]
    Version {
        /// The version the peer announced.
        got: u8,
    },
}

/// Which codec a connection uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CodecKind {
    /// JSON, ReasonChip's format.
    Json,
    /// bincode 2 envelopes.
    Bincode,
}

impl CodecKind {
    /// The codec's name (also its cargo feature).
    pub fn as_str(self) -> &'static str {
        match self {
            CodecKind::Json => "json",
            CodecKind::Bincode => "bincode",
        }
    }

    /// The id byte in a binary HELLO frame, for binary codecs.
    fn wire_id(self) -> Option<u8> {
        match self {
            CodecKind::Json => None,
            CodecKind::Bincode => Some(1),
        }
    }

    /// Whether this build contains the codec.
    pub fn is_enabled(self) -> bool {
        match self {
            CodecKind::Json => cfg!(feature = "json"),
            CodecKind::Bincode => cfg!(feature = "bincode"),
        }
    }

    /// Parses a codec name (`json`, `bincode`) that this build contains; the
    /// error names the cargo feature that would bring a missing one.
    pub fn parse_enabled(name: &str) -> Result<CodecKind, String> {
        let kind: CodecKind = name.parse()?;
        if kind.is_enabled() {
            Ok(kind)
        } else {
            Err(format!(
                "this build lacks the `{name}` codec (build with the `{name}` cargo feature)"
            ))
        }
    }
}

impl fmt::Display for CodecKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CodecKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "json" => Ok(CodecKind::Json),
            "bincode" => Ok(CodecKind::Bincode),
            other => Err(format!(
                "unknown codec `{other}`; expected `json` or `bincode`"
            )),
        }
    }
}

/// Encodes packets into frames and decodes frames into packets.
///
/// Decoding never panics and never trusts a length or count from the wire.
pub trait Codec: Send + Sync + fmt::Debug + 'static {
    /// Which codec this is.
    fn kind(&self) -> CodecKind;
    /// One packet → one frame.
    fn encode(&self, packet: &Packet) -> Result<Bytes, CodecError>;
    /// One frame → one packet.
    fn decode(&self, frame: &Bytes) -> Result<Packet, CodecError>;
    /// The size of `packet`'s frame, without keeping it (a codec that can
    /// count without allocating overrides this).
    fn encoded_len(&self, packet: &Packet) -> Result<usize, CodecError> {
        self.encode(packet).map(|f| f.len())
    }
}

/// A codec chosen at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnyCodec(CodecKind);

impl AnyCodec {
    /// The codec `kind`, or an error naming the feature if it is not compiled in.
    pub fn new(kind: CodecKind) -> Result<AnyCodec, CodecError> {
        if kind.is_enabled() {
            Ok(AnyCodec(kind))
        } else {
            Err(CodecError::CodecDisabled {
                codec: kind.as_str(),
            })
        }
    }
}

impl Codec for AnyCodec {
    fn kind(&self) -> CodecKind {
        self.0
    }

    #[cfg_attr(
        not(all(feature = "json", feature = "bincode")),
        allow(unused_variables)
    )]
    fn encode(&self, packet: &Packet) -> Result<Bytes, CodecError> {
        match self.0 {
            #[cfg(feature = "json")]
            CodecKind::Json => Json.encode(packet),
            #[cfg(feature = "bincode")]
            CodecKind::Bincode => Bincode.encode(packet),
            #[allow(unreachable_patterns)]
            other => Err(CodecError::CodecDisabled {
                codec: other.as_str(),
            }),
        }
    }

    #[cfg_attr(
        not(all(feature = "json", feature = "bincode")),
        allow(unused_variables)
    )]
    fn encoded_len(&self, packet: &Packet) -> Result<usize, CodecError> {
        match self.0 {
            #[cfg(feature = "json")]
            CodecKind::Json => Json.encoded_len(packet),
            #[cfg(feature = "bincode")]
            CodecKind::Bincode => Bincode.encoded_len(packet),
            #[allow(unreachable_patterns)]
            other => Err(CodecError::CodecDisabled {
                codec: other.as_str(),
            }),
        }
    }

    #[cfg_attr(
        not(all(feature = "json", feature = "bincode")),
        allow(unused_variables)
    )]
    fn decode(&self, frame: &Bytes) -> Result<Packet, CodecError> {
        match self.0 {
            #[cfg(feature = "json")]
            CodecKind::Json => Json.decode(frame),
            #[cfg(feature = "bincode")]
            CodecKind::Bincode => Bincode.decode(frame),
            #[allow(unreachable_patterns)]
            other => Err(CodecError::CodecDisabled {
                codec: other.as_str(),
            }),
        }
    }
}

/// What a connection's first frame says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirstFrame {
    /// The codec the rest of the connection uses.
    pub codec: AnyCodec,
    /// The first packet: a HELLO for a native peer; for a legacy (ReasonChip) peer, its first real packet.
    pub packet: Packet,
}

impl FirstFrame {
    /// Whether the peer announced itself with HELLO (and so may be sent native packets).
    pub fn is_native(&self) -> bool {
        self.packet.packet_type == PacketType::Hello
    }
}

/// Reads a connection's first frame: picks the codec and decodes the first packet.
pub fn detect(frame: &Bytes) -> Result<FirstFrame, CodecError> {
    let first_non_ws = frame.iter().find(|b| !b.is_ascii_whitespace());
    if first_non_ws == Some(&b'{') {
        let codec = AnyCodec::new(CodecKind::Json)?;
        let packet = codec.decode(frame)?;
        return Ok(FirstFrame { codec, packet });
    }
    if frame.len() >= 6 && frame[..4] == BINARY_MAGIC {
        let kind = match frame[4] {
            1 => CodecKind::Bincode,
            id => {
                return Err(CodecError::Invalid(format!(
                    "unknown binary codec id {id} in HELLO"
                )))
            }
        };
        if u32::from(frame[5]) != PROTOCOL_VERSION {
            return Err(CodecError::Version { got: frame[5] });
        }
        let codec = AnyCodec::new(kind)?;
        let packet = codec.decode(&frame.slice(6..))?;
        if packet.packet_type != PacketType::Hello {
            return Err(CodecError::Invalid(format!(
                "a binary connection must open with HELLO, not {}",
                packet.packet_type
            )));
        }
        return Ok(FirstFrame { codec, packet });
    }
    let prefix = frame
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ");
    Err(CodecError::UnrecognisedFirstFrame {
        prefix: if prefix.is_empty() {
            "nothing: empty frame".into()
        } else {
            prefix
        },
    })
}

/// The codec to answer a connection whose first frame could not be read
/// ([`detect`] failed) in, when the frame says which the peer speaks: JSON
/// when it starts with `{` (a legacy or native JSON peer), a binary codec
/// when it opens with [`BINARY_MAGIC`], that codec's id and this protocol
/// version. `None` when it does not say (random bytes, another protocol, or
/// another protocol version, whose packets this build cannot write): such a
/// connection is closed unanswered.
pub fn answer_codec(frame: &[u8]) -> Option<AnyCodec> {
    let first_non_ws = frame.iter().find(|b| !b.is_ascii_whitespace());
    if first_non_ws == Some(&b'{') {
        return AnyCodec::new(CodecKind::Json).ok();
    }
    if frame.len() >= 6 && frame[..4] == BINARY_MAGIC && u32::from(frame[5]) == PROTOCOL_VERSION {
        let kind = match frame[4] {
            1 => CodecKind::Bincode,
            _ => return None,
        };
        return AnyCodec::new(kind).ok();
    }
    None
}

/// Encodes the HELLO that opens a native connection: plain JSON for JSON, or
/// [`BINARY_MAGIC`], codec id and version before the encoded packet for binary codecs.
pub fn encode_hello(codec: &impl Codec, hello: &Packet) -> Result<Bytes, CodecError> {
    let body = codec.encode(hello)?;
    match codec.kind().wire_id() {
        None => Ok(body),
        Some(id) => {
            let mut out = BytesMut::with_capacity(6 + body.len());
            out.put_slice(&BINARY_MAGIC);
            out.put_u8(id);
            out.put_u8(PROTOCOL_VERSION as u8);
            out.put_slice(&body);
            Ok(out.freeze())
        }
    }
}
