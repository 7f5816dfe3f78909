//! Fault injection with real processes (the `plexwire` binary), loopback only,
//! bounded in time: a worker killed with SIGKILL mid-run, the broker killed
//! and restarted, a client killed mid-stream. After each, the broker's stats
//! show no leaked route and all capacity free.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use plexwire::client::{Client, ClientConfig};
use plexwire::protocol::ResultCode;
use serde_json::{json, Value};
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(30);

/// A child process killed (SIGKILL) when dropped.
struct Proc(Child);

impl Proc {
    fn start(args: &[&str], ready: &str) -> Proc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_plexwire"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start plexwire");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let marker = ready.to_owned();
        std::thread::spawn(move || {
            let mut said = false;
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if !said && line.starts_with(&marker) {
                    let _ = tx.send(());
                    said = true;
                }
            }
        });
        rx.recv_timeout(LIMIT)
            .unwrap_or_else(|_| panic!("plexwire {args:?} never printed `{ready}`"));
        Proc(child)
    }

    fn kill(&mut self) {
        let _ = self.0.kill(); // SIGKILL
        let _ = self.0.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn stats(client_url: &str) -> Value {
    let c = Client::connect_any(&[client_url.to_owned()], ClientConfig::default(), LIMIT)
        .await
        .unwrap();
    c.run("$stats", &json!({})).await.unwrap()
}

/// Polls the broker until `check` holds (or fails after LIMIT).
async fn until(client_url: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let s = stats(client_url).await;
        if check(&s) {
            return s;
        }
        assert!(start.elapsed() < LIMIT, "{what}: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn idle(s: &Value) -> bool {
    s["routes"] == 0 && s["free_capacity"] == s["total_capacity"]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_a_worker_restart_the_broker_kill_a_client() {
    let (cp, wp) = (free_port(), free_port());
    let clients = format!("tcp://127.0.0.1:{cp}");
    let workers = format!("tcp://127.0.0.1:{wp}");
    let broker_args = ["broker", "--clients", &clients, "--workers", &workers];
    let mut broker = Proc::start(&broker_args, "broker running");
    let mut doomed = Proc::start(
        &["worker", "--broker", &workers, "--capacity", "2"],
        "worker:",
    );
    let _survivor = Proc::start(
        &["worker", "--broker", &workers, "--capacity", "2"],
        "worker:",
    );
    until(&clients, "workers registered", |s| s["total_capacity"] == 4).await;

    // 1. SIGKILL a worker mid-run: its runs are answered WORKER_WENT_AWAY,
    //    the other worker's runs go on.
    let client = Client::connect(&clients).await.unwrap();
    let mut handles = Vec::new();
    for _ in 0..4 {
        handles.push(
            client
                .start("sleep", &json!({"seconds": 1.5}))
                .await
                .unwrap(),
        );
    }
    until(&clients, "all four running", |s| s["running"] == 4).await;
    let killed_at = Instant::now();
    doomed.kill();
    let finished = handles.into_iter().map(|h| async move {
        let r = timeout(LIMIT, h.finish::<String>()).await.unwrap();
        (r.map_err(|e| e.rc().to_string()), killed_at.elapsed())
    });
    let mut outcomes = futures_util::future::join_all(finished).await;
    outcomes.sort_by_key(|(r, _)| format!("{r:?}"));
    let codes: Vec<String> = outcomes
        .iter()
        .map(|(r, _)| r.clone().unwrap_or_else(|e| e))
        .collect();
    assert_eq!(
        codes,
        vec!["WORKER_WENT_AWAY", "WORKER_WENT_AWAY", "slept", "slept"]
    );
    let went_away_after = outcomes
        .iter()
        .filter(|(r, _)| r.is_err())
        .map(|(_, t)| *t)
        .max()
        .unwrap();
    assert!(
        went_away_after < Duration::from_secs(1),
        "answered before the other runs even finished: {went_away_after:?}"
    );
    eprintln!("worker SIGKILLed: its runs answered WORKER_WENT_AWAY within {went_away_after:?}");
    let s = until(&clients, "capacity back after the worker died", |s| {
        s["routes"] == 0 && s["total_capacity"] == 2
    })
    .await;
    assert!(idle(&s), "{s}");

    // 2. SIGKILL the broker and start a new one on the same ports: the
    //    surviving worker (reconnecting by default) re-registers, clients reconnect.
    broker.kill();
    let r = timeout(LIMIT, client.run::<_, Value>("echo", &json!({})))
        .await
        .unwrap();
    assert_eq!(r.unwrap_err().rc(), ResultCode::BrokerWentAway);
    let _broker = Proc::start(&broker_args, "broker running");
    until(&clients, "the worker re-registered", |s| {
        s["total_capacity"] == 2
    })
    .await;
    let client = Client::connect_any(
        std::slice::from_ref(&clients),
        ClientConfig::default(),
        LIMIT,
    )
    .await
    .unwrap();
    assert_eq!(
        client
            .run::<_, i64>("add", &json!({"a": 40, "b": 2}))
            .await
            .unwrap(),
        42
    );

    // 3. SIGKILL a client mid-stream: its run is cancelled at the worker and the slot freed.
    let mut streaming = Proc::start(
        &[
            "run",
            "--broker",
            &clients,
            "count",
            "--vars",
            r#"{"to": 1000000, "interval_ms": 2}"#,
        ],
        "event:",
    );
    until(&clients, "the stream is running", |s| s["running"] == 1).await;
    streaming.kill();
    let s = until(&clients, "the vanished client's run cancelled", idle).await;
    assert_eq!(s["failed"]["CANCELLED"], 1, "{s}");
}
