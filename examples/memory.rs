//! Broker, worker and client in one process over the in-memory transport.
//!
//! ```sh
//! cargo run --example memory
//! ```
//!
//! Start here: no sockets, nothing to configure. The same code runs over
//! every transport; only the endpoint URLs change (see `tcp.rs`, `unix.rs`).

mod common;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    common::run("mem://example-clients", "mem://example-workers").await
}
