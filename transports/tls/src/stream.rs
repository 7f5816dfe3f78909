//! TLS over any byte-stream [`Connection`].
//!
//! The plain connection's two halves are joined back into one duplex stream
//! (`tokio::io::join`), the handshake runs over it, and the encrypted stream
//! is split again (`tokio::io::split`) into the halves of a new
//! `Connection`. So TLS composes with every byte-stream backend — TCP, UNIX
//! sockets, or anything a program brings — without knowing which it is.
//! Reads and writes of one TLS session share its state behind a short lock.

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

/// How long a handshake may take, on either side, before it is abandoned.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn transport_name(endpoint: &Endpoint) -> &'static str {
    match endpoint.scheme() {
        "tls+unix" => "tls+unix",
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

    pub(crate) fn set_endpoint(&mut self, endpoint: Endpoint) {
        self.endpoint = endpoint;
    }

    /// Runs the server handshake over an accepted byte-stream connection.
    ///
    /// A rejected client certificate or an incompatible client is a
    /// [`TransportError::Tls`] whose reason names the client and the check.
    pub async fn accept(&self, conn: Connection) -> Result<Connection, TransportError> {
        let url = self.endpoint.url();
        let (io, peer, max) = stream_halves(conn, url)?;
        let Io::Stream { reader, writer } = io else {
            unreachable!("stream_halves returns streams only")
        };
        let fail = |reason: String| TransportError::Tls {
            url: url.to_owned(),
            reason: format!("client {}: {reason}", peer.remote),
        };
        let handshake = self.inner.accept(tokio::io::join(reader, writer));
        let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
            Err(_) => return Err(fail(format!("no handshake within {HANDSHAKE_TIMEOUT:?}"))),
            Ok(Err(e)) => return Err(fail(explain_io(&e, Side::Server, self.versions))),
            Ok(Ok(s)) => s,
        };
        let (r, w) = tokio::io::split(stream);
        let peer = PeerInfo {
            transport: transport_name(&self.endpoint),
            remote: peer.remote,
        };
        Ok(Connection::from_stream(
            Explained::new(r, Side::Server, self.versions),
            Explained::new(w, Side::Server, self.versions),
            peer,
            max,
        ))
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

    /// Runs the client handshake over an established byte-stream connection.
    ///
    /// A rejected server certificate or an incompatible server is a
    /// [`TransportError::Tls`] whose reason names the check that failed.
    /// (With TLS 1.3 the server checks a client certificate after the
    /// client's side of the handshake is done; a rejection then arrives as
    /// the first read's error, explained the same way.)
    pub async fn connect(&self, conn: Connection) -> Result<Connection, TransportError> {
        let url = self.endpoint.url();
        let (io, peer, max) = stream_halves(conn, url)?;
        let Io::Stream { reader, writer } = io else {
            unreachable!("stream_halves returns streams only")
        };
        let fail = |reason: String| TransportError::Tls {
            url: url.to_owned(),
            reason,
        };
        let handshake = self
            .inner
            .connect(self.server_name.clone(), tokio::io::join(reader, writer));
        let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
            Err(_) => {
                return Err(fail(format!(
                    "no answer within {HANDSHAKE_TIMEOUT:?} (is a TLS listener there?)"
                )))
            }
            Ok(Err(e)) => return Err(fail(explain_io(&e, Side::Client, self.versions))),
            Ok(Ok(s)) => s,
        };
        let (r, w) = tokio::io::split(stream);
        let peer = PeerInfo {
            transport: transport_name(&self.endpoint),
            remote: peer.remote,
        };
        Ok(Connection::from_stream(
            Explained::new(r, Side::Client, self.versions),
            Explained::new(w, Side::Client, self.versions),
            peer,
            max,
        ))
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
