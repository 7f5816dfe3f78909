//! `plexwire bench`: the end-to-end load benchmark.
//!
//! The broker, the worker, and a raw 2-hop relay baseline run as separate
//! processes (this same binary, hidden subcommands); the load generator runs
//! here. For each transport and codec it measures sequential round trips
//! (p50/p99/p999) and throughput with 1, 100 and 1000 runs in flight on one
//! connection and 100 in flight on each of 4 connections. The baseline is the
//! same framing over the same transport with no protocol: client → relay →
//! echo → relay → client. Results print as a table with ratios, and as JSON
//! lines (`--json FILE`).
//!
//! In the same run, unless `--no-nats`: NATS request-reply with one
//! queue-group responder, against a `nats-server` this command starts on
//! 127.0.0.1 (skipped, with the reason, when `nats-server` is not on PATH).
//! The NATS client lives in a separate binary, `plexwire-nats-baseline`
//! (workspace member `bench/nats-baseline`), so plexwire does not depend on it.
//!
//! Two memory measurements, on request: `--idle N` opens N idle native client
//! connections (HELLO exchanged) to a broker and reports its VmRSS growth per
//! connection; `--soak SECONDS` keeps 4 connections × 100 runs in flight and
//! samples the broker's and the worker's VmRSS, failing when the broker grows
//! by more than `--soak-max-growth-mib` after warm-up.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use futures_util::stream::{FuturesUnordered, StreamExt};
use plexwire::client::{Client, ClientConfig};
use plexwire::codec::{encode_hello, AnyCodec, Codec, CodecKind};
use plexwire::protocol::{Packet, PacketType, Payload, Role};
use plexwire::transport::{
    self, registry, AnyTransport, DevCerts, Endpoint, LoopbackEnv, ServerTransport,
};
use tokio::sync::Semaphore;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Transports to measure (comma-separated): tcp, unix, tls, tls+unix, quic,
    /// http, https (all but the first two need the `tls` / `quic` / `http`
    /// features), or `all` for every compiled-in backend (tls+unix and https
    /// only by name). Default: tcp,unix.
    #[arg(long, value_delimiter = ',')]
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
    /// Measure every figure this many times and keep the best round: the
    /// highest throughput, and the sequential percentiles of the round with
    /// the lowest p50 (a shared machine's bursts of stolen CPU only make a
    /// figure worse).
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// A quick run (CI): 0.3 s per measurement, 500 round trips, one round.
    #[arg(long)]
    short: bool,
    /// Also write the results as JSON lines to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Skip the latency/throughput table (and the NATS rows): only --idle / --soak.
    #[arg(long)]
    no_table: bool,
    /// Skip the NATS baseline.
    #[arg(long)]
    no_nats: bool,
    /// The NATS server to start (a name looked up on PATH, or a path).
    #[arg(long, default_value = "nats-server")]
    nats_server: String,
    /// The NATS load generator and responder; default: `plexwire-nats-baseline`
    /// next to this executable (`cargo build --release -p plexwire-nats-baseline`).
    #[arg(long)]
    nats_bin: Option<PathBuf>,
    /// Open this many idle native client connections to a broker and report its
    /// memory per connection (0: don't).
    #[arg(long, default_value_t = 0)]
    idle: usize,
    /// Run 4 connections × 100 in flight for this many seconds, sampling the
    /// broker's and worker's memory (0: don't).
    #[arg(long, default_value_t = 0.0)]
    soak: f64,
    /// Seconds between memory samples during --soak.
    #[arg(long, default_value_t = 5.0)]
    sample_every: f64,
    /// Fail --soak when the broker's VmRSS grows by more than this many MiB
    /// after warm-up (the first fifth of the run, at most 60 s).
    #[arg(long, default_value_t = 4.0)]
    soak_max_growth_mib: f64,
    /// Transport for --idle and --soak.
    #[arg(long, default_value = "tcp")]
    mem_transport: String,
    /// Codec for --idle and --soak (default: bincode if compiled in, else json).
    #[arg(long)]
    mem_codec: Option<String>,
}

/// Hidden helper processes of the benchmark.
#[derive(Args, Debug)]
pub struct RelayArgs {
    /// Where to listen.
    #[arg(long)]
    listen: String,
    /// Where to forward (relay); absent = echo every frame back.
    #[arg(long)]
    upstream: Option<String>,
}

/// 64 bytes of payload text (a JSON string), as in the figures.
/// Made once: the load generator should spend its time on plexwire, not on
/// building the same payload for every run (a clone shares the bytes).
pub(crate) fn payload() -> Payload {
    static PAYLOAD: std::sync::OnceLock<Payload> = std::sync::OnceLock::new();
    PAYLOAD
        .get_or_init(|| Payload::to_json(&"x".repeat(62)).expect("a string serializes"))
        .clone()
}

/// A child process, killed when dropped.
pub(crate) struct Proc(Child);

impl Proc {
    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `exe` with `args`, waits for a stdout line starting with `ready`,
/// and returns the process and every line up to that one.
fn spawn_exe(exe: &Path, args: &[&str], ready: &str) -> Result<(Proc, Vec<String>), String> {
    let name = exe
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut child = Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start `{} {}`: {e}", exe.display(), args.join(" ")))?;
    let stdout = child.stdout.take().ok_or("no stdout pipe")?;
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
            "`{name} {}` exited before it was ready",
            args.join(" ")
        ));
    }
    Ok((proc, seen))
}

fn this_exe() -> Result<PathBuf, String> {
    std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))
}

/// Starts this binary with `args`; see [`spawn_exe`].
pub(crate) fn spawn_lines(args: &[&str], ready: &str) -> Result<(Proc, Vec<String>), String> {
    spawn_exe(&this_exe()?, args, ready)
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

/// The last word of every line that starts with `prefix`.
fn words_after(lines: &[String], prefix: &str) -> Vec<String> {
    lines
        .iter()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.split_whitespace().last())
        .map(str::to_owned)
        .collect()
}

/// The last word of the first line that starts with `prefix`.
pub(crate) fn word_after(lines: &[String], prefix: &str) -> Result<String, String> {
    words_after(lines, prefix)
        .into_iter()
        .next()
        .ok_or_else(|| format!("the broker did not print a `{prefix}` line"))
}

/// The backends `--transports all` measures: the first scheme of every
/// registered backend that works across processes (all but `mem://`), in
/// registration order. `tls+unix` and `https` run only when named.
fn compiled_transports() -> Vec<&'static str> {
    registry()
        .backends()
        .iter()
        .filter(|b| b.name() != "mem")
        .filter_map(|b| b.schemes().first().map(|s| s.name))
        .collect()
}

/// A `--transports` name is a scheme of this build's registry.
fn check_transport(t: &str) -> Result<(), String> {
    let reg = registry();
    match reg.backend(t) {
        Some(b) if b.name() == "mem" => Err(format!(
            "`{t}` connects tasks of one process; the benchmark runs the broker and the worker as processes of their own (choose from {})",
            compiled_transports().join(", ")
        )),
        Some(_) => Ok(()),
        None => match reg.not_compiled_schemes().iter().find(|(s, _)| *s == t) {
            Some((_, features)) => Err(format!(
                "this build lacks the `{t}` transport (build with `--features {features}`, or `--features full`); it has: {}",
                compiled_transports().join(", ")
            )),
            None => {
                let known: Vec<&str> = reg
                    .backends()
                    .iter()
                    .filter(|b| b.name() != "mem")
                    .flat_map(|b| b.schemes().iter().map(|s| s.name))
                    .collect();
                Err(format!(
                    "the benchmark knows the transports {}, or `all`; not `{t}`",
                    known.join(", ")
                ))
            }
        },
    }
}

/// How the benchmark reaches one backend: the URL to listen on, and the
/// query options a connecting side adds to the listener's bound address
/// (`ca=…` for TLS and QUIC; nothing for the others).
#[derive(Debug, Clone)]
pub(crate) struct Backend {
    pub(crate) listen: String,
    pub(crate) connect_opts: String,
}

impl Backend {
    /// The URL to connect to a listener that reported `bound` (its URL,
    /// possibly with the listener's own options such as `cert=`).
    pub(crate) fn connect_url(&self, bound: &str) -> String {
        let address = bound.split('?').next().unwrap_or_default();
        if self.connect_opts.is_empty() {
            address.to_owned()
        } else {
            format!("{address}?{}", self.connect_opts)
        }
    }
}

/// Where the benchmark keeps its sockets and certificates, removed at the end.
pub(crate) struct Scratch {
    dir: PathBuf,
    certs: Option<DevCerts>,
}

impl Scratch {
    pub(crate) fn new() -> Result<Scratch, String> {
        let dir = std::env::temp_dir().join(format!("plexwire-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        Ok(Scratch { dir, certs: None })
    }

    /// A development CA and a server certificate for localhost, 127.0.0.1
    /// and ::1, written on first use (none in a build without TLS or QUIC).
    fn certs(&mut self) -> Result<Option<DevCerts>, String> {
        #[cfg(any(feature = "tls", feature = "quic"))]
        if self.certs.is_none() {
            #[cfg(all(feature = "quic", not(feature = "tls")))]
            use plexwire::transport::quic::dev;
            #[cfg(feature = "tls")]
            use plexwire::transport::tls::dev;
            let dir = self.dir.join("pki");
            let files = dev::write_dev_set(&dir, &["localhost", "127.0.0.1", "::1"])
                .map_err(|e| format!("cannot write certificates to {}: {e}", dir.display()))?;
            self.certs = Some(DevCerts {
                ca: files.ca,
                cert: files.server_cert,
                key: files.server_key,
            });
        }
        Ok(self.certs.clone())
    }

    /// A fresh listener of `transport` (a scheme of the registry), and how
    /// to connect to it: the backend's own loopback variant for that scheme
    /// (IPv4 where it has several), with a fresh socket path where it needs one.
    pub(crate) fn backend(&mut self, transport: &str) -> Result<Backend, String> {
        check_transport(transport)?;
        let backend = registry()
            .backend(transport)
            .ok_or_else(|| format!("no backend serves `{transport}`"))?;
        let scheme = backend
            .schemes()
            .iter()
            .find(|s| s.answers_to(transport))
            .map(|s| s.name)
            .unwrap_or(transport);
        let env = LoopbackEnv {
            scratch_dir: self.dir.clone(),
            certs: self.certs()?,
        };
        let variant = backend
            .loopback_variants(&env)
            .map_err(|e| format!("the benchmark cannot run `{transport}` here: {e}"))?
            .into_iter()
            .find(|v| v.scheme == scheme)
            .ok_or_else(|| {
                format!(
                    "backend `{}` has no loopback listener for `{scheme}`",
                    backend.name()
                )
            })?;
        Ok(Backend {
            listen: variant.listen,
            connect_opts: variant.connect_options,
        })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
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

#[derive(Default)]
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
        println!("  {system:<9} {transport:<8} {codec:<8} {test:<26} {value:>12.1} {unit}");
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

/// The longest any timed part of the benchmark may be asked to run.
const MAX_SECONDS: f64 = 7.0 * 86_400.0;

/// A number of seconds from the command line, or an error naming the flag.
fn seconds_arg(flag: &str, s: f64, min: f64) -> Result<f64, String> {
    if s.is_finite() && (0.0..=MAX_SECONDS).contains(&s) {
        Ok(s.max(min))
    } else {
        Err(format!(
            "{flag} takes a number of seconds from 0 to {MAX_SECONDS}, not {s}"
        ))
    }
}

/// What one `plexwire bench` does, checked before anything starts.
struct Plan {
    transports: Vec<String>,
    codecs: Vec<String>,
    window: Duration,
    sequential: usize,
    rounds: usize,
    mem_transport: String,
    mem_codec: String,
}

impl Plan {
    fn new(args: &BenchArgs) -> Result<Plan, String> {
        let mut transports = Vec::new();
        for t in &args.transports {
            match t.trim() {
                "" => {}
                "all" => transports.extend(compiled_transports().into_iter().map(String::from)),
                t => {
                    check_transport(t)?;
                    transports.push(t.to_owned());
                }
            }
        }
        if args.transports.is_empty() {
            transports = compiled_transports()
                .into_iter()
                .filter(|t| matches!(*t, "tcp" | "unix"))
                .map(String::from)
                .collect();
        }
        let mut seen = std::collections::HashSet::new();
        transports.retain(|t| seen.insert(t.clone()));
        let mut codecs = Vec::new();
        for c in &args.codecs {
            let c = c.trim();
            if !c.is_empty() && !codecs.iter().any(|x| x == c) {
                CodecKind::parse_enabled(c)?;
                codecs.push(c.to_owned());
            }
        }
        if !args.no_table && (transports.is_empty() || codecs.is_empty()) {
            return Err("give at least one transport and one codec (or --no-table)".into());
        }
        if args.sequential > 10_000_000 {
            return Err(format!(
                "--sequential takes at most 10000000 round trips, not {}",
                args.sequential
            ));
        }
        if args.rounds > 1000 {
            return Err(format!("--rounds takes at most 1000, not {}", args.rounds));
        }
        let (seconds, sequential) = if args.short {
            (0.3, 500)
        } else {
            (
                seconds_arg("--seconds", args.seconds, 0.1)?,
                args.sequential.max(10),
            )
        };
        seconds_arg("--soak", args.soak, 0.0)?;
        seconds_arg("--sample-every", args.sample_every, 0.1)?;
        if !(args.soak_max_growth_mib.is_finite() && args.soak_max_growth_mib >= 0.0) {
            return Err("--soak-max-growth-mib takes a number of MiB".into());
        }
        let mem_transport = args.mem_transport.trim().to_owned();
        let mem_codec = match &args.mem_codec {
            Some(c) => c.trim().to_owned(),
            None if CodecKind::Bincode.is_enabled() => "bincode".into(),
            None => "json".into(),
        };
        if args.idle > 0 || args.soak > 0.0 {
            check_transport(&mem_transport)?;
            CodecKind::parse_enabled(&mem_codec)?;
        }
        Ok(Plan {
            transports,
            codecs,
            window: Duration::from_secs_f64(seconds),
            sequential,
            rounds: if args.short { 1 } else { args.rounds.max(1) },
            mem_transport,
            mem_codec,
        })
    }
}

pub async fn run(args: BenchArgs) -> Result<ExitCode, String> {
    let plan = Plan::new(&args)?;
    let mut scratch = Scratch::new()?;
    let mut sink = Sink::default();
    let mut failures: Vec<String> = Vec::new();
    if !args.no_table {
        println!(
            "plexwire bench: 64-byte payloads, {} s per throughput figure, {} sequential round trips{}",
            plan.window.as_secs_f64(),
            plan.sequential,
            if plan.rounds > 1 {
                format!("; best of {} rounds", plan.rounds)
            } else {
                String::new()
            }
        );
        if cfg!(debug_assertions) {
            println!("  (a debug build: figures and ratios mean little; build with --release)");
        }
        println!(
            "  {:<9} {:<8} {:<8} {:<26} {:>12}",
            "system", "trans", "codec", "test", "value"
        );
        let cpu_before = CpuTimes::read();
        for t in &plan.transports {
            measure_transport(&plan, t, &mut scratch, &mut sink).await?;
        }
        if args.no_nats {
            println!("  nats      skipped: --no-nats");
        } else if let Err(e) = nats(&args, &plan, &scratch, &mut sink).await {
            println!("  nats      FAILED: {e}");
            failures.push(format!("the NATS baseline failed: {e}"));
        }
        print_ratios(&plan, &sink);
        if let (Some(a), Some(b)) = (cpu_before, CpuTimes::read()) {
            let (lost, what) = b.others_since(&a);
            println!(
                "\nthe machine during these measurements: {what}{}; load average now {}",
                if lost >= 5.0 {
                    " (busy: compare ratios, not absolute figures)"
                } else {
                    ""
                },
                std::fs::read_to_string("/proc/loadavg")
                    .unwrap_or_default()
                    .split_whitespace()
                    .take(3)
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
    }
    if args.idle > 0 {
        idle(args.idle, &plan, &mut scratch, &mut sink).await?;
    }
    if args.soak > 0.0 {
        if let Err(e) = soak(&args, &plan, &mut scratch, &mut sink).await {
            println!("  soak FAILED: {e}");
            failures.push(e);
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
    if failures.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(failures.join("; "))
    }
}

/// A broker process with its bound client and worker endpoints (connect URLs).
struct BrokerProc {
    proc: Proc,
    clients: Vec<String>,
    workers: String,
}

/// Starts `plexwire broker` with `n_client_listeners` client listeners and
/// one worker listener of `t`.
fn start_broker(
    scratch: &mut Scratch,
    t: &str,
    n_client_listeners: usize,
) -> Result<BrokerProc, String> {
    let mut args: Vec<String> = Vec::new();
    let mut client_backend = None;
    for _ in 0..n_client_listeners.max(1) {
        let b = scratch.backend(t)?;
        args.push("--clients".into());
        args.push(b.listen.clone());
        client_backend = Some(b);
    }
    let worker_backend = scratch.backend(t)?;
    args.extend([
        "--workers".into(),
        worker_backend.listen.clone(),
        "--queue".into(),
        "100000".into(),
    ]);
    let mut full = vec!["broker"];
    full.extend(args.iter().map(String::as_str));
    let (proc, lines) = spawn_lines(&full, "broker running")?;
    let client_backend = client_backend.ok_or("no client listener")?;
    let clients: Vec<String> = words_after(&lines, "clients:")
        .iter()
        .map(|u| client_backend.connect_url(u))
        .collect();
    if clients.is_empty() {
        return Err("the broker did not print a `clients:` line".into());
    }
    let workers = worker_backend.connect_url(&word_after(&lines, "workers:")?);
    Ok(BrokerProc {
        proc,
        clients,
        workers,
    })
}

/// Starts `plexwire worker` (capacity 2048) on the broker's worker endpoint.
fn start_worker(workers: &str, codec: &str) -> Result<Proc, String> {
    let (proc, _) = spawn(
        &[
            "worker",
            "--broker",
            workers,
            "--capacity",
            "2048",
            "--codec",
            codec,
        ],
        "worker:",
    )?;
    Ok(proc)
}

async fn measure_transport(
    plan: &Plan,
    t: &str,
    scratch: &mut Scratch,
    sink: &mut Sink,
) -> Result<(), String> {
    let (sequential, window, rounds) = (plan.sequential, plan.window, plan.rounds);
    // Baseline: client -> relay -> echo -> relay -> client, same framing and transport.
    let echo_backend = scratch.backend(t)?;
    let relay_backend = scratch.backend(t)?;
    let (_echo, echo_bound) = spawn(
        &["bench-relay", "--listen", &echo_backend.listen],
        "listening",
    )?;
    let (_relay, relay_bound) = spawn(
        &[
            "bench-relay",
            "--listen",
            &relay_backend.listen,
            "--upstream",
            &echo_backend.connect_url(&echo_bound),
        ],
        "listening",
    )?;
    let relay_url = relay_backend.connect_url(&relay_bound);
    let mut best = Best::default();
    for _ in 0..rounds {
        best.latencies(raw_sequential(&relay_url, sequential).await?);
    }
    best.push_latencies(sink, "raw", t, "-");
    for k in [100usize, 1000] {
        let mut rate = 0f64;
        for _ in 0..rounds {
            rate = rate.max(raw_pipelined(&relay_url, k, window).await?);
        }
        sink.push(
            "raw",
            t,
            "-",
            &format!("throughput {k} in flight"),
            rate,
            "msg/s",
        );
    }
    for c in &plan.codecs {
        let codec = CodecKind::parse_enabled(c)?;
        let broker = start_broker(scratch, t, 1)?;
        let _worker = start_worker(&broker.workers, c)?;
        let config = ClientConfig {
            codec,
            ..ClientConfig::default()
        };
        let ep = Endpoint::parse(&broker.clients[0]).map_err(|e| e.to_string())?;
        let client = connect_ready(&ep, &config).await?;
        let mut best = Best::default();
        for _ in 0..rounds {
            let mut lat = Vec::with_capacity(sequential);
            for _ in 0..sequential {
                let t0 = Instant::now();
                client.run_raw_echo().await?;
                lat.push(t0.elapsed());
            }
            best.latencies(lat);
        }
        best.push_latencies(sink, "plexwire", t, c);
        for k in [1usize, 100, 1000] {
            let mut rate = 0f64;
            for _ in 0..rounds {
                rate = rate.max(plexwire_rate(std::slice::from_ref(&client), k, window).await?);
            }
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
        let mut rate = 0f64;
        for _ in 0..rounds {
            rate = rate.max(plexwire_rate(&many, 100, window).await?);
        }
        sink.push("plexwire", t, c, "throughput 4 conns x 100", rate, "runs/s");
        close_all(&many).await;
    }
    Ok(())
}

fn print_ratios(plan: &Plan, sink: &Sink) {
    println!("\nratios (same run)");
    for t in &plan.transports {
        let raw_p50 = sink.get("raw", t, "-", "sequential p50");
        let raw_100 = sink.get("raw", t, "-", "throughput 100 in flight");
        for c in &plan.codecs {
            if let (Some(p), Some(r)) = (sink.get("plexwire", t, c, "sequential p50"), raw_p50) {
                println!(
                    "  {t:<8} {c:<8} sequential p50 plexwire/raw     {:>6.2}x   (target <= 1.3x)",
                    p / r
                );
            }
            if let (Some(p), Some(r)) = (
                sink.get("plexwire", t, c, "throughput 100 in flight"),
                raw_100,
            ) {
                println!(
                    "  {t:<8} {c:<8} 100-in-flight plexwire/raw      {:>6.3}",
                    p / r
                );
            }
        }
        if let (Some(j), Some(b)) = (
            sink.get("plexwire", t, "json", "throughput 100 in flight"),
            sink.get("plexwire", t, "bincode", "throughput 100 in flight"),
        ) {
            println!(
                "  {t:<8} json/bincode at 100 in flight          {:>6.2}    (target >= 0.60)",
                j / b
            );
        }
    }
    let nats_p50 = sink.get("nats", "tcp", "-", "sequential p50");
    let nats_100 = sink.get("nats", "tcp", "-", "throughput 100 in flight");
    if nats_p50.is_none() && nats_100.is_none() {
        return;
    }
    println!(
        "\nagainst NATS request-reply (nats-server over TCP, one queue-group responder; same run)"
    );
    for t in &plan.transports {
        for c in &plan.codecs {
            if let (Some(p), Some(n)) = (sink.get("plexwire", t, c, "sequential p50"), nats_p50) {
                println!(
                    "  {t:<8} {c:<8} sequential p50 plexwire/NATS    {:>6.2}x   (below 1: plexwire is faster)",
                    p / n
                );
            }
            if let (Some(p), Some(n)) = (
                sink.get("plexwire", t, c, "throughput 100 in flight"),
                nats_100,
            ) {
                let target = if c == "bincode" {
                    "   (target >= 2x)"
                } else {
                    ""
                };
                println!(
                    "  {t:<8} {c:<8} 100-in-flight plexwire/NATS     {:>6.2}x{target}",
                    p / n
                );
            }
        }
    }
}

// ---------------------------------------------------------------- NATS ----

/// `name` as given if it holds a `/`, else the first match on PATH.
fn find_on_path(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// A free TCP port on 127.0.0.1 (bound, then released).
fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| format!("cannot find a free port on 127.0.0.1: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free port on 127.0.0.1: {e}"))
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join(" | ")
}

/// NATS request-reply with one queue-group responder, on a nats-server of
/// our own bound to 127.0.0.1: sequential p50/p99/p999 and throughput with
/// 100 and 1000 requests in flight on one connection. Skips (Ok) with a
/// one-line reason when nats-server or the helper binary is missing.
async fn nats(
    args: &BenchArgs,
    plan: &Plan,
    scratch: &Scratch,
    sink: &mut Sink,
) -> Result<(), String> {
    let Some(server) = find_on_path(&args.nats_server) else {
        println!(
            "  nats      skipped: `{}` is not on PATH (Debian: apt-get install nats-server; or --nats-server PATH)",
            args.nats_server
        );
        return Ok(());
    };
    let helper = match &args.nats_bin {
        Some(p) if p.is_file() => p.clone(),
        Some(p) => return Err(format!("--nats-bin {} is not a file", p.display())),
        None => {
            let exe = this_exe()?;
            let p = exe.with_file_name("plexwire-nats-baseline");
            if !p.is_file() {
                println!(
                    "  nats      skipped: {} not found (cargo build --release -p plexwire-nats-baseline; or --nats-bin PATH)",
                    p.display()
                );
                return Ok(());
            }
            p
        }
    };
    let port = free_port()?;
    let log = scratch.dir.join("nats-server.log");
    let log_file =
        std::fs::File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
    let log_err = log_file
        .try_clone()
        .map_err(|e| format!("cannot open {}: {e}", log.display()))?;
    let child = Command::new(&server)
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .current_dir(&scratch.dir)
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(log_err)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", server.display()))?;
    let mut nats_server = Proc(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        if let Ok(Some(status)) = nats_server.0.try_wait() {
            return Err(format!(
                "{} exited ({status}) before listening on 127.0.0.1:{port}: {}",
                server.display(),
                tail(&log, 3)
            ));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{} did not listen on 127.0.0.1:{port} within 10 s: {}",
                server.display(),
                tail(&log, 3)
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let url = format!("nats://127.0.0.1:{port}");
    let (_responder, _) = spawn_exe(&helper, &["respond", "--server", &url], "ready")?;
    let request_args = vec![
        "request".to_owned(),
        "--server".into(),
        url.clone(),
        "--sequential".into(),
        plan.sequential.to_string(),
        "--seconds".into(),
        plan.window.as_secs_f64().to_string(),
        "--rounds".into(),
        plan.rounds.to_string(),
        "--in-flight".into(),
        "100,1000".into(),
        "--payload".into(),
        "64".into(),
    ];
    let helper2 = helper.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(&helper2)
            .args(&request_args)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("cannot run {}: {e}", helper.display()))?;
    if !output.status.success() {
        return Err(format!(
            "{} request exited with {}",
            helper.display(),
            output.status
        ));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let mut figures = 0;
    for line in text.lines().filter(|l| l.starts_with('{')) {
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| format!("unreadable line from the NATS helper `{line}`: {e}"))?;
        let (Some(test), Some(value), Some(unit)) =
            (v["test"].as_str(), v["value"].as_f64(), v["unit"].as_str())
        else {
            return Err(format!("unexpected line from the NATS helper: {line}"));
        };
        let unit = if unit == "µs" { "µs" } else { "req/s" };
        sink.push("nats", "tcp", "-", test, value, unit);
        figures += 1;
    }
    if figures == 0 || !text.lines().any(|l| l == "done") {
        return Err("the NATS helper printed no figures".into());
    }
    // Stop the server before its log goes away with the scratch directory.
    drop(nats_server);
    Ok(())
}

// ------------------------------------------------------------- memory ----

/// The machine's CPU time counters (the `cpu` line of /proc/stat), and this
/// benchmark's own share, in clock ticks.
struct CpuTimes {
    total: u64,
    steal: u64,
    /// Not idle, not waiting for I/O, not stolen.
    busy: u64,
    /// This process and its waited-for children (every helper process it
    /// has stopped), plus the `live` processes given to [`CpuTimes::read_with`].
    ours: u64,
}

/// utime + stime (+ cutime + cstime with `children`) of a process, in clock ticks.
fn proc_ticks(pid: &str, children: bool) -> u64 {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    let Some((_, rest)) = text.rsplit_once(')') else {
        return 0;
    };
    let v: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(4)
        .filter_map(|x| x.parse().ok())
        .collect();
    let n = if children { 4 } else { 2 };
    v.iter().take(n).sum()
}

impl CpuTimes {
    fn read() -> Option<CpuTimes> {
        CpuTimes::read_with(&[])
    }

    fn read_with(live: &[u32]) -> Option<CpuTimes> {
        let text = std::fs::read_to_string("/proc/stat").ok()?;
        let line = text.lines().find(|l| l.starts_with("cpu "))?;
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal (guest time is inside user).
        let total: u64 = v.iter().take(8).sum();
        let (idle, iowait, steal) = (*v.get(3)?, *v.get(4)?, *v.get(7)?);
        let ours = proc_ticks("self", true)
            + live
                .iter()
                .map(|p| proc_ticks(&p.to_string(), false))
                .sum::<u64>();
        Some(CpuTimes {
            total,
            steal,
            busy: total.saturating_sub(idle + iowait + steal),
            ours,
        })
    }

    /// What the machine did meanwhile that was not this benchmark, as a
    /// sentence: CPU stolen by other guests, and CPU used by other processes.
    fn others_since(&self, earlier: &CpuTimes) -> (f64, String) {
        let total = self.total.saturating_sub(earlier.total).max(1) as f64;
        let steal = 100.0 * self.steal.saturating_sub(earlier.steal) as f64 / total;
        let busy = self.busy.saturating_sub(earlier.busy);
        let ours = self.ours.saturating_sub(earlier.ours);
        let others = 100.0 * busy.saturating_sub(ours) as f64 / total;
        (
            steal + others,
            format!("{steal:.0}% of CPU time stolen by other guests, {others:.0}% used by other processes"),
        )
    }
}

/// A process's resident set size in KiB (`VmRSS` in /proc/PID/status).
fn rss_kib(pid: u32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no VmRSS in {path}"))
}

/// File descriptors a process has open (entries of /proc/PID/fd).
fn open_fds(pid: u32) -> Option<usize> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|d| d.count())
}

/// Raises this process's soft RLIMIT_NOFILE to its hard limit (children
/// inherit it), and returns (soft, hard) afterwards.
fn raise_nofile() -> Result<(u64, u64), String> {
    let soft = rlimit::increase_nofile_limit(u64::MAX)
        .map_err(|e| format!("cannot raise the open-file limit: {e}"))?;
    let (_, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE)
        .map_err(|e| format!("cannot read the open-file limit: {e}"))?;
    Ok((soft, hard))
}

/// File descriptors kept free for everything that is not an idle connection.
const FD_MARGIN: u64 = 256;
/// Connections one broker listener holds at once (its default `max_connections`).
const PER_LISTENER: usize = 10_000;

/// Opens one native client connection, exchanges HELLO, and keeps it open
/// (answering PINGs) until `stop`; `alive` counts the connections open.
async fn open_idle(
    url: String,
    kind: CodecKind,
    alive: Arc<AtomicUsize>,
    stop: Arc<tokio::sync::Notify>,
) -> Result<(), String> {
    let codec = AnyCodec::new(kind).map_err(|e| e.to_string())?;
    let conn = transport::connect(&url)
        .await
        .map_err(|e| format!("cannot connect to {url}: {e}"))?;
    let (mut tx, mut rx) = conn.into_frames();
    let hello = encode_hello(&codec, &Packet::hello(Role::Client, kind.as_str(), None))
        .map_err(|e| e.to_string())?;
    tx.send_frame(hello)
        .await
        .map_err(|e| format!("cannot send HELLO: {e}"))?;
    let frame = match tokio::time::timeout(Duration::from_secs(20), rx.recv_frame()).await {
        Err(_) => return Err("no HELLO from the broker within 20 s".into()),
        Ok(None) => return Err("the broker closed the connection after our HELLO".into()),
        Ok(Some(f)) => f.map_err(|e| e.to_string())?,
    };
    let answer = codec.decode(&frame).map_err(|e| e.to_string())?;
    if answer.packet_type != PacketType::Hello {
        return Err(format!(
            "the broker answered {} instead of HELLO: {}",
            answer.packet_type,
            answer.error.unwrap_or_default()
        ));
    }
    alive.fetch_add(1, Ordering::Relaxed);
    tokio::spawn(async move {
        let pong = codec.encode(&Packet::new(PacketType::Pong)).ok();
        loop {
            tokio::select! {
                _ = stop.notified() => break,
                frame = rx.recv_frame() => match frame {
                    Some(Ok(frame)) => {
                        let ping = codec
                            .decode(&frame)
                            .is_ok_and(|p| p.packet_type == PacketType::Ping);
                        if let (true, Some(pong)) = (ping, &pong) {
                            if tx.send_frame(pong.clone()).await.is_err() {
                                break;
                            }
                        }
                    }
                    _ => break,
                },
            }
        }
        alive.fetch_sub(1, Ordering::Relaxed);
    });
    Ok(())
}

/// `--idle N`: a broker's VmRSS growth per idle native client connection.
async fn idle(
    wanted: usize,
    plan: &Plan,
    scratch: &mut Scratch,
    sink: &mut Sink,
) -> Result<(), String> {
    let (t, c) = (plan.mem_transport.as_str(), plan.mem_codec.as_str());
    let kind = CodecKind::parse_enabled(c)?;
    println!(
        "\nidle connections: {wanted} native {c} clients over {t}, HELLO exchanged, then idle"
    );
    let (soft, hard) = raise_nofile()?;
    let allowed = soft.saturating_sub(FD_MARGIN) as usize;
    let n = if wanted > allowed {
        println!(
            "  RLIMIT_NOFILE is {soft} (hard limit {hard}): too low for {wanted} connections in this process and the broker; \
             measuring {allowed} instead (raise the hard limit, e.g. `ulimit -Hn {}` as root, for the full count)",
            wanted as u64 + FD_MARGIN
        );
        allowed
    } else {
        wanted
    };
    if n == 0 {
        return Err(format!(
            "RLIMIT_NOFILE ({soft}) leaves no room for idle connections"
        ));
    }
    // One connection to warm the broker up, the rest measured.
    let listeners = (n + 1).div_ceil(PER_LISTENER);
    let broker = start_broker(scratch, t, listeners)?;
    let pid = broker.proc.pid();
    let alive = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(tokio::sync::Notify::new());
    open_idle(broker.clients[0].clone(), kind, alive.clone(), stop.clone()).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(pid)?;
    let fds_before = open_fds(pid);
    let started = Instant::now();
    let mut opening = futures_util::stream::iter((0..n).map(|i| {
        // The first listener already holds the warm-up connection.
        let url = broker.clients[(i + 1) / PER_LISTENER % broker.clients.len()].clone();
        open_idle(url, kind, alive.clone(), stop.clone())
    }))
    .buffer_unordered(64);
    let mut opened = 0usize;
    let mut first_error = None;
    while let Some(r) = opening.next().await {
        match r {
            Ok(()) => opened += 1,
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    drop(opening);
    let took = started.elapsed();
    // Let the broker settle, then take the largest of a few samples.
    let mut after = 0;
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        after = after.max(rss_kib(pid)?);
    }
    let still_open = alive.load(Ordering::Relaxed).saturating_sub(1);
    let fds_after = open_fds(pid);
    stop.notify_waiters();
    if opened == 0 {
        return Err(format!(
            "no idle connection could be opened: {}",
            first_error.unwrap_or_default()
        ));
    }
    if let Some(e) = &first_error {
        println!("  {} of {n} connections failed; the first: {e}", n - opened);
    }
    let per_conn = after.saturating_sub(before) as f64 / opened as f64;
    println!(
        "  opened {opened} in {:.1} s ({still_open} still open when measured); broker VmRSS {:.1} MiB -> {:.1} MiB{}",
        took.as_secs_f64(),
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        match (fds_before, fds_after) {
            (Some(a), Some(b)) => format!(", open fds {a} -> {b}"),
            _ => String::new(),
        }
    );
    sink.push("plexwire", t, c, "idle connections", opened as f64, "conns");
    sink.push(
        "plexwire",
        t,
        c,
        "idle broker VmRSS before",
        before as f64,
        "KiB",
    );
    sink.push(
        "plexwire",
        t,
        c,
        "idle broker VmRSS after",
        after as f64,
        "KiB",
    );
    sink.push("plexwire", t, c, "idle KiB per connection", per_conn, "KiB");
    println!("  broker memory per idle connection: {per_conn:.1} KiB   (target <= 16 KiB at 10k)");
    Ok(())
}

/// One memory sample of the soak.
struct Sample {
    at: f64,
    broker: u64,
    worker: u64,
    rate: f64,
}

/// `--soak SECONDS`: 4 connections × 100 in flight, broker and worker VmRSS
/// sampled; fails if the broker grows more than the bound after warm-up.
async fn soak(
    args: &BenchArgs,
    plan: &Plan,
    scratch: &mut Scratch,
    sink: &mut Sink,
) -> Result<(), String> {
    let (t, c) = (plan.mem_transport.as_str(), plan.mem_codec.as_str());
    let kind = CodecKind::parse_enabled(c)?;
    let duration = Duration::from_secs_f64(args.soak);
    let every = Duration::from_secs_f64(args.sample_every.max(0.1).min(args.soak.max(0.2) / 2.0));
    let warmup = Duration::from_secs_f64((args.soak / 5.0).min(60.0));
    let bound_kib = (args.soak_max_growth_mib * 1024.0) as u64;
    println!(
        "\nsoak: {:.0} s of 4 connections x 100 in flight over {t} ({c}); VmRSS every {:.1} s; \
         warm-up {:.0} s; the broker may grow at most {} MiB after it",
        duration.as_secs_f64(),
        every.as_secs_f64(),
        warmup.as_secs_f64(),
        args.soak_max_growth_mib
    );
    let broker = start_broker(scratch, t, 1)?;
    let worker = start_worker(&broker.workers, c)?;
    let (bpid, wpid) = (broker.proc.pid(), worker.pid());
    let config = ClientConfig {
        codec: kind,
        ..ClientConfig::default()
    };
    let ep = Endpoint::parse(&broker.clients[0]).map_err(|e| e.to_string())?;
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(connect_ready(&ep, &config).await?);
    }
    let to_close = clients.clone();
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (done, stop) = (done.clone(), stop.clone());
        tokio::spawn(async move {
            async fn one(c: Client) -> (Result<(), String>, Client) {
                (c.run_raw_echo().await, c)
            }
            let mut futs = FuturesUnordered::new();
            for c in &clients {
                for _ in 0..100 {
                    futs.push(one(c.clone()));
                }
            }
            while let Some((r, c)) = futs.next().await {
                r?;
                done.fetch_add(1, Ordering::Relaxed);
                if !stop.load(Ordering::Relaxed) {
                    futs.push(one(c));
                }
            }
            Ok::<(), String>(())
        })
    };
    let cpu_before = CpuTimes::read_with(&[bpid, wpid]);
    let start = Instant::now();
    let mut samples: Vec<Sample> = Vec::new();
    let mut last = (start, 0u64);
    println!(
        "  {:>7} {:>10} {:>14} {:>14}",
        "t (s)", "runs/s", "broker MiB", "worker MiB"
    );
    let mut load_error = None;
    while start.elapsed() < duration {
        let next = (start + every * (samples.len() as u32 + 1)).min(start + duration);
        tokio::time::sleep_until(next.into()).await;
        if load.is_finished() {
            load_error = Some("the load stopped early".to_owned());
            break;
        }
        let now = Instant::now();
        let n = done.load(Ordering::Relaxed);
        let s = Sample {
            at: (now - start).as_secs_f64(),
            broker: rss_kib(bpid)?,
            worker: rss_kib(wpid)?,
            rate: (n - last.1) as f64 / (now - last.0).as_secs_f64().max(1e-9),
        };
        last = (now, n);
        println!(
            "  {:>7.1} {:>10.0} {:>14.1} {:>14.1}",
            s.at,
            s.rate,
            s.broker as f64 / 1024.0,
            s.worker as f64 / 1024.0
        );
        samples.push(s);
    }
    stop.store(true, Ordering::Relaxed);
    match tokio::time::timeout(Duration::from_secs(30), load).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => return Err(format!("soak: a run failed: {e}")),
        Ok(Err(e)) => return Err(format!("soak: the load task failed: {e}")),
        Err(_) => return Err("soak: the last runs did not finish within 30 s".into()),
    }
    close_all(&to_close).await;
    if let Some(e) = load_error {
        return Err(format!("soak: {e}"));
    }
    let total = done.load(Ordering::Relaxed);
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
        return Err("soak: no samples taken (give --soak a few seconds)".into());
    };
    let stats = |f: fn(&Sample) -> u64| {
        let max = samples.iter().map(f).max().unwrap_or(0);
        (f(first), f(last), max)
    };
    let (b_first, b_last, b_max) = stats(|s| s.broker);
    let (w_first, w_last, w_max) = stats(|s| s.worker);
    // Growth after warm-up: the largest sample after it, against the first at or after it.
    let base = samples
        .iter()
        .find(|s| s.at >= warmup.as_secs_f64())
        .unwrap_or(first);
    let base_at = base.at;
    let b_base = base.broker;
    let w_base = base.worker;
    let b_growth = samples
        .iter()
        .filter(|s| s.at >= base_at)
        .map(|s| s.broker)
        .max()
        .unwrap_or(b_base)
        .saturating_sub(b_base);
    let w_growth = samples
        .iter()
        .filter(|s| s.at >= base_at)
        .map(|s| s.worker)
        .max()
        .unwrap_or(w_base)
        .saturating_sub(w_base);
    let secs = start.elapsed().as_secs_f64();
    let mib = |k: u64| k as f64 / 1024.0;
    println!(
        "  {total} runs in {secs:.0} s ({:.0} runs/s){}",
        total as f64 / secs.max(1e-9),
        match (cpu_before, CpuTimes::read_with(&[bpid, wpid])) {
            (Some(a), Some(b)) => format!("; meanwhile {}", b.others_since(&a).1),
            _ => String::new(),
        }
    );
    println!(
        "  broker VmRSS first/last/max {:.1}/{:.1}/{:.1} MiB; growth after warm-up (t={base_at:.0} s): {:.2} MiB",
        mib(b_first),
        mib(b_last),
        mib(b_max),
        mib(b_growth)
    );
    println!(
        "  worker VmRSS first/last/max {:.1}/{:.1}/{:.1} MiB; growth after warm-up: {:.2} MiB",
        mib(w_first),
        mib(w_last),
        mib(w_max),
        mib(w_growth)
    );
    for (test, v, unit) in [
        ("soak seconds", secs, "s"),
        ("soak runs/s", total as f64 / secs.max(1e-9), "runs/s"),
        ("soak broker VmRSS first", b_first as f64, "KiB"),
        ("soak broker VmRSS last", b_last as f64, "KiB"),
        ("soak broker VmRSS max", b_max as f64, "KiB"),
        ("soak broker growth", b_growth as f64, "KiB"),
        ("soak worker VmRSS first", w_first as f64, "KiB"),
        ("soak worker VmRSS last", w_last as f64, "KiB"),
        ("soak worker VmRSS max", w_max as f64, "KiB"),
        ("soak worker growth", w_growth as f64, "KiB"),
    ] {
        sink.rows.push(Row {
            system: "plexwire".into(),
            transport: t.into(),
            codec: c.into(),
            test: test.into(),
            value: v,
            unit,
        });
    }
    if b_growth > bound_kib {
        return Err(format!(
            "soak: the broker's VmRSS grew by {:.2} MiB after warm-up, more than the {} MiB allowed (--soak-max-growth-mib)",
            mib(b_growth),
            args.soak_max_growth_mib
        ));
    }
    println!(
        "  flat: the broker grew {:.2} MiB after warm-up (bound {} MiB)",
        mib(b_growth),
        args.soak_max_growth_mib
    );
    Ok(())
}

// --------------------------------------------------------------- load ----

/// Closes the clients cleanly before their broker is stopped (a TLS client
/// would otherwise log the broker's missing close_notify).
async fn close_all(clients: &[Client]) {
    for c in clients {
        c.close(Duration::from_secs(1)).await;
    }
    // `close` returns once our side is shut; give the broker a moment to
    // close its side, so the clients' readers see a clean end.
    tokio::time::sleep(Duration::from_millis(100)).await;
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

/// Sequential round trips of one round: the best round is the one with the lowest p50.
#[derive(Default)]
struct Best {
    lat: Option<Vec<Duration>>,
}

impl Best {
    fn latencies(&mut self, mut lat: Vec<Duration>) {
        lat.sort();
        if self
            .lat
            .as_ref()
            .is_none_or(|best| pct(&lat, 0.5) < pct(best, 0.5))
        {
            self.lat = Some(lat);
        }
    }

    fn push_latencies(&self, sink: &mut Sink, system: &str, t: &str, c: &str) {
        let lat = self.lat.as_deref().unwrap_or_default();
        sink.push(system, t, c, "sequential p50", pct(lat, 0.5), "µs");
        sink.push(system, t, c, "sequential p99", pct(lat, 0.99), "µs");
        sink.push(system, t, c, "sequential p999", pct(lat, 0.999), "µs");
    }
}

async fn raw_sequential(url: &str, n: usize) -> Result<Vec<Duration>, String> {
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
    Ok(lat)
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
pub async fn relay(args: RelayArgs) -> Result<ExitCode, String> {
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
