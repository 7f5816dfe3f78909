//! Liveness and authentication: silent peers are declared dead, healthy idle
//! ones are kept alive by PING/PONG, tokens are checked per role, and a
//! listener may refuse legacy (HELLO-less) peers.

use std::time::Duration;

use plexwire::broker::{Broker, BrokerConfig, ListenerOptions, Side};
use plexwire::client::{Client, ClientConfig};
use plexwire::codec::{encode_hello, Codec, Json};
use plexwire::protocol::{Packet, PacketType, ResultCode, Role};
use plexwire::transport::{self, AnyTransport, ClientTransport, Endpoint};
use plexwire::worker::{Worker, WorkerConfig, WorkerExit};
use plexwire::{Error, RunError};
use serde_json::{json, Value};
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(20);

// Short enough to test in a second, long enough for a loaded 2-core machine.
const PING: Duration = Duration::from_millis(100);
const PING_TIMEOUT: Duration = Duration::from_millis(1000);

fn quick_pings() -> BrokerConfig {
    BrokerConfig {
        ping_interval: PING,
        ping_timeout: PING_TIMEOUT,
        ..BrokerConfig::default()
    }
}

/// A worker with the built-in pipelines and default (unhurried) liveness.
fn builtin_worker(token: Option<&str>) -> Worker {
    plexwire::builtin::register(Worker::new(WorkerConfig {
        capacity: 2,
        token: token.map(str::to_owned),
        ..WorkerConfig::default()
    }))
}

/// The same with quick pings, for the liveness tests.
fn pinging_worker() -> Worker {
    plexwire::builtin::register(Worker::new(WorkerConfig {
        capacity: 2,
        ping_interval: PING,
        ping_timeout: PING_TIMEOUT,
        ..WorkerConfig::default()
    }))
}

fn client_config(token: Option<&str>) -> ClientConfig {
    ClientConfig {
        token: token.map(str::to_owned),
        ..ClientConfig::default()
    }
}

fn pinging_client() -> ClientConfig {
    ClientConfig {
        ping_interval: PING,
        ping_timeout: PING_TIMEOUT,
        ..ClientConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_goes_silent_mid_run_is_declared_dead() {
    let broker = Broker::new(quick_pings());
    let clients = broker.listen_clients("tcp://127.0.0.1:0").await.unwrap();
    let workers = broker.listen_workers("tcp://127.0.0.1:0").await.unwrap();
    // A native worker that registers, takes a RUN, then never says anything again
    // (its socket stays open: only liveness can tell it is gone).
    let (mut tx, mut rx) = AnyTransport.connect(&workers).await.unwrap().into_frames();
    tx.send_frame(encode_hello(&Json, &Packet::hello(Role::Worker, "json", None)).unwrap())
        .await
        .unwrap();
    rx.recv_frame().await.unwrap().unwrap();
    tx.send_frame(Json.encode(&Packet::register(1, None)).unwrap())
        .await
        .unwrap();
    assert!(broker.wait_for_capacity(1, LIMIT).await);
    let client = Client::connect_with(&AnyTransport, &clients, pinging_client())
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let r = timeout(LIMIT, client.run::<_, Value>("anything", &json!({})))
        .await
        .unwrap();
    assert_eq!(r.unwrap_err().rc(), ResultCode::WorkerWentAway);
    assert!(
        started.elapsed() < 5 * PING_TIMEOUT,
        "answered within the liveness timeout: {:?}",
        started.elapsed()
    );
    let s = broker.stats();
    assert_eq!((s.timed_out, s.switchboard.routes), (1, 0));
    drop((tx, rx));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_healthy_peers_are_kept_alive() {
    let broker = Broker::new(quick_pings());
    let clients = broker.listen_clients("tcp://127.0.0.1:0").await.unwrap();
    let workers = broker.listen_workers("tcp://127.0.0.1:0").await.unwrap();
    let w = pinging_worker();
    let url = workers.url().to_owned();
    tokio::spawn(async move { w.run(&url).await });
    assert!(broker.wait_for_capacity(2, LIMIT).await);
    let client = Client::connect_with(&AnyTransport, &clients, pinging_client())
        .await
        .unwrap();
    tokio::time::sleep(3 * PING_TIMEOUT).await; // three ping timeouts of silence on every link
    assert_eq!(
        client
            .run::<_, i64>("add", &json!({"a": 1, "b": 2}))
            .await
            .unwrap(),
        3
    );
    assert_eq!(broker.stats().timed_out, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_broker_fails_pending_calls() {
    // A fake broker: answers HELLO, then ignores everything.
    let mut listener = transport::listen("tcp://127.0.0.1:0").await.unwrap();
    let ep: Endpoint = listener.local_endpoint().clone();
    let fake = tokio::spawn(async move {
        let (mut tx, mut rx) = listener.accept().await.unwrap().into_frames();
        rx.recv_frame().await.unwrap().unwrap();
        tx.send_frame(
            Json.encode(&Packet::hello(Role::Broker, "json", None))
                .unwrap(),
        )
        .await
        .unwrap();
        while rx.recv_frame().await.is_some() {}
    });
    let client = Client::connect_with(&AnyTransport, &ep, pinging_client())
        .await
        .unwrap();
    let r = timeout(LIMIT, client.run::<_, Value>("echo", &json!({})))
        .await
        .unwrap();
    assert!(matches!(r, Err(RunError::BrokerWentAway { .. })), "{r:?}");
    assert!(client.is_closed());
    fake.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_broker_ends_the_worker_session() {
    let mut listener = transport::listen("tcp://127.0.0.1:0").await.unwrap();
    let ep: Endpoint = listener.local_endpoint().clone();
    let fake = tokio::spawn(async move {
        let (mut tx, mut rx) = listener.accept().await.unwrap().into_frames();
        rx.recv_frame().await.unwrap().unwrap();
        tx.send_frame(
            Json.encode(&Packet::hello(Role::Broker, "json", None))
                .unwrap(),
        )
        .await
        .unwrap();
        let mut pings = 0;
        while let Some(Ok(f)) = rx.recv_frame().await {
            if Json
                .decode(&f)
                .map(|p| p.packet_type == PacketType::Ping)
                .unwrap_or(false)
            {
                pings += 1;
            }
        }
        pings
    });
    let exit = timeout(LIMIT, pinging_worker().run_with(&AnyTransport, &ep))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(exit, WorkerExit::BrokerGone);
    assert!(
        timeout(LIMIT, fake).await.unwrap().unwrap() >= 1,
        "the worker pinged before giving up"
    );
}

#[tokio::test]
async fn tokens_are_checked_per_role() {
    let broker = Broker::new(BrokerConfig {
        client_token: Some("c-secret".into()),
        worker_token: Some("w-secret".into()),
        ..BrokerConfig::default()
    });
    let clients = broker.listen_clients("mem://auth-clients").await.unwrap();
    let workers = broker.listen_workers("mem://auth-workers").await.unwrap();

    match builtin_worker(Some("c-secret"))
        .run_with(&AnyTransport, &workers)
        .await
    {
        Err(Error::Handshake { rc, reason, .. }) => assert!(
            rc == Some(ResultCode::Unauthorized) && reason.contains("token"),
            "{rc:?}: {reason}"
        ),
        other => panic!("{other:?}"),
    }
    let w = builtin_worker(Some("w-secret"));
    let url = workers.url().to_owned();
    tokio::spawn(async move { w.run(&url).await });
    assert!(broker.wait_for_capacity(2, LIMIT).await);

    for bad in [None, Some("wrong"), Some("w-secret"), Some("c-secre")] {
        match Client::connect_with(&AnyTransport, &clients, client_config(bad)).await {
            Err(Error::Handshake { rc, reason, .. }) => {
                assert_eq!(rc, Some(ResultCode::Unauthorized), "{bad:?}: {reason}")
            }
            other => panic!("{bad:?}: {other:?}"),
        }
    }
    let client = Client::connect_with(&AnyTransport, &clients, client_config(Some("c-secret")))
        .await
        .unwrap();
    assert_eq!(
        client
            .run::<_, i64>("add", &json!({"a": 2, "b": 2}))
            .await
            .unwrap(),
        4
    );
    assert_eq!(broker.stats().unauthorized, 5);
}

#[tokio::test]
async fn a_listener_can_refuse_legacy_peers() {
    let broker = Broker::new(BrokerConfig::default());
    let strict = broker
        .listen(
            "mem://strict-clients",
            Side::Client,
            ListenerOptions {
                allow_legacy: false,
                ..ListenerOptions::default()
            },
        )
        .await
        .unwrap();
    let open = broker.listen_clients("mem://open-clients").await.unwrap();
    let legacy = ClientConfig {
        legacy: true,
        ..ClientConfig::default()
    };

    let c = Client::connect_with(&AnyTransport, &strict, legacy.clone())
        .await
        .unwrap();
    let r = timeout(LIMIT, c.run::<_, Value>("echo", &json!({})))
        .await
        .unwrap();
    assert!(
        matches!(r, Err(RunError::BrokerWentAway { .. })),
        "refused and closed: {r:?}"
    );
    assert_eq!(broker.stats().unauthorized, 1);

    let c = Client::connect_with(&AnyTransport, &open, legacy)
        .await
        .unwrap();
    let r = c.run::<_, Value>("echo", &json!({})).await;
    assert_eq!(
        r.unwrap_err().rc(),
        ResultCode::NoCapacity,
        "admitted (no worker yet)"
    );
    // Native peers use the strict listener as usual.
    Client::connect_with(&AnyTransport, &strict, ClientConfig::default())
        .await
        .unwrap();
}

async fn free_tcp_url() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    format!("tcp://{}", l.local_addr().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_reconnects_and_re_registers_after_a_broker_restart() {
    let worker_url = free_tcp_url().await;
    let broker = Broker::new(BrokerConfig::default());
    broker.listen_workers(&worker_url).await.unwrap();
    let w = builtin_worker(None);
    let urls = vec![worker_url.clone()];
    let running = w.clone();
    let task =
        tokio::spawn(async move { running.run_reconnecting(&urls, Default::default()).await });
    assert!(broker.wait_for_capacity(2, LIMIT).await);
    broker.shutdown(Duration::from_millis(100)).await; // SHUTDOWN, then gone

    let broker = Broker::new(BrokerConfig::default());
    let clients = broker
        .listen_clients("mem://restart-clients")
        .await
        .unwrap();
    broker.listen_workers(&worker_url).await.unwrap();
    assert!(
        broker.wait_for_capacity(2, LIMIT).await,
        "the worker came back"
    );
    let client = Client::connect(clients.url()).await.unwrap();
    assert_eq!(
        client
            .run::<_, i64>("add", &json!({"a": 20, "b": 22}))
            .await
            .unwrap(),
        42
    );
    w.stop();
    assert_eq!(
        timeout(LIMIT, task).await.unwrap().unwrap().unwrap(),
        WorkerExit::Stopped
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_fails_over_to_the_next_broker() {
    let dead = free_tcp_url().await;
    let broker = Broker::new(BrokerConfig::default());
    let live = broker.listen_workers("tcp://127.0.0.1:0").await.unwrap();
    let w = builtin_worker(None);
    let urls = vec![dead, live.url().to_owned()];
    let running = w.clone();
    let task =
        tokio::spawn(async move { running.run_reconnecting(&urls, Default::default()).await });
    assert!(broker.wait_for_capacity(2, LIMIT).await);
    w.stop();
    timeout(LIMIT, task).await.unwrap().unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_waits_for_a_broker_that_is_not_up_yet() {
    let url = free_tcp_url().await;
    // Nothing listens: a zero wait fails at once, with the URL in the error.
    let e = Client::connect_any(
        std::slice::from_ref(&url),
        ClientConfig::default(),
        Duration::ZERO,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains(&url), "{e}");
    let late = url.clone();
    let starter = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let broker = Broker::new(BrokerConfig::default());
        broker.listen_clients(&late).await.unwrap();
        broker
    });
    let client = Client::connect_any(
        std::slice::from_ref(&url),
        ClientConfig::default(),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let _broker = starter.await.unwrap();
    // Connected: an empty broker answers NO_CAPACITY.
    assert_eq!(
        client
            .run::<_, Value>("echo", &json!({}))
            .await
            .unwrap_err()
            .rc(),
        ResultCode::NoCapacity
    );
    // Failover at connect time: a dead endpoint first.
    let dead = free_tcp_url().await;
    Client::connect_any(&[dead, url], ClientConfig::default(), Duration::ZERO)
        .await
        .unwrap();
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_dropped_and_memory_stays_bounded() {
    use plexwire::protocol::Payload;
    let broker = Broker::new(BrokerConfig {
        send_queue: 512,
        ..BrokerConfig::default()
    });
    let clients = broker.listen_clients("tcp://127.0.0.1:0").await.unwrap();
    let workers = broker.listen_workers("tcp://127.0.0.1:0").await.unwrap();
    let w = builtin_worker(None);
    let url = workers.url().to_owned();
    tokio::spawn(async move { w.run(&url).await });
    assert!(broker.wait_for_capacity(2, LIMIT).await);
    let before = rss_kib();
    // A native client asks for ten million events, then never reads.
    let (mut tx, mut rx) = AnyTransport.connect(&clients).await.unwrap().into_frames();
    tx.send_frame(encode_hello(&Json, &Packet::hello(Role::Client, "json", None)).unwrap())
        .await
        .unwrap();
    rx.recv_frame().await.unwrap().unwrap();
    let run = Packet::run(
        uuid::Uuid::new_v4(),
        "count",
        Some(Payload::from_json_text(r#"{"to": 10000000}"#)),
        false,
    );
    tx.send_frame(Json.encode(&run).unwrap()).await.unwrap();
    // The broker's queue to this client fills; it drops the client and cancels its run.
    timeout(LIMIT, async {
        loop {
            let s = broker.stats();
            if s.slow_consumers == 1
                && s.switchboard.routes == 0
                && s.switchboard.free_capacity == 2
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("slow consumer not dropped: {:?}", broker.stats()));
    let grown = rss_kib().saturating_sub(before);
    assert!(
        grown < 64 * 1024,
        "memory grew by {grown} KiB while a consumer stalled"
    );
    assert_eq!(
        broker.stats().switchboard.failed,
        vec![(ResultCode::Cancelled, 1)],
        "cancelled at the worker"
    );
    // Everyone else is fine.
    let c = Client::connect(clients.url()).await.unwrap();
    assert_eq!(
        c.run::<_, i64>("add", &json!({"a": 1, "b": 1}))
            .await
            .unwrap(),
        2
    );
    drop((tx, rx));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_reconnects_and_calls_made_meanwhile_wait_within_a_bound() {
    use plexwire::client::Reconnect;
    let (client_url, worker_url) = (free_tcp_url().await, free_tcp_url().await);
    // Workers first; clients only once the worker is back, so the call that
    // waited for the reconnect does not meet an empty broker.
    let start_broker = || async {
        let b = Broker::new(BrokerConfig::default());
        b.listen_workers(&worker_url).await.unwrap();
        assert!(
            b.wait_for_capacity(2, LIMIT).await,
            "the worker (re)registered"
        );
        b.listen_clients(&client_url).await.unwrap();
        b
    };
    let w = builtin_worker(None);
    let urls = vec![worker_url.clone()];
    let running = w.clone();
    tokio::spawn(async move { running.run_reconnecting(&urls, Default::default()).await });
    let broker = start_broker().await;

    let patient = ClientConfig {
        reconnect: Some(Reconnect {
            call_wait: Duration::from_secs(10),
            ..Reconnect::default()
        }),
        ..ClientConfig::default()
    };
    let impatient = ClientConfig {
        reconnect: Some(Reconnect::default()),
        ..ClientConfig::default()
    };
    let client = Client::connect_any(std::slice::from_ref(&client_url), patient, Duration::ZERO)
        .await
        .unwrap();
    let hasty = Client::connect_any(std::slice::from_ref(&client_url), impatient, Duration::ZERO)
        .await
        .unwrap();
    let in_flight = client
        .start("sleep", &json!({"seconds": 60}))
        .await
        .unwrap();

    broker.shutdown(Duration::from_millis(50)).await;
    // The call that was in flight on the lost connection is answered.
    let r = timeout(LIMIT, in_flight.finish::<Value>()).await.unwrap();
    assert!(matches!(r, Err(RunError::BrokerWentAway { .. })), "{r:?}");
    // While disconnected: fail fast, or wait for the reconnect.
    let r = hasty.run::<_, Value>("echo", &json!({})).await;
    assert!(matches!(r, Err(RunError::BrokerWentAway { .. })), "{r:?}");
    let waiting = {
        let client = client.clone();
        tokio::spawn(async move { client.run::<_, i64>("add", &json!({"a": 41, "b": 1})).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _broker = start_broker().await;
    assert_eq!(
        timeout(LIMIT, waiting).await.unwrap().unwrap().unwrap(),
        42,
        "the waiting call ran once the client reconnected"
    );
    assert!(!client.is_closed());
    w.stop();
}

#[tokio::test]
async fn a_client_bounds_its_pending_calls() {
    let broker = Broker::new(BrokerConfig::default());
    let clients = broker
        .listen_clients("mem://bounded-clients")
        .await
        .unwrap();
    let workers = broker
        .listen_workers("mem://bounded-workers")
        .await
        .unwrap();
    let w = builtin_worker(None);
    let url = workers.url().to_owned();
    tokio::spawn(async move { w.run(&url).await });
    assert!(broker.wait_for_capacity(2, LIMIT).await);
    let c = Client::connect_with(
        &AnyTransport,
        &clients,
        ClientConfig {
            max_pending: 3,
            ..ClientConfig::default()
        },
    )
    .await
    .unwrap();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(c.start("sleep", &json!({"seconds": 60})).await.unwrap());
    }
    let e = c.start("sleep", &json!({"seconds": 60})).await.unwrap_err();
    assert_eq!(e.rc(), ResultCode::NoCapacity);
    assert!(e.to_string().contains("max_pending"), "{e}");
    drop(held.pop()); // the queued one
    drop(held.remove(0)); // a running one: its slot frees when the worker answers CANCELLED
    let room = c
        .start("echo", &json!({}))
        .await
        .expect("room again once a call ended");
    assert_eq!(room.finish::<Value>().await.unwrap(), json!({}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_queues_are_bounded_in_bytes_too() {
    use plexwire::protocol::Payload;
    // Room for 100000 packets but only 256 KiB: big events hit the byte budget first.
    let broker = Broker::new(BrokerConfig {
        send_queue: 100_000,
        send_queue_bytes: 256 << 10,
        ..BrokerConfig::default()
    });
    let clients = broker.listen_clients("tcp://127.0.0.1:0").await.unwrap();
    let workers = broker.listen_workers("tcp://127.0.0.1:0").await.unwrap();
    let w = builtin_worker(None).pipeline("flood", |ctx, _v: Value| async move {
        let chunk = "x".repeat(16 << 10);
        loop {
            ctx.emit(&chunk).await?;
        }
        #[allow(unreachable_code)]
        Ok::<(), plexwire::worker::HandlerError>(())
    });
    let url = workers.url().to_owned();
    tokio::spawn(async move { w.run(&url).await });
    assert!(broker.wait_for_capacity(2, LIMIT).await);
    let before = rss_kib();
    let (mut tx, mut rx) = AnyTransport.connect(&clients).await.unwrap().into_frames();
    tx.send_frame(encode_hello(&Json, &Packet::hello(Role::Client, "json", None)).unwrap())
        .await
        .unwrap();
    rx.recv_frame().await.unwrap().unwrap();
    let run = Packet::run(
        uuid::Uuid::new_v4(),
        "flood",
        Some(Payload::from_json_text("{}")),
        false,
    );
    tx.send_frame(Json.encode(&run).unwrap()).await.unwrap();
    timeout(LIMIT, async {
        while !(broker.stats().slow_consumers == 1 && broker.stats().switchboard.routes == 0) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("not dropped by the byte budget: {:?}", broker.stats()));
    let grown = rss_kib().saturating_sub(before);
    assert!(grown < 64 * 1024, "memory grew by {grown} KiB");
    drop((tx, rx));
}

#[tokio::test]
async fn close_answers_pending_calls_and_stays_closed() {
    use plexwire::client::Reconnect;
    let broker = Broker::new(BrokerConfig::default());
    let clients = broker.listen_clients("mem://close-clients").await.unwrap();
    let workers = broker.listen_workers("mem://close-workers").await.unwrap();
    let w = builtin_worker(None);
    let url = workers.url().to_owned();
    tokio::spawn(async move { w.run(&url).await });
    assert!(broker.wait_for_capacity(2, LIMIT).await);
    let config = ClientConfig {
        reconnect: Some(Reconnect {
            call_wait: Duration::from_secs(5),
            ..Reconnect::default()
        }),
        ..ClientConfig::default()
    };
    let c = Client::connect_with(&AnyTransport, &clients, config)
        .await
        .unwrap();
    let pending = c.start("sleep", &json!({"seconds": 60})).await.unwrap();
    c.close(LIMIT).await;
    let r = timeout(LIMIT, pending.finish::<Value>()).await.unwrap();
    assert!(matches!(r, Err(RunError::BrokerWentAway { .. })), "{r:?}");
    // Closed on purpose: no reconnect, and new calls fail at once rather than wait.
    let started = tokio::time::Instant::now();
    let r = c.run::<_, Value>("echo", &json!({})).await;
    assert!(matches!(r, Err(RunError::BrokerWentAway { .. })), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(broker.wait_for_capacity(2, LIMIT).await);
    timeout(LIMIT, async {
        while broker.stats().switchboard.clients > 0 || broker.stats().switchboard.routes > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the broker saw the close and cancelled the run");
}

/// The broker enforces deadlines with its own clock (virtual here): with a
/// default deadline, a run that is still running when it passes is
/// answered TIMEOUT and cancelled at its worker (the slot comes back), and
/// one still queued is answered TIMEOUT and leaves the queue. A client's
/// own `timeout` travels as the RUN's `timeout_ms` and is enforced the same.
#[tokio::test(start_paused = true)]
async fn the_broker_enforces_deadlines_queued_and_running() {
    let broker = Broker::new(BrokerConfig {
        default_timeout: Some(Duration::from_secs(5)),
        ..BrokerConfig::default()
    });
    let clients = broker.listen_clients("mem://deadlines-c").await.unwrap();
    let workers = broker.listen_workers("mem://deadlines-w").await.unwrap();
    let w = plexwire::builtin::register(Worker::new(WorkerConfig {
        capacity: 1,
        ..WorkerConfig::default()
    }));
    let url = workers.url().to_owned();
    tokio::spawn(async move { w.run(&url).await });
    assert!(broker.wait_for_capacity(1, Duration::from_secs(10)).await);
    let c = Client::connect(clients.url()).await.unwrap();

    let running = c.start("sleep", &json!({"seconds": 3600})).await.unwrap();
    let queued = c.start("sleep", &json!({"seconds": 1})).await.unwrap();
    let (r, q) = tokio::join!(running.finish::<Value>(), queued.finish::<Value>());
    for (what, outcome) in [("running", r), ("queued", q)] {
        let e = outcome.expect_err(what);
        assert_eq!(e.rc(), ResultCode::Timeout, "{what}: {e}");
        assert!(e.to_string().contains("deadline"), "{what}: {e}");
    }
    // The worker was told to cancel: its slot comes back, nothing is held.
    timeout(Duration::from_secs(10), async {
        loop {
            let s = broker.stats().switchboard;
            if s.routes == 0 && s.free_capacity == 1 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the slot came back");

    // A client's own timeout, shorter than the default, is the deadline.
    let started = tokio::time::Instant::now();
    let e = c
        .run_with::<_, Value>(
            "sleep",
            &json!({"seconds": 3600}),
            plexwire::client::RunOptions {
                timeout: Some(Duration::from_secs(2)),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "{e}");
    assert!(
        matches!(e, RunError::Timeout { .. }) || e.rc() == ResultCode::Timeout,
        "{e}"
    );
}

/// Per-run flow control: a client whose reader pauses (here for a virtual
/// second every 2 500 events) with a buffer of only 64 events still gets
/// every one of 20 000 events, in order, and none is dropped: the worker's
/// `emit` waits for the client's CREDITs instead of the broker or the client
/// dropping what does not fit. Before, the client's buffer overflowed and
/// counted dropped events.
#[tokio::test(start_paused = true)]
async fn a_slow_reader_gets_every_event_in_order() {
    let broker = Broker::new(BrokerConfig::default());
    let clients = broker.listen_clients("mem://credits-c").await.unwrap();
    let workers = broker.listen_workers("mem://credits-w").await.unwrap();
    let w = plexwire::builtin::register(Worker::new(WorkerConfig {
        capacity: 1,
        ..WorkerConfig::default()
    }));
    let url = workers.url().to_owned();
    tokio::spawn(async move { w.run(&url).await });
    assert!(broker.wait_for_capacity(1, Duration::from_secs(10)).await);
    let c = Client::connect_with(
        &AnyTransport,
        &clients,
        ClientConfig {
            event_backlog: 64,
            ..ClientConfig::default()
        },
    )
    .await
    .unwrap();
    const N: i64 = 20_000;
    let mut run = c.start("count", &json!({"to": N})).await.unwrap();
    let mut next = 1i64;
    while let Some(event) = run.next_event().await {
        let got: i64 = serde_json::from_str(event.as_str()).unwrap();
        assert_eq!(got, next, "events in order, none missing");
        next += 1;
        if next % 2_500 == 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    assert_eq!(next, N + 1, "every event arrived");
    assert_eq!(run.finish::<i64>().await.unwrap(), N);
    assert_eq!(c.dropped_events(), 0);
    assert_eq!(
        broker.stats().slow_consumers,
        0,
        "the client was never dropped"
    );
}

/// Choosing the worker end to end: workers announce a name and labels,
/// a client's run names one or requires labels and runs only there; a run
/// nobody can take is answered UNKNOWN_PIPELINE at once.
#[tokio::test]
async fn a_run_can_choose_its_worker_by_name_or_labels() {
    let broker = Broker::new(BrokerConfig::default());
    let clients = broker.listen_clients("mem://choose-c").await.unwrap();
    let workers = broker.listen_workers("mem://choose-w").await.unwrap();
    for (name, labels) in [("build-1", vec!["gpu=0"]), ("build-2", vec!["gpu=1"])] {
        let me = name.to_owned();
        let w = Worker::new(WorkerConfig {
            capacity: 2,
            name: Some(name.to_owned()),
            labels: labels.into_iter().map(str::to_owned).collect(),
            ..WorkerConfig::default()
        })
        .pipeline("who", move |_ctx, _: Value| {
            let me = me.clone();
            async move { Ok::<_, plexwire::worker::HandlerError>(me) }
        });
        let url = workers.url().to_owned();
        tokio::spawn(async move { w.run(&url).await });
    }
    assert!(broker.wait_for_capacity(4, Duration::from_secs(10)).await);
    let c = Client::connect(clients.url()).await.unwrap();
    let on = |worker: Option<&str>, labels: &[&str]| plexwire::client::RunOptions {
        worker: worker.map(str::to_owned),
        labels: labels.iter().map(|l| l.to_string()).collect(),
        ..Default::default()
    };
    for _ in 0..5 {
        let by_name: String = c
            .run_with("who", &json!({}), on(Some("build-1"), &[]))
            .await
            .unwrap();
        assert_eq!(by_name, "build-1");
        let by_label: String = c
            .run_with("who", &json!({}), on(None, &["gpu=1"]))
            .await
            .unwrap();
        assert_eq!(by_label, "build-2");
    }
    let e = c
        .run_with::<_, String>("who", &json!({}), on(Some("build-1"), &["gpu=1"]))
        .await
        .unwrap_err();
    assert_eq!(e.rc(), ResultCode::UnknownPipeline, "{e}");
}
