//! hat-juggler's synchronised JSON session, wire-compatible with
//! hat-juggler 0.7.6: requests and responses, notifies, and a server-held
//! JSON state the client mirrors through JSON Patch (RFC 6902) diffs.
//!
//! This module is the protocol without IO ([`Session`], in the shape of
//! quinn-proto: `handle_*` inputs with the time passed in, commands,
//! `poll_*` outputs) and its wire ([`wire`]: hat's JSON encoding, segments,
//! messages). The rules are in docs/protocol.md ("hat-juggler session").
//!
//! [`server`] is the async server over WebSocket. Not yet here (see the
//! issue): the async client, the symmetric `local_data`/`remote_data` form,
//! static files and basic auth, and the CLI.

pub mod demo;
mod machine;
pub mod server;
pub mod wire;

pub use machine::{Event, Role, Session, SessionConfig};

/// Why a session ended; every variant names what the peer did wrong (or
/// what this side asked for that cannot be).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// A WebSocket binary frame: juggler sends text frames only.
    #[error("a binary frame on a juggler connection (juggler sends text frames only)")]
    BinaryFrame,
    /// A text frame with no segment character.
    #[error("an empty text frame (every juggler frame starts with a segment character 0-3)")]
    EmptyFrame,
    /// A segment character other than `0`-`3`.
    #[error("unknown segment character {0:?} (expected 0, 1, 2 or 3)")]
    UnknownSegment(char),
    /// A message over the size limit (segments joined).
    #[error("a message of {size} bytes exceeds the {max}-byte limit (raise max_message_size)")]
    TooLarge {
        /// Bytes so far.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The message is not JSON.
    #[error("invalid JSON in a juggler message: {0}")]
    InvalidJson(String),
    /// A field is missing or of the wrong type.
    #[error("malformed juggler message: {0}")]
    BadMessage(String),
    /// A message type this peer's role may not send.
    #[error("a {sender} may not send `{kind}` messages")]
    NotAllowed {
        /// The `type`.
        kind: String,
        /// `client` or `server`.
        sender: &'static str,
    },
    /// A state diff that is not a patch or does not apply.
    #[error("a state diff that does not apply (the state is left as it was): {0}")]
    BadPatch(String),
    /// Nothing arrived for `ping_delay` + `ping_timeout`.
    #[error("nothing received for {0:?}, keep-alive ping included: the peer is gone")]
    KeepAliveTimeout(std::time::Duration),
    /// Too many requests awaiting answers.
    #[error("{0} requests are already awaiting answers (raise max_pending_requests)")]
    TooManyRequests(usize),
    /// A command for the other role (`notify` on a client, say).
    #[error("`{0}` is for the other role of a juggler session")]
    WrongRole(&'static str),
    /// Frames waiting to be sent passed the bound: the peer does not read.
    #[error("{queued} bytes wait to be sent to a peer that does not read them (over max_queued_bytes, {max})")]
    SlowConsumer {
        /// Bytes queued.
        queued: usize,
        /// The bound.
        max: usize,
    },
    /// The session has ended.
    #[error("the juggler session has ended")]
    Closed,
}

impl SessionError {
    /// The WebSocket close status to end the connection with.
    pub fn close_code(&self) -> u16 {
        match self {
            SessionError::BinaryFrame => 1003,
            SessionError::TooLarge { .. } => 1009,
            SessionError::KeepAliveTimeout(_) => 1001,
            SessionError::SlowConsumer { .. } => 1013,
            _ => 1008,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::{Duration, Instant};

    fn config() -> SessionConfig {
        SessionConfig {
            ping_delay: Duration::from_secs(1),
            ping_timeout: Duration::from_secs(2),
            autoflush_delay: Duration::from_millis(200),
            ..SessionConfig::default()
        }
    }

    fn drain(s: &mut Session) -> Vec<String> {
        std::iter::from_fn(|| s.poll_transmit()).collect()
    }

    /// Moves every frame from `from` to `to`.
    fn deliver(from: &mut Session, to: &mut Session, now: Instant) {
        for f in drain(from) {
            to.handle_frame(now, &f).unwrap();
        }
    }

    #[test]
    fn state_diffs_are_debounced_minimal_and_applied() {
        let t0 = Instant::now();
        let mut server = Session::new(Role::Server, config(), t0);
        let mut client = Session::new(Role::Client, config(), t0);
        server
            .set_state(
                t0,
                json!({"counter": 0, "last": null, "items": [], "tick": 0}),
            )
            .unwrap();
        assert!(drain(&mut server).is_empty(), "debounced");
        assert_eq!(server.poll_timeout(), Some(t0 + Duration::from_millis(200)));
        let t1 = t0 + Duration::from_millis(200);
        server.handle_timeout(t1).unwrap();
        let frames = drain(&mut server);
        assert_eq!(
            frames,
            vec![
                r#"0{"type": "state", "diff": [{"op": "replace", "path": "", "value": {"counter": 0, "items": [], "last": null, "tick": 0}}]}"#
            ]
        );
        client.handle_frame(t1, &frames[0]).unwrap();
        // Two changes within the delay: one diff.
        server
            .set_state(
                t1,
                json!({"counter": 1, "last": "x", "items": [1], "tick": 0}),
            )
            .unwrap();
        server
            .set_state(
                t1,
                json!({"counter": 2, "last": "y/~", "items": [1, 2], "tick": 0}),
            )
            .unwrap();
        server
            .handle_timeout(t1 + Duration::from_millis(200))
            .unwrap();
        let frames = drain(&mut server);
        assert_eq!(frames.len(), 1);
        client.handle_frame(t1, &frames[0]).unwrap();
        assert_eq!(client.remote_state(), server.state());
        assert_eq!(
            client.poll_event(),
            Some(Event::State(
                json!({"counter": 0, "items": [], "last": null, "tick": 0})
            ))
        );
        assert!(matches!(client.poll_event(), Some(Event::State(_))));
        // Setting the same value again sends nothing.
        server.set_state(t1, server.state().clone()).unwrap();
        server.handle_timeout(t1 + Duration::from_secs(1)).unwrap();
        assert!(
            drain(&mut server).iter().all(|f| f == "2"),
            "only a keep-alive ping"
        );
    }

    #[test]
    fn requests_are_answered_in_order_and_empty_names_by_the_session() {
        let t0 = Instant::now();
        let mut server = Session::new(Role::Server, config(), t0);
        let mut client = Session::new(Role::Client, config(), t0);
        let a = client.request("echo", json!({"é": 1})).unwrap();
        let b = client.request("", json!([1, 2, 3])).unwrap();
        assert_eq!((a, b), (1, 2));
        deliver(&mut client, &mut server, t0);
        assert_eq!(
            server.poll_event(),
            Some(Event::Request {
                id: 1,
                name: "echo".into(),
                data: json!({"é": 1})
            })
        );
        assert_eq!(
            server.poll_event(),
            None,
            "the empty name is answered inside"
        );
        server.notify("echoed", json!("n")).unwrap();
        server
            .respond(1, Err("requested failure: boom".into()))
            .unwrap();
        deliver(&mut server, &mut client, t0);
        assert_eq!(
            client.poll_event(),
            Some(Event::Response {
                id: 2,
                result: Ok(json!([1, 2, 3]))
            })
        );
        assert_eq!(
            client.poll_event(),
            Some(Event::Notify {
                name: "echoed".into(),
                data: json!("n")
            })
        );
        assert_eq!(
            client.poll_event(),
            Some(Event::Response {
                id: 1,
                result: Err(json!("requested failure: boom"))
            })
        );
        // A response nobody asked for is ignored.
        client
            .handle_frame(
                t0,
                r#"0{"type": "response", "id": 99, "data": null, "success": true}"#,
            )
            .unwrap();
        assert_eq!(client.poll_event(), None);
    }

    #[test]
    fn segmented_messages_cross_with_a_small_segment_size() {
        let t0 = Instant::now();
        let small = SessionConfig {
            max_segment_size: 1024,
            ..config()
        };
        let mut server = Session::new(Role::Server, small.clone(), t0);
        let mut client = Session::new(Role::Client, small, t0);
        let text = "x".repeat(5000);
        client.request("echo", json!(text)).unwrap();
        let frames = drain(&mut client);
        assert_eq!(frames.iter().map(|f| &f[..1]).collect::<String>(), "11110");
        for f in &frames {
            server.handle_frame(t0, f).unwrap();
        }
        assert!(
            matches!(server.poll_event(), Some(Event::Request { data, .. }) if data == json!(text))
        );
    }

    #[test]
    fn keep_alive_pings_after_silence_and_gives_up_after_the_timeout() {
        let t0 = Instant::now();
        let mut s = Session::new(Role::Client, config(), t0);
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(1)));
        s.handle_timeout(t0 + Duration::from_millis(999)).unwrap();
        assert!(drain(&mut s).is_empty());
        s.handle_timeout(t0 + Duration::from_secs(1)).unwrap();
        assert_eq!(drain(&mut s), vec!["2"]);
        // A pong (any frame) resets it.
        s.handle_frame(t0 + Duration::from_millis(1500), "3")
            .unwrap();
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_millis(2500)));
        // A ping from the peer is answered at once.
        s.handle_frame(t0 + Duration::from_millis(1600), "2")
            .unwrap();
        assert_eq!(drain(&mut s), vec!["3"]);
        let t = t0 + Duration::from_millis(2600);
        s.handle_timeout(t).unwrap();
        assert_eq!(drain(&mut s), vec!["2"]);
        let e = s.handle_timeout(t + Duration::from_secs(2)).unwrap_err();
        assert_eq!(e, SessionError::KeepAliveTimeout(Duration::from_secs(3)));
        assert_eq!(s.poll_timeout(), None);
        assert_eq!(s.request("x", json!(null)), Err(SessionError::Closed));
    }

    #[test]
    fn bad_input_ends_the_session_with_a_close_code_and_never_corrupts_state() {
        let t0 = Instant::now();
        let bad_for_server = [
            ("", 1008),
            ("x", 1008),
            ("0{", 1008),
            (r#"0{"type": "state", "diff": []}"#, 1008),
            (r#"0{"type": "request", "id": "7", "name": "a"}"#, 1008),
        ];
        for (frame, code) in bad_for_server {
            let mut s = Session::new(Role::Server, config(), t0);
            let e = s.handle_frame(t0, frame).unwrap_err();
            assert_eq!(e.close_code(), code, "{frame:?}: {e}");
            assert_eq!(s.close_reason(), Some(&e));
        }
        let mut s = Session::new(Role::Server, config(), t0);
        assert_eq!(s.handle_binary_frame(t0).unwrap_err().close_code(), 1003);
        let mut s = Session::new(
            Role::Server,
            SessionConfig {
                max_message_size: 10,
                ..config()
            },
            t0,
        );
        s.handle_frame(t0, "1aaaaaaaa").unwrap();
        assert_eq!(
            s.handle_frame(t0, "1bbbbbbbb").unwrap_err().close_code(),
            1009
        );
        // A client whose diff does not apply closes and keeps its state.
        let mut c = Session::new(Role::Client, config(), t0);
        c.handle_frame(
            t0,
            r#"0{"type": "state", "diff": [{"op": "replace", "path": "", "value": {"a": [1]}}]}"#,
        )
        .unwrap();
        let e = c
            .handle_frame(t0, r#"0{"type": "state", "diff": [{"op": "add", "path": "/a/0", "value": 0}, {"op": "remove", "path": "/nope"}]}"#)
            .unwrap_err();
        assert!(matches!(e, SessionError::BadPatch(_)), "{e}");
        assert_eq!(c.remote_state(), &json!({"a": [1]}));
        // move, copy, test, `-` and ~0/~1 apply.
        let mut c = Session::new(Role::Client, config(), t0);
        c.handle_frame(t0, r#"0{"type": "state", "diff": [{"op": "replace", "path": "", "value": {"a/b": [1], "m~n": 2}}, {"op": "add", "path": "/a~1b/-", "value": 3}, {"op": "copy", "from": "/m~0n", "path": "/c"}, {"op": "move", "from": "/c", "path": "/d"}, {"op": "test", "path": "/d", "value": 2}]}"#)
            .unwrap();
        assert_eq!(c.remote_state(), &json!({"a/b": [1, 3], "m~n": 2, "d": 2}));
    }

    /// A server whose client does not read: past `max_queued_bytes` the
    /// session ends (SlowConsumer, close 1013) instead of queueing for ever.
    #[test]
    fn frames_nobody_reads_are_bounded() {
        let t0 = Instant::now();
        let config = SessionConfig {
            max_queued_bytes: 10_000,
            ..SessionConfig::default()
        };
        let mut server = Session::new(Role::Server, config, t0);
        let mut sent = 0;
        while server.notify("n", json!("x".repeat(100))).is_ok() {
            sent += 1;
            assert!(sent < 1000, "never bounded");
        }
        let reason = server.close_reason().expect("ended").clone();
        assert!(
            matches!(reason, SessionError::SlowConsumer { .. }),
            "{reason}"
        );
        assert_eq!(reason.close_code(), 1013);
        assert!(
            server.poll_transmit().is_none(),
            "what nobody read is dropped"
        );
        // A reader that keeps up is never cut: the same traffic, drained.
        let mut server = Session::new(
            Role::Server,
            SessionConfig {
                max_queued_bytes: 10_000,
                ..SessionConfig::default()
            },
            t0,
        );
        for _ in 0..1000 {
            server.notify("n", json!("x".repeat(100))).unwrap();
            while server.poll_transmit().is_some() {}
        }
        assert!(server.close_reason().is_none());
    }
}
