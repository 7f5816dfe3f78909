//! Picking a backend from an endpoint URL at run time.
//!
//! [`registry()`] is the process-wide [`Registry`] of the backends compiled
//! into this build, one registration line per backend; it also knows the
//! schemes of the backends that were left out and which cargo feature brings
//! each in, so such an endpoint fails with an error naming the feature.
//! [`connect`], [`listen`] and [`listen_on`] go through it, and
//! [`AnyTransport`] is the same dispatch as a [`ClientTransport`], for code
//! generic over the transport. A program (or a test) may register more
//! backends at run time with [`Registry::register`].
//!
//! Test suites, the benchmark and the demo iterate the registry too:
//! [`Registry::backends`] (name, cargo feature, schemes) and
//! [`Registry::loopback`] (fresh listen URLs on 127.0.0.1, ::1 or a socket
//! path, and what a connecting side adds).

use async_trait::async_trait;
pub use plexwire_transport::*;

/// The TLS backend (`tls://`, `tls+unix://`): plexwire-tls over this
/// build's plain backends ([`tls::transport`], [`tls::bind`]), and everything
/// of plexwire-tls: [`TlsTransport`](tls::TlsTransport),
/// [`TlsListener`](tls::TlsListener), the TLS settings every encrypted
/// backend shares ([`TlsServerConfig`](tls::TlsServerConfig),
/// [`TlsClientConfig`](tls::TlsClientConfig)).
#[cfg(feature = "tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
pub mod tls;

/// The QUIC backend (`quic://`): [`QuicTransport`](quic::QuicTransport),
/// [`QuicListener`](quic::QuicListener).
#[cfg(feature = "quic")]
#[cfg_attr(docsrs, doc(cfg(feature = "quic")))]
pub use plexwire_quic as quic;

/// The HTTP backend (`http://`, and `https://` with the `tls` feature):
/// [`HttpTransport`](http::HttpTransport), [`HttpListener`](http::HttpListener).
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub use plexwire_http as http;

/// The WebSocket backend (`ws://`, and `wss://` with the `tls` feature):
/// [`WsTransport`](ws::WsTransport), [`WsListener`](ws::WsListener), and
/// [`route`](ws::route) to serve WebSocket on any HTTP listener.
#[cfg(feature = "ws")]
#[cfg_attr(docsrs, doc(cfg(feature = "ws")))]
pub use plexwire_ws as ws;

/// The path every `http://` listener [`listen`] binds serves WebSocket on
/// (with the `ws` feature), so one port carries both.
#[cfg(feature = "ws")]
pub const HTTP_WS_PATH: &str = "/ws";

/// Registers a backend crate's [`Backend`] when its cargo feature is on, and
/// otherwise records its schemes as needing that feature.
macro_rules! register {
    ($reg:expr, feature = $feature:literal, $backend:path, schemes = [$($scheme:literal),* $(,)?]) => {{
        #[cfg(feature = $feature)]
        $reg.register($backend()).expect("the compiled-in backends serve distinct schemes");
        #[cfg(not(feature = $feature))]
        {
            $($reg.not_compiled($scheme, $feature);)*
        }
    }};
}

/// The backends of this build; see the module documentation.
pub fn registry() -> &'static Registry {
    static REGISTRY: std::sync::OnceLock<Registry> = std::sync::OnceLock::new();
    REGISTRY.get_or_init(|| {
        let reg = Registry::new();
        reg.register(plexwire_transport::mem_backend())
            .expect("the compiled-in backends serve distinct schemes");
        register!(
            reg,
            feature = "tcp",
            plexwire_tcp::backend,
            schemes = ["tcp"]
        );
        register!(
            reg,
            feature = "unix",
            plexwire_unix::backend,
            schemes = ["unix", "socket"]
        );
        register!(
            reg,
            feature = "tls",
            plexwire_tls::backend,
            schemes = ["tls", "tls+unix"]
        );
        register!(
            reg,
            feature = "quic",
            plexwire_quic::backend,
            schemes = ["quic"]
        );
        register!(
            reg,
            feature = "http",
            http_backend,
            schemes = ["http", "https"]
        );
        register!(reg, feature = "ws", plexwire_ws::backend, schemes = ["ws"]);
        // `wss://` is WebSocket over TLS: name exactly the feature(s) missing.
        #[cfg(not(all(feature = "ws", feature = "tls")))]
        reg.not_compiled(
            "wss",
            if cfg!(feature = "ws") {
                "tls"
            } else if cfg!(feature = "tls") {
                "ws"
            } else {
                "ws,tls"
            },
        );
        // `https://` is HTTP over TLS: name exactly the feature(s) missing.
        #[cfg(not(all(feature = "http", feature = "tls")))]
        reg.not_compiled(
            "https",
            if cfg!(feature = "http") {
                "tls"
            } else if cfg!(feature = "tls") {
                "http"
            } else {
                "http,tls"
            },
        );
        reg
    })
}

/// The HTTP backend, whose listeners also serve ReasonChip's POST endpoint
/// ([`crate::http_api`]) beside the upgrade to a plexwire connection, and
/// with the `ws` feature WebSocket on [`HTTP_WS_PATH`].
#[cfg(feature = "http")]
fn http_backend() -> Backend {
    fn bind<'a>(
        _: &'a Registry,
        endpoint: &'a Endpoint,
    ) -> futures_util::future::BoxFuture<'a, Result<Box<dyn ServerTransport>, TransportError>> {
        Box::pin(async move {
            #[allow(unused_mut)] // without `ws`, nothing is added
            let mut router = crate::http_api::router();
            #[cfg(feature = "ws")]
            {
                router = router.route(plexwire_ws::route(HTTP_WS_PATH));
            }
            let listener = plexwire_http::HttpListener::bind_with(endpoint, router).await?;
            Ok(Box::new(listener) as Box<dyn ServerTransport>)
        })
    }
    plexwire_http::backend().with_bind(bind)
}

/// Connects to `url` with whichever compiled-in backend its scheme names.
pub async fn connect(url: &str) -> Result<Connection, TransportError> {
    registry().connect(&Endpoint::parse(url)?).await
}

/// Listens on `url` with whichever compiled-in backend its scheme names.
pub async fn listen(url: &str) -> Result<Box<dyn ServerTransport>, TransportError> {
    listen_on(&Endpoint::parse(url)?).await
}

/// Listens on a parsed endpoint; see [`listen`].
pub async fn listen_on(endpoint: &Endpoint) -> Result<Box<dyn ServerTransport>, TransportError> {
    registry().listen(endpoint).await
}

/// Every backend of [`registry()`] behind one [`ClientTransport`], chosen per endpoint.
#[derive(Debug, Clone, Copy, Default)]
pub struct AnyTransport;

#[async_trait]
impl ClientTransport for AnyTransport {
    async fn connect(&self, endpoint: &Endpoint) -> Result<Connection, TransportError> {
        registry().connect(endpoint).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(url: &str) -> String {
        match registry().parse(url) {
            Ok(ep) => panic!("{url} parsed as {ep:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[tokio::test]
    async fn a_backend_that_is_not_compiled_in_names_its_feature() {
        // An unknown scheme names no feature.
        let e = connect("zz://127.0.0.1:1/x").await.unwrap_err().to_string();
        assert!(
            e.starts_with(
                "invalid endpoint `zz://127.0.0.1:1/x`: unknown scheme `zz`; this build knows: mem"
            ),
            "{e}"
        );
        assert!(!e.contains("--features"), "{e}");
        #[cfg(not(feature = "ws"))]
        assert_eq!(
            connect("ws://127.0.0.1:1/x").await.unwrap_err().to_string(),
            "endpoint `ws://127.0.0.1:1/x` needs the `ws` cargo feature of plexwire (build with `--features ws`)"
        );
        #[cfg(not(all(feature = "ws", feature = "tls")))]
        {
            let e = connect("wss://127.0.0.1:1/x")
                .await
                .unwrap_err()
                .to_string();
            #[cfg(feature = "ws")]
            assert!(e.contains("the `tls` cargo feature"), "{e}");
            #[cfg(not(feature = "ws"))]
            assert!(e.contains("--features ws"), "{e}");
        }
        #[cfg(not(feature = "quic"))]
        assert_eq!(
            connect("quic://127.0.0.1:1").await.unwrap_err().to_string(),
            "endpoint `quic://127.0.0.1:1` needs the `quic` cargo feature of plexwire (build with `--features quic`)"
        );
        #[cfg(not(feature = "tls"))]
        for url in ["tls://127.0.0.1:0", "tls+unix:///tmp/x.sock"] {
            let e = listen(url).await.err().unwrap().to_string();
            assert!(e.contains("`tls` cargo feature"), "{e}");
        }
        #[cfg(not(all(feature = "http", feature = "tls")))]
        {
            let e = connect("https://127.0.0.1:1")
                .await
                .unwrap_err()
                .to_string();
            assert!(e.contains("--features "), "{e}");
            #[cfg(feature = "http")]
            assert!(e.contains("the `tls` cargo feature"), "{e}");
            #[cfg(all(feature = "tls", not(feature = "http")))]
            assert!(e.contains("the `http` cargo feature"), "{e}");
            #[cfg(not(any(feature = "tls", feature = "http")))]
            assert!(e.contains("--features http,tls"), "{e}");
        }
        #[cfg(not(feature = "tcp"))]
        assert!(connect("tcp://127.0.0.1:1")
            .await
            .unwrap_err()
            .to_string()
            .contains("`tcp` cargo feature"));
    }

    #[test]
    fn every_feature_named_exists_and_every_compiled_backend_is_listed() {
        // The features of this crate that bring backends (Cargo.toml).
        const FEATURES: &[&str] = &["tcp", "unix", "tls", "quic", "http", "ws"];
        for (scheme, features) in registry().not_compiled_schemes() {
            for f in features.split(',') {
                assert!(FEATURES.contains(&f), "{scheme} names `{f}`");
                assert!(!cfg_on(f), "{scheme} names `{f}`, which is on");
            }
        }
        let names: Vec<_> = registry().backends().iter().map(|b| b.name()).collect();
        for f in FEATURES {
            assert_eq!(names.contains(f), cfg_on(f), "backend {f}: {names:?}");
        }
        assert_eq!(names[0], "mem", "always there");
    }

    fn cfg_on(feature: &str) -> bool {
        const ON: &[(&str, bool)] = &[
            ("tcp", cfg!(feature = "tcp")),
            ("unix", cfg!(feature = "unix")),
            ("tls", cfg!(feature = "tls")),
            ("quic", cfg!(feature = "quic")),
            ("http", cfg!(feature = "http")),
            ("ws", cfg!(feature = "ws")),
        ];
        ON.iter().any(|(f, on)| *f == feature && *on)
    }

    #[tokio::test]
    async fn a_malformed_url_is_quoted() {
        let e = connect("tcp:/127.0.0.1:1").await.unwrap_err().to_string();
        assert!(e.starts_with("invalid endpoint `tcp:/127.0.0.1:1`"), "{e}");
        // mem:// is in every build.
        assert!(err("mem://").contains("a mem:// endpoint needs a name"));
        assert!(err("mem://a?mode=1").contains("unknown option `mode` for mem://"));
    }

    #[tokio::test]
    async fn a_backend_registered_at_run_time_is_reachable() {
        use futures_util::future::BoxFuture;

        // `echo-test://name` is `mem://echo-test-name`, registered by this test.
        fn inner(ep: &Endpoint) -> Result<Endpoint, TransportError> {
            match ep.address() {
                Address::Name(n) => Endpoint::parse(&format!("mem://echo-test-{n}")),
                _ => Err(ep.wrong_backend("echo-test")),
            }
        }
        fn connect_fn<'a>(
            reg: &'a Registry,
            ep: &'a Endpoint,
        ) -> BoxFuture<'a, Result<Connection, TransportError>> {
            Box::pin(async move { reg.connect(&inner(ep)?).await })
        }
        fn bind_fn<'a>(
            reg: &'a Registry,
            ep: &'a Endpoint,
        ) -> BoxFuture<'a, Result<Box<dyn ServerTransport>, TransportError>> {
            Box::pin(async move { reg.listen(&inner(ep)?).await })
        }
        const SCHEMES: &[SchemeSpec] = &[SchemeSpec {
            name: "echo-test",
            aliases: &[],
            address: AddressShape::Name,
            options: &[],
        }];
        registry()
            .register(Backend::new("echo-test", SCHEMES, connect_fn, bind_fn))
            .unwrap();
        let mut l = listen("echo-test://a").await.unwrap();
        let (c, s) = tokio::join!(connect("echo-test://a"), l.accept());
        let (mut tx, _rx) = c.unwrap().into_frames();
        let (_tx, mut rx) = s.unwrap().into_frames();
        tx.send_frame(bytes::Bytes::from_static(b"hi"))
            .await
            .unwrap();
        assert_eq!(&rx.recv_frame().await.unwrap().unwrap()[..], b"hi");
        let e = AnyTransport
            .connect(&Endpoint::parse("echo-test://a?x=1").unwrap())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown option `x` for echo-test://; known: max_frame_size"),
            "{e}"
        );
        assert!(registry()
            .register(plexwire_transport::mem_backend())
            .is_err());
    }

    /// The URL edge cases of each scheme, against the real backends.
    #[cfg(all(feature = "tcp", feature = "unix"))]
    #[test]
    fn addresses_are_checked_per_scheme() {
        let r = registry();
        assert!(err("ftp://x:1").contains("unknown scheme `ftp`"));
        assert!(err("tcp://127.0.0.1").contains("port is missing, e.g. `tcp://127.0.0.1:51500`"));
        assert!(err("tcp://127.0.0.1:").contains("port is missing"));
        assert!(err("tcp:///x").contains("host is missing"));
        assert!(err("tcp://a!b:1").contains("`a!b` is not a valid host"));
        assert!(err("unix://relative.sock").contains(
            "a unix:// endpoint needs an absolute path, e.g. `unix:///tmp/plexwire.sock`"
        ));
        assert!(err("unix:///").contains("socket path is empty"));
        assert!(err("mem://").contains("needs a name"));
        assert!(err("mem://a/b").contains("needs a name without `/`"));
        let rc = r
            .parse("socket:///tmp/reasonchip-broker-client.sock")
            .unwrap();
        assert_eq!(rc.scheme(), "unix", "the alias resolves to its backend");
        assert_eq!(rc.url(), "socket:///tmp/reasonchip-broker-client.sock");
        let v6 = r.parse("tcp://[::1]:0").unwrap();
        assert!(matches!(v6.address(), Address::Host { host, port: 0, .. } if host == "::1"));
        assert!(
            matches!(r.parse("mem://broker").unwrap().address(), Address::Name(n) if n == "broker")
        );
    }

    #[cfg(all(feature = "tcp", feature = "unix"))]
    #[test]
    fn options_are_checked_per_scheme() {
        let r = registry();
        assert_eq!(
            r.parse("unix:///tmp/x?mode=660").unwrap().unix_mode(),
            Some(0o660)
        );
        assert!(err("tcp://127.0.0.1:1?mode=660").contains("unknown option `mode`"));
        assert!(err("unix:///x?mode=999").contains("octal"));
        let e = err("tcp://127.0.0.1:1?ca=x");
        assert!(
            e.contains("unknown option `ca` for tcp://; known: max_frame_size"),
            "{e}"
        );
        let e = err("unix:///x?cert=c");
        assert!(e.contains("known: max_frame_size, mode"), "{e}");
        let e = err("socket:///x?cert=c");
        assert!(e.contains("unknown option `cert` for socket://"), "{e}");
        assert!(err("tcp://h:1?streams=one").contains("unknown option `streams`"));
    }

    #[cfg(feature = "tls")]
    #[test]
    fn tls_options_are_checked() {
        let r = registry();
        let ep = r
            .parse("tls://localhost:1?ca=/etc/ca.pem&cert=/a%20b/c.pem&key=k&client_auth=optional&tls=1.2,1.3&insecure=false&server_name=x")
            .unwrap();
        assert_eq!(ep.option("cert"), Some("/a b/c.pem"));
        assert_eq!(ep.options().count(), 7);
        let tu = r
            .parse("tls+unix:///tmp/s.sock?mode=600&cert=c&key=k")
            .unwrap();
        assert_eq!(tu.scheme(), "tls+unix");
        assert_eq!(tu.unix_mode(), Some(0o600));
        assert_eq!(
            r.backend("tls+unix").and_then(|b| b.cargo_feature()),
            Some("tls")
        );
        let e = err("tls://h:1?mode=600");
        assert!(
            e.contains("known: max_frame_size, ca, cert, key, client_ca, client_auth, server_name, tls, insecure"),
            "{e}"
        );
        assert!(err("tls://h:1?client_auth=always").contains("required, optional or none"));
        assert!(err("tls://h:1?tls=1.1").contains("TLS versions"));
        assert!(err("tls://h:1?ca=").contains("option `ca` needs a value"));
        assert!(err("tls+unix://rel").contains("absolute path"));
        assert!(err("tls+unix:///x?streams=one").contains("unknown option `streams`"));
    }

    #[cfg(feature = "quic")]
    #[test]
    fn quic_options_are_checked() {
        let r = registry();
        assert!(r
            .parse("quic://[::1]:1?ca=c&max_frame_size=9")
            .unwrap()
            .option("ca")
            .is_some());
        assert_eq!(
            r.parse("quic://h:1?streams=one").unwrap().option("streams"),
            Some("one")
        );
        assert!(err("quic://h:1?streams=many").contains("streams must be `run`"));
        assert!(err("quic://h:1?insecure=yes").contains("true or false"));
        assert!(err("quic://h").contains("port is missing"));
    }

    #[cfg(feature = "http")]
    #[test]
    fn http_takes_a_default_port_and_a_path() {
        let r = registry();
        assert!(matches!(
            r.parse("http://h").unwrap().address(),
            Address::Host { port: 80, .. }
        ));
        assert!(
            matches!(r.parse("http://h:9/app").unwrap().address(), Address::Host { path, .. } if path == "/app")
        );
        assert!(err("http://h:1?ca=c").contains("unknown option `ca` for http://"));
        #[cfg(feature = "tls")]
        assert!(r.parse("https://h/x?ca=c").unwrap().option("ca").is_some());
    }

    #[cfg(all(feature = "http", feature = "ws"))]
    #[tokio::test]
    async fn an_http_listener_serves_websocket_on_its_ws_path() {
        let mut l = listen("http://127.0.0.1:0").await.unwrap();
        let http = l.local_endpoint().url().trim_end_matches('/').to_owned();
        let ws = format!("ws{}{HTTP_WS_PATH}", &http[4..]);
        let (c, s) = tokio::join!(connect(&ws), l.accept());
        let (mut tx, _rx) = c.unwrap().into_frames();
        let s = s.unwrap();
        assert_eq!(s.peer().transport, "ws");
        let (_tx, mut rx) = s.into_frames();
        tx.send_frame(bytes::Bytes::from_static(b"one port"))
            .await
            .unwrap();
        assert_eq!(&rx.recv_frame().await.unwrap().unwrap()[..], b"one port");
    }

    #[test]
    fn every_backend_has_loopback_variants() {
        let dir = std::env::temp_dir();
        let env = LoopbackEnv {
            scratch_dir: dir.clone(),
            certs: Some(DevCerts {
                ca: dir.join("ca.pem"),
                cert: dir.join("c.pem"),
                key: dir.join("k.pem"),
            }),
        };
        let all = registry().loopback(&env).unwrap();
        for b in registry().backends() {
            if b.name() == "echo-test" {
                continue; // registered by the test above, without loopback
            }
            assert!(
                all.iter().any(|v| b.scheme(v.scheme).is_some()),
                "{} has no loopback variant",
                b.name()
            );
        }
        for v in &all {
            let ep = registry()
                .parse(&v.listen)
                .unwrap_or_else(|e| panic!("{}: {e}", v.label));
            assert_eq!(ep.scheme(), v.scheme);
        }
    }
}
