//! The WebSocket backend against tungstenite peers and raw HTTP: frames
//! both ways as text or binary messages, ping answered, close handshake,
//! permessage-deflate declined, refusals, and the route on an HTTP listener.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use plexwire_http::{HttpListener, Router};
use plexwire_transport::{ClientTransport, Endpoint, MessageKind, ServerTransport};
use plexwire_ws::{route, WsListener, WsTransport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

static WS: std::sync::LazyLock<WsTransport> = std::sync::LazyLock::new(WsTransport::default);

/// tungstenite's client, an independent implementation, on `url` (`ws://…`).
async fn tungstenite_client(url: &Endpoint) -> WebSocketStream<tokio::net::TcpStream> {
    let addr = url.url()[5..].split(['/', '?']).next().unwrap().to_owned();
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    tokio_tungstenite::client_async(url.url(), tcp)
        .await
        .unwrap()
        .0
}

fn ep(url: &str) -> Endpoint {
    Endpoint::parse(url).unwrap()
}

#[tokio::test]
async fn frames_flow_both_ways_as_text_or_binary_and_shutdown_closes_with_1000() {
    let mut l = WsListener::bind(&ep("ws://127.0.0.1:0/ws")).await.unwrap();
    let url = l.local_endpoint().clone();
    assert!(url.url().starts_with("ws://127.0.0.1:"), "{url:?}");
    assert!(url.url().ends_with("/ws"), "{url:?}");
    // A raw tungstenite client sees what kind each frame went as.
    let (mut raw, s) = tokio::join!(tungstenite_client(&url), l.accept());
    let raw = &mut raw;
    let s = s.unwrap();
    assert_eq!(s.peer().transport, "ws");
    let (mut stx, mut srx) = s.into_frames();
    stx.send_frame(Bytes::from_static(b"\x00\x01bin"))
        .await
        .unwrap();
    assert_eq!(
        raw.next().await.unwrap().unwrap(),
        Message::Binary(Bytes::from_static(b"\x00\x01bin"))
    );
    stx.set_message_kind(MessageKind::Text);
    stx.send_frame(Bytes::from_static("{\"é\": 1}".as_bytes()))
        .await
        .unwrap();
    assert_eq!(
        raw.next().await.unwrap().unwrap(),
        Message::Text("{\"é\": 1}".into())
    );
    raw.send(Message::Text("hello".into())).await.unwrap();
    raw.send(Message::Binary(Bytes::from_static(b"\xff")))
        .await
        .unwrap();
    assert_eq!(&srx.recv_frame().await.unwrap().unwrap()[..], b"hello");
    assert_eq!(&srx.recv_frame().await.unwrap().unwrap()[..], b"\xff");
    // Not UTF-8 as text: refused before anything is sent.
    let e = stx
        .send_frame(Bytes::from_static(b"\xff"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("must be UTF-8"), "{e}");
    // A ping is answered with a pong carrying its data.
    // (The server answers while its receiver is being read, as it always is
    // in use; the ping itself is not a frame.)
    raw.send(Message::Ping(Bytes::from_static(b"p1")))
        .await
        .unwrap();
    tokio::select! {
        pong = raw.next() => assert_eq!(pong.unwrap().unwrap(), Message::Pong(Bytes::from_static(b"p1"))),
        frame = srx.recv_frame() => panic!("a ping came out as a frame: {frame:?}"),
    }
    // Shutdown: a close frame with 1000; the server's receiver ends once the
    // client answers it.
    stx.shutdown().await.unwrap();
    match raw.next().await.unwrap().unwrap() {
        Message::Close(Some(f)) => assert_eq!(f.code, CloseCode::Normal),
        other => panic!("expected a close frame, got {other:?}"),
    }
    // The client answers the close; the server then ends the TCP connection.
    let (client_end, server_end) = tokio::join!(raw.next(), srx.recv_frame());
    assert!(client_end.is_none(), "{client_end:?}");
    assert!(server_end.is_none(), "{server_end:?}");
}

#[tokio::test]
async fn the_client_transport_closes_with_1000_and_the_server_sees_the_end() {
    let mut l = WsListener::bind(&ep("ws://[::1]:0/")).await.unwrap();
    let url = l.local_endpoint().clone();
    let (c, s) = tokio::join!(WS.connect(&url), l.accept());
    let (mut ctx, mut crx) = c.unwrap().into_frames();
    let (mut stx, mut srx) = s.unwrap().into_frames();
    ctx.send_frame(Bytes::from_static(b"ping")).await.unwrap();
    assert_eq!(&srx.recv_frame().await.unwrap().unwrap()[..], b"ping");
    stx.send_frame(Bytes::from_static(b"pong")).await.unwrap();
    assert_eq!(&crx.recv_frame().await.unwrap().unwrap()[..], b"pong");
    // Half-close, as over TCP: the client is done sending, the server
    // still answers, then closes its side too.
    ctx.shutdown().await.unwrap();
    assert!(srx.recv_frame().await.is_none());
    stx.send_frame(Bytes::from_static(b"after")).await.unwrap();
    assert_eq!(&crx.recv_frame().await.unwrap().unwrap()[..], b"after");
    stx.shutdown().await.unwrap();
    assert!(crx.recv_frame().await.is_none());
}

#[tokio::test]
async fn a_message_over_the_limit_is_a_typed_error() {
    let mut l = WsListener::bind(&ep("ws://127.0.0.1:0/?max_frame_size=100"))
        .await
        .unwrap();
    let url = l.local_endpoint().clone();
    let addr = url.url()[5..].split(['/', '?']).next().unwrap().to_owned();
    let bigger = ep(&format!("ws://{addr}/"));
    let (mut raw, s) = tokio::join!(tungstenite_client(&bigger), l.accept());
    let (_stx, mut srx) = s.unwrap().into_frames();
    raw.send(Message::Binary(vec![0u8; 101].into()))
        .await
        .unwrap();
    let e = srx.recv_frame().await.unwrap().unwrap_err().to_string();
    assert!(e.contains("101 bytes exceeds the 100-byte limit"), "{e}");
    // The peer hears why: close 1009 (message too big).
    match raw.next().await.unwrap().unwrap() {
        Message::Close(Some(f)) => assert_eq!(f.code, CloseCode::Size),
        other => panic!("expected a close frame, got {other:?}"),
    }
}

/// Sends `request` on a fresh TCP connection and returns the response head.
async fn raw_http(addr: &str, request: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before a response head: {got:?}");
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).to_lowercase()
}

#[tokio::test]
async fn permessage_deflate_is_declined_and_bad_handshakes_are_explained() {
    let l = WsListener::bind(&ep("ws://127.0.0.1:0/ws")).await.unwrap();
    let addr = l.local_endpoint().url()[5..]
        .trim_end_matches("/ws")
        .to_owned();
    let head = raw_http(
        &addr,
        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    // RFC 6455's own example key and answer.
    assert!(
        head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    assert!(!head.contains("sec-websocket-extensions"), "{head}");
    assert!(head.contains("cache-control: no-cache"), "{head}");
    let head = raw_http(&addr, "GET /ws HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(head.starts_with("http/1.1 426"), "{head}");
    let head = raw_http(
        &addr,
        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("http/1.1 426"), "{head}");
    assert!(head.contains("sec-websocket-version: 13"), "{head}");
    // A client to a path that is not served hears the status.
    let wrong = ep(&format!("ws://{addr}/nope"));
    let e = WsTransport::default()
        .connect(&wrong)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("refused the WebSocket handshake on /nope with 404"),
        "{e}"
    );
}

#[tokio::test]
async fn the_route_serves_websocket_on_an_http_listener_beside_the_upgrade() {
    let mut l =
        HttpListener::bind_with(&ep("http://127.0.0.1:0"), Router::new().route(route("/ws")))
            .await
            .unwrap();
    let http_url = l.local_endpoint().clone();
    let ws_url = ep(&format!(
        "ws://{}/ws",
        http_url.url()[7..].trim_end_matches('/')
    ));
    let (c, s) = tokio::join!(WS.connect(&ws_url), l.accept());
    let (mut ctx, _crx) = c.unwrap().into_frames();
    let s = s.unwrap();
    assert_eq!(s.peer().transport, "ws");
    let (_stx, mut srx) = s.into_frames();
    ctx.send_frame(Bytes::from_static(b"over ws"))
        .await
        .unwrap();
    assert_eq!(&srx.recv_frame().await.unwrap().unwrap()[..], b"over ws");
    // The plexwire upgrade still works on the same port.
    let http = plexwire_http::HttpTransport::default();
    let (c, s) = tokio::join!(http.connect(&http_url), l.accept());
    assert_eq!(c.unwrap().peer().transport, "http");
    assert_eq!(s.unwrap().peer().transport, "http");
}
