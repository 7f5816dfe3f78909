//! ReasonChip's HTTP client endpoint, `POST /v1/stream/stream`: the protocol
//! side of it.
//!
//! The HTTP backend (plexwire-http) knows no packets: its
//! [`exchange_route`] turns a
//! request body into the first frame of an in-memory connection handed to
//! the listener's accept queue, and streams every frame sent back as one
//! NDJSON line until an [`Exchange`] says
//! the exchange is complete. This module is that `Exchange` for
//! ReasonChip's API: the body must be one JSON object (a packet — the broker
//! sees a legacy JSON client, and answers a malformed packet BAD_PACKET like
//! any other), a `"detach": true` run is answered at once with an empty body,
//! and the response ends after the RESULT line. [`router`] is what
//! [`transport::listen`](crate::transport::listen) installs on every
//! `http://` and `https://` listener, so `Broker::listen_clients("http://…")`
//! serves `curl -N` and ReasonChip's `HttpClient`.

use plexwire_http::{exchange_route, Exchange, Method, Reply, Route, Router};

use crate::protocol::PacketType;

/// The path ReasonChip's HTTP client posts to.
pub const STREAM_PATH: &str = "/v1/stream/stream";

/// The media type of the answer: one JSON packet per line.
const NDJSON: &str = "application/x-ndjson";

/// ReasonChip's API as an [`Exchange`]: one JSON packet in, packets out until
/// the RESULT.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReasonChipApi;

impl Exchange for ReasonChipApi {
    fn open(&self, body: &[u8]) -> Result<Reply, String> {
        match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(packet @ serde_json::Value::Object(_)) => {
                let detach = packet.get("detach").and_then(serde_json::Value::as_bool);
                // No RESULT will come for a detached run; it goes on without us.
                Ok(if detach == Some(true) {
                    Reply::None
                } else {
                    Reply::Stream
                })
            }
            Ok(_) => Err("the body must be one JSON object (a packet)".into()),
            Err(e) => Err(format!("the body is not JSON: {e}")),
        }
    }

    fn is_last(&self, frame: &[u8]) -> bool {
        serde_json::from_slice::<serde_json::Value>(frame)
            .ok()
            .and_then(|v| {
                v.get("packet_type")
                    .and_then(serde_json::Value::as_str)
                    .map(|t| t == PacketType::Result.as_str())
            })
            .unwrap_or(false)
    }
}

/// The `POST /v1/stream/stream` route.
pub fn route() -> Route {
    exchange_route(Method::POST, STREAM_PATH, NDJSON, ReasonChipApi)
        .about("ReasonChip's API: one JSON packet in, NDJSON packets out until the RESULT")
}

/// The routes plexwire serves on an HTTP listener besides the upgrade.
pub fn router() -> Router {
    Router::new().route(route())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_checked_and_detached_runs_expect_nothing() {
        let api = ReasonChipApi;
        assert_eq!(
            api.open(br#"{"packet_type":"RUN","pipeline":"p"}"#),
            Ok(Reply::Stream)
        );
        assert_eq!(
            api.open(br#"{"packet_type":"RUN","detach":true}"#),
            Ok(Reply::None)
        );
        assert_eq!(
            api.open(br#"{"packet_type":"RUN","detach":false}"#),
            Ok(Reply::Stream)
        );
        assert!(api.open(b"[1]").unwrap_err().contains("one JSON object"));
        assert!(api.open(b"nope").unwrap_err().contains("not JSON"));
    }

    #[test]
    fn the_result_is_the_last_line() {
        let api = ReasonChipApi;
        assert!(api.is_last(br#"{"packet_type":"RESULT","rc":"OK"}"#));
        assert!(!api.is_last(br#"{"packet_type":"EVENT"}"#));
        assert!(!api.is_last(b"not json"));
    }
}
