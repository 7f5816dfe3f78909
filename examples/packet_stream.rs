//! The packet stream (cs.packetstream 20240630 wire-compatible): two peers
//! that call each other, first over loopback TCP, then over a child
//! process's stdin/stdout.
//!
//! ```sh
//! cargo run --example packet_stream --features tcp
//! ```
//!
//! Both ends of a packet connection are equal: each serves requests (here
//! the demo types of `plexwire::peer::demo` — 1 echo, 2 upper, 3 fail,
//! 4 empty — plus a "who are you" type 9) and each may call the other, many
//! requests in flight at once, on any channel. The child is this same
//! program started with `--child`: it speaks the packet stream on its
//! stdin/stdout, as a cs.packetstream peer started by `PacketConnection((0, 1))`
//! would.

use std::process::Stdio;
use std::time::Duration;

use plexwire::peer::{demo, Handler, IncomingRequest, PacketConfig, PacketConnection, Reply};

/// The demo types plus 9, "who are you", answered with `name`.
fn handler(name: &'static str) -> Handler {
    Handler::new(move |rq: IncomingRequest| async move {
        if rq.rq_type == 9 {
            return Ok(Reply::Text(name.to_owned()));
        }
        demo::answer(&rq)
    })
}

async fn show(from: &str, conn: &PacketConnection, rq_type: u64, data: &str, channel: u64) {
    match conn.call(rq_type, 5, data.to_owned(), channel).await {
        Ok(r) => println!(
            "{from:>7} -> rq_type {rq_type} channel {channel} {data:?}: ok={} flags={} payload={:?}",
            r.ok,
            r.flags,
            String::from_utf8_lossy(&r.payload)
        ),
        Err(e) => println!("{from:>7} -> rq_type {rq_type}: error: {e}"),
    }
}

/// `--child`: serve and call back over stdin/stdout, until the parent closes.
async fn child() {
    let conn = PacketConnection::from_io(
        tokio::io::stdin(),
        tokio::io::stdout(),
        "parent",
        Some(handler("the child")),
        PacketConfig::default(),
    );
    // The child calls its parent too; its report goes to stderr (stdout is the stream).
    match conn.call(9, 0, "", 0).await {
        Ok(r) => eprintln!(
            "  child -> rq_type 9: the parent says it is {:?}",
            String::from_utf8_lossy(&r.payload)
        ),
        Err(e) => eprintln!("  child: {e}"),
    }
    conn.join_recv().await;
    conn.close().await;
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::args().any(|a| a == "--child") {
        child().await;
        return Ok(());
    }

    println!("== over TCP");
    let mut listener = plexwire::listen("tcp://127.0.0.1:0").await?;
    let url = listener.local_endpoint().url().to_owned();
    let (accepted, connected) = tokio::join!(listener.accept(), plexwire::connect(&url));
    let server = PacketConnection::open(
        accepted?,
        Some(handler("the server")),
        PacketConfig::default(),
    );
    let client = PacketConnection::open(
        connected?,
        Some(handler("the client")),
        PacketConfig::default(),
    );
    show("client", &client, demo::ECHO, "hello", 0).await;
    show("client", &client, demo::UPPER, "hello on channel 1", 1).await;
    show("client", &client, demo::FAIL, "", 0).await;
    show("server", &server, 9, "", 0).await;
    // Many in flight at once, answered in any order.
    let pending = futures_util::future::join_all(
        (0..100u64).map(|i| client.call(demo::ECHO, i, format!("{i}"), i % 3)),
    );
    let answers = pending.await;
    println!(
        " client -> 100 echoes in flight: {} ok",
        answers
            .iter()
            .filter(|r| r.as_ref().is_ok_and(|r| r.ok))
            .count()
    );
    // The seed's orderly close: ERQ, what is running, EOF; the server does the same after the client's EOF.
    tokio::join!(client.close(), async {
        server.join_recv().await;
        server.close().await;
    });
    println!(" closed in order");

    println!("== over a child process's stdin/stdout");
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .arg("--child")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let (to_child, from_child) = (
        child.stdin.take().ok_or("no stdin")?,
        child.stdout.take().ok_or("no stdout")?,
    );
    let conn = PacketConnection::from_io(
        from_child,
        to_child,
        "child",
        Some(handler("the parent")),
        PacketConfig::default(),
    );
    show(" parent", &conn, demo::UPPER, "shout", 0).await;
    show(" parent", &conn, 9, "", 2).await;
    tokio::time::timeout(Duration::from_secs(10), conn.close()).await?;
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait()).await??;
    println!(" closed in order; the child exited with {status}");
    Ok(())
}
