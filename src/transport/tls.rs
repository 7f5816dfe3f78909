//! `tls://` and `tls+unix://`: TLS (plexwire-tls) composed over the TCP and
//! UNIX-socket backends.
//!
//! plexwire-tls runs TLS over any byte stream and knows no socket type; this
//! module is the composition: the plain endpoint under a TLS one
//! (`tls://h:p` → `tcp://h:p`, `tls+unix:///p?mode=…` → `unix:///p?mode=…`),
//! the plain backend that reaches it, and plain errors renamed after the TLS
//! URL. Everything of plexwire-tls is re-exported here too.

use async_trait::async_trait;
pub use plexwire_tls::*;
use plexwire_transport::{
    Address, ClientTransport, Connection, Endpoint, Scheme, ServerTransport, TransportError,
};

/// The plain endpoint under a TLS one: `tcp://host:port` under `tls://`,
/// `unix:///path` (with its `mode`) under `tls+unix://`.
fn plain_endpoint(endpoint: &Endpoint) -> Result<Endpoint, TransportError> {
    let url = match (endpoint.scheme(), endpoint.address()) {
        (Scheme::Tls, Address::Host { host, port, .. }) if host.contains(':') => {
            format!("tcp://[{host}]:{port}")
        }
        (Scheme::Tls, Address::Host { host, port, .. }) => format!("tcp://{host}:{port}"),
        (Scheme::TlsUnix, Address::Path(p)) => match endpoint.unix_mode() {
            Some(mode) => format!("unix://{}?mode={mode:o}", p.display()),
            None => format!("unix://{}", p.display()),
        },
        _ => return Err(endpoint.wrong_backend("tls")),
    };
    Ok(Endpoint::parse(&url)?.with_max_frame_size(endpoint.max_frame_size()))
}

/// Errors of the plain backend name the plain URL; say the TLS one instead.
fn rename(e: TransportError, endpoint: &Endpoint) -> TransportError {
    let url = endpoint.url().to_owned();
    match e {
        TransportError::Connect { source, .. } => TransportError::Connect { url, source },
        TransportError::Bind { source, .. } => TransportError::Bind { url, source },
        other => other,
    }
}

/// Connects to the plain endpoint under a `tls://` or `tls+unix://` one.
#[derive(Debug, Clone, Copy, Default)]
struct Plain;

#[async_trait]
impl ClientTransport for Plain {
    async fn connect(&self, endpoint: &Endpoint) -> Result<Connection, TransportError> {
        let plain = plain_endpoint(endpoint)?;
        match endpoint.scheme() {
            Scheme::TlsUnix => plexwire_unix::UnixTransport.connect(&plain).await,
            _ => plexwire_tcp::TcpTransport.connect(&plain).await,
        }
        .map_err(|e| rename(e, endpoint))
    }
}

/// The client of `tls://` and `tls+unix://`: TLS over TCP or a UNIX socket,
/// with each URL's TLS settings (or, after
/// [`with_config`](TlsTransport::with_config), settings made in code).
pub fn transport() -> TlsTransport {
    TlsTransport::over(Plain)
}

/// Binds a `tls://` or `tls+unix://` endpoint with the TLS settings in its
/// URL ([`TlsServerConfig::from_endpoint`]).
pub async fn bind(endpoint: &Endpoint) -> Result<TlsListener, TransportError> {
    let config = TlsServerConfig::from_endpoint(endpoint)?;
    bind_with(endpoint, &config).await
}

/// Binds a `tls://` or `tls+unix://` endpoint with settings made in code
/// (the URL's TLS options are ignored).
pub async fn bind_with(
    endpoint: &Endpoint,
    config: &TlsServerConfig,
) -> Result<TlsListener, TransportError> {
    let plain = plain_endpoint(endpoint)?;
    // Read the certificate before binding, so a bad file leaves no socket behind.
    let acceptor = TlsAcceptor::new(config, endpoint)?;
    let inner: Box<dyn ServerTransport> = match endpoint.scheme() {
        Scheme::TlsUnix => Box::new(
            plexwire_unix::UnixListener::bind(&plain)
                .await
                .map_err(|e| rename(e, endpoint))?,
        ),
        _ => Box::new(
            plexwire_tcp::TcpListener::bind(&plain)
                .await
                .map_err(|e| rename(e, endpoint))?,
        ),
    };
    Ok(TlsListener::over(inner, acceptor))
}
