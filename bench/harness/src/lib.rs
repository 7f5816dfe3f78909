//! The end-to-end benchmark harness behind `plexwire bench` and
//! `plexwire bench-hol`, kept out of the `plexwire` library so that no
//! embedder compiles process spawning, `/proc` sampling, NATS driving or
//! `rlimit`.
//!
//! The harness measures real processes: it starts the binary it runs in
//! (`std::env::current_exe()`) as the broker (`plexwire broker`), the worker
//! (`plexwire worker`) and the raw relay baseline (`plexwire bench-relay`), so
//! the binary that calls [`bench()`], [`hol()`] and [`relay()`] must offer those
//! subcommands with the `plexwire` CLI's arguments — `plexwire-cli` does. The
//! backends it measures are those of `plexwire::transport::registry()`, each
//! on its own loopback listener.

mod bench;
mod hol;

pub use bench::{relay, run as bench, BenchArgs, RelayArgs};
pub use hol::{run as hol, HolArgs};
