//! plexwire's TLS backend: `tls://host:port` (over TCP) and
//! `tls+unix:///path` (over a UNIX-domain socket), with rustls and the ring
//! crypto provider.
//!
//! TLS wraps a plain byte-stream connection made by another backend
//! ([`TlsConnector`], [`TlsAcceptor`]): `tls://` is `plexwire-tcp` underneath
//! and `tls+unix://` is `plexwire-unix` (stale-socket replacement, `?mode=`,
//! removal on drop), and a program can wrap any [`ServerTransport`] with
//! [`TlsListener::over`].
//!
//! # Settings
//!
//! From the URL (what `plexwire::connect`, `Broker::listen_clients` and the
//! CLI use):
//!
//! | option | side | meaning |
//! |---|---|---|
//! | `cert=PATH`, `key=PATH` | listener (required) | certificate chain and private key, PEM |
//! | `client_ca=PATH` | listener | check client certificates against this CA (mutual TLS) |
//! | `client_auth=required\|optional\|none` | listener | `required` by default when `client_ca` is set |
//! | `ca=PATH` | client (required) | the CA the server's certificate must chain to |
//! | `server_name=NAME` | client | the name the server's certificate must be valid for; default: the URL's host (`localhost` for `tls+unix`) |
//! | `cert=PATH`, `key=PATH` | client | client certificate, presented when the server asks |
//! | `insecure=true` | client | no certificate check at all; logs a warning on every connection |
//! | `tls=1.2`, `tls=1.3`, `tls=1.2,1.3` | both | versions allowed (default both) |
//!
//! Or in code, with PEM in memory or in files: [`TlsServerConfig`] with
//! [`TlsListener::bind_with`], [`TlsClientConfig`] with
//! [`TlsTransport::with_config`].
//!
//! # Errors
//!
//! A failed handshake is [`TransportError::Tls`], whose reason names the
//! check: `certificate signed by an unknown authority`, `certificate is not
//! valid for \`name\``, `certificate has expired`, `missing client
//! certificate`, `no TLS version in common` (see [`explain`]). Unusable
//! settings (a missing file, no key in it, contradicting options) are
//! [`TransportError::TlsConfig`].
//!
//! # Features
//!
//! - `dev-certs`: the [`dev`] module, a throwaway CA that issues server and
//!   client certificates (rcgen), for `plexwire cert`, tests and examples.

#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod backend;
mod config;
#[cfg(feature = "dev-certs")]
#[cfg_attr(docsrs, doc(cfg(feature = "dev-certs")))]
pub mod dev;
mod explain;
mod stream;

use std::fmt;

use async_trait::async_trait;
use plexwire_transport::{
    Address, ClientTransport, Connection, Endpoint, ServerTransport, TransportError,
};
use tokio::task::JoinSet;

pub use backend::{backend, OPTIONS};

pub use config::{ClientAuth, Pem, TlsClientConfig, TlsServerConfig, TlsVersions, VerifyLog};
pub use explain::{explain, explain_alert, explain_sent_alert, Side};
pub use stream::{TlsAcceptor, TlsConnector, HANDSHAKE_TIMEOUT};

/// Handshakes a listener runs at once; past this it stops accepting until
/// some finish, so a flood of slow handshakes cannot grow without bound.
const MAX_HANDSHAKES: usize = 256;

/// The plain endpoint under a TLS one: `tcp://host:port` under `tls://`,
/// `unix:///path` (with its `mode`) under `tls+unix://`.
fn inner_endpoint(endpoint: &Endpoint) -> Result<Endpoint, TransportError> {
    let url = match (endpoint.scheme(), endpoint.address()) {
        ("tls", Address::Host { host, port, .. }) if host.contains(':') => {
            format!("tcp://[{host}]:{port}")
        }
        ("tls", Address::Host { host, port, .. }) => format!("tcp://{host}:{port}"),
        ("tls+unix", Address::Path(p)) => {
            let path = plexwire_transport::encode_url_part(&p.to_string_lossy());
            match endpoint.unix_mode() {
                Some(mode) => format!("unix://{path}?mode={mode:o}"),
                None => format!("unix://{path}"),
            }
        }
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

/// Connects to `tls://` and `tls+unix://` endpoints.
///
/// [`TlsTransport::default`] reads the TLS settings of each endpoint from its
/// URL; [`TlsTransport::with_config`] uses settings made in code instead
/// (the URL's TLS options are then ignored).
#[derive(Debug, Clone, Default)]
pub struct TlsTransport {
    config: Option<TlsClientConfig>,
}

impl TlsTransport {
    /// Uses `config` for every connection, whatever the URL's TLS options say.
    pub fn with_config(config: TlsClientConfig) -> TlsTransport {
        TlsTransport {
            config: Some(config),
        }
    }
}

#[async_trait]
impl ClientTransport for TlsTransport {
    async fn connect(&self, endpoint: &Endpoint) -> Result<Connection, TransportError> {
        let endpoint = &backend().check(endpoint)?;
        let inner = inner_endpoint(endpoint)?;
        let config = match &self.config {
            Some(c) => c.clone(),
            None => TlsClientConfig::from_endpoint(endpoint)?,
        };
        let connector = TlsConnector::new(&config, endpoint)?;
        let plain = match endpoint.scheme() {
            "tls+unix" => plexwire_unix::UnixTransport.connect(&inner).await,
            _ => plexwire_tcp::TcpTransport.connect(&inner).await,
        }
        .map_err(|e| rename(e, endpoint))?;
        connector.connect(plain).await
    }
}

/// A bound `tls://` or `tls+unix://` listener.
///
/// Handshakes run in their own tasks, so a slow or silent client never holds
/// up the next one; [`ServerTransport::accept`] returns connections whose
/// handshake succeeded and logs the ones that failed (a warning naming the
/// client and the failed check). [`TlsListener::next_handshake`] returns
/// the failures too. Dropping the listener stops listening at once and
/// abandons handshakes in progress.
pub struct TlsListener {
    inner: Box<dyn ServerTransport>,
    acceptor: TlsAcceptor,
    endpoint: Endpoint,
    handshakes: JoinSet<Result<Connection, TransportError>>,
}

impl fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsListener")
            .field("endpoint", &self.endpoint.url())
            .field("handshakes", &self.handshakes.len())
            .finish()
    }
}

impl TlsListener {
    /// Binds `endpoint` with the TLS settings in its URL
    /// ([`TlsServerConfig::from_endpoint`]).
    pub async fn bind(endpoint: &Endpoint) -> Result<TlsListener, TransportError> {
        let config = TlsServerConfig::from_endpoint(endpoint)?;
        TlsListener::bind_with(endpoint, &config).await
    }

    /// Binds `endpoint` with settings made in code (the URL's TLS options are ignored).
    pub async fn bind_with(
        endpoint: &Endpoint,
        config: &TlsServerConfig,
    ) -> Result<TlsListener, TransportError> {
        let endpoint = &backend().check(endpoint)?;
        let inner_ep = inner_endpoint(endpoint)?;
        // Read the certificate before binding, so a bad file leaves no socket behind.
        let acceptor = TlsAcceptor::new(config, endpoint)?;
        let inner: Box<dyn ServerTransport> = match endpoint.scheme() {
            "tls+unix" => Box::new(
                plexwire_unix::UnixListener::bind(&inner_ep)
                    .await
                    .map_err(|e| rename(e, endpoint))?,
            ),
            _ => Box::new(
                plexwire_tcp::TcpListener::bind(&inner_ep)
                    .await
                    .map_err(|e| rename(e, endpoint))?,
            ),
        };
        Ok(TlsListener::over(inner, acceptor))
    }

    /// Adds TLS to any byte-stream listener. The reported endpoint is the
    /// acceptor's, at the address `inner` bound.
    pub fn over(inner: Box<dyn ServerTransport>, mut acceptor: TlsAcceptor) -> TlsListener {
        let endpoint = acceptor
            .endpoint()
            .with_address(inner.local_endpoint().address().clone());
        // Handshake errors name the address really bound.
        acceptor.set_endpoint(endpoint.clone());
        TlsListener {
            inner,
            acceptor,
            endpoint,
            handshakes: JoinSet::new(),
        }
    }

    /// The next finished handshake, failed ones included: a failure is a
    /// [`TransportError::Tls`] naming the client and the check. Errors of the
    /// plain listener are returned as they are.
    ///
    /// Cancel safe: handshakes run in their own tasks and finished ones
    /// wait in the listener.
    pub async fn next_handshake(&mut self) -> Result<Connection, TransportError> {
        loop {
            tokio::select! {
                Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                    match done {
                        Ok(result) => return result,
                        Err(e) if e.is_panic() => {
                            tracing::error!(endpoint = %self.endpoint, "a TLS handshake task panicked");
                        }
                        Err(_) => {}
                    }
                }
                plain = self.inner.accept(), if self.handshakes.len() < MAX_HANDSHAKES => {
                    let plain = plain?;
                    let acceptor = self.acceptor.clone();
                    self.handshakes.spawn(async move { acceptor.accept(plain).await });
                }
            }
        }
    }
}

#[async_trait]
impl ServerTransport for TlsListener {
    async fn accept(&mut self) -> Result<Connection, TransportError> {
        loop {
            match self.next_handshake().await {
                Ok(conn) => return Ok(conn),
                Err(e @ TransportError::Tls { .. }) => {
                    tracing::warn!(error = %e, "TLS handshake refused");
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn local_endpoint(&self) -> &Endpoint {
        &self.endpoint
    }
}
