//! Shared by the suites that run over every transport (conformance, e2e):
//! how a suite reaches a backend, and the test certificates of the TLS and
//! QUIC backends, made at test time.

#![allow(dead_code)] // each test binary uses a part

use plexwire::transport::{Endpoint, DEFAULT_MAX_FRAME_SIZE};

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
    /// A backend whose connecting side needs no options.
    pub fn plain(listen: impl Into<String>) -> Backend {
        Backend {
            listen: listen.into(),
            connect_opts: String::new(),
        }
    }

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

/// The backends every suite runs over, each with a fresh address.
pub mod backends {
    use super::Backend;

    /// A name no other listener of this test process has.
    pub fn unique() -> String {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{}-{n}", std::process::id())
    }

    /// A fresh UNIX socket path in a shared scratch directory.
    pub fn socket_path() -> String {
        let dir = std::env::temp_dir().join("plexwire-suites");
        std::fs::create_dir_all(&dir).expect("create the socket directory");
        dir.join(format!("{}.sock", unique())).display().to_string()
    }

    pub fn mem() -> Backend {
        Backend::plain(format!("mem://suite-{}", unique()))
    }
    pub fn tcp() -> Backend {
        Backend::plain("tcp://127.0.0.1:0")
    }
    pub fn tcp6() -> Backend {
        Backend::plain("tcp://[::1]:0")
    }
    pub fn unix() -> Backend {
        Backend::plain(format!("unix://{}", socket_path()))
    }

    /// `scheme_and_address` with the test certificate and key; peers trust the test CA.
    #[cfg(any(feature = "tls", feature = "quic"))]
    fn encrypted(scheme_and_address: String) -> Backend {
        use super::certs;
        Backend {
            listen: format!("{scheme_and_address}?{}", certs::listen_opts()),
            connect_opts: certs::connect_opts(),
        }
    }
    #[cfg(feature = "tls")]
    pub fn tls() -> Backend {
        encrypted("tls://127.0.0.1:0".into())
    }
    #[cfg(feature = "tls")]
    pub fn tls_unix() -> Backend {
        encrypted(format!("tls+unix://{}", socket_path()))
    }
    #[cfg(feature = "http")]
    pub fn http() -> Backend {
        Backend::plain("http://127.0.0.1:0")
    }
    #[cfg(feature = "http")]
    pub fn http6() -> Backend {
        Backend::plain("http://[::1]:0")
    }
    #[cfg(all(feature = "http", feature = "tls"))]
    pub fn https() -> Backend {
        encrypted("https://127.0.0.1:0".into())
    }
    #[cfg(feature = "quic")]
    pub fn quic() -> Backend {
        encrypted("quic://127.0.0.1:0".into())
    }
    #[cfg(feature = "quic")]
    pub fn quic6() -> Backend {
        encrypted("quic://[::1]:0".into())
    }
}
