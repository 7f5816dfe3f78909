//! Issue 12, the broker library's side: memory bounded in bytes (the wait
//! queue, unfinished frames), every connection on a clock (first frame,
//! unfinished frame, idle legacy peer), and the smaller defects (a legacy
//! client's first RUN `$stats`, an undecodable first frame answered, refused
//! connections logged without flooding).
//!
//! Time is tokio's paused clock: the tests wait minutes of virtual time in
//! no real time, and never assert on speed. Byte-stream behaviour (a frame
//! that stops short) needs a byte stream: `Duplexes` hands the broker
//! in-memory duplex pipes framed like TCP.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use plexwire::broker::{Broker, BrokerConfig, ListenerOptions, Side};
use plexwire::codec::{encode_hello, Bincode, Codec, Json};
use plexwire::protocol::{Packet, Payload, ResultCode, Role};
use plexwire::transport::{Connection, Endpoint, PeerInfo, ServerTransport, TransportError};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};
use uuid::Uuid;

/// Longer than any timeout under test: a wait past it means "never".
const NEVER: Duration = Duration::from_secs(3600);

/// A listener of in-memory byte streams (framed like TCP by the broker).
struct Duplexes {
    endpoint: Endpoint,
    incoming: mpsc::Receiver<Connection>,
}

#[async_trait]
impl ServerTransport for Duplexes {
    async fn accept(&mut self) -> Result<Connection, TransportError> {
        self.incoming.recv().await.ok_or(TransportError::Closed)
    }
    fn local_endpoint(&self) -> &Endpoint {
        &self.endpoint
    }
}

/// Dials a [`Duplexes`] listener: the raw bytes of the client's end.
#[derive(Clone)]
struct Dialer(mpsc::Sender<Connection>);

impl Dialer {
    async fn dial(&self) -> DuplexStream {
        let (ours, theirs) = tokio::io::duplex(64 << 10);
        let (r, w) = tokio::io::split(theirs);
        let peer = PeerInfo {
            transport: "duplex",
            remote: "test".into(),
        };
        self.0
            .send(Connection::from_stream(r, w, peer, 16 << 20))
            .await
            .unwrap();
        ours
    }
}

fn serve_duplexes(broker: &Broker, side: Side, options: ListenerOptions) -> Dialer {
    let (tx, incoming) = mpsc::channel(64);
    let endpoint = Endpoint::parse("mem://duplexes").unwrap();
    broker.serve_with(Duplexes { endpoint, incoming }, side, options);
    Dialer(tx)
}

async fn write_frame(io: &mut DuplexStream, frame: &[u8]) {
    io.write_all(&(frame.len() as u32).to_be_bytes())
        .await
        .unwrap();
    io.write_all(frame).await.unwrap();
}

/// The next frame, or `None` once the broker has closed the connection.
async fn read_frame(io: &mut DuplexStream) -> Option<Bytes> {
    let mut head = [0u8; 4];
    io.read_exact(&mut head).await.ok()?;
    let mut body = vec![0u8; u32::from_be_bytes(head) as usize];
    io.read_exact(&mut body).await.ok()?;
    Some(Bytes::from(body))
}

fn legacy_run(pipeline: &str, variables: Option<&str>) -> (Uuid, Vec<u8>) {
    let cookie = Uuid::new_v4();
    let p = Packet::run(
        cookie,
        pipeline,
        variables.map(Payload::from_json_text),
        false,
    );
    (cookie, Json.encode(&p).unwrap().to_vec())
}

/// A legacy (ReasonChip) client whose very first frame is RUN `$stats` is
/// answered by the broker with its stats, as every later one is — not
/// routed to workers (it used to be answered NO_CAPACITY or
/// UNKNOWN_PIPELINE by the switchboard).
#[tokio::test(start_paused = true)]
async fn a_legacy_clients_first_run_of_stats_is_answered_by_the_broker() {
    let broker = Broker::new(BrokerConfig::default());
    let dialer = serve_duplexes(&broker, Side::Client, ListenerOptions::default());
    let mut io = dialer.dial().await;
    let (cookie, run) = legacy_run(plexwire::broker::STATS_PIPELINE, None);
    write_frame(&mut io, &run).await;
    let answer = Json.decode(&read_frame(&mut io).await.unwrap()).unwrap();
    assert_eq!(answer.cookie, Some(cookie));
    assert_eq!(answer.rc, Some(ResultCode::Ok), "{:?}", answer.error);
    let stats: serde_json::Value = answer.result.unwrap().decode().unwrap();
    assert_eq!(stats["clients"], 1, "{stats}");
}

/// A first frame that names its codec but is not a valid packet is answered
/// BAD_PACKET in that codec before the close (JSON for a legacy-looking
/// peer, bincode for a binary HELLO); a first frame that names no codec
/// (another protocol) is closed unanswered.
#[tokio::test(start_paused = true)]
async fn an_undecodable_first_frame_is_answered_bad_packet_where_the_codec_is_known() {
    let broker = Broker::new(BrokerConfig::default());
    let dialer = serve_duplexes(&broker, Side::Client, ListenerOptions::default());

    let mut io = dialer.dial().await;
    write_frame(&mut io, br#"{"packet_type":"NOPE"}"#).await;
    let answer = Json.decode(&read_frame(&mut io).await.unwrap()).unwrap();
    assert_eq!(answer.rc, Some(ResultCode::BadPacket));
    assert!(
        answer
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("first frame"),
        "{answer:?}"
    );
    assert!(read_frame(&mut io).await.is_none(), "then closed");

    let mut io = dialer.dial().await;
    write_frame(&mut io, b"\0PXW\x01\x01\xff\xff\xff\xff").await;
    let answer = Bincode.decode(&read_frame(&mut io).await.unwrap()).unwrap();
    assert_eq!(answer.rc, Some(ResultCode::BadPacket));
    assert!(read_frame(&mut io).await.is_none(), "then closed");

    let mut io = dialer.dial().await;
    write_frame(&mut io, b"GET / HTTP/1.1\r\n\r\n").await;
    assert!(read_frame(&mut io).await.is_none(), "closed unanswered");
    assert_eq!(broker.stats().handshake_failures, 3);
}

/// A legacy connection that announces 15 MiB and stops short is cut after
/// `frame_timeout` (it used to hold the memory forever: legacy peers were
/// never timed out), and its bytes leave the unfinished-frame count.
#[tokio::test(start_paused = true)]
async fn a_legacy_frame_that_stops_short_is_cut_after_the_frame_timeout() {
    let frame_timeout = Duration::from_secs(30);
    let broker = Broker::new(BrokerConfig {
        frame_timeout,
        legacy_idle_timeout: None,
        ..BrokerConfig::default()
    });
    let dialer = serve_duplexes(&broker, Side::Client, ListenerOptions::default());
    let mut io = dialer.dial().await;
    let (_, run) = legacy_run("nothing-serves-this", None);
    write_frame(&mut io, &run).await;
    let answer = Json.decode(&read_frame(&mut io).await.unwrap()).unwrap();
    assert_eq!(answer.rc, Some(ResultCode::NoCapacity));
    // 15 MiB announced, 1 MiB sent.
    io.write_all(&(15u32 << 20).to_be_bytes()).await.unwrap();
    io.write_all(&vec![b' '; 1 << 20]).await.unwrap();
    let start = Instant::now();
    tokio::task::yield_now().await;
    assert!(
        broker.stats().partial_frame_bytes > 0,
        "{:?}",
        broker.stats()
    );
    let closed = timeout(NEVER, read_frame(&mut io)).await;
    assert!(matches!(closed, Ok(None)), "cut, not kept: {closed:?}");
    let waited = start.elapsed();
    assert!(
        waited >= frame_timeout && waited <= frame_timeout * 2,
        "{waited:?}"
    );
    let stats = broker.stats();
    assert_eq!(stats.stalled_frames, 1, "{stats:?}");
    assert_eq!(stats.partial_frame_bytes, 0, "{stats:?}");
}

/// The bytes all connections hold in unfinished frames are bounded: the
/// connection whose bytes would pass `partial_frame_bytes` is closed, the
/// others (and well-behaved peers) go on.
#[tokio::test(start_paused = true)]
async fn unfinished_frames_of_all_connections_share_one_byte_budget() {
    let broker = Broker::new(BrokerConfig {
        partial_frame_bytes: 1 << 20,
        ..BrokerConfig::default()
    });
    let dialer = serve_duplexes(&broker, Side::Client, ListenerOptions::default());
    let mut hogs = Vec::new();
    for _ in 0..2 {
        let mut io = dialer.dial().await;
        let (_, run) = legacy_run("nothing-serves-this", None);
        write_frame(&mut io, &run).await;
        read_frame(&mut io).await.unwrap();
        io.write_all(&(8u32 << 20).to_be_bytes()).await.unwrap();
        // The second write fails part-way: the broker cuts it.
        let _ = io.write_all(&vec![b' '; 600 << 10]).await;
        hogs.push(io);
    }
    // The second one passed the budget: closed. The first is still open.
    let second = timeout(Duration::from_secs(1), read_frame(&mut hogs[1])).await;
    assert!(matches!(second, Ok(None)), "{second:?}");
    let first = timeout(Duration::from_secs(1), read_frame(&mut hogs[0])).await;
    assert!(first.is_err(), "the first hog is still open: {first:?}");
    let stats = broker.stats();
    assert_eq!(stats.stalled_frames, 1, "{stats:?}");
    assert!(stats.partial_frame_bytes <= 1 << 20, "{stats:?}");
    // Someone else is still served.
    let mut good = dialer.dial().await;
    let (cookie, run) = legacy_run(plexwire::broker::STATS_PIPELINE, None);
    write_frame(&mut good, &run).await;
    let answer = Json.decode(&read_frame(&mut good).await.unwrap()).unwrap();
    assert_eq!(
        (answer.cookie, answer.rc),
        (Some(cookie), Some(ResultCode::Ok))
    );
}

/// Idle legacy connections cannot use up a listener's `max_connections`:
/// connections that send no first frame are cut after `handshake_timeout`,
/// legacy clients that hold nothing after `legacy_idle_timeout` (they used
/// to be held forever), and the connection waiting behind them is served.
/// A registered legacy worker, idle as long, is kept.
#[tokio::test(start_paused = true)]
async fn idle_connections_are_closed_and_free_their_slots() {
    let idle = Duration::from_secs(60);
    let broker = Broker::new(BrokerConfig {
        legacy_idle_timeout: Some(idle),
        ..BrokerConfig::default()
    });
    let options = ListenerOptions {
        max_connections: 2,
        ..ListenerOptions::default()
    };
    let dialer = serve_duplexes(&broker, Side::Client, options.clone());
    let workers = serve_duplexes(&broker, Side::Worker, options);

    // A legacy worker registers, then idles.
    let mut worker = workers.dial().await;
    write_frame(
        &mut worker,
        &Json.encode(&Packet::register(1, None)).unwrap(),
    )
    .await;

    // First: two silent connections hold both slots until the handshake timeout.
    let mut silent = vec![dialer.dial().await, dialer.dial().await];
    silent[1].write_all(&[0, 0]).await.unwrap(); // half a header
    let start = Instant::now();
    let mut third = dialer.dial().await;
    let (_, run) = legacy_run(plexwire::broker::STATS_PIPELINE, None);
    write_frame(&mut third, &run).await;
    assert!(timeout(NEVER, read_frame(&mut third))
        .await
        .unwrap()
        .is_some());
    assert!(start.elapsed() >= BrokerConfig::default().handshake_timeout);
    for s in &mut silent {
        assert!(
            read_frame(s).await.is_none(),
            "cut after the handshake timeout"
        );
    }

    // Then: two legacy clients that asked once and went idle hold both slots.
    let mut idlers = vec![third];
    let mut second = dialer.dial().await;
    write_frame(
        &mut second,
        &legacy_run(plexwire::broker::STATS_PIPELINE, None).1,
    )
    .await;
    read_frame(&mut second).await.unwrap();
    idlers.push(second);
    let start = Instant::now();
    let mut waiting = dialer.dial().await;
    write_frame(
        &mut waiting,
        &legacy_run(plexwire::broker::STATS_PIPELINE, None).1,
    )
    .await;
    let answered = timeout(NEVER, read_frame(&mut waiting)).await;
    assert!(
        matches!(answered, Ok(Some(_))),
        "served once the idlers are closed"
    );
    let waited = start.elapsed();
    assert!(waited >= idle / 2 && waited <= idle * 2, "{waited:?}");
    for s in &mut idlers {
        assert!(read_frame(s).await.is_none(), "idle legacy client closed");
    }
    let stats = broker.stats();
    assert!(stats.idle_closed >= 2, "{stats:?}");
    assert_eq!(
        stats.switchboard.total_capacity, 1,
        "the worker stays: {stats:?}"
    );
    let kept = timeout(idle * 3, read_frame(&mut worker)).await;
    assert!(
        kept.is_err(),
        "a registered legacy worker is not closed: {kept:?}"
    );
}

/// One RUN queued per client is fine; a client that queues RUNs with large
/// variables stops at its byte share, answered NO_CAPACITY naming
/// `queue_bytes_per_client` (it used to be bounded by count alone: 20 RUNs
/// of 15 MiB from one connection took 326 MB).
#[tokio::test(start_paused = true)]
async fn a_client_queueing_large_runs_is_bounded_in_bytes() {
    let broker = Broker::new(BrokerConfig {
        queue_bytes_per_client: 1 << 20,
        ..BrokerConfig::default()
    });
    let clients = serve_duplexes(&broker, Side::Client, ListenerOptions::default());
    let workers = serve_duplexes(&broker, Side::Worker, ListenerOptions::default());
    // A legacy worker with one slot that never answers.
    let mut worker = workers.dial().await;
    write_frame(
        &mut worker,
        &Json.encode(&Packet::register(1, None)).unwrap(),
    )
    .await;
    assert!(broker.wait_for_capacity(1, NEVER).await);
    let mut io = clients.dial().await;
    let big = format!("\"{}\"", "x".repeat(200 << 10));
    for _ in 0..20 {
        let (_, run) = legacy_run("p", Some(&big));
        write_frame(&mut io, &run).await;
    }
    read_frame(&mut worker).await.unwrap(); // the first run, dispatched
    let mut refused = Vec::new();
    while let Ok(Some(frame)) = timeout(Duration::from_secs(1), read_frame(&mut io)).await {
        refused.push(Json.decode(&frame).unwrap());
    }
    for p in &refused {
        assert_eq!(p.rc, Some(ResultCode::NoCapacity));
        assert!(
            p.error
                .as_deref()
                .unwrap_or_default()
                .contains("queue_bytes_per_client"),
            "{p:?}"
        );
    }
    let stats = broker.stats().switchboard;
    assert_eq!(stats.queued + refused.len(), 19, "{stats:?}");
    assert!(refused.len() >= 10, "{} refused, {stats:?}", refused.len());
    assert!(stats.queued_bytes <= 1 << 20, "{stats:?}");
}

/// A writer that appends to a shared buffer (the log under test).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines_with(&self, needle: &str) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    }
}

/// A burst of refused connections gives one WARN line, and the next line
/// (after the interval) carries the count of those not logged one by one —
/// not one line each (2 000 lines in a second of churn, before).
#[tokio::test(start_paused = true)]
async fn refused_connections_are_logged_at_most_once_a_second_with_a_count() {
    let log = Captured::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // The current-thread runtime runs the broker's tasks on this thread.
    let _guard = tracing::subscriber::set_default(subscriber);
    let broker = Broker::new(BrokerConfig::default());
    let dialer = serve_duplexes(&broker, Side::Worker, ListenerOptions::default());
    let hello = encode_hello(&Json, &Packet::hello(Role::Client, "json", None)).unwrap();
    let refuse_burst = |n: usize| {
        let dialer = dialer.clone();
        let hello = hello.clone();
        async move {
            for _ in 0..n {
                let mut io = dialer.dial().await;
                write_frame(&mut io, &hello).await; // a client on the worker listener
                let answer = Json.decode(&read_frame(&mut io).await.unwrap()).unwrap();
                assert_eq!(answer.rc, Some(ResultCode::BadPacket));
            }
        }
    };
    refuse_burst(50).await;
    assert_eq!(broker.stats().handshake_failures, 50);
    assert_eq!(
        log.lines_with("connection refused").len(),
        1,
        "one line for the burst"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    refuse_burst(1).await;
    let lines = log.lines_with("connection refused");
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(lines[1].contains("suppressed=49"), "{}", lines[1]);
}

/// Detached runs whose client has gone are listed by `$detached` and can be
/// cancelled by another client, which is answered; before, only a broker
/// restart cleared them (a CANCEL from anyone else was COOKIE_NOT_FOUND).
#[tokio::test]
async fn orphaned_detached_runs_are_listed_and_cancelled_by_another_client() {
    use plexwire::client::Client;
    use plexwire::worker::{Worker, WorkerConfig};
    use serde_json::{json, Value};

    let broker = Broker::new(BrokerConfig::default());
    let clients = broker.listen_clients("mem://orphans-c").await.unwrap();
    let workers = broker.listen_workers("mem://orphans-w").await.unwrap();
    let w = plexwire::builtin::register(Worker::new(WorkerConfig {
        capacity: 2,
        ..WorkerConfig::default()
    }));
    let url = workers.url().to_owned();
    tokio::spawn(async move { w.run(&url).await });
    assert!(broker.wait_for_capacity(2, Duration::from_secs(10)).await);

    let a = Client::connect(clients.url()).await.unwrap();
    let cookie = a
        .run_detached("sleep", &json!({"seconds": 3600}))
        .await
        .unwrap();
    a.close(Duration::from_secs(2)).await;

    let b = Client::connect(clients.url()).await.unwrap();
    let listed = timeout(Duration::from_secs(10), async {
        loop {
            let list: Value = b.run("$detached", &json!({})).await.unwrap();
            if list.as_array().is_some_and(|l| !l.is_empty())
                && broker.stats().switchboard.running == 1
            {
                return list;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the orphan is listed");
    assert_eq!(
        listed,
        json!([{"cookie": cookie.to_string(), "pipeline": "sleep", "running": true}])
    );

    b.cancel_orphan(cookie)
        .await
        .expect("cancelled and answered");
    let list: Value = b.run("$detached", &json!({})).await.unwrap();
    assert_eq!(list, json!([]));
    let s = broker.stats().switchboard;
    assert_eq!((s.routes, s.free_capacity), (0, 2), "{s:?}");
    // Nothing left to take: a second cancel is COOKIE_NOT_FOUND.
    let again = b.cancel_orphan(cookie).await.unwrap_err();
    assert_eq!(again.rc(), ResultCode::CookieNotFound);
    // A run some connected client owns cannot be taken over.
    let mine = b
        .run_detached("sleep", &json!({"seconds": 3600}))
        .await
        .unwrap();
    let c = Client::connect(clients.url()).await.unwrap();
    assert_eq!(
        c.cancel_orphan(mine).await.unwrap_err().rc(),
        ResultCode::CookieNotFound
    );
}
