//! Broker, worker and client over loopback TCP.
//!
//! ```sh
//! cargo run --example tcp --features tcp
//! ```
//!
//! Port 0 lets the OS pick free ports; the broker reports the ones it bound.
//! Across processes, run `plexwire broker`, `plexwire worker` and
//! `plexwire run` instead (see the README).

mod common;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    common::run("tcp://127.0.0.1:0", "tcp://127.0.0.1:0").await
}
