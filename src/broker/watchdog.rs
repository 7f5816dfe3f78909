//! One broker connection's clocks, without I/O: when to PING a native peer,
//! when to declare it dead, when to cut a peer whose frame stopped short,
//! and when to close an idle legacy peer.
//!
//! Like the switchboard it is plain data with time passed in, so every rule
//! is tested with virtual instants (the tests below). The broker's reader
//! task calls [`Watchdog::handle_frame`] for each whole frame and
//! [`Watchdog::handle_timeout`] every [`Watchdog::tick`], with what it sees
//! of the connection (bytes of an unfinished frame, whether the peer holds
//! anything), and acts on the [`Verdict`].
//!
//! The rules:
//!
//! - A native peer silent for `ping_interval` is sent PING (again every
//!   interval while silent); silent past `ping_timeout` it is dead. These are
//!   the rules of [`Liveness`], the state machine the worker and the client
//!   use too; the watchdog asks it.
//! - Any peer — legacy ones too, which cannot be pinged — whose unfinished
//!   frame has not completed within `frame_timeout` of the broker first
//!   seeing its bytes is cut: a header announcing 15 MiB followed by less
//!   must not hold that memory forever.
//! - A legacy peer that holds nothing (a client with no run in flight, a
//!   worker that has not registered) and has sent nothing for
//!   `legacy_idle_timeout` is closed, so idle sockets cannot use up a
//!   listener's `max_connections`. A registered legacy worker is never
//!   closed for idleness: waiting for work is its job, and a ReasonChip
//!   worker does not reconnect.

use std::time::Duration;

use tokio::time::Instant;

use crate::protocol::{Liveness, LivenessAction, LivenessConfig};

/// The timeouts a [`Watchdog`] applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WatchdogConfig {
    pub(crate) ping_interval: Duration,
    pub(crate) ping_timeout: Duration,
    pub(crate) frame_timeout: Duration,
    pub(crate) legacy_idle_timeout: Option<Duration>,
}

/// What the connection's task should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Send a PING.
    Ping,
    /// Close the connection, for this reason.
    Close(Reason),
}

/// Why a connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// A native peer sent nothing for this long, past `ping_timeout`.
    Silent(Duration),
    /// An unfinished frame of this many bytes did not complete within `frame_timeout`.
    StalledFrame(usize),
    /// A legacy peer held nothing and sent nothing for `legacy_idle_timeout`.
    Idle(Duration),
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Silent(d) => write!(f, "silent for {d:?}, past the ping timeout"),
            Reason::StalledFrame(n) => write!(
                f,
                "an unfinished frame ({n} bytes so far) did not complete within the frame timeout"
            ),
            Reason::Idle(d) => write!(
                f,
                "a legacy peer idle (nothing in flight, nothing sent) for {d:?}"
            ),
        }
    }
}

/// One connection's clocks.
#[derive(Debug)]
pub(crate) struct Watchdog {
    config: WatchdogConfig,
    /// A native (HELLO) peer answers PING: its liveness; none for a legacy one.
    liveness: Option<Liveness>,
    /// When the last whole frame arrived (or the connection opened).
    last_frame: Instant,
    /// Since when an unfinished frame has been seen, if one is buffered.
    partial_since: Option<Instant>,
    /// Since when the peer has been seen holding nothing, if it does.
    idle_since: Option<Instant>,
}

impl Watchdog {
    /// The clocks of a connection opened at `now`.
    pub(crate) fn new(config: WatchdogConfig, native: bool, now: Instant) -> Watchdog {
        let liveness = native.then(|| {
            Liveness::new(
                LivenessConfig {
                    interval: config.ping_interval,
                    timeout: config.ping_timeout,
                },
                now.into_std(),
            )
        });
        Watchdog {
            config,
            liveness,
            last_frame: now,
            partial_since: None,
            idle_since: None,
        }
    }

    /// How often [`Watchdog::handle_timeout`] should be called: often enough
    /// that each timeout fires within a quarter of its length (the PING
    /// interval exactly).
    pub(crate) fn tick(&self) -> Duration {
        let c = &self.config;
        let mut t = c.frame_timeout / 4;
        if self.liveness.is_some() {
            t = t.min(c.ping_interval);
        } else if let Some(idle) = c.legacy_idle_timeout {
            t = t.min(idle / 4);
        }
        t.max(Duration::from_millis(1))
    }

    /// A whole frame arrived at `now`.
    pub(crate) fn handle_frame(&mut self, now: Instant) {
        self.last_frame = now;
        self.partial_since = None;
        if let Some(l) = &mut self.liveness {
            l.handle_received(now.into_std());
        }
    }

    /// Time has passed: `unfinished` bytes of a frame are buffered, and the
    /// peer holds something (`busy`: runs in flight, or registered capacity)
    /// or not. Returns what to do, if anything.
    pub(crate) fn handle_timeout(
        &mut self,
        now: Instant,
        unfinished: usize,
        busy: bool,
    ) -> Option<Verdict> {
        let c = self.config;
        if unfinished == 0 {
            self.partial_since = None;
        } else {
            let since = *self.partial_since.get_or_insert(now);
            if now.duration_since(since) >= c.frame_timeout {
                return Some(Verdict::Close(Reason::StalledFrame(unfinished)));
            }
        }
        if let Some(l) = &mut self.liveness {
            return match l.handle_timeout(now.into_std()) {
                Some(LivenessAction::SendPing) => Some(Verdict::Ping),
                Some(LivenessAction::PeerDead { silent }) => {
                    Some(Verdict::Close(Reason::Silent(silent)))
                }
                None => None,
            };
        }
        if busy || unfinished > 0 {
            self.idle_since = None;
            return None;
        }
        let idle_since = *self.idle_since.get_or_insert(now);
        let quiet = now.duration_since(idle_since.max(self.last_frame));
        match c.legacy_idle_timeout {
            Some(limit) if quiet >= limit => Some(Verdict::Close(Reason::Idle(quiet))),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn config() -> WatchdogConfig {
        WatchdogConfig {
            ping_interval: 10 * S,
            ping_timeout: 30 * S,
            frame_timeout: 30 * S,
            legacy_idle_timeout: Some(300 * S),
        }
    }

    /// Drives `w` tick by tick from `from` until a verdict or `until`.
    fn run(
        w: &mut Watchdog,
        from: Instant,
        until: Duration,
        unfinished: usize,
        busy: bool,
    ) -> Option<(Duration, Verdict)> {
        let tick = w.tick();
        let mut t = Duration::ZERO;
        while t <= until {
            if let Some(v) = w.handle_timeout(from + t, unfinished, busy) {
                return Some((t, v));
            }
            t += tick;
        }
        None
    }

    #[test]
    fn a_stalled_frame_is_cut_on_a_legacy_connection_too() {
        let t0 = Instant::now();
        for native in [false, true] {
            let mut w = Watchdog::new(
                WatchdogConfig {
                    ping_timeout: 3600 * S,
                    ping_interval: 3600 * S,
                    ..config()
                },
                native,
                t0,
            );
            let (at, v) = run(&mut w, t0, 120 * S, 15 << 20, false).expect("cut");
            assert_eq!(v, Verdict::Close(Reason::StalledFrame(15 << 20)));
            assert!(at >= 30 * S && at <= 30 * S + w.tick(), "{at:?}");
        }
    }

    #[test]
    fn a_frame_that_completes_in_time_is_not_cut() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(config(), false, t0);
        assert_eq!(w.handle_timeout(t0 + 20 * S, 100, true), None);
        w.handle_frame(t0 + 25 * S);
        // A new unfinished frame: its own 30 s start when it is first seen.
        assert_eq!(w.handle_timeout(t0 + 40 * S, 100, true), None);
        assert_eq!(w.handle_timeout(t0 + 69 * S, 100, true), None);
        assert_eq!(
            w.handle_timeout(t0 + 70 * S, 100, true),
            Some(Verdict::Close(Reason::StalledFrame(100)))
        );
    }

    #[test]
    fn an_idle_legacy_peer_is_closed_a_busy_one_is_not() {
        let t0 = Instant::now();
        let mut busy = Watchdog::new(config(), false, t0);
        assert_eq!(run(&mut busy, t0, 3600 * S, 0, true), None);
        let mut idle = Watchdog::new(config(), false, t0);
        let (at, v) = run(&mut idle, t0, 3600 * S, 0, false).expect("closed");
        assert!(matches!(v, Verdict::Close(Reason::Idle(_))), "{v:?}");
        assert!(at >= 300 * S && at <= 300 * S + idle.tick(), "{at:?}");
        let mut never = Watchdog::new(
            WatchdogConfig {
                legacy_idle_timeout: None,
                ..config()
            },
            false,
            t0,
        );
        assert_eq!(run(&mut never, t0, 3600 * S, 0, false), None);
    }

    #[test]
    fn idleness_counts_from_when_the_peer_stopped_holding_anything() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(config(), false, t0);
        // A run in flight for 10 minutes, its RESULT sent to the client at 600 s.
        assert_eq!(w.handle_timeout(t0 + 599 * S, 0, true), None);
        assert_eq!(w.handle_timeout(t0 + 600 * S, 0, false), None);
        assert_eq!(w.handle_timeout(t0 + 899 * S, 0, false), None);
        assert!(matches!(
            w.handle_timeout(t0 + 900 * S, 0, false),
            Some(Verdict::Close(Reason::Idle(_)))
        ));
    }

    #[test]
    fn a_native_peer_is_pinged_then_declared_dead_never_idle_closed() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(config(), true, t0);
        assert_eq!(w.handle_timeout(t0 + 9 * S, 0, false), None);
        assert_eq!(w.handle_timeout(t0 + 10 * S, 0, false), Some(Verdict::Ping));
        w.handle_frame(t0 + 11 * S); // the PONG
        assert_eq!(w.handle_timeout(t0 + 20 * S, 0, false), None);
        assert_eq!(w.handle_timeout(t0 + 41 * S, 0, false), Some(Verdict::Ping));
        assert!(matches!(
            w.handle_timeout(t0 + 42 * S, 0, false),
            Some(Verdict::Close(Reason::Silent(_)))
        ));
    }
}
