//! Each run on its own QUIC stream.
//!
//! The connection's bidirectional stream is the main channel (HELLO,
//! registration, PING, …). A frame sent on a [`Lane`] goes on a
//! unidirectional stream of its own, opened by the lane's first frame: a run's
//! RUN and CANCEL share one stream, its EVENTs and RESULT another, and no two
//! runs share one, so a 10 MiB payload on one run never holds up another
//! run's frames (QUIC delivers each stream in order, independently).
//!
//! # Wire
//!
//! - Main stream: one preamble byte, [`MAIN_WITH_LANES`] (or
//!   [`PREAMBLE`](crate::PREAMBLE) for a peer that sends everything on it),
//!   then length-prefixed frames. A sender with lanes closes with a trailer
//!   before the end of the stream: the length prefix [`TRAILER`] (so the
//!   largest frame is one byte shorter than a u32 allows), then the number
//!   of lanes it opened as a big-endian u64.
//! - Lane stream: one preamble byte, [`LANE`], then length-prefixed frames,
//!   then the end of the stream.
//!
//! The reader merges every lane into one frame stream, taking frames from
//! the main stream and the lanes in turn, and reports the end of stream
//! only once the main stream has ended and every lane the trailer counts has
//! been read to its end (waiting at most [`LINGER`] for
//! stragglers): a frame sent before closing is never lost behind the close.
//!
//! # Bounds
//!
//! A lane whose frame does not fit the stream's flow-control window at once
//! is handed to a task of its own, so the sender never waits on one lane;
//! the bytes waiting in such tasks are bounded by [`LANE_BUDGET`], past
//! which the sender waits as a TCP sender would. When the peer allows no
//! more streams for now, a new lane's frames go on the main stream (still in
//! order: every frame of a lane goes where its first one went). A peer may
//! have at most [`MAX_LANES`] lanes open towards us. On the reading side, the
//! bytes of frames not yet whole, over all lanes of a connection, are
//! bounded by [`RECV_BUDGET`]: past it only one lane (the first to ask) may
//! read on, to finish its frame, so a peer that starts many large frames at
//! once costs at most the budget plus one frame.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::stream::SelectAll;
use futures_util::task::AtomicWaker;
use futures_util::{FutureExt, Sink, Stream};
use plexwire_tls::Side;
use plexwire_transport::{FrameCodec, Lane, LaneEnds, LaneSink, TransportError, HEADER_LEN};
use quinn::{ConnectionError, RecvStream, SendStream};
use tokio::sync::mpsc;
use tokio_util::codec::{Decoder, FramedRead, FramedWrite};
use tokio_util::task::TaskTracker;

use crate::{lost, QuicRecv, QuicSend, LINGER};

/// The main stream's preamble from a sender that uses lanes (and closes with a trailer).
pub const MAIN_WITH_LANES: u8 = 0x02;
/// A lane stream's preamble.
pub const LANE: u8 = 0x03;
/// The length prefix that marks the main stream's trailer.
pub const TRAILER: u32 = u32::MAX;
/// Lanes a peer may have open towards us at once.
pub const MAX_LANES: u32 = 1024;
/// Bytes of unfinished frames a receiver holds over all lanes, beyond
/// which only one lane reads on (see the module docs).
pub const RECV_BUDGET: usize = 32 * 1024 * 1024;
/// Bytes a sender keeps queued for lanes that could not take them at once.
pub const LANE_BUDGET: usize = 32 * 1024 * 1024;

/// The main stream's first byte from a sender with or without lanes.
pub(crate) fn main_preamble(lanes: bool) -> u8 {
    if lanes {
        MAIN_WITH_LANES
    } else {
        crate::PREAMBLE
    }
}

/// A lane of the sender: where its frames go.
enum Slot {
    /// On the main stream (no stream was free when the lane opened).
    Main,
    /// On its own stream, written directly.
    Stream(SendStream),
    /// On its own stream, written by a task (the stream had no room).
    Task(mpsc::UnboundedSender<Cmd>),
}

enum Cmd {
    Frame([u8; HEADER_LEN], Bytes),
    Finish,
}

/// What the sender shares with its [`LaneEnds`] and lane tasks.
struct Shared {
    slots: Mutex<HashMap<u128, Slot>>,
    /// Bytes queued in lane tasks.
    queued: AtomicUsize,
    /// The sender, waiting for `queued` to drop below the budget.
    room: AtomicWaker,
}

impl Shared {
    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<u128, Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn release(&self, n: usize) {
        self.queued.fetch_sub(n, Ordering::AcqRel);
        self.room.wake();
    }

    /// Ends `slot`: a stream is finished (its queued bytes still go), a task
    /// finishes once it has written what it holds.
    fn end(slot: Slot) {
        match slot {
            Slot::Main => {}
            Slot::Stream(mut s) => {
                let _ = s.finish();
            }
            Slot::Task(tx) => {
                let _ = tx.send(Cmd::Finish);
            }
        }
    }
}

/// Where closing the sender is.
enum Closing {
    Open,
    /// Waiting for the lane tasks to write what they hold.
    Draining(Pin<Box<dyn Future<Output = ()> + Send>>),
    /// Trailer queued; closing the main stream.
    Main,
}

/// The sending half: the main stream and the lanes.
pub(crate) struct LaneSender {
    main: FramedWrite<QuicSend, FrameCodec>,
    conn: quinn::Connection,
    shared: Arc<Shared>,
    tasks: TaskTracker,
    opened: u64,
    closing: Closing,
    side: Side,
    /// Whether lanes get streams of their own (`streams=run`), or every frame goes on the main stream.
    lanes: bool,
}

impl LaneSender {
    /// `preamble`: write the main stream's preamble byte first (the
    /// listener's side; the connecting side wrote it while connecting).
    pub(crate) fn new(
        main: QuicSend,
        conn: quinn::Connection,
        side: Side,
        max: usize,
        lanes: bool,
        preamble: bool,
    ) -> Self {
        let mut main = FramedWrite::new(main, FrameCodec::new(max));
        if preamble {
            main.write_buffer_mut().put_u8(main_preamble(lanes));
        }
        LaneSender {
            main,
            conn,
            shared: Arc::new(Shared {
                slots: Mutex::new(HashMap::new()),
                queued: AtomicUsize::new(0),
                room: AtomicWaker::new(),
            }),
            tasks: TaskTracker::new(),
            opened: 0,
            closing: Closing::Open,
            side,
            lanes,
        }
    }

    fn write_error(&self, e: quinn::WriteError) -> TransportError {
        TransportError::Io(match e {
            quinn::WriteError::ConnectionLost(c) => lost(&c, self.side),
            other => io::Error::new(io::ErrorKind::BrokenPipe, other),
        })
    }

    /// Opens a stream for a new lane now, if the peer allows one.
    fn open(&mut self) -> Result<Option<SendStream>, TransportError> {
        match self.conn.open_uni().now_or_never() {
            None => Ok(None),
            Some(Ok(s)) => {
                self.opened += 1;
                Ok(Some(s))
            }
            Some(Err(e)) => Err(TransportError::Io(lost(&e, self.side))),
        }
    }

    /// Writes `prefix`, then `frame`, as far as `stream` takes them without
    /// waiting (no allocation when it takes them all, the usual case); the
    /// rest goes to a task with the stream.
    fn write_or_hand_off(
        &self,
        mut stream: SendStream,
        prefix: &[u8],
        frame: Bytes,
    ) -> Result<Slot, TransportError> {
        let total = prefix.len() + frame.len();
        let mut done = 0;
        while done < total {
            let part = match prefix.get(done..) {
                Some(p) if !p.is_empty() => p,
                _ => &frame[done - prefix.len()..],
            };
            match stream.write(part).now_or_never() {
                None | Some(Ok(0)) => break,
                Some(Err(e)) => return Err(self.write_error(e)),
                Some(Ok(n)) => done += n,
            }
        }
        if done == total {
            return Ok(Slot::Stream(stream));
        }
        let rest = if done < prefix.len() {
            vec![Bytes::copy_from_slice(&prefix[done..]), frame]
        } else {
            vec![frame.slice(done - prefix.len()..)]
        };
        Ok(Slot::Task(self.spawn(stream, rest)))
    }

    /// Hands `stream` and the bytes it could not take yet to a task.
    fn spawn(&self, mut stream: SendStream, chunks: Vec<Bytes>) -> mpsc::UnboundedSender<Cmd> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Cmd>();
        let shared = self.shared.clone();
        let first: usize = chunks.iter().map(Bytes::len).sum();
        shared.queued.fetch_add(first, Ordering::AcqRel);
        self.tasks.spawn(async move {
            let work = async {
                for chunk in &chunks {
                    stream.write_all(chunk).await?;
                }
                shared.release(first);
                while let Some(cmd) = rx.recv().await {
                    match cmd {
                        Cmd::Frame(header, frame) => {
                            let n = header.len() + frame.len();
                            let r = async {
                                stream.write_all(&header).await?;
                                stream.write_all(&frame).await
                            }
                            .await;
                            shared.release(n);
                            r?;
                        }
                        Cmd::Finish => break,
                    }
                }
                let _ = stream.finish();
                Ok::<_, quinn::WriteError>(())
            };
            if let Err(e) = work.await {
                tracing::debug!(error = %e, "QUIC lane stopped");
                // Nothing more goes out on this lane: give back what it holds.
                rx.close();
                while let Ok(cmd) = rx.try_recv() {
                    if let Cmd::Frame(h, f) = cmd {
                        shared.release(h.len() + f.len());
                    }
                }
            }
        });
        tx
    }

    fn send_on_lane(&mut self, lane: Lane, frame: Bytes) -> Result<(), TransportError> {
        let header = (frame.len() as u32).to_be_bytes();
        // A new lane's stream starts with its preamble byte.
        let mut prefix = [LANE, 0, 0, 0, 0];
        prefix[1..].copy_from_slice(&header);
        let shared = self.shared.clone();
        let mut slots = shared.slots();
        let slot = match slots.remove(&lane.key) {
            Some(slot) => slot,
            None => match self.open()? {
                None => Slot::Main,
                Some(stream) => {
                    let slot = self.write_or_hand_off(stream, &prefix, frame)?;
                    return self.keep(&mut slots, lane, slot);
                }
            },
        };
        let slot = match slot {
            Slot::Main => {
                Pin::new(&mut self.main).start_send(frame)?;
                Slot::Main
            }
            Slot::Stream(stream) => self.write_or_hand_off(stream, &prefix[1..], frame)?,
            Slot::Task(tx) => {
                let n = header.len() + frame.len();
                self.shared.queued.fetch_add(n, Ordering::AcqRel);
                if tx.send(Cmd::Frame(header, frame)).is_err() {
                    self.shared.release(n);
                    return Err(TransportError::Io(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "a QUIC stream of this connection failed; the connection is going away",
                    )));
                }
                Slot::Task(tx)
            }
        };
        self.keep(&mut slots, lane, slot)
    }

    /// Keeps `slot` for the lane's next frame, or ends it after its last.
    fn keep(
        &self,
        slots: &mut HashMap<u128, Slot>,
        lane: Lane,
        slot: Slot,
    ) -> Result<(), TransportError> {
        if lane.last {
            Shared::end(slot);
        } else {
            slots.insert(lane.key, slot);
        }
        Ok(())
    }
}

impl LaneSink for LaneSender {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        std::task::ready!(Pin::new(&mut self.main).poll_ready(cx))?;
        if self.shared.queued.load(Ordering::Acquire) < LANE_BUDGET {
            return Poll::Ready(Ok(()));
        }
        self.shared.room.register(cx.waker());
        if self.shared.queued.load(Ordering::Acquire) < LANE_BUDGET {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    fn start_send(&mut self, lane: Option<Lane>, frame: Bytes) -> Result<(), TransportError> {
        if frame.len() >= TRAILER as usize {
            return Err(TransportError::FrameTooLarge {
                size: frame.len(),
                max: TRAILER as usize - 1,
            });
        }
        match lane {
            Some(lane) if self.lanes => self.send_on_lane(lane, frame),
            _ => Pin::new(&mut self.main).start_send(frame),
        }
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        // Lane streams need no flush: quinn sends what is written at once.
        Pin::new(&mut self.main).poll_flush(cx)
    }

    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        loop {
            match &mut self.closing {
                Closing::Open => {
                    for (_, slot) in self.shared.slots().drain() {
                        Shared::end(slot);
                    }
                    self.tasks.close();
                    let tasks = self.tasks.clone();
                    self.closing = Closing::Draining(Box::pin(async move { tasks.wait().await }));
                }
                Closing::Draining(done) => {
                    std::task::ready!(done.as_mut().poll(cx));
                    if self.lanes {
                        let buf = self.main.write_buffer_mut();
                        buf.put_u32(TRAILER);
                        buf.put_u64(self.opened);
                    }
                    self.closing = Closing::Main;
                }
                Closing::Main => return Pin::new(&mut self.main).poll_close(cx),
            }
        }
    }

    fn ends(&self) -> LaneEnds {
        let shared = Arc::downgrade(&self.shared);
        LaneEnds::new(move |key| {
            if let Some(shared) = shared.upgrade() {
                let slot = shared.slots().remove(&key);
                if let Some(slot) = slot {
                    Shared::end(slot);
                }
            }
        })
    }
}

/// An item of the main stream.
enum Main {
    Frame(BytesMut),
    /// The sender is closing; it opened this many lanes.
    Trailer(u64),
}

/// The main stream's framing: the peer's preamble byte, then frames, and a
/// trailer if the peer uses lanes.
struct MainCodec {
    frames: FrameCodec,
    /// `None` until the preamble has been read; then whether the peer uses lanes.
    lanes: Option<bool>,
    /// The trailer has been read: only the end of the stream may follow.
    trailer_seen: bool,
}

impl Decoder for MainCodec {
    type Item = Main;
    type Error = TransportError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Main>, TransportError> {
        let lanes = match self.lanes {
            Some(l) => l,
            None => {
                let Some(&b) = src.first() else {
                    return Ok(None);
                };
                let lanes = match b {
                    crate::PREAMBLE => false,
                    MAIN_WITH_LANES => true,
                    other => return Err(bad(format!(
                        "main stream preamble {other:#04x} is not plexwire's {:#04x} or {MAIN_WITH_LANES:#04x}",
                        crate::PREAMBLE
                    ))),
                };
                src.advance(1);
                self.lanes = Some(lanes);
                lanes
            }
        };
        if self.trailer_seen {
            return match src.is_empty() {
                true => Ok(None),
                false => Err(bad("data after the main stream's trailer".into())),
            };
        }
        if lanes && src.len() >= HEADER_LEN && src[..HEADER_LEN] == TRAILER.to_be_bytes() {
            if src.len() < HEADER_LEN + 8 {
                return Ok(None);
            }
            src.advance(HEADER_LEN);
            self.trailer_seen = true;
            return Ok(Some(Main::Trailer(src.get_u64())));
        }
        Ok(self.frames.decode(src)?.map(Main::Frame))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Main>, TransportError> {
        match self.decode(src)? {
            Some(item) => Ok(Some(item)),
            None if src.is_empty() || self.lanes.is_none() => Ok(None),
            None => self.frames.decode_eof(src).map(|f| f.map(Main::Frame)),
        }
    }
}

fn bad(reason: String) -> TransportError {
    TransportError::Io(io::Error::new(io::ErrorKind::InvalidData, reason))
}

/// A lane stream's framing: its preamble byte, then frames.
struct LaneCodec {
    frames: FrameCodec,
    preamble: bool,
    lane: Arc<LaneAcct>,
}

/// The receive budget of a connection's lanes (see [`RECV_BUDGET`]).
struct Budget {
    limit: usize,
    state: Mutex<BudgetState>,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            limit: RECV_BUDGET,
            state: Mutex::default(),
        }
    }
}

#[derive(Default)]
struct BudgetState {
    /// Bytes read from lanes and not yet handed out as frames.
    used: usize,
    /// The lane allowed to read past the budget, to finish its frame.
    owner: Option<u64>,
    /// Lanes waiting for room.
    waiting: Vec<std::task::Waker>,
}

impl Budget {
    fn state(&self) -> std::sync::MutexGuard<'_, BudgetState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One lane's share of the budget.
struct LaneAcct {
    id: u64,
    budget: Arc<Budget>,
    /// Bytes this lane read and has not handed out.
    held: AtomicUsize,
}

impl LaneAcct {
    /// `n` bytes were handed out (or dropped); `done`: a frame is complete,
    /// so ownership of the overdraft passes on.
    fn give_back(&self, n: usize, done: bool) {
        if n == 0 && !done {
            return;
        }
        self.held.fetch_sub(n, Ordering::AcqRel);
        let waiting = {
            let mut st = self.budget.state();
            st.used = st.used.saturating_sub(n);
            if done && st.owner == Some(self.id) {
                st.owner = None;
            }
            std::mem::take(&mut st.waiting)
        };
        waiting.into_iter().for_each(std::task::Waker::wake);
    }
}

impl Drop for LaneAcct {
    fn drop(&mut self) {
        let held = self.held.load(Ordering::Acquire);
        self.give_back(held, true);
    }
}

/// A lane's reading half, which reads only while the budget allows.
struct LaneRead<R = QuicRecv> {
    inner: R,
    lane: Arc<LaneAcct>,
}

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for LaneRead<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        {
            let mut st = self.lane.budget.state();
            let held = self.lane.held.load(Ordering::Acquire);
            let may = st.used < self.lane.budget.limit
                || st.owner == Some(self.lane.id)
                || (st.owner.is_none() && held > 0 && {
                    st.owner = Some(self.lane.id);
                    true
                });
            if !may {
                st.waiting.push(cx.waker().clone());
                return Poll::Pending;
            }
        }
        let before = buf.filled().len();
        std::task::ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        let n = buf.filled().len() - before;
        if n > 0 {
            self.lane.held.fetch_add(n, Ordering::AcqRel);
            self.lane.budget.state().used += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl Decoder for LaneCodec {
    type Item = BytesMut;
    type Error = TransportError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, TransportError> {
        if !self.preamble {
            let Some(&b) = src.first() else {
                return Ok(None);
            };
            if b != LANE {
                return Err(bad(format!(
                    "stream preamble {b:#04x} is not a plexwire lane's {LANE:#04x}"
                )));
            }
            src.advance(1);
            self.preamble = true;
            self.lane.give_back(1, false);
        }
        let frame = self.frames.decode(src)?;
        if let Some(f) = &frame {
            self.lane.give_back(HEADER_LEN + f.len(), true);
        }
        Ok(frame)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, TransportError> {
        match self.decode(src)? {
            Some(f) => Ok(Some(f)),
            None => self.frames.decode_eof(src),
        }
    }
}

type Accept = Pin<Box<dyn Future<Output = Result<RecvStream, ConnectionError>> + Send>>;

fn accept(conn: &quinn::Connection) -> Accept {
    let conn = conn.clone();
    Box::pin(async move { conn.accept_uni().await })
}

/// The receiving half: the main stream and every lane, merged.
pub(crate) struct LaneReceiver {
    main: FramedRead<QuicRecv, MainCodec>,
    conn: quinn::Connection,
    accept: Option<Accept>,
    lanes: SelectAll<FramedRead<LaneRead, LaneCodec>>,
    budget: Arc<Budget>,
    accepted: u64,
    trailer: Option<u64>,
    main_done: bool,
    /// Set when the main stream ends: how long to wait for lanes still due.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Take the next frame from the main stream first (they alternate).
    main_first: bool,
    side: Side,
    max: usize,
}

impl LaneReceiver {
    /// `preamble`: `Some(lanes)` if the main stream's preamble was already
    /// read (by the listener's handshake), saying whether the peer uses lanes.
    pub(crate) fn new(
        main: RecvStream,
        conn: quinn::Connection,
        side: Side,
        max: usize,
        preamble: Option<bool>,
    ) -> Self {
        LaneReceiver {
            main: FramedRead::new(
                QuicRecv { inner: main, side },
                MainCodec {
                    frames: FrameCodec::new(max),
                    lanes: preamble,
                    trailer_seen: false,
                },
            ),
            accept: Some(accept(&conn)),
            conn,
            lanes: SelectAll::new(),
            budget: Arc::default(),
            accepted: 0,
            trailer: None,
            main_done: false,
            deadline: None,
            main_first: false,
            side,
            max,
        }
    }

    fn poll_main(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, TransportError>>> {
        loop {
            if self.main_done {
                return Poll::Pending;
            }
            match Pin::new(&mut self.main).poll_next(cx) {
                Poll::Ready(Some(Ok(Main::Frame(f)))) => return Poll::Ready(Some(Ok(f.freeze()))),
                Poll::Ready(Some(Ok(Main::Trailer(n)))) => self.trailer = Some(n),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => {
                    self.main_done = true;
                    self.deadline = Some(Box::pin(tokio::time::sleep(LINGER)));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn poll_lanes(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, TransportError>>> {
        if self.lanes.is_empty() {
            return Poll::Pending;
        }
        match Pin::new(&mut self.lanes).poll_next(cx) {
            Poll::Ready(Some(item)) => Poll::Ready(Some(item.map(BytesMut::freeze))),
            _ => Poll::Pending,
        }
    }
}

impl Stream for LaneReceiver {
    type Item = Result<Bytes, TransportError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        // New lanes first, so their frames are in the running below.
        while let Some(a) = this.accept.as_mut() {
            match a.as_mut().poll(cx) {
                Poll::Ready(Ok(recv)) => {
                    this.accepted += 1;
                    let lane = Arc::new(LaneAcct {
                        id: this.accepted,
                        budget: this.budget.clone(),
                        held: AtomicUsize::new(0),
                    });
                    let codec = LaneCodec {
                        frames: FrameCodec::new(this.max),
                        preamble: false,
                        lane: lane.clone(),
                    };
                    let read = LaneRead {
                        inner: QuicRecv {
                            inner: recv,
                            side: this.side,
                        },
                        lane,
                    };
                    this.lanes.push(FramedRead::new(read, codec));
                    this.accept = Some(accept(&this.conn));
                }
                // The connection is closing; the main stream reports why.
                Poll::Ready(Err(_)) => this.accept = None,
                Poll::Pending => break,
            }
        }
        this.main_first = !this.main_first;
        let item = if this.main_first {
            match this.poll_main(cx) {
                Poll::Pending => this.poll_lanes(cx),
                ready => ready,
            }
        } else {
            match this.poll_lanes(cx) {
                Poll::Pending => this.poll_main(cx),
                ready => ready,
            }
        };
        if item.is_ready() {
            return item;
        }
        if !this.main_done {
            return Poll::Pending;
        }
        // The main stream has ended: the end of stream waits for the lanes
        // the peer opened before closing.
        let all_seen = this.accept.is_none() || this.trailer.is_none_or(|n| this.accepted >= n);
        if this.lanes.is_empty() && all_seen {
            return Poll::Ready(None);
        }
        if let Some(d) = this.deadline.as_mut() {
            if d.as_mut().poll(cx).is_ready() {
                tracing::debug!(
                    open = this.lanes.len(),
                    accepted = this.accepted,
                    announced = ?this.trailer,
                    "QUIC lanes still open {LINGER:?} after the main stream ended; giving up on them"
                );
                return Poll::Ready(None);
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;

    type Lanes = SelectAll<FramedRead<LaneRead<tokio::io::DuplexStream>, LaneCodec>>;

    /// Lanes over in-memory pipes, sharing a budget of `limit` bytes.
    fn lanes(n: u64, limit: usize) -> (Vec<tokio::io::DuplexStream>, Lanes, Arc<Budget>) {
        let budget = Arc::new(Budget {
            limit,
            state: Mutex::default(),
        });
        let mut writers = Vec::new();
        let mut all = SelectAll::new();
        for id in 0..n {
            let (w, r) = tokio::io::duplex(64 * 1024);
            let lane = Arc::new(LaneAcct {
                id,
                budget: budget.clone(),
                held: AtomicUsize::new(0),
            });
            let codec = LaneCodec {
                frames: FrameCodec::new(1 << 20),
                preamble: false,
                lane: lane.clone(),
            };
            all.push(FramedRead::new(LaneRead { inner: r, lane }, codec));
            writers.push(w);
        }
        (writers, all, budget)
    }

    #[tokio::test]
    async fn past_the_budget_one_lane_finishes_its_frame_and_the_rest_wait() {
        // 8 lanes each start a 10 000-byte frame with half of it; the budget
        // is 20 000 bytes, so the halves (40 000) cannot all be read.
        const FRAME: usize = 10_000;
        let (mut writers, mut all, budget) = lanes(8, 20_000);
        let mut rest = Vec::new();
        for (i, w) in writers.iter_mut().enumerate() {
            let mut bytes = vec![LANE];
            bytes.extend_from_slice(&(FRAME as u32).to_be_bytes());
            bytes.extend(std::iter::repeat_n(i as u8, FRAME));
            let tail = bytes.split_off(1 + HEADER_LEN + FRAME / 2);
            w.write_all(&bytes).await.unwrap();
            rest.push(tail);
        }
        // Nothing is whole yet; reading stops at the budget.
        assert!(futures_util::poll!(all.next()).is_pending());
        let used = budget.state().used;
        assert!(
            (20_000..20_000 + FRAME).contains(&used),
            "reading stopped at the budget: {used}"
        );
        // The rest of every frame arrives: each lane gets its turn, every
        // frame comes out whole, and the budget is never passed by more than
        // one frame.
        for (w, tail) in writers.iter_mut().zip(&rest) {
            w.write_all(tail).await.unwrap();
        }
        let mut seen = Vec::new();
        for _ in 0..8 {
            let f = tokio::time::timeout(std::time::Duration::from_secs(5), all.next())
                .await
                .expect("no lane is starved")
                .unwrap()
                .unwrap();
            assert_eq!(f.len(), FRAME);
            assert!(f.iter().all(|b| *b == f[0]));
            seen.push(f[0]);
            assert!(budget.state().used <= 20_000 + FRAME);
        }
        seen.sort();
        assert_eq!(seen, (0..8).collect::<Vec<u8>>());
        assert_eq!(budget.state().used, 0, "every byte given back");
        drop(writers);
        assert!(all.next().await.is_none());
    }
}
