//! Endpoint URLs: one string picks the backend and the address at run time.
//!
//! ```text
//! tcp://127.0.0.1:51500     tcp://[::1]:51500     tcp://localhost:51500
//! unix:///run/plexwire.sock socket:///tmp/rc.sock (ReasonChip's spelling)
//! mem://name                (in-process, for tests and embedding)
//! tls://host:port          tls+unix:///run/plexwire.sock (TLS over a UNIX socket)
//! quic://host:port  http://host:port  https://host:port  ws://host:port/path
//! ```
//!
//! Options ride in the query string, and which ones a scheme takes is checked
//! here, so a misspelt option is an error rather than silently ignored:
//!
//! | option | schemes | meaning |
//! |---|---|---|
//! | `max_frame_size=N` | every scheme | largest frame in bytes |
//! | `mode=660` | `unix`, `tls+unix` | octal file mode of the socket |
//! | `streams=run` or `streams=one` | `quic` | each run on its own QUIC stream (the default), or every frame on one stream |
//! | `ca`, `cert`, `key`, `client_ca`, `client_auth`, `server_name`, `tls`, `insecure` | `tls`, `tls+unix`, `quic`, `https`, `wss` | TLS settings, read by the backend ([`Endpoint::option`]) |
//!
//! Option values may be percent-encoded (`%20` for a space, `%26` for `&`).

use std::fmt;
use std::path::PathBuf;

use crate::TransportError;

/// The default maximum frame size: 16 MiB.
pub const DEFAULT_MAX_FRAME_SIZE: usize = 16 * 1024 * 1024;

/// The options every TLS-encrypted scheme accepts (see the module documentation).
const TLS_OPTIONS: &[&str] = &[
    "ca",
    "cert",
    "key",
    "client_ca",
    "client_auth",
    "server_name",
    "tls",
    "insecure",
];

/// The transport an endpoint names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Scheme {
    /// `tcp://`
    Tcp,
    /// `unix://` or ReasonChip's `socket://`
    Unix,
    /// `mem://`
    Mem,
    /// `tls://`
    Tls,
    /// `tls+unix://`: TLS over a UNIX-domain socket.
    TlsUnix,
    /// `http://`
    Http,
    /// `https://`
    Https,
    /// `quic://`
    Quic,
    /// `ws://`
    Ws,
    /// `wss://`
    Wss,
}

impl Scheme {
    /// The cargo feature of the `plexwire` crate that provides this backend
    /// (`None` for the always-present in-memory transport).
    pub fn feature(self) -> Option<&'static str> {
        match self {
            Scheme::Tcp => Some("tcp"),
            Scheme::Unix => Some("unix"),
            Scheme::Mem => None,
            Scheme::Tls | Scheme::TlsUnix => Some("tls"),
            Scheme::Http | Scheme::Https => Some("http"),
            Scheme::Quic => Some("quic"),
            Scheme::Ws | Scheme::Wss => Some("ws"),
        }
    }

    /// Whether connections of this scheme are encrypted with TLS, and so take
    /// the TLS options (`ca`, `cert`, `key`, …).
    pub fn is_tls(self) -> bool {
        matches!(
            self,
            Scheme::Tls | Scheme::TlsUnix | Scheme::Quic | Scheme::Https | Scheme::Wss
        )
    }

    /// The query options this scheme accepts.
    pub fn options(self) -> Vec<&'static str> {
        let mut known = vec!["max_frame_size"];
        if matches!(self, Scheme::Unix | Scheme::TlsUnix) {
            known.push("mode");
        }
        if self == Scheme::Quic {
            known.push("streams");
        }
        if self.is_tls() {
            known.extend_from_slice(TLS_OPTIONS);
        }
        known
    }

    fn parse(s: &str) -> Option<Scheme> {
        Some(match s {
            "tcp" => Scheme::Tcp,
            "unix" | "socket" => Scheme::Unix,
            "mem" => Scheme::Mem,
            "tls" => Scheme::Tls,
            "tls+unix" => Scheme::TlsUnix,
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            "quic" => Scheme::Quic,
            "ws" => Scheme::Ws,
            "wss" => Scheme::Wss,
            _ => return None,
        })
    }

    fn default_port(self) -> Option<u16> {
        match self {
            Scheme::Http | Scheme::Ws => Some(80),
            Scheme::Https | Scheme::Wss => Some(443),
            _ => None,
        }
    }
}

/// Where an endpoint points.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Address {
    /// A host name or IP literal (brackets removed) and a port.
    Host {
        /// `127.0.0.1`, `::1`, `example.com`.
        host: String,
        /// The port.
        port: u16,
        /// The path after the authority (`/` if none); used by HTTP and WebSocket.
        path: String,
    },
    /// An absolute filesystem path.
    Path(PathBuf),
    /// The name of an in-process listener.
    Name(String),
}

/// A parsed endpoint URL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    scheme: Scheme,
    address: Address,
    max_frame_size: usize,
    unix_mode: Option<u32>,
    /// Every `key=value` of the query, values percent-decoded, in order.
    options: Vec<(String, String)>,
    url: String,
}

impl Endpoint {
    /// Parses an endpoint URL; see the module documentation for the forms.
    pub fn parse(url: &str) -> Result<Endpoint, TransportError> {
        let bad = |reason: String| TransportError::InvalidEndpoint {
            url: url.to_owned(),
            reason,
        };
        let (scheme_str, rest) = url.split_once("://").ok_or_else(|| {
            bad("expected `scheme://address`, e.g. `tcp://127.0.0.1:51500` or `unix:///tmp/plexwire.sock`".into())
        })?;
        let scheme = Scheme::parse(scheme_str).ok_or_else(|| {
            bad(format!(
                "unknown scheme `{scheme_str}`; expected one of tcp, unix, socket, mem, tls, tls+unix, http, https, quic, ws, wss"
            ))
        })?;
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        if rest.contains('#') {
            return Err(bad("fragments (`#…`) are not allowed".into()));
        }

        let address = match scheme {
            Scheme::Unix | Scheme::TlsUnix => {
                if !rest.starts_with('/') {
                    return Err(bad(format!(
                        "a {scheme_str}:// endpoint needs an absolute path, e.g. `{scheme_str}:///tmp/plexwire.sock`"
                    )));
                }
                if rest.len() == 1 {
                    return Err(bad("the socket path is empty".into()));
                }
                Address::Path(PathBuf::from(rest))
            }
            Scheme::Mem => {
                if rest.is_empty() || rest.contains('/') {
                    return Err(bad(
                        "a mem:// endpoint needs a name without `/`, e.g. `mem://broker`".into(),
                    ));
                }
                Address::Name(rest.to_owned())
            }
            _ => parse_host_port(scheme, scheme_str, rest).map_err(bad)?,
        };

        let mut ep = Endpoint {
            scheme,
            address,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            unix_mode: None,
            options: Vec::new(),
            url: url.to_owned(),
        };
        if let Some(q) = query {
            for pair in q.split('&').filter(|p| !p.is_empty()) {
                let (k, v) = pair
                    .split_once('=')
                    .ok_or_else(|| bad(format!("option `{pair}` needs a value (`key=value`)")))?;
                let known = scheme.options();
                if !known.contains(&k) {
                    return Err(bad(format!(
                        "unknown option `{k}` for {scheme_str}://; known: {}",
                        known.join(", ")
                    )));
                }
                if ep.options.iter().any(|(seen, _)| seen == k) {
                    return Err(bad(format!("option `{k}` is given twice")));
                }
                let v = percent_decode(v).map_err(|e| bad(format!("option `{k}`: {e}")))?;
                let v = v.as_str();
                match k {
                    "max_frame_size" => {
                        let n: usize = v.parse().map_err(|_| {
                            bad(format!(
                                "max_frame_size must be a whole number of bytes, got `{v}`"
                            ))
                        })?;
                        if n == 0 || n > u32::MAX as usize {
                            return Err(bad(format!(
                                "max_frame_size must be between 1 and {} (a u32 length prefix), got {n}",
                                u32::MAX
                            )));
                        }
                        ep.max_frame_size = n;
                    }
                    "mode" => {
                        let m = u32::from_str_radix(v, 8)
                            .ok()
                            .filter(|m| *m <= 0o777)
                            .ok_or_else(|| {
                                bad(format!(
                                    "mode must be octal permission bits such as 660, got `{v}`"
                                ))
                            })?;
                        ep.unix_mode = Some(m);
                    }
                    "streams" => {
                        if !matches!(v, "run" | "one") {
                            return Err(bad(format!(
                                "streams must be `run` (a QUIC stream per run) or `one` (one stream for everything), got `{v}`"
                            )));
                        }
                    }
                    _ => check_tls_option(k, v).map_err(bad)?,
                }
                ep.options.push((k.to_owned(), v.to_owned()));
            }
        }
        Ok(ep)
    }

    /// The value of query option `key` (percent-decoded), if the URL has it.
    ///
    /// Only options the scheme accepts get this far ([`Scheme::options`]);
    /// backends read their own, e.g. the TLS backend reads `ca` and `cert`.
    pub fn option(&self, key: &str) -> Option<&str> {
        self.options
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every query option, in the order written (values percent-decoded).
    pub fn options(&self) -> impl Iterator<Item = (&str, &str)> {
        self.options.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The transport this endpoint names.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// Where it points.
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// The URL as written.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The largest frame a connection to or from this endpoint accepts.
    pub fn max_frame_size(&self) -> usize {
        self.max_frame_size
    }

    /// Sets the largest frame; see [`Endpoint::max_frame_size`].
    pub fn with_max_frame_size(mut self, max: usize) -> Self {
        self.max_frame_size = max.clamp(1, u32::MAX as usize);
        self
    }

    /// The file mode to give a UNIX socket, if one was asked for.
    pub fn unix_mode(&self) -> Option<u32> {
        self.unix_mode
    }

    /// A copy pointing at another address of the same scheme and options
    /// (used by listeners to report the port they really bound).
    pub fn with_address(&self, address: Address) -> Endpoint {
        let mut ep = self.clone();
        ep.address = address;
        let query = self.url.split_once('?').map(|(_, q)| q);
        let base = match (&ep.scheme, &ep.address) {
            (_, Address::Path(p)) => format!(
                "{}://{}",
                self.url.split("://").next().unwrap_or("unix"),
                p.display()
            ),
            (_, Address::Name(n)) => format!("mem://{n}"),
            (s, Address::Host { host, port, path }) => {
                let scheme = self.url.split("://").next().unwrap_or("tcp");
                let host = if host.contains(':') {
                    format!("[{host}]")
                } else {
                    host.clone()
                };
                let path = if path == "/"
                    && !matches!(s, Scheme::Http | Scheme::Https | Scheme::Ws | Scheme::Wss)
                {
                    String::new()
                } else {
                    path.clone()
                };
                format!("{scheme}://{host}:{port}{path}")
            }
        };
        ep.url = match query {
            Some(q) => format!("{base}?{q}"),
            None => base,
        };
        ep
    }

    /// The error to return when this endpoint's backend is not compiled in.
    pub fn feature_disabled(&self) -> TransportError {
        TransportError::FeatureDisabled {
            url: self.url.clone(),
            feature: self.scheme.feature().unwrap_or("default"),
        }
    }

    /// The error a backend returns when handed another scheme's endpoint.
    pub fn wrong_backend(&self, backend: &'static str) -> TransportError {
        TransportError::WrongBackend {
            url: self.url.clone(),
            backend,
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

impl std::str::FromStr for Endpoint {
    type Err = TransportError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Endpoint::parse(s)
    }
}

/// Checks the value of a TLS option that has a fixed vocabulary, so a typo
/// fails when the URL is parsed rather than when a connection is made.
fn check_tls_option(key: &str, value: &str) -> Result<(), String> {
    let ok = match key {
        "client_auth" => matches!(value, "required" | "optional" | "none"),
        "insecure" => matches!(value, "true" | "false"),
        "tls" => !value.is_empty() && value.split(',').all(|v| matches!(v.trim(), "1.2" | "1.3")),
        _ => !value.is_empty(),
    };
    if ok {
        return Ok(());
    }
    Err(match key {
        "client_auth" => format!("client_auth must be required, optional or none, got `{value}`"),
        "insecure" => format!("insecure must be true or false, got `{value}`"),
        "tls" => format!("tls must list TLS versions, e.g. `1.3` or `1.2,1.3`, got `{value}`"),
        _ => format!("option `{key}` needs a value"),
    })
}

/// Decodes `%XX` escapes (so a value may hold `&`, `?` or spaces).
fn percent_decode(s: &str) -> Result<String, String> {
    if !s.contains('%') {
        return Ok(s.to_owned());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("`%` must start an escape like `%20`, in `{s}`"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("`{s}` decodes to bytes that are not UTF-8"))
}

fn parse_host_port(scheme: Scheme, scheme_str: &str, rest: &str) -> Result<Address, String> {
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.contains('@') {
        return Err("user information (`user@`) is not supported in endpoints".into());
    }
    let example = format!("{scheme_str}://127.0.0.1:51500");
    let (host, port) = if let Some(after) = authority.strip_prefix('[') {
        let (host, tail) = after.split_once(']').ok_or_else(|| {
            format!("unclosed `[` in IPv6 address; write it as `{scheme_str}://[::1]:51500`")
        })?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("`{host}` is not an IPv6 address"));
        }
        let port = match tail {
            "" => None,
            t => Some(
                t.strip_prefix(':')
                    .ok_or_else(|| format!("unexpected `{t}` after `]`; expected `:port`"))?,
            ),
        };
        (host, port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, _)) if h.contains(':') => {
                return Err(format!(
                    "IPv6 addresses must be in brackets, e.g. `{scheme_str}://[::1]:51500`"
                ))
            }
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(format!("the host is missing, e.g. `{example}`"));
    }
    if !host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'))
    {
        return Err(format!("`{host}` is not a valid host name or IP address"));
    }
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| format!("`{p}` is not a port number (0-65535)"))?,
        None => scheme
            .default_port()
            .ok_or_else(|| format!("the port is missing, e.g. `{example}`"))?,
    };
    Ok(Address::Host {
        host: host.to_owned(),
        port,
        path: path.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(url: &str) -> Endpoint {
        Endpoint::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    fn err(url: &str) -> String {
        match Endpoint::parse(url) {
            Ok(ep) => panic!("{url} parsed as {ep:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn parses_every_form() {
        let ep = ok("tcp://127.0.0.1:51500");
        assert_eq!(ep.scheme(), Scheme::Tcp);
        assert_eq!(
            ep.address(),
            &Address::Host {
                host: "127.0.0.1".into(),
                port: 51500,
                path: "/".into()
            }
        );
        let ep = ok("tcp://[::1]:7");
        assert_eq!(
            ep.address(),
            &Address::Host {
                host: "::1".into(),
                port: 7,
                path: "/".into()
            }
        );
        assert!(
            matches!(ok("tcp://localhost:1").address(), Address::Host { host, .. } if host == "localhost")
        );
        assert_eq!(
            ok("unix:///tmp/a.sock").address(),
            &Address::Path("/tmp/a.sock".into())
        );
        let rc = ok("socket:///tmp/reasonchip-broker-client.sock");
        assert_eq!(rc.scheme(), Scheme::Unix);
        assert_eq!(
            ok("mem://broker").address(),
            &Address::Name("broker".into())
        );
        assert!(matches!(
            ok("http://h").address(),
            Address::Host { port: 80, .. }
        ));
        assert!(matches!(ok("ws://h:9/ws").address(), Address::Host { path, .. } if path == "/ws"));
    }

    #[test]
    fn options() {
        let ep = ok("tcp://127.0.0.1:1?max_frame_size=1024");
        assert_eq!(ep.max_frame_size(), 1024);
        assert_eq!(
            ok("tcp://127.0.0.1:1").max_frame_size(),
            DEFAULT_MAX_FRAME_SIZE
        );
        assert_eq!(ok("unix:///tmp/x?mode=660").unix_mode(), Some(0o660));
        assert!(err("tcp://127.0.0.1:1?mode=660").contains("unknown option `mode`"));
        assert!(err("tcp://127.0.0.1:1?max_frame_size=0").contains("between 1 and"));
        assert!(err("tcp://127.0.0.1:1?max_frame_size=abc").contains("whole number"));
        assert!(err("unix:///x?mode=999").contains("octal"));
    }

    #[test]
    fn errors_quote_the_url_and_say_what_is_wrong() {
        let e = err("tcp//127.0.0.1:1");
        assert!(
            e.contains("`tcp//127.0.0.1:1`") && e.contains("scheme://"),
            "{e}"
        );
        assert!(err("ftp://x:1").contains("unknown scheme `ftp`"));
        assert!(err("tcp://127.0.0.1").contains("port is missing"));
        assert!(err("tcp://127.0.0.1:99999").contains("not a port number"));
        assert!(err("tcp://::1:5").contains("brackets"));
        assert!(err("tcp://[::1:5").contains("unclosed"));
        assert!(err("tcp://[nope]:5").contains("not an IPv6"));
        assert!(err("tcp://:5").contains("host is missing"));
        assert!(err("unix://relative.sock").contains("absolute path"));
        assert!(err("mem://").contains("needs a name"));
        assert!(err("tcp://a b:1").contains("not a valid host"));
    }

    #[test]
    fn options_are_checked_per_scheme_and_exposed() {
        let ep = ok("tls://localhost:1?ca=/etc/ca.pem&cert=/a%20b/c.pem&key=k&client_auth=optional&tls=1.2,1.3&insecure=false&server_name=x");
        assert_eq!(ep.option("ca"), Some("/etc/ca.pem"));
        assert_eq!(ep.option("cert"), Some("/a b/c.pem"), "percent-decoded");
        assert_eq!(ep.option("client_auth"), Some("optional"));
        assert_eq!(ep.option("client_ca"), None);
        assert_eq!(ep.options().count(), 7);
        assert!(ok("quic://[::1]:1?ca=c&max_frame_size=9")
            .option("ca")
            .is_some());
        assert!(ok("https://h/x?ca=c").option("ca").is_some());
        assert_eq!(ok("quic://h:1?streams=one").option("streams"), Some("one"));
        assert!(err("quic://h:1?streams=many").contains("streams must be `run`"));
        assert!(err("tcp://h:1?streams=one").contains("unknown option `streams`"));
        let tu = ok("tls+unix:///tmp/s.sock?mode=600&cert=c&key=k");
        assert_eq!(tu.scheme(), Scheme::TlsUnix);
        assert_eq!(tu.address(), &Address::Path("/tmp/s.sock".into()));
        assert_eq!(tu.unix_mode(), Some(0o600));
        assert_eq!(tu.scheme().feature(), Some("tls"));

        // TLS keys belong to TLS schemes only; the error lists what is allowed.
        let e = err("tcp://127.0.0.1:1?ca=x");
        assert!(
            e.contains("unknown option `ca` for tcp://; known: max_frame_size"),
            "{e}"
        );
        let e = err("unix:///x?cert=c");
        assert!(e.contains("known: max_frame_size, mode"), "{e}");
        let e = err("tls://h:1?mode=600");
        assert!(
            e.contains("known: max_frame_size, ca, cert, key, client_ca, client_auth, server_name, tls, insecure"),
            "{e}"
        );
        assert!(err("tls://h:1?client_auth=always").contains("required, optional or none"));
        assert!(err("tls://h:1?tls=1.1").contains("TLS versions"));
        assert!(err("quic://h:1?insecure=yes").contains("true or false"));
        assert!(err("tls://h:1?ca=").contains("needs a value"));
        assert!(err("tls://h:1?ca=a&ca=b").contains("given twice"));
        assert!(err("tls://h:1?ca=%zz").contains("escape"));
        assert!(err("tls+unix://rel").contains("absolute path"));
    }

    #[test]
    fn with_address_keeps_the_options() {
        let ep = ok("tls://127.0.0.1:0?cert=c&key=k");
        let bound = ep.with_address(Address::Host {
            host: "127.0.0.1".into(),
            port: 7,
            path: "/".into(),
        });
        assert_eq!(bound.url(), "tls://127.0.0.1:7?cert=c&key=k");
        assert_eq!(bound.option("key"), Some("k"));
        assert_eq!(Endpoint::parse(bound.url()).unwrap(), bound);
        let tu = ok("tls+unix:///tmp/a?cert=c&key=k");
        let same = tu.with_address(tu.address().clone());
        assert_eq!(same.url(), tu.url());
    }

    #[test]
    fn with_address_rewrites_the_url() {
        let ep = ok("tcp://127.0.0.1:0?max_frame_size=10");
        let bound = ep.with_address(Address::Host {
            host: "127.0.0.1".into(),
            port: 4242,
            path: "/".into(),
        });
        assert_eq!(bound.url(), "tcp://127.0.0.1:4242?max_frame_size=10");
        assert_eq!(Endpoint::parse(bound.url()).unwrap(), bound);
        let v6 = ok("tcp://[::1]:0").with_address(Address::Host {
            host: "::1".into(),
            port: 9,
            path: "/".into(),
        });
        assert_eq!(v6.url(), "tcp://[::1]:9");
    }
}
