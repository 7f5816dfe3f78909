//! TLS (and QUIC's TLS): each certificate check, accepted and rejected, with
//! an error that says which check failed — on the side that rejected and on
//! the side that was rejected. Certificates are made here, at test time.

#![cfg(feature = "tls")]

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use plexwire::transport::tls::dev::{DevCa, Purpose};
use plexwire::transport::tls::{self, TlsClientConfig, TlsServerConfig, TlsVersions};
use plexwire::transport::{
    self, ClientTransport, Connection, Endpoint, ServerTransport, TransportError,
};
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(20);
const DAY: Duration = Duration::from_secs(86_400);

/// Certificates of one test, as files in a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
    ca: DevCa,
}

impl Pki {
    fn new() -> Pki {
        Pki::named("test CA")
    }

    fn named(ca: &str) -> Pki {
        Pki {
            dir: tempfile::tempdir().unwrap(),
            ca: DevCa::new(ca).unwrap(),
        }
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    /// `ca.pem`.
    fn ca(&self) -> String {
        self.write("ca.pem", self.ca.cert_pem())
    }

    /// `cert=…&key=…` of a certificate for `purpose` and `names`, valid over `validity`.
    fn identity(
        &self,
        name: &str,
        purpose: Purpose,
        names: &[&str],
        validity: std::ops::Range<SystemTime>,
    ) -> String {
        let c = self.ca.issue(purpose, names, validity).unwrap();
        format!(
            "cert={}&key={}",
            self.write(&format!("{name}.pem"), &c.cert_pem),
            self.write(&format!("{name}.key"), &c.key_pem)
        )
    }

    /// `cert=…&key=…` of a valid server certificate for `names`.
    fn server(&self, names: &[&str]) -> String {
        let now = SystemTime::now();
        self.identity("server", Purpose::Server, names, now - DAY..now + DAY)
    }

    /// `cert=…&key=…` of a valid client certificate.
    fn client(&self) -> String {
        let now = SystemTime::now();
        self.identity(
            "client",
            Purpose::Client,
            &["worker-1"],
            now - DAY..now + DAY,
        )
    }
}

/// Binds `listen`, connects to its address with `?{connect_opts}`, and
/// returns both sides' results.
async fn handshake(
    listen: &str,
    connect_opts: &str,
) -> (
    Result<Connection, TransportError>,
    Result<Connection, TransportError>,
) {
    let mut listener = tls::bind(&Endpoint::parse(listen).unwrap()).await.unwrap();
    let address = listener
        .local_endpoint()
        .url()
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    let url = Endpoint::parse(&format!("{address}?{connect_opts}")).unwrap();
    let client = tls::transport();
    let (client, server) = tokio::join!(
        client.connect(&url),
        timeout(LIMIT, listener.next_handshake())
    );
    (client, server.expect("the server side finishes"))
}

fn tls_reason(r: Result<Connection, TransportError>) -> String {
    match r {
        Err(TransportError::Tls { reason, .. }) => reason,
        Err(other) => panic!("expected a TLS error, got {other:?}"),
        Ok(c) => panic!("expected a TLS error, got a connection to {}", c.peer()),
    }
}

/// One frame each way.
async fn exchange(a: Connection, b: Connection) {
    let (mut atx, mut arx) = a.into_frames();
    let (mut btx, mut brx) = b.into_frames();
    let (x, y) = tokio::join!(
        atx.send_frame(Bytes::from_static(b"ping")),
        btx.send_frame(Bytes::from_static(b"pong"))
    );
    x.unwrap();
    y.unwrap();
    assert_eq!(&brx.recv_frame().await.unwrap().unwrap()[..], b"ping");
    assert_eq!(&arx.recv_frame().await.unwrap().unwrap()[..], b"pong");
}

#[tokio::test]
async fn mutual_tls_is_accepted() {
    let pki = Pki::new();
    let ca = pki.ca();
    let listen = format!(
        "tls://127.0.0.1:0?{}&client_ca={ca}&client_auth=required",
        pki.server(&["127.0.0.1"])
    );
    let (c, s) = handshake(&listen, &format!("ca={ca}&{}", pki.client())).await;
    let (c, s) = (c.unwrap(), s.unwrap());
    assert_eq!((c.peer().transport, s.peer().transport), ("tls", "tls"));
    exchange(c, s).await;
}

#[tokio::test]
async fn unknown_ca_is_rejected_on_both_sides() {
    let pki = Pki::new();
    let other = Pki::named("another CA");
    let listen = format!("tls://127.0.0.1:0?{}", pki.server(&["127.0.0.1"]));
    let (c, s) = handshake(&listen, &format!("ca={}", other.ca())).await;
    let c = tls_reason(c);
    assert!(
        c.starts_with("certificate signed by an unknown authority: the server's certificate does not chain to the CA in `ca=`"),
        "{c}"
    );
    let s = tls_reason(s);
    assert!(
        s.contains("the client rejected this listener's certificate: certificate signed by an unknown authority"),
        "{s}"
    );
}

#[tokio::test]
async fn a_ca_of_the_same_name_is_still_unknown() {
    // Two runs of `plexwire cert` make two CAs of the same name.
    let (pki, other) = (Pki::new(), Pki::new());
    let listen = format!("tls://127.0.0.1:0?{}", pki.server(&["127.0.0.1"]));
    let (c, _) = handshake(&listen, &format!("ca={}", other.ca())).await;
    let c = tls_reason(c);
    assert!(
        c.starts_with("certificate signed by an unknown authority: the server's certificate names a CA in `ca=` as its issuer"),
        "{c}"
    );
}

#[tokio::test]
async fn wrong_host_name_is_rejected() {
    let pki = Pki::new();
    let ca = pki.ca();
    let listen = format!("tls://127.0.0.1:0?{}", pki.server(&["localhost"]));
    // The name checked defaults to the URL's host.
    let (c, s) = handshake(&listen, &format!("ca={ca}")).await;
    let c = tls_reason(c);
    assert!(
        c.starts_with("certificate is not valid for `127.0.0.1`: the server's certificate is for"),
        "{c}"
    );
    assert!(
        c.contains("localhost"),
        "names what the certificate is for: {c}"
    );
    assert!(tls_reason(s).contains("bad certificate"));
    // An explicit server name is checked instead.
    let (c, _) = handshake(&listen, &format!("ca={ca}&server_name=wrong.example")).await;
    assert!(
        tls_reason(c).starts_with("certificate is not valid for `wrong.example`"),
        "server_name= is used"
    );
    let (c, s) = handshake(&listen, &format!("ca={ca}&server_name=localhost")).await;
    exchange(c.unwrap(), s.unwrap()).await;
}

#[tokio::test]
async fn missing_client_certificate_is_rejected() {
    let pki = Pki::new();
    let ca = pki.ca();
    let server = pki.server(&["127.0.0.1"]);
    for tls in ["1.3", "1.2"] {
        let listen =
            format!("tls://127.0.0.1:0?{server}&client_ca={ca}&client_auth=required&tls={tls}");
        let (c, s) = handshake(&listen, &format!("ca={ca}")).await;
        let s = tls_reason(s);
        assert!(
            s.contains("missing client certificate: the client presented none, and this listener requires one"),
            "TLS {tls}: {s}"
        );
        // With TLS 1.3 the client's side of the handshake is done before the
        // server checks; the rejection is then the first read's error.
        let c = match c {
            Err(e) => e.to_string(),
            Ok(c) => {
                let (_tx, mut rx) = c.into_frames();
                match timeout(LIMIT, rx.recv_frame()).await.unwrap() {
                    Some(Err(e)) => e.to_string(),
                    other => panic!("TLS {tls}: {other:?}"),
                }
            }
        };
        assert!(
            c.contains("missing client certificate: the server requires one; present it with `cert=` and `key=`"),
            "TLS {tls}: {c}"
        );
    }
}

#[tokio::test]
async fn optional_client_auth_takes_clients_with_and_without_a_certificate() {
    let pki = Pki::new();
    let ca = pki.ca();
    let listen = format!(
        "tls://127.0.0.1:0?{}&client_ca={ca}&client_auth=optional",
        pki.server(&["127.0.0.1"])
    );
    let (c, s) = handshake(&listen, &format!("ca={ca}")).await;
    exchange(c.unwrap(), s.unwrap()).await;
    let (c, s) = handshake(&listen, &format!("ca={ca}&{}", pki.client())).await;
    exchange(c.unwrap(), s.unwrap()).await;
    // A certificate that is presented must still be good.
    let stranger = Pki::named("another CA");
    let (_, s) = handshake(&listen, &format!("ca={ca}&{}", stranger.client())).await;
    let s = tls_reason(s);
    assert!(
        s.contains("certificate signed by an unknown authority: the client's certificate does not chain to the CA in `client_ca=`"),
        "{s}"
    );
}

#[tokio::test]
async fn expired_certificates_are_rejected() {
    let pki = Pki::new();
    let ca = pki.ca();
    let now = SystemTime::now();
    let expired = now - 30 * DAY..now - DAY;
    let listen = format!(
        "tls://127.0.0.1:0?{}",
        pki.identity("old", Purpose::Server, &["127.0.0.1"], expired.clone())
    );
    let (c, s) = handshake(&listen, &format!("ca={ca}")).await;
    let c = tls_reason(c);
    assert!(
        c.starts_with("certificate has expired: the server's certificate was valid until"),
        "{c}"
    );
    assert!(tls_reason(s).contains("certificate has expired"));

    // An expired client certificate, on the listener's side.
    let listen = format!(
        "tls://127.0.0.1:0?{}&client_ca={ca}",
        pki.server(&["127.0.0.1"])
    );
    let old_client = pki.identity("old-client", Purpose::Client, &["w"], expired);
    let (_, s) = handshake(&listen, &format!("ca={ca}&{old_client}")).await;
    let s = tls_reason(s);
    assert!(
        s.contains("certificate has expired: the client's certificate was valid until"),
        "{s}"
    );
}

#[tokio::test]
async fn tls12_client_against_tls13_server_fails_clearly() {
    let pki = Pki::new();
    let ca = pki.ca();
    let listen = format!("tls://127.0.0.1:0?{}&tls=1.3", pki.server(&["127.0.0.1"]));
    let (c, s) = handshake(&listen, &format!("ca={ca}&tls=1.2")).await;
    let c = tls_reason(c);
    assert!(
        c.starts_with("no TLS version in common: this side allows TLS 1.2 only"),
        "{c}"
    );
    let s = tls_reason(s);
    assert!(
        s.contains("no TLS version in common: this side allows TLS 1.3 only"),
        "{s}"
    );
    // Each version works on its own.
    for v in ["1.2", "1.3"] {
        let listen = format!("tls://127.0.0.1:0?{}&tls={v}", pki.server(&["127.0.0.1"]));
        let (c, s) = handshake(&listen, &format!("ca={ca}&tls=1.2,1.3")).await;
        exchange(c.unwrap(), s.unwrap()).await;
    }
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn insecure_mode_connects_and_warns() {
    let logs = Captured::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let pki = Pki::new();
    // A certificate nobody could verify: wrong name, and the client knows no CA.
    let listen = format!("tls://127.0.0.1:0?{}", pki.server(&["elsewhere.example"]));
    let (c, s) = handshake(&listen, "insecure=true").await;
    exchange(c.unwrap(), s.unwrap()).await;
    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("WARN")
            && logs.contains("TLS certificate verification is OFF (insecure=true)"),
        "{logs}"
    );
    // Without insecure=true, the same server is refused.
    let other = Pki::named("another CA");
    let (c, _) = handshake(&listen, &format!("ca={}", other.ca())).await;
    assert!(tls_reason(c).contains("unknown authority"));
}

#[tokio::test]
async fn settings_made_in_code_with_pem_in_memory() {
    let ca = DevCa::new("in-memory CA").unwrap();
    let server = ca.server(&["localhost"]).unwrap();
    let client = ca.client("worker-7").unwrap();
    let config = TlsServerConfig::new(server.cert(), server.key())
        .with_client_ca(ca.cert())
        .with_versions(TlsVersions::TLS13_ONLY);
    // The URL carries no TLS options at all.
    let ep = Endpoint::parse("tls://127.0.0.1:0").unwrap();
    let mut listener = tls::bind_with(&ep, &config).await.unwrap();
    let bound = listener.local_endpoint().clone();
    let transport = tls::transport().with_config(
        TlsClientConfig::new(ca.cert())
            .with_server_name("localhost")
            .with_identity(client.cert(), client.key()),
    );
    let (c, s) = tokio::join!(transport.connect(&bound), listener.next_handshake());
    exchange(c.unwrap(), s.unwrap()).await;
}

#[tokio::test]
async fn mutual_tls_over_a_unix_socket() {
    let pki = Pki::new();
    let ca = pki.ca();
    let path = pki.dir.path().join("s.sock");
    let listen = format!(
        "tls+unix://{}?{}&client_ca={ca}&mode=600",
        path.display(),
        pki.server(&["localhost"])
    );
    let (c, s) = handshake(&listen, &format!("ca={ca}&{}", pki.client())).await;
    let (c, s) = (c.unwrap(), s.unwrap());
    assert_eq!(c.peer().transport, "tls+unix");
    exchange(c, s).await;
    let (c, _) = handshake(&listen, &format!("ca={ca}")).await;
    // TLS 1.3: the rejection is the first read's error.
    let (_tx, mut rx) = c.unwrap().into_frames();
    let e = rx.recv_frame().await.unwrap().unwrap_err().to_string();
    assert!(e.contains("missing client certificate"), "{e}");
}

#[tokio::test]
async fn unusable_settings_say_what_to_fix() {
    let pki = Pki::new();
    let ca = pki.ca();
    let err =
        |r: Result<Box<dyn ServerTransport>, TransportError>| r.err().expect("refused").to_string();
    let e = err(transport::listen("tls://127.0.0.1:0").await);
    assert!(
        e.contains("a tls listener needs `cert=`") && e.contains("plexwire cert --out DIR"),
        "{e}"
    );
    let e =
        err(transport::listen(&format!("tls://127.0.0.1:0?{}&ca={ca}", pki.server(&["x"]))).await);
    assert!(
        e.contains("`ca=` is a client option") && e.contains("client_ca="),
        "{e}"
    );
    let e = err(transport::listen(
        "tls://127.0.0.1:0?cert=/nonexistent/s.pem&key=/nonexistent/s.key",
    )
    .await);
    assert!(e.contains("cannot read `cert=/nonexistent/s.pem`"), "{e}");
    let e = err(transport::listen(&format!("tls://127.0.0.1:0?cert={ca}&key={ca}")).await);
    assert!(e.contains("holds no private key"), "{e}");
    let e = err(transport::listen(&format!(
        "tls://127.0.0.1:0?{}&client_auth=required",
        pki.server(&["x"])
    ))
    .await);
    assert!(e.contains("`client_auth=` needs `client_ca=`"), "{e}");

    let e = transport::connect("tls://127.0.0.1:1")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("a tls client needs `ca=`") && e.contains("insecure=true"),
        "{e}"
    );
    let e = transport::connect(&format!("tls://127.0.0.1:1?ca={ca}&insecure=true"))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("give one or the other"), "{e}");
    let e = transport::connect(&format!("tls://127.0.0.1:1?ca={ca}&client_ca={ca}"))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("`client_ca=` is a listener option"), "{e}");
}

/// QUIC takes the same TLS settings and explains its failures the same way.
#[cfg(feature = "quic")]
mod quic {
    use super::*;
    use plexwire::transport::quic::{QuicListener, QuicTransport};

    async fn handshake(
        listen: &str,
        connect_opts: &str,
    ) -> (
        Result<Connection, TransportError>,
        Result<Connection, TransportError>,
    ) {
        let mut listener = QuicListener::bind(&Endpoint::parse(listen).unwrap())
            .await
            .unwrap();
        let address = listener
            .local_endpoint()
            .url()
            .split('?')
            .next()
            .unwrap()
            .to_owned();
        let url = Endpoint::parse(&format!("{address}?{connect_opts}")).unwrap();
        let client = QuicTransport::default();
        let (c, s) = tokio::join!(client.connect(&url), async {
            timeout(Duration::from_secs(3), listener.next_handshake()).await
        });
        // A connection refused by the client never reaches the listener's
        // handshake with a result of its own before the timeout; that is fine.
        (c, s.unwrap_or(Err(TransportError::Closed)))
    }

    #[tokio::test]
    async fn mutual_tls_is_accepted_and_checks_are_named() {
        let pki = Pki::new();
        let ca = pki.ca();
        let server = pki.server(&["127.0.0.1"]);
        let listen = format!("quic://127.0.0.1:0?{server}&client_ca={ca}");
        let (c, s) = handshake(&listen, &format!("ca={ca}&{}", pki.client())).await;
        exchange(c.unwrap(), s.unwrap()).await;

        let other = Pki::named("another CA");
        let (c, _) = handshake(&listen, &format!("ca={}&{}", other.ca(), pki.client())).await;
        assert!(tls_reason(c)
            .starts_with("certificate signed by an unknown authority: the server's certificate"),);
        let (c, _) = handshake(
            &listen,
            &format!("ca={ca}&{}&server_name=wrong.example", pki.client()),
        )
        .await;
        assert!(tls_reason(c).starts_with("certificate is not valid for `wrong.example`"));

        // No client certificate: the listener says so, and so does the client's first read.
        let (c, s) = handshake(&listen, &format!("ca={ca}")).await;
        let s = tls_reason(s);
        assert!(s.contains("missing client certificate"), "{s}");
        let c = match c {
            Err(e) => e.to_string(),
            Ok(c) => {
                let (_tx, mut rx) = c.into_frames();
                timeout(LIMIT, rx.recv_frame())
                    .await
                    .unwrap()
                    .unwrap()
                    .unwrap_err()
                    .to_string()
            }
        };
        assert!(
            c.contains("missing client certificate: the server requires one"),
            "{c}"
        );
    }

    #[tokio::test]
    async fn a_ca_of_the_same_name_is_still_unknown() {
        // Two runs of `plexwire cert` make two CAs of the same name.
        let (pki, other) = (Pki::new(), Pki::new());
        let listen = format!("quic://127.0.0.1:0?{}", pki.server(&["127.0.0.1"]));
        let (c, _) = handshake(&listen, &format!("ca={}", other.ca())).await;
        let c = tls_reason(c);
        assert!(
            c.starts_with("certificate signed by an unknown authority"),
            "{c}"
        );
    }

    #[tokio::test]
    async fn expired_server_certificate_and_tls12_are_refused() {
        let pki = Pki::new();
        let ca = pki.ca();
        let now = SystemTime::now();
        let old = pki.identity(
            "old",
            Purpose::Server,
            &["127.0.0.1"],
            now - 9 * DAY..now - DAY,
        );
        let (c, _) = handshake(&format!("quic://127.0.0.1:0?{old}"), &format!("ca={ca}")).await;
        assert!(tls_reason(c).starts_with("certificate has expired"));
        let e = transport::connect(&format!("quic://127.0.0.1:1?ca={ca}&tls=1.2"))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("QUIC always uses TLS 1.3"), "{e}");
    }
}

/// TLS runs over any byte stream, not just a socket: here an in-memory duplex
/// pipe, with the stream-level API the compositions (`tls://`, `https://`) use.
#[tokio::test]
async fn tls_over_any_byte_stream() {
    use plexwire::transport::tls::{TlsAcceptor, TlsConnector};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let ca = DevCa::new("stream CA").unwrap();
    let server = ca.server(&["localhost"]).unwrap();
    let ep = Endpoint::parse("tls://localhost:1").unwrap();
    let acceptor =
        TlsAcceptor::new(&TlsServerConfig::new(server.cert(), server.key()), &ep).unwrap();
    let connector = TlsConnector::new(&TlsClientConfig::new(ca.cert()), &ep).unwrap();
    let (a, b) = tokio::io::duplex(4096);
    let (c, s) = tokio::join!(
        connector.connect_stream(a),
        acceptor.accept_stream(b, "pipe")
    );
    let (mut c, mut s) = (c.unwrap(), s.unwrap());
    c.write_all(b"over a pipe").await.unwrap();
    c.flush().await.unwrap();
    let mut got = [0u8; 11];
    s.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"over a pipe");

    // A client that trusts another CA is refused, with the reason, on both sides.
    let other = DevCa::new("other CA").unwrap();
    let connector = TlsConnector::new(&TlsClientConfig::new(other.cert()), &ep).unwrap();
    let (a, b) = tokio::io::duplex(4096);
    let (c, s) = tokio::join!(
        connector.connect_stream(a),
        acceptor.accept_stream(b, "pipe")
    );
    let c = match c {
        Err(TransportError::Tls { reason, .. }) => reason,
        other => panic!("expected a TLS error, got {other:?}"),
    };
    assert!(c.contains("unknown authority"), "{c}");
    match s {
        Err(TransportError::Tls { reason, .. }) => {
            assert!(reason.starts_with("client pipe: "), "{reason}")
        }
        other => panic!("expected a TLS error, got {other:?}"),
    }
}
