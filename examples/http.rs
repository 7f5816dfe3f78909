//! ReasonChip's HTTP endpoint on a plexwire broker: one JSON packet POSTed,
//! NDJSON packets back until the RESULT.
//!
//! ```sh
//! cargo run --example http --features http
//! ```
//!
//! The example starts a broker with an HTTP client listener and a worker,
//! posts a RUN the way ReasonChip's `HttpClient` (or `curl -N`) does, and
//! prints the answer and the `curl` command to try while it runs.

use std::time::Duration;

use plexwire::broker::{Broker, BrokerConfig};
use plexwire::worker::{Worker, WorkerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let broker = Broker::new(BrokerConfig::default());
    let http = broker.listen_clients("http://127.0.0.1:0").await?;
    let workers = broker.listen_workers("mem://http-example-workers").await?;
    let worker = plexwire::builtin::register(Worker::new(WorkerConfig::default()));
    let url = workers.url().to_owned();
    tokio::spawn(async move { worker.run(&url).await });
    broker.wait_for_capacity(1, Duration::from_secs(5)).await;

    let addr = http
        .url()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let body = r#"{"packet_type":"RUN","cookie":"00000000-0000-4000-8000-000000000001","pipeline":"add","variables":"{\"a\": 2, \"b\": 40}"}"#;
    println!("broker: HTTP endpoint on {http}");
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
    println!("answer: {ndjson}");

    // Keep serving for a moment so the curl command above can be tried.
    tokio::time::sleep(Duration::from_millis(200)).await;
    broker.shutdown(Duration::from_secs(1)).await;
    Ok(())
}
