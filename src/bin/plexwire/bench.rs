//! `plexwire bench`: the end-to-end load benchmark.
//!
//! The broker, the worker, and a raw 2-hop relay baseline run as separate
//! processes (this same binary, hidden subcommands); the load generator runs
//! here. For each transport and codec it measures sequential round trips
//! (p50/p99/p999) and throughput with 1, 100 and 1000 runs in flight on one
//! connection and 100 in flight on each of 4 connections. The baseline is the
//! same framing with no protocol: client → relay → echo → relay → client.
//! Results print as a table with ratios, and as JSON lines (`--json FILE`).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use futures_util::stream::{FuturesUnordered, StreamExt};
use plexwire::client::{Client, ClientConfig};
use plexwire::codec::CodecKind;
use plexwire::protocol::Payload;
use plexwire::transport::{self, AnyTransport, Endpoint, ServerTransport};
use tokio::sync::Semaphore;

#[derive(Args, Debug)]
pub(crate) struct BenchArgs {
    /// Transports to measure (comma-separated): tcp, unix.
    #[arg(long, default_value = "tcp,unix", value_delimiter = ',')]
    transports: Vec<String>,
    /// Codecs to measure (comma-separated): json, bincode.
    #[arg(long, default_value = "json,bincode", value_delimiter = ',')]
    codecs: Vec<String>,
    /// Seconds per throughput measurement.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Sequential round trips measured.
    #[arg(long, default_value_t = 20_000)]
    sequential: usize,
    /// A quick run (CI): 0.3 s per measurement, 500 round trips.
    #[arg(long)]
    short: bool,
    /// Also write the results as JSON lines to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

/// Hidden helper processes of the benchmark.
#[derive(Args, Debug)]
pub(crate) struct RelayArgs {
    /// Where to listen.
    #[arg(long)]
    listen: String,
    /// Where to forward (relay); absent = echo every frame back.
    #[arg(long)]
    upstream: Option<String>,
}

/// 64 bytes of payload text (a JSON string), as in the figures.
pub(crate) fn payload() -> Payload {
    Payload::to_json(&"x".repeat(62)).expect("a string serializes")
}

pub(crate) struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts this binary with `args`, waits for a stdout line starting with
/// `ready`, and returns the process and every line up to that one.
pub(crate) fn spawn_lines(args: &[&str], ready: &str) -> Result<(Proc, Vec<String>), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    let mut child = Command::new(exe)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start `plexwire {}`: {e}", args.join(" ")))?;
    let stdout = child.stdout.take().expect("piped");
    let proc = Proc(child);
    let mut lines = BufReader::new(stdout).lines();
    let mut seen = Vec::new();
    let mut ready_seen = false;
    for line in lines.by_ref() {
        let line = line.map_err(|e| e.to_string())?;
        ready_seen = line.starts_with(ready);
        seen.push(line);
        if ready_seen {
            break;
        }
    }
    // Keep draining so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    if !ready_seen {
        return Err(format!(
            "`plexwire {}` exited before it was ready",
            args.join(" ")
        ));
    }
    Ok((proc, seen))
}

/// Like [`spawn_lines`], returning the last word of the ready line.
pub(crate) fn spawn(args: &[&str], ready: &str) -> Result<(Proc, String), String> {
    let (proc, lines) = spawn_lines(args, ready)?;
    let word = lines
        .last()
        .and_then(|l| l.split_whitespace().last())
        .unwrap_or_default()
        .to_owned();
    Ok((proc, word))
}

/// The last word of the line that starts with `prefix`.
pub(crate) fn word_after(lines: &[String], prefix: &str) -> Result<String, String> {
    lines
        .iter()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.split_whitespace().last())
        .map(str::to_owned)
        .ok_or_else(|| format!("the broker did not print a `{prefix}` line"))
}

fn listen_url(transport: &str, dir: &std::path::Path, name: &str) -> Result<String, String> {
    match transport {
        "tcp" => Ok("tcp://127.0.0.1:0".into()),
        "unix" => Ok(format!(
            "unix://{}",
            dir.join(format!("{name}.sock")).display()
        )),
        other => Err(format!(
            "the benchmark supports tcp and unix, not `{other}`"
        )),
    }
}

#[derive(Debug, Clone, serde::Serialize)]
struct Row {
    system: String,
    transport: String,
    codec: String,
    test: String,
    value: f64,
    unit: &'static str,
}

struct Sink {
    rows: Vec<Row>,
}

impl Sink {
    fn push(
        &mut self,
        system: &str,
        transport: &str,
        codec: &str,
        test: &str,
        value: f64,
        unit: &'static str,
    ) {
        println!("  {system:<9} {transport:<5} {codec:<8} {test:<26} {value:>12.1} {unit}");
        self.rows.push(Row {
            system: system.into(),
            transport: transport.into(),
            codec: codec.into(),
            test: test.into(),
            value,
            unit,
        });
    }

    fn get(&self, system: &str, transport: &str, codec: &str, test: &str) -> Option<f64> {
        self.rows
            .iter()
            .find(|r| {
                r.system == system && r.transport == transport && r.codec == codec && r.test == test
            })
            .map(|r| r.value)
    }
}

pub(crate) fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1e6
}

pub(crate) async fn run(args: BenchArgs) -> Result<ExitCode, String> {
    let (seconds, sequential) = if args.short {
        (0.3, 500)
    } else {
        (args.seconds.max(0.1), args.sequential.max(10))
    };
    let dir = std::env::temp_dir().join(format!("plexwire-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    println!("plexwire bench: 64-byte payloads, {seconds} s per throughput figure, {sequential} sequential round trips");
    println!(
        "  {:<9} {:<5} {:<8} {:<26} {:>12}",
        "system", "trans", "codec", "test", "value"
    );
    let mut sink = Sink { rows: Vec::new() };
    let window = Duration::from_secs_f64(seconds);
    for t in &args.transports {
        // Baseline: client -> relay -> echo -> relay -> client, same framing.
        let (_echo, echo_url) = spawn(
            &["bench-relay", "--listen", &listen_url(t, &dir, "echo")?],
            "listening",
        )?;
        let (_relay, relay_url) = spawn(
            &[
                "bench-relay",
                "--listen",
                &listen_url(t, &dir, "relay")?,
                "--upstream",
                &echo_url,
            ],
            "listening",
        )?;
        raw_sequential(&relay_url, sequential, &mut sink, t).await?;
        for k in [100usize, 1000] {
            let rate = raw_pipelined(&relay_url, k, window).await?;
            sink.push(
                "raw",
                t,
                "-",
                &format!("throughput {k} in flight"),
                rate,
                "msg/s",
            );
        }
        for c in &args.codecs {
            let codec: CodecKind = c.parse()?;
            let (_broker, lines) = spawn_lines(
                &[
                    "broker",
                    "--clients",
                    &listen_url(t, &dir, &format!("c-{c}"))?,
                    "--workers",
                    &listen_url(t, &dir, &format!("w-{c}"))?,
                    "--queue",
                    "100000",
                ],
                "broker running",
            )?;
            let (clients, workers) = (
                word_after(&lines, "clients:")?,
                word_after(&lines, "workers:")?,
            );
            let (_worker, _) = spawn(
                &[
                    "worker",
                    "--broker",
                    &workers,
                    "--capacity",
                    "2048",
                    "--codec",
                    c,
                ],
                "worker:",
            )?;
            let config = ClientConfig {
                codec,
                ..ClientConfig::default()
            };
            let ep = Endpoint::parse(&clients).map_err(|e| e.to_string())?;
            let client = connect_ready(&ep, &config).await?;
            let mut lat = Vec::with_capacity(sequential);
            for _ in 0..sequential {
                let t0 = Instant::now();
                client.run_raw_echo().await?;
                lat.push(t0.elapsed());
            }
            lat.sort();
            sink.push("plexwire", t, c, "sequential p50", pct(&lat, 0.5), "µs");
            sink.push("plexwire", t, c, "sequential p99", pct(&lat, 0.99), "µs");
            sink.push("plexwire", t, c, "sequential p999", pct(&lat, 0.999), "µs");
            for k in [1usize, 100, 1000] {
                let rate = plexwire_rate(std::slice::from_ref(&client), k, window).await?;
                sink.push(
                    "plexwire",
                    t,
                    c,
                    &format!("throughput {k} in flight"),
                    rate,
                    "runs/s",
                );
            }
            let mut many = vec![client.clone()];
            for _ in 0..3 {
                many.push(connect_ready(&ep, &config).await?);
            }
            let rate = plexwire_rate(&many, 100, window).await?;
            sink.push("plexwire", t, c, "throughput 4 conns x 100", rate, "runs/s");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);

    println!("\nratios (same run)");
    for t in &args.transports {
        let raw_p50 = sink.get("raw", t, "-", "sequential p50");
        let raw_100 = sink.get("raw", t, "-", "throughput 100 in flight");
        for c in &args.codecs {
            if let (Some(p), Some(r)) = (sink.get("plexwire", t, c, "sequential p50"), raw_p50) {
                println!(
                    "  {t:<5} {c:<8} sequential p50 plexwire/raw     {:>6.2}x   (target <= 1.3x)",
                    p / r
                );
            }
            if let (Some(p), Some(r)) = (
                sink.get("plexwire", t, c, "throughput 100 in flight"),
                raw_100,
            ) {
                println!(
                    "  {t:<5} {c:<8} 100-in-flight plexwire/raw      {:>6.3}",
                    p / r
                );
            }
        }
        if let (Some(j), Some(b)) = (
            sink.get("plexwire", t, "json", "throughput 100 in flight"),
            sink.get("plexwire", t, "bincode", "throughput 100 in flight"),
        ) {
            println!(
                "  {t:<5} json/bincode at 100 in flight          {:>6.2}    (target >= 0.60)",
                j / b
            );
        }
    }
    if let Some(path) = &args.json {
        let text: String = sink
            .rows
            .iter()
            .map(|r| serde_json::to_string(r).expect("rows serialize") + "\n")
            .collect();
        std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        println!("\nJSON lines written to {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn connect_ready(ep: &Endpoint, config: &ClientConfig) -> Result<Client, String> {
    let client = Client::connect_with(&AnyTransport, ep, config.clone())
        .await
        .map_err(|e| e.to_string())?;
    // Wait until the worker has registered: an echo succeeds.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match client.run_raw_echo().await {
            Ok(()) => return Ok(client),
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            Err(e) => return Err(format!("the benchmark worker never answered: {e}")),
        }
    }
}

pub(crate) trait EchoOnce {
    async fn run_raw_echo(&self) -> Result<(), String>;
}

impl EchoOnce for Client {
    async fn run_raw_echo(&self) -> Result<(), String> {
        let h = self
            .start_raw("echo", Some(payload()), Default::default())
            .await
            .map_err(|e| e.to_string())?;
        h.finish_raw().await.map(|_| ()).map_err(|e| e.to_string())
    }
}

async fn plexwire_rate(
    clients: &[Client],
    in_flight: usize,
    window: Duration,
) -> Result<f64, String> {
    let start = Instant::now();
    let mut done = 0u64;
    async fn one(c: Client) -> (Result<(), String>, Client) {
        (c.run_raw_echo().await, c)
    }
    let mut futs = FuturesUnordered::new();
    for c in clients {
        for _ in 0..in_flight {
            futs.push(one(c.clone()));
        }
    }
    while let Some((r, c)) = futs.next().await {
        r?;
        done += 1;
        if start.elapsed() < window {
            futs.push(one(c));
        }
    }
    Ok(done as f64 / start.elapsed().as_secs_f64())
}

async fn raw_sequential(url: &str, n: usize, sink: &mut Sink, t: &str) -> Result<(), String> {
    let (mut tx, mut rx) = transport::connect(url)
        .await
        .map_err(|e| e.to_string())?
        .into_frames();
    let frame = Bytes::from(vec![b'x'; 64]);
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        tx.send_frame(frame.clone())
            .await
            .map_err(|e| e.to_string())?;
        rx.recv_frame()
            .await
            .ok_or("relay closed")?
            .map_err(|e| e.to_string())?;
        lat.push(t0.elapsed());
    }
    lat.sort();
    sink.push("raw", t, "-", "sequential p50", pct(&lat, 0.5), "µs");
    sink.push("raw", t, "-", "sequential p99", pct(&lat, 0.99), "µs");
    sink.push("raw", t, "-", "sequential p999", pct(&lat, 0.999), "µs");
    Ok(())
}

async fn raw_pipelined(url: &str, in_flight: usize, window: Duration) -> Result<f64, String> {
    use futures_util::SinkExt;
    let (mut tx, mut rx) = transport::connect(url)
        .await
        .map_err(|e| e.to_string())?
        .into_frames();
    let permits = Arc::new(Semaphore::new(in_flight));
    let frame = Bytes::from(vec![b'x'; 64]);
    let start = Instant::now();
    let sender = {
        let permits = permits.clone();
        tokio::spawn(async move {
            let mut sent = 0u64;
            while start.elapsed() < window {
                let Ok(p) = permits.acquire().await else {
                    break;
                };
                p.forget();
                if tx.feed(frame.clone()).await.is_err() {
                    break;
                }
                sent += 1;
                if permits.available_permits() == 0 && tx.flush().await.is_err() {
                    break;
                }
            }
            let _ = tx.flush().await;
            (sent, tx)
        })
    };
    let mut got = 0u64;
    loop {
        if sender.is_finished() {
            break;
        }
        match tokio::time::timeout(Duration::from_millis(200), rx.recv_frame()).await {
            Ok(Some(Ok(_))) => {
                got += 1;
                permits.add_permits(1);
            }
            Ok(_) => break,
            Err(_) => continue,
        }
    }
    let (sent, _tx) = sender.await.map_err(|e| e.to_string())?;
    let elapsed = start.elapsed();
    while got < sent {
        match tokio::time::timeout(Duration::from_secs(2), rx.recv_frame()).await {
            Ok(Some(Ok(_))) => got += 1,
            _ => break,
        }
    }
    Ok(got as f64 / elapsed.as_secs_f64().max(1e-9))
}

/// The relay / echo process.
pub(crate) async fn relay(args: RelayArgs) -> Result<ExitCode, String> {
    let mut listener = transport::listen(&args.listen)
        .await
        .map_err(|e| e.to_string())?;
    println!("listening {}", listener.local_endpoint().url());
    loop {
        let conn = listener.accept().await.map_err(|e| e.to_string())?;
        let upstream = args.upstream.clone();
        tokio::spawn(async move {
            let (mut tx, mut rx) = conn.into_frames();
            match upstream {
                None => {
                    let _ = pipe(&mut rx, &mut tx).await;
                }
                Some(url) => {
                    let Ok(up) = transport::connect(&url).await else {
                        return;
                    };
                    let (mut utx, mut urx) = up.into_frames();
                    let _ = tokio::join!(pipe(&mut rx, &mut utx), pipe(&mut urx, &mut tx));
                }
            }
        });
    }
}

/// Forwards frames, feeding while more are ready and flushing when none are.
async fn pipe(
    rx: &mut transport::FrameReceiver,
    tx: &mut transport::FrameSender,
) -> Result<(), transport::TransportError> {
    use futures_util::{FutureExt, SinkExt};
    while let Some(frame) = rx.next().await {
        tx.feed(frame?).await?;
        while let Some(Some(frame)) = rx.next().now_or_never() {
            tx.feed(frame?).await?;
        }
        tx.flush().await?;
    }
    Ok(())
}
