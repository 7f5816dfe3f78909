//! The QUIC backend's entry in plexwire's transport registry: `quic://`,
//! which takes the TLS options and `streams`, and its loopback variants
//! (IPv4 and IPv6) for the test suites.

use futures_util::future::BoxFuture;
use plexwire_transport::{
    AddressShape, Backend, ClientTransport, Connection, Endpoint, Loopback, LoopbackEnv,
    OptionSpec, Registry, SchemeSpec, ServerTransport, TransportError,
};

use crate::{QuicListener, QuicTransport};

/// `streams=run` (each run on its own QUIC stream, the default) or
/// `streams=one` (every frame on one stream).
pub const OPTIONS: &[OptionSpec] = &[OptionSpec::checked("streams", |v| {
    match v {
    "run" | "one" => Ok(()),
    _ => Err(format!(
        "streams must be `run` (a QUIC stream per run) or `one` (one stream for everything), got `{v}`"
    )),
}
})];

const SCHEMES: &[SchemeSpec] = &[SchemeSpec {
    name: "quic",
    aliases: &[],
    address: AddressShape::HostPort { default_port: None },
    options: &[plexwire_tls::OPTIONS, OPTIONS],
}];

/// The QUIC backend's description for plexwire's transport registry:
/// `quic://host:port`, the `quic` cargo feature.
pub fn backend() -> Backend {
    Backend::new("quic", SCHEMES, connect, bind)
        .feature("quic")
        .loopback(loopback)
}

fn connect<'a>(
    _: &'a Registry,
    endpoint: &'a Endpoint,
) -> BoxFuture<'a, Result<Connection, TransportError>> {
    // A transport per connect: the connection gets a UDP socket of its own.
    Box::pin(async move { QuicTransport::default().connect(endpoint).await })
}

fn bind<'a>(
    _: &'a Registry,
    endpoint: &'a Endpoint,
) -> BoxFuture<'a, Result<Box<dyn ServerTransport>, TransportError>> {
    Box::pin(async move {
        Ok(Box::new(QuicListener::bind(endpoint).await?) as Box<dyn ServerTransport>)
    })
}

fn loopback(env: &LoopbackEnv) -> Result<Vec<Loopback>, String> {
    let certs = env.certs()?;
    Ok(vec![
        Loopback::encrypted("quic", "quic", "quic://127.0.0.1:0".into(), certs),
        Loopback::encrypted("quic_v6", "quic", "quic://[::1]:0".into(), certs),
    ])
}
