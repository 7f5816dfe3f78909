//! The broker: routes runs from clients to workers.
//!
//! [`Switchboard`] holds the routing rules without any I/O; [`Broker`] is the
//! async shell around it. Each accepted connection gets one reader task and
//! one writer task. Readers decode packets and hand them to the switchboard
//! under a mutex that is never held across an `.await`; the switchboard's
//! output goes to each connection's bounded send queue without waiting: a
//! connection whose queue is full is a consumer that stopped reading, and it
//! is disconnected rather than allowed to stall everyone else.
//!
//! Memory is bounded in bytes as well as in counts: each send queue
//! (`send_queue_bytes`), the wait queue broker-wide and per client
//! (`queue_bytes`, `queue_bytes_per_client`), and the bytes all connections
//! hold in unfinished frames (`partial_frame_bytes`). Each connection's
//! clocks (`watchdog.rs`) cut a frame that stops short (`frame_timeout`), a
//! silent native peer (`ping_timeout`) and an idle legacy one
//! (`legacy_idle_timeout`); a connection that sends no first frame is cut
//! after `handshake_timeout`.

mod switchboard;
mod watchdog;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use switchboard::{
    Orphan, PeerId, PeerLink, Side, Switchboard, SwitchboardConfig, SwitchboardStats, Transmit,
    DEFAULT_QUEUE_BYTES, DEFAULT_QUEUE_BYTES_PER_CLIENT, DEFAULT_STALL_TIMEOUT,
};

use crate::codec::Codec;
use crate::conn;
use crate::link::{ReadError, Reader, TrySendError, WriterConfig};
use crate::protocol::{Packet, PacketType, Payload, ResultCode, Role};
use crate::transport::PartialBudget;
use crate::transport::{self, Connection, Endpoint, ServerTransport, TransportError};
use watchdog::{Verdict, Watchdog, WatchdogConfig};

/// A pipeline name the broker answers itself, with its [`BrokerStats`] as JSON.
pub const STATS_PIPELINE: &str = "$stats";

/// The pipeline a client runs to list the detached runs whose client has
/// gone (`[{"cookie", "pipeline", "running"}]`, answered by the broker). A
/// CANCEL for one of those cookies, from any client, cancels it and is
/// answered to that client. (With a client token, only clients holding it
/// reach the broker at all.)
pub const DETACHED_PIPELINE: &str = "$detached";

/// ReasonChip's default client port.
pub const DEFAULT_CLIENT_PORT: u16 = 51500;
/// ReasonChip's default worker port.
pub const DEFAULT_WORKER_PORT: u16 = 51510;

/// Broker settings.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Runs that may wait for a free slot; 0 = ReasonChip's immediate NO_CAPACITY.
    pub queue_limit: usize,
    /// Bytes of RUNs that may wait for a free slot, all clients together
    /// (default [`DEFAULT_QUEUE_BYTES`], 256 MiB). A run that would pass it
    /// is answered NO_CAPACITY, naming this setting.
    pub queue_bytes: usize,
    /// Bytes of RUNs one client connection may have waiting for a free slot
    /// (default [`DEFAULT_QUEUE_BYTES_PER_CLIENT`], 64 MiB), so one peer
    /// cannot spend `queue_bytes` alone. Answered like `queue_bytes`.
    pub queue_bytes_per_client: usize,
    /// A client connection's share of the wait queue: past it, the client
    /// may queue only while this many places stay free for the others, so
    /// one client cannot fill the queue and starve them; a run refused for
    /// it is answered NO_CAPACITY naming it. `None` (the default): a quarter
    /// of `queue_limit` (none for a queue of fewer than 4 runs); `Some(0)`:
    /// no share rule.
    pub queue_per_client: Option<usize>,
    /// The largest capacity one worker may register.
    pub max_capacity: u32,
    /// Runs one client may have waiting for results at once.
    pub max_runs_per_client: usize,
    /// Packets queued for one connection before it counts as not reading and is dropped.
    pub send_queue: usize,
    /// Bytes queued for one connection before it counts as not reading and is dropped.
    pub send_queue_bytes: usize,
    /// How long a new connection may take to send its first packet (its
    /// HELLO, or a legacy peer's first packet); then it is closed.
    pub handshake_timeout: Duration,
    /// How long a frame may stay unfinished once its first bytes have
    /// arrived, on every connection, legacy ones included (default 30 s):
    /// a peer that announces 15 MiB and stops short is cut, not kept
    /// holding the memory. (On byte-stream transports: TCP, UNIX, TLS, the
    /// HTTP upgrade; message transports buffer partial messages in their
    /// own layer.)
    pub frame_timeout: Duration,
    /// Bytes all connections together may hold in unfinished frames
    /// (default 256 MiB); the connection whose bytes would pass it is closed.
    pub partial_frame_bytes: usize,
    /// A legacy (ReasonChip) peer cannot be pinged: one that holds nothing
    /// (a client with no run in flight, a worker that has not registered)
    /// and has sent nothing for this long is closed, so idle sockets cannot
    /// use up `max_connections` (default 5 minutes; `None` = never). A
    /// registered legacy worker is never closed for being idle.
    pub legacy_idle_timeout: Option<Duration>,
    /// The deadline of a run whose RUN carries none (`timeout_ms`; legacy
    /// clients never send one). `None` (the default): no deadline. Past its
    /// deadline a run is answered TIMEOUT, queued or running (then it is
    /// cancelled at its worker).
    pub default_timeout: Option<Duration>,
    /// The longest a run may wait in the queue for a slot, whatever its
    /// deadline; past it, NO_CAPACITY. `None` (the default): no limit.
    pub max_queue_wait: Option<Duration>,
    /// How long a run may wait for its client to take events (its event
    /// window used up, no CREDIT) before it is cancelled at its worker and
    /// answered CANCELLED (default [`DEFAULT_STALL_TIMEOUT`], 5 minutes;
    /// `None`: no limit), so a client that stopped reading cannot hold a
    /// worker slot for ever.
    pub stall_timeout: Option<Duration>,
    /// Undecodable frames tolerated from one connection before it is closed.
    pub max_bad_frames: u32,
    /// A native peer that has sent nothing for this long is sent a PING.
    pub ping_interval: Duration,
    /// A native peer that has sent nothing for this long is declared dead:
    /// a worker's runs are answered WORKER_WENT_AWAY, a client's cancelled.
    /// (Legacy ReasonChip peers cannot answer PING and are never timed out.)
    pub ping_timeout: Duration,
    /// Token native clients must present in HELLO; `None` = no check.
    pub client_token: Option<String>,
    /// Token native workers must present in HELLO; `None` = no check.
    pub worker_token: Option<String>,
}

/// Per-listener choices.
#[derive(Debug, Clone)]
pub struct ListenerOptions {
    /// Admit legacy (HELLO-less, ReasonChip) peers. They cannot present a
    /// token, so on a listener that allows them the token check applies to
    /// native peers only.
    pub allow_legacy: bool,
    /// Connections this listener holds at once; further ones wait in the
    /// kernel's backlog until one closes.
    pub max_connections: usize,
}

impl Default for ListenerOptions {
    fn default() -> Self {
        ListenerOptions {
            allow_legacy: true,
            max_connections: 10_000,
        }
    }
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            queue_limit: 1024,
            queue_bytes: DEFAULT_QUEUE_BYTES,
            queue_bytes_per_client: DEFAULT_QUEUE_BYTES_PER_CLIENT,
            queue_per_client: None,
            max_capacity: 65_536,
            max_runs_per_client: 100_000,
            send_queue: 8192,
            send_queue_bytes: 64 << 20,
            handshake_timeout: Duration::from_secs(10),
            frame_timeout: Duration::from_secs(30),
            partial_frame_bytes: 256 << 20,
            legacy_idle_timeout: Some(Duration::from_secs(300)),
            default_timeout: None,
            max_queue_wait: None,
            stall_timeout: Some(DEFAULT_STALL_TIMEOUT),
            max_bad_frames: 16,
            ping_interval: Duration::from_secs(10),
            ping_timeout: Duration::from_secs(30),
            client_token: None,
            worker_token: None,
        }
    }
}

/// Live broker counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrokerStats {
    /// The routing state's counters.
    pub switchboard: SwitchboardStats,
    /// Connections accepted since start.
    pub accepted: u64,
    /// Connections that failed their opening exchange.
    pub handshake_failures: u64,
    /// Frames that could not be decoded.
    pub bad_frames: u64,
    /// Connections dropped because they stopped reading.
    pub slow_consumers: u64,
    /// Connections refused for a missing or wrong token, or for being legacy where not allowed.
    pub unauthorized: u64,
    /// Native peers declared dead after `ping_timeout` of silence.
    pub timed_out: u64,
    /// Connections cut because a frame stayed unfinished past
    /// `frame_timeout`, or the unfinished frames of all connections would
    /// pass `partial_frame_bytes`.
    pub stalled_frames: u64,
    /// Legacy connections closed after `legacy_idle_timeout` holding nothing.
    pub idle_closed: u64,
    /// Bytes all connections hold in unfinished frames now.
    pub partial_frame_bytes: usize,
}

/// The broker. Cheap to clone; all clones are the same broker.
#[derive(Debug, Clone)]
pub struct Broker {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    config: BrokerConfig,
    core: Mutex<Core>,
    next_peer: AtomicU64,
    accepted: AtomicU64,
    handshake_failures: AtomicU64,
    bad_frames: AtomicU64,
    slow_consumers: AtomicU64,
    unauthorized: AtomicU64,
    timed_out: AtomicU64,
    stalled_frames: AtomicU64,
    idle_closed: AtomicU64,
    /// Bytes in unfinished frames, all connections together.
    partial: Arc<PartialBudget>,
    /// Aggregates the WARN lines of refused connections.
    refusals: Mutex<RefusalLog>,
    /// Wakes the timer task: an earlier deadline, or the broker is gone.
    timer_wake: Arc<tokio::sync::Notify>,
    /// The timer task runs (started with the first listener).
    timer_started: std::sync::atomic::AtomicBool,
    /// Cancelled to stop accepting.
    accepting: CancellationToken,
    /// Cancelled to drop every connection.
    connections: CancellationToken,
    tracker: TaskTracker,
}

#[derive(Debug)]
struct Core {
    switchboard: Switchboard,
    peers: HashMap<PeerId, PeerSlot>,
    /// When the timer task will next call the switchboard's
    /// `handle_timeout` (`None`: it waits to be told).
    timer_at: Option<std::time::Instant>,
}

#[derive(Debug)]
struct PeerSlot {
    /// Bounded in packets and in bytes; PING/PONG on its control lane.
    out: conn::Outbox,
    kill: CancellationToken,
}

impl PeerSlot {
    /// Queues `packet` without waiting. Returns whether it was refused
    /// because the queue is full in bytes (rather than in packets, or closed).
    fn offer(&self, packet: Packet) -> Result<(), bool> {
        if matches!(packet.packet_type, PacketType::Ping | PacketType::Pong) {
            // Liveness must get through even when data is backed up.
            self.out.try_send_control(packet.packet_type);
            return Ok(());
        }
        self.out.try_send(packet).map_err(|e| match e {
            TrySendError::Full { over_budget, .. } => over_budget,
            TrySendError::Closed(_) => false,
        })
    }
}

impl Core {
    /// Sends everything the switchboard has for its peers, without waiting.
    /// A peer whose queue is full (in packets or in bytes) has stopped
    /// reading: it is disconnected rather than buffered for.
    /// Wakes the timer task if the switchboard now has a timer earlier than
    /// the one it sleeps for.
    fn rearm(&mut self, wake: &tokio::sync::Notify) {
        if let Some(t) = self.switchboard.poll_timeout() {
            if self.timer_at.is_none_or(|at| t < at) {
                self.timer_at = Some(t);
                wake.notify_one();
            }
        }
    }

    fn flush(&mut self, slow: &AtomicU64) {
        while let Some(t) = self.switchboard.poll_transmit() {
            let Some(slot) = self.peers.get(&t.to) else {
                continue;
            };
            if let Err(over_budget) = slot.offer(t.packet) {
                if !slot.kill.is_cancelled() && !slot.out.is_closed() {
                    tracing::warn!(
                        peer = t.to,
                        over_budget,
                        "send queue full: the peer stopped reading; disconnecting it"
                    );
                    slow.fetch_add(1, Ordering::Relaxed);
                    slot.kill.cancel();
                }
            }
        }
    }
}

impl Broker {
    /// A broker with no listeners yet.
    pub fn new(config: BrokerConfig) -> Broker {
        let switchboard = Switchboard::new(SwitchboardConfig {
            queue_limit: config.queue_limit,
            max_capacity: config.max_capacity,
            max_runs_per_client: config.max_runs_per_client,
            queue_bytes: config.queue_bytes,
            queue_bytes_per_client: config.queue_bytes_per_client,
            queue_per_client: config.queue_per_client,
            default_timeout: config.default_timeout,
            max_queue_wait: config.max_queue_wait,
            stall_timeout: config.stall_timeout,
        });
        let partial = PartialBudget::new(config.partial_frame_bytes);
        Broker {
            shared: Arc::new(Shared {
                config,
                core: Mutex::new(Core {
                    switchboard,
                    peers: HashMap::new(),
                    timer_at: None,
                }),
                timer_wake: Arc::new(tokio::sync::Notify::new()),
                timer_started: std::sync::atomic::AtomicBool::new(false),
                next_peer: AtomicU64::new(1),
                accepted: AtomicU64::new(0),
                handshake_failures: AtomicU64::new(0),
                bad_frames: AtomicU64::new(0),
                slow_consumers: AtomicU64::new(0),
                unauthorized: AtomicU64::new(0),
                timed_out: AtomicU64::new(0),
                stalled_frames: AtomicU64::new(0),
                idle_closed: AtomicU64::new(0),
                partial,
                refusals: Mutex::new(RefusalLog::default()),
                accepting: CancellationToken::new(),
                connections: CancellationToken::new(),
                tracker: TaskTracker::new(),
            }),
        }
    }

    /// Binds `url` and accepts clients on it. Returns the bound endpoint
    /// (with the real port if port 0 was asked for).
    pub async fn listen_clients(&self, url: &str) -> Result<Endpoint, TransportError> {
        let l = transport::listen(url).await?;
        Ok(self.serve(l, Side::Client))
    }

    /// Binds `url` and accepts workers on it.
    pub async fn listen_workers(&self, url: &str) -> Result<Endpoint, TransportError> {
        let l = transport::listen(url).await?;
        Ok(self.serve(l, Side::Worker))
    }

    /// Accepts connections of `side` from any bound listener (any transport).
    pub fn serve<L: ServerTransport + 'static>(&self, listener: L, side: Side) -> Endpoint {
        self.serve_with(listener, side, ListenerOptions::default())
    }

    /// Binds `url` and accepts connections of `side` with `options`.
    pub async fn listen(
        &self,
        url: &str,
        side: Side,
        options: ListenerOptions,
    ) -> Result<Endpoint, TransportError> {
        let l = transport::listen(url).await?;
        Ok(self.serve_with(l, side, options))
    }

    /// [`Broker::serve`] with per-listener options.
    pub fn serve_with<L: ServerTransport + 'static>(
        &self,
        mut listener: L,
        side: Side,
        options: ListenerOptions,
    ) -> Endpoint {
        let endpoint = listener.local_endpoint().clone();
        tracing::info!(%endpoint, ?side, "listening");
        if !self.shared.timer_started.swap(true, Ordering::Relaxed) {
            tokio::spawn(run_timers(
                Arc::downgrade(&self.shared),
                self.shared.timer_wake.clone(),
            ));
        }
        let shared = self.shared.clone();
        self.shared.tracker.spawn(async move {
            let mut backoff = Duration::from_millis(5);
            // A permit per connection: at the limit, accepting pauses and new
            // connections wait in the kernel's backlog (mini-redis's pattern).
            let limit = Arc::new(tokio::sync::Semaphore::new(options.max_connections.max(1)));
            loop {
                let permit = tokio::select! {
                    _ = shared.accepting.cancelled() => break,
                    p = limit.clone().acquire_owned() => p.expect("the semaphore is never closed"),
                };
                let conn = tokio::select! {
                    _ = shared.accepting.cancelled() => break,
                    c = listener.accept() => c,
                };
                match conn {
                    Ok(conn) => {
                        backoff = Duration::from_millis(5);
                        shared.accepted.fetch_add(1, Ordering::Relaxed);
                        let (s, o) = (shared.clone(), options.clone());
                        shared.tracker.spawn(async move {
                            let _permit = permit;
                            s.serve_connection(conn, side, o).await
                        });
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: wait, then go on.
                        tracing::warn!(error = %e, "accept failed; retrying in {backoff:?}");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                    }
                }
            }
        });
        endpoint
    }

    /// Live counters.
    pub fn stats(&self) -> BrokerStats {
        self.shared.stats()
    }

    /// Waits until registered workers offer at least `capacity` slots in
    /// total, or `timeout` passes. Returns whether the capacity is there.
    /// Handy at start-up, so the first runs do not meet an empty broker.
    pub async fn wait_for_capacity(&self, capacity: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.shared.lock().switchboard.stats().total_capacity >= capacity {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Stops gracefully: stops accepting, tells native workers SHUTDOWN,
    /// answers queued runs, lets running runs finish for up to `grace`,
    /// answers whatever is still open with BROKER_WENT_AWAY, then closes every
    /// connection (after their queued packets are written).
    pub async fn shutdown(&self, grace: Duration) {
        let s = &self.shared;
        s.accepting.cancel();
        {
            let mut core = s.lock();
            core.switchboard.begin_shutdown();
            core.flush(&s.slow_consumers);
        }
        let deadline = Instant::now() + grace;
        while s.lock().switchboard.stats().running > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        {
            let mut core = s.lock();
            core.switchboard.abort_all(
                ResultCode::BrokerWentAway,
                "the broker shut down before the run finished",
            );
            core.flush(&s.slow_consumers);
            // Dropping the send queues lets each writer send what is queued,
            // then close; peers see the close and hang up.
            core.peers.clear();
        }
        s.tracker.close();
        if tokio::time::timeout(Duration::from_secs(2), s.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("peers still connected 2 s after shutdown; closing them");
            s.connections.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(2), s.tracker.wait()).await;
        }
    }
}

impl Shared {
    fn stats(&self) -> BrokerStats {
        BrokerStats {
            switchboard: self.lock().switchboard.stats(),
            accepted: self.accepted.load(Ordering::Relaxed),
            handshake_failures: self.handshake_failures.load(Ordering::Relaxed),
            bad_frames: self.bad_frames.load(Ordering::Relaxed),
            slow_consumers: self.slow_consumers.load(Ordering::Relaxed),
            unauthorized: self.unauthorized.load(Ordering::Relaxed),
            timed_out: self.timed_out.load(Ordering::Relaxed),
            stalled_frames: self.stalled_frames.load(Ordering::Relaxed),
            idle_closed: self.idle_closed.load(Ordering::Relaxed),
            partial_frame_bytes: self.partial.used(),
        }
    }

    /// [`DETACHED_PIPELINE`]'s answer.
    fn orphans_json(&self) -> serde_json::Value {
        let orphans = self.lock().switchboard.orphans();
        orphans
            .into_iter()
            .map(|o| {
                serde_json::json!({
                    "cookie": o.cookie.to_string(),
                    "pipeline": o.pipeline,
                    "running": o.running,
                })
            })
            .collect()
    }

    fn stats_json(&self) -> serde_json::Value {
        let s = self.stats();
        let sb = &s.switchboard;
        serde_json::json!({
            "clients": sb.clients,
            "workers": sb.workers,
            "total_capacity": sb.total_capacity,
            "free_capacity": sb.free_capacity,
            "queued": sb.queued,
            "queued_bytes": sb.queued_bytes,
            "running": sb.running,
            "routes": sb.routes,
            "completed": sb.completed,
            "failed": sb.failed.iter().map(|(rc, n)| (rc.as_str().to_owned(), serde_json::Value::from(*n))).collect::<serde_json::Map<_, _>>(),
            "accepted": s.accepted,
            "handshake_failures": s.handshake_failures,
            "bad_frames": s.bad_frames,
            "slow_consumers": s.slow_consumers,
            "unauthorized": s.unauthorized,
            "timed_out": s.timed_out,
            "stalled_frames": s.stalled_frames,
            "idle_closed": s.idle_closed,
            "partial_frame_bytes": s.partial_frame_bytes,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Core> {
        // A panic while holding the lock is a bug; the state is still consistent
        // enough to serve stats and shut down, so recover rather than cascade.
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Why a connection may not join, if it may not: the refusal to send it.
    fn admit(
        &self,
        first: &crate::codec::FirstFrame,
        side: Side,
        options: &ListenerOptions,
    ) -> Option<Packet> {
        let listener = if side == Side::Client {
            "client"
        } else {
            "worker"
        };
        if !first.is_native() {
            return (!options.allow_legacy).then(|| {
                Packet::error(None, ResultCode::BadPacket, format!("this {listener} listener admits native plexwire peers only: open with HELLO"))
            });
        }
        let hello = first.packet.hello.as_ref();
        let expected = if side == Side::Client {
            Role::Client
        } else {
            Role::Worker
        };
        if hello.map(|h| h.role) != Some(expected) {
            return Some(Packet::error(
                None,
                ResultCode::BadPacket,
                format!(
                    "this is a {listener} listener: it takes HELLO with role `{listener}` only; a {other} connects to the broker's {other} listener",
                    other = if side == Side::Client { "worker" } else { "client" },
                ),
            ));
        }
        let required = if side == Side::Client {
            &self.config.client_token
        } else {
            &self.config.worker_token
        };
        if let Some(required) = required {
            let given = hello.and_then(|h| h.token.as_deref()).unwrap_or_default();
            if !constant_time_eq(given.as_bytes(), required.as_bytes()) {
                return Some(Packet::error(
                    None,
                    ResultCode::Unauthorized,
                    format!("this {listener} listener needs a valid token (missing or wrong); set the {listener}'s token"),
                ));
            }
        }
        None
    }

    /// Logs a refused connection: the first at once, later ones at most
    /// once per [`REFUSAL_REPORT_INTERVAL`] as a count with the last reason
    /// (churn must not flood the log); every one at DEBUG.
    fn log_refusal(&self, who: &str, why: &str) {
        tracing::debug!(peer = %who, reason = why, "connection refused");
        let line = self
            .refusals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record(tokio::time::Instant::now());
        match line {
            Some(0) => tracing::warn!(peer = %who, reason = why, "connection refused"),
            Some(n) => tracing::warn!(
                peer = %who,
                reason = why,
                suppressed = n,
                "connection refused ({n} more refused in the last {REFUSAL_REPORT_INTERVAL:?}, not logged one by one)"
            ),
            None => {}
        }
    }

    async fn serve_connection(
        self: Arc<Self>,
        conn: Connection,
        side: Side,
        options: ListenerOptions,
    ) {
        let who = conn.peer().to_string();
        let (mut tx, mut rx) = conn.into_frames();
        rx.set_partial_budget(self.partial.clone());
        let first = tokio::select! {
            _ = self.connections.cancelled() => return,
            f = conn::accept(&mut rx, self.config.handshake_timeout, &who) => f,
        };
        let first = match first {
            Ok(f) => f,
            Err(refused) => {
                self.handshake_failures.fetch_add(1, Ordering::Relaxed);
                if matches!(
                    refused.error,
                    crate::error::Error::Transport(TransportError::PartialBudget { .. })
                ) {
                    self.stalled_frames.fetch_add(1, Ordering::Relaxed);
                }
                self.log_refusal(&who, &refused.error.to_string());
                // Say why, where the frame told us how: a BAD_PACKET in the
                // peer's codec (legacy JSON peers read it as ReasonChip's).
                if let Some(codec) = refused.answer_with {
                    let answer = Packet::error(
                        None,
                        ResultCode::BadPacket,
                        format!(
                            "the first frame could not be read ({}); the connection is closed",
                            refused.error
                        ),
                    );
                    if let Ok(f) = codec.encode(&answer) {
                        let _ =
                            tokio::time::timeout(self.config.handshake_timeout, tx.send_frame(f))
                                .await;
                    }
                }
                return;
            }
        };
        let native = first.is_native();
        let codec = first.codec;
        if let Some(refusal) = self.admit(&first, side, &options) {
            if refusal.rc == Some(ResultCode::Unauthorized) || !native {
                self.unauthorized.fetch_add(1, Ordering::Relaxed);
            } else {
                self.handshake_failures.fetch_add(1, Ordering::Relaxed);
            }
            self.log_refusal(&who, refusal.error.as_deref().unwrap_or_default());
            if let Ok(f) = codec.encode(&refusal) {
                let _ = tx.send_frame(f).await;
            }
            return;
        }
        if native {
            let answer = Packet::hello(Role::Broker, codec.kind().as_str(), None);
            // Only the connecting side's first frame carries the binary preamble.
            let Ok(frame) = codec.encode(&answer) else {
                return;
            };
            if tx.send_frame(frame).await.is_err() {
                return;
            }
        }
        let peer = self.next_peer.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(peer, %who, ?side, native, codec = %codec.kind(), "connected");
        let kill = self.connections.child_token();
        let lanes = tx.lane_ends();
        let link = PeerLink {
            native,
            codec: codec.kind(),
            max_frame: tx.max_frame_size(),
        };
        let (out, writer) = conn::spawn_writer(
            tx,
            codec,
            !native,
            WriterConfig {
                queue: self.config.send_queue,
                max_bytes: self.config.send_queue_bytes,
                ..WriterConfig::default()
            },
            kill.clone(),
        );
        let mut rx = Reader::new(
            rx,
            conn::PacketWire {
                codec,
                legacy: !native,
            },
        );
        {
            let mut core = self.lock();
            core.peers.insert(
                peer,
                PeerSlot {
                    out,
                    kill: kill.clone(),
                },
            );
            core.switchboard.handle_connect_with(peer, side, link);
            core.flush(&self.slow_consumers);
        }
        if !native {
            // A legacy peer's first frame is its first real packet: handled
            // like every later one (a RUN `$stats` is the broker's to answer).
            self.deliver(peer, side, lanes.as_ref(), first.packet);
        }
        let mut bad = 0u32;
        let mut clocks = Watchdog::new(
            WatchdogConfig {
                ping_interval: self.config.ping_interval,
                ping_timeout: self.config.ping_timeout,
                frame_timeout: self.config.frame_timeout,
                legacy_idle_timeout: self.config.legacy_idle_timeout,
            },
            native,
            tokio::time::Instant::now(),
        );
        let mut tick = tokio::time::interval(clocks.tick());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let frame = tokio::select! {
                _ = kill.cancelled() => break,
                now = tick.tick() => {
                    let busy = self.lock().switchboard.holds_anything(peer);
                    match clocks.handle_timeout(now, rx.frames().unfinished_bytes(), busy) {
                        None => {}
                        Some(Verdict::Ping) => {
                            if let Some(slot) = self.lock().peers.get(&peer) {
                                let _ = slot.offer(Packet::new(PacketType::Ping));
                            }
                        }
                        Some(Verdict::Close(reason)) => {
                            let counter = match reason {
                                watchdog::Reason::Silent(_) => &self.timed_out,
                                watchdog::Reason::StalledFrame(_) => &self.stalled_frames,
                                watchdog::Reason::Idle(_) => &self.idle_closed,
                            };
                            counter.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(peer, %who, %reason, "closing the connection");
                            break;
                        }
                    }
                    continue;
                }
                f = rx.recv() => f,
            };
            clocks.handle_frame(tokio::time::Instant::now());
            let decoded = match frame {
                None => break,
                Some(Err(ReadError::Transport(TransportError::FrameTooLarge { size, max }))) => {
                    // Say why before closing: a silent close is the one
                    // answer nobody can act on (tarpc#389).
                    self.bad_frames.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(peer, %who, size, max, "frame over the limit; closing");
                    if let Some(slot) = self.lock().peers.get(&peer) {
                        let _ = slot.offer(too_large(size, max));
                    }
                    break;
                }
                Some(Err(ReadError::Transport(e @ TransportError::PartialBudget { .. }))) => {
                    self.stalled_frames.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(peer, %who, error = %e, "closing connection");
                    break;
                }
                Some(Err(ReadError::Transport(e))) => {
                    if !e.is_disconnect() {
                        tracing::warn!(peer, %who, error = %e, "closing connection");
                    }
                    break;
                }
                Some(Err(ReadError::Decode { error, .. })) => Err(error),
                Some(Ok(packet)) => Ok(packet),
            };
            match decoded {
                Ok(packet) => self.deliver(peer, side, lanes.as_ref(), packet),
                Err(error) => {
                    self.bad_frames.fetch_add(1, Ordering::Relaxed);
                    bad += 1;
                    tracing::warn!(peer, %who, %error, "undecodable frame");
                    let core = self.lock();
                    if let Some(slot) = core.peers.get(&peer) {
                        let _ = slot.offer(Packet::error(
                            None,
                            ResultCode::BadPacket,
                            error.to_string(),
                        ));
                    }
                    if bad > self.config.max_bad_frames {
                        tracing::warn!(peer, %who, "too many undecodable frames; closing");
                        drop(core);
                        break;
                    }
                }
            }
        }
        {
            let mut core = self.lock();
            core.peers.remove(&peer);
            core.switchboard.handle_disconnect(peer);
            core.flush(&self.slow_consumers);
        }
        tracing::debug!(peer, %who, "disconnected");
        // The reader's share of the unfinished-frame budget goes now, not
        // when the writer is done.
        drop(rx);
        // The writer sends what is queued, unless the peer stopped reading
        // (then `kill` was cancelled) or the flush stalls past the bound.
        if tokio::time::timeout(self.config.handshake_timeout, writer)
            .await
            .is_err()
        {
            kill.cancel();
        }
    }

    /// Handles one packet from a connected peer: a client's RUN `$stats` or
    /// `$detached` is answered by the broker; everything else goes to the
    /// switchboard.
    fn deliver(
        &self,
        peer: PeerId,
        side: Side,
        lanes: Option<&transport::LaneEnds>,
        packet: Packet,
    ) {
        let own = match packet.pipeline.as_deref() {
            Some(STATS_PIPELINE) => Some(self.stats_json()),
            Some(DETACHED_PIPELINE) => Some(self.orphans_json()),
            _ => None,
        };
        if let Some(value) =
            own.filter(|_| side == Side::Client && packet.packet_type == PacketType::Run)
        {
            let answer = Packet::ok(
                packet.cookie.unwrap_or_default(),
                Payload::to_json(&value).ok(),
            );
            let core = self.lock();
            if let Some(slot) = core.peers.get(&peer) {
                let _ = slot.offer(answer);
            }
            return;
        }
        if side == Side::Worker {
            conn::end_request_lane(lanes, &packet);
        }
        let mut core = self.lock();
        core.switchboard.handle_packet_at(peer, packet, now());
        core.flush(&self.slow_consumers);
        core.rearm(&self.timer_wake);
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The timer task sees the broker gone and ends.
        self.timer_wake.notify_one();
    }
}

/// The shells' clock: tokio's, so that a paused test clock is virtual time
/// for the switchboard too.
fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// Calls the switchboard's `handle_timeout` when its `poll_timeout` comes
/// (deadlines, queue waits), until the broker is gone. Woken early when a
/// packet brings an earlier deadline.
async fn run_timers(shared: std::sync::Weak<Shared>, wake: Arc<tokio::sync::Notify>) {
    loop {
        let at = {
            let Some(s) = shared.upgrade() else { return };
            let mut core = s.lock();
            core.timer_at = core.switchboard.poll_timeout();
            core.timer_at
        };
        let sleep = async {
            match at {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = sleep => {
                let Some(s) = shared.upgrade() else { return };
                let mut core = s.lock();
                core.switchboard.handle_timeout(now());
                core.flush(&s.slow_consumers);
            }
            _ = wake.notified() => {}
        }
    }
}

/// Refused connections after the first are reported at most this often,
/// with a count of those not logged one by one.
pub const REFUSAL_REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// Decides which refused connections get a WARN line: the first at once,
/// then at most one per [`REFUSAL_REPORT_INTERVAL`], carrying the count of
/// those suppressed since the last line. Plain data, time passed in.
#[derive(Debug, Default)]
struct RefusalLog {
    /// When the last line was written.
    last_line: Option<tokio::time::Instant>,
    /// Refusals since then, not logged.
    suppressed: u64,
}

impl RefusalLog {
    /// Counts a refusal at `now`; `Some(suppressed)` if a line is due now,
    /// with the number of refusals not logged since the previous line.
    fn record(&mut self, now: tokio::time::Instant) -> Option<u64> {
        match self.last_line {
            Some(at) if now < at + REFUSAL_REPORT_INTERVAL => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last_line = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// The answer to a frame over the limit, sent before the connection closes.
fn too_large(size: usize, max: usize) -> Packet {
    Packet::error(
        None,
        ResultCode::TooLarge,
        format!("a frame of {size} bytes exceeds this broker's {max}-byte limit; the connection is closed (send smaller packets, or raise `?max_frame_size=N` on both sides)"),
    )
}

/// Compares secrets without an early exit, so timing does not reveal how
/// much of a guess was right. (The length is not secret.)
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
