//! The juggler session as a state machine, no IO: text frames and time in,
//! text frames and events out.
//!
//! Call order (as quinn-proto's `Connection`): feed what arrived with
//! [`Session::handle_frame`] (or [`Session::handle_binary_frame`]), and
//! [`Session::handle_timeout`] when [`Session::poll_timeout`]'s instant has
//! passed; give commands ([`Session::request`], [`Session::respond`],
//! [`Session::notify`], [`Session::set_state`]); after each of these, drain
//! [`Session::poll_transmit`] (frames to send, in order) and
//! [`Session::poll_event`]. Time is always passed in, so tests run on
//! virtual time. An error from `handle_*` means the connection must close
//! with [`SessionError::close_code`]; the session then refuses everything.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::wire::{segments, JugglerMessage, Reassembler, Segment};
use super::SessionError;

/// Which end of a juggler connection this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Holds the state, answers requests, sends notifies.
    Server,
    /// Sends requests, mirrors the server's state.
    Client,
}

/// A session's settings; the defaults are hat-juggler's.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Characters per segment (hat: 65536).
    pub max_segment_size: usize,
    /// Send a keep-alive ping after this long with nothing received (hat: 30 s).
    pub ping_delay: Duration,
    /// Close if nothing arrives this long after the ping (hat: 30 s).
    pub ping_timeout: Duration,
    /// Server: send state changes this long after the first one (hat: 0.2 s; 0 = at once).
    pub autoflush_delay: Duration,
    /// The largest message accepted, segments joined (hat's server takes 4 MiB per WebSocket message).
    pub max_message_size: usize,
    /// Client: the most requests awaiting an answer at once.
    pub max_pending_requests: usize,
    /// Bytes of frames waiting to be sent; past it the peer counts as not
    /// reading and the session ends (SlowConsumer, close 1013), so an
    /// application that notifies faster than its peer reads cannot grow
    /// memory without bound.
    pub max_queued_bytes: usize,
}

impl Default for SessionConfig {
    fn default() -> SessionConfig {
        SessionConfig {
            max_segment_size: 65536,
            ping_delay: Duration::from_secs(30),
            ping_timeout: Duration::from_secs(30),
            autoflush_delay: Duration::from_millis(200),
            max_message_size: 16 << 20,
            max_pending_requests: 4096,
            max_queued_bytes: 64 << 20,
        }
    }
}

/// What the session tells its owner.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Server: a request to answer with [`Session::respond`].
    Request {
        /// Its id.
        id: i64,
        /// Its name (never empty: the session answers those).
        name: String,
        /// Its data.
        data: Value,
    },
    /// Client: the answer to request `id`: `Ok(data)` or `Err(data)`.
    Response {
        /// The request's id.
        id: i64,
        /// The result.
        result: Result<Value, Value>,
    },
    /// Client: a notify from the server.
    Notify {
        /// Its name.
        name: String,
        /// Its data.
        data: Value,
    },
    /// Client: the server's state changed; this is the new whole value.
    State(Value),
}

/// One juggler connection's protocol state; see the module docs.
#[derive(Debug)]
pub struct Session {
    role: Role,
    config: SessionConfig,
    reassembler: Reassembler,
    /// Frames to send, in order; the owner drains them after every call.
    transmit: VecDeque<String>,
    /// Events for the owner; at most one per frame handled.
    events: VecDeque<Event>,
    /// When anything last arrived (keep-alive).
    last_received: Instant,
    /// When our keep-alive ping went out, if one is unanswered.
    ping_sent: Option<Instant>,
    /// Client: the next request id.
    next_id: i64,
    /// Client: ids awaiting a response.
    pending: HashSet<i64>,
    /// Server: the state now.
    state: Value,
    /// Server: the state the client has (what was last sent).
    sent: Value,
    /// Server: when the first unsent change was made.
    dirty_since: Option<Instant>,
    /// Client: the server's state as applied so far.
    remote: Value,
    /// Why the session ended, once it has.
    closed: Option<SessionError>,
    /// Bytes in `transmit`.
    queued_bytes: usize,
}

impl Session {
    /// A session for `role`, starting at `now`.
    pub fn new(role: Role, config: SessionConfig, now: Instant) -> Session {
        Session {
            role,
            reassembler: Reassembler::new(config.max_message_size),
            config,
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            last_received: now,
            ping_sent: None,
            next_id: 1,
            pending: HashSet::new(),
            state: Value::Null,
            sent: Value::Null,
            dirty_since: None,
            remote: Value::Null,
            closed: None,
            queued_bytes: 0,
        }
    }

    // Getters.

    /// Server: the state now (what [`Session::set_state`] last set).
    pub fn state(&self) -> &Value {
        &self.state
    }

    /// Client: the server's state as received so far (`null` before the first).
    pub fn remote_state(&self) -> &Value {
        &self.remote
    }

    /// Why the session ended, if it has.
    pub fn close_reason(&self) -> Option<&SessionError> {
        self.closed.as_ref()
    }

    // Inputs.

    /// A text frame arrived.
    pub fn handle_frame(&mut self, now: Instant, frame: &str) -> Result<(), SessionError> {
        self.check_open()?;
        self.last_received = now;
        self.ping_sent = None;
        let result = self.frame(frame);
        self.fail_on(result)
    }

    /// A binary frame arrived: juggler uses text frames only.
    pub fn handle_binary_frame(&mut self, _now: Instant) -> Result<(), SessionError> {
        self.check_open()?;
        self.fail_on(Err(SessionError::BinaryFrame))
    }

    /// Time has passed: keep-alive and, on a server, the debounced state flush.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), SessionError> {
        self.check_open()?;
        if let Some(at) = self.dirty_since {
            if now >= at + self.config.autoflush_delay {
                self.flush_state();
            }
        }
        match self.ping_sent {
            Some(sent) if now >= sent + self.config.ping_timeout => {
                return self.fail_on(Err(SessionError::KeepAliveTimeout(
                    self.config.ping_delay + self.config.ping_timeout,
                )));
            }
            None if now >= self.last_received + self.config.ping_delay => {
                self.push_frame("2".into());
                self.ping_sent = Some(now);
            }
            _ => {}
        }
        Ok(())
    }

    // Commands.

    /// Client: sends request `name` with `data`; its id, to match the
    /// [`Event::Response`].
    pub fn request(&mut self, name: &str, data: Value) -> Result<i64, SessionError> {
        self.check_open()?;
        self.expect_role(Role::Client, "request")?;
        if self.pending.len() >= self.config.max_pending_requests {
            return Err(SessionError::TooManyRequests(
                self.config.max_pending_requests,
            ));
        }
        let id = self.next_id;
        self.next_id += 1;
        self.pending.insert(id);
        self.send(&JugglerMessage::Request {
            id,
            name: name.to_owned(),
            data,
        });
        Ok(id)
    }

    /// Server: answers request `id` (`Err` text: `success` false).
    pub fn respond(&mut self, id: i64, result: Result<Value, String>) -> Result<(), SessionError> {
        self.check_open()?;
        self.expect_role(Role::Server, "respond")?;
        let (data, success) = match result {
            Ok(v) => (v, true),
            Err(e) => (Value::String(e), false),
        };
        self.send(&JugglerMessage::Response { id, data, success });
        Ok(())
    }

    /// Server: sends notify `name` with `data`.
    pub fn notify(&mut self, name: &str, data: Value) -> Result<(), SessionError> {
        self.check_open()?;
        self.expect_role(Role::Server, "notify")?;
        self.send(&JugglerMessage::Notify {
            name: name.to_owned(),
            data,
        });
        Ok(())
    }

    /// Server: the state is now `state`; the diff goes out after
    /// `autoflush_delay` (at once if 0), nothing if nothing changed.
    pub fn set_state(&mut self, now: Instant, state: Value) -> Result<(), SessionError> {
        self.check_open()?;
        self.expect_role(Role::Server, "set_state")?;
        self.state = state;
        if self.state == self.sent {
            self.dirty_since = None;
            return Ok(());
        }
        if self.config.autoflush_delay.is_zero() {
            self.flush_state();
        } else if self.dirty_since.is_none() {
            self.dirty_since = Some(now);
        }
        Ok(())
    }

    /// Server: sends the state diff now rather than at the debounce deadline.
    pub fn flush_state(&mut self) {
        self.dirty_since = None;
        let diff = json_patch::diff(&self.sent, &self.state);
        if diff.0.is_empty() {
            return;
        }
        let diff = serde_json::to_value(diff).unwrap_or(Value::Null);
        self.sent = self.state.clone();
        self.send(&JugglerMessage::State { diff });
    }

    // Outputs.

    /// The next text frame to send.
    pub fn poll_transmit(&mut self) -> Option<String> {
        let frame = self.transmit.pop_front()?;
        self.queued_bytes = self.queued_bytes.saturating_sub(frame.len());
        Some(frame)
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When to call [`Session::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed.is_some() {
            return None;
        }
        let keep_alive = match self.ping_sent {
            Some(sent) => sent + self.config.ping_timeout,
            None => self.last_received + self.config.ping_delay,
        };
        let flush = self.dirty_since.map(|at| at + self.config.autoflush_delay);
        Some(flush.map_or(keep_alive, |f| f.min(keep_alive)))
    }

    // Internals.

    fn check_open(&self) -> Result<(), SessionError> {
        match &self.closed {
            Some(_) => Err(SessionError::Closed),
            None => Ok(()),
        }
    }

    fn expect_role(&self, role: Role, what: &'static str) -> Result<(), SessionError> {
        if self.role == role {
            Ok(())
        } else {
            Err(SessionError::WrongRole(what))
        }
    }

    fn fail_on(&mut self, result: Result<(), SessionError>) -> Result<(), SessionError> {
        if let Err(e) = &result {
            self.closed = Some(e.clone());
        }
        result
    }

    fn send(&mut self, message: &JugglerMessage) {
        for segment in segments(&message.encode(), self.config.max_segment_size) {
            self.push_frame(segment);
        }
    }

    /// Queues a frame; past `max_queued_bytes` the session ends instead
    /// (what is queued is dropped: the peer was not reading it).
    fn push_frame(&mut self, frame: String) {
        if self.closed.is_some() {
            return;
        }
        self.queued_bytes += frame.len();
        if self.queued_bytes > self.config.max_queued_bytes {
            self.closed = Some(SessionError::SlowConsumer {
                queued: self.queued_bytes,
                max: self.config.max_queued_bytes,
            });
            self.transmit.clear();
            self.queued_bytes = 0;
            return;
        }
        self.transmit.push_back(frame);
    }

    fn frame(&mut self, frame: &str) -> Result<(), SessionError> {
        let text = match self.reassembler.push(frame)? {
            Segment::Partial | Segment::Pong => return Ok(()),
            Segment::Ping(data) => {
                self.push_frame(format!("3{data}"));
                return Ok(());
            }
            Segment::Message(text) => text,
        };
        match JugglerMessage::decode(&text, self.role == Role::Client)? {
            JugglerMessage::Request { id, name, data } if name.is_empty() => {
                self.send(&JugglerMessage::Response {
                    id,
                    data,
                    success: true,
                });
            }
            JugglerMessage::Request { id, name, data } => {
                self.events.push_back(Event::Request { id, name, data })
            }
            JugglerMessage::Response { id, data, success } => {
                // An id we do not know is ignored, as hat does.
                if self.pending.remove(&id) {
                    let result = if success { Ok(data) } else { Err(data) };
                    self.events.push_back(Event::Response { id, result });
                }
            }
            JugglerMessage::Notify { name, data } => {
                self.events.push_back(Event::Notify { name, data })
            }
            JugglerMessage::State { diff } => {
                let patch: json_patch::Patch = serde_json::from_value(diff)
                    .map_err(|e| SessionError::BadPatch(e.to_string()))?;
                // Applied to a copy: a patch that fails leaves the state as it was.
                let mut next = self.remote.clone();
                json_patch::patch(&mut next, &patch)
                    .map_err(|e| SessionError::BadPatch(e.to_string()))?;
                self.remote = next.clone();
                self.events.push_back(Event::State(next));
            }
        }
        Ok(())
    }
}
