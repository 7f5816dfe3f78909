//! Broker, worker and client over TLS: clients over loopback TCP
//! (`tls://`), the worker over a UNIX socket with mutual TLS (`tls+unix://`,
//! the worker proves who it is with a client certificate).
//!
//! ```sh
//! cargo run --example tls --features tls
//! ```
//!
//! The certificates are made at start-up by a throwaway CA
//! (`plexwire::transport::tls::dev`) in a temporary directory, removed at
//! the end. A listener's URL names its certificate and key (`?cert=…&key=…`,
//! plus `client_ca=…` to require client certificates); a peer's URL names the
//! CA to check the listener with (`?ca=…`, plus `cert=…&key=…` to present
//! one). Across processes, `plexwire cert --out DIR` writes the same set and
//! prints the commands.

mod common;

use plexwire::transport::tls::dev::write_dev_set;
use plexwire::transport::Endpoint;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("plexwire-example-tls-{}", std::process::id()));
    let pem = write_dev_set(&dir, &["localhost", "127.0.0.1"])?;
    let (ca, cert, key) = (
        pem.ca.display(),
        pem.server_cert.display(),
        pem.server_key.display(),
    );
    let clients = format!("tls://127.0.0.1:0?cert={cert}&key={key}");
    let workers = format!(
        "tls+unix://{}?cert={cert}&key={key}&client_ca={ca}",
        dir.join("workers.sock").display()
    );
    let connect = |bound: &Endpoint| {
        let address = bound.url().split('?').next().unwrap_or_default();
        match bound.scheme() {
            // Mutual TLS: the worker presents its client certificate.
            "tls+unix" => format!(
                "{address}?ca={ca}&cert={}&key={}",
                pem.client_cert.display(),
                pem.client_key.display()
            ),
            _ => format!("{address}?ca={ca}"),
        }
    };
    let result = common::run_with(&clients, &workers, connect).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}
