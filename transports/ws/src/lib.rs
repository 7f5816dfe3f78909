//! plexwire's WebSocket backend: `ws://host:port/path`, and
//! `wss://host:port/path` with the `tls` feature.
//!
//! One plexwire frame is one WebSocket message (RFC 6455): a connection made
//! here is a message channel ([`Connection::from_typed_messages`]), so no
//! length prefix is added, and a sender that says its frames are text
//! ([`FrameSender::set_message_kind`](plexwire_transport::FrameSender::set_message_kind),
//! as a JSON codec does) sends text messages, otherwise binary ones. Text and
//! binary messages both arrive as frames. WebSocket pings are answered with
//! pongs (by tungstenite, on the next read or write); shutting a sender down
//! sends a close frame with status 1000 and the peer's close is answered;
//! permessage-deflate is never offered and, offered by a browser, declined
//! (the handshake answer has no `Sec-WebSocket-Extensions`, so the browser
//! goes on uncompressed).
//!
//! # Where it is served
//!
//! - **Standalone**: [`WsListener::bind`] on `ws://127.0.0.1:8080/ws` serves
//!   the WebSocket upgrade on the endpoint's path (`/` when it has none). It
//!   is plexwire-http's routed listener underneath ([`WsListener::http`]), so
//!   other routes may join it ([`WsListener::bind_with`]).
//! - **As a route** on any [`HttpListener`]:
//!   [`route`] hands each upgraded WebSocket to the listener's accept queue
//!   as a plexwire [`Connection`], so one `http://` port carries the
//!   WebSocket path beside the plexwire upgrade, ReasonChip's POST endpoint
//!   and static files. A protocol with its own use of the socket (the
//!   juggler session) answers the handshake itself with [`accept_upgrade`]
//!   and gets the raw [`WebSocket`].
//!
//! [`WsTransport`] is the connecting side; [`connect_socket`] gives the raw
//! [`WebSocket`] instead of a [`Connection`].
//!
//! # `wss://`
//!
//! TLS composition, as `https://` does it: the listener is an `https://`
//! listener with the URL's TLS options (`cert`, `key`, `client_ca`,
//! `client_auth`, `tls`), the client runs plexwire-tls over TCP with `ca` (or
//! `insecure=true`), `server_name`, `cert`/`key`. Without the feature a
//! `wss://` endpoint fails with an error naming it.
//!
//! # Limits
//!
//! A message (and a WebSocket frame) may not exceed the endpoint's
//! `max_frame_size`; a larger one ends the connection with
//! an error naming both sizes, after a close with status 1009 (too big); the
//! limit is checked when a frame header announces its length, before the
//! payload is buffered. Framing is this crate's ([`codec`]), so that a
//! connection half-closes as plexwire's connections do (see there).
//!
//! # Features
//!
//! - `tls`: `wss://`.

#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod backend;
pub mod codec;
mod socket;

use std::io;
use std::time::Duration;

use plexwire_http::hyper::body::Incoming;
use plexwire_http::hyper::header::{
    HeaderMap, HeaderValue, CACHE_CONTROL, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY,
    SEC_WEBSOCKET_VERSION, UPGRADE,
};
use plexwire_http::hyper::{Method, Request, Response, StatusCode};
use plexwire_http::{full, json_error, HttpListener, ResponseBody, Route, RouteContext, Router};
use plexwire_transport::{
    Address, Connection, Endpoint, PeerInfo, ServerTransport, TransportError,
};
use tungstenite::handshake::derive_accept_key;

#[cfg(feature = "tls")]
use plexwire_tls::{TlsClientConfig, TlsConnector};

pub use backend::backend;
pub use codec::{Side, WsCodec, WsError, WsFrame};
/// plexwire-http, whose listener serves the WebSocket route.
pub use plexwire_http;
pub use socket::{into_connection, AsyncIo, WebSocket, WsIo};

/// How long a client waits for the handshake answer.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The `PeerInfo::transport` of connections served on a listener whose
/// `RouteContext::transport` is `http_transport`.
fn ws_name(http_transport: &str) -> &'static str {
    if http_transport == "https" {
        "wss"
    } else {
        "ws"
    }
}

/// Whether the comma-separated header `name` holds `token` (any case).
fn has_token(
    headers: &HeaderMap,
    name: impl plexwire_http::hyper::header::AsHeaderName,
    token: &str,
) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// A WebSocket that has been accepted: hyper sends the `101` answer, then
/// [`PendingSocket::ready`] gives the socket.
#[derive(Debug)]
pub struct PendingSocket {
    on_upgrade: plexwire_http::hyper::upgrade::OnUpgrade,
    max: usize,
    /// The client's address.
    pub peer: PeerInfo,
}

impl PendingSocket {
    /// The WebSocket, once hyper has written the `101` and let go of the IO
    /// (so only after the response has been returned to hyper).
    pub async fn ready(self) -> Result<WebSocket, TransportError> {
        let up = self.on_upgrade.await.map_err(|e| {
            TransportError::Io(io::Error::other(format!("WebSocket upgrade failed: {e}")))
        })?;
        let io: WsIo = Box::new(hyper_util::rt::TokioIo::new(up));
        Ok(WebSocket::new(
            io,
            Side::Server,
            bytes::BytesMut::new(),
            self.max,
        ))
    }
}

/// Answers a WebSocket handshake request (RFC 6455 §4.2): `Ok` with the
/// `101 Switching Protocols` response to return and the socket to come, or
/// `Err` with a 4xx response that says what was wrong with the request.
/// Every answer carries `Cache-Control: no-cache`. No extension is accepted
/// (permessage-deflate is declined) and no subprotocol chosen.
pub fn accept_upgrade(
    req: &mut Request<Incoming>,
    cx: &RouteContext,
) -> Result<(Response<ResponseBody>, PendingSocket), Box<Response<ResponseBody>>> {
    let path = req.uri().path().to_owned();
    let how = format!(
        "a WebSocket client (GET {path} with `Upgrade: websocket`, `Connection: Upgrade`, `Sec-WebSocket-Version: 13` and a `Sec-WebSocket-Key`)"
    );
    let refuse = |status: StatusCode, detail: String| {
        let mut r = Box::new(json_error(status, detail));
        r.headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        r
    };
    if req.method() != Method::GET {
        return Err(refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            format!(
                "{path} is a WebSocket endpoint and takes GET, not {}: connect {how}",
                req.method()
            ),
        ));
    }
    let h = req.headers();
    if !has_token(h, UPGRADE, "websocket") {
        let mut r = refuse(
            StatusCode::UPGRADE_REQUIRED,
            format!(
                "{path} is a WebSocket endpoint and the request does not ask for `Upgrade: websocket`: connect {how}; this listener serves: {}",
                cx.describe_routes()
            ),
        );
        r.headers_mut()
            .insert(UPGRADE, HeaderValue::from_static("websocket"));
        return Err(r);
    }
    if !has_token(h, CONNECTION, "upgrade") {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "`Upgrade: websocket` needs `Connection: Upgrade` too (a proxy in between may have removed it)".into(),
        ));
    }
    if h.get(SEC_WEBSOCKET_VERSION)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        != Some("13")
    {
        let mut r = refuse(
            StatusCode::UPGRADE_REQUIRED,
            "this server speaks WebSocket version 13 (RFC 6455): send `Sec-WebSocket-Version: 13`"
                .into(),
        );
        r.headers_mut()
            .insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        return Err(r);
    }
    let Some(key) = h.get(SEC_WEBSOCKET_KEY).filter(|k| !k.is_empty()) else {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "the WebSocket handshake has no `Sec-WebSocket-Key`".into(),
        ));
    };
    let accept = derive_accept_key(key.as_bytes());
    let pending = PendingSocket {
        on_upgrade: plexwire_http::hyper::upgrade::on(&mut *req),
        max: cx.max_frame_size(),
        peer: PeerInfo {
            transport: ws_name(cx.transport()),
            remote: cx.peer().to_string(),
        },
    };
    let mut r = Response::new(full(bytes::Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(
        SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).expect("base64 is a valid header value"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok((r, pending))
}

/// The WebSocket route for `path` on an HTTP listener: each WebSocket
/// becomes a plexwire [`Connection`] (one frame per message) handed to the
/// listener's accept queue.
pub fn route(path: impl Into<String>) -> Route {
    Route::any(
        path,
        |mut req: Request<Incoming>, cx: RouteContext| async move {
            if cx.handoff().is_closed() {
                return json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the listener is not accepting connections",
                );
            }
            let (response, pending) = match accept_upgrade(&mut req, &cx) {
                Ok(ok) => ok,
                Err(refusal) => return *refusal,
            };
            let handoff = cx.handoff().clone();
            tokio::spawn(async move {
                let peer = pending.peer.clone();
                match pending.ready().await {
                    Ok(ws) => {
                        if handoff
                            .send(into_connection(ws, peer.clone()))
                            .await
                            .is_err()
                        {
                            tracing::debug!(%peer, "WebSocket dropped: the listener is gone");
                        }
                    }
                    Err(e) => tracing::debug!(%peer, error = %e, "WebSocket upgrade failed"),
                }
            });
            response
        },
    )
    .about("GET with `Upgrade: websocket`: plexwire peers over WebSocket, one frame per message")
}

/// The `http://` or `https://` endpoint a `ws://` or `wss://` one is served
/// on, and the WebSocket path.
pub fn http_endpoint(endpoint: &Endpoint) -> Result<(Endpoint, String), TransportError> {
    let endpoint = backend().check(endpoint)?;
    let (host, port, path) = match endpoint.address() {
        Address::Host { host, port, path } => (host, *port, path),
        _ => return Err(endpoint.wrong_backend("ws")),
    };
    let scheme = match endpoint.scheme() {
        "ws" => "http",
        "wss" => "https",
        _ => return Err(endpoint.wrong_backend("ws")),
    };
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.clone()
    };
    let query = endpoint
        .options()
        .map(|(k, v)| format!("{k}={}", plexwire_transport::encode_url_part(v)))
        .collect::<Vec<_>>()
        .join("&");
    let url = if query.is_empty() {
        format!("{scheme}://{host}:{port}/")
    } else {
        format!("{scheme}://{host}:{port}/?{query}")
    };
    let path = if path.is_empty() {
        "/".to_owned()
    } else {
        path.clone()
    };
    Ok((
        Endpoint::parse(&url)?.with_max_frame_size(endpoint.max_frame_size()),
        path,
    ))
}

/// A bound `ws://` or `wss://` listener: the WebSocket upgrade on the
/// endpoint's path, on plexwire-http's routed listener. Dropping it stops
/// listening; connections already accepted go on.
#[derive(Debug)]
pub struct WsListener {
    endpoint: Endpoint,
    http: HttpListener,
}

impl WsListener {
    /// Binds `endpoint` (`ws://host:port/path`, or `wss://…` with the TLS
    /// settings in its URL; port 0 picks a free one).
    pub async fn bind(endpoint: &Endpoint) -> Result<WsListener, TransportError> {
        WsListener::bind_with(endpoint, Router::new()).await
    }

    /// Binds `endpoint` as [`WsListener::bind`] does, serving `router`'s
    /// routes on the same port too (the WebSocket path is taken).
    pub async fn bind_with(
        endpoint: &Endpoint,
        router: Router,
    ) -> Result<WsListener, TransportError> {
        let (http_ep, path) = http_endpoint(endpoint)?;
        let http = HttpListener::bind_with(&http_ep, router.route(route(path.clone())))
            .await
            .map_err(|e| match e {
                TransportError::Bind { source, .. } => TransportError::Bind {
                    url: endpoint.url().to_owned(),
                    source,
                },
                other => other,
            })?;
        let bound = match http.local_endpoint().address() {
            Address::Host { host, port, .. } => endpoint.with_address(Address::Host {
                host: host.clone(),
                port: *port,
                path,
            }),
            _ => return Err(endpoint.wrong_backend("ws")),
        };
        Ok(WsListener {
            endpoint: bound,
            http,
        })
    }

    /// The HTTP listener underneath (its routes, to add more).
    pub fn http(&self) -> &HttpListener {
        &self.http
    }
}

#[async_trait::async_trait]
impl ServerTransport for WsListener {
    async fn accept(&mut self) -> Result<Connection, TransportError> {
        self.http.accept().await
    }

    fn local_endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn as_any_mut(&mut self) -> Option<&mut dyn std::any::Any> {
        Some(self)
    }
}

/// Connects to `ws://` and `wss://` endpoints: TCP (every address the host
/// resolves to, in turn), TLS for `wss://`, then the WebSocket handshake on
/// the endpoint's path.
///
/// [`WsTransport::default`] reads a `wss://` endpoint's TLS settings from
/// its URL (`ca=…`, as for `tls://`).
#[derive(Debug, Clone, Default)]
pub struct WsTransport {
    #[cfg(feature = "tls")]
    tls: Option<TlsClientConfig>,
    /// Extra request headers (`Authorization`, say).
    headers: Vec<(String, String)>,
}

impl WsTransport {
    /// Uses `config` for every `wss://` connection, whatever the URL's TLS
    /// options say.
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn with_tls_config(mut self, config: TlsClientConfig) -> WsTransport {
        self.tls = Some(config);
        self
    }

    /// Sends `name: value` with the handshake request (e.g. `Authorization`).
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> WsTransport {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Connects and gives the raw [`WebSocket`].
    pub async fn connect_socket(
        &self,
        endpoint: &Endpoint,
    ) -> Result<(WebSocket, PeerInfo), TransportError> {
        let endpoint = &backend().check(endpoint)?;
        let (host, port, path) = match endpoint.address() {
            Address::Host { host, port, path } => (host.clone(), *port, path.clone()),
            _ => return Err(endpoint.wrong_backend("ws")),
        };
        #[cfg(not(feature = "tls"))]
        if endpoint.scheme() == "wss" {
            return Err(TransportError::FeatureDisabled {
                url: endpoint.url().to_owned(),
                feature: "tls",
            });
        }
        #[cfg(feature = "tls")]
        let connector = if endpoint.scheme() == "wss" {
            let config = match &self.tls {
                Some(c) => c.clone(),
                None => TlsClientConfig::from_endpoint(endpoint)?,
            };
            Some(TlsConnector::new(&config, endpoint)?)
        } else {
            None
        };
        let stream = plexwire_http::tcp_connect(endpoint, &host, port).await?;
        let remote = stream
            .peer_addr()
            .map_err(|source| TransportError::Connect {
                url: endpoint.url().to_owned(),
                source,
            })?
            .to_string();
        let io: WsIo = {
            #[cfg(feature = "tls")]
            match connector {
                Some(c) => Box::new(c.connect_stream(stream).await?),
                None => Box::new(stream),
            }
            #[cfg(not(feature = "tls"))]
            Box::new(stream)
        };
        let peer = PeerInfo {
            transport: if endpoint.scheme() == "wss" {
                "wss"
            } else {
                "ws"
            },
            remote,
        };
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let path = if path.is_empty() { "/" } else { path.as_str() };
        let ws = socket::handshake(io, endpoint, &authority, path, &self.headers).await?;
        Ok((ws, peer))
    }
}

#[async_trait::async_trait]
impl plexwire_transport::ClientTransport for WsTransport {
    async fn connect(&self, endpoint: &Endpoint) -> Result<Connection, TransportError> {
        let (ws, peer) = self.connect_socket(endpoint).await?;
        Ok(into_connection(ws, peer))
    }
}

/// Connects to a `ws://` or `wss://` endpoint and gives the raw
/// [`WebSocket`] (TLS settings from the URL).
pub async fn connect_socket(endpoint: &Endpoint) -> Result<WebSocket, TransportError> {
    Ok(WsTransport::default().connect_socket(endpoint).await?.0)
}
