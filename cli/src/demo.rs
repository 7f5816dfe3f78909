//! `plexwire demo`: an embedded broker, several workers and a client in one
//! process, over loopback TCP by default, doing real work: a burst of
//! concurrent runs, streamed events, a cancel, a failing handler, and a
//! worker that dies mid-run. Ends with a summary table.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use futures_util::stream::{FuturesUnordered, StreamExt};
use plexwire::broker::{Broker, BrokerConfig};
use plexwire::client::{Client, ClientConfig};
use plexwire::codec::CodecKind;
use plexwire::protocol::ResultCode;
use plexwire::transport::{AnyTransport, Endpoint};
use plexwire::worker::{HandlerError, Worker, WorkerConfig};
use serde_json::{json, Value};

#[derive(Args, Debug)]
pub(crate) struct DemoArgs {
    /// Transport between the parts: tcp, unix or mem.
    #[arg(long, default_value = "tcp")]
    transport: String,
    /// Healthy workers (alternately JSON and bincode).
    #[arg(long, default_value_t = 3)]
    workers: u32,
    /// Slots per worker.
    #[arg(long, default_value_t = 8)]
    capacity: u32,
    /// Runs in the burst.
    #[arg(long, default_value_t = 5000)]
    runs: usize,
    /// Burst runs in flight at once on the one client connection.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
}

/// Outcomes by result code, for the summary.
#[derive(Default)]
struct Tally(BTreeMap<&'static str, u64>);

impl Tally {
    fn add<T>(&mut self, r: &Result<T, plexwire::RunError>) {
        let rc = match r {
            Ok(_) => ResultCode::Ok,
            Err(e) => e.rc(),
        };
        *self.0.entry(rc.as_str()).or_default() += 1;
    }
}

fn endpoints(transport: &str) -> Result<(String, String, Option<tempdir::Dir>), String> {
    match transport {
        "tcp" => Ok(("tcp://127.0.0.1:0".into(), "tcp://127.0.0.1:0".into(), None)),
        "mem" => {
            let tag = std::process::id();
            Ok((
                format!("mem://demo-clients-{tag}"),
                format!("mem://demo-workers-{tag}"),
                None,
            ))
        }
        "unix" => {
            let dir = tempdir::Dir::new()
                .map_err(|e| format!("cannot create a socket directory: {e}"))?;
            let c = format!("unix://{}", dir.path.join("clients.sock").display());
            let w = format!("unix://{}", dir.path.join("workers.sock").display());
            Ok((c, w, Some(dir)))
        }
        other => Err(format!(
            "unknown transport `{other}` for the demo; choose tcp, unix or mem"
        )),
    }
}

/// A temporary directory removed on drop (for the UNIX sockets).
mod tempdir {
    pub(crate) struct Dir {
        pub(crate) path: std::path::PathBuf,
    }
    impl Dir {
        pub(crate) fn new() -> std::io::Result<Dir> {
            let path = std::env::temp_dir().join(format!("plexwire-demo-{}", std::process::id()));
            std::fs::create_dir_all(&path)?;
            Ok(Dir { path })
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub(crate) async fn run(args: DemoArgs) -> Result<ExitCode, String> {
    let (client_url, worker_url, _dir) = endpoints(&args.transport)?;
    let broker = Broker::new(BrokerConfig::default());
    let clients = broker
        .listen_clients(&client_url)
        .await
        .map_err(|e| e.to_string())?;
    let workers = broker
        .listen_workers(&worker_url)
        .await
        .map_err(|e| e.to_string())?;
    println!("plexwire demo over {}", args.transport);
    println!("  broker   clients on {clients}, workers on {workers}");

    // Healthy workers, alternately JSON and bincode, serving the built-ins.
    let mut worker_tasks = Vec::new();
    for i in 0..args.workers.max(1) {
        let codec = if i % 2 == 0 {
            CodecKind::Json
        } else {
            CodecKind::Bincode
        };
        let w = plexwire::builtin::register(Worker::new(WorkerConfig {
            capacity: args.capacity.max(1),
            codec,
            ..WorkerConfig::default()
        }));
        worker_tasks.push(spawn_worker(w, workers.clone()));
        println!("  worker {i}  capacity {}, {codec}", args.capacity.max(1));
    }
    // A worker that will die mid-run: the only one serving `render`.
    let doomed = Worker::new(WorkerConfig {
        capacity: 2,
        ..WorkerConfig::default()
    })
    .pipeline("render", |ctx, _v: Value| async move {
        ctx.emit(&"rendering…").await?;
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok::<_, HandlerError>("rendered")
    });
    let doomed_task = spawn_worker(doomed, workers.clone());
    println!("  worker d  capacity 2, serves only `render` (and will die mid-run)");
    let expected = (args.workers.max(1) * args.capacity.max(1) + 2) as u64;
    if !broker
        .wait_for_capacity(expected, Duration::from_secs(10))
        .await
    {
        return Err(format!(
            "workers did not register within 10 s: {:?}",
            broker.stats()
        ));
    }
    let client = Client::connect_with(&AnyTransport, &clients, ClientConfig::default())
        .await
        .map_err(|e| e.to_string())?;
    let mut tally = Tally::default();

    // 1. A burst of concurrent runs on one connection.
    println!(
        "\n[1/5] burst: {} runs (echo and add), {} in flight on one connection",
        args.runs, args.concurrency
    );
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(args.runs);
    let mut in_flight = FuturesUnordered::new();
    let mut next = 0usize;
    let mut done = 0usize;
    let step = (args.runs / 10).max(1);
    while done < args.runs {
        while in_flight.len() < args.concurrency.max(1) && next < args.runs {
            let c = client.clone();
            let i = next;
            in_flight.push(async move {
                let t = Instant::now();
                let r = if i.is_multiple_of(2) {
                    c.run::<_, Value>("echo", &json!({"i": i, "text": "hello from the demo"}))
                        .await
                } else {
                    c.run::<_, Value>("add", &json!({"a": i, "b": 1})).await
                };
                (t.elapsed(), r)
            });
            next += 1;
        }
        if let Some((lat, r)) = in_flight.next().await {
            tally.add(&r);
            latencies.push(lat);
            done += 1;
            if done.is_multiple_of(step) {
                println!("      {done:>7}/{} done", args.runs);
            }
        }
    }
    let burst_time = started.elapsed();
    latencies.sort();

    // 2. Streaming: several runs that emit events.
    println!("[2/5] streaming: 8 runs emitting 25 events each");
    let mut streams = Vec::new();
    for _ in 0..8 {
        streams.push(
            client
                .start("count", &json!({"to": 25, "interval_ms": 2}))
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    let mut events = 0u64;
    for mut h in streams {
        while h.next_event().await.is_some() {
            events += 1;
        }
        let r = h.finish::<u64>().await;
        tally.add(&r);
    }
    println!("      {events} events received");

    // 3. A cancel.
    println!("[3/5] cancel: a 60 s sleep, cancelled after 100 ms");
    let h = client
        .start("sleep", &json!({"seconds": 60}))
        .await
        .map_err(|e| e.to_string())?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t = Instant::now();
    h.cancel().await;
    let r = h.finish::<Value>().await;
    println!(
        "      answered {} in {:?}",
        r.as_ref().err().map_or("OK".into(), |e| e.rc().to_string()),
        t.elapsed()
    );
    tally.add(&r);

    // 4. A failing handler.
    println!("[4/5] failure: 3 runs of `fail`");
    for i in 0..3 {
        let r = client
            .run::<_, Value>(
                "fail",
                &json!({"message": format!("deliberate failure {i}")}),
            )
            .await;
        if let Err(e) = &r {
            if i == 0 {
                println!("      {e}");
            }
        }
        tally.add(&r);
    }

    // 5. A worker dies mid-run.
    println!("[5/5] worker death: 2 `render` runs, then the worker is killed");
    let mut renders = Vec::new();
    for _ in 0..2 {
        renders.push(
            client
                .start("render", &json!({}))
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    for h in &mut renders {
        h.next_event().await; // it has started
    }
    doomed_task.abort();
    for h in renders {
        let r = h.finish::<Value>().await;
        tally.add(&r);
    }
    println!(
        "      answered WORKER_WENT_AWAY; other runs unaffected: {}",
        client
            .run::<_, i64>("add", &json!({"a": 40, "b": 2}))
            .await
            .map_err(|e| e.to_string())?
    );
    tally.add(&Ok::<(), plexwire::RunError>(()));

    // Let the broker settle, then summarize.
    let settle = Instant::now();
    while broker.stats().switchboard.routes > 0 && settle.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stats = broker.stats().switchboard;
    let total: u64 = tally.0.values().sum();
    println!("\nsummary");
    println!("  {:<28} {:>10}", "runs", total);
    for (rc, n) in &tally.0 {
        println!("  {:<28} {:>10}", format!("  {rc}"), n);
    }
    println!("  {:<28} {:>10}", "events streamed", events);
    println!(
        "  {:<28} {:>10.0}",
        "burst throughput (runs/s)",
        args.runs as f64 / burst_time.as_secs_f64()
    );
    println!(
        "  {:<28} {:>10.1}",
        "burst latency p50 (µs)",
        percentile(&latencies, 0.50).as_secs_f64() * 1e6
    );
    println!(
        "  {:<28} {:>10.1}",
        "burst latency p99 (µs)",
        percentile(&latencies, 0.99).as_secs_f64() * 1e6
    );
    println!("  {:<28} {:>10}", "broker routes left", stats.routes);
    println!(
        "  {:<28} {:>10}",
        "broker free/total capacity",
        format!("{}/{}", stats.free_capacity, stats.total_capacity)
    );

    drop(client);
    broker.shutdown(Duration::from_secs(1)).await;
    for t in worker_tasks {
        let _ = t.await;
    }
    let healthy = stats.routes == 0 && stats.free_capacity == stats.total_capacity;
    let expected_ok = (args.runs + 8 + 1) as u64;
    let ok = tally.0.get("OK").copied().unwrap_or(0);
    if healthy && ok == expected_ok {
        println!("\nall {total} runs answered; no route or slot leaked");
        Ok(ExitCode::SUCCESS)
    } else {
        Err(format!(
            "unexpected outcome: {ok} OK of {expected_ok} expected, broker {stats:?}"
        ))
    }
}

fn spawn_worker(w: Worker, endpoint: Endpoint) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(e) = w.run_with(&AnyTransport, &endpoint).await {
            eprintln!("worker failed: {e}");
        }
    })
}
