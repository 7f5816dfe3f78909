//! The packet stream's protocol state, without I/O: [`PacketCore`].
//!
//! Everything cs.packetstream 20240630 decides about a connection lives
//! here and nowhere else — which tag the next request on a channel gets,
//! which requests of ours are still waiting, which requests of the peer are
//! being served, what to answer a request that may not run (ERQ received, a
//! tag still in use, no handler), and what the EOF and ERQ markers do — so
//! that it is tested with plain unit tests and no sockets, like the broker's
//! switchboard. The async [`PacketConnection`](super::PacketConnection)
//! only moves packets and runs handlers. It needs no clock: nothing in the
//! protocol is timed (write batching is the writer's business).
//!
//! Calling order, as in quinn-proto:
//!
//! - **inputs**: [`PacketCore::handle_frame`] (or
//!   [`handle_packet`](PacketCore::handle_packet)) for every frame received,
//!   [`handle_reply`](PacketCore::handle_reply) when a handler has finished,
//!   [`handle_end`](PacketCore::handle_end) when the stream ended without
//!   EOF or broke;
//! - **commands**: [`submit`](PacketCore::submit),
//!   [`end_requests`](PacketCore::end_requests), [`send_eof`](PacketCore::send_eof);
//! - **outputs**, after any of the above: [`poll_transmit`](PacketCore::poll_transmit)
//!   until `None` (packets to write, in order) and
//!   [`poll_event`](PacketCore::poll_event) until `None` (requests to serve,
//!   answers to deliver).
//!
//! Channels are provisioned **on first use**: a request of ours on channel
//! 5 starts that channel's tags at 0, and a peer's request on any channel is
//! served. Tags are numbered per channel as the 20240630 library does
//! (channel 0 from 2, every other from 0, never reused).

use std::collections::VecDeque;

use bytes::Bytes;

use super::error::PacketError;

// Keys come from the peer (channel, tag): a hash seeded per process
// (foldhash), as in the switchboard, not SipHash's cost nor an unseeded one.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
type HashSet<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;
use super::packet::{Kind, Packet, FIRST_TAG_CHANNEL_0, MAX_REQUEST_FLAGS, MAX_RESPONSE_FLAGS};

/// Not-ok payload: the request handler failed (raised, in Python).
pub const EXCEPTION_DURING_HANDLER: &str = "exception during handler";
/// Not-ok payload: this end serves no requests.
pub const NO_REQUEST_HANDLER: &str = "no request handler";
/// Not-ok payload: the peer sent a request after its ERQ.
pub const REQUESTS_NO_LONGER_ALLOWED: &str = "requests no longer allowed";
/// Not-ok payload: this end is shutting down.
pub const REJECTING_CANCELLED: &str = "rejecting request: runstate.cancelled";
/// Not-ok payload of a 20240630 peer for a channel it does not have (unformatted, as sent).
pub const UNKNOWN_CHANNEL: &str = "unknown channel %d";

/// Default for [`CoreConfig::max_packet_size`]: 16 MiB.
pub const DEFAULT_MAX_PACKET_SIZE: usize = 16 * 1024 * 1024;
/// Default for [`CoreConfig::max_serving`].
pub const DEFAULT_MAX_SERVING: usize = 256;

/// What a [`PacketCore`] is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoreConfig {
    /// The largest packet body sent or received (the reader checks the
    /// length prefix against it before allocating).
    pub max_packet_size: usize,
    /// Requests of the peer served at once; at this many the shell stops
    /// reading ([`PacketCore::read_paused`]) until one finishes.
    pub max_serving: usize,
    /// Whether this end serves requests at all; without a handler every
    /// request is answered `no request handler`.
    pub serves_requests: bool,
}

impl Default for CoreConfig {
    fn default() -> CoreConfig {
        CoreConfig {
            max_packet_size: DEFAULT_MAX_PACKET_SIZE,
            max_serving: DEFAULT_MAX_SERVING,
            serves_requests: true,
        }
    }
}

/// A request on the wire: its channel and tag (unique among those in flight
/// in one direction).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId {
    /// The channel.
    pub channel: u64,
    /// The tag.
    pub tag: u64,
}

/// The peer's request, for the handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingRequest {
    /// Answer it with this id.
    pub id: RequestId,
    /// The application's request type (the wire's minus 1).
    pub rq_type: u64,
    /// The request flags.
    pub flags: u64,
    /// The request payload.
    pub payload: Bytes,
}

/// An answer: the seed's `(ok, flags, payload)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Whether the request succeeded.
    pub ok: bool,
    /// The response flags.
    pub flags: u64,
    /// The response payload.
    pub payload: Bytes,
}

/// What a successful handler returns, mapped to a response exactly as the
/// seed maps a Python handler's return value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Reply {
    /// `None`: ok, flags 0, empty payload.
    #[default]
    Nothing,
    /// An `int`: ok, these flags, empty payload.
    Flags(u64),
    /// `bytes`: ok, flags 0, this payload.
    Bytes(Bytes),
    /// `str`: ok, flags 0, the text as UTF-8.
    Text(String),
    /// `(int, bytes)`: ok, both.
    Both(u64, Bytes),
}

impl Reply {
    /// The response's flags and payload.
    pub fn into_parts(self) -> (u64, Bytes) {
        match self {
            Reply::Nothing => (0, Bytes::new()),
            Reply::Flags(f) => (f, Bytes::new()),
            Reply::Bytes(b) => (0, b),
            Reply::Text(s) => (0, Bytes::from(s)),
            Reply::Both(f, b) => (f, b),
        }
    }
}

impl From<()> for Reply {
    fn from((): ()) -> Reply {
        Reply::Nothing
    }
}
impl From<u64> for Reply {
    fn from(f: u64) -> Reply {
        Reply::Flags(f)
    }
}
impl From<Bytes> for Reply {
    fn from(b: Bytes) -> Reply {
        Reply::Bytes(b)
    }
}
impl From<Vec<u8>> for Reply {
    fn from(b: Vec<u8>) -> Reply {
        Reply::Bytes(b.into())
    }
}
impl From<&'static [u8]> for Reply {
    fn from(b: &'static [u8]) -> Reply {
        Reply::Bytes(Bytes::from_static(b))
    }
}
impl From<String> for Reply {
    fn from(s: String) -> Reply {
        Reply::Text(s)
    }
}
impl From<&str> for Reply {
    fn from(s: &str) -> Reply {
        Reply::Text(s.to_owned())
    }
}
impl From<(u64, Bytes)> for Reply {
    fn from((f, b): (u64, Bytes)) -> Reply {
        Reply::Both(f, b)
    }
}
impl From<(u64, Vec<u8>)> for Reply {
    fn from((f, b): (u64, Vec<u8>)) -> Reply {
        Reply::Both(f, b.into())
    }
}

/// What the shell must act on.
#[derive(Debug, Clone)]
pub enum Event {
    /// Run the handler; answer with [`PacketCore::handle_reply`].
    Request(IncomingRequest),
    /// A request of ours has its answer (or never will).
    Response {
        /// Which.
        id: RequestId,
        /// The answer; an error if the connection ended first, or if the
        /// peer does not serve the request's channel.
        result: Result<Response, PacketError>,
    },
    /// The peer sent ERQ: it sends no more requests.
    PeerEndedRequests,
    /// Nothing more will be received: the peer sent EOF (`eof: true`), or
    /// the stream ended or broke.
    ReceiveEnded {
        /// Whether it was an EOF marker.
        eof: bool,
    },
}

/// The protocol state of one packet connection (see the module docs).
#[derive(Debug)]
pub struct PacketCore {
    config: CoreConfig,
    /// The next tag of each channel we have sent on.
    next_tag: HashMap<u64, u64>,
    /// Our requests waiting for an answer.
    pending: HashSet<RequestId>,
    /// The peer's requests being served (a tag in here is "in use").
    serving: HashSet<RequestId>,
    /// Packets to write, in order.
    transmit: VecDeque<Packet>,
    /// Things for the shell.
    events: VecDeque<Event>,
    /// We queued ERQ: no more requests of ours.
    erq_sent: bool,
    /// We queued EOF: nothing more of ours goes out.
    eof_sent: bool,
    /// The peer sent ERQ.
    peer_erq: bool,
    /// The receive side is done (EOF, end of stream, or broken).
    recv_done: bool,
}

impl PacketCore {
    /// A fresh connection's state.
    pub fn new(config: CoreConfig) -> PacketCore {
        PacketCore {
            config,
            next_tag: HashMap::default(),
            pending: HashSet::default(),
            serving: HashSet::default(),
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            erq_sent: false,
            eof_sent: false,
            peer_erq: false,
            recv_done: false,
        }
    }

    // ------------------------------------------------------------ getters

    /// The configuration.
    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    /// Our requests still waiting for an answer.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The peer's requests being served now.
    pub fn serving(&self) -> usize {
        self.serving.len()
    }

    /// Whether the shell should stop reading until a handler finishes
    /// (as many requests are being served as allowed).
    pub fn read_paused(&self) -> bool {
        self.serving.len() >= self.config.max_serving.max(1)
    }

    /// Whether nothing more will be received.
    pub fn recv_done(&self) -> bool {
        self.recv_done
    }

    /// Whether EOF has been queued (nothing more will be sent after it).
    pub fn eof_sent(&self) -> bool {
        self.eof_sent
    }

    /// Whether ERQ has been queued (no more requests of ours).
    pub fn erq_sent(&self) -> bool {
        self.erq_sent
    }

    /// Whether the peer sent ERQ.
    pub fn peer_ended_requests(&self) -> bool {
        self.peer_erq
    }

    // ----------------------------------------------------------- commands

    /// Queues a request; its answer comes as an [`Event::Response`] with the
    /// returned id. Fails if this end has ended its requests, the
    /// connection is closed, the flags do not fit or the packet is over the
    /// limit.
    pub fn submit(
        &mut self,
        rq_type: u64,
        flags: u64,
        payload: Bytes,
        channel: u64,
    ) -> Result<RequestId, PacketError> {
        if self.eof_sent || self.recv_done {
            return Err(PacketError::Closed {
                reason: if self.eof_sent {
                    "this end sent EOF".into()
                } else {
                    "the peer ended it".into()
                },
            });
        }
        if self.erq_sent {
            return Err(PacketError::RequestsEnded);
        }
        if flags > MAX_REQUEST_FLAGS {
            return Err(PacketError::FlagsTooLarge {
                flags,
                max: MAX_REQUEST_FLAGS,
            });
        }
        let first = if channel == 0 { FIRST_TAG_CHANNEL_0 } else { 0 };
        let next = self.next_tag.entry(channel).or_insert(first);
        let tag = *next;
        let packet = Packet::request(channel, tag, rq_type, flags, payload);
        let size = packet.encoded_len();
        if size > self.config.max_packet_size {
            return Err(PacketError::TooLarge {
                size,
                max: self.config.max_packet_size,
            });
        }
        *next = tag
            .checked_add(1)
            .ok_or(PacketError::TagsExhausted { channel })?;
        let id = RequestId { channel, tag };
        self.pending.insert(id);
        self.transmit.push_back(packet);
        Ok(id)
    }

    /// Forgets a request whose packet was never sent (the submitting future
    /// was dropped before the packet reached the writer).
    pub fn abandon(&mut self, id: RequestId) {
        self.pending.remove(&id);
    }

    /// Queues ERQ ("end of requests") once: the peer answers later requests
    /// of ours `requests no longer allowed`, so [`submit`](Self::submit)
    /// refuses them here already.
    pub fn end_requests(&mut self) {
        if !self.erq_sent && !self.eof_sent {
            self.erq_sent = true;
            self.transmit.push_back(Packet::erq());
        }
    }

    /// Queues EOF once; nothing is sent after it (answers finished later are
    /// dropped). Implies [`end_requests`](Self::end_requests) for this end.
    pub fn send_eof(&mut self) {
        if !self.eof_sent {
            self.erq_sent = true;
            self.eof_sent = true;
            self.transmit.push_back(Packet::eof());
        }
    }

    // ------------------------------------------------------------- inputs

    /// A frame from the peer. A malformed one is an error: the shell closes
    /// the connection (and calls [`handle_end`](Self::handle_end)).
    pub fn handle_frame(&mut self, frame: &Bytes) -> Result<(), PacketError> {
        let packet = Packet::decode(frame)?;
        self.handle_packet(packet);
        Ok(())
    }

    /// A decoded packet from the peer.
    pub fn handle_packet(&mut self, packet: Packet) {
        if self.recv_done {
            tracing::debug!(?packet, "packet after the end of the receive side; dropped");
            return;
        }
        let id = RequestId {
            channel: packet.channel,
            tag: packet.tag,
        };
        match packet.kind {
            Kind::Request {
                wire_rq_type: 0, ..
            } => {
                if id.channel == 0 && id.tag == super::packet::ERQ_TAG {
                    self.peer_erq = true;
                    self.events.push_back(Event::PeerEndedRequests);
                } else {
                    if id.channel != 0 || id.tag != super::packet::EOF_TAG {
                        tracing::warn!(
                            channel = id.channel,
                            tag = id.tag,
                            "request with wire rq_type 0 that is neither EOF nor ERQ: taken as EOF, as cs.packetstream does"
                        );
                    }
                    self.end_receive(true, "it sent EOF");
                }
            }
            Kind::Request {
                wire_rq_type,
                flags,
            } => self.handle_request(id, wire_rq_type - 1, flags, packet.payload),
            Kind::Response { ok, flags } => {
                if !self.pending.remove(&id) {
                    tracing::warn!(
                        channel = id.channel,
                        tag = id.tag,
                        "response to no request of ours; dropped"
                    );
                    return;
                }
                let result = if !ok && id.channel != 0 && packet.payload == UNKNOWN_CHANNEL {
                    Err(PacketError::UnknownChannel {
                        channel: id.channel,
                    })
                } else {
                    Ok(Response {
                        ok,
                        flags,
                        payload: packet.payload,
                    })
                };
                self.events.push_back(Event::Response { id, result });
            }
        }
    }

    fn handle_request(&mut self, id: RequestId, rq_type: u64, flags: u64, payload: Bytes) {
        let refuse = if self.peer_erq {
            Some(REQUESTS_NO_LONGER_ALLOWED.to_owned())
        } else if self.eof_sent {
            Some(REJECTING_CANCELLED.to_owned())
        } else if !self.config.serves_requests {
            Some(NO_REQUEST_HANDLER.to_owned())
        } else if self.serving.contains(&id) {
            Some(format!(
                "channel {}: tag already in use: {}",
                id.channel, id.tag
            ))
        } else {
            None
        };
        if let Some(text) = refuse {
            self.respond(Packet::response(
                id.channel,
                id.tag,
                false,
                0,
                Bytes::from(text),
            ));
            return;
        }
        self.serving.insert(id);
        self.events.push_back(Event::Request(IncomingRequest {
            id,
            rq_type,
            flags,
            payload,
        }));
    }

    /// A handler has finished the request `id`: `Ok` with its return value,
    /// `Err` if it failed (answered `exception during handler`; the reason
    /// is logged, never sent).
    pub fn handle_reply(&mut self, id: RequestId, reply: Result<Reply, String>) {
        if !self.serving.remove(&id) {
            tracing::warn!(?id, "a reply for a request not being served; dropped");
            return;
        }
        let packet = match reply {
            Ok(reply) => {
                let (flags, payload) = reply.into_parts();
                let packet = Packet::response(id.channel, id.tag, true, flags, payload);
                if flags > MAX_RESPONSE_FLAGS {
                    tracing::warn!(
                        ?id,
                        flags,
                        max = MAX_RESPONSE_FLAGS,
                        "response flags do not fit the flagword; answered not ok"
                    );
                    None
                } else if packet.encoded_len() > self.config.max_packet_size {
                    tracing::warn!(
                        ?id,
                        size = packet.encoded_len(),
                        max = self.config.max_packet_size,
                        "response over the packet limit; answered not ok"
                    );
                    None
                } else {
                    Some(packet)
                }
            }
            Err(reason) => {
                tracing::info!(?id, %reason, "request handler failed");
                None
            }
        };
        let packet = packet.unwrap_or_else(|| {
            Packet::response(
                id.channel,
                id.tag,
                false,
                0,
                Bytes::from_static(EXCEPTION_DURING_HANDLER.as_bytes()),
            )
        });
        self.respond(packet);
    }

    fn respond(&mut self, packet: Packet) {
        if self.eof_sent {
            tracing::debug!(?packet, "answer after this end's EOF; dropped");
            return;
        }
        self.transmit.push_back(packet);
    }

    /// The stream ended without EOF (`reason` says how: closed, broken,
    /// malformed): the same as EOF for the receive side, as in the seed.
    pub fn handle_end(&mut self, reason: &str) {
        self.end_receive(false, reason);
    }

    fn end_receive(&mut self, eof: bool, reason: &str) {
        if self.recv_done {
            return;
        }
        self.recv_done = true;
        let mut ids: Vec<RequestId> = self.pending.drain().collect();
        ids.sort();
        for id in ids {
            self.events.push_back(Event::Response {
                id,
                result: Err(PacketError::Unanswered {
                    channel: id.channel,
                    tag: id.tag,
                    reason: reason.to_owned(),
                }),
            });
        }
        self.events.push_back(Event::ReceiveEnded { eof });
    }

    // ------------------------------------------------------------ outputs

    /// The next packet to write.
    pub fn poll_transmit(&mut self) -> Option<Packet> {
        self.transmit.pop_front()
    }

    /// Puts back a packet taken with [`poll_transmit`](Self::poll_transmit)
    /// that could not be handed to the writer, to go out first next time.
    pub fn unpoll_transmit(&mut self, packet: Packet) {
        self.transmit.push_front(packet);
    }

    /// The next thing for the shell to act on.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(core: &mut PacketCore) -> Vec<Packet> {
        std::iter::from_fn(|| core.poll_transmit()).collect()
    }

    fn events(core: &mut PacketCore) -> Vec<Event> {
        std::iter::from_fn(|| core.poll_event()).collect()
    }

    /// Moves every queued packet from `a` to `b`.
    fn deliver(a: &mut PacketCore, b: &mut PacketCore) -> usize {
        let packets = drain(a);
        let n = packets.len();
        for p in packets {
            b.handle_frame(&p.encode()).unwrap();
        }
        n
    }

    #[test]
    fn tags_are_numbered_per_channel_as_the_library_does() {
        let mut c = PacketCore::new(CoreConfig::default());
        let ids: Vec<RequestId> = [0, 0, 1, 0, 1, 7]
            .into_iter()
            .map(|ch| c.submit(1, 0, Bytes::new(), ch).unwrap())
            .collect();
        let tags: Vec<(u64, u64)> = ids.iter().map(|i| (i.channel, i.tag)).collect();
        assert_eq!(tags, [(0, 2), (0, 3), (1, 0), (0, 4), (1, 1), (7, 0)]);
        let wire = drain(&mut c);
        assert_eq!(wire[0].encode()[..3], [0x02, 0x02, 0x02]);
        assert_eq!(c.pending(), 6);
    }

    #[test]
    fn a_request_round_trip_in_any_order_and_every_reply_shape() {
        let mut a = PacketCore::new(CoreConfig::default());
        let mut b = PacketCore::new(CoreConfig::default());
        let ids: Vec<RequestId> = (0..5)
            .map(|i| a.submit(i, 3, Bytes::from(vec![i as u8]), i % 2).unwrap())
            .collect();
        assert_eq!(deliver(&mut a, &mut b), 5);
        let served: Vec<IncomingRequest> = events(&mut b)
            .into_iter()
            .map(|e| match e {
                Event::Request(r) => r,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(served.len(), 5);
        assert_eq!(served[1].rq_type, 1);
        assert_eq!(served[1].flags, 3);
        assert_eq!(b.serving(), 5);
        // Answer in reverse, one of each shape.
        let replies = [
            Ok(Reply::Nothing),
            Ok(Reply::Flags(9)),
            Ok(Reply::Bytes(Bytes::from_static(b"b"))),
            Ok(Reply::Text("t✓".into())),
            Err("boom".to_owned()),
        ];
        for (r, reply) in served.iter().zip(replies).rev() {
            b.handle_reply(r.id, reply);
        }
        deliver(&mut b, &mut a);
        let mut got: Vec<(RequestId, Response)> = events(&mut a)
            .into_iter()
            .map(|e| match e {
                Event::Response { id, result } => (id, result.unwrap()),
                other => panic!("{other:?}"),
            })
            .collect();
        got.sort_by_key(|(id, _)| *id);
        let mut want = vec![
            (
                ids[0],
                Response {
                    ok: true,
                    flags: 0,
                    payload: Bytes::new(),
                },
            ),
            (
                ids[1],
                Response {
                    ok: true,
                    flags: 9,
                    payload: Bytes::new(),
                },
            ),
            (
                ids[2],
                Response {
                    ok: true,
                    flags: 0,
                    payload: Bytes::from_static(b"b"),
                },
            ),
            (
                ids[3],
                Response {
                    ok: true,
                    flags: 0,
                    payload: Bytes::from("t✓"),
                },
            ),
            (
                ids[4],
                Response {
                    ok: false,
                    flags: 0,
                    payload: Bytes::from_static(b"exception during handler"),
                },
            ),
        ];
        want.sort_by_key(|(id, _)| *id);
        assert_eq!(got, want);
        assert_eq!(a.pending(), 0);
        assert_eq!(b.serving(), 0);
    }

    #[test]
    fn the_library_refusals() {
        let mut b = PacketCore::new(CoreConfig::default());
        // A tag still in use.
        b.handle_packet(Packet::request(0, 2, 1, 0, Bytes::new()));
        b.handle_packet(Packet::request(0, 2, 1, 0, Bytes::new()));
        let out = drain(&mut b);
        assert_eq!(
            out,
            [Packet::response(
                0,
                2,
                false,
                0,
                Bytes::from("channel 0: tag already in use: 2")
            )]
        );
        // After ERQ.
        b.handle_packet(Packet::erq());
        b.handle_packet(Packet::request(3, 0, 1, 0, Bytes::new()));
        assert_eq!(
            drain(&mut b),
            [Packet::response(
                3,
                0,
                false,
                0,
                Bytes::from("requests no longer allowed")
            )]
        );
        assert!(b.peer_ended_requests());
        // Still answers what it serves.
        b.handle_reply(RequestId { channel: 0, tag: 2 }, Ok(Reply::from("x")));
        assert_eq!(
            drain(&mut b),
            [Packet::response(0, 2, true, 0, Bytes::from("x"))]
        );
        // No handler.
        let mut n = PacketCore::new(CoreConfig {
            serves_requests: false,
            ..CoreConfig::default()
        });
        n.handle_packet(Packet::request(0, 2, 1, 0, Bytes::new()));
        assert_eq!(
            drain(&mut n),
            [Packet::response(
                0,
                2,
                false,
                0,
                Bytes::from("no request handler")
            )]
        );
    }

    #[test]
    fn unknown_channel_from_a_20240630_peer_is_a_clear_error() {
        let mut a = PacketCore::new(CoreConfig::default());
        let id = a.submit(1, 0, Bytes::new(), 1).unwrap();
        a.handle_frame(&Bytes::from_static(&[
            0x00, 0x01, 0x01, b'u', b'n', b'k', b'n', b'o', b'w', b'n', b' ', b'c', b'h', b'a',
            b'n', b'n', b'e', b'l', b' ', b'%', b'd',
        ]))
        .unwrap();
        match events(&mut a).as_slice() {
            [Event::Response {
                id: got,
                result: Err(e),
            }] => {
                assert_eq!(*got, id);
                assert!(matches!(e, PacketError::UnknownChannel { channel: 1 }));
                assert!(e.to_string().contains("does not serve channel 1"), "{e}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn erq_then_eof_and_what_they_stop() {
        let mut a = PacketCore::new(CoreConfig::default());
        a.end_requests();
        a.end_requests();
        assert!(matches!(
            a.submit(1, 0, Bytes::new(), 0),
            Err(PacketError::RequestsEnded)
        ));
        a.send_eof();
        assert_eq!(drain(&mut a), [Packet::erq(), Packet::eof()]);
        assert!(matches!(
            a.submit(1, 0, Bytes::new(), 0),
            Err(PacketError::Closed { .. })
        ));
        // A request after our EOF cannot be answered: it is refused, and the
        // refusal itself is not sent (nothing goes out after EOF).
        a.handle_packet(Packet::request(0, 2, 1, 0, Bytes::new()));
        assert!(drain(&mut a).is_empty());
        assert!(events(&mut a).is_empty());
    }

    #[test]
    fn eof_or_end_of_stream_fails_what_is_outstanding() {
        for (eof, how) in [(true, "it sent EOF"), (false, "closed without EOF")] {
            let mut a = PacketCore::new(CoreConfig::default());
            let id = a.submit(1, 0, Bytes::new(), 0).unwrap();
            if eof {
                a.handle_frame(&Packet::eof().encode()).unwrap();
            } else {
                a.handle_end(how);
            }
            let ev = events(&mut a);
            match &ev[..] {
                [Event::Response {
                    id: got,
                    result: Err(PacketError::Unanswered { reason, .. }),
                }, Event::ReceiveEnded { eof: e }] => {
                    assert_eq!(*got, id);
                    assert_eq!(reason, how);
                    assert_eq!(*e, eof);
                }
                other => panic!("{other:?}"),
            }
            assert!(a.recv_done());
            assert_eq!(a.pending(), 0);
        }
    }

    #[test]
    fn a_malformed_end_marker_ends_the_receive_side() {
        let mut a = PacketCore::new(CoreConfig::default());
        a.handle_packet(Packet {
            tag: 9,
            ..Packet::eof()
        });
        assert!(a.recv_done());
    }

    #[test]
    fn reading_pauses_at_the_serving_limit() {
        let mut b = PacketCore::new(CoreConfig {
            max_serving: 2,
            ..CoreConfig::default()
        });
        b.handle_packet(Packet::request(0, 2, 1, 0, Bytes::new()));
        assert!(!b.read_paused());
        b.handle_packet(Packet::request(0, 3, 1, 0, Bytes::new()));
        assert!(b.read_paused());
        b.handle_reply(RequestId { channel: 0, tag: 2 }, Ok(Reply::Nothing));
        assert!(!b.read_paused());
    }

    #[test]
    fn limits_are_checked_before_anything_is_queued() {
        let mut a = PacketCore::new(CoreConfig {
            max_packet_size: 10,
            ..CoreConfig::default()
        });
        let e = a.submit(1, 0, Bytes::from(vec![0; 8]), 0).unwrap_err();
        assert!(
            matches!(e, PacketError::TooLarge { size: 11, max: 10 }),
            "{e:?}"
        );
        let e = a.submit(1, u64::MAX, Bytes::new(), 0).unwrap_err();
        assert!(matches!(e, PacketError::FlagsTooLarge { .. }));
        assert!(drain(&mut a).is_empty());
        // The failed submit did not use up a tag.
        assert_eq!(a.submit(1, 0, Bytes::new(), 0).unwrap().tag, 2);
        // An oversized answer goes out as a not-ok one.
        a.handle_packet(Packet::request(0, 2, 1, 0, Bytes::new()));
        let _ = events(&mut a);
        let _ = drain(&mut a);
        a.handle_reply(
            RequestId { channel: 0, tag: 2 },
            Ok(Reply::Bytes(Bytes::from(vec![1; 50]))),
        );
        assert_eq!(
            drain(&mut a),
            [Packet::response(
                0,
                2,
                false,
                0,
                Bytes::from("exception during handler")
            )]
        );
    }

    #[test]
    fn unknown_responses_are_dropped() {
        let mut a = PacketCore::new(CoreConfig::default());
        a.handle_packet(Packet::response(0, 77, true, 0, Bytes::new()));
        assert!(events(&mut a).is_empty());
        assert!(!a.recv_done());
    }
}
