//! TLS settings: what a listener presents and checks, what a client trusts
//! and presents, and the rustls configurations built from them.
//!
//! The same settings serve every encrypted backend: `tls://` and
//! `tls+unix://` here, `quic://` in `plexwire-quic`. They come either from the
//! endpoint URL's query (`?ca=…&cert=…`, see [`TlsServerConfig::from_endpoint`]
//! and [`TlsClientConfig::from_endpoint`]) or from code, with PEM read from
//! files or held in memory ([`Pem`]).
//!
//! Only the ring crypto provider is used, and it is passed to rustls
//! explicitly: nothing here depends on a process-wide default provider.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use plexwire_transport::{Endpoint, TransportError};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme, SupportedProtocolVersion};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

/// The crypto provider every configuration uses: ring, and only ring.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// PEM-encoded certificates or a private key: a file, or bytes in memory.
#[derive(Clone, PartialEq, Eq)]
pub enum Pem {
    /// A PEM file, read when a configuration is built.
    File(PathBuf),
    /// PEM text held in memory (generated certificates, secrets from a vault).
    Memory(Vec<u8>),
}

impl Pem {
    /// A PEM file.
    pub fn file(path: impl Into<PathBuf>) -> Pem {
        Pem::File(path.into())
    }

    /// PEM text in memory.
    pub fn memory(pem: impl Into<Vec<u8>>) -> Pem {
        Pem::Memory(pem.into())
    }

    fn describe(&self, option: &str) -> String {
        match self {
            Pem::File(p) => format!("`{option}={}`", p.display()),
            Pem::Memory(_) => format!("the in-memory {option}"),
        }
    }

    fn read_error(&self, option: &str, e: pem::Error) -> String {
        match e {
            pem::Error::Io(io) => format!("cannot read {}: {io}", self.describe(option)),
            pem::Error::NoItemsFound => format!(
                "{} holds no {} in PEM form",
                self.describe(option),
                if option.ends_with("key") {
                    "private key (-----BEGIN PRIVATE KEY-----)"
                } else {
                    "certificate (-----BEGIN CERTIFICATE-----)"
                }
            ),
            other => format!("{} is not valid PEM: {other}", self.describe(option)),
        }
    }

    /// Every certificate in the PEM data (a chain: leaf first).
    pub(crate) fn certs(&self, option: &str) -> Result<Vec<CertificateDer<'static>>, String> {
        let certs: Result<Vec<_>, _> = match self {
            Pem::File(p) => CertificateDer::pem_file_iter(p)
                .map_err(|e| self.read_error(option, e))?
                .collect(),
            Pem::Memory(b) => CertificateDer::pem_slice_iter(b).collect(),
        };
        let certs = certs.map_err(|e| self.read_error(option, e))?;
        if certs.is_empty() {
            return Err(self.read_error(option, pem::Error::NoItemsFound));
        }
        Ok(certs)
    }

    /// The first private key in the PEM data (PKCS#8, PKCS#1 or SEC1).
    pub(crate) fn key(&self, option: &str) -> Result<PrivateKeyDer<'static>, String> {
        match self {
            Pem::File(p) => PrivateKeyDer::from_pem_file(p),
            Pem::Memory(b) => PrivateKeyDer::from_pem_slice(b),
        }
        .map_err(|e| self.read_error(option, e))
    }

    fn roots(&self, option: &str) -> Result<RootCertStore, String> {
        let mut roots = RootCertStore::empty();
        for cert in self.certs(option)? {
            roots.add(cert).map_err(|e| {
                format!(
                    "{} holds a certificate that cannot be a trust anchor: {e}",
                    self.describe(option)
                )
            })?;
        }
        Ok(roots)
    }
}

impl fmt::Debug for Pem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pem::File(p) => f.debug_tuple("File").field(p).finish(),
            // Never print key material.
            Pem::Memory(b) => write!(f, "Memory({} bytes)", b.len()),
        }
    }
}

/// Which TLS versions a side allows (`?tls=1.2,1.3`; both by default).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TlsVersions {
    tls12: bool,
    tls13: bool,
}

impl Default for TlsVersions {
    fn default() -> Self {
        TlsVersions::ALL
    }
}

impl TlsVersions {
    /// TLS 1.2 and 1.3 (the default; 1.3 is preferred).
    pub const ALL: TlsVersions = TlsVersions {
        tls12: true,
        tls13: true,
    };
    /// TLS 1.2 only.
    pub const TLS12_ONLY: TlsVersions = TlsVersions {
        tls12: true,
        tls13: false,
    };
    /// TLS 1.3 only (what QUIC always uses).
    pub const TLS13_ONLY: TlsVersions = TlsVersions {
        tls12: false,
        tls13: true,
    };

    /// Parses the `tls` option: `1.2`, `1.3` or `1.2,1.3`.
    pub fn parse(s: &str) -> Result<TlsVersions, String> {
        let mut v = TlsVersions {
            tls12: false,
            tls13: false,
        };
        for part in s.split(',') {
            match part.trim() {
                "1.2" => v.tls12 = true,
                "1.3" => v.tls13 = true,
                other => {
                    return Err(format!(
                        "unknown TLS version `{other}` in `tls={s}`; expected 1.2 and/or 1.3"
                    ))
                }
            }
        }
        Ok(v)
    }

    /// Whether TLS 1.2 is allowed.
    pub fn tls12(self) -> bool {
        self.tls12
    }

    /// Whether TLS 1.3 is allowed.
    pub fn tls13(self) -> bool {
        self.tls13
    }

    /// `TLS 1.2 and 1.3`, `TLS 1.2 only` or `TLS 1.3 only`, for messages.
    pub fn describe(self) -> &'static str {
        match (self.tls12, self.tls13) {
            (true, true) => "TLS 1.2 and 1.3",
            (true, false) => "TLS 1.2 only",
            _ => "TLS 1.3 only",
        }
    }

    fn rustls(self) -> Vec<&'static SupportedProtocolVersion> {
        let mut v = Vec::new();
        if self.tls13 {
            v.push(&rustls::version::TLS13);
        }
        if self.tls12 {
            v.push(&rustls::version::TLS12);
        }
        v
    }
}

/// Whether a listener asks clients for a certificate (mutual TLS).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ClientAuth {
    /// No client certificates (`client_auth=none`; the default without `client_ca`).
    #[default]
    Off,
    /// A client may present a certificate; if it does, it must chain to
    /// `client_ca` (`client_auth=optional`).
    Optional,
    /// Every client must present a certificate that chains to `client_ca`
    /// (`client_auth=required`; the default with `client_ca`).
    Required,
}

/// What a TLS listener presents and checks.
///
/// ```
/// use plexwire_tls::{ClientAuth, Pem, TlsServerConfig, TlsVersions};
/// let config = TlsServerConfig::new(Pem::file("server.pem"), Pem::file("server.key"))
///     .with_client_ca(Pem::file("ca.pem")) // mutual TLS, required by default
///     .with_client_auth(ClientAuth::Optional)
///     .with_versions(TlsVersions::TLS13_ONLY);
/// # let _ = config;
/// ```
#[derive(Clone, Debug)]
pub struct TlsServerConfig {
    cert_chain: Pem,
    key: Pem,
    client_ca: Option<Pem>,
    client_auth: ClientAuth,
    versions: TlsVersions,
}

impl TlsServerConfig {
    /// Presents `cert_chain` (leaf first) with its private `key`; no client certificates.
    pub fn new(cert_chain: Pem, key: Pem) -> TlsServerConfig {
        TlsServerConfig {
            cert_chain,
            key,
            client_ca: None,
            client_auth: ClientAuth::Off,
            versions: TlsVersions::ALL,
        }
    }

    /// Checks client certificates against `ca` (mutual TLS). Makes client
    /// certificates required unless [`ClientAuth::Optional`] was chosen.
    pub fn with_client_ca(mut self, ca: Pem) -> TlsServerConfig {
        self.client_ca = Some(ca);
        if self.client_auth == ClientAuth::Off {
            self.client_auth = ClientAuth::Required;
        }
        self
    }

    /// Whether client certificates are required or optional (needs a client CA).
    pub fn with_client_auth(mut self, auth: ClientAuth) -> TlsServerConfig {
        self.client_auth = auth;
        self
    }

    /// The TLS versions to allow.
    pub fn with_versions(mut self, versions: TlsVersions) -> TlsServerConfig {
        self.versions = versions;
        self
    }

    /// The TLS versions allowed.
    pub fn versions(&self) -> TlsVersions {
        self.versions
    }

    /// Reads a listener's settings from its URL: `cert` and `key` (required),
    /// `client_ca` and `client_auth` (mutual TLS), `tls` (versions).
    ///
    /// Client-side options (`ca`, `server_name`, `insecure`) are an error on a
    /// listener rather than ignored: `ca=` there usually means `client_ca=`
    /// was meant, and silently not checking clients would be worse.
    pub fn from_endpoint(endpoint: &Endpoint) -> Result<TlsServerConfig, TransportError> {
        let bad = |reason: String| TransportError::TlsConfig {
            url: endpoint.url().to_owned(),
            reason,
        };
        let scheme = scheme_name(endpoint);
        for (opt, instead) in [
            (
                "ca",
                "to check client certificates a listener takes `client_ca=` (mutual TLS)",
            ),
            (
                "server_name",
                "a listener presents the names in its certificate",
            ),
            (
                "insecure",
                "it only turns off a client's check of the server",
            ),
        ] {
            if endpoint.option(opt).is_some() {
                return Err(bad(format!(
                    "`{opt}=` is a client option and means nothing on a listener: {instead}"
                )));
            }
        }
        let (cert, key) = match (endpoint.option("cert"), endpoint.option("key")) {
            (Some(c), Some(k)) => (Pem::file(c), Pem::file(k)),
            _ => {
                return Err(bad(format!(
                    "a {scheme} listener needs `cert=` (its certificate chain, PEM) and `key=` (the private key, PEM); \
                     `plexwire cert --out DIR` writes a development set"
                )))
            }
        };
        let mut config = TlsServerConfig::new(cert, key);
        if let Some(v) = endpoint.option("tls") {
            config.versions = TlsVersions::parse(v).map_err(bad)?;
        }
        let auth = match endpoint.option("client_auth") {
            None => None,
            Some("required") => Some(ClientAuth::Required),
            Some("optional") => Some(ClientAuth::Optional),
            Some("none") => Some(ClientAuth::Off),
            Some(other) => {
                return Err(bad(format!(
                    "client_auth must be required, optional or none, got `{other}`"
                )))
            }
        };
        match (endpoint.option("client_ca"), auth) {
            (Some(_), Some(ClientAuth::Off)) => {
                return Err(bad(
                    "`client_ca=` with `client_auth=none` contradict each other; drop one".into(),
                ))
            }
            (Some(ca), auth) => {
                config = config.with_client_ca(Pem::file(ca));
                if let Some(auth) = auth {
                    config.client_auth = auth;
                }
            }
            (None, Some(ClientAuth::Required | ClientAuth::Optional)) => {
                return Err(bad(
                    "`client_auth=` needs `client_ca=` (the CA that signs client certificates)"
                        .into(),
                ))
            }
            (None, _) => {}
        }
        Ok(config)
    }

    /// Builds the rustls configuration (ring provider). Errors say which
    /// file or setting is at fault.
    pub fn to_rustls(&self) -> Result<rustls::ServerConfig, String> {
        let provider = provider();
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&self.versions.rustls())
            .map_err(|e| format!("TLS versions {}: {e}", self.versions.describe()))?;
        let builder = match (&self.client_ca, self.client_auth) {
            (Some(ca), auth) if auth != ClientAuth::Off => {
                let roots = ca.roots("client_ca")?;
                let mut verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                if auth == ClientAuth::Optional {
                    verifier = verifier.allow_unauthenticated();
                }
                let verifier = verifier
                    .build()
                    .map_err(|e| format!("cannot check client certificates: {e}"))?;
                builder.with_client_cert_verifier(verifier)
            }
            (None, ClientAuth::Optional | ClientAuth::Required) => {
                return Err(
                    "client authentication needs a client CA (`client_ca=`), which is missing"
                        .into(),
                )
            }
            _ => builder.with_no_client_auth(),
        };
        let chain = self.cert_chain.certs("cert")?;
        let key = self.key.key("key")?;
        builder.with_single_cert(chain, key).map_err(|e| {
            format!(
                "{} and {} do not make a usable identity: {e}",
                self.cert_chain.describe("cert"),
                self.key.describe("key")
            )
        })
    }
}

/// What a TLS client trusts and presents.
///
/// ```
/// use plexwire_tls::{Pem, TlsClientConfig};
/// let config = TlsClientConfig::new(Pem::file("ca.pem"))
///     .with_identity(Pem::file("client.pem"), Pem::file("client.key")) // for mutual TLS
///     .with_server_name("broker.internal");
/// # let _ = config;
/// ```
#[derive(Clone, Debug, Default)]
pub struct TlsClientConfig {
    ca: Option<Pem>,
    server_name: Option<String>,
    identity: Option<(Pem, Pem)>,
    versions: TlsVersions,
    insecure: bool,
}

impl TlsClientConfig {
    /// Trusts servers whose certificate chains to a CA in `ca`.
    pub fn new(ca: Pem) -> TlsClientConfig {
        TlsClientConfig {
            ca: Some(ca),
            ..TlsClientConfig::default()
        }
    }

    /// Trusts any server without checking its certificate. For testing only:
    /// every connection made with it logs a warning.
    pub fn insecure() -> TlsClientConfig {
        TlsClientConfig {
            insecure: true,
            ..TlsClientConfig::default()
        }
    }

    /// The name the server's certificate must be valid for (default: the URL's host).
    pub fn with_server_name(mut self, name: impl Into<String>) -> TlsClientConfig {
        self.server_name = Some(name.into());
        self
    }

    /// Presents this certificate chain and key when the server asks (mutual TLS).
    pub fn with_identity(mut self, cert_chain: Pem, key: Pem) -> TlsClientConfig {
        self.identity = Some((cert_chain, key));
        self
    }

    /// The TLS versions to offer.
    pub fn with_versions(mut self, versions: TlsVersions) -> TlsClientConfig {
        self.versions = versions;
        self
    }

    /// The TLS versions offered.
    pub fn versions(&self) -> TlsVersions {
        self.versions
    }

    /// The server name set explicitly, if any.
    pub fn server_name(&self) -> Option<&str> {
        self.server_name.as_deref()
    }

    /// Whether certificate verification is off.
    pub fn is_insecure(&self) -> bool {
        self.insecure
    }

    /// Reads a client's settings from the URL it connects to: `ca` (or
    /// `insecure=true`), `server_name`, `cert` and `key` (mutual TLS), `tls`.
    pub fn from_endpoint(endpoint: &Endpoint) -> Result<TlsClientConfig, TransportError> {
        let bad = |reason: String| TransportError::TlsConfig {
            url: endpoint.url().to_owned(),
            reason,
        };
        let scheme = scheme_name(endpoint);
        for opt in ["client_ca", "client_auth"] {
            if endpoint.option(opt).is_some() {
                return Err(bad(format!(
                    "`{opt}=` is a listener option; a client checks the server with `ca=` \
                     and presents `cert=` and `key=`"
                )));
            }
        }
        let insecure = endpoint.option("insecure") == Some("true");
        let mut config = match (endpoint.option("ca"), insecure) {
            (Some(_), true) => {
                return Err(bad(
                    "`insecure=true` turns off the check that `ca=` is for; give one or the other"
                        .into(),
                ))
            }
            (Some(ca), false) => TlsClientConfig::new(Pem::file(ca)),
            (None, true) => TlsClientConfig::insecure(),
            (None, false) => {
                return Err(bad(format!(
                    "a {scheme} client needs `ca=` (the CA certificate that signed the server's, PEM), \
                     or `insecure=true` to skip verification while testing"
                )))
            }
        };
        match (endpoint.option("cert"), endpoint.option("key")) {
            (Some(c), Some(k)) => config.identity = Some((Pem::file(c), Pem::file(k))),
            (None, None) => {}
            _ => {
                return Err(bad(
                    "a client certificate needs both `cert=` and `key=`".into()
                ))
            }
        }
        config.server_name = endpoint.option("server_name").map(str::to_owned);
        if let Some(v) = endpoint.option("tls") {
            config.versions = TlsVersions::parse(v).map_err(bad)?;
        }
        Ok(config)
    }

    /// Builds the rustls configuration (ring provider) for connections to
    /// `url` (named in the insecure-mode warning), and a [`VerifyLog`] that
    /// keeps the reason if the server's certificate is rejected.
    pub fn to_rustls(&self, url: &str) -> Result<(rustls::ClientConfig, VerifyLog), String> {
        let provider = provider();
        let log = VerifyLog::default();
        let verifier: Arc<dyn ServerCertVerifier> = if self.insecure {
            tracing::warn!(
                endpoint = url,
                "TLS certificate verification is OFF (insecure=true): the server is not authenticated, \
                 anyone on the path can impersonate it; use this for testing only"
            );
            Arc::new(NoVerification(provider.clone()))
        } else {
            let ca = self
                .ca
                .as_ref()
                .ok_or("a TLS client needs a CA to trust (`ca=`), or insecure mode")?;
            let roots = ca.roots("ca")?;
            let inner =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| format!("cannot check server certificates: {e}"))?;
            Arc::new(Recording {
                inner,
                log: log.clone(),
            })
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&self.versions.rustls())
            .map_err(|e| format!("TLS versions {}: {e}", self.versions.describe()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let config = match &self.identity {
            Some((cert, key)) => {
                let chain = cert.certs("cert")?;
                let key_der = key.key("key")?;
                builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                    format!(
                        "{} and {} do not make a usable client identity: {e}",
                        cert.describe("cert"),
                        key.describe("key")
                    )
                })?
            }
            None => builder.with_no_client_auth(),
        };
        Ok((config, log))
    }

    /// The name to check the server's certificate against: the explicit
    /// server name, else the host of `endpoint` (`localhost` for a socket path).
    pub fn server_name_for(&self, endpoint: &Endpoint) -> Result<ServerName<'static>, String> {
        let name = match (&self.server_name, endpoint.address()) {
            (Some(n), _) => n.clone(),
            (None, plexwire_transport::Address::Host { host, .. }) => host.clone(),
            (None, _) => "localhost".to_owned(),
        };
        ServerName::try_from(name.clone())
            .map_err(|_| format!("`{name}` is not a valid TLS server name (set `server_name=`)"))
    }
}

fn scheme_name(endpoint: &Endpoint) -> &str {
    endpoint.url().split_once("://").map_or("TLS", |(s, _)| s)
}

/// The reason the server's certificate was rejected, kept by the verifier of
/// one client configuration, for backends (QUIC) whose handshake errors carry
/// only a TLS alert code.
#[derive(Clone, Debug, Default)]
pub struct VerifyLog(Arc<Mutex<Option<rustls::Error>>>);

impl VerifyLog {
    /// The last rejection, if any.
    pub fn take(&self) -> Option<rustls::Error> {
        self.0.lock().ok().and_then(|mut e| e.take())
    }
}

/// Standard WebPKI verification that remembers why it said no.
#[derive(Debug)]
struct Recording {
    inner: Arc<WebPkiServerVerifier>,
    log: VerifyLog,
}

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let r = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        if let (Err(e), Ok(mut slot)) = (&r, self.log.0.lock()) {
            *slot = Some(e.clone());
        }
        r
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `insecure=true`: accepts any certificate (the handshake signatures are
/// still checked, so the session keys belong to whoever holds that
/// certificate's key — but nothing says who that is).
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
