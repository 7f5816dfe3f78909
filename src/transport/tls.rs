//! `tls://` and `tls+unix://` from code: TLS (plexwire-tls) over the plain
//! backends of this build's [`registry()`](crate::transport::registry).
//!
//! plexwire-tls runs TLS over any byte stream and knows no socket type: it
//! maps a TLS endpoint to the plain one under it (`tls://h:p` → `tcp://h:p`,
//! `tls+unix:///p?mode=…` → `unix:///p?mode=…`, [`plain_endpoint`](plexwire_tls::plain_endpoint)) and asks
//! a registry for that. The registry's own `tls` entry does so per URL; the
//! functions here are the same composition for settings made in code
//! ([`TlsTransport::with_config`](plexwire_tls::TlsTransport::with_config), [`bind_with`](crate::transport::tls::bind_with)). Everything of
//! plexwire-tls is re-exported here too.

use async_trait::async_trait;
pub use plexwire_tls::*;
use plexwire_transport::{ClientTransport, Connection, Endpoint, TransportError};

use super::registry;

/// Connects to the plain endpoint under a `tls://` or `tls+unix://` one,
/// with this build's registry.
#[derive(Debug, Clone, Copy, Default)]
struct Plain;

#[async_trait]
impl ClientTransport for Plain {
    async fn connect(&self, endpoint: &Endpoint) -> Result<Connection, TransportError> {
        connect_plain(registry(), endpoint).await
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
    let endpoint = &plexwire_tls::backend().check(endpoint)?;
    // Read the certificate before binding, so a bad file leaves no socket behind.
    let acceptor = TlsAcceptor::new(config, endpoint)?;
    let inner = listen_plain(registry(), endpoint).await?;
    Ok(TlsListener::over(inner, acceptor))
}
