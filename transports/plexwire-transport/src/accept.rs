//! One bounded-handshake accept loop for every listener whose connections
//! need a handshake before they can be handed over (TLS, QUIC, HTTPS, later
//! WebSocket).
//!
//! Such a listener must not run handshakes one after the other — a client
//! that connects and then says nothing would hold up everyone behind it —
//! nor without bound, or a flood of slow handshakes would grow memory and
//! tasks without limit. [`Handshakes`] runs each handshake in a task of its
//! own, at most [`HandshakeLimits::max_in_flight`] at once (past that it
//! stops taking new raw connections until some finish), each bounded by
//! [`HandshakeLimits::timeout`]. Finished handshakes come out of
//! [`Handshakes::accept`] in the order they finish; failed ones are counted
//! and logged, never returned there, so a broker's accept loop (which backs
//! off on errors) only sees errors of the listener itself.
//!
//! Logging is aggregated: under churn (port scanners, clients that give up,
//! a misconfigured peer retrying) one WARN line per failure would flood the
//! log, so the first failure is logged at once and later ones at most once
//! per [`FAILURE_REPORT_INTERVAL`], with their count and the last one's
//! reason. Every failure is also logged at DEBUG.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::{Stream, StreamExt};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::TransportError;

/// Handshakes a listener runs at once unless told otherwise.
pub const DEFAULT_MAX_HANDSHAKES: usize = 256;

/// How long a handshake may take on the accepting side unless told otherwise.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Failed handshakes after the first are reported at most this often, as a
/// count with the last one's reason.
pub const FAILURE_REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// A raw incoming connection (an accepted socket, a QUIC `Incoming`, a plain
/// [`Connection`](crate::Connection) under TLS) and who it came from.
#[derive(Debug)]
pub struct Incoming<R> {
    /// The raw connection, to be handshaken.
    pub io: R,
    /// The peer's address as text, for errors and logs.
    pub remote: String,
}

/// How many handshakes run at once, and how long each may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeLimits {
    /// Handshakes in flight at most (at least 1); past this no new raw
    /// connection is taken until one finishes.
    pub max_in_flight: usize,
    /// How long one handshake may take before it is abandoned (and counted
    /// as failed, [`TransportError::HandshakeTimeout`]).
    pub timeout: Duration,
}

impl Default for HandshakeLimits {
    fn default() -> Self {
        HandshakeLimits {
            max_in_flight: DEFAULT_MAX_HANDSHAKES,
            timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }
}

type HandshakeFuture<O> = BoxFuture<'static, Result<O, TransportError>>;
type Source<O> = Pin<Box<dyn Stream<Item = Result<HandshakeFuture<O>, TransportError>> + Send>>;

/// What one step of the loop produced.
enum Event<O> {
    /// A handshake finished.
    Ready(O),
    /// A handshake failed (or timed out, or its task panicked).
    Failed(TransportError),
    /// The source of raw connections failed, or ended with nothing in flight.
    Source(TransportError),
}

/// Runs the handshakes of one listener, bounded in number and time.
///
/// Each raw connection from the source is handshaken in a task of its own,
/// at most [`HandshakeLimits::max_in_flight`] at once (past that no new raw
/// connection is taken until one finishes), each within
/// [`HandshakeLimits::timeout`]. [`Handshakes::accept`] returns finished
/// handshakes in the order they finish and logs failed ones: the first at
/// once at WARN, later ones at most once per [`FAILURE_REPORT_INTERVAL`] as
/// a count with the last one's reason (every one at DEBUG).
///
/// Dropping it abandons the handshakes in flight (their tasks are aborted)
/// and drops the source.
pub struct Handshakes<O> {
    /// What is handshaken, for logs and errors: "TLS handshake".
    what: &'static str,
    /// The listener's URL, for logs and errors.
    url: String,
    limits: HandshakeLimits,
    /// Raw connections, each already turned into its (time-bounded)
    /// handshake. Behind a mutex only so the listener is `Sync`; it is only
    /// reached through `&mut self` (`get_mut`), never locked.
    source: Mutex<Source<O>>,
    /// The source ended: no new raw connections will come.
    source_done: bool,
    running: JoinSet<Result<O, TransportError>>,
    failures: FailureLog,
    /// Failures that are logged at DEBUG only (still counted).
    quiet: fn(&TransportError) -> bool,
}

impl<O> fmt::Debug for Handshakes<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handshakes")
            .field("what", &self.what)
            .field("url", &self.url)
            .field("limits", &self.limits)
            .field("in_flight", &self.running.len())
            .field("failed", &self.failures.total)
            .finish()
    }
}

impl<O: Send + 'static> Handshakes<O> {
    /// Handshakes every raw connection `source` yields with `handshake`.
    ///
    /// `what` names the handshake in logs and errors ("TLS handshake"),
    /// `url` the listener. An error from `source` concerns the listener
    /// (a failed `accept`) and is returned by [`Handshakes::accept`] as it
    /// is; the end of `source` is [`TransportError::Closed`] once the
    /// handshakes in flight are done.
    pub fn new<R, S, H, F>(
        what: &'static str,
        url: impl Into<String>,
        limits: HandshakeLimits,
        source: S,
        handshake: H,
    ) -> Handshakes<O>
    where
        R: Send + 'static,
        S: Stream<Item = Result<Incoming<R>, TransportError>> + Send + 'static,
        H: Fn(Incoming<R>) -> F + Send + 'static,
        F: Future<Output = Result<O, TransportError>> + Send + 'static,
    {
        let url = url.into();
        let limits = HandshakeLimits {
            max_in_flight: limits.max_in_flight.max(1),
            ..limits
        };
        let timeout_url = url.clone();
        let source = source.map(move |item| {
            item.map(|incoming| {
                let remote = incoming.remote.clone();
                let work = handshake(incoming);
                let url = timeout_url.clone();
                let fut: HandshakeFuture<O> = Box::pin(async move {
                    match tokio::time::timeout(limits.timeout, work).await {
                        Ok(result) => result,
                        Err(_) => Err(TransportError::HandshakeTimeout {
                            what,
                            url,
                            remote,
                            after: limits.timeout,
                        }),
                    }
                });
                fut
            })
        });
        Handshakes {
            what,
            url: url.clone(),
            limits,
            source: Mutex::new(Box::pin(source)),
            source_done: false,
            running: JoinSet::new(),
            failures: FailureLog::new(what, url),
            quiet: |_| false,
        }
    }

    /// Logs the failures `quiet` picks at DEBUG only, out of the WARN
    /// reports (they are still counted in [`Handshakes::failed`]): for
    /// failures that are routine for this listener, like a QUIC client
    /// that gave up because another address of its host answered first.
    pub fn quiet_when(mut self, quiet: fn(&TransportError) -> bool) -> Handshakes<O> {
        self.quiet = quiet;
        self
    }

    /// The limits in force.
    pub fn limits(&self) -> HandshakeLimits {
        self.limits
    }

    /// Handshakes running now.
    pub fn in_flight(&self) -> usize {
        self.running.len()
    }

    /// Handshakes that failed (or timed out) since the start.
    pub fn failed(&self) -> u64 {
        self.failures.total
    }

    async fn next_event(&mut self) -> Event<O> {
        loop {
            let can_start = !self.source_done && self.running.len() < self.limits.max_in_flight;
            let source = self
                .source
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner);
            tokio::select! {
                // Finished handshakes first: they free room for new ones.
                biased;
                Some(done) = self.running.join_next(), if !self.running.is_empty() => {
                    match done {
                        Ok(Ok(conn)) => return Event::Ready(conn),
                        Ok(Err(e)) => return Event::Failed(e),
                        Err(e) if e.is_panic() => {
                            tracing::error!(url = %self.url, "a {} task panicked", self.what);
                        }
                        // Cancelled: only when the set is dropped, not here.
                        Err(_) => {}
                    }
                }
                next = source.next(), if can_start => match next {
                    Some(Ok(handshake)) => {
                        self.running.spawn(handshake);
                    }
                    Some(Err(e)) => return Event::Source(e),
                    None => self.source_done = true,
                },
                else => return Event::Source(TransportError::Closed),
            }
        }
    }

    /// The next finished handshake, failed ones included: a failure is the
    /// handshake's own error, or [`TransportError::HandshakeTimeout`].
    /// Errors of the source are returned as they are. Failures returned
    /// here are not logged; for a listener, use [`Handshakes::accept`].
    ///
    /// Cancel safe: handshakes run in their own tasks, the source's pending
    /// accept is kept in `self`, and nothing is taken out of either unless
    /// it is returned.
    pub async fn next_handshake(&mut self) -> Result<O, TransportError> {
        match self.next_event().await {
            Event::Ready(o) => Ok(o),
            Event::Failed(e) | Event::Source(e) => Err(e),
        }
    }

    /// The next connection whose handshake succeeded. Failed handshakes
    /// are counted and logged (aggregated, see
    /// [`Handshakes`]) and never returned; an error is the source's
    /// (the listener's own accept), or [`TransportError::Closed`] once the
    /// source has ended and every handshake in flight is done.
    ///
    /// Cancel safe, as [`Handshakes::next_handshake`].
    pub async fn accept(&mut self) -> Result<O, TransportError> {
        loop {
            let report_at = self.failures.report_at();
            tokio::select! {
                event = self.next_event() => match event {
                    Event::Ready(o) => return Ok(o),
                    Event::Source(e) => return Err(e),
                    Event::Failed(e) => {
                        tracing::debug!(url = %self.url, error = %e, "{} failed", self.what);
                        if (self.quiet)(&e) {
                            self.failures.total += 1;
                        } else if let Some(line) = self.failures.record(Instant::now(), &e) {
                            tracing::warn!(url = %self.url, "{line}");
                        }
                    }
                },
                () = sleep_until(report_at), if report_at.is_some() => {
                    if let Some(line) = self.failures.report(Instant::now()) {
                        tracing::warn!(url = %self.url, "{line}");
                    }
                }
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Decides which failures become a WARN line: the first at once, the rest
/// at most once per [`FAILURE_REPORT_INTERVAL`] as a count. Plain data, time
/// passed in, so its rule is tested without a clock or a log.
#[derive(Debug)]
struct FailureLog {
    what: &'static str,
    url: String,
    /// Failures since the start.
    total: u64,
    /// When the last line was written.
    last_report: Option<Instant>,
    /// Failures since then, not yet reported.
    pending: u64,
    /// The reason of the last of them.
    last_reason: String,
}

impl FailureLog {
    fn new(what: &'static str, url: String) -> FailureLog {
        FailureLog {
            what,
            url,
            total: 0,
            last_report: None,
            pending: 0,
            last_reason: String::new(),
        }
    }

    /// Counts a failure; returns the line to log now, if any.
    fn record(&mut self, now: Instant, e: &TransportError) -> Option<String> {
        self.total += 1;
        match self.last_report {
            Some(at) if now < at + FAILURE_REPORT_INTERVAL => {
                self.pending += 1;
                self.last_reason = e.to_string();
                None
            }
            _ => {
                // Anything still pending is older than the interval: fold it in.
                let line = match self.pending {
                    0 => format!("{} refused: {e}", self.what),
                    n => format!(
                        "{} {}s failed on `{}` in the last {FAILURE_REPORT_INTERVAL:?}; the last: {e}",
                        n + 1,
                        self.what,
                        self.url
                    ),
                };
                self.pending = 0;
                self.last_report = Some(now);
                Some(line)
            }
        }
    }

    /// When the pending failures are due to be reported, if any are pending.
    fn report_at(&self) -> Option<Instant> {
        match (self.pending, self.last_report) {
            (0, _) | (_, None) => None,
            (_, Some(at)) => Some(at + FAILURE_REPORT_INTERVAL),
        }
    }

    /// The line reporting the pending failures, if they are due.
    fn report(&mut self, now: Instant) -> Option<String> {
        let due = self.report_at()?;
        if now < due {
            return None;
        }
        let n = self.pending;
        self.pending = 0;
        self.last_report = Some(now);
        let plural = if n == 1 { "" } else { "s" };
        Some(format!(
            "{n} more {}{plural} failed on `{}` in the last {FAILURE_REPORT_INTERVAL:?}; the last: {}",
            self.what, self.url, self.last_reason
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use tokio::sync::{mpsc, oneshot};

    /// A raw connection whose handshake finishes when the test says so:
    /// `Some(id)` succeeds with `id`, `None` fails.
    type Raw = oneshot::Receiver<Option<u32>>;

    struct Rig {
        raw: mpsc::Sender<Result<Incoming<Raw>, TransportError>>,
        started: Arc<AtomicUsize>,
        handshakes: Handshakes<u32>,
    }

    fn rig(max_in_flight: usize, timeout: Duration) -> Rig {
        let (raw, rx) = mpsc::channel(64);
        let started = Arc::new(AtomicUsize::new(0));
        let count = started.clone();
        let source = futures_util::stream::unfold(rx, |mut rx| async move {
            let item = rx.recv().await?;
            Some((item, rx))
        });
        let handshakes = Handshakes::new(
            "test handshake",
            "test://listener",
            HandshakeLimits {
                max_in_flight,
                timeout,
            },
            source,
            move |incoming: Incoming<Raw>| {
                count.fetch_add(1, Ordering::SeqCst);
                async move {
                    match incoming.io.await {
                        Ok(Some(id)) => Ok(id),
                        _ => Err(TransportError::Tls {
                            url: "test://listener".into(),
                            reason: format!("client {}: refused", incoming.remote),
                        }),
                    }
                }
            },
        );
        Rig {
            raw,
            started,
            handshakes,
        }
    }

    impl Rig {
        /// A new raw connection; the sender finishes its handshake.
        async fn connect(&self, remote: &str) -> oneshot::Sender<Option<u32>> {
            let (tx, rx) = oneshot::channel();
            self.raw
                .send(Ok(Incoming {
                    io: rx,
                    remote: remote.into(),
                }))
                .await
                .unwrap();
            tx
        }
    }

    /// Polls `fut` for a moment of virtual time; `None` if it did not finish.
    async fn briefly<T>(fut: impl Future<Output = T>) -> Option<T> {
        tokio::time::timeout(Duration::from_millis(10), fut)
            .await
            .ok()
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_does_not_hold_up_the_next() {
        let mut r = rig(8, Duration::from_secs(10));
        let _silent = r.connect("silent").await;
        let second = r.connect("second").await;
        second.send(Some(2)).unwrap();
        assert_eq!(r.handshakes.accept().await.unwrap(), 2);
        assert_eq!(
            r.handshakes.in_flight(),
            1,
            "the silent one is still running"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn at_most_n_run_at_once() {
        let mut r = rig(2, Duration::from_secs(10));
        let a = r.connect("a").await;
        let _b = r.connect("b").await;
        let c = r.connect("c").await;
        c.send(Some(3)).unwrap();
        // Two handshakes run; the third raw connection waits in the source.
        assert!(briefly(r.handshakes.accept()).await.is_none());
        assert_eq!(r.started.load(Ordering::SeqCst), 2);
        assert_eq!(r.handshakes.in_flight(), 2);
        // One finishes: it comes out, and the third starts (and is done at once).
        a.send(Some(1)).unwrap();
        assert_eq!(r.handshakes.accept().await.unwrap(), 1);
        assert_eq!(r.handshakes.accept().await.unwrap(), 3);
        assert_eq!(r.started.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_handshake_past_the_timeout_is_abandoned_and_counted() {
        let mut r = rig(8, Duration::from_secs(5));
        let _silent = r.connect("10.0.0.1:4000").await;
        let start = Instant::now();
        match r.handshakes.next_handshake().await {
            Err(TransportError::HandshakeTimeout { remote, after, .. }) => {
                assert_eq!(
                    (remote.as_str(), after),
                    ("10.0.0.1:4000", Duration::from_secs(5))
                );
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        assert_eq!(r.handshakes.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn accept_skips_failures_and_counts_them() {
        let mut r = rig(8, Duration::from_secs(5));
        r.connect("bad").await.send(None).unwrap();
        let _silent = r.connect("silent").await;
        r.connect("good").await.send(Some(7)).unwrap();
        assert_eq!(r.handshakes.accept().await.unwrap(), 7);
        // The silent one times out, is counted, and accept goes on waiting.
        assert!(
            tokio::time::timeout(Duration::from_secs(10), r.handshakes.accept())
                .await
                .is_err()
        );
        assert_eq!(r.handshakes.failed(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn accept_in_select_loses_nothing() {
        let mut r = rig(8, Duration::from_secs(10));
        let a = r.connect("a").await;
        let b = r.connect("b").await;
        // Interrupt accept again and again while the handshakes progress.
        let mut got = Vec::new();
        let mut pending = vec![(a, 1), (b, 2)];
        while got.len() < 2 {
            if let Some((tx, id)) = pending.pop() {
                tx.send(Some(id)).unwrap();
            }
            tokio::select! {
                c = r.handshakes.accept() => got.push(c.unwrap()),
                () = tokio::task::yield_now() => {}
            }
        }
        got.sort_unstable();
        assert_eq!(got, [1, 2]);
        // A raw connection taken from the source while accept was cancelled
        // is not lost either.
        let c = r.connect("c").await;
        assert!(briefly(r.handshakes.accept()).await.is_none());
        c.send(Some(3)).unwrap();
        assert_eq!(r.handshakes.accept().await.unwrap(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn source_errors_are_returned_and_its_end_closes_after_the_last_handshake() {
        let mut r = rig(8, Duration::from_secs(10));
        r.raw
            .send(Err(TransportError::Io(std::io::Error::other("EMFILE"))))
            .await
            .unwrap();
        assert!(matches!(
            r.handshakes.accept().await,
            Err(TransportError::Io(_))
        ));
        let last = r.connect("last").await;
        drop(r.raw);
        assert!(briefly(r.handshakes.accept()).await.is_none());
        last.send(Some(9)).unwrap();
        assert_eq!(r.handshakes.accept().await.unwrap(), 9);
        assert!(matches!(
            r.handshakes.accept().await,
            Err(TransportError::Closed)
        ));
    }

    fn failure(n: u32) -> TransportError {
        TransportError::Tls {
            url: "u".into(),
            reason: format!("failure {n}"),
        }
    }

    #[test]
    fn failures_are_reported_at_most_once_per_interval() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut log = FailureLog::new("TLS handshake", "tls://x".into());
        // The first is logged at once.
        let line = log.record(t0, &failure(1)).unwrap();
        assert!(line.contains("failure 1"), "{line}");
        // A burst within the interval: nothing, until the interval is over.
        for n in 2..=50 {
            assert_eq!(log.record(ms(u64::from(n) * 10), &failure(n)), None);
        }
        assert_eq!(log.report_at(), Some(ms(1000)));
        assert_eq!(log.report(ms(999)), None);
        let line = log.report(ms(1000)).unwrap();
        assert!(
            line.starts_with(
                "49 more TLS handshakes failed on `tls://x` in the last 1s; the last: "
            ) && line.contains("failure 50"),
            "{line}"
        );
        assert_eq!(log.report_at(), None);
        assert_eq!(log.total, 50);
        // Quiet for a while: the next failure is logged at once again.
        assert!(log.record(ms(5000), &failure(51)).is_some());
        // One pending failure reported by the next record past the interval.
        assert_eq!(log.record(ms(5500), &failure(52)), None);
        let line = log.record(ms(6100), &failure(53)).unwrap();
        assert!(line.starts_with("2 TLS handshakes failed"), "{line}");
    }
}
