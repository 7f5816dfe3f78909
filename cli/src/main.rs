//! The `plexwire` command: run a broker or a worker, run a pipeline, read a
//! broker's stats, or watch the whole system work in one process (`demo`).
//!
//! A crate of its own so that the `plexwire` library never depends on clap,
//! tracing-subscriber or the benchmark harness (`plexwire-bench`); every
//! subcommand is a thin shell over the library. Logs go to stderr through
//! `tracing`; set `RUST_LOG` (e.g. `RUST_LOG=debug`).

#[cfg(any(feature = "tls", feature = "quic"))]
mod cert;
mod demo;
mod packet;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use plexwire::broker::{Broker, BrokerConfig, ListenerOptions, Side, STATS_PIPELINE};
use plexwire::client::{Client, ClientConfig, RunOptions};
use plexwire::codec::CodecKind;
use plexwire::protocol::Payload;
use plexwire::worker::{Worker, WorkerConfig, WorkerExit};

#[derive(Parser, Debug)]
#[command(
    name = "plexwire",
    version,
    about = "Run work across processes and machines over any transport."
)]
struct Cli {
    /// Runtime threads: 1 runs everything on one thread (tokio's current-thread
    /// runtime, fastest on small machines: no cross-thread wake-ups); more uses
    /// tokio's multi-thread runtime.
    #[arg(long, global = true, env = "PLEXWIRE_THREADS", default_value_t = 1)]
    threads: usize,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a broker: clients connect to --clients, workers to --workers.
    Broker {
        /// Client endpoints (repeatable), e.g. tcp://127.0.0.1:51500, unix:///tmp/pw-client.sock
        #[arg(long = "clients", default_value = "tcp://127.0.0.1:51500")]
        clients: Vec<String>,
        /// Worker endpoints (repeatable), e.g. tcp://127.0.0.1:51510
        #[arg(long = "workers", default_value = "tcp://127.0.0.1:51510")]
        workers: Vec<String>,
        /// Runs that may wait for a free worker slot (0 = answer NO_CAPACITY at once, like ReasonChip).
        #[arg(long, default_value_t = 1024)]
        queue: usize,
        /// Seconds running runs get to finish on Ctrl-C.
        #[arg(long, default_value_t = 30.0)]
        grace: f64,
        /// Connections each listener holds at once; more wait in the
        /// kernel's backlog until one closes.
        #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
        max_connections: u32,
    },
    /// Run a worker serving the built-in pipelines (echo, add, sleep, fail, count).
    Worker {
        /// The broker's worker endpoint; repeat it to fail over between brokers.
        #[arg(long, default_value = "tcp://127.0.0.1:51510")]
        broker: Vec<String>,
        /// Serve one broker session and exit, instead of reconnecting (with
        /// backoff) whenever the broker goes away.
        #[arg(long)]
        once: bool,
        /// Runs at once.
        #[arg(long, default_value_t = 4)]
        capacity: u32,
        /// Codec: json or bincode.
        #[arg(long, default_value = "json", value_parser = parse_codec)]
        codec: CodecKind,
        /// Speak ReasonChip 0.0.6's protocol from the start (no HELLO, JSON,
        /// no events). Not needed for a ReasonChip broker: one that closes the
        /// connection after our HELLO is served in legacy mode anyway.
        #[arg(long, conflicts_with = "native")]
        legacy: bool,
        /// Never fall back to legacy (ReasonChip) mode: a broker that closes
        /// the connection after our HELLO is an error.
        #[arg(long)]
        native: bool,
    },
    /// Run one pipeline: prints its events as they arrive, then its result.
    Run {
        /// The broker's client endpoint.
        #[arg(long, default_value = "tcp://127.0.0.1:51500")]
        broker: String,
        /// The pipeline to run.
        pipeline: String,
        /// Variables, as a JSON object.
        #[arg(long, default_value = "{}")]
        vars: String,
        /// Give up (and cancel the run) after this many seconds.
        #[arg(long)]
        timeout: Option<f64>,
        /// Start the run and return at once; its result is discarded.
        #[arg(long)]
        detach: bool,
        /// Codec: json or bincode.
        #[arg(long, default_value = "json", value_parser = parse_codec)]
        codec: CodecKind,
        /// Speak ReasonChip 0.0.6's protocol from the start (no HELLO, JSON,
        /// no events). Not needed for a ReasonChip broker: one that closes the
        /// connection after our HELLO is talked to in legacy mode anyway.
        #[arg(long, conflicts_with = "native")]
        legacy: bool,
        /// Never fall back to legacy (ReasonChip) mode: a broker that closes
        /// the connection after our HELLO is an error.
        #[arg(long)]
        native: bool,
        /// Seconds to wait for the broker to come up.
        #[arg(long, default_value_t = 0.0)]
        wait: f64,
    },
    /// Print a running broker's live counters.
    Stats {
        /// The broker's client endpoint.
        #[arg(long, default_value = "tcp://127.0.0.1:51500")]
        broker: String,
        /// Seconds to wait for the broker to come up.
        #[arg(long, default_value_t = 0.0)]
        wait: f64,
    },
    /// Broker, workers and a client in one process doing real work, then a summary.
    Demo(demo::DemoArgs),
    /// Write a development CA, server and client certificates to --out, and print the commands to try TLS.
    #[cfg(any(feature = "tls", feature = "quic"))]
    Cert(cert::CertArgs),
    /// The end-to-end load benchmark: broker, worker and a raw relay baseline as separate processes.
    ///
    /// A flag given twice takes its last value (so scripts/bench.sh's defaults can be overridden).
    #[command(args_override_self = true)]
    Bench(plexwire_bench::BenchArgs),
    /// Head-of-line blocking: small-run latency beside a 10 MiB run, over TCP and QUIC.
    BenchHol(plexwire_bench::HolArgs),
    /// The packet stream (cs.packetstream 20240630 wire-compatible): serve the demo request types, call a peer, measure.
    Packet(packet::PacketArgs),
    /// (Used by `bench`.) Relay frames to --upstream, or echo them back.
    #[command(hide = true)]
    BenchRelay(plexwire_bench::RelayArgs),
}

fn parse_codec(s: &str) -> Result<CodecKind, String> {
    let kind: CodecKind = s.parse()?;
    if kind.is_enabled() {
        Ok(kind)
    } else {
        Err(format!(
            "this build lacks the `{s}` codec (enable the `{s}` cargo feature)"
        ))
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match cli.threads {
        0 | 1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("plexwire: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("plexwire: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<ExitCode, String> {
    match command {
        Command::Broker {
            clients,
            workers,
            queue,
            grace,
            max_connections,
        } => broker(clients, workers, queue, grace, max_connections as usize).await,
        Command::Worker {
            broker,
            once,
            capacity,
            codec,
            legacy,
            native,
        } => worker(broker, once, capacity, codec, legacy, native).await,
        Command::Run {
            broker,
            pipeline,
            vars,
            timeout,
            detach,
            codec,
            legacy,
            native,
            wait,
        } => {
            run_pipeline(
                &broker, &pipeline, &vars, timeout, detach, codec, legacy, native, wait,
            )
            .await
        }
        Command::Stats { broker, wait } => stats(&broker, wait).await,
        Command::Demo(args) => demo::run(args).await,
        #[cfg(any(feature = "tls", feature = "quic"))]
        Command::Cert(args) => cert::run(args),
        Command::Bench(args) => plexwire_bench::bench(args).await,
        Command::BenchRelay(args) => plexwire_bench::relay(args).await,
        Command::BenchHol(args) => plexwire_bench::hol(args).await,
        Command::Packet(args) => packet::run(args).await,
    }
}

async fn broker(
    clients: Vec<String>,
    workers: Vec<String>,
    queue: usize,
    grace: f64,
    max_connections: usize,
) -> Result<ExitCode, String> {
    let broker = Broker::new(BrokerConfig {
        queue_limit: queue,
        ..BrokerConfig::default()
    });
    let options = ListenerOptions {
        max_connections,
        ..ListenerOptions::default()
    };
    for (side, urls, label) in [
        (Side::Client, &clients, "clients"),
        (Side::Worker, &workers, "workers"),
    ] {
        for url in urls {
            let ep = broker
                .listen(url, side, options.clone())
                .await
                .map_err(|e| e.to_string())?;
            println!("{label}: {ep}");
        }
    }
    println!("broker running; Ctrl-C drains and stops (a second Ctrl-C exits at once)");
    tokio::signal::ctrl_c()
        .await
        .map_err(|e| format!("cannot wait for Ctrl-C: {e}"))?;
    let grace = Duration::from_secs_f64(grace.max(0.0));
    println!("shutting down: running runs get {grace:?} to finish");
    tokio::select! {
        _ = broker.shutdown(grace) => {
            let s = broker.stats().switchboard;
            println!("stopped: {} completed, {} failed", s.completed, s.failed.iter().map(|(_, n)| n).sum::<u64>());
            Ok(ExitCode::SUCCESS)
        }
        _ = tokio::signal::ctrl_c() => {
            println!("second Ctrl-C: exiting now");
            Ok(ExitCode::from(130))
        }
    }
}

async fn worker(
    urls: Vec<String>,
    once: bool,
    capacity: u32,
    codec: CodecKind,
    legacy: bool,
    native: bool,
) -> Result<ExitCode, String> {
    let w = plexwire::builtin::register(Worker::new(WorkerConfig {
        capacity,
        codec,
        legacy,
        fallback_to_legacy: !native,
        ..WorkerConfig::default()
    }));
    println!(
        "worker: serving {:?} with capacity {capacity} on {}",
        w.pipelines(),
        urls.join(", ")
    );
    let stopper = w.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            println!("Ctrl-C: finishing running runs (a second Ctrl-C exits at once)");
            stopper.stop();
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }
    });
    let exit = if once {
        let url = urls.first().ok_or("give a --broker")?;
        w.run(url).await
    } else {
        w.run_reconnecting(&urls, plexwire::reconnect::Backoff::default())
            .await
    };
    match exit.map_err(|e| e.to_string())? {
        WorkerExit::BrokerGone => Err(format!(
            "the broker at {} closed the connection",
            urls.join(", ")
        )),
        exit => {
            println!("worker stopped ({exit:?})");
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn connect(
    url: &str,
    codec: CodecKind,
    legacy: bool,
    native: bool,
    wait: f64,
) -> Result<Client, String> {
    let config = ClientConfig {
        codec,
        legacy,
        fallback_to_legacy: !native,
        ..ClientConfig::default()
    };
    Client::connect_any(
        &[url.to_owned()],
        config,
        Duration::from_secs_f64(wait.max(0.0)),
    )
    .await
    .map_err(|e| e.to_string())
}

#[allow(clippy::too_many_arguments)]
async fn run_pipeline(
    url: &str,
    pipeline: &str,
    vars: &str,
    timeout: Option<f64>,
    detach: bool,
    codec: CodecKind,
    legacy: bool,
    native: bool,
    wait: f64,
) -> Result<ExitCode, String> {
    let vars: serde_json::Value = serde_json::from_str(vars)
        .map_err(|e| format!("--vars must be JSON, e.g. --vars '{{\"a\": 1}}': {e}"))?;
    let client = connect(url, codec, legacy, native, wait).await?;
    if detach {
        let cookie = client
            .run_detached(pipeline, &vars)
            .await
            .map_err(|e| e.to_string())?;
        println!("detached run {cookie} started");
        // Sends the queued RUN and closes the stream cleanly before we exit.
        client.close(Duration::from_secs(5)).await;
        return Ok(ExitCode::SUCCESS);
    }
    let timeout = timeout.map(|s| Duration::from_secs_f64(s.max(0.0)));
    let mut handle = client
        .start_with(pipeline, &vars, RunOptions { timeout })
        .await
        .map_err(|e| e.to_string())?;
    while let Some(event) = handle.next_event().await {
        println!("event: {}", event.as_str());
    }
    let outcome = handle.finish_raw().await;
    client.close(Duration::from_secs(2)).await;
    match outcome {
        Ok(result) => {
            println!("{}", result.as_ref().map_or("null", Payload::as_str));
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("plexwire: {e} [{}]", e.rc());
            if let plexwire::RunError::Failed { stacktrace, .. } = &e {
                for line in stacktrace {
                    eprintln!("    {line}");
                }
            }
            Ok(ExitCode::from(2))
        }
    }
}

async fn stats(url: &str, wait: f64) -> Result<ExitCode, String> {
    // Only a plexwire broker keeps these counters: no legacy fallback (--native).
    let client = connect(url, CodecKind::Json, false, true, wait).await?;
    let stats: serde_json::Value = client
        .run_with(
            STATS_PIPELINE,
            &serde_json::json!({}),
            RunOptions {
                timeout: Some(Duration::from_secs(10)),
            },
        )
        .await
        .map_err(|e| e.to_string())?;
    let obj = stats
        .as_object()
        .ok_or("the broker answered stats that are not an object")?;
    for (k, v) in obj {
        println!("{k:<20} {v}");
    }
    client.close(Duration::from_secs(2)).await;
    Ok(ExitCode::SUCCESS)
}
