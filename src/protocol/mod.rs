//! The packet protocol, without any I/O.
//!
//! [`Packet`] is a superset of ReasonChip 0.0.6's `SocketPacket`: the same ten
//! fields with the same meaning, plus native additions (EVENT, PING/PONG,
//! HELLO packets; the `hello`, `pipelines` and `timeout_ms` fields; five more
//! result codes) that are only ever sent to a peer that announced itself with
//! HELLO. `docs/protocol.md` is the normative description of the wire format.

mod liveness;
mod packet;
mod result_code;

pub use liveness::{Liveness, LivenessAction, LivenessConfig};
pub use packet::{Hello, Packet, PacketType, Payload, Role, MAX_PRIORITY, PROTOCOL_VERSION};
pub use result_code::ResultCode;
