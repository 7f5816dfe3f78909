//! plexwire's UNIX-domain socket backend: `unix:///abs/path`, and ReasonChip's
//! spelling of the same, `socket:///abs/path`.
//!
//! Binding over an existing socket file replaces it only if nothing listens
//! on it (a stale file left by a crash); a live listener or a file that is not
//! a socket is an error. The socket file's mode is 0600 (owner only) unless
//! `?mode=660` (octal) asks for another: it is set explicitly right after
//! binding, never left to the process's umask, so other local users cannot
//! connect to a broker by default. The socket file is removed when the
//! listener is dropped, if it is still ours.

#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![forbid(unsafe_code)]

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use futures_util::future::BoxFuture;
use plexwire_transport::{
    Address, AddressShape, Backend, ClientTransport, Connection, Endpoint, Loopback, LoopbackEnv,
    OptionSpec, PeerInfo, Registry, SchemeSpec, ServerTransport, TransportError,
    UNIX_SOCKET_OPTIONS,
};
use tokio::net::{UnixListener as TokioListener, UnixStream};

/// The mode a listener's socket file gets when the endpoint does not say
/// `?mode=`: owner read and write only.
pub const DEFAULT_MODE: u32 = 0o600;

/// The options of a UNIX socket listener: `mode=660`, the socket file's
/// permission bits in octal (default [`DEFAULT_MODE`]; the core's [`UNIX_SOCKET_OPTIONS`], which layers
/// over UNIX sockets such as `tls+unix://` declare too).
pub const OPTIONS: &[OptionSpec] = UNIX_SOCKET_OPTIONS;

const SCHEMES: &[SchemeSpec] = &[SchemeSpec {
    name: "unix",
    aliases: &["socket"],
    address: AddressShape::AbsolutePath,
    options: &[OPTIONS],
}];

/// The UNIX socket backend's description for plexwire's transport registry:
/// `unix:///path` and `socket:///path`, the `unix` cargo feature.
pub fn backend() -> Backend {
    Backend::new("unix", SCHEMES, connect, bind)
        .feature("unix")
        .loopback(loopback)
}

fn connect<'a>(
    _: &'a Registry,
    endpoint: &'a Endpoint,
) -> BoxFuture<'a, Result<Connection, TransportError>> {
    Box::pin(async move { UnixTransport.connect(endpoint).await })
}

fn bind<'a>(
    _: &'a Registry,
    endpoint: &'a Endpoint,
) -> BoxFuture<'a, Result<Box<dyn ServerTransport>, TransportError>> {
    Box::pin(async move {
        Ok(Box::new(UnixListener::bind(endpoint).await?) as Box<dyn ServerTransport>)
    })
}

fn loopback(env: &LoopbackEnv) -> Result<Vec<Loopback>, String> {
    Ok(vec![Loopback::plain(
        "unix",
        "unix",
        format!("unix://{}", env.socket_path()),
    )])
}

/// The socket path of a `unix://` endpoint, checked against the scheme's declaration.
fn path_of(endpoint: &Endpoint) -> Result<PathBuf, TransportError> {
    match backend().check(endpoint)?.address() {
        Address::Path(p) => Ok(p.clone()),
        _ => Err(endpoint.wrong_backend("unix")),
    }
}

fn connection(stream: UnixStream, path: &Path, max_frame_size: usize) -> Connection {
    let (r, w) = stream.into_split();
    let remote = path.display().to_string();
    Connection::from_stream(
        r,
        w,
        PeerInfo {
            transport: "unix",
            remote,
        },
        max_frame_size,
    )
}

/// Connects to `unix://` endpoints.
#[derive(Debug, Clone, Copy, Default)]
pub struct UnixTransport;

#[async_trait]
impl ClientTransport for UnixTransport {
    async fn connect(&self, endpoint: &Endpoint) -> Result<Connection, TransportError> {
        let path = path_of(endpoint)?;
        let stream =
            UnixStream::connect(&path)
                .await
                .map_err(|source| TransportError::Connect {
                    url: endpoint.url().to_owned(),
                    source,
                })?;
        Ok(connection(stream, &path, endpoint.max_frame_size()))
    }
}

/// A bound `unix://` listener; removes its socket file when dropped.
#[derive(Debug)]
pub struct UnixListener {
    listener: TokioListener,
    endpoint: Endpoint,
    path: PathBuf,
    /// (device, inode) of the socket file we created, so drop removes only ours.
    identity: Option<(u64, u64)>,
}

impl UnixListener {
    /// Binds `endpoint`, replacing a stale socket file if nothing listens on it.
    pub async fn bind(endpoint: &Endpoint) -> Result<UnixListener, TransportError> {
        let path = path_of(endpoint)?;
        let fail = |source: io::Error| TransportError::Bind {
            url: endpoint.url().to_owned(),
            source,
        };
        if let Ok(meta) = std::fs::symlink_metadata(&path) {
            if !meta.file_type().is_socket() {
                return Err(fail(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "{} exists and is not a socket; remove it or choose another path",
                        path.display()
                    ),
                )));
            }
            match UnixStream::connect(&path).await {
                Ok(_) => {
                    return Err(fail(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!("another process is listening on {}", path.display()),
                    )))
                }
                Err(_) => {
                    tracing::info!(path = %path.display(), "replacing stale socket file");
                    std::fs::remove_file(&path).map_err(fail)?;
                }
            }
        }
        let listener = TokioListener::bind(&path).map_err(fail)?;
        // Explicitly, whatever the umask: a socket file anyone may write to
        // is a broker anyone on the machine may join.
        let mode = endpoint.unix_mode().unwrap_or(DEFAULT_MODE);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).map_err(fail)?;
        let identity = std::fs::metadata(&path).ok().map(|m| (m.dev(), m.ino()));
        Ok(UnixListener {
            listener,
            endpoint: endpoint.clone(),
            path,
            identity,
        })
    }
}

impl Drop for UnixListener {
    fn drop(&mut self) {
        let ours = std::fs::metadata(&self.path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        if ours.is_some() && ours == self.identity {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[async_trait]
impl ServerTransport for UnixListener {
    async fn accept(&mut self) -> Result<Connection, TransportError> {
        let (stream, _) = self.listener.accept().await?;
        Ok(connection(
            stream,
            &self.path,
            self.endpoint.max_frame_size(),
        ))
    }

    fn local_endpoint(&self) -> &Endpoint {
        &self.endpoint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(path: &Path) -> Endpoint {
        Endpoint::parse(&format!("unix://{}", path.display())).unwrap()
    }

    #[tokio::test]
    async fn stale_file_is_replaced_live_listener_and_plain_file_are_not() {
        let dir = std::env::temp_dir().join(format!("plexwire-unix-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("stale.sock");
        // A stale socket: bound by std, then the listener dropped without removing the file.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let live = UnixListener::bind(&ep(&path))
            .await
            .expect("stale socket replaced");
        let e = UnixListener::bind(&ep(&path))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("another process is listening"), "{e}");
        drop(live);
        assert!(!path.exists(), "socket file removed on drop");

        let plain = dir.join("plain");
        std::fs::write(&plain, b"x").unwrap();
        let e = UnixListener::bind(&ep(&plain))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("is not a socket"), "{e}");
        assert!(plain.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn mode_is_applied() {
        let dir = std::env::temp_dir().join(format!("plexwire-unix-mode-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.sock");
        let e = Endpoint::parse(&format!("unix://{}?mode=600", path.display())).unwrap();
        let l = UnixListener::bind(&e).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        drop(l);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Without `?mode=`, the socket is 0600 whatever the umask (which
    /// would give 0755 under the usual 022), and `?mode=` still widens it.
    #[tokio::test]
    async fn the_default_mode_is_owner_only() {
        let dir = std::env::temp_dir().join(format!("plexwire-unix-dmode-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("d.sock");
        let l = UnixListener::bind(&ep(&path)).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, DEFAULT_MODE, "got {mode:o}");
        drop(l);
        let e = Endpoint::parse(&format!("unix://{}?mode=660", path.display())).unwrap();
        let l = UnixListener::bind(&e).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660, "got {mode:o}");
        drop(l);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
