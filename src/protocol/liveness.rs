//! Liveness of one native peer, as a sans-IO state machine shared by the
//! broker, the worker and the client: after `interval` of silence send a
//! PING (and another every `interval` while the silence lasts); after
//! `timeout` of silence the peer is dead. Anything heard from the peer —
//! a PONG, a PING, any packet — counts as life.
//!
//! It owns no timer and reads no clock: the shell passes `now` to
//! [`Liveness::handle_received`] and [`Liveness::handle_timeout`], and
//! sleeps until [`Liveness::poll_timeout`]. Tests drive it with made-up
//! instants, no sleeps. Legacy (ReasonChip) peers cannot answer PING, so
//! the shells do not run one for them.

use std::time::{Duration, Instant};

/// When to probe a silent peer and when to give it up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LivenessConfig {
    /// Silence after which a PING is sent (and resent, as long as it lasts).
    pub interval: Duration,
    /// Silence after which the peer is declared dead.
    pub timeout: Duration,
}

impl Default for LivenessConfig {
    fn default() -> Self {
        LivenessConfig {
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(30),
        }
    }
}

/// What the shell must do when [`Liveness::poll_timeout`] comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LivenessAction {
    /// Send a PING on the control lane.
    SendPing,
    /// The peer was silent for `silent`, past the timeout: close the
    /// connection and answer what depended on it.
    PeerDead {
        /// How long nothing was heard.
        silent: Duration,
    },
}

/// The liveness state of one connection; see the module documentation.
#[derive(Debug, Clone)]
pub struct Liveness {
    config: LivenessConfig,
    last_heard: Instant,
    next_ping: Instant,
}

impl Liveness {
    /// A peer just heard from (the connection opened) at `now`. An interval
    /// of zero is taken as one millisecond, so a shell never spins.
    pub fn new(config: LivenessConfig, now: Instant) -> Liveness {
        let config = LivenessConfig {
            interval: config.interval.max(Duration::from_millis(1)),
            ..config
        };
        Liveness {
            config,
            last_heard: now,
            next_ping: later(now, config.interval),
        }
    }

    /// Something arrived from the peer at `now`.
    pub fn handle_received(&mut self, now: Instant) {
        if now > self.last_heard {
            self.last_heard = now;
        }
        self.next_ping = later(self.last_heard, self.config.interval);
    }

    /// When the shell must call [`Liveness::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Instant {
        self.next_ping.min(self.deadline())
    }

    /// Time has come to `now`: what to do, if anything. Call it at (or
    /// after) [`Liveness::poll_timeout`]; calling it early does nothing.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<LivenessAction> {
        let silent = now.saturating_duration_since(self.last_heard);
        if silent > self.config.timeout {
            return Some(LivenessAction::PeerDead { silent });
        }
        if now >= self.next_ping {
            self.next_ping = later(now, self.config.interval);
            return Some(LivenessAction::SendPing);
        }
        None
    }

    /// The moment past which the peer counts as dead.
    fn deadline(&self) -> Instant {
        // `timeout` is exceeded strictly after `last_heard + timeout`.
        later(
            self.last_heard,
            self.config.timeout.saturating_add(Duration::from_nanos(1)),
        )
    }
}

/// `t + d`, or a century after `t` where that would overflow (a setting of
/// `Duration::MAX` means "never").
fn later(t: Instant, d: Duration) -> Instant {
    t.checked_add(d)
        .or_else(|| t.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
        .unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(interval: u64, timeout: u64) -> LivenessConfig {
        LivenessConfig {
            interval: Duration::from_secs(interval),
            timeout: Duration::from_secs(timeout),
        }
    }

    /// Runs the state machine as a shell would, from timeout to timeout,
    /// until `end`; returns each action with the second it happened at.
    fn run(l: &mut Liveness, start: Instant, end: Instant) -> Vec<(u64, LivenessAction)> {
        let mut out = Vec::new();
        loop {
            let at = l.poll_timeout();
            if at > end {
                return out;
            }
            if let Some(action) = l.handle_timeout(at) {
                out.push(((at - start).as_secs(), action));
                if matches!(action, LivenessAction::PeerDead { .. }) {
                    return out;
                }
            }
        }
    }

    #[test]
    fn a_silent_peer_is_pinged_every_interval_then_declared_dead() {
        let t0 = Instant::now();
        let mut l = Liveness::new(config(10, 30), t0);
        let actions = run(&mut l, t0, t0 + Duration::from_secs(100));
        let ping = LivenessAction::SendPing;
        assert_eq!(actions[..3], [(10, ping), (20, ping), (30, ping)]);
        let (at, dead) = actions[3];
        assert_eq!(at, 30, "dead just past the timeout");
        assert!(
            matches!(dead, LivenessAction::PeerDead { silent } if silent > Duration::from_secs(30))
        );
        assert_eq!(actions.len(), 4);
    }

    #[test]
    fn a_peer_that_answers_is_never_declared_dead() {
        let t0 = Instant::now();
        let mut l = Liveness::new(config(10, 30), t0);
        let mut now = t0;
        let mut pings = 0;
        // An idle but healthy peer: every PING is answered 50 ms later.
        for _ in 0..1000 {
            now = l.poll_timeout();
            match l.handle_timeout(now) {
                Some(LivenessAction::SendPing) => {
                    pings += 1;
                    l.handle_received(now + Duration::from_millis(50));
                }
                Some(dead) => panic!("declared dead at {:?}: {dead:?}", now - t0),
                None => {}
            }
        }
        assert_eq!(pings, 1000);
        assert!(now - t0 > Duration::from_secs(10_000));
    }

    #[test]
    fn traffic_postpones_the_ping() {
        let t0 = Instant::now();
        let mut l = Liveness::new(config(10, 30), t0);
        l.handle_received(t0 + Duration::from_secs(7));
        assert_eq!(l.poll_timeout(), t0 + Duration::from_secs(17));
        assert_eq!(l.handle_timeout(t0 + Duration::from_secs(16)), None);
        assert_eq!(
            l.handle_timeout(t0 + Duration::from_secs(17)),
            Some(LivenessAction::SendPing)
        );
    }

    #[test]
    fn a_late_or_early_call_is_harmless() {
        let t0 = Instant::now();
        let mut l = Liveness::new(config(10, 30), t0);
        // Early: nothing. Very late (a stalled runtime): dead, not a ping storm.
        assert_eq!(l.handle_timeout(t0 + Duration::from_secs(1)), None);
        assert!(matches!(
            l.handle_timeout(t0 + Duration::from_secs(500)),
            Some(LivenessAction::PeerDead { .. })
        ));
        // Out-of-order arrivals never move time backwards.
        let mut l = Liveness::new(config(10, 30), t0);
        l.handle_received(t0 + Duration::from_secs(5));
        l.handle_received(t0 + Duration::from_secs(3));
        assert_eq!(l.poll_timeout(), t0 + Duration::from_secs(15));
    }

    #[test]
    fn extreme_settings_neither_spin_nor_overflow() {
        let t0 = Instant::now();
        let l = Liveness::new(
            LivenessConfig {
                interval: Duration::ZERO,
                timeout: Duration::MAX,
            },
            t0,
        );
        assert_eq!(l.poll_timeout(), t0 + Duration::from_millis(1));
        let mut never = Liveness::new(
            LivenessConfig {
                interval: Duration::MAX,
                timeout: Duration::MAX,
            },
            t0,
        );
        assert!(never.poll_timeout() > t0 + Duration::from_secs(3600 * 24 * 365));
        assert_eq!(never.handle_timeout(t0 + Duration::from_secs(3600)), None);
    }
}
