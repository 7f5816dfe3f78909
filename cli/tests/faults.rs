//! Fault injection with real processes (the `plexwire` binary), loopback only,
//! bounded in time: a worker killed with SIGKILL mid-run, the broker killed
//! and restarted, a client killed mid-stream, SIGTERM to the broker and to a
//! worker (both drain), and the broker's tokens given from a file and the
//! environment. After each, the broker's stats show no leaked route and all
//! capacity free.

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
        Proc::start_env(args, &[], ready)
    }

    /// Like [`Proc::start`], with `env` added to the environment.
    fn start_env(args: &[&str], env: &[(&str, &str)], ready: &str) -> Proc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_plexwire"))
            .args(args)
            .envs(env.iter().copied())
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

    /// Sends SIGTERM, as systemd, Docker and Kubernetes do.
    fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits (at most LIMIT) for the process to exit; its exit code.
    fn exit_code(&mut self) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.0.try_wait().expect("wait for plexwire") {
                return status.code();
            }
            assert!(start.elapsed() < LIMIT, "plexwire did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
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
    stats_with(client_url, None).await
}

async fn stats_with(client_url: &str, token: Option<&str>) -> Value {
    let config = ClientConfig {
        token: token.map(str::to_owned),
        ..ClientConfig::default()
    };
    let c = Client::connect_any(&[client_url.to_owned()], config, LIMIT)
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

/// Starts two 1.5 s sleeps and waits until both run.
async fn two_sleeps(clients: &str, client: &Client) -> Vec<plexwire::client::RunHandle> {
    let mut handles = Vec::new();
    for _ in 0..2 {
        handles.push(
            client
                .start("sleep", &json!({"seconds": 1.5}))
                .await
                .unwrap(),
        );
    }
    until(clients, "both running", |s| s["running"] == 2).await;
    handles
}

async fn all_slept(handles: Vec<plexwire::client::RunHandle>) {
    for h in handles {
        let r = timeout(LIMIT, h.finish::<String>()).await.unwrap();
        assert_eq!(r.map_err(|e| e.to_string()), Ok("slept".to_owned()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_broker_and_the_worker() {
    let (cp, wp) = (free_port(), free_port());
    let clients = format!("tcp://127.0.0.1:{cp}");
    let workers = format!("tcp://127.0.0.1:{wp}");
    let broker_args = ["broker", "--clients", &clients, "--workers", &workers];
    let mut broker = Proc::start(&broker_args, "broker running");
    let worker_args = ["worker", "--broker", &workers, "--capacity", "2"];
    let mut worker = Proc::start(&worker_args, "worker:");
    until(&clients, "the worker registered", |s| {
        s["total_capacity"] == 2
    })
    .await;

    // SIGTERM to the worker: it finishes its running runs, then leaves.
    let client = Client::connect(&clients).await.unwrap();
    let handles = two_sleeps(&clients, &client).await;
    worker.terminate();
    all_slept(handles).await;
    assert_eq!(worker.exit_code(), Some(0), "the worker exits cleanly");
    until(&clients, "the worker's slots gone", |s| {
        s["total_capacity"] == 0 && s["routes"] == 0
    })
    .await;

    // SIGTERM to the broker: running runs finish (not BROKER_WENT_AWAY), then it exits.
    let _worker = Proc::start(&worker_args, "worker:");
    until(&clients, "a worker registered again", |s| {
        s["total_capacity"] == 2
    })
    .await;
    let handles = two_sleeps(&clients, &client).await;
    broker.terminate();
    all_slept(handles).await;
    assert_eq!(broker.exit_code(), Some(0), "the broker exits cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_from_a_file_and_the_environment() {
    let (cp, wp) = (free_port(), free_port());
    let clients = format!("tcp://127.0.0.1:{cp}");
    let workers = format!("tcp://127.0.0.1:{wp}");
    let dir = tempfile::tempdir().unwrap();
    let worker_token_file = dir.path().join("worker-token");
    std::fs::write(&worker_token_file, "w-secret\n").unwrap();
    let file = worker_token_file.to_str().unwrap();
    let _broker = Proc::start_env(
        &[
            "broker",
            "--clients",
            &clients,
            "--workers",
            &workers,
            "--worker-token-file",
            file,
        ],
        &[("PLEXWIRE_CLIENT_TOKEN", "c-secret")],
        "broker running",
    );

    // A worker without the token, or a legacy one (it cannot present one), is refused.
    let mut anonymous = Proc::start(&["worker", "--broker", &workers, "--once"], "worker:");
    assert_ne!(
        anonymous.exit_code(),
        Some(0),
        "a worker without a token is refused"
    );
    let mut legacy = Proc::start(
        &["worker", "--broker", &workers, "--once", "--legacy"],
        "worker:",
    );
    assert_ne!(
        legacy.exit_code(),
        Some(0),
        "a legacy worker is refused where a token is required"
    );
    let mut wrong = Proc::start_env(
        &["worker", "--broker", &workers, "--once"],
        &[("PLEXWIRE_TOKEN", "c-secret")],
        "worker:",
    );
    assert_ne!(
        wrong.exit_code(),
        Some(0),
        "the clients' token does not admit a worker"
    );

    // The right token, from the environment: served.
    let _worker = Proc::start_env(
        &["worker", "--broker", &workers, "--capacity", "2"],
        &[("PLEXWIRE_TOKEN", "w-secret")],
        "worker:",
    );
    let start = Instant::now();
    loop {
        let s = stats_with(&clients, Some("c-secret")).await;
        if s["total_capacity"] == 2 {
            break;
        }
        assert!(
            start.elapsed() < LIMIT,
            "the worker with the token never registered: {s}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Clients: without the token refused; with it served.
    let refused = Client::connect(&clients).await;
    let err = match refused {
        Err(e) => e.to_string(),
        Ok(c) => c
            .run::<_, Value>("echo", &json!({}))
            .await
            .unwrap_err()
            .to_string(),
    };
    assert!(err.contains("token"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_plexwire"))
        .args([
            "run",
            "--broker",
            &clients,
            "add",
            "--vars",
            r#"{"a": 40, "b": 2}"#,
        ])
        .env("PLEXWIRE_TOKEN", "c-secret")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42");
}
