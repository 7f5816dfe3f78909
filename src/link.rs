//! The connection layer every protocol shares: one writer, one reader and
//! one opening-frame helper, generic over the protocol's message type.
//!
//! A protocol describes its messages once, as a [`Wire`]: how big a queued
//! message counts as, how it becomes a frame (and on which [`Lane`]), and how
//! a frame becomes a message. The layer does the rest, the same way for the
//! broker protocol, the packet stream, the JSON session and whatever comes
//! next:
//!
//! - [`spawn_writer`] starts a connection's writer task. Its [`Outbox`] is
//!   bounded in messages *and* in bytes; control messages (liveness) go on a
//!   lane of their own that is written ahead of queued data, so a peer with a
//!   backed-up data queue still answers a PING. The writer coalesces: it
//!   feeds every message already queued (up to a batch), then flushes once —
//!   many messages per syscall under load, no added latency when idle.
//! - What happens when an outbox is full is the caller's policy:
//!   [`Outbox::try_send`] refuses at once (the broker then disconnects the
//!   slow consumer), [`Outbox::send`] waits for room (a worker or client
//!   slowing down to its peer's pace).
//! - [`Reader`] turns a [`FrameReceiver`] into messages, telling a frame it
//!   cannot decode (the connection goes on) from a broken connection.
//! - [`first_frame`] waits, bounded, for the frame that opens a connection.
//!
//! The framing under it all is a value the protocol picks when it splits
//! the connection ([`Connection::into_frames_with`](crate::transport::Connection::into_frames_with)):
//! the u32 length prefix, cs.packetstream's BSUInt prefix, or one frame per
//! message on a message channel.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::SinkExt;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::transport::{FrameReceiver, FrameSender, Lane, TransportError};

/// A protocol's messages on one connection: what the connection layer needs
/// to know of them. Cloned once per connection (writer and reader each hold
/// one), so keep it small.
pub trait Wire: Clone + Send + 'static {
    /// What the protocol sends and receives.
    type Message: Send + 'static;
    /// Small messages written ahead of queued data (liveness probes).
    type Control: Send + 'static;
    /// Why a frame is not a message.
    type DecodeError: std::error::Error + Send + Sync + 'static;

    /// The bytes a queued message stands for, for the outbox's byte budget:
    /// about its encoded size. Must be cheap (it is called twice per message).
    fn size_hint(message: &Self::Message) -> usize;

    /// Turns a message into the frame to send, for a connection whose frames
    /// may be at most `max_frame` bytes. `None` sends nothing for it (a
    /// message this peer must not see). A message that does not fit is the
    /// protocol's to answer: return what should go instead (the writer never
    /// sends a frame over the limit; it logs and skips one).
    fn encode(&mut self, message: Self::Message, max_frame: usize) -> Option<Outgoing>;

    /// Turns a control message into its frame.
    fn encode_control(&mut self, control: Self::Control) -> Option<Outgoing>;

    /// Turns a received frame into a message.
    fn decode(&self, frame: &Bytes) -> Result<Self::Message, Self::DecodeError>;
}

/// A frame ready to send, and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The encoded message.
    pub frame: Bytes,
    /// The lane it travels on, on a connection with lanes (QUIC streams);
    /// `None` (and every frame on other backends) takes the main channel.
    pub lane: Option<Lane>,
}

impl Outgoing {
    /// A frame for the main channel.
    pub fn main(frame: Bytes) -> Outgoing {
        Outgoing { frame, lane: None }
    }
}

/// How much a connection's writer may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterConfig {
    /// Data messages queued at most.
    pub queue: usize,
    /// Bytes of data messages queued at most (by [`Wire::size_hint`]). One
    /// message larger than this still passes when the queue is empty.
    pub max_bytes: usize,
    /// Control messages queued at most (liveness needs only a few).
    pub control_queue: usize,
}

impl Default for WriterConfig {
    fn default() -> WriterConfig {
        WriterConfig {
            queue: 1024,
            max_bytes: 64 << 20,
            control_queue: 16,
        }
    }
}

/// Messages fed before a flush is forced, so one busy queue cannot starve the flush forever.
const MAX_BATCH: usize = 256;

/// The bytes an outbox holds, shared with its writer.
#[derive(Debug, Default)]
struct Budget {
    queued: AtomicUsize,
    /// Woken when the writer has taken messages out.
    room: Notify,
    /// Senders waiting on `room`: the writer only wakes them when there are
    /// some, so the common case costs no lock.
    waiting: AtomicUsize,
}

impl Budget {
    fn wake(&self) {
        if self.waiting.load(Ordering::Acquire) > 0 {
            self.room.notify_waiters();
        }
    }
}

/// Why [`Outbox::try_send`] refused a message; the message comes back.
#[derive(PartialEq, Eq)]
pub enum TrySendError<M> {
    /// The queue is full, in messages or (`over_budget`) in bytes.
    Full {
        /// The refused message.
        message: M,
        /// Whether it was the byte budget that was spent.
        over_budget: bool,
    },
    /// The writer has stopped (the connection is gone).
    Closed(M),
}

impl<M> TrySendError<M> {
    /// The refused message.
    pub fn into_inner(self) -> M {
        match self {
            TrySendError::Full { message, .. } | TrySendError::Closed(message) => message,
        }
    }
}

impl<M> fmt::Debug for TrySendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full { over_budget, .. } => f
                .debug_struct("Full")
                .field("over_budget", over_budget)
                .finish_non_exhaustive(),
            TrySendError::Closed(_) => f.write_str("Closed(..)"),
        }
    }
}

/// The writer has stopped; the message comes back.
#[derive(PartialEq, Eq)]
pub struct Closed<M>(pub M);

impl<M> fmt::Debug for Closed<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Closed(..)")
    }
}

/// The sending side of a connection's writer: cheap to clone. When every
/// clone is dropped, the writer sends what is queued and closes the sending
/// direction.
pub struct Outbox<W: Wire> {
    data: mpsc::Sender<W::Message>,
    control: mpsc::Sender<W::Control>,
    budget: Arc<Budget>,
    max_bytes: usize,
}

impl<W: Wire> Clone for Outbox<W> {
    fn clone(&self) -> Self {
        Outbox {
            data: self.data.clone(),
            control: self.control.clone(),
            budget: self.budget.clone(),
            max_bytes: self.max_bytes,
        }
    }
}

impl<W: Wire> fmt::Debug for Outbox<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outbox")
            .field("queued_bytes", &self.queued_bytes())
            .field("max_bytes", &self.max_bytes)
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl<W: Wire> Outbox<W> {
    /// Counts `size` bytes in if they fit (or the queue holds nothing).
    fn reserve_bytes(&self, size: usize) -> bool {
        let before = self.budget.queued.fetch_add(size, Ordering::Relaxed);
        if before == 0 || before + size <= self.max_bytes {
            return true;
        }
        self.budget.queued.fetch_sub(size, Ordering::Relaxed);
        false
    }

    /// Queues `message` without waiting.
    pub fn try_send(&self, message: W::Message) -> Result<(), TrySendError<W::Message>> {
        let size = W::size_hint(&message);
        if !self.reserve_bytes(size) {
            if self.data.is_closed() {
                return Err(TrySendError::Closed(message));
            }
            return Err(TrySendError::Full {
                message,
                over_budget: true,
            });
        }
        self.data.try_send(message).map_err(|e| {
            self.budget.queued.fetch_sub(size, Ordering::Relaxed);
            match e {
                mpsc::error::TrySendError::Full(message) => TrySendError::Full {
                    message,
                    over_budget: false,
                },
                mpsc::error::TrySendError::Closed(message) => TrySendError::Closed(message),
            }
        })
    }

    /// Queues `message`, waiting for room in messages and in bytes.
    ///
    /// Cancel safe: if the future is dropped, the message was not queued.
    pub async fn send(&self, message: W::Message) -> Result<(), Closed<W::Message>> {
        let size = W::size_hint(&message);
        if !self.reserve_bytes(size) {
            self.budget.waiting.fetch_add(1, Ordering::AcqRel);
            let _waiting = scopeguard(|| {
                self.budget.waiting.fetch_sub(1, Ordering::AcqRel);
            });
            loop {
                let room = self.budget.room.notified();
                tokio::pin!(room);
                room.as_mut().enable();
                if self.reserve_bytes(size) {
                    break;
                }
                if self.data.is_closed() {
                    return Err(Closed(message));
                }
                room.await;
            }
        }
        match self.data.reserve().await {
            Ok(permit) => {
                permit.send(message);
                Ok(())
            }
            Err(_) => {
                self.budget.queued.fetch_sub(size, Ordering::Relaxed);
                Err(Closed(message))
            }
        }
    }

    /// Queues a control message ahead of data; `false` if its queue is full
    /// or the writer has stopped (a probe that does not fit is not needed).
    pub fn try_send_control(&self, control: W::Control) -> bool {
        self.control.try_send(control).is_ok()
    }

    /// Whether the writer has stopped.
    pub fn is_closed(&self) -> bool {
        self.data.is_closed()
    }

    /// Bytes of data messages queued now (by [`Wire::size_hint`]).
    pub fn queued_bytes(&self) -> usize {
        self.budget.queued.load(Ordering::Relaxed)
    }
}

/// Runs `f` when dropped (also when a waiting `send` is cancelled).
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f()
            }
        }
    }
    Guard(Some(f))
}

/// Starts the writer task of a connection: messages sent to the returned
/// [`Outbox`] are encoded with `wire` and written, control messages first,
/// data in order. When every outbox clone is dropped, the writer flushes
/// what is queued and closes the sending direction. Cancelling `kill` stops
/// it at once, queued messages unsent (for a peer that stopped reading, or a
/// session being torn down).
pub fn spawn_writer<W: Wire>(
    tx: FrameSender,
    wire: W,
    config: WriterConfig,
    kill: CancellationToken,
) -> (Outbox<W>, JoinHandle<()>) {
    spawn_writer_with_grace(tx, wire, config, Duration::ZERO, kill)
}

/// [`spawn_writer`] with a flush grace: once the queue is empty the writer
/// waits up to `grace` for one more message before it flushes, so that
/// packets queued in quick succession share one write (cs.packetstream's
/// `packet_grace`). `Duration::ZERO` flushes as soon as the queue is empty,
/// which adds no latency; a busy queue is flushed at least every 256
/// messages whatever the grace.
pub fn spawn_writer_with_grace<W: Wire>(
    mut tx: FrameSender,
    mut wire: W,
    config: WriterConfig,
    grace: Duration,
    kill: CancellationToken,
) -> (Outbox<W>, JoinHandle<()>) {
    let (data, mut rx) = mpsc::channel::<W::Message>(config.queue.max(1));
    let (control, mut control_rx) = mpsc::channel::<W::Control>(config.control_queue.max(1));
    let budget = Arc::new(Budget::default());
    let taken = budget.clone();
    let take = move |m: &W::Message| {
        taken.queued.fetch_sub(W::size_hint(m), Ordering::Relaxed);
    };
    let room = budget.clone();
    let task = tokio::spawn(async move {
        let work = async {
            loop {
                let first = tokio::select! {
                    biased;
                    Some(c) = control_rx.recv() => wire.encode_control(c),
                    d = rx.recv() => match d {
                        Some(m) => {
                            take(&m);
                            wire.encode(m, tx.max_frame_size())
                        }
                        None => break,
                    },
                };
                feed(&mut tx, first).await?;
                let mut n = 1;
                while n < MAX_BATCH {
                    let next = if let Ok(c) = control_rx.try_recv() {
                        wire.encode_control(c)
                    } else if let Ok(m) = rx.try_recv() {
                        take(&m);
                        wire.encode(m, tx.max_frame_size())
                    } else if grace.is_zero() {
                        break;
                    } else {
                        // The queue is empty: give it `grace` to fill
                        // before flushing.
                        room.wake();
                        tokio::select! {
                            biased;
                            Some(c) = control_rx.recv() => wire.encode_control(c),
                            Some(m) = rx.recv() => {
                                take(&m);
                                wire.encode(m, tx.max_frame_size())
                            }
                            _ = tokio::time::sleep(grace) => break,
                        }
                    };
                    feed(&mut tx, next).await?;
                    n += 1;
                }
                room.wake();
                tx.flush().await?;
            }
            tx.close().await
        };
        let result: Result<(), TransportError> = tokio::select! {
            _ = kill.cancelled() => Ok(()),
            r = work => r,
        };
        // Senders waiting for room see the writer gone.
        drop(rx);
        room.room.notify_waiters();
        if let Err(e) = result {
            tracing::debug!(error = %e, "writer stopped");
        }
    });
    (
        Outbox {
            data,
            control,
            budget,
            max_bytes: config.max_bytes.max(1),
        },
        task,
    )
}

async fn feed(tx: &mut FrameSender, out: Option<Outgoing>) -> Result<(), TransportError> {
    let Some(out) = out else { return Ok(()) };
    if out.frame.len() > tx.max_frame_size() {
        // The protocol's `encode` answers what does not fit; this is a bug
        // in it, and one frame must not end the connection.
        tracing::error!(
            size = out.frame.len(),
            max = tx.max_frame_size(),
            "a frame over the connection's limit reached the writer; skipped"
        );
        return Ok(());
    }
    tx.feed_on(out.lane, out.frame).await
}

/// Why [`Reader::recv`] has no message.
#[derive(Debug, thiserror::Error)]
pub enum ReadError<E: std::error::Error + 'static> {
    /// A frame arrived that is not a message; the connection goes on.
    #[error("undecodable frame ({len} bytes): {error}")]
    Decode {
        /// Why.
        #[source]
        error: E,
        /// The frame's size.
        len: usize,
    },
    /// The connection broke (or the peer sent a frame over the limit); nothing
    /// more will arrive.
    #[error(transparent)]
    Transport(#[from] TransportError),
}

/// The receiving side of a connection: frames in, messages out.
pub struct Reader<W: Wire> {
    rx: FrameReceiver,
    wire: W,
}

impl<W: Wire> fmt::Debug for Reader<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reader").field("rx", &self.rx).finish()
    }
}

impl<W: Wire> Reader<W> {
    /// Reads `rx`'s frames as `wire`'s messages.
    pub fn new(rx: FrameReceiver, wire: W) -> Reader<W> {
        Reader { rx, wire }
    }

    /// The next message; `None` when the peer has closed the connection.
    ///
    /// Cancel safe: a partly received frame stays buffered.
    pub async fn recv(&mut self) -> Option<Result<W::Message, ReadError<W::DecodeError>>> {
        let frame = match self.rx.recv_frame().await? {
            Ok(frame) => frame,
            Err(e) => return Some(Err(ReadError::Transport(e))),
        };
        Some(self.wire.decode(&frame).map_err(|error| ReadError::Decode {
            error,
            len: frame.len(),
        }))
    }

    /// The frames underneath, e.g. to read the opening frame raw.
    pub fn frames(&mut self) -> &mut FrameReceiver {
        &mut self.rx
    }
}

/// Why a connection's opening frame did not arrive.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FirstFrameError {
    /// Nothing arrived in time.
    #[error("sent nothing within {0:?}")]
    Timeout(Duration),
    /// The peer closed the connection before sending anything.
    #[error("closed the connection before sending anything")]
    Closed,
    /// The connection broke, or the first frame was over the limit.
    #[error(transparent)]
    Transport(#[from] TransportError),
}

/// Waits at most `timeout` for the frame that opens a connection (a HELLO,
/// or a legacy peer's first packet).
///
/// Cancel safe, like [`FrameReceiver::recv_frame`].
pub async fn first_frame(
    rx: &mut FrameReceiver,
    timeout: Duration,
) -> Result<Bytes, FirstFrameError> {
    match tokio::time::timeout(timeout, rx.recv_frame()).await {
        Err(_) => Err(FirstFrameError::Timeout(timeout)),
        Ok(None) => Err(FirstFrameError::Closed),
        Ok(Some(frame)) => Ok(frame?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::{Connection, Framing, PeerInfo};
    use futures_util::StreamExt;

    fn mem_pair(name: &str, max: usize) -> (Connection, Connection) {
        let peer = |n: &str| PeerInfo {
            transport: "mem",
            remote: n.to_owned(),
        };
        crate::transport::mem_pair(peer(name), peer(name), max)
    }

    /// A toy protocol: a message is a string, a control message a byte.
    #[derive(Clone)]
    struct Text;

    impl Wire for Text {
        type Message = String;
        type Control = u8;
        type DecodeError = std::str::Utf8Error;
        fn size_hint(m: &String) -> usize {
            m.len()
        }
        fn encode(&mut self, m: String, max: usize) -> Option<Outgoing> {
            if m.len() > max {
                return Some(Outgoing::main(Bytes::from_static(b"too large")));
            }
            (m != "skip").then(|| Outgoing::main(Bytes::from(m)))
        }
        fn encode_control(&mut self, c: u8) -> Option<Outgoing> {
            Some(Outgoing::main(Bytes::from(vec![c])))
        }
        fn decode(&self, frame: &Bytes) -> Result<String, std::str::Utf8Error> {
            std::str::from_utf8(frame).map(str::to_owned)
        }
    }

    fn config(queue: usize, max_bytes: usize) -> WriterConfig {
        WriterConfig {
            queue,
            max_bytes,
            control_queue: 4,
        }
    }

    #[tokio::test]
    async fn messages_round_trip_and_the_protocol_answers_what_does_not_fit() {
        let (a, b) = mem_pair("link", 16);
        let (tx, _) = a.into_frames_with(Framing::U32Prefix);
        let (_, rx) = b.into_frames();
        let (out, writer) = spawn_writer(tx, Text, config(8, 1024), CancellationToken::new());
        out.send("hello".into()).await.unwrap();
        out.send("skip".into()).await.unwrap();
        out.send("x".repeat(17)).await.unwrap();
        drop(out);
        writer.await.unwrap();
        let mut reader = Reader::new(rx, Text);
        assert_eq!(reader.recv().await.unwrap().unwrap(), "hello");
        assert_eq!(reader.recv().await.unwrap().unwrap(), "too large");
        assert!(
            reader.recv().await.is_none(),
            "closed after the queue drained"
        );
    }

    #[tokio::test]
    async fn the_outbox_is_bounded_in_bytes_and_in_messages() {
        let (a, _b) = mem_pair("link", 1 << 20);
        let (tx, _rx) = a.into_frames();
        // A writer that never runs: the current-thread test runtime does not
        // poll it until we yield.
        let (out, _w) = spawn_writer(tx, Text, config(3, 10), CancellationToken::new());
        out.try_send("12345678".into()).unwrap();
        match out.try_send("abc".into()) {
            Err(TrySendError::Full {
                over_budget: true,
                message,
            }) => assert_eq!(message, "abc"),
            other => panic!("{other:?}"),
        }
        out.try_send("ab".into()).unwrap();
        assert_eq!(out.queued_bytes(), 10);
        out.try_send("".into()).unwrap();
        assert!(matches!(
            out.try_send("".into()),
            Err(TrySendError::Full {
                over_budget: false,
                ..
            })
        ));
        assert_eq!(out.queued_bytes(), 10, "a refused message is not counted");
    }

    #[tokio::test]
    async fn one_message_over_the_budget_passes_an_empty_queue() {
        let (a, _b) = mem_pair("link", 1 << 20);
        let (tx, _rx) = a.into_frames();
        let (out, _w) = spawn_writer(tx, Text, config(3, 4), CancellationToken::new());
        out.try_send("much more than four".into()).unwrap();
        assert!(out.try_send("x".into()).is_err());
    }

    #[tokio::test]
    async fn send_waits_for_room_and_control_goes_first() {
        let (a, b) = mem_pair("link", 1 << 20);
        let (tx, _) = a.into_frames();
        let (_, mut rx) = b.into_frames();
        let (out, _w) = spawn_writer(tx, Text, config(1, 4), CancellationToken::new());
        out.try_send("aaaa".into()).unwrap();
        assert!(out.try_send_control(7));
        // The writer takes "aaaa" only after the control byte; `send` waits
        // for the bytes it frees.
        out.send("bbbb".into()).await.unwrap();
        assert_eq!(&rx.next().await.unwrap().unwrap()[..], &[7]);
        assert_eq!(&rx.next().await.unwrap().unwrap()[..], b"aaaa");
        assert_eq!(&rx.next().await.unwrap().unwrap()[..], b"bbbb");
    }

    #[tokio::test]
    async fn a_killed_writer_closes_the_outbox() {
        let (a, _b) = mem_pair("link", 1 << 20);
        let (tx, _rx) = a.into_frames();
        let kill = CancellationToken::new();
        let (out, w) = spawn_writer(tx, Text, config(1, 4), kill.clone());
        out.try_send("aaaa".into()).unwrap();
        kill.cancel();
        w.await.unwrap();
        assert!(out.is_closed());
        assert_eq!(out.send("b".into()).await, Err(Closed("b".to_owned())));
        assert!(matches!(
            out.try_send("c".into()),
            Err(TrySendError::Closed(_))
        ));
    }

    #[tokio::test]
    async fn an_undecodable_frame_is_not_the_end_of_the_connection() {
        let (a, b) = mem_pair("link", 1 << 20);
        let (mut tx, _) = a.into_frames();
        let (_, rx) = b.into_frames();
        tx.send_frame(Bytes::from_static(&[0xff])).await.unwrap();
        tx.send_frame(Bytes::from_static(b"ok")).await.unwrap();
        drop(tx);
        let mut reader = Reader::new(rx, Text);
        assert!(matches!(
            reader.recv().await,
            Some(Err(ReadError::Decode { len: 1, .. }))
        ));
        assert_eq!(reader.recv().await.unwrap().unwrap(), "ok");
        assert!(reader.recv().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_frame_is_waited_for_boundedly() {
        let (a, b) = mem_pair("link", 1 << 20);
        let (_, mut rx) = b.into_frames();
        let e = first_frame(&mut rx, Duration::from_secs(3))
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "sent nothing within 3s");
        drop(a);
        assert!(matches!(
            first_frame(&mut rx, Duration::from_secs(3)).await,
            Err(FirstFrameError::Closed)
        ));
    }
}
