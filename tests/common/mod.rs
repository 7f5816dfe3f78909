//! Shared by the suites that run over every transport (conformance, e2e):
//! the backends of `plexwire::transport::registry()` as loopback variants,
//! how a suite reaches one, and the test certificates of the TLS-based
//! backends, made at test time.
//!
//! A suite never lists backends: a backend registered in the facade (with a
//! loopback function) is picked up by every suite. `PLEXWIRE_BACKENDS=tcp,quic_v6`
//! runs only the variants with those labels.

#![allow(dead_code)] // each test binary uses a part

use std::future::Future;

use plexwire::transport::{registry, Endpoint, LoopbackEnv, DEFAULT_MAX_FRAME_SIZE};

/// How a suite reaches one backend: the URL to listen on, and the options a
/// connecting side puts on the listener's address. For TLS and QUIC a
/// listener's URL names its certificate and key, and a peer's names the CA
/// to check it with; for the others the connecting side needs nothing.
#[derive(Clone, Debug)]
pub struct Backend {
    /// What to listen on (port 0, a fresh socket path or name).
    pub listen: String,
    /// `key=value&…` a connecting side adds, e.g. `ca=/…/ca.pem`.
    pub connect_opts: String,
}

impl Backend {
    /// The listen URL with one more query option.
    pub fn listen_with(&self, opt: &str) -> String {
        let sep = if self.listen.contains('?') { '&' } else { '?' };
        format!("{}{sep}{opt}", self.listen)
    }

    /// The URL a peer connects to a listener bound at `bound` with: its
    /// address, its frame limit, and this backend's connect options.
    pub fn connect_url(&self, bound: &Endpoint) -> String {
        self.connect_url_with_limit(bound, bound.max_frame_size())
    }

    /// Like [`Backend::connect_url`], with the peer's own frame limit.
    pub fn connect_url_with_limit(&self, bound: &Endpoint, max_frame_size: usize) -> String {
        let address = bound.url().split('?').next().unwrap_or_default();
        let mut opts = Vec::new();
        if max_frame_size != DEFAULT_MAX_FRAME_SIZE {
            opts.push(format!("max_frame_size={max_frame_size}"));
        }
        if !self.connect_opts.is_empty() {
            opts.push(self.connect_opts.clone());
        }
        if opts.is_empty() {
            address.to_owned()
        } else {
            format!("{address}?{}", opts.join("&"))
        }
    }

    /// [`Backend::connect_url`], parsed.
    pub fn connect_endpoint(&self, bound: &Endpoint) -> Endpoint {
        Endpoint::parse(&self.connect_url(bound)).expect("connect URL parses")
    }
}

/// Test certificates: a CA and a server certificate for `localhost`,
/// `127.0.0.1` and `::1`, written once per test process under cargo's
/// scratch directory for integration tests (never committed).
#[cfg(any(feature = "tls", feature = "quic"))]
pub mod certs {
    use std::path::PathBuf;
    use std::sync::OnceLock;

    #[cfg(all(feature = "quic", not(feature = "tls")))]
    use plexwire::transport::quic::dev;
    #[cfg(feature = "tls")]
    use plexwire::transport::tls::dev;

    /// The files of the test PKI.
    #[derive(Debug)]
    pub struct Files {
        /// Where the files are.
        pub dir: PathBuf,
        /// The CA certificate.
        pub ca: String,
        /// The server certificate and key.
        pub cert: String,
        /// Its key.
        pub key: String,
    }

    /// The test PKI, made on first use.
    pub fn files() -> &'static Files {
        static FILES: OnceLock<Files> = OnceLock::new();
        FILES.get_or_init(|| {
            // One directory per process: test binaries (and nextest's
            // processes) run in parallel, each with its own CA.
            let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("test-pki-{}", std::process::id()));
            let f = dev::write_dev_set(&dir, &["localhost", "127.0.0.1", "::1"])
                .expect("write test certificates");
            let s = |p: PathBuf| p.display().to_string();
            Files {
                dir,
                ca: s(f.ca),
                cert: s(f.server_cert),
                key: s(f.server_key),
            }
        })
    }

    /// The test PKI as the registry's loopback functions take it.
    pub fn dev_certs() -> plexwire::transport::DevCerts {
        let f = files();
        plexwire::transport::DevCerts {
            ca: f.ca.clone().into(),
            cert: f.cert.clone().into(),
            key: f.key.clone().into(),
        }
    }

    /// `cert=…&key=…`: what a listener presents.
    pub fn listen_opts() -> String {
        let f = files();
        format!("cert={}&key={}", f.cert, f.key)
    }

    /// `ca=…`: what a connecting side trusts.
    pub fn connect_opts() -> String {
        format!("ca={}", files().ca)
    }
}

/// What the loopback functions of the registry's backends get: a scratch
/// directory for socket files, and the test certificates when a TLS-based
/// backend is compiled in.
pub fn env() -> LoopbackEnv {
    let scratch_dir = std::env::temp_dir().join("plexwire-suites");
    std::fs::create_dir_all(&scratch_dir).expect("create the socket directory");
    #[cfg(any(feature = "tls", feature = "quic"))]
    let certs = Some(certs::dev_certs());
    #[cfg(not(any(feature = "tls", feature = "quic")))]
    let certs = None;
    LoopbackEnv { scratch_dir, certs }
}

/// One loopback variant of a registered backend (`tcp`, `tcp_v6`, `tls_unix`, …).
#[derive(Clone, Debug)]
pub struct Variant {
    /// Its label, as in test output.
    pub label: String,
    /// Its scheme, which finds its backend in the registry.
    pub scheme: &'static str,
}

impl Variant {
    /// A fresh [`Backend`] of this variant: a new socket path or name each call.
    pub fn fresh(&self) -> Backend {
        let backend = registry()
            .backend(self.scheme)
            .unwrap_or_else(|| panic!("no backend serves {}", self.scheme));
        let v = backend
            .loopback_variants(&env())
            .unwrap_or_else(|e| panic!("{}: {e}", self.label))
            .into_iter()
            .find(|v| v.label == self.label)
            .unwrap_or_else(|| panic!("{} is no longer a variant", self.label));
        Backend {
            listen: v.listen,
            connect_opts: v.connect_options,
        }
    }
}

/// Every loopback variant of every registered backend (all of them, or those
/// `PLEXWIRE_BACKENDS` names).
pub fn variants() -> Vec<Variant> {
    let all = registry()
        .loopback(&env())
        .unwrap_or_else(|e| panic!("loopback variants: {e}"));
    let only = std::env::var("PLEXWIRE_BACKENDS").ok();
    let only: Option<Vec<&str>> = only
        .as_deref()
        .map(|s| s.split(',').map(str::trim).collect());
    all.into_iter()
        .filter(|v| only.as_ref().is_none_or(|o| o.contains(&v.label.as_str())))
        .map(|v| Variant {
            label: v.label,
            scheme: v.scheme,
        })
        .collect()
}

/// The first variant of each scheme (IPv4, not also IPv6), for the slower suites.
pub fn one_per_scheme() -> Vec<Variant> {
    let mut seen = Vec::new();
    variants()
        .into_iter()
        .filter(|v| {
            let first = !seen.contains(&v.scheme);
            seen.push(v.scheme);
            first
        })
        .collect()
}

/// The variant labelled `label`.
pub fn variant(label: &str) -> Variant {
    registry()
        .loopback(&env())
        .unwrap_or_else(|e| panic!("loopback variants: {e}"))
        .into_iter()
        .find(|v| v.label == label)
        .map(|v| Variant {
            label: v.label,
            scheme: v.scheme,
        })
        .unwrap_or_else(|| panic!("no loopback variant `{label}` in this build"))
}

/// Runs `case` over each of `variants` in turn, each in a task of its own so
/// that a failure is caught; fails naming every variant that failed, and why.
pub async fn each<F, Fut>(variants: Vec<Variant>, case: F)
where
    F: Fn(Variant) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    assert!(!variants.is_empty(), "no backend to run over");
    let mut failed = Vec::new();
    for v in variants {
        let label = v.label.clone();
        match tokio::spawn(case(v)).await {
            Ok(()) => eprintln!("{label}: ok"),
            Err(e) => {
                let why = match e.try_into_panic() {
                    Ok(p) => p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "panicked".into()),
                    Err(e) => e.to_string(),
                };
                eprintln!("{label}: FAILED: {why}");
                failed.push(format!("{label}: {why}"));
            }
        }
    }
    assert!(failed.is_empty(), "failed on:\n{}", failed.join("\n"));
}
