//! Interoperability with the REAL cs.packetstream 20240630 (from PyPI, in
//! `<repo>/.venv`, which `bash scripts/python-peers.sh` creates), both ways,
//! over loopback TCP:
//!
//! | test | client | server |
//! |---|---|---|
//! | `python_client_*` | the real library (`tests/interop/ps_client.py`: 200 requests in flight, every demo type, flags, 300- and 20 000-byte payloads, orderly close) | `plexwire packet serve` |
//! | `plexwire_client_*` | `plexwire::peer::PacketConnection` | the real library (`tests/interop/ps_server.py`), stock or with channel 1 registered |
//! | `cli_call_*` | `plexwire packet call` | the real library |
//!
//! Each test starts its processes and kills them when it ends (a guard), and
//! is bounded in time. Without `.venv` or with a `.venv` that cannot import
//! cs.packetstream the tests print why and pass; CI installs the package,
//! so there they run.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use plexwire::peer::{PacketConfig, PacketConnection, PacketError};
use serde_json::Value;

const STEP: Duration = Duration::from_secs(60);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("cli/ is in the repository")
        .to_path_buf()
}

/// The venv's Python if it has cs.packetstream; `None` (with a message) if not.
fn python() -> Option<PathBuf> {
    let py = repo().join(".venv/bin/python");
    let has = py.exists()
        && Command::new(&py)
            .args(["-c", "import cs.packetstream"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if has {
        return Some(py);
    }
    eprintln!(
        "SKIPPED: {} cannot import cs.packetstream; run `bash scripts/python-peers.sh` to run the cs.packetstream interop tests",
        py.display()
    );
    None
}

/// A child process, killed when dropped, whose stdout lines arrive on a channel.
struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
    what: String,
}

impl Proc {
    fn start(program: &Path, args: &[&str]) -> Proc {
        let mut child = Command::new(program)
            .args(args)
            .current_dir(repo())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Stderr is drained (so the child never blocks on it) and shown on failure.
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("  | {line}");
            }
        });
        Proc {
            child,
            lines,
            what: format!("{} {}", program.display(), args.join(" ")),
        }
    }

    /// The next stdout line (within `STEP`), or `None` at end of output.
    fn line(&self) -> Option<String> {
        match self.lines.recv_timeout(STEP) {
            Ok(l) => Some(l),
            Err(mpsc::RecvTimeoutError::Disconnected) => None,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("{}: no output within {STEP:?}", self.what)
            }
        }
    }

    /// The first stdout line starting with `prefix`, without it.
    fn wait_for(&self, prefix: &str) -> String {
        loop {
            match self.line() {
                Some(l) if l.starts_with(prefix) => return l[prefix.len()..].trim().to_owned(),
                Some(_) => {}
                None => panic!("{}: ended before printing {prefix:?}", self.what),
            }
        }
    }

    /// Every JSON line until the output ends.
    fn json_lines(&self) -> Vec<Value> {
        std::iter::from_fn(|| self.line())
            .filter_map(|l| serde_json::from_str::<Value>(&l).ok())
            .collect()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn plexwire_serve() -> (Proc, String) {
    let p = Proc::start(
        Path::new(env!("CARGO_BIN_EXE_plexwire")),
        &["packet", "serve", "--listen", "tcp://127.0.0.1:0"],
    );
    let url = p.wait_for("LISTENING ");
    (p, url)
}

fn python_server(py: &Path, channel1: bool) -> (Proc, String) {
    let mut args = vec!["tests/interop/ps_server.py"];
    if channel1 {
        args.push("--channel1");
    }
    let p = Proc::start(py, &args);
    let port = p.wait_for("LISTENING ");
    (p, format!("tcp://127.0.0.1:{port}"))
}

/// Runs ps_client.py against `url` and checks its verdicts.
fn python_client_passes(py: &Path, url: &str, channel1: bool) {
    let hostport = url.trim_start_matches("tcp://");
    let mut args = vec!["tests/interop/ps_client.py", "--connect", hostport];
    if channel1 {
        args.push("--channel1");
    }
    let client = Proc::start(py, &args);
    let lines = client.json_lines();
    let checks: Vec<&Value> = lines.iter().filter(|v| v.get("check").is_some()).collect();
    assert_eq!(checks.len(), 200, "every check reported: {lines:?}");
    let failed: Vec<&&Value> = checks.iter().filter(|v| v["pass"] != true).collect();
    assert!(failed.is_empty(), "failed checks: {failed:#?}");
    let channels: std::collections::BTreeSet<i64> = checks
        .iter()
        .filter_map(|v| v["channel"].as_i64())
        .collect();
    let want: std::collections::BTreeSet<i64> = if channel1 { [0, 1].into() } else { [0].into() };
    assert_eq!(channels, want);
    assert!(
        checks
            .iter()
            .any(|v| v["payload_len"] == 20000 && v["rpayload_len"] == 20000),
        "a 20 000-byte echo"
    );
    assert!(checks
        .iter()
        .any(|v| v["payload_len"] == 300 && v["rpayload_len"] == 300));
    let last = lines.last().expect("a closing line");
    assert_eq!(last["closed"], true, "orderly close finished: {last}");
    assert_eq!(last["failures"], 0);
}

#[test]
fn python_client_against_plexwire_serve_with_channel_0_then_channels_0_and_1() {
    let Some(py) = python() else { return };
    let (_server, url) = plexwire_serve();
    python_client_passes(&py, &url, false);
    // The same server, a second connection, channel 1 registered on the Python side.
    python_client_passes(&py, &url, true);
}

async fn plexwire_client_checks(url: &str, channel: u64) {
    let conn = plexwire::transport::connect(url).await.expect("connect");
    let conn = PacketConnection::open(conn, None, PacketConfig::default());
    let mut pending = Vec::new();
    for i in 0..120u64 {
        let rq_type = 1 + i % 6;
        let payload = match i % 20 {
            0 => vec![b'q'; 300],
            1 => vec![0x5a; 20_000],
            _ => format!("hello {i} ab").into_bytes(),
        };
        let p = conn
            .submit(rq_type, i % 8, payload.clone(), channel)
            .await
            .unwrap();
        pending.push((i, rq_type, payload, p));
    }
    for (i, rq_type, payload, p) in pending {
        let r = tokio::time::timeout(STEP, p)
            .await
            .expect("answered")
            .expect("an answer");
        let got = (r.ok, r.flags, r.payload.to_vec());
        let want = match rq_type {
            1 => (true, i % 8, payload),
            2 => (true, 0, payload.to_ascii_uppercase()),
            3 => (false, 0, b"exception during handler".to_vec()),
            4 => (true, 0, Vec::new()),
            5 => (true, 0, "text ✓".as_bytes().to_vec()),
            _ => (true, 7, Vec::new()),
        };
        assert_eq!(
            got, want,
            "request {i} (rq_type {rq_type}, channel {channel})"
        );
    }
    tokio::time::timeout(STEP, conn.close())
        .await
        .expect("orderly close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plexwire_client_against_the_python_server() {
    let Some(py) = python() else { return };
    let (server, url) = python_server(&py, false);
    plexwire_client_checks(&url, 0).await;
    // The stock library has only channel 0: a clear error naming the channel.
    let conn = plexwire::transport::connect(&url).await.unwrap();
    let conn = PacketConnection::open(conn, None, PacketConfig::default());
    let e = tokio::time::timeout(STEP, conn.call(1, 0, "x", 1))
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(e, PacketError::UnknownChannel { channel: 1 }),
        "{e:?}"
    );
    assert!(e.to_string().contains("does not serve channel 1"), "{e}");
    // The connection goes on on channel 0.
    assert!(conn.call(1, 0, "still here", 0).await.unwrap().ok);
    tokio::time::timeout(STEP, conn.close())
        .await
        .expect("orderly close");
    // The Python server finished both connections in order.
    let closed: Vec<String> = (0..2).map(|_| server.wait_for("{\"connection\"")).collect();
    assert!(
        closed.iter().all(|l| l.contains("\"closed\": true")),
        "{closed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plexwire_client_on_channel_1_against_a_python_server_that_registers_it() {
    let Some(py) = python() else { return };
    let (_server, url) = python_server(&py, true);
    plexwire_client_checks(&url, 1).await;
}

#[test]
fn cli_call_against_the_python_server() {
    let Some(py) = python() else { return };
    let (_server, url) = python_server(&py, false);
    let call = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_plexwire"))
            .args(["packet", "call", "--connect", &url])
            .args(args)
            .output()
            .expect("run plexwire packet call");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).trim_end().to_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_eq!(
        call(&["1", "--flags", "5", "--data", "hello"]).1,
        "true 5 hello"
    );
    assert_eq!(call(&["2", "--data", "hello"]).1, "true 0 HELLO");
    let (code, out, _) = call(&["3"]);
    assert_eq!(
        (code, out.as_str()),
        (Some(1), "false 0 exception during handler")
    );
    assert_eq!(call(&["4"]).1, "true 0", "empty payload");
    let (code, _, err) = call(&["1", "--channel", "1", "--data", "x"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("does not serve channel 1"), "{err}");
}
