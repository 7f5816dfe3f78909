//! Hostile input against a running broker while a well-behaved client keeps
//! running pipelines: hundreds of malformed, truncated, oversized, random,
//! lying and silent connections. Each is answered BAD_PACKET or closed; the
//! broker and every other peer go on — not one good run fails.
//!
//! The big mix runs on TCP; the same mix, smaller, runs over every backend
//! of the registry (`hostile_peers_do_not_disturb_a_good_client_on_any_backend`):
//! framed attacks through the backend's own connections, and the raw-byte
//! attacks (absurd length prefix, truncated frame, unframed noise, half a
//! header, a frame that stops short) on every backend whose connection is a
//! byte stream (TCP, UNIX, TLS, the HTTP upgrade) — written under the
//! backend's own layers, so a TLS peer's garbage is inside TLS. Message
//! backends (mem, QUIC's lanes) delimit frames themselves: there is no raw
//! byte stream to lie about lengths on.

mod common;

use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;
use plexwire::broker::{Broker, BrokerConfig};
use plexwire::client::Client;
use plexwire::codec::{encode_hello, Codec, Json};
use plexwire::protocol::{Packet, ResultCode, Role};
use plexwire::transport::{self, Endpoint, Io};
use plexwire::worker::{Worker, WorkerConfig};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(30);

/// xorshift64*: deterministic noise without a dependency.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn addr(ep: &Endpoint) -> String {
    ep.url().trim_start_matches("tcp://").to_owned()
}

/// Sends `frames` length-prefixed, then reads what comes back until the
/// broker closes or goes quiet; returns the decoded RESULT codes.
async fn framed_attack(ep: &Endpoint, frames: Vec<Vec<u8>>) -> Vec<Option<ResultCode>> {
    let Ok(conn) = transport::connect(ep.url()).await else {
        return vec![];
    };
    let (mut tx, mut rx) = conn.into_frames();
    for f in frames {
        if tx.send_frame(Bytes::from(f)).await.is_err() {
            break;
        }
    }
    let mut codes = Vec::new();
    while let Ok(Some(Ok(f))) = timeout(Duration::from_millis(300), rx.recv_frame()).await {
        codes.push(Json.decode(&f).ok().and_then(|p| p.rc));
    }
    codes
}

/// Writes raw bytes (no framing), then waits for the broker to close or stay quiet.
async fn raw_attack(ep: &Endpoint, bytes: Vec<u8>, close_after_write: bool) {
    let Ok(mut s) = TcpStream::connect(addr(ep)).await else {
        return;
    };
    let _ = s.write_all(&bytes).await;
    if close_after_write {
        return;
    }
    let mut buf = [0u8; 4096];
    let _ = timeout(Duration::from_secs(3), async {
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_peers_do_not_disturb_a_good_client() {
    let broker = Broker::new(BrokerConfig {
        handshake_timeout: Duration::from_millis(500),
        ..BrokerConfig::default()
    });
    let clients = broker.listen_clients("tcp://127.0.0.1:0").await.unwrap();
    let workers = broker.listen_workers("tcp://127.0.0.1:0").await.unwrap();
    let w = plexwire::builtin::register(Worker::new(WorkerConfig {
        capacity: 8,
        ..WorkerConfig::default()
    }));
    let wurl = workers.url().to_owned();
    tokio::spawn(async move { w.run(&wurl).await });
    assert!(broker.wait_for_capacity(8, LIMIT).await);
    let good = Client::connect(clients.url()).await.unwrap();

    // The well-behaved client: 600 runs, 8 at a time, for the whole attack.
    let good_runs = {
        let good = good.clone();
        tokio::spawn(async move {
            let mut failures = Vec::new();
            for round in 0..75i64 {
                let calls = (0..8i64).map(|i| {
                    let good = good.clone();
                    async move {
                        good.run::<_, i64>("add", &json!({"a": round, "b": i}))
                            .await
                            .map(|v| (v, round + i))
                    }
                });
                for r in join_all(calls).await {
                    match r {
                        Ok((got, want)) if got == want => {}
                        other => failures.push(format!("{other:?}")),
                    }
                }
            }
            failures
        })
    };

    let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
    let mut attacks = Vec::new();
    let mut count = 0;
    for i in 0..40 {
        let (c, w) = (clients.clone(), workers.clone());
        let len = 1 + (noise.next() % 300) as usize;
        let junk = noise.bytes(len);
        let junk_json = format!("{{\"packet_type\": \"RUN\", \"cookie\": \"{}\"", i);
        let cases: Vec<tokio::task::JoinHandle<()>> = vec![
            // Random bytes as a first frame: refused and closed.
            tokio::spawn({
                let c = c.clone();
                let j = junk.clone();
                async move {
                    framed_attack(&c, vec![j]).await;
                }
            }),
            // A legacy client, then garbage: each answered BAD_PACKET.
            tokio::spawn({
                let c = c.clone();
                let j = junk_json.clone();
                async move {
                    let legacy_run = br#"{"packet_type":"RUN","pipeline":"add"}"#.to_vec(); // no cookie
                    let codes = framed_attack(
                        &c,
                        vec![
                            legacy_run,
                            j.into_bytes(),
                            br#"{"packet_type":"NOPE"}"#.to_vec(),
                            br#"{"packet_type":"RUN","cookie":5,"pipeline":["x"]}"#.to_vec(),
                        ],
                    )
                    .await;
                    assert!(
                        codes.iter().all(|c| *c == Some(ResultCode::BadPacket)),
                        "{codes:?}"
                    );
                    assert_eq!(codes.len(), 4, "each bad packet answered: {codes:?}");
                }
            }),
            // An absurd length prefix: closed, nothing allocated.
            tokio::spawn({
                let c = c.clone();
                async move { raw_attack(&c, vec![0xff, 0xff, 0xff, 0xff, 1, 2, 3], false).await }
            }),
            // A truncated frame, then the connection drops.
            tokio::spawn({
                let c = c.clone();
                async move { raw_attack(&c, vec![0, 0, 0, 100, b'{', b'"'], true).await }
            }),
            // Unframed random bytes.
            tokio::spawn({
                let c = c.clone();
                let j = junk.clone();
                async move { raw_attack(&c, j, false).await }
            }),
            // Binary preamble with a wrong version, and with a garbage body.
            tokio::spawn({
                let c = c.clone();
                async move {
                    framed_attack(&c, vec![b"\0PXW\x01\x09junk".to_vec()]).await;
                }
            }),
            tokio::spawn({
                let c = c.clone();
                async move {
                    framed_attack(&c, vec![b"\0PXW\x01\x01\xff\xff\xff\xff".to_vec()]).await;
                }
            }),
            // A worker announcing an absurd capacity, and RESULTs for cookies it never got.
            tokio::spawn({
                let w = w.clone();
                async move {
                    let reg = Json
                        .encode(&Packet::register(100_000_000, None))
                        .unwrap()
                        .to_vec();
                    let lie = Json
                        .encode(&Packet::ok(uuid::Uuid::new_v4(), None))
                        .unwrap()
                        .to_vec();
                    let codes = framed_attack(&w, vec![reg, lie.clone(), lie]).await;
                    assert_eq!(
                        codes,
                        vec![Some(ResultCode::BadPacket)],
                        "absurd capacity refused, lies dropped"
                    );
                }
            }),
            // A native client that connects to the worker listener.
            tokio::spawn({
                let w = w.clone();
                async move {
                    let hello = encode_hello(&Json, &Packet::hello(Role::Client, "json", None))
                        .unwrap()
                        .to_vec();
                    assert_eq!(
                        framed_attack(&w, vec![hello]).await,
                        vec![Some(ResultCode::BadPacket)]
                    );
                }
            }),
        ];
        count += cases.len();
        attacks.extend(cases);
    }
    // Slowloris: connections that say nothing, or half a header.
    for i in 0..20 {
        let c = clients.clone();
        attacks.push(tokio::spawn(async move {
            raw_attack(&c, if i % 2 == 0 { vec![] } else { vec![0, 0] }, false).await
        }));
        count += 1;
    }
    for a in timeout(LIMIT, join_all(attacks))
        .await
        .expect("every hostile connection ends")
    {
        a.expect("attack assertions hold");
    }
    let failures = timeout(LIMIT, good_runs).await.unwrap().unwrap();
    assert!(failures.is_empty(), "good runs failed: {failures:?}");
    assert!(count >= 300, "{count} hostile connections");

    let stats = broker.stats();
    assert!(stats.handshake_failures >= 100, "{stats:?}");
    assert!(stats.bad_frames >= 120, "{stats:?}");
    assert_eq!(stats.switchboard.routes, 0);
    assert_eq!(stats.switchboard.free_capacity, 8);
    // Still serving.
    assert_eq!(
        good.run::<_, i64>("add", &json!({"a": 1, "b": 1}))
            .await
            .unwrap(),
        2
    );
}

/// A frame over the broker's limit is answered TOO_LARGE, naming both sizes,
/// before the connection closes: a native peer in its own terms, a legacy
/// (ReasonChip) peer with the nearest code it knows. Never a silent close.
/// (An oversized *first* frame is closed unanswered: before a first frame
/// the broker cannot tell a legacy peer from another protocol — an HTTP
/// request head reads as a 1.2 GB length — and must not answer it in JSON.)
#[tokio::test]
async fn an_oversized_frame_is_answered_before_the_close() {
    let broker = Broker::new(BrokerConfig::default());
    let clients = broker
        .listen_clients("tcp://127.0.0.1:0?max_frame_size=1024")
        .await
        .unwrap();
    let url = format!(
        "{}?max_frame_size=1048576",
        clients.url().split('?').next().unwrap()
    );
    for native in [true, false] {
        let conn = transport::connect(&url).await.unwrap();
        let (mut tx, mut rx) = conn.into_frames();
        if native {
            let hello = Packet::hello(Role::Client, "json", None);
            tx.send_frame(encode_hello(&Json, &hello).unwrap())
                .await
                .unwrap();
            let answer = timeout(LIMIT, rx.recv_frame())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            assert_eq!(
                Json.decode(&answer).unwrap().packet_type,
                plexwire::protocol::PacketType::Hello
            );
        } else {
            // A legacy peer's first frame: a RUN no worker can take.
            let run = r#"{"packet_type":"RUN","cookie":"5b1e7c3e-0c39-4c2a-9f51-0d9f3f6f2b11","pipeline":"echo","variables":"1"}"#;
            tx.send_frame(Bytes::from_static(run.as_bytes()))
                .await
                .unwrap();
            let answer = timeout(LIMIT, rx.recv_frame())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            assert_eq!(
                Json.decode(&answer).unwrap().rc,
                Some(ResultCode::NoCapacity)
            );
        }
        let big = format!(
            r#"{{"packet_type":"RUN","pipeline":"echo","variables":"{}"}}"#,
            "x".repeat(2000)
        );
        let size = big.len();
        tx.send_frame(Bytes::from(big)).await.unwrap();
        let answer = timeout(LIMIT, rx.recv_frame())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let packet = Json.decode(&answer).unwrap();
        let error = packet.error.unwrap_or_default();
        if native {
            assert_eq!(packet.rc, Some(ResultCode::TooLarge), "{error}");
        } else {
            assert_eq!(packet.rc, Some(ResultCode::BadPacket), "{error}");
        }
        assert!(
            error.contains(&format!("{size} bytes")) && error.contains("1024-byte limit"),
            "{error}"
        );
        assert!(
            timeout(LIMIT, rx.recv_frame()).await.unwrap().is_none(),
            "then the broker closes"
        );
    }
}

/// A RUN that only becomes too large when re-encoded for its worker (a
/// bincode client's 3 MiB of control bytes is ~18 MiB as JSON) is answered
/// TOO_LARGE up front: the route and the worker's slot are released, and the
/// worker goes on serving. (It used to be dropped by the worker's writer,
/// leaving the client unanswered and the slot taken forever.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_too_large_for_its_workers_codec_is_answered_and_leaks_nothing() {
    use plexwire::client::{ClientConfig, RunOptions};
    use plexwire::codec::CodecKind;
    use plexwire::protocol::Payload;

    let broker = Broker::new(BrokerConfig::default());
    let clients = broker
        .listen_clients("mem://too-large-clients")
        .await
        .unwrap();
    let workers = broker
        .listen_workers("mem://too-large-workers")
        .await
        .unwrap();
    let worker = plexwire::builtin::register(Worker::new(WorkerConfig {
        capacity: 1,
        codec: CodecKind::Json,
        ..WorkerConfig::default()
    }));
    let url = workers.url().to_owned();
    tokio::spawn(async move { worker.run(&url).await });
    assert!(broker.wait_for_capacity(1, LIMIT).await);
    let client = Client::connect_with(
        &transport::AnyTransport,
        &clients,
        ClientConfig {
            codec: CodecKind::Bincode,
            ..ClientConfig::default()
        },
    )
    .await
    .unwrap();
    for _ in 0..3 {
        let payload = Payload::from_utf8_bytes(Bytes::from(vec![1u8; 3 << 20])).unwrap();
        let run = client
            .start_raw("echo", Some(payload), RunOptions::default())
            .await
            .unwrap();
        let e = timeout(Duration::from_secs(20), run.finish_raw())
            .await
            .expect("answered, not left hanging")
            .unwrap_err();
        assert_eq!(e.rc(), ResultCode::TooLarge, "{e}");
        assert!(e.to_string().contains("encoded as json"), "{e}");
    }
    let stats = broker.stats().switchboard;
    assert_eq!((stats.routes, stats.free_capacity), (0, 1), "{stats:?}");
    let echoed: String = timeout(LIMIT, client.run("echo", "still here"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(echoed, "still here");
}

/// Where the attacks go: the URLs to connect to the two listeners with.
#[derive(Clone)]
struct Target {
    clients: String,
    workers: String,
}

/// Sends `frames` over a connection of the backend, then reads what comes
/// back until the broker closes or goes quiet; returns the RESULT codes.
async fn framed_attack_url(url: &str, frames: Vec<Vec<u8>>) -> Vec<Option<ResultCode>> {
    let Ok(conn) = transport::connect(url).await else {
        return vec![];
    };
    let (mut tx, mut rx) = conn.into_frames();
    for f in frames {
        if tx.send_frame(Bytes::from(f)).await.is_err() {
            break;
        }
    }
    let mut codes = Vec::new();
    while let Ok(Some(Ok(f))) = timeout(Duration::from_millis(300), rx.recv_frame()).await {
        codes.push(Json.decode(&f).ok().and_then(|p| p.rc));
    }
    codes
}

/// Writes raw bytes under the framing of a byte-stream backend (inside its
/// TLS or HTTP upgrade, if any), then waits for the close or quiet. Returns
/// false if the backend is not a byte stream (nothing was sent).
async fn raw_attack_url(url: &str, bytes: Vec<u8>, close_after_write: bool) -> bool {
    let Ok(conn) = transport::connect(url).await else {
        return true;
    };
    let (io, _) = conn.into_io();
    let Io::Stream {
        mut reader,
        mut writer,
    } = io
    else {
        return false;
    };
    let _ = writer.write_all(&bytes).await;
    let _ = writer.flush().await;
    if close_after_write {
        return true;
    }
    // Until the broker closes; the bound is only a backstop (every raw
    // attack here is closed by the broker well before it).
    let mut buf = [0u8; 4096];
    let _ = timeout(Duration::from_secs(10), async {
        while let Ok(n) = reader.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    true
}

/// A legacy client's first frame (RUN `$stats`, answered), then a header
/// announcing 1 MiB followed by 100 bytes, and nothing more: the broker cuts
/// it after its `frame_timeout`.
fn stops_short() -> Vec<u8> {
    let run = Json
        .encode(&Packet::run(
            uuid::Uuid::new_v4(),
            plexwire::broker::STATS_PIPELINE,
            None,
            false,
        ))
        .unwrap();
    let mut bytes = (run.len() as u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(&run);
    bytes.extend_from_slice(&(1u32 << 20).to_be_bytes());
    bytes.extend_from_slice(&[b' '; 100]);
    bytes
}

/// One round of attacks on `t`; returns how many hostile connections it
/// made, and whether the backend took raw bytes (is a byte stream).
async fn attack_round(t: &Target, noise: &mut Noise, i: usize) -> (usize, bool) {
    let len = 1 + (noise.next() % 200) as usize;
    let junk = noise.bytes(len);
    let mut cases: Vec<tokio::task::JoinHandle<()>> = Vec::new();
    let c = t.clients.clone();
    let w = t.workers.clone();
    // Random bytes as a first frame.
    cases.push(tokio::spawn({
        let (c, j) = (c.clone(), junk.clone());
        async move {
            framed_attack_url(&c, vec![j]).await;
        }
    }));
    // A first frame that is JSON but no packet: answered BAD_PACKET, closed.
    cases.push(tokio::spawn({
        let c = c.clone();
        async move {
            let codes = framed_attack_url(&c, vec![br#"{"packet_type":"NOPE"}"#.to_vec()]).await;
            assert_eq!(codes, vec![Some(ResultCode::BadPacket)]);
        }
    }));
    // A legacy client, then garbage: each answered BAD_PACKET.
    cases.push(tokio::spawn({
        let c = c.clone();
        async move {
            let codes = framed_attack_url(
                &c,
                vec![
                    br#"{"packet_type":"RUN","pipeline":"add"}"#.to_vec(),
                    format!("{{\"packet_type\": \"RUN\", \"cookie\": \"{i}\"").into_bytes(),
                    br#"{"packet_type":"NOPE"}"#.to_vec(),
                ],
            )
            .await;
            assert_eq!(codes, vec![Some(ResultCode::BadPacket); 3], "{codes:?}");
        }
    }));
    // Binary preamble with a wrong version, and with a garbage body.
    cases.push(tokio::spawn({
        let c = c.clone();
        async move {
            framed_attack_url(&c, vec![b"\0PXW\x01\x09junk".to_vec()]).await;
            framed_attack_url(&c, vec![b"\0PXW\x01\x01\xff\xff\xff\xff".to_vec()]).await;
        }
    }));
    // A worker announcing an absurd capacity, then lying RESULTs.
    cases.push(tokio::spawn({
        let w = w.clone();
        async move {
            let reg = Json
                .encode(&Packet::register(100_000_000, None))
                .unwrap()
                .to_vec();
            let lie = Json
                .encode(&Packet::ok(uuid::Uuid::new_v4(), None))
                .unwrap()
                .to_vec();
            let codes = framed_attack_url(&w, vec![reg, lie.clone(), lie]).await;
            assert_eq!(codes, vec![Some(ResultCode::BadPacket)]);
        }
    }));
    // A native client on the worker listener.
    cases.push(tokio::spawn({
        let w = w.clone();
        async move {
            let hello = encode_hello(&Json, &Packet::hello(Role::Client, "json", None))
                .unwrap()
                .to_vec();
            assert_eq!(
                framed_attack_url(&w, vec![hello]).await,
                vec![Some(ResultCode::BadPacket)]
            );
        }
    }));
    // Silent: connects and says nothing (cut after the handshake timeout).
    cases.push(tokio::spawn({
        let c = c.clone();
        async move {
            framed_attack_url(&c, vec![]).await;
        }
    }));
    // Raw bytes under the framing, on byte-stream backends.
    let raw: Vec<(Vec<u8>, bool)> = vec![
        (vec![0xff, 0xff, 0xff, 0xff, 1, 2, 3], false), // absurd length
        (vec![0, 0, 0, 100, b'{', b'"'], true),         // truncated, then gone
        (junk, false),                                  // unframed noise
        (vec![0, 0], false),                            // half a header
        (stops_short(), false), // a frame that stops short, after a good first one
    ];
    let raw = join_all(raw.into_iter().map(|(bytes, close)| {
        let c = c.clone();
        tokio::spawn(async move { raw_attack_url(&c, bytes, close).await })
    }));
    let (framed, raw) = tokio::join!(join_all(cases), raw);
    let n = framed.len() + raw.len();
    for case in framed {
        case.expect("attack assertions hold");
    }
    let stream = raw.into_iter().all(|r| r.expect("raw attack"));
    (n, stream)
}

/// The attack mix through every backend of the registry (one variant per
/// scheme), while a well-behaved client runs pipelines: not one good run
/// fails, every hostile connection ends, and nothing leaks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_peers_do_not_disturb_a_good_client_on_any_backend() {
    common::each(common::one_per_scheme(), |v| async move {
        let broker = Broker::new(BrokerConfig {
            handshake_timeout: Duration::from_millis(500),
            frame_timeout: Duration::from_secs(1),
            ..BrokerConfig::default()
        });
        let (cb, wb) = (v.fresh(), v.fresh());
        let clients = broker.listen_clients(&cb.listen).await.unwrap();
        let workers = broker.listen_workers(&wb.listen).await.unwrap();
        let target = Target {
            clients: cb.connect_url(&clients),
            workers: wb.connect_url(&workers),
        };
        let w = plexwire::builtin::register(Worker::new(WorkerConfig {
            capacity: 8,
            ..WorkerConfig::default()
        }));
        let wurl = target.workers.clone();
        tokio::spawn(async move { w.run(&wurl).await });
        assert!(broker.wait_for_capacity(8, LIMIT).await);
        let good = Client::connect(&target.clients).await.unwrap();
        let good_runs = {
            let good = good.clone();
            tokio::spawn(async move {
                let mut failures = Vec::new();
                for round in 0..25i64 {
                    let calls = (0..8i64).map(|i| {
                        let good = good.clone();
                        async move {
                            good.run::<_, i64>("add", &json!({"a": round, "b": i}))
                                .await
                                .map(|v| (v, round + i))
                        }
                    });
                    for r in join_all(calls).await {
                        match r {
                            Ok((got, want)) if got == want => {}
                            other => failures.push(format!("{other:?}")),
                        }
                    }
                }
                failures
            })
        };
        let mut noise = Noise(0x2545_f491_4f6c_dd1d ^ v.label.len() as u64);
        let (mut count, mut stream) = (0, true);
        for i in 0..8 {
            let (n, s) = timeout(LIMIT, attack_round(&target, &mut noise, i))
                .await
                .expect("every hostile connection ends");
            count += n;
            stream &= s;
        }
        eprintln!(
            "{}: {count} hostile connections; raw-byte attacks {}",
            v.label,
            if stream {
                "sent (a byte stream)"
            } else {
                "not applicable (a message transport)"
            }
        );
        let failures = timeout(LIMIT, good_runs).await.unwrap().unwrap();
        assert!(
            failures.is_empty(),
            "{}: good runs failed: {failures:?}",
            v.label
        );
        let stats = broker.stats();
        assert!(count >= 80, "{count} hostile connections");
        assert!(stats.handshake_failures >= 8 * 4, "{}: {stats:?}", v.label);
        assert!(stats.bad_frames >= 8 * 2, "{}: {stats:?}", v.label);
        if stream {
            assert!(stats.stalled_frames >= 8, "{}: {stats:?}", v.label);
        }
        assert_eq!(stats.switchboard.routes, 0, "{}: {stats:?}", v.label);
        assert_eq!(stats.switchboard.free_capacity, 8, "{}: {stats:?}", v.label);
        assert_eq!(
            good.run::<_, i64>("add", &json!({"a": 1, "b": 1}))
                .await
                .unwrap(),
            2
        );
    })
    .await;
}
