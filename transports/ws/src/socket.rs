//! A WebSocket as a plexwire message channel, and the client handshake.
//!
//! [`into_connection`] splits a [`WebSocket`] into the two halves of a
//! [`Connection`]: incoming text and binary messages become frames, pings
//! are answered by the receiving half as it reads, outgoing frames become
//! text or binary messages as the sender says. The close handshake follows
//! the connection's half-close: a received close ends the receiving half;
//! shutting the sending half down sends close 1000 (or answers the peer's);
//! once both closes have crossed, the server ends the TCP connection (RFC
//! 6455 §7.1.1). A protocol violation by the peer is answered with a close
//! carrying its status (1002, 1007, 1009) and ends the receiving half with
//! an error.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use plexwire_transport::{Connection, Endpoint, Message, PeerInfo, TransportError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio_util::codec::{Framed, FramedParts, FramedRead, FramedWrite};

use crate::codec::{Side, WsCodec, WsError, WsFrame, CLOSE_NORMAL};
use crate::HANDSHAKE_TIMEOUT;

/// A byte stream a WebSocket runs over (TCP, TLS, an upgraded HTTP connection).
pub trait AsyncIo: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> AsyncIo for T {}

/// The IO under every WebSocket of this crate, whichever stream it is.
pub type WsIo = Box<dyn AsyncIo>;

/// A WebSocket after its handshake: the stream, the side, and bytes read
/// past the handshake. [`into_connection`] makes it a plexwire
/// [`Connection`]; [`WebSocket::into_framed`] gives the raw frames.
pub struct WebSocket {
    io: WsIo,
    side: Side,
    /// Bytes that came after the handshake answer in the same read.
    leftover: BytesMut,
    max: usize,
}

impl std::fmt::Debug for WebSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocket")
            .field("side", &self.side)
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

impl WebSocket {
    pub(crate) fn new(io: WsIo, side: Side, leftover: BytesMut, max: usize) -> WebSocket {
        WebSocket {
            io,
            side,
            leftover,
            max,
        }
    }

    /// Which side this is.
    pub fn side(&self) -> Side {
        self.side
    }

    /// The frames themselves (for a protocol that handles pings and closes
    /// its own way).
    pub fn into_framed(self) -> Framed<WsIo, WsCodec> {
        let mut parts = FramedParts::new(self.io, WsCodec::new(self.side, self.max));
        parts.read_buf = self.leftover;
        Framed::from_parts(parts)
    }
}

/// A codec error as a transport error.
fn ws_error(e: WsError) -> TransportError {
    if let Some((size, max)) = e.too_large {
        return TransportError::FrameTooLarge { size, max };
    }
    TransportError::Io(io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
}

/// The sending side both halves use: the receiving half answers pings and
/// closes through it. Each poll holds the lock only for that poll.
struct Writer {
    framed: FramedWrite<WriteHalf<WsIo>, WsCodec>,
    /// This side has sent its close frame.
    close_sent: bool,
    /// The peer's close frame has arrived.
    close_received: bool,
}

type Shared = Arc<Mutex<Writer>>;

fn lock(w: &Shared) -> MutexGuard<'_, Writer> {
    w.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Where the receiving half is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Reading,
    /// Both closes have crossed and this is the server: end the TCP connection.
    ShuttingDown,
    Done,
}

struct FrameStream {
    reader: FramedRead<ReadHalf<WsIo>, WsCodec>,
    writer: Shared,
    side: Side,
    phase: Phase,
    /// A pong or close to send before reading on.
    pending: Option<WsFrame>,
    /// What was sent in `pending` has still to be flushed.
    flushing: bool,
    /// The error to report once the close that answers it has gone out.
    failed: Option<TransportError>,
}

impl FrameStream {
    /// Sends `pending` and flushes; `Pending` until done (errors end it too:
    /// the connection is going anyway).
    fn poll_send_pending(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(frame) = self.pending.take() {
            let mut w = lock(&self.writer);
            match w.framed.poll_ready_unpin(cx) {
                Poll::Pending => {
                    self.pending = Some(frame);
                    return Poll::Pending;
                }
                Poll::Ready(Ok(())) => {
                    if matches!(frame, WsFrame::Close(..)) {
                        w.close_sent = true;
                    }
                    let _ = w.framed.start_send_unpin(frame);
                    self.flushing = true;
                }
                Poll::Ready(Err(_)) => {}
            }
        }
        if self.flushing {
            let _ = ready!(lock(&self.writer).framed.poll_flush_unpin(cx));
            self.flushing = false;
        }
        Poll::Ready(())
    }
}

impl Stream for FrameStream {
    type Item = Result<Bytes, TransportError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            ready!(this.poll_send_pending(cx));
            if let Some(e) = this.failed.take() {
                this.phase = Phase::Done;
                return Poll::Ready(Some(Err(e)));
            }
            match this.phase {
                Phase::Done => return Poll::Ready(None),
                Phase::ShuttingDown => {
                    let _ = ready!(lock(&this.writer).framed.poll_close_unpin(cx));
                    this.phase = Phase::Done;
                    continue;
                }
                Phase::Reading => {}
            }
            match ready!(this.reader.poll_next_unpin(cx)) {
                None => this.phase = Phase::Done,
                Some(Ok(WsFrame::Data(_, data))) => return Poll::Ready(Some(Ok(data))),
                Some(Ok(WsFrame::Ping(data))) => this.pending = Some(WsFrame::Pong(data)),
                Some(Ok(WsFrame::Pong(_))) => {}
                Some(Ok(WsFrame::Close(code, reason))) => {
                    tracing::trace!(?code, %reason, "WebSocket close received");
                    let mut w = lock(&this.writer);
                    w.close_received = true;
                    this.phase = if w.close_sent && this.side == Side::Server {
                        Phase::ShuttingDown
                    } else {
                        Phase::Done
                    };
                }
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "closing a WebSocket on a protocol violation");
                    let sent = lock(&this.writer).close_sent;
                    if !sent {
                        this.pending = Some(WsFrame::Close(Some(e.code), e.reason.clone()));
                    }
                    this.failed = Some(ws_error(e));
                }
            }
        }
    }
}

/// The sending half: frames as text or binary messages; closing sends (or
/// answers) the close frame, status 1000.
struct FrameSink {
    writer: Shared,
    side: Side,
}

impl Sink<Message> for FrameSink {
    type Error = TransportError;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        let mut w = lock(&self.writer);
        if w.close_sent {
            return Poll::Ready(Err(TransportError::Closed));
        }
        w.framed.poll_ready_unpin(cx).map_err(ws_error)
    }

    fn start_send(self: Pin<&mut Self>, m: Message) -> Result<(), TransportError> {
        if m.kind == plexwire_transport::MessageKind::Text && std::str::from_utf8(&m.data).is_err()
        {
            return Err(TransportError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a text frame must be UTF-8: send it as binary",
            )));
        }
        lock(&self.writer)
            .framed
            .start_send_unpin(WsFrame::Data(m.kind, m.data))
            .map_err(ws_error)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        lock(&self.writer)
            .framed
            .poll_flush_unpin(cx)
            .map_err(ws_error)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        let mut w = lock(&self.writer);
        if !w.close_sent {
            ready!(w.framed.poll_ready_unpin(cx)).map_err(ws_error)?;
            w.framed
                .start_send_unpin(WsFrame::Close(Some(CLOSE_NORMAL), String::new()))
                .map_err(ws_error)?;
            w.close_sent = true;
        }
        ready!(w.framed.poll_flush_unpin(cx)).map_err(ws_error)?;
        if w.close_received && self.side == Side::Server {
            // Both closes have crossed: the server ends the TCP connection.
            let _ = ready!(w.framed.poll_close_unpin(cx));
        }
        Poll::Ready(Ok(()))
    }
}

/// A WebSocket as a plexwire [`Connection`]: one frame per message (see the
/// module docs), messages up to the socket's limit (`max_frame_size`).
pub fn into_connection(ws: WebSocket, peer: PeerInfo) -> Connection {
    let max = ws.max;
    let (read, write) = tokio::io::split(ws.io);
    let mut reader = FramedRead::new(read, WsCodec::new(ws.side, max));
    reader.read_buffer_mut().extend_from_slice(&ws.leftover);
    let mut framed = FramedWrite::new(write, WsCodec::new(ws.side, max));
    *framed.write_buffer_mut() = BytesMut::new();
    let writer = Arc::new(Mutex::new(Writer {
        framed,
        close_sent: false,
        close_received: false,
    }));
    Connection::from_typed_messages(
        FrameStream {
            reader,
            writer: writer.clone(),
            side: ws.side,
            phase: Phase::Reading,
            pending: None,
            flushing: false,
            failed: None,
        },
        FrameSink {
            writer,
            side: ws.side,
        },
        peer,
        max,
    )
}

/// The largest handshake answer head a client reads.
const MAX_HEAD: usize = 16 * 1024;

/// The client side of the handshake on `io` (RFC 6455 §4.1), within
/// [`HANDSHAKE_TIMEOUT`].
pub(crate) async fn handshake(
    io: WsIo,
    endpoint: &Endpoint,
    authority: &str,
    path: &str,
    headers: &[(String, String)],
) -> Result<WebSocket, TransportError> {
    let fail = |reason: String| TransportError::Connect {
        url: endpoint.url().to_owned(),
        source: io::Error::other(reason),
    };
    match tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        client_handshake(io, endpoint.max_frame_size(), authority, path, headers),
    )
    .await
    {
        Err(_) => Err(fail(format!(
            "no answer to the WebSocket handshake within {HANDSHAKE_TIMEOUT:?} (is this a WebSocket server?)"
        ))),
        Ok(Ok(ws)) => Ok(ws),
        Ok(Err(reason)) => Err(fail(reason)),
    }
}

async fn client_handshake(
    mut io: WsIo,
    max: usize,
    authority: &str,
    path: &str,
    headers: &[(String, String)],
) -> Result<WebSocket, String> {
    let key = tungstenite::handshake::client::generate_key();
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    );
    for (name, value) in headers {
        if name.contains(['\r', '\n', ':']) || value.contains(['\r', '\n']) {
            return Err(format!("header `{name}` has a line break or colon in it"));
        }
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str("\r\n");
    let io_err = |e: io::Error| format!("WebSocket handshake: {e}");
    io.write_all(req.as_bytes()).await.map_err(io_err)?;
    io.flush().await.map_err(io_err)?;
    let mut buf = BytesMut::with_capacity(1024);
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD {
            return Err(format!(
                "the answer to the WebSocket handshake has a head over {MAX_HEAD} bytes"
            ));
        }
        if io.read_buf(&mut buf).await.map_err(io_err)? == 0 {
            return Err("the server closed the connection during the WebSocket handshake".into());
        }
    };
    let head = buf.split_to(end);
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line.split(' ').nth(1).unwrap_or_default();
    let header = |name: &str| {
        head.split("\r\n").skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    };
    if status != "101" {
        // A short body says why (plexwire-http's `{"detail": …}`).
        let len = header("content-length")
            .and_then(|l| l.parse::<usize>().ok())
            .unwrap_or(0)
            .min(4096);
        while buf.len() < len {
            match io.read_buf(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let body = String::from_utf8_lossy(&buf[..buf.len().min(len)]).into_owned();
        return Err(format!(
            "the server refused the WebSocket handshake on {path} with {}{}{body}",
            status_line.trim_start_matches("HTTP/1.1 "),
            if body.is_empty() { "" } else { ": " }
        ));
    }
    if !header("upgrade").is_some_and(|u| u.eq_ignore_ascii_case("websocket")) {
        return Err("the server's 101 answer does not say `Upgrade: websocket`".into());
    }
    let expected = tungstenite::handshake::derive_accept_key(key.as_bytes());
    if header("sec-websocket-accept").as_deref() != Some(expected.as_str()) {
        return Err(
            "the server's `Sec-WebSocket-Accept` does not match our key (RFC 6455 §4.1)".into(),
        );
    }
    if let Some(ext) = header("sec-websocket-extensions") {
        return Err(format!(
            "the server chose the extension `{ext}`, which was not offered"
        ));
    }
    Ok(WebSocket::new(io, Side::Client, buf, max))
}
