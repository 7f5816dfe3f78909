//! Broker, worker and client end to end, the same tests over every backend
//! of `plexwire::transport::registry()` (the first loopback variant of each
//! scheme: `tcp`, not also `tcp_v6`), with JSON and bincode peers. Each case
//! is one test that runs over the backends in turn and names the ones that
//! failed; `PLEXWIRE_BACKENDS=tcp,quic` narrows a run.

mod common;

use std::time::Duration;

use plexwire::broker::{Broker, BrokerConfig};
use plexwire::client::{Client, ClientConfig, RunOptions};
use plexwire::codec::CodecKind;
use plexwire::protocol::ResultCode;
use plexwire::transport::{AnyTransport, Endpoint};
use plexwire::worker::{Worker, WorkerConfig};
use plexwire::RunError;
use serde_json::{json, Value};
use tokio::time::timeout;

use common::Variant;

const LIMIT: Duration = Duration::from_secs(20);

struct Setup {
    broker: Broker,
    clients: Endpoint,
    workers: Endpoint,
}

async fn setup(backend: &Variant, config: BrokerConfig) -> Setup {
    let broker = Broker::new(config);
    let (c, w) = (backend.fresh(), backend.fresh());
    let clients = c.connect_endpoint(&broker.listen_clients(&c.listen).await.unwrap());
    let workers = w.connect_endpoint(&broker.listen_workers(&w.listen).await.unwrap());
    Setup {
        broker,
        clients,
        workers,
    }
}

fn worker(capacity: u32, codec: CodecKind) -> Worker {
    plexwire::builtin::register(Worker::new(WorkerConfig {
        capacity,
        codec,
        ..WorkerConfig::default()
    }))
}

impl Setup {
    fn spawn_worker(&self, w: Worker) -> tokio::task::JoinHandle<()> {
        let ep = self.workers.clone();
        tokio::spawn(async move {
            w.run_with(&AnyTransport, &ep).await.unwrap();
        })
    }

    async fn client(&self, codec: CodecKind) -> Client {
        Client::connect_with(
            &AnyTransport,
            &self.clients,
            ClientConfig {
                codec,
                ..ClientConfig::default()
            },
        )
        .await
        .unwrap()
    }

    async fn wait_capacity(&self, n: u64) {
        assert!(
            self.broker.wait_for_capacity(n, LIMIT).await,
            "workers registered"
        );
    }

    async fn wait_idle(&self) {
        timeout(LIMIT, async {
            loop {
                let s = self.broker.stats().switchboard;
                if s.routes == 0 && s.free_capacity == s.total_capacity {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("broker not idle: {:?}", self.broker.stats()));
    }
}

pub async fn runs_echo_add_fail(backend: Variant) {
    let s = setup(&backend, BrokerConfig::default()).await;
    s.spawn_worker(worker(4, CodecKind::Json));
    s.wait_capacity(4).await;
    let c = s.client(CodecKind::Json).await;
    let v: Value = c
        .run("echo", &json!({"msg": "hé", "n": [1, 2]}))
        .await
        .unwrap();
    assert_eq!(v, json!({"msg": "hé", "n": [1, 2]}));
    let sum: i64 = c.run("add", &json!({"a": 0, "b": 0})).await.unwrap();
    assert_eq!(
        sum, 0,
        "falsy results survive (ReasonChip turns them into null)"
    );
    match c.run::<_, Value>("fail", &json!({"message": "boom"})).await {
        Err(RunError::Failed {
            rc,
            error,
            stacktrace,
            ..
        }) => {
            assert_eq!(
                (rc, error.as_str()),
                (ResultCode::ProcessorException, "boom")
            );
            assert_eq!(stacktrace, vec!["builtin::fail"]);
        }
        other => panic!("{other:?}"),
    }
    match c.run::<_, Value>("nope", &json!({})).await {
        Err(e) => assert_eq!(e.rc(), ResultCode::UnknownPipeline),
        other => panic!("{other:?}"),
    }
    s.wait_idle().await;
    let st = s.broker.stats().switchboard;
    assert_eq!(st.completed, 2);
}

pub async fn many_concurrent_calls_on_one_connection(backend: Variant) {
    let s = setup(&backend, BrokerConfig::default()).await;
    s.spawn_worker(worker(8, CodecKind::Json));
    s.spawn_worker(worker(8, CodecKind::Bincode));
    s.wait_capacity(16).await;
    let c = s.client(CodecKind::Bincode).await;
    let calls = (0..500i64).map(|i| {
        let c = c.clone();
        async move {
            c.run::<_, i64>("add", &json!({"a": i, "b": 1}))
                .await
                .unwrap()
        }
    });
    let got = timeout(LIMIT, futures_util::future::join_all(calls))
        .await
        .unwrap();
    assert_eq!(got, (1..=500).collect::<Vec<_>>());
    s.wait_idle().await;
}

pub async fn codec_agnostic_routing(backend: Variant) {
    // JSON client → bincode worker, and bincode client → JSON worker.
    for (client_codec, worker_codec) in [
        (CodecKind::Json, CodecKind::Bincode),
        (CodecKind::Bincode, CodecKind::Json),
    ] {
        let s = setup(&backend, BrokerConfig::default()).await;
        s.spawn_worker(worker(2, worker_codec));
        s.wait_capacity(2).await;
        let c = s.client(client_codec).await;
        let payload =
            json!({"text": "ünïcödé \"quoted\" \\ \n", "big": "x".repeat(10_000), "n": 1.5});
        let v: Value = c.run("echo", &payload).await.unwrap();
        assert_eq!(
            v, payload,
            "{client_codec:?} client, {worker_codec:?} worker"
        );
    }
}

pub async fn events_stream_then_the_result(backend: Variant) {
    let s = setup(&backend, BrokerConfig::default()).await;
    s.spawn_worker(worker(2, CodecKind::Json));
    s.wait_capacity(2).await;
    let c = s.client(CodecKind::Json).await;
    let mut h = c.start("count", &json!({"to": 50})).await.unwrap();
    let mut seen = Vec::new();
    while let Some(e) = h.next_event().await {
        seen.push(e.decode::<u64>().unwrap());
    }
    assert_eq!(seen, (1..=50).collect::<Vec<_>>());
    assert_eq!(h.finish::<u64>().await.unwrap(), 50);
}

pub async fn cancel_answers_cancelled_and_frees_the_slot(backend: Variant) {
    let s = setup(&backend, BrokerConfig::default()).await;
    s.spawn_worker(worker(1, CodecKind::Json));
    s.wait_capacity(1).await;
    let c = s.client(CodecKind::Json).await;
    let h = c.start("sleep", &json!({"seconds": 60})).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    h.cancel().await;
    let r = timeout(LIMIT, h.finish::<Value>()).await.unwrap();
    assert_eq!(r.unwrap_err().rc(), ResultCode::Cancelled);
    s.wait_idle().await;
    // The slot is usable again.
    assert_eq!(
        c.run::<_, String>("sleep", &json!({"seconds": 0}))
            .await
            .unwrap(),
        "slept"
    );
}

pub async fn dropping_a_handle_cancels_and_timeouts_cancel_remotely(backend: Variant) {
    let s = setup(&backend, BrokerConfig::default()).await;
    s.spawn_worker(worker(1, CodecKind::Json));
    s.wait_capacity(1).await;
    let c = s.client(CodecKind::Json).await;
    drop(c.start("sleep", &json!({"seconds": 60})).await.unwrap());
    s.wait_idle().await;
    let r = c
        .run_with::<_, Value>(
            "sleep",
            &json!({"seconds": 60}),
            RunOptions {
                timeout: Some(Duration::from_millis(100)),
                ..Default::default()
            },
        )
        .await;
    assert!(matches!(r, Err(RunError::Timeout { .. })), "{r:?}");
    s.wait_idle().await;
    assert_eq!(c.pending(), 0);
}

pub async fn queue_waits_for_a_slot_and_zero_queue_refuses(backend: Variant) {
    let s = setup(
        &backend,
        BrokerConfig {
            queue_limit: 8,
            ..BrokerConfig::default()
        },
    )
    .await;
    s.spawn_worker(worker(1, CodecKind::Json));
    s.wait_capacity(1).await;
    let c = s.client(CodecKind::Json).await;
    let vars = json!({"seconds": 0.01});
    let runs = (0..5).map(|_| c.run::<_, String>("sleep", &vars));
    for r in timeout(LIMIT, futures_util::future::join_all(runs))
        .await
        .unwrap()
    {
        assert_eq!(r.unwrap(), "slept");
    }
    let s = setup(
        &backend,
        BrokerConfig {
            queue_limit: 0,
            ..BrokerConfig::default()
        },
    )
    .await;
    s.spawn_worker(worker(1, CodecKind::Json));
    s.wait_capacity(1).await;
    let c = s.client(CodecKind::Json).await;
    let busy = c.start("sleep", &json!({"seconds": 60})).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let r = c.run::<_, Value>("echo", &json!({})).await;
    assert_eq!(r.unwrap_err().rc(), ResultCode::NoCapacity);
    drop(busy);
    s.wait_idle().await;
}

pub async fn worker_gone_answers_worker_went_away(backend: Variant) {
    let s = setup(&backend, BrokerConfig::default()).await;
    let w = worker(2, CodecKind::Json);
    let task = s.spawn_worker(w);
    s.wait_capacity(2).await;
    let c = s.client(CodecKind::Json).await;
    let h = c.start("sleep", &json!({"seconds": 60})).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    task.abort(); // the worker dies mid-run
    let r = timeout(LIMIT, h.finish::<Value>()).await.unwrap();
    assert_eq!(r.unwrap_err().rc(), ResultCode::WorkerWentAway);
    s.wait_idle().await;
}

pub async fn client_gone_cancels_its_runs_at_the_worker(backend: Variant) {
    use plexwire::codec::{encode_hello, Codec, Json};
    use plexwire::protocol::{Packet, Role};
    use plexwire::transport::ClientTransport;
    let s = setup(&backend, BrokerConfig::default()).await;
    s.spawn_worker(worker(2, CodecKind::Json));
    s.wait_capacity(2).await;
    // A raw client that starts two long runs, then vanishes without a word.
    let (mut tx, mut rx) = AnyTransport
        .connect(&s.clients)
        .await
        .unwrap()
        .into_frames();
    tx.send_frame(encode_hello(&Json, &Packet::hello(Role::Client, "json", None)).unwrap())
        .await
        .unwrap();
    rx.recv_frame().await.unwrap().unwrap();
    for _ in 0..2 {
        let run = Packet::run(
            uuid::Uuid::new_v4(),
            "sleep",
            Some(plexwire::protocol::Payload::from_json_text(
                r#"{"seconds": 60}"#,
            )),
            false,
        );
        tx.send_frame(Json.encode(&run).unwrap()).await.unwrap();
    }
    timeout(LIMIT, async {
        while s.broker.stats().switchboard.free_capacity > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    drop((tx, rx));
    s.wait_idle().await;
    let st = s.broker.stats().switchboard;
    assert_eq!(
        st.failed,
        vec![(ResultCode::Cancelled, 2)],
        "cancelled at the worker, answered to nobody"
    );
}

pub async fn broker_gone_answers_broker_went_away(backend: Variant) {
    let s = setup(&backend, BrokerConfig::default()).await;
    s.spawn_worker(worker(2, CodecKind::Json));
    s.wait_capacity(2).await;
    let c = s.client(CodecKind::Json).await;
    let h = c.start("sleep", &json!({"seconds": 60})).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.broker.shutdown(Duration::from_millis(100)).await;
    let r = timeout(LIMIT, h.finish::<Value>()).await.unwrap();
    assert_eq!(r.unwrap_err().rc(), ResultCode::BrokerWentAway);
    let r = c.run::<_, Value>("echo", &json!({})).await;
    assert!(matches!(r, Err(RunError::BrokerWentAway { .. })), "{r:?}");
}

pub async fn detached_runs_finish_without_the_client(backend: Variant) {
    let s = setup(&backend, BrokerConfig::default()).await;
    s.spawn_worker(worker(1, CodecKind::Json));
    s.wait_capacity(1).await;
    let c = s.client(CodecKind::Json).await;
    c.run_detached("sleep", &json!({"seconds": 0.05}))
        .await
        .unwrap();
    drop(c);
    timeout(LIMIT, async {
        while s.broker.stats().switchboard.completed < 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    s.wait_idle().await;
}

pub async fn a_panicking_handler_does_not_kill_the_worker(backend: Variant) {
    let s = setup(&backend, BrokerConfig::default()).await;
    let w = worker(1, CodecKind::Json).pipeline("panic", |_ctx, _v: Value| async move {
        if true {
            panic!("handler bug");
        }
        Ok::<(), plexwire::worker::HandlerError>(())
    });
    s.spawn_worker(w);
    s.wait_capacity(1).await;
    let c = s.client(CodecKind::Json).await;
    match c.run::<_, Value>("panic", &json!({})).await {
        Err(RunError::Failed { rc, error, .. }) => {
            assert_eq!(rc, ResultCode::ProcessorException);
            assert!(error.contains("handler bug"), "{error}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        c.run::<_, i64>("add", &json!({"a": 1, "b": 1}))
            .await
            .unwrap(),
        2
    );
}

pub async fn broker_shutdown_drains_native_workers(backend: Variant) {
    let s = setup(&backend, BrokerConfig::default()).await;
    let task = s.spawn_worker(worker(1, CodecKind::Json));
    s.wait_capacity(1).await;
    let c = s.client(CodecKind::Json).await;
    let h = c.start("sleep", &json!({"seconds": 0.2})).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let broker = s.broker.clone();
    let shutdown = tokio::spawn(async move { broker.shutdown(Duration::from_secs(10)).await });
    assert_eq!(
        timeout(LIMIT, h.finish::<String>()).await.unwrap().unwrap(),
        "slept",
        "the running run finishes within the grace"
    );
    timeout(LIMIT, shutdown).await.unwrap().unwrap();
    timeout(LIMIT, task)
        .await
        .expect("worker left after SHUTDOWN")
        .unwrap();
}

pub async fn a_saturated_worker_never_refuses_a_dispatched_run(backend: Variant) {
    // Regression: the worker freed a slot after the broker could already send
    // the next RUN into it (ReasonChip 0.0.6's capacity race), answering NO_CAPACITY.
    let s = setup(
        &backend,
        BrokerConfig {
            queue_limit: 4096,
            ..BrokerConfig::default()
        },
    )
    .await;
    s.spawn_worker(worker(2, CodecKind::Json));
    s.wait_capacity(2).await;
    let c = s.client(CodecKind::Json).await;
    let calls = (0..2000i64).map(|i| {
        let c = c.clone();
        async move { c.run::<_, i64>("add", &json!({"a": i, "b": 0})).await }
    });
    let results = timeout(LIMIT, futures_util::future::join_all(calls))
        .await
        .unwrap();
    let refused = results.iter().filter(|r| r.is_err()).count();
    assert_eq!(
        refused,
        0,
        "first failure: {:?}",
        results.iter().find(|r| r.is_err())
    );
    s.wait_idle().await;
}

/// One test per case, over the first variant of every scheme.
macro_rules! cases {
    ($($case:ident),* $(,)?) => {
        mod over_every_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    crate::common::each(crate::common::one_per_scheme(), super::$case).await;
                }
            )*
        }
    };
}

cases!(
    runs_echo_add_fail,
    many_concurrent_calls_on_one_connection,
    codec_agnostic_routing,
    events_stream_then_the_result,
    cancel_answers_cancelled_and_frees_the_slot,
    dropping_a_handle_cancels_and_timeouts_cancel_remotely,
    queue_waits_for_a_slot_and_zero_queue_refuses,
    worker_gone_answers_worker_went_away,
    client_gone_cancels_its_runs_at_the_worker,
    broker_gone_answers_broker_went_away,
    detached_runs_finish_without_the_client,
    a_panicking_handler_does_not_kill_the_worker,
    broker_shutdown_drains_native_workers,
    a_saturated_worker_never_refuses_a_dispatched_run,
);
