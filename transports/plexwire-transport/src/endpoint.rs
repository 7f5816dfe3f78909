//! Endpoint URLs: one string picks the backend and the address at run time.
//!
//! ```text
//! tcp://127.0.0.1:51500     tcp://[::1]:51500     tcp://localhost:51500
//! unix:///run/plexwire.sock socket:///tmp/rc.sock (ReasonChip's spelling)
//! mem://name                (in-process, for tests and embedding)
//! tls://host:port  quic://host:port  http://host:port  https://host:port  ws://host:port/path
//! ```
//!
//! Options ride in the query string: `?max_frame_size=1048576` (every
//! scheme), `&mode=660` (octal file mode of a UNIX socket). Unknown options
//! are an error rather than silently ignored.

use std::fmt;
use std::path::PathBuf;

use crate::TransportError;

/// The default maximum frame size: 16 MiB.
pub const DEFAULT_MAX_FRAME_SIZE: usize = 16 * 1024 * 1024;

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
            Scheme::Tls => Some("tls"),
            Scheme::Http | Scheme::Https => Some("http"),
            Scheme::Quic => Some("quic"),
            Scheme::Ws | Scheme::Wss => Some("ws"),
        }
    }

    fn parse(s: &str) -> Option<Scheme> {
        Some(match s {
            "tcp" => Scheme::Tcp,
            "unix" | "socket" => Scheme::Unix,
            "mem" => Scheme::Mem,
            "tls" => Scheme::Tls,
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
                "unknown scheme `{scheme_str}`; expected one of tcp, unix, socket, mem, tls, http, https, quic, ws, wss"
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
            Scheme::Unix => {
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
            url: url.to_owned(),
        };
        if let Some(q) = query {
            for pair in q.split('&').filter(|p| !p.is_empty()) {
                let (k, v) = pair
                    .split_once('=')
                    .ok_or_else(|| bad(format!("option `{pair}` needs a value (`key=value`)")))?;
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
                    "mode" if scheme == Scheme::Unix => {
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
                    other => {
                        return Err(bad(format!(
                            "unknown option `{other}`; known: max_frame_size{}",
                            if scheme == Scheme::Unix { ", mode" } else { "" }
                        )))
                    }
                }
            }
        }
        Ok(ep)
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
