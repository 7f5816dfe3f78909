//! The async packet connection: [`PacketCore`] on the shared connection
//! layer ([`crate::link`]) over any byte stream.
//!
//! This file is the shell around the sans-IO core: it owns the tasks (one
//! reader, the link layer's writer, one task per request being served), the
//! waiters of our requests, and nothing of the protocol's rules. Frames are
//! cut with the transport's BSUInt framing (`Framing::Bsuint`), whose length
//! prefix is checked against the packet limit before anything is allocated;
//! packets are written by [`link::spawn_writer_with_grace`], which batches
//! whatever is queued into one write and flushes when the queue is empty (or
//! after the configured grace). It works over any [`Connection`] from the
//! registry and over plain `AsyncRead + AsyncWrite` halves (a child
//! process's stdout/stdin): [`PacketConnection::from_io`].

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{oneshot, Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::link::{self, Outbox, Outgoing, ReadError, Reader, Wire, WriterConfig};
use crate::transport::{Connection, Framing, PeerInfo};

use super::core::{
    CoreConfig, Event, IncomingRequest, PacketCore, Reply, RequestId, Response,
    DEFAULT_MAX_PACKET_SIZE, DEFAULT_MAX_SERVING,
};
use super::error::PacketError;
use super::packet::{MalformedPacket, Packet};

/// Why a request handler failed; its text is logged, never sent (the peer
/// gets `exception during handler`, as from the Python library).
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// Serves the peer's requests: async, many at once, answered in any order.
/// Its `Ok` value maps to the response as the seed maps a Python handler's
/// return value ([`Reply`]); an `Err` (or a panic) answers not ok,
/// `exception during handler`.
#[derive(Clone)]
pub struct Handler(
    Arc<dyn Fn(IncomingRequest) -> BoxFuture<'static, Result<Reply, HandlerError>> + Send + Sync>,
);

impl Handler {
    /// A handler from an async function of the request.
    pub fn new<F, Fut, R, E>(f: F) -> Handler
    where
        F: Fn(IncomingRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
        R: Into<Reply>,
        E: Into<HandlerError>,
    {
        Handler(Arc::new(move |rq| {
            let fut = f(rq);
            Box::pin(async move { fut.await.map(Into::into).map_err(Into::into) })
        }))
    }

    fn call(&self, rq: IncomingRequest) -> BoxFuture<'static, Result<Reply, HandlerError>> {
        (self.0)(rq)
    }
}

impl fmt::Debug for Handler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Handler")
    }
}

/// How a [`PacketConnection`] behaves.
#[derive(Debug, Clone)]
pub struct PacketConfig {
    /// The largest packet body sent or received. `None` takes the
    /// connection's frame limit (its endpoint's `max_frame_size`, 16 MiB by
    /// default); raw streams ([`PacketConnection::from_io`]) use 16 MiB.
    pub max_packet_size: Option<usize>,
    /// Requests of the peer served at once; at this many the reader stops
    /// reading until one finishes (backpressure on the peer).
    pub max_serving: usize,
    /// Our requests outstanding at once; at this many
    /// [`submit`](PacketConnection::submit) waits for an answer to arrive.
    pub max_pending: usize,
    /// cs.packetstream's `packet_grace`: how long the writer waits, once
    /// its queue is empty, for another packet before it flushes. Zero (the
    /// default) flushes at once; packets queued while a write is under way
    /// share the next write either way.
    pub packet_grace: Duration,
    /// The writer's queue bounds.
    pub writer: WriterConfig,
}

impl Default for PacketConfig {
    fn default() -> PacketConfig {
        PacketConfig {
            max_packet_size: None,
            max_serving: DEFAULT_MAX_SERVING,
            max_pending: DEFAULT_MAX_PENDING,
            packet_grace: Duration::ZERO,
            writer: WriterConfig::default(),
        }
    }
}

/// The packet stream's messages for the connection layer.
#[derive(Debug, Clone, Copy, Default)]
pub struct PacketWire;

impl Wire for PacketWire {
    type Message = Packet;
    type Control = ();
    type DecodeError = MalformedPacket;

    fn size_hint(packet: &Packet) -> usize {
        packet.payload.len() + 16
    }

    fn encode(&mut self, packet: Packet, max_frame: usize) -> Option<Outgoing> {
        // Sizes were checked by the core; this guards the writer's limit.
        let frame = packet.encode();
        if frame.len() > max_frame {
            tracing::error!(
                size = frame.len(),
                max = max_frame,
                "packet over the frame limit; not sent"
            );
            return None;
        }
        Some(Outgoing::main(frame))
    }

    fn encode_control(&mut self, (): ()) -> Option<Outgoing> {
        None
    }

    fn decode(&self, frame: &Bytes) -> Result<Packet, MalformedPacket> {
        Packet::decode(frame)
    }
}

/// Default for [`PacketConfig::max_pending`].
pub const DEFAULT_MAX_PENDING: usize = 65_536;

/// Where an answer goes, and the slot it holds until then.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

type Waiter = (
    oneshot::Sender<Result<Response, PacketError>>,
    OwnedSemaphorePermit,
);

struct State {
    core: PacketCore,
    waiters: HashMap<RequestId, Waiter>,
}

/// What the connection's tasks share.
struct Shared {
    state: Mutex<State>,
    /// The writer's queue; the async lock keeps packets in the core's order
    /// while one task waits for room. `None` once EOF went out.
    out: tokio::sync::Mutex<Option<Outbox<PacketWire>>>,
    handler: Option<Handler>,
    /// Slots for our outstanding requests (`max_pending`).
    pending_slots: Arc<Semaphore>,
    /// Woken when a request finishes being served or the receive side ends.
    changed: Notify,
    recv_done: CancellationToken,
    writer_done: CancellationToken,
    /// Tears everything down at once (last handle dropped, `abort`, a malformed packet).
    kill: CancellationToken,
    peer: String,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the core half-updated
        // in a way worse than the panic itself; carry on.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Acts on the core's events: wakes waiters, and collects the requests
    /// to serve into `serve` (run by [`Shared::serve`] once the lock is released).
    fn dispatch(&self, state: &mut State, serve: &mut Vec<IncomingRequest>) {
        while let Some(event) = state.core.poll_event() {
            match event {
                Event::Request(rq) => serve.push(rq),
                Event::Response { id, result } => {
                    if let Some((w, _slot)) = state.waiters.remove(&id) {
                        let _ = w.send(result);
                    }
                }
                Event::PeerEndedRequests => {
                    tracing::debug!(peer = %self.peer, "the peer ended its requests (ERQ)");
                }
                Event::ReceiveEnded { eof } => {
                    tracing::debug!(peer = %self.peer, eof, "receive side ended");
                    self.changed.notify_waiters();
                }
            }
        }
    }

    /// Runs the handler on each request (never under the state lock: a
    /// handler may use the connection). A handler that finishes on its first
    /// poll is answered here, without a task; the others get a task each
    /// (at most `max_serving` at once: the reader stops at the limit).
    fn serve(self: &Arc<Self>, requests: Vec<IncomingRequest>) {
        let Some(handler) = &self.handler else {
            // The core answers these itself when there is no handler.
            return;
        };
        for rq in requests {
            let id = rq.id;
            let mut fut = AssertUnwindSafe(handler.call(rq)).catch_unwind();
            let waker = futures_util::task::noop_waker_ref();
            match Pin::new(&mut fut).poll(&mut Context::from_waker(waker)) {
                Poll::Ready(result) => self.finished(id, reply_of(result)),
                Poll::Pending => {
                    let shared = self.clone();
                    tokio::spawn(async move {
                        let result = fut.await;
                        shared.finished(id, reply_of(result));
                        shared.pump().await;
                    });
                }
            }
        }
    }

    /// A request has been served: the core answers it, and whoever waits
    /// on the serving count is woken when it matters (it reached zero, for
    /// `close`; it left the limit, for the paused reader).
    fn finished(&self, id: RequestId, reply: Result<Reply, String>) {
        let wake = {
            let mut st = self.lock();
            st.core.handle_reply(id, reply);
            let serving = st.core.serving();
            serving == 0 || serving + 1 == st.core.config().max_serving
        };
        if wake {
            self.changed.notify_waiters();
        }
    }

    /// Hands every packet the core has queued to the writer, in order,
    /// waiting for room. Cancel safe: a packet not yet handed over goes back.
    async fn pump(&self) {
        let mut out = self.out.lock().await;
        loop {
            let Some(outbox) = out.as_ref() else {
                return;
            };
            let Some(packet) = self.lock().core.poll_transmit() else {
                return;
            };
            let eof = packet == Packet::eof();
            let mut back = PutBack {
                shared: self,
                packet: Some(packet.clone()),
            };
            let sent = outbox.send(packet).await;
            back.packet = None;
            if sent.is_err() {
                tracing::debug!(peer = %self.peer, "the writer has stopped; packet dropped");
                *out = None;
                return;
            }
            if eof {
                // Nothing goes out after EOF: let the writer finish and
                // close the sending direction.
                *out = None;
                return;
            }
        }
    }
}

/// A handler's outcome as the core takes it.
fn reply_of(result: std::thread::Result<Result<Reply, HandlerError>>) -> Result<Reply, String> {
    match result {
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the request handler panicked".to_owned()),
    }
}

/// Returns a packet to the core if the pump is cancelled before the writer took it.
struct PutBack<'a> {
    shared: &'a Shared,
    packet: Option<Packet>,
}

impl Drop for PutBack<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.packet.take() {
            self.shared.lock().core.unpoll_transmit(p);
        }
    }
}

/// Cancels the connection when the last handle goes.
struct Owner {
    kill: CancellationToken,
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.kill.cancel();
    }
}

/// A cs.packetstream connection: either end may call the other (see the
/// module docs of [`crate::peer`]). Cheap to clone; dropping the last clone
/// tears the connection down at once (no EOF; call [`close`](Self::close)
/// for an orderly end).
#[derive(Clone)]
pub struct PacketConnection {
    shared: Arc<Shared>,
    _owner: Arc<Owner>,
}

impl fmt::Debug for PacketConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.shared.lock();
        f.debug_struct("PacketConnection")
            .field("peer", &self.shared.peer)
            .field("pending", &st.core.pending())
            .field("serving", &st.core.serving())
            .field("recv_done", &st.core.recv_done())
            .finish()
    }
}

/// The answer to a submitted request: a future of the seed's
/// `(ok, flags, payload)` ([`Response`]). Dropping it forgets the answer
/// (the protocol has no cancel); the request still runs on the peer.
#[derive(Debug)]
pub struct PendingResponse {
    rx: oneshot::Receiver<Result<Response, PacketError>>,
    id: RequestId,
}

impl PendingResponse {
    /// The request's channel and tag.
    pub fn id(&self) -> RequestId {
        self.id
    }
}

impl Future for PendingResponse {
    type Output = Result<Response, PacketError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx).poll(cx).map(|r| {
            r.unwrap_or_else(|_| {
                Err(PacketError::Closed {
                    reason: "the connection was dropped".into(),
                })
            })
        })
    }
}

impl PacketConnection {
    /// Runs the packet stream over `conn` (any byte-stream backend of the
    /// registry; on a message channel each message is one packet). Without
    /// a `handler` every request of the peer is answered `no request
    /// handler`. Spawns its tasks on the current tokio runtime.
    pub fn open(
        conn: Connection,
        handler: Option<Handler>,
        config: PacketConfig,
    ) -> PacketConnection {
        let mut conn = conn;
        if let Some(max) = config.max_packet_size {
            conn.set_max_frame_size(max);
        }
        let max = conn.max_frame_size();
        let peer = conn.peer().to_string();
        let (tx, rx) = conn.into_frames_with(Framing::Bsuint);
        let kill = CancellationToken::new();
        let (outbox, writer) = link::spawn_writer_with_grace(
            tx,
            PacketWire,
            config.writer,
            config.packet_grace,
            kill.clone(),
        );
        let core = PacketCore::new(CoreConfig {
            max_packet_size: max,
            max_serving: config.max_serving.max(1),
            serves_requests: handler.is_some(),
        });
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                core,
                waiters: HashMap::default(),
            }),
            out: tokio::sync::Mutex::new(Some(outbox)),
            handler,
            pending_slots: Arc::new(Semaphore::new(config.max_pending.max(1))),
            changed: Notify::new(),
            recv_done: CancellationToken::new(),
            writer_done: CancellationToken::new(),
            kill: kill.clone(),
            peer,
        });
        let done = shared.writer_done.clone();
        tokio::spawn(async move {
            let _ = writer.await;
            done.cancel();
        });
        tokio::spawn(read_loop(shared.clone(), Reader::new(rx, PacketWire)));
        PacketConnection {
            shared,
            _owner: Arc::new(Owner { kill }),
        }
    }

    /// Runs the packet stream over plain byte-stream halves: a child
    /// process's stdout and stdin, a pipe, a socket you opened yourself.
    /// `name` names the peer in logs.
    pub fn from_io(
        reader: impl AsyncRead + Send + 'static,
        writer: impl AsyncWrite + Send + 'static,
        name: &str,
        handler: Option<Handler>,
        config: PacketConfig,
    ) -> PacketConnection {
        let max = config.max_packet_size.unwrap_or(DEFAULT_MAX_PACKET_SIZE);
        let conn = Connection::from_stream(
            reader,
            writer,
            PeerInfo {
                transport: "io",
                remote: name.to_owned(),
            },
            max,
        );
        PacketConnection::open(conn, handler, config)
    }

    /// Who is on the other end.
    pub fn peer(&self) -> &str {
        &self.shared.peer
    }

    /// Sends a request and returns the future of its answer; many may be in
    /// flight. Waits only for room: fewer than `max_pending` requests
    /// outstanding, and room in the writer's queue. Fails at once if
    /// this end has ended its requests, the connection is closed, the flags
    /// do not fit or the request is over the packet limit.
    ///
    /// Cancel safe: if dropped before it returns, the request is still sent
    /// (with the next packet) but its answer is forgotten.
    pub async fn submit(
        &self,
        rq_type: u64,
        flags: u64,
        payload: impl Into<Bytes>,
        channel: u64,
    ) -> Result<PendingResponse, PacketError> {
        let slot = tokio::select! {
            slot = self.shared.pending_slots.clone().acquire_owned() => slot.map_err(|_| PacketError::Closed {
                reason: "the connection was dropped".into(),
            })?,
            _ = self.shared.recv_done.cancelled() => {
                return Err(PacketError::Closed { reason: "the peer ended it".into() })
            }
        };
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut st = self.shared.lock();
            let id = st.core.submit(rq_type, flags, payload.into(), channel)?;
            st.waiters.insert(id, (tx, slot));
            id
        };
        self.shared.pump().await;
        Ok(PendingResponse { rx, id })
    }

    /// [`submit`](Self::submit) and wait for the answer: the seed's
    /// `PacketConnection.__call__`.
    pub async fn call(
        &self,
        rq_type: u64,
        flags: u64,
        payload: impl Into<Bytes>,
        channel: u64,
    ) -> Result<Response, PacketError> {
        self.submit(rq_type, flags, payload, channel).await?.await
    }

    /// [`call`](Self::call) with the seed's `decode_response`: an ok answer's
    /// flags and payload are decoded; a not-ok answer is
    /// [`PacketError::NotOk`].
    pub async fn call_decoded<T, E: fmt::Display>(
        &self,
        rq_type: u64,
        flags: u64,
        payload: impl Into<Bytes>,
        channel: u64,
        decode_response: impl FnOnce(u64, Bytes) -> Result<T, E>,
    ) -> Result<T, PacketError> {
        let r = self.call(rq_type, flags, payload, channel).await?;
        if !r.ok {
            return Err(PacketError::NotOk {
                flags: r.flags,
                message: String::from_utf8_lossy(&r.payload).into_owned(),
            });
        }
        decode_response(r.flags, r.payload).map_err(|e| PacketError::Decode(e.to_string()))
    }

    /// Queues ERQ: the peer answers any later request of ours `requests no
    /// longer allowed`, so [`submit`](Self::submit) refuses them already.
    pub async fn end_requests(&self) {
        self.shared.lock().core.end_requests();
        self.shared.pump().await;
    }

    /// Queues EOF: nothing is sent after it, and the sending direction of
    /// the stream is closed once it is written.
    pub async fn send_eof(&self) {
        self.shared.lock().core.send_eof();
        self.shared.pump().await;
    }

    /// Closes in order, as the seed does: ERQ, wait for the requests being
    /// served, EOF, then wait for the peer's EOF (or end of stream) and for
    /// the writer to finish. Our requests still outstanding when the peer's
    /// EOF arrives fail with [`PacketError::Unanswered`]. Waits as long as
    /// the peer takes; wrap it in a timeout and [`abort`](Self::abort) if
    /// the peer may hang.
    pub async fn close(&self) {
        self.end_requests().await;
        loop {
            let changed = self.shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.shared.lock().core.serving() == 0 || self.shared.kill.is_cancelled() {
                break;
            }
            tokio::select! {
                _ = changed => {}
                _ = self.shared.kill.cancelled() => break,
            }
        }
        self.send_eof().await;
        self.join().await;
    }

    /// Tears the connection down at once: no EOF, queued packets unsent,
    /// outstanding requests fail.
    pub fn abort(&self) {
        self.shared.kill.cancel();
    }

    /// Waits for the receive side to end (the peer's EOF, end of stream,
    /// an error): what a server waits for. Cancel safe.
    pub async fn join_recv(&self) {
        self.shared.recv_done.cancelled().await;
    }

    /// Waits for both sides to end. Cancel safe.
    pub async fn join(&self) {
        self.shared.recv_done.cancelled().await;
        self.shared.writer_done.cancelled().await;
    }

    /// Our requests waiting for an answer.
    pub fn pending(&self) -> usize {
        self.shared.lock().core.pending()
    }

    /// The peer's requests being served now.
    pub fn serving(&self) -> usize {
        self.shared.lock().core.serving()
    }

    /// Whether the peer has sent ERQ.
    pub fn peer_ended_requests(&self) -> bool {
        self.shared.lock().core.peer_ended_requests()
    }
}

/// Frames handled before the answers they produced are handed to the writer.
const READ_BATCH: usize = 64;

/// The reader: frames in, core fed, events dispatched, answers pumped out;
/// pauses while as many requests are served as allowed. Frames that have
/// already arrived are handled together (up to [`READ_BATCH`]), so their
/// answers reach the writer in one go.
async fn read_loop(shared: Arc<Shared>, mut reader: Reader<PacketWire>) {
    let mut serve = Vec::new();
    let reason = 'read: loop {
        // Backpressure: no reading while the serving limit is reached.
        loop {
            let changed = shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if !shared.lock().core.read_paused() {
                break;
            }
            tokio::select! {
                _ = changed => {}
                _ = shared.kill.cancelled() => break,
            }
        }
        let next = tokio::select! {
            biased;
            _ = shared.kill.cancelled() => break "closed by this end".to_owned(),
            next = reader.recv() => next,
        };
        let mut next = Some(next);
        let mut handled = 0;
        while let Some(item) = next.take() {
            match item {
                None => break 'read "the stream closed without EOF".to_owned(),
                Some(Err(ReadError::Decode { error, len })) => {
                    tracing::warn!(peer = %shared.peer, len, %error, "malformed packet; closing the connection");
                    shared.kill.cancel();
                    break 'read PacketError::Malformed(error).to_string();
                }
                Some(Err(ReadError::Transport(e))) => {
                    tracing::warn!(peer = %shared.peer, error = %e, "packet stream broken; closing the connection");
                    shared.kill.cancel();
                    break 'read e.to_string();
                }
                Some(Ok(packet)) => {
                    let (done, paused) = {
                        let mut st = shared.lock();
                        st.core.handle_packet(packet);
                        shared.dispatch(&mut st, &mut serve);
                        (st.core.recv_done(), st.core.read_paused())
                    };
                    shared.serve(std::mem::take(&mut serve));
                    if done {
                        shared.pump().await;
                        break 'read String::new();
                    }
                    handled += 1;
                    if handled < READ_BATCH && !paused {
                        next = reader.recv().now_or_never();
                    }
                }
            }
        }
        shared.pump().await;
    };
    // Answers to the frames before the end still go out (the peer may have
    // closed only its sending direction).
    shared.pump().await;
    {
        let mut st = shared.lock();
        st.core.handle_end(&reason);
        shared.dispatch(&mut st, &mut serve);
    }
    shared.recv_done.cancel();
    shared.changed.notify_waiters();
}
