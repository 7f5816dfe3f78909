//! `plexwire session serve` as a user runs it: the real hat-juggler 0.7.6
//! client (from `<repo>/.venv`, `bash scripts/python-peers.sh`) passes its
//! checks against the binary's demo application, and SIGTERM stops the
//! server cleanly. Loopback only, bounded in time.

#![cfg(feature = "session")]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("cli/ is in the repository")
        .to_path_buf()
}

/// The server process, killed if the test fails before stopping it.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_hat_client_passes_against_plexwire_session_serve() {
    let py = repo().join(".venv/bin/python");
    if !py.exists() {
        assert!(
            std::env::var("PLEXWIRE_SKIP_INTEROP").as_deref() == Ok("1"),
            "needs the Python peers: run `bash scripts/python-peers.sh` (or set PLEXWIRE_SKIP_INTEROP=1)"
        );
        return;
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_plexwire"))
        .args(["session", "serve", "--listen", "ws://127.0.0.1:0/ws"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start plexwire session serve");
    let stdout = child.stdout.take().expect("stdout");
    let mut server = Server(child);
    let mut lines = BufReader::new(stdout).lines();
    let ready = lines
        .next()
        .expect("a first line")
        .expect("readable stdout");
    let url = ready
        .strip_prefix("session: ")
        .unwrap_or_else(|| panic!("unexpected first line: {ready}"))
        .to_owned();
    assert!(
        url.starts_with("ws://127.0.0.1:") && url.ends_with("/ws"),
        "{url}"
    );

    let out = Command::new(&py)
        .arg(repo().join("tests/interop/juggler_client.py"))
        .arg(&url)
        .output()
        .expect("run the hat client");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("OK 8"),
        "hat client against {url} ({}):\n{text}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );

    let term = Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status()
        .expect("run kill");
    assert!(term.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = server.0.try_wait().expect("wait") {
            assert!(status.success(), "exit: {status}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
