//! The broker protocol on the shared connection layer ([`crate::link`]):
//! what the broker, worker and client share about a packet connection — the
//! opening exchange, how packets become frames ([`PacketWire`]: codec, legacy
//! forms, TOO_LARGE answers, lanes) and the writer every role starts.

use std::time::Duration;

use bytes::Bytes;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::codec::{
    answer_codec, detect, encode_hello, AnyCodec, Codec, CodecError, CodecKind, FirstFrame,
};
use crate::error::Error;
use crate::link::{self, FirstFrameError, Outgoing, Wire, WriterConfig};
use crate::protocol::{
    Liveness, LivenessAction, LivenessConfig, Packet, PacketType, ResultCode, Role,
    PROTOCOL_VERSION,
};
use crate::transport::{
    Connection, FrameReceiver, FrameSender, Lane, LaneEnds, MessageKind, TransportError,
};

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

/// Why a connection's first frame was not accepted, and the codec to say
/// so in, if the frame told which the peer speaks.
#[derive(Debug)]
pub(crate) struct Refused {
    pub(crate) error: Error,
    /// `Some` for a frame that could be read as far as its codec
    /// ([`answer_codec`]): the peer is sent a BAD_PACKET in it.
    pub(crate) answer_with: Option<AnyCodec>,
}

impl From<Error> for Refused {
    fn from(error: Error) -> Refused {
        Refused {
            error,
            answer_with: None,
        }
    }
}

/// Broker side: reads the first frame (within `timeout`) and picks the codec.
pub(crate) async fn accept(
    rx: &mut FrameReceiver,
    timeout: Duration,
    peer: &str,
) -> Result<FirstFrame, Refused> {
    let frame = match link::first_frame(rx, timeout).await {
        Ok(frame) => frame,
        Err(FirstFrameError::Closed) => return Err(Error::Closed(peer.to_owned()).into()),
        Err(FirstFrameError::Transport(e)) => return Err(Error::from(e).into()),
        Err(e) => return Err(handshake(peer, e.to_string()).into()),
    };
    detect(&frame).map_err(|e| Refused {
        error: e.into(),
        answer_with: answer_codec(&frame),
    })
}

/// The broker protocol on the shared connection layer: [`Packet`]s encoded
/// with the connection's codec; a legacy (ReasonChip) peer gets
/// [`Packet::to_legacy`] forms and none of the native-only packets.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PacketWire {
    pub(crate) codec: AnyCodec,
    pub(crate) legacy: bool,
}

/// A packet connection's outbox; PING and PONG go on its control lane (only
/// their type: a channel of one-byte items costs an idle connection almost
/// nothing, where one of packets would cost a block of 32).
pub(crate) type Outbox = link::Outbox<PacketWire>;

impl Wire for PacketWire {
    type Message = Packet;
    type Control = PacketType;
    type DecodeError = CodecError;

    fn size_hint(packet: &Packet) -> usize {
        packet.size_hint()
    }

    fn encode(&mut self, packet: Packet, max_frame: usize) -> Option<Outgoing> {
        let packet = if self.legacy {
            packet.to_legacy()?
        } else {
            packet
        };
        let frame = match self.codec.encode(&packet) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(error = %e, packet_type = %packet.packet_type, "cannot encode packet; dropped");
                return None;
            }
        };
        if frame.len() <= max_frame {
            return Some(Outgoing {
                frame,
                lane: lane_of(&packet),
            });
        }
        // Too big for this connection: a RESULT becomes a TOO_LARGE result so
        // the waiting caller is still answered once; anything else is dropped.
        tracing::warn!(size = frame.len(), max = max_frame, packet_type = %packet.packet_type, "packet exceeds the frame limit");
        if packet.packet_type != PacketType::Result {
            return None;
        }
        let mut answer = Packet::error(
            packet.cookie,
            ResultCode::TooLarge,
            format!(
                "the result ({} bytes encoded) exceeds the connection's {max_frame}-byte frame limit",
                frame.len(),
            ),
        );
        if self.legacy {
            answer = answer.to_legacy().unwrap_or(answer);
        }
        let frame = self.codec.encode(&answer).ok()?;
        Some(Outgoing {
            frame,
            lane: lane_of(&answer),
        })
    }

    fn encode_control(&mut self, control: PacketType) -> Option<Outgoing> {
        self.encode(Packet::new(control), usize::MAX)
    }

    fn decode(&self, frame: &Bytes) -> Result<Packet, CodecError> {
        self.codec.decode(frame)
    }
}

/// Starts the writer task of a packet connection on the shared connection
/// layer ([`link::spawn_writer`]): packets sent to the returned outbox are
/// encoded with `codec` and written, control packets first, data in order;
/// `legacy` peers get [`Packet::to_legacy`] forms. A JSON connection's frames
/// are text messages on a message channel that tells (WebSocket).
pub(crate) fn spawn_writer(
    mut tx: FrameSender,
    codec: AnyCodec,
    legacy: bool,
    config: WriterConfig,
    kill: CancellationToken,
) -> (Outbox, JoinHandle<()>) {
    if codec.kind() == CodecKind::Json {
        tx.set_message_kind(MessageKind::Text);
    }
    link::spawn_writer(tx, PacketWire { codec, legacy }, config, kill)
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

/// The async side of a [`Liveness`] core, for every role's read loop: one
/// timer, re-armed only when it fires (arriving packets merely note the
/// time, so a busy connection costs no timer work per packet).
pub(crate) struct LivenessTimer {
    core: Liveness,
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl LivenessTimer {
    pub(crate) fn new(config: LivenessConfig) -> LivenessTimer {
        let core = Liveness::new(config, now());
        let sleep = Box::pin(tokio::time::sleep_until(core.poll_timeout().into()));
        LivenessTimer { core, sleep }
    }

    /// Something arrived from the peer.
    pub(crate) fn heard(&mut self) {
        self.core.handle_received(now());
    }

    /// Waits until the core asks for something (a PING to send, or the
    /// peer declared dead). Cancel-safe: dropping the future loses nothing.
    pub(crate) async fn next(&mut self) -> LivenessAction {
        loop {
            self.sleep.as_mut().await;
            let action = self.core.handle_timeout(now());
            self.sleep.as_mut().reset(self.core.poll_timeout().into());
            if let Some(action) = action {
                return action;
            }
        }
    }
}

/// [`LivenessTimer::next`] where there is one; never, for a peer that is
/// not probed (a legacy one).
pub(crate) async fn next_liveness(timer: &mut Option<LivenessTimer>) -> LivenessAction {
    match timer {
        Some(t) => t.next().await,
        None => std::future::pending().await,
    }
}

/// The shells' clock: tokio's, so that tests with a paused runtime clock
/// drive the cores in virtual time.
fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}
