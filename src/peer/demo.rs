//! The demo request types `plexwire packet serve` answers, shared by the
//! CLI, the tests and the example so that all of them (and the Python
//! interop scripts) agree on what each rq_type does:
//!
//! | rq_type | answer |
//! |---|---|
//! | 1 echo | ok, flags = the request's flags, payload = the request's payload |
//! | 2 upper | ok, flags 0, the payload upper-cased (ASCII, as Python's `bytes.upper`) |
//! | 3 fail | the handler fails: not ok, `exception during handler` |
//! | 4 empty | ok, flags 0, empty payload |
//! | other | as 3 |

use bytes::Bytes;

use super::connection::{Handler, HandlerError};
use super::core::{IncomingRequest, Reply};

/// Echo.
pub const ECHO: u64 = 1;
/// Upper-case.
pub const UPPER: u64 = 2;
/// Fail.
pub const FAIL: u64 = 3;
/// Empty answer.
pub const EMPTY: u64 = 4;

/// Answers one demo request (see the module docs).
pub fn answer(rq: &IncomingRequest) -> Result<Reply, HandlerError> {
    match rq.rq_type {
        ECHO => Ok(Reply::Both(rq.flags, rq.payload.clone())),
        UPPER => Ok(Reply::Bytes(Bytes::from(rq.payload.to_ascii_uppercase()))),
        EMPTY => Ok(Reply::Nothing),
        FAIL => Err("request type 3 always fails".into()),
        other => Err(format!("unknown request type {other}").into()),
    }
}

/// The demo handler, on every channel.
pub fn handler() -> Handler {
    Handler::new(|rq: IncomingRequest| async move { answer(&rq) })
}
