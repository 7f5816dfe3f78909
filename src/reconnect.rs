//! Connecting and reconnecting, shared by the client and the worker:
//! exponential backoff with jitter, trying several endpoints in turn
//! (failover), a time limit on every connect whatever the backend, and the
//! opening exchange with its fallback to legacy (ReasonChip) mode.
//!
//! The fallback lives here, once, because it needs what neither the
//! connection layer nor a transport has: the endpoint to dial again. A broker
//! that closes the connection right after our HELLO ([`Error::ClosedAfterHello`])
//! is taken for a ReasonChip 0.0.6 broker: we log it once, dial the same
//! endpoint again in legacy mode (JSON, whatever codec was configured, since
//! ReasonChip speaks nothing else), and remember the endpoint, so later
//! reconnects go straight to legacy mode.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::codec::CodecKind;
use crate::conn;
use crate::error::Error;
use crate::protocol::Role;
use crate::transport::{AnyTransport, ClientTransport, Connection, Endpoint};

/// How long one connect may take unless configured otherwise
/// (`ClientConfig::connect_timeout`, `WorkerConfig::connect_timeout`).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Exponential backoff with jitter: attempt `n` waits about
/// `initial * factor^n`, capped at `max`, each delay drawn at random from
/// its upper half so that many peers restarting together spread out.
#[derive(Debug, Clone)]
pub struct Backoff {
    /// The first delay.
    pub initial: Duration,
    /// The largest delay.
    pub max: Duration,
    /// Growth per attempt.
    pub factor: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_secs(5),
            factor: 2.0,
        }
    }
}

impl Backoff {
    /// The delay before attempt `attempt` (0-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let base = self.initial.as_secs_f64() * self.factor.max(1.0).powi(attempt.min(64) as i32);
        let capped = base.min(self.max.as_secs_f64());
        // Uniform in [capped/2, capped]: uuid's fast RNG is already at hand.
        let unit = (uuid::Uuid::new_v4().as_u128() % 1_000_000) as f64 / 1_000_000.0;
        Duration::from_secs_f64(capped * (0.5 + 0.5 * unit))
    }
}

/// Connects to `endpoint`, giving up after `timeout` with
/// [`Error::ConnectTimeout`] (on every backend: TCP's own connect can take
/// minutes against a host that drops packets).
pub async fn connect_within<T: ClientTransport + ?Sized>(
    transport: &T,
    endpoint: &Endpoint,
    timeout: Duration,
) -> Result<Connection, Error> {
    match tokio::time::timeout(timeout, transport.connect(endpoint)).await {
        Ok(conn) => Ok(conn?),
        Err(_) => Err(Error::ConnectTimeout {
            endpoint: endpoint.url().to_owned(),
            after: timeout,
        }),
    }
}

/// Connects to the first of `endpoints` that answers, trying them in turn
/// with `backoff` between rounds. Returns the connection and the index of
/// its endpoint.
///
/// With `wait` zero: one round, each endpoint given `connect_timeout`. With
/// `wait` above zero: rounds until one connects, and the call returns within
/// `wait` (each attempt gets `connect_timeout` or what is left of `wait`,
/// whichever is shorter).
pub async fn connect_any<T: ClientTransport + ?Sized>(
    transport: &T,
    endpoints: &[Endpoint],
    wait: Duration,
    connect_timeout: Duration,
    backoff: &Backoff,
) -> Result<(Connection, usize), Error> {
    if endpoints.is_empty() {
        return Err(Error::Handshake {
            peer: "(none)".into(),
            rc: None,
            reason: "no broker endpoint was given".into(),
        });
    }
    let deadline = tokio::time::Instant::now() + wait;
    let mut attempt = 0u32;
    loop {
        let mut last: Option<Error> = None;
        for (i, ep) in endpoints.iter().enumerate() {
            let limit = if wait.is_zero() {
                connect_timeout
            } else {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                if left.is_zero() && last.is_some() {
                    break; // out of time: report what failed so far
                }
                connect_timeout.min(left)
            };
            match connect_within(transport, ep, limit).await {
                Ok(conn) => return Ok((conn, i)),
                Err(e) => {
                    tracing::debug!(endpoint = %ep, error = %e, "connect failed");
                    last = Some(e);
                }
            }
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            let e = last.expect("at least one endpoint was tried");
            return Err(if endpoints.len() == 1 && wait.is_zero() {
                e
            } else {
                let all: Vec<&str> = endpoints.iter().map(Endpoint::url).collect();
                Error::Handshake {
                    peer: all.join(", "),
                    rc: None,
                    reason: format!("no broker answered within {wait:?}; last error: {e}"),
                }
            });
        }
        tokio::time::sleep(backoff.delay(attempt).min(deadline - now)).await;
        attempt = attempt.saturating_add(1);
    }
}

/// [`connect_any`] over every compiled-in backend, each connect bounded by
/// [`DEFAULT_CONNECT_TIMEOUT`].
pub async fn connect_any_url(
    urls: &[String],
    wait: Duration,
) -> Result<(Connection, usize), Error> {
    let endpoints = urls
        .iter()
        .map(|u| Endpoint::parse(u))
        .collect::<Result<Vec<_>, _>>()?;
    connect_any(
        &AnyTransport,
        &endpoints,
        wait,
        DEFAULT_CONNECT_TIMEOUT,
        &Backoff::default(),
    )
    .await
}

/// Whether a client or worker speaks plexwire's protocol, ReasonChip's, or
/// finds out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Native, falling back to legacy when the broker closes after our HELLO.
    Auto,
    /// Native only: a broker that closes after our HELLO is an error.
    Native,
    /// Legacy (ReasonChip) from the start: JSON, no HELLO.
    Legacy,
}

impl Mode {
    /// The mode a `legacy` flag and a `fallback_to_legacy` flag ask for.
    pub(crate) fn from_flags(legacy: bool, fallback_to_legacy: bool) -> Mode {
        match (legacy, fallback_to_legacy) {
            (true, _) => Mode::Legacy,
            (false, true) => Mode::Auto,
            (false, false) => Mode::Native,
        }
    }
}

/// What the opening exchange of a client or worker needs to know.
#[derive(Debug, Clone)]
pub(crate) struct OpenSettings {
    pub(crate) role: Role,
    /// The codec of native sessions (legacy ones are JSON).
    pub(crate) codec: CodecKind,
    pub(crate) mode: Mode,
    pub(crate) token: Option<String>,
    pub(crate) handshake_timeout: Duration,
    pub(crate) connect_timeout: Duration,
}

/// The endpoints found to be legacy (ReasonChip) brokers, by URL: shared by
/// every session (and clone) of one client or worker, so a reconnect to such
/// an endpoint goes straight to legacy mode, and the discovery is logged once.
#[derive(Debug, Clone, Default)]
pub(crate) struct LegacyEndpoints(Arc<Mutex<HashSet<String>>>);

impl LegacyEndpoints {
    fn set(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `endpoint` was found to be a legacy broker.
    pub(crate) fn contains(&self, endpoint: &Endpoint) -> bool {
        self.set().contains(endpoint.url())
    }

    /// Remembers `endpoint` as a legacy broker; whether it is new.
    fn insert(&self, endpoint: &Endpoint) -> bool {
        self.set().insert(endpoint.url().to_owned())
    }
}

/// A session opened by [`open_any`].
pub(crate) struct OpenedSession {
    pub(crate) opened: conn::Opened,
    /// Whether the session speaks legacy (ReasonChip) protocol.
    pub(crate) legacy: bool,
    /// Which endpoint it is connected to.
    pub(crate) index: usize,
}

/// Opens a session on a connection already made: [`conn::open`] in `mode`
/// (no fallback: there is no endpoint to dial again).
pub(crate) async fn open_conn(
    conn: Connection,
    settings: &OpenSettings,
) -> Result<(conn::Opened, bool), Error> {
    let legacy = settings.mode == Mode::Legacy;
    let opened = conn::open(
        conn,
        settings.role,
        settings.codec,
        legacy,
        settings.token.clone(),
        settings.handshake_timeout,
    )
    .await?;
    Ok((opened, legacy))
}

/// Connects ([`connect_any`]) and opens a session on the first endpoint that
/// answers. In [`Mode::Auto`], an endpoint known to be a legacy broker is
/// opened in legacy mode at once, and one whose broker closes the
/// connection right after our HELLO is dialled again, at once, in legacy
/// mode and remembered in `known`. Legacy sessions are JSON.
pub(crate) async fn open_any<T: ClientTransport + ?Sized>(
    transport: &T,
    endpoints: &[Endpoint],
    wait: Duration,
    backoff: &Backoff,
    settings: &OpenSettings,
    known: &LegacyEndpoints,
) -> Result<OpenedSession, Error> {
    let (conn, index) = connect_any(
        transport,
        endpoints,
        wait,
        settings.connect_timeout,
        backoff,
    )
    .await?;
    let endpoint = &endpoints[index];
    let as_legacy = OpenSettings {
        mode: Mode::Legacy,
        codec: CodecKind::Json,
        ..settings.clone()
    };
    if settings.mode == Mode::Auto && known.contains(endpoint) {
        let (opened, legacy) = open_conn(conn, &as_legacy).await?;
        return Ok(OpenedSession {
            opened,
            legacy,
            index,
        });
    }
    match open_conn(conn, settings).await {
        Ok((opened, legacy)) => Ok(OpenedSession {
            opened,
            legacy,
            index,
        }),
        Err(Error::ClosedAfterHello { .. }) if settings.mode == Mode::Auto => {
            // Dial first, remember after: a plexwire broker that was going
            // down (its backlog reset) is not there any more, and must not
            // be taken for a legacy one for good.
            let conn = connect_within(transport, endpoint, settings.connect_timeout).await?;
            if known.insert(endpoint) {
                if settings.codec == CodecKind::Json {
                    tracing::warn!(
                        broker = %endpoint,
                        "the broker closed the connection after our HELLO: it is a legacy \
                         (ReasonChip) broker; speaking legacy protocol to it from now on \
                         (no events, no heartbeats; set `fallback_to_legacy: false` or pass \
                         --native to forbid this)"
                    );
                } else {
                    tracing::warn!(
                        broker = %endpoint,
                        configured = %settings.codec.as_str(),
                        "the broker closed the connection after our HELLO: it is a legacy \
                         (ReasonChip) broker; speaking legacy protocol to it from now on, in \
                         JSON instead of the configured codec, since legacy brokers speak \
                         JSON only (no events, no heartbeats; set `fallback_to_legacy: false` \
                         or pass --native to forbid this)"
                    );
                }
            }
            let (opened, legacy) = open_conn(conn, &as_legacy).await?;
            Ok(OpenedSession {
                opened,
                legacy,
                index,
            })
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_stay_capped_and_jitter() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            factor: 2.0,
        };
        for attempt in 0..20 {
            let d = b.delay(attempt);
            let full = (0.1 * 2f64.powi(attempt as i32)).min(1.0);
            assert!(
                d.as_secs_f64() <= full + 1e-9 && d.as_secs_f64() >= full / 2.0 - 1e-9,
                "{attempt}: {d:?}"
            );
        }
        let spread: std::collections::HashSet<_> = (0..20).map(|_| b.delay(3)).collect();
        assert!(spread.len() > 1, "jitter varies the delay");
    }
}
