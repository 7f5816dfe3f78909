//! The real hat-juggler 0.7.6 Python client against plexwire's juggler
//! server (`plexwire::session::server`) serving the demo application of
//! `shared/wire/hat-juggler.md`. The client is `<repo>/.venv/bin/python`
//! (`bash scripts/python-peers.sh`); `PLEXWIRE_SKIP_INTEROP=1` skips.

#![cfg(feature = "session")]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use plexwire::session::server::{listen, ServerConnection, ServerOptions};
use plexwire::session::{demo, SessionConfig};

fn python() -> Option<PathBuf> {
    let py = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    if py.exists() {
        return Some(py);
    }
    assert!(
        std::env::var("PLEXWIRE_SKIP_INTEROP").as_deref() == Ok("1"),
        "the juggler interop test needs the Python peers: run `bash scripts/python-peers.sh` (or set PLEXWIRE_SKIP_INTEROP=1 to skip)"
    );
    None
}

async fn run_client(segment: usize) {
    let Some(py) = python() else { return };
    let server = listen(
        "http://127.0.0.1:0",
        ServerOptions {
            session: SessionConfig {
                max_segment_size: segment,
                ..SessionConfig::default()
            },
            ..ServerOptions::default()
        },
        Arc::new(|conn: ServerConnection| conn.set_state(demo::initial_state())),
        Arc::new(|conn, name, data| Box::pin(demo::handle(conn, name, data))),
    )
    .await
    .unwrap();
    let url = format!(
        "ws{}/ws",
        server.local_endpoint().url()[4..].trim_end_matches('/')
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/juggler_client.py");
    let child = tokio::process::Command::new(py)
        .arg(script)
        .arg(&url)
        .arg(segment.to_string())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), child)
        .await
        .expect("the hat client finished within 60 s")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("OK 8"),
        "hat client failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hat_client_passes_its_checks_against_the_plexwire_server() {
    run_client(65536).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hat_client_passes_with_small_segments_both_ways() {
    run_client(1024).await;
}
