//! The client: many concurrent pipeline calls over one broker connection.
//!
//! This is ReasonChip's Multiplexor + Api in one type. Calls are told apart
//! by cookie (a fresh UUID v4 each). A reader task routes every RESULT and
//! EVENT to the call that waits for it; a writer task coalesces outgoing
//! packets. When the connection drops, every pending call is answered
//! BROKER_WENT_AWAY. With a [`Reconnect`] policy the client then connects
//! again (failing over between its endpoints, with backoff), and new calls
//! wait for the new connection up to the policy's bound.
//!
//! A client needs no setting to talk to a ReasonChip 0.0.6 broker: one that
//! closes the connection right after the client's HELLO is dialled again in
//! legacy mode (JSON, no events; see [`crate::reconnect`]), and later
//! reconnects to it go straight to legacy mode.
//! [`ClientConfig::fallback_to_legacy`] forbids that.
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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::codec::{AnyCodec, Codec, CodecKind};
use crate::conn::{self, next_liveness, LivenessTimer};
use crate::error::{Error, RunError};
use crate::link::TrySendError;
use crate::link::WriterConfig;
use crate::protocol::{
    LivenessAction, LivenessConfig, Packet, PacketType, Payload, ResultCode, Role,
};
use crate::reconnect::{Backoff, LegacyEndpoints, Mode, OpenSettings};
use crate::transport::{AnyTransport, ClientTransport, Connection, Endpoint, FrameReceiver};

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Codec on native connections.
    pub codec: CodecKind,
    /// Talk to a ReasonChip 0.0.6 broker from the start (no HELLO, JSON; no
    /// events). Not needed to talk to one: see `fallback_to_legacy`.
    pub legacy: bool,
    /// When a broker closes the connection right after our HELLO (what a
    /// ReasonChip 0.0.6 broker does), dial it again at once in legacy mode
    /// (JSON whatever `codec` says, no events), say so once in the log, and
    /// stay legacy for that endpoint. `false` (`--native`) forbids it: that
    /// broker then fails with [`Error::ClosedAfterHello`]. Has no effect on
    /// [`Client::from_connection`], which cannot dial again.
    pub fallback_to_legacy: bool,
    /// Shared-secret token sent in HELLO.
    pub token: Option<String>,
    /// Packets queued for the broker before callers wait.
    pub send_queue: usize,
    /// Events buffered per call, and the call's event window: a plexwire
    /// broker and worker send at most this many events ahead of what the
    /// caller has taken ([`RunHandle::next_event`]), so none is dropped. (A
    /// ReasonChip broker sends no events; an older plexwire worker ignores
    /// the window, and events past the buffer are then dropped and counted.)
    pub event_backlog: usize,
    /// Calls waiting for a result at once; a call beyond it fails at once
    /// with NO_CAPACITY instead of growing the client's tables without bound.
    pub max_pending: usize,
    /// Timeout for calls that do not give their own; `None` waits forever.
    pub default_timeout: Option<Duration>,
    /// How long to wait for the broker's HELLO.
    pub handshake_timeout: Duration,
    /// How long one connect to a broker may take, on every backend
    /// (failing with [`Error::ConnectTimeout`]).
    pub connect_timeout: Duration,
    /// PING the broker after this long without hearing from it (native only).
    pub ping_interval: Duration,
    /// Declare the broker gone (every pending call: BROKER_WENT_AWAY) after this long without hearing from it.
    pub ping_timeout: Duration,
    /// Reconnect when the connection drops (used by [`Client::connect_any`]
    /// and [`Client::connect_with`], which know where to reconnect to).
    pub reconnect: Option<Reconnect>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            codec: CodecKind::Json,
            legacy: false,
            fallback_to_legacy: true,
            token: None,
            send_queue: 4096,
            event_backlog: 1024,
            max_pending: 100_000,
            default_timeout: None,
            handshake_timeout: Duration::from_secs(10),
            connect_timeout: crate::reconnect::DEFAULT_CONNECT_TIMEOUT,
            ping_interval: Duration::from_secs(10),
            ping_timeout: Duration::from_secs(30),
            reconnect: None,
        }
    }
}

/// How a client reconnects.
#[derive(Debug, Clone, Default)]
pub struct Reconnect {
    /// Delays between attempts.
    pub backoff: Backoff,
    /// How long a call made while disconnected waits for the connection to
    /// come back before failing BROKER_WENT_AWAY; zero fails at once.
    pub call_wait: Duration,
}

/// Per-call options.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Give up (and cancel the run) after this long.
    pub timeout: Option<Duration>,
    /// Only the worker of this name may run it (see `WorkerConfig::name`);
    /// if no registered worker has it, the run is answered UNKNOWN_PIPELINE.
    pub worker: Option<String>,
    /// Only a worker with all these labels (`key=value`) may run it; if no
    /// registered worker has them, the run is answered UNKNOWN_PIPELINE.
    pub labels: Vec<String>,
    /// Its place in the broker's wait queue: 0 (the default) to
    /// [`MAX_PRIORITY`](crate::protocol::MAX_PRIORITY), higher first.
    pub priority: u8,
}

struct Slot {
    /// The connection the RUN went out on; its loss answers this call.
    session: u64,
    events: mpsc::Sender<Payload>,
    result: oneshot::Sender<Packet>,
}

/// The connection in use.
struct Session {
    id: u64,
    /// Data in order; PING/PONG on its control lane, ahead of queued data.
    out: conn::Outbox,
    peer: String,
    /// The writer task; it ends (having closed the stream) once every clone
    /// of `out` is dropped.
    writer: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct Pending {
    slots: HashMap<Uuid, Slot>,
    session: Option<Session>,
    /// For good: no reconnect policy, or the client is shutting down.
    closed: bool,
}

struct Inner {
    pending: Mutex<Pending>,
    /// Woken when a session starts or the client closes for good.
    changed: Notify,
    config: ClientConfig,
    dropped_events: AtomicU64,
}

impl Inner {
    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn forget(&self, cookie: &Uuid) -> bool {
        self.pending().slots.remove(cookie).is_some()
    }

    fn sender(&self) -> Option<conn::Outbox> {
        self.pending().session.as_ref().map(|s| s.out.clone())
    }

    /// Queues a PING or PONG ahead of data.
    fn control(&self, kind: PacketType) {
        if let Some(s) = self.pending().session.as_ref() {
            s.out.try_send_control(kind);
        }
    }

    fn send_cancel(&self, cookie: Uuid) {
        self.send_now(Packet::cancel(cookie));
    }

    /// Queues `packet` without waiting: at once if the outbox has room,
    /// otherwise from a task of its own (CANCEL and CREDIT must not be lost
    /// to a full queue, and their senders cannot wait).
    fn send_now(&self, packet: Packet) {
        let Some(out) = self.sender() else { return };
        if let Err(e) = out.try_send(packet) {
            let TrySendError::Full { message, .. } = e else {
                return;
            };
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = out.send(message).await;
                });
            }
        }
    }

    /// The current connection, waiting up to the reconnect policy's bound
    /// for one if there is none; `None` if there is none to be had.
    async fn session(&self) -> Option<(u64, conn::Outbox)> {
        let wait = self
            .config
            .reconnect
            .as_ref()
            .map_or(Duration::ZERO, |r| r.call_wait);
        let deadline = Instant::now() + wait;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let p = self.pending();
                if let Some(s) = &p.session {
                    return Some((s.id, s.out.clone()));
                }
                if p.closed {
                    return None;
                }
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return None;
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
        let p = self.inner.pending();
        f.debug_struct("Client")
            .field("broker", &p.session.as_ref().map(|s| s.peer.clone()))
            .field("pending", &p.slots.len())
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
    /// `wait` for one to come up (Conplyent's `connect(timeout)`); zero tries
    /// each once. With `config.reconnect`, the client reconnects to these
    /// endpoints whenever its connection drops.
    pub async fn connect_any(
        urls: &[String],
        config: ClientConfig,
        wait: Duration,
    ) -> Result<Client, Error> {
        let endpoints = urls
            .iter()
            .map(|u| Endpoint::parse(u))
            .collect::<Result<Vec<_>, _>>()?;
        let backoff = config
            .reconnect
            .as_ref()
            .map(|r| r.backoff.clone())
            .unwrap_or_default();
        let known = LegacyEndpoints::default();
        let s = crate::reconnect::open_any(
            &AnyTransport,
            &endpoints,
            wait,
            &backoff,
            &open_settings(&config),
            &known,
        )
        .await?;
        Ok(Client::establish(
            s.opened,
            s.legacy,
            config,
            Arc::new(AnyTransport),
            endpoints,
            known,
        ))
    }

    /// Connects over any transport (and reconnects over it, with `config.reconnect`).
    pub async fn connect_with<T: ClientTransport + Clone + 'static>(
        transport: &T,
        endpoint: &Endpoint,
        config: ClientConfig,
    ) -> Result<Client, Error> {
        let known = LegacyEndpoints::default();
        let endpoints = vec![endpoint.clone()];
        let s = crate::reconnect::open_any(
            transport,
            &endpoints,
            Duration::ZERO,
            &Backoff::default(),
            &open_settings(&config),
            &known,
        )
        .await?;
        Ok(Client::establish(
            s.opened,
            s.legacy,
            config,
            Arc::new(transport.clone()),
            endpoints,
            known,
        ))
    }

    /// Uses an established connection (no reconnecting: there is nowhere to
    /// reconnect to; nor falling back to legacy mode: a ReasonChip broker
    /// needs [`ClientConfig::legacy`] here).
    pub async fn from_connection(
        conn: Connection,
        mut config: ClientConfig,
    ) -> Result<Client, Error> {
        config.reconnect = None;
        let (opened, legacy) = crate::reconnect::open_conn(conn, &open_settings(&config)).await?;
        Ok(Client::establish(
            opened,
            legacy,
            config,
            Arc::new(AnyTransport),
            Vec::new(),
            LegacyEndpoints::default(),
        ))
    }

    fn establish(
        opened: conn::Opened,
        legacy: bool,
        config: ClientConfig,
        transport: Arc<dyn ClientTransport>,
        endpoints: Vec<Endpoint>,
        known: LegacyEndpoints,
    ) -> Client {
        let inner = Arc::new(Inner {
            pending: Mutex::new(Pending::default()),
            changed: Notify::new(),
            config,
            dropped_events: AtomicU64::new(0),
        });
        let first = begin_session(&inner, opened, 1, legacy);
        tokio::spawn(supervise(
            Arc::downgrade(&inner),
            first,
            transport,
            endpoints,
            known,
        ));
        Client { inner }
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
        let timeout = options.timeout.or(self.inner.config.default_timeout);
        let (handle, out) = self.open_call(cookie, pipeline, timeout).await?;
        let mut run = Packet::run(cookie, pipeline, variables, false);
        // Per-run flow control: the worker sends at most this many events
        // ahead of what this handle has taken (CREDIT grants more), so the
        // handle's buffer of `event_backlog` events never overflows.
        run.credit = Some(self.window());
        // The broker enforces the same deadline (queued or running); a
        // legacy broker never sees the field.
        run.timeout_ms = timeout.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX));
        run.worker = options.worker;
        run.labels = (!options.labels.is_empty()).then_some(options.labels);
        run.priority = (options.priority > 0).then_some(options.priority);
        if out.send(run).await.is_err() {
            self.inner.forget(&cookie);
            return Err(RunError::BrokerWentAway {
                pipeline: pipeline.into(),
            });
        }
        Ok(handle)
    }

    /// Cancels a detached run whose client has gone (listed by the broker's
    /// `$detached` pipeline, [`crate::broker::DETACHED_PIPELINE`]): this
    /// client takes it over and waits for its end. `Ok` once it is
    /// cancelled (or, if it finished meanwhile, with its result);
    /// COOKIE_NOT_FOUND if no such run is orphaned (a connected client's
    /// runs cannot be taken).
    pub async fn cancel_orphan(&self, cookie: Uuid) -> Result<(), RunError> {
        let (handle, out) = self.open_call(cookie, "(orphaned run)", None).await?;
        if out.send(Packet::cancel(cookie)).await.is_err() {
            self.inner.forget(&cookie);
            return Err(RunError::BrokerWentAway {
                pipeline: "(orphaned run)".into(),
            });
        }
        match handle.finish_raw().await {
            Ok(_) => Ok(()),
            Err(e) if e.rc() == ResultCode::Cancelled => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Registers a call for `cookie` on the current connection (waiting for
    /// one if there is none): the handle its events and result arrive on,
    /// and the connection's outbox to send its first packet.
    async fn open_call(
        &self,
        cookie: Uuid,
        pipeline: &str,
        timeout: Option<Duration>,
    ) -> Result<(RunHandle, conn::Outbox), RunError> {
        let gone = || RunError::BrokerWentAway {
            pipeline: pipeline.into(),
        };
        let (events_tx, events) = mpsc::channel(self.inner.config.event_backlog.max(1));
        let (result_tx, result) = oneshot::channel();
        // Registered under the same lock that says which connection is
        // current: a connection lost after this answers the call.
        let mut slot = Some(Slot {
            session: 0,
            events: events_tx,
            result: result_tx,
        });
        let limit = self.inner.config.max_pending;
        if self.pending() >= limit {
            return Err(RunError::Failed {
                pipeline: pipeline.into(),
                rc: ResultCode::NoCapacity,
                error: format!(
                    "this client already has {limit} calls pending (ClientConfig::max_pending)"
                ),
                stacktrace: Vec::new(),
            });
        }
        let register =
            |inner: &Inner, slot: &mut Option<Slot>, want: Option<u64>| -> Option<conn::Outbox> {
                let mut p = inner.pending();
                let (id, out) = p.session.as_ref().map(|s| (s.id, s.out.clone()))?;
                if want.is_some_and(|w| w != id) {
                    return None;
                }
                let mut s = slot.take()?;
                s.session = id;
                p.slots.insert(cookie, s);
                Some(out)
            };
        let out = match register(&self.inner, &mut slot, None) {
            Some(out) => out,
            None => {
                let (session, _) = self.inner.session().await.ok_or_else(gone)?;
                register(&self.inner, &mut slot, Some(session)).ok_or_else(gone)?
            }
        };
        let handle = RunHandle {
            cookie,
            pipeline: pipeline.into(),
            events,
            result,
            inner: self.inner.clone(),
            finished: false,
            window: self.window(),
            taken: 0,
            timeout,
            deadline: timeout.map(|t| Instant::now() + t),
        };
        Ok((handle, out))
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
        let gone = || RunError::BrokerWentAway {
            pipeline: pipeline.into(),
        };
        let (_, out) = self.inner.session().await.ok_or_else(gone)?;
        out.send(Packet::run(cookie, pipeline, Some(payload), true))
            .await
            .map_err(|_| gone())?;
        Ok(cookie)
    }

    /// The event window a run of this client gets: its buffer's size.
    fn window(&self) -> u32 {
        u32::try_from(self.inner.config.event_backlog.max(1)).unwrap_or(u32::MAX)
    }

    /// Calls waiting for a result.
    pub fn pending(&self) -> usize {
        self.inner.pending().slots.len()
    }

    /// Events dropped because a caller did not read them fast enough.
    pub fn dropped_events(&self) -> u64 {
        self.inner.dropped_events.load(Ordering::Relaxed)
    }

    /// Closes the connection for every clone of this client: calls still
    /// pending are answered BROKER_WENT_AWAY, what is queued is sent, and the
    /// stream is closed cleanly (waiting at most `grace`). Call it before a
    /// process exits: a QUIC peer only learns of a close that was sent.
    pub async fn close(&self, grace: Duration) {
        let session = {
            let mut p = self.inner.pending();
            p.closed = true;
            p.session.take()
        };
        self.inner.changed.notify_waiters();
        if let Some(Session { out, writer, .. }) = session {
            drop(out);
            let _ = tokio::time::timeout(grace, writer).await;
        }
    }

    /// Whether the client has no connection to a broker right now.
    pub fn is_closed(&self) -> bool {
        self.inner.pending().session.is_none()
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
    /// The run's event window (the events its buffer holds).
    window: u32,
    /// Events taken since the last CREDIT.
    taken: u32,
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
        let event = match self.deadline {
            Some(d) => tokio::time::timeout_at(d, self.events.recv())
                .await
                .ok()
                .flatten(),
            None => self.events.recv().await,
        }?;
        // Taken: once half the window is, grant it again (never waiting
        // here, so this stays cancel safe).
        self.taken += 1;
        if self.taken >= (self.window / 2).max(1) {
            self.inner
                .send_now(Packet::credit(self.cookie, std::mem::take(&mut self.taken)));
        }
        Some(event)
    }

    /// Asks the broker to cancel the run; its result (CANCELLED, or whatever
    /// it finished with first) still arrives through [`RunHandle::finish`].
    pub async fn cancel(&self) {
        if let Some(out) = self.inner.sender() {
            let _ = out.send(Packet::cancel(self.cookie)).await;
        }
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
            // The broker enforced our own deadline a moment before our
            // timer did: the same outcome, the same error.
            Some(ResultCode::Timeout) if self.timeout.is_some() => Err(RunError::Timeout {
                pipeline: self.pipeline.clone(),
                after: self.timeout.unwrap_or_default(),
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

fn open_settings(config: &ClientConfig) -> OpenSettings {
    OpenSettings {
        role: Role::Client,
        codec: config.codec,
        mode: Mode::from_flags(config.legacy, config.fallback_to_legacy),
        token: config.token.clone(),
        handshake_timeout: config.handshake_timeout,
        connect_timeout: config.connect_timeout,
    }
}

/// What the reader of one connection needs.
struct Reading {
    rx: FrameReceiver,
    /// Ends a run's request lane when its RESULT arrives (QUIC).
    lanes: Option<crate::transport::LaneEnds>,
    codec: AnyCodec,
    session: u64,
    /// Whether the session speaks ReasonChip's protocol (no PING).
    legacy: bool,
}

/// Makes `opened` the current connection and starts its writer.
fn begin_session(inner: &Inner, opened: conn::Opened, id: u64, legacy: bool) -> Reading {
    let conn::Opened {
        tx,
        rx,
        codec,
        peer,
    } = opened;
    let lanes = tx.lane_ends();
    // The writer ends when the last sender (held by the session) is dropped.
    let (out, writer) = conn::spawn_writer(
        tx,
        codec,
        legacy,
        WriterConfig {
            queue: inner.config.send_queue,
            ..WriterConfig::default()
        },
        CancellationToken::new(),
    );
    inner.pending().session = Some(Session {
        id,
        out,
        peer,
        writer,
    });
    inner.changed.notify_waiters();
    Reading {
        rx,
        lanes,
        codec,
        session: id,
        legacy,
    }
}

/// Runs connections one after another: read until one ends, answer its
/// calls BROKER_WENT_AWAY, and (with a reconnect policy) connect again.
async fn supervise(
    inner: Weak<Inner>,
    mut reading: Reading,
    transport: Arc<dyn ClientTransport>,
    endpoints: Vec<Endpoint>,
    known: LegacyEndpoints,
) {
    loop {
        let session = reading.session;
        let ended = read_loop(inner.clone(), reading).await;
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let mut policy = strong
            .config
            .reconnect
            .clone()
            .filter(|_| !endpoints.is_empty());
        let lost = {
            let mut p = strong.pending();
            // Only the session that ended is cleared (close() may have taken it already).
            if p.session.as_ref().is_some_and(|s| s.id == session) {
                p.session = None;
            }
            if p.closed {
                policy = None; // closed on purpose: stay closed
            }
            p.closed = policy.is_none();
            let lost: Vec<Uuid> = p
                .slots
                .iter()
                .filter(|(_, s)| s.session == session)
                .map(|(c, _)| *c)
                .collect();
            lost.into_iter()
                .filter_map(|c| p.slots.remove(&c).map(|s| (c, s)))
                .collect::<Vec<_>>()
        };
        strong.changed.notify_waiters();
        if !lost.is_empty() {
            tracing::warn!(
                pending = lost.len(),
                reason = ended,
                "the broker went away; failing pending calls"
            );
        }
        for (cookie, slot) in lost {
            let _ = slot.result.send(Packet::error(
                Some(cookie),
                ResultCode::BrokerWentAway,
                "the connection to the broker was lost",
            ));
        }
        let Some(policy) = policy else { return };
        drop(strong);
        let mut attempt = 0u32;
        reading = loop {
            tokio::time::sleep(policy.backoff.delay(attempt)).await;
            attempt = attempt.saturating_add(1);
            let Some(strong) = inner.upgrade() else {
                return;
            };
            let opened = crate::reconnect::open_any(
                &*transport,
                &endpoints,
                Duration::ZERO,
                &policy.backoff,
                &open_settings(&strong.config),
                &known,
            )
            .await;
            match opened {
                Ok(s) => {
                    tracing::info!(peer = %s.opened.peer, legacy = s.legacy, "reconnected to the broker");
                    break begin_session(&strong, s.opened, session + 1, s.legacy);
                }
                Err(
                    e @ Error::Handshake {
                        rc: Some(ResultCode::Unauthorized),
                        ..
                    },
                ) => {
                    tracing::error!(error = %e, "the broker refused our token; not reconnecting");
                    strong.pending().closed = true;
                    strong.changed.notify_waiters();
                    return;
                }
                Err(e) => tracing::debug!(error = %e, "reconnect failed"),
            }
        };
    }
}

/// Reads one connection until it ends; returns why.
async fn read_loop(inner: Weak<Inner>, reading: Reading) -> &'static str {
    let Reading {
        mut rx,
        codec,
        lanes,
        legacy,
        ..
    } = reading;
    let mut liveness = inner.upgrade().and_then(|i| {
        (!legacy).then(|| {
            LivenessTimer::new(LivenessConfig {
                interval: i.config.ping_interval,
                timeout: i.config.ping_timeout,
            })
        })
    });
    loop {
        let frame = tokio::select! {
            action = next_liveness(&mut liveness) => {
                let Some(inner) = inner.upgrade() else { return "client dropped" };
                match action {
                    LivenessAction::SendPing => inner.control(PacketType::Ping),
                    LivenessAction::PeerDead { silent } => {
                        tracing::warn!(?silent, "the broker is silent past the ping timeout; giving it up");
                        return "ping timeout";
                    }
                }
                continue;
            }
            f = rx.recv_frame() => f,
        };
        if let Some(l) = liveness.as_mut() {
            l.heard();
        }
        let frame = match frame {
            Some(Ok(f)) => f,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "connection to the broker failed");
                return "connection failed";
            }
            None => return "connection closed",
        };
        let Some(inner) = inner.upgrade() else {
            return "client dropped";
        };
        let packet = match codec.decode(&frame) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "undecodable packet from the broker; ignored");
                continue;
            }
        };
        match packet.packet_type {
            PacketType::Result => {
                conn::end_request_lane(lanes.as_ref(), &packet);
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
            PacketType::Ping => inner.control(PacketType::Pong),
            _ => {}
        }
    }
}
