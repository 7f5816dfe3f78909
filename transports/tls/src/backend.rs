//! The TLS backend's entry in plexwire's transport registry: the `tls://` and
//! `tls+unix://` schemes, the TLS options every encrypted scheme shares
//! (QUIC and `https://` declare [`OPTIONS`] too), and loopback variants
//! for the test suites.
//!
//! Today `tls://` is built over `plexwire-tcp` and `tls+unix://` over
//! `plexwire-unix` directly; the registry handed to [`connect`] and [`bind`]
//! is where a composed TLS layer will ask for the inner scheme instead.

use futures_util::future::BoxFuture;
use plexwire_transport::{
    AddressShape, Backend, ClientTransport, Connection, Endpoint, Loopback, LoopbackEnv,
    OptionSpec, Registry, SchemeSpec, ServerTransport, TransportError,
};

use crate::{TlsListener, TlsTransport};

/// The TLS options, for every scheme that encrypts with TLS: `ca`, `cert`,
/// `key`, `client_ca`, `client_auth`, `server_name`, `tls`, `insecure`
/// (meanings in the crate documentation). Values with a fixed vocabulary are
/// checked when the endpoint is, so a typo fails before any connection.
pub const OPTIONS: &[OptionSpec] = &[
    OptionSpec::any("ca"),
    OptionSpec::any("cert"),
    OptionSpec::any("key"),
    OptionSpec::any("client_ca"),
    OptionSpec::checked("client_auth", |v| match v {
        "required" | "optional" | "none" => Ok(()),
        _ => Err(format!(
            "client_auth must be required, optional or none, got `{v}`"
        )),
    }),
    OptionSpec::any("server_name"),
    OptionSpec::checked("tls", |v| {
        if !v.is_empty() && v.split(',').all(|v| matches!(v.trim(), "1.2" | "1.3")) {
            Ok(())
        } else {
            Err(format!(
                "tls must list TLS versions, e.g. `1.3` or `1.2,1.3`, got `{v}`"
            ))
        }
    }),
    OptionSpec::checked("insecure", |v| match v {
        "true" | "false" => Ok(()),
        _ => Err(format!("insecure must be true or false, got `{v}`")),
    }),
];

const SCHEMES: &[SchemeSpec] = &[
    SchemeSpec {
        name: "tls",
        aliases: &[],
        address: AddressShape::HostPort { default_port: None },
        options: &[OPTIONS],
    },
    SchemeSpec {
        name: "tls+unix",
        aliases: &[],
        address: AddressShape::AbsolutePath,
        options: &[plexwire_unix::OPTIONS, OPTIONS],
    },
];

/// The TLS backend's description for plexwire's transport registry:
/// `tls://host:port` and `tls+unix:///path`, the `tls` cargo feature.
pub fn backend() -> Backend {
    Backend::new("tls", SCHEMES, connect, bind)
        .feature("tls")
        .loopback(loopback)
}

fn connect<'a>(
    _: &'a Registry,
    endpoint: &'a Endpoint,
) -> BoxFuture<'a, Result<Connection, TransportError>> {
    Box::pin(async move { TlsTransport::default().connect(endpoint).await })
}

fn bind<'a>(
    _: &'a Registry,
    endpoint: &'a Endpoint,
) -> BoxFuture<'a, Result<Box<dyn ServerTransport>, TransportError>> {
    Box::pin(
        async move { Ok(Box::new(TlsListener::bind(endpoint).await?) as Box<dyn ServerTransport>) },
    )
}

fn loopback(env: &LoopbackEnv) -> Result<Vec<Loopback>, String> {
    let certs = env.certs()?;
    Ok(vec![
        Loopback::encrypted("tls", "tls", "tls://127.0.0.1:0".into(), certs),
        Loopback::encrypted(
            "tls_unix",
            "tls+unix",
            format!("tls+unix://{}", env.socket_path()),
            certs,
        ),
    ])
}
