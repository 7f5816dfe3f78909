//! The TLS backend's entry in plexwire's transport registry: the `tls://` and
//! `tls+unix://` schemes, the TLS options every encrypted scheme shares
//! (QUIC and `https://` declare [`OPTIONS`] too), and loopback variants
//! for the test suites.
//!
//! TLS is a layer, not a socket type: `tls://h:p` is TLS over whatever
//! backend the registry has for `tcp://h:p`, and `tls+unix:///p` over the
//! one for `unix:///p` ([`plain_endpoint`]). This crate depends on no
//! socket backend; it asks the registry it is called with for the plain
//! connection or listener ([`connect_plain`], [`listen_plain`]).

use futures_util::future::BoxFuture;
use plexwire_transport::{
    Address, AddressShape, Backend, Connection, Endpoint, Loopback, LoopbackEnv, OptionSpec,
    Registry, SchemeSpec, ServerTransport, TransportError, UNIX_SOCKET_OPTIONS,
};

use crate::{TlsAcceptor, TlsClientConfig, TlsConnector, TlsListener, TlsServerConfig};

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
        options: &[UNIX_SOCKET_OPTIONS, OPTIONS],
    },
];

/// The TLS backend's description for plexwire's transport registry:
/// `tls://host:port` and `tls+unix:///path`, the `tls` cargo feature.
pub fn backend() -> Backend {
    Backend::new("tls", SCHEMES, connect, bind)
        .feature("tls")
        .loopback(loopback)
}

/// The plain endpoint under a TLS one: `tcp://host:port` under `tls://`,
/// `unix:///path` (with its `mode`) under `tls+unix://`.
pub fn plain_endpoint(endpoint: &Endpoint) -> Result<Endpoint, TransportError> {
    let url = match (endpoint.scheme(), endpoint.address()) {
        ("tls", Address::Host { host, port, .. }) if host.contains(':') => {
            format!("tcp://[{host}]:{port}")
        }
        ("tls", Address::Host { host, port, .. }) => format!("tcp://{host}:{port}"),
        ("tls+unix", Address::Path(p)) => {
            let path = plexwire_transport::encode_url_part(&p.to_string_lossy());
            match endpoint.unix_mode() {
                Some(mode) => format!("unix://{path}?mode={mode:o}"),
                None => format!("unix://{path}"),
            }
        }
        _ => return Err(endpoint.wrong_backend("tls")),
    };
    Ok(Endpoint::parse(&url)?.with_max_frame_size(endpoint.max_frame_size()))
}

/// Errors of the plain backend name the plain URL; say the TLS one instead.
fn rename(e: TransportError, endpoint: &Endpoint) -> TransportError {
    let url = endpoint.url().to_owned();
    match e {
        TransportError::Connect { source, .. } => TransportError::Connect { url, source },
        TransportError::Bind { source, .. } => TransportError::Bind { url, source },
        other => other,
    }
}

/// The plain connection under a `tls://` or `tls+unix://` endpoint, made
/// by `registry`'s backend for [`plain_endpoint`]; errors name the TLS URL.
pub async fn connect_plain(
    registry: &Registry,
    endpoint: &Endpoint,
) -> Result<Connection, TransportError> {
    let plain = plain_endpoint(endpoint)?;
    registry
        .connect(&plain)
        .await
        .map_err(|e| rename(e, endpoint))
}

/// The plain listener under a `tls://` or `tls+unix://` endpoint, bound by
/// `registry`'s backend for [`plain_endpoint`]; errors name the TLS URL.
pub async fn listen_plain(
    registry: &Registry,
    endpoint: &Endpoint,
) -> Result<Box<dyn ServerTransport>, TransportError> {
    let plain = plain_endpoint(endpoint)?;
    registry
        .listen(&plain)
        .await
        .map_err(|e| rename(e, endpoint))
}

fn connect<'a>(
    registry: &'a Registry,
    endpoint: &'a Endpoint,
) -> BoxFuture<'a, Result<Connection, TransportError>> {
    Box::pin(async move {
        let endpoint = &backend().check(endpoint)?;
        // Settings (files read) are checked before any connection is made.
        let connector = TlsConnector::new(&TlsClientConfig::from_endpoint(endpoint)?, endpoint)?;
        connector
            .connect(connect_plain(registry, endpoint).await?)
            .await
    })
}

fn bind<'a>(
    registry: &'a Registry,
    endpoint: &'a Endpoint,
) -> BoxFuture<'a, Result<Box<dyn ServerTransport>, TransportError>> {
    Box::pin(async move {
        let endpoint = &backend().check(endpoint)?;
        // Read the certificate before binding, so a bad file leaves no socket behind.
        let acceptor = TlsAcceptor::new(&TlsServerConfig::from_endpoint(endpoint)?, endpoint)?;
        let inner = listen_plain(registry, endpoint).await?;
        Ok(Box::new(TlsListener::over(inner, acceptor)) as Box<dyn ServerTransport>)
    })
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
