//! The fuzz targets' checks under plain `cargo test`.
//!
//! `fuzz/src/checks.rs` holds every property the cargo-fuzz targets assert;
//! it is included here unchanged, so this file replays the committed seed
//! corpus (`fuzz/corpus/<target>/`) through exactly what the fuzzer checks,
//! without nightly or cargo-fuzz. Inputs that once failed a target are
//! inlined below as regression tests.
//!
//! The seed corpus is generated from `tests/data/reasonchip_frames.json` and
//! hand-picked packets and URLs by [`seeds`]; `seed_corpus_is_current` fails
//! if the committed files drift from it. To rewrite them:
//! `cargo test --test fuzz_regressions -- --ignored regenerate_seed_corpus`.

#[path = "../fuzz/src/checks.rs"]
mod checks;

use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use plexwire::codec::{encode_hello, Bincode, Codec, Json};
use plexwire::protocol::{Hello, Packet, PacketType, Payload, ResultCode, Role};
use plexwire_transport::{FrameCodec, RESERVE_AHEAD};
use tokio_util::codec::Decoder;
use uuid::Uuid;

const TARGETS: [&str; 7] = [
    "frame_decoder",
    "json_packet",
    "bincode_packet",
    "first_frame",
    "endpoint",
    "packet_roundtrip",
    "packet_stream",
];

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

/// Whether a corpus file is a committed seed (`seed-*`): a bare
/// `cargo fuzz run TARGET` adds its finds to the same directory, named by
/// hash (ignored by git), and those must not change what this suite checks.
fn is_seed(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("seed-"))
}

/// The committed seed files of `target`'s corpus, sorted by name.
fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.is_file() && is_seed(p))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

/// Runs `check` on every corpus file of `target`, naming the file that fails.
fn replay(target: &str, check: fn(&[u8])) {
    let files = corpus(target);
    assert!(!files.is_empty(), "no seed corpus for {target}");
    for (path, bytes) in files {
        if let Err(panic) = std::panic::catch_unwind(|| check(&bytes)) {
            let msg = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            panic!("{target}: {} fails: {msg}", path.display());
        }
    }
}

#[test]
fn seed_corpus_frame_decoder() {
    replay("frame_decoder", checks::frame_decoder);
}

#[test]
fn seed_corpus_json_packet() {
    replay("json_packet", checks::json_packet);
}

#[test]
fn seed_corpus_bincode_packet() {
    replay("bincode_packet", checks::bincode_packet);
}

#[test]
fn seed_corpus_first_frame() {
    replay("first_frame", checks::first_frame);
}

#[test]
fn seed_corpus_endpoint() {
    replay("endpoint", checks::endpoint);
}

#[test]
fn seed_corpus_packet_stream() {
    replay("packet_stream", checks::packet_stream);
}

/// The captured cs.packetstream packets of `shared/wire/cs-packetstream.md`,
/// length prefix included.
fn packetstream_captures() -> Vec<(&'static str, Vec<u8>)> {
    let hex = |s: &str| -> Vec<u8> {
        s.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    };
    vec![
        ("request-ch0", hex("18 02 02 02 68 65 6c 6c 6f 20 30 20 6f 6e 20 63 68 61 6e 6e 65 6c 20 30 20")),
        ("request-ch1", hex("1b 00 07 01 03 68 65 6c 6c 6f 20 31 20 6f 6e 20 63 68 61 6e 6e 65 6c 20 31 20 61 62")),
        ("response-ok-flags", hex("1b 03 14 68 65 6c 6c 6f 20 32 20 6f 6e 20 63 68 61 6e 6e 65 6c 20 30 20 61 62 61 62")),
        ("response-ch1", hex("1a 00 05 01 48 45 4c 4c 4f 20 31 20 4f 4e 20 43 48 41 4e 4e 45 4c 20 31 20 41 42")),
        ("response-not-ok", hex("1a 0c 00 65 78 63 65 70 74 69 6f 6e 20 64 75 72 69 6e 67 20 68 61 6e 64 6c 65 72")),
        ("response-empty", hex("03 0a 05 01")),
        ("unknown-channel", hex("15 00 01 01 75 6e 6b 6e 6f 77 6e 20 63 68 61 6e 6e 65 6c 20 25 64")),
        ("erq", hex("03 01 02 00")),
        ("eof", hex("03 00 02 00")),
    ]
}

#[test]
fn packet_stream_hostile_forms() {
    // A BSUInt over u64 in the tag; a truncated flagword; a length over the limit.
    checks::packet_stream(&[
        10, 0x82, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00,
    ]);
    checks::packet_stream(&[0x02, 0x02, 0x83]);
    checks::packet_stream(&[0xc0, 0x80, 0x80, 0x80, 0x00, 0x02, 0x02]);
    // A repeated tag, answered each time (the core answers as it goes).
    checks::packet_stream(&[4, 2, 2, 2, b'x', 4, 2, 2, 2, b'y']);
}

/// `packet_roundtrip`'s own corpus is `arbitrary`'s encoding of packets,
/// which only the fuzz crate can read; its checks run here on every packet
/// the other corpora decode to, and on hand-picked extremes.
#[test]
fn packet_roundtrip_on_corpus_packets_and_extremes() {
    let mut packets = Vec::new();
    for (_, bytes) in corpus("json_packet") {
        packets.extend(Json.decode(&Bytes::from(bytes)).ok());
    }
    for (_, bytes) in corpus("bincode_packet") {
        packets.extend(Bincode.decode(&Bytes::from(bytes)).ok());
    }
    for (_, bytes) in corpus("first_frame") {
        packets.extend(
            plexwire::codec::detect(&Bytes::from(bytes))
                .ok()
                .map(|f| f.packet),
        );
    }
    assert!(
        packets.len() >= 30,
        "only {} corpus packets decode",
        packets.len()
    );
    packets.extend(extreme_packets());
    for p in &packets {
        checks::packet_roundtrip(p);
    }
}

fn extreme_packets() -> Vec<Packet> {
    let odd = "\u{0}\"\\/\u{1f}\u{7f}\u{80}\u{2028}\u{fffd}\u{10ffff} é ✓ 🙂".to_owned();
    let mut out = vec![Packet {
        packet_type: PacketType::Run,
        cookie: Some(Uuid::from_u128(u128::MAX)),
        capacity: Some(i64::MIN),
        pipeline: Some(odd.clone()),
        variables: Some(Payload::from_json_text(odd.clone())),
        detach: Some(false),
        rc: Some(ResultCode::TooLarge),
        error: Some(String::new()),
        stacktrace: Some(vec![String::new(), odd.clone()]),
        result: Some(Payload::from_json_text("")),
        hello: Some(Hello {
            version: u32::MAX,
            role: Role::Broker,
            codec: odd.clone(),
            token: Some(String::new()),
        }),
        pipelines: Some(vec![]),
        timeout_ms: Some(u64::MAX),
        credit: Some(u32::MAX),
        worker: Some(odd.clone()),
        labels: Some(vec![String::new(), odd.clone()]),
        priority: Some(u8::MAX),
    }];
    for t in PacketType::ALL {
        for rc in ResultCode::ALL {
            out.push(Packet {
                rc: Some(rc),
                capacity: Some(i64::MAX),
                cookie: Some(Uuid::nil()),
                ..Packet::new(t)
            });
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Regressions: inputs the fuzzer once failed on, with the behaviour now expected.

/// `frame_decoder` crash-25e2d4f8: `00 00 03 01 01 | ff ff ff ff 00 01 02` (no
/// limit; the stream byte by byte): a header announcing u32::MAX bytes, then
/// the frame trickling in. `decode` reserved RESERVE_AHEAD past the current
/// length on every call, so each byte that arrived moved the target and
/// `BytesMut` doubled the buffer: 128 KiB held after 5 bytes, about
/// 2 × (bytes sent + 64 KiB) after that. It now tops up only a full buffer.
#[test]
fn frame_decoder_trickled_huge_frame_holds_at_most_reserve_ahead() {
    checks::frame_decoder(&[0, 0, 3, 1, 1, 0xff, 0xff, 0xff, 0xff, 0, 1, 2]);

    // As FramedRead drives it: an 8 KiB buffer, decode after every read.
    let initial = 8 * 1024;
    let mut codec = FrameCodec::new(u32::MAX as usize);
    let mut buf = BytesMut::with_capacity(initial);
    buf.extend_from_slice(&[0xff; 4]);
    for i in 0..20_000u32 {
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(
            buf.capacity() <= initial + RESERVE_AHEAD,
            "{} bytes of capacity for {} bytes received",
            buf.capacity(),
            buf.len()
        );
        buf.extend_from_slice(&[i as u8]);
    }
}

/// `endpoint` crash-462105a8: `tls+unix:///h:0660`. Not a parser bug: the
/// check itself assumed only `unix://` endpoints have a socket path, and
/// `tls+unix://` (TLS over a UNIX socket) arrived while the fuzzer ran. The
/// check now reasons from address kinds, so a new scheme needs no change.
#[test]
fn endpoint_check_accepts_socket_paths_of_any_unix_scheme() {
    checks::endpoint(b"tls+unix:///h:0660");
    checks::endpoint(b"tls+unix:///h:0660?mode=660");
}

/// `bincode_packet` crash-9125ce75: 19 bytes whose stack trace claims
/// 0xe4000afb lines. bincode hands serde the count as a size hint and serde's
/// `Vec` preallocated up to 1 MiB for it before finding the frame short.
/// Lists now grow as their elements arrive.
#[test]
fn bincode_list_counts_on_the_wire_are_not_preallocated() {
    let frame = [
        0, 0, 0, 0, 0, 0, 0, 0, 1, 0xfc, 0xfb, 0x0a, 0x00, 0xe4, 0, 0, 1, 0xff, 0,
    ];
    checks::bincode_packet(&frame);

    // The same lie in `pipelines`, the other list: a REGISTER claiming u32::MAX names.
    let honest = Bincode
        .encode(&Packet::register(1, Some(vec![])))
        .unwrap()
        .to_vec();
    assert_eq!(
        &honest[honest.len() - 7..],
        &[1, 0, 0, 0, 0, 0, 0],
        "layout moved: Some, no names, then no timeout, credit, worker, labels, priority"
    );
    let mut lying = honest[..honest.len() - 6].to_vec();
    lying.extend_from_slice(&[0xfc, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0]);
    for frame in [&frame[..], &lying[..]] {
        let frame = Bytes::copy_from_slice(frame);
        let (res, peak) = checks::alloc_meter::peak(|| Bincode.decode(&frame));
        assert!(res.is_err());
        assert!(
            peak < 16 * 1024,
            "{peak} bytes allocated to refuse a {}-byte frame",
            frame.len()
        );
    }

    // Honest long lists still decode.
    let many: Vec<String> = (0..5000).map(|i| format!("p{i}")).collect();
    let p = Packet::register(1, Some(many));
    assert_eq!(Bincode.decode(&Bincode.encode(&p).unwrap()).unwrap(), p);
}

// ---------------------------------------------------------------------------
// The seed corpus

/// The captured ReasonChip frames, with their 4-byte length prefix.
fn captured_frames() -> Vec<(String, Vec<u8>)> {
    let text = include_str!("data/reasonchip_frames.json");
    let v: serde_json::Value = serde_json::from_str(text).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|o| {
            let hex = o["hex"].as_str().unwrap();
            let frame = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
            (o["title"].as_str().unwrap().to_owned(), frame)
        })
        .collect()
}

/// A file-name-safe version of a frame's title.
fn slug(title: &str) -> String {
    let mut s: String = title
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    while s.contains("--") {
        s = s.replace("--", "-");
    }
    s.trim_matches('-').chars().take(48).collect()
}

fn native_packets() -> Vec<(&'static str, Packet)> {
    let cookie = Uuid::parse_str("39ad3b81-9f49-44c3-9221-a579156c85cb").unwrap();
    vec![
        (
            "hello-worker-token",
            Packet::hello(Role::Worker, "bincode", Some("s3cret".into())),
        ),
        ("hello-client", Packet::hello(Role::Client, "json", None)),
        (
            "register-pipelines",
            Packet::register(4, Some(vec!["add".into(), "echo".into()])),
        ),
        ("credit", Packet::credit(cookie, 512)),
        (
            "run-timeout",
            Packet {
                timeout_ms: Some(1500),
                ..Packet::run(
                    cookie,
                    "add",
                    Some(Payload::from_json_text(r#"{"a": 2, "b": 40}"#)),
                    false,
                )
            },
        ),
        (
            "event",
            Packet::event(cookie, Payload::from_json_text(r#"{"progress":0.5}"#)),
        ),
        (
            "result-timeout",
            Packet::error(Some(cookie), ResultCode::Timeout, "deadline passed"),
        ),
        ("ping", Packet::new(PacketType::Ping)),
        ("pong", Packet::new(PacketType::Pong)),
    ]
}

/// Every committed seed: (target, file name, contents).
fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out: Vec<(&'static str, String, Vec<u8>)> = Vec::new();
    let frames = captured_frames();

    // frame_decoder: [max u16][mode][pad?][cap?][n][cuts…] + stream (see checks::frame_decoder).
    let stream: Vec<u8> = frames.iter().flat_map(|(_, f)| f.clone()).collect();
    let first = &frames[0].1;
    let with = |cfg: &[u8], body: &[u8]| [cfg, body].concat();
    let mut fd =
        |name: &str, bytes: Vec<u8>| out.push(("frame_decoder", format!("seed-{name}"), bytes));
    fd("rc-stream-at-once", with(&[0, 0, 0x02, 0], &stream));
    fd("rc-stream-byte-by-byte", with(&[0, 0, 0x02, 1, 1], &stream));
    fd(
        "rc-stream-cuts-3-7-250",
        with(&[0, 0, 0x02, 3, 3, 7, 250], &stream),
    );
    fd(
        "rc-stream-cuts-x7-with-zero",
        with(&[0, 0, 0x06, 3, 0, 1, 2], &stream),
    );
    fd("rc-stream-max-10", with(&[0, 10, 0x00, 0], &stream));
    let first_len = first.len() as u16 - 4;
    fd(
        "rc-stream-max-first-frame",
        with(
            &[(first_len >> 8) as u8, first_len as u8, 0x01, 1, 5],
            &stream,
        ),
    );
    fd(
        "rc-truncated",
        with(&[0, 0, 0x02, 1, 9], &first[..first.len() - 10]),
    );
    fd(
        "header-u32-max",
        with(&[0, 0, 0x03, 1, 1], &[0xff, 0xff, 0xff, 0xff, 0, 1, 2]),
    );
    // Announces 256 KiB, then 200 KiB of padding arrives in 4 KiB and 64 KiB reads.
    fd(
        "large-frame-trickle",
        with(&[0, 0, 0x8e, 200, 2, 1, 16], &[0, 4, 0, 0]),
    );
    fd(
        "empty-frames-big-buffer",
        with(
            &[0, 0, 0x42, 255, 0],
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, b'x'],
        ),
    );
    fd("empty-stream", vec![0, 0, 0x02, 0]);
    fd(
        "max-0-clamps-to-1",
        with(
            &[0, 0, 0x00, 0],
            &[0, 0, 0, 1, b'a', 0, 0, 0, 2, b'b', b'c'],
        ),
    );
    fd("short-header", with(&[0, 0, 0x02, 0], &[0, 0, 1]));

    // json_packet: the captured payloads (deduplicated), native packets, lax and broken input.
    let mut seen = std::collections::HashSet::new();
    for (title, f) in &frames {
        if seen.insert(f[4..].to_vec()) {
            out.push((
                "json_packet",
                format!("seed-rc-{}", slug(title)),
                f[4..].to_vec(),
            ));
        }
    }
    for (name, p) in native_packets() {
        out.push((
            "json_packet",
            format!("seed-native-{name}"),
            Json.encode(&p).unwrap().to_vec(),
        ));
    }
    for (name, text) in [
        ("lax-cookie-braces", r#"{"packet_type":"RUN","cookie":"{39AD3B819F4944C39221A579156C85CB}","pipeline":"add","variables":"{\"a\": 1}","future_key":[1,2]}"#),
        ("lax-strings", r#" {"packet_type":"REGISTER","capacity":"3","detach":"yes","cookie":"urn:uuid:39ad3b81-9f49-44c3-9221-a579156c85cb"}"#),
        ("lax-float-escapes", "{\"packet_type\":\"RU\\u004e\",\"capacity\":2.0,\"detach\":1,\"pipeline\":\"\\ud83d\\ude42\",\"x\":{\"y\":[null,true,-1e3]}}"),
        ("bad-packet-type", r#"{"packet_type":"run"}"#),
        ("bad-cookie", r#"{"packet_type":"RUN","cookie":"nope"}"#),
        ("bad-rc", r#"{"packet_type":"RESULT","rc":"WHAT"}"#),
        ("bad-array", "[1,2]"),
        ("bad-duplicate-key", r#"{"packet_type":"PING","packet_type":"PONG"}"#),
    ] {
        out.push(("json_packet", format!("seed-{name}"), text.as_bytes().to_vec()));
    }

    // bincode_packet: the captured packets and native ones in bincode, and two malformed frames.
    let mut packets: Vec<(String, Packet)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (title, f) in &frames {
        if seen.insert(f[4..].to_vec()) {
            packets.push((
                format!("rc-{}", slug(title)),
                Json.decode(&Bytes::copy_from_slice(&f[4..])).unwrap(),
            ));
        }
    }
    packets.extend(
        native_packets()
            .into_iter()
            .map(|(n, p)| (format!("native-{n}"), p)),
    );
    for (name, p) in &packets {
        out.push((
            "bincode_packet",
            format!("seed-{name}"),
            Bincode.encode(p).unwrap().to_vec(),
        ));
    }
    let register = Bincode.encode(&Packet::register(5, None)).unwrap().to_vec();
    assert_eq!(
        &register[..4],
        &[0, 0, 1, 10],
        "REGISTER's layout moved; fix the non-canonical seed"
    );
    let mut non_minimal = register[..3].to_vec();
    non_minimal.extend_from_slice(&[251, 10, 0]); // capacity 5 (zigzag 10) as a u16 varint
    non_minimal.extend_from_slice(&register[4..]);
    out.push((
        "bincode_packet",
        "seed-non-minimal-varint".into(),
        non_minimal,
    ));
    let mut trailing = register.clone();
    trailing.push(0);
    out.push(("bincode_packet", "seed-trailing-byte".into(), trailing));

    // first_frame: legacy JSON first frames, HELLOs of both kinds, and refusals.
    for i in [0, 1, 3] {
        out.push((
            "first_frame",
            format!("seed-rc-{}", slug(&frames[i].0)),
            frames[i].1[4..].to_vec(),
        ));
    }
    let bin_hello = encode_hello(&Bincode, &native_packets()[0].1)
        .unwrap()
        .to_vec();
    out.push(("first_frame", "seed-binary-hello".into(), bin_hello.clone()));
    out.push((
        "first_frame",
        "seed-json-hello".into(),
        encode_hello(&Json, &native_packets()[1].1)
            .unwrap()
            .to_vec(),
    ));
    let mut v = bin_hello.clone();
    v[5] = 9;
    out.push(("first_frame", "seed-binary-wrong-version".into(), v));
    let mut v = bin_hello.clone();
    v[4] = 7;
    out.push(("first_frame", "seed-binary-unknown-codec".into(), v));
    let mut v = b"\0PXW\x01\x01".to_vec();
    v.extend_from_slice(&Bincode.encode(&Packet::register(1, None)).unwrap());
    out.push(("first_frame", "seed-binary-not-hello".into(), v));
    out.push((
        "first_frame",
        "seed-http-get".into(),
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
    ));
    out.push((
        "first_frame",
        "seed-whitespace-json".into(),
        b"\r\n\t {\"packet_type\":\"PING\"}".to_vec(),
    ));
    out.push(("first_frame", "seed-empty".into(), Vec::new()));

    // endpoint: every form, and the mistakes people make.
    for (i, url) in [
        "tcp://127.0.0.1:51500",
        "tcp://[::1]:1",
        "unix:///tmp/x.sock?mode=660",
        "socket:///tmp/rc.sock",
        "mem://a",
        "tcp://h:1?max_frame_size=10",
        "tcp://localhost:0?max_frame_size=4294967295&",
        "http://example.com",
        "ws://h:9/ws",
        "https://[::ffff:1.2.3.4]/p",
        "quic://localhost:4433",
        "tcp//127.0.0.1:1",
        "ftp://x:1",
        "tcp://127.0.0.1",
        "tcp://127.0.0.1:99999",
        "tcp://::1:5",
        "tcp://[::1:5",
        "tcp://[nope]:5",
        "tcp://:5",
        "unix://relative.sock",
        "unix:///",
        "mem://",
        "mem://a/b",
        "tcp://a b:1",
        "tcp://u@h:1",
        "tcp://h:1#frag",
        "unix:///x?mode=999",
        "tcp://h:1?mode=660",
        "tcp://h:1?max_frame_size=0",
        "tcp://h:1?max_frame_size",
        "tls+unix:///run/p.sock?mode=600&ca=%2Fetc%2Fca%20dir%2Fca.pem",
        "tls://h:443?tls=1.2,1.3&client_auth=required&insecure=false",
        "tls://h:1?ca=%zz",
        "tls://h:1?ca=%c3%28",
    ]
    .iter()
    .enumerate()
    {
        out.push(("endpoint", format!("seed-{i:02}"), url.as_bytes().to_vec()));
    }

    // packet_stream: the captures as one stream, each alone, one bare body,
    // and hostile forms.
    let caps = packetstream_captures();
    let stream: Vec<u8> = caps.iter().flat_map(|(_, b)| b.clone()).collect();
    out.push(("packet_stream", "seed-captured-stream".into(), stream));
    for (name, bytes) in &caps {
        out.push(("packet_stream", format!("seed-{name}"), bytes.clone()));
    }
    out.push((
        "packet_stream",
        "seed-bare-body".into(),
        caps[1].1[1..].to_vec(),
    ));
    out.push((
        "packet_stream",
        "seed-bsuint-over-u64".into(),
        vec![
            10, 0x82, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00,
        ],
    ));
    out.push((
        "packet_stream",
        "seed-truncated".into(),
        vec![0x02, 0x02, 0x83],
    ));
    out.push((
        "packet_stream",
        "seed-oversized".into(),
        vec![0xc0, 0x80, 0x80, 0x80, 0x00],
    ));
    out
}

/// Every generated seed is committed, byte for byte. (The corpus may hold
/// more: inputs the fuzzer found and that were kept.)
#[test]
fn seed_corpus_is_current() {
    for (target, name, bytes) in seeds() {
        let path = corpus_dir(target).join(&name);
        let on_disk = std::fs::read(&path).unwrap_or_else(|e| {
            panic!("{}: {e} (regenerate: cargo test --test fuzz_regressions -- --ignored regenerate_seed_corpus)", path.display())
        });
        assert!(on_disk == bytes, "{} is stale (regenerate: cargo test --test fuzz_regressions -- --ignored regenerate_seed_corpus)", path.display());
    }
    for target in TARGETS {
        let files = corpus(target);
        let size: usize = files.iter().map(|(_, b)| b.len()).sum();
        assert!(
            files.len() < 100 && size < 256 * 1024,
            "{target}: corpus too big ({} files, {size} bytes)",
            files.len()
        );
    }
}

/// Writes [`seeds`] into `fuzz/corpus/`.
#[test]
#[ignore = "writes fuzz/corpus/; run by hand when seeds() changes"]
fn regenerate_seed_corpus() {
    for (target, name, bytes) in seeds() {
        let dir = corpus_dir(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

/// `endpoint` crash-20f6ab3c: `file://e//e://fff…` (an unknown scheme whose
/// path holds `//` and another `scheme://`). Rebuilding the URL from its
/// parts must give one that parses back to the same endpoint.
#[test]
fn endpoint_with_slashes_and_a_scheme_in_the_path_round_trips() {
    let mut url = b"file://e//e://".to_vec();
    url.extend(std::iter::repeat_n(b'f', 110));
    checks::endpoint(&url);
}

/// `endpoint` crash-a3b41cd6: `le:///%2E%2E%2ftp:%2E/…` — a path of
/// percent-encoded dots and slashes.
#[test]
fn endpoint_with_encoded_dots_in_the_path_round_trips() {
    let mut url = b"le:///%2E%2E%2ftp:%2E/%2E%2ftp:AAA[[[[".to_vec();
    url.push(0xff);
    checks::endpoint(&url);
}
