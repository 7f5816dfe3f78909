//! The signals that ask a process to stop, as one source: Ctrl-C (SIGINT)
//! and SIGTERM, which systemd, Docker and Kubernetes send. The first asks
//! for a drain, the second (of either kind) for an immediate exit; the
//! broker and the worker treat both kinds alike.

/// Stop requests: SIGINT and SIGTERM (Ctrl-C only where there is no SIGTERM).
pub(crate) struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    /// Starts listening; from here on neither signal kills the process.
    pub(crate) fn new() -> Result<Signals, String> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let listen = |kind: SignalKind, name: &str| {
                signal(kind).map_err(|e| format!("cannot listen for {name}: {e}"))
            };
            Ok(Signals {
                interrupt: listen(SignalKind::interrupt(), "Ctrl-C (SIGINT)")?,
                terminate: listen(SignalKind::terminate(), "SIGTERM")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    /// Waits for the next stop request and names it (`Ctrl-C`, `SIGTERM`).
    pub(crate) async fn next(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.interrupt.recv() => "Ctrl-C",
                _ = self.terminate.recv() => "SIGTERM",
            }
        }
        #[cfg(not(unix))]
        {
            match tokio::signal::ctrl_c().await {
                Ok(()) => "Ctrl-C",
                // No way to be told: never ask to stop.
                Err(_) => std::future::pending().await,
            }
        }
    }
}
