//! RFC 6455 framing: WebSocket frames in and out of a byte stream.
//!
//! Ours rather than tungstenite's protocol layer because plexwire's
//! connections half-close (a side that has finished sending still reads the
//! answers, as over TCP and QUIC), and tungstenite answers a close frame at
//! once, after which nothing more may be sent. Here a received close ends
//! the receiving half only; the answering close goes out when this side
//! shuts its sending half down (RFC 6455 §5.5.1 lets an endpoint finish
//! sending first).
//!
//! [`WsCodec::decode`] returns `Ok(None)` for "need more bytes", reassembles
//! fragmented messages (bounded by `max`, checked as soon as a frame header
//! announces its length, before its payload is buffered), unmasks, checks
//! UTF-8 of text messages, and refuses what the protocol forbids with a
//! [`WsError`] that carries the close status to send.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use plexwire_transport::MessageKind;

/// One unit of the WebSocket protocol, as decoded or to encode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsFrame {
    /// A whole message (fragments joined).
    Data(MessageKind, Bytes),
    /// A ping and its data (answered with a pong carrying the same).
    Ping(Bytes),
    /// A pong.
    Pong(Bytes),
    /// A close frame: status code (none if the frame had no body) and reason.
    Close(Option<u16>, String),
}

/// Normal closure.
pub const CLOSE_NORMAL: u16 = 1000;
/// Protocol error.
pub const CLOSE_PROTOCOL: u16 = 1002;
/// Data of a type the endpoint does not accept.
pub const CLOSE_UNSUPPORTED: u16 = 1003;
/// A text message that is not UTF-8.
pub const CLOSE_INVALID_DATA: u16 = 1007;
/// A policy violation (used by protocols on top for bad messages).
pub const CLOSE_POLICY: u16 = 1008;
/// A message over the size limit.
pub const CLOSE_TOO_BIG: u16 = 1009;

/// A protocol violation by the peer: what, and the close status it earns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsError {
    /// The close status to send (1002, 1007, 1009).
    pub code: u16,
    /// What was wrong.
    pub reason: String,
    /// For a message over the limit: its size (at least; the rest of a
    /// fragmented message is not waited for) and the limit.
    pub too_large: Option<(usize, usize)>,
}

impl std::fmt::Display for WsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (WebSocket close {})", self.reason, self.code)
    }
}

impl std::error::Error for WsError {}

impl From<std::io::Error> for WsError {
    fn from(e: std::io::Error) -> WsError {
        WsError {
            code: CLOSE_PROTOCOL,
            reason: format!("I/O error: {e}"),
            too_large: None,
        }
    }
}

fn violation(code: u16, reason: impl Into<String>) -> WsError {
    WsError {
        code,
        reason: reason.into(),
        too_large: None,
    }
}

/// The side a codec is on: clients mask what they send, servers require
/// masked frames (RFC 6455 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Accepted the connection.
    Server,
    /// Opened the connection.
    Client,
}

/// WebSocket framing for one side of a connection; see the module docs.
#[derive(Debug)]
pub struct WsCodec {
    side: Side,
    max: usize,
    /// The fragments of an unfinished message, and its kind.
    partial: Option<(MessageKind, BytesMut)>,
    /// State of the masking key generator (clients).
    mask_state: u64,
}

impl WsCodec {
    /// A codec for `side` whose messages may be at most `max` bytes.
    pub fn new(side: Side, max: usize) -> WsCodec {
        WsCodec {
            side,
            max,
            partial: None,
            mask_state: seed(),
        }
    }

    /// A fresh masking key: unpredictable enough for RFC 6455 §10.3 (its
    /// purpose is that a sender cannot choose the bytes on the wire).
    fn next_mask(&mut self) -> [u8; 4] {
        // splitmix64 over a randomly seeded state.
        self.mask_state = self.mask_state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.mask_state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z as u32).to_be_bytes()
    }
}

fn seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

impl Decoder for WsCodec {
    type Item = WsFrame;
    type Error = WsError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<WsFrame>, WsError> {
        loop {
            if src.len() < 2 {
                return Ok(None);
            }
            let (b0, b1) = (src[0], src[1]);
            let fin = b0 & 0x80 != 0;
            if b0 & 0x70 != 0 {
                return Err(violation(
                    CLOSE_PROTOCOL,
                    "a frame with RSV bits set, and no extension was negotiated (permessage-deflate is declined)",
                ));
            }
            let opcode = b0 & 0x0f;
            let masked = b1 & 0x80 != 0;
            let (len, mut at) = match b1 & 0x7f {
                126 => {
                    if src.len() < 4 {
                        return Ok(None);
                    }
                    (u16::from_be_bytes([src[2], src[3]]) as u64, 4)
                }
                127 => {
                    if src.len() < 10 {
                        return Ok(None);
                    }
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&src[2..10]);
                    (u64::from_be_bytes(b), 10)
                }
                n => (n as u64, 2),
            };
            match (self.side, masked) {
                (Side::Server, false) => {
                    return Err(violation(
                        CLOSE_PROTOCOL,
                        "an unmasked frame from a client (RFC 6455 §5.1: clients mask every frame)",
                    ))
                }
                (Side::Client, true) => {
                    return Err(violation(
                        CLOSE_PROTOCOL,
                        "a masked frame from a server (RFC 6455 §5.1)",
                    ))
                }
                _ => {}
            }
            let control = opcode & 0x08 != 0;
            if control && (len > 125 || !fin) {
                return Err(violation(
                    CLOSE_PROTOCOL,
                    "a control frame longer than 125 bytes or fragmented",
                ));
            }
            let already = self.partial.as_ref().map_or(0, |(_, p)| p.len());
            if !control && len.saturating_add(already as u64) > self.max as u64 {
                let size =
                    usize::try_from(len.saturating_add(already as u64)).unwrap_or(usize::MAX);
                return Err(WsError {
                    code: CLOSE_TOO_BIG,
                    reason: format!(
                        "a message of at least {size} bytes exceeds the {}-byte limit (raise it with `?max_frame_size=N` on the endpoint on both sides)",
                        self.max
                    ),
                    too_large: Some((size, self.max)),
                });
            }
            let mask = if masked {
                if src.len() < at + 4 {
                    return Ok(None);
                }
                let m = [src[at], src[at + 1], src[at + 2], src[at + 3]];
                at += 4;
                Some(m)
            } else {
                None
            };
            let len = len as usize; // within `max` or 125, checked above
            if src.len() < at + len {
                src.reserve(at + len - src.len());
                return Ok(None);
            }
            src.advance(at);
            let mut payload = src.split_to(len);
            if let Some(m) = mask {
                apply_mask(&mut payload, m);
            }
            match opcode {
                0x0 => {
                    let Some((kind, mut buf)) = self.partial.take() else {
                        return Err(violation(
                            CLOSE_PROTOCOL,
                            "a continuation frame with no message to continue",
                        ));
                    };
                    buf.put(payload);
                    if fin {
                        return finish(kind, buf.freeze()).map(Some);
                    }
                    self.partial = Some((kind, buf));
                }
                0x1 | 0x2 => {
                    if self.partial.is_some() {
                        return Err(violation(
                            CLOSE_PROTOCOL,
                            "a new message before the fragmented one ended",
                        ));
                    }
                    let kind = if opcode == 0x1 {
                        MessageKind::Text
                    } else {
                        MessageKind::Binary
                    };
                    if fin {
                        return finish(kind, payload.freeze()).map(Some);
                    }
                    self.partial = Some((kind, payload));
                }
                0x8 => {
                    let close = match payload.len() {
                        0 => WsFrame::Close(None, String::new()),
                        1 => {
                            return Err(violation(
                                CLOSE_PROTOCOL,
                                "a close frame with a 1-byte body",
                            ))
                        }
                        _ => {
                            let code = u16::from_be_bytes([payload[0], payload[1]]);
                            let reason = std::str::from_utf8(&payload[2..]).map_err(|_| {
                                violation(CLOSE_INVALID_DATA, "a close reason that is not UTF-8")
                            })?;
                            WsFrame::Close(Some(code), reason.to_owned())
                        }
                    };
                    return Ok(Some(close));
                }
                0x9 => return Ok(Some(WsFrame::Ping(payload.freeze()))),
                0xA => return Ok(Some(WsFrame::Pong(payload.freeze()))),
                other => {
                    return Err(violation(
                        CLOSE_PROTOCOL,
                        format!("a frame with the reserved opcode {other:#x}"),
                    ))
                }
            }
        }
    }
}

fn finish(kind: MessageKind, data: Bytes) -> Result<WsFrame, WsError> {
    if kind == MessageKind::Text && std::str::from_utf8(&data).is_err() {
        return Err(violation(
            CLOSE_INVALID_DATA,
            "a text message that is not UTF-8",
        ));
    }
    Ok(WsFrame::Data(kind, data))
}

impl Encoder<WsFrame> for WsCodec {
    type Error = WsError;

    fn encode(&mut self, frame: WsFrame, dst: &mut BytesMut) -> Result<(), WsError> {
        let (opcode, payload): (u8, Bytes) = match frame {
            WsFrame::Data(MessageKind::Text, d) => (0x1, d),
            WsFrame::Data(MessageKind::Binary, d) => (0x2, d),
            WsFrame::Ping(d) => (0x9, d),
            WsFrame::Pong(d) => (0xA, d),
            WsFrame::Close(code, reason) => {
                let mut b = BytesMut::new();
                if let Some(code) = code {
                    b.put_u16(code);
                    // Control frames carry at most 125 bytes.
                    let mut end = reason.len().min(123);
                    while !reason.is_char_boundary(end) {
                        end -= 1;
                    }
                    b.put_slice(&reason.as_bytes()[..end]);
                }
                (0x8, b.freeze())
            }
        };
        let len = payload.len();
        dst.reserve(len + 14);
        dst.put_u8(0x80 | opcode);
        let mask_bit = if self.side == Side::Client { 0x80 } else { 0 };
        if len < 126 {
            dst.put_u8(mask_bit | len as u8);
        } else if len <= u16::MAX as usize {
            dst.put_u8(mask_bit | 126);
            dst.put_u16(len as u16);
        } else {
            dst.put_u8(mask_bit | 127);
            dst.put_u64(len as u64);
        }
        if self.side == Side::Client {
            let mask = self.next_mask();
            dst.put_slice(&mask);
            let start = dst.len();
            dst.put_slice(&payload);
            apply_mask(&mut dst[start..], mask);
        } else {
            dst.put_slice(&payload);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(from: Side, to: Side, frame: WsFrame) -> WsFrame {
        let mut buf = BytesMut::new();
        WsCodec::new(from, 1 << 20).encode(frame, &mut buf).unwrap();
        let mut dec = WsCodec::new(to, 1 << 20);
        // Byte by byte: "need more" until the last one.
        let mut fed = BytesMut::new();
        let total = buf.len();
        for (i, b) in buf.iter().enumerate() {
            fed.put_u8(*b);
            let got = dec.decode(&mut fed).unwrap();
            if i + 1 < total {
                assert!(got.is_none(), "decoded early at byte {i}");
            } else {
                return got.unwrap();
            }
        }
        unreachable!("an encoded frame has at least two bytes")
    }

    #[test]
    fn frames_round_trip_both_ways_at_every_length_form() {
        for len in [0usize, 1, 125, 126, 65535, 65536, 70000] {
            let data = Bytes::from(vec![b'a'; len]);
            for (from, to) in [(Side::Client, Side::Server), (Side::Server, Side::Client)] {
                assert_eq!(
                    roundtrip(from, to, WsFrame::Data(MessageKind::Text, data.clone())),
                    WsFrame::Data(MessageKind::Text, data.clone())
                );
            }
        }
        assert_eq!(
            roundtrip(
                Side::Client,
                Side::Server,
                WsFrame::Close(Some(1000), "bye".into())
            ),
            WsFrame::Close(Some(1000), "bye".into())
        );
        assert_eq!(
            roundtrip(
                Side::Server,
                Side::Client,
                WsFrame::Ping(Bytes::from_static(b"x"))
            ),
            WsFrame::Ping(Bytes::from_static(b"x"))
        );
    }

    #[test]
    fn the_captured_hat_frames_decode() {
        // Server → client `'3'` and client → server masked `'2'` (hat-juggler.md).
        let mut c = WsCodec::new(Side::Client, 1 << 20);
        let mut b = BytesMut::from(&[0x81u8, 0x01, 0x33][..]);
        assert_eq!(
            c.decode(&mut b).unwrap(),
            Some(WsFrame::Data(MessageKind::Text, Bytes::from_static(b"3")))
        );
        let mut s = WsCodec::new(Side::Server, 1 << 20);
        let mut b = BytesMut::from(&[0x81u8, 0x81, 0x42, 0x58, 0x58, 0xd7, 0x70][..]);
        assert_eq!(
            s.decode(&mut b).unwrap(),
            Some(WsFrame::Data(MessageKind::Text, Bytes::from_static(b"2")))
        );
        let mut b = BytesMut::from(&[0x88u8, 0x82, 0x7b, 0x34, 0xfb, 0xba, 0x78, 0xdc][..]);
        assert_eq!(
            s.decode(&mut b).unwrap(),
            Some(WsFrame::Close(Some(1000), String::new()))
        );
    }

    #[test]
    fn fragments_join_and_violations_name_their_close_status() {
        let mut s = WsCodec::new(Side::Server, 10);
        // "he" (text, not final) + ping + "llo" (continuation, final), masked with zeros.
        let mut b = BytesMut::from(
            &[
                0x01, 0x82, 0, 0, 0, 0, b'h', b'e', 0x89, 0x80, 0, 0, 0, 0, 0x80, 0x83, 0, 0, 0, 0,
                b'l', b'l', b'o',
            ][..],
        );
        assert_eq!(s.decode(&mut b).unwrap(), Some(WsFrame::Ping(Bytes::new())));
        assert_eq!(
            s.decode(&mut b).unwrap(),
            Some(WsFrame::Data(
                MessageKind::Text,
                Bytes::from_static(b"hello")
            ))
        );
        let code = |bytes: &[u8], side| {
            WsCodec::new(side, 10)
                .decode(&mut BytesMut::from(bytes))
                .unwrap_err()
                .code
        };
        assert_eq!(
            code(&[0x81, 0x01, b'x'], Side::Server),
            CLOSE_PROTOCOL,
            "unmasked"
        );
        assert_eq!(
            code(&[0x81, 0x81, 0, 0, 0, 0, b'x'], Side::Client),
            CLOSE_PROTOCOL
        );
        assert_eq!(
            code(&[0xC1, 0x01, b'x'], Side::Client),
            CLOSE_PROTOCOL,
            "RSV1"
        );
        assert_eq!(
            code(&[0x83, 0x00], Side::Client),
            CLOSE_PROTOCOL,
            "opcode 3"
        );
        assert_eq!(
            code(&[0x80, 0x00], Side::Client),
            CLOSE_PROTOCOL,
            "lone continuation"
        );
        assert_eq!(code(&[0x81, 0x01, 0xff], Side::Client), CLOSE_INVALID_DATA);
        // Over the limit as soon as the header says so, before the payload.
        assert_eq!(code(&[0x82, 0x0b], Side::Client), CLOSE_TOO_BIG);
        assert_eq!(
            code(
                &[0x82, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
                Side::Client
            ),
            CLOSE_TOO_BIG
        );
    }
}
