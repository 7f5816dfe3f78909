//! ReasonChip's client endpoint: `POST /v1/stream/stream` with one JSON
//! packet as the body, answered with NDJSON packets until the RESULT.
//!
//! Each request becomes one in-memory [`Connection`] handed to whoever
//! accepts from the listener (the broker sees a legacy JSON client): its first
//! frame is the body, and every frame sent back is one NDJSON line.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use plexwire_transport::{mem_pair, PeerInfo};

use crate::{json_error, Body, Shared, STREAM_PATH};

/// Answers one `POST /v1/stream/stream`.
pub(crate) async fn handle(
    req: Request<Incoming>,
    shared: &Shared,
    peer: SocketAddr,
) -> Result<Response<Body>, Infallible> {
    if req.method() != Method::POST {
        return Ok(json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{STREAM_PATH} takes POST"),
        ));
    }
    let max = shared.max_frame_size;
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
            transport: shared.transport,
            remote: "broker".into(),
        },
        PeerInfo {
            transport: shared.transport,
            remote: peer.to_string(),
        },
        max,
    );
    if shared.accept.send(broker_side).await.is_err() {
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
