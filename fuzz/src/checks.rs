//! The properties plexwire's fuzz targets check, one public function per target.
//!
//! Every function panics (fails the target) when a property does not hold.
//! The properties are round trips and agreement with an independent model,
//! not just "does not panic":
//!
//! - [`frame_decoder`]: the length-prefix decoder, fed the same stream in two
//!   chunkings, agrees frame by frame (and on where and how it fails) with a
//!   ten-line reference parser; every frame re-encodes to exactly the bytes
//!   it was decoded from; the buffer never grows towards an announced size.
//! - [`json_packet`] / [`bincode_packet`]: whatever decodes re-encodes to a
//!   canonical frame that decodes to the same packet (for bincode: the same
//!   bytes unless the input spent extra bytes on non-minimal integers), and
//!   decoding allocates in proportion to the frame, never to a count in it.
//! - [`first_frame`]: codec detection agrees with the codecs and survives
//!   `encode_hello` → `detect`.
//! - [`endpoint`]: a parsed URL re-parses to itself, and rebuilding the URL
//!   from its parts (`with_address`, as listeners do) yields one that parses
//!   back to the same endpoint.
//! - [`packet_roundtrip`]: any packet survives both codecs, the framing and
//!   first-frame detection; its legacy form is legacy.
//! - [`packet_stream`]: cs.packetstream packets — the input as one packet
//!   body and as a BSUInt-framed stream: whatever decodes re-encodes no
//!   longer than it was, to the same bytes when as long (minimal encodings),
//!   and decodes back to the same packet; fed to a `PacketCore`, every
//!   packet it transmits round-trips too, and every request it hands out is
//!   answered exactly once.
//!
//! This file is shared, unchanged, with `tests/fuzz_regressions.rs`
//! (`#[path]`), so it may only use crates the root `plexwire` package's
//! tests can use too: plexwire, plexwire-transport, bytes, tokio-util, uuid.

#![allow(dead_code)] // The test binary uses only some of it.

use std::ops::Range;

use bytes::{Bytes, BytesMut};
use plexwire::codec::{
    detect, encode_hello, AnyCodec, Bincode, Codec, CodecError, CodecKind, Json, BINARY_MAGIC,
};
use plexwire::protocol::{Packet, PacketType, PROTOCOL_VERSION};
use plexwire_transport::{
    Address, Endpoint, FrameCodec, TransportError, DEFAULT_MAX_FRAME_SIZE, HEADER_LEN,
    RESERVE_AHEAD,
};
use tokio_util::codec::{Decoder, Encoder};

// ---------------------------------------------------------------------------
// Allocation metering

/// Counts the bytes each thread has allocated, so a check can bound what one
/// call allocated at its peak (`alloc_meter::peak`).
pub mod alloc_meter {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    /// The counting allocator (a pass-through to [`System`]).
    pub struct Meter;

    thread_local! {
        // `const` and drop-free: no lazy initialisation, no destructor
        // registration, so the allocator may touch them without recursing.
        static LIVE: Cell<isize> = const { Cell::new(0) };
        static PEAK: Cell<isize> = const { Cell::new(0) };
    }

    fn add(delta: isize) {
        let _ = LIVE.try_with(|live| {
            let now = live.get().wrapping_add(delta);
            live.set(now);
            let _ = PEAK.try_with(|peak| {
                if now > peak.get() {
                    peak.set(now)
                }
            });
        });
    }

    unsafe impl GlobalAlloc for Meter {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let p = unsafe { System.alloc(layout) };
            if !p.is_null() {
                add(layout.size() as isize);
            }
            p
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            let p = unsafe { System.alloc_zeroed(layout) };
            if !p.is_null() {
                add(layout.size() as isize);
            }
            p
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            unsafe { System.dealloc(ptr, layout) };
            add(-(layout.size() as isize));
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            let p = unsafe { System.realloc(ptr, layout, new_size) };
            if !p.is_null() {
                add(new_size as isize - layout.size() as isize);
            }
            p
        }
    }

    #[global_allocator]
    static METER: Meter = Meter;

    /// Runs `f` and returns its result and the most bytes it held allocated
    /// at once (on this thread) beyond what was allocated when it started.
    pub fn peak<R>(f: impl FnOnce() -> R) -> (R, usize) {
        let start = LIVE.with(Cell::get);
        PEAK.with(|p| p.set(start));
        let r = f();
        let peak = PEAK.with(Cell::get);
        (r, peak.saturating_sub(start).max(0) as usize)
    }
}

/// The most a codec may allocate, at its peak, to decode a frame of `len`
/// bytes. Generous per byte (owned strings, `Vec` doubling, serde's buffering
/// of untagged values, error messages that quote the input), but linear: a
/// count on the wire that makes the decoder allocate for elements that are
/// not there breaks it.
fn decode_budget(len: usize) -> usize {
    128 * len + 64 * 1024
}

fn metered_decode(codec: &dyn Codec, frame: &Bytes) -> Result<Packet, CodecError> {
    let (res, peak) = alloc_meter::peak(|| codec.decode(frame));
    assert!(
        peak <= decode_budget(frame.len()),
        "{:?} decoder allocated {peak} bytes at once for a {}-byte frame (budget {}); result: {res:?}",
        codec.kind(),
        frame.len(),
        decode_budget(frame.len()),
    );
    res
}

/// Reads configuration bytes off the front of a fuzz input; zeros once exhausted.
struct Take<'a>(&'a [u8]);

impl<'a> Take<'a> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    fn rest(self) -> &'a [u8] {
        self.0
    }
}

// ---------------------------------------------------------------------------
// frame_decoder

/// How a stream of frames ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEnd {
    /// At a frame boundary.
    Clean,
    /// At a header announcing more than the limit (`FrameTooLarge`).
    TooLarge { size: usize, max: usize },
    /// In the middle of a frame (`Truncated`, from `decode_eof`).
    Truncated { got: usize, expected: usize },
}

/// What decoding a whole stream yields: the payload spans, then how it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub frames: Vec<Range<usize>>,
    pub end: StreamEnd,
}

/// The framing spec, written independently of `FrameCodec`: a u32
/// big-endian length, then that many bytes; a length over `max` is an error
/// as soon as the header is there; a stream ending inside a frame is
/// truncated.
pub fn reference_frames(stream: &[u8], max: usize) -> Decoded {
    let mut frames = Vec::new();
    let mut pos = 0;
    loop {
        let rest = &stream[pos..];
        let end = if rest.is_empty() {
            StreamEnd::Clean
        } else if rest.len() < 4 {
            StreamEnd::Truncated {
                got: rest.len(),
                expected: 4,
            }
        } else {
            let n = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            if n > max {
                StreamEnd::TooLarge { size: n, max }
            } else if rest.len() < 4 + n {
                StreamEnd::Truncated {
                    got: rest.len(),
                    expected: 4 + n,
                }
            } else {
                frames.push(pos + 4..pos + 4 + n);
                pos += 4 + n;
                continue;
            }
        };
        return Decoded { frames, end };
    }
}

/// Feeds `stream` to a fresh `FrameCodec::new(max)` in chunks of the sizes in
/// `cuts` (cycled; all of it at once if `cuts` is empty or all zero; a zero
/// means "decode again without new bytes"), the way `FramedRead` does: decode
/// until it asks for more, read more, and at the end `decode_eof`. Checks
/// every call on the way. Chunks are at least `len / 4096` bytes, so a long
/// (padded) stream costs at most ~4096 rounds; up to 4 KiB can go byte by byte.
pub fn decode_in_chunks(
    stream: &[u8],
    max: usize,
    cuts: &[usize],
    initial_capacity: usize,
) -> Decoded {
    let mut codec = FrameCodec::new(max);
    let limit = codec.max_frame_size();
    let mut encoder = FrameCodec::new(max);
    let mut buf = BytesMut::with_capacity(initial_capacity);
    let mut fed = 0; // bytes of `stream` appended to `buf`
    let mut consumed = 0; // bytes of `stream` the decoder has taken out of `buf`
    let mut frames = Vec::new();
    let whole = [stream.len()];
    let cuts = if cuts.iter().all(|c| *c == 0) {
        &whole[..]
    } else {
        cuts
    };
    let mut cut = cuts.iter().cycle();
    let min_chunk = stream.len().div_ceil(4096).max(1);

    let end = 'stream: loop {
        let n = match *cut.next().expect("cycle of a non-empty slice") {
            0 => 0,
            c => c.max(min_chunk).min(stream.len() - fed),
        };
        buf.extend_from_slice(&stream[fed..fed + n]);
        fed += n;
        loop {
            let (len_before, cap_before) = (buf.len(), buf.capacity());
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => {
                    assert!(
                        frame.len() <= limit,
                        "a {}-byte frame passed a {limit}-byte limit",
                        frame.len()
                    );
                    assert_eq!(
                        buf.len(),
                        len_before - HEADER_LEN - frame.len(),
                        "decode took something other than one header and its frame"
                    );
                    let span = consumed + HEADER_LEN..consumed + HEADER_LEN + frame.len();
                    assert_eq!(
                        &frame[..],
                        &stream[span.clone()],
                        "frame bytes differ from the stream"
                    );
                    // Re-encoding gives back exactly the bytes consumed.
                    let mut again = BytesMut::new();
                    encoder
                        .encode(frame.freeze(), &mut again)
                        .expect("a decoded frame is within the limit, so it encodes");
                    assert_eq!(
                        &again[..],
                        &stream[consumed..span.end],
                        "re-encoded frame differs"
                    );
                    consumed = span.end;
                    frames.push(span);
                }
                Ok(None) => {
                    assert_eq!(
                        buf.len(),
                        len_before,
                        "decode consumed bytes but returned no frame"
                    );
                    check_growth(cap_before, &buf, consumed, fed);
                    break;
                }
                Err(TransportError::FrameTooLarge { size, max }) => {
                    break 'stream StreamEnd::TooLarge { size, max };
                }
                Err(e) => panic!("decode failed with an unexpected error: {e:?}"),
            }
        }
        if fed == stream.len() {
            assert_eq!(
                &buf[..],
                &stream[consumed..],
                "bytes left in the buffer differ from the stream"
            );
            let len_before = buf.len();
            break match codec.decode_eof(&mut buf) {
                Ok(None) => {
                    assert_eq!(
                        len_before, 0,
                        "decode_eof left {len_before} bytes unreported"
                    );
                    StreamEnd::Clean
                }
                Ok(Some(f)) => panic!(
                    "decode_eof found a {}-byte frame that decode had not",
                    f.len()
                ),
                Err(TransportError::Truncated { got, expected }) => {
                    StreamEnd::Truncated { got, expected }
                }
                Err(TransportError::FrameTooLarge { .. }) => {
                    panic!("decode_eof reported a too-large header that decode had not")
                }
                Err(e) => panic!("decode_eof failed with an unexpected error: {e:?}"),
            };
        }
    };
    Decoded { frames, end }
}

/// The decoder reserves room for the rest of a partial frame, but never
/// towards the announced size: when `decode` grows the buffer, the room
/// ahead of the bytes present is at most `RESERVE_AHEAD`, or, once the buffer
/// is already larger than that, at most what was allocated before
/// (`BytesMut` grows by doubling; growing in exact `RESERVE_AHEAD` steps
/// would copy a large frame quadratically often). So a peer that announces a
/// huge frame and trickles costs O(bytes sent), and a small trickle costs at
/// most `RESERVE_AHEAD`.
///
/// The allocation before the call is `cap_before` plus the consumed prefix
/// `BytesMut` may still hold, which is at most `consumed`.
fn check_growth(cap_before: usize, buf: &BytesMut, consumed: usize, fed: usize) {
    let cap = buf.capacity();
    if cap > cap_before {
        let ahead = cap - buf.len();
        let allowed = RESERVE_AHEAD.max(cap_before + consumed);
        assert!(
            ahead <= allowed,
            "decode grew the buffer from {cap_before} to {cap} bytes of capacity holding {} bytes \
             ({consumed} consumed, {fed} fed): {ahead} bytes ahead, more than {allowed}",
            buf.len()
        );
    }
}

/// Target `frame_decoder`: arbitrary bytes through `FrameCodec`, in arbitrary chunkings.
///
/// Input layout: `[max: u16][mode: u8]` then, if `mode & 0x80`, `[pad KiB: u8]`;
/// if `mode & 0x40`, `[initial capacity / 512: u8]`; then `[n: u8]` and
/// `n % 16` chunk sizes (one byte each, times a scale from `mode`), then the
/// stream. `mode & 3` picks the limit: `max % 64`, `max`, the 16 MiB default,
/// or `usize::MAX` (clamped to `u32::MAX`). Padding appends that many `0xa5`
/// bytes to the stream, so that small inputs can drive large buffers: inside
/// a frame they fill its payload; at a frame boundary they announce a
/// 2.8 GB frame (zeros would be thousands of empty frames, which only cost time).
pub fn frame_decoder(data: &[u8]) {
    let mut t = Take(data);
    let max_sel = t.u16();
    let mode = t.u8();
    let max = match mode & 3 {
        0 => usize::from(max_sel % 64),
        1 => usize::from(max_sel),
        2 => DEFAULT_MAX_FRAME_SIZE,
        _ => usize::MAX,
    };
    let scale = [1, 7, 256, 4096][usize::from((mode >> 2) & 3)];
    let pad = if mode & 0x80 != 0 {
        usize::from(t.u8()) * 1024
    } else {
        0
    };
    let initial_capacity = if mode & 0x40 != 0 {
        usize::from(t.u8()) * 512
    } else {
        0
    };
    let n_cuts = usize::from(t.u8() % 16);
    let cuts: Vec<usize> = (0..n_cuts).map(|_| usize::from(t.u8()) * scale).collect();
    let mut stream = t.rest().to_vec();
    stream.resize(stream.len() + pad, 0xa5);

    let limit = FrameCodec::new(max).max_frame_size();
    assert_eq!(
        limit,
        max.clamp(1, u32::MAX as usize),
        "the limit is not the clamped request"
    );

    let expected = reference_frames(&stream, limit);
    let at_once = decode_in_chunks(&stream, max, &[], initial_capacity);
    assert_eq!(
        at_once, expected,
        "decoding the whole stream at once disagrees with the spec"
    );
    let chunked = decode_in_chunks(&stream, max, &cuts, initial_capacity);
    assert_eq!(
        chunked, expected,
        "decoding in chunks {cuts:?} disagrees with the spec"
    );

    // The encoder refuses what the decoder would refuse.
    if limit < 4096 {
        let mut out = BytesMut::new();
        match FrameCodec::new(max).encode(Bytes::from(vec![0u8; limit + 1]), &mut out) {
            Err(TransportError::FrameTooLarge { size, max }) => {
                assert_eq!((size, max), (limit + 1, limit))
            }
            other => panic!(
                "encoding {} bytes past a {limit}-byte limit: {other:?}",
                limit + 1
            ),
        }
        assert!(out.is_empty(), "a refused frame left bytes behind");
    }
}

// ---------------------------------------------------------------------------
// Codecs

fn json() -> AnyCodec {
    AnyCodec::new(CodecKind::Json).expect("the fuzz crate enables the json feature")
}

fn bincode() -> AnyCodec {
    AnyCodec::new(CodecKind::Bincode).expect("the fuzz crate enables the bincode feature")
}

/// Target `json_packet`: arbitrary bytes through `Json::decode`.
pub fn json_packet(data: &[u8]) {
    let frame = Bytes::copy_from_slice(data);
    match metered_decode(&Json, &frame) {
        Ok(p) => {
            // The input was a JSON object whose first non-blank byte is `{`.
            let first = data.iter().find(|b| !b.is_ascii_whitespace());
            assert_eq!(
                first,
                Some(&b'{'),
                "decoded something that is not a JSON object"
            );
            packet_roundtrip(&p);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// Target `bincode_packet`: arbitrary bytes through `Bincode::decode`.
pub fn bincode_packet(data: &[u8]) {
    let frame = Bytes::copy_from_slice(data);
    match metered_decode(&Bincode, &frame) {
        Ok(p) => {
            check_zero_copy(&p, &frame);
            let canonical = Bincode.encode(&p).expect("a decoded packet encodes");
            check_canonical(&canonical, data);
            packet_roundtrip(&p);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// bincode's varints accept non-minimal forms (`[251, 5, 0]` is 5), so the
/// canonical encoding can differ from what was received, but only by being
/// shorter: every other element has a single encoding. Equal lengths mean
/// equal bytes.
fn check_canonical(canonical: &[u8], received: &[u8]) {
    if canonical != received {
        assert!(
            canonical.len() < received.len(),
            "re-encoding differs from the {}-byte input without being shorter ({} bytes):\n in:  {received:02x?}\n out: {canonical:02x?}",
            received.len(),
            canonical.len()
        );
    }
}

/// Decoded bincode payloads are slices of the frame, not copies.
fn check_zero_copy(p: &Packet, frame: &Bytes) {
    let inside = frame.as_ptr_range();
    for payload in [&p.variables, &p.result].into_iter().flatten() {
        if !payload.is_empty() {
            assert!(
                inside.contains(&payload.as_bytes().as_ptr()),
                "a bincode payload was copied out of its frame"
            );
        }
    }
}

/// Target `packet_roundtrip`, and the properties every decoded packet must have.
///
/// For each codec: the packet encodes; the frame decodes to the same packet
/// and re-encodes to the same bytes; it travels through `FrameCodec` intact
/// (and a limit one byte short refuses it); `encode_hello` → `detect` gives it
/// back (binary: HELLO only). Its legacy form is legacy and still round-trips.
pub fn packet_roundtrip(p: &Packet) {
    for codec in [json(), bincode()] {
        let kind = codec.kind();
        let frame = codec
            .encode(p)
            .unwrap_or_else(|e| panic!("{kind}: encoding {p:?} failed: {e}"));
        let back = metered_decode(&codec, &frame)
            .unwrap_or_else(|e| panic!("{kind}: our own frame does not decode: {e}\n{p:?}"));
        assert_eq!(&back, p, "{kind}: decode(encode(p)) != p");
        let again = codec.encode(&back).expect("a decoded packet encodes");
        assert_eq!(again, frame, "{kind}: the encoding is not a fixed point");
        if kind == CodecKind::Bincode {
            check_zero_copy(&back, &frame);
        } else {
            check_json_shape(p, &frame);
        }

        // Through the length-prefix framing.
        let mut framing = FrameCodec::new(frame.len());
        let mut wire = BytesMut::new();
        framing
            .encode(frame.clone(), &mut wire)
            .expect("a frame at the limit encodes");
        assert_eq!(
            &wire[..4],
            &(frame.len() as u32).to_be_bytes(),
            "{kind}: length prefix"
        );
        let got = framing
            .decode(&mut wire)
            .expect("decodes")
            .expect("a whole frame");
        assert_eq!(&got[..], &frame[..], "{kind}: framing changed the frame");
        assert!(wire.is_empty());
        if frame.len() >= 2 {
            let short = frame.len() - 1;
            assert!(
                matches!(
                    FrameCodec::new(short).encode(frame.clone(), &mut wire),
                    Err(TransportError::FrameTooLarge { size, max }) if size == frame.len() && max == short
                ),
                "{kind}: a frame one byte over the limit was not refused"
            );
        }

        // As a connection's first frame.
        let hello = encode_hello(&codec, p).expect("encodes");
        match (kind, detect(&hello)) {
            (CodecKind::Json, Ok(first)) => {
                assert_eq!(first.codec.kind(), CodecKind::Json);
                assert_eq!(&first.packet, p);
            }
            (CodecKind::Bincode, Ok(first)) => {
                assert_eq!(
                    p.packet_type,
                    PacketType::Hello,
                    "binary first frame accepted without HELLO"
                );
                assert_eq!(first.codec.kind(), CodecKind::Bincode);
                assert_eq!(&first.packet, p);
                assert!(first.is_native());
            }
            (CodecKind::Bincode, Err(CodecError::Invalid(why)))
                if p.packet_type != PacketType::Hello =>
            {
                assert!(why.contains("must open with HELLO"), "{why}")
            }
            (kind, res) => panic!("{kind}: detect(encode_hello(p)) = {res:?} for {p:?}"),
        }
    }

    // What a ReasonChip peer may see.
    match p.to_legacy() {
        Some(legacy) => {
            assert!(p.packet_type.is_legacy());
            assert!(
                !legacy.is_native(),
                "to_legacy left a native part: {legacy:?}"
            );
            assert_eq!(legacy.packet_type, p.packet_type);
            if !p.is_native() {
                assert_eq!(
                    &legacy, p,
                    "to_legacy changed a packet that was legacy already"
                );
            }
            let frame = Json.encode(&legacy).expect("encodes");
            assert_eq!(Json.decode(&frame).expect("decodes"), legacy);
            check_json_shape(&legacy, &frame);
        }
        None => assert!(
            !p.packet_type.is_legacy(),
            "to_legacy refused a legacy type"
        ),
    }
}

/// The JSON encoding is ReasonChip's shape: the ten keys in ReasonChip's
/// order, then native keys only when set. (Inside a JSON string every `"`
/// is escaped, so `,"key":` can only be a key.)
fn check_json_shape(p: &Packet, frame: &[u8]) {
    let text = std::str::from_utf8(frame).expect("JSON is UTF-8");
    let head = format!("{{\"packet_type\":\"{}\",", p.packet_type);
    assert!(
        text.starts_with(&head),
        "JSON does not start with {head}: {text}"
    );
    let mut at = head.len() - 1;
    for key in [
        "cookie",
        "capacity",
        "pipeline",
        "variables",
        "detach",
        "rc",
        "error",
        "stacktrace",
        "result",
    ] {
        let needle = format!(",\"{key}\":");
        let pos = text[at..]
            .find(&needle)
            .unwrap_or_else(|| panic!("key `{key}` missing or out of order: {text}"));
        at += pos + needle.len() - 1;
    }
    for (key, set) in [
        ("hello", p.hello.is_some()),
        ("pipelines", p.pipelines.is_some()),
        ("timeout_ms", p.timeout_ms.is_some()),
    ] {
        assert_eq!(
            text.contains(&format!(",\"{key}\":")),
            set,
            "native key `{key}` present iff set: {text}"
        );
    }
    assert!(text.ends_with('}'));
}

// ---------------------------------------------------------------------------
// first_frame

/// Target `first_frame`: arbitrary bytes as a connection's first frame.
pub fn first_frame(data: &[u8]) {
    let frame = Bytes::copy_from_slice(data);
    let binary_header = data.len() >= 6 && data[..4] == BINARY_MAGIC;
    match detect(&frame) {
        Ok(first) => {
            assert_eq!(
                first.is_native(),
                first.packet.packet_type == PacketType::Hello
            );
            match first.codec.kind() {
                CodecKind::Json => {
                    assert_eq!(data.iter().find(|b| !b.is_ascii_whitespace()), Some(&b'{'));
                    assert_eq!(
                        Json.decode(&frame).expect("detect accepted it"),
                        first.packet
                    );
                }
                CodecKind::Bincode => {
                    assert!(
                        binary_header && data[4] == 1 && u32::from(data[5]) == PROTOCOL_VERSION
                    );
                    assert_eq!(first.packet.packet_type, PacketType::Hello);
                    assert_eq!(
                        Bincode
                            .decode(&frame.slice(6..))
                            .expect("detect accepted it"),
                        first.packet
                    );
                }
                other => panic!("detect picked {other}, which this build cannot encode"),
            }
            let again = encode_hello(&first.codec, &first.packet).expect("encodes");
            assert_eq!(
                detect(&again).expect("our own first frame is detected"),
                first
            );
            if first.codec.kind() == CodecKind::Bincode {
                check_canonical(&again, data);
            }
            packet_roundtrip(&first.packet);
        }
        Err(e) => {
            let msg = e.to_string();
            // A frame that is a valid JSON packet is never refused...
            if let Ok(p) = Json.decode(&frame) {
                panic!("detect refused a valid JSON packet ({msg}): {p:?}");
            }
            // ...nor a well-formed binary HELLO.
            if binary_header && data[4] == 1 && u32::from(data[5]) == PROTOCOL_VERSION {
                if let Ok(p) = Bincode.decode(&frame.slice(6..)) {
                    assert_ne!(
                        p.packet_type,
                        PacketType::Hello,
                        "detect refused a binary HELLO: {msg}"
                    );
                }
            }
            if let CodecError::UnrecognisedFirstFrame { prefix } = &e {
                assert!(!prefix.is_empty());
                assert!(!binary_header, "a binary header was called unrecognised");
            }
        }
    }
}

// ---------------------------------------------------------------------------
// endpoint

/// Target `endpoint`: arbitrary text through `Endpoint::parse`.
pub fn endpoint(data: &[u8]) {
    let url = String::from_utf8_lossy(data);
    let ep = match Endpoint::parse(&url) {
        Ok(ep) => ep,
        Err(TransportError::InvalidEndpoint {
            url: quoted,
            reason,
        }) => {
            assert_eq!(quoted, url, "the error quotes another URL");
            assert!(!reason.is_empty());
            return;
        }
        Err(e) => panic!("parse failed with an unexpected error: {e:?}"),
    };

    // The URL is kept as written, and re-parses to the same endpoint.
    assert_eq!(ep.url(), url);
    assert_eq!(ep.to_string(), url);
    assert_eq!(Endpoint::parse(ep.url()).expect("re-parses"), ep);
    assert_eq!(url.parse::<Endpoint>().expect("FromStr agrees"), ep);
    check_endpoint_fields(&ep);

    // Rebuilding the URL from its parts gives one that parses back to the
    // same endpoint, and rebuilding again changes nothing.
    let rebuilt = ep.with_address(ep.address().clone());
    assert_same_endpoint(&rebuilt, &ep);
    let reparsed = Endpoint::parse(rebuilt.url()).unwrap_or_else(|e| {
        panic!(
            "with_address built `{}` from `{url}`, which does not parse: {e}",
            rebuilt.url()
        )
    });
    assert_eq!(
        reparsed,
        rebuilt,
        "`{}` (rebuilt from `{url}`) parses to something else",
        rebuilt.url()
    );
    assert_eq!(
        rebuilt.with_address(rebuilt.address().clone()).url(),
        rebuilt.url()
    );

    // A listener reporting the port it really bound.
    if let Address::Host { host, port, path } = ep.address() {
        let bound = ep.with_address(Address::Host {
            host: host.clone(),
            port: port.wrapping_add(1),
            path: path.clone(),
        });
        let reparsed = Endpoint::parse(bound.url()).unwrap_or_else(|e| {
            panic!("`{}` (bound from `{url}`) does not parse: {e}", bound.url())
        });
        assert_eq!(reparsed, bound);
    }
}

fn assert_same_endpoint(a: &Endpoint, b: &Endpoint) {
    assert_eq!(a.scheme(), b.scheme());
    assert_eq!(a.address(), b.address());
    assert_eq!(a.max_frame_size(), b.max_frame_size());
    assert_eq!(a.unix_mode(), b.unix_mode());
}

/// The parts agree with each other. Written against address kinds, not a
/// list of schemes: `Endpoint::parse` knows no scheme (the registry checks
/// each scheme's address and options afterwards).
fn check_endpoint_fields(ep: &Endpoint) {
    assert!((1..=u32::MAX as usize).contains(&ep.max_frame_size()));
    assert_eq!(
        FrameCodec::new(ep.max_frame_size()).max_frame_size(),
        ep.max_frame_size()
    );
    assert!(!ep.scheme().is_empty());
    assert_eq!(ep.scheme(), ep.scheme().to_ascii_lowercase());
    if let Some(mode) = ep.unix_mode() {
        assert!(mode <= 0o777);
    }
    match ep.address() {
        Address::Path(p) => assert!(p.is_absolute(), "{p:?}"),
        Address::Name(_) => {}
        Address::Host { host, path, .. } => {
            assert!(!host.is_empty());
            assert!(path.starts_with('/'));
            assert!(!host.contains(':') || host.parse::<std::net::Ipv6Addr>().is_ok());
        }
        other => panic!("{:?} endpoint with address {other:?}", ep.scheme()),
    }
}

// ---------------------------------------------------------------------------
// packet_stream

/// One packet body: decode → encode → decode (see the module docs).
fn packet_body_round_trip(body: &Bytes) -> Option<plexwire::peer::Packet> {
    use plexwire::peer::Packet as PsPacket;
    let packet = PsPacket::decode(body).ok()?;
    let again = packet.encode();
    assert_eq!(again.len(), packet.encoded_len());
    assert!(
        again.len() <= body.len(),
        "re-encoding grew: {} > {} bytes",
        again.len(),
        body.len()
    );
    if again.len() == body.len() {
        assert_eq!(&again, body, "a minimal encoding re-encodes to itself");
    }
    assert_eq!(PsPacket::decode(&again).as_ref(), Ok(&packet));
    Some(packet)
}

/// The packet-stream target (see the module docs).
pub fn packet_stream(data: &[u8]) {
    use plexwire::peer::{CoreConfig, Event, PacketCore, Reply};
    use plexwire_transport::{put_bsuint, BsuintCodec};

    packet_body_round_trip(&Bytes::copy_from_slice(data));

    // The same bytes as a stream of BSUInt-framed packets.
    const MAX: usize = 4096;
    let mut codec = BsuintCodec::new(MAX);
    let mut buf = BytesMut::from(data);
    let mut frames = Vec::new();
    while let Ok(Some(frame)) = codec.decode(&mut buf) {
        assert!(frame.len() <= MAX);
        frames.push(frame.freeze());
    }
    let mut core = PacketCore::new(CoreConfig {
        max_packet_size: MAX,
        max_serving: 8,
        serves_requests: true,
    });
    let mut reframed = BytesMut::new();
    let mut decoded = Vec::new();
    let mut asked = 0usize;
    let mut answered = 0usize;
    for frame in &frames {
        let Some(packet) = packet_body_round_trip(frame) else {
            assert!(core.handle_frame(frame).is_err());
            break;
        };
        put_bsuint(&mut reframed, packet.encoded_len() as u64);
        packet.encode_into(&mut reframed);
        decoded.push(packet);
        core.handle_frame(frame).expect("decoded above");
        while let Some(event) = core.poll_event() {
            if let Event::Request(rq) = event {
                asked += 1;
                core.handle_reply(rq.id, Ok(Reply::Bytes(rq.payload)));
            }
        }
        while let Some(out) = core.poll_transmit() {
            let enc = out.encode();
            assert_eq!(plexwire::peer::Packet::decode(&enc).as_ref(), Ok(&out));
            if matches!(
                out.kind,
                plexwire::peer::packet::Kind::Response { ok: true, .. }
            ) {
                answered += 1;
            }
        }
        assert_eq!(core.serving(), 0, "every request was answered");
    }
    if !core.eof_sent() {
        assert_eq!(asked, answered, "one ok answer per request handed out");
    }
    // The re-framed stream decodes to the same packets.
    let mut codec = BsuintCodec::new(MAX);
    let mut again = Vec::new();
    while let Ok(Some(frame)) = codec.decode(&mut reframed) {
        again.push(plexwire::peer::Packet::decode(&frame.freeze()).expect("re-encoded packet"));
    }
    assert_eq!(again, decoded);
}
