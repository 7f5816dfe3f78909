//! The switchboard's rules, one test each. No sockets, no tokio.

use plexwire::broker::{PeerId, Side, Switchboard, SwitchboardConfig, Transmit};
use plexwire::protocol::{Packet, PacketType, Payload, ResultCode};
use uuid::Uuid;

const C: PeerId = 1; // native client
const L: PeerId = 2; // legacy client
const W: PeerId = 10; // native worker
const X: PeerId = 11; // legacy worker

fn sb(queue_limit: usize) -> Switchboard {
    Switchboard::new(SwitchboardConfig {
        queue_limit,
        max_capacity: 1000,
        ..SwitchboardConfig::default()
    })
}

fn drain(s: &mut Switchboard) -> Vec<Transmit> {
    std::iter::from_fn(|| s.poll_transmit()).collect()
}

fn run(pipeline: &str) -> (Uuid, Packet) {
    let c = Uuid::new_v4();
    (
        c,
        Packet::run(c, pipeline, Some(Payload::from_json_text("{}")), false),
    )
}

fn rc_to(out: &[Transmit], to: PeerId) -> Vec<ResultCode> {
    out.iter()
        .filter(|t| t.to == to && t.packet.packet_type == PacketType::Result)
        .filter_map(|t| t.packet.rc)
        .collect()
}

fn setup(s: &mut Switchboard) {
    s.handle_connect(C, Side::Client, true);
    s.handle_connect(L, Side::Client, false);
}

#[test]
fn register_needs_a_sane_capacity() {
    let mut s = sb(0);
    s.handle_connect(W, Side::Worker, true);
    for bad in [None, Some(0), Some(-1), Some(100_000_000)] {
        s.handle_packet(
            W,
            Packet {
                capacity: bad,
                ..Packet::new(PacketType::Register)
            },
        );
        let out = drain(&mut s);
        assert_eq!(rc_to(&out, W), vec![ResultCode::BadPacket], "{bad:?}");
        assert!(out[0]
            .packet
            .error
            .as_ref()
            .unwrap()
            .contains("between 1 and 1000"));
    }
    assert_eq!(s.stats().total_capacity, 0);
    s.handle_packet(W, Packet::register(3, None));
    assert!(drain(&mut s).is_empty());
    assert_eq!((s.stats().total_capacity, s.stats().free_capacity), (3, 3));
}

#[test]
fn run_needs_cookie_and_pipeline() {
    let mut s = sb(0);
    setup(&mut s);
    s.handle_packet(
        C,
        Packet {
            cookie: None,
            ..run("p").1
        },
    );
    let out = drain(&mut s);
    assert_eq!(
        (out[0].packet.rc, out[0].packet.error.as_deref()),
        (Some(ResultCode::BadPacket), Some("Missing cookie"))
    );
    let (c, mut p) = run("p");
    p.pipeline = Some(String::new());
    s.handle_packet(L, p);
    let out = drain(&mut s);
    assert_eq!(out[0].packet.cookie, Some(c));
    assert_eq!(out[0].packet.error.as_deref(), Some("Missing pipeline"));
}

#[test]
fn least_loaded_worker_wins() {
    let mut s = sb(0);
    setup(&mut s);
    s.handle_connect(W, Side::Worker, true);
    s.handle_connect(X, Side::Worker, true);
    s.handle_packet(W, Packet::register(2, None));
    s.handle_packet(X, Packet::register(4, None));
    let mut to = Vec::new();
    for _ in 0..6 {
        s.handle_packet(C, run("p").1);
        to.extend(drain(&mut s).into_iter().map(|t| t.to));
    }
    // Ties go to the bigger worker; then load ratios stay balanced.
    assert_eq!(to, vec![X, W, X, X, W, X]);
    s.handle_packet(C, run("p").1);
    assert_eq!(rc_to(&drain(&mut s), C), vec![ResultCode::NoCapacity]);
}

#[test]
fn cookie_collision_across_clients() {
    let mut s = sb(0);
    setup(&mut s);
    s.handle_connect(W, Side::Worker, false);
    s.handle_packet(W, Packet::register(4, None));
    let (_, p) = run("p");
    s.handle_packet(C, p.clone());
    drain(&mut s);
    s.handle_packet(L, p);
    let out = drain(&mut s);
    assert_eq!(rc_to(&out, L), vec![ResultCode::CookieCollision]);
    assert_eq!(out[0].packet.error.as_deref(), Some("Already in use"));
}

#[test]
fn unknown_pipeline_is_native_only() {
    let mut s = sb(4);
    setup(&mut s);
    // No worker at all: NO_CAPACITY for everyone, as ReasonChip.
    s.handle_packet(C, run("p").1);
    assert_eq!(rc_to(&drain(&mut s), C), vec![ResultCode::NoCapacity]);
    s.handle_connect(W, Side::Worker, true);
    s.handle_packet(W, Packet::register(1, Some(vec!["echo".into()])));
    s.handle_packet(C, run("nope").1);
    let out = drain(&mut s);
    assert_eq!(rc_to(&out, C), vec![ResultCode::UnknownPipeline]);
    assert!(out[0].packet.error.as_ref().unwrap().contains("`nope`"));
    s.handle_packet(L, run("nope").1);
    let out = drain(&mut s);
    assert_eq!(
        rc_to(&out, L),
        vec![ResultCode::NoCapacity],
        "legacy clients never see UNKNOWN_PIPELINE"
    );
    assert!(out[0]
        .packet
        .error
        .as_ref()
        .unwrap()
        .starts_with("UNKNOWN_PIPELINE: "));
}

#[test]
fn bounded_queue_dispatches_in_order() {
    let mut s = sb(2);
    setup(&mut s);
    s.handle_connect(W, Side::Worker, true);
    s.handle_packet(W, Packet::register(1, None));
    let (a, pa) = run("p");
    let (b, pb) = run("p");
    let (c, pc) = run("p");
    let (d, pd) = run("p");
    for p in [pa, pb, pc, pd] {
        s.handle_packet(C, p);
    }
    let out = drain(&mut s);
    assert_eq!(out.len(), 2, "a dispatched, d refused: {out:?}");
    assert_eq!((out[0].to, out[0].packet.cookie), (W, Some(a)));
    assert_eq!(
        (out[1].packet.cookie, out[1].packet.rc),
        (Some(d), Some(ResultCode::NoCapacity))
    );
    assert_eq!(s.stats().queued, 2);
    s.handle_packet(W, Packet::ok(a, None));
    let out = drain(&mut s);
    assert_eq!(
        out.iter()
            .map(|t| (t.to, t.packet.cookie.unwrap()))
            .collect::<Vec<_>>(),
        vec![(C, a), (W, b)]
    );
    s.handle_packet(W, Packet::ok(b, None));
    let out = drain(&mut s);
    assert_eq!(out[1].packet.cookie, Some(c));
}

#[test]
fn queue_zero_is_reasonchips_immediate_no_capacity() {
    let mut s = sb(0);
    setup(&mut s);
    s.handle_connect(X, Side::Worker, false);
    s.handle_packet(X, Packet::register(1, None));
    s.handle_packet(L, run("p").1);
    s.handle_packet(L, run("p").1);
    let out = drain(&mut s);
    assert_eq!(out[1].packet.rc, Some(ResultCode::NoCapacity));
    assert_eq!(
        out[1].packet.error.as_deref(),
        Some("No capacity available")
    );
}

#[test]
fn cancel_queued_is_answered_by_the_broker() {
    let mut s = sb(4);
    setup(&mut s);
    s.handle_connect(W, Side::Worker, true);
    s.handle_packet(W, Packet::register(1, None));
    s.handle_packet(C, run("p").1);
    let (q, pq) = run("p");
    s.handle_packet(C, pq);
    drain(&mut s);
    s.handle_packet(C, Packet::cancel(q));
    let out = drain(&mut s);
    assert_eq!(rc_to(&out, C), vec![ResultCode::Cancelled]);
    assert_eq!(s.stats().queued, 0);
    assert!(!s.is_routed(&q));
}

#[test]
fn cancel_running_on_native_worker_is_forwarded_and_its_result_closes_it() {
    let mut s = sb(0);
    setup(&mut s);
    s.handle_connect(W, Side::Worker, true);
    s.handle_packet(W, Packet::register(1, None));
    let (c, p) = run("p");
    s.handle_packet(C, p);
    drain(&mut s);
    s.handle_packet(C, Packet::cancel(c));
    let out = drain(&mut s);
    assert_eq!(
        (out[0].to, out[0].packet.packet_type),
        (W, PacketType::Cancel)
    );
    s.handle_packet(
        W,
        Packet::error(Some(c), ResultCode::Cancelled, "cancelled"),
    );
    assert_eq!(rc_to(&drain(&mut s), C), vec![ResultCode::Cancelled]);
    assert_eq!(s.stats().free_capacity, 1);
}

#[test]
fn cancel_aimed_at_a_legacy_worker_is_answered_not_forwarded() {
    let mut s = sb(0);
    setup(&mut s);
    s.handle_connect(X, Side::Worker, false);
    s.handle_packet(X, Packet::register(1, None));
    let (c, p) = run("p");
    s.handle_packet(L, p);
    drain(&mut s);
    s.handle_packet(L, Packet::cancel(c));
    let out = drain(&mut s);
    assert_eq!(out.len(), 1, "nothing goes to the worker: {out:?}");
    assert_eq!(
        (out[0].to, out[0].packet.rc),
        (L, Some(ResultCode::Exception))
    );
    assert!(out[0]
        .packet
        .error
        .as_ref()
        .unwrap()
        .starts_with("CANCELLED: "));
    assert_eq!(
        s.stats().free_capacity,
        0,
        "the slot is busy until the worker answers"
    );
    s.handle_packet(X, Packet::ok(c, Some(Payload::from_json_text("1"))));
    assert!(drain(&mut s).is_empty(), "the late result is discarded");
    assert_eq!((s.stats().free_capacity, s.stats().routes), (1, 0));
}

#[test]
fn cancel_of_unknown_or_foreign_cookie() {
    let mut s = sb(0);
    setup(&mut s);
    s.handle_connect(W, Side::Worker, true);
    s.handle_packet(W, Packet::register(1, None));
    let (c, p) = run("p");
    s.handle_packet(C, p);
    drain(&mut s);
    s.handle_packet(L, Packet::cancel(c));
    s.handle_packet(L, Packet::cancel(Uuid::new_v4()));
    let out = drain(&mut s);
    assert_eq!(rc_to(&out, L), vec![ResultCode::CookieNotFound; 2]);
    assert_eq!(out[0].packet.error.as_deref(), Some("No such cookie"));
    assert!(s.is_routed(&c));
}

#[test]
fn result_for_a_cookie_the_worker_never_got_is_dropped() {
    let mut s = sb(0);
    setup(&mut s);
    s.handle_connect(W, Side::Worker, true);
    s.handle_connect(X, Side::Worker, true);
    s.handle_packet(W, Packet::register(1, None));
    s.handle_packet(X, Packet::register(1, None));
    let (c, p) = run("p");
    s.handle_packet(C, p);
    let holder = drain(&mut s)[0].to;
    let other = if holder == W { X } else { W };
    s.handle_packet(other, Packet::ok(c, None));
    s.handle_packet(other, Packet::ok(Uuid::new_v4(), None));
    s.handle_packet(
        other,
        Packet {
            cookie: None,
            ..Packet::ok(c, None)
        },
    );
    assert!(drain(&mut s).is_empty());
    assert!(s.is_routed(&c));
    assert_eq!(s.stats().free_capacity, 1);
}

#[test]
fn events_reach_native_clients_only() {
    let mut s = sb(0);
    setup(&mut s);
    s.handle_connect(W, Side::Worker, true);
    s.handle_packet(W, Packet::register(2, None));
    let (a, pa) = run("p");
    let (b, pb) = run("p");
    s.handle_packet(C, pa);
    s.handle_packet(L, pb);
    drain(&mut s);
    s.handle_packet(W, Packet::event(a, Payload::from_json_text("1")));
    s.handle_packet(W, Packet::event(b, Payload::from_json_text("2")));
    let out = drain(&mut s);
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].to, out[0].packet.packet_type),
        (C, PacketType::Event)
    );
}

#[test]
fn detached_runs_go_on_without_the_client() {
    let mut s = sb(0);
    setup(&mut s);
    s.handle_connect(W, Side::Worker, true);
    s.handle_packet(W, Packet::register(1, None));
    let c = Uuid::new_v4();
    s.handle_packet(C, Packet::run(c, "p", None, true));
    assert_eq!(drain(&mut s)[0].to, W);
    s.handle_disconnect(C);
    assert!(
        drain(&mut s).is_empty(),
        "a detached run is not cancelled when its client leaves"
    );
    s.handle_packet(W, Packet::ok(c, None));
    assert!(drain(&mut s).is_empty());
    assert_eq!(
        (
            s.stats().routes,
            s.stats().free_capacity,
            s.stats().completed
        ),
        (0, 1, 1)
    );
}

#[test]
fn client_gone_cancels_its_runs_and_drops_its_queue() {
    let mut s = sb(4);
    setup(&mut s);
    s.handle_connect(W, Side::Worker, true);
    s.handle_packet(W, Packet::register(1, None));
    let (a, pa) = run("p");
    s.handle_packet(C, pa);
    s.handle_packet(C, run("p").1);
    drain(&mut s);
    s.handle_disconnect(C);
    let out = drain(&mut s);
    assert_eq!(
        (out.len(), out[0].to, out[0].packet.packet_type),
        (1, W, PacketType::Cancel)
    );
    assert_eq!(s.stats().queued, 0);
    s.handle_packet(W, Packet::error(Some(a), ResultCode::Cancelled, ""));
    assert!(drain(&mut s).is_empty());
    assert_eq!((s.stats().routes, s.stats().free_capacity), (0, 1));
}

#[test]
fn worker_gone_answers_its_runs_and_unservable_queued_runs() {
    let mut s = sb(4);
    setup(&mut s);
    s.handle_connect(W, Side::Worker, true);
    s.handle_packet(W, Packet::register(1, Some(vec!["only-here".into()])));
    s.handle_packet(C, run("only-here").1);
    s.handle_packet(L, run("only-here").1);
    drain(&mut s);
    s.handle_disconnect(W);
    let out = drain(&mut s);
    assert_eq!(rc_to(&out, C), vec![ResultCode::WorkerWentAway]);
    assert_eq!(
        rc_to(&out, L),
        vec![ResultCode::NoCapacity],
        "queued run answered once no worker can serve it"
    );
    assert_eq!(s.stats().routes, 0);
}

#[test]
fn clients_may_not_send_worker_packets() {
    let mut s = sb(0);
    setup(&mut s);
    let c = Uuid::new_v4();
    s.handle_packet(
        L,
        Packet {
            cookie: Some(c),
            ..Packet::new(PacketType::Shutdown)
        },
    );
    let out = drain(&mut s);
    assert_eq!(out[0].packet.rc, Some(ResultCode::UnsupportedPacketType));
    assert_eq!(
        out[0].packet.error.as_deref(),
        Some("Packet type not supported on this client")
    );
    assert_eq!(out[0].packet.cookie, Some(c));
}

#[test]
fn shutdown_tells_native_workers_and_answers_the_queue() {
    let mut s = sb(4);
    setup(&mut s);
    s.handle_connect(W, Side::Worker, true);
    s.handle_connect(X, Side::Worker, false);
    s.handle_packet(W, Packet::register(1, None));
    s.handle_packet(C, run("p").1);
    s.handle_packet(C, run("p").1);
    drain(&mut s);
    s.begin_shutdown();
    let out = drain(&mut s);
    assert_eq!(rc_to(&out, C), vec![ResultCode::NoCapacity]);
    assert!(out
        .iter()
        .any(|t| t.to == W && t.packet.packet_type == PacketType::Shutdown));
    assert!(
        !out.iter().any(|t| t.to == X),
        "legacy workers are not sent SHUTDOWN"
    );
    s.abort_all(ResultCode::BrokerWentAway, "grace period over");
    assert_eq!(rc_to(&drain(&mut s), C), vec![ResultCode::BrokerWentAway]);
    assert_eq!((s.stats().routes, s.stats().free_capacity), (0, 1));
}

#[test]
fn one_client_cannot_hold_more_than_its_share() {
    let mut s = Switchboard::new(SwitchboardConfig {
        queue_limit: 100,
        max_capacity: 1000,
        max_runs_per_client: 3,
        ..SwitchboardConfig::default()
    });
    setup(&mut s);
    s.handle_connect(W, Side::Worker, true);
    s.handle_packet(W, Packet::register(1, None));
    for _ in 0..4 {
        s.handle_packet(C, run("p").1);
    }
    let out = drain(&mut s);
    assert_eq!(rc_to(&out, C), vec![ResultCode::NoCapacity]);
    assert!(out
        .last()
        .unwrap()
        .packet
        .error
        .as_ref()
        .unwrap()
        .contains("per-client limit"));
    // Another client is not affected.
    s.handle_packet(L, run("p").1);
    assert!(rc_to(&drain(&mut s), L).is_empty(), "queued, not refused");
}

/// A run whose variables are `n` bytes.
fn big_run(pipeline: &str, n: usize) -> (Uuid, Packet) {
    let c = Uuid::new_v4();
    let vars = Payload::from_json_text(format!("\"{}\"", "x".repeat(n)));
    (c, Packet::run(c, pipeline, Some(vars), false))
}

/// The wait queue is bounded in bytes per client: one client's queued runs
/// stop at its share (answered NO_CAPACITY naming the setting), another
/// client still queues, and the bytes leave the budget as runs leave the
/// queue (dispatched, cancelled, or their client gone).
#[test]
fn the_queue_is_bounded_in_bytes_per_client() {
    let mut s = Switchboard::new(SwitchboardConfig {
        queue_limit: 1000,
        queue_bytes: 1 << 20,
        queue_bytes_per_client: 10_000,
        ..SwitchboardConfig::default()
    });
    setup(&mut s);
    s.handle_connect(W, Side::Worker, true);
    s.handle_packet(W, Packet::register(1, None));
    let (_, first) = big_run("p", 10);
    s.handle_packet(C, first); // takes the only slot
    let mut queued = Vec::new();
    for _ in 0..3 {
        let (c, p) = big_run("p", 3000);
        s.handle_packet(C, p);
        queued.push(c);
    }
    drain(&mut s);
    let held = s.stats().queued_bytes;
    assert!((9000..10_000).contains(&held), "{held}");
    let (_, over) = big_run("p", 3000);
    s.handle_packet(C, over);
    let out = drain(&mut s);
    assert_eq!(rc_to(&out, C), vec![ResultCode::NoCapacity]);
    let error = out[0].packet.error.clone().unwrap_or_default();
    assert!(
        error.contains("per-client budget") && error.contains("queue_bytes_per_client"),
        "{error}"
    );
    // Another client is not refused for C's bytes.
    let (lc, lp) = big_run("p", 3000);
    s.handle_packet(L, lp);
    assert!(rc_to(&drain(&mut s), L).is_empty(), "L's run waits");
    // Bytes leave as runs leave: a cancel, then the client going.
    let before = s.stats().queued_bytes;
    s.handle_packet(C, Packet::cancel(queued[0]));
    drain(&mut s);
    assert!(s.stats().queued_bytes < before);
    s.handle_disconnect(C);
    s.handle_disconnect(L);
    drain(&mut s);
    let st = s.stats();
    assert_eq!((st.queued, st.queued_bytes), (0, 0), "{st:?} ({lc})");
}

/// The wait queue is bounded in bytes broker-wide: many clients together
/// stop at `queue_bytes`, answered NO_CAPACITY naming it; dispatching a
/// queued run frees its bytes.
#[test]
fn the_queue_is_bounded_in_bytes_broker_wide() {
    let mut s = Switchboard::new(SwitchboardConfig {
        queue_limit: 1000,
        queue_bytes: 10_000,
        queue_bytes_per_client: 1 << 20,
        ..SwitchboardConfig::default()
    });
    s.handle_connect(W, Side::Worker, true);
    s.handle_packet(W, Packet::register(1, None));
    let (busy, p) = big_run("p", 10);
    s.handle_connect(100, Side::Client, true);
    s.handle_packet(100, p);
    for client in 101..104 {
        s.handle_connect(client, Side::Client, true);
        s.handle_packet(client, big_run("p", 3000).1);
    }
    assert_eq!(s.stats().queued, 3);
    s.handle_connect(104, Side::Client, true);
    drain(&mut s);
    s.handle_packet(104, big_run("p", 3000).1);
    let out = drain(&mut s);
    assert_eq!(rc_to(&out, 104), vec![ResultCode::NoCapacity]);
    let error = out[0].packet.error.clone().unwrap_or_default();
    assert!(
        error.contains("wait queue is full in bytes") && error.contains("`queue_bytes`"),
        "{error}"
    );
    // The worker finishes: one queued run is dispatched, its bytes freed.
    let before = s.stats().queued_bytes;
    s.handle_packet(W, Packet::ok(busy, None));
    drain(&mut s);
    assert!(s.stats().queued_bytes < before);
    s.handle_packet(104, big_run("p", 3000).1);
    assert!(rc_to(&drain(&mut s), 104).is_empty(), "room again");
}

/// A worker that re-registers a smaller capacity while busier than that has
/// no free slot, but other workers' free slots still count: free capacity
/// is summed per worker (it used to be total minus busy, which showed 5 free
/// here where 8 are).
#[test]
fn free_capacity_after_a_smaller_re_register_is_not_under_reported() {
    let mut s = sb(10);
    setup(&mut s);
    s.handle_connect(W, Side::Worker, true);
    s.handle_packet(W, Packet::register(3, Some(vec!["w".into()])));
    for _ in 0..3 {
        s.handle_packet(C, run("w").1);
    }
    s.handle_packet(W, Packet::register(1, Some(vec!["w".into()])));
    s.handle_connect(X, Side::Worker, false);
    s.handle_packet(X, Packet::register(8, None));
    drain(&mut s);
    let st = s.stats();
    assert_eq!((st.total_capacity, st.free_capacity), (9, 8), "{st:?}");
}

/// A run answered WORKER_WENT_AWAY is over for its client too: it no longer
/// counts against the client's limit, and a later run reusing its cookie
/// (from another client) is not orphaned when the first client leaves.
/// (Found by the model test: the cookie stayed in the client's set.)
#[test]
fn a_run_whose_worker_went_away_is_released_from_its_client() {
    let mut s = Switchboard::new(SwitchboardConfig {
        max_runs_per_client: 1,
        ..SwitchboardConfig::default()
    });
    setup(&mut s);
    s.handle_connect(W, Side::Worker, true);
    s.handle_packet(W, Packet::register(1, None));
    let (cookie, p) = run("p");
    s.handle_packet(C, p);
    s.handle_disconnect(W);
    assert_eq!(rc_to(&drain(&mut s), C), vec![ResultCode::WorkerWentAway]);
    s.handle_connect(X, Side::Worker, false);
    s.handle_packet(X, Packet::register(2, None));
    // C's limit of one run is free again.
    let (mine, p) = run("p");
    s.handle_packet(C, p);
    assert!(
        rc_to(&drain(&mut s), C).is_empty(),
        "C's next run is accepted"
    );
    // The old cookie, now from another client.
    s.handle_packet(L, Packet::run(cookie, "p", None, false));
    let out = drain(&mut s);
    assert!(
        out.iter()
            .any(|t| t.to == X && t.packet.cookie == Some(cookie)),
        "{out:?}"
    );
    s.handle_packet(X, Packet::ok(mine, None));
    s.handle_disconnect(C);
    s.handle_packet(X, Packet::ok(cookie, None));
    assert_eq!(
        rc_to(&drain(&mut s), L),
        vec![ResultCode::Ok],
        "L is answered"
    );
}

/// A worker that registers again serving fewer pipelines: queued runs that
/// no worker serves any more are answered UNKNOWN_PIPELINE at once, not
/// left waiting forever. (Found by the model test's re-REGISTER steps.)
#[test]
fn a_re_register_that_drops_a_pipeline_answers_its_queued_runs() {
    let mut s = sb(10);
    setup(&mut s);
    s.handle_connect(W, Side::Worker, true);
    s.handle_packet(W, Packet::register(1, Some(vec!["a".into(), "b".into()])));
    s.handle_packet(C, run("a").1);
    let (b, p) = run("b");
    s.handle_packet(C, p);
    drain(&mut s);
    assert_eq!(s.stats().queued, 1);
    s.handle_packet(W, Packet::register(1, Some(vec!["a".into()])));
    let out = drain(&mut s);
    assert_eq!(rc_to(&out, C), vec![ResultCode::UnknownPipeline]);
    assert_eq!(out[0].packet.cookie, Some(b));
    assert_eq!(s.stats().queued, 0);
}

/// One client cannot fill the wait queue: past its share
/// (`queue_per_client`) it may queue only while a share's worth of places
/// stays free; then it is answered NO_CAPACITY naming the setting, and
/// another client still gets those places.
#[test]
fn one_client_cannot_fill_the_queue() {
    let mut s = Switchboard::new(SwitchboardConfig {
        queue_limit: 10,
        queue_per_client: Some(3),
        ..SwitchboardConfig::default()
    });
    setup(&mut s);
    s.handle_connect(W, Side::Worker, true);
    s.handle_packet(W, Packet::register(1, None));
    let (_, first) = big_run("p", 10);
    s.handle_packet(C, first); // takes the only slot
    let mut queued = Vec::new();
    for _ in 0..7 {
        let (c, p) = big_run("p", 10);
        s.handle_packet(C, p);
        queued.push(c);
    }
    assert!(rc_to(&drain(&mut s), C).is_empty(), "seven runs wait");
    let (_, over) = big_run("p", 10);
    s.handle_packet(C, over);
    let out = drain(&mut s);
    assert_eq!(rc_to(&out, C), vec![ResultCode::NoCapacity]);
    let error = out[0].packet.error.clone().unwrap_or_default();
    assert!(error.contains("queue_per_client"), "{error}");
    // Another client gets the places kept for others.
    for _ in 0..3 {
        let (_, theirs) = big_run("p", 10);
        s.handle_packet(L, theirs);
    }
    assert!(rc_to(&drain(&mut s), L).is_empty(), "L's runs wait");
    assert_eq!(s.stats().queued, 10);
    // A cancel frees a place; C, past its share, still may not take the last.
    s.handle_packet(C, Packet::cancel(queued[0]));
    drain(&mut s);
    let (_, again) = big_run("p", 10);
    s.handle_packet(C, again);
    assert_eq!(rc_to(&drain(&mut s), C), vec![ResultCode::NoCapacity]);
    assert_eq!(s.stats().queued, 9);
}

fn detached(pipeline: &str) -> (Uuid, Packet) {
    let c = Uuid::new_v4();
    (
        c,
        Packet::run(c, pipeline, Some(Payload::from_json_text("{}")), true),
    )
}

/// A detached run whose client has gone is listed (`orphans`), and any
/// client's CANCEL ends it and is answered to that client: queued, it is
/// answered at once; running on a native worker, the worker's CANCELLED
/// reaches the new owner. A run some connected client owns cannot be taken.
#[test]
fn an_orphaned_detached_run_is_listed_and_any_client_can_cancel_it() {
    const D: PeerId = 3; // a client that leaves
    let mut s = sb(10);
    setup(&mut s);
    s.handle_connect(D, Side::Client, true);
    s.handle_connect(W, Side::Worker, true);
    s.handle_packet(W, Packet::register(1, None));
    let (running, p) = detached("p");
    s.handle_packet(D, p);
    let (queued, p) = detached("q");
    s.handle_packet(D, p);
    let (owned, p) = run("p");
    s.handle_packet(C, p); // queued behind, owned by a connected client
    drain(&mut s);
    assert!(s.orphans().is_empty(), "D is still connected");
    s.handle_disconnect(D);
    drain(&mut s);
    let orphans = s.orphans();
    let mut expected = vec![
        (running, Some("p".to_owned()), true),
        (queued, Some("q".to_owned()), false),
    ];
    expected.sort_by_key(|o| o.0);
    let listed: Vec<_> = orphans
        .iter()
        .map(|o| (o.cookie, o.pipeline.clone(), o.running))
        .collect();
    assert_eq!(listed, expected);

    // Someone else's live run: not found, untouched.
    s.handle_packet(L, Packet::cancel(owned));
    assert_eq!(rc_to(&drain(&mut s), L), vec![ResultCode::CookieNotFound]);

    // The queued orphan: cancelled and answered to the legacy client that
    // asked (CANCELLED's nearest ReasonChip code, the outcome in `error`).
    s.handle_packet(L, Packet::cancel(queued));
    let out = drain(&mut s);
    assert_eq!(rc_to(&out, L), vec![ResultCode::Exception]);
    assert!(
        out[0]
            .packet
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("cancelled"),
        "{out:?}"
    );

    // The running orphan: CANCEL goes to the worker; its answer reaches C.
    s.handle_packet(C, Packet::cancel(running));
    let out = drain(&mut s);
    assert!(
        out.iter()
            .any(|t| t.to == W && t.packet.packet_type == PacketType::Cancel),
        "{out:?}"
    );
    s.handle_packet(
        W,
        Packet::error(Some(running), ResultCode::Cancelled, "cancelled"),
    );
    let out = drain(&mut s);
    assert_eq!(rc_to(&out, C)[0], ResultCode::Cancelled, "{out:?}");
    assert!(s.orphans().is_empty());
    // The worker's slot went to C's queued run; nothing else is held.
    s.handle_packet(W, Packet::ok(owned, None));
    drain(&mut s);
    let st = s.stats();
    assert_eq!((st.routes, st.queued, st.queued_bytes), (0, 0, 0), "{st:?}");
}

fn timed(pipeline: &str, ms: u64) -> (Uuid, Packet) {
    let (c, mut p) = run(pipeline);
    p.timeout_ms = Some(ms);
    (c, p)
}

/// Deadlines: a queued run whose deadline passes is answered TIMEOUT and
/// leaves the queue; a running one is answered TIMEOUT at once and
/// cancelled at its native worker, whose late RESULT is dropped and frees
/// the slot; a legacy worker is never sent CANCEL. Nothing happens early.
#[test]
fn deadlines_answer_timeout_queued_and_running() {
    let t0 = std::time::Instant::now();
    let ms = |n: u64| t0 + std::time::Duration::from_millis(n);
    let mut s = sb(10);
    setup(&mut s);
    s.handle_connect(W, Side::Worker, true);
    s.handle_packet(W, Packet::register(1, None));
    let (running, p) = timed("p", 100);
    s.handle_packet_at(C, p, ms(0));
    let (queued, p) = timed("p", 50);
    s.handle_packet_at(C, p, ms(10));
    let (patient, p) = run("p"); // no deadline
    s.handle_packet_at(C, p, ms(10));
    drain(&mut s);
    assert_eq!(s.poll_timeout(), Some(ms(60)));

    s.handle_timeout(ms(59));
    assert!(drain(&mut s).is_empty(), "nothing before the deadline");
    s.handle_timeout(ms(60));
    let out = drain(&mut s);
    assert_eq!(rc_to(&out, C), vec![ResultCode::Timeout]);
    assert_eq!(out[0].packet.cookie, Some(queued));
    assert!(
        out[0]
            .packet
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("waited for a free worker slot"),
        "{out:?}"
    );
    assert_eq!(s.stats().queued, 1, "only the patient run waits");

    s.handle_timeout(ms(100));
    let out = drain(&mut s);
    assert_eq!(rc_to(&out, C), vec![ResultCode::Timeout]);
    assert!(out.iter().any(|t| t.to == W
        && t.packet.packet_type == PacketType::Cancel
        && t.packet.cookie == Some(running)));
    // The slot is still the worker's until its answer comes; that answer is
    // dropped (the client already has its one RESULT), and frees the slot
    // for the patient run.
    assert_eq!(s.stats().free_capacity, 0);
    s.handle_packet_at(
        W,
        Packet::error(Some(running), ResultCode::Cancelled, "cancelled"),
        ms(101),
    );
    let out = drain(&mut s);
    assert!(rc_to(&out, C).is_empty(), "no second RESULT: {out:?}");
    assert!(out
        .iter()
        .any(|t| t.to == W && t.packet.cookie == Some(patient)));
    s.handle_packet(W, Packet::ok(patient, None));
    assert_eq!(rc_to(&drain(&mut s), C), vec![ResultCode::Ok]);
    let st = s.stats();
    assert_eq!(
        (st.routes, st.queued, st.free_capacity),
        (0, 0, 1),
        "{st:?}"
    );
}

/// A legacy worker is never sent CANCEL when a deadline passes (it would
/// exit); the legacy client gets TIMEOUT's nearest ReasonChip code.
#[test]
fn a_deadline_on_a_legacy_worker_answers_without_cancel() {
    let t0 = std::time::Instant::now();
    let mut s = Switchboard::new(SwitchboardConfig {
        default_timeout: Some(std::time::Duration::from_millis(30)),
        ..SwitchboardConfig::default()
    });
    setup(&mut s);
    s.handle_connect(X, Side::Worker, false);
    s.handle_packet(X, Packet::register(1, None));
    let (c, p) = run("p"); // a legacy client's RUN carries no timeout_ms
    s.handle_packet_at(L, p, t0);
    drain(&mut s);
    s.handle_timeout(t0 + std::time::Duration::from_millis(29));
    assert!(drain(&mut s).is_empty(), "nothing before the deadline");
    s.handle_timeout(t0 + std::time::Duration::from_millis(30));
    let out = drain(&mut s);
    assert_eq!(rc_to(&out, L), vec![ResultCode::Exception]);
    assert!(out[0]
        .packet
        .error
        .as_deref()
        .unwrap_or_default()
        .contains("deadline"));
    assert!(
        out.iter().all(|t| t.to != X),
        "no CANCEL to a legacy worker: {out:?}"
    );
    s.handle_packet(X, Packet::ok(c, None));
    assert!(rc_to(&drain(&mut s), L).is_empty());
    assert_eq!(s.stats().free_capacity, 1);
}

/// A run that waits longer than `max_queue_wait` is answered NO_CAPACITY;
/// a run that started in time is not touched by its old timer, nor is a
/// new run that reuses its cookie.
#[test]
fn max_queue_wait_bounds_the_wait_and_old_timers_are_harmless() {
    let t0 = std::time::Instant::now();
    let ms = |n: u64| t0 + std::time::Duration::from_millis(n);
    let mut s = Switchboard::new(SwitchboardConfig {
        max_queue_wait: Some(std::time::Duration::from_millis(20)),
        ..SwitchboardConfig::default()
    });
    setup(&mut s);
    s.handle_connect(W, Side::Worker, true);
    s.handle_packet(W, Packet::register(1, None));
    let (first, p) = timed("p", 15);
    s.handle_packet_at(C, p, ms(0));
    let (second, p) = run("p");
    s.handle_packet_at(C, p, ms(0));
    drain(&mut s);
    // The first finishes in time; the second starts.
    s.handle_packet_at(W, Packet::ok(first, None), ms(5));
    drain(&mut s);
    s.handle_packet_at(W, Packet::ok(second, None), ms(6));
    drain(&mut s);
    // The first's cookie again, with no deadline: its old timer (15 ms)
    // must not end it.
    let reused = Packet::run(first, "p", Some(Payload::from_json_text("{}")), false);
    s.handle_packet_at(C, reused, ms(7));
    let (third, p) = run("p"); // queued behind it
    s.handle_packet_at(C, p, ms(7));
    drain(&mut s);
    s.handle_timeout(ms(16));
    assert!(rc_to(&drain(&mut s), C).is_empty(), "old timers do nothing");
    s.handle_timeout(ms(28));
    let out = drain(&mut s);
    assert_eq!(rc_to(&out, C), vec![ResultCode::NoCapacity]);
    assert_eq!(out[0].packet.cookie, Some(third));
    assert!(out[0]
        .packet
        .error
        .as_deref()
        .unwrap_or_default()
        .contains("max_queue_wait"));
    assert_eq!(s.stats().running, 1, "the reused cookie's run goes on");
}

/// CREDIT: the owner's grant reaches the native worker running its run; a
/// queued run's window grows by it before the run is sent; another client's
/// CREDIT for the run goes nowhere; a detached run is sent with no window
/// (nobody would grant more).
#[test]
fn credits_reach_the_worker_or_grow_the_queued_window() {
    let mut s = sb(10);
    setup(&mut s);
    s.handle_connect(W, Side::Worker, true);
    s.handle_packet(W, Packet::register(1, None));
    let windowed = |credit| {
        let (c, mut p) = run("p");
        p.credit = Some(credit);
        (c, p)
    };
    let (first, p) = windowed(8);
    s.handle_packet(C, p);
    let out = drain(&mut s);
    assert_eq!(out[0].packet.credit, Some(8), "the RUN carries its window");
    s.handle_packet(C, Packet::credit(first, 4));
    let out = drain(&mut s);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(
        (out[0].to, out[0].packet.packet_type, out[0].packet.credit),
        (W, PacketType::Credit, Some(4))
    );
    // Not the owner: dropped, unanswered.
    s.handle_packet(L, Packet::credit(first, 4));
    assert!(drain(&mut s).is_empty());

    let (queued, p) = windowed(8);
    s.handle_packet(C, p);
    s.handle_packet(C, Packet::credit(queued, 5));
    assert!(drain(&mut s).is_empty(), "queued: nothing to send yet");
    let (_, mut detached) = run("p");
    detached.detach = Some(true);
    detached.credit = Some(8);
    let detached_cookie = detached.cookie;
    s.handle_packet(C, detached);
    s.handle_packet(W, Packet::ok(first, None));
    let out = drain(&mut s);
    let sent = out
        .iter()
        .find(|t| t.to == W && t.packet.cookie == Some(queued))
        .expect("the queued run starts");
    assert_eq!(
        sent.packet.credit,
        Some(13),
        "its window grew while it waited"
    );
    s.handle_packet(W, Packet::ok(queued, None));
    let out = drain(&mut s);
    let sent = out
        .iter()
        .find(|t| t.to == W && t.packet.cookie == detached_cookie)
        .expect("the detached run starts");
    assert_eq!(sent.packet.credit, None, "a detached run has no window");
}

/// A run whose client takes none of its events: once its window is used up
/// and no CREDIT comes for `stall_timeout`, it is cancelled at its worker and
/// its client answered CANCELLED; a CREDIT in time stops the clock.
#[test]
fn a_run_whose_client_stops_taking_events_is_cancelled_after_the_stall_timeout() {
    let t0 = std::time::Instant::now();
    let ms = |n: u64| t0 + std::time::Duration::from_millis(n);
    let mut s = Switchboard::new(SwitchboardConfig {
        stall_timeout: Some(std::time::Duration::from_millis(100)),
        ..SwitchboardConfig::default()
    });
    setup(&mut s);
    s.handle_connect(W, Side::Worker, true);
    s.handle_packet(W, Packet::register(2, None));
    let windowed = |credit| {
        let (c, mut p) = run("p");
        p.credit = Some(credit);
        (c, p)
    };
    let (kept, p) = windowed(2);
    s.handle_packet_at(C, p, ms(0));
    let (stalled, p) = windowed(2);
    s.handle_packet_at(C, p, ms(0));
    drain(&mut s);
    let event = |c| Packet::event(c, Payload::from_json_text("1"));
    for c in [kept, stalled] {
        s.handle_packet_at(W, event(c), ms(10));
        s.handle_packet_at(W, event(c), ms(10));
    }
    drain(&mut s);
    // `kept`'s client grants more in time; `stalled`'s never does.
    s.handle_packet_at(C, Packet::credit(kept, 2), ms(50));
    drain(&mut s);
    s.handle_timeout(ms(109));
    assert!(drain(&mut s).is_empty(), "nothing before the stall timeout");
    s.handle_timeout(ms(110));
    let out = drain(&mut s);
    assert_eq!(rc_to(&out, C), vec![ResultCode::Cancelled]);
    assert_eq!(
        out.iter().find(|t| t.to == C).unwrap().packet.cookie,
        Some(stalled)
    );
    assert!(out.iter().any(|t| t.to == W
        && t.packet.packet_type == PacketType::Cancel
        && t.packet.cookie == Some(stalled)));
    // The worker's answer to the CANCEL frees the slot and reaches nobody.
    s.handle_packet_at(
        W,
        Packet::error(Some(stalled), ResultCode::Cancelled, "cancelled"),
        ms(111),
    );
    assert!(rc_to(&drain(&mut s), C).is_empty());
    s.handle_timeout(ms(1000));
    assert!(
        rc_to(&drain(&mut s), C).is_empty(),
        "the run with credit goes on"
    );
    assert_eq!(s.stats().running, 1);
}

fn register_as(s: &mut Switchboard, w: PeerId, capacity: i64, name: &str, labels: &[&str]) {
    let mut p = Packet::register(capacity, None);
    p.worker = Some(name.to_owned());
    p.labels = Some(labels.iter().map(|l| l.to_string()).collect());
    s.handle_packet(w, p);
}

fn run_on(worker: Option<&str>, labels: &[&str]) -> (Uuid, Packet) {
    let (c, mut p) = run("p");
    p.worker = worker.map(str::to_owned);
    p.labels = (!labels.is_empty()).then(|| labels.iter().map(|l| l.to_string()).collect());
    (c, p)
}

/// Choosing the worker: a run naming a worker, or requiring labels, goes
/// only to a worker that matches (waiting for it if it is busy); one that
/// no registered worker could ever take is answered UNKNOWN_PIPELINE at
/// once, saying what nobody has, and a queued one is answered when the last
/// worker that matched registers again without the label.
#[test]
fn runs_go_only_to_the_worker_they_name_or_whose_labels_they_require() {
    const A: PeerId = 20;
    const B: PeerId = 21;
    let mut s = sb(10);
    setup(&mut s);
    s.handle_connect(A, Side::Worker, true);
    s.handle_connect(B, Side::Worker, true);
    register_as(&mut s, A, 1, "a", &["gpu=1", "host=x"]);
    register_as(&mut s, B, 4, "b", &["host=y"]);
    let to = |out: &[Transmit], c: Uuid| {
        out.iter()
            .find(|t| t.packet.packet_type == PacketType::Run && t.packet.cookie == Some(c))
            .map(|t| t.to)
    };
    // By name: to A, though B is less loaded.
    let (c1, p) = run_on(Some("a"), &[]);
    s.handle_packet(C, p);
    assert_eq!(to(&drain(&mut s), c1), Some(A));
    // By labels: A is full, so the run waits for it rather than go to B.
    let (c2, p) = run_on(None, &["gpu=1"]);
    s.handle_packet(C, p);
    assert_eq!(to(&drain(&mut s), c2), None, "it waits for A");
    let (c3, p) = run_on(None, &["host=y"]);
    s.handle_packet(C, p);
    assert_eq!(to(&drain(&mut s), c3), Some(B));
    // Nobody has both: answered at once, naming what is missing.
    let (_, p) = run_on(None, &["gpu=1", "host=y"]);
    s.handle_packet(C, p);
    let out = drain(&mut s);
    assert_eq!(rc_to(&out, C), vec![ResultCode::UnknownPipeline]);
    let error = out[0].packet.error.clone().unwrap_or_default();
    assert!(error.contains("with labels gpu=1, host=y"), "{error}");
    let (_, p) = run_on(Some("c"), &[]);
    s.handle_packet(C, p);
    let out = drain(&mut s);
    assert!(
        out[0]
            .packet
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("named `c`"),
        "{out:?}"
    );
    // A frees its slot: the waiting run goes there.
    s.handle_packet(A, Packet::ok(c1, None));
    assert_eq!(to(&drain(&mut s), c2), Some(A));
    // A queued run for a label the only matching worker drops is answered.
    let (c4, p) = run_on(None, &["gpu=1"]);
    s.handle_packet(C, p);
    drain(&mut s);
    register_as(&mut s, A, 1, "a", &["host=x"]);
    let out = drain(&mut s);
    let answer = out
        .iter()
        .find(|t| t.packet.cookie == Some(c4))
        .expect("answered");
    assert_eq!(answer.packet.rc, Some(ResultCode::UnknownPipeline));
}

/// Priorities: queued runs start highest priority first, in order of
/// arrival within one priority.
#[test]
fn queued_runs_start_by_priority_then_in_order() {
    let mut s = sb(10);
    setup(&mut s);
    s.handle_connect(W, Side::Worker, true);
    s.handle_packet(W, Packet::register(1, None));
    let (busy, p) = run("p");
    s.handle_packet(C, p);
    let mut by_name = Vec::new();
    for (name, priority) in [("a", 0), ("b", 0), ("c", 5), ("d", 1), ("e", 5)] {
        let (c, mut p) = run("p");
        p.priority = (priority > 0).then_some(priority);
        s.handle_packet(C, p);
        by_name.push((c, name));
    }
    drain(&mut s);
    let mut order = Vec::new();
    let mut running = busy;
    for _ in 0..5 {
        s.handle_packet(W, Packet::ok(running, None));
        let out = drain(&mut s);
        let next = out
            .iter()
            .find(|t| t.to == W && t.packet.packet_type == PacketType::Run)
            .and_then(|t| t.packet.cookie)
            .unwrap();
        order.push(by_name.iter().find(|(c, _)| *c == next).unwrap().1);
        running = next;
    }
    assert_eq!(order, ["c", "e", "d", "a", "b"]);
}
