//! Shared by the examples: start a broker on two endpoints, a worker with a
//! couple of pipelines, and a client that calls them.

use std::time::Duration;

use plexwire::broker::{Broker, BrokerConfig};
use plexwire::client::Client;
use plexwire::transport::Endpoint;
use plexwire::worker::{HandlerError, Worker, WorkerConfig};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct Words {
    text: String,
}

#[derive(Serialize)]
struct Counted {
    words: usize,
    longest: String,
}

/// Runs broker, worker and client on the given endpoints and prints what happens.
#[allow(dead_code)] // not every example uses both forms
pub async fn run(client_url: &str, worker_url: &str) -> Result<(), Box<dyn std::error::Error>> {
    run_with(client_url, worker_url, |bound| bound.url().to_owned()).await
}

/// Like [`run`], but the worker and the client connect to
/// `connect_url(bound endpoint)`: with TLS and QUIC a listener's URL holds
/// its certificate and key, and a peer's URL holds the CA to check it with.
pub async fn run_with(
    client_url: &str,
    worker_url: &str,
    connect_url: impl Fn(&Endpoint) -> String,
) -> Result<(), Box<dyn std::error::Error>> {
    let broker = Broker::new(BrokerConfig::default());
    let clients = broker.listen_clients(client_url).await?;
    let workers = broker.listen_workers(worker_url).await?;
    println!("broker: clients on {clients}, workers on {workers}");
    let (clients, workers) = (connect_url(&clients), connect_url(&workers));

    let worker = Worker::new(WorkerConfig {
        capacity: 4,
        ..WorkerConfig::default()
    })
    .pipeline("count_words", |_ctx, w: Words| async move {
        let longest = w
            .text
            .split_whitespace()
            .max_by_key(|s| s.len())
            .unwrap_or("")
            .to_owned();
        Ok::<_, HandlerError>(Counted {
            words: w.text.split_whitespace().count(),
            longest,
        })
    })
    .pipeline("countdown", |ctx, from: u32| async move {
        for i in (1..=from).rev() {
            ctx.emit(&i).await?;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok::<_, HandlerError>("liftoff")
    });
    tokio::spawn(async move { worker.run(&workers).await });
    broker.wait_for_capacity(4, Duration::from_secs(5)).await;

    let client = Client::connect(&clients).await?;
    let counted: serde_json::Value = client
        .run(
            "count_words",
            &serde_json::json!({"text": "plexwire routes runs over any transport"}),
        )
        .await?;
    println!("count_words -> {counted}");

    let mut run = client.start("countdown", &3).await?;
    while let Some(event) = run.next_event().await {
        println!("countdown event: {}", event.as_str());
    }
    println!("countdown -> {}", run.finish::<String>().await?);

    match client
        .run::<_, serde_json::Value>("no_such_pipeline", &())
        .await
    {
        Err(e) => println!("no_such_pipeline -> {e}"),
        Ok(v) => println!("unexpected: {v}"),
    }

    drop(client);
    broker.shutdown(Duration::from_secs(1)).await;
    Ok(())
}
