//! The two traits every backend implements.
//!
//! They are deliberately small. A [`ClientTransport`] makes connections to
//! endpoints (tower's `MakeConnection` shape); a [`ServerTransport`] is a bound
//! listener that yields accepted connections (tarpc's listener shape). Both are
//! object safe, so a program can pick its backend from a URL at run time and
//! hold it as `Box<dyn …>`.

use std::any::Any;
use std::sync::Arc;

use async_trait::async_trait;

use crate::{Connection, Endpoint, TransportError};

/// Opens connections to endpoints.
#[async_trait]
pub trait ClientTransport: Send + Sync {
    /// Connects to `endpoint`.
    ///
    /// Cancel safe: dropping the future leaves nothing behind.
    async fn connect(&self, endpoint: &Endpoint) -> Result<Connection, TransportError>;
}

/// A bound listener.
///
/// Dropping it stops listening (and, for UNIX sockets, removes the socket file).
#[async_trait]
pub trait ServerTransport: Send + Sync {
    /// Waits for the next connection.
    ///
    /// Cancel safe: if the future is dropped, no connection is lost. An error
    /// concerns one attempted connection (or a passing resource shortage); the
    /// listener stays usable.
    async fn accept(&mut self) -> Result<Connection, TransportError>;

    /// The endpoint actually bound (with the real port when port 0 was asked for).
    fn local_endpoint(&self) -> &Endpoint;

    /// This listener as [`Any`], so code holding it as `Box<dyn
    /// ServerTransport>` can reach its backend's own API by downcasting (an
    /// HTTP listener's routes). `None` unless the backend offers it.
    fn as_any_mut(&mut self) -> Option<&mut dyn Any> {
        None
    }
}

#[async_trait]
impl<T: ClientTransport + ?Sized> ClientTransport for Arc<T> {
    async fn connect(&self, endpoint: &Endpoint) -> Result<Connection, TransportError> {
        (**self).connect(endpoint).await
    }
}

#[async_trait]
impl<T: ClientTransport + ?Sized> ClientTransport for Box<T> {
    async fn connect(&self, endpoint: &Endpoint) -> Result<Connection, TransportError> {
        (**self).connect(endpoint).await
    }
}

#[async_trait]
impl<T: ServerTransport + ?Sized> ServerTransport for Box<T> {
    async fn accept(&mut self) -> Result<Connection, TransportError> {
        (**self).accept().await
    }

    fn local_endpoint(&self) -> &Endpoint {
        (**self).local_endpoint()
    }

    fn as_any_mut(&mut self) -> Option<&mut dyn Any> {
        (**self).as_any_mut()
    }
}
