//! The juggler server over WebSocket: the async shell around [`Session`].
//!
//! [`listen`] binds an HTTP listener (plexwire-http) serving the juggler
//! WebSocket on `ws_path` and `GET /` as a redirect to `index_path`, every
//! answer with `Cache-Control: no-cache`. Each connection runs one task
//! that owns the socket and drives its [`Session`] (frames in, timers,
//! frames out), and one that runs the request handler, one request at a
//! time (so responses come back in request order, as hat's do). The
//! handler and `on_connection` get a [`ServerConnection`] to change the
//! state and send notifies.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::{SinkExt, StreamExt};
use plexwire_ws::plexwire_http::hyper::header::{HeaderValue, CACHE_CONTROL, LOCATION};
use plexwire_ws::plexwire_http::hyper::{Method, Response, StatusCode};
use plexwire_ws::plexwire_http::{full, HttpListener, Route, RouteContext, Router};
use plexwire_ws::{WebSocket, WsFrame};
use serde_json::Value;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

use super::{Event, Role, Session, SessionConfig};
use crate::transport::{Endpoint, ServerTransport, TransportError};

/// Requests queued for the handler of one connection (reading stops while full).
const REQUEST_QUEUE: usize = 64;

/// Answers a named request: `Ok(data)` or `Err(text)` (`success` false).
pub type RequestHandler = Arc<
    dyn Fn(ServerConnection, String, Value) -> BoxFuture<'static, Result<Value, String>>
        + Send
        + Sync,
>;

/// Called once per new connection (to set its initial state, say).
pub type ConnectionHandler = Arc<dyn Fn(ServerConnection) + Send + Sync>;

/// How [`listen`] serves.
#[derive(Clone)]
pub struct ServerOptions {
    /// The WebSocket path (hat: `/ws`).
    pub ws_path: String,
    /// Where `GET /` redirects (hat: `/index.html`).
    pub index_path: String,
    /// The session settings of every connection.
    pub session: SessionConfig,
}

impl Default for ServerOptions {
    fn default() -> ServerOptions {
        ServerOptions {
            ws_path: "/ws".into(),
            index_path: "/index.html".into(),
            session: SessionConfig::default(),
        }
    }
}

impl std::fmt::Debug for ServerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerOptions")
            .field("ws_path", &self.ws_path)
            .field("index_path", &self.index_path)
            .finish_non_exhaustive()
    }
}

/// One juggler connection, as the application sees it.
#[derive(Clone)]
pub struct ServerConnection {
    session: Arc<Mutex<Session>>,
    /// Wakes the connection's task to send what the session has queued.
    wake: Arc<Notify>,
    /// Cancelled when the connection has ended.
    closed: tokio_util::sync::CancellationToken,
}

impl std::fmt::Debug for ServerConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerConnection")
    }
}

impl ServerConnection {
    fn lock(&self) -> MutexGuard<'_, Session> {
        self.session.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The connection's state now.
    pub fn state(&self) -> Value {
        self.lock().state().clone()
    }

    /// Replaces the state; the client gets the diff after `autoflush_delay`.
    pub fn set_state(&self, state: Value) {
        let _ = self.lock().set_state(Instant::now().into_std(), state);
        self.wake.notify_one();
    }

    /// Changes the state in place.
    pub fn update_state(&self, change: impl FnOnce(&mut Value)) {
        let mut s = self.state();
        change(&mut s);
        self.set_state(s);
    }

    /// Sends notify `name` with `data`.
    pub fn notify(&self, name: &str, data: Value) {
        let _ = self.lock().notify(name, data);
        self.wake.notify_one();
    }

    /// Completes when the connection has ended (closed by either side or
    /// failed), so tasks that feed it (a ticker, say) can stop.
    pub async fn closed(&self) {
        self.closed.cancelled().await
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }
}

/// A running juggler server; dropping it stops listening and closes every
/// connection (status 1001, going away).
#[derive(Debug)]
pub struct SessionServer {
    http: HttpListener,
    _stop: tokio_util::sync::DropGuard,
}

impl SessionServer {
    /// The address bound (`http://127.0.0.1:PORT/`).
    pub fn local_endpoint(&self) -> &Endpoint {
        self.http.local_endpoint()
    }
}

/// Serves juggler on `url` (`http://host:port`; port 0 picks one).
pub async fn listen(
    url: &str,
    options: ServerOptions,
    on_connection: ConnectionHandler,
    on_request: RequestHandler,
) -> Result<SessionServer, TransportError> {
    let endpoint = Endpoint::parse(url)?;
    let config = options.session.clone();
    let stop = tokio_util::sync::CancellationToken::new();
    let stopping = stop.clone();
    let ws = Route::any(options.ws_path.clone(), move |mut req, cx: RouteContext| {
        let (config, on_connection, on_request, stopping) = (
            config.clone(),
            on_connection.clone(),
            on_request.clone(),
            stopping.clone(),
        );
        async move {
            let (response, pending) = match plexwire_ws::accept_upgrade(&mut req, &cx) {
                Ok(ok) => ok,
                Err(refusal) => return *refusal,
            };
            tokio::spawn(async move {
                let peer = pending.peer.clone();
                match pending.ready().await {
                    Ok(ws) => run(ws, config, on_connection, on_request, stopping).await,
                    Err(e) => tracing::debug!(%peer, error = %e, "juggler upgrade failed"),
                }
            });
            response
        }
    });
    let index = options.index_path.clone();
    let root = Route::new(Method::GET, "/", move |_req, _cx| {
        let index = index.clone();
        async move {
            let mut r = Response::new(full(bytes::Bytes::new()));
            *r.status_mut() = StatusCode::FOUND;
            if let Ok(v) = HeaderValue::from_str(&index) {
                r.headers_mut().insert(LOCATION, v);
            }
            r.headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            r
        }
    });
    let http = HttpListener::bind_with(&endpoint, Router::new().route(ws).route(root)).await?;
    Ok(SessionServer {
        http,
        _stop: stop.drop_guard(),
    })
}

/// One connection: the socket, the session, the request handler.
async fn run(
    ws: WebSocket,
    config: SessionConfig,
    on_connection: ConnectionHandler,
    on_request: RequestHandler,
    stopping: tokio_util::sync::CancellationToken,
) {
    let conn = ServerConnection {
        session: Arc::new(Mutex::new(Session::new(
            Role::Server,
            config,
            Instant::now().into_std(),
        ))),
        wake: Arc::new(Notify::new()),
        closed: tokio_util::sync::CancellationToken::new(),
    };
    // Whatever way this function ends, the connection is over.
    let _closed = conn.closed.clone().drop_guard();
    on_connection(conn.clone());
    let (requests, mut incoming) = mpsc::channel::<(i64, String, Value)>(REQUEST_QUEUE);
    let worker = {
        let conn = conn.clone();
        tokio::spawn(async move {
            while let Some((id, name, data)) = incoming.recv().await {
                let result = on_request(conn.clone(), name, data).await;
                let _ = conn.lock().respond(id, result);
                conn.wake.notify_one();
            }
        })
    };
    let (mut tx, mut rx) = ws.into_framed().split();
    let end: Option<(u16, String)> = loop {
        // Send what is queued, pass on what arrived.
        let (frames, events, deadline, ended) = {
            let mut s = conn.lock();
            let frames: Vec<String> = std::iter::from_fn(|| s.poll_transmit()).collect();
            let events: Vec<Event> = std::iter::from_fn(|| s.poll_event()).collect();
            (frames, events, s.poll_timeout(), s.close_reason().cloned())
        };
        if let Some(e) = ended {
            // Ended by the application's side (a peer that does not read).
            tracing::warn!(error = %e, "closing a juggler connection");
            break Some((e.close_code(), e.to_string()));
        }
        for f in frames {
            if tx
                .feed(WsFrame::Data(crate::transport::MessageKind::Text, f.into()))
                .await
                .is_err()
            {
                break;
            }
        }
        if tx.flush().await.is_err() {
            break None;
        }
        for e in events {
            if let Event::Request { id, name, data } = e {
                if requests.send((id, name, data)).await.is_err() {
                    break;
                }
            }
        }
        let sleep = tokio::time::sleep_until(
            deadline
                .map(Instant::from_std)
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600)),
        );
        tokio::select! {
            frame = rx.next() => {
                let now = Instant::now().into_std();
                let result = match frame {
                    None => break None,
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "juggler connection: WebSocket protocol violation");
                        break Some((e.code, e.reason));
                    }
                    Some(Ok(WsFrame::Data(crate::transport::MessageKind::Text, data))) => {
                        let text = String::from_utf8_lossy(&data);
                        conn.lock().handle_frame(now, &text)
                    }
                    Some(Ok(WsFrame::Data(_, _))) => conn.lock().handle_binary_frame(now),
                    Some(Ok(WsFrame::Ping(d))) => {
                        let _ = tx.send(WsFrame::Pong(d)).await;
                        Ok(())
                    }
                    Some(Ok(WsFrame::Pong(_))) => Ok(()),
                    Some(Ok(WsFrame::Close(..))) => break Some((1000, String::new())),
                };
                if let Err(e) = result {
                    tracing::warn!(error = %e, "closing a juggler connection");
                    break Some((e.close_code(), e.to_string()));
                }
            }
            _ = conn.wake.notified() => {}
            _ = stopping.cancelled() => break Some((1001, "the server is going away".to_owned())),
            _ = sleep => {
                if let Err(e) = conn.lock().handle_timeout(Instant::now().into_std()) {
                    tracing::warn!(error = %e, "closing a juggler connection");
                    break Some((e.close_code(), e.to_string()));
                }
            }
        }
    };
    if let Some((code, reason)) = end {
        let _ = tx.send(WsFrame::Close(Some(code), reason)).await;
    }
    let _ = tx.close().await;
    worker.abort();
}
