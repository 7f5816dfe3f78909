//! plexwire's TLS layer: rustls with the ring crypto provider, over any
//! byte stream.
//!
//! TLS is not a socket type but a layer: [`TlsConnector`] and
//! [`TlsAcceptor`] run the handshake over any `AsyncRead + AsyncWrite`
//! ([`TlsStream`]), or over a plain byte-stream [`Connection`] made by
//! another backend. [`TlsTransport::over`] adds TLS to any
//! [`ClientTransport`], [`TlsListener::over`] to any [`ServerTransport`].
//! This crate knows no socket type. Its registry entry ([`backend`]) serves
//! `tls://h:p` as TLS over whatever the registry serves `tcp://h:p` with,
//! and `tls+unix:///p` over `unix:///p` (stale-socket replacement, `?mode=`,
//! removal on drop come from there): [`plain_endpoint`], [`connect_plain`],
//! [`listen_plain`]. `https://` is TLS under HTTP, in `plexwire-http`.
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
//! [`TlsAcceptor::new`], [`TlsClientConfig`] with
//! [`TlsTransport::with_config`] or [`TlsConnector::new`].
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
use std::sync::Arc;

use async_trait::async_trait;
use plexwire_transport::{
    ClientTransport, Connection, Endpoint, HandshakeLimits, Handshakes, Incoming, ServerTransport,
    TransportError,
};

pub use backend::{backend, connect_plain, listen_plain, plain_endpoint, OPTIONS};
pub use config::{ClientAuth, Pem, TlsClientConfig, TlsServerConfig, TlsVersions, VerifyLog};
pub use explain::{explain, explain_alert, explain_sent_alert, Side};
pub use stream::{TlsAcceptor, TlsConnector, TlsStream, HANDSHAKE_TIMEOUT};

/// Handshakes a listener runs at once; past this it stops accepting until
/// some finish, so a flood of slow handshakes cannot grow without bound.
const MAX_HANDSHAKES: usize = 256;

/// TLS over the connections another [`ClientTransport`] makes.
///
/// [`TlsTransport::connect`](ClientTransport::connect) asks `inner` for a
/// plain byte-stream connection to the endpoint it was given (the TLS
/// endpoint itself: `inner` knows which plain address it stands for), then
/// runs the client handshake over it. The TLS settings come from each
/// endpoint's URL, or from [`TlsTransport::with_config`] (the URL's TLS
/// options are then ignored). The settings are checked (files read) before
/// `inner` connects.
#[derive(Clone)]
pub struct TlsTransport {
    inner: Arc<dyn ClientTransport>,
    config: Option<TlsClientConfig>,
}

impl fmt::Debug for TlsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsTransport")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl TlsTransport {
    /// TLS over the connections `inner` makes, with each endpoint's URL
    /// settings.
    pub fn over(inner: impl ClientTransport + 'static) -> TlsTransport {
        TlsTransport {
            inner: Arc::new(inner),
            config: None,
        }
    }

    /// Uses `config` for every connection, whatever the URL's TLS options say.
    pub fn with_config(self, config: TlsClientConfig) -> TlsTransport {
        TlsTransport {
            config: Some(config),
            ..self
        }
    }
}

#[async_trait]
impl ClientTransport for TlsTransport {
    async fn connect(&self, endpoint: &Endpoint) -> Result<Connection, TransportError> {
        let config = match &self.config {
            Some(c) => c.clone(),
            None => TlsClientConfig::from_endpoint(endpoint)?,
        };
        let connector = TlsConnector::new(&config, endpoint)?;
        let plain = self.inner.connect(endpoint).await?;
        connector.connect(plain).await
    }
}

/// A bound `tls://` or `tls+unix://` listener.
///
/// Handshakes run in their own tasks ([`Handshakes`]: at most 256 at once,
/// each within [`HANDSHAKE_TIMEOUT`]), so a slow or silent client never
/// holds up the next one; [`ServerTransport::accept`] returns connections
/// whose handshake succeeded and logs the ones that failed (naming the
/// client and the failed check; aggregated under churn).
/// [`TlsListener::next_handshake`] returns the failures too. Dropping the
/// listener stops listening at once and abandons handshakes in progress.
pub struct TlsListener {
    endpoint: Endpoint,
    handshakes: Handshakes<Connection>,
}

impl fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsListener")
            .field("endpoint", &self.endpoint.url())
            .field("handshakes", &self.handshakes)
            .finish()
    }
}

impl TlsListener {
    /// Adds TLS to any byte-stream listener. The reported endpoint is the
    /// acceptor's, at the address `inner` bound. (Make the acceptor before
    /// binding `inner`, so a bad certificate file leaves no socket behind.)
    pub fn over(inner: Box<dyn ServerTransport>, mut acceptor: TlsAcceptor) -> TlsListener {
        let endpoint = acceptor
            .endpoint()
            .with_address(inner.local_endpoint().address().clone());
        // Handshake errors name the address really bound.
        acceptor.set_endpoint(endpoint.clone());
        let plain = futures_util::stream::unfold(inner, |mut inner| async move {
            let next = inner.accept().await.map(|conn| Incoming {
                remote: conn.peer().remote.clone(),
                io: conn,
            });
            Some((next, inner))
        });
        let handshakes = Handshakes::new(
            "TLS handshake",
            endpoint.url(),
            HandshakeLimits {
                max_in_flight: MAX_HANDSHAKES,
                timeout: HANDSHAKE_TIMEOUT,
            },
            plain,
            move |plain: Incoming<Connection>| {
                let acceptor = acceptor.clone();
                async move { acceptor.accept(plain.io).await }
            },
        );
        TlsListener {
            endpoint,
            handshakes,
        }
    }

    /// The next finished handshake, failed ones included: a failure is a
    /// [`TransportError::Tls`] naming the client and the check (or
    /// [`TransportError::HandshakeTimeout`]). Errors of the plain listener
    /// are returned as they are.
    ///
    /// Cancel safe: handshakes run in their own tasks and finished ones
    /// wait in the listener.
    pub async fn next_handshake(&mut self) -> Result<Connection, TransportError> {
        self.handshakes.next_handshake().await
    }
}

#[async_trait]
impl ServerTransport for TlsListener {
    /// Cancel safe (see [`Handshakes::accept`]).
    async fn accept(&mut self) -> Result<Connection, TransportError> {
        self.handshakes.accept().await
    }

    fn local_endpoint(&self) -> &Endpoint {
        &self.endpoint
    }
}
