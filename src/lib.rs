//! plexwire runs work across processes and machines over any transport.
//!
//! A **broker** accepts clients and workers, each on any number of listeners
//! of any transport, and routes every run to the least-loaded worker that
//! serves its pipeline. **Workers** register a capacity and run pipelines
//! concurrently, streaming events before their one final result. **Clients**
//! multiplex many calls over one connection. The wire format is a superset of
//! ReasonChip's length-prefixed JSON packets, so real ReasonChip 0.0.6 peers
//! work with plexwire in both directions; native peers may use bincode, and
//! the broker hands payloads from one codec to the other without decoding them.
//!
//! ```
//! use plexwire::broker::{Broker, BrokerConfig};
//! use plexwire::client::Client;
//! use plexwire::worker::{HandlerError, Worker, WorkerConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let broker = Broker::new(BrokerConfig::default());
//! let clients = broker.listen_clients("mem://doc-clients").await?;
//! let workers = broker.listen_workers("mem://doc-workers").await?;
//!
//! let worker = Worker::new(WorkerConfig::default())
//!     .pipeline("greet", |_ctx, name: String| async move { Ok::<_, HandlerError>(format!("hello, {name}")) });
//! tokio::spawn(async move { worker.run(workers.url()).await });
//! broker.wait_for_capacity(1, std::time::Duration::from_secs(5)).await;
//!
//! let client = Client::connect(clients.url()).await?;
//! let answer: String = client.run("greet", "plexwire").await?;
//! assert_eq!(answer, "hello, plexwire");
//! # Ok(()) }
//! ```
//!
//! # Layers
//!
//! | module | what |
//! |---|---|
//! | [`transport`] | endpoints, connections, framing; one crate per backend |
//! | [`link`] | the connection layer every protocol shares: writer, reader, opening frame |
//! | [`codec`] | packets ⇄ frames: JSON, bincode; per-connection detection |
//! | [`protocol`] | packet types and result codes, no I/O |
//! | [`broker`] | the sans-IO [`Switchboard`](broker::Switchboard) and the async [`Broker`](broker::Broker) |
//! | [`worker`], [`client`] | the two kinds of broker peer |
//! | [`builtin`] | the pipelines `plexwire worker` serves |
//! | [`peer`] | the packet stream: symmetric tagged requests with channels, cs.packetstream 20240630 wire-compatible |
//!
//! # Optional features
//!
//! | feature | default | what it adds | pulls in |
//! |---|---|---|---|
//! | `tcp` | yes | `tcp://host:port` | `plexwire-tcp` |
//! | `unix` | yes | `unix:///path`, ReasonChip's `socket:///path` | `plexwire-unix` |
//! | `json` | yes | the JSON codec (ReasonChip's format) | — |
//! | `bincode` | yes | the bincode codec | `bincode` 2.0.1 |
//! | `tls` | no | `tls://host:port`, `tls+unix:///path` ([`transport::tls`]); `plexwire cert` | `plexwire-tls`: rustls 0.23 (ring), tokio-rustls, rustls-pki-types, rcgen |
//! | `quic` | no | `quic://host:port` ([`transport::quic`]); `plexwire cert` | `plexwire-quic`: quinn 0.11 (rustls, ring), and `plexwire-tls` |
//! | `http` | no | `http://host:port` ([`transport::http`]): plexwire peers over an HTTP/1.1 upgrade, and ReasonChip's `POST /v1/stream/stream` on the same listener; `https://` with `tls` too | `plexwire-http`: hyper 1 (http1), hyper-util, http-body-util |
//! | `ws` | no | `ws://host:port/path` ([`transport::ws`]): one frame per WebSocket message, standalone or on `/ws` of every `http://` listener; `wss://` with `tls` too | `plexwire-ws`: tungstenite 0.30 (handshake keys only) |
//! | `session` | no | [`session`]: hat-juggler 0.7.6's synchronised JSON session, sans-IO (segments, keep-alive, requests, notify, state by JSON Patch) | `json-patch` |
//! | `full` | no | all of the above | |
//!
//! The in-memory transport (`mem://name`) is always present. An endpoint
//! whose backend is not compiled in fails with an error naming its feature.

#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod broker;
pub mod builtin;
pub mod client;
pub mod codec;
mod conn;
pub mod error;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod http_api;
pub mod link;
pub mod peer;
pub mod protocol;
pub mod reconnect;
#[cfg(feature = "session")]
#[cfg_attr(docsrs, doc(cfg(feature = "session")))]
pub mod session;
pub mod transport;
pub mod worker;

pub use error::{Error, RunError};
pub use transport::{connect, listen};
