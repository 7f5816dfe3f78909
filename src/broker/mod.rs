//! The broker: routes runs from clients to workers.

mod switchboard;

pub use switchboard::{PeerId, Side, Switchboard, SwitchboardConfig, SwitchboardStats, Transmit};
