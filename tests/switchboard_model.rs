//! A randomized model test of the switchboard: long random sequences of
//! connects, registers, runs, cancels, results, events and disconnects, with
//! simulated workers that behave like plexwire workers (native: answer CANCEL
//! with RESULT CANCELLED) or like ReasonChip 0.0.6 workers (legacy: finish the
//! run). Checked after every sequence:
//!
//! - every RUN from a client that stayed connected got exactly one final RESULT
//!   (detached runs none), and no client got a RESULT twice for one cookie;
//! - legacy peers never received a native packet type or result code;
//! - no worker was sent a RUN its connection cannot carry: some workers have
//!   a small frame limit, some speak bincode, and some runs carry control
//!   bytes that grow sixfold as JSON — such a run is answered TOO_LARGE;
//! - after every step, free capacity is what the workers really have free
//!   (each registered worker's capacity less what it holds, never below
//!   zero — workers re-REGISTER with another capacity while busy), and the
//!   queue's bytes stay within their budgets;
//! - once the workers have answered everything they hold, free capacity equals
//!   total capacity, and no route, queue entry or queued byte is left.
//!
//! Some runs carry an event window and clients send CREDITs: a CREDIT only
//! ever reaches the native worker holding its run, and a run nobody waits
//! for is sent with no window; runs whose window is used up are cancelled
//! after a random stall timeout, still answered once.
//!
//! Time is virtual: some runs carry a deadline (`timeout_ms`), the broker may
//! have a default deadline and a maximum queue wait, and `Advance` steps move
//! the clock and call `handle_timeout`. A run answered TIMEOUT while running
//! still gets no second RESULT when its worker's late one arrives.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use plexwire::broker::{PeerId, PeerLink, Side, Switchboard, SwitchboardConfig};
use plexwire::codec::{AnyCodec, Codec, CodecKind};
use plexwire::protocol::{Packet, PacketType, Payload, ResultCode};
use proptest::prelude::*;
use uuid::Uuid;

const PIPELINES: [&str; 3] = ["a", "b", "c"];

#[derive(Debug, Clone)]
enum Op {
    ConnectClient {
        native: bool,
    },
    ConnectWorker {
        native: bool,
        capacity: i64,
        serves: Option<Vec<usize>>,
        /// A small frame limit (and, for a native worker, bincode).
        small: bool,
    },
    Run {
        client: usize,
        pipeline: usize,
        detach: bool,
        reuse_cookie: bool,
        /// Variables of control bytes: fine raw, too large as JSON for a small worker.
        big: bool,
        /// `timeout_ms`, if any.
        timeout_ms: Option<u64>,
    },
    /// Virtual time passes.
    Advance {
        ms: u64,
    },
    /// A client grants more events of one of its runs (or of a made-up
    /// cookie).
    Credit {
        client: usize,
        which: usize,
        more: u32,
    },
    Cancel {
        client: usize,
        which: usize,
    },
    WorkerFinishes {
        worker: usize,
        which: usize,
        ok: bool,
    },
    WorkerEvent {
        worker: usize,
        which: usize,
    },
    BogusResult {
        worker: usize,
    },
    DisconnectClient {
        client: usize,
    },
    DisconnectWorker {
        worker: usize,
    },
    /// A worker registers again, with another capacity (and pipelines).
    Reregister {
        worker: usize,
        capacity: i64,
        serves: Option<Vec<usize>>,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => any::<bool>().prop_map(|native| Op::ConnectClient { native }),
        1 => (any::<bool>(), 0i64..5, proptest::option::of(proptest::collection::vec(0usize..3, 1..3)), proptest::bool::weighted(0.3))
            .prop_map(|(native, capacity, serves, small)| Op::ConnectWorker { native, capacity, serves, small }),
        6 => (0usize..8, 0usize..3, proptest::bool::weighted(0.1), proptest::bool::weighted(0.05), proptest::bool::weighted(0.15), proptest::option::weighted(0.3, 0u64..40))
            .prop_map(|(client, pipeline, detach, reuse_cookie, big, timeout_ms)| Op::Run { client, pipeline, detach, reuse_cookie, big, timeout_ms }),
        2 => (0u64..25).prop_map(|ms| Op::Advance { ms }),
        1 => (0usize..8, 0usize..16, 1u32..100).prop_map(|(client, which, more)| Op::Credit { client, which, more }),
        2 => (0usize..8, 0usize..16).prop_map(|(client, which)| Op::Cancel { client, which }),
        5 => (0usize..6, 0usize..16, proptest::bool::weighted(0.8)).prop_map(|(worker, which, ok)| Op::WorkerFinishes { worker, which, ok }),
        3 => (0usize..6, 0usize..16).prop_map(|(worker, which)| Op::WorkerEvent { worker, which }),
        1 => (0usize..6).prop_map(|worker| Op::BogusResult { worker }),
        1 => (0usize..8).prop_map(|client| Op::DisconnectClient { client }),
        1 => (0usize..6).prop_map(|worker| Op::DisconnectWorker { worker }),
        1 => (0usize..6, 0i64..5, proptest::option::of(proptest::collection::vec(0usize..3, 1..3)))
            .prop_map(|(worker, capacity, serves)| Op::Reregister { worker, capacity, serves }),
    ]
}

/// A run as its client sees it: (detached, results received, last rc).
type Sent = (bool, u32, Option<ResultCode>);

#[derive(Default)]
struct Model {
    clients: Vec<(PeerId, bool)>, // (peer, native), connected ones
    workers: Vec<(PeerId, bool)>,
    gone: HashSet<PeerId>,
    next_peer: PeerId,
    /// Runs each worker has been handed and not yet answered.
    held: HashMap<PeerId, Vec<Uuid>>,
    /// Cancels a native worker has received and must answer.
    cancels: HashMap<PeerId, Vec<Uuid>>,
    /// Runs sent by each client.
    sent: HashMap<PeerId, HashMap<Uuid, Sent>>,
    native: HashMap<PeerId, bool>,
    /// Each worker's wire, to check what it is sent.
    links: HashMap<PeerId, PeerLink>,
    /// Each worker's registered capacity (0 until a valid REGISTER).
    capacity: HashMap<PeerId, i64>,
    last_cookie: Option<Uuid>,
    /// The virtual clock.
    now: Option<Instant>,
}

/// The frame limit of a "small" worker: a big run fits it as bincode, not as JSON.
const SMALL_FRAME: usize = 1500;

/// The largest capacity the model's switchboard accepts.
const MAX_CAPACITY: i64 = 3;

/// The model's byte budgets for the wait queue: a few small runs each.
const QUEUE_BYTES: usize = 2000;
const QUEUE_BYTES_PER_CLIENT: usize = 1200;

impl Model {
    /// The virtual clock's time (it starts at the first call).
    fn clock(&mut self) -> Instant {
        *self.now.get_or_insert_with(Instant::now)
    }

    fn peer(&mut self) -> PeerId {
        self.next_peer += 1;
        self.next_peer
    }

    fn pump(&mut self, s: &mut Switchboard) -> Result<(), TestCaseError> {
        while let Some(t) = s.poll_transmit() {
            prop_assert!(
                !self.gone.contains(&t.to),
                "packet for a disconnected peer: {t:?}"
            );
            let native = self.native[&t.to];
            if !native {
                prop_assert!(
                    !t.packet.is_native(),
                    "native packet to legacy peer: {:?}",
                    t.packet
                );
            }
            if let Some(link) = self.links.get(&t.to) {
                let size = AnyCodec::new(link.codec)
                    .unwrap()
                    .encoded_len(&t.packet)
                    .unwrap();
                prop_assert!(
                    size <= link.max_frame,
                    "a {size}-byte {} sent to a worker whose limit is {}",
                    t.packet.packet_type,
                    link.max_frame
                );
            }
            match t.packet.packet_type {
                PacketType::Run => {
                    let c = t.packet.cookie.unwrap();
                    let detached = self
                        .sent
                        .values()
                        .find_map(|m| m.get(&c))
                        .is_none_or(|(detached, ..)| *detached);
                    prop_assert!(
                        !(detached && t.packet.credit.is_some()),
                        "a run nobody waits for was sent with an event window"
                    );
                    self.held.entry(t.to).or_default().push(c);
                }
                PacketType::Credit => {
                    prop_assert!(native, "CREDIT sent to a legacy peer");
                    let c = t.packet.cookie.unwrap();
                    prop_assert!(
                        self.held.get(&t.to).is_some_and(|h| h.contains(&c)),
                        "CREDIT for {} sent to a worker that does not hold it",
                        c
                    );
                }
                PacketType::Cancel => {
                    prop_assert!(native, "CANCEL sent to a legacy worker");
                    self.cancels
                        .entry(t.to)
                        .or_default()
                        .push(t.packet.cookie.unwrap());
                }
                // COOKIE_NOT_FOUND answers a CANCEL, not a run.
                PacketType::Result if t.packet.rc != Some(ResultCode::CookieNotFound) => {
                    if let Some(c) = t.packet.cookie {
                        if let Some(entry) = self.sent.get_mut(&t.to).and_then(|m| m.get_mut(&c)) {
                            entry.1 += 1;
                            entry.2 = t.packet.rc;
                            prop_assert!(entry.1 <= 1, "two RESULTs for {c}");
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// A worker sends REGISTER; a valid capacity replaces its old one.
    fn register(
        &mut self,
        s: &mut Switchboard,
        w: PeerId,
        capacity: i64,
        pipelines: Option<Vec<String>>,
    ) {
        if (1..=MAX_CAPACITY).contains(&capacity) {
            self.capacity.insert(w, capacity);
        }
        s.handle_packet(w, Packet::register(capacity, pipelines));
    }

    /// Free capacity as the workers have it: per registered worker, its
    /// capacity less the runs it holds, never below zero.
    fn check_capacity(&self, s: &Switchboard) -> Result<(), TestCaseError> {
        let free: i64 = self
            .workers
            .iter()
            .map(|(w, _)| {
                let cap = self.capacity.get(w).copied().unwrap_or(0);
                let held = self.held.get(w).map_or(0, Vec::len) as i64;
                (cap - held).max(0)
            })
            .sum();
        let st = s.stats();
        prop_assert_eq!(st.free_capacity as i64, free, "free capacity: {:?}", st);
        prop_assert!(st.queued_bytes <= QUEUE_BYTES, "queue bytes: {:?}", st);
        Ok(())
    }

    fn worker_answer(
        &mut self,
        s: &mut Switchboard,
        w: PeerId,
        cookie: Uuid,
        ok: bool,
    ) -> Result<(), TestCaseError> {
        if let Some(h) = self.held.get_mut(&w) {
            h.retain(|c| *c != cookie);
        }
        let p = if ok {
            Packet::ok(cookie, Some(Payload::from_json_text("1")))
        } else {
            Packet::error(Some(cookie), ResultCode::ProcessorException, "boom")
        };
        s.handle_packet(w, p);
        self.pump(s)
    }

    /// Applies `op`, then checks the invariants that hold after every step.
    fn apply(&mut self, s: &mut Switchboard, op: Op) -> Result<(), TestCaseError> {
        self.apply_op(s, op)?;
        self.check_capacity(s)
    }

    fn apply_op(&mut self, s: &mut Switchboard, op: Op) -> Result<(), TestCaseError> {
        match op {
            Op::ConnectClient { native } => {
                let p = self.peer();
                self.native.insert(p, native);
                self.clients.push((p, native));
                s.handle_connect(p, Side::Client, native);
            }
            Op::ConnectWorker {
                native,
                capacity,
                serves,
                small,
            } => {
                let p = self.peer();
                self.native.insert(p, native);
                self.workers.push((p, native));
                let link = PeerLink {
                    native,
                    codec: if small && native {
                        CodecKind::Bincode
                    } else {
                        CodecKind::Json
                    },
                    max_frame: if small { SMALL_FRAME } else { 16 << 20 },
                };
                self.links.insert(p, link);
                s.handle_connect_with(p, Side::Worker, link);
                let pipelines = if native {
                    serves.map(|v| v.into_iter().map(|i| PIPELINES[i].to_owned()).collect())
                } else {
                    None
                };
                self.register(s, p, capacity, pipelines);
            }
            Op::Reregister {
                worker,
                capacity,
                serves,
            } => {
                let Some(&(w, native)) = self.workers.get(worker % self.workers.len().max(1))
                else {
                    return Ok(());
                };
                let pipelines = if native {
                    serves.map(|v| v.into_iter().map(|i| PIPELINES[i].to_owned()).collect())
                } else {
                    None
                };
                self.register(s, w, capacity, pipelines);
            }
            Op::Run {
                client,
                pipeline,
                detach,
                reuse_cookie,
                big,
                timeout_ms,
            } => {
                let Some(&(p, _)) = self.clients.get(client % self.clients.len().max(1)) else {
                    return Ok(());
                };
                let cookie = match (reuse_cookie, self.last_cookie) {
                    (true, Some(c)) => c,
                    _ => Uuid::new_v4(),
                };
                self.last_cookie = Some(cookie);
                // A cookie is free again once its run has ended.
                let fresh = !s.is_routed(&cookie);
                if fresh {
                    for runs in self.sent.values_mut() {
                        if let Some((detached, results, _)) = runs.remove(&cookie) {
                            prop_assert!(
                                detached || results == 1,
                                "cookie {} reusable before its RESULT",
                                cookie
                            );
                        }
                    }
                    self.sent
                        .entry(p)
                        .or_default()
                        .insert(cookie, (detach, 0, None));
                }
                let variables =
                    big.then(|| Payload::from_utf8_bytes(Bytes::from(vec![1u8; 400])).unwrap());
                let mut run = Packet::run(cookie, PIPELINES[pipeline], variables, detach);
                run.timeout_ms = timeout_ms;
                run.credit = (!detach && pipeline != 0).then_some(1);
                let now = self.clock();
                s.handle_packet_at(p, run, now);
                if !fresh {
                    // A collision: answered with COOKIE_COLLISION, not counted as this run's result.
                    while let Some(t) = s.poll_transmit() {
                        if t.to == p
                            && t.packet.cookie == Some(cookie)
                            && t.packet.packet_type == PacketType::Result
                        {
                            prop_assert_eq!(t.packet.rc, Some(ResultCode::CookieCollision));
                        } else {
                            // Not expected: a collision produces only its answer.
                            prop_assert!(false, "unexpected transmit on collision: {:?}", t);
                        }
                    }
                }
            }
            Op::Advance { ms } => {
                let now = self.clock() + Duration::from_millis(ms);
                self.now = Some(now);
                s.handle_timeout(now);
            }
            Op::Cancel { client, which } => {
                let Some(&(p, _)) = self.clients.get(client % self.clients.len().max(1)) else {
                    return Ok(());
                };
                let mine: Vec<Uuid> = self
                    .sent
                    .get(&p)
                    .map(|m| m.keys().copied().collect())
                    .unwrap_or_default();
                let cookie = if mine.is_empty() || which >= mine.len() + 2 {
                    Uuid::new_v4()
                } else {
                    mine[which % mine.len()]
                };
                s.handle_packet(p, Packet::cancel(cookie));
            }
            Op::Credit {
                client,
                which,
                more,
            } => {
                let Some(&(p, _)) = self.clients.get(client % self.clients.len().max(1)) else {
                    return Ok(());
                };
                let mine: Vec<Uuid> = self
                    .sent
                    .get(&p)
                    .map(|m| m.keys().copied().collect())
                    .unwrap_or_default();
                let cookie = if mine.is_empty() || which >= mine.len() + 2 {
                    Uuid::new_v4()
                } else {
                    mine[which % mine.len()]
                };
                s.handle_packet(p, Packet::credit(cookie, more));
            }
            Op::WorkerFinishes { worker, which, ok } => {
                let Some(&(w, _)) = self.workers.get(worker % self.workers.len().max(1)) else {
                    return Ok(());
                };
                // A native worker answers pending cancels first.
                if let Some(c) = self.cancels.get_mut(&w).and_then(|v| v.pop()) {
                    if self.held.get(&w).is_some_and(|h| h.contains(&c)) {
                        if let Some(h) = self.held.get_mut(&w) {
                            h.retain(|x| *x != c);
                        }
                        s.handle_packet(
                            w,
                            Packet::error(Some(c), ResultCode::Cancelled, "cancelled"),
                        );
                    }
                    return self.pump(s);
                }
                let Some(h) = self.held.get(&w).filter(|h| !h.is_empty()) else {
                    return Ok(());
                };
                let cookie = h[which % h.len()];
                return self.worker_answer(s, w, cookie, ok);
            }
            Op::WorkerEvent { worker, which } => {
                let Some(&(w, _)) = self.workers.get(worker % self.workers.len().max(1)) else {
                    return Ok(());
                };
                let Some(h) = self.held.get(&w).filter(|h| !h.is_empty()) else {
                    return Ok(());
                };
                s.handle_packet(
                    w,
                    Packet::event(h[which % h.len()], Payload::from_json_text("0")),
                );
            }
            Op::BogusResult { worker } => {
                let Some(&(w, _)) = self.workers.get(worker % self.workers.len().max(1)) else {
                    return Ok(());
                };
                s.handle_packet(w, Packet::ok(Uuid::new_v4(), None));
            }
            Op::DisconnectClient { client } => {
                if self.clients.is_empty() {
                    return Ok(());
                }
                let (p, _) = self.clients.remove(client % self.clients.len());
                self.gone.insert(p);
                self.sent.remove(&p);
                s.handle_disconnect(p);
            }
            Op::DisconnectWorker { worker } => {
                if self.workers.is_empty() {
                    return Ok(());
                }
                let (w, _) = self.workers.remove(worker % self.workers.len());
                self.gone.insert(w);
                self.held.remove(&w);
                self.cancels.remove(&w);
                s.handle_disconnect(w);
            }
        }
        self.pump(s)
    }

    /// Workers answer everything they hold (cancels first), until quiet.
    fn settle(&mut self, s: &mut Switchboard) -> Result<(), TestCaseError> {
        for _ in 0..10_000 {
            let Some((w, cookie, cancelled)) = self.workers.iter().find_map(|(w, _)| {
                let held = self.held.get(w)?;
                let cancelled = self
                    .cancels
                    .get(w)
                    .and_then(|c| c.iter().find(|c| held.contains(c)).copied());
                cancelled
                    .map(|c| (*w, c, true))
                    .or_else(|| held.first().map(|c| (*w, *c, false)))
            }) else {
                return Ok(());
            };
            if cancelled {
                self.held.get_mut(&w).unwrap().retain(|c| *c != cookie);
                s.handle_packet(
                    w,
                    Packet::error(Some(cookie), ResultCode::Cancelled, "cancelled"),
                );
                self.pump(s)?;
            } else {
                self.worker_answer(s, w, cookie, true)?;
            }
        }
        Err(TestCaseError::fail("workers never settled"))
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn every_run_answered_once_and_nothing_leaks(
        queue_limit in 0usize..4,
        queue_per_client in proptest::option::of(1usize..4),
        default_timeout in proptest::option::weighted(0.2, 1u64..60),
        max_queue_wait in proptest::option::weighted(0.2, 1u64..60),
        stall_timeout in proptest::option::weighted(0.5, 1u64..60),
        ops in proptest::collection::vec(op(), 1..250),
    ) {
        let mut s = Switchboard::new(SwitchboardConfig {
            queue_limit,
            queue_per_client,
            default_timeout: default_timeout.map(Duration::from_millis),
            max_queue_wait: max_queue_wait.map(Duration::from_millis),
            stall_timeout: stall_timeout.map(Duration::from_millis),
            max_capacity: MAX_CAPACITY as u32,
            queue_bytes: QUEUE_BYTES,
            queue_bytes_per_client: QUEUE_BYTES_PER_CLIENT,
            ..SwitchboardConfig::default()
        });
        let mut m = Model::default();
        m.apply(&mut s, Op::ConnectClient { native: true })?;
        for op in ops {
            m.apply(&mut s, op)?;
        }
        m.settle(&mut s)?;
        // Every run of a connected client: exactly one RESULT. A detached run
        // gets none, unless the broker refused to start it.
        for (client, runs) in &m.sent {
            for (cookie, (detached, results, rc)) in runs {
                if *detached {
                    let refused = matches!(rc, Some(ResultCode::NoCapacity | ResultCode::UnknownPipeline));
                    prop_assert!(*results == 0 || (*results == 1 && refused), "detached run {} got {} results, last {:?}", cookie, results, rc);
                } else {
                    prop_assert_eq!(*results, 1, "client {} run {}", client, cookie);
                }
            }
        }
        let st = s.stats();
        prop_assert_eq!(st.free_capacity, st.total_capacity, "capacity leaked: {:?}", st);
        prop_assert_eq!((st.routes, st.queued, st.running, st.queued_bytes), (0, 0, 0, 0), "routes leaked: {:?}", st);
    }
}
