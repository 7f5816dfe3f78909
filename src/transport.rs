//! Picking a backend from an endpoint URL at run time.
//!
//! [`connect`] and [`listen`] dispatch on the URL's scheme to the backends
//! compiled into this build; [`AnyTransport`] is the same dispatch as a
//! [`ClientTransport`], for code generic over the transport. An endpoint whose
//! backend is not compiled in fails with an error naming the cargo feature.

use async_trait::async_trait;
pub use plexwire_transport::*;

/// The TLS backend (`tls://`, `tls+unix://`): plexwire-tls composed over
/// TCP and UNIX sockets ([`tls::transport`], [`tls::bind`]), and everything
/// of plexwire-tls: [`TlsTransport`](tls::TlsTransport),
/// [`TlsListener`](tls::TlsListener), the TLS settings every encrypted
/// backend shares ([`TlsServerConfig`](tls::TlsServerConfig),
/// [`TlsClientConfig`](tls::TlsClientConfig)).
#[cfg(feature = "tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
pub mod tls;

/// The QUIC backend (`quic://`): [`QuicTransport`](quic::QuicTransport),
/// [`QuicListener`](quic::QuicListener).
#[cfg(feature = "quic")]
#[cfg_attr(docsrs, doc(cfg(feature = "quic")))]
pub use plexwire_quic as quic;

/// The HTTP backend (`http://`, and `https://` with the `tls` feature):
/// [`HttpTransport`](http::HttpTransport), [`HttpListener`](http::HttpListener).
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub use plexwire_http as http;

/// Connects to `url` with whichever compiled-in backend its scheme names.
pub async fn connect(url: &str) -> Result<Connection, TransportError> {
    AnyTransport.connect(&Endpoint::parse(url)?).await
}

/// Listens on `url` with whichever compiled-in backend its scheme names.
pub async fn listen(url: &str) -> Result<Box<dyn ServerTransport>, TransportError> {
    listen_on(&Endpoint::parse(url)?).await
}

/// Listens on a parsed endpoint; see [`listen`].
pub async fn listen_on(endpoint: &Endpoint) -> Result<Box<dyn ServerTransport>, TransportError> {
    match endpoint.scheme() {
        Scheme::Mem => Ok(Box::new(MemListener::bind(endpoint)?)),
        #[cfg(feature = "tcp")]
        Scheme::Tcp => Ok(Box::new(plexwire_tcp::TcpListener::bind(endpoint).await?)),
        #[cfg(feature = "unix")]
        Scheme::Unix => Ok(Box::new(plexwire_unix::UnixListener::bind(endpoint).await?)),
        #[cfg(feature = "tls")]
        Scheme::Tls | Scheme::TlsUnix => Ok(Box::new(tls::bind(endpoint).await?)),
        #[cfg(feature = "quic")]
        Scheme::Quic => Ok(Box::new(plexwire_quic::QuicListener::bind(endpoint).await?)),
        // Every HTTP listener also serves ReasonChip's POST endpoint.
        #[cfg(feature = "http")]
        Scheme::Http => Ok(Box::new(
            plexwire_http::HttpListener::bind_with(endpoint, crate::http_api::router()).await?,
        )),
        #[cfg(all(feature = "http", feature = "tls"))]
        Scheme::Https => Ok(Box::new(
            plexwire_http::HttpListener::bind_with(endpoint, crate::http_api::router()).await?,
        )),
        #[cfg(not(all(feature = "http", feature = "tls")))]
        Scheme::Https => Err(https_disabled(endpoint)),
        _ => Err(endpoint.feature_disabled()),
    }
}

/// `https://` needs both the `http` and the `tls` feature; names the missing ones.
#[cfg(not(all(feature = "http", feature = "tls")))]
fn https_disabled(endpoint: &Endpoint) -> TransportError {
    TransportError::FeatureDisabled {
        url: endpoint.url().to_owned(),
        feature: if cfg!(feature = "http") {
            "tls"
        } else if cfg!(feature = "tls") {
            "http"
        } else {
            "http,tls"
        },
    }
}

/// Every compiled-in backend behind one [`ClientTransport`], chosen per endpoint.
#[derive(Debug, Clone, Copy, Default)]
pub struct AnyTransport;

#[async_trait]
impl ClientTransport for AnyTransport {
    async fn connect(&self, endpoint: &Endpoint) -> Result<Connection, TransportError> {
        match endpoint.scheme() {
            Scheme::Mem => MemTransport.connect(endpoint).await,
            #[cfg(feature = "tcp")]
            Scheme::Tcp => plexwire_tcp::TcpTransport.connect(endpoint).await,
            #[cfg(feature = "unix")]
            Scheme::Unix => plexwire_unix::UnixTransport.connect(endpoint).await,
            #[cfg(feature = "tls")]
            Scheme::Tls | Scheme::TlsUnix => tls::transport().connect(endpoint).await,
            // A transport per connect: the connection gets a UDP socket of its own.
            #[cfg(feature = "quic")]
            Scheme::Quic => {
                plexwire_quic::QuicTransport::default()
                    .connect(endpoint)
                    .await
            }
            #[cfg(feature = "http")]
            Scheme::Http => {
                plexwire_http::HttpTransport::default()
                    .connect(endpoint)
                    .await
            }
            #[cfg(all(feature = "http", feature = "tls"))]
            Scheme::Https => {
                plexwire_http::HttpTransport::default()
                    .connect(endpoint)
                    .await
            }
            #[cfg(not(all(feature = "http", feature = "tls")))]
            Scheme::Https => Err(https_disabled(endpoint)),
            _ => Err(endpoint.feature_disabled()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_backend_that_is_not_compiled_in_names_its_feature() {
        let e = connect("ws://127.0.0.1:1/x").await.unwrap_err().to_string();
        assert_eq!(
            e,
            "endpoint `ws://127.0.0.1:1/x` needs the `ws` cargo feature of plexwire (build with `--features ws`)"
        );
        #[cfg(not(feature = "quic"))]
        assert_eq!(
            connect("quic://127.0.0.1:1").await.unwrap_err().to_string(),
            "endpoint `quic://127.0.0.1:1` needs the `quic` cargo feature of plexwire (build with `--features quic`)"
        );
        #[cfg(not(feature = "tls"))]
        for url in ["tls://127.0.0.1:0", "tls+unix:///tmp/x.sock"] {
            let e = listen(url).await.err().unwrap().to_string();
            assert!(e.contains("`tls` cargo feature"), "{e}");
        }
        #[cfg(not(all(feature = "http", feature = "tls")))]
        {
            let e = connect("https://127.0.0.1:1")
                .await
                .unwrap_err()
                .to_string();
            assert!(e.contains("--features "), "{e}");
            #[cfg(feature = "http")]
            assert!(e.contains("`tls` cargo feature"), "{e}");
        }
        #[cfg(not(feature = "tcp"))]
        assert!(connect("tcp://127.0.0.1:1")
            .await
            .unwrap_err()
            .to_string()
            .contains("`tcp` cargo feature"));
    }

    #[tokio::test]
    async fn a_malformed_url_is_quoted() {
        let e = connect("tcp:/127.0.0.1:1").await.unwrap_err().to_string();
        assert!(e.starts_with("invalid endpoint `tcp:/127.0.0.1:1`"), "{e}");
    }
}
