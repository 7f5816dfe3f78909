//! cs.packetstream's framing: each frame is `BSUInt(len) body`, where a
//! BSUInt is an unsigned integer in **big-endian base-128** (7 value bits a
//! byte, the high bit set on every byte but the last — not LEB128, which is
//! little-endian). `0` is `00`, `128` is `81 00`, `20004` is `81 9c 24`.
//!
//! The encoder writes the minimal form. The decoder, like the Python one,
//! also takes redundant leading `80` bytes, but only up to
//! [`MAX_BSUINT_HEADER`] bytes of prefix, so a peer cannot keep it reading a
//! header forever; as with the u32 framing, an announced length over the
//! limit is a typed error as soon as the prefix is complete, before anything
//! is reserved for it.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::{TransportError, RESERVE_AHEAD};

/// The longest length prefix accepted: 16 bytes hold 112 value bits, far
/// past any frame limit, and leave room for a little redundant padding.
pub const MAX_BSUINT_HEADER: usize = 16;

/// Appends `value` as a minimal BSUInt.
pub fn put_bsuint(dst: &mut impl BufMut, value: u64) {
    let mut groups = [0u8; 10];
    let mut n = 0;
    let mut v = value;
    loop {
        groups[n] = (v & 0x7f) as u8;
        n += 1;
        v >>= 7;
        if v == 0 {
            break;
        }
    }
    for i in (0..n).rev() {
        let more = if i == 0 { 0 } else { 0x80 };
        dst.put_u8(groups[i] | more);
    }
}

/// The minimal BSUInt encoding's length for `value`.
pub fn bsuint_len(value: u64) -> usize {
    let bits = 64 - value.leading_zeros() as usize;
    bits.div_ceil(7).max(1)
}

/// Reads a BSUInt from the start of `src`: `Ok(None)` if it is not complete
/// yet, else the value (saturated to `u64::MAX`) and the bytes it took.
pub fn parse_bsuint(src: &[u8]) -> Result<Option<(u64, usize)>, TransportError> {
    let mut value: u128 = 0;
    for (i, b) in src.iter().enumerate() {
        if i == MAX_BSUINT_HEADER {
            break;
        }
        value = (value << 7) | u128::from(b & 0x7f);
        if b & 0x80 == 0 {
            return Ok(Some((u64::try_from(value).unwrap_or(u64::MAX), i + 1)));
        }
    }
    if src.len() >= MAX_BSUINT_HEADER {
        return Err(TransportError::BadPrefix {
            reason: format!("a BSUInt length prefix longer than {MAX_BSUINT_HEADER} bytes"),
        });
    }
    Ok(None)
}

/// The BSUInt-length-prefixed frame codec with an explicit maximum frame size.
#[derive(Debug, Clone)]
pub struct BsuintCodec {
    max: usize,
}

impl BsuintCodec {
    /// A codec that refuses frames longer than `max_frame_size` bytes (body only).
    pub fn new(max_frame_size: usize) -> BsuintCodec {
        BsuintCodec {
            max: max_frame_size.max(1),
        }
    }

    /// The largest body this codec accepts.
    pub fn max_frame_size(&self) -> usize {
        self.max
    }
}

impl Decoder for BsuintCodec {
    type Item = BytesMut;
    type Error = TransportError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, TransportError> {
        let Some((announced, header)) = parse_bsuint(src)? else {
            return Ok(None);
        };
        if announced > self.max as u64 {
            return Err(TransportError::FrameTooLarge {
                size: usize::try_from(announced).unwrap_or(usize::MAX),
                max: self.max,
            });
        }
        let announced = announced as usize;
        let whole = header + announced;
        if src.len() < whole {
            if src.len() == src.capacity() {
                src.reserve((whole - src.len()).min(RESERVE_AHEAD));
            }
            return Ok(None);
        }
        src.advance(header);
        Ok(Some(src.split_to(announced)))
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<BytesMut>, TransportError> {
        match self.decode(buf)? {
            Some(frame) => Ok(Some(frame)),
            None if buf.is_empty() => Ok(None),
            None => {
                let expected = match parse_bsuint(buf) {
                    Ok(Some((len, header))) => header.saturating_add(len as usize),
                    _ => buf.len() + 1,
                };
                Err(TransportError::Truncated {
                    got: buf.len(),
                    expected,
                })
            }
        }
    }
}

impl Encoder<Bytes> for BsuintCodec {
    type Error = TransportError;

    fn encode(&mut self, frame: Bytes, dst: &mut BytesMut) -> Result<(), TransportError> {
        if frame.len() > self.max {
            return Err(TransportError::FrameTooLarge {
                size: frame.len(),
                max: self.max,
            });
        }
        dst.reserve(bsuint_len(frame.len() as u64) + frame.len());
        put_bsuint(dst, frame.len() as u64);
        dst.put_slice(&frame);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn enc(v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        put_bsuint(&mut out, v);
        out
    }

    #[test]
    fn bsuint_matches_the_captured_table() {
        // ../shared/wire/cs-packetstream.md, "Integers: BSUInt".
        let table: &[(u64, &[u8])] = &[
            (0, &[0x00]),
            (1, &[0x01]),
            (127, &[0x7f]),
            (128, &[0x81, 0x00]),
            (255, &[0x81, 0x7f]),
            (303, &[0x82, 0x2f]),
            (16383, &[0xff, 0x7f]),
            (16384, &[0x81, 0x80, 0x00]),
            (20004, &[0x81, 0x9c, 0x24]),
        ];
        for (v, bytes) in table {
            assert_eq!(enc(*v), *bytes, "{v}");
            assert_eq!(bsuint_len(*v), bytes.len(), "{v}");
            assert_eq!(parse_bsuint(bytes).unwrap(), Some((*v, bytes.len())));
        }
    }

    #[test]
    fn redundant_leading_bytes_are_read_but_bounded() {
        assert_eq!(parse_bsuint(&[0x80, 0x80, 0x05]).unwrap(), Some((5, 3)));
        assert_eq!(parse_bsuint(&[0x80; 15]).unwrap(), None);
        let e = parse_bsuint(&[0x80; 16]).unwrap_err().to_string();
        assert!(e.contains("longer than 16 bytes"), "{e}");
    }

    #[test]
    fn oversized_announcement_is_rejected_once_the_prefix_is_complete() {
        let mut codec = BsuintCodec::new(100);
        let mut buf = BytesMut::from(&enc(101)[..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(TransportError::FrameTooLarge {
                size: 101,
                max: 100
            })
        ));
        let mut huge = BytesMut::from(&[0xffu8; 15][..]);
        huge.put_u8(0x7f);
        assert!(matches!(
            codec.decode(&mut huge),
            Err(TransportError::FrameTooLarge {
                size: usize::MAX,
                max: 100
            })
        ));
    }

    #[test]
    fn truncated_stream_is_a_typed_error() {
        let mut codec = BsuintCodec::new(1000);
        let mut buf = BytesMut::from(&[0x81, 0x00, 1, 2][..]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(matches!(
            codec.decode_eof(&mut buf),
            Err(TransportError::Truncated {
                got: 4,
                expected: 130
            })
        ));
    }

    proptest! {
        #[test]
        fn bsuint_round_trips(v in any::<u64>()) {
            let bytes = enc(v);
            prop_assert_eq!(bytes.len(), bsuint_len(v));
            prop_assert_eq!(parse_bsuint(&bytes).unwrap(), Some((v, bytes.len())));
        }

        #[test]
        fn any_chunking_round_trips(
            frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..12),
            cut in 1usize..64,
        ) {
            let mut codec = BsuintCodec::new(300);
            let mut wire = BytesMut::new();
            for f in &frames {
                codec.encode(Bytes::copy_from_slice(f), &mut wire).unwrap();
            }
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for chunk in wire.chunks(cut) {
                buf.extend_from_slice(chunk);
                while let Some(f) = codec.decode(&mut buf).unwrap() {
                    got.push(f.to_vec());
                }
            }
            prop_assert!(codec.decode_eof(&mut buf).unwrap().is_none());
            prop_assert_eq!(got, frames);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), max in 1usize..256) {
            let mut codec = BsuintCodec::new(max);
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(f)) = codec.decode(&mut buf) {
                prop_assert!(f.len() <= max);
            }
        }
    }
}
