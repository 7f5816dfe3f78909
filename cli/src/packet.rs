//! `plexwire packet serve | call | bench`: the packet stream
//! (cs.packetstream 20240630 wire-compatible) from the command line — a
//! demo peer serving the request types of `plexwire::peer::demo` on every
//! channel, a one-shot caller, and a requests-per-second measurement. A
//! thin shell over `plexwire::peer`; the Python interop tests drive these
//! against the real library.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use plexwire::peer::{demo, PacketConfig, PacketConnection};
use plexwire::transport::{self, ServerTransport};
use tokio::sync::Semaphore;

#[derive(Args, Debug)]
pub(crate) struct PacketArgs {
    #[command(subcommand)]
    command: PacketCommand,
}

#[derive(Subcommand, Debug)]
enum PacketCommand {
    /// Serve the demo request types on every channel: 1 echo, 2 upper, 3 fail, 4 empty (other: as 3).
    ///
    /// Prints `LISTENING <url>` on stdout once bound (port 0 picks a free port).
    Serve {
        /// Where to listen, e.g. tcp://127.0.0.1:51600, unix:///tmp/pw-packet.sock
        #[arg(long, default_value = "tcp://127.0.0.1:51600")]
        listen: String,
        /// Connections served at once; more wait in the kernel's backlog.
        #[arg(long, default_value_t = 1024)]
        max_connections: usize,
        /// cs.packetstream's packet_grace, in milliseconds (0: flush as soon as the queue is empty).
        #[arg(long, default_value_t = 0)]
        grace_ms: u64,
    },
    /// Call a packet-stream peer once and print `ok flags payload`; exits 1 if the answer is not ok.
    Call {
        /// The peer, e.g. tcp://127.0.0.1:51600
        #[arg(long, default_value = "tcp://127.0.0.1:51600")]
        connect: String,
        /// The request type (1 echo, 2 upper, 3 fail, 4 empty on `packet serve`).
        rq_type: u64,
        /// Request flags.
        #[arg(long, default_value_t = 0)]
        flags: u64,
        /// Channel (a cs.packetstream 20240630 peer serves only 0).
        #[arg(long, default_value_t = 0)]
        channel: u64,
        /// Payload, as text.
        #[arg(long, default_value = "")]
        data: String,
        /// Seconds to wait for the answer and the orderly close.
        #[arg(long, default_value_t = 10.0)]
        timeout: f64,
    },
    /// Echo requests per second against a peer, with N in flight; prints one JSON line per depth.
    ///
    /// With --raw the peer is a raw frame echo (`plexwire bench-relay --listen URL`, u32-prefixed
    /// frames, no protocol): the baseline round trip of the same transport and runtime.
    Bench {
        /// The peer, e.g. tcp://127.0.0.1:51600
        #[arg(long, default_value = "tcp://127.0.0.1:51600")]
        connect: String,
        /// Requests in flight (repeatable).
        #[arg(long = "in-flight", default_values_t = [1usize, 100])]
        in_flight: Vec<usize>,
        /// Seconds per depth.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// Payload bytes per request.
        #[arg(long, default_value_t = 16)]
        size: usize,
        /// The peer is a raw frame echo, not a packet-stream peer.
        #[arg(long)]
        raw: bool,
        /// One caller task per request in flight (each awaiting `call`), instead of one
        /// task keeping N submitted requests in flight (what the raw baseline does).
        #[arg(long, conflicts_with = "raw")]
        tasks: bool,
    },
}

pub(crate) async fn run(args: PacketArgs) -> Result<ExitCode, String> {
    match args.command {
        PacketCommand::Serve {
            listen,
            max_connections,
            grace_ms,
        } => serve(&listen, max_connections, Duration::from_millis(grace_ms)).await,
        PacketCommand::Call {
            connect,
            rq_type,
            flags,
            channel,
            data,
            timeout,
        } => call(&connect, rq_type, flags, channel, data, secs(timeout)?).await,
        PacketCommand::Bench {
            connect,
            in_flight,
            seconds,
            size,
            raw,
            tasks,
        } => {
            if raw {
                raw_bench(&connect, &in_flight, secs(seconds)?, size).await
            } else {
                bench(&connect, &in_flight, secs(seconds)?, size, tasks).await
            }
        }
    }
}

fn secs(s: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(s).map_err(|e| format!("{s} is not a number of seconds: {e}"))
}

async fn serve(url: &str, max_connections: usize, grace: Duration) -> Result<ExitCode, String> {
    let mut listener = transport::listen(url)
        .await
        .map_err(|e| format!("cannot listen on {url}: {e}"))?;
    println!("LISTENING {}", listener.local_endpoint().url());
    let slots = Arc::new(Semaphore::new(max_connections.max(1)));
    let config = PacketConfig {
        packet_grace: grace,
        ..PacketConfig::default()
    };
    tokio::select! {
        r = accept_loop(&mut listener, slots, config) => r,
        _ = tokio::signal::ctrl_c() => Ok(ExitCode::SUCCESS),
    }
}

async fn accept_loop(
    listener: &mut Box<dyn ServerTransport>,
    slots: Arc<Semaphore>,
    config: PacketConfig,
) -> Result<ExitCode, String> {
    let mut backoff = Duration::from_millis(5);
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return Ok(ExitCode::SUCCESS);
        };
        let conn = match listener.accept().await {
            Ok(conn) => {
                backoff = Duration::from_millis(5);
                conn
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let config = config.clone();
        tokio::spawn(async move {
            let conn = PacketConnection::open(conn, Some(demo::handler()), config);
            tracing::debug!(peer = conn.peer(), "packet connection");
            // As the seed's server: serve until the peer's EOF, then close
            // in order (ERQ, what is running, EOF).
            conn.join_recv().await;
            conn.close().await;
            drop(slot);
        });
    }
}

async fn call(
    url: &str,
    rq_type: u64,
    flags: u64,
    channel: u64,
    data: String,
    limit: Duration,
) -> Result<ExitCode, String> {
    let conn = transport::connect(url)
        .await
        .map_err(|e| format!("cannot connect to {url}: {e}"))?;
    let conn = PacketConnection::open(conn, None, PacketConfig::default());
    let answer = tokio::time::timeout(limit, conn.call(rq_type, flags, data, channel))
        .await
        .map_err(|_| format!("no answer from {url} within {limit:?}"))
        .and_then(|r| r.map_err(|e| e.to_string()));
    // Close in order whatever the answer, so the peer ends cleanly too.
    if tokio::time::timeout(limit, conn.close()).await.is_err() {
        tracing::warn!("the peer did not close in order within {limit:?}; closing anyway");
        conn.abort();
    }
    let answer = answer?;
    println!(
        "{} {} {}",
        answer.ok,
        answer.flags,
        String::from_utf8_lossy(&answer.payload)
    );
    Ok(if answer.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn bench(
    url: &str,
    depths: &[usize],
    per_depth: Duration,
    size: usize,
    tasks: bool,
) -> Result<ExitCode, String> {
    let conn = transport::connect(url)
        .await
        .map_err(|e| format!("cannot connect to {url}: {e}"))?;
    let conn = PacketConnection::open(conn, None, PacketConfig::default());
    let payload = bytes_of(size);
    for &depth in depths {
        let depth = depth.max(1);
        let deadline = Instant::now() + per_depth;
        let start = Instant::now();
        let counts = if tasks {
            // One caller task per request in flight, each awaiting its call.
            let workers = (0..depth).map(|_| {
                let conn = conn.clone();
                let payload = payload.clone();
                async move {
                    let mut n = 0u64;
                    while Instant::now() < deadline {
                        let r = conn
                            .call(demo::ECHO, 0, payload.clone(), 0)
                            .await
                            .map_err(|e| e.to_string())?;
                        check_echo(&r, &payload)?;
                        n += 1;
                    }
                    Ok::<u64, String>(n)
                }
            });
            futures_util::future::try_join_all(workers).await?
        } else {
            // One task keeping `depth` requests in flight, as the raw baseline does.
            use futures_util::stream::{FuturesUnordered, StreamExt};
            let mut in_flight = FuturesUnordered::new();
            let mut n = 0u64;
            loop {
                while in_flight.len() < depth && Instant::now() < deadline {
                    let p = conn
                        .submit(demo::ECHO, 0, payload.clone(), 0)
                        .await
                        .map_err(|e| e.to_string())?;
                    in_flight.push(p);
                }
                let Some(r) = in_flight.next().await else {
                    break;
                };
                check_echo(&r.map_err(|e| e.to_string())?, &payload)?;
                n += 1;
            }
            vec![n]
        };
        let elapsed = start.elapsed().as_secs_f64();
        let total: u64 = counts.iter().sum();
        let kind = if tasks {
            "packet-stream-tasks"
        } else {
            "packet-stream"
        };
        report(url, kind, depth, total, elapsed);
    }
    if tokio::time::timeout(Duration::from_secs(10), conn.close())
        .await
        .is_err()
    {
        conn.abort();
    }
    Ok(ExitCode::SUCCESS)
}

/// One line of `bench`'s output.
fn report(url: &str, kind: &str, depth: usize, total: u64, elapsed: f64) {
    println!(
        "{}",
        serde_json::json!({
            "connect": url,
            "peer": kind,
            "in_flight": depth,
            "requests": total,
            "seconds": elapsed,
            "requests_per_second": total as f64 / elapsed,
        })
    );
}

/// The baseline: frames echoed by a raw relay, `depth` in flight on one
/// connection, fed while a slot is free and flushed when none is.
async fn raw_bench(
    url: &str,
    depths: &[usize],
    per_depth: Duration,
    size: usize,
) -> Result<ExitCode, String> {
    use futures_util::SinkExt;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    let payload = bytes_of(size);
    for &depth in depths {
        let depth = depth.max(1);
        let (mut tx, mut rx) = transport::connect(url)
            .await
            .map_err(|e| format!("cannot connect to {url}: {e}"))?
            .into_frames();
        let slots = Semaphore::new(depth);
        let sent = AtomicU64::new(0);
        let done = AtomicBool::new(false);
        let finished = tokio::sync::Notify::new();
        let start = Instant::now();
        let deadline = start + per_depth;
        let send = async {
            while Instant::now() < deadline {
                let permit = match slots.try_acquire() {
                    Ok(p) => p,
                    Err(_) => {
                        tx.flush().await.map_err(|e| e.to_string())?;
                        slots.acquire().await.map_err(|e| e.to_string())?
                    }
                };
                permit.forget();
                tx.feed(payload.clone()).await.map_err(|e| e.to_string())?;
                sent.fetch_add(1, Ordering::SeqCst);
            }
            tx.flush().await.map_err(|e| e.to_string())?;
            done.store(true, Ordering::SeqCst);
            finished.notify_one();
            Ok::<(), String>(())
        };
        let recv = async {
            let mut got = 0u64;
            // `done` is set only after the last frame went out.
            while !(done.load(Ordering::SeqCst) && got == sent.load(Ordering::SeqCst)) {
                let frame = tokio::select! {
                    f = rx.recv_frame() => f,
                    // Re-check: the sender may have finished with nothing in flight.
                    _ = finished.notified() => continue,
                };
                match frame {
                    Some(Ok(f)) if f.len() == payload.len() => {}
                    other => return Err(format!("bad echo from the relay: {other:?}")),
                }
                got += 1;
                slots.add_permits(1);
            }
            Ok::<u64, String>(got)
        };
        let ((), total) = tokio::try_join!(send, recv)?;
        report(
            url,
            "raw-relay",
            depth,
            total,
            start.elapsed().as_secs_f64(),
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn check_echo(r: &plexwire::peer::Response, payload: &bytes::Bytes) -> Result<(), String> {
    if r.ok && r.payload == *payload {
        Ok(())
    } else {
        Err(format!("bad echo answer: {r:?}"))
    }
}

fn bytes_of(size: usize) -> bytes::Bytes {
    bytes::Bytes::from(
        (0..size)
            .map(|i| b'a' + (i % 26) as u8)
            .collect::<Vec<u8>>(),
    )
}
