//! Reconnecting: exponential backoff with jitter, and trying several
//! endpoints in turn (failover).

use std::time::Duration;

use crate::error::Error;
use crate::transport::{AnyTransport, ClientTransport, Connection, Endpoint, TransportError};

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

/// Connects to the first of `endpoints` that answers, trying them in turn
/// with `backoff` between rounds, for at most `wait` (zero: one round).
pub async fn connect_any<T: ClientTransport + ?Sized>(
    transport: &T,
    endpoints: &[Endpoint],
    wait: Duration,
    backoff: &Backoff,
) -> Result<(Connection, usize), Error> {
    if endpoints.is_empty() {
        return Err(Error::Handshake {
            peer: "(none)".into(),
            reason: "no broker endpoint was given".into(),
        });
    }
    let deadline = tokio::time::Instant::now() + wait;
    let mut attempt = 0u32;
    loop {
        let mut last: Option<TransportError> = None;
        for (i, ep) in endpoints.iter().enumerate() {
            match transport.connect(ep).await {
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
                Error::Transport(e)
            } else {
                let all: Vec<&str> = endpoints.iter().map(Endpoint::url).collect();
                Error::Handshake {
                    peer: all.join(", "),
                    reason: format!("no broker answered within {wait:?}; last error: {e}"),
                }
            });
        }
        tokio::time::sleep(backoff.delay(attempt).min(deadline - now)).await;
        attempt = attempt.saturating_add(1);
    }
}

/// [`connect_any`] over every compiled-in backend.
pub async fn connect_any_url(
    urls: &[String],
    wait: Duration,
) -> Result<(Connection, usize), Error> {
    let endpoints = urls
        .iter()
        .map(|u| Endpoint::parse(u))
        .collect::<Result<Vec<_>, _>>()?;
    connect_any(&AnyTransport, &endpoints, wait, &Backoff::default()).await
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
