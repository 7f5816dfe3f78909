//! The switchboard: the broker's routing state, without any I/O.
//!
//! Like quinn-proto's `Connection`, it is a plain struct. The async shell
//! around it (the [`Broker`](super::Broker)) feeds it events through the
//! `handle_*` methods and then drains [`Switchboard::poll_transmit`] and sends
//! each packet to the connection it names. It never blocks, never allocates
//! per connection beyond its tables, and is tested with plain unit tests and a
//! randomized model test (see `tests/switchboard_model.rs`).
//!
//! Call order: `handle_connect` once per connection, then any number of
//! `handle_packet`, then `handle_disconnect`; after each call, drain
//! `poll_transmit` until it returns `None`.
//!
//! # Rules
//!
//! - Every RUN gets exactly one final RESULT: from its worker, or from the
//!   switchboard (BAD_PACKET, COOKIE_COLLISION, NO_CAPACITY,
//!   UNKNOWN_PIPELINE, CANCELLED, WORKER_WENT_AWAY). Detached runs get none.
//! - Dispatch goes to the least-loaded registered worker that serves the
//!   pipeline; with no free slot the run waits in a FIFO queue bounded in
//!   runs, broker-wide (`queue_limit`) and per client (`queue_per_client`),
//!   and in bytes, broker-wide (`queue_bytes`) and per client
//!   (`queue_bytes_per_client`); a run over any bound is answered
//!   NO_CAPACITY with an error naming the bound and the setting.
//! - A legacy (HELLO-less, ReasonChip 0.0.6) peer never receives a packet
//!   type, field or result code it does not know: native codes become the
//!   nearest legacy code with the real outcome in `error`; EVENTs are dropped.
//! - A RUN is only sent to a worker whose connection can carry it: its size
//!   *on that worker's codec* (a bincode client's payload of control bytes
//!   grows sixfold as JSON) is checked against the worker's frame limit
//!   before dispatch, and a run that cannot fit is answered TOO_LARGE (legacy
//!   clients: the nearest code) with its route released — never sent and
//!   dropped.
//! - CANCEL of a run on a legacy worker is never forwarded (a ReasonChip 0.0.6
//!   worker exits on CANCEL): the client is answered CANCELLED at once, and
//!   the worker's slot stays busy until its late RESULT arrives, which is
//!   then dropped.
//! - Deadlines: a RUN's `timeout_ms` (or the broker's `default_timeout`)
//!   gives it a deadline. Still queued when it passes: answered TIMEOUT and
//!   out of the queue. Running: answered TIMEOUT at once, cancelled at a
//!   native worker, and its slot freed when the worker's (dropped) RESULT
//!   arrives. A run queued longer than `max_queue_wait` is answered
//!   NO_CAPACITY. Time is passed in ([`Switchboard::handle_packet_at`],
//!   [`Switchboard::handle_timeout`]); [`Switchboard::poll_timeout`] says
//!   when the shell must call again.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::codec::{AnyCodec, Codec, CodecKind};
use crate::protocol::{Packet, PacketType, ResultCode, MAX_PRIORITY};

// Cookies are chosen by clients: the maps need a hasher that is fast and
// seeded per process (foldhash), not SipHash's cost nor an unseeded one.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
type HashSet<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;

/// Identifies one connection to the broker; assigned by the shell.
pub type PeerId = u64;

/// Which listener set a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// A client connection (sends RUN and CANCEL).
    Client,
    /// A worker connection (sends REGISTER, RESULT and EVENT).
    Worker,
}

/// Switchboard limits.
#[derive(Debug, Clone)]
pub struct SwitchboardConfig {
    /// Runs that may wait for a free slot; 0 answers NO_CAPACITY at once, as ReasonChip does.
    pub queue_limit: usize,
    /// The largest capacity one REGISTER may announce.
    pub max_capacity: u32,
    /// Runs one client may have waiting for results at once; more are
    /// answered NO_CAPACITY. One client cannot fill the queue for everyone.
    pub max_runs_per_client: usize,
    /// Bytes of queued RUNs (by [`Packet::size_hint`]: variables, pipeline
    /// name and a fixed overhead) the whole queue may hold; a run that would
    /// pass it is answered NO_CAPACITY. The count bound alone lets 1024
    /// queued 16 MiB runs hold 16 GiB.
    pub queue_bytes: usize,
    /// Bytes of queued RUNs one client connection may hold (its detached
    /// runs included), so that one peer cannot spend the whole byte budget.
    pub queue_bytes_per_client: usize,
    /// A client connection's share of the queue (its detached runs
    /// included): past it, the client may queue only while a share's worth
    /// of places stays free for the others, so one client cannot fill the
    /// queue and starve them. `None` (the default): a quarter of
    /// `queue_limit` (none for a queue of fewer than 4 runs); `Some(0)`:
    /// no share rule.
    pub queue_per_client: Option<usize>,
    /// The deadline of a RUN that carries no `timeout_ms` (legacy clients
    /// never do); `None`: no deadline.
    pub default_timeout: Option<Duration>,
    /// The longest a run may wait in the queue for a slot; past it, it is
    /// answered NO_CAPACITY. `None`: as long as its deadline allows.
    pub max_queue_wait: Option<Duration>,
    /// How long a run with an event window may wait for its client to take
    /// events (its window used up, no CREDIT) before it is cancelled at its
    /// worker and answered CANCELLED; `None`: as long as the client likes.
    pub stall_timeout: Option<Duration>,
}

/// Default [`SwitchboardConfig::queue_bytes`]: 256 MiB.
pub const DEFAULT_QUEUE_BYTES: usize = 256 << 20;
/// Default [`SwitchboardConfig::queue_bytes_per_client`]: 64 MiB (four RUNs
/// at the default 16 MiB frame limit).
pub const DEFAULT_QUEUE_BYTES_PER_CLIENT: usize = 64 << 20;

impl Default for SwitchboardConfig {
    fn default() -> Self {
        SwitchboardConfig {
            queue_limit: 1024,
            max_capacity: 65_536,
            max_runs_per_client: 100_000,
            queue_bytes: DEFAULT_QUEUE_BYTES,
            queue_bytes_per_client: DEFAULT_QUEUE_BYTES_PER_CLIENT,
            queue_per_client: None,
            default_timeout: None,
            max_queue_wait: None,
            stall_timeout: Some(DEFAULT_STALL_TIMEOUT),
        }
    }
}

/// Default [`SwitchboardConfig::stall_timeout`]: 5 minutes.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(300);

/// What the switchboard knows of a connection's wire: enough to tell, before
/// routing a packet to it, whether the packet fits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerLink {
    /// It announced itself with HELLO.
    pub native: bool,
    /// The codec its packets are encoded with.
    pub codec: CodecKind,
    /// The largest frame its connection carries.
    pub max_frame: usize,
}

impl PeerLink {
    /// A peer with no frame limit to check (tests, and callers that do not say).
    pub fn unbounded(native: bool) -> PeerLink {
        PeerLink {
            native,
            codec: CodecKind::Json,
            max_frame: usize::MAX,
        }
    }

    /// `Err(size)` if `packet` encoded for this peer exceeds its frame limit.
    ///
    /// Cheap for the common case: only a packet whose worst-case size (every
    /// byte escaped as `\u00XX` in JSON) could exceed the limit is measured.
    fn check_fits(&self, packet: &Packet) -> Result<(), usize> {
        let hint = packet.size_hint();
        let bound = match self.codec {
            CodecKind::Json => hint.saturating_mul(6),
            _ => hint,
        }
        .saturating_add(1024);
        if bound <= self.max_frame {
            return Ok(());
        }
        let size = AnyCodec::new(self.codec)
            .and_then(|c| c.encoded_len(packet))
            .unwrap_or(bound);
        if size > self.max_frame {
            Err(size)
        } else {
            Ok(())
        }
    }
}

/// A packet for the shell to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The connection to send it on.
    pub to: PeerId,
    /// The packet, already in the form that peer understands.
    pub packet: Packet,
}

/// Live counters, cheap to copy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SwitchboardStats {
    /// Client connections.
    pub clients: usize,
    /// Worker connections (registered or not).
    pub workers: usize,
    /// Slots announced by registered workers.
    pub total_capacity: u64,
    /// Slots not running anything.
    pub free_capacity: u64,
    /// Runs waiting for a slot.
    pub queued: usize,
    /// Bytes of the runs waiting for a slot (by [`Packet::size_hint`]).
    pub queued_bytes: usize,
    /// Runs on a worker.
    pub running: usize,
    /// Routes held (queued + running, detached and abandoned included).
    pub routes: usize,
    /// Final RESULTs with rc OK.
    pub completed: u64,
    /// Final RESULTs per non-OK code.
    pub failed: Vec<(ResultCode, u64)>,
}

/// A detached run whose client has gone (see [`Switchboard::orphans`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    /// The run's cookie: a CANCEL for it from any client takes it over.
    pub cookie: Uuid,
    /// Its pipeline (`None` only for a run that was not detached but lost
    /// its client after a cancel its legacy worker could not be told of).
    pub pipeline: Option<String>,
    /// It runs on a worker (otherwise it waits in the queue).
    pub running: bool,
}

#[derive(Debug)]
struct Client {
    native: bool,
    /// Runs this client is waiting for (not detached).
    runs: HashSet<Uuid>,
    /// Bytes of this client's queued runs (detached ones too).
    queued_bytes: usize,
    /// This client's queued runs (detached ones too).
    queued: usize,
}

#[derive(Debug)]
struct Worker {
    native: bool,
    link: PeerLink,
    /// Slots; 0 until REGISTER.
    capacity: u32,
    busy: u32,
    /// None = serves every pipeline.
    pipelines: Option<HashSet<String>>,
    /// Its name and labels (`key=value`), from its REGISTER.
    name: Option<String>,
    labels: HashSet<String>,
    runs: HashSet<Uuid>,
}

impl Worker {
    fn serves(&self, pipeline: &str) -> bool {
        self.capacity > 0 && self.pipelines.as_ref().is_none_or(|p| p.contains(pipeline))
    }

    /// Whether it may run `run`: it serves its pipeline, is the worker the
    /// run names (if it names one) and has every label it asks for.
    fn can_take(&self, run: &Packet) -> bool {
        self.serves(run.pipeline.as_deref().unwrap_or_default())
            && run
                .worker
                .as_ref()
                .is_none_or(|n| self.name.as_ref() == Some(n))
            && run
                .labels
                .as_ref()
                .is_none_or(|ls| ls.iter().all(|l| self.labels.contains(l)))
    }
}

#[derive(Debug)]
struct Route {
    /// Who sent the RUN.
    owner: PeerId,
    /// Whether the owner waits for the result (not detached, not cancelled-early, still connected).
    answer_owner: bool,
    /// The worker running it; `None` while queued.
    worker: Option<PeerId>,
    /// The RUN, kept while queued (its pipeline decides where it may go).
    run: Option<Packet>,
    /// The queued RUN's size, counted in the byte budgets until it leaves
    /// the queue (0 once dispatched).
    queued_bytes: usize,
    /// Counted in its owner's share of the queue (while it waits).
    queued: bool,
    /// A detached run's pipeline, kept for [`Switchboard::orphans`] (not
    /// kept for the others: no allocation per ordinary run).
    detached_pipeline: Option<String>,
    /// Tells this route's timers from those of an earlier route that had
    /// the same cookie.
    id: u64,
    /// Its time limit, if it has one (counted from its arrival).
    limit: Option<Duration>,
    /// Events the worker may still send (the RUN's window plus CREDITs,
    /// less the events passed on); `None`: no flow control.
    window: Option<u32>,
    /// When a used-up window stalls the run past `stall_timeout`.
    stall_at: Option<Instant>,
}

/// What a timer of a route is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKind {
    /// The run's deadline.
    Deadline,
    /// `max_queue_wait` since it was queued.
    QueueWait,
    /// `stall_timeout` since its window was used up.
    Stall,
}

/// A timer: when, which route (cookie and id), what for.
type Timer = Reverse<(Instant, Uuid, u64, TimerKind)>;

/// The broker's routing state.
#[derive(Debug)]
pub struct Switchboard {
    config: SwitchboardConfig,
    clients: HashMap<PeerId, Client>,
    workers: HashMap<PeerId, Worker>,
    routes: HashMap<Uuid, Route>,
    queue: VecDeque<Uuid>,
    /// Bytes of the queued runs (the sum of their `Route::queued_bytes`).
    queued_bytes: usize,
    out: VecDeque<Transmit>,
    completed: u64,
    failed: HashMap<ResultCode, u64>,
    shutting_down: bool,
    /// The latest time the shell gave (none yet: see [`Switchboard::now`]).
    now: Option<Instant>,
    /// Deadlines and queue waits, earliest first; a timer whose route has
    /// gone (or has another id) is skipped when it comes.
    timers: BinaryHeap<Timer>,
    next_route_id: u64,
}

impl Switchboard {
    /// An empty switchboard.
    pub fn new(config: SwitchboardConfig) -> Switchboard {
        Switchboard {
            config,
            clients: HashMap::default(),
            workers: HashMap::default(),
            routes: HashMap::default(),
            queue: VecDeque::new(),
            queued_bytes: 0,
            out: VecDeque::new(),
            completed: 0,
            failed: HashMap::default(),
            shutting_down: false,
            now: None,
            timers: BinaryHeap::new(),
            next_route_id: 0,
        }
    }

    // ---- getters ----

    /// Detached runs whose client has gone, which only a CANCEL can end
    /// early: any client's CANCEL for such a cookie takes the run over (it
    /// is answered like the owner would be). Sorted by cookie.
    pub fn orphans(&self) -> Vec<Orphan> {
        let mut v: Vec<Orphan> = self
            .routes
            .iter()
            .filter(|(_, r)| !self.clients.contains_key(&r.owner))
            .map(|(cookie, r)| Orphan {
                cookie: *cookie,
                pipeline: r
                    .detached_pipeline
                    .clone()
                    .or_else(|| r.run.as_ref().and_then(|p| p.pipeline.clone())),
                running: r.worker.is_some(),
            })
            .collect();
        v.sort_by_key(|o| o.cookie);
        v
    }

    /// Live counters.
    pub fn stats(&self) -> SwitchboardStats {
        let registered = self.workers.values().filter(|w| w.capacity > 0);
        // Free slots per worker: one that re-registered a smaller capacity
        // while busier than that has none free, not a negative number that
        // would hide another worker's free slots.
        let (total, free) = registered.fold((0u64, 0u64), |(t, f), w| {
            (
                t + w.capacity as u64,
                f + w.capacity.saturating_sub(w.busy) as u64,
            )
        });
        let mut failed: Vec<_> = self.failed.iter().map(|(k, v)| (*k, *v)).collect();
        failed.sort_by_key(|(k, _)| k.as_str());
        SwitchboardStats {
            clients: self.clients.len(),
            workers: self.workers.len(),
            total_capacity: total,
            free_capacity: free,
            queued: self.queue.len(),
            queued_bytes: self.queued_bytes,
            running: self.routes.values().filter(|r| r.worker.is_some()).count(),
            routes: self.routes.len(),
            completed: self.completed,
            failed,
        }
    }

    /// Whether `peer` holds anything: a client with runs in flight (or
    /// queued), a worker that has registered or runs something. A legacy
    /// peer that holds nothing may be closed when idle (it cannot be pinged).
    pub fn holds_anything(&self, peer: PeerId) -> bool {
        if let Some(c) = self.clients.get(&peer) {
            return !c.runs.is_empty() || c.queued_bytes > 0;
        }
        self.workers
            .get(&peer)
            .is_some_and(|w| w.capacity > 0 || !w.runs.is_empty())
    }

    /// Whether a run with this cookie is routed (queued or running).
    pub fn is_routed(&self, cookie: &Uuid) -> bool {
        self.routes.contains_key(cookie)
    }

    // ---- inputs ----

    /// A connection arrived on a client or worker listener. `native` says
    /// whether it announced itself with HELLO. Its frames are not checked
    /// against a limit; see [`Switchboard::handle_connect_with`].
    pub fn handle_connect(&mut self, peer: PeerId, side: Side, native: bool) {
        self.handle_connect_with(peer, side, PeerLink::unbounded(native));
    }

    /// A connection arrived, with what is known of its wire: a RUN is only
    /// routed to a worker whose codec and frame limit can carry it.
    pub fn handle_connect_with(&mut self, peer: PeerId, side: Side, link: PeerLink) {
        let native = link.native;
        match side {
            Side::Client => {
                self.clients.insert(
                    peer,
                    Client {
                        native,
                        runs: HashSet::default(),
                        queued_bytes: 0,
                        queued: 0,
                    },
                );
            }
            Side::Worker => {
                self.workers.insert(
                    peer,
                    Worker {
                        native,
                        link,
                        capacity: 0,
                        busy: 0,
                        pipelines: None,
                        name: None,
                        labels: HashSet::default(),
                        runs: HashSet::default(),
                    },
                );
            }
        }
    }

    /// A packet arrived from `peer` at `now`.
    pub fn handle_packet_at(&mut self, peer: PeerId, packet: Packet, now: Instant) {
        self.advance(now);
        self.handle_packet(peer, packet);
    }

    /// Time has come to `now`: runs whose deadline passed are answered
    /// TIMEOUT (and cancelled at their native worker), runs queued longer
    /// than `max_queue_wait` are answered NO_CAPACITY.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
        while let Some(Reverse((at, cookie, id, kind))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            if self.routes.get(&cookie).is_none_or(|r| r.id != id) {
                continue; // its run ended already
            }
            match kind {
                TimerKind::Deadline => self.deadline_passed(cookie),
                TimerKind::QueueWait => self.queue_wait_over(cookie),
                TimerKind::Stall => self.stall_over(cookie, at),
            }
        }
    }

    /// When [`Switchboard::handle_timeout`] must be called next, if ever.
    /// (It may be early: a timer of a run that already ended is skipped.)
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, ..))| *at)
    }

    fn advance(&mut self, now: Instant) {
        if self.now.is_none_or(|t| now > t) {
            self.now = Some(now);
        }
    }

    /// The latest time the shell gave. A shell that never gives one (it
    /// calls only `handle_packet`) gets the system clock, read here and
    /// nowhere else.
    fn now(&self) -> Instant {
        self.now.unwrap_or_else(Instant::now)
    }

    /// A packet arrived from `peer`, at the latest time given (see
    /// [`Switchboard::handle_packet_at`]).
    pub fn handle_packet(&mut self, peer: PeerId, packet: Packet) {
        if self.clients.contains_key(&peer) {
            self.client_packet(peer, packet);
        } else if self.workers.contains_key(&peer) {
            self.worker_packet(peer, packet);
        } else {
            tracing::warn!(peer, "packet from an unknown connection dropped");
        }
    }

    /// `peer` is gone (closed, failed, or dropped by the shell).
    pub fn handle_disconnect(&mut self, peer: PeerId) {
        if let Some(client) = self.clients.remove(&peer) {
            for cookie in client.runs {
                self.orphan(peer, cookie);
            }
        } else if let Some(worker) = self.workers.remove(&peer) {
            for cookie in worker.runs {
                if let Some(route) = self.routes.remove(&cookie) {
                    // The run is over for its client too: otherwise the
                    // cookie stays counted against its per-client limit,
                    // and if another client reuses the cookie, the first
                    // client's disconnect would orphan the new run.
                    self.detach_from_owner(route.owner, &cookie);
                    if route.answer_owner {
                        self.finish_to_owner(
                            route.owner,
                            Packet::error(
                                Some(cookie),
                                ResultCode::WorkerWentAway,
                                "the worker running this pipeline went away",
                            ),
                        );
                    }
                }
            }
            self.answer_unservable_queued();
        }
    }

    // ---- commands ----

    /// Stops taking runs: new RUNs are refused, queued runs are answered
    /// NO_CAPACITY, and native workers are told SHUTDOWN (to drain and leave).
    pub fn begin_shutdown(&mut self) {
        self.shutting_down = true;
        let queued: Vec<Uuid> = self.queue.drain(..).collect();
        for cookie in queued {
            if let Some(route) = self.remove_route(&cookie) {
                self.detach_from_owner(route.owner, &cookie);
                if route.answer_owner {
                    self.finish_to_owner(
                        route.owner,
                        Packet::error(
                            Some(cookie),
                            ResultCode::NoCapacity,
                            "the broker is shutting down",
                        ),
                    );
                }
            }
        }
        let natives: Vec<PeerId> = self
            .workers
            .iter()
            .filter(|(_, w)| w.native)
            .map(|(p, _)| *p)
            .collect();
        for w in natives {
            self.emit(w, Packet::new(PacketType::Shutdown));
        }
    }

    /// Answers every run still open with `rc` (used when a shutdown's grace
    /// period ends) and forgets them.
    pub fn abort_all(&mut self, rc: ResultCode, why: &str) {
        let cookies: Vec<Uuid> = self.routes.keys().copied().collect();
        for cookie in cookies {
            if let Some(route) = self.remove_route(&cookie) {
                if let Some(w) = route.worker.and_then(|w| self.workers.get_mut(&w)) {
                    w.runs.remove(&cookie);
                    w.busy = w.busy.saturating_sub(1);
                }
                self.detach_from_owner(route.owner, &cookie);
                if route.answer_owner {
                    self.finish_to_owner(route.owner, Packet::error(Some(cookie), rc, why));
                }
            }
        }
        self.queue.clear();
    }

    // ---- outputs ----

    /// The next packet to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    // ---- internals ----

    fn client_packet(&mut self, peer: PeerId, p: Packet) {
        match p.packet_type {
            PacketType::Run => self.run(peer, p),
            PacketType::Cancel => self.cancel(peer, p),
            PacketType::Credit => self.credit(peer, p),
            PacketType::Ping => self.emit(peer, Packet::new(PacketType::Pong)),
            PacketType::Pong => {}
            other => {
                tracing::debug!(peer, %other, "packet type not allowed from a client");
                self.emit(
                    peer,
                    Packet::error(
                        p.cookie,
                        ResultCode::UnsupportedPacketType,
                        "Packet type not supported on this client",
                    ),
                );
            }
        }
    }

    fn worker_packet(&mut self, peer: PeerId, p: Packet) {
        match p.packet_type {
            PacketType::Register => self.register(peer, p),
            PacketType::Result => self.result(peer, p),
            PacketType::Event => self.event(peer, p),
            PacketType::Ping => self.emit(peer, Packet::new(PacketType::Pong)),
            PacketType::Pong => {}
            other => {
                tracing::warn!(peer, %other, "packet type not allowed from a worker; dropped");
                if self.workers.get(&peer).is_some_and(|w| w.native) {
                    self.emit(
                        peer,
                        Packet::error(
                            p.cookie,
                            ResultCode::UnsupportedPacketType,
                            "Packet type not supported on this worker",
                        ),
                    );
                }
            }
        }
    }

    fn register(&mut self, peer: PeerId, p: Packet) {
        let max = self.config.max_capacity;
        let capacity = match p.capacity {
            Some(c) if c >= 1 && c <= max as i64 => c as u32,
            other => {
                let got = other.map_or("none".to_owned(), |c| c.to_string());
                tracing::warn!(peer, capacity = %got, "REGISTER refused");
                self.emit(
                    peer,
                    Packet::error(
                        None,
                        ResultCode::BadPacket,
                        format!("capacity must be between 1 and {max}, got {got}"),
                    ),
                );
                return;
            }
        };
        let Some(w) = self.workers.get_mut(&peer) else {
            return;
        };
        w.capacity = capacity;
        w.pipelines = p.pipelines.map(|v| v.into_iter().collect());
        w.name = p.worker;
        w.labels = p.labels.unwrap_or_default().into_iter().collect();
        tracing::debug!(peer, capacity, pipelines = ?w.pipelines, "worker registered");
        // A worker that registers again may serve fewer pipelines than
        // before: queued runs that no worker serves any more are answered,
        // not left waiting forever.
        self.answer_unservable_queued();
        self.dispatch_queued();
    }

    fn run(&mut self, peer: PeerId, p: Packet) {
        let Some(cookie) = p.cookie else {
            return self.finish_to_owner(
                peer,
                Packet::error(None, ResultCode::BadPacket, "Missing cookie"),
            );
        };
        let pipeline = match p.pipeline.as_deref() {
            Some(name) if !name.is_empty() => name,
            _ => {
                return self.finish_to_owner(
                    peer,
                    Packet::error(Some(cookie), ResultCode::BadPacket, "Missing pipeline"),
                )
            }
        };
        if self.routes.contains_key(&cookie) {
            return self.finish_to_owner(
                peer,
                Packet::error(Some(cookie), ResultCode::CookieCollision, "Already in use"),
            );
        }
        if self.shutting_down {
            return self.finish_to_owner(
                peer,
                Packet::error(
                    Some(cookie),
                    ResultCode::NoCapacity,
                    "the broker is shutting down",
                ),
            );
        }
        if !self.workers.values().any(|w| w.can_take(&p)) {
            let answer = self.unservable(cookie, &p);
            return self.finish_to_owner(peer, answer);
        }
        let detached = p.detach == Some(true);
        let chosen = self.least_loaded(&p);
        let size = p.size_hint();
        if chosen.is_none() {
            if let Some(refusal) = self.queue_refusal(peer, size) {
                return self.finish_to_owner(
                    peer,
                    Packet::error(Some(cookie), ResultCode::NoCapacity, refusal),
                );
            }
        }
        if !detached {
            let limit = self.config.max_runs_per_client;
            if self
                .clients
                .get(&peer)
                .is_some_and(|c| c.runs.len() >= limit)
            {
                return self.finish_to_owner(
                    peer,
                    Packet::error(
                        Some(cookie),
                        ResultCode::NoCapacity,
                        format!(
                            "this client already has {limit} runs in flight (the per-client limit)"
                        ),
                    ),
                );
            }
            if let Some(c) = self.clients.get_mut(&peer) {
                c.runs.insert(cookie);
            }
        }
        let limit = p
            .timeout_ms
            .map(Duration::from_millis)
            .or(self.config.default_timeout);
        let id = self.next_route_id;
        self.next_route_id += 1;
        let now = self.now();
        if let Some(at) = limit.and_then(|l| now.checked_add(l)) {
            self.timers
                .push(Reverse((at, cookie, id, TimerKind::Deadline)));
        }
        self.routes.insert(
            cookie,
            Route {
                owner: peer,
                answer_owner: !detached,
                worker: None,
                run: None,
                queued_bytes: 0,
                queued: false,
                detached_pipeline: detached.then(|| pipeline.to_owned()),
                id,
                limit,
                window: None,
                stall_at: None,
            },
        );
        match chosen {
            Some(w) => self.start(cookie, w, p),
            None => {
                let priority = p.priority.unwrap_or(0).min(MAX_PRIORITY);
                if let Some(r) = self.routes.get_mut(&cookie) {
                    r.run = Some(p);
                    r.queued_bytes = size;
                    r.queued = true;
                }
                self.queued_bytes += size;
                if let Some(c) = self.clients.get_mut(&peer) {
                    c.queued_bytes += size;
                    c.queued += 1;
                }
                if let Some(at) = self.config.max_queue_wait.and_then(|w| now.checked_add(w)) {
                    self.timers
                        .push(Reverse((at, cookie, id, TimerKind::QueueWait)));
                }
                self.enqueue(cookie, priority);
            }
        }
    }

    /// Puts a run in the queue behind every run of its priority or higher
    /// (priority 0, the usual case, simply goes last).
    fn enqueue(&mut self, cookie: Uuid, priority: u8) {
        let priority_of = |c: &Uuid| {
            self.routes
                .get(c)
                .and_then(|r| r.run.as_ref())
                .map_or(0, |run| run.priority.unwrap_or(0).min(MAX_PRIORITY))
        };
        let at = self
            .queue
            .iter()
            .rposition(|c| priority_of(c) >= priority)
            .map_or(0, |i| i + 1);
        self.queue.insert(at, cookie);
    }

    /// Why a run of `size` bytes from `peer` may not wait in the queue, if
    /// it may not: the queue is full in runs, or the run would pass the
    /// broker-wide or this client's byte budget.
    fn queue_refusal(&self, peer: PeerId, size: usize) -> Option<String> {
        let c = &self.config;
        if self.queue.len() >= c.queue_limit {
            // ReasonChip's words: legacy clients (and queue_limit 0) see what they always saw.
            return Some("No capacity available".into());
        }
        if self.queued_bytes.saturating_add(size) > c.queue_bytes {
            return Some(format!(
                "no free slot, and the broker's wait queue is full in bytes: {} bytes of runs wait, and this {size}-byte run would pass the {}-byte budget (retry later, send smaller variables, or raise the broker's `queue_bytes`)",
                self.queued_bytes, c.queue_bytes
            ));
        }
        let waiting = self.clients.get(&peer).map_or(0, |c| c.queued);
        // Past its share a client may still queue, as long as that leaves
        // a share's worth of places for the others: one client alone can use
        // most of the queue, and never all of it.
        let share = c.queue_per_client.unwrap_or(c.queue_limit / 4);
        if share > 0 && waiting >= share && self.queue.len() + share >= c.queue_limit {
            return Some(format!(
                "no free slot, and this client's share of the wait queue is spent: {waiting} of its runs wait and the last {share} places are kept for other clients (wait for its runs to finish, or raise the broker's `queue_per_client`)"
            ));
        }
        let mine = self.clients.get(&peer).map_or(0, |c| c.queued_bytes);
        if mine.saturating_add(size) > c.queue_bytes_per_client {
            return Some(format!(
                "no free slot, and this client's share of the wait queue is spent: {mine} bytes of its runs wait, and this {size}-byte run would pass the {}-byte per-client budget (wait for its runs to finish, send smaller variables, or raise the broker's `queue_bytes_per_client`)",
                c.queue_bytes_per_client
            ));
        }
        None
    }

    /// Removes a route, releasing the queue bytes it held if it was queued.
    /// (The caller takes it out of `queue` if it was there.)
    fn remove_route(&mut self, cookie: &Uuid) -> Option<Route> {
        let mut route = self.routes.remove(cookie)?;
        self.release_queued(&mut route);
        Some(route)
    }

    /// The route's run leaves the queue: its bytes leave the budgets.
    fn release_queued(&mut self, route: &mut Route) {
        let size = std::mem::take(&mut route.queued_bytes);
        let counted = std::mem::take(&mut route.queued);
        self.queued_bytes = self.queued_bytes.saturating_sub(size);
        if let Some(c) = self.clients.get_mut(&route.owner) {
            c.queued_bytes = c.queued_bytes.saturating_sub(size);
            if counted {
                c.queued = c.queued.saturating_sub(1);
            }
        }
    }

    /// The answer to a run no registered worker can take: NO_CAPACITY with
    /// no worker at all (ReasonChip's answer), otherwise UNKNOWN_PIPELINE
    /// saying which of its requirements nobody meets.
    fn unservable(&self, cookie: Uuid, run: &Packet) -> Packet {
        if self.workers.values().all(|w| w.capacity == 0) {
            return Packet::error(
                Some(cookie),
                ResultCode::NoCapacity,
                "No capacity available",
            );
        }
        let pipeline = run.pipeline.as_deref().unwrap_or_default();
        let mut who = "no registered worker".to_owned();
        if self.workers.values().any(|w| w.serves(pipeline)) {
            if let Some(name) = &run.worker {
                who.push_str(&format!(" named `{name}`"));
            }
            if let Some(labels) = run.labels.as_ref().filter(|l| !l.is_empty()) {
                who.push_str(&format!(" with labels {}", labels.join(", ")));
            }
        }
        Packet::error(
            Some(cookie),
            ResultCode::UnknownPipeline,
            format!("{who} serves pipeline `{pipeline}`"),
        )
    }

    /// The registered worker that may take `run` with a free slot and the
    /// lowest busy/capacity ratio.
    fn least_loaded(&self, run: &Packet) -> Option<PeerId> {
        self.workers
            .iter()
            .filter(|(_, w)| w.busy < w.capacity && w.can_take(run))
            .min_by(|(ia, a), (ib, b)| {
                (a.busy as u64 * b.capacity as u64)
                    .cmp(&(b.busy as u64 * a.capacity as u64))
                    .then(b.capacity.cmp(&a.capacity))
                    .then(ia.cmp(ib))
            })
            .map(|(id, _)| *id)
    }

    /// Sends a routed run to `worker`, or, if the run cannot fit that
    /// worker's connection, answers it TOO_LARGE and releases its route.
    fn start(&mut self, cookie: Uuid, worker: PeerId, mut run: Packet) {
        if self.routes.get(&cookie).is_some_and(|r| !r.answer_owner) {
            // Nobody takes its events (detached, or its client gone while it
            // waited): nobody would grant more credit, so it has no window.
            run.credit = None;
        }
        let Some(w) = self.workers.get_mut(&worker) else {
            return;
        };
        if let Err(size) = w.link.check_fits(&run) {
            let (max, codec) = (w.link.max_frame, w.link.codec);
            tracing::warn!(worker, %cookie, size, max, %codec, "RUN too large for its worker's connection; answered TOO_LARGE");
            if let Some(route) = self.remove_route(&cookie) {
                self.detach_from_owner(route.owner, &cookie);
                if route.answer_owner {
                    self.finish_to_owner(
                        route.owner,
                        Packet::error(
                            Some(cookie),
                            ResultCode::TooLarge,
                            format!("the run is {size} bytes encoded as {codec} for its worker, over that connection's {max}-byte frame limit (send a smaller payload)"),
                        ),
                    );
                }
            }
            return;
        }
        w.busy += 1;
        w.runs.insert(cookie);
        let native = w.native;
        if let Some(r) = self.routes.get_mut(&cookie) {
            r.worker = Some(worker);
            r.run = None;
            // A legacy worker never sees the window (nor sends events).
            r.window = run.credit.filter(|_| native);
        }
        self.emit(worker, run);
    }

    fn dispatch_queued(&mut self) {
        let mut i = 0;
        while i < self.queue.len() {
            let cookie = self.queue[i];
            let Some(route) = self.routes.get(&cookie) else {
                self.queue.remove(i);
                continue;
            };
            let chosen = route.run.as_ref().and_then(|run| self.least_loaded(run));
            match chosen {
                Some(w) => {
                    self.queue.remove(i);
                    let run = self.take_queued_run(&cookie);
                    if let Some(run) = run {
                        self.start(cookie, w, run);
                    }
                }
                None => i += 1,
            }
            if self.workers.values().all(|w| w.busy >= w.capacity) {
                break;
            }
        }
    }

    /// A queued run leaves its route (to be dispatched): its bytes leave the budgets.
    fn take_queued_run(&mut self, cookie: &Uuid) -> Option<Packet> {
        let mut route = self.routes.remove(cookie)?;
        self.release_queued(&mut route);
        let run = route.run.take();
        self.routes.insert(*cookie, route);
        run
    }

    /// Queued runs that no remaining worker could ever serve are answered.
    fn answer_unservable_queued(&mut self) {
        let stuck: Vec<Uuid> = self
            .queue
            .iter()
            .filter(|c| {
                self.routes
                    .get(c)
                    .and_then(|r| r.run.as_ref())
                    .is_some_and(|run| !self.workers.values().any(|w| w.can_take(run)))
            })
            .copied()
            .collect();
        for cookie in stuck {
            self.queue.retain(|c| *c != cookie);
            if let Some(route) = self.remove_route(&cookie) {
                self.detach_from_owner(route.owner, &cookie);
                if route.answer_owner {
                    let answer = match &route.run {
                        Some(run) => self.unservable(cookie, run),
                        None => Packet::error(
                            Some(cookie),
                            ResultCode::UnknownPipeline,
                            "no registered worker serves it",
                        ),
                    };
                    self.finish_to_owner(route.owner, answer);
                }
            }
        }
    }

    fn cancel(&mut self, peer: PeerId, p: Packet) {
        let Some(cookie) = p.cookie else {
            return self.emit(
                peer,
                Packet::error(None, ResultCode::BadPacket, "Missing cookie"),
            );
        };
        self.adopt_orphan(peer, cookie);
        let Some(route) = self.routes.get_mut(&cookie).filter(|r| r.owner == peer) else {
            return self.emit(
                peer,
                Packet::error(Some(cookie), ResultCode::CookieNotFound, "No such cookie"),
            );
        };
        match route.worker {
            None => {
                let route = self.remove_route(&cookie).expect("route just seen");
                self.queue.retain(|c| *c != cookie);
                self.detach_from_owner(peer, &cookie);
                if route.answer_owner {
                    self.finish_to_owner(
                        peer,
                        Packet::error(
                            Some(cookie),
                            ResultCode::Cancelled,
                            "cancelled while queued",
                        ),
                    );
                }
            }
            Some(w) => {
                let native_worker = self.workers.get(&w).is_some_and(|w| w.native);
                if native_worker {
                    self.emit(w, Packet::cancel(cookie));
                } else {
                    // Forwarding would kill a ReasonChip 0.0.6 worker. Answer
                    // now; the slot stays busy until the worker's RESULT.
                    let was_waiting = std::mem::replace(&mut route.answer_owner, false);
                    self.detach_from_owner(peer, &cookie);
                    if was_waiting {
                        self.finish_to_owner(
                            peer,
                            Packet::error(
                                Some(cookie),
                                ResultCode::Cancelled,
                                "cancelled; the legacy worker finishes the run and its result is discarded",
                            ),
                        );
                    }
                }
            }
        }
    }

    fn result(&mut self, peer: PeerId, p: Packet) {
        let Some(cookie) = p
            .cookie
            .filter(|c| self.routes.get(c).is_some_and(|r| r.worker == Some(peer)))
        else {
            tracing::warn!(peer, cookie = ?p.cookie, "RESULT for a run this worker does not hold; dropped");
            return;
        };
        let route = self.routes.remove(&cookie).expect("route just seen");
        if let Some(w) = self.workers.get_mut(&peer) {
            w.runs.remove(&cookie);
            w.busy = w.busy.saturating_sub(1);
        }
        self.detach_from_owner(route.owner, &cookie);
        if route.answer_owner {
            self.finish_to_owner(route.owner, p);
        } else {
            self.count(p.rc.unwrap_or(ResultCode::Ok));
        }
        self.dispatch_queued();
    }

    fn event(&mut self, peer: PeerId, p: Packet) {
        let Some(route) = p
            .cookie
            .and_then(|c| self.routes.get(&c))
            .filter(|r| r.worker == Some(peer))
        else {
            tracing::debug!(peer, cookie = ?p.cookie, "EVENT for a run this worker does not hold; dropped");
            return;
        };
        let (owner, answer) = (route.owner, route.answer_owner);
        let cookie = p.cookie.unwrap_or_default();
        if answer {
            self.emit(owner, p);
        }
        self.took_window(cookie);
    }

    /// One event of `cookie` went out: its window shrinks, and a window used
    /// up starts the stall clock.
    fn took_window(&mut self, cookie: Uuid) {
        let now = self.now();
        let stall = self.config.stall_timeout;
        let Some(route) = self.routes.get_mut(&cookie) else {
            return;
        };
        let Some(window) = route.window.as_mut() else {
            return;
        };
        *window = window.saturating_sub(1);
        if *window == 0 && route.stall_at.is_none() {
            if let Some(at) = stall.and_then(|s| now.checked_add(s)) {
                route.stall_at = Some(at);
                self.timers
                    .push(Reverse((at, cookie, route.id, TimerKind::Stall)));
            }
        }
    }

    /// A run's client took none of its events for `stall_timeout`: the run
    /// is cancelled at its worker and its client answered CANCELLED, so a
    /// client that stopped reading cannot hold a worker slot for ever.
    fn stall_over(&mut self, cookie: Uuid, at: Instant) {
        let Some(route) = self.routes.get_mut(&cookie) else {
            return;
        };
        if route.stall_at != Some(at) || route.window != Some(0) {
            return; // credit came meanwhile
        }
        route.stall_at = None;
        let (owner, worker) = (route.owner, route.worker);
        let was_waiting = std::mem::replace(&mut route.answer_owner, false);
        if let Some(w) = worker.filter(|w| self.workers.get(w).is_some_and(|w| w.native)) {
            self.emit(w, Packet::cancel(cookie));
        }
        self.detach_from_owner(owner, &cookie);
        if was_waiting {
            let stall = self.config.stall_timeout.unwrap_or_default();
            self.finish_to_owner(
                owner,
                Packet::error(
                    Some(cookie),
                    ResultCode::Cancelled,
                    format!("the client took none of the run's events for {stall:?} (the broker's stall_timeout); it was cancelled at its worker"),
                ),
            );
        }
    }

    /// The owner `owner` stopped waiting for `cookie` (it disconnected).
    fn orphan(&mut self, owner: PeerId, cookie: Uuid) {
        let Some(route) = self.routes.get_mut(&cookie).filter(|r| r.owner == owner) else {
            return;
        };
        route.answer_owner = false;
        match route.worker {
            None => {
                self.remove_route(&cookie);
                self.queue.retain(|c| *c != cookie);
            }
            Some(w) => {
                if self.workers.get(&w).is_some_and(|w| w.native) {
                    self.emit(w, Packet::cancel(cookie));
                }
            }
        }
    }

    /// A client grants more events of its run: passed to the native worker
    /// running it, or added to the queued RUN's window. A CREDIT for a run
    /// the client does not own (it ended meanwhile) needs no answer.
    fn credit(&mut self, peer: PeerId, p: Packet) {
        let (Some(cookie), Some(more)) = (p.cookie, p.credit) else {
            return self.emit(
                peer,
                Packet::error(
                    p.cookie,
                    ResultCode::BadPacket,
                    "CREDIT needs a cookie and a credit",
                ),
            );
        };
        let Some(route) = self.routes.get_mut(&cookie).filter(|r| r.owner == peer) else {
            tracing::debug!(peer, %cookie, "CREDIT for a run that has ended; dropped");
            return;
        };
        match (route.worker, route.run.as_mut()) {
            (Some(w), _) => {
                if let Some(window) = route.window.as_mut() {
                    *window = window.saturating_add(more);
                    route.stall_at = None;
                }
                if self.workers.get(&w).is_some_and(|w| w.native) {
                    self.emit(w, Packet::credit(cookie, more));
                }
            }
            (None, Some(run)) => {
                if let Some(window) = run.credit.as_mut() {
                    *window = window.saturating_add(more);
                }
            }
            (None, None) => {}
        }
    }

    /// A client's CANCEL for a run whose client has gone (a detached run,
    /// an orphan) makes that client its owner, waiting for its RESULT, so
    /// the cancel is answered to it as to an owner. A cookie some connected
    /// client owns is left alone.
    fn adopt_orphan(&mut self, peer: PeerId, cookie: Uuid) {
        let Some(route) = self.routes.get_mut(&cookie) else {
            return;
        };
        if route.owner == peer || self.clients.contains_key(&route.owner) {
            return;
        }
        let Some(client) = self.clients.get_mut(&peer) else {
            return; // only clients cancel
        };
        route.owner = peer;
        route.answer_owner = true;
        client.runs.insert(cookie);
        // What it holds of the queue is now counted against its new owner
        // (and released from there when it leaves the queue).
        client.queued_bytes += route.queued_bytes;
        if route.queued {
            client.queued += 1;
        }
    }

    /// A run's deadline passed: queued, it leaves the queue; running, it is
    /// cancelled at its native worker (a legacy one would exit) and its slot
    /// stays busy until the worker's RESULT, which is then dropped. Its
    /// client is answered TIMEOUT now, either way.
    fn deadline_passed(&mut self, cookie: Uuid) {
        let Some(route) = self.routes.get_mut(&cookie) else {
            return;
        };
        let limit = route.limit.unwrap_or_default();
        let (owner, was_waiting) = (
            route.owner,
            std::mem::replace(&mut route.answer_owner, false),
        );
        let why = match route.worker {
            None => {
                self.remove_route(&cookie);
                self.queue.retain(|c| *c != cookie);
                format!(
                    "the run's deadline ({limit:?}) passed while it waited for a free worker slot"
                )
            }
            Some(w) => {
                if self.workers.get(&w).is_some_and(|w| w.native) {
                    self.emit(w, Packet::cancel(cookie));
                }
                format!("the run's deadline ({limit:?}) passed while it ran; it was cancelled at its worker")
            }
        };
        self.detach_from_owner(owner, &cookie);
        if was_waiting {
            self.finish_to_owner(owner, Packet::error(Some(cookie), ResultCode::Timeout, why));
        }
    }

    /// A run waited in the queue for `max_queue_wait`: answered NO_CAPACITY.
    fn queue_wait_over(&mut self, cookie: Uuid) {
        if self.routes.get(&cookie).is_none_or(|r| r.worker.is_some()) {
            return; // it started meanwhile
        }
        let Some(route) = self.remove_route(&cookie) else {
            return;
        };
        self.queue.retain(|c| *c != cookie);
        self.detach_from_owner(route.owner, &cookie);
        if route.answer_owner {
            let wait = self.config.max_queue_wait.unwrap_or_default();
            self.finish_to_owner(
                route.owner,
                Packet::error(
                    Some(cookie),
                    ResultCode::NoCapacity,
                    format!("no worker slot freed within the broker's max_queue_wait ({wait:?}); retry later"),
                ),
            );
        }
    }

    fn detach_from_owner(&mut self, owner: PeerId, cookie: &Uuid) {
        if let Some(c) = self.clients.get_mut(&owner) {
            c.runs.remove(cookie);
        }
    }

    fn finish_to_owner(&mut self, owner: PeerId, result: Packet) {
        self.count(result.rc.unwrap_or(ResultCode::Ok));
        self.emit(owner, result);
    }

    fn count(&mut self, rc: ResultCode) {
        if rc == ResultCode::Ok {
            self.completed += 1;
        } else {
            *self.failed.entry(rc).or_default() += 1;
        }
    }

    /// Queues `packet` for `to`, in the form that peer understands.
    fn emit(&mut self, to: PeerId, packet: Packet) {
        let native = self
            .clients
            .get(&to)
            .map(|c| c.native)
            .or_else(|| self.workers.get(&to).map(|w| w.native));
        let packet = match native {
            None => return, // gone
            Some(true) => packet,
            Some(false) => match packet.to_legacy() {
                Some(p) => p,
                None => return,
            },
        };
        self.out.push_back(Transmit { to, packet });
    }
}
