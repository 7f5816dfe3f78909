//! A connection between two endpoints, and the frames that cross it.
//!
//! A backend hands over a [`Connection`]: either a reliable byte stream (TCP,
//! UNIX, TLS, an HTTP upgrade, a QUIC stream) or a message-oriented channel
//! (the in-memory transport, WebSocket) that already delimits frames. The
//! framing belongs to the protocol, not to the backend: a protocol picks a
//! [`Framing`] value and [`Connection::into_frames_with`] cuts a byte stream
//! into frames with it (the u32 length prefix of ReasonChip and plexwire, or
//! cs.packetstream's BSUInt prefix), while on a message channel every message
//! is one frame whatever the framing, under the same size limit.
//! [`Connection::into_io`] gives the raw halves to a pattern that wants them.
//!
//! A message channel may tell text from binary messages (WebSocket does):
//! the sender says which its frames are with [`FrameSender::set_message_kind`]
//! (a JSON protocol sends text); byte streams ignore it.
//!
//! Frames are [`Bytes`]. The two halves live in different tasks: the reader
//! never waits on the writer.
//!
//! # Lanes
//!
//! A backend with independent ordered channels (QUIC streams) may hand over
//! [`Io::Lanes`]: besides its main channel, a sender can put a frame on a
//! [`Lane`], and frames on different lanes never wait for one another (no
//! head-of-line blocking). Frames with the same lane key keep their order; a
//! lane is opened by its first frame and ends with a frame marked
//! [`Lane::last`], or from the reading side through [`LaneEnds`] when the
//! answer that completes the exchange arrives. The receiver sees every lane's
//! frames merged into one stream. On every other backend
//! [`FrameSender::feed_on`] is [`SinkExt::feed`]: one ordered channel.
//!
//! # Unfinished frames
//!
//! On a byte stream the receiver buffers the bytes of a frame until it is
//! whole: a peer that announces a large frame and stops short holds that
//! memory. [`FrameReceiver::unfinished_bytes`] says how much a connection holds (so
//! its owner can time it out), and a [`PartialBudget`] shared by many
//! receivers bounds what all of them hold together: the receiver whose bytes
//! would pass it ends with [`TransportError::PartialBudget`]. (A message
//! channel buffers partial messages inside its backend, under that
//! backend's own message limit; its `unfinished_bytes` is 0.)

use std::fmt;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use bytes::BytesMut;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::{Decoder, Encoder, FramedRead, FramedWrite};

use crate::{BsuintCodec, FrameCodec, TransportError};

/// The read half of a byte-stream connection.
pub type BoxRead = Pin<Box<dyn AsyncRead + Send>>;
/// The write half of a byte-stream connection.
pub type BoxWrite = Pin<Box<dyn AsyncWrite + Send>>;
/// Incoming frames of a message-oriented connection.
pub type BoxFrameStream = Pin<Box<dyn Stream<Item = Result<Bytes, TransportError>> + Send>>;
/// Outgoing frames of a message-oriented connection.
pub type BoxFrameSink = Pin<Box<dyn Sink<Bytes, Error = TransportError> + Send>>;
/// Outgoing messages of a message-oriented connection that tells text from binary.
pub type BoxMessageSink = Pin<Box<dyn Sink<Message, Error = TransportError> + Send>>;

/// How frames are cut out of a byte stream (see the module docs). On a
/// message channel each message is one frame, whichever framing is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Framing {
    /// A u32 big-endian length, then the frame: ReasonChip's and plexwire's
    /// broker protocol ([`FrameCodec`]).
    #[default]
    U32Prefix,
    /// A BSUInt (big-endian base-128) length, then the frame: cs.packetstream
    /// ([`BsuintCodec`]).
    Bsuint,
}

/// What a message on a message channel is, where the channel tells
/// (WebSocket's text and binary messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MessageKind {
    /// Bytes.
    #[default]
    Binary,
    /// UTF-8 text (a JSON protocol's frames).
    Text,
}

/// One message of a message channel: a frame and what kind of message carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The frame.
    pub data: Bytes,
    /// Text or binary, as the sender said.
    pub kind: MessageKind,
}

/// Who is on the other end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The backend (`"tcp"`, `"unix"`, `"mem"`, …).
    pub transport: &'static str,
    /// The peer's address as the backend sees it (`127.0.0.1:50412`, a socket path, `mem#3`).
    pub remote: String,
}

impl fmt::Display for PeerInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.transport, self.remote)
    }
}

/// Where a frame goes on a connection with lanes (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lane {
    /// Frames with the same key keep their order; different keys are independent.
    pub key: u128,
    /// This is the last frame this side sends on the lane; the lane ends after it.
    pub last: bool,
}

/// A backend's sending half with lanes: a main channel for frames without a
/// lane, and lanes opened on first use. The methods follow [`Sink`]'s
/// contract (`poll_ready` before each `start_send`).
pub trait LaneSink: Send {
    /// Ready to take one more frame.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>>;
    /// Queues `frame` on `lane`, or on the main channel if `lane` is `None`.
    fn start_send(&mut self, lane: Option<Lane>, frame: Bytes) -> Result<(), TransportError>;
    /// Sends what is queued on the main channel.
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>>;
    /// Ends every lane, then the main channel; the peer then sees end of stream.
    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>>;
    /// A handle that ends lanes from elsewhere (the reading side).
    fn ends(&self) -> LaneEnds;
}

/// Ends a sender's lanes from outside it: the reading side calls
/// [`LaneEnds::end`] when the answer that completes a lane's exchange has
/// arrived, so the lane's resources go at once.
#[derive(Clone)]
pub struct LaneEnds(Arc<dyn Fn(u128) + Send + Sync>);

impl LaneEnds {
    /// A handle that calls `end` with the key of each lane to end.
    pub fn new(end: impl Fn(u128) + Send + Sync + 'static) -> LaneEnds {
        LaneEnds(Arc::new(end))
    }

    /// Ends the lane `key` if it is open: frames already queued on it are
    /// still sent. A later frame with this key opens a new lane.
    pub fn end(&self, key: u128) {
        (self.0)(key)
    }
}

impl fmt::Debug for LaneEnds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LaneEnds")
    }
}

/// The two halves a backend produces.
pub enum Io {
    /// A reliable, ordered byte stream; framing is added on top.
    Stream {
        /// Bytes from the peer.
        reader: BoxRead,
        /// Bytes to the peer.
        writer: BoxWrite,
    },
    /// A channel whose messages are already frames.
    Messages {
        /// Frames from the peer.
        stream: BoxFrameStream,
        /// Frames to the peer, each with its kind (text or binary).
        sink: BoxMessageSink,
    },
    /// A main channel plus independent lanes (see the module docs); framing
    /// and the size limit are the backend's.
    Lanes {
        /// Frames from the peer, every lane merged.
        stream: BoxFrameStream,
        /// Frames to the peer.
        sink: Box<dyn LaneSink>,
    },
}

impl fmt::Debug for Io {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Io::Stream { .. } => "Io::Stream",
            Io::Messages { .. } => "Io::Messages",
            Io::Lanes { .. } => "Io::Lanes",
        })
    }
}

/// An established connection, not yet framed.
#[derive(Debug)]
pub struct Connection {
    io: Io,
    peer: PeerInfo,
    max_frame_size: usize,
}

impl Connection {
    /// Wraps a byte stream's halves.
    pub fn from_stream(
        reader: impl AsyncRead + Send + 'static,
        writer: impl AsyncWrite + Send + 'static,
        peer: PeerInfo,
        max_frame_size: usize,
    ) -> Connection {
        Connection {
            io: Io::Stream {
                reader: Box::pin(reader),
                writer: Box::pin(writer),
            },
            peer,
            max_frame_size,
        }
    }

    /// Wraps a message channel whose messages are frames (and that does not
    /// tell text from binary; see [`Connection::from_typed_messages`]).
    pub fn from_messages(
        stream: impl Stream<Item = Result<Bytes, TransportError>> + Send + 'static,
        sink: impl Sink<Bytes, Error = TransportError> + Send + 'static,
        peer: PeerInfo,
        max_frame_size: usize,
    ) -> Connection {
        let sink = sink.with(|m: Message| std::future::ready(Ok::<_, TransportError>(m.data)));
        Connection::from_typed_messages(stream, sink, peer, max_frame_size)
    }

    /// Wraps a message channel whose messages are frames and that sends each
    /// as text or binary, as the sender says ([`FrameSender::set_message_kind`]).
    pub fn from_typed_messages(
        stream: impl Stream<Item = Result<Bytes, TransportError>> + Send + 'static,
        sink: impl Sink<Message, Error = TransportError> + Send + 'static,
        peer: PeerInfo,
        max_frame_size: usize,
    ) -> Connection {
        Connection {
            io: Io::Messages {
                stream: Box::pin(stream),
                sink: Box::pin(sink),
            },
            peer,
            max_frame_size,
        }
    }

    /// Wraps a backend's lanes (see the module docs).
    pub fn from_lanes(
        stream: impl Stream<Item = Result<Bytes, TransportError>> + Send + 'static,
        sink: impl LaneSink + 'static,
        peer: PeerInfo,
        max_frame_size: usize,
    ) -> Connection {
        Connection {
            io: Io::Lanes {
                stream: Box::pin(stream),
                sink: Box::new(sink),
            },
            peer,
            max_frame_size,
        }
    }

    /// Who is on the other end.
    pub fn peer(&self) -> &PeerInfo {
        &self.peer
    }

    /// The largest frame this connection accepts (from its endpoint).
    pub fn max_frame_size(&self) -> usize {
        self.max_frame_size
    }

    /// Overrides the largest frame this connection accepts.
    pub fn set_max_frame_size(&mut self, max: usize) {
        self.max_frame_size = max;
    }

    /// The raw halves, for a pattern with its own framing.
    pub fn into_io(self) -> (Io, PeerInfo) {
        (self.io, self.peer)
    }

    /// Splits into a frame sender and a frame receiver, adding the u32
    /// length-prefix framing to a byte stream: [`Framing::U32Prefix`].
    pub fn into_frames(self) -> (FrameSender, FrameReceiver) {
        self.into_frames_with(Framing::U32Prefix)
    }

    /// Splits into a frame sender and a frame receiver, cutting a byte
    /// stream into frames with `framing`. Messages of a message channel, and
    /// lanes, are frames already; `framing` does not change them.
    pub fn into_frames_with(self, framing: Framing) -> (FrameSender, FrameReceiver) {
        let max = self.max_frame_size;
        match self.io {
            Io::Stream { reader, writer } => (
                FrameSender {
                    inner: SendInner::Framed(framed_write(writer, StreamCodec::new(framing, max))),
                    max,
                    kind: MessageKind::Binary,
                },
                FrameReceiver {
                    inner: RecvInner::Framed(FramedRead::new(
                        reader,
                        StreamCodec::new(framing, max),
                    )),
                    max,
                    done: false,
                    budget: None,
                },
            ),
            Io::Messages { stream, sink } => (
                FrameSender {
                    inner: SendInner::Messages(sink),
                    max,
                    kind: MessageKind::Binary,
                },
                FrameReceiver {
                    inner: RecvInner::Messages(stream),
                    max,
                    done: false,
                    budget: None,
                },
            ),
            Io::Lanes { stream, sink } => (
                FrameSender {
                    inner: SendInner::Lanes(sink),
                    max,
                    kind: MessageKind::Binary,
                },
                FrameReceiver {
                    inner: RecvInner::Messages(stream),
                    max,
                    done: false,
                    budget: None,
                },
            ),
        }
    }
}

/// A framed writer whose buffer starts empty: an idle connection holds no
/// write buffer, and a busy one grows it to its working size on first use
/// (and keeps it), where tokio-util would reserve 8 KiB up front.
fn framed_write(writer: BoxWrite, codec: StreamCodec) -> FramedWrite<BoxWrite, StreamCodec> {
    let mut w = FramedWrite::new(writer, codec);
    *w.write_buffer_mut() = BytesMut::new();
    w
}

/// A [`Framing`]'s codec: an enum rather than a trait object, so the hot
/// path is a match, not an indirect call.
#[derive(Debug)]
enum StreamCodec {
    U32(FrameCodec),
    Bsuint(BsuintCodec),
}

impl StreamCodec {
    fn new(framing: Framing, max: usize) -> StreamCodec {
        match framing {
            Framing::U32Prefix => StreamCodec::U32(FrameCodec::new(max)),
            Framing::Bsuint => StreamCodec::Bsuint(BsuintCodec::new(max)),
        }
    }
}

impl Decoder for StreamCodec {
    type Item = BytesMut;
    type Error = TransportError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, TransportError> {
        match self {
            StreamCodec::U32(c) => c.decode(src),
            StreamCodec::Bsuint(c) => c.decode(src),
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, TransportError> {
        match self {
            StreamCodec::U32(c) => c.decode_eof(src),
            StreamCodec::Bsuint(c) => c.decode_eof(src),
        }
    }
}

impl Encoder<Bytes> for StreamCodec {
    type Error = TransportError;

    fn encode(&mut self, frame: Bytes, dst: &mut BytesMut) -> Result<(), TransportError> {
        match self {
            StreamCodec::U32(c) => c.encode(frame, dst),
            StreamCodec::Bsuint(c) => c.encode(frame, dst),
        }
    }
}

/// A frame over the connection's limit is a typed error, in either direction.
fn check_size(frame: &Bytes, max: usize) -> Result<(), TransportError> {
    if frame.len() > max {
        return Err(TransportError::FrameTooLarge {
            size: frame.len(),
            max,
        });
    }
    Ok(())
}

enum SendInner {
    Framed(FramedWrite<BoxWrite, StreamCodec>),
    Messages(BoxMessageSink),
    Lanes(Box<dyn LaneSink>),
}

/// The sending half of a framed connection: a [`Sink`] of frames.
///
/// `feed` several frames and `flush` once to send them in as few writes as
/// the backend allows.
pub struct FrameSender {
    inner: SendInner,
    max: usize,
    /// What a message channel's messages are; byte streams and lanes ignore it.
    kind: MessageKind,
}

impl fmt::Debug for FrameSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameSender")
            .field("max_frame_size", &self.max)
            .finish()
    }
}

impl FrameSender {
    /// Sends one frame and flushes it.
    ///
    /// Not cancel safe: if the future is dropped the frame may have been
    /// partly written, and the connection must then be dropped too.
    pub async fn send_frame(&mut self, frame: Bytes) -> Result<(), TransportError> {
        self.send(frame).await
    }

    /// The largest frame this sender accepts.
    pub fn max_frame_size(&self) -> usize {
        self.max
    }

    /// Says what this side's frames are, for a message channel that tells
    /// text from binary (WebSocket): a JSON protocol sends
    /// [`MessageKind::Text`]. Byte streams and lanes ignore it.
    pub fn set_message_kind(&mut self, kind: MessageKind) {
        self.kind = kind;
    }

    /// Whether frames go out as messages of a message channel (rather than
    /// onto a byte stream or lanes).
    pub fn is_message_channel(&self) -> bool {
        matches!(self.inner, SendInner::Messages(_))
    }

    /// Queues `frame` on `lane` (see the module docs), without flushing. On
    /// a backend without lanes, or with `lane` `None`, this is
    /// [`SinkExt::feed`]: the frame goes on the one ordered channel.
    pub async fn feed_on(
        &mut self,
        lane: Option<Lane>,
        frame: Bytes,
    ) -> Result<(), TransportError> {
        match &mut self.inner {
            SendInner::Lanes(sink) => {
                check_size(&frame, self.max)?;
                poll_fn(|cx| sink.poll_ready(cx)).await?;
                sink.start_send(lane, frame)
            }
            _ => self.feed(frame).await,
        }
    }

    /// A handle that ends this sender's lanes from the reading side; `None`
    /// on a backend without lanes.
    pub fn lane_ends(&self) -> Option<LaneEnds> {
        match &self.inner {
            SendInner::Lanes(sink) => Some(sink.ends()),
            _ => None,
        }
    }

    /// Flushes and closes the sending direction (the peer sees end of stream).
    pub async fn shutdown(&mut self) -> Result<(), TransportError> {
        self.close().await
    }
}

impl Sink<Bytes> for FrameSender {
    type Error = TransportError;

    fn poll_ready(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), TransportError>> {
        match &mut self.inner {
            SendInner::Framed(f) => Pin::new(f).poll_ready(cx),
            SendInner::Messages(s) => s.as_mut().poll_ready(cx),
            SendInner::Lanes(s) => s.poll_ready(cx),
        }
    }

    fn start_send(mut self: Pin<&mut Self>, frame: Bytes) -> Result<(), TransportError> {
        check_size(&frame, self.max)?;
        let kind = self.kind;
        match &mut self.inner {
            SendInner::Framed(f) => Pin::new(f).start_send(frame),
            SendInner::Messages(s) => s.as_mut().start_send(Message { data: frame, kind }),
            SendInner::Lanes(s) => s.start_send(None, frame),
        }
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), TransportError>> {
        match &mut self.inner {
            SendInner::Framed(f) => Pin::new(f).poll_flush(cx),
            SendInner::Messages(s) => s.as_mut().poll_flush(cx),
            SendInner::Lanes(s) => s.poll_flush(cx),
        }
    }

    fn poll_close(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), TransportError>> {
        match &mut self.inner {
            SendInner::Framed(f) => Pin::new(f).poll_close(cx),
            SendInner::Messages(s) => s.as_mut().poll_close(cx),
            SendInner::Lanes(s) => s.poll_close(cx),
        }
    }
}

enum RecvInner {
    Framed(FramedRead<BoxRead, StreamCodec>),
    Messages(BoxFrameStream),
}

/// A bound on the bytes that many connections' receivers hold in unfinished
/// frames together (see the module docs). Share it with an `Arc`.
#[derive(Debug)]
pub struct PartialBudget {
    limit: usize,
    used: AtomicUsize,
}

impl PartialBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Arc<PartialBudget> {
        Arc::new(PartialBudget {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    /// Bytes held in unfinished frames now, by every receiver on this budget.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// The limit.
    pub fn limit(&self) -> usize {
        self.limit
    }
}

/// A receiver's share of a [`PartialBudget`]: what it has counted in.
#[derive(Debug)]
struct Charge {
    budget: Arc<PartialBudget>,
    held: usize,
}

impl Charge {
    /// Sets this receiver's share to `now` bytes; `Err(used)` if growing to
    /// it passes the budget (the share is then released).
    fn update(&mut self, now: usize) -> Result<(), usize> {
        if now <= self.held {
            self.budget
                .used
                .fetch_sub(self.held - now, Ordering::Relaxed);
            self.held = now;
            return Ok(());
        }
        let grow = now - self.held;
        let before = self.budget.used.fetch_add(grow, Ordering::Relaxed);
        self.held = now;
        if before + grow > self.budget.limit {
            self.release();
            return Err(before + grow);
        }
        Ok(())
    }

    fn release(&mut self) {
        self.budget.used.fetch_sub(self.held, Ordering::Relaxed);
        self.held = 0;
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.release();
    }
}

/// The receiving half of a framed connection: a [`Stream`] of frames that
/// ends (`None`) when the peer closes cleanly. After an error it ends too.
pub struct FrameReceiver {
    inner: RecvInner,
    max: usize,
    done: bool,
    /// The shared bound on unfinished frames, if one was set.
    budget: Option<Charge>,
}

impl fmt::Debug for FrameReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameReceiver")
            .field("max_frame_size", &self.max)
            .finish()
    }
}

impl FrameReceiver {
    /// The next frame; `None` at end of stream.
    ///
    /// Cancel safe: partly received frames stay buffered inside the receiver.
    pub async fn recv_frame(&mut self) -> Option<Result<Bytes, TransportError>> {
        self.next().await
    }

    /// Bytes received but not yet a whole frame (the start of an unfinished
    /// one); always 0 on a message channel.
    pub fn unfinished_bytes(&self) -> usize {
        match &self.inner {
            RecvInner::Framed(f) => f.read_buffer().len(),
            RecvInner::Messages(_) => 0,
        }
    }

    /// Counts this receiver's unfinished frames in `budget`, shared with
    /// other receivers: once the bytes they all hold would pass its limit,
    /// the receiver that grew past it ends with
    /// [`TransportError::PartialBudget`].
    pub fn set_partial_budget(&mut self, budget: Arc<PartialBudget>) {
        let mut charge = Charge { budget, held: 0 };
        // Nothing is over budget for what was buffered before.
        let _ = charge.update(self.unfinished_bytes());
        self.budget = Some(charge);
    }
}

impl Stream for FrameReceiver {
    type Item = Result<Bytes, TransportError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        let max = self.max;
        let item = match &mut self.inner {
            RecvInner::Framed(f) => {
                let polled = Pin::new(f).poll_next(cx);
                if let Err(e) = self.account() {
                    // Over the shared budget: this connection's unfinished
                    // frame is the one that does not fit.
                    self.done = true;
                    self.budget = None;
                    return Poll::Ready(Some(Err(e)));
                }
                ready!(polled).map(|r| r.map(|b| b.freeze()))
            }
            RecvInner::Messages(s) => ready!(s.as_mut().poll_next(cx)).map(|r| {
                r.and_then(|b| {
                    check_size(&b, max)?;
                    Ok(b)
                })
            }),
        };
        if !matches!(item, Some(Ok(_))) {
            self.done = true;
            // An ended receiver holds nothing: its share is released.
            self.budget = None;
        }
        Poll::Ready(item)
    }
}

impl FrameReceiver {
    /// Brings this receiver's share of its budget up to date (on every poll,
    /// so between two wake-ups it is off by at most one read); `Err` once
    /// it would pass the budget.
    fn account(&mut self) -> Result<(), TransportError> {
        let buffered = if self.done {
            0
        } else {
            self.unfinished_bytes()
        };
        let Some(charge) = self.budget.as_mut() else {
            return Ok(());
        };
        charge
            .update(buffered)
            .map_err(|used| TransportError::PartialBudget {
                buffered,
                used,
                limit: charge.budget.limit,
            })
    }
}

#[cfg(test)]
mod partial_budget_tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;

    fn stream_receiver(max: usize) -> (tokio::io::DuplexStream, FrameReceiver) {
        let (ours, theirs) = tokio::io::duplex(1 << 20);
        let (r, w) = tokio::io::split(theirs);
        let peer = PeerInfo {
            transport: "duplex",
            remote: "test".into(),
        };
        let (_, rx) = Connection::from_stream(r, w, peer, max).into_frames();
        (ours, rx)
    }

    /// Two connections each announce a 1000-byte frame and send part of it:
    /// the one whose bytes pass the shared 1000-byte budget ends with
    /// `PartialBudget`, the other goes on, and what a receiver held is
    /// released when its frame completes or it is dropped.
    #[tokio::test(start_paused = true)]
    async fn unfinished_frames_share_one_budget() {
        let budget = PartialBudget::new(1000);
        let (mut a_io, mut a) = stream_receiver(1 << 20);
        let (mut b_io, mut b) = stream_receiver(1 << 20);
        a.set_partial_budget(budget.clone());
        b.set_partial_budget(budget.clone());
        let mut head = 1000u32.to_be_bytes().to_vec();
        head.extend(vec![b'x'; 600]);
        a_io.write_all(&head).await.unwrap();
        let pending = tokio::time::timeout(Duration::from_millis(50), a.recv_frame()).await;
        assert!(pending.is_err(), "a's frame is unfinished");
        assert_eq!(a.unfinished_bytes(), 604);
        assert_eq!(budget.used(), 604);
        b_io.write_all(&head).await.unwrap();
        match b.recv_frame().await {
            Some(Err(TransportError::PartialBudget {
                buffered, limit, ..
            })) => {
                assert_eq!((buffered, limit), (604, 1000));
            }
            other => panic!("expected the budget error, got {other:?}"),
        }
        assert!(b.recv_frame().await.is_none(), "b has ended");
        assert_eq!(budget.used(), 604, "b's share is released, a's kept");
        a_io.write_all(&[b'x'; 400]).await.unwrap();
        assert_eq!(a.recv_frame().await.unwrap().unwrap().len(), 1000);
        assert_eq!(budget.used(), 0, "a whole frame holds no budget");
        a_io.write_all(&head).await.unwrap();
        let _ = tokio::time::timeout(Duration::from_millis(50), a.recv_frame()).await;
        assert_eq!(budget.used(), 604);
        drop(a);
        assert_eq!(budget.used(), 0, "a dropped receiver holds nothing");
    }
}
