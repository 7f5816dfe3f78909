//! `plexwire-nats-baseline`: the NATS request-reply baseline of
//! `plexwire bench`, in its own crate so that plexwire itself does not depend
//! on a NATS client.
//!
//! `plexwire bench` starts `nats-server` on loopback, then this binary twice:
//!
//! - `respond`: one responder in a queue group, echoing every request's
//!   payload to its reply subject (the counterpart of plexwire's worker with
//!   the built-in `echo` pipeline). Prints `ready` once subscribed.
//! - `request`: the load generator on one connection (the counterpart of the
//!   bench's plexwire client): sequential round trips, then throughput with
//!   N requests in flight. Prints one JSON object per figure, then `done`.
//!
//! Both run tokio's current-thread runtime, as plexwire's processes do by
//! default.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, Subcommand};
use futures_util::stream::{FuturesUnordered, StreamExt};

#[derive(Parser, Debug)]
#[command(
    name = "plexwire-nats-baseline",
    about = "NATS request-reply baseline for `plexwire bench` (a queue-group responder and a load generator)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Echo every request on --subject back to its reply subject, as one member of --queue.
    Respond {
        /// The NATS server, e.g. nats://127.0.0.1:4222.
        #[arg(long)]
        server: String,
        /// The subject requests are sent to.
        #[arg(long, default_value = "plexwire.bench.echo")]
        subject: String,
        /// The queue group the responder joins.
        #[arg(long, default_value = "plexwire-bench")]
        queue: String,
    },
    /// Measure request-reply on one connection; prints JSON lines, then `done`.
    Request {
        /// The NATS server, e.g. nats://127.0.0.1:4222.
        #[arg(long)]
        server: String,
        /// The subject requests are sent to.
        #[arg(long, default_value = "plexwire.bench.echo")]
        subject: String,
        /// Sequential round trips measured (after a short warm-up).
        #[arg(long, default_value_t = 20_000)]
        sequential: usize,
        /// Seconds per throughput figure.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// Measure every figure this many times and print the best round (the
        /// highest throughput; the percentiles of the round with the lowest p50).
        #[arg(long, default_value_t = 1)]
        rounds: usize,
        /// Requests in flight for each throughput figure (comma-separated).
        #[arg(long, default_value = "100,1000", value_delimiter = ',')]
        in_flight: Vec<usize>,
        /// Payload bytes per request.
        #[arg(long, default_value_t = 64)]
        payload: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("plexwire-nats-baseline: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Respond {
                server,
                subject,
                queue,
            } => respond(&server, subject, queue).await,
            Command::Request {
                server,
                subject,
                sequential,
                seconds,
                rounds,
                in_flight,
                payload,
            } => {
                request(
                    &server,
                    subject,
                    sequential.max(1),
                    Duration::from_secs_f64(if seconds.is_finite() {
                        seconds.clamp(0.05, 3600.0)
                    } else {
                        3.0
                    }),
                    rounds.max(1),
                    &in_flight,
                    payload,
                )
                .await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("plexwire-nats-baseline: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn connect(server: &str) -> Result<async_nats::Client, String> {
    async_nats::ConnectOptions::new()
        .no_echo()
        .request_timeout(Some(Duration::from_secs(30)))
        .connect(server)
        .await
        .map_err(|e| format!("cannot connect to {server}: {e}"))
}

fn say(line: &str) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(|e| format!("cannot write to stdout: {e}"))
}

async fn respond(server: &str, subject: String, queue: String) -> Result<(), String> {
    let client = connect(server).await?;
    let mut requests = client
        .queue_subscribe(subject.clone(), queue.clone())
        .await
        .map_err(|e| format!("cannot subscribe to {subject} in queue {queue}: {e}"))?;
    // The server has our subscription once a flush (PING/PONG) returns.
    client
        .flush()
        .await
        .map_err(|e| format!("cannot flush to {server}: {e}"))?;
    say(&format!("ready: responding on {subject} in queue {queue}"))?;
    while let Some(message) = requests.next().await {
        if let Some(reply) = message.reply {
            client
                .publish(reply, message.payload)
                .await
                .map_err(|e| format!("cannot publish a reply: {e}"))?;
        }
    }
    Err(format!("the subscription to {server} ended"))
}

fn figure(test: &str, value: f64, unit: &str) -> Result<(), String> {
    say(&serde_json::json!({ "test": test, "value": value, "unit": unit }).to_string())
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1e6
}

async fn request(
    server: &str,
    subject: String,
    sequential: usize,
    window: Duration,
    rounds: usize,
    in_flight: &[usize],
    payload: usize,
) -> Result<(), String> {
    let client = connect(server).await?;
    let body = Bytes::from(vec![b'x'; payload]);
    let once = |client: async_nats::Client, subject: String, body: Bytes| async move {
        client
            .request(subject, body)
            .await
            .map(|_| ())
            .map_err(|e| format!("a request failed: {e}"))
    };
    for _ in 0..sequential.min(200) {
        once(client.clone(), subject.clone(), body.clone()).await?;
    }
    let mut best: Option<Vec<Duration>> = None;
    for _ in 0..rounds {
        let mut lat = Vec::with_capacity(sequential);
        for _ in 0..sequential {
            let t0 = Instant::now();
            once(client.clone(), subject.clone(), body.clone()).await?;
            lat.push(t0.elapsed());
        }
        lat.sort();
        if best.as_ref().is_none_or(|b| pct(&lat, 0.5) < pct(b, 0.5)) {
            best = Some(lat);
        }
    }
    let lat = best.unwrap_or_default();
    figure("sequential p50", pct(&lat, 0.5), "µs")?;
    figure("sequential p99", pct(&lat, 0.99), "µs")?;
    figure("sequential p999", pct(&lat, 0.999), "µs")?;
    for &k in in_flight {
        let k = k.max(1);
        let mut rate = 0f64;
        for _ in 0..rounds {
            rate = rate.max(throughput(&client, &subject, &body, k, window).await?);
        }
        figure(&format!("throughput {k} in flight"), rate, "req/s")?;
    }
    say("done")
}

/// Requests per second with `k` in flight on one connection over `window`.
async fn throughput(
    client: &async_nats::Client,
    subject: &str,
    body: &Bytes,
    k: usize,
    window: Duration,
) -> Result<f64, String> {
    let once = |client: async_nats::Client, subject: String, body: Bytes| async move {
        client
            .request(subject, body)
            .await
            .map(|_| ())
            .map_err(|e| format!("a request failed: {e}"))
    };
    let start = Instant::now();
    let mut done = 0u64;
    let mut futs = FuturesUnordered::new();
    for _ in 0..k {
        futs.push(once(client.clone(), subject.to_owned(), body.clone()));
    }
    while let Some(r) = futs.next().await {
        r?;
        done += 1;
        if start.elapsed() < window {
            futs.push(once(client.clone(), subject.to_owned(), body.clone()));
        }
    }
    Ok(done as f64 / start.elapsed().as_secs_f64().max(1e-9))
}
