//! The HTTP backend's entry in plexwire's transport registry: `http://`, and
//! with this crate's `tls` feature `https://` (which takes the TLS options),
//! and their loopback variants for the test suites.

use futures_util::future::BoxFuture;
use plexwire_transport::{
    AddressShape, Backend, ClientTransport, Connection, Endpoint, Loopback, LoopbackEnv, Registry,
    SchemeSpec, ServerTransport, TransportError,
};

use crate::{HttpListener, HttpTransport};

const HTTP: SchemeSpec = SchemeSpec {
    name: "http",
    aliases: &[],
    address: AddressShape::HostPort {
        default_port: Some(80),
    },
    options: &[],
};

#[cfg(feature = "tls")]
const SCHEMES: &[SchemeSpec] = &[
    HTTP,
    SchemeSpec {
        name: "https",
        aliases: &[],
        address: AddressShape::HostPort {
            default_port: Some(443),
        },
        options: &[plexwire_tls::OPTIONS],
    },
];

#[cfg(not(feature = "tls"))]
const SCHEMES: &[SchemeSpec] = &[HTTP];

/// The HTTP backend's description for plexwire's transport registry:
/// `http://host:port` (and `https://` with this crate's `tls` feature), the
/// `http` cargo feature of plexwire (`https://` needs `tls` as well).
pub fn backend() -> Backend {
    Backend::new("http", SCHEMES, connect, bind)
        .feature("http")
        .loopback(loopback)
}

fn connect<'a>(
    _: &'a Registry,
    endpoint: &'a Endpoint,
) -> BoxFuture<'a, Result<Connection, TransportError>> {
    Box::pin(async move { HttpTransport::default().connect(endpoint).await })
}

fn bind<'a>(
    _: &'a Registry,
    endpoint: &'a Endpoint,
) -> BoxFuture<'a, Result<Box<dyn ServerTransport>, TransportError>> {
    Box::pin(async move {
        Ok(Box::new(HttpListener::bind(endpoint).await?) as Box<dyn ServerTransport>)
    })
}

fn loopback(env: &LoopbackEnv) -> Result<Vec<Loopback>, String> {
    #[allow(unused_mut)] // without TLS, nothing is added
    let mut variants = vec![
        Loopback::plain("http", "http", "http://127.0.0.1:0".into()),
        Loopback::plain("http_v6", "http", "http://[::1]:0".into()),
    ];
    #[cfg(feature = "tls")]
    variants.push(Loopback::encrypted(
        "https",
        "https",
        "https://127.0.0.1:0".into(),
        env.certs()?,
    ));
    let _ = env;
    Ok(variants)
}
