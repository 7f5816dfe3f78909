//! plexwire's HTTP backend: ReasonChip's client endpoint, `http://host:port`.
//!
//! `POST /v1/stream/stream` with one JSON packet (a RUN) as the body is
//! answered `200` with newline-delimited JSON packets until the RESULT, so a
//! ReasonChip 0.0.6 `HttpClient`, or `curl -N`, can run pipelines through a
//! plexwire broker. Each request becomes one in-memory [`Connection`] handed
//! to whoever accepts from the [`HttpListener`] (the broker sees a legacy
//! JSON client): its first frame is the body, and every frame sent back is
//! one NDJSON line. The response ends after the RESULT line; a client that
//! hangs up earlier closes the connection (the broker cancels the run). A
//! detached RUN is answered at once with an empty body.
//!
//! Unlike ReasonChip, broker-generated answers (BAD_PACKET, NO_CAPACITY, …)
//! come back as ordinary RESULT lines, never a hang. Malformed requests get a
//! 4xx status with a JSON body `{"detail": "…"}`; bodies are bounded by the
//! endpoint's `max_frame_size`.
//!
//! Plexwire's own clients and workers need a full-duplex connection; over
//! HTTP that is not built yet, so this backend is listen-only.

#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![forbid(unsafe_code)]

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use plexwire_transport::{
    mem_pair, Address, Connection, Endpoint, PeerInfo, Scheme, ServerTransport, TransportError,
};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The path ReasonChip's HTTP client posts to.
pub const STREAM_PATH: &str = "/v1/stream/stream";

/// Requests waiting to be accepted.
const BACKLOG: usize = 256;

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// A bound `http://` listener serving ReasonChip's streaming endpoint.
#[derive(Debug)]
pub struct HttpListener {
    endpoint: Endpoint,
    incoming: mpsc::Receiver<Connection>,
    server: JoinHandle<()>,
}

impl Drop for HttpListener {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl HttpListener {
    /// Binds `endpoint` (`http://host:port`; port 0 picks a free one).
    pub async fn bind(endpoint: &Endpoint) -> Result<HttpListener, TransportError> {
        let (host, port) = match (endpoint.scheme(), endpoint.address()) {
            (Scheme::Http, Address::Host { host, port, .. }) => (host.clone(), *port),
            _ => return Err(endpoint.wrong_backend("http")),
        };
        let fail = |source| TransportError::Bind {
            url: endpoint.url().to_owned(),
            source,
        };
        let tcp = TcpListener::bind((host.as_str(), port))
            .await
            .map_err(fail)?;
        let local = tcp.local_addr().map_err(fail)?;
        let endpoint = endpoint.with_address(Address::Host {
            host: local.ip().to_string(),
            port: local.port(),
            path: "/".into(),
        });
        let (accept_tx, incoming) = mpsc::channel(BACKLOG);
        let max = endpoint.max_frame_size();
        let server = tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "HTTP accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let accept_tx = accept_tx.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        handle(req, accept_tx.clone(), peer, max)
                    });
                    if let Err(e) = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await
                    {
                        tracing::debug!(%peer, error = %e, "HTTP connection ended");
                    }
                });
            }
        });
        Ok(HttpListener {
            endpoint,
            incoming,
            server,
        })
    }
}

#[async_trait]
impl ServerTransport for HttpListener {
    async fn accept(&mut self) -> Result<Connection, TransportError> {
        self.incoming.recv().await.ok_or(TransportError::Closed)
    }

    fn local_endpoint(&self) -> &Endpoint {
        &self.endpoint
    }
}

fn json_error(status: StatusCode, detail: impl std::fmt::Display) -> Response<Body> {
    let body = serde_json::json!({ "detail": detail.to_string() }).to_string();
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)).boxed_unsync())
        .expect("a valid response")
}

async fn handle(
    req: Request<Incoming>,
    accept: mpsc::Sender<Connection>,
    peer: SocketAddr,
    max: usize,
) -> Result<Response<Body>, Infallible> {
    if req.uri().path() != STREAM_PATH {
        return Ok(json_error(
            StatusCode::NOT_FOUND,
            format!("no such endpoint; POST one JSON packet to {STREAM_PATH}"),
        ));
    }
    if req.method() != Method::POST {
        return Ok(json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{STREAM_PATH} takes POST"),
        ));
    }
    let body = match Limited::new(req.into_body(), max).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return Ok(json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body exceeds the {max}-byte limit (max_frame_size)"),
            ));
        }
        Err(e) => {
            return Ok(json_error(
                StatusCode::BAD_REQUEST,
                format!("could not read the body: {e}"),
            ))
        }
    };
    let packet: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v @ serde_json::Value::Object(_)) => v,
        Ok(_) => {
            return Ok(json_error(
                StatusCode::BAD_REQUEST,
                "the body must be one JSON object (a packet)",
            ))
        }
        Err(e) => {
            return Ok(json_error(
                StatusCode::BAD_REQUEST,
                format!("the body is not JSON: {e}"),
            ))
        }
    };
    let detach = packet.get("detach").and_then(serde_json::Value::as_bool) == Some(true);
    let (broker_side, ours) = mem_pair(
        PeerInfo {
            transport: "http",
            remote: "broker".into(),
        },
        PeerInfo {
            transport: "http",
            remote: peer.to_string(),
        },
        max,
    );
    if accept.send(broker_side).await.is_err() {
        return Ok(json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the broker is not accepting connections",
        ));
    }
    let (mut tx, rx) = ours.into_frames();
    if tx.send_frame(body).await.is_err() {
        return Ok(json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the broker closed the connection",
        ));
    }
    let ok = Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/x-ndjson");
    if detach {
        // No RESULT will come; the run goes on without us.
        return Ok(ok
            .body(Full::new(Bytes::new()).boxed_unsync())
            .expect("a valid response"));
    }
    // One NDJSON line per frame, ending after the RESULT. `tx` lives in the
    // stream's state so the broker keeps this "connection" until then.
    let lines = futures_util::stream::unfold((rx, Some(tx)), |(mut rx, tx)| async move {
        let tx = tx?;
        let frame = rx.next().await?.ok()?;
        let is_result = serde_json::from_slice::<serde_json::Value>(&frame)
            .ok()
            .and_then(|v| {
                v.get("packet_type")
                    .and_then(|t| t.as_str())
                    .map(|t| t == "RESULT")
            })
            .unwrap_or(false);
        let mut line = BytesMut::with_capacity(frame.len() + 1);
        line.extend_from_slice(&frame);
        line.extend_from_slice(b"\n");
        let next = if is_result { None } else { Some(tx) };
        Some((Ok::<_, Infallible>(Frame::data(line.freeze())), (rx, next)))
    });
    Ok(ok
        .body(BodyExt::boxed_unsync(StreamBody::new(lines)))
        .expect("a valid response"))
}

/// Why plexwire's own peers cannot connect to `http://` (yet).
pub fn connect_unsupported(endpoint: &Endpoint) -> TransportError {
    TransportError::Connect {
        url: endpoint.url().to_owned(),
        source: io::Error::new(
            io::ErrorKind::Unsupported,
            "http:// endpoints serve ReasonChip's one-request-per-run API (POST /v1/stream/stream); plexwire clients and workers connect over tcp, unix, tls or quic",
        ),
    }
}
