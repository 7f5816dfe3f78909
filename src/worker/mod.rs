//! The worker: runs pipelines for a broker.
//!
//! A [`Worker`] holds a registry of pipeline handlers by name — typed ones
//! (serde in, serde out) and raw ones (payload in, payload out) — and a
//! capacity. It connects to a broker, registers, and runs up to `capacity`
//! pipelines at once, each in its own task (on a current-thread runtime a
//! run that finishes at its first poll is answered at once, without one):
//!
//! - a handler can stream events ([`RunContext::emit`]) before returning;
//! - CANCEL stops the handler and always answers RESULT CANCELLED, freeing the slot;
//! - a handler error answers PROCESSOR_EXCEPTION with its message and the
//!   error's source chain as the stack trace; a panicking handler answers
//!   PROCESSOR_EXCEPTION too, and the worker lives on;
//! - SHUTDOWN lets running runs finish, then disconnects.
//!
//! In legacy mode (no HELLO, JSON) the worker serves a ReasonChip 0.0.6
//! broker; events are not sent there, and native result codes are mapped to
//! the nearest legacy code. It needs no setting: a broker that closes the
//! connection right after the worker's HELLO is taken for a ReasonChip one
//! and dialled again in legacy mode (see [`crate::reconnect`]);
//! [`WorkerConfig::fallback_to_legacy`] forbids that, [`WorkerConfig::legacy`]
//! starts in legacy mode.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::codec::{Codec, CodecKind};
use crate::conn::{self, next_liveness, LivenessTimer};
use crate::error::Error;
use crate::link::{TrySendError, WriterConfig};
use crate::protocol::{
    LivenessAction, LivenessConfig, Packet, PacketType, Payload, ResultCode, Role,
};
use crate::reconnect::{Backoff, LegacyEndpoints, Mode, OpenSettings};
use crate::transport::{AnyTransport, ClientTransport, Connection, Endpoint};

/// A pipeline's failure: a message and a stack trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerError {
    /// What went wrong.
    pub message: String,
    /// Where: for errors, the chain of causes.
    pub stacktrace: Vec<String>,
}

impl HandlerError {
    /// A failure with a message and no stack trace.
    pub fn msg(message: impl Into<String>) -> HandlerError {
        HandlerError {
            message: message.into(),
            stacktrace: Vec::new(),
        }
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl<E: std::error::Error> From<E> for HandlerError {
    fn from(e: E) -> HandlerError {
        let mut stacktrace = vec![format!("{e}")];
        let mut cause = e.source();
        while let Some(c) = cause {
            stacktrace.push(format!("caused by: {c}"));
            cause = c.source();
        }
        HandlerError {
            message: e.to_string(),
            stacktrace,
        }
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type RawHandler = Arc<
    dyn Fn(RunContext, Option<Payload>) -> BoxFuture<Result<Option<Payload>, HandlerError>>
        + Send
        + Sync,
>;

/// What a handler gets besides its input: the run's identity, a way to
/// stream events, and its cancellation.
#[derive(Clone)]
pub struct RunContext {
    cookie: Uuid,
    pipeline: Arc<str>,
    out: conn::Outbox,
    events: bool,
    cancel: CancellationToken,
    /// The events the client can still take (its CREDITs add more); none:
    /// no limit (a legacy or older client, or a detached run).
    credit: Option<Arc<Semaphore>>,
}

impl fmt::Debug for RunContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunContext")
            .field("cookie", &self.cookie)
            .field("pipeline", &self.pipeline)
            .finish()
    }
}

impl RunContext {
    /// The run's cookie.
    pub fn cookie(&self) -> Uuid {
        self.cookie
    }

    /// The pipeline's name.
    pub fn pipeline(&self) -> &str {
        &self.pipeline
    }

    /// Streams an event to the client. Waits while the client has not taken
    /// the events already sent (its window for this run is used up, until
    /// its CREDIT comes) and while the connection's send queue is full: a
    /// slow reader slows the handler, and nothing is dropped or buffered
    /// without bound. A no-op when connected to a legacy broker, which has
    /// no EVENT.
    pub async fn emit<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), HandlerError> {
        if !self.events {
            return Ok(());
        }
        let payload = Payload::to_json(value)?;
        if let Some(credit) = &self.credit {
            credit
                .acquire()
                .await
                .map_err(|_| HandlerError::msg("the run has ended"))?
                .forget();
        }
        self.out
            .send(Packet::event(self.cookie, payload))
            .await
            .map_err(|_| HandlerError::msg("the broker connection is closed"))
    }

    /// Completes when the run is cancelled. Cancel safe.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }

    /// Whether the run has been cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }
}

/// Worker settings.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Runs at once.
    pub capacity: u32,
    /// Codec on native connections.
    pub codec: CodecKind,
    /// Serve a ReasonChip 0.0.6 broker from the start (no HELLO, JSON, no
    /// events). Not needed to talk to one: see `fallback_to_legacy`.
    pub legacy: bool,
    /// When a broker closes the connection right after our HELLO (what a
    /// ReasonChip 0.0.6 broker does), dial it again at once in legacy mode
    /// (JSON whatever `codec` says, no events), say so once in the log, and
    /// stay legacy for that endpoint. `false` (`--native`) forbids it: that
    /// broker then fails with [`Error::ClosedAfterHello`]. Has no effect on
    /// [`Worker::serve`], which cannot dial again.
    pub fallback_to_legacy: bool,
    /// Announce the served pipelines in REGISTER (native only), so the
    /// broker routes only those here.
    pub announce_pipelines: bool,
    /// Shared-secret token sent in HELLO.
    pub token: Option<String>,
    /// Packets queued for the broker before producers wait.
    pub send_queue: usize,
    /// How long to wait for the broker's HELLO.
    pub handshake_timeout: Duration,
    /// How long one connect to a broker may take, on every backend
    /// (failing with [`Error::ConnectTimeout`]).
    pub connect_timeout: Duration,
    /// PING the broker after this long without hearing from it (native only).
    pub ping_interval: Duration,
    /// Give the broker up (end the session as `BrokerGone`) after this long without hearing from it.
    pub ping_timeout: Duration,
    /// The worker's name, announced in REGISTER (native only): a run may ask
    /// for this worker by name (`RunOptions::worker`).
    pub name: Option<String>,
    /// The worker's labels, `key=value` (e.g. `host=build-3`, `gpu=1`),
    /// announced in REGISTER (native only): a run may require labels
    /// (`RunOptions::labels`).
    pub labels: Vec<String>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            capacity: 4,
            codec: CodecKind::Json,
            legacy: false,
            fallback_to_legacy: true,
            announce_pipelines: true,
            token: None,
            send_queue: 4096,
            handshake_timeout: Duration::from_secs(10),
            connect_timeout: crate::reconnect::DEFAULT_CONNECT_TIMEOUT,
            ping_interval: Duration::from_secs(10),
            ping_timeout: Duration::from_secs(30),
            name: None,
            labels: Vec::new(),
        }
    }
}

/// How a worker session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WorkerExit {
    /// The broker sent SHUTDOWN; running runs were drained.
    Shutdown,
    /// The broker closed the connection.
    BrokerGone,
    /// [`Worker::stop`] was called.
    Stopped,
}

/// A registry of pipelines and a capacity; connects to a broker and serves it.
#[derive(Clone)]
pub struct Worker {
    handlers: HashMap<String, RawHandler>,
    config: WorkerConfig,
    stop: CancellationToken,
    /// Brokers found to be legacy ones (shared by clones).
    legacy_brokers: LegacyEndpoints,
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<_> = self.handlers.keys().collect();
        names.sort();
        f.debug_struct("Worker")
            .field("pipelines", &names)
            .field("config", &self.config)
            .finish()
    }
}

impl Worker {
    /// A worker with no pipelines yet.
    pub fn new(config: WorkerConfig) -> Worker {
        Worker {
            handlers: HashMap::new(),
            config,
            stop: CancellationToken::new(),
            legacy_brokers: LegacyEndpoints::default(),
        }
    }

    /// Adds a typed pipeline: the variables deserialize into `I` (a missing
    /// `variables` is `{}`, as in ReasonChip), the returned `O` serializes
    /// into the result.
    pub fn pipeline<I, O, F, Fut>(mut self, name: &str, handler: F) -> Self
    where
        I: DeserializeOwned + Send + 'static,
        O: Serialize + Send + 'static,
        F: Fn(RunContext, I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, HandlerError>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let raw: RawHandler = Arc::new(move |ctx, input: Option<Payload>| {
            let handler = handler.clone();
            Box::pin(async move {
                let text = input.as_ref().map_or("{}", Payload::as_str);
                let input: I = serde_json::from_str(text).map_err(|e| HandlerError {
                    message: format!("invalid variables for pipeline `{}`: {e}", ctx.pipeline()),
                    stacktrace: Vec::new(),
                })?;
                let out = handler(ctx, input).await?;
                Ok(Some(Payload::to_json(&out)?))
            })
        });
        self.handlers.insert(name.to_owned(), raw);
        self
    }

    /// Adds a raw pipeline: payload text in, payload text out.
    pub fn raw_pipeline<F, Fut>(mut self, name: &str, handler: F) -> Self
    where
        F: Fn(RunContext, Option<Payload>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Option<Payload>, HandlerError>> + Send + 'static,
    {
        let raw: RawHandler = Arc::new(move |ctx, input| Box::pin(handler(ctx, input)));
        self.handlers.insert(name.to_owned(), raw);
        self
    }

    /// The served pipelines' names, sorted.
    pub fn pipelines(&self) -> Vec<String> {
        let mut v: Vec<String> = self.handlers.keys().cloned().collect();
        v.sort();
        v
    }

    /// Makes [`Worker::serve`] return after draining its running runs.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Connects to the broker's worker endpoint `url` and serves it until
    /// SHUTDOWN, disconnection or [`Worker::stop`].
    pub async fn run(&self, url: &str) -> Result<WorkerExit, Error> {
        let endpoint = Endpoint::parse(url)?;
        self.run_with(&AnyTransport, &endpoint).await
    }

    /// Serves brokers until [`Worker::stop`]: connects to the first of `urls`
    /// that answers (failover), re-registers after every reconnect, and waits
    /// with `backoff` between attempts. A lost broker, or a SHUTDOWN from one,
    /// ends only the session, not the worker: it waits for a broker again.
    pub async fn run_reconnecting(
        &self,
        urls: &[String],
        backoff: Backoff,
    ) -> Result<WorkerExit, Error> {
        let endpoints = urls
            .iter()
            .map(|u| Endpoint::parse(u))
            .collect::<Result<Vec<_>, _>>()?;
        let settings = self.open_settings();
        let mut attempt = 0u32;
        loop {
            if self.stop.is_cancelled() {
                return Ok(WorkerExit::Stopped);
            }
            let connected = tokio::select! {
                _ = self.stop.cancelled() => return Ok(WorkerExit::Stopped),
                c = crate::reconnect::open_any(
                    &AnyTransport,
                    &endpoints,
                    Duration::ZERO,
                    &backoff,
                    &settings,
                    &self.legacy_brokers,
                ) => c,
            };
            match connected {
                Ok(s) => match self.serve_opened(s.opened, s.legacy).await {
                    Ok(WorkerExit::Stopped) => return Ok(WorkerExit::Stopped),
                    Ok(exit) => {
                        tracing::warn!(broker = %endpoints[s.index], ?exit, "broker session ended; reconnecting");
                        attempt = 0;
                    }
                    Err(e) => {
                        tracing::warn!(broker = %endpoints[s.index], error = %e, "broker session failed; reconnecting")
                    }
                },
                // A wrong token stays wrong: retrying would only hammer the broker.
                Err(
                    e @ Error::Handshake {
                        rc: Some(ResultCode::Unauthorized),
                        ..
                    },
                ) => return Err(e),
                Err(e @ (Error::Transport(_) | Error::ConnectTimeout { .. })) => {
                    tracing::debug!(error = %e, "no broker reachable yet")
                }
                Err(e) => tracing::warn!(error = %e, "broker handshake failed; reconnecting"),
            }
            let delay = backoff.delay(attempt);
            attempt = attempt.saturating_add(1);
            tokio::select! {
                _ = self.stop.cancelled() => return Ok(WorkerExit::Stopped),
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Like [`Worker::run`], over any transport.
    pub async fn run_with<T: ClientTransport + ?Sized>(
        &self,
        transport: &T,
        endpoint: &Endpoint,
    ) -> Result<WorkerExit, Error> {
        let s = crate::reconnect::open_any(
            transport,
            std::slice::from_ref(endpoint),
            Duration::ZERO,
            &Backoff::default(),
            &self.open_settings(),
            &self.legacy_brokers,
        )
        .await?;
        self.serve_opened(s.opened, s.legacy).await
    }

    /// Serves one established connection to a broker. There is no falling
    /// back to legacy mode here (the connection cannot be dialled again): a
    /// ReasonChip broker needs [`WorkerConfig::legacy`], or use
    /// [`Worker::run_with`].
    pub async fn serve(&self, conn: Connection) -> Result<WorkerExit, Error> {
        let (opened, legacy) = crate::reconnect::open_conn(conn, &self.open_settings()).await?;
        self.serve_opened(opened, legacy).await
    }

    fn open_settings(&self) -> OpenSettings {
        let c = &self.config;
        OpenSettings {
            role: Role::Worker,
            codec: c.codec,
            mode: Mode::from_flags(c.legacy, c.fallback_to_legacy),
            token: c.token.clone(),
            handshake_timeout: c.handshake_timeout,
            connect_timeout: c.connect_timeout,
        }
    }

    /// Serves a session whose opening exchange is done; `legacy`: whether it
    /// speaks ReasonChip's protocol.
    async fn serve_opened(&self, opened: conn::Opened, legacy: bool) -> Result<WorkerExit, Error> {
        let c = &self.config;
        let conn::Opened {
            tx,
            mut rx,
            codec,
            peer,
        } = opened;
        // Everything of this session (runs and writer) dies with it if this
        // future is dropped, as if the worker process had exited.
        let session = CancellationToken::new();
        let _session_guard = session.clone().drop_guard();
        let (out, writer) = conn::spawn_writer(
            tx,
            codec,
            legacy,
            WriterConfig {
                queue: c.send_queue,
                ..WriterConfig::default()
            },
            session.clone(),
        );
        let pipelines = (c.announce_pipelines && !legacy).then(|| self.pipelines());
        let capacity = c.capacity.max(1) as usize;
        let mut register = Packet::register(capacity as i64, pipelines);
        if !legacy {
            register.worker = c.name.clone();
            register.labels = (!c.labels.is_empty()).then(|| c.labels.clone());
        }
        out.send(register)
            .await
            .map_err(|_| Error::Closed(peer.clone()))?;
        tracing::info!(broker = %peer, capacity, pipelines = ?self.pipelines(), "worker registered");

        let tracker = TaskTracker::new();
        let running = Running::default();
        let inline = tokio::runtime::Handle::current().runtime_flavor()
            == tokio::runtime::RuntimeFlavor::CurrentThread;
        // Wakes the loop when a run ends, for draining.
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<()>();
        let mut draining = false;
        let mut liveness = (!legacy).then(|| {
            LivenessTimer::new(LivenessConfig {
                interval: c.ping_interval,
                timeout: c.ping_timeout,
            })
        });
        let exit = loop {
            let frame = tokio::select! {
                action = next_liveness(&mut liveness) => {
                    match action {
                        LivenessAction::SendPing => {
                            out.try_send_control(PacketType::Ping);
                        }
                        LivenessAction::PeerDead { silent } => {
                            tracing::warn!(broker = %peer, ?silent, "the broker is silent past the ping timeout; giving it up");
                            break WorkerExit::BrokerGone;
                        }
                    }
                    continue;
                }
                Some(()) = done_rx.recv() => {
                    if draining && running.len() == 0 {
                        break if self.stop.is_cancelled() { WorkerExit::Stopped } else { WorkerExit::Shutdown };
                    }
                    continue;
                }
                _ = self.stop.cancelled(), if !draining => {
                    draining = true;
                    if running.len() == 0 {
                        break WorkerExit::Stopped;
                    }
                    continue;
                }
                f = rx.recv_frame() => f,
            };
            if let Some(l) = liveness.as_mut() {
                l.heard();
            }
            let packet = match frame {
                None => break WorkerExit::BrokerGone,
                Some(Err(e)) => {
                    tracing::warn!(broker = %peer, error = %e, "connection to the broker failed");
                    break WorkerExit::BrokerGone;
                }
                Some(Ok(frame)) => match codec.decode(&frame) {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!(broker = %peer, error = %e, "undecodable packet from the broker; ignored");
                        continue;
                    }
                },
            };
            match packet.packet_type {
                PacketType::Run => {
                    let Some(cookie) = packet.cookie else {
                        tracing::warn!("RUN without cookie ignored");
                        continue;
                    };
                    if draining {
                        let _ = out
                            .send(Packet::error(
                                Some(cookie),
                                ResultCode::NoCapacity,
                                "the worker is shutting down",
                            ))
                            .await;
                        continue;
                    }
                    let pipeline = packet.pipeline.unwrap_or_default();
                    let Some(handler) = self.handlers.get(&pipeline).cloned() else {
                        let (rc, why) = if legacy {
                            (ResultCode::ProcessorException, pipeline.clone())
                        } else {
                            (
                                ResultCode::UnknownPipeline,
                                format!("this worker has no pipeline `{pipeline}`"),
                            )
                        };
                        let answer = Packet {
                            stacktrace: Some(Vec::new()),
                            ..Packet::error(Some(cookie), rc, why)
                        };
                        let _ = out.send(answer).await;
                        continue;
                    };
                    // Its own token, not a child of the session's: a child costs a
                    // lock on the parent per run, and the run task watches the
                    // session token anyway.
                    let cancel = CancellationToken::new();
                    let credit = packet.credit.filter(|_| !legacy).map(|n| {
                        Arc::new(Semaphore::new((n as usize).min(Semaphore::MAX_PERMITS)))
                    });
                    let entry = RunEntry {
                        cancel: cancel.clone(),
                        credit: credit.clone(),
                    };
                    if let Err(why) = running.admit(cookie, entry, capacity) {
                        let _ = out
                            .send(Packet::error(Some(cookie), ResultCode::NoCapacity, why))
                            .await;
                        continue;
                    }
                    let ctx = RunContext {
                        cookie,
                        pipeline: pipeline.into(),
                        out: out.clone(),
                        events: !legacy,
                        cancel,
                        credit,
                    };
                    let mut run = Box::pin(execute(handler, ctx, packet.variables));
                    // On a current-thread runtime a run that finishes at its
                    // first poll (most do: echo, lookups, arithmetic) is done
                    // here, without a task; runs cannot run in parallel there
                    // anyway. On a multi-thread runtime each run gets its own
                    // task, so CPU-bound handlers spread over the threads.
                    if inline {
                        if let Some(result) = (&mut run).now_or_never() {
                            running.remove(&cookie);
                            match out.try_send(result) {
                                Ok(()) => {}
                                Err(TrySendError::Full {
                                    message: result, ..
                                }) => {
                                    let out = out.clone();
                                    tracker.spawn(async move {
                                        let _ = out.send(result).await;
                                    });
                                }
                                Err(TrySendError::Closed(_)) => {}
                            }
                            // (Not draining here: a RUN while draining was refused above.)
                            continue;
                        }
                    }
                    let (out, done, session, running) = (
                        out.clone(),
                        done_tx.clone(),
                        session.clone(),
                        running.clone(),
                    );
                    tracker.spawn(async move {
                        let result = tokio::select! {
                            biased;
                            _ = session.cancelled() => return,
                            r = run => r,
                        };
                        // Free the slot before the RESULT leaves: when the broker
                        // sends the next RUN into it, it is free here already.
                        running.remove(&cookie);
                        let _ = done.send(());
                        if !session.is_cancelled() {
                            let _ = out.send(result).await;
                        }
                    });
                }
                PacketType::Credit => {
                    match (
                        packet.cookie.and_then(|c| running.credit(&c)),
                        packet.credit,
                    ) {
                        (Some(window), Some(more)) => {
                            let room = Semaphore::MAX_PERMITS - window.available_permits();
                            window.add_permits((more as usize).min(room));
                        }
                        _ => {
                            tracing::debug!(cookie = ?packet.cookie, "CREDIT for a run not here (already finished) or without a window")
                        }
                    }
                }
                PacketType::Cancel => match packet.cookie.and_then(|c| running.token(&c)) {
                    Some(token) => token.cancel(),
                    None => {
                        tracing::debug!(cookie = ?packet.cookie, "CANCEL for a run not here (already finished)")
                    }
                },
                PacketType::Shutdown => {
                    tracing::info!(
                        running = running.len(),
                        "SHUTDOWN from the broker: draining"
                    );
                    draining = true;
                    if running.len() == 0 {
                        break WorkerExit::Shutdown;
                    }
                }
                PacketType::Ping => {
                    out.try_send_control(PacketType::Pong);
                }
                PacketType::Hello | PacketType::Pong => {}
                PacketType::Result if packet.rc.is_some() => {
                    tracing::warn!(rc = ?packet.rc, error = ?packet.error, "the broker refused a packet");
                }
                other => tracing::warn!(%other, "unexpected packet from the broker; ignored"),
            }
        };
        if exit == WorkerExit::BrokerGone {
            running.cancel_all();
        }
        tracker.close();
        tracker.wait().await;
        drop(out);
        let _ = writer.await;
        tracing::info!(?exit, "worker session ended");
        Ok(exit)
    }
}

/// One running run, as the read loop needs it: how to cancel it, and its
/// event window.
struct RunEntry {
    cancel: CancellationToken,
    credit: Option<Arc<Semaphore>>,
}

/// The runs of one session, shared with the run tasks (which remove
/// themselves before sending their RESULT).
#[derive(Clone, Default)]
struct Running(Arc<std::sync::Mutex<HashMap<Uuid, RunEntry>>>);

impl Running {
    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, RunEntry>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn len(&self) -> usize {
        self.table().len()
    }

    /// Takes a slot for `cookie`, or says why not.
    fn admit(&self, cookie: Uuid, entry: RunEntry, capacity: usize) -> Result<(), &'static str> {
        let mut t = self.table();
        if t.contains_key(&cookie) {
            Err("this cookie is already running here")
        } else if t.len() >= capacity {
            Err("the worker is at capacity")
        } else {
            t.insert(cookie, entry);
            Ok(())
        }
    }

    fn remove(&self, cookie: &Uuid) {
        self.table().remove(cookie);
    }

    fn token(&self, cookie: &Uuid) -> Option<CancellationToken> {
        self.table().get(cookie).map(|e| e.cancel.clone())
    }

    fn credit(&self, cookie: &Uuid) -> Option<Arc<Semaphore>> {
        self.table().get(cookie).and_then(|e| e.credit.clone())
    }

    fn cancel_all(&self) {
        for entry in self.table().values() {
            entry.cancel.cancel();
        }
    }
}

/// Runs one handler to its single RESULT: OK, PROCESSOR_EXCEPTION (error or
/// panic) or CANCELLED.
async fn execute(handler: RawHandler, ctx: RunContext, input: Option<Payload>) -> Packet {
    let cookie = ctx.cookie;
    let cancel = ctx.cancel.clone();
    let run = std::panic::AssertUnwindSafe(handler(ctx, input)).catch_unwind();
    tokio::select! {
        biased;
        _ = cancel.cancelled() => Packet::error(Some(cookie), ResultCode::Cancelled, "cancelled"),
        outcome = run => match outcome {
            Ok(Ok(result)) => Packet::ok(cookie, result),
            Ok(Err(e)) => Packet { stacktrace: Some(e.stacktrace), ..Packet::error(Some(cookie), ResultCode::ProcessorException, e.message) },
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                tracing::error!(%cookie, panic = %what, "pipeline panicked");
                Packet { stacktrace: Some(vec![format!("panicked: {what}")]), ..Packet::error(Some(cookie), ResultCode::ProcessorException, format!("the pipeline panicked: {what}")) }
            }
        },
    }
}
