//! The packet stream (`plexwire::peer`) as a user sees it: requests both
//! ways over every loopback backend of the registry and over plain
//! `AsyncRead + AsyncWrite` halves, channels, the seed's shutdown, the
//! serving bound, and hostile input (oversized length prefix, a BSUInt over
//! u64, truncated packets) that must close the connection, never panic or
//! hang. The sans-IO core has its own unit tests (src/peer/core.rs); the
//! real Python library is in tests/interop_packetstream.rs.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;
use plexwire::peer::{
    demo, Fulfil, Handler, HandlerError, IncomingRequest, PacketConfig, PacketConnection,
    PacketError, PacketRequest, Reply, RequestMap,
};
use plexwire::transport::{self, Connection};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::time::timeout;

use common::Backend;

const LIMIT: Duration = Duration::from_secs(20);

async fn pair(b: &Backend) -> (Connection, Connection) {
    let mut l = transport::listen(&b.listen).await.unwrap();
    let url = b.connect_url(l.local_endpoint());
    let (client, server) = tokio::join!(transport::connect(&url), l.accept());
    (client.expect("connect"), server.expect("accept"))
}

/// Both ends serve the demo types and call each other: many requests in
/// flight at once on channels 0 and 3, every demo type, 300- and
/// 20 000-byte payloads, then the orderly close of the seed.
pub async fn requests_both_ways_then_an_orderly_close(b: Backend) {
    let (c, s) = pair(&b).await;
    let server = PacketConnection::open(s, Some(demo::handler()), PacketConfig::default());
    let client = PacketConnection::open(c, Some(demo::handler()), PacketConfig::default());
    let calls = |conn: PacketConnection, side: &'static str| async move {
        let mut pending = Vec::new();
        for i in 0..100u64 {
            let channel = if i % 2 == 0 { 0 } else { 3 };
            let payload = match i % 10 {
                0 => vec![b'z'; 300],
                1 => vec![0xff; 20_000],
                _ => format!("{side} {i} ab").into_bytes(),
            };
            let rq_type = [demo::ECHO, demo::UPPER, demo::FAIL, demo::EMPTY][(i % 4) as usize];
            pending.push((
                i,
                rq_type,
                payload.clone(),
                conn.submit(rq_type, i, payload, channel).await.unwrap(),
            ));
        }
        // Every request is out before any answer is awaited.
        for (i, rq_type, payload, p) in pending {
            let r = timeout(LIMIT, p)
                .await
                .expect("answered")
                .expect("an answer");
            match rq_type {
                demo::ECHO => assert!(r.ok && r.flags == i && r.payload == payload, "{i}: {r:?}"),
                demo::UPPER => {
                    assert!(r.ok && r.flags == 0, "{i}: {r:?}");
                    assert_eq!(r.payload, Bytes::from(payload.to_ascii_uppercase()));
                }
                demo::FAIL => {
                    assert!(!r.ok && r.flags == 0, "{i}: {r:?}");
                    assert_eq!(&r.payload[..], b"exception during handler");
                }
                _ => assert!(r.ok && r.flags == 0 && r.payload.is_empty(), "{i}: {r:?}"),
            }
        }
    };
    timeout(LIMIT, async {
        tokio::join!(
            calls(client.clone(), "client"),
            calls(server.clone(), "server")
        )
    })
    .await
    .expect("both sides answered in time");
    let server_side = async {
        server.join_recv().await;
        server.close().await;
    };
    timeout(LIMIT, async { tokio::join!(client.close(), server_side) })
        .await
        .expect("closed in order");
    assert!(matches!(
        client.submit(1, 0, "late", 0).await,
        Err(PacketError::RequestsEnded | PacketError::Closed { .. })
    ));
}

/// One test per case, over every variant.
macro_rules! cases {
    ($($case:ident),* $(,)?) => {
        mod over_every_backend {
            $(
                #[tokio::test]
                async fn $case() {
                    crate::common::each(crate::common::variants(), |v| super::$case(v.fresh())).await;
                }
            )*
        }
    };
}

cases!(requests_both_ways_then_an_orderly_close);

/// Two connections over an in-memory byte pipe, as over a child's stdin/stdout.
fn io_pair(
    a_handler: Option<Handler>,
    b_handler: Option<Handler>,
    config: PacketConfig,
) -> (PacketConnection, PacketConnection) {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let (ar, aw) = tokio::io::split(a);
    let (br, bw) = tokio::io::split(b);
    (
        PacketConnection::from_io(ar, aw, "a", a_handler, config.clone()),
        PacketConnection::from_io(br, bw, "b", b_handler, config),
    )
}

#[tokio::test]
async fn over_plain_async_read_and_write_halves() {
    let (a, b) = io_pair(None, Some(demo::handler()), PacketConfig::default());
    let r = a
        .call(demo::UPPER, 0, "hello 1 on channel 1 ab", 1)
        .await
        .unwrap();
    assert_eq!(&r.payload[..], b"HELLO 1 ON CHANNEL 1 AB");
    // `a` has no handler: the library's own answer.
    let r = b.call(demo::ECHO, 0, "x", 0).await.unwrap();
    assert!(!r.ok);
    assert_eq!(&r.payload[..], b"no request handler");
    timeout(LIMIT, async {
        tokio::join!(a.close(), async {
            b.join_recv().await;
            b.close().await
        })
    })
    .await
    .unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_packet_grace_batches_but_still_delivers() {
    let config = PacketConfig {
        packet_grace: Duration::from_millis(10),
        ..PacketConfig::default()
    };
    let (a, b) = io_pair(None, Some(demo::handler()), config);
    let calls = (0..50u64).map(|i| {
        let a = a.clone();
        async move { a.call(demo::ECHO, i, format!("{i}"), 0).await.unwrap() }
    });
    let got = timeout(LIMIT, join_all(calls)).await.unwrap();
    assert!(got
        .iter()
        .enumerate()
        .all(|(i, r)| r.ok && r.flags == i as u64));
    drop(b);
}

#[tokio::test]
async fn a_failing_or_panicking_handler_answers_not_ok_and_the_connection_goes_on() {
    let h = Handler::new(|rq: IncomingRequest| async move {
        match rq.rq_type {
            7 => panic!("handler bug"),
            8 => Err::<Reply, HandlerError>("no".into()),
            _ => Ok(Reply::Both(5, Bytes::from_static(b"fine"))),
        }
    });
    let (a, _b) = io_pair(None, Some(h), PacketConfig::default());
    for rq_type in [7, 8] {
        let r = a.call(rq_type, 0, "", 0).await.unwrap();
        assert!(!r.ok);
        assert_eq!(&r.payload[..], b"exception during handler");
    }
    let r = a.call(1, 0, "", 0).await.unwrap();
    assert_eq!((r.ok, r.flags, &r.payload[..]), (true, 5, &b"fine"[..]));
}

#[tokio::test]
async fn the_serving_bound_holds_back_the_reader() {
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let h = {
        let (running, most, gate) = (running.clone(), most.clone(), gate.clone());
        Handler::new(move |_rq: IncomingRequest| {
            let (running, most, gate) = (running.clone(), most.clone(), gate.clone());
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                gate.acquire().await.unwrap().forget();
                running.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, HandlerError>(())
            }
        })
    };
    let config = PacketConfig {
        max_serving: 3,
        ..PacketConfig::default()
    };
    let (a, b) = io_pair(None, Some(h), config);
    let mut pending = Vec::new();
    for _ in 0..20 {
        pending.push(a.submit(1, 0, "", 0).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(b.serving(), 3, "no more than the bound are served at once");
    gate.add_permits(20);
    for p in pending {
        assert!(timeout(LIMIT, p).await.unwrap().unwrap().ok);
    }
    assert_eq!(most.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn end_requests_then_eof_as_in_the_seed() {
    let (a, b) = io_pair(
        Some(demo::handler()),
        Some(demo::handler()),
        PacketConfig::default(),
    );
    a.end_requests().await;
    assert!(matches!(
        a.submit(1, 0, "", 0).await,
        Err(PacketError::RequestsEnded)
    ));
    // `a` still serves `b`.
    assert!(b.call(demo::ECHO, 0, "x", 0).await.unwrap().ok);
    timeout(LIMIT, async {
        tokio::join!(a.close(), async {
            b.join_recv().await;
            b.close().await
        })
    })
    .await
    .unwrap();
    assert!(b.peer_ended_requests());
}

/// A raw peer: the other end of a pipe that a PacketConnection reads.
fn raw_peer(handler: Option<Handler>) -> (PacketConnection, DuplexStream) {
    let (a, raw) = tokio::io::duplex(64 * 1024);
    let (ar, aw) = tokio::io::split(a);
    (
        PacketConnection::from_io(ar, aw, "raw", handler, PacketConfig::default()),
        raw,
    )
}

/// Feeds `bytes` to a connection with a request outstanding: the
/// connection must close (the request fails, the raw side reads EOF).
async fn closes_on(bytes: &[u8], why: &str) {
    let (conn, mut raw) = raw_peer(Some(demo::handler()));
    let pending = conn.submit(1, 0, "waiting", 0).await.unwrap();
    raw.write_all(bytes).await.unwrap();
    let e = timeout(LIMIT, pending).await.expect("no hang").unwrap_err();
    assert!(matches!(e, PacketError::Unanswered { .. }), "{why}: {e:?}");
    assert!(e.to_string().contains(why), "{why}: {e}");
    timeout(LIMIT, conn.join_recv())
        .await
        .expect("receive side ended");
    // Our request went out before; then the stream ends.
    let mut seen = Vec::new();
    timeout(LIMIT, raw.read_to_end(&mut seen))
        .await
        .expect("closed")
        .unwrap();
    assert_eq!(
        &seen[..4],
        &[0x0a, 0x02, 0x02, 0x02],
        "the request that was sent"
    );
}

#[tokio::test]
async fn an_oversized_length_prefix_closes_the_connection() {
    // 2^34 announced, far over the 16 MiB limit: refused from the prefix.
    closes_on(
        &[0xc0, 0x80, 0x80, 0x80, 0x00],
        "exceeds the 16777216-byte limit",
    )
    .await;
}

#[tokio::test]
async fn a_length_prefix_longer_than_any_u64_closes_the_connection() {
    closes_on(&[0xff; 40], "longer than 16 bytes").await;
}

#[tokio::test]
async fn a_bsuint_over_u64_inside_a_packet_closes_the_connection() {
    let mut p = vec![10u8, 0x82];
    p.extend([0x80; 8]);
    p.push(0x00);
    closes_on(&p, "larger than 2^64-1").await;
}

#[tokio::test]
async fn a_truncated_packet_closes_the_connection() {
    // len 2: tag 2, then a flagword that says "more follows" and stops.
    closes_on(&[0x02, 0x02, 0x83], "ends inside its flagword").await;
}

#[tokio::test]
async fn a_stream_closed_without_eof_ends_like_eof() {
    let (conn, raw) = raw_peer(None);
    let pending = conn.submit(1, 0, "x", 0).await.unwrap();
    drop(raw);
    let e = timeout(LIMIT, pending).await.unwrap().unwrap_err();
    assert!(e.to_string().contains("closed without EOF"), "{e}");
    timeout(LIMIT, conn.join()).await.unwrap();
}

#[tokio::test]
async fn a_raw_peer_sees_the_library_answers_and_markers() {
    let (conn, mut raw) = raw_peer(Some(demo::handler()));
    // ERQ, then a request: refused with the library's text.
    raw.write_all(&[0x03, 0x01, 0x02, 0x00, 0x04, 0x02, 0x02, 0x02, b'x'])
        .await
        .unwrap();
    let mut buf = [0u8; 29];
    timeout(LIMIT, raw.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(buf[..3], [28, 0x02, 0x00]);
    assert_eq!(&buf[3..], b"requests no longer allowed");
    // EOF from the raw side; then the connection closes in order: ERQ, EOF.
    raw.write_all(&[0x03, 0x00, 0x02, 0x00]).await.unwrap();
    timeout(LIMIT, conn.join_recv()).await.unwrap();
    timeout(LIMIT, conn.close()).await.unwrap();
    let mut rest = Vec::new();
    raw.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, [0x03, 0x01, 0x02, 0x00, 0x03, 0x00, 0x02, 0x00]);
}

#[tokio::test]
async fn an_oversized_request_is_refused_before_it_is_sent() {
    let config = PacketConfig {
        max_packet_size: Some(1000),
        ..PacketConfig::default()
    };
    let (a, _b) = io_pair(None, Some(demo::handler()), config);
    let e = a.submit(1, 0, vec![0u8; 1000], 0).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "request of 1003 bytes exceeds the 1000-byte packet limit (raise max_packet_size, or `?max_frame_size=N` on the endpoint, on both sides)"
    );
    assert!(a.call(1, 0, vec![0u8; 997], 0).await.unwrap().ok);
}

#[tokio::test]
async fn dropping_the_last_handle_tears_down_and_fails_the_peer_requests() {
    let (a, b) = io_pair(None, None, PacketConfig::default());
    let pending = b.submit(1, 0, "", 0).await.unwrap();
    // `a` answers "no request handler" at once; then goes.
    assert!(!timeout(LIMIT, pending).await.unwrap().unwrap().ok);
    let pending = b.submit(1, 0, "", 0).await.unwrap();
    drop(a);
    // Either answered before the drop or failed by it: never a hang.
    let _ = timeout(LIMIT, pending).await.expect("no hang");
    timeout(LIMIT, b.join_recv()).await.unwrap();
}

// ----------------------------------------------------------- typed layer

/// A store: rq_type 0 adds bytes and returns their index, 1 gets them back.
#[derive(Default)]
struct Store(std::sync::Mutex<Vec<Bytes>>);

struct Add(Bytes);
struct Get(u64);

impl PacketRequest for Add {
    const RQ_TYPE: u64 = 0;
    type Response = u64;
    fn to_request(&self) -> (u64, Bytes) {
        (0, self.0.clone())
    }
    fn from_request(_flags: u64, payload: Bytes) -> Result<Self, HandlerError> {
        Ok(Add(payload))
    }
    fn decode_response(flags: u64, _payload: Bytes) -> Result<u64, HandlerError> {
        Ok(flags)
    }
}

impl Fulfil<Store> for Add {
    async fn fulfil(self, store: Arc<Store>) -> Result<Reply, HandlerError> {
        let mut s = store.0.lock().unwrap();
        s.push(self.0);
        Ok(Reply::Flags(s.len() as u64 - 1))
    }
}

impl PacketRequest for Get {
    const RQ_TYPE: u64 = 1;
    type Response = Bytes;
    fn to_request(&self) -> (u64, Bytes) {
        (self.0, Bytes::new())
    }
    fn from_request(flags: u64, _payload: Bytes) -> Result<Self, HandlerError> {
        Ok(Get(flags))
    }
    fn decode_response(_flags: u64, payload: Bytes) -> Result<Bytes, HandlerError> {
        Ok(payload)
    }
}

impl Fulfil<Store> for Get {
    async fn fulfil(self, store: Arc<Store>) -> Result<Reply, HandlerError> {
        let s = store.0.lock().unwrap();
        let b = s.get(self.0 as usize).cloned().ok_or("no such entry")?;
        Ok(Reply::Bytes(b))
    }
}

#[tokio::test]
async fn the_typed_layer_decodes_fulfils_and_decodes_the_response() {
    let map = RequestMap::new(Store::default())
        .with::<Add>()
        .with::<Get>();
    let (a, _b) = io_pair(None, Some(map.into_handler()), PacketConfig::default());
    assert_eq!(
        a.do_remote(&Add(Bytes::from_static(b"one")), 0)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        a.do_remote(&Add(Bytes::from_static(b"two")), 0)
            .await
            .unwrap(),
        1
    );
    assert_eq!(&a.do_remote(&Get(1), 0).await.unwrap()[..], b"two");
    let e = a.do_remote(&Get(9), 0).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "the peer answered not ok (flags 0): exception during handler"
    );
    // An rq_type nobody registered.
    assert!(!a.call(5, 0, "", 0).await.unwrap().ok);
}

#[tokio::test]
async fn submit_waits_while_max_pending_requests_are_outstanding() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let h = {
        let gate = gate.clone();
        Handler::new(move |_rq: IncomingRequest| {
            let gate = gate.clone();
            async move {
                gate.acquire().await.unwrap().forget();
                Ok::<_, HandlerError>(())
            }
        })
    };
    let config = PacketConfig {
        max_pending: 2,
        ..PacketConfig::default()
    };
    let (a, _b) = io_pair(None, Some(h), config);
    let first = a.submit(1, 0, "", 0).await.unwrap();
    let _second = a.submit(1, 0, "", 0).await.unwrap();
    assert_eq!(a.pending(), 2);
    let third = a.submit(1, 0, "", 0);
    tokio::pin!(third);
    assert!(
        timeout(Duration::from_millis(100), third.as_mut())
            .await
            .is_err(),
        "a third request waits for a slot"
    );
    gate.add_permits(1);
    let answered = timeout(LIMIT, first).await.unwrap().unwrap();
    assert!(answered.ok);
    let third = timeout(LIMIT, third)
        .await
        .expect("a slot came free")
        .unwrap();
    gate.add_permits(2);
    assert!(timeout(LIMIT, third).await.unwrap().unwrap().ok);
}
