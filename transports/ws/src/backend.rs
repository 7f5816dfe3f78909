//! The WebSocket backend's entry in plexwire's transport registry: `ws://`,
//! and with this crate's `tls` feature `wss://` (which takes the TLS
//! options), and their loopback variants for the test suites.

use futures_util::future::BoxFuture;
use plexwire_transport::{
    AddressShape, Backend, ClientTransport, Connection, Endpoint, Loopback, LoopbackEnv, Registry,
    SchemeSpec, ServerTransport, TransportError,
};

use crate::{WsListener, WsTransport};

const WS: SchemeSpec = SchemeSpec {
    name: "ws",
    aliases: &[],
    address: AddressShape::HostPort {
        default_port: Some(80),
    },
    options: &[],
};

#[cfg(feature = "tls")]
const SCHEMES: &[SchemeSpec] = &[
    WS,
    SchemeSpec {
        name: "wss",
        aliases: &[],
        address: AddressShape::HostPort {
            default_port: Some(443),
        },
        options: &[plexwire_tls::OPTIONS],
    },
];

#[cfg(not(feature = "tls"))]
const SCHEMES: &[SchemeSpec] = &[WS];

/// The WebSocket backend's description for plexwire's transport registry:
/// `ws://host:port/path` (and `wss://` with this crate's `tls` feature), the
/// `ws` cargo feature of plexwire (`wss://` needs `tls` as well).
pub fn backend() -> Backend {
    Backend::new("ws", SCHEMES, connect, bind)
        .feature("ws")
        .loopback(loopback)
}

fn connect<'a>(
    _: &'a Registry,
    endpoint: &'a Endpoint,
) -> BoxFuture<'a, Result<Connection, TransportError>> {
    Box::pin(async move { WsTransport::default().connect(endpoint).await })
}

fn bind<'a>(
    _: &'a Registry,
    endpoint: &'a Endpoint,
) -> BoxFuture<'a, Result<Box<dyn ServerTransport>, TransportError>> {
    Box::pin(
        async move { Ok(Box::new(WsListener::bind(endpoint).await?) as Box<dyn ServerTransport>) },
    )
}

fn loopback(env: &LoopbackEnv) -> Result<Vec<Loopback>, String> {
    #[allow(unused_mut)] // without TLS, nothing is added
    let mut variants = vec![
        Loopback::plain("ws", "ws", "ws://127.0.0.1:0/ws".into()),
        Loopback::plain("ws_v6", "ws", "ws://[::1]:0/ws".into()),
    ];
    #[cfg(feature = "tls")]
    variants.push(Loopback::encrypted(
        "wss",
        "wss",
        "wss://127.0.0.1:0/ws".into(),
        env.certs()?,
    ));
    let _ = env;
    Ok(variants)
}
