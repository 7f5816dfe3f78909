//! TLS over any byte stream.
//!
//! [`TlsAcceptor::accept_stream`] and [`TlsConnector::connect_stream`] run
//! the rustls handshake over any `AsyncRead + AsyncWrite` (a TCP stream, a
//! UNIX socket, an HTTP connection's socket, a WebSocket's, anything a
//! program brings) and give back a [`TlsStream`] over it; `tls://`,
//! `tls+unix://` and `https://` are compositions of these with a plain
//! backend, made outside this crate. [`TlsAcceptor::accept`] and
//! [`TlsConnector::connect`] are the same over a plain byte-stream
//! [`Connection`]: its halves are joined (`tokio::io::join`), and the
//! encrypted stream is split again (`tokio::io::split`) into the halves of a
//! new `Connection`. Reads and writes of one TLS session share its state
//! behind a short lock.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use plexwire_transport::{Connection, Endpoint, Io, PeerInfo, TransportError};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::explain::{explain, Side};
use crate::{TlsClientConfig, TlsServerConfig, TlsVersions};

/// How long a handshake may take, on either side, before it is abandoned
/// (a connector's own bound; a listener's is its
/// [`Handshakes`](plexwire_transport::Handshakes)).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The transport name of TLS over a plain connection of `plain`'s transport.
fn transport_name(plain: &str) -> &'static str {
    match plain {
        "unix" => "tls+unix",
        _ => "tls",
    }
}

fn stream_halves(conn: Connection, url: &str) -> Result<(Io, PeerInfo, usize), TransportError> {
    let max = conn.max_frame_size();
    let (io, peer) = conn.into_io();
    match io {
        Io::Stream { .. } => Ok((io, peer, max)),
        Io::Messages { .. } | Io::Lanes { .. } => Err(TransportError::TlsConfig {
            url: url.to_owned(),
            reason: format!(
                "TLS runs over a byte stream, and a {} connection carries framed messages",
                peer.transport
            ),
        }),
    }
}

/// An established TLS session over a byte stream `S`: encrypted
/// `AsyncRead + AsyncWrite`, with errors explained ([`explain`]: which
/// certificate check failed, rather than rustls's terse alert names).
pub struct TlsStream<S> {
    inner: Explained<tokio_rustls::TlsStream<S>>,
}

impl<S> std::fmt::Debug for TlsStream<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream")
            .field("side", &self.inner.side)
            .finish_non_exhaustive()
    }
}

impl<S> TlsStream<S> {
    /// The plain stream underneath.
    pub fn get_ref(&self) -> &S {
        self.inner.inner.get_ref().0
    }
}

impl<S: AsyncRead + AsyncWrite + Send + Unpin + 'static> TlsStream<S> {
    /// The session as a byte-stream [`Connection`] (split into halves that
    /// share the session behind a short lock).
    pub fn into_connection(self, peer: PeerInfo, max_frame_size: usize) -> Connection {
        let (r, w) = tokio::io::split(self);
        Connection::from_stream(r, w, peer, max_frame_size)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The accepting side of TLS, ready to wrap accepted connections.
#[derive(Clone)]
pub struct TlsAcceptor {
    inner: tokio_rustls::TlsAcceptor,
    versions: TlsVersions,
    endpoint: Endpoint,
}

impl std::fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsAcceptor")
            .field("endpoint", &self.endpoint.url())
            .field("versions", &self.versions)
            .finish()
    }
}

impl TlsAcceptor {
    /// Builds the server side of `config` for the listener at `endpoint`
    /// (which errors name). Reads the certificate and key files now.
    pub fn new(
        config: &TlsServerConfig,
        endpoint: &Endpoint,
    ) -> Result<TlsAcceptor, TransportError> {
        let rustls = config
            .to_rustls()
            .map_err(|reason| TransportError::TlsConfig {
                url: endpoint.url().to_owned(),
                reason,
            })?;
        Ok(TlsAcceptor {
            inner: tokio_rustls::TlsAcceptor::from(Arc::new(rustls)),
            versions: config.versions(),
            endpoint: endpoint.clone(),
        })
    }

    /// The endpoint this acceptor serves.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Names `endpoint` in errors from now on (a listener's address once
    /// bound, with the real port).
    pub fn set_endpoint(&mut self, endpoint: Endpoint) {
        self.endpoint = endpoint;
    }

    /// Runs the server handshake over any byte stream from the client at
    /// `remote` (which errors name).
    ///
    /// A rejected client certificate or an incompatible client is a
    /// [`TransportError::Tls`] whose reason names the client and the check.
    /// The handshake has no time limit of its own: a listener bounds it,
    /// as [`Handshakes`](plexwire_transport::Handshakes) does.
    pub async fn accept_stream<S>(
        &self,
        io: S,
        remote: &str,
    ) -> Result<TlsStream<S>, TransportError>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        match self.inner.accept(io).await {
            Ok(s) => Ok(TlsStream {
                inner: Explained::new(s.into(), Side::Server, self.versions),
            }),
            Err(e) => Err(TransportError::Tls {
                url: self.endpoint.url().to_owned(),
                reason: format!(
                    "client {remote}: {}",
                    explain_io(&e, Side::Server, self.versions)
                ),
            }),
        }
    }

    /// Runs the server handshake over an accepted byte-stream connection;
    /// see [`TlsAcceptor::accept_stream`]. The new connection's transport is
    /// `tls+unix` over `unix`, else `tls`.
    pub async fn accept(&self, conn: Connection) -> Result<Connection, TransportError> {
        let (io, peer, max) = stream_halves(conn, self.endpoint.url())?;
        let Io::Stream { reader, writer } = io else {
            unreachable!("stream_halves returns streams only")
        };
        let stream = self
            .accept_stream(tokio::io::join(reader, writer), &peer.remote)
            .await?;
        let peer = PeerInfo {
            transport: transport_name(peer.transport),
            remote: peer.remote,
        };
        Ok(stream.into_connection(peer, max))
    }
}

/// The connecting side of TLS for one endpoint, ready to wrap connections to it.
#[derive(Clone)]
pub struct TlsConnector {
    inner: tokio_rustls::TlsConnector,
    server_name: ServerName<'static>,
    versions: TlsVersions,
    endpoint: Endpoint,
}

impl std::fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnector")
            .field("endpoint", &self.endpoint.url())
            .field("server_name", &self.server_name)
            .field("versions", &self.versions)
            .finish()
    }
}

impl TlsConnector {
    /// Builds the client side of `config` for connections to `endpoint`.
    /// The server name is the configured one, else the endpoint's host.
    /// Reads the CA (and client certificate) files now.
    pub fn new(
        config: &TlsClientConfig,
        endpoint: &Endpoint,
    ) -> Result<TlsConnector, TransportError> {
        let bad = |reason| TransportError::TlsConfig {
            url: endpoint.url().to_owned(),
            reason,
        };
        let (rustls, _log) = config.to_rustls(endpoint.url()).map_err(bad)?;
        let server_name = config.server_name_for(endpoint).map_err(bad)?;
        Ok(TlsConnector {
            inner: tokio_rustls::TlsConnector::from(Arc::new(rustls)),
            server_name,
            versions: config.versions(),
            endpoint: endpoint.clone(),
        })
    }

    /// Runs the client handshake over any byte stream to the server, within
    /// [`HANDSHAKE_TIMEOUT`].
    ///
    /// A rejected server certificate or an incompatible server is a
    /// [`TransportError::Tls`] whose reason names the check that failed.
    /// (With TLS 1.3 the server checks a client certificate after the
    /// client's side of the handshake is done; a rejection then arrives as
    /// the first read's error, explained the same way.)
    pub async fn connect_stream<S>(&self, io: S) -> Result<TlsStream<S>, TransportError>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let fail = |reason: String| TransportError::Tls {
            url: self.endpoint.url().to_owned(),
            reason,
        };
        let handshake = self.inner.connect(self.server_name.clone(), io);
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
            Err(_) => Err(fail(format!(
                "no answer within {HANDSHAKE_TIMEOUT:?} (is a TLS listener there?)"
            ))),
            Ok(Err(e)) => Err(fail(explain_io(&e, Side::Client, self.versions))),
            Ok(Ok(s)) => Ok(TlsStream {
                inner: Explained::new(s.into(), Side::Client, self.versions),
            }),
        }
    }

    /// Runs the client handshake over an established byte-stream
    /// connection; see [`TlsConnector::connect_stream`]. The new
    /// connection's transport is `tls+unix` over `unix`, else `tls`.
    pub async fn connect(&self, conn: Connection) -> Result<Connection, TransportError> {
        let (io, peer, max) = stream_halves(conn, self.endpoint.url())?;
        let Io::Stream { reader, writer } = io else {
            unreachable!("stream_halves returns streams only")
        };
        let stream = self.connect_stream(tokio::io::join(reader, writer)).await?;
        let peer = PeerInfo {
            transport: transport_name(peer.transport),
            remote: peer.remote,
        };
        Ok(stream.into_connection(peer, max))
    }
}

/// Explains an I/O error from a TLS stream: a rustls error inside it, or the
/// peer going away mid-handshake.
fn explain_io(e: &io::Error, side: Side, versions: TlsVersions) -> String {
    if let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        return explain(tls, side, versions);
    }
    match e.kind() {
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => {
            format!("the connection closed during the handshake ({e}); is the peer speaking TLS?")
        }
        _ => e.to_string(),
    }
}

/// A TLS stream half whose errors are explained ([`explain`]) rather than
/// rustls's terse `received fatal alert: CertificateRequired`.
struct Explained<T> {
    inner: T,
    side: Side,
    versions: TlsVersions,
}

impl<T> Explained<T> {
    fn new(inner: T, side: Side, versions: TlsVersions) -> Self {
        Explained {
            inner,
            side,
            versions,
        }
    }

    fn map(&self, e: io::Error) -> io::Error {
        match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            Some(tls) => io::Error::new(
                e.kind(),
                format!("TLS: {}", explain(tls, self.side, self.versions)),
            ),
            None => e,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Explained<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(self.map(e))),
            other => other,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Explained<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(self.map(e))),
            other => other,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(self.map(e))),
            other => other,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_shutdown(cx) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(self.map(e))),
            other => other,
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(self.map(e))),
            other => other,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
