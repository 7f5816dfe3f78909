//! Development certificates: a throwaway CA that issues server and client
//! certificates, so TLS and QUIC can be tried in a minute (`plexwire cert`)
//! and tested without committed keys.
//!
//! Not for production: the CA's key lives only in this process (or in the
//! directory [`write_dev_set`] writes, for as long as you keep it), and no
//! revocation exists.
//!
//! ```
//! use plexwire_tls::dev::DevCa;
//! let ca = DevCa::new("plexwire test CA")?;
//! let server = ca.server(&["localhost", "127.0.0.1"])?;
//! let client = ca.client("worker-1")?;
//! assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
//! # let _ = (server, client);
//! # Ok::<(), std::io::Error>(())
//! ```

use std::fmt;
use std::io::{self, Write};
use std::ops::Range;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::Pem;

const DAY: Duration = Duration::from_secs(86_400);

fn other(e: rcgen::Error) -> io::Error {
    io::Error::other(format!("generating a certificate: {e}"))
}

/// What a leaf certificate is for (its extended key usage).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// TLS server authentication: names are host names or IP addresses.
    Server,
    /// TLS client authentication: the first name is the client's common name.
    Client,
}

/// A throwaway certificate authority.
pub struct DevCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

impl fmt::Debug for DevCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevCa").finish_non_exhaustive()
    }
}

/// A certificate and its private key, PEM.
#[derive(Clone)]
pub struct DevCert {
    /// The certificate (`-----BEGIN CERTIFICATE-----`).
    pub cert_pem: String,
    /// Its private key (`-----BEGIN PRIVATE KEY-----`, PKCS#8).
    pub key_pem: String,
}

impl fmt::Debug for DevCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevCert").finish_non_exhaustive()
    }
}

impl DevCert {
    /// The certificate, for [`TlsServerConfig`](crate::TlsServerConfig) or
    /// [`TlsClientConfig`](crate::TlsClientConfig).
    pub fn cert(&self) -> Pem {
        Pem::memory(self.cert_pem.as_bytes())
    }

    /// The private key.
    pub fn key(&self) -> Pem {
        Pem::memory(self.key_pem.as_bytes())
    }
}

impl DevCa {
    /// A new CA (ECDSA P-256) named `name`, valid from a day ago for ten years.
    pub fn new(name: &str) -> io::Result<DevCa> {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = SystemTime::now();
        params.not_before = (now - DAY).into();
        params.not_after = (now + 3_650 * DAY).into();
        let key = KeyPair::generate().map_err(other)?;
        let cert = params.self_signed(&key).map_err(other)?;
        Ok(DevCa {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate: what clients trust (`ca=`) and listeners check
    /// client certificates against (`client_ca=`).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate as [`Pem`].
    pub fn cert(&self) -> Pem {
        Pem::memory(self.cert_pem.as_bytes())
    }

    /// A server certificate for `names` (host names and IP addresses), valid
    /// from a day ago for a year.
    pub fn server(&self, names: &[&str]) -> io::Result<DevCert> {
        let now = SystemTime::now();
        self.issue(Purpose::Server, names, now - DAY..now + 365 * DAY)
    }

    /// A client certificate with common name `name`, valid from a day ago for a year.
    pub fn client(&self, name: &str) -> io::Result<DevCert> {
        let now = SystemTime::now();
        self.issue(Purpose::Client, &[name], now - DAY..now + 365 * DAY)
    }

    /// A certificate for `purpose` and `names`, valid over `validity` (which
    /// may lie in the past, to test expiry).
    pub fn issue(
        &self,
        purpose: Purpose,
        names: &[&str],
        validity: Range<SystemTime>,
    ) -> io::Result<DevCert> {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names.clone()).map_err(other)?;
        if let Some(first) = names.first() {
            params
                .distinguished_name
                .push(DnType::CommonName, first.as_str());
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![match purpose {
            Purpose::Server => ExtendedKeyUsagePurpose::ServerAuth,
            Purpose::Client => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        params.use_authority_key_identifier_extension = true;
        params.not_before = validity.start.into();
        params.not_after = validity.end.into();
        let key = KeyPair::generate().map_err(other)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(other)?;
        Ok(DevCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// The files [`write_dev_set`] wrote.
#[derive(Clone, Debug)]
pub struct DevFiles {
    /// `ca.pem`: the CA certificate.
    pub ca: PathBuf,
    /// `server.pem`: the server certificate.
    pub server_cert: PathBuf,
    /// `server.key`: its key (mode 600).
    pub server_key: PathBuf,
    /// `client.pem`: a client certificate, for mutual TLS.
    pub client_cert: PathBuf,
    /// `client.key`: its key (mode 600).
    pub client_key: PathBuf,
}

/// Writes a new CA (`ca.pem`), a server certificate for `hosts`
/// (`server.pem`, `server.key`) and a client certificate (`client.pem`,
/// `client.key`) into `dir`, creating it. Keys are written with mode 600.
/// The CA's own key is not written: the set cannot be extended later.
pub fn write_dev_set(dir: &Path, hosts: &[&str]) -> io::Result<DevFiles> {
    std::fs::create_dir_all(dir)?;
    // A name of its own, so tools that find issuers by name tell two sets apart.
    let made = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let ca = DevCa::new(&format!(
        "plexwire development CA {}.{:09}",
        made.as_secs(),
        made.subsec_nanos()
    ))?;
    let server = ca.server(hosts)?;
    let client = ca.client("plexwire development client")?;
    let files = DevFiles {
        ca: dir.join("ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client.key"),
    };
    write(&files.ca, ca.cert_pem(), 0o644)?;
    write(&files.server_cert, &server.cert_pem, 0o644)?;
    write(&files.server_key, &server.key_pem, 0o600)?;
    write(&files.client_cert, &client.cert_pem, 0o644)?;
    write(&files.client_key, &client.key_pem, 0o600)?;
    Ok(files)
}

fn write(path: &Path, text: &str, mode: u32) -> io::Result<()> {
    // Replace, never append to or loosen the mode of, an existing file.
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    f.write_all(text.as_bytes())
}
