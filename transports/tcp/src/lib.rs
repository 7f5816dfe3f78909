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
use plexwire_transport::{
    Address, ClientTransport, Connection, Endpoint, PeerInfo, Scheme, ServerTransport,
    TransportError,
};
use tokio::net::{TcpListener as TokioListener, TcpStream};

fn host_port(endpoint: &Endpoint) -> Result<(&str, u16), TransportError> {
    match (endpoint.scheme(), endpoint.address()) {
        (Scheme::Tcp, Address::Host { host, port, .. }) => Ok((host, *port)),
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
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
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
        let listener = TokioListener::bind((host, port)).await.map_err(fail)?;
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
