//! A route that runs one exchange per request: the request body becomes the
//! first frame of an in-memory [`Connection`] handed to the listener's
//! accept queue, and every frame sent back on it is one line of the
//! response (newline-delimited, streamed as it comes), until an
//! [`Exchange`] says the exchange is complete.
//!
//! This is how `curl -N` or ReasonChip's `HttpClient` runs a pipeline
//! through a plexwire broker, but this module knows no packets: what a valid
//! body is, whether it expects an answer, and which frame is the last are
//! the [`Exchange`]'s to say (the `plexwire` crate's `http_api` implements
//! it for ReasonChip's `POST /v1/stream/stream`). A client that hangs up
//! early closes the connection, so the side that accepted it sees a
//! disconnect.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http_body_util::{BodyExt, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use plexwire_transport::{mem_pair, PeerInfo};

use crate::router::{full, json_error, ResponseBody, Route, RouteContext};

/// What a request body asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// Stream the frames sent back, one line each, until the last.
    Stream,
    /// Nothing comes back (a detached run): answer at once with an empty
    /// body; the connection is handed over all the same.
    None,
}

/// The protocol knowledge of an exchange route.
pub trait Exchange: Send + Sync + 'static {
    /// Checks a request body before anything is handed over. An error is
    /// answered `400` with the text as its `detail`, and should say what to
    /// send instead.
    fn open(&self, body: &[u8]) -> Result<Reply, String>;

    /// Whether `frame`, sent back to the client, completes the exchange
    /// (the response ends after its line).
    fn is_last(&self, frame: &[u8]) -> bool;
}

/// A route for `method` requests on `path` answered with newline-delimited
/// frames (`content_type`, e.g. `application/x-ndjson`) until `exchange`
/// says the last has come. Bodies are bounded by the listener endpoint's
/// `max_frame_size` (`413` past it).
pub fn exchange_route(
    method: Method,
    path: impl Into<String>,
    content_type: &'static str,
    exchange: impl Exchange,
) -> Route {
    let exchange: Arc<dyn Exchange> = Arc::new(exchange);
    Route::new(method, path, move |req, cx| {
        handle(req, cx, exchange.clone(), content_type)
    })
}

async fn handle(
    req: Request<Incoming>,
    cx: RouteContext,
    exchange: Arc<dyn Exchange>,
    content_type: &'static str,
) -> Response<ResponseBody> {
    let max = cx.max_frame_size();
    let body = match Limited::new(req.into_body(), max).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body exceeds the {max}-byte limit (max_frame_size)"),
            );
        }
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                format!("could not read the body: {e}"),
            )
        }
    };
    let reply = match exchange.open(&body) {
        Ok(r) => r,
        Err(detail) => return json_error(StatusCode::BAD_REQUEST, detail),
    };
    let (accepted, ours) = mem_pair(
        PeerInfo {
            transport: cx.transport(),
            remote: "broker".into(),
        },
        PeerInfo {
            transport: cx.transport(),
            remote: cx.peer().to_string(),
        },
        max,
    );
    if cx.handoff().send(accepted).await.is_err() {
        return json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the broker is not accepting connections",
        );
    }
    let (mut tx, rx) = ours.into_frames();
    if tx.send_frame(body).await.is_err() {
        return json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the broker closed the connection",
        );
    }
    let mut ok = Response::new(full(Bytes::new()));
    ok.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    if reply == Reply::None {
        // Nothing will come back; the exchange goes on without us.
        return ok;
    }
    // One line per frame, ending after the last. `tx` lives in the stream's
    // state so the other side keeps this "connection" until then.
    let lines = futures_util::stream::unfold(
        (rx, Some(tx), exchange),
        |(mut rx, tx, exchange)| async move {
            let tx = tx?;
            let frame = rx.next().await?.ok()?;
            let last = exchange.is_last(&frame);
            let mut line = BytesMut::with_capacity(frame.len() + 1);
            line.extend_from_slice(&frame);
            line.extend_from_slice(b"\n");
            let next = if last { None } else { Some(tx) };
            Some((
                Ok::<_, Infallible>(Frame::data(line.freeze())),
                (rx, next, exchange),
            ))
        },
    );
    *ok.body_mut() = BodyExt::boxed_unsync(StreamBody::new(lines));
    ok
}
