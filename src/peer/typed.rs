//! A typed layer over the packet stream, in the shape of the seed's
//! `BaseRequest` / `HasPacketConnection`: each request type is a Rust type
//! that knows its rq_type, how to encode and decode itself, how to fulfil
//! itself against some context on the serving end, and how to decode its
//! response. A [`RequestMap`] turns a set of them into a [`Handler`];
//! [`PacketConnection::do_remote`] runs one on the peer.
//!
//! It exists so that a protocol built on the packet stream (the seed's
//! `cs.vt.stream.StreamStore`) is a list of types rather than a `match` on
//! integers repeated at both ends.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;

use super::connection::{Handler, HandlerError, PacketConnection};
use super::core::Reply;
use super::error::PacketError;

/// One request type (the seed's `BaseRequest`).
pub trait PacketRequest: Sized + Send + 'static {
    /// Its rq_type on the wire (the application's, before the +1).
    const RQ_TYPE: u64;
    /// What its response decodes to.
    type Response;

    /// Its flags and payload.
    fn to_request(&self) -> (u64, Bytes);
    /// Decodes a received request (the seed's `from_request_payload`).
    fn from_request(flags: u64, payload: Bytes) -> Result<Self, HandlerError>;
    /// Decodes an ok response (the seed's `decode_response_payload`).
    fn decode_response(flags: u64, payload: Bytes) -> Result<Self::Response, HandlerError>;
}

/// Serving a request type against a context `C` (the seed's `fulfil`).
pub trait Fulfil<C>: PacketRequest {
    /// Performs the request; the value maps to the response as a handler's does.
    fn fulfil(self, context: Arc<C>) -> impl Future<Output = Result<Reply, HandlerError>> + Send;
}

type Serve<C> = Arc<
    dyn Fn(Arc<C>, u64, Bytes) -> BoxFuture<'static, Result<Reply, HandlerError>> + Send + Sync,
>;

/// A map from rq_type to request type (the seed's `rq_type_map`), served
/// against one context.
pub struct RequestMap<C> {
    context: Arc<C>,
    types: HashMap<u64, Serve<C>>,
}

impl<C> fmt::Debug for RequestMap<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut types: Vec<&u64> = self.types.keys().collect();
        types.sort();
        f.debug_struct("RequestMap")
            .field("rq_types", &types)
            .finish()
    }
}

impl<C: Send + Sync + 'static> RequestMap<C> {
    /// An empty map serving against `context`.
    pub fn new(context: C) -> RequestMap<C> {
        RequestMap {
            context: Arc::new(context),
            types: HashMap::new(),
        }
    }

    /// Serves `R` (replacing another type with its rq_type).
    pub fn with<R: Fulfil<C>>(mut self) -> RequestMap<C> {
        let serve: Serve<C> = Arc::new(|ctx, flags, payload| {
            Box::pin(async move {
                let rq = R::from_request(flags, payload)?;
                rq.fulfil(ctx).await
            })
        });
        self.types.insert(R::RQ_TYPE, serve);
        self
    }

    /// The handler to give a [`PacketConnection`]: an unknown rq_type is a
    /// handler error (not ok, `exception during handler`).
    pub fn into_handler(self) -> Handler {
        let map = Arc::new(self);
        Handler::new(move |rq| {
            let map = map.clone();
            async move {
                let Some(serve) = map.types.get(&rq.rq_type).cloned() else {
                    return Err::<Reply, HandlerError>(
                        format!("unknown request type {}", rq.rq_type).into(),
                    );
                };
                serve(map.context.clone(), rq.flags, rq.payload).await
            }
        })
    }
}

impl PacketConnection {
    /// Runs `rq` on the peer (the seed's `conn_do_remote`): a not-ok answer
    /// is [`PacketError::NotOk`], an ok one is decoded by `R`.
    pub async fn do_remote<R: PacketRequest>(
        &self,
        rq: &R,
        channel: u64,
    ) -> Result<R::Response, PacketError> {
        let (flags, payload) = rq.to_request();
        self.call_decoded(R::RQ_TYPE, flags, payload, channel, R::decode_response)
            .await
    }
}
