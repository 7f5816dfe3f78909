//! The client: many concurrent pipeline calls over one broker connection.
//!
//! This is ReasonChip's Multiplexor + Api in one type. Calls are told apart
//! by cookie (a fresh UUID v4 each). A reader task routes every RESULT and
//! EVENT to the call that waits for it; a writer task coalesces outgoing
//! packets. When the connection drops, every pending call is answered
//! BROKER_WENT_AWAY.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let client = plexwire::client::Client::connect("tcp://127.0.0.1:51500").await?;
//! let sum: i64 = client.run("add", &serde_json::json!({"a": 2, "b": 40})).await?;
//! assert_eq!(sum, 42);
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::codec::{Codec, CodecKind};
use crate::conn;
use crate::error::{Error, RunError};
use crate::protocol::{Packet, PacketType, Payload, ResultCode, Role};
use crate::transport::{AnyTransport, ClientTransport, Connection, Endpoint, FrameReceiver};

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Codec on native connections.
    pub codec: CodecKind,
    /// Talk to a ReasonChip 0.0.6 broker (no HELLO, JSON; no events).
    pub legacy: bool,
    /// Shared-secret token sent in HELLO.
    pub token: Option<String>,
    /// Packets queued for the broker before callers wait.
    pub send_queue: usize,
    /// Events buffered per call; further events are dropped (and counted) until the caller reads.
    pub event_backlog: usize,
    /// Timeout for calls that do not give their own; `None` waits forever.
    pub default_timeout: Option<Duration>,
    /// How long to wait for the broker's HELLO.
    pub handshake_timeout: Duration,
    /// PING the broker after this long without hearing from it (native only).
    pub ping_interval: Duration,
    /// Declare the broker gone (every pending call: BROKER_WENT_AWAY) after this long without hearing from it.
    pub ping_timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            codec: CodecKind::Json,
            legacy: false,
            token: None,
            send_queue: 4096,
            event_backlog: 1024,
            default_timeout: None,
            handshake_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(10),
            ping_timeout: Duration::from_secs(30),
        }
    }
}

/// Per-call options.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Give up (and cancel the run) after this long.
    pub timeout: Option<Duration>,
}

struct Slot {
    events: mpsc::Sender<Payload>,
    result: oneshot::Sender<Packet>,
}

struct Inner {
    out: mpsc::Sender<Packet>,
    pending: Mutex<Pending>,
    config: ClientConfig,
    peer: String,
    dropped_events: AtomicU64,
    closed: AtomicBool,
}

#[derive(Default)]
struct Pending {
    slots: HashMap<Uuid, Slot>,
    closed: bool,
}

impl Inner {
    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn forget(&self, cookie: &Uuid) -> bool {
        self.pending().slots.remove(cookie).is_some()
    }

    fn send_cancel(&self, cookie: Uuid) {
        if self.out.try_send(Packet::cancel(cookie)).is_err() {
            let out = self.out.clone();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = out.send(Packet::cancel(cookie)).await;
                });
            }
        }
    }
}

/// A connection to a broker's client endpoint. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("broker", &self.inner.peer)
            .field("pending", &self.pending())
            .finish()
    }
}

impl Client {
    /// Connects to the broker's client endpoint `url` with default settings.
    pub async fn connect(url: &str) -> Result<Client, Error> {
        Client::connect_with(
            &AnyTransport,
            &Endpoint::parse(url)?,
            ClientConfig::default(),
        )
        .await
    }

    /// Connects to the first of `urls` that answers (failover), waiting up to
    /// `wait` for one to come up (Conplyent's `connect(timeout)`); zero tries each once.
    pub async fn connect_any(
        urls: &[String],
        config: ClientConfig,
        wait: Duration,
    ) -> Result<Client, Error> {
        let (conn, _) = crate::reconnect::connect_any_url(urls, wait).await?;
        Client::from_connection(conn, config).await
    }

    /// Connects over any transport.
    pub async fn connect_with<T: ClientTransport + ?Sized>(
        transport: &T,
        endpoint: &Endpoint,
        config: ClientConfig,
    ) -> Result<Client, Error> {
        let conn = transport.connect(endpoint).await?;
        Client::from_connection(conn, config).await
    }

    /// Uses an established connection.
    pub async fn from_connection(conn: Connection, config: ClientConfig) -> Result<Client, Error> {
        let opened = conn::open(
            conn,
            Role::Client,
            config.codec,
            config.legacy,
            config.token.clone(),
            config.handshake_timeout,
        )
        .await?;
        let conn::Opened {
            tx,
            rx,
            codec,
            peer,
        } = opened;
        // The writer ends when the last sender (held by `Inner`) is dropped.
        let (out, _writer) = conn::spawn_writer(
            tx,
            codec,
            config.send_queue,
            config.legacy,
            CancellationToken::new(),
        );
        let inner = Arc::new(Inner {
            out,
            pending: Mutex::new(Pending::default()),
            config,
            peer,
            dropped_events: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        });
        let liveness = (!inner.config.legacy)
            .then_some((inner.config.ping_interval, inner.config.ping_timeout));
        tokio::spawn(read_loop(Arc::downgrade(&inner), rx, codec, liveness));
        Ok(Client { inner })
    }

    /// Runs `pipeline` with `variables` and waits for its result, deserialized as `O`.
    pub async fn run<I: Serialize + ?Sized, O: DeserializeOwned>(
        &self,
        pipeline: &str,
        variables: &I,
    ) -> Result<O, RunError> {
        self.run_with(pipeline, variables, RunOptions::default())
            .await
    }

    /// [`Client::run`] with options (a timeout).
    pub async fn run_with<I: Serialize + ?Sized, O: DeserializeOwned>(
        &self,
        pipeline: &str,
        variables: &I,
        options: RunOptions,
    ) -> Result<O, RunError> {
        self.start_with(pipeline, variables, options)
            .await?
            .finish()
            .await
    }

    /// Starts `pipeline` and returns a handle that yields its events, then its
    /// result. Dropping the handle before the result cancels the run.
    pub async fn start<I: Serialize + ?Sized>(
        &self,
        pipeline: &str,
        variables: &I,
    ) -> Result<RunHandle, RunError> {
        self.start_with(pipeline, variables, RunOptions::default())
            .await
    }

    /// [`Client::start`] with options.
    pub async fn start_with<I: Serialize + ?Sized>(
        &self,
        pipeline: &str,
        variables: &I,
        options: RunOptions,
    ) -> Result<RunHandle, RunError> {
        let payload = Payload::to_json(variables).map_err(|source| RunError::Serde {
            pipeline: pipeline.into(),
            what: "serializing the variables",
            source,
        })?;
        self.start_raw(pipeline, Some(payload), options).await
    }

    /// Starts a run with an already-encoded payload.
    pub async fn start_raw(
        &self,
        pipeline: &str,
        variables: Option<Payload>,
        options: RunOptions,
    ) -> Result<RunHandle, RunError> {
        let cookie = Uuid::new_v4();
        let (events_tx, events) = mpsc::channel(self.inner.config.event_backlog.max(1));
        let (result_tx, result) = oneshot::channel();
        {
            let mut pending = self.inner.pending();
            if pending.closed {
                return Err(RunError::BrokerWentAway {
                    pipeline: pipeline.into(),
                });
            }
            pending.slots.insert(
                cookie,
                Slot {
                    events: events_tx,
                    result: result_tx,
                },
            );
        }
        let timeout = options.timeout.or(self.inner.config.default_timeout);
        let handle = RunHandle {
            cookie,
            pipeline: pipeline.into(),
            events,
            result,
            inner: self.inner.clone(),
            finished: false,
            timeout,
            deadline: timeout.map(|t| Instant::now() + t),
        };
        if self
            .inner
            .out
            .send(Packet::run(cookie, pipeline, variables, false))
            .await
            .is_err()
        {
            self.inner.forget(&cookie);
            return Err(RunError::BrokerWentAway {
                pipeline: pipeline.into(),
            });
        }
        Ok(handle)
    }

    /// Starts a detached run: it goes on without this client, and no result
    /// comes back. Returns its cookie. (A refusal, e.g. NO_CAPACITY, is logged.)
    pub async fn run_detached<I: Serialize + ?Sized>(
        &self,
        pipeline: &str,
        variables: &I,
    ) -> Result<Uuid, RunError> {
        let payload = Payload::to_json(variables).map_err(|source| RunError::Serde {
            pipeline: pipeline.into(),
            what: "serializing the variables",
            source,
        })?;
        let cookie = Uuid::new_v4();
        self.inner
            .out
            .send(Packet::run(cookie, pipeline, Some(payload), true))
            .await
            .map_err(|_| RunError::BrokerWentAway {
                pipeline: pipeline.into(),
            })?;
        Ok(cookie)
    }

    /// Calls waiting for a result.
    pub fn pending(&self) -> usize {
        self.inner.pending().slots.len()
    }

    /// Events dropped because a caller did not read them fast enough.
    pub fn dropped_events(&self) -> u64 {
        self.inner.dropped_events.load(Ordering::Relaxed)
    }

    /// Whether the connection to the broker is gone.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Relaxed)
    }
}

/// One run in progress: its events, then its result.
#[must_use = "dropping a RunHandle cancels the run"]
pub struct RunHandle {
    cookie: Uuid,
    pipeline: String,
    events: mpsc::Receiver<Payload>,
    result: oneshot::Receiver<Packet>,
    inner: Arc<Inner>,
    finished: bool,
    timeout: Option<Duration>,
    deadline: Option<Instant>,
}

impl fmt::Debug for RunHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunHandle")
            .field("cookie", &self.cookie)
            .field("pipeline", &self.pipeline)
            .finish()
    }
}

impl RunHandle {
    /// The run's cookie.
    pub fn cookie(&self) -> Uuid {
        self.cookie
    }

    /// The next event; `None` once the run has ended (call [`RunHandle::finish`]
    /// for the result) or its timeout has passed.
    ///
    /// Cancel safe.
    pub async fn next_event(&mut self) -> Option<Payload> {
        match self.deadline {
            Some(d) => tokio::time::timeout_at(d, self.events.recv())
                .await
                .ok()
                .flatten(),
            None => self.events.recv().await,
        }
    }

    /// Asks the broker to cancel the run; its result (CANCELLED, or whatever
    /// it finished with first) still arrives through [`RunHandle::finish`].
    pub async fn cancel(&self) {
        let _ = self.inner.out.send(Packet::cancel(self.cookie)).await;
    }

    /// Waits for the result and deserializes it as `O` (events not yet read are discarded).
    pub async fn finish<O: DeserializeOwned>(self) -> Result<O, RunError> {
        let pipeline = self.pipeline.clone();
        let payload = self.finish_raw().await?;
        let text = payload.as_ref().map_or("null", Payload::as_str);
        serde_json::from_str(text).map_err(|source| RunError::Serde {
            pipeline,
            what: "deserializing the result",
            source,
        })
    }

    /// Waits for the result as payload text.
    pub async fn finish_raw(mut self) -> Result<Option<Payload>, RunError> {
        let rx = &mut self.result;
        let packet = match self.deadline {
            Some(d) => match tokio::time::timeout_at(d, rx).await {
                Ok(r) => r,
                Err(_) => {
                    self.finished = true;
                    if self.inner.forget(&self.cookie) {
                        self.inner.send_cancel(self.cookie);
                    }
                    return Err(RunError::Timeout {
                        pipeline: self.pipeline.clone(),
                        after: self.timeout.unwrap_or_default(),
                    });
                }
            },
            None => rx.await,
        };
        self.finished = true;
        let Ok(packet) = packet else {
            return Err(RunError::BrokerWentAway {
                pipeline: self.pipeline.clone(),
            });
        };
        match packet.rc {
            Some(ResultCode::Ok) | None => Ok(packet.result),
            Some(ResultCode::BrokerWentAway) => Err(RunError::BrokerWentAway {
                pipeline: self.pipeline.clone(),
            }),
            Some(rc) => Err(RunError::Failed {
                pipeline: self.pipeline.clone(),
                rc,
                error: packet.error.unwrap_or_default(),
                stacktrace: packet.stacktrace.unwrap_or_default(),
            }),
        }
    }
}

impl Drop for RunHandle {
    fn drop(&mut self) {
        if !self.finished && self.inner.forget(&self.cookie) {
            self.inner.send_cancel(self.cookie);
        }
    }
}

async fn read_loop(
    inner: std::sync::Weak<Inner>,
    mut rx: FrameReceiver,
    codec: crate::codec::AnyCodec,
    liveness: Option<(Duration, Duration)>,
) {
    let (interval, timeout) = liveness.unwrap_or((Duration::from_secs(3600), Duration::MAX));
    let mut last_seen = Instant::now();
    let mut tick = tokio::time::interval(interval.max(Duration::from_millis(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let frame = tokio::select! {
            _ = tick.tick(), if liveness.is_some() => {
                let silent = last_seen.elapsed();
                let Some(inner) = inner.upgrade() else { return };
                if silent > timeout {
                    tracing::warn!(broker = %inner.peer, ?silent, "the broker is silent past the ping timeout; giving it up");
                    break;
                }
                if silent >= interval {
                    let _ = inner.out.try_send(Packet::new(PacketType::Ping));
                }
                continue;
            }
            f = rx.recv_frame() => f,
        };
        last_seen = Instant::now();
        let frame = match frame {
            Some(Ok(f)) => f,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "connection to the broker failed");
                break;
            }
            None => break,
        };
        let Some(inner) = inner.upgrade() else { return };
        let packet = match codec.decode(&frame) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(broker = %inner.peer, error = %e, "undecodable packet from the broker; ignored");
                continue;
            }
        };
        match packet.packet_type {
            PacketType::Result => {
                let slot = packet.cookie.and_then(|c| inner.pending().slots.remove(&c));
                match slot {
                    Some(slot) => {
                        let _ = slot.result.send(packet);
                    }
                    None if packet.rc != Some(ResultCode::Ok) => {
                        tracing::warn!(cookie = ?packet.cookie, rc = ?packet.rc, error = ?packet.error, "the broker answered a run nobody waits for (a refused detached run?)");
                    }
                    None => {}
                }
            }
            PacketType::Event => {
                let pending = inner.pending();
                if let (Some(slot), Some(data)) = (
                    packet.cookie.and_then(|c| pending.slots.get(&c)),
                    packet.result,
                ) {
                    if slot.events.try_send(data).is_err() {
                        inner.dropped_events.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            PacketType::Ping => {
                let _ = inner.out.try_send(Packet::new(PacketType::Pong));
            }
            _ => {}
        }
    }
    let Some(inner) = inner.upgrade() else { return };
    inner.closed.store(true, Ordering::Relaxed);
    let slots = {
        let mut pending = inner.pending();
        pending.closed = true;
        std::mem::take(&mut pending.slots)
    };
    if !slots.is_empty() {
        tracing::warn!(broker = %inner.peer, pending = slots.len(), "the broker went away; failing pending calls");
    }
    for (cookie, slot) in slots {
        let _ = slot.result.send(Packet::error(
            Some(cookie),
            ResultCode::BrokerWentAway,
            "the connection to the broker was lost",
        ));
    }
}
