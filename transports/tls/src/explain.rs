//! Turning rustls errors and TLS alerts into sentences that say which check
//! failed and what to do.
//!
//! A failed handshake looks different from each side: the side that rejects
//! a certificate has the precise reason (`CertificateError::UnknownIssuer`),
//! the other side only receives an alert (`unknown_ca`). Both are explained
//! here, from the point of view of the side reading the message. QUIC
//! handshake errors carry the alert code only; `plexwire-quic` uses
//! [`explain_alert`] for them.

use rustls::{AlertDescription, CertificateError, Error, InvalidMessage, PeerIncompatible};
use rustls_pki_types::UnixTime;

use crate::TlsVersions;

/// Which end of a handshake this side is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// The connecting side, which checks the server's certificate.
    Client,
    /// The accepting side, which checks client certificates (mutual TLS).
    Server,
}

impl Side {
    fn peer(self) -> &'static str {
        match self {
            Side::Client => "the server",
            Side::Server => "the client",
        }
    }

    /// The option naming the CA this side checks the peer against.
    fn trust_option(self) -> &'static str {
        match self {
            Side::Client => "ca=",
            Side::Server => "client_ca=",
        }
    }

    /// The option naming the CA the peer checks us against.
    fn peer_trust_option(self) -> &'static str {
        match self {
            Side::Client => "client_ca=",
            Side::Server => "ca=",
        }
    }
}

/// Explains a rustls error seen on `side`, whose allowed versions are `versions`.
pub fn explain(error: &Error, side: Side, versions: TlsVersions) -> String {
    let peer = side.peer();
    match error {
        Error::InvalidCertificate(e) => explain_certificate(e, side),
        Error::NoCertificatesPresented => format!(
            "missing client certificate: {peer} presented none, and this listener requires one \
             (client_auth=required; a client presents one with `cert=` and `key=`)"
        ),
        Error::AlertReceived(alert) => explain_alert(*alert, side, versions),
        Error::PeerIncompatible(p) => match p {
            PeerIncompatible::Tls12NotOffered
            | PeerIncompatible::Tls12NotOfferedOrEnabled
            | PeerIncompatible::SupportedVersionsExtensionRequired
            | PeerIncompatible::ServerDoesNotSupportTls12Or13
            | PeerIncompatible::ServerTlsVersionIsDisabledByOurConfig => {
                version_mismatch(side, versions)
            }
            PeerIncompatible::Tls13RequiredForQuic => {
                "QUIC needs TLS 1.3, which this configuration does not allow".into()
            }
            other => format!("{peer} is incompatible with this side: {other:?}"),
        },
        Error::InvalidMessage(InvalidMessage::InvalidContentType) => format!(
            "{peer} does not speak TLS: what it sent is not a TLS record ({error}); \
             is it a plain-text listener (`tcp://`, `http://`)?"
        ),
        Error::NoApplicationProtocol => {
            format!("no application protocol in common (ALPN): {peer} does not speak plexwire/1")
        }
        other => format!("{other}"),
    }
}

fn explain_certificate(e: &CertificateError, side: Side) -> String {
    let whose = match side {
        Side::Client => "the server's certificate",
        Side::Server => "the client's certificate",
    };
    match e {
        CertificateError::UnknownIssuer => format!(
            "certificate signed by an unknown authority: {whose} does not chain to the CA in `{}` \
             (is it the CA that issued {whose}?)",
            side.trust_option()
        ),
        CertificateError::NotValidForNameContext {
            expected,
            presented,
        } => format!(
            "certificate is not valid for `{}`: {whose} is for {}; connect by one of those names \
             or set `server_name=`",
            expected.to_str(),
            if presented.is_empty() {
                "no name at all".to_owned()
            } else {
                presented
                    .iter()
                    .map(|n| bare_name(n))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ),
        CertificateError::NotValidForName => format!(
            "certificate is not valid for the name connected to: {whose} names other hosts; \
             connect by one of its names or set `server_name=`"
        ),
        CertificateError::ExpiredContext { time, not_after } => format!(
            "certificate has expired: {whose} was valid until {}, and it is now {}",
            utc(*not_after),
            utc(*time)
        ),
        CertificateError::Expired => format!("certificate has expired: {whose} is out of date"),
        CertificateError::NotValidYetContext { time, not_before } => format!(
            "certificate is not valid yet: {whose} is valid from {}, and it is now {} \
             (check the clocks)",
            utc(*not_before),
            utc(*time)
        ),
        CertificateError::NotValidYet => {
            format!("certificate is not valid yet: {whose} starts in the future (check the clocks)")
        }
        CertificateError::Revoked => format!("certificate has been revoked: {whose}"),
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            format!(
                "certificate is not meant for this use: {whose} lacks the {} authentication \
                 purpose (extended key usage)",
                match side {
                    Side::Client => "server",
                    Side::Server => "client",
                }
            )
        }
        // The issuer's name matched a trusted CA but its key did not sign
        // the certificate: another CA of the same name (two runs of
        // `plexwire cert` make two), or a forgery.
        CertificateError::BadSignature => format!(
            "certificate signed by an unknown authority: {whose} names a CA in `{}` as its \
             issuer, but that CA did not sign it (a different CA of the same name, e.g. from \
             another `plexwire cert` run?)",
            side.trust_option()
        ),
        other => format!("invalid certificate: {whose}: {other}"),
    }
}

/// Explains a TLS alert that `side` received from its peer: the peer
/// rejected something of ours, or gave up.
pub fn explain_alert(alert: AlertDescription, side: Side, versions: TlsVersions) -> String {
    let peer = side.peer();
    let ours = match side {
        Side::Client => "our client certificate",
        Side::Server => "this listener's certificate",
    };
    match alert {
        AlertDescription::CertificateRequired => match side {
            Side::Client => "missing client certificate: the server requires one; present it with \
                             `cert=` and `key=` (issued by the CA in the server's `client_ca=`)"
                .into(),
            Side::Server => "missing client certificate: the client says one is required".into(),
        },
        AlertDescription::UnknownCA => format!(
            "{peer} rejected {ours}: certificate signed by an unknown authority (to {peer}); \
             {peer}'s `{}` must be the CA that issued our `cert=`",
            side.peer_trust_option()
        ),
        AlertDescription::BadCertificate => format!(
            "{peer} rejected {ours} as a bad certificate (for example, not valid for the name \
             {peer} connected to)"
        ),
        AlertDescription::CertificateExpired => {
            format!("{peer} rejected {ours}: certificate has expired or is not valid yet")
        }
        AlertDescription::CertificateRevoked => {
            format!("{peer} rejected {ours}: certificate has been revoked")
        }
        AlertDescription::UnsupportedCertificate => format!(
            "{peer} rejected {ours}: certificate is not meant for this use (extended key usage)"
        ),
        AlertDescription::DecryptError => format!(
            "{peer} rejected {ours}: a signature did not verify (signed by a different CA of \
             the same name as the one {peer} trusts, or a key that does not match the \
             certificate)"
        ),
        AlertDescription::ProtocolVersion => version_mismatch(side, versions),
        AlertDescription::NoApplicationProtocol => {
            format!("no application protocol in common (ALPN): {peer} does not speak plexwire/1")
        }
        AlertDescription::HandshakeFailure => format!(
            "{peer} aborted the handshake (handshake_failure): usually no TLS version, cipher \
             suite or signature scheme in common; this side allows {}",
            versions.describe()
        ),
        AlertDescription::AccessDenied => format!("{peer} denied access"),
        other => format!("{peer} aborted the handshake with TLS alert {other:?}"),
    }
}

/// Explains a TLS alert this side sent: it rejected the peer, for the
/// reason the alert stands for. `detail` is the local error's own text
/// (used when the alert says too little).
pub fn explain_sent_alert(
    alert: AlertDescription,
    side: Side,
    versions: TlsVersions,
    detail: &str,
) -> String {
    let as_error = match alert {
        AlertDescription::CertificateRequired if side == Side::Server => {
            Error::NoCertificatesPresented
        }
        AlertDescription::UnknownCA => Error::InvalidCertificate(CertificateError::UnknownIssuer),
        AlertDescription::CertificateExpired => {
            Error::InvalidCertificate(CertificateError::Expired)
        }
        AlertDescription::UnsupportedCertificate => {
            Error::InvalidCertificate(CertificateError::InvalidPurpose)
        }
        AlertDescription::ProtocolVersion => {
            Error::PeerIncompatible(PeerIncompatible::SupportedVersionsExtensionRequired)
        }
        AlertDescription::NoApplicationProtocol => Error::NoApplicationProtocol,
        _ if detail.is_empty() => return format!("TLS alert {alert:?} sent to {}", side.peer()),
        _ => return detail.to_owned(),
    };
    let text = explain(&as_error, side, versions);
    if detail.is_empty() {
        text
    } else {
        format!("{text} [{detail}]")
    }
}

fn version_mismatch(side: Side, versions: TlsVersions) -> String {
    format!(
        "no TLS version in common: this side allows {}, and {} does not accept that \
         (check `tls=` on both sides)",
        versions.describe(),
        side.peer()
    )
}

/// `localhost` and `127.0.0.1` from rustls's `DnsName("localhost")` and `IpAddress(127.0.0.1)`.
fn bare_name(presented: &str) -> &str {
    presented
        .strip_prefix("DnsName(\"")
        .and_then(|n| n.strip_suffix("\")"))
        .or_else(|| {
            presented
                .strip_prefix("IpAddress(")
                .and_then(|n| n.strip_suffix(')'))
        })
        .unwrap_or(presented)
}

/// `2026-01-02 03:04:05 UTC`.
fn utc(t: UnixTime) -> String {
    let secs = t.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn utc_dates() {
        let at = |s| utc(UnixTime::since_unix_epoch(Duration::from_secs(s)));
        assert_eq!(at(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(at(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(at(1_767_323_045), "2026-01-02 03:04:05 UTC");
    }

    #[test]
    fn presented_names_are_bare() {
        assert_eq!(bare_name("DnsName(\"localhost\")"), "localhost");
        assert_eq!(bare_name("IpAddress(127.0.0.1)"), "127.0.0.1");
        assert_eq!(bare_name("Other"), "Other");
    }

    #[test]
    fn each_check_is_named() {
        let c = |e| {
            explain(
                &Error::InvalidCertificate(e),
                Side::Client,
                TlsVersions::ALL,
            )
        };
        assert!(c(CertificateError::UnknownIssuer)
            .starts_with("certificate signed by an unknown authority"));
        assert!(c(CertificateError::Expired).starts_with("certificate has expired"));
        let e = explain(
            &Error::NoCertificatesPresented,
            Side::Server,
            TlsVersions::ALL,
        );
        assert!(e.starts_with("missing client certificate"), "{e}");
        let e = explain(
            &Error::AlertReceived(AlertDescription::ProtocolVersion),
            Side::Client,
            TlsVersions::TLS12_ONLY,
        );
        assert!(
            e.contains("no TLS version in common: this side allows TLS 1.2 only"),
            "{e}"
        );
    }
}
