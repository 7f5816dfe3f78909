//! plexwire's QUIC backend: `quic://host:port`, with quinn and rustls (ring).
//!
//! QUIC always encrypts: the endpoint takes the same TLS options as `tls://`
//! (`cert`, `key`, `client_ca`, `client_auth` on a listener; `ca`,
//! `server_name`, `cert`, `key`, `insecure` on a client; see
//! [`plexwire_tls`]), always with TLS 1.3, and ALPN `plexwire/1`.
//!
//! # Streams
//!
//! A plexwire connection is one QUIC connection. Its main channel is one
//! bidirectional stream: the connecting side opens it and writes a one-byte
//! preamble, so the listener learns of the stream before the first frame;
//! the listener checks the byte, and starts its own direction with one. The
//! stream then carries length-prefixed frames like a TCP connection would.
//!
//! Each run gets QUIC streams of its own besides (the [`lanes`] module): a
//! run's frames travel on a unidirectional stream per direction, so one
//! large or slow run never holds up another's frames, which a TCP connection
//! (one ordered byte stream) cannot avoid. `streams=one` in the URL puts
//! every frame this side sends on the main stream instead; either side
//! reads both kinds.
//!
//! # Closing
//!
//! Dropping the sending half finishes the stream, and the QUIC connection is
//! kept until the peer has acknowledged everything sent (at most
//! [`LINGER`]), then closed: the peer reads every frame, then end of stream —
//! as with TCP. Idle connections are kept alive with a PING every
//! [`KEEP_ALIVE`]; a peer silent for [`IDLE_TIMEOUT`] is gone.
//!
//! # Connecting to nothing
//!
//! Nothing answers a QUIC handshake sent to a closed UDP port, so a connect
//! gives up after [`CONNECT_TIMEOUT`] with [`TransportError::Connect`].
//! Every address a host name resolves to is tried at once; the first
//! handshake to succeed wins, and a TLS rejection ends the attempt at once.
//!
//! # Endpoints
//!
//! A [`QuicListener`] owns one quinn endpoint (UDP socket). A
//! [`QuicTransport`] creates one client endpoint per address family on its
//! first connect and shares it between its connections; a transport made for
//! a single connect (as `plexwire::connect` does) gives that connection a
//! socket of its own. A listener's socket is freed once the listener and
//! every connection it accepted are gone.

#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![forbid(unsafe_code)]

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::stream::{FuturesUnordered, StreamExt};
use plexwire_tls::{
    explain, explain_alert, explain_sent_alert, Side, TlsClientConfig, TlsServerConfig,
    TlsVersions, VerifyLog,
};
use plexwire_transport::{
    Address, ClientTransport, Connection, Endpoint, HandshakeLimits, Handshakes, Incoming,
    PeerInfo, ServerTransport, TransportError,
};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{ConnectionError, VarInt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

mod backend;
pub mod lanes;

pub use backend::{backend, OPTIONS};

#[cfg(feature = "dev-certs")]
pub use plexwire_tls::dev;
pub use plexwire_tls::{ClientAuth, Pem, TlsVersions as Versions};

/// The ALPN protocol name both sides require.
pub const ALPN: &[u8] = b"plexwire/1";
/// The first byte of a connection's main stream from a side that sends
/// every frame on it (`streams=one`); [`lanes::MAIN_WITH_LANES`] from a side
/// that gives runs streams of their own.
pub const PREAMBLE: u8 = 0x01;
/// How long a connect waits for the handshake to finish.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a listener waits for a client's handshake and first stream.
pub const ACCEPT_TIMEOUT: Duration = Duration::from_secs(10);
/// A PING goes out after this long without traffic, so idle connections live.
pub const KEEP_ALIVE: Duration = Duration::from_secs(10);
/// A connection whose peer sent nothing for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a closed sending half keeps the connection open for the peer's
/// acknowledgement of the last bytes.
pub const LINGER: Duration = Duration::from_secs(5);
/// Handshakes a listener runs at once.
const MAX_HANDSHAKES: usize = 256;
/// Application error code: the connecting side's preamble was wrong.
const BAD_PREAMBLE: u32 = 1;

/// The host and port of a `quic://` endpoint, checked against the scheme's declaration.
fn host_port(endpoint: &Endpoint) -> Result<(String, u16), TransportError> {
    match backend().check(endpoint)?.address() {
        Address::Host { host, port, .. } => Ok((host.clone(), *port)),
        _ => Err(endpoint.wrong_backend("quic")),
    }
}

fn transport_config(server: bool) -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(Some(
        IDLE_TIMEOUT.try_into().expect("idle timeout fits a VarInt"),
    ));
    t.keep_alive_interval(Some(KEEP_ALIVE));
    // One bidirectional stream, opened by the connecting side, and the lanes.
    t.max_concurrent_bidi_streams(VarInt::from_u32(u32::from(server)));
    t.max_concurrent_uni_streams(VarInt::from_u32(lanes::MAX_LANES));
    // What quinn holds unread for all streams together; without a bound a
    // peer could fill every lane's window at once.
    t.receive_window(VarInt::from_u32(lanes::RECV_BUDGET as u32));
    Arc::new(t)
}

/// QUIC is TLS 1.3 only; `tls=1.2` alone cannot work.
fn quic_versions(versions: TlsVersions, url: &str) -> Result<(), TransportError> {
    if versions.tls13() {
        Ok(())
    } else {
        Err(TransportError::TlsConfig {
            url: url.to_owned(),
            reason: "QUIC always uses TLS 1.3; `tls=1.2` alone cannot be used with quic://".into(),
        })
    }
}

/// The quinn server configuration for `config`: TLS 1.3, ALPN `plexwire/1`.
pub fn server_config(
    config: &TlsServerConfig,
    endpoint: &Endpoint,
) -> Result<quinn::ServerConfig, TransportError> {
    quic_versions(config.versions(), endpoint.url())?;
    let bad = |reason: String| TransportError::TlsConfig {
        url: endpoint.url().to_owned(),
        reason,
    };
    let mut rustls = config
        .clone()
        .with_versions(TlsVersions::TLS13_ONLY)
        .to_rustls()
        .map_err(bad)?;
    rustls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = QuicServerConfig::try_from(rustls).map_err(|e| bad(e.to_string()))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(transport_config(true));
    Ok(server)
}

/// The quinn client configuration for `config` and the log of its
/// certificate checks.
pub fn client_config(
    config: &TlsClientConfig,
    endpoint: &Endpoint,
) -> Result<(quinn::ClientConfig, VerifyLog), TransportError> {
    quic_versions(config.versions(), endpoint.url())?;
    let bad = |reason: String| TransportError::TlsConfig {
        url: endpoint.url().to_owned(),
        reason,
    };
    let (mut rustls, log) = config
        .clone()
        .with_versions(TlsVersions::TLS13_ONLY)
        .to_rustls(endpoint.url())
        .map_err(bad)?;
    rustls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = QuicClientConfig::try_from(rustls).map_err(|e| bad(e.to_string()))?;
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    client.transport_config(transport_config(false));
    Ok((client, log))
}

/// The TLS alert inside a QUIC CRYPTO_ERROR code (0x100 + alert).
fn crypto_alert(code: quinn::TransportErrorCode) -> Option<rustls::AlertDescription> {
    let code = u64::from(code);
    (0x100..=0x1ff)
        .contains(&code)
        .then(|| rustls::AlertDescription::from((code & 0xff) as u8))
}

/// What went wrong with a QUIC connection, from `side`'s point of view, and
/// whether it is a TLS failure (as opposed to a network one).
fn explain_connection(e: &ConnectionError, side: Side, log: Option<&VerifyLog>) -> (bool, String) {
    let versions = TlsVersions::TLS13_ONLY;
    match e {
        // This side's TLS stack gave up: we rejected the peer.
        ConnectionError::TransportError(te) => match crypto_alert(te.code) {
            Some(alert) => {
                let reason = match log.and_then(VerifyLog::take) {
                    Some(rejected) => explain(&rejected, side, versions),
                    None => explain_sent_alert(alert, side, versions, &te.reason),
                };
                (true, reason)
            }
            None => (false, format!("QUIC protocol error: {te}")),
        },
        // The peer's TLS stack gave up: it rejected us.
        ConnectionError::ConnectionClosed(close) => match crypto_alert(close.error_code) {
            Some(alert) => (true, explain_alert(alert, side, versions)),
            None => (false, format!("the peer closed the connection: {close}")),
        },
        ConnectionError::ApplicationClosed(close) => {
            (false, format!("the peer closed the connection: {close}"))
        }
        ConnectionError::VersionMismatch => (false, "no QUIC version in common".into()),
        other => (false, format!("QUIC connection lost: {other}")),
    }
}

/// The error kind for a lost connection, so `TransportError::is_disconnect` holds.
fn lost(e: &ConnectionError, side: Side) -> io::Error {
    let (tls, reason) = explain_connection(e, side, None);
    let reason = if tls {
        format!("TLS: {reason}")
    } else {
        reason
    };
    io::Error::new(io::ErrorKind::ConnectionAborted, reason)
}

/// Whether `endpoint` gives runs streams of their own (`streams=run`, the default).
fn uses_lanes(endpoint: &Endpoint) -> bool {
    endpoint.option("streams") != Some("one")
}

/// The plexwire connection over QUIC connection `conn` and its main stream.
///
/// `peer_lanes`: the listener read the connecting side's preamble, which
/// said whether it uses lanes; the connecting side reads the listener's
/// preamble with the first frame.
fn connection(
    conn: quinn::Connection,
    (send, recv): (quinn::SendStream, quinn::RecvStream),
    side: Side,
    lanes: bool,
    peer_lanes: Option<bool>,
    max_frame_size: usize,
) -> Connection {
    let remote = conn.remote_address();
    let send = QuicSend {
        inner: Some(send),
        close: Close::Open,
        side,
    };
    let listener = peer_lanes.is_some();
    Connection::from_lanes(
        lanes::LaneReceiver::new(recv, conn.clone(), side, max_frame_size, peer_lanes),
        lanes::LaneSender::new(send, conn, side, max_frame_size, lanes, listener),
        PeerInfo {
            transport: "quic",
            remote: remote.to_string(),
        },
        max_frame_size,
    )
}

/// Connects to `quic://` endpoints.
///
/// [`QuicTransport::default`] reads the TLS settings of each endpoint from
/// its URL; [`QuicTransport::with_config`] uses settings made in code. Its
/// client endpoints (UDP sockets) are made on the first connect, in the
/// runtime of the caller, and shared by later connects.
#[derive(Default)]
pub struct QuicTransport {
    config: Option<TlsClientConfig>,
    /// The client endpoints, IPv4 and IPv6, made on first use.
    endpoints: Mutex<(Option<quinn::Endpoint>, Option<quinn::Endpoint>)>,
}

impl fmt::Debug for QuicTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuicTransport")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl QuicTransport {
    /// Uses `config` for every connection, whatever the URL's TLS options say.
    pub fn with_config(config: TlsClientConfig) -> QuicTransport {
        QuicTransport {
            config: Some(config),
            endpoints: Mutex::default(),
        }
    }

    fn client_endpoint(&self, v6: bool) -> io::Result<quinn::Endpoint> {
        let mut eps = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        let slot = if v6 { &mut eps.1 } else { &mut eps.0 };
        if let Some(ep) = slot {
            return Ok(ep.clone());
        }
        let bind: SocketAddr = if v6 {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        };
        let ep = quinn::Endpoint::client(bind)?;
        *slot = Some(ep.clone());
        Ok(ep)
    }

    async fn attempt(
        &self,
        endpoint: &Endpoint,
        tls: &TlsClientConfig,
        server_name: &str,
        addr: SocketAddr,
    ) -> Result<Connection, TransportError> {
        let url = endpoint.url();
        let connect_err = |source: io::Error| TransportError::Connect {
            url: url.to_owned(),
            source,
        };
        let (config, log) = client_config(tls, endpoint)?;
        let quic = self.client_endpoint(addr.is_ipv6()).map_err(connect_err)?;
        let connecting = quic
            .connect_with(config, addr, server_name)
            .map_err(|e| connect_err(io::Error::other(e)))?;
        let conn = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Err(_) => {
                return Err(connect_err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no QUIC handshake with {addr} within {CONNECT_TIMEOUT:?}"),
                )))
            }
            Ok(Err(e)) => {
                return Err(match explain_connection(&e, Side::Client, Some(&log)) {
                    (true, reason) => TransportError::Tls {
                        url: url.to_owned(),
                        reason,
                    },
                    (false, reason) => {
                        connect_err(io::Error::new(io::ErrorKind::ConnectionRefused, reason))
                    }
                })
            }
            Ok(Ok(c)) => c,
        };
        let lanes = uses_lanes(endpoint);
        let opened = async {
            let (mut send, recv) = conn.open_bi().await.map_err(|e| lost(&e, Side::Client))?;
            send.write_all(&[lanes::main_preamble(lanes)])
                .await
                .map_err(|e| match e {
                    quinn::WriteError::ConnectionLost(e) => lost(&e, Side::Client),
                    other => io::Error::new(io::ErrorKind::ConnectionAborted, other),
                })?;
            Ok::<_, io::Error>((send, recv))
        };
        let streams = opened.await.map_err(connect_err)?;
        Ok(connection(
            conn,
            streams,
            Side::Client,
            lanes,
            None,
            endpoint.max_frame_size(),
        ))
    }
}

#[async_trait]
impl ClientTransport for QuicTransport {
    async fn connect(&self, endpoint: &Endpoint) -> Result<Connection, TransportError> {
        let (host, port) = host_port(endpoint)?;
        let tls = match &self.config {
            Some(c) => c.clone(),
            None => TlsClientConfig::from_endpoint(endpoint)?,
        };
        let server_name = tls
            .server_name_for(endpoint)
            .map_err(|reason| TransportError::TlsConfig {
                url: endpoint.url().to_owned(),
                reason,
            })?
            .to_str()
            .into_owned();
        let connect_err = |source| TransportError::Connect {
            url: endpoint.url().to_owned(),
            source,
        };
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(connect_err)?
            .collect();
        // Every address at once: a closed UDP port never answers, so trying
        // them in turn would wait out a timeout per dead address.
        let mut attempts: FuturesUnordered<_> = addrs
            .into_iter()
            .map(|addr| self.attempt(endpoint, &tls, &server_name, addr))
            .collect();
        let mut last = connect_err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("`{host}` resolved to no address"),
        ));
        while let Some(result) = attempts.next().await {
            match result {
                Ok(conn) => return Ok(conn),
                // A server answered and the TLS check failed: that is the answer.
                Err(e @ (TransportError::Tls { .. } | TransportError::TlsConfig { .. })) => {
                    return Err(e)
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

/// A bound `quic://` listener: one quinn endpoint (UDP socket).
///
/// Handshakes run in their own tasks ([`Handshakes`]: at most 256 at once,
/// each within [`ACCEPT_TIMEOUT`]); [`ServerTransport::accept`] returns the
/// connections that completed (handshake, stream, preamble) and logs the
/// ones that failed (aggregated under churn; refused certificates at WARN,
/// clients that went away at DEBUG); [`QuicListener::next_handshake`]
/// returns failures too. Dropping the listener refuses new connections at
/// once; connections already accepted live on.
pub struct QuicListener {
    quic: quinn::Endpoint,
    endpoint: Endpoint,
    handshakes: Handshakes<Connection>,
}

impl fmt::Debug for QuicListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuicListener")
            .field("endpoint", &self.endpoint.url())
            .field("handshakes", &self.handshakes)
            .finish()
    }
}

impl QuicListener {
    /// Binds `endpoint` with the TLS settings in its URL.
    pub async fn bind(endpoint: &Endpoint) -> Result<QuicListener, TransportError> {
        let config = TlsServerConfig::from_endpoint(endpoint)?;
        QuicListener::bind_with(endpoint, &config).await
    }

    /// Binds `endpoint` with TLS settings made in code (the URL's TLS options are ignored).
    pub async fn bind_with(
        endpoint: &Endpoint,
        config: &TlsServerConfig,
    ) -> Result<QuicListener, TransportError> {
        let (host, port) = host_port(endpoint)?;
        let server = server_config(config, endpoint)?;
        let fail = |source| TransportError::Bind {
            url: endpoint.url().to_owned(),
            source,
        };
        let addr = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(fail)?
            .next()
            .ok_or_else(|| {
                fail(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("`{host}` resolved to no address"),
                ))
            })?;
        let quic = quinn::Endpoint::server(server, addr).map_err(fail)?;
        let local = quic.local_addr().map_err(fail)?;
        let endpoint = endpoint.with_address(Address::Host {
            host: local.ip().to_string(),
            port: local.port(),
            path: "/".into(),
        });
        let incoming = futures_util::stream::unfold(quic.clone(), |quic| async move {
            let incoming = quic.accept().await?;
            let remote = incoming.remote_address().to_string();
            Some((
                Ok(Incoming {
                    io: incoming,
                    remote,
                }),
                quic,
            ))
        });
        let url = endpoint.url().to_owned();
        let max = endpoint.max_frame_size();
        let lanes = uses_lanes(&endpoint);
        let handshakes = Handshakes::new(
            "QUIC handshake",
            url.clone(),
            HandshakeLimits {
                max_in_flight: MAX_HANDSHAKES,
                timeout: ACCEPT_TIMEOUT,
            },
            incoming,
            move |incoming: Incoming<quinn::Incoming>| {
                handshake(incoming.io, url.clone(), max, lanes)
            },
        )
        // A client that gave up (another address of its host won the race,
        // or it was stopped) is no news; a refused certificate is.
        .quiet_when(|e| !matches!(e, TransportError::Tls { .. }));
        Ok(QuicListener {
            quic,
            endpoint,
            handshakes,
        })
    }

    /// The next finished handshake, failed ones included (a failure is a
    /// [`TransportError::Tls`] or [`TransportError::Connect`] naming the
    /// client, or [`TransportError::HandshakeTimeout`]).
    ///
    /// Cancel safe: handshakes run in their own tasks and finished ones wait
    /// in the listener.
    pub async fn next_handshake(&mut self) -> Result<Connection, TransportError> {
        self.handshakes.next_handshake().await
    }
}

/// The listener's side of one connection: handshake, then the client's stream and preamble.
async fn handshake(
    incoming: quinn::Incoming,
    url: String,
    max_frame_size: usize,
    lanes: bool,
) -> Result<Connection, TransportError> {
    let remote = incoming.remote_address();
    let tls_fail = |reason: String| TransportError::Tls {
        url: url.clone(),
        reason: format!("client {remote}: {reason}"),
    };
    let io_fail = |source: io::Error| TransportError::Connect {
        url: url.clone(),
        source: io::Error::new(source.kind(), format!("client {remote}: {source}")),
    };
    let work = async {
        let conn =
            incoming
                .await
                .map_err(|e| match explain_connection(&e, Side::Server, None) {
                    (true, reason) => tls_fail(reason),
                    (false, reason) => {
                        io_fail(io::Error::new(io::ErrorKind::ConnectionAborted, reason))
                    }
                })?;
        let (send, mut recv) = conn
            .accept_bi()
            .await
            .map_err(|e| io_fail(lost(&e, Side::Server)))?;
        let mut first = [0u8; 1];
        recv.read_exact(&mut first).await.map_err(|e| {
            io_fail(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                format!("no preamble: {e}"),
            ))
        })?;
        let peer_lanes = match first[0] {
            PREAMBLE => false,
            lanes::MAIN_WITH_LANES => true,
            other => {
                conn.close(VarInt::from_u32(BAD_PREAMBLE), b"bad preamble");
                return Err(io_fail(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "stream preamble {other:#04x} is not plexwire's {PREAMBLE:#04x} or {:#04x}",
                        lanes::MAIN_WITH_LANES
                    ),
                )));
            }
        };
        Ok(connection(
            conn,
            (send, recv),
            Side::Server,
            lanes,
            Some(peer_lanes),
            max_frame_size,
        ))
    };
    // The time it may take is bounded by the listener's `Handshakes`.
    work.await
}

impl Drop for QuicListener {
    fn drop(&mut self) {
        // New connection attempts get no answer from here on; the socket
        // closes once the connections accepted earlier are gone too.
        self.quic.set_server_config(None);
    }
}

#[async_trait]
impl ServerTransport for QuicListener {
    /// Cancel safe (see [`Handshakes::accept`]).
    async fn accept(&mut self) -> Result<Connection, TransportError> {
        self.handshakes.accept().await
    }

    fn local_endpoint(&self) -> &Endpoint {
        &self.endpoint
    }
}

/// The receiving half: quinn's stream, with connection losses explained.
struct QuicRecv {
    inner: quinn::RecvStream,
    side: Side,
}

impl AsyncRead for QuicRecv {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let side = self.side;
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(
                match e
                    .get_ref()
                    .and_then(|i| i.downcast_ref::<quinn::ReadError>())
                {
                    Some(quinn::ReadError::ConnectionLost(c)) => lost(c, side),
                    Some(quinn::ReadError::Reset(code)) => io::Error::new(
                        io::ErrorKind::ConnectionReset,
                        format!("the peer reset the stream (code {code})"),
                    ),
                    _ => e,
                },
            )),
            other => other,
        }
    }
}

/// The sending half: quinn's stream, finished on shutdown or drop, kept
/// until the peer has acknowledged its last bytes.
struct QuicSend {
    inner: Option<quinn::SendStream>,
    close: Close,
    side: Side,
}

/// Where a sending half is in closing.
enum Close {
    Open,
    /// Finished; waiting (at most [`LINGER`]) for the peer's acknowledgement.
    Finishing(Pin<Box<dyn Future<Output = ()> + Send>>),
    Closed,
}

impl QuicSend {
    fn map(&self, e: io::Error) -> io::Error {
        match e
            .get_ref()
            .and_then(|i| i.downcast_ref::<quinn::WriteError>())
        {
            Some(quinn::WriteError::ConnectionLost(c)) => lost(c, self.side),
            Some(quinn::WriteError::Stopped(code)) => io::Error::new(
                io::ErrorKind::BrokenPipe,
                format!("the peer stopped reading (code {code})"),
            ),
            _ => e,
        }
    }
}

impl AsyncWrite for QuicSend {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
        };
        match AsyncWrite::poll_write(Pin::new(inner), cx, buf) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(self.map(e))),
            other => other,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // quinn sends what is written as soon as congestion control allows.
        Poll::Ready(Ok(()))
    }

    /// Finishes the stream and waits (at most [`LINGER`]) until the peer
    /// has acknowledged everything: once it returns, the peer has every
    /// byte and the end of stream, even if this process exits right away.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            match &mut self.close {
                Close::Open => {
                    let Some(inner) = self.inner.as_mut() else {
                        self.close = Close::Closed;
                        continue;
                    };
                    // Err only if already finished or reset: nothing left to do.
                    let _ = inner.finish();
                    let acked = inner.stopped();
                    self.close = Close::Finishing(Box::pin(async move {
                        let _ = tokio::time::timeout(LINGER, acked).await;
                    }));
                }
                Close::Finishing(acked) => {
                    std::task::ready!(acked.as_mut().poll(cx));
                    self.close = Close::Closed;
                }
                Close::Closed => return Poll::Ready(Ok(())),
            }
        }
    }
}

impl Drop for QuicSend {
    fn drop(&mut self) {
        let Some(mut send) = self.inner.take() else {
            return;
        };
        if matches!(self.close, Close::Closed) {
            return;
        }
        let _ = send.finish();
        // The stream (and so the connection) stays until the peer has
        // acknowledged the last bytes; dropping it earlier could close the
        // connection before they arrive.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = tokio::time::timeout(LINGER, send.stopped()).await;
            });
        }
    }
}
