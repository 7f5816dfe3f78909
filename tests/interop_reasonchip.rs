//! Interoperability with the REAL ReasonChip 0.0.6 (from PyPI), both ways,
//! over TCP and UNIX sockets, JSON on the wire.
//!
//! The Python peers are the project's harness in `tests/interop/`
//! (`rc_broker.py`, `rc_worker.py`, `rc_client.py`; see its README.md) run
//! with `<repo>/.venv/bin/python`, which `bash scripts/python-peers.sh`
//! creates. Without it these tests fail with a message saying so, unless
//! `PLEXWIRE_SKIP_INTEROP=1` is set (then they pass after printing that they
//! were skipped).
//!
//! | test | broker | worker | client |
//! |---|---|---|---|
//! | `a_*` | plexwire | ReasonChip | ReasonChip (`rc_client.py` scenarios) |
//! | `b_*` | plexwire | ReasonChip | plexwire native (JSON and bincode) |
//! | `c_*` | plexwire | plexwire native (builtin pipelines) | ReasonChip |
//! | `d_*` | ReasonChip | plexwire legacy | plexwire legacy |
//! | `e_*` | ReasonChip | plexwire, default config (falls back to legacy) | plexwire, default config (JSON and bincode) |
//! | `f_*` | ReasonChip | plexwire `fallback_to_legacy: false` (fails clearly) | the same |
//!
//! Each test is bounded (60 s overall, every step on its own shorter
//! timeout), runs its Python processes behind a guard that kills them on drop
//! (and prints their stderr if the test fails), reads their stdout line by
//! line with timeouts, and uses its own ports and socket paths, so the tests
//! may run in parallel.

use std::future::Future;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use plexwire::broker::{Broker, BrokerConfig, SwitchboardStats};
use plexwire::client::{Client, ClientConfig};
use plexwire::codec::CodecKind;
use plexwire::protocol::ResultCode;
use plexwire::reconnect::Backoff;
use plexwire::transport::{AnyTransport, ClientTransport, Endpoint, FrameReceiver, FrameSender};
use plexwire::worker::{Worker, WorkerConfig, WorkerExit};
use plexwire::{Error, RunError};
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::time::timeout;

/// The whole test, whatever happens.
const TEST_LIMIT: Duration = Duration::from_secs(60);
/// One step: a peer getting READY, one stdout line, a process exit, a wait for broker state.
const STEP: Duration = Duration::from_secs(20);
/// One run by a plexwire client.
const RUN_LIMIT: Duration = Duration::from_secs(10);
/// How much of each Python peer's stderr is kept for failure reports.
const LOG_CAP: usize = 256 * 1024;
/// Every `rc` a ReasonChip 0.0.6 peer knows (reasonchip.md, "ResultCode values").
const REASONCHIP_RCS: [&str; 10] = [
    "OK",
    "BAD_PACKET",
    "UNSUPPORTED_PACKET_TYPE",
    "NO_CAPACITY",
    "COOKIE_NOT_FOUND",
    "COOKIE_COLLISION",
    "WORKER_WENT_AWAY",
    "BROKER_WENT_AWAY",
    "PROCESSOR_EXCEPTION",
    "EXCEPTION",
];
/// ReasonChip's `SocketPacket` keys, in its order: every packet a legacy
/// peer receives has exactly these.
const TEN_KEYS: [&str; 10] = [
    "packet_type",
    "cookie",
    "capacity",
    "pipeline",
    "variables",
    "detach",
    "rc",
    "error",
    "stacktrace",
    "result",
];
/// What the RC worker's capacity is (keep well above client concurrency: defect 1).
const RC_CAPACITY: u64 = 16;

// ------------------------------------------------------------------ harness

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Net {
    Tcp,
    Unix,
}

/// The venv's interpreter, or `None` if the tests are to be skipped.
fn python() -> Option<PathBuf> {
    let py = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    if py.exists() {
        return Some(py);
    }
    if std::env::var("PLEXWIRE_SKIP_INTEROP").as_deref() == Ok("1") {
        // Straight to the process's stderr so the line shows up in CI logs
        // even though the test harness captures print!/eprint!.
        let _ = writeln!(
            std::io::stderr(),
            "ReasonChip interop tests skipped: {} is missing and PLEXWIRE_SKIP_INTEROP=1",
            py.display()
        );
        return None;
    }
    panic!(
        "the ReasonChip interop tests need the Python peers: run `bash scripts/python-peers.sh` (or set PLEXWIRE_SKIP_INTEROP=1 to skip)"
    );
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/interop")
        .join(name)
}

/// A port that was free a moment ago. ReasonChip reads port 0 as "my default
/// port", so its listeners need a real number.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

type Log = Arc<Mutex<Vec<u8>>>;

fn log_text(log: &Log) -> String {
    String::from_utf8_lossy(&log.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
}

/// What one test shares: the interpreter, a temp dir for sockets, and the
/// stderr of every peer it started (dumped if the test times out).
#[derive(Clone)]
struct Ctx(Arc<CtxInner>);

struct CtxInner {
    py: PathBuf,
    dir: tempfile::TempDir,
    logs: Mutex<Vec<(String, Log)>>,
}

/// Runs `body` with a fresh [`Ctx`], bounded by [`TEST_LIMIT`]; returns at
/// once if the interop tests are skipped.
async fn interop<F, Fut>(name: &str, body: F)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(py) = python() else { return };
    // UNIX socket paths are limited to ~107 bytes: stay near the root.
    let base = if Path::new("/tmp").is_dir() {
        PathBuf::from("/tmp")
    } else {
        std::env::temp_dir()
    };
    let dir = tempfile::Builder::new()
        .prefix("pwrc-")
        .tempdir_in(base)
        .expect("temp dir");
    let ctx = Ctx(Arc::new(CtxInner {
        py,
        dir,
        logs: Mutex::new(Vec::new()),
    }));
    let t0 = Instant::now();
    if timeout(TEST_LIMIT, body(ctx.clone())).await.is_err() {
        // The body (and with it every peer guard) is dropped by now.
        for (peer, log) in ctx.0.logs.lock().unwrap().iter() {
            eprintln!("----- {peer}: stderr -----\n{}", log_text(log));
        }
        panic!("{name}: not finished within {TEST_LIMIT:?}");
    }
    eprintln!("{name}: passed in {:.1} s", t0.elapsed().as_secs_f64());
}

impl Ctx {
    fn dir(&self) -> &Path {
        self.0.dir.path()
    }

    /// `<dir>/<name>`, checked against the UNIX socket path limit.
    fn sock(&self, name: &str) -> PathBuf {
        let p = self.dir().join(name);
        assert!(p.as_os_str().len() < 100, "socket path too long: {p:?}");
        p
    }

    /// Starts `tests/interop/<file>` with `args`.
    fn spawn(&self, name: &str, file: &str, args: &[&str]) -> Peer {
        let mut child = Command::new(&self.0.py)
            .arg(script(file))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {file}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let mut stderr = child.stderr.take().expect("piped stderr");
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut r = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = r.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let log: Log = Arc::default();
        let sink = log.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 8192];
            while let Ok(n @ 1..) = stderr.read(&mut buf).await {
                let mut l = sink.lock().unwrap_or_else(|p| p.into_inner());
                l.extend_from_slice(&buf[..n]);
                if l.len() > LOG_CAP {
                    let cut = l.len() - LOG_CAP;
                    l.drain(..cut);
                }
            }
        });
        let name = format!("{name} (pid {:?}): {file} {}", child.id(), args.join(" "));
        self.0
            .logs
            .lock()
            .unwrap()
            .push((name.clone(), log.clone()));
        Peer {
            name,
            child,
            lines,
            log,
        }
    }

    /// `rc_worker.py --broker url --capacity 16`, READY.
    async fn rc_worker(&self, url: &str) -> Peer {
        let mut p = self.spawn(
            "rc_worker",
            "rc_worker.py",
            &["--broker", url, "--capacity", &RC_CAPACITY.to_string()],
        );
        p.expect_ready().await;
        p
    }

    /// `rc_broker.py`, READY; returns it with its client and worker URLs.
    /// TCP ports are picked free, then bound by Python: if another process
    /// took one in between, the broker exits 1 and we try again.
    async fn rc_broker(&self, net: Net) -> (Peer, String, String) {
        for attempt in 1..=3 {
            let (clients, workers) = match net {
                Net::Tcp => (
                    format!("tcp://127.0.0.1:{}", free_port()),
                    format!("tcp://127.0.0.1:{}", free_port()),
                ),
                Net::Unix => (
                    format!("socket://{}", self.sock("rcb-c.sock").display()),
                    format!("socket://{}", self.sock("rcb-w.sock").display()),
                ),
            };
            let mut p = self.spawn(
                "rc_broker",
                "rc_broker.py",
                &["--clients", &clients, "--workers", &workers],
            );
            match p.line(STEP).await.as_deref() {
                Some("READY") => return (p, clients, workers),
                other if attempt < 3 => {
                    eprintln!(
                        "rc_broker attempt {attempt} not READY ({other:?}): {}",
                        p.log()
                    );
                }
                other => panic!("{}: not READY: {other:?}", p.name),
            }
        }
        unreachable!()
    }

    /// Runs one `rc_client.py` scenario to its end; returns its stdout lines,
    /// parsed, after checking it exited 0 and printed only JSON objects of
    /// that scenario with result codes ReasonChip knows.
    async fn rc_client(&self, url: &str, scenario: &str, extra: &[&str]) -> Vec<Value> {
        let mut args = vec!["--broker", url, "--deadline", "45"];
        args.extend_from_slice(extra);
        args.push(scenario);
        let mut p = self.spawn(&format!("rc_client {scenario}"), "rc_client.py", &args);
        let mut out = Vec::new();
        while let Some(line) = p.line(STEP).await {
            eprintln!("rc_client {scenario}: {line}");
            let v: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("{}: stdout line is not JSON ({e}): {line}", p.name));
            assert_eq!(v["scenario"], scenario, "{}: {v}", p.name);
            let rc = &v["rc"];
            assert!(
                rc.is_null() || REASONCHIP_RCS.iter().any(|k| rc == k),
                "a ReasonChip client got an rc it does not know: {v}"
            );
            out.push(v);
        }
        let status = p.exit(STEP).await;
        assert!(status.success(), "{}: exit {status}: {out:?}", p.name);
        out
    }
}

/// A Python peer. Killed when dropped; prints its stderr if that happens
/// during a panic.
struct Peer {
    name: String,
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    log: Log,
}

impl Peer {
    /// The next stdout line; `None` at end of output.
    async fn line(&mut self, within: Duration) -> Option<String> {
        match timeout(within, self.lines.recv()).await {
            Ok(line) => line,
            Err(_) => panic!("{}: no stdout line within {within:?}", self.name),
        }
    }

    async fn expect_ready(&mut self) {
        let line = self.line(STEP).await;
        assert_eq!(
            line.as_deref(),
            Some("READY"),
            "{}: exit {:?}",
            self.name,
            self.child.try_wait()
        );
    }

    fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    async fn exit(&mut self, within: Duration) -> ExitStatus {
        timeout(within, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{}: still running after {within:?}", self.name))
            .expect("wait for child")
    }

    fn log(&self) -> String {
        log_text(&self.log)
    }

    /// Waits until the stderr log shows `marks` in this order.
    async fn wait_log(&self, marks: &[&str]) {
        let seen = |log: &str| {
            let mut rest = log;
            marks.iter().all(|m| match rest.find(m) {
                Some(i) => {
                    rest = &rest[i + m.len()..];
                    true
                }
                None => false,
            })
        };
        let found = timeout(STEP, async {
            while !seen(&self.log()) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(
            found.is_ok(),
            "{}: log never showed {marks:?} within {STEP:?}",
            self.name
        );
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        if std::thread::panicking() {
            eprintln!("----- {}: stderr -----\n{}", self.name, self.log());
        }
    }
}

/// An in-process plexwire broker with a client and a worker listener; URLs
/// for plexwire peers and for the ReasonChip scripts (`socket://` for UNIX).
struct PwBroker {
    broker: Broker,
    clients: String,
    workers: String,
    rc_clients: String,
    rc_workers: String,
}

impl PwBroker {
    async fn start(ctx: &Ctx, net: Net, tag: &str, config: BrokerConfig) -> PwBroker {
        let broker = Broker::new(config);
        let (c, w) = match net {
            Net::Tcp => (
                "tcp://127.0.0.1:0".to_owned(),
                "tcp://127.0.0.1:0".to_owned(),
            ),
            Net::Unix => (
                format!("unix://{}", ctx.sock(&format!("{tag}-c.sock")).display()),
                format!("unix://{}", ctx.sock(&format!("{tag}-w.sock")).display()),
            ),
        };
        let clients = broker.listen_clients(&c).await.unwrap().url().to_owned();
        let workers = broker.listen_workers(&w).await.unwrap().url().to_owned();
        // ReasonChip spells UNIX sockets socket:///path (plexwire takes both).
        let rc = |u: &str| u.replacen("unix://", "socket://", 1);
        PwBroker {
            rc_clients: rc(&clients),
            rc_workers: rc(&workers),
            broker,
            clients,
            workers,
        }
    }

    fn stats(&self) -> SwitchboardStats {
        self.broker.stats().switchboard
    }

    /// Waits until `ok(stats)`; returns those stats.
    async fn wait_for(
        &self,
        what: &str,
        ok: impl Fn(&SwitchboardStats) -> bool,
    ) -> SwitchboardStats {
        let r = timeout(STEP, async {
            loop {
                let s = self.stats();
                if ok(&s) {
                    return s;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        r.unwrap_or_else(|_| panic!("broker: not {what} within {STEP:?}: {:?}", self.stats()))
    }

    /// Idle: no route, every registered slot free, `total` slots registered.
    async fn wait_idle(&self, total: u64) -> SwitchboardStats {
        self.wait_for("idle", |s| {
            s.routes == 0 && s.total_capacity == total && s.free_capacity == total
        })
        .await
    }
}

fn failed(s: &SwitchboardStats, rc: ResultCode) -> u64 {
    s.failed
        .iter()
        .find(|(k, _)| *k == rc)
        .map_or(0, |(_, n)| *n)
}

async fn client(url: &str, codec: CodecKind, legacy: bool) -> Client {
    Client::connect_with(
        &AnyTransport,
        &Endpoint::parse(url).unwrap(),
        ClientConfig {
            codec,
            legacy,
            default_timeout: Some(RUN_LIMIT),
            ..ClientConfig::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("connect to {url}: {e}"))
}

/// The keys of a JSON object, in the order they are written.
struct Keys(Vec<String>);

impl<'de> Deserialize<'de> for Keys {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Keys, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Keys;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Keys, A::Error> {
                let mut keys = Vec::new();
                while let Some((k, IgnoredAny)) = m.next_entry::<String, IgnoredAny>()? {
                    keys.push(k);
                }
                Ok(Keys(keys))
            }
        }
        d.deserialize_map(V)
    }
}

/// A HELLO-less client writing and reading raw ReasonChip frames, to see
/// exactly what a legacy peer gets from the plexwire broker.
struct RawLegacy {
    tx: FrameSender,
    rx: FrameReceiver,
}

impl RawLegacy {
    async fn connect(url: &str) -> RawLegacy {
        let conn = AnyTransport
            .connect(&Endpoint::parse(url).unwrap())
            .await
            .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
        let (tx, rx) = conn.into_frames();
        RawLegacy { tx, rx }
    }

    async fn send(&mut self, packet: Value) {
        let frame = serde_json::to_vec(&packet).unwrap();
        self.tx.send_frame(frame.into()).await.unwrap();
    }

    /// `RUN {cookie, pipeline, variables}` as ReasonChip's Api sends it.
    async fn run(&mut self, pipeline: &str, variables: Value) -> String {
        let cookie = uuid::Uuid::new_v4().to_string();
        self.send(json!({
            "packet_type": "RUN", "cookie": cookie, "capacity": null,
            "pipeline": pipeline, "variables": variables.to_string(), "detach": false,
            "rc": null, "error": null, "stacktrace": null, "result": null,
        }))
        .await;
        cookie
    }

    /// The next packet, checked to be ReasonChip's ten keys in order with an
    /// `rc` it knows.
    async fn recv(&mut self) -> Value {
        let frame = timeout(STEP, self.rx.recv_frame())
            .await
            .unwrap_or_else(|_| panic!("no packet within {STEP:?}"))
            .expect("connection open")
            .expect("frame");
        let text = String::from_utf8_lossy(&frame);
        let keys: Keys =
            serde_json::from_slice(&frame).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
        assert_eq!(keys.0, TEN_KEYS, "a legacy peer got other keys: {text}");
        let v: Value = serde_json::from_slice(&frame).unwrap();
        assert!(
            v["rc"].is_null() || REASONCHIP_RCS.iter().any(|k| v["rc"] == *k),
            "a legacy peer got an rc it does not know: {text}"
        );
        v
    }

    /// The RESULT for `cookie`.
    async fn result(&mut self, cookie: &str) -> Value {
        let v = self.recv().await;
        assert_eq!(
            (&v["packet_type"], &v["cookie"]),
            (&json!("RESULT"), &json!(cookie)),
            "{v}"
        );
        v
    }
}

/// Unwraps a [`RunError::Failed`].
fn failure<T: std::fmt::Debug>(r: Result<T, RunError>) -> (ResultCode, String, Vec<String>) {
    match r {
        Err(RunError::Failed {
            rc,
            error,
            stacktrace,
            ..
        }) => (rc, error, stacktrace),
        other => panic!("expected a failed run, got {other:?}"),
    }
}

fn by_phase<'a>(lines: &'a [Value], key: &str, value: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l[key] == value)
        .unwrap_or_else(|| panic!("no line with {key}={value}: {lines:?}"))
}

/// rc_client `concurrent`: four adds, each with its own right sum.
fn check_concurrent(lines: &[Value]) {
    assert_eq!(lines.len(), 4, "{lines:?}");
    let mut seen: Vec<i64> = lines
        .iter()
        .map(|l| {
            assert_eq!((&l["ok"], &l["rc"]), (&json!(true), &json!("OK")), "{l}");
            let v = &l["variables"];
            assert_eq!(
                l["result"].as_i64(),
                Some(v["a"].as_i64().unwrap() + v["b"].as_i64().unwrap()),
                "{l}"
            );
            l["index"].as_i64().unwrap()
        })
        .collect();
    seen.sort();
    assert_eq!(seen, [0, 1, 2, 3]);
}

/// rc_client `basic`, lines for add, echo (incl. unicode) as both
/// ReasonChip and plexwire workers answer them.
fn check_add_echo(lines: &[Value]) {
    let add = by_phase(lines, "pipeline", "add");
    assert_eq!(
        (&add["ok"], &add["rc"], &add["result"]),
        (&json!(true), &json!("OK"), &json!(42)),
        "{add}"
    );
    let echo = by_phase(lines, "pipeline", "echo");
    assert_eq!(
        echo["variables"],
        json!({"msg": "hi", "n": 7, "uni": "h\u{e9}llo \u{2713}"})
    );
    assert_eq!(
        (&echo["ok"], &echo["rc"], &echo["result"]),
        (&json!(true), &json!("OK"), &echo["variables"]),
        "echo returns its variables unchanged: {echo}"
    );
}

// --------------------------------------- A: ReasonChip worker + client, plexwire broker

async fn a_rc_worker_and_rc_client_via_plexwire_broker(net: Net) {
    interop(&format!("A {net:?}"), |ctx| async move {
        // ReasonChip semantics: no wait queue, immediate NO_CAPACITY.
        let cfg = || BrokerConfig {
            queue_limit: 0,
            ..BrokerConfig::default()
        };
        let b = PwBroker::start(&ctx, net, "a", cfg()).await;
        let mut worker = ctx.rc_worker(&b.rc_workers).await;
        b.wait_for("registered", |s| s.total_capacity == RC_CAPACITY)
            .await;

        // basic: add, echo, nothing, fail
        let lines = ctx.rc_client(&b.rc_clients, "basic", &[]).await;
        assert_eq!(lines.len(), 4, "{lines:?}");
        check_add_echo(&lines);
        let nothing = by_phase(&lines, "pipeline", "nothing");
        assert_eq!(
            (&nothing["ok"], &nothing["rc"], &nothing["result"]),
            (&json!(true), &json!("OK"), &Value::Null),
            "{nothing}"
        );
        let fail = by_phase(&lines, "pipeline", "fail");
        assert_eq!(
            (&fail["ok"], &fail["rc"], &fail["error"], &fail["exception"]),
            (
                &json!(false),
                &json!("PROCESSOR_EXCEPTION"),
                &json!("1 == 2"),
                &json!("ProcessorException")
            ),
            "{fail}"
        );
        assert!(
            fail["stacktrace"]
                .as_array()
                .is_some_and(|st| !st.is_empty()),
            "the worker's stacktrace reaches the client: {fail}"
        );

        check_concurrent(&ctx.rc_client(&b.rc_clients, "concurrent", &[]).await);

        // unknown: routed to the RC worker (it announces no pipelines), which answers.
        let lines = ctx.rc_client(&b.rc_clients, "unknown", &[]).await;
        assert_eq!(lines.len(), 1, "{lines:?}");
        let u = &lines[0];
        assert_eq!(
            (
                &u["ok"],
                &u["rc"],
                &u["error"],
                &u["stacktrace"],
                &u["exception"]
            ),
            (
                &json!(false),
                &json!("PROCESSOR_EXCEPTION"),
                &json!("no_such_pipeline"),
                &json!([]),
                &json!("ProcessorException")
            ),
            "{u}"
        );

        // The same, byte-exact: what a legacy client reads is ReasonChip's
        // ten-key packet, and a CANCEL is answered at once.
        let mut raw = RawLegacy::connect(&b.clients).await;
        let cookie = raw.run("add", json!({"a": 2, "b": 40})).await;
        let r = raw.result(&cookie).await;
        assert_eq!(
            (&r["rc"], &r["result"]),
            (&json!("OK"), &json!("42")),
            "{r}"
        );
        let cookie = raw.run("fail", json!({})).await;
        let r = raw.result(&cookie).await;
        assert_eq!(
            (&r["rc"], &r["error"]),
            (&json!("PROCESSOR_EXCEPTION"), &json!("1 == 2")),
            "{r}"
        );
        let cookie = raw.run("sleep", json!({"seconds": 1})).await;
        b.wait_for("running the sleep", |s| s.running == 1).await;
        raw.send(json!({"packet_type": "CANCEL", "cookie": cookie}))
            .await;
        let r = raw.result(&cookie).await;
        assert_eq!(r["rc"], "EXCEPTION", "{r}");
        assert!(
            r["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("CANCELLED: ")),
            "{r}"
        );
        drop(raw);

        // detach: no RESULT for a detached run; the worker still runs it.
        let before = b.wait_idle(RC_CAPACITY).await;
        let lines = ctx.rc_client(&b.rc_clients, "detach", &[]).await;
        assert_eq!(lines.len(), 3, "{lines:?}");
        let api = by_phase(&lines, "via", "api");
        assert_eq!(
            (&api["ok"], &api["rc"], &api["result"]),
            (&json!(true), &Value::Null, &Value::Null),
            "{api}"
        );
        let raw = by_phase(&lines, "via", "client");
        assert_eq!(
            (&raw["observed"], &raw["ok"]),
            (&json!("no_reply"), &json!(true)),
            "a detached RUN gets no RESULT: {raw}"
        );
        let after = by_phase(&lines, "phase", "after_detach");
        assert_eq!(
            (&after["ok"], &after["result"]),
            (&json!(true), &json!({"msg": "after"})),
            "{after}"
        );
        b.wait_for("done with both detached runs", |s| {
            s.completed == before.completed + 3 && s.routes == 0
        })
        .await;

        // cancel: answered at once with EXCEPTION "CANCELLED: …"; the CANCEL
        // is not forwarded (it would kill the 0.0.6 worker); the worker
        // finishes the 5 s sleep, whose late RESULT is dropped and frees the slot.
        let before = b.wait_idle(RC_CAPACITY).await;
        let spawned = Instant::now();
        let lines = ctx
            .rc_client(&b.rc_clients, "cancel", &["--cancel-wait", "4"])
            .await;
        let since_spawn = spawned.elapsed();
        let mid = b.stats();
        assert_eq!(lines.len(), 2, "{lines:?}");
        let c = by_phase(&lines, "phase", "cancel");
        assert_eq!(c["observed"], "reply", "the CANCEL is answered: {c}");
        assert_eq!(c["packet_type"], "RESULT", "{c}");
        assert_eq!(
            (&c["ok"], &c["rc"]),
            (&json!(false), &json!("EXCEPTION")),
            "{c}"
        );
        assert!(
            c["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("CANCELLED: ")),
            "{c}"
        );
        let answered_after = c["after_cancel_s"].as_f64().unwrap();
        assert!(
            answered_after < 3.0,
            "answered at once, not when the 5 s sleep ends: {c}"
        );
        let follow = by_phase(&lines, "phase", "after_cancel");
        assert_eq!(
            (&follow["ok"], &follow["rc"], &follow["result"]),
            (&json!(true), &json!("OK"), &json!(2)),
            "the RC worker still serves after the CANCEL: {follow}"
        );
        assert_eq!(
            failed(&mid, ResultCode::Cancelled),
            failed(&before, ResultCode::Cancelled) + 1,
            "{mid:?}"
        );
        // The sleep was sent after `spawned`, so it runs for 5 s from then at least.
        if since_spawn < Duration::from_millis(4500) {
            assert_eq!(
                (mid.routes, mid.running, mid.free_capacity),
                (1, 1, RC_CAPACITY - 1),
                "the cancelled run holds its slot until the worker's RESULT: {mid:?}"
            );
        } else {
            eprintln!("cancel: client took {since_spawn:?}; busy-slot check skipped");
        }
        let end = b.wait_idle(RC_CAPACITY).await;
        assert_eq!(
            end.completed,
            before.completed + 2,
            "the after_cancel add and the late sleep RESULT (dropped): {end:?}"
        );
        assert_eq!(end.workers, 1, "{end:?}");
        assert!(
            worker.is_running(),
            "the RC worker survived the cancel: {}",
            worker.log()
        );
        // And it still serves, after its late RESULT was discarded.
        let pw = client(&b.clients, CodecKind::Json, true).await;
        let sum: i64 = pw.run("add", &json!({"a": 20, "b": 22})).await.unwrap();
        assert_eq!(sum, 42);
        assert!(worker.is_running());

        // no_capacity: a broker with no worker at all.
        let empty = PwBroker::start(&ctx, net, "empty", cfg()).await;
        let lines = ctx.rc_client(&empty.rc_clients, "no_capacity", &[]).await;
        assert_eq!(lines.len(), 1, "{lines:?}");
        let n = &lines[0];
        assert_eq!(
            (&n["ok"], &n["rc"], &n["error"], &n["exception"]),
            (
                &json!(false),
                &json!("NO_CAPACITY"),
                &json!("No capacity available"),
                &json!("NoCapacityException")
            ),
            "{n}"
        );
        let mut raw = RawLegacy::connect(&empty.clients).await;
        let cookie = raw.run("echo", json!({})).await;
        let r = raw.result(&cookie).await;
        assert_eq!(
            (&r["rc"], &r["error"]),
            (&json!("NO_CAPACITY"), &json!("No capacity available")),
            "{r}"
        );
    })
    .await;
}

// --------------------------------------- B: plexwire native client, ReasonChip worker

async fn b_native_client_and_rc_worker_via_plexwire_broker(net: Net) {
    interop(&format!("B {net:?}"), |ctx| async move {
        let b = PwBroker::start(&ctx, net, "b", BrokerConfig::default()).await;
        let mut worker = ctx.rc_worker(&b.rc_workers).await;
        b.wait_for("registered", |s| s.total_capacity == RC_CAPACITY)
            .await;

        // Codec-agnostic routing: JSON and bincode clients, JSON legacy worker.
        for codec in [CodecKind::Json, CodecKind::Bincode] {
            let c = client(&b.clients, codec, false).await;
            let sum: i64 = c.run("add", &json!({"a": 2, "b": 40})).await.unwrap();
            assert_eq!(sum, 42, "{codec:?}");
            let vars = json!({
                "msg": "h\u{e9}llo \u{2713} \"q\" \\",
                "n": 7,
                "nested": {"list": [1, 2.5, null, true], "empty": {}},
            });
            let back: Value = c.run("echo", &vars).await.unwrap();
            assert_eq!(back, vars, "{codec:?}");
            let (rc, error, stack) = failure(c.run::<_, Value>("fail", &json!({})).await);
            assert_eq!(
                (rc, error.as_str()),
                (ResultCode::ProcessorException, "1 == 2"),
                "{codec:?}"
            );
            assert!(!stack.is_empty(), "the RC worker's stacktrace arrives");
            let (rc, error, stack) =
                failure(c.run::<_, Value>("no_such_pipeline", &json!({})).await);
            assert_eq!(
                (rc, error.as_str(), stack.len()),
                (ResultCode::ProcessorException, "no_such_pipeline", 0),
                "the legacy worker serves every name, and answers for the unknown one"
            );
            let zero: Value = c.run("add", &json!({"a": 0, "b": 0})).await.unwrap();
            assert_eq!(
                zero,
                Value::Null,
                "ReasonChip 0.0.6 sends falsy results as null"
            );
        }
        b.wait_idle(RC_CAPACITY).await;

        // Cancel: the native client gets CANCELLED at once; the CANCEL is not
        // forwarded, the worker finishes the sleep, and lives on.
        let c = client(&b.clients, CodecKind::Json, false).await;
        let before = b.stats();
        let h = c.start("sleep", &json!({"seconds": 4})).await.unwrap();
        b.wait_for("running the sleep", |s| s.running == 1).await;
        let dispatched = Instant::now();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let t = Instant::now();
        h.cancel().await;
        let (rc, error, _) = failure(timeout(STEP, h.finish::<Value>()).await.unwrap());
        assert_eq!(rc, ResultCode::Cancelled, "{error}");
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "answered at once: {:?}",
            t.elapsed()
        );
        let mid = b.stats();
        if dispatched.elapsed() < Duration::from_millis(3500) {
            assert_eq!(
                (mid.routes, mid.free_capacity),
                (1, RC_CAPACITY - 1),
                "the slot stays busy until the worker's late RESULT: {mid:?}"
            );
        } else {
            eprintln!(
                "cancel: took {:?}; busy-slot check skipped",
                dispatched.elapsed()
            );
        }
        let sum: i64 = c.run("add", &json!({"a": 1, "b": 2})).await.unwrap();
        assert_eq!(sum, 3, "the worker serves while the cancelled run finishes");
        let end = b.wait_idle(RC_CAPACITY).await;
        assert_eq!(
            (
                end.completed,
                failed(&end, ResultCode::Cancelled),
                end.workers
            ),
            (
                before.completed + 2,
                failed(&before, ResultCode::Cancelled) + 1,
                1
            ),
            "the add, the dropped late sleep RESULT, and one CANCELLED: {end:?}"
        );
        assert!(worker.is_running(), "{}", worker.log());
        let sum: i64 = c.run("add", &json!({"a": 3, "b": 4})).await.unwrap();
        assert_eq!(sum, 7);
        assert!(worker.is_running());
    })
    .await;
}

// --------------------------------------- C: ReasonChip client, plexwire native worker

async fn c_rc_client_and_native_worker_via_plexwire_broker(net: Net) {
    interop(&format!("C {net:?}"), |ctx| async move {
        let b = PwBroker::start(&ctx, net, "c", BrokerConfig::default()).await;
        // Codec-agnostic routing: the ReasonChip client speaks JSON; the
        // worker bincode over TCP, JSON over UNIX.
        let codec = match net {
            Net::Tcp => CodecKind::Bincode,
            Net::Unix => CodecKind::Json,
        };
        let w = plexwire::builtin::register(Worker::new(WorkerConfig {
            capacity: 8,
            codec,
            ..WorkerConfig::default()
        }));
        let task = tokio::spawn({
            let (w, url) = (w.clone(), b.workers.clone());
            async move { w.run(&url).await }
        });
        b.wait_for("registered", |s| s.total_capacity == 8).await;

        let lines = ctx.rc_client(&b.rc_clients, "basic", &[]).await;
        assert_eq!(lines.len(), 4, "{lines:?}");
        check_add_echo(&lines);
        // No worker serves `nothing`: UNKNOWN_PIPELINE, which a ReasonChip
        // client only knows as NO_CAPACITY.
        let nothing = by_phase(&lines, "pipeline", "nothing");
        assert_eq!(
            (&nothing["ok"], &nothing["rc"], &nothing["exception"]),
            (
                &json!(false),
                &json!("NO_CAPACITY"),
                &json!("NoCapacityException")
            ),
            "{nothing}"
        );
        assert!(
            nothing["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("UNKNOWN_PIPELINE: ")),
            "{nothing}"
        );
        let fail = by_phase(&lines, "pipeline", "fail");
        assert_eq!(
            (
                &fail["ok"],
                &fail["rc"],
                &fail["error"],
                &fail["stacktrace"],
                &fail["exception"]
            ),
            (
                &json!(false),
                &json!("PROCESSOR_EXCEPTION"),
                &json!("the fail pipeline always fails"),
                &json!(["builtin::fail"]),
                &json!("ProcessorException")
            ),
            "{fail}"
        );

        let mut raw = RawLegacy::connect(&b.clients).await;
        let cookie = raw.run("nothing", json!({})).await;
        let r = raw.result(&cookie).await;
        assert_eq!(r["rc"], "NO_CAPACITY", "{r}");
        assert!(
            r["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("UNKNOWN_PIPELINE: ")),
            "{r}"
        );
        let vars = json!({"uni": "h\u{e9}llo \u{2713}", "n": [1, 2.5, null]});
        let cookie = raw.run("echo", vars.clone()).await;
        let r = raw.result(&cookie).await;
        assert_eq!(r["rc"], "OK", "{r}");
        let back: Value = serde_json::from_str(r["result"].as_str().unwrap()).unwrap();
        assert_eq!(back, vars);
        drop(raw);

        check_concurrent(&ctx.rc_client(&b.rc_clients, "concurrent", &[]).await);

        // A raw ReasonChip CANCEL reaches the native worker, which answers
        // CANCELLED (as EXCEPTION "CANCELLED: …") and frees its slot at once.
        let before = b.wait_idle(8).await;
        let lines = ctx
            .rc_client(&b.rc_clients, "cancel", &["--cancel-wait", "4"])
            .await;
        assert_eq!(lines.len(), 2, "{lines:?}");
        let c = by_phase(&lines, "phase", "cancel");
        assert_eq!(
            (&c["observed"], &c["rc"]),
            (&json!("reply"), &json!("EXCEPTION")),
            "{c}"
        );
        assert!(
            c["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("CANCELLED: ")),
            "{c}"
        );
        assert!(c["after_cancel_s"].as_f64().unwrap() < 3.0, "{c}");
        let follow = by_phase(&lines, "phase", "after_cancel");
        assert_eq!(
            (&follow["ok"], &follow["result"]),
            (&json!(true), &json!(2)),
            "{follow}"
        );
        let end = b.wait_idle(8).await;
        assert_eq!(
            failed(&end, ResultCode::Cancelled),
            failed(&before, ResultCode::Cancelled) + 1,
            "{end:?}"
        );
        assert!(!task.is_finished(), "the plexwire worker is still serving");
        w.stop();
        let exit = timeout(STEP, task).await.unwrap().unwrap().unwrap();
        assert_eq!(exit, WorkerExit::Stopped);
    })
    .await;
}

// --------------------------------------- D: ReasonChip broker, plexwire legacy worker + client

async fn d_legacy_worker_and_client_via_rc_broker(net: Net) {
    interop(&format!("D {net:?}"), |ctx| async move {
        let (mut rcb, clients, workers) = ctx.rc_broker(net).await;
        let c = client(&clients, CodecKind::Json, true).await;

        // No worker registered: the RC broker answers NO_CAPACITY.
        let (rc, error, _) = failure(c.run::<_, Value>("echo", &json!({"msg": "hi"})).await);
        assert_eq!(
            (rc, error.as_str()),
            (ResultCode::NoCapacity, "No capacity available")
        );

        let w = plexwire::builtin::register(Worker::new(WorkerConfig {
            legacy: true,
            codec: CodecKind::Json,
            capacity: RC_CAPACITY as u32,
            ..WorkerConfig::default()
        }));
        let task = tokio::spawn({
            let (w, url) = (w.clone(), workers.clone());
            async move { w.run(&url).await }
        });
        // REGISTER has no reply: retry until the broker has the slots.
        let first = timeout(STEP, async {
            loop {
                match c.run::<_, i64>("add", &json!({"a": 2, "b": 40})).await {
                    Err(e) if e.rc() == ResultCode::NoCapacity => {
                        tokio::time::sleep(Duration::from_millis(50)).await
                    }
                    other => return other,
                }
            }
        })
        .await
        .expect("the plexwire worker registered with the RC broker");
        assert_eq!(first.unwrap(), 42);

        let zero: i64 = c.run("add", &json!({"a": 0, "b": 0})).await.unwrap();
        assert_eq!(zero, 0, "plexwire at both ends keeps falsy results");
        let vars =
            json!({"msg": "h\u{e9}llo \u{2713}", "n": [1, 2.5, null], "k": {"x": "\u{1f600}"}});
        let back: Value = c.run("echo", &vars).await.unwrap();
        assert_eq!(back, vars);

        let (rc, error, stack) = failure(
            c.run::<_, Value>("fail", &json!({"message": "boom \u{2717}"}))
                .await,
        );
        assert_eq!(
            (rc, error.as_str(), stack),
            (
                ResultCode::ProcessorException,
                "boom \u{2717}",
                vec!["builtin::fail".to_owned()]
            ),
            "message and stacktrace kept through the RC broker"
        );

        let (rc, error, stack) = failure(c.run::<_, Value>("no_such_pipeline", &json!({})).await);
        assert_eq!(
            (rc, error.as_str(), stack.len()),
            (ResultCode::ProcessorException, "no_such_pipeline", 0),
            "answered like a ReasonChip worker"
        );

        // Concurrency: at most 4 in flight (capacity 16), a few rounds.
        for round in 0..3i64 {
            let runs = (0..4i64).map(|i| {
                let c = c.clone();
                async move {
                    c.run::<_, i64>("add", &json!({"a": round * 100, "b": i}))
                        .await
                }
            });
            let got: Vec<i64> = futures_util::future::join_all(runs)
                .await
                .into_iter()
                .map(Result::unwrap)
                .collect();
            assert_eq!(got, (0..4).map(|i| round * 100 + i).collect::<Vec<_>>());
        }

        // CANCEL goes through the RC broker to the plexwire worker, which
        // answers (EXCEPTION "CANCELLED: …" on the legacy wire) and lives on.
        let h = c.start("sleep", &json!({"seconds": 30})).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let t = Instant::now();
        h.cancel().await;
        let (rc, error, _) = failure(timeout(STEP, h.finish::<Value>()).await.unwrap());
        assert_eq!(rc, ResultCode::Exception, "{error}");
        assert!(error.starts_with("CANCELLED: "), "{error}");
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "answered at once: {:?}",
            t.elapsed()
        );
        assert!(
            !task.is_finished(),
            "the plexwire worker survived the CANCEL"
        );
        let sum: i64 = c.run("add", &json!({"a": 1, "b": 1})).await.unwrap();
        assert_eq!(sum, 2);
        // A fresh connection too: the RC broker is not wedged.
        let c2 = client(&clients, CodecKind::Json, true).await;
        let sum: i64 = c2.run("add", &json!({"a": 5, "b": 6})).await.unwrap();
        assert_eq!(sum, 11);
        assert!(rcb.is_running(), "{}", rcb.log());

        // The worker leaves with nothing in flight; the RC broker copes.
        w.stop();
        let exit = timeout(STEP, task).await.unwrap().unwrap().unwrap();
        assert_eq!(exit, WorkerExit::Stopped);
        // Only RUN once the RC broker has dropped the worker's slots: a RUN
        // routed to a worker that is just closing deadlocks 0.0.6 (defect 2).
        // Its log says when: "Worker closed", then the status with no slots.
        rcb.wait_log(&["Worker closed: id=", "STATS: available [0]"])
            .await;
        let (rc, error, _) = failure(c.run::<_, Value>("echo", &json!({})).await);
        assert_eq!(
            (rc, error.as_str()),
            (ResultCode::NoCapacity, "No capacity available")
        );
        assert!(rcb.is_running(), "{}", rcb.log());
    })
    .await;
}

// ------------------------- E: ReasonChip broker, plexwire worker + client with no legacy flag

async fn e_default_worker_and_client_via_rc_broker(net: Net) {
    interop(&format!("E {net:?}"), |ctx| async move {
        let (rcb, clients, workers) = ctx.rc_broker(net).await;
        // Default config: native first; the RC broker closes after the
        // HELLO, and the client dials again in legacy mode.
        let c = Client::connect_with(
            &AnyTransport,
            &Endpoint::parse(&clients).unwrap(),
            ClientConfig {
                default_timeout: Some(RUN_LIMIT),
                ..ClientConfig::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("a default client connects to the RC broker: {e}"));
        // The worker as `plexwire worker --broker URL` runs it: reconnecting,
        // default config.
        let w = plexwire::builtin::register(Worker::new(WorkerConfig {
            capacity: RC_CAPACITY as u32,
            ..WorkerConfig::default()
        }));
        let task = tokio::spawn({
            let (w, urls) = (w.clone(), vec![workers.clone()]);
            async move { w.run_reconnecting(&urls, Backoff::default()).await }
        });
        // REGISTER has no reply: retry until the broker has the slots.
        let first = timeout(STEP, async {
            loop {
                match c.run::<_, i64>("add", &json!({"a": 2, "b": 40})).await {
                    Err(e) if e.rc() == ResultCode::NoCapacity => {
                        tokio::time::sleep(Duration::from_millis(50)).await
                    }
                    other => return other,
                }
            }
        })
        .await
        .expect("the default plexwire worker registered with the RC broker");
        assert_eq!(first.unwrap(), 42);
        let vars = json!({"msg": "h\u{e9}llo \u{2713}", "n": [1, 2.5, null]});
        let back: Value = c.run("echo", &vars).await.unwrap();
        assert_eq!(back, vars);
        let (rc, error, stack) =
            failure(c.run::<_, Value>("fail", &json!({"message": "boom"})).await);
        assert_eq!(
            (rc, error.as_str(), stack),
            (
                ResultCode::ProcessorException,
                "boom",
                vec!["builtin::fail".to_owned()]
            )
        );

        // A bincode client, the way `plexwire run --codec bincode` connects:
        // legacy means JSON, so it switches (and says so in the log).
        let b = Client::connect_any(
            std::slice::from_ref(&clients),
            ClientConfig {
                codec: CodecKind::Bincode,
                default_timeout: Some(RUN_LIMIT),
                ..ClientConfig::default()
            },
            Duration::ZERO,
        )
        .await
        .unwrap_or_else(|e| panic!("a bincode client falls back to JSON: {e}"));
        let runs = (0..4i64).map(|i| {
            let b = b.clone();
            async move { b.run::<_, i64>("add", &json!({"a": 100, "b": i})).await }
        });
        let got: Vec<i64> = futures_util::future::join_all(runs)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(got, [100, 101, 102, 103]);

        assert!(!task.is_finished(), "the worker serves on");
        let mut rcb = rcb;
        assert!(rcb.is_running(), "{}", rcb.log());
        w.stop();
        let exit = timeout(STEP, task).await.unwrap().unwrap().unwrap();
        assert_eq!(exit, WorkerExit::Stopped);
    })
    .await;
}

// --------------------------------- F: ReasonChip broker, plexwire peers that forbid the fallback

async fn f_native_mode_fails_clearly_against_rc_broker(net: Net) {
    interop(&format!("F {net:?}"), |ctx| async move {
        let (mut rcb, clients, workers) = ctx.rc_broker(net).await;
        let native = ClientConfig {
            fallback_to_legacy: false,
            ..ClientConfig::default()
        };
        match Client::connect_with(&AnyTransport, &Endpoint::parse(&clients).unwrap(), native).await
        {
            Err(e @ Error::ClosedAfterHello { .. }) => {
                let text = e.to_string();
                assert!(
                    text.contains("ReasonChip") && text.contains("--legacy"),
                    "{text}"
                );
            }
            other => panic!("a native-only client must fail clearly: {other:?}"),
        }
        let w = plexwire::builtin::register(Worker::new(WorkerConfig {
            fallback_to_legacy: false,
            ..WorkerConfig::default()
        }));
        let got = timeout(
            STEP,
            w.run_with(&AnyTransport, &Endpoint::parse(&workers).unwrap()),
        )
        .await
        .unwrap();
        assert!(
            matches!(got, Err(Error::ClosedAfterHello { .. })),
            "a native-only worker must fail clearly: {got:?}"
        );
        // The RC broker shrugged it off: a legacy client still gets its answer.
        let c = client(&clients, CodecKind::Json, true).await;
        let (rc, error, _) = failure(c.run::<_, Value>("echo", &json!({})).await);
        assert_eq!(
            (rc, error.as_str()),
            (ResultCode::NoCapacity, "No capacity available"),
            "no worker registered"
        );
        assert!(rcb.is_running(), "{}", rcb.log());
    })
    .await;
}

// ------------------------------------------------------------------ tests

macro_rules! over {
    ($net:ident, $netval:expr) => {
        mod $net {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_rc_worker_and_rc_client_via_plexwire_broker() {
                super::a_rc_worker_and_rc_client_via_plexwire_broker($netval).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn b_native_client_and_rc_worker_via_plexwire_broker() {
                super::b_native_client_and_rc_worker_via_plexwire_broker($netval).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn c_rc_client_and_native_worker_via_plexwire_broker() {
                super::c_rc_client_and_native_worker_via_plexwire_broker($netval).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn d_legacy_worker_and_client_via_rc_broker() {
                super::d_legacy_worker_and_client_via_rc_broker($netval).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn e_default_worker_and_client_via_rc_broker() {
                super::e_default_worker_and_client_via_rc_broker($netval).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn f_native_mode_fails_clearly_against_rc_broker() {
                super::f_native_mode_fails_clearly_against_rc_broker($netval).await;
            }
        }
    };
}

over!(tcp, Net::Tcp);
over!(unix, Net::Unix);
