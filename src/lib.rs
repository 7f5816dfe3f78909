//! plexwire runs work across processes and machines over any transport.
//!
//! (Crate documentation is completed below.)

#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod broker;
pub mod builtin;
pub mod client;
pub mod codec;
pub mod protocol;
pub mod transport;

pub use transport::{connect, listen};
mod conn;
pub mod error;
pub mod worker;

pub use error::{Error, RunError};
