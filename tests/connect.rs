//! Opening a connection, as the client and the worker do it: every connect
//! is bounded in time whatever the backend, and a broker that closes the
//! connection right after our HELLO (a ReasonChip 0.0.6 broker) is talked to
//! in legacy mode without any setting, and remembered as legacy, unless
//! `fallback_to_legacy: false` forbids it.
//!
//! The timeout tests use a transport whose connect never finishes, on a
//! paused clock. The fallback tests use [`FakeRc`], an in-memory stand-in for
//! a ReasonChip broker that counts HELLOs and records every first frame (the
//! real ReasonChip broker is in `tests/interop_reasonchip.rs`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use plexwire::client::{Client, ClientConfig, Reconnect};
use plexwire::codec::CodecKind;
use plexwire::protocol::ResultCode;
use plexwire::reconnect::{self, Backoff};
use plexwire::transport::{
    self, AnyTransport, ClientTransport, Connection, Endpoint, FrameReceiver, FrameSender,
    TransportError,
};
use plexwire::worker::{Worker, WorkerConfig, WorkerExit};
use plexwire::Error;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};

const LIMIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------- timeouts

/// Connects to `mem://…` endpoints through [`AnyTransport`], except to those
/// whose name starts with `hang`: those never finish connecting, like a host
/// that drops every packet.
#[derive(Clone)]
struct Hang;

#[async_trait]
impl ClientTransport for Hang {
    async fn connect(&self, endpoint: &Endpoint) -> Result<Connection, TransportError> {
        if endpoint.url().starts_with("mem://hang") {
            std::future::pending().await
        } else {
            AnyTransport.connect(endpoint).await
        }
    }
}

fn ep(url: &str) -> Endpoint {
    Endpoint::parse(url).unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_client_connect_that_never_finishes_fails_after_connect_timeout() {
    let t0 = Instant::now();
    let config = ClientConfig {
        connect_timeout: Duration::from_secs(3),
        ..ClientConfig::default()
    };
    match Client::connect_with(&Hang, &ep("mem://hang-client"), config).await {
        Err(e @ Error::ConnectTimeout { .. }) => {
            let Error::ConnectTimeout { endpoint, after } = &e else {
                unreachable!()
            };
            assert_eq!(
                (endpoint.as_str(), *after),
                ("mem://hang-client", Duration::from_secs(3))
            );
            let text = e.to_string();
            assert!(
                text.contains("mem://hang-client")
                    && text.contains("3s")
                    && text.contains("connect_timeout"),
                "names the endpoint, the time and what to do: {text}"
            );
        }
        other => panic!("expected a connect timeout, got {other:?}"),
    }
    assert_eq!(t0.elapsed(), Duration::from_secs(3));
}

#[tokio::test(start_paused = true)]
async fn a_worker_connect_that_never_finishes_fails_after_connect_timeout() {
    let t0 = Instant::now();
    let w = Worker::new(WorkerConfig {
        connect_timeout: Duration::from_secs(2),
        ..WorkerConfig::default()
    });
    let got = w.run_with(&Hang, &ep("mem://hang-worker")).await;
    assert!(
        matches!(&got, Err(Error::ConnectTimeout { after, .. }) if *after == Duration::from_secs(2)),
        "{got:?}"
    );
    assert_eq!(t0.elapsed(), Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn connect_any_returns_within_its_wait_even_if_no_connect_finishes() {
    let t0 = Instant::now();
    let endpoints = [ep("mem://hang-a"), ep("mem://hang-b")];
    let got = reconnect::connect_any(
        &Hang,
        &endpoints,
        Duration::from_secs(5),
        Duration::from_secs(60),
        &Backoff::default(),
    )
    .await;
    match got {
        Err(Error::Handshake { peer, rc, reason }) => {
            assert_eq!(peer, "mem://hang-a, mem://hang-b");
            assert_eq!(rc, None);
            assert!(reason.contains("did not finish within"), "{reason}");
        }
        other => panic!("{:?}", other.map(|(_, i)| i)),
    }
    assert_eq!(
        t0.elapsed(),
        Duration::from_secs(5),
        "the wait is the bound"
    );

    // With no wait: one round, each endpoint given the connect timeout.
    let t0 = Instant::now();
    let got = reconnect::connect_any(
        &Hang,
        &endpoints,
        Duration::ZERO,
        Duration::from_secs(1),
        &Backoff::default(),
    )
    .await;
    assert!(got.is_err());
    assert_eq!(t0.elapsed(), Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn a_silent_endpoint_is_failed_over_after_connect_timeout() {
    let _listener = transport::listen("mem://connect-failover").await.unwrap();
    let t0 = Instant::now();
    let (_conn, index) = reconnect::connect_any(
        &Hang,
        &[ep("mem://hang-first"), ep("mem://connect-failover")],
        Duration::ZERO,
        Duration::from_secs(4),
        &Backoff::default(),
    )
    .await
    .unwrap();
    assert_eq!(index, 1);
    assert_eq!(t0.elapsed(), Duration::from_secs(4));
}

// ---------------------------------------------------------------- fallback

/// An in-memory stand-in for a ReasonChip 0.0.6 broker, seen from one peer:
/// a connection that opens with a HELLO (JSON or binary) is closed at once,
/// unanswered, as ReasonChip does with a packet it cannot parse; a legacy
/// connection is handed to the test with its first packet. The test closes
/// it by dropping its halves.
struct FakeRc {
    url: String,
    /// Connections closed because their first frame was a HELLO.
    hellos: Arc<AtomicUsize>,
    conns: mpsc::Receiver<(FrameSender, FrameReceiver, Value)>,
}

impl FakeRc {
    async fn start(name: &str) -> FakeRc {
        let mut listener = transport::listen(&format!("mem://{name}")).await.unwrap();
        let url = listener.local_endpoint().url().to_owned();
        let hellos = Arc::new(AtomicUsize::new(0));
        let (conns_tx, conns) = mpsc::channel(16);
        let seen = hellos.clone();
        tokio::spawn(async move {
            while let Ok(conn) = listener.accept().await {
                let (tx, mut rx) = conn.into_frames();
                let Some(Ok(first)) = rx.recv_frame().await else {
                    continue;
                };
                let legacy = serde_json::from_slice::<Value>(&first)
                    .ok()
                    .filter(|v| v["packet_type"] != "HELLO");
                match legacy {
                    None => {
                        seen.fetch_add(1, Ordering::SeqCst);
                        drop((tx, rx)); // closed, unanswered
                    }
                    Some(v) => {
                        if conns_tx.send((tx, rx, v)).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        FakeRc { url, hellos, conns }
    }

    fn hellos(&self) -> usize {
        self.hellos.load(Ordering::SeqCst)
    }

    /// The next legacy connection and its first packet.
    async fn next_legacy(&mut self) -> (FrameSender, FrameReceiver, Value) {
        timeout(LIMIT, self.conns.recv())
            .await
            .expect("a legacy connection within the limit")
            .expect("the fake broker runs")
    }
}

/// A ReasonChip 0.0.6 packet: all ten keys, in its order.
fn rc_packet(fields: Value) -> Bytes {
    let mut p = json!({
        "packet_type": null, "cookie": null, "capacity": null, "pipeline": null,
        "variables": null, "detach": null, "rc": null, "error": null,
        "stacktrace": null, "result": null,
    });
    for (k, v) in fields.as_object().unwrap() {
        p[k] = v.clone();
    }
    Bytes::from(serde_json::to_vec(&p).unwrap())
}

async fn recv_json(rx: &mut FrameReceiver) -> Value {
    let frame = timeout(LIMIT, rx.recv_frame())
        .await
        .expect("a frame within the limit")
        .expect("the connection is open")
        .expect("a good frame");
    serde_json::from_slice(&frame).expect("legacy frames are JSON")
}

/// Answers one RUN on a legacy client connection: RESULT OK with the run's
/// variables as its result; returns the RUN.
async fn answer_run(tx: &mut FrameSender, run: &Value) {
    assert_eq!(run["packet_type"], "RUN", "{run}");
    assert!(
        run.get("hello").is_none(),
        "a legacy RUN has no native keys: {run}"
    );
    tx.send_frame(rc_packet(json!({
        "packet_type": "RESULT",
        "cookie": run["cookie"],
        "rc": "OK",
        "result": run["variables"],
    })))
    .await
    .unwrap();
}

#[tokio::test]
async fn a_default_client_falls_back_to_legacy_and_stays_there() {
    let mut rc = FakeRc::start("fallback-client").await;
    let config = ClientConfig {
        reconnect: Some(Reconnect {
            backoff: Backoff {
                initial: Duration::from_millis(1),
                max: Duration::from_millis(10),
                factor: 2.0,
            },
            call_wait: LIMIT,
        }),
        ..ClientConfig::default()
    };
    let client = timeout(
        LIMIT,
        Client::connect_with(&AnyTransport, &ep(&rc.url), config),
    )
    .await
    .unwrap()
    .expect("connects without any flag");
    assert_eq!(rc.hellos(), 1, "one HELLO, closed; then legacy");

    let call = tokio::spawn({
        let c = client.clone();
        async move { c.run::<_, Value>("echo", &json!({"n": 1})).await }
    });
    let (mut tx, _rx, run) = rc.next_legacy().await;
    answer_run(&mut tx, &run).await;
    assert_eq!(call.await.unwrap().unwrap(), json!({"n": 1}));

    // The broker drops the connection; the client reconnects straight in
    // legacy mode: no second HELLO. (A call made before the client noticed
    // the loss goes down with the old connection: BROKER_WENT_AWAY, retried.)
    drop((tx, _rx));
    let call = tokio::spawn({
        let c = client.clone();
        async move {
            loop {
                match c.run::<_, Value>("echo", &json!({"n": 2})).await {
                    Err(e) if e.rc() == ResultCode::BrokerWentAway => continue,
                    other => return other,
                }
            }
        }
    });
    let (mut tx, _rx, run) = rc.next_legacy().await;
    answer_run(&mut tx, &run).await;
    assert_eq!(call.await.unwrap().unwrap(), json!({"n": 2}));
    assert_eq!(
        rc.hellos(),
        1,
        "reconnects to a legacy broker send no HELLO"
    );
}

#[cfg(feature = "bincode")]
#[tokio::test]
async fn a_bincode_client_falls_back_to_legacy_json() {
    let mut rc = FakeRc::start("fallback-bincode").await;
    let config = ClientConfig {
        codec: CodecKind::Bincode,
        ..ClientConfig::default()
    };
    let client = Client::connect_with(&AnyTransport, &ep(&rc.url), config)
        .await
        .expect("falls back to JSON");
    assert_eq!(rc.hellos(), 1, "the binary HELLO was closed unanswered");
    let call = tokio::spawn(async move { client.run::<_, i64>("add", &json!({"a": 1})).await });
    let (mut tx, _rx, run) = rc.next_legacy().await; // parsed as JSON: the codec switched
    assert_eq!(run["pipeline"], "add");
    tx.send_frame(rc_packet(json!({
        "packet_type": "RESULT", "cookie": run["cookie"], "rc": "OK", "result": "42",
    })))
    .await
    .unwrap();
    assert_eq!(call.await.unwrap().unwrap(), 42);
}

#[tokio::test]
async fn a_default_worker_falls_back_to_legacy_and_stays_there() {
    let mut rc = FakeRc::start("fallback-worker").await;
    let w = plexwire::builtin::register(Worker::new(WorkerConfig {
        capacity: 3,
        ..WorkerConfig::default()
    }));
    let task = tokio::spawn({
        let (w, urls) = (w.clone(), vec![rc.url.clone()]);
        async move {
            w.run_reconnecting(
                &urls,
                Backoff {
                    initial: Duration::from_millis(1),
                    max: Duration::from_millis(10),
                    factor: 2.0,
                },
            )
            .await
        }
    });
    for session in 0..2 {
        let (mut tx, mut rx, register) = rc.next_legacy().await;
        assert_eq!(register["packet_type"], "REGISTER", "{register}");
        assert_eq!(register["capacity"], 3);
        assert!(
            register.get("pipelines").is_none(),
            "a legacy REGISTER announces no pipelines: {register}"
        );
        let cookie = uuid::Uuid::new_v4().to_string();
        tx.send_frame(rc_packet(json!({
            "packet_type": "RUN", "cookie": cookie, "pipeline": "echo",
            "variables": "{\"s\":1}",
        })))
        .await
        .unwrap();
        let result = recv_json(&mut rx).await;
        assert_eq!(
            (&result["packet_type"], &result["cookie"], &result["rc"]),
            (&json!("RESULT"), &json!(cookie), &json!("OK")),
            "session {session}: {result}"
        );
        assert_eq!(
            serde_json::from_str::<Value>(result["result"].as_str().unwrap()).unwrap(),
            json!({"s": 1})
        );
        // Drop the worker: it reconnects, straight in legacy mode.
        drop((tx, rx));
    }
    assert_eq!(rc.hellos(), 1, "only the first connection carried a HELLO");
    w.stop();
    let exit = timeout(LIMIT, task).await.unwrap().unwrap().unwrap();
    assert_eq!(exit, WorkerExit::Stopped);
}

#[tokio::test]
async fn native_mode_keeps_the_clear_error() {
    let rc = FakeRc::start("native-only").await;
    let config = ClientConfig {
        fallback_to_legacy: false,
        ..ClientConfig::default()
    };
    match Client::connect_with(&AnyTransport, &ep(&rc.url), config).await {
        Err(e @ Error::ClosedAfterHello { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("ReasonChip")
                    && text.contains("--native")
                    && text.contains("--legacy"),
                "says what it likely is and what to do: {text}"
            );
        }
        other => panic!("{other:?}"),
    }
    let w = Worker::new(WorkerConfig {
        fallback_to_legacy: false,
        ..WorkerConfig::default()
    });
    let got = w.run_with(&AnyTransport, &ep(&rc.url)).await;
    assert!(
        matches!(got, Err(Error::ClosedAfterHello { .. })),
        "{got:?}"
    );
    assert_eq!(rc.hellos(), 2, "each tried once, natively, and not again");

    // A connection handed in cannot be dialled again: no fallback there either.
    let conn = transport::connect(&rc.url).await.unwrap();
    let got = Client::from_connection(conn, ClientConfig::default()).await;
    assert!(
        matches!(got, Err(Error::ClosedAfterHello { .. })),
        "{got:?}"
    );
}

#[tokio::test]
async fn a_broker_that_vanishes_after_our_hello_is_not_remembered_as_legacy() {
    // What a plexwire broker going down looks like: the connection is taken,
    // closed after the HELLO, and the endpoint is gone when dialled again.
    let url = "mem://vanishing-broker";
    let mut listener = transport::listen(url).await.unwrap();
    let w = plexwire::builtin::register(Worker::new(WorkerConfig::default()));
    let task = tokio::spawn({
        let w = w.clone();
        async move {
            w.run_reconnecting(
                &[url.to_owned()],
                Backoff {
                    initial: Duration::from_millis(1),
                    max: Duration::from_millis(20),
                    factor: 2.0,
                },
            )
            .await
        }
    });
    let conn = timeout(LIMIT, listener.accept()).await.unwrap().unwrap();
    let (tx, mut rx) = conn.into_frames();
    let hello = rx.recv_frame().await.unwrap().unwrap();
    assert!(hello.starts_with(b"{"), "a JSON HELLO");
    drop(listener);
    drop((tx, rx));

    // The broker comes back: the worker registers natively, so it streams events.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let broker = plexwire::broker::Broker::new(plexwire::broker::BrokerConfig::default());
    let clients = broker
        .listen_clients("mem://vanishing-clients")
        .await
        .unwrap();
    broker.listen_workers(url).await.unwrap();
    assert!(
        broker.wait_for_capacity(4, LIMIT).await,
        "the worker came back"
    );
    let client = Client::connect(clients.url()).await.unwrap();
    let mut run = client.start("count", &json!({"to": 3})).await.unwrap();
    let mut events = 0;
    while timeout(LIMIT, run.next_event()).await.unwrap().is_some() {
        events += 1;
        if events == 3 {
            break;
        }
    }
    assert_eq!(events, 3, "a native session: events arrive");
    assert_eq!(run.finish::<i64>().await.unwrap(), 3);
    w.stop();
    assert_eq!(
        timeout(LIMIT, task).await.unwrap().unwrap().unwrap(),
        WorkerExit::Stopped
    );
}
