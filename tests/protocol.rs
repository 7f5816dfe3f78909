//! The packet protocol against ReasonChip's real frames, and codec properties.

use bytes::{Bytes, BytesMut};
use plexwire::codec::{detect, encode_hello, AnyCodec, Bincode, Codec, CodecKind, Json};
use plexwire::protocol::{Hello, Packet, PacketType, Payload, ResultCode, Role, PROTOCOL_VERSION};
use plexwire_transport::FrameCodec;
use proptest::prelude::*;
use tokio_util::codec::{Decoder, Encoder};
use uuid::Uuid;

struct Captured {
    title: String,
    frame: Vec<u8>,
}

fn captured() -> Vec<Captured> {
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
            Captured {
                title: o["title"].as_str().unwrap().to_owned(),
                frame,
            }
        })
        .collect()
}

#[test]
fn every_captured_reasonchip_frame_decodes_and_re_encodes_byte_for_byte() {
    let all = captured();
    assert_eq!(all.len(), 22);
    // All 22 frames in one buffer, as if they had arrived in one read.
    let mut wire = BytesMut::new();
    for c in &all {
        wire.extend_from_slice(&c.frame);
    }
    let mut framing = FrameCodec::new(16 * 1024 * 1024);
    for c in &all {
        let payload = framing
            .decode(&mut wire)
            .unwrap()
            .expect("a whole frame")
            .freeze();
        let packet = Json
            .decode(&payload)
            .unwrap_or_else(|e| panic!("{}: {e}", c.title));
        assert!(!packet.is_native(), "{}", c.title);
        let again = Json.encode(&packet).unwrap();
        let mut reframed = BytesMut::new();
        framing.encode(again, &mut reframed).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&reframed),
            String::from_utf8_lossy(&c.frame),
            "{}: plexwire's encoding differs from ReasonChip's",
            c.title
        );
        // And the same packet survives the binary codec.
        assert_eq!(
            Bincode.decode(&Bincode.encode(&packet).unwrap()).unwrap(),
            packet,
            "{}",
            c.title
        );
    }
    assert!(wire.is_empty());
}

#[test]
fn captured_fields_mean_what_reasonchip_means() {
    let all = captured();
    let decode = |title: &str| {
        let c = all.iter().find(|c| c.title.starts_with(title)).unwrap();
        Json.decode(&Bytes::copy_from_slice(&c.frame[4..])).unwrap()
    };
    let reg = decode("REGISTER");
    assert_eq!(
        (reg.packet_type, reg.capacity, reg.cookie),
        (PacketType::Register, Some(16), None)
    );
    let run = decode("RUN (client -> broker), pipeline add");
    assert_eq!(run.pipeline.as_deref(), Some("add"));
    assert_eq!(
        run.variables
            .as_ref()
            .unwrap()
            .decode::<serde_json::Value>()
            .unwrap(),
        serde_json::json!({"a": 2, "b": 40})
    );
    assert_eq!(
        run.cookie.unwrap().to_string(),
        "39ad3b81-9f49-44c3-9221-a579156c85cb"
    );
    let uni = decode("RUN with nested/unicode variables");
    let v: serde_json::Value = uni.variables.unwrap().decode().unwrap();
    assert_eq!(v["uni"], "h\u{e9}llo \u{2713} \"q\"\n");
    let ok = decode("RESULT rc=OK (worker");
    assert_eq!(
        (ok.rc, ok.result.unwrap().decode::<i64>().unwrap()),
        (Some(ResultCode::Ok), 42)
    );
    let fail = decode("RESULT rc=PROCESSOR_EXCEPTION (worker");
    assert_eq!(fail.error.as_deref(), Some("1 == 2"));
    assert_eq!(fail.stacktrace.unwrap()[0], "Processor Stack Trace:");
    assert_eq!(decode("RUN detach=true").detach, Some(true));
    assert_eq!(
        decode("RESULT rc=COOKIE_COLLISION").rc,
        Some(ResultCode::CookieCollision)
    );
}

#[test]
fn lax_input_is_accepted_like_pydantic() {
    let p = Json
        .decode(&Bytes::from_static(
            br#"{"packet_type":"RUN","cookie":"{39AD3B819F4944C39221A579156C85CB}","pipeline":"add","variables":"{\"a\": 1}","future_key":[1,2]}"#,
        ))
        .unwrap();
    assert_eq!(
        p.cookie.unwrap().to_string(),
        "39ad3b81-9f49-44c3-9221-a579156c85cb"
    );
    assert_eq!(p.detach, None);
    let reg = Json
        .decode(&Bytes::from_static(
            br#"{"packet_type":"REGISTER","capacity":"3"}"#,
        ))
        .unwrap();
    assert_eq!(reg.capacity, Some(3));
    let out = String::from_utf8(Json.encode(&p).unwrap().to_vec()).unwrap();
    assert!(out.starts_with(r#"{"packet_type":"RUN","cookie":"39ad3b81-9f49-44c3-9221-a579156c85cb","capacity":null,"pipeline":"add","variables":"{\"a\": 1}","detach":null,"rc":null,"error":null,"stacktrace":null,"result":null}"#), "{out}");
}

#[test]
fn malformed_json_says_what_is_wrong() {
    let err = |s: &'static str| {
        Json.decode(&Bytes::from_static(s.as_bytes()))
            .unwrap_err()
            .to_string()
    };
    assert!(err(r#"{"packet_type":"run"}"#).contains("unknown packet_type `run`"));
    assert!(err(r#"{"packet_type":"NOPE"}"#).contains("NOPE"));
    assert!(err(r#"{"cookie":null}"#).contains("packet_type` is missing"));
    assert!(err(r#"{"packet_type":"RUN","cookie":"nope"}"#).contains("cookie `nope` is not a UUID"));
    assert!(err(r#"{"packet_type":"RESULT","rc":"WHAT"}"#).contains("unknown result code `WHAT`"));
    assert!(err(r#"{"packet_type":"REGISTER","capacity":"lots"}"#).contains("not an integer"));
    assert!(err("[1,2]").contains("invalid JSON"));
}

#[test]
fn first_frame_picks_the_codec() {
    let legacy = Json.encode(&Packet::register(4, None)).unwrap();
    let f = detect(&legacy).unwrap();
    assert_eq!((f.codec.kind(), f.is_native()), (CodecKind::Json, false));

    let hello = Packet::hello(Role::Worker, "json", Some("t".into()));
    let f = detect(&encode_hello(&Json, &hello).unwrap()).unwrap();
    assert!(f.is_native());
    assert_eq!(f.packet.hello.as_ref().unwrap().version, PROTOCOL_VERSION);

    let hello = Packet::hello(Role::Client, "bincode", None);
    let frame = encode_hello(&Bincode, &hello).unwrap();
    assert_eq!(&frame[..6], b"\0PXW\x01\x01");
    let f = detect(&frame).unwrap();
    assert_eq!((f.codec.kind(), f.packet), (CodecKind::Bincode, hello));

    let e = detect(&Bytes::from_static(b"GET / HTTP/1.1"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("47 45 54 20") && e.contains("expected a JSON packet"),
        "{e}"
    );
    let mut wrong_version = frame.to_vec();
    wrong_version[5] = 9;
    assert!(detect(&Bytes::from(wrong_version))
        .unwrap_err()
        .to_string()
        .contains("version 9"));
    // A binary connection that does not open with HELLO.
    let mut not_hello = b"\0PXW\x01\x01".to_vec();
    not_hello.extend_from_slice(&Bincode.encode(&Packet::register(1, None)).unwrap());
    assert!(detect(&Bytes::from(not_hello))
        .unwrap_err()
        .to_string()
        .contains("must open with HELLO"));
}

#[test]
fn bincode_payloads_share_the_frame_buffer() {
    let p = Packet::run(
        Uuid::new_v4(),
        "echo",
        Some(Payload::to_json(&vec![7u8; 1000]).unwrap()),
        false,
    );
    let frame = Bincode.encode(&p).unwrap();
    let back = Bincode.decode(&frame).unwrap();
    let v = back.variables.unwrap();
    let inside = frame.as_ptr_range();
    assert!(
        inside.contains(&v.as_bytes().as_ptr()),
        "payload was copied"
    );
}

#[test]
fn bincode_rejects_lies_without_allocating_them() {
    // A pipeline name claiming 2^60 bytes in a 30-byte frame.
    let mut frame = Bincode
        .encode(&Packet::run(Uuid::nil(), "x", None, false))
        .unwrap()
        .to_vec();
    let at = frame.iter().position(|b| *b == b'x').unwrap() - 1;
    frame.splice(at..at + 1, [0xfd, 0, 0, 0, 0, 0, 0, 0, 0x10]);
    assert!(Bincode.decode(&Bytes::from(frame)).is_err());
    // Trailing garbage.
    let mut frame = Bincode
        .encode(&Packet::cancel(Uuid::nil()))
        .unwrap()
        .to_vec();
    frame.push(0);
    assert!(Bincode
        .decode(&Bytes::from(frame))
        .unwrap_err()
        .to_string()
        .contains("after the end"));
}

fn payload() -> impl Strategy<Value = Payload> {
    prop_oneof![
        any::<i64>().prop_map(|n| Payload::to_json(&n).unwrap()),
        ".{0,40}".prop_map(|s| Payload::to_json(&s).unwrap()),
        ".{0,40}".prop_map(Payload::from_json_text),
    ]
}

fn packet() -> impl Strategy<Value = Packet> {
    let head = (
        proptest::sample::select(PacketType::ALL.to_vec()),
        proptest::option::of(any::<u128>().prop_map(Uuid::from_u128)),
        proptest::option::of(any::<i64>()),
        proptest::option::of(".{0,20}"),
        proptest::option::of(payload()),
        proptest::option::of(any::<bool>()),
        proptest::option::of(proptest::sample::select(ResultCode::ALL.to_vec())),
    );
    let tail = (
        proptest::option::of(".{0,30}"),
        proptest::option::of(proptest::collection::vec(".{0,10}", 0..4)),
        proptest::option::of(payload()),
        proptest::option::of((
            any::<u32>(),
            proptest::sample::select(vec![Role::Client, Role::Worker, Role::Broker]),
            "[a-z]{0,8}",
            proptest::option::of(".{0,8}"),
        )),
        proptest::option::of(proptest::collection::vec("[a-z_]{0,10}", 0..4)),
        proptest::option::of(any::<u64>()),
        proptest::option::of(any::<u32>()),
        proptest::option::of(".{0,10}"),
        proptest::option::of(proptest::collection::vec("[a-z=]{0,10}", 0..4)),
        proptest::option::of(any::<u8>()),
    );
    (head, tail).prop_map(
        |(
            (packet_type, cookie, capacity, pipeline, variables, detach, rc),
            (
                error,
                stacktrace,
                result,
                hello,
                pipelines,
                timeout_ms,
                credit,
                worker,
                labels,
                priority,
            ),
        )| Packet {
            packet_type,
            cookie,
            capacity,
            pipeline,
            variables,
            detach,
            rc,
            error,
            stacktrace,
            result,
            hello: hello.map(|(version, role, codec, token)| Hello {
                version,
                role,
                codec,
                token,
            }),
            pipelines,
            timeout_ms,
            credit,
            worker,
            labels,
            priority,
        },
    )
}

proptest! {
    #[test]
    fn decode_encode_round_trips_every_packet_shape(p in packet()) {
        for codec in [AnyCodec::new(CodecKind::Json).unwrap(), AnyCodec::new(CodecKind::Bincode).unwrap()] {
            let frame = codec.encode(&p).unwrap();
            prop_assert_eq!(&codec.decode(&frame).unwrap(), &p, "{:?}", codec.kind());
        }
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let b = Bytes::from(bytes);
        let _ = Json.decode(&b);
        let _ = Bincode.decode(&b);
        let _ = detect(&b);
    }

    #[test]
    fn decoding_mutated_packets_never_panics(p in packet(), flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6)) {
        for frame in [Json.encode(&p).unwrap(), Bincode.encode(&p).unwrap()] {
            let mut m = frame.to_vec();
            for (i, b) in &flips {
                let i = i.index(m.len());
                m[i] = *b;
            }
            let m = Bytes::from(m);
            let _ = Json.decode(&m);
            let _ = Bincode.decode(&m);
        }
    }
}
