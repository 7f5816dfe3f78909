//! Routes: which handler answers which request on an HTTP listener.
//!
//! One HTTP port serves several things — the plexwire upgrade, ReasonChip's
//! POST endpoint (installed by the `plexwire` crate, which knows packets),
//! and whatever other crates add: a WebSocket upgrade, static files,
//! `/metrics`, a status page. A [`Route`] is a path, a method (or any
//! method) and a [`Handler`]; a handler answers with a response, and may
//! also hand [`Connection`]s to the listener's accept queue
//! ([`RouteContext::handoff`]) — a byte stream after an upgrade, or a
//! message channel ([`Connection::from_messages`]) — which come out of
//! [`HttpListener::accept`](crate::HttpListener) like any other. A
//! [`Router`] is the routes given when binding
//! ([`HttpListener::bind_with`](crate::HttpListener::bind_with)); [`Routes`]
//! is a bound listener's live set, to add routes later.
//!
//! Paths match exactly. A path that matches with the wrong method is `405`
//! with `Allow`; no match is `404`; both with a JSON `{"detail": …}` that
//! lists what this listener serves.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError, RwLock};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use plexwire_transport::Connection;
use tokio::sync::mpsc;

/// The body of every response a handler gives.
pub type ResponseBody = UnsyncBoxBody<Bytes, Infallible>;

/// A response body holding `bytes`.
pub fn full(bytes: impl Into<Bytes>) -> ResponseBody {
    Full::new(bytes.into()).boxed_unsync()
}

/// A refusal: `status` with the JSON body `{"detail": detail}`.
pub fn json_error(status: StatusCode, detail: impl fmt::Display) -> Response<ResponseBody> {
    let body = serde_json::json!({ "detail": detail.to_string() }).to_string();
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// Hands connections to the listener's accept queue (bounded: `send` waits
/// while the queue is full).
#[derive(Clone, Debug)]
pub struct Handoff(pub(crate) mpsc::Sender<Connection>);

impl Handoff {
    /// Queues `conn` for [`ServerTransport::accept`](plexwire_transport::ServerTransport::accept);
    /// gives it back if the listener is gone.
    pub async fn send(&self, conn: Connection) -> Result<(), Connection> {
        self.0.send(conn).await.map_err(|e| e.0)
    }

    /// Whether the listener is gone (nothing would accept a connection).
    pub fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}

/// What a handler knows besides the request: who asked, on which
/// listener, and where connections go.
#[derive(Clone, Debug)]
pub struct RouteContext {
    pub(crate) peer: SocketAddr,
    pub(crate) transport: &'static str,
    pub(crate) max_frame_size: usize,
    pub(crate) handoff: Handoff,
    pub(crate) routes: Routes,
}

impl RouteContext {
    /// The client's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// `"http"` or `"https"`, for the [`PeerInfo`](plexwire_transport::PeerInfo)
    /// of connections handed over.
    pub fn transport(&self) -> &'static str {
        self.transport
    }

    /// The listener endpoint's frame limit (for connections handed over, and
    /// a fair bound for request bodies).
    pub fn max_frame_size(&self) -> usize {
        self.max_frame_size
    }

    /// Where connections go: the listener's accept queue.
    pub fn handoff(&self) -> &Handoff {
        &self.handoff
    }

    /// What this listener serves, one `METHOD /path (about)` per route, for
    /// refusals that say what to send instead.
    pub fn describe_routes(&self) -> String {
        self.routes.describe()
    }
}

/// Answers requests on one route.
///
/// Implemented for every `Fn(Request<Incoming>, RouteContext) -> impl
/// Future<Output = Response<ResponseBody>>`, so a closure is a handler.
pub trait Handler: Send + Sync + 'static {
    /// Answers `req`.
    fn call(
        &self,
        req: Request<Incoming>,
        cx: RouteContext,
    ) -> BoxFuture<'static, Response<ResponseBody>>;
}

impl<F, Fut> Handler for F
where
    F: Fn(Request<Incoming>, RouteContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<ResponseBody>> + Send + 'static,
{
    fn call(
        &self,
        req: Request<Incoming>,
        cx: RouteContext,
    ) -> BoxFuture<'static, Response<ResponseBody>> {
        Box::pin(self(req, cx))
    }
}

/// A path, a method (or any), what it is for, and its handler.
#[derive(Clone)]
pub struct Route {
    method: Option<Method>,
    path: String,
    about: String,
    handler: Arc<dyn Handler>,
}

impl fmt::Debug for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Route")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("about", &self.about)
            .finish_non_exhaustive()
    }
}

impl Route {
    /// `method` requests for `path` (exact match, e.g. `/metrics`).
    pub fn new(method: Method, path: impl Into<String>, handler: impl Handler) -> Route {
        Route {
            method: Some(method),
            path: path.into(),
            about: String::new(),
            handler: Arc::new(handler),
        }
    }

    /// Requests of any method for `path`: the handler checks the method
    /// (and can say more about a wrong one than a bare `405`).
    pub fn any(path: impl Into<String>, handler: impl Handler) -> Route {
        Route {
            method: None,
            path: path.into(),
            about: String::new(),
            handler: Arc::new(handler),
        }
    }

    /// What the route is for, shown where refusals list the routes.
    pub fn about(self, about: impl Into<String>) -> Route {
        Route {
            about: about.into(),
            ..self
        }
    }

    /// The path it serves.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The method it serves, `None` for any.
    pub fn method(&self) -> Option<&Method> {
        self.method.as_ref()
    }

    fn describe(&self) -> String {
        let route = match &self.method {
            Some(method) => format!("{method} {}", self.path),
            None => self.path.clone(),
        };
        match self.about.as_str() {
            "" => route,
            about => format!("{route} ({about})"),
        }
    }
}

/// Routes to serve, given when binding
/// ([`HttpListener::bind_with`](crate::HttpListener::bind_with)).
#[derive(Clone, Debug, Default)]
pub struct Router {
    routes: Vec<Route>,
}

/// Which route answers a request.
enum Found<'a> {
    Route(&'a Route),
    /// The path is served, with other methods.
    WrongMethod(Vec<&'a Method>),
    Nothing,
}

impl Router {
    /// No routes.
    pub fn new() -> Router {
        Router::default()
    }

    /// Adds `route`; one for the same method and path as an earlier route
    /// replaces it.
    pub fn route(mut self, route: Route) -> Router {
        self.add(route);
        self
    }

    fn add(&mut self, route: Route) {
        self.routes
            .retain(|r| !(r.path == route.path && r.method == route.method));
        self.routes.push(route);
    }

    /// The routes, in the order added.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    fn find(&self, method: &Method, path: &str) -> Found<'_> {
        let mut methods = Vec::new();
        for r in self.routes.iter().filter(|r| r.path == path) {
            match &r.method {
                None => return Found::Route(r),
                Some(m) if m == method => return Found::Route(r),
                Some(m) => methods.push(m),
            }
        }
        if methods.is_empty() {
            Found::Nothing
        } else {
            Found::WrongMethod(methods)
        }
    }

    fn describe(&self) -> String {
        self.routes
            .iter()
            .map(Route::describe)
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// A bound listener's routes, shared with its connections: a route added
/// here serves the next request ([`HttpListener::routes`](crate::HttpListener::routes)).
#[derive(Clone, Debug, Default)]
pub struct Routes(Arc<RwLock<Arc<Router>>>);

impl Routes {
    pub(crate) fn new(router: Router) -> Routes {
        Routes(Arc::new(RwLock::new(Arc::new(router))))
    }

    /// Adds `route` (replacing one for the same method and path).
    pub fn add(&self, route: Route) {
        let mut guard = self.0.write().unwrap_or_else(PoisonError::into_inner);
        Arc::make_mut(&mut guard).add(route);
    }

    /// The routes now.
    pub fn snapshot(&self) -> Arc<Router> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// What this listener serves, one `METHOD /path (about)` per route.
    pub fn describe(&self) -> String {
        self.snapshot().describe()
    }

    /// Answers `req` with the route for its method and path, or a 404/405
    /// that lists what this listener serves.
    pub(crate) async fn dispatch(
        &self,
        req: Request<Incoming>,
        cx: RouteContext,
    ) -> Response<ResponseBody> {
        let router = self.snapshot();
        let call = match router.find(req.method(), req.uri().path()) {
            Found::Route(route) => route.handler.call(req, cx),
            Found::WrongMethod(methods) => {
                let allow = methods
                    .iter()
                    .map(|m| m.as_str())
                    .collect::<Vec<_>>()
                    .join(", ");
                let mut r = json_error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    format!(
                        "{} takes {allow}, not {}; this listener serves: {}",
                        req.uri().path(),
                        req.method(),
                        router.describe()
                    ),
                );
                if let Ok(v) = HeaderValue::from_str(&allow) {
                    r.headers_mut().insert(ALLOW, v);
                }
                return r;
            }
            Found::Nothing => {
                return json_error(
                    StatusCode::NOT_FOUND,
                    format!(
                        "no such endpoint ({} {}); this listener serves: {}",
                        req.method(),
                        req.uri().path(),
                        router.describe()
                    ),
                )
            }
        };
        call.await
    }
}
