//! The open transport registry: which backends a program can reach by URL.
//!
//! This crate holds no list of backends. Each backend crate describes itself
//! with a [`Backend`] (`plexwire_tcp::backend()`, …): its name, the cargo
//! feature of `plexwire` that provides it, its URL schemes with the address
//! shape and options each takes ([`SchemeSpec`]), how it connects and binds,
//! and how a test suite runs it on loopback ([`Loopback`]). The `plexwire`
//! crate builds one [`Registry`] from the backends compiled into the build,
//! one line per backend, and records the schemes of the backends that exist
//! but were left out, with the feature that brings them in; a program or a
//! test may register more at run time.
//!
//! [`Registry::check`] is the second step of parsing an endpoint (see the
//! [`endpoint`](crate::Endpoint) module): the scheme is looked up, then the
//! address and options are checked against the scheme's declaration.
//!
//! Backends that are layers over another backend (TLS over TCP) get the
//! registry in their connect and bind functions, so that they can ask it for
//! the inner scheme's connection or listener.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use futures_util::future::BoxFuture;

use crate::endpoint::MAX_FRAME_SIZE_OPTION;
use crate::{Address, Connection, Endpoint, ServerTransport, TransportError};

/// How a backend connects: to a checked endpoint of one of its schemes.
pub type ConnectFn =
    for<'a> fn(&'a Registry, &'a Endpoint) -> BoxFuture<'a, Result<Connection, TransportError>>;

/// How a backend binds a listener on a checked endpoint of one of its schemes.
pub type BindFn = for<'a> fn(
    &'a Registry,
    &'a Endpoint,
) -> BoxFuture<'a, Result<Box<dyn ServerTransport>, TransportError>>;

/// How a backend is reached on loopback by test suites, benchmarks and demos:
/// fresh listen URLs (see [`Loopback`]), or why it cannot run here.
pub type LoopbackFn = fn(&LoopbackEnv) -> Result<Vec<Loopback>, String>;

/// Checks the value of an option; `Err` says what is wrong and what is allowed.
pub type ValueCheck = fn(&str) -> Result<(), String>;

/// The form of address a scheme takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AddressShape {
    /// `host:port` (IPv6 in brackets) and a path, which only some backends
    /// use; without a port, `default_port` if the scheme has one.
    HostPort {
        /// The port of `scheme://host`, if the scheme has a default.
        default_port: Option<u16>,
    },
    /// An absolute filesystem path: `scheme:///abs/path`.
    AbsolutePath,
    /// A name without `/`: `mem://name`.
    Name,
}

/// One option a scheme takes in its query string.
#[derive(Debug, Clone, Copy)]
pub struct OptionSpec {
    /// The key, e.g. `mode`.
    pub name: &'static str,
    /// Checks the value when the endpoint is checked, so a typo fails then
    /// rather than at the first connection.
    pub check: ValueCheck,
}

impl OptionSpec {
    /// An option whose value may be anything but empty.
    pub const fn any(name: &'static str) -> OptionSpec {
        OptionSpec {
            name,
            check: non_empty,
        }
    }

    /// An option whose value `check` checks.
    pub const fn checked(name: &'static str, check: ValueCheck) -> OptionSpec {
        OptionSpec { name, check }
    }
}

/// The options of a UNIX socket listener: `mode=660`, the socket file's
/// permission bits in octal ([`Endpoint::unix_mode`]). The UNIX backend
/// declares them, and so does every layer over UNIX sockets (`tls+unix://`),
/// which need not depend on that backend to do so.
pub const UNIX_SOCKET_OPTIONS: &[OptionSpec] = &[OptionSpec::checked("mode", check_mode)];

fn check_mode(v: &str) -> Result<(), String> {
    match u32::from_str_radix(v, 8) {
        Ok(m) if m <= 0o777 => Ok(()),
        _ => Err(format!(
            "mode must be octal permission bits such as 660, got `{v}`"
        )),
    }
}

fn non_empty(v: &str) -> Result<(), String> {
    if v.is_empty() {
        Err("needs a value".into())
    } else {
        Ok(())
    }
}

/// One URL scheme of a backend.
#[derive(Debug, Clone, Copy)]
pub struct SchemeSpec {
    /// The canonical name (`unix`); endpoints of an alias get this name.
    pub name: &'static str,
    /// Other spellings of the same scheme (`socket`).
    pub aliases: &'static [&'static str],
    /// The address it takes.
    pub address: AddressShape,
    /// The options it takes besides `max_frame_size`, in groups (so a layer
    /// can reuse another's: `tls+unix` takes the UNIX and the TLS options).
    pub options: &'static [&'static [OptionSpec]],
}

impl SchemeSpec {
    /// Whether `scheme` is this scheme's name or one of its aliases.
    pub fn answers_to(&self, scheme: &str) -> bool {
        self.name == scheme || self.aliases.contains(&scheme)
    }

    /// Every option key this scheme takes, `max_frame_size` first.
    pub fn option_names(&self) -> Vec<&'static str> {
        let mut names = vec![MAX_FRAME_SIZE_OPTION];
        names.extend(self.options.iter().flat_map(|g| g.iter().map(|o| o.name)));
        names
    }

    /// Checks `endpoint` (of this scheme or an alias) against this
    /// declaration: the address shape, the option keys and their values.
    /// Returns it with the canonical scheme name and, for a host written
    /// without a port, the default port.
    pub fn check(&self, endpoint: &Endpoint) -> Result<Endpoint, TransportError> {
        let written = endpoint.written_scheme();
        let address = self.check_address(endpoint, written)?;
        for (key, value) in endpoint.options() {
            if key == MAX_FRAME_SIZE_OPTION {
                continue; // checked by Endpoint::parse
            }
            let spec = self
                .options
                .iter()
                .flat_map(|g| g.iter())
                .find(|o| o.name == key)
                .ok_or_else(|| {
                    endpoint.invalid(format!(
                        "unknown option `{key}` for {written}://; known: {}",
                        self.option_names().join(", ")
                    ))
                })?;
            (spec.check)(value).map_err(|why| {
                endpoint.invalid(if why.starts_with(key) {
                    why
                } else {
                    format!("option `{key}` {why}")
                })
            })?;
        }
        let checked = endpoint.clone().with_scheme(self.name);
        Ok(match address {
            Some(a) => checked.with_parsed_address(a),
            None => checked,
        })
    }

    /// `Some` when the address must change (a default port filled in).
    fn check_address(
        &self,
        endpoint: &Endpoint,
        written: &str,
    ) -> Result<Option<Address>, TransportError> {
        let example = format!("{written}://127.0.0.1:51500");
        match (self.address, endpoint.address()) {
            (AddressShape::HostPort { .. }, Address::Host { host, .. }) => {
                check_host(endpoint, host)?;
                Ok(None)
            }
            (AddressShape::HostPort { default_port }, Address::Name(name)) => {
                let (host, path) = match name.find('/') {
                    Some(i) => (&name[..i], &name[i..]),
                    None => (name.as_str(), "/"),
                };
                let host = host
                    .strip_prefix('[')
                    .and_then(|h| h.strip_suffix(']'))
                    .unwrap_or(host);
                if host.is_empty() {
                    return Err(endpoint.invalid(format!("the host is missing, e.g. `{example}`")));
                }
                let port = default_port.ok_or_else(|| {
                    endpoint.invalid(format!("the port is missing, e.g. `{example}`"))
                })?;
                check_host(endpoint, host)?;
                Ok(Some(Address::Host {
                    host: host.to_owned(),
                    port,
                    path: path.to_owned(),
                }))
            }
            (AddressShape::HostPort { .. }, _) => {
                Err(endpoint.invalid(format!("the host is missing, e.g. `{example}`")))
            }
            (AddressShape::AbsolutePath, Address::Path(p)) if p != Path::new("/") => Ok(None),
            (AddressShape::AbsolutePath, Address::Path(_)) => {
                Err(endpoint.invalid("the socket path is empty"))
            }
            (AddressShape::AbsolutePath, _) => Err(endpoint.invalid(format!(
                "a {written}:// endpoint needs an absolute path, e.g. `{written}:///tmp/plexwire.sock`"
            ))),
            (AddressShape::Name, Address::Name(n)) if !n.is_empty() && !n.contains('/') => {
                Ok(None)
            }
            (AddressShape::Name, _) => Err(endpoint.invalid(format!(
                "a {written}:// endpoint needs a name without `/`, e.g. `{written}://broker`"
            ))),
        }
    }
}

/// Host names and IP literals only: the `url` crate lets opaque hosts hold
/// characters no resolver accepts.
fn check_host(endpoint: &Endpoint, host: &str) -> Result<(), TransportError> {
    let fine = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'));
    if fine {
        Ok(())
    } else {
        Err(endpoint.invalid(format!("`{host}` is not a valid host name or IP address")))
    }
}

/// Test certificates a suite hands to the TLS-based backends' loopback
/// functions: a CA, and a server certificate for `localhost`, `127.0.0.1`
/// and `::1` with its key (PEM files).
#[derive(Debug, Clone)]
pub struct DevCerts {
    /// The CA certificate a connecting side trusts.
    pub ca: PathBuf,
    /// The server certificate chain a listener presents.
    pub cert: PathBuf,
    /// The server certificate's private key.
    pub key: PathBuf,
}

impl DevCerts {
    /// `cert=…&key=…`: what a listener presents (values percent-encoded).
    pub fn listen_options(&self) -> String {
        format!(
            "cert={}&key={}",
            crate::encode_url_part(&self.cert.to_string_lossy()),
            crate::encode_url_part(&self.key.to_string_lossy())
        )
    }

    /// `ca=…`: what a connecting side trusts (value percent-encoded).
    pub fn connect_options(&self) -> String {
        format!("ca={}", crate::encode_url_part(&self.ca.to_string_lossy()))
    }
}

/// What a loopback function may use: where to put socket files, and test
/// certificates for backends that need them.
#[derive(Debug, Clone)]
pub struct LoopbackEnv {
    /// A directory for UNIX socket files (it must exist, and should be short:
    /// socket paths are limited to about 100 bytes).
    pub scratch_dir: PathBuf,
    /// Certificates for TLS-based backends; without them they cannot run.
    pub certs: Option<DevCerts>,
}

impl LoopbackEnv {
    /// A name no other call in this process returned: `{prefix}-{pid}-{n}`.
    pub fn fresh_name(&self, prefix: &str) -> String {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}-{}-{n}", std::process::id())
    }

    /// A fresh socket path in the scratch directory, percent-encoded for a URL.
    pub fn socket_path(&self) -> String {
        let path = self
            .scratch_dir
            .join(format!("{}.sock", self.fresh_name("s")));
        crate::encode_url_part(&path.to_string_lossy())
    }

    /// The certificates, or the error a TLS-based loopback function returns.
    pub fn certs(&self) -> Result<&DevCerts, String> {
        self.certs
            .as_ref()
            .ok_or_else(|| "this backend needs test certificates (LoopbackEnv::certs)".into())
    }
}

/// One way to run a backend on loopback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loopback {
    /// A name for test output: `tcp`, `tcp_v6`, `tls_unix`.
    pub label: String,
    /// The scheme it uses (suites that run one variant per scheme pick the first).
    pub scheme: &'static str,
    /// What to listen on: port 0 on 127.0.0.1 or ::1, a fresh socket path or name.
    pub listen: String,
    /// `key=value&…` a connecting side adds to the address the listener
    /// reports, e.g. `ca=/…/ca.pem`; empty if it needs nothing.
    pub connect_options: String,
}

impl Loopback {
    /// A variant whose connecting side needs no options.
    pub fn plain(label: &str, scheme: &'static str, listen: String) -> Loopback {
        Loopback {
            label: label.to_owned(),
            scheme,
            listen,
            connect_options: String::new(),
        }
    }

    /// A TLS-based variant: the listener presents `certs`' certificate, the
    /// connecting side trusts its CA. `listen` is the URL without a query.
    pub fn encrypted(
        label: &str,
        scheme: &'static str,
        listen: String,
        certs: &DevCerts,
    ) -> Loopback {
        Loopback {
            label: label.to_owned(),
            scheme,
            listen: format!("{listen}?{}", certs.listen_options()),
            connect_options: certs.connect_options(),
        }
    }
}

fn no_loopback(_: &LoopbackEnv) -> Result<Vec<Loopback>, String> {
    Ok(Vec::new())
}

/// A backend's description; see the module documentation.
#[derive(Clone, Copy)]
pub struct Backend {
    name: &'static str,
    feature: Option<&'static str>,
    schemes: &'static [SchemeSpec],
    connect: ConnectFn,
    bind: BindFn,
    loopback: LoopbackFn,
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backend")
            .field("name", &self.name)
            .field("feature", &self.feature)
            .field(
                "schemes",
                &self.schemes.iter().map(|s| s.name).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Backend {
    /// A backend named `name` serving `schemes`; with no cargo feature (always
    /// there) and no loopback variants until [`Backend::feature`] and
    /// [`Backend::loopback`] say otherwise.
    pub const fn new(
        name: &'static str,
        schemes: &'static [SchemeSpec],
        connect: ConnectFn,
        bind: BindFn,
    ) -> Backend {
        Backend {
            name,
            feature: None,
            schemes,
            connect,
            bind,
            loopback: no_loopback,
        }
    }

    /// The cargo feature of `plexwire` that provides this backend.
    pub const fn feature(mut self, feature: &'static str) -> Backend {
        self.feature = Some(feature);
        self
    }

    /// The same backend, its listeners bound by `bind` instead: how a
    /// program puts more on a backend's listeners (the `plexwire` crate
    /// adds ReasonChip's POST route to every HTTP listener this way).
    pub const fn with_bind(mut self, bind: BindFn) -> Backend {
        self.bind = bind;
        self
    }

    /// How suites run it on loopback.
    pub const fn loopback(mut self, loopback: LoopbackFn) -> Backend {
        self.loopback = loopback;
        self
    }

    /// Its name (`tcp`, `tls`, …).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The cargo feature of `plexwire` that provides it (`None`: always there).
    pub fn cargo_feature(&self) -> Option<&'static str> {
        self.feature
    }

    /// Its schemes.
    pub fn schemes(&self) -> &'static [SchemeSpec] {
        self.schemes
    }

    /// The declaration of `scheme` (a name or alias), if this backend serves it.
    pub fn scheme(&self, scheme: &str) -> Option<&'static SchemeSpec> {
        self.schemes.iter().find(|s| s.answers_to(scheme))
    }

    /// Checks `endpoint` against this backend's declaration of its scheme;
    /// backends call it when used directly, so a misspelt option fails there
    /// too. See [`SchemeSpec::check`].
    pub fn check(&self, endpoint: &Endpoint) -> Result<Endpoint, TransportError> {
        self.scheme(endpoint.scheme())
            .ok_or_else(|| endpoint.wrong_backend(self.name))?
            .check(endpoint)
    }

    /// Fresh loopback variants of this backend (see [`Loopback`]).
    pub fn loopback_variants(&self, env: &LoopbackEnv) -> Result<Vec<Loopback>, String> {
        (self.loopback)(env)
    }
}

/// A scheme another registration already claimed.
#[derive(Debug, thiserror::Error)]
#[error("scheme `{scheme}` of backend `{backend}` is already served by backend `{existing}`")]
pub struct DuplicateScheme {
    /// The scheme (or alias).
    pub scheme: &'static str,
    /// The backend being registered.
    pub backend: &'static str,
    /// The backend that has it.
    pub existing: &'static str,
}

#[derive(Debug, Default)]
struct Entries {
    backends: Vec<Backend>,
    /// Schemes of backends this build lacks, and the feature(s) that bring them.
    missing: Vec<(&'static str, &'static str)>,
}

/// The backends a program can reach by URL, and the features that would
/// bring the others; see the module documentation.
///
/// Registering takes `&self` (a lock held only for the lookup, never across
/// an `.await`), so the process-wide registry of the `plexwire` crate can
/// grow at run time.
#[derive(Debug, Default)]
pub struct Registry {
    entries: RwLock<Entries>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Entries> {
        self.entries.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds `backend`. A scheme or alias that another backend serves is an error.
    pub fn register(&self, backend: Backend) -> Result<(), DuplicateScheme> {
        let mut e = self.entries.write().unwrap_or_else(|p| p.into_inner());
        for spec in backend.schemes {
            for scheme in std::iter::once(&spec.name).chain(spec.aliases) {
                if let Some(existing) = e.backends.iter().find(|b| b.scheme(scheme).is_some()) {
                    return Err(DuplicateScheme {
                        scheme,
                        backend: backend.name,
                        existing: existing.name,
                    });
                }
            }
        }
        e.missing
            .retain(|(s, _)| backend.schemes.iter().all(|spec| !spec.answers_to(s)));
        e.backends.push(backend);
        Ok(())
    }

    /// Records that `scheme` exists in plexwire but this build lacks it:
    /// `features` is what to enable (`quic`, or `http,tls`). Ignored if a
    /// registered backend serves the scheme.
    pub fn not_compiled(&self, scheme: &'static str, features: &'static str) {
        let mut e = self.entries.write().unwrap_or_else(|p| p.into_inner());
        if e.backends.iter().any(|b| b.scheme(scheme).is_some()) {
            return;
        }
        e.missing.retain(|(s, _)| *s != scheme);
        e.missing.push((scheme, features));
    }

    /// Every registered backend, in registration order.
    pub fn backends(&self) -> Vec<Backend> {
        self.read().backends.clone()
    }

    /// The backend serving `scheme` (a name or alias).
    pub fn backend(&self, scheme: &str) -> Option<Backend> {
        self.read()
            .backends
            .iter()
            .find(|b| b.scheme(scheme).is_some())
            .copied()
    }

    /// Schemes of backends this build lacks, with the feature(s) to enable.
    pub fn not_compiled_schemes(&self) -> Vec<(&'static str, &'static str)> {
        self.read().missing.clone()
    }

    /// Parses `url` and checks it against its scheme's backend.
    pub fn parse(&self, url: &str) -> Result<Endpoint, TransportError> {
        self.check(&Endpoint::parse(url)?)
    }

    /// Checks a parsed endpoint against its scheme's backend: an unknown
    /// scheme, one whose backend is not compiled in (the error names the
    /// feature), a wrong address or an unknown or malformed option is an
    /// error. Returns the endpoint with the scheme's canonical name.
    pub fn check(&self, endpoint: &Endpoint) -> Result<Endpoint, TransportError> {
        Ok(self.resolve(endpoint)?.1)
    }

    fn resolve(&self, endpoint: &Endpoint) -> Result<(Backend, Endpoint), TransportError> {
        let e = self.read();
        let scheme = endpoint.scheme();
        if let Some(b) = e.backends.iter().find(|b| b.scheme(scheme).is_some()) {
            let b = *b;
            drop(e);
            let checked = b.check(endpoint)?;
            return Ok((b, checked));
        }
        if let Some((_, feature)) = e.missing.iter().find(|(s, _)| *s == scheme) {
            return Err(TransportError::FeatureDisabled {
                url: endpoint.url().to_owned(),
                feature,
            });
        }
        let known: Vec<&str> = e
            .backends
            .iter()
            .flat_map(|b| b.schemes.iter())
            .flat_map(|s| std::iter::once(&s.name).chain(s.aliases).copied())
            .collect();
        let mut reason = format!(
            "unknown scheme `{}`; this build knows: {}",
            endpoint.written_scheme(),
            known.join(", ")
        );
        if !e.missing.is_empty() {
            let more: Vec<String> = e
                .missing
                .iter()
                .map(|(s, f)| format!("{s} (`{f}`)"))
                .collect();
            reason.push_str(&format!(
                "; with more cargo features of plexwire: {}",
                more.join(", ")
            ));
        }
        Err(endpoint.invalid(reason))
    }

    /// Connects to `endpoint` with the backend of its scheme.
    pub async fn connect(&self, endpoint: &Endpoint) -> Result<Connection, TransportError> {
        let (backend, checked) = self.resolve(endpoint)?;
        (backend.connect)(self, &checked).await
    }

    /// Listens on `endpoint` with the backend of its scheme.
    pub async fn listen(
        &self,
        endpoint: &Endpoint,
    ) -> Result<Box<dyn ServerTransport>, TransportError> {
        let (backend, checked) = self.resolve(endpoint)?;
        (backend.bind)(self, &checked).await
    }

    /// Every registered backend's loopback variants, labelled; a backend that
    /// cannot run here (e.g. no certificates given) is an error naming it.
    pub fn loopback(&self, env: &LoopbackEnv) -> Result<Vec<Loopback>, String> {
        let mut all = Vec::new();
        for b in self.backends() {
            let variants = b
                .loopback_variants(env)
                .map_err(|e| format!("backend `{}`: {e}", b.name))?;
            all.extend(variants);
        }
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MemListener, MemTransport};

    fn mem_connect<'a>(
        _: &'a Registry,
        ep: &'a Endpoint,
    ) -> BoxFuture<'a, Result<Connection, TransportError>> {
        use crate::ClientTransport;
        // `test://name` is `mem://name` under another scheme.
        Box::pin(async move {
            let inner = Endpoint::parse(&format!("mem://{}", name(ep)))?;
            MemTransport.connect(&inner).await
        })
    }

    fn mem_bind<'a>(
        _: &'a Registry,
        ep: &'a Endpoint,
    ) -> BoxFuture<'a, Result<Box<dyn ServerTransport>, TransportError>> {
        Box::pin(async move {
            let inner = Endpoint::parse(&format!("mem://{}", name(ep)))?;
            Ok(Box::new(MemListener::bind(&inner)?) as Box<dyn ServerTransport>)
        })
    }

    fn name(ep: &Endpoint) -> String {
        match ep.address() {
            Address::Name(n) => n.clone(),
            other => format!("{other:?}"),
        }
    }

    fn even(v: &str) -> Result<(), String> {
        match v.parse::<u32>() {
            Ok(n) if n % 2 == 0 => Ok(()),
            _ => Err(format!("must be an even number, got `{v}`")),
        }
    }

    const COLOURS: &[OptionSpec] = &[OptionSpec::any("colour")];
    const SCHEMES: &[SchemeSpec] = &[
        SchemeSpec {
            name: "test",
            aliases: &["tst"],
            address: AddressShape::Name,
            options: &[COLOURS, &[OptionSpec::checked("even", even)]],
        },
        SchemeSpec {
            name: "testhp",
            aliases: &[],
            address: AddressShape::HostPort {
                default_port: Some(7),
            },
            options: &[],
        },
        SchemeSpec {
            name: "testpath",
            aliases: &[],
            address: AddressShape::AbsolutePath,
            options: &[COLOURS],
        },
    ];

    fn test_backend() -> Backend {
        Backend::new("test", SCHEMES, mem_connect, mem_bind).feature("test-feature")
    }

    fn registry() -> Registry {
        let r = Registry::new();
        r.register(test_backend()).unwrap();
        r.not_compiled("gone", "gone-feature");
        r.not_compiled("both", "a,b");
        r
    }

    fn err(r: &Registry, url: &str) -> String {
        r.parse(url).unwrap_err().to_string()
    }

    #[test]
    fn unknown_scheme_lists_what_the_build_knows() {
        let r = registry();
        assert_eq!(
            err(&r, "ws://127.0.0.1:1/x"),
            "invalid endpoint `ws://127.0.0.1:1/x`: unknown scheme `ws`; this build knows: \
             test, tst, testhp, testpath; with more cargo features of plexwire: gone (`gone-feature`), both (`a,b`)"
        );
    }

    #[test]
    fn a_scheme_not_compiled_in_names_its_feature() {
        let r = registry();
        assert_eq!(
            err(&r, "gone://x"),
            "endpoint `gone://x` needs the `gone-feature` cargo feature of plexwire (build with `--features gone-feature`)"
        );
        assert!(err(&r, "both://x").contains("`--features a,b`"));
        // A note about a scheme a registered backend serves is ignored.
        r.not_compiled("test", "never");
        assert!(r.parse("test://x").is_ok());
    }

    #[test]
    fn options_and_addresses_are_checked_per_scheme() {
        let r = registry();
        let ep = r
            .parse("tst://n?colour=red&even=4&max_frame_size=9")
            .unwrap();
        assert_eq!(ep.scheme(), "test", "aliases get the canonical name");
        assert_eq!(ep.url(), "tst://n?colour=red&even=4&max_frame_size=9");
        assert_eq!(ep.option("colour"), Some("red"));
        assert_eq!(ep.max_frame_size(), 9);
        assert_eq!(
            err(&r, "test://n?even=3"),
            "invalid endpoint `test://n?even=3`: option `even` must be an even number, got `3`"
        );
        assert!(err(&r, "test://n?colour=").contains("option `colour` needs a value"));
        assert_eq!(
            err(&r, "testpath:///p?even=2"),
            "invalid endpoint `testpath:///p?even=2`: unknown option `even` for testpath://; known: max_frame_size, colour"
        );
        assert!(err(&r, "testhp://h?colour=x").ends_with("known: max_frame_size"));
        assert!(err(&r, "test://").contains("needs a name"));
        assert!(err(&r, "test://a/b").contains("needs a name without `/`"));
        assert!(err(&r, "testpath://rel").contains("needs an absolute path"));
        assert!(err(&r, "testpath:///").contains("socket path is empty"));
        assert!(err(&r, "testhp:///p").contains("host is missing"));
        assert!(err(&r, "testhp://a!b:1").contains("not a valid host"));
        assert_eq!(
            r.parse("testhp://[::1]").unwrap().address(),
            &Address::Host {
                host: "::1".into(),
                port: 7,
                path: "/".into()
            },
            "brackets removed"
        );
        // A host written without a port gets the scheme's default.
        assert_eq!(
            r.parse("testhp://h/x").unwrap().address(),
            &Address::Host {
                host: "h".into(),
                port: 7,
                path: "/x".into()
            }
        );
    }

    #[test]
    fn a_scheme_can_be_registered_once() {
        let r = registry();
        let e = r.register(test_backend()).unwrap_err().to_string();
        assert_eq!(
            e,
            "scheme `test` of backend `test` is already served by backend `test`"
        );
        assert_eq!(r.backends().len(), 1);
        assert_eq!(r.backend("tst").map(|b| b.name()), Some("test"));
        assert_eq!(
            r.backend("test").and_then(|b| b.cargo_feature()),
            Some("test-feature")
        );
    }

    #[tokio::test]
    async fn a_backend_registered_at_run_time_is_reached_through_connect_and_listen() {
        use bytes::Bytes;
        let r = registry();
        let mut l = r
            .listen(&Endpoint::parse("test://rt-1").unwrap())
            .await
            .unwrap();
        let ep = Endpoint::parse("tst://rt-1").unwrap();
        let (c, s) = tokio::join!(r.connect(&ep), l.accept());
        let (mut tx, _rx) = c.unwrap().into_frames();
        let (_tx, mut rx) = s.unwrap().into_frames();
        tx.send_frame(Bytes::from_static(b"hi")).await.unwrap();
        assert_eq!(&rx.recv_frame().await.unwrap().unwrap()[..], b"hi");
        // The check runs before the backend: a bad option never reaches it.
        let bad = Endpoint::parse("test://rt-1?nope=1").unwrap();
        assert!(r
            .connect(&bad)
            .await
            .unwrap_err()
            .to_string()
            .contains("unknown option `nope`"));
    }

    #[test]
    fn loopback_variants_are_labelled_and_fresh() {
        fn lo(env: &LoopbackEnv) -> Result<Vec<Loopback>, String> {
            Ok(vec![Loopback::plain(
                "test",
                "test",
                format!("test://{}", env.fresh_name("t")),
            )])
        }
        fn needs_certs(env: &LoopbackEnv) -> Result<Vec<Loopback>, String> {
            let c = env.certs()?;
            Ok(vec![Loopback::encrypted(
                "testpath",
                "testpath",
                "testpath:///x".into(),
                c,
            )])
        }
        let env = LoopbackEnv {
            scratch_dir: "/tmp".into(),
            certs: None,
        };
        let r = Registry::new();
        r.register(test_backend().loopback(lo)).unwrap();
        let a = r.loopback(&env).unwrap();
        let b = r.loopback(&env).unwrap();
        assert_eq!(a[0].label, "test");
        assert_ne!(a[0].listen, b[0].listen);
        let r = Registry::new();
        r.register(Backend::new("p", &SCHEMES[2..], mem_connect, mem_bind).loopback(needs_certs))
            .unwrap();
        assert!(r
            .loopback(&env)
            .unwrap_err()
            .contains("backend `p`: this backend needs test certificates"));
        let env = LoopbackEnv {
            certs: Some(DevCerts {
                ca: "/c a".into(),
                cert: "/c".into(),
                key: "/k".into(),
            }),
            ..env
        };
        let v = &r.loopback(&env).unwrap()[0];
        assert_eq!(v.listen, "testpath:///x?cert=/c&key=/k");
        assert_eq!(v.connect_options, "ca=/c%20a");
    }
}
