//! Routes other code adds to an HTTP listener share its port with the
//! plexwire upgrade and ReasonChip's POST endpoint: a plain request →
//! response route, and a route that hands a message connection to the
//! listener's accept queue.

#![cfg(feature = "http")]

use std::time::Duration;

use bytes::Bytes;
use plexwire::transport::http::{
    full, hyper, HttpListener, HttpTransport, Method, Route, RouteContext, Router,
};
use plexwire::transport::{
    self, mem_pair, ClientTransport, Connection, Io, PeerInfo, ServerTransport,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(20);

/// One HTTP/1.1 request with `Connection: close`; the status and the raw
/// (possibly chunked) body.
async fn request(addr: &str, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
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
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (
        head.split(' ').nth(1).unwrap().parse().unwrap(),
        body.to_owned(),
    )
}

fn hello() -> Route {
    Route::new(Method::GET, "/hello", |_req, _cx: RouteContext| async {
        hyper::Response::new(full("hi"))
    })
    .about("a greeting")
}

/// Hands a message connection over and writes one frame on its other end.
fn messages() -> Route {
    Route::new(
        Method::GET,
        "/messages",
        |_req, cx: RouteContext| async move {
            let peer = |remote: String| PeerInfo {
                transport: cx.transport(),
                remote,
            };
            let (theirs, ours) = mem_pair(
                peer("route".into()),
                peer(cx.peer().to_string()),
                cx.max_frame_size(),
            );
            if cx.handoff().send(theirs).await.is_err() {
                return hyper::Response::new(full("gone"));
            }
            let (mut tx, _rx) = ours.into_frames();
            tx.send_frame(Bytes::from_static(b"from the route"))
                .await
                .unwrap();
            hyper::Response::new(full("handed over"))
        },
    )
}

async fn accept(l: &mut Box<dyn ServerTransport>) -> Connection {
    timeout(LIMIT, l.accept()).await.unwrap().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_routes_share_the_port_with_the_upgrade_and_the_post_endpoint() {
    let mut l = transport::listen("http://127.0.0.1:0").await.unwrap();
    // Reached through `Box<dyn ServerTransport>`, after binding.
    let routes = l
        .as_any_mut()
        .and_then(|l| l.downcast_mut::<HttpListener>())
        .expect("an HTTP listener")
        .routes();
    routes.add(hello());
    routes.add(messages());
    let url = l.local_endpoint().clone();
    let addr = url.url()["http://".len()..]
        .trim_end_matches('/')
        .to_owned();

    // A plain request → response route.
    assert_eq!(
        request(&addr, "GET", "/hello", b"").await,
        (200, "hi".into())
    );
    let (status, body) = request(&addr, "POST", "/hello", b"").await;
    assert_eq!(status, 405, "{body}");
    assert!(body.contains("/hello takes GET, not POST"), "{body}");

    // A route that yields a message connection into the same accept queue.
    let (answer, conn) = tokio::join!(request(&addr, "GET", "/messages", b""), accept(&mut l));
    assert_eq!(answer, (200, "handed over".into()));
    assert_eq!(conn.peer().remote, "route");
    let (io, peer) = conn.into_io();
    let Io::Messages { stream, sink } = io else {
        panic!("expected a message connection")
    };
    let conn = Connection::from_typed_messages(stream, sink, peer, 1 << 20);
    let (_tx, mut rx) = conn.into_frames();
    assert_eq!(
        &rx.recv_frame().await.unwrap().unwrap()[..],
        b"from the route"
    );

    // ReasonChip's POST endpoint, on the same port: the body is the first
    // frame of a connection, each frame back a line, the RESULT the last.
    let run = br#"{"packet_type":"RUN","cookie":"c1","pipeline":"p"}"#;
    let post = tokio::spawn({
        let addr = addr.clone();
        async move { request(&addr, "POST", "/v1/stream/stream", run).await }
    });
    let conn = accept(&mut l).await;
    let (mut tx, mut rx) = conn.into_frames();
    assert_eq!(&rx.recv_frame().await.unwrap().unwrap()[..], run);
    tx.send_frame(Bytes::from_static(br#"{"packet_type":"EVENT"}"#))
        .await
        .unwrap();
    tx.send_frame(Bytes::from_static(br#"{"packet_type":"RESULT","rc":"OK"}"#))
        .await
        .unwrap();
    // The response ends after the RESULT although the connection stays open.
    let (status, body) = timeout(LIMIT, post).await.unwrap().unwrap();
    assert_eq!(status, 200);
    assert!(
        body.contains("{\"packet_type\":\"EVENT\"}\n")
            && body.contains("{\"packet_type\":\"RESULT\",\"rc\":\"OK\"}\n"),
        "{body}"
    );

    // And the plexwire upgrade.
    let client = HttpTransport::default();
    let (c, s) = tokio::join!(client.connect(&url), accept(&mut l));
    let (mut ctx, _crx) = c.unwrap().into_frames();
    let (_stx, mut srx) = s.into_frames();
    ctx.send_frame(Bytes::from_static(b"upgraded"))
        .await
        .unwrap();
    assert_eq!(&srx.recv_frame().await.unwrap().unwrap()[..], b"upgraded");

    // Elsewhere: a 404 that lists every route.
    let (status, body) = request(&addr, "GET", "/nowhere", b"").await;
    assert_eq!(status, 404);
    for route in [
        "/v1/connect",
        "POST /v1/stream/stream",
        "GET /hello (a greeting)",
        "GET /messages",
    ] {
        assert!(body.contains(route), "{route}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_given_when_binding_are_served() {
    let ep = plexwire::transport::Endpoint::parse("http://127.0.0.1:0").unwrap();
    let l = HttpListener::bind_with(&ep, Router::new().route(hello()))
        .await
        .unwrap();
    let addr = l.local_endpoint().url()["http://".len()..]
        .trim_end_matches('/')
        .to_owned();
    assert_eq!(
        request(&addr, "GET", "/hello", b"").await,
        (200, "hi".into())
    );
    // Without the plexwire crate's router, no POST endpoint: the transport
    // crate knows no packets.
    let (status, body) = request(&addr, "POST", "/v1/stream/stream", b"{}").await;
    assert_eq!(status, 404, "{body}");
}
