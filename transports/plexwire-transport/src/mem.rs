//! The in-memory transport: `mem://name`, always compiled in.
//!
//! Listeners register a name in a process-wide table; connecting to the name
//! makes a pair of bounded frame channels. It is message oriented (each frame
//! is one message, no length prefix) and enforces the endpoint's frame size
//! limit like every other backend. Tests, doc examples and embedded
//! deployments (broker, workers and client in one process) use it.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::SinkExt;
use tokio::sync::mpsc;
use tokio_util::sync::PollSender;

use futures_util::future::BoxFuture;

use crate::{
    Address, AddressShape, Backend, ClientTransport, Connection, Endpoint, Loopback, LoopbackEnv,
    PeerInfo, Registry, SchemeSpec, ServerTransport, TransportError,
};

/// Connections waiting to be accepted, per listener.
const ACCEPT_BACKLOG: usize = 128;
/// Frames in flight per direction of one connection.
const FRAMES_IN_FLIGHT: usize = 64;

type Listeners = Mutex<HashMap<String, mpsc::Sender<Connection>>>;

fn listeners() -> &'static Listeners {
    static LISTENERS: OnceLock<Listeners> = OnceLock::new();
    LISTENERS.get_or_init(Default::default)
}

fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

const SCHEMES: &[SchemeSpec] = &[SchemeSpec {
    name: "mem",
    aliases: &[],
    address: AddressShape::Name,
    options: &[],
}];

/// The in-memory backend's description for the [`Registry`]: `mem://name`,
/// always compiled in.
pub fn backend() -> Backend {
    Backend::new("mem", SCHEMES, connect, bind).loopback(loopback)
}

fn connect<'a>(
    _: &'a Registry,
    endpoint: &'a Endpoint,
) -> BoxFuture<'a, Result<Connection, TransportError>> {
    Box::pin(MemTransport.connect_to(endpoint))
}

fn bind<'a>(
    _: &'a Registry,
    endpoint: &'a Endpoint,
) -> BoxFuture<'a, Result<Box<dyn ServerTransport>, TransportError>> {
    Box::pin(async move { Ok(Box::new(MemListener::bind(endpoint)?) as Box<dyn ServerTransport>) })
}

fn loopback(env: &LoopbackEnv) -> Result<Vec<Loopback>, String> {
    Ok(vec![Loopback::plain(
        "mem",
        "mem",
        format!("mem://{}", env.fresh_name("suite")),
    )])
}

/// The listener name of a `mem://` endpoint, checked.
fn name_of(endpoint: &Endpoint) -> Result<String, TransportError> {
    match backend().check(endpoint)?.address() {
        Address::Name(n) => Ok(n.clone()),
        _ => Err(endpoint.wrong_backend("mem")),
    }
}

/// Connects to `mem://` listeners in this process.
#[derive(Debug, Clone, Copy, Default)]
pub struct MemTransport;

#[async_trait]
impl ClientTransport for MemTransport {
    async fn connect(&self, endpoint: &Endpoint) -> Result<Connection, TransportError> {
        self.connect_to(endpoint).await
    }
}

impl MemTransport {
    async fn connect_to(self, endpoint: &Endpoint) -> Result<Connection, TransportError> {
        let name = name_of(endpoint)?;
        let name = name.as_str();
        let refused = || TransportError::Connect {
            url: endpoint.url().to_owned(),
            source: io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "nothing listens on this mem:// name",
            ),
        };
        let accept_tx = listeners()
            .lock()
            .expect("mem listener table poisoned")
            .get(name)
            .cloned()
            .ok_or_else(refused)?;
        let id = next_id();
        let max = endpoint.max_frame_size();
        let (client, server) = pair(
            PeerInfo {
                transport: "mem",
                remote: format!("{name}#server"),
            },
            PeerInfo {
                transport: "mem",
                remote: format!("{name}#{id}"),
            },
            max,
        );
        accept_tx.send(server).await.map_err(|_| refused())?;
        Ok(client)
    }
}

/// Two connected in-memory connections: what one sends, the other receives.
pub fn pair(a_sees: PeerInfo, b_sees: PeerInfo, max_frame_size: usize) -> (Connection, Connection) {
    let (a_tx, b_rx) = mpsc::channel::<Bytes>(FRAMES_IN_FLIGHT);
    let (b_tx, a_rx) = mpsc::channel::<Bytes>(FRAMES_IN_FLIGHT);
    (
        half(a_tx, a_rx, a_sees, max_frame_size),
        half(b_tx, b_rx, b_sees, max_frame_size),
    )
}

fn half(
    tx: mpsc::Sender<Bytes>,
    mut rx: mpsc::Receiver<Bytes>,
    peer: PeerInfo,
    max: usize,
) -> Connection {
    let sink = PollSender::new(tx).sink_map_err(|_| TransportError::Closed);
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|o| o.map(Ok)));
    Connection::from_messages(stream, sink, peer, max)
}

/// A `mem://name` listener. The name is free again once it is dropped.
#[derive(Debug)]
pub struct MemListener {
    endpoint: Endpoint,
    incoming: mpsc::Receiver<Connection>,
}

impl MemListener {
    /// Starts listening on `endpoint` (`mem://name`).
    pub fn bind(endpoint: &Endpoint) -> Result<MemListener, TransportError> {
        let name = name_of(endpoint)?;
        let mut table = listeners().lock().expect("mem listener table poisoned");
        if table.get(&name).is_some_and(|tx| !tx.is_closed()) {
            return Err(TransportError::Bind {
                url: endpoint.url().to_owned(),
                source: io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "another listener in this process has this name",
                ),
            });
        }
        let (tx, incoming) = mpsc::channel(ACCEPT_BACKLOG);
        table.insert(name, tx);
        Ok(MemListener {
            endpoint: endpoint.clone(),
            incoming,
        })
    }
}

impl Drop for MemListener {
    fn drop(&mut self) {
        self.incoming.close();
        if let Ok(mut table) = listeners().lock() {
            if let Address::Name(name) = self.endpoint.address() {
                if table.get(name).is_some_and(|tx| tx.is_closed()) {
                    table.remove(name);
                }
            }
        }
    }
}

#[async_trait]
impl ServerTransport for MemListener {
    async fn accept(&mut self) -> Result<Connection, TransportError> {
        let mut conn = self.incoming.recv().await.ok_or(TransportError::Closed)?;
        conn.set_max_frame_size(self.endpoint.max_frame_size());
        Ok(conn)
    }

    fn local_endpoint(&self) -> &Endpoint {
        &self.endpoint
    }
}
