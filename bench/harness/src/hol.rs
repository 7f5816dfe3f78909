//! `plexwire bench-hol`: head-of-line blocking, measured.
//!
//! One client connection carries a stream of small runs (64-byte echo) while
//! a large run (10 MiB echo, back to back) shares the connection. Over TCP
//! every frame waits for the bytes queued ahead of it on the one byte
//! stream, so a small run's latency grows by the time the large payload
//! takes to cross; over QUIC each run travels on streams of its own
//! (`streams=run`, the default), and the small runs pass the large one. QUIC
//! with `streams=one` (everything on one stream) separates the effect of the
//! per-run streams from that of QUIC itself. Broker and worker run as
//! separate processes (bincode); the client runs here.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use plexwire::client::{Client, ClientConfig};
use plexwire::codec::CodecKind;
use plexwire::protocol::Payload;
use plexwire::transport::Endpoint;

use crate::bench::{
    connect_ready, pct, spawn, spawn_lines, word_after, Backend, EchoOnce, Proc, Scratch,
};

#[derive(Args, Debug)]
pub struct HolArgs {
    /// Cases (comma-separated): tcp, quic (a stream per run), quic-one (one QUIC stream).
    #[arg(long, default_value = "tcp,quic,quic-one", value_delimiter = ',')]
    transports: Vec<String>,
    /// The large run's payload, in MiB.
    #[arg(long, default_value_t = 10)]
    big_mib: usize,
    /// Small runs measured in each phase.
    #[arg(long, default_value_t = 2000)]
    small: usize,
    /// A quick run (CI): 1 MiB, 100 small runs.
    #[arg(long)]
    short: bool,
    /// Also write the results as JSON lines to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, serde::Serialize)]
struct Row {
    case: String,
    test: String,
    value: f64,
    unit: &'static str,
}

/// The listener of one case, and how to connect to it: the benchmark's own
/// backends, with QUIC's `streams=` option on both sides.
fn case(scratch: &mut Scratch, name: &str) -> Result<Backend, String> {
    let (transport, streams) = match name {
        "tcp" => ("tcp", None),
        "quic" => ("quic", Some("run")),
        "quic-one" => ("quic", Some("one")),
        other => {
            return Err(format!(
                "unknown case `{other}`: choose from tcp, quic, quic-one"
            ))
        }
    };
    let mut b = scratch.backend(transport)?;
    if let Some(streams) = streams {
        b.listen = format!("{}&streams={streams}", b.listen);
        b.connect_opts = format!("{}&streams={streams}", b.connect_opts);
    }
    Ok(b)
}

async fn small_latencies(client: &Client, n: usize) -> Result<Vec<Duration>, String> {
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        client.run_raw_echo().await?;
        lat.push(t0.elapsed());
    }
    lat.sort();
    Ok(lat)
}

pub async fn run(args: HolArgs) -> Result<ExitCode, String> {
    let (big_mib, small) = if args.short {
        (1, 100)
    } else {
        (args.big_mib.max(1), args.small.max(10))
    };
    let mut scratch = Scratch::new()?;
    let big = Payload::to_json(&"x".repeat((big_mib << 20) - 2)).expect("a string serializes");
    println!(
        "plexwire bench-hol: {small} sequential 64-byte runs, alone and beside back-to-back {big_mib} MiB runs on the same connection (bincode)"
    );
    println!("  {:<9} {:<28} {:>12}", "case", "test", "value");
    let mut rows: Vec<Row> = Vec::new();
    let mut push = |case: &str, test: &str, value: f64, unit: &'static str| {
        println!("  {case:<9} {test:<28} {value:>12.1} {unit}");
        rows.push(Row {
            case: case.into(),
            test: test.into(),
            value,
            unit,
        });
    };
    for name in &args.transports {
        let c = case(&mut scratch, name)?;
        let (_broker, lines): (Proc, _) = spawn_lines(
            &[
                "broker",
                "--clients",
                &c.listen,
                "--workers",
                &c.listen,
                "--queue",
                "1000",
            ],
            "broker running",
        )?;
        let clients = c.connect_url(&word_after(&lines, "clients:")?);
        let workers = c.connect_url(&word_after(&lines, "workers:")?);
        let (_worker, _) = spawn(
            &[
                "worker",
                "--broker",
                &workers,
                "--capacity",
                "16",
                "--codec",
                "bincode",
            ],
            "worker:",
        )?;
        let config = ClientConfig {
            codec: CodecKind::Bincode,
            ..ClientConfig::default()
        };
        let ep = Endpoint::parse(&clients).map_err(|e| e.to_string())?;
        let client = connect_ready(&ep, &config).await?;
        // Warm up, then the small runs alone.
        small_latencies(&client, small / 10).await?;
        let idle = small_latencies(&client, small).await?;
        // The same beside a large run, restarted as soon as it finishes.
        let stop = Arc::new(AtomicBool::new(false));
        let bigs = Arc::new(AtomicU64::new(0));
        let loader = {
            let (client, big, stop, bigs) =
                (client.clone(), big.clone(), stop.clone(), bigs.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let h = client
                        .start_raw("echo", Some(big.clone()), Default::default())
                        .await
                        .map_err(|e| e.to_string())?;
                    let got = h.finish_raw().await.map_err(|e| e.to_string())?;
                    if got.map(|p| p.as_bytes().len()) != Some(big.as_bytes().len()) {
                        return Err("the large run came back damaged".to_string());
                    }
                    bigs.fetch_add(1, Ordering::Relaxed);
                }
                Ok::<_, String>(())
            })
        };
        // Let the first large run get under way.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let t0 = Instant::now();
        let loaded = small_latencies(&client, small).await?;
        let elapsed = t0.elapsed();
        stop.store(true, Ordering::Relaxed);
        loader
            .await
            .map_err(|e| format!("the large-run task failed: {e}"))??;
        let big_rate = bigs.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64();
        push(name, "small p50 alone", pct(&idle, 0.5), "µs");
        push(name, "small p99 alone", pct(&idle, 0.99), "µs");
        push(name, "small p50 beside large", pct(&loaded, 0.5), "µs");
        push(name, "small p99 beside large", pct(&loaded, 0.99), "µs");
        push(name, "large runs done", big_rate * big_mib as f64, "MiB/s");
    }
    drop(scratch);
    let get = |case: &str, test: &str| {
        rows.iter()
            .find(|r| r.case == case && r.test == test)
            .map(|r| r.value)
    };
    println!("\nratios (same run)");
    for name in &args.transports {
        if let (Some(l), Some(a)) = (
            get(name, "small p50 beside large"),
            get(name, "small p50 alone"),
        ) {
            println!(
                "  {name:<9} small p50 beside large / alone   {:>8.2}x",
                l / a
            );
        }
    }
    for quic in ["quic", "quic-one"] {
        if let (Some(t), Some(q)) = (
            get("tcp", "small p50 beside large"),
            get(quic, "small p50 beside large"),
        ) {
            println!(
                "  tcp/{quic:<8} small p50 beside large         {:>8.2}x",
                t / q
            );
        }
    }
    if let Some(path) = &args.json {
        let text: String = rows
            .iter()
            .map(|r| serde_json::to_string(r).expect("rows serialize") + "\n")
            .collect();
        std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        println!("\nJSON lines written to {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
