//! The HTTP backend beyond what the conformance and e2e suites check:
//! ReasonChip's endpoint on the plexwire broker (`POST /v1/stream/stream`
//! with one JSON packet, answered with NDJSON packets until the RESULT —
//! including the broker's own answers, which hang ReasonChip's server); the
//! upgrade to `plexwire/1` byte for byte, and its refusals; a plexwire client
//! pointed at an HTTP server that is not plexwire; `https://` certificate
//! checks.

#![cfg(feature = "http")]

mod common;

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
    request_with(addr, method, path, "Connection: close\r\n", body).await
}

/// [`request`] with `headers` (each ending in `\r\n`) instead of `Connection: close`.
async fn request_with(
    addr: &str,
    method: &str,
    path: &str,
    headers: &str,
    body: &[u8],
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{headers}\r\n",
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

fn detail(body: &str) -> String {
    serde_json::from_str::<Value>(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
        ["detail"]
        .as_str()
        .unwrap_or_else(|| panic!("no detail: {body}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_upgrade_request_gets_a_4xx_saying_what_to_send() {
    let (_broker, addr) = setup("http://127.0.0.1:0").await;
    // No Upgrade header at all (a browser, curl).
    let (status, body) = request(&addr, "GET", "/v1/connect", b"").await;
    assert_eq!(status, 426);
    let d = detail(&body);
    assert!(
        d.contains("no `Upgrade` header")
            && d.contains("`Connection: Upgrade` and `Upgrade: plexwire/1`")
            && d.contains("/v1/stream/stream"),
        "{d}"
    );
    // Another protocol, or another version of plexwire's.
    for offered in ["websocket", "plexwire/2"] {
        let (status, body) = request_with(
            &addr,
            "GET",
            "/v1/connect",
            &format!("Connection: Upgrade, close\r\nUpgrade: {offered}\r\n"),
            b"",
        )
        .await;
        assert_eq!(status, 426, "{offered}");
        let d = detail(&body);
        assert!(
            d.contains(&format!("the request offers `{offered}`"))
                && d.contains("`Upgrade: plexwire/1`"),
            "{d}"
        );
    }
    // The right protocol, but `Connection: Upgrade` was lost on the way.
    let (status, body) = request_with(
        &addr,
        "GET",
        "/v1/connect",
        "Connection: close\r\nUpgrade: plexwire/1\r\n",
        b"",
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        detail(&body).contains("needs `Connection: Upgrade` too"),
        "{body}"
    );
    // The wrong method.
    let (status, body) = request(&addr, "POST", "/v1/connect", b"{}").await;
    assert_eq!(status, 405);
    assert!(detail(&body).contains("takes GET, not POST"), "{body}");
    // Elsewhere: both endpoints are named.
    let (status, body) = request(&addr, "GET", "/", b"").await;
    assert_eq!(status, 404);
    let d = detail(&body);
    assert!(
        d.contains("/v1/stream/stream") && d.contains("/v1/connect"),
        "{d}"
    );
}

/// The upgrade byte for byte (docs/protocol.md §6), with the first frame
/// sent in the same write as the request head: bytes the HTTP server read
/// past the head still reach the connection, in order.
#[tokio::test]
async fn the_upgrade_byte_for_byte_then_frames_both_ways() {
    let mut l = plexwire::transport::listen("http://127.0.0.1:0")
        .await
        .unwrap();
    let addr = l
        .local_endpoint()
        .url()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let mut out = format!(
        "GET /v1/connect HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: plexwire/1\r\n\r\n"
    )
    .into_bytes();
    out.extend_from_slice(&[0, 0, 0, 5]);
    out.extend_from_slice(b"hello");
    s.write_all(&out).await.unwrap();

    let conn = timeout(LIMIT, l.accept()).await.unwrap().unwrap();
    assert_eq!(conn.peer().transport, "http");
    let (mut tx, mut rx) = conn.into_frames();
    assert_eq!(&rx.recv_frame().await.unwrap().unwrap()[..], b"hello");
    tx.send_frame(bytes::Bytes::from_static(b"world"))
        .await
        .unwrap();

    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8];
        timeout(LIMIT, s.read_exact(&mut byte))
            .await
            .unwrap()
            .unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(
        head.starts_with("http/1.1 101 switching protocols\r\n"),
        "{head}"
    );
    assert!(head.contains("\r\nupgrade: plexwire/1\r\n"), "{head}");
    assert!(head.contains("\r\nconnection: upgrade\r\n"), "{head}");
    let mut frame = [0u8; 9];
    timeout(LIMIT, s.read_exact(&mut frame))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&frame, b"\0\0\0\x05world");
}

/// A one-shot HTTP server that answers every connection with `response`.
async fn canned_server(response: &'static str) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s.write_all(response.as_bytes()).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_client_pointed_at_another_http_server_is_told_so() {
    // A JSON API that does not know the path (FastAPI's answer).
    let addr = canned_server(
        "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 22\r\n\r\n{\"detail\":\"Not Found\"}",
    )
    .await;
    let url = format!("http://{addr}");
    let e = plexwire::connect(&url).await.unwrap_err().to_string();
    assert_eq!(
        e,
        format!("could not connect to `{url}`: the HTTP server answered the upgrade request (`GET /v1/connect`, `Upgrade: plexwire/1`) with 404 Not Found, not 101 Switching Protocols: Not Found (is a plexwire listener running there?)")
    );
    // A web page.
    let addr = canned_server(
        "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: 13\r\n\r\n<html></html>",
    )
    .await;
    let e = plexwire::connect(&format!("http://{addr}/app"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("(`GET /app/v1/connect`, `Upgrade: plexwire/1`) with 200 OK, not 101 Switching Protocols (is a plexwire listener"),
        "{e}"
    );
    // A server that switches to something else.
    let addr = canned_server(
        "HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
    )
    .await;
    let e = plexwire::connect(&format!("http://{addr}"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("switched protocols to `websocket`, not `plexwire/1`"),
        "{e}"
    );
    // A plexwire broker's tcp:// listener: it hangs up on the request head.
    let broker = Broker::new(BrokerConfig::default());
    let tcp = broker.listen_clients("tcp://127.0.0.1:0").await.unwrap();
    let url = tcp.url().replacen("tcp://", "http://", 1);
    let e = timeout(LIMIT, plexwire::connect(&url))
        .await
        .expect("an answer, not a hang")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("the server closed the connection without answering the upgrade request; is it an HTTP listener (and not tcp://"),
        "{e}"
    );
}

#[cfg(feature = "tls")]
mod https {
    use super::*;
    use crate::common::certs;
    use plexwire::transport::{self, TransportError};

    fn reason(e: TransportError) -> String {
        match e {
            TransportError::Tls { reason, .. } => reason,
            other => panic!("not a TLS error: {other}"),
        }
    }

    #[tokio::test]
    async fn a_server_signed_by_another_ca_is_rejected_with_the_reason() {
        let l = transport::listen(&format!("https://127.0.0.1:0?{}", certs::listen_opts()))
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let other = plexwire::transport::tls::dev::DevCa::new("another CA").unwrap();
        let ca = dir.path().join("other-ca.pem");
        std::fs::write(&ca, other.cert_pem()).unwrap();
        let url = format!(
            "{}?ca={}",
            l.local_endpoint().url().split('?').next().unwrap(),
            ca.display()
        );
        let e = transport::connect(&url).await.unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("TLS handshake with `{url}` failed: ")),
            "{e}"
        );
        let r = reason(e);
        assert!(
            r.starts_with("certificate signed by an unknown authority: the server's certificate does not chain to the CA in `ca=`"),
            "{r}"
        );
    }

    #[tokio::test]
    async fn mutual_tls_refusal_after_the_handshake_is_a_tls_error() {
        // With TLS 1.3 the server checks the client's certificate after the
        // client has finished its side: the refusal arrives while the client
        // waits for the upgrade's answer, and is reported as what it is.
        let f = certs::files();
        let l = transport::listen(&format!(
            "https://127.0.0.1:0?{}&client_ca={}&tls=1.3",
            certs::listen_opts(),
            f.ca
        ))
        .await
        .unwrap();
        let url = format!(
            "{}?{}",
            l.local_endpoint().url().split('?').next().unwrap(),
            certs::connect_opts()
        );
        let r = reason(transport::connect(&url).await.unwrap_err());
        assert!(r.contains("missing client certificate"), "{r}");
    }

    #[tokio::test]
    async fn mixing_up_http_and_https_is_an_error_not_a_hang() {
        let tls = transport::listen(&format!("https://127.0.0.1:0?{}", certs::listen_opts()))
            .await
            .unwrap();
        let plain_url = tls
            .local_endpoint()
            .url()
            .split('?')
            .next()
            .unwrap()
            .replacen("https://", "http://", 1);
        let e = timeout(LIMIT, transport::connect(&plain_url))
            .await
            .expect("an answer, not a hang")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(&format!("could not connect to `{plain_url}`: the answer to the upgrade request is not HTTP/1.1")) && e.contains("is the listener https://? then connect with https://"),
            "{e}"
        );

        let plain = transport::listen("http://127.0.0.1:0").await.unwrap();
        let tls_url = format!(
            "{}?{}",
            plain
                .local_endpoint()
                .url()
                .replacen("http://", "https://", 1),
            certs::connect_opts()
        );
        let e = timeout(LIMIT, transport::connect(&tls_url))
            .await
            .expect("an answer, not a hang")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(&format!(
                "TLS handshake with `{tls_url}` failed: the server does not speak TLS"
            )) && e.contains("is it a plain-text listener (`tcp://`, `http://`)?"),
            "{e}"
        );
    }
}
