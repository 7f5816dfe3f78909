//! What the broker, worker and client share about a packet connection: the
//! opening exchange, and a writer task with a bounded queue that coalesces
//! writes (it feeds every packet already queued, then flushes once: many
//! packets per syscall under load, no added latency when idle).

use std::time::Duration;

use futures_util::SinkExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::codec::{detect, encode_hello, AnyCodec, Codec, CodecKind, FirstFrame};
use crate::error::Error;
use crate::protocol::{Packet, PacketType, ResultCode, Role, PROTOCOL_VERSION};
use crate::transport::{Connection, FrameReceiver, FrameSender, Lane, LaneEnds, TransportError};

/// Packets fed before a flush is forced, so one busy queue cannot starve the flush forever.
const MAX_BATCH: usize = 256;

/// A connection after its opening exchange.
pub(crate) struct Opened {
    pub(crate) tx: FrameSender,
    pub(crate) rx: FrameReceiver,
    pub(crate) codec: AnyCodec,
    pub(crate) peer: String,
}

/// Client/worker side: opens the connection. Native: sends HELLO and waits for
/// the broker's HELLO. Legacy (ReasonChip-compatible): JSON, no HELLO.
///
/// A broker that refuses us answers a RESULT whose code ends up in
/// [`Error::Handshake`]'s `rc`; one that closes the connection right after
/// our HELLO without answering (end of stream or reset: a ReasonChip broker)
/// gives [`Error::ClosedAfterHello`], on which the caller may reconnect in
/// legacy mode (`crate::reconnect::open_any`).
pub(crate) async fn open(
    conn: Connection,
    role: Role,
    codec: CodecKind,
    legacy: bool,
    token: Option<String>,
    timeout: Duration,
) -> Result<Opened, Error> {
    let peer = conn.peer().to_string();
    let (mut tx, mut rx) = conn.into_frames();
    if legacy {
        if codec != CodecKind::Json {
            return Err(handshake(
                &peer,
                "legacy (ReasonChip) mode speaks JSON only; choose the json codec".into(),
            ));
        }
        return Ok(Opened {
            tx,
            rx,
            codec: AnyCodec::new(CodecKind::Json)?,
            peer,
        });
    }
    let codec = AnyCodec::new(codec)?;
    tx.send_frame(encode_hello(
        &codec,
        &Packet::hello(role, codec.kind().as_str(), token),
    )?)
    .await?;
    let answer = match tokio::time::timeout(timeout, rx.recv_frame()).await {
        Err(_) => {
            return Err(handshake(
                &peer,
                format!("no HELLO from the broker within {timeout:?}"),
            ))
        }
        Ok(None) => return Err(Error::ClosedAfterHello { peer }),
        // A reset counts; half an answer (truncated) does not: that broker spoke.
        Ok(Some(Err(e))) if e.is_disconnect() && !matches!(e, TransportError::Truncated { .. }) => {
            return Err(Error::ClosedAfterHello { peer })
        }
        Ok(Some(frame)) => frame?,
    };
    let packet = codec.decode(&answer)?;
    match (packet.packet_type, packet.rc) {
        (PacketType::Hello, _) => {
            let version = packet.hello.map(|h| h.version).unwrap_or_default();
            if version != PROTOCOL_VERSION {
                return Err(handshake(
                    &peer,
                    format!("the broker speaks protocol {version}, we speak {PROTOCOL_VERSION}"),
                ));
            }
        }
        (_, Some(rc)) => {
            return Err(Error::Handshake {
                reason: format!("refused with {rc}: {}", packet.error.unwrap_or_default()),
                rc: Some(rc),
                peer,
            });
        }
        (other, None) => return Err(handshake(&peer, format!("expected HELLO, got {other}"))),
    }
    Ok(Opened {
        tx,
        rx,
        codec,
        peer,
    })
}

/// A handshake failure that is not a refusal by the broker (no result code).
fn handshake(peer: &str, reason: String) -> Error {
    Error::Handshake {
        peer: peer.to_owned(),
        rc: None,
        reason,
    }
}

/// Broker side: reads the first frame (within `timeout`) and picks the codec.
pub(crate) async fn accept(
    rx: &mut FrameReceiver,
    timeout: Duration,
    peer: &str,
) -> Result<FirstFrame, Error> {
    let frame = match tokio::time::timeout(timeout, rx.recv_frame()).await {
        Err(_) => return Err(handshake(peer, format!("sent nothing within {timeout:?}"))),
        Ok(None) => return Err(Error::Closed(peer.to_owned())),
        Ok(Some(frame)) => frame?,
    };
    Ok(detect(&frame)?)
}

/// The sending side of a connection's writer task.
#[derive(Debug, Clone)]
pub(crate) struct Outbox {
    /// Data packets, in order; bounded by the connection's send queue.
    pub(crate) data: mpsc::Sender<Packet>,
    /// PING and PONG (only their type: they carry nothing else), written
    /// ahead of queued data: a peer whose data queue is full (a long event
    /// stream) still answers liveness probes. A channel of one-byte items
    /// costs an idle connection almost nothing, where one of packets would
    /// cost a block of 32.
    pub(crate) control: mpsc::Sender<PacketType>,
}

/// Control packets queued at most: liveness needs only a few.
const CONTROL_QUEUE: usize = 16;

/// Starts the writer task of a connection: packets sent to the returned
/// outbox are encoded with `codec` and written, control packets first, data
/// in order. The data queue holds at most `queue` packets. When every data
/// sender is dropped the writer flushes what is queued and closes the
/// sending direction.
///
/// `legacy` peers get [`Packet::to_legacy`] forms (native-only packets are dropped).
/// Cancelling `kill` stops the writer at once, queued packets unsent (for a
/// peer that stopped reading, or a session that is being torn down).
/// `queued_bytes`, if given, is decreased by each data packet's
/// [`Packet::size_hint`] as it is written (whoever queues counts it in).
pub(crate) fn spawn_writer(
    mut tx: FrameSender,
    codec: AnyCodec,
    queue: usize,
    legacy: bool,
    kill: CancellationToken,
    queued_bytes: Option<Arc<AtomicUsize>>,
) -> (Outbox, JoinHandle<()>) {
    let (data, mut rx) = mpsc::channel::<Packet>(queue.max(1));
    let (control, mut control_rx) = mpsc::channel::<PacketType>(CONTROL_QUEUE);
    let sent = move |p: &Packet| {
        if let Some(q) = &queued_bytes {
            q.fetch_sub(p.size_hint(), Ordering::Relaxed);
        }
    };
    let task = tokio::spawn(async move {
        let work = async {
            loop {
                let first = tokio::select! {
                    biased;
                    Some(c) = control_rx.recv() => Packet::new(c),
                    d = rx.recv() => match d {
                        Some(p) => {
                            sent(&p);
                            p
                        }
                        None => break,
                    },
                };
                feed(&mut tx, &codec, first, legacy).await?;
                let mut n = 1;
                while n < MAX_BATCH {
                    if let Ok(c) = control_rx.try_recv() {
                        feed(&mut tx, &codec, Packet::new(c), legacy).await?;
                    } else if let Ok(p) = rx.try_recv() {
                        sent(&p);
                        feed(&mut tx, &codec, p, legacy).await?;
                    } else {
                        break;
                    }
                    n += 1;
                }
                tx.flush().await?;
            }
            tx.close().await
        };
        let result: Result<(), TransportError> = tokio::select! {
            _ = kill.cancelled() => Ok(()),
            r = work => r,
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "writer stopped");
        }
    });
    (Outbox { data, control }, task)
}

/// The lane a packet travels on, on a transport with lanes (QUIC): one per
/// run and direction. RUN and CANCEL share the requester's lane, EVENTs and
/// the RESULT the answerer's; a CANCEL or a detached RUN is the last request
/// (the lane of any other RUN ends when its RESULT arrives, through
/// [`end_request_lane`]), the RESULT the last answer. Everything else goes on
/// the connection's main channel.
fn lane_of(packet: &Packet) -> Option<Lane> {
    let key = packet.cookie?.as_u128();
    let (answer, last) = match packet.packet_type {
        PacketType::Run => (false, packet.detach == Some(true)),
        PacketType::Cancel => (false, true),
        PacketType::Event => (true, false),
        PacketType::Result => (true, true),
        _ => return None,
    };
    Some(Lane {
        key: if answer { key ^ ANSWER_LANE } else { key },
        last,
    })
}

/// Distinguishes a run's answer lane from its request lane.
const ANSWER_LANE: u128 = 1;

/// Ends the request lane of the run whose RESULT `packet` is (called by the
/// reader of a side that sends RUNs).
pub(crate) fn end_request_lane(ends: Option<&LaneEnds>, packet: &Packet) {
    if let (Some(ends), Some(cookie)) = (ends, packet.cookie) {
        if packet.packet_type == PacketType::Result {
            ends.end(cookie.as_u128());
        }
    }
}

async fn feed(
    tx: &mut FrameSender,
    codec: &AnyCodec,
    packet: Packet,
    legacy: bool,
) -> Result<(), TransportError> {
    let packet = if legacy {
        match packet.to_legacy() {
            Some(p) => p,
            None => return Ok(()),
        }
    } else {
        packet
    };
    let frame = match codec.encode(&packet) {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(error = %e, packet_type = %packet.packet_type, "cannot encode packet; dropped");
            return Ok(());
        }
    };
    if frame.len() > tx.max_frame_size() {
        // Too big for this connection: a RESULT becomes a TOO_LARGE result so
        // the waiting caller is still answered once; anything else is dropped.
        tracing::warn!(size = frame.len(), max = tx.max_frame_size(), packet_type = %packet.packet_type, "packet exceeds the frame limit");
        if packet.packet_type == PacketType::Result {
            let mut answer = Packet::error(
                packet.cookie,
                ResultCode::TooLarge,
                format!(
                    "the result ({} bytes encoded) exceeds the connection's {}-byte frame limit",
                    frame.len(),
                    tx.max_frame_size()
                ),
            );
            if legacy {
                answer = answer.to_legacy().unwrap_or(answer);
            }
            if let Ok(f) = codec.encode(&answer) {
                return tx.feed_on(lane_of(&answer), f).await;
            }
        }
        return Ok(());
    }
    tx.feed_on(lane_of(&packet), frame).await
}
