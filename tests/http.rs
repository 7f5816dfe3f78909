//! ReasonChip's HTTP endpoint on the plexwire broker: `POST /v1/stream/stream`
//! with one JSON packet, answered with NDJSON packets until the RESULT —
//! including the broker's own answers, which hang ReasonChip's server.

#![cfg(feature = "http")]

use std::time::Duration;

use plexwire::broker::{Broker, BrokerConfig};
use plexwire::worker::{Worker, WorkerConfig};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(20);

/// A minimal HTTP/1.1 exchange: returns the status and the (de-chunked) body.
async fn request(addr: &str, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    timeout(LIMIT, s.read_to_end(&mut raw))
        .await
        .expect("the response ends")
        .unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = rest;
        loop {
            let (size, tail) = rest.split_once("\r\n").unwrap();
            let n = usize::from_str_radix(size.trim(), 16).unwrap();
            if n == 0 {
                break;
            }
            out.push_str(&tail[..n]);
            rest = &tail[n + 2..];
        }
        out
    } else {
        rest.to_owned()
    };
    (status, body)
}

fn lines(body: &str) -> Vec<Value> {
    body.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn setup(url: &str) -> (Broker, String) {
    let broker = Broker::new(BrokerConfig::default());
    let clients = broker.listen_clients(url).await.unwrap();
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let workers = broker
        .listen_workers(&format!("mem://http-workers-{}-{n}", std::process::id()))
        .await
        .unwrap();
    let w = plexwire::builtin::register(Worker::new(WorkerConfig {
        capacity: 4,
        ..WorkerConfig::default()
    }));
    let wurl = workers.url().to_owned();
    tokio::spawn(async move { w.run(&wurl).await });
    assert!(broker.wait_for_capacity(4, LIMIT).await);
    let addr = clients
        .url()
        .trim_start_matches("http://")
        .split(['/', '?'])
        .next()
        .unwrap()
        .to_owned();
    (broker, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_answer_ndjson_until_the_result() {
    let (broker, addr) = setup("http://127.0.0.1:0").await;
    // ReasonChip's own minimal body (second HTTP example in the wire notes).
    let body = br#"{"packet_type": "RUN", "cookie": "00000000-0000-4000-8000-000000000001", "pipeline": "add", "variables": "{\"a\": 1, \"b\": 2}"}"#;
    let (status, text) = request(&addr, "POST", "/v1/stream/stream", body).await;
    assert_eq!(status, 200);
    assert_eq!(
        text,
        "{\"packet_type\":\"RESULT\",\"cookie\":\"00000000-0000-4000-8000-000000000001\",\"capacity\":null,\"pipeline\":null,\"variables\":null,\"detach\":null,\"rc\":\"OK\",\"error\":null,\"stacktrace\":null,\"result\":\"3\"}\n",
        "byte for byte what ReasonChip's server sends"
    );
    // Broker-generated answers come back too (ReasonChip's server hangs on these).
    let (_, text) = request(
        &addr,
        "POST",
        "/v1/stream/stream",
        br#"{"packet_type":"RUN","pipeline":"add"}"#,
    )
    .await;
    assert_eq!(lines(&text)[0]["rc"], "BAD_PACKET");
    let (_, text) = request(&addr, "POST", "/v1/stream/stream", br#"{"packet_type":"RUN","cookie":"00000000-0000-4000-8000-000000000002","pipeline":"nope"}"#).await;
    let answer = &lines(&text)[0];
    assert_eq!(
        answer["rc"], "NO_CAPACITY",
        "legacy code for UNKNOWN_PIPELINE"
    );
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .starts_with("UNKNOWN_PIPELINE: "),
        "{answer}"
    );
    let (_, text) = request(
        &addr,
        "POST",
        "/v1/stream/stream",
        br#"{"packet_type":"CANCEL","cookie":"00000000-0000-4000-8000-000000000003"}"#,
    )
    .await;
    assert_eq!(lines(&text)[0]["rc"], "COOKIE_NOT_FOUND");
    // A detached run: answered at once, and it still runs.
    let (status, text) = request(&addr, "POST", "/v1/stream/stream", br#"{"packet_type":"RUN","cookie":"00000000-0000-4000-8000-000000000004","pipeline":"echo","variables":"{}","detach":true}"#).await;
    assert_eq!((status, text.as_str()), (200, ""));
    timeout(LIMIT, async {
        while broker.stats().switchboard.completed < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_a_4xx_with_a_json_reason() {
    let (_broker, addr) = setup("http://127.0.0.1:0?max_frame_size=200").await;
    let detail = |body: &str| {
        serde_json::from_str::<Value>(body).unwrap()["detail"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (status, body) = request(&addr, "POST", "/v1/stream/stream", b"not json").await;
    assert_eq!(status, 400);
    assert!(detail(&body).contains("not JSON"), "{body}");
    let (status, body) = request(&addr, "POST", "/v1/stream/stream", b"[1, 2]").await;
    assert_eq!(status, 400);
    assert!(detail(&body).contains("one JSON object"), "{body}");
    let (status, body) = request(&addr, "POST", "/v1/stream/stream", &vec![b' '; 500]).await;
    assert_eq!(status, 413);
    assert!(detail(&body).contains("200-byte limit"), "{body}");
    let (status, _) = request(&addr, "GET", "/v1/stream/stream", b"").await;
    assert_eq!(status, 405);
    let (status, body) = request(&addr, "POST", "/elsewhere", b"{}").await;
    assert_eq!(status, 404);
    assert!(detail(&body).contains("/v1/stream/stream"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_has_its_run_cancelled() {
    let (broker, addr) = setup("http://127.0.0.1:0").await;
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let body = br#"{"packet_type":"RUN","cookie":"00000000-0000-4000-8000-000000000005","pipeline":"sleep","variables":"{\"seconds\": 60}"}"#;
    let head = format!(
        "POST /v1/stream/stream HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    timeout(LIMIT, async {
        while broker.stats().switchboard.running == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    drop(s);
    timeout(LIMIT, async {
        while broker.stats().switchboard.routes > 0 || broker.stats().switchboard.free_capacity < 4
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the run was cancelled and its slot freed");
}

#[test]
fn plexwire_peers_are_told_http_is_listen_only() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let e = rt
        .block_on(plexwire::connect("http://127.0.0.1:1"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("POST /v1/stream/stream") && e.contains("tcp, unix, tls or quic"),
        "{e}"
    );
}

/// The real ReasonChip 0.0.6 HttpClient (which sends no Content-Type) through
/// the plexwire broker's HTTP endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reasonchip_http_client_runs_pipelines() {
    let python = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    if !python.exists() {
        if std::env::var("PLEXWIRE_SKIP_INTEROP").as_deref() == Ok("1") {
            eprintln!("skipped: no .venv (PLEXWIRE_SKIP_INTEROP=1)");
            return;
        }
        panic!("the ReasonChip interop tests need the Python peers: run `bash scripts/python-peers.sh` (or set PLEXWIRE_SKIP_INTEROP=1 to skip)");
    }
    let (_broker, addr) = setup("http://127.0.0.1:0").await;
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/rc_client.py");
    let out = timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(&python)
            .arg(&script)
            .args(["--broker", &format!("http://{addr}"), "basic"])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("rc_client.py finished")
    .unwrap();
    assert!(
        out.status.success(),
        "rc_client.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let by = |p: &str| {
        results
            .iter()
            .find(|r| r["pipeline"] == p)
            .unwrap_or_else(|| panic!("no {p} in {results:?}"))
            .clone()
    };
    assert_eq!(
        (by("add")["ok"].clone(), by("add")["result"].clone()),
        (json!(true), json!(42))
    );
    assert_eq!(
        by("echo")["result"],
        json!({"msg": "hi", "n": 7, "uni": "h\u{e9}llo \u{2713}"})
    );
    assert_eq!(by("fail")["rc"], "PROCESSOR_EXCEPTION");
    assert_eq!(by("fail")["error"], "the fail pipeline always fails");
}
