//! Length-prefixed framing: a `u32` big-endian length, then that many bytes.
//!
//! This is exactly ReasonChip's framing, so Python ReasonChip peers
//! interoperate. Encoding is tokio-util's [`LengthDelimitedCodec`]. Decoding is
//! done here, statelessly, so that an oversized frame becomes a typed
//! [`TransportError::FrameTooLarge`] naming both sizes as soon as the 4-byte
//! header has arrived, before a single byte of the announced size is
//! reserved; a frame within the limit reserves at most [`RESERVE_AHEAD`]
//! bytes ahead of the data, so a peer that announces a large frame and then
//! trickles costs only what it has actually sent.

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

// `inner` is used for encoding only; see the module docs.

use crate::TransportError;

/// Bytes in the length prefix.
pub const HEADER_LEN: usize = 4;

/// The most buffer space reserved ahead of bytes that have actually arrived.
pub const RESERVE_AHEAD: usize = 64 * 1024;

/// The length-prefixed frame codec with an explicit maximum frame size.
#[derive(Debug)]
pub struct FrameCodec {
    inner: LengthDelimitedCodec,
    max: usize,
}

impl FrameCodec {
    /// A codec that refuses frames longer than `max_frame_size` bytes (payload only).
    pub fn new(max_frame_size: usize) -> FrameCodec {
        let max = max_frame_size.clamp(1, u32::MAX as usize);
        FrameCodec {
            inner: LengthDelimitedCodec::builder()
                .big_endian()
                .length_field_length(HEADER_LEN)
                .max_frame_length(max)
                .new_codec(),
            max,
        }
    }

    /// The largest payload this codec accepts.
    pub fn max_frame_size(&self) -> usize {
        self.max
    }
}

impl Decoder for FrameCodec {
    type Item = BytesMut;
    type Error = TransportError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, TransportError> {
        if src.len() < HEADER_LEN {
            return Ok(None);
        }
        let announced = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
        if announced > self.max {
            return Err(TransportError::FrameTooLarge {
                size: announced,
                max: self.max,
            });
        }
        let whole = HEADER_LEN + announced;
        if src.len() < whole {
            // Top up only once the room is used: reserving RESERVE_AHEAD past
            // the current length on every call moves the target with each
            // byte that arrives, and `BytesMut` meets each move by doubling.
            if src.len() == src.capacity() {
                src.reserve((whole - src.len()).min(RESERVE_AHEAD));
            }
            return Ok(None);
        }
        src.advance(HEADER_LEN);
        Ok(Some(src.split_to(announced)))
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<BytesMut>, TransportError> {
        match self.decode(buf)? {
            Some(frame) => Ok(Some(frame)),
            None if buf.is_empty() => Ok(None),
            None => {
                let expected = if buf.len() >= HEADER_LEN {
                    HEADER_LEN + u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize
                } else {
                    HEADER_LEN
                };
                Err(TransportError::Truncated {
                    got: buf.len(),
                    expected,
                })
            }
        }
    }
}

impl Encoder<Bytes> for FrameCodec {
    type Error = TransportError;

    fn encode(&mut self, frame: Bytes, dst: &mut BytesMut) -> Result<(), TransportError> {
        if frame.len() > self.max {
            return Err(TransportError::FrameTooLarge {
                size: frame.len(),
                max: self.max,
            });
        }
        Ok(self.inner.encode(frame, dst)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode_all(frames: &[Vec<u8>], max: usize) -> BytesMut {
        let mut codec = FrameCodec::new(max);
        let mut out = BytesMut::new();
        for f in frames {
            codec.encode(Bytes::copy_from_slice(f), &mut out).unwrap();
        }
        out
    }

    #[test]
    fn wire_format_is_u32_big_endian_length_then_payload() {
        let out = encode_all(&[b"{}".to_vec()], 16);
        assert_eq!(&out[..], &[0, 0, 0, 2, b'{', b'}']);
    }

    #[test]
    fn oversized_announcement_is_rejected_from_the_header_alone() {
        let mut codec = FrameCodec::new(10);
        let mut buf = BytesMut::from(&[0u8, 0, 0, 11][..]);
        let cap_before = buf.capacity();
        match codec.decode(&mut buf) {
            Err(TransportError::FrameTooLarge { size: 11, max: 10 }) => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(
            buf.capacity(),
            cap_before,
            "nothing reserved for the announced size"
        );
        let mut huge = BytesMut::from(&[0xffu8, 0xff, 0xff, 0xff][..]);
        let e = codec.decode(&mut huge).unwrap_err();
        assert_eq!(
            e.to_string(),
            "frame of 4294967295 bytes exceeds the 10-byte limit (raise it with `?max_frame_size=N` on the endpoint on both sides)"
        );
        assert!(huge.capacity() < 1024);
    }

    #[test]
    fn frame_at_the_limit_passes_and_one_over_fails_on_send() {
        let mut codec = FrameCodec::new(8);
        let mut out = BytesMut::new();
        codec.encode(Bytes::from(vec![7; 8]), &mut out).unwrap();
        assert!(matches!(
            codec.encode(Bytes::from(vec![7; 9]), &mut out),
            Err(TransportError::FrameTooLarge { size: 9, max: 8 })
        ));
        assert_eq!(codec.decode(&mut out).unwrap().unwrap().len(), 8);
    }

    #[test]
    fn a_frame_arriving_byte_by_byte_decodes_once_whole() {
        let wire = encode_all(&[vec![1u8; 10], vec![2u8; 3]], 100);
        let mut codec = FrameCodec::new(100);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in wire.iter() {
            buf.extend_from_slice(&[*b]);
            while let Some(f) = codec.decode(&mut buf).unwrap() {
                got.push(f.to_vec());
            }
        }
        assert_eq!(got, vec![vec![1u8; 10], vec![2u8; 3]]);
    }

    #[test]
    fn a_large_announced_frame_reserves_only_a_bounded_amount_ahead() {
        let mut codec = FrameCodec::new(16 << 20);
        let mut buf = BytesMut::from(&[0u8, 0xf0, 0, 0, 1][..]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(buf.capacity() <= 5 + RESERVE_AHEAD, "{}", buf.capacity());
    }

    #[test]
    fn truncated_stream_is_a_typed_error() {
        let mut codec = FrameCodec::new(100);
        let mut buf = BytesMut::from(&[0u8, 0, 0, 5, 1, 2][..]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(matches!(
            codec.decode_eof(&mut buf),
            Err(TransportError::Truncated {
                got: 6,
                expected: 9
            })
        ));
        assert!(codec.decode_eof(&mut BytesMut::new()).unwrap().is_none());
    }

    proptest! {
        /// Any chunking of any sequence of frames decodes to the same frames.
        #[test]
        fn any_chunking_round_trips(
            frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..12),
            cuts in proptest::collection::vec(1usize..64, 0..40),
        ) {
            let wire = encode_all(&frames, 300);
            let mut codec = FrameCodec::new(300);
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            let mut pos = 0;
            let mut cut = cuts.iter().cycle();
            while pos < wire.len() {
                let n = (*cut.next().unwrap_or(&wire.len())).min(wire.len() - pos);
                buf.extend_from_slice(&wire[pos..pos + n]);
                pos += n;
                while let Some(f) = codec.decode(&mut buf).unwrap() {
                    got.push(f.to_vec());
                }
            }
            prop_assert!(codec.decode_eof(&mut buf).unwrap().is_none());
            prop_assert_eq!(got, frames);
        }

        /// Arbitrary bytes never panic the decoder; it yields frames, asks for more, or errors.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), max in 1usize..256) {
            let mut codec = FrameCodec::new(max);
            let mut buf = BytesMut::from(&bytes[..]);
                        while let Ok(Some(f)) = codec.decode(&mut buf) {
                prop_assert!(f.len() <= max);
            }
        }
    }
}
