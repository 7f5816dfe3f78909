//! plexwire's TCP backend: `tcp://host:port`.
//!
//! IPv4, IPv6 (`tcp://[::1]:51500`) and host names (every resolved address is
//! tried in turn). `TCP_NODELAY` is set on every connection: plexwire batches
//! its own writes, so Nagle's algorithm would only add latency.

#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![forbid(unsafe_code)]

use std::io;
use std::net::SocketAddr;

use async_trait::async_trait;
use futures_util::future::BoxFuture;
use plexwire_transport::{
    Address, AddressShape, Backend, ClientTransport, Connection, Endpoint, Loopback, LoopbackEnv,
    PeerInfo, Registry, SchemeSpec, ServerTransport, TransportError,
};
use tokio::net::{TcpListener as TokioListener, TcpStream};

const SCHEMES: &[SchemeSpec] = &[SchemeSpec {
    name: "tcp",
    aliases: &[],
    address: AddressShape::HostPort { default_port: None },
    options: &[],
}];

/// The TCP backend's description for plexwire's transport registry:
/// `tcp://host:port`, the `tcp` cargo feature.
pub fn backend() -> Backend {
    Backend::new("tcp", SCHEMES, connect, bind)
        .feature("tcp")
        .loopback(loopback)
}

fn connect<'a>(
    _: &'a Registry,
    endpoint: &'a Endpoint,
) -> BoxFuture<'a, Result<Connection, TransportError>> {
    Box::pin(async move { TcpTransport.connect(endpoint).await })
}

fn bind<'a>(
    _: &'a Registry,
    endpoint: &'a Endpoint,
) -> BoxFuture<'a, Result<Box<dyn ServerTransport>, TransportError>> {
    Box::pin(
        async move { Ok(Box::new(TcpListener::bind(endpoint).await?) as Box<dyn ServerTransport>) },
    )
}

fn loopback(_: &LoopbackEnv) -> Result<Vec<Loopback>, String> {
    Ok(vec![
        Loopback::plain("tcp", "tcp", "tcp://127.0.0.1:0".into()),
        Loopback::plain("tcp_v6", "tcp", "tcp://[::1]:0".into()),
    ])
}

/// The host and port of a `tcp://` endpoint, checked against the scheme's declaration.
fn host_port(endpoint: &Endpoint) -> Result<(String, u16), TransportError> {
    match backend().check(endpoint)?.address() {
        Address::Host { host, port, .. } => Ok((host.clone(), *port)),
        _ => Err(endpoint.wrong_backend("tcp")),
    }
}

/// Wraps an established TCP stream as a plexwire [`Connection`].
pub fn connection(stream: TcpStream, max_frame_size: usize) -> io::Result<Connection> {
    stream.set_nodelay(true)?;
    let remote = stream.peer_addr()?.to_string();
    let (r, w) = stream.into_split();
    Ok(Connection::from_stream(
        r,
        w,
        PeerInfo {
            transport: "tcp",
            remote,
        },
        max_frame_size,
    ))
}

/// Connects to `tcp://` endpoints.
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpTransport;

#[async_trait]
impl ClientTransport for TcpTransport {
    async fn connect(&self, endpoint: &Endpoint) -> Result<Connection, TransportError> {
        let (host, port) = host_port(endpoint)?;
        let fail = |source| TransportError::Connect {
            url: endpoint.url().to_owned(),
            source,
        };
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(fail)?
            .collect();
        let mut last = io::Error::new(
            io::ErrorKind::NotFound,
            format!("`{host}` resolved to no address"),
        );
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(stream) => return connection(stream, endpoint.max_frame_size()).map_err(fail),
                Err(e) => last = e,
            }
        }
        Err(fail(last))
    }
}

/// A bound `tcp://` listener.
#[derive(Debug)]
pub struct TcpListener {
    listener: TokioListener,
    endpoint: Endpoint,
}

impl TcpListener {
    /// Binds `endpoint`; port 0 picks a free port, which [`ServerTransport::local_endpoint`] then reports.
    pub async fn bind(endpoint: &Endpoint) -> Result<TcpListener, TransportError> {
        let (host, port) = host_port(endpoint)?;
        let fail = |source| TransportError::Bind {
            url: endpoint.url().to_owned(),
            source,
        };
        let listener = TokioListener::bind((host.as_str(), port))
            .await
            .map_err(fail)?;
        let local = listener.local_addr().map_err(fail)?;
        let endpoint = endpoint.with_address(Address::Host {
            host: local.ip().to_string(),
            port: local.port(),
            path: "/".into(),
        });
        Ok(TcpListener { listener, endpoint })
    }
}

#[async_trait]
impl ServerTransport for TcpListener {
    async fn accept(&mut self) -> Result<Connection, TransportError> {
        let (stream, _) = self.listener.accept().await?;
        Ok(connection(stream, self.endpoint.max_frame_size())?)
    }

    fn local_endpoint(&self) -> &Endpoint {
        &self.endpoint
    }
}
