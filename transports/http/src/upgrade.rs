//! The full-duplex connection: an HTTP/1.1 upgrade to `plexwire/1`.
//!
//! Both sides exchange one request and one response, and the socket (or the
//! TLS session on it) then carries plexwire's usual u32 length-prefixed
//! frames in both directions, exactly as over `tcp://`:
//!
//! ```text
//! GET /v1/connect HTTP/1.1            HTTP/1.1 101 Switching Protocols
//! host: 127.0.0.1:8080                connection: upgrade
//! connection: upgrade                 upgrade: plexwire/1
//! upgrade: plexwire/1
//! ```
//!
//! After the upgrade hyper hands back the IO it was given (`Upgraded::downcast`),
//! so the connection reads and writes the socket directly: no HTTP framing,
//! no extra task, no lock between the halves of a plain TCP stream. Bytes
//! hyper read past the HTTP head are replayed first.

use std::io;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue, ALLOW, CONNECTION, HOST, UPGRADE};
use hyper::upgrade::Upgraded;
use hyper::{Method, Request, Response, StatusCode, Version};
use hyper_util::rt::TokioIo;
use plexwire_transport::{Connection, Endpoint, PeerInfo, TransportError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;

use crate::router::{json_error, ResponseBody as Body, Route, RouteContext};
use crate::{CONNECT_PATH, UPGRADE_PROTOCOL};

/// How long a client waits for the answer to its upgrade request (after the
/// TCP connection, and the TLS handshake for `https://`, are made).
pub const UPGRADE_TIMEOUT: Duration = Duration::from_secs(10);

/// The most of a refusal's body a client reads, looking for its `detail`.
const MAX_REFUSAL_BODY: usize = 64 * 1024;

/// An IO object HTTP runs over, which becomes a [`Connection`] once
/// upgraded: a TCP stream (`http://`) or a TLS session over one
/// (`https://`).
pub(crate) trait Halves: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The connection, with `read_ahead` (bytes already read past the HTTP
    /// head) delivered before anything else.
    fn into_connection(self, read_ahead: Bytes, peer: PeerInfo, max: usize) -> Connection;
}

impl Halves for TcpStream {
    fn into_connection(self, read_ahead: Bytes, peer: PeerInfo, max: usize) -> Connection {
        let (r, w) = self.into_split();
        stream_connection(r, w, read_ahead, peer, max)
    }
}

#[cfg(feature = "tls")]
impl Halves for plexwire_tls::TlsStream<TcpStream> {
    fn into_connection(self, read_ahead: Bytes, peer: PeerInfo, max: usize) -> Connection {
        let (r, w) = tokio::io::split(self);
        stream_connection(r, w, read_ahead, peer, max)
    }
}

fn stream_connection(
    r: impl AsyncRead + Send + 'static,
    w: impl AsyncWrite + Send + 'static,
    read_ahead: Bytes,
    peer: PeerInfo,
    max: usize,
) -> Connection {
    if read_ahead.is_empty() {
        Connection::from_stream(r, w, peer, max)
    } else {
        Connection::from_stream(io::Cursor::new(read_ahead).chain(r), w, peer, max)
    }
}

/// The upgraded IO as a connection: the original IO if hyper hands it back
/// (it always does here), else hyper's wrapper split in two.
fn upgraded_connection<I: Halves>(up: Upgraded, peer: PeerInfo, max: usize) -> Connection {
    match up.downcast::<TokioIo<I>>() {
        Ok(parts) => parts
            .io
            .into_inner()
            .into_connection(parts.read_buf, peer, max),
        Err(up) => {
            let (r, w) = tokio::io::split(TokioIo::new(up));
            Connection::from_stream(r, w, peer, max)
        }
    }
}

/// The comma-separated tokens of every `name` header, trimmed.
fn tokens(headers: &HeaderMap, name: hyper::header::HeaderName) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .collect()
}

fn has_token(headers: &HeaderMap, name: hyper::header::HeaderName, token: &str) -> bool {
    tokens(headers, name)
        .iter()
        .any(|t| t.eq_ignore_ascii_case(token))
}

/// A refusal that also says which upgrade this endpoint offers.
fn upgrade_required(detail: String) -> Response<Body> {
    let mut r = json_error(StatusCode::UPGRADE_REQUIRED, detail);
    let h = r.headers_mut();
    h.insert(UPGRADE, HeaderValue::from_static(UPGRADE_PROTOCOL));
    h.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    r
}

/// The upgrade's route on a listener serving HTTP over `I` (any method:
/// a wrong one is explained here).
pub(crate) fn route<I: Halves>() -> Route {
    Route::any(CONNECT_PATH, |req, cx: RouteContext| async move {
        accept::<I>(req, &cx)
    })
    .about(format!(
        "GET with `Connection: Upgrade` and `Upgrade: {UPGRADE_PROTOCOL}`: plexwire clients and workers"
    ))
}

/// Answers `GET /v1/connect`: `101 Switching Protocols` and, once hyper has
/// sent it, the upgraded IO to the listener's accept queue; or a 4xx with a
/// JSON `detail` saying what is wrong with the request.
fn accept<I: Halves>(mut req: Request<Incoming>, cx: &RouteContext) -> Response<Body> {
    let others = format!("this listener serves: {}", cx.describe_routes());
    let how =
        format!("GET {CONNECT_PATH} with `Connection: Upgrade` and `Upgrade: {UPGRADE_PROTOCOL}`");
    if req.method() != Method::GET {
        let mut r = json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!(
                "{CONNECT_PATH} takes GET, not {}: send {how} (plexwire clients and workers do, given an http:// endpoint); {others}",
                req.method()
            ),
        );
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET"));
        return r;
    }
    if req.version() != Version::HTTP_11 {
        return json_error(
            StatusCode::BAD_REQUEST,
            format!(
                "the upgrade to {UPGRADE_PROTOCOL} needs HTTP/1.1, the request is {:?}",
                req.version()
            ),
        );
    }
    let offered = tokens(req.headers(), UPGRADE);
    if offered.is_empty() {
        return upgrade_required(format!(
            "{CONNECT_PATH} switches to a plexwire connection and the request has no `Upgrade` header: send {how} (plexwire clients and workers do, given an http:// endpoint); {others}"
        ));
    }
    if !offered
        .iter()
        .any(|t| t.eq_ignore_ascii_case(UPGRADE_PROTOCOL))
    {
        return upgrade_required(format!(
            "this listener speaks `{UPGRADE_PROTOCOL}` and the request offers `{}`: send `Upgrade: {UPGRADE_PROTOCOL}` (a peer of another plexwire version needs a listener of that version)",
            offered.join(", ")
        ));
    }
    if !has_token(req.headers(), CONNECTION, "upgrade") {
        return json_error(
            StatusCode::BAD_REQUEST,
            format!(
                "`Upgrade: {UPGRADE_PROTOCOL}` needs `Connection: Upgrade` too (a proxy in between may have removed it)"
            ),
        );
    }
    if cx.handoff().is_closed() {
        return json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the broker is not accepting connections",
        );
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    let accept = cx.handoff().clone();
    let peer = PeerInfo {
        transport: cx.transport(),
        remote: cx.peer().to_string(),
    };
    let max = cx.max_frame_size();
    // Resolves once hyper has written the 101 and let go of the IO.
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(up) => {
                let remote = peer.remote.clone();
                if accept
                    .send(upgraded_connection::<I>(up, peer, max))
                    .await
                    .is_err()
                {
                    tracing::debug!(%remote, "upgraded connection dropped: the listener is gone");
                }
            }
            Err(e) => tracing::debug!(peer = %peer.remote, error = %e, "HTTP upgrade failed"),
        }
    });
    let mut r = Response::new(Empty::new().boxed_unsync());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(UPGRADE, HeaderValue::from_static(UPGRADE_PROTOCOL));
    r
}

/// The request path for an endpoint: its path (a prefix, for a listener
/// behind a proxy that mounts it under one) followed by `/v1/connect`.
pub(crate) fn request_path(endpoint_path: &str) -> String {
    format!("{}{CONNECT_PATH}", endpoint_path.trim_end_matches('/'))
}

/// Client side: sends the upgrade request over `io` and returns the upgraded
/// connection, or says why the server did not switch protocols.
pub(crate) async fn connect<I: Halves>(
    io: I,
    endpoint: &Endpoint,
    host: &str,
    port: u16,
    path: &str,
    peer: PeerInfo,
) -> Result<Connection, TransportError> {
    let url = endpoint.url();
    let path = request_path(path);
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let exchange = async {
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| hyper_failure(endpoint, &e))?;
        // Drives the HTTP connection until the upgrade (then it finishes by
        // itself) or until this attempt is abandoned.
        let driver = AbortOnDrop(tokio::spawn(conn.with_upgrades()));
        let request = Request::get(path.as_str())
            .header(HOST, authority.as_str())
            .header(CONNECTION, "upgrade")
            .header(UPGRADE, UPGRADE_PROTOCOL)
            .body(Empty::<Bytes>::new())
            .map_err(|e| {
                connect_error(
                    url,
                    io::ErrorKind::InvalidInput,
                    format!("cannot build the upgrade request: {e}"),
                )
            })?;
        let response = send
            .send_request(request)
            .await
            .map_err(|e| hyper_failure(endpoint, &e))?;
        let status = response.status();
        if status != StatusCode::SWITCHING_PROTOCOLS {
            let body = Limited::new(response.into_body(), MAX_REFUSAL_BODY)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            drop(driver);
            return Err(refused(url, &path, status, &body));
        }
        if !has_token(response.headers(), UPGRADE, UPGRADE_PROTOCOL) {
            let to = tokens(response.headers(), UPGRADE).join(", ");
            return Err(connect_error(
                url,
                io::ErrorKind::InvalidData,
                format!(
                    "the server switched protocols to `{to}`, not `{UPGRADE_PROTOCOL}`; is it a plexwire HTTP listener?"
                ),
            ));
        }
        let max = endpoint.max_frame_size();
        let up = hyper::upgrade::on(response)
            .await
            .map_err(|e| hyper_failure(endpoint, &e))?;
        drop(driver);
        Ok(upgraded_connection::<I>(up, peer, max))
    };
    match tokio::time::timeout(UPGRADE_TIMEOUT, exchange).await {
        Ok(r) => r,
        Err(_) => Err(connect_error(
            url,
            io::ErrorKind::TimedOut,
            format!(
                "no answer to the HTTP upgrade request (`GET {path}`, `Upgrade: {UPGRADE_PROTOCOL}`) within {UPGRADE_TIMEOUT:?}"
            ),
        )),
    }
}

/// Aborts a task when dropped (the HTTP connection of an abandoned attempt).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        // After a successful upgrade the task has finished, and this does nothing.
        if !self.0.is_finished() {
            self.0.abort();
        }
    }
}

fn connect_error(url: &str, kind: io::ErrorKind, message: String) -> TransportError {
    TransportError::Connect {
        url: url.to_owned(),
        source: io::Error::new(kind, message),
    }
}

/// A non-101 answer: the status, and the server's `detail` if it sent one.
fn refused(url: &str, path: &str, status: StatusCode, body: &[u8]) -> TransportError {
    let detail = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("detail")?.as_str().map(str::to_owned));
    let mut message = format!(
        "the HTTP server answered the upgrade request (`GET {path}`, `Upgrade: {UPGRADE_PROTOCOL}`) with {status}, not 101 Switching Protocols"
    );
    if let Some(d) = detail {
        message.push_str(": ");
        message.push_str(&d);
    }
    connect_error(url, io::ErrorKind::ConnectionRefused, message)
}

/// An HTTP-level failure during the upgrade. A TLS error underneath (a
/// client certificate the server rejected after the handshake, with TLS 1.3)
/// is returned as the TLS error it is.
fn hyper_failure(endpoint: &Endpoint, e: &hyper::Error) -> TransportError {
    let url = endpoint.url();
    let mut source = std::error::Error::source(e);
    let mut kind = io::ErrorKind::Other;
    let mut detail = String::new();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<io::Error>() {
            kind = io.kind();
            let text = io.to_string();
            if let Some(reason) = text.strip_prefix("TLS: ") {
                return TransportError::Tls {
                    url: url.to_owned(),
                    reason: reason.to_owned(),
                };
            }
        }
        detail = format!("{detail}: {s}");
        source = s.source();
    }
    let message = if e.is_parse() {
        kind = io::ErrorKind::InvalidData;
        let hint = if endpoint.scheme() == "http" {
            "is the listener https://? then connect with https://"
        } else {
            "is it an HTTP server?"
        };
        format!("the answer to the upgrade request is not HTTP/1.1 ({e}{detail}); {hint}")
    } else if e.is_incomplete_message() {
        kind = io::ErrorKind::ConnectionAborted;
        format!(
            "the server closed the connection without answering the upgrade request{detail}; is it an HTTP listener (and not tcp://, tls:// or quic://)?"
        )
    } else {
        format!("the HTTP upgrade request failed: {e}{detail}")
    };
    connect_error(url, kind, message)
}
