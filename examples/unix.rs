//! Broker, worker and client over UNIX-domain sockets.
//!
//! ```sh
//! cargo run --example unix --features unix
//! ```
//!
//! The socket files live in a temporary directory; the broker removes them
//! when it shuts down. `?mode=600` restricts who may connect.

mod common;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("plexwire-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let clients = format!("unix://{}?mode=600", dir.join("clients.sock").display());
    let workers = format!("unix://{}?mode=600", dir.join("workers.sock").display());
    let result = common::run(&clients, &workers).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}
