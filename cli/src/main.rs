//! The `plexwire` command: run a broker or a worker, run a pipeline, read a
//! broker's stats, or watch the whole system work in one process (`demo`).
//!
//! A crate of its own so that the `plexwire` library never depends on clap,
//! tracing-subscriber or the benchmark harness (`plexwire-bench`); every
//! subcommand is a thin shell over the library. Logs go to stderr through
//! `tracing`; set `RUST_LOG` (e.g. `RUST_LOG=debug`).

mod args;
#[cfg(any(feature = "tls", feature = "quic"))]
mod cert;
mod demo;
mod packet;
#[cfg(feature = "session")]
mod session;
mod signals;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use plexwire::broker::{
    Broker, BrokerConfig, ListenerOptions, Side, DETACHED_PIPELINE, STATS_PIPELINE,
};
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
    Broker(BrokerArgs),
    /// Run a worker serving the built-in pipelines (echo, add, sleep, fail, count).
    Worker(WorkerArgs),
    /// Run one pipeline: prints its events as they arrive, then its result.
    Run(RunArgs),
    /// Print a running broker's live counters.
    Stats {
        /// The broker's client endpoint.
        #[arg(long, default_value = "tcp://127.0.0.1:51500")]
        broker: String,
        /// Seconds to wait for the broker to come up.
        #[arg(long, default_value = "0", value_parser = args::seconds)]
        wait: Duration,
        #[command(flatten)]
        token: PeerToken,
    },
    /// List the detached runs whose client has gone, or cancel them (--cancel).
    Detached {
        /// The broker's client endpoint.
        #[arg(long, default_value = "tcp://127.0.0.1:51500")]
        broker: String,
        /// Cancel this run (a cookie from the list; repeatable), or `all`.
        #[arg(long)]
        cancel: Vec<String>,
        /// Seconds to wait for the broker to come up.
        #[arg(long, default_value = "0", value_parser = args::seconds)]
        wait: Duration,
        #[command(flatten)]
        token: PeerToken,
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
    /// The hat-juggler JSON session: `session serve` runs the demo
    /// application for juggler clients (feature `session`).
    #[cfg(feature = "session")]
    Session(session::SessionArgs),
    /// (Used by `bench`.) Relay frames to --upstream, or echo them back.
    #[command(hide = true)]
    BenchRelay(plexwire_bench::RelayArgs),
}

#[derive(clap::Args, Debug)]
struct BrokerArgs {
    /// Client endpoints (repeatable), e.g. tcp://127.0.0.1:51500, unix:///tmp/pw-client.sock
    #[arg(long = "clients", default_value = "tcp://127.0.0.1:51500")]
    clients: Vec<String>,
    /// Worker endpoints (repeatable), e.g. tcp://127.0.0.1:51510
    #[arg(long = "workers", default_value = "tcp://127.0.0.1:51510")]
    workers: Vec<String>,
    /// Runs that may wait for a free worker slot (0 = answer NO_CAPACITY at once, like ReasonChip).
    #[arg(long, default_value_t = 1024)]
    queue: usize,
    /// A client's share of the queue: past it, a client may queue only while
    /// this many places stay free for the others, so one client cannot fill
    /// it for everyone. Default: a quarter of --queue; 0: no share rule.
    #[arg(long)]
    queue_per_client: Option<usize>,
    /// Runs one client may have waiting for results at once, queued or
    /// running; more are answered NO_CAPACITY.
    #[arg(long, default_value_t = BrokerConfig::default().max_runs_per_client,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    max_runs_per_client: usize,
    /// Seconds a run may take, queued and running, when its client gives no
    /// timeout (legacy clients never do); then it is answered TIMEOUT and
    /// cancelled at its worker. Default: no limit.
    #[arg(long, value_parser = args::positive_seconds)]
    default_timeout: Option<Duration>,
    /// Seconds a run may wait in the queue for a free slot, whatever its
    /// deadline; then it is answered NO_CAPACITY. Default: no limit.
    #[arg(long, value_parser = args::positive_seconds)]
    max_queue_wait: Option<Duration>,
    /// Seconds a run may wait for its client to take events (its event
    /// window used up) before it is cancelled, so a client that stopped
    /// reading cannot hold a worker slot for ever.
    #[arg(long, default_value = "300", value_parser = args::positive_seconds)]
    stall_timeout: Duration,
    /// Seconds running runs get to finish on Ctrl-C or SIGTERM.
    #[arg(long, default_value = "30", value_parser = args::seconds)]
    grace: Duration,
    /// Connections each listener holds at once; more wait in the
    /// kernel's backlog until one closes.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// Token native clients must present (prefer PLEXWIRE_CLIENT_TOKEN or
    /// --client-token-file: a flag is visible to every local user).
    #[arg(long, env = "PLEXWIRE_CLIENT_TOKEN", hide_env_values = true)]
    client_token: Option<String>,
    /// A file whose first line is the clients' token.
    #[arg(long, value_name = "PATH")]
    client_token_file: Option<PathBuf>,
    /// Token native workers must present (prefer PLEXWIRE_WORKER_TOKEN or
    /// --worker-token-file: a flag is visible to every local user).
    #[arg(long, env = "PLEXWIRE_WORKER_TOKEN", hide_env_values = true)]
    worker_token: Option<String>,
    /// A file whose first line is the workers' token.
    #[arg(long, value_name = "PATH")]
    worker_token_file: Option<PathBuf>,
    /// Admit legacy (ReasonChip, HELLO-less) clients, which cannot present a
    /// token. Default: yes without --client-token, no with it.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    allow_legacy_clients: Option<bool>,
    /// Admit legacy (ReasonChip, HELLO-less) workers, which cannot present a
    /// token. Default: yes without --worker-token, no with it.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    allow_legacy_workers: Option<bool>,
}

#[derive(clap::Args, Debug)]
struct WorkerArgs {
    /// The broker's worker endpoint; repeat it to fail over between brokers.
    #[arg(long, default_value = "tcp://127.0.0.1:51510")]
    broker: Vec<String>,
    /// Serve one broker session and exit, instead of reconnecting (with
    /// backoff) whenever the broker goes away.
    #[arg(long)]
    once: bool,
    /// Runs at once (1 to 65536, the most a broker accepts).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    capacity: u32,
    #[command(flatten)]
    dialect: Dialect,
    #[command(flatten)]
    token: PeerToken,
    /// This worker's name: a run may ask for it (`run --worker NAME`).
    #[arg(long)]
    name: Option<String>,
    /// A label of this worker, key=value (repeatable): a run may require it
    /// (`run --label key=value`).
    #[arg(long = "label", value_parser = args::label)]
    labels: Vec<String>,
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// The broker's client endpoint.
    #[arg(long, default_value = "tcp://127.0.0.1:51500")]
    broker: String,
    /// The pipeline to run.
    pipeline: String,
    /// Variables, as a JSON object.
    #[arg(long, default_value = "{}", value_parser = args::json_object)]
    vars: serde_json::Value,
    /// Give up (and cancel the run) after this many seconds.
    #[arg(long, value_parser = args::positive_seconds)]
    timeout: Option<Duration>,
    /// Start the run and return at once; its result is discarded.
    #[arg(long)]
    detach: bool,
    /// Only the worker of this name may run it.
    #[arg(long)]
    worker: Option<String>,
    /// Only a worker with this label (key=value; repeatable: all of them)
    /// may run it.
    #[arg(long = "label", value_parser = args::label)]
    labels: Vec<String>,
    /// Its place in the broker's wait queue: 0 to 9, higher first.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=9))]
    priority: u8,
    #[command(flatten)]
    dialect: Dialect,
    /// Seconds to wait for the broker to come up.
    #[arg(long, default_value = "0", value_parser = args::seconds)]
    wait: Duration,
    #[command(flatten)]
    token: PeerToken,
}

/// How a worker or client speaks to its broker.
#[derive(clap::Args, Debug)]
struct Dialect {
    /// Codec: json or bincode.
    #[arg(long, default_value = "json", value_parser = CodecKind::parse_enabled)]
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
}

impl Dialect {
    /// What `stats` and `detached` speak: only a plexwire broker answers them.
    const NATIVE_JSON: Dialect = Dialect {
        codec: CodecKind::Json,
        legacy: false,
        native: true,
    };
}

/// The token a worker or client presents in its HELLO.
#[derive(clap::Args, Debug)]
struct PeerToken {
    /// Token to present to the broker (prefer PLEXWIRE_TOKEN or --token-file:
    /// a flag is visible to every local user).
    #[arg(long, env = "PLEXWIRE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A file whose first line is the token.
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,
}

impl PeerToken {
    fn resolve(&self) -> Result<Option<String>, String> {
        args::Secret {
            value: self.token.clone(),
            file: self.token_file.clone(),
        }
        .resolve("--token")
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
        Command::Broker(args) => broker(args).await,
        Command::Worker(args) => worker(args).await,
        Command::Run(args) => run_pipeline(args).await,
        Command::Stats {
            broker,
            wait,
            token,
        } => stats(&broker, wait, token.resolve()?).await,
        Command::Detached {
            broker,
            cancel,
            wait,
            token,
        } => detached(&broker, &cancel, wait, token.resolve()?).await,
        Command::Demo(args) => demo::run(args).await,
        #[cfg(any(feature = "tls", feature = "quic"))]
        Command::Cert(args) => cert::run(args),
        Command::Bench(args) => plexwire_bench::bench(args).await,
        Command::BenchRelay(args) => plexwire_bench::relay(args).await,
        Command::BenchHol(args) => plexwire_bench::hol(args).await,
        Command::Packet(args) => packet::run(args).await,
        #[cfg(feature = "session")]
        Command::Session(args) => session::run(args).await,
    }
}

async fn broker(a: BrokerArgs) -> Result<ExitCode, String> {
    let client_token = args::Secret {
        value: a.client_token,
        file: a.client_token_file,
    }
    .resolve("--client-token")?;
    let worker_token = args::Secret {
        value: a.worker_token,
        file: a.worker_token_file,
    }
    .resolve("--worker-token")?;
    let allow_legacy = |flag: Option<bool>, token: &Option<String>| flag.unwrap_or(token.is_none());
    let sides = [
        (
            Side::Client,
            &a.clients,
            "clients",
            allow_legacy(a.allow_legacy_clients, &client_token),
            client_token.is_some(),
        ),
        (
            Side::Worker,
            &a.workers,
            "workers",
            allow_legacy(a.allow_legacy_workers, &worker_token),
            worker_token.is_some(),
        ),
    ];
    let broker = Broker::new(BrokerConfig {
        queue_limit: a.queue,
        queue_per_client: a.queue_per_client,
        default_timeout: a.default_timeout,
        max_queue_wait: a.max_queue_wait,
        stall_timeout: Some(a.stall_timeout),
        max_runs_per_client: a.max_runs_per_client,
        client_token,
        worker_token,
        ..BrokerConfig::default()
    });
    // Listen for signals before the listeners open: from the first
    // accepted peer on, a SIGTERM drains instead of killing.
    let mut signals = signals::Signals::new()?;
    for (side, urls, label, allow_legacy, has_token) in sides {
        let options = ListenerOptions {
            max_connections: a.max_connections as usize,
            allow_legacy,
        };
        for url in urls {
            let ep = broker
                .listen(url, side, options.clone())
                .await
                .map_err(|e| e.to_string())?;
            println!("{label}: {ep}");
            if let Some(warning) = exposure_warning(&ep, label, has_token, allow_legacy) {
                eprintln!("plexwire: warning: {warning}");
            }
        }
    }
    println!("broker running; Ctrl-C or SIGTERM drains and stops (a second one exits at once)");
    let first = signals.next().await;
    let grace = a.grace;
    println!("{first}: shutting down; running runs get {grace:?} to finish");
    tokio::select! {
        _ = broker.shutdown(grace) => {
            let s = broker.stats().switchboard;
            println!("stopped: {} completed, {} failed", s.completed, s.failed.iter().map(|(_, n)| n).sum::<u64>());
            Ok(ExitCode::SUCCESS)
        }
        second = signals.next() => {
            println!("second {second}: exiting now");
            Ok(ExitCode::from(130))
        }
    }
}

/// Why a listener that other machines can reach is open to anyone, if it
/// is: no token, or legacy peers (who cannot present one) admitted. A
/// rogue worker receives every client's variables and forges results; a
/// rogue client runs any pipeline.
fn exposure_warning(
    ep: &plexwire::transport::Endpoint,
    label: &str,
    has_token: bool,
    allow_legacy: bool,
) -> Option<String> {
    use plexwire::transport::Address;
    let Address::Host { host, .. } = ep.address() else {
        return None; // a UNIX socket (file mode) or an in-process name
    };
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback || (has_token && !allow_legacy) {
        return None;
    }
    let (who, harm, flag) = if label == "workers" {
        (
            "workers",
            "any process that reaches it can register as a worker, receive every client's variables and forge results",
            "worker",
        )
    } else {
        (
            "clients",
            "any process that reaches it can run any pipeline",
            "client",
        )
    };
    let why = if has_token {
        format!("admits legacy {who}, who present no token (--allow-legacy-{who})")
    } else {
        format!("takes {who} without authentication")
    };
    Some(format!(
        "{} is reachable from other machines and {why}: {harm}. Set PLEXWIRE_{}_TOKEN (or --{flag}-token-file) and leave legacy {who} off, or listen on 127.0.0.1",
        ep.url(),
        flag.to_uppercase()
    ))
}

async fn worker(a: WorkerArgs) -> Result<ExitCode, String> {
    let w = plexwire::builtin::register(Worker::new(WorkerConfig {
        capacity: a.capacity,
        codec: a.dialect.codec,
        legacy: a.dialect.legacy,
        fallback_to_legacy: !a.dialect.native,
        token: a.token.resolve()?,
        name: a.name,
        labels: a.labels,
        ..WorkerConfig::default()
    }));
    let urls = a.broker;
    println!(
        "worker: serving {:?} with capacity {} on {}",
        w.pipelines(),
        a.capacity,
        urls.join(", ")
    );
    let mut signals = signals::Signals::new()?;
    let stopper = w.clone();
    tokio::spawn(async move {
        let first = signals.next().await;
        println!("{first}: finishing running runs (a second Ctrl-C or SIGTERM exits at once)");
        stopper.stop();
        signals.next().await;
        std::process::exit(130);
    });
    let exit = if a.once {
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
    dialect: &Dialect,
    wait: Duration,
    token: Option<String>,
) -> Result<Client, String> {
    let config = ClientConfig {
        codec: dialect.codec,
        legacy: dialect.legacy,
        fallback_to_legacy: !dialect.native,
        token,
        ..ClientConfig::default()
    };
    Client::connect_any(&[url.to_owned()], config, wait)
        .await
        .map_err(|e| e.to_string())
}

async fn run_pipeline(a: RunArgs) -> Result<ExitCode, String> {
    let client = connect(&a.broker, &a.dialect, a.wait, a.token.resolve()?).await?;
    if a.detach {
        let cookie = client
            .run_detached(&a.pipeline, &a.vars)
            .await
            .map_err(|e| e.to_string())?;
        println!("detached run {cookie} started");
        // Sends the queued RUN and closes the stream cleanly before we exit.
        client.close(Duration::from_secs(5)).await;
        return Ok(ExitCode::SUCCESS);
    }
    let mut handle = client
        .start_with(
            &a.pipeline,
            &a.vars,
            RunOptions {
                timeout: a.timeout,
                worker: a.worker,
                labels: a.labels,
                priority: a.priority,
            },
        )
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

async fn stats(url: &str, wait: Duration, token: Option<String>) -> Result<ExitCode, String> {
    // Only a plexwire broker keeps these counters: no legacy fallback (--native).
    let client = connect(url, &Dialect::NATIVE_JSON, wait, token).await?;
    let stats: serde_json::Value = client
        .run_with(
            STATS_PIPELINE,
            &serde_json::json!({}),
            RunOptions {
                timeout: Some(Duration::from_secs(10)),
                ..RunOptions::default()
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

async fn detached(
    url: &str,
    cancel: &[String],
    wait: Duration,
    token: Option<String>,
) -> Result<ExitCode, String> {
    // Only a plexwire broker keeps detached runs: no legacy fallback.
    let client = connect(url, &Dialect::NATIVE_JSON, wait, token).await?;
    let listed: Vec<serde_json::Value> = client
        .run_with(
            DETACHED_PIPELINE,
            &serde_json::json!({}),
            RunOptions {
                timeout: Some(Duration::from_secs(10)),
                ..RunOptions::default()
            },
        )
        .await
        .map_err(|e| e.to_string())?;
    let cookie_of = |v: &serde_json::Value| v["cookie"].as_str().unwrap_or_default().to_owned();
    let targets: Vec<String> = if cancel.iter().any(|c| c == "all") {
        listed.iter().map(cookie_of).collect()
    } else {
        cancel.to_vec()
    };
    if targets.is_empty() {
        if listed.is_empty() {
            println!("no detached run has lost its client");
        }
        for v in &listed {
            let state = if v["running"] == true {
                "running"
            } else {
                "queued"
            };
            let pipeline = v["pipeline"].as_str().unwrap_or("-");
            println!("{}  {state:<8} {pipeline}", cookie_of(v));
        }
        client.close(Duration::from_secs(2)).await;
        return Ok(ExitCode::SUCCESS);
    }
    let mut failed = 0;
    for t in &targets {
        let cookie: uuid::Uuid = t.parse().map_err(|_| {
            format!("`{t}` is not a run's cookie (a UUID from the list), nor `all`")
        })?;
        match client.cancel_orphan(cookie).await {
            Ok(()) => println!("{cookie}  cancelled"),
            Err(e) => {
                failed += 1;
                eprintln!("plexwire: {cookie}: {e} [{}]", e.rc());
            }
        }
    }
    client.close(Duration::from_secs(2)).await;
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

#[cfg(test)]
mod tests {
    use super::exposure_warning;
    use plexwire::transport::Endpoint;

    fn warns(url: &str, label: &str, has_token: bool, allow_legacy: bool) -> bool {
        let ep = Endpoint::parse(url).unwrap();
        exposure_warning(&ep, label, has_token, allow_legacy).is_some()
    }

    #[test]
    fn open_listeners_beyond_loopback_are_named() {
        // Reachable from other machines and open to anyone: warned.
        assert!(warns("tcp://0.0.0.0:51510", "workers", false, true));
        assert!(warns("tcp://192.0.2.7:51510", "workers", false, false));
        assert!(warns("tcp://[::]:51500", "clients", false, true));
        // A token, but legacy peers (who present none) admitted: warned.
        assert!(warns("tcp://0.0.0.0:51510", "workers", true, true));
        // A token and no legacy peers, or loopback, or a UNIX socket: quiet.
        assert!(!warns("tcp://0.0.0.0:51510", "workers", true, false));
        assert!(!warns("tcp://127.0.0.1:51510", "workers", false, true));
        assert!(!warns("tcp://[::1]:51510", "workers", false, true));
        assert!(!warns("tcp://localhost:51510", "workers", false, true));
        assert!(!warns("unix:///tmp/w.sock", "workers", false, true));
        let ep = Endpoint::parse("tcp://0.0.0.0:51510").unwrap();
        let text = exposure_warning(&ep, "workers", false, true).unwrap();
        assert!(text.contains("PLEXWIRE_WORKER_TOKEN"), "{text}");
    }
}
