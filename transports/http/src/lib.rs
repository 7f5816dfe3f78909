//! plexwire's HTTP backend: `http://host:port`, and `https://host:port` with
//! the `tls` feature.
//!
//! One listener, one port, several routes ([`Router`], [`Route`]):
//!
//! - **A full-duplex connection for plexwire clients and workers**, always
//!   there: `GET /v1/connect` with `Connection: Upgrade` and `Upgrade:
//!   plexwire/1` is answered `101 Switching Protocols`, and the connection
//!   then carries plexwire's u32 length-prefixed frames both ways, exactly as
//!   `tcp://` does (so the broker's handshake and codec detection, native
//!   JSON and bincode, work unchanged). [`HttpTransport`] is the connecting
//!   side: give a plexwire client or worker an `http://` (or `https://`)
//!   endpoint and it upgrades. This is for networks where only HTTP gets
//!   through: proxies and load balancers that pass upgrades (as they do
//!   WebSocket's) pass it.
//! - **Routes other code adds**, given when binding
//!   ([`HttpListener::bind_with`]) or later ([`HttpListener::routes`]): a
//!   [`Handler`] answers a request with a response and may also hand
//!   [`Connection`]s — byte streams or message channels — to the listener's
//!   accept queue ([`RouteContext::handoff`]), so a WebSocket upgrade, static
//!   files, `/metrics` or a status page share the port. [`exchange_route`]
//!   is one kind: the request body becomes the first frame of an in-memory
//!   connection handed over, and each frame sent back is one line of the
//!   response until an [`Exchange`] says the last has come. The `plexwire`
//!   crate builds ReasonChip's `POST /v1/stream/stream` (NDJSON) on it and
//!   installs it on every listener `plexwire::transport::listen` binds; this
//!   crate knows no packets.
//!
//! A request the listener cannot serve gets a 4xx status with a JSON body
//! `{"detail": "…"}` that says what was wrong and lists the routes served;
//! bodies are bounded by the endpoint's `max_frame_size`. A client whose
//! upgrade is refused gets a [`TransportError::Connect`] naming the URL, the
//! status and that detail.
//!
//! # The upgrade
//!
//! ```text
//! client → server                     server → client
//! GET /v1/connect HTTP/1.1            HTTP/1.1 101 Switching Protocols
//! host: 127.0.0.1:8080                connection: upgrade
//! connection: upgrade                 upgrade: plexwire/1
//! upgrade: plexwire/1
//! ```
//!
//! then frames, as over TCP. The path is [`CONNECT_PATH`], after the
//! endpoint's path if it has one (`http://proxy/plexwire` requests
//! `/plexwire/v1/connect`, for a listener behind a proxy that mounts it under
//! a prefix). A wrong method is `405`; no `Upgrade` header, or one that does
//! not offer [`UPGRADE_PROTOCOL`], is `426 Upgrade Required`; an `Upgrade`
//! without `Connection: Upgrade`, or HTTP/1.0, is `400`. A client waits
//! [`UPGRADE_TIMEOUT`] for the answer. The server bounds the time a client
//! may take to send a request head (30 s).
//!
//! # Why an HTTP/1.1 upgrade and not HTTP/2 streams
//!
//! After the upgrade the socket is a plain byte stream: plexwire's frames go
//! out with no per-frame overhead, and the connection reads and writes the
//! socket directly (hyper hands the IO back), so everything but the one
//! request/response exchange costs what `tcp://` costs. Measured on
//! loopback (debug build, a busy 2-core machine; medians of 30 batches of
//! 200 sequential echoes): a 64-byte round trip took 98–136 µs over
//! `tcp://` and 101–127 µs over `http://`, a 64 KiB one 162–194 µs and
//! 158–184 µs, i.e. the same within noise, and `https://` matched `tls://`
//! the same way. Connecting costs one more round trip: a connection and its
//! first echo took a median 150–250 µs over TCP and 405–420 µs over HTTP.
//!
//! HTTP/2 would put a 9-byte frame header on every DATA frame (13 % more
//! bytes for a 64-byte plexwire frame), add its own flow control
//! (WINDOW_UPDATE frames, and a 64 KiB default window to raise for
//! plexwire's 16 MiB frames), and a task with channels between the socket
//! and each stream. What it buys, several streams on one TCP connection, is
//! something plexwire does not need: one connection already carries any
//! number of concurrent runs. And HTTP/2 through proxies needs h2c or TLS
//! with ALPN, where an HTTP/1.1 upgrade passes wherever WebSocket does.
//!
//! # `https://`
//!
//! With the `tls` feature the same listener and client run over TLS
//! (`plexwire-tls`), with the options of `tls://`: a listener takes `cert`,
//! `key` and, for mutual TLS, `client_ca` and `client_auth`; a client takes
//! `ca` (or `insecure=true`), `server_name`, and `cert` and `key`; both take
//! `tls` (versions). A rejected certificate is a [`TransportError::Tls`]
//! that names the check that failed. Without the feature an `https://`
//! endpoint fails with an error naming it.
//!
//! # Features
//!
//! - `tls`: `https://` ([`HttpListener::bind_tls`] and
//!   [`HttpTransport::with_tls_config`] for settings made in code).

#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod backend;
mod exchange;
mod router;
mod upgrade;

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use plexwire_transport::{
    Address, ClientTransport, Connection, Endpoint, PeerInfo, ServerTransport, TransportError,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

#[cfg(feature = "tls")]
use plexwire_tls::{TlsAcceptor, TlsClientConfig, TlsConnector, TlsServerConfig};

pub use backend::backend;
pub use exchange::{exchange_route, Exchange, Reply};
/// hyper, whose types routes are written in.
pub use hyper;
pub use hyper::Method;
pub use router::{
    full, json_error, Handler, Handoff, ResponseBody, Route, RouteContext, Router, Routes,
};
pub use upgrade::UPGRADE_TIMEOUT;

/// The path plexwire peers upgrade on.
pub const CONNECT_PATH: &str = "/v1/connect";

/// The protocol token of the upgrade (`Upgrade: plexwire/1`): plexwire's
/// length-prefixed frames, as over TCP.
pub const UPGRADE_PROTOCOL: &str = "plexwire/1";

/// Connections waiting to be accepted.
const BACKLOG: usize = 256;

/// TLS handshakes a listener runs at once; past this it stops accepting
/// until some finish (as `tls://` does).
#[cfg(feature = "tls")]
const MAX_HANDSHAKES: usize = 256;

/// How long a client may take to send a request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Stands in for the TLS acceptor in a build without TLS; never constructed.
#[cfg(not(feature = "tls"))]
#[derive(Clone, Debug)]
enum TlsAcceptor {}

/// What every request handler of one listener needs.
#[derive(Clone, Debug)]
struct Shared {
    /// Where accepted connections (upgraded, or handed over by a route) go.
    accept: mpsc::Sender<Connection>,
    /// The endpoint's frame limit (also the bound of request bodies).
    max_frame_size: usize,
    /// `"http"` or `"https"`, for [`PeerInfo`].
    transport: &'static str,
    /// The listener's routes.
    routes: Routes,
}

/// The error for an `https://` endpoint in a build without TLS.
#[cfg(not(feature = "tls"))]
fn tls_disabled(endpoint: &Endpoint) -> TransportError {
    TransportError::FeatureDisabled {
        url: endpoint.url().to_owned(),
        feature: "tls",
    }
}

/// The host, port and path of an `http://` or `https://` endpoint, checked
/// against the scheme's declaration.
fn host_port(endpoint: &Endpoint) -> Result<(String, u16, String), TransportError> {
    #[cfg(not(feature = "tls"))]
    if endpoint.scheme() == "https" {
        return Err(tls_disabled(endpoint));
    }
    match backend().check(endpoint)?.address() {
        Address::Host { host, port, path } => Ok((host.clone(), *port, path.clone())),
        _ => Err(endpoint.wrong_backend("http")),
    }
}

/// A bound `http://` or `https://` listener: plexwire peers upgrade to a
/// full-duplex connection on [`CONNECT_PATH`], and every other route of its
/// [`Router`] is served on the same port (see the crate documentation).
/// Connections the routes hand over come out of
/// [`accept`](ServerTransport::accept). Dropping it stops listening;
/// connections already accepted go on.
#[derive(Debug)]
pub struct HttpListener {
    endpoint: Endpoint,
    incoming: mpsc::Receiver<Connection>,
    routes: Routes,
    server: JoinHandle<()>,
}

impl Drop for HttpListener {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl HttpListener {
    /// Binds `endpoint` (`http://host:port`, or `https://host:port` with the
    /// TLS settings in its URL; port 0 picks a free one), serving the
    /// plexwire upgrade only.
    pub async fn bind(endpoint: &Endpoint) -> Result<HttpListener, TransportError> {
        HttpListener::bind_with(endpoint, Router::new()).await
    }

    /// Binds `endpoint` as [`HttpListener::bind`] does, serving `router`'s
    /// routes besides the upgrade (whose path, [`CONNECT_PATH`], is taken).
    pub async fn bind_with(
        endpoint: &Endpoint,
        router: Router,
    ) -> Result<HttpListener, TransportError> {
        host_port(endpoint)?;
        match endpoint.scheme() {
            #[cfg(feature = "tls")]
            "https" => {
                let config = TlsServerConfig::from_endpoint(endpoint)?;
                HttpListener::bind_tls(endpoint, &config, router).await
            }
            #[cfg(not(feature = "tls"))]
            "https" => Err(tls_disabled(endpoint)),
            _ => HttpListener::start(endpoint, None, router).await,
        }
    }

    /// Binds an `https://` endpoint with TLS settings made in code (the
    /// URL's TLS options are ignored), serving `router`'s routes besides the
    /// upgrade.
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub async fn bind_tls(
        endpoint: &Endpoint,
        config: &TlsServerConfig,
        router: Router,
    ) -> Result<HttpListener, TransportError> {
        if endpoint.scheme() != "https" {
            return Err(endpoint.wrong_backend("https"));
        }
        // Read the certificate before binding, so a bad file binds nothing.
        TlsAcceptor::new(config, endpoint)?;
        HttpListener::start(endpoint, Some(config), router).await
    }

    /// The listener's routes: a route added here serves the next request.
    /// (From a `Box<dyn ServerTransport>`:
    /// `listener.as_any_mut().and_then(|l| l.downcast_mut::<HttpListener>())`.)
    pub fn routes(&self) -> Routes {
        self.routes.clone()
    }

    #[cfg(feature = "tls")]
    async fn start(
        endpoint: &Endpoint,
        tls: Option<&TlsServerConfig>,
        router: Router,
    ) -> Result<HttpListener, TransportError> {
        let (tcp, bound) = HttpListener::listen(endpoint).await?;
        // Handshake errors name the address really bound.
        let acceptor = tls
            .map(|config| TlsAcceptor::new(config, &bound))
            .transpose()?;
        Ok(HttpListener::serve(tcp, bound, acceptor, router))
    }

    #[cfg(not(feature = "tls"))]
    async fn start(
        endpoint: &Endpoint,
        _tls: Option<Infallible>,
        router: Router,
    ) -> Result<HttpListener, TransportError> {
        let (tcp, bound) = HttpListener::listen(endpoint).await?;
        Ok(HttpListener::serve(tcp, bound, None, router))
    }

    async fn listen(endpoint: &Endpoint) -> Result<(TcpListener, Endpoint), TransportError> {
        let (host, port, _) = host_port(endpoint)?;
        let fail = |source| TransportError::Bind {
            url: endpoint.url().to_owned(),
            source,
        };
        let tcp = TcpListener::bind((host, port)).await.map_err(fail)?;
        let local = tcp.local_addr().map_err(fail)?;
        let bound = endpoint.with_address(Address::Host {
            host: local.ip().to_string(),
            port: local.port(),
            path: "/".into(),
        });
        Ok((tcp, bound))
    }

    fn serve(
        tcp: TcpListener,
        endpoint: Endpoint,
        tls: Option<TlsAcceptor>,
        router: Router,
    ) -> HttpListener {
        let (accept, incoming) = mpsc::channel(BACKLOG);
        // The upgrade first: it takes the IO back as the type it was served on.
        #[cfg(feature = "tls")]
        let upgrade = match &tls {
            None => upgrade::route::<TcpStream>(),
            Some(_) => upgrade::route::<plexwire_tls::TlsStream<TcpStream>>(),
        };
        #[cfg(not(feature = "tls"))]
        let upgrade = upgrade::route::<TcpStream>();
        let mut all = Router::new().route(upgrade);
        for route in router.routes() {
            if route.path() != CONNECT_PATH {
                all = all.route(route.clone());
            }
        }
        let routes = Routes::new(all);
        let shared = Shared {
            accept,
            max_frame_size: endpoint.max_frame_size(),
            transport: if tls.is_some() { "https" } else { "http" },
            routes: routes.clone(),
        };
        let server = match tls {
            None => tokio::spawn(serve_plain(tcp, shared)),
            #[cfg(feature = "tls")]
            Some(acceptor) => {
                tokio::spawn(serve_tls(tcp, acceptor, endpoint.url().to_owned(), shared))
            }
            #[cfg(not(feature = "tls"))]
            Some(never) => match never {},
        };
        HttpListener {
            endpoint,
            incoming,
            routes,
            server,
        }
    }
}

/// Waits a little after a failed `accept` (out of file descriptors, say),
/// rather than spinning on it.
async fn accept_failed(e: &io::Error) {
    tracing::warn!(error = %e, "HTTP accept failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// The accept loop of `http://`: a task per connection.
async fn serve_plain(tcp: TcpListener, shared: Shared) {
    loop {
        match tcp.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve_http(stream, peer, shared.clone()));
            }
            Err(e) => accept_failed(&e).await,
        }
    }
}

/// The accept loop of `https://`: TLS handshakes bounded in number and time
/// ([`Handshakes`](plexwire_transport::Handshakes), failures logged there),
/// then a task per connection.
#[cfg(feature = "tls")]
async fn serve_tls(tcp: TcpListener, acceptor: TlsAcceptor, url: String, shared: Shared) {
    use plexwire_transport::{HandshakeLimits, Handshakes, Incoming};
    let sockets = futures_util::stream::unfold(tcp, |tcp| async move {
        let next = tcp
            .accept()
            .await
            .map_err(TransportError::Io)
            .map(|(stream, peer)| {
                let _ = stream.set_nodelay(true);
                Incoming {
                    io: (stream, peer),
                    remote: peer.to_string(),
                }
            });
        Some((next, tcp))
    });
    let mut handshakes = Handshakes::new(
        "TLS handshake",
        url,
        HandshakeLimits {
            max_in_flight: MAX_HANDSHAKES,
            ..HandshakeLimits::default()
        },
        sockets,
        move |incoming: Incoming<(TcpStream, SocketAddr)>| {
            let acceptor = acceptor.clone();
            async move {
                let (stream, peer) = incoming.io;
                let tls = acceptor.accept_stream(stream, &incoming.remote).await?;
                Ok((tls, peer))
            }
        },
    );
    loop {
        match handshakes.accept().await {
            Ok((io, peer)) => {
                tokio::spawn(serve_http(io, peer, shared.clone()));
            }
            Err(TransportError::Io(e)) => accept_failed(&e).await,
            Err(e) => {
                tracing::warn!(error = %e, "HTTPS accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Serves HTTP/1.1 on one connection until it closes or is upgraded.
async fn serve_http<I: upgrade::Halves>(io: I, peer: SocketAddr, shared: Shared) {
    let service = hyper::service::service_fn(move |req| route(req, shared.clone(), peer));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    if let Err(e) = http
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades()
        .await
    {
        tracing::debug!(%peer, error = %e, "HTTP connection ended");
    }
}

async fn route(
    req: Request<Incoming>,
    shared: Shared,
    peer: SocketAddr,
) -> Result<Response<ResponseBody>, Infallible> {
    let cx = RouteContext {
        peer,
        transport: shared.transport,
        max_frame_size: shared.max_frame_size,
        handoff: Handoff(shared.accept.clone()),
        routes: shared.routes.clone(),
    };
    Ok(shared.routes.dispatch(req, cx).await)
}

#[async_trait]
impl ServerTransport for HttpListener {
    async fn accept(&mut self) -> Result<Connection, TransportError> {
        self.incoming.recv().await.ok_or(TransportError::Closed)
    }

    fn local_endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// `Some`: a program holding this listener as `Box<dyn ServerTransport>`
    /// reaches its [`routes`](HttpListener::routes) by downcasting.
    fn as_any_mut(&mut self) -> Option<&mut dyn std::any::Any> {
        Some(self)
    }
}

/// Connects plexwire peers to `http://` and `https://` endpoints: TCP (every
/// address the host resolves to, in turn, `TCP_NODELAY` set), TLS for
/// `https://`, then the upgrade to `plexwire/1` (see the crate documentation).
///
/// [`HttpTransport::default`] reads an `https://` endpoint's TLS settings from
/// its URL (`ca=…`, as for `tls://`).
#[derive(Debug, Clone, Default)]
pub struct HttpTransport {
    #[cfg(feature = "tls")]
    tls: Option<TlsClientConfig>,
}

impl HttpTransport {
    /// Uses `config` for every `https://` connection, whatever the URL's TLS
    /// options say.
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn with_tls_config(config: TlsClientConfig) -> HttpTransport {
        HttpTransport { tls: Some(config) }
    }
}

/// Connects over TCP to every address `host` resolves to in turn (nodelay
/// set), the error naming `endpoint`; shared with the WebSocket backend.
pub async fn tcp_connect(
    endpoint: &Endpoint,
    host: &str,
    port: u16,
) -> Result<TcpStream, TransportError> {
    let fail = |source| TransportError::Connect {
        url: endpoint.url().to_owned(),
        source,
    };
    let mut last = io::Error::new(
        io::ErrorKind::NotFound,
        format!("`{host}` resolved to no address"),
    );
    for addr in tokio::net::lookup_host((host, port)).await.map_err(fail)? {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                stream.set_nodelay(true).map_err(fail)?;
                return Ok(stream);
            }
            Err(e) => last = e,
        }
    }
    Err(fail(last))
}

#[async_trait]
impl ClientTransport for HttpTransport {
    async fn connect(&self, endpoint: &Endpoint) -> Result<Connection, TransportError> {
        let (host, port, path) = host_port(endpoint)?;
        let (host, path) = (host.as_str(), path.as_str());
        if endpoint.scheme() == "http" {
            let stream = tcp_connect(endpoint, host, port).await?;
            let remote = stream
                .peer_addr()
                .map_err(|source| TransportError::Connect {
                    url: endpoint.url().to_owned(),
                    source,
                })?
                .to_string();
            let peer = PeerInfo {
                transport: "http",
                remote,
            };
            return upgrade::connect(stream, endpoint, host, port, path, peer).await;
        }
        #[cfg(feature = "tls")]
        {
            let config = match &self.tls {
                Some(c) => c.clone(),
                None => TlsClientConfig::from_endpoint(endpoint)?,
            };
            // Reads the CA (and client certificate) before connecting.
            let connector = TlsConnector::new(&config, endpoint)?;
            let stream = tcp_connect(endpoint, host, port).await?;
            let remote = stream
                .peer_addr()
                .map_err(|source| TransportError::Connect {
                    url: endpoint.url().to_owned(),
                    source,
                })?
                .to_string();
            let tls = connector.connect_stream(stream).await?;
            let peer = PeerInfo {
                transport: "https",
                remote,
            };
            upgrade::connect(tls, endpoint, host, port, path, peer).await
        }
        #[cfg(not(feature = "tls"))]
        Err(tls_disabled(endpoint))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn ep(url: &str) -> Endpoint {
        Endpoint::parse(url).unwrap()
    }

    #[test]
    fn the_request_path_follows_the_endpoint_path() {
        assert_eq!(upgrade::request_path("/"), "/v1/connect");
        assert_eq!(upgrade::request_path("/app"), "/app/v1/connect");
        assert_eq!(upgrade::request_path("/app/"), "/app/v1/connect");
    }

    #[tokio::test]
    async fn a_client_upgrades_and_frames_flow_both_ways() {
        let mut l = HttpListener::bind(&ep("http://127.0.0.1:0")).await.unwrap();
        let url = l.local_endpoint().clone();
        assert!(url.url().starts_with("http://127.0.0.1:"), "{url}");
        let client = HttpTransport::default();
        let (c, s) = tokio::join!(client.connect(&url), l.accept());
        let (c, s) = (c.unwrap(), s.unwrap());
        assert_eq!((c.peer().transport, s.peer().transport), ("http", "http"));
        assert_eq!(c.peer().remote, url.url()[7..].trim_end_matches('/'));
        let (mut ctx, mut crx) = c.into_frames();
        let (mut stx, mut srx) = s.into_frames();
        ctx.send_frame(Bytes::from_static(b"ping")).await.unwrap();
        assert_eq!(&srx.recv_frame().await.unwrap().unwrap()[..], b"ping");
        stx.send_frame(Bytes::from_static(b"pong")).await.unwrap();
        assert_eq!(&crx.recv_frame().await.unwrap().unwrap()[..], b"pong");
        ctx.shutdown().await.unwrap();
        assert!(srx.recv_frame().await.is_none());
    }

    #[tokio::test]
    async fn other_schemes_are_refused() {
        let e = HttpListener::bind(&ep("tcp://127.0.0.1:0"))
            .await
            .unwrap_err();
        assert!(matches!(e, TransportError::WrongBackend { .. }), "{e}");
        let e = HttpTransport::default()
            .connect(&ep("tcp://127.0.0.1:1"))
            .await
            .unwrap_err();
        assert!(matches!(e, TransportError::WrongBackend { .. }), "{e}");
    }

    #[cfg(not(feature = "tls"))]
    #[tokio::test]
    async fn https_without_tls_names_the_feature() {
        let e = HttpListener::bind(&ep("https://127.0.0.1:0?cert=c&key=k"))
            .await
            .unwrap_err()
            .to_string();
        assert_eq!(e, "endpoint `https://127.0.0.1:0?cert=c&key=k` needs the `tls` cargo feature of plexwire (build with `--features tls`)");
        let e = HttpTransport::default()
            .connect(&ep("https://127.0.0.1:1?ca=c"))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("`tls` cargo feature"), "{e}");
    }

    #[cfg(feature = "tls")]
    #[tokio::test]
    async fn https_settings_are_checked_before_anything_binds_or_connects() {
        let e = HttpListener::bind(&ep("https://127.0.0.1:0"))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs `cert=`"), "{e}");
        let e = HttpListener::bind(&ep("https://127.0.0.1:0?cert=/nonexistent.pem&key=/k.pem"))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read `cert=/nonexistent.pem`"), "{e}");
        // Port 1 has no listener; the missing CA is reported first.
        let e = HttpTransport::default()
            .connect(&ep("https://127.0.0.1:1"))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs `ca=`"), "{e}");
        let config = TlsServerConfig::new(
            plexwire_tls::Pem::file("/c.pem"),
            plexwire_tls::Pem::file("/k.pem"),
        );
        let e = HttpListener::bind_tls(&ep("http://127.0.0.1:0"), &config, Router::new())
            .await
            .unwrap_err();
        assert!(matches!(e, TransportError::WrongBackend { .. }), "{e}");
    }
}
