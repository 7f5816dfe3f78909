//! One cs.packetstream 20240630 packet, byte for byte: the body inside the
//! BSUInt length prefix (which the connection layer's `Framing::Bsuint`
//! adds and strips), decoded strictly and encoded minimally.
//!
//! It exists apart from the state machine so that the decoder can be
//! fuzzed and property-tested on its own: [`Packet::decode`] takes any bytes
//! and either returns a packet or says what is wrong with them (never
//! panics, never allocates more than the frame it was given), and
//! [`Packet::encode`] writes the form the Python library writes. The wire
//! format is `../shared/wire/cs-packetstream.md`, summed up in
//! `docs/protocol.md`:
//!
//! ```text
//! body     = BSUInt(tag) BSUInt(flagword) [BSUInt(channel)] [BSUInt(wire_rq_type)] payload
//! flagword = has_channel | is_request << 1 | packet_flags << 2
//! ```

use bytes::{BufMut, Bytes, BytesMut};

use crate::transport::{bsuint_len, put_bsuint};

/// `flagword` bit 0: a channel number follows the flagword.
const HAS_CHANNEL: u64 = 1;
/// `flagword` bit 1: the packet is a request (a wire rq_type follows).
const IS_REQUEST: u64 = 2;

/// The largest application flags a request can carry (`flags << 2` must fit a u64).
pub const MAX_REQUEST_FLAGS: u64 = u64::MAX >> 2;
/// The largest application flags a response can carry (`((flags << 1) | ok) << 2` must fit a u64).
pub const MAX_RESPONSE_FLAGS: u64 = u64::MAX >> 3;

/// The channel-0 tag of the EOF marker.
pub const EOF_TAG: u64 = 0;
/// The channel-0 tag of the ERQ ("end of requests") marker.
pub const ERQ_TAG: u64 = 1;
/// The first tag of channel 0 (0 and 1 belong to EOF and ERQ).
pub const FIRST_TAG_CHANNEL_0: u64 = 2;

/// What a packet is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A request, or (wire rq_type 0) an EOF/ERQ marker.
    Request {
        /// The rq_type as on the wire: the application's rq_type + 1, 0 for
        /// the EOF/ERQ markers.
        wire_rq_type: u64,
        /// The application's request flags.
        flags: u64,
    },
    /// A response to the request with the same channel and tag.
    Response {
        /// Whether the request succeeded.
        ok: bool,
        /// The application's response flags.
        flags: u64,
    },
}

/// One packet (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Packet {
    /// The channel; 0 is the one every 20240630 peer has.
    pub channel: u64,
    /// The sender's number for the request (per channel).
    pub tag: u64,
    /// Request or response, with its flags.
    pub kind: Kind,
    /// Everything after the header.
    pub payload: Bytes,
}

/// Why bytes are not a packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MalformedPacket {
    /// A BSUInt field ended with the packet.
    #[error("packet of {len} bytes ends inside its {field} field")]
    Truncated {
        /// Which field.
        field: &'static str,
        /// The packet's size.
        len: usize,
    },
    /// A BSUInt field holds more than 64 bits.
    #[error("the {field} field holds a number larger than 2^64-1 (a BSUInt longer than a u64)")]
    Overflow {
        /// Which field.
        field: &'static str,
    },
}

/// Reads a BSUInt field from the start of `src`, rejecting values over
/// `u64::MAX` (redundant leading `80` bytes are accepted, as Python does:
/// they cannot be more than the frame, which is bounded).
fn read_field(
    src: &[u8],
    field: &'static str,
    len: usize,
) -> Result<(u64, usize), MalformedPacket> {
    let mut value: u64 = 0;
    for (i, b) in src.iter().enumerate() {
        if value > (u64::MAX >> 7) {
            return Err(MalformedPacket::Overflow { field });
        }
        value = (value << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            return Ok((value, i + 1));
        }
    }
    Err(MalformedPacket::Truncated { field, len })
}

impl Packet {
    /// A request packet.
    pub fn request(channel: u64, tag: u64, rq_type: u64, flags: u64, payload: Bytes) -> Packet {
        Packet {
            channel,
            tag,
            kind: Kind::Request {
                wire_rq_type: rq_type.saturating_add(1),
                flags,
            },
            payload,
        }
    }

    /// A response packet.
    pub fn response(channel: u64, tag: u64, ok: bool, flags: u64, payload: Bytes) -> Packet {
        Packet {
            channel,
            tag,
            kind: Kind::Response { ok, flags },
            payload,
        }
    }

    /// The EOF marker: `03 00 02 00` on the wire.
    pub fn eof() -> Packet {
        Packet {
            channel: 0,
            tag: EOF_TAG,
            kind: Kind::Request {
                wire_rq_type: 0,
                flags: 0,
            },
            payload: Bytes::new(),
        }
    }

    /// The ERQ ("end of requests") marker: `03 01 02 00` on the wire.
    pub fn erq() -> Packet {
        Packet {
            tag: ERQ_TAG,
            ..Packet::eof()
        }
    }

    /// The packet's flagword, or `None` if its flags do not fit one.
    fn flagword(&self) -> Option<u64> {
        let has_channel = u64::from(self.channel != 0);
        let (request, packet_flags) = match self.kind {
            Kind::Request { flags, .. } => (IS_REQUEST, flags),
            Kind::Response { ok, flags } => {
                if flags > MAX_RESPONSE_FLAGS {
                    return None;
                }
                (0, (flags << 1) | u64::from(ok))
            }
        };
        if packet_flags > MAX_REQUEST_FLAGS {
            return None;
        }
        Some(has_channel | request | (packet_flags << 2))
    }

    /// Whether the flags fit the flagword (they do unless they are over
    /// [`MAX_REQUEST_FLAGS`] or [`MAX_RESPONSE_FLAGS`]).
    pub fn flags_fit(&self) -> bool {
        self.flagword().is_some()
    }

    /// The header's size: everything but the payload.
    fn header_len(&self, flagword: u64) -> usize {
        let mut n = bsuint_len(self.tag) + bsuint_len(flagword);
        if self.channel != 0 {
            n += bsuint_len(self.channel);
        }
        if let Kind::Request { wire_rq_type, .. } = self.kind {
            n += bsuint_len(wire_rq_type);
        }
        n
    }

    /// The body's encoded size (without the length prefix).
    pub fn encoded_len(&self) -> usize {
        self.header_len(self.flagword().unwrap_or(u64::MAX)) + self.payload.len()
    }

    /// Encodes the body (without the length prefix) in the minimal form.
    /// Flags that do not fit (see [`Packet::flags_fit`]) are cut to the
    /// largest that does; callers check first.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.encoded_len());
        self.encode_into(&mut out);
        out.freeze()
    }

    /// Appends the body (without the length prefix) to `dst`.
    pub fn encode_into(&self, dst: &mut impl BufMut) {
        let flagword = self.flagword().unwrap_or_else(|| {
            let mut p = self.clone();
            match &mut p.kind {
                Kind::Request { flags, .. } => *flags = MAX_REQUEST_FLAGS,
                Kind::Response { flags, .. } => *flags = MAX_RESPONSE_FLAGS,
            }
            p.flagword().unwrap_or(0)
        });
        put_bsuint(dst, self.tag);
        put_bsuint(dst, flagword);
        if self.channel != 0 {
            put_bsuint(dst, self.channel);
        }
        if let Kind::Request { wire_rq_type, .. } = self.kind {
            put_bsuint(dst, wire_rq_type);
        }
        dst.put_slice(&self.payload);
    }

    /// Decodes a body (the frame inside the length prefix). The payload
    /// shares `frame`'s memory.
    pub fn decode(frame: &Bytes) -> Result<Packet, MalformedPacket> {
        let len = frame.len();
        let (tag, mut at) = read_field(frame, "tag", len)?;
        let (flagword, n) = read_field(&frame[at..], "flagword", len)?;
        at += n;
        let channel = if flagword & HAS_CHANNEL != 0 {
            let (channel, n) = read_field(&frame[at..], "channel", len)?;
            at += n;
            channel
        } else {
            0
        };
        let packet_flags = flagword >> 2;
        let kind = if flagword & IS_REQUEST != 0 {
            let (wire_rq_type, n) = read_field(&frame[at..], "rq_type", len)?;
            at += n;
            Kind::Request {
                wire_rq_type,
                flags: packet_flags,
            }
        } else {
            Kind::Response {
                ok: packet_flags & 1 == 1,
                flags: packet_flags >> 1,
            }
        };
        Ok(Packet {
            channel,
            tag,
            kind,
            payload: frame.slice(at..),
        })
    }

    /// Whether this is the EOF marker (or another request with wire
    /// rq_type 0, which the Python library treats as a malformed EOF).
    pub fn is_end_marker(&self) -> bool {
        matches!(
            self.kind,
            Kind::Request {
                wire_rq_type: 0,
                ..
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    }

    /// The body of a captured packet (its first `prefix` bytes are the length).
    fn body(s: &str, prefix: usize) -> Bytes {
        Bytes::from(hex(s)[prefix..].to_vec())
    }

    fn round_trip(frame: &Bytes) -> Packet {
        let p = Packet::decode(frame).unwrap();
        assert_eq!(&p.encode(), frame, "re-encodes to the captured bytes");
        assert_eq!(p.encoded_len(), frame.len());
        p
    }

    // The captured examples of ../shared/wire/cs-packetstream.md.

    #[test]
    fn captured_request_channel_0() {
        let f = body(
            "18 02 02 02 68 65 6c 6c 6f 20 30 20 6f 6e 20 63 68 61 6e 6e 65 6c 20 30 20",
            1,
        );
        let p = round_trip(&f);
        assert_eq!(
            p,
            Packet::request(0, 2, 1, 0, Bytes::from_static(b"hello 0 on channel 0 "))
        );
    }

    #[test]
    fn captured_request_channel_1() {
        let f = body(
            "1b 00 07 01 03 68 65 6c 6c 6f 20 31 20 6f 6e 20 63 68 61 6e 6e 65 6c 20 31 20 61 62",
            1,
        );
        let p = round_trip(&f);
        assert_eq!(
            p,
            Packet::request(1, 0, 2, 1, Bytes::from_static(b"hello 1 on channel 1 ab"))
        );
    }

    #[test]
    fn captured_responses() {
        let ok = body(
            "1b 03 14 68 65 6c 6c 6f 20 32 20 6f 6e 20 63 68 61 6e 6e 65 6c 20 30 20 61 62 61 62",
            1,
        );
        assert_eq!(
            round_trip(&ok),
            Packet::response(
                0,
                3,
                true,
                2,
                Bytes::from_static(b"hello 2 on channel 0 abab")
            )
        );
        let ch1 = body(
            "1a 00 05 01 48 45 4c 4c 4f 20 31 20 4f 4e 20 43 48 41 4e 4e 45 4c 20 31 20 41 42",
            1,
        );
        assert_eq!(
            round_trip(&ch1),
            Packet::response(
                1,
                0,
                true,
                0,
                Bytes::from_static(b"HELLO 1 ON CHANNEL 1 AB")
            )
        );
        let failed = body(
            "1a 0c 00 65 78 63 65 70 74 69 6f 6e 20 64 75 72 69 6e 67 20 68 61 6e 64 6c 65 72",
            1,
        );
        assert_eq!(
            round_trip(&failed),
            Packet::response(
                0,
                12,
                false,
                0,
                Bytes::from_static(b"exception during handler")
            )
        );
        let empty = body("03 0a 05 01", 1);
        assert_eq!(
            round_trip(&empty),
            Packet::response(1, 10, true, 0, Bytes::new())
        );
        let rejected = body(
            "15 00 01 01 75 6e 6b 6e 6f 77 6e 20 63 68 61 6e 6e 65 6c 20 25 64",
            1,
        );
        assert_eq!(
            round_trip(&rejected),
            Packet::response(1, 0, false, 0, Bytes::from_static(b"unknown channel %d"))
        );
    }

    #[test]
    fn captured_markers() {
        assert_eq!(Packet::eof().encode(), body("03 00 02 00", 1));
        assert_eq!(Packet::erq().encode(), body("03 01 02 00", 1));
        assert!(Packet::decode(&body("03 00 02 00", 1))
            .unwrap()
            .is_end_marker());
    }

    #[test]
    fn captured_large_requests() {
        let payload: Vec<u8> = (0..=255u8).chain(std::iter::repeat_n(0x7a, 44)).collect();
        let p = Packet::request(0, 13, 1, 5, Bytes::from(payload));
        let mut framed = BytesMut::new();
        put_bsuint(&mut framed, p.encoded_len() as u64);
        p.encode_into(&mut framed);
        assert_eq!(&framed[..5], &hex("82 2f 0d 16 02")[..]);
        assert_eq!(framed.len(), 2 + 303);
        let big = Packet::request(1, 11, 1, 0, Bytes::from(vec![0xff; 20000]));
        let mut framed = BytesMut::new();
        put_bsuint(&mut framed, big.encoded_len() as u64);
        big.encode_into(&mut framed);
        assert_eq!(&framed[..7], &hex("81 9c 24 0b 03 01 02")[..]);
    }

    #[test]
    fn bad_bytes_say_what_is_wrong() {
        let e = Packet::decode(&Bytes::new()).unwrap_err();
        assert_eq!(e.to_string(), "packet of 0 bytes ends inside its tag field");
        let e = Packet::decode(&Bytes::from_static(&[0x02, 0x83])).unwrap_err();
        assert_eq!(
            e,
            MalformedPacket::Truncated {
                field: "flagword",
                len: 2
            }
        );
        let e = Packet::decode(&Bytes::from_static(&[0x02, 0x03])).unwrap_err();
        assert_eq!(
            e,
            MalformedPacket::Truncated {
                field: "channel",
                len: 2
            }
        );
        let e = Packet::decode(&Bytes::from_static(&[0x02, 0x02])).unwrap_err();
        assert_eq!(
            e,
            MalformedPacket::Truncated {
                field: "rq_type",
                len: 2
            }
        );
        // 2^64: ten bytes, 0x82 then nine 0x80 groups... one bit too many.
        let mut over = vec![0x82];
        over.extend([0x80; 8]);
        over.push(0x00);
        let e = Packet::decode(&Bytes::from(over)).unwrap_err();
        assert_eq!(e, MalformedPacket::Overflow { field: "tag" });
        // u64::MAX itself is fine.
        let mut max = BytesMut::new();
        put_bsuint(&mut max, u64::MAX);
        max.put_u8(0);
        assert_eq!(Packet::decode(&max.freeze()).unwrap().tag, u64::MAX);
    }

    #[test]
    fn redundant_forms_decode_and_re_encode_shorter() {
        // Leading 0x80 on the tag, and a channel field holding 0.
        let f = Bytes::from_static(&[0x80, 0x05, 0x03, 0x00, 0x02, b'x']);
        let p = Packet::decode(&f).unwrap();
        assert_eq!(p, Packet::request(0, 5, 1, 0, Bytes::from_static(b"x")));
        assert!(p.encode().len() < f.len());
    }

    #[test]
    fn flags_that_do_not_fit_are_detected() {
        assert!(Packet::request(0, 2, 1, MAX_REQUEST_FLAGS, Bytes::new()).flags_fit());
        assert!(!Packet::request(0, 2, 1, MAX_REQUEST_FLAGS + 1, Bytes::new()).flags_fit());
        assert!(Packet::response(0, 2, true, MAX_RESPONSE_FLAGS, Bytes::new()).flags_fit());
        assert!(!Packet::response(0, 2, true, MAX_RESPONSE_FLAGS + 1, Bytes::new()).flags_fit());
        let p = Packet::response(0, 2, false, MAX_RESPONSE_FLAGS, Bytes::new());
        assert_eq!(Packet::decode(&p.encode()).unwrap(), p);
    }
}
