//! Broker, worker and client over QUIC on loopback UDP.
//!
//! ```sh
//! cargo run --example quic --features quic
//! ```
//!
//! QUIC always encrypts, so it takes the TLS options of `tls://`: the
//! listener's URL names its certificate and key (`?cert=…&key=…`), a peer's
//! URL the CA to check it with (`?ca=…`). The certificates are made at
//! start-up by a throwaway CA (`plexwire::transport::quic::dev`) in a
//! temporary directory, removed at the end. Each plexwire connection is one
//! QUIC stream for now.

mod common;

use plexwire::transport::quic::dev::write_dev_set;
use plexwire::transport::Endpoint;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("plexwire-example-quic-{}", std::process::id()));
    let pem = write_dev_set(&dir, &["localhost", "127.0.0.1"])?;
    let listen = format!(
        "quic://127.0.0.1:0?cert={}&key={}",
        pem.server_cert.display(),
        pem.server_key.display()
    );
    let connect = |bound: &Endpoint| {
        let address = bound.url().split('?').next().unwrap_or_default();
        format!("{address}?ca={}", pem.ca.display())
    };
    let result = common::run_with(&listen, &listen, connect).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}
