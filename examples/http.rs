//! Broker, worker and client over HTTP, and ReasonChip's HTTP endpoint on the
//! same listener.
//!
//! ```sh
//! cargo run --example http --features http
//! ```
//!
//! The broker listens for clients and for workers on `http://` (ports picked
//! by the OS). The worker and a plexwire client connect with `http://` URLs:
//! each sends `GET /v1/connect` with `Upgrade: plexwire/1`, gets `101
//! Switching Protocols`, and from then on the connection is a full-duplex
//! frame stream exactly like TCP (events stream, runs multiplex). Then a RUN
//! is POSTed to `/v1/stream/stream` on the same client listener, the way
//! ReasonChip's `HttpClient` (or `curl -N`) does, and answered with NDJSON.
//! With `--features http,tls`, `https://` works the same way (see the `tls`
//! example for the certificate options).

use std::time::Duration;

use plexwire::broker::{Broker, BrokerConfig};
use plexwire::client::Client;
use plexwire::worker::{Worker, WorkerConfig};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let broker = Broker::new(BrokerConfig::default());
    let clients = broker.listen_clients("http://127.0.0.1:0").await?;
    let workers = broker.listen_workers("http://127.0.0.1:0").await?;
    println!("broker: clients on {clients}, workers on {workers}");

    // A worker over the upgraded HTTP connection (built-in pipelines).
    let worker = plexwire::builtin::register(Worker::new(WorkerConfig::default()));
    let url = workers.url().to_owned();
    tokio::spawn(async move { worker.run(&url).await });
    broker.wait_for_capacity(1, Duration::from_secs(5)).await;

    // A plexwire client over the upgraded HTTP connection.
    let client = Client::connect(clients.url()).await?;
    let sum: Value = client.run("add", &json!({"a": 2, "b": 40})).await?;
    println!("plexwire client over http: add -> {sum}");
    let mut run = client.start("count", &json!({"to": 3})).await?;
    while let Some(event) = run.next_event().await {
        println!("plexwire client over http: count event {}", event.as_str());
    }
    println!(
        "plexwire client over http: count -> {}",
        run.finish::<Value>().await?
    );
    drop(client);

    // ReasonChip's endpoint on the same listener: one JSON packet POSTed,
    // NDJSON packets back until the RESULT.
    let addr = clients
        .url()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let body = r#"{"packet_type":"RUN","cookie":"00000000-0000-4000-8000-000000000001","pipeline":"add","variables":"{\"a\": 2, \"b\": 40}"}"#;
    println!("try it:\n  curl -N -d '{body}' http://{addr}/v1/stream/stream\n");

    let mut s = tokio::net::TcpStream::connect(&addr).await?;
    let request = format!(
        "POST /v1/stream/stream HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    s.read_to_string(&mut response).await?;
    let ndjson = response
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or("(no packet)");
    println!("ReasonChip-style POST: answer {ndjson}");

    // Keep serving for a moment so the curl command above can be tried.
    tokio::time::sleep(Duration::from_millis(200)).await;
    broker.shutdown(Duration::from_secs(1)).await;
    Ok(())
}
