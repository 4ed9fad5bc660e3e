//! The HTTP API under `/v1`: the router made from the route table (`routes.rs`), authentication
//! (a bearer credential: the machine secret or an API token; or a dashboard session cookie with its
//! CSRF token), each route's role check, JSON bodies and JSON errors; the embedded dashboard at
//! `/`. The same router serves the Unix socket and the TCP listener.

mod agents;
mod approvals;
mod audit;
mod daemon;
mod decide;
mod events;
mod fleet;
mod groups;
mod history;
mod metrics;
mod notifications;
mod openapi;
mod responses;
mod routes;
mod sandbox;
mod secrets;
mod sessions;
mod terminal;
mod tokens;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use celistra_proto::{
    Access, ApiError, CSRF_HEADER, ErrorCode, Health, Role, SESSION_COOKIE, SOURCE_HEADER,
};
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use crate::supervisor::Supervisor;
use crate::tokens::{TOKEN_PREFIX, TokenRefusal, Tokens};

/// The actor of requests made with the machine secret, an owner credential.
pub(crate) const SECRET_ACTOR: &str = "machine-secret";

/// What stops the daemon, and says what becomes of its agents then (`/v1/daemon/…`).
#[derive(Debug)]
pub(crate) struct DaemonControl {
    pub shutdown: tokio_util::sync::CancellationToken,
    pub leaving: Arc<tokio::sync::watch::Sender<crate::Leaving>>,
    /// Which daemon is asked (the answer of both routes).
    pub this: celistra_proto::DaemonLeaving,
    pub services: Arc<crate::services::Services>,
}

impl axum::extract::FromRef<AppState> for Arc<DaemonControl> {
    fn from_ref(state: &AppState) -> Self {
        Arc::clone(&state.daemon)
    }
}

#[derive(Clone)]
pub(crate) struct AppState {
    /// Stopping and upgrading the daemon.
    pub daemon: Arc<DaemonControl>,
    pub supervisor: Arc<Supervisor>,
    pub secret: Arc<str>,
    pub health: Arc<Health>,
    pub tickets: Arc<terminal::Tickets>,
    /// Dashboard login codes and sessions.
    pub sessions: Arc<crate::sessions::Sessions>,
    /// API tokens.
    pub tokens: Arc<Tokens>,
    /// What ends each credential's open streams and terminals: revocation, or the daemon stopping.
    pub lifetimes: Arc<Lifetimes>,
    /// `http://<address the TCP listener is bound to>`, for login links.
    pub base_url: Arc<str>,
    /// Whether the TCP port is served over TLS (then session cookies are `Secure`).
    pub tls: bool,
    /// The served certificate, for its fingerprint in `/v1/health`.
    pub certificates: Option<Arc<crate::tls::Certificates>>,
    /// This daemon's place in a fleet.
    pub fleet: Arc<crate::fleet::Fleet>,
}

/// Handlers that only work with the agents take the supervisor; those that only read or record take
/// the shared services. The others (credentials, sessions, terminals) take the whole state.
impl axum::extract::FromRef<AppState> for Arc<Supervisor> {
    fn from_ref(state: &AppState) -> Self {
        Arc::clone(&state.supervisor)
    }
}

impl axum::extract::FromRef<AppState> for Arc<crate::services::Services> {
    fn from_ref(state: &AppState) -> Self {
        Arc::clone(&state.supervisor.services)
    }
}

/// The dashboard session a request presented (its cookie), for the session routes.
#[derive(Debug, Clone)]
pub(crate) struct SessionToken {
    pub id: String,
    pub token: String,
}

pub(crate) use crate::wire::check_origin;
pub(crate) use crate::wire::{Failure, JsonBody, MAX_BODY, bad_query, failure};

/// Who made a request: the credential's name and role. Set by [`authenticate`].
pub(crate) use crate::actor::Actor;

/// What ends a request's long-lived answers (streams, terminals): cancelled when its credential is
/// revoked or the daemon stops. Set by [`authenticate`] next to [`Actor`].
#[derive(Debug, Clone)]
pub(crate) struct Revocation(pub CancellationToken);

/// One cancellation token per credential that has streams open, each a child of the daemon's
/// `stopping`, so that revoking a token or a session ends its streams and terminals at once.
#[derive(Debug)]
pub(crate) struct Lifetimes {
    stopping: CancellationToken,
    live: Mutex<HashMap<String, CancellationToken>>,
}

impl Lifetimes {
    pub(crate) fn new(stopping: CancellationToken) -> Lifetimes {
        Lifetimes {
            stopping,
            live: Mutex::default(),
        }
    }

    /// What ends the streams of credential `actor`.
    fn of(&self, actor: &str) -> CancellationToken {
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        live.entry(actor.to_owned())
            .or_insert_with(|| self.stopping.child_token())
            .clone()
    }

    /// Ends every stream and terminal of credential `actor` (it was revoked).
    pub(crate) fn end(&self, actor: &str) {
        let ended = self
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(actor);
        if let Some(ended) = ended {
            ended.cancel();
        }
    }

    /// Whether the daemon is stopping (rather than a credential revoked).
    pub(crate) fn daemon_stopping(&self) -> bool {
        self.stopping.is_cancelled()
    }
}

/// Which surface made a request (`cli`, `dashboard`, …; `api` when not said).
#[derive(Debug, Clone)]
pub(crate) struct Source(pub String);

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key == name).then_some(value)
        })
}

fn refuse(
    state: &AppState,
    request: &Request,
    code: ErrorCode,
    why: &str,
    message: String,
) -> Response {
    tracing::info!(path = %request.uri().path(), "refused request: {why}");
    state.supervisor.services.audit.record_auth_failure(
        request.method().as_str(),
        request.uri().path(),
        why,
    );
    let mut response = failure(code, message).into_response();
    if code == ErrorCode::Unauthorized {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    response
}

/// The credential in an `Authorization` header: the scheme is case-insensitive (RFC 9110 §11.1).
fn bearer_of(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, credential) = value.split_once(' ').unwrap_or((value, ""));
    Some(if scheme.eq_ignore_ascii_case("bearer") {
        credential.trim()
    } else {
        ""
    })
}

/// A bearer credential: the machine secret (an owner), or an API token with its role.
fn bearer_credential(state: &AppState, presented: &str) -> Result<(String, Role), &'static str> {
    if presented.is_empty() {
        return Err("missing bearer token");
    }
    if bool::from(presented.as_bytes().ct_eq(state.secret.as_bytes())) {
        return Ok((SECRET_ACTOR.to_owned(), Role::Owner));
    }
    if !presented.starts_with(TOKEN_PREFIX) {
        return Err("wrong bearer token");
    }
    match state.tokens.authenticate(presented, crate::now_ms()) {
        Ok(holder) => Ok((holder.actor, holder.role)),
        Err(TokenRefusal::Unknown) => Err("unknown or revoked API token"),
        Err(TokenRefusal::Expired) => Err("expired API token"),
    }
}

/// Authenticates a request: `Authorization: Bearer <credential>` (the machine secret, compared in
/// constant time, or an API token, found by the SHA-256 of its value: see `tokens.rs`), or else a dashboard session cookie. A cookie request must
/// come from the daemon's own origin (when it says one), and one that may change state (any
/// method but GET, HEAD, OPTIONS) must carry the session's CSRF token in `X-CSRF-Token`. Records
/// the actor, its role and the source.
async fn authenticate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    if let Some(tunnel) = request.extensions().get::<crate::fleet::Tunnel>().cloned() {
        return authenticate_hub_user(&state, &tunnel, request, next).await;
    }
    let bearer = bearer_of(request.headers());
    let session = cookie(request.headers(), SESSION_COOKIE).filter(|v| !v.is_empty());
    let (actor, role) = match (bearer, session) {
        (bearer, None) | (bearer @ Some(_), Some(_)) => {
            match bearer_credential(&state, bearer.unwrap_or("")) {
                Ok(credential) => credential,
                Err(why) => {
                    return refuse(
                        &state,
                        &request,
                        ErrorCode::Unauthorized,
                        why,
                        format!(
                            "{why}; send `Authorization: Bearer <credential>`: the secret from auth.json in the daemon's state directory, or a token from `celistrad ctl token create` (ask an owner); or log in to the dashboard with `celistrad ctl dashboard`"
                        ),
                    );
                }
            }
        }
        (None, Some(token)) => {
            let token = token.to_owned();
            let Some(session) = state.sessions.authenticate(&token, crate::now_ms()) else {
                return refuse(
                    &state,
                    &request,
                    ErrorCode::Unauthorized,
                    "unknown, expired or revoked session",
                    "your dashboard session has ended (expired, revoked or logged out); open a new login link from `celistrad ctl dashboard`".to_owned(),
                );
            };
            if let Err(Failure(error)) = check_origin(request.headers()) {
                return refuse(
                    &state,
                    &request,
                    error.code,
                    "cross-origin session request",
                    error.message,
                );
            }
            let safe = matches!(
                *request.method(),
                axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
            );
            if !safe {
                let presented = request
                    .headers()
                    .get(CSRF_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if !crate::sessions::csrf_matches(&token, presented) {
                    let why = if presented.is_empty() {
                        "missing CSRF token"
                    } else {
                        "wrong CSRF token"
                    };
                    return refuse(
                        &state,
                        &request,
                        ErrorCode::CsrfFailed,
                        why,
                        format!(
                            "{why}: a dashboard session's requests that change something must send the session's token in X-CSRF-Token (GET /v1/session returns it)"
                        ),
                    );
                }
            }
            request.extensions_mut().insert(SessionToken {
                id: session.id,
                token,
            });
            (session.actor, session.role)
        }
    };
    let source = source_of(request.headers());
    let ended = state.lifetimes.of(&actor);
    request.extensions_mut().insert(Revocation(ended));
    request
        .extensions_mut()
        .insert(Actor::credential(actor, role));
    request.extensions_mut().insert(Source(source));
    next.run(request).await
}

/// A request a hub forwarded over this node's link: the hub authenticated its user and says who
/// they are (name and role); this node believes it only on the link (the [`Tunnel`] mark), and
/// gives the user at most the role of its own `fleet` ceiling. Events and audit entries name
/// them `via hub <hub>: <user>`.
///
/// [`Tunnel`]: crate::fleet::Tunnel
async fn authenticate_hub_user(
    state: &AppState,
    tunnel: &crate::fleet::Tunnel,
    mut request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    let user = headers
        .get(celistra_proto::FLEET_USER_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|u| !u.is_empty() && u.len() <= 128 && !u.chars().any(char::is_control))
        .map(str::to_owned);
    let role = headers
        .get(celistra_proto::FLEET_ROLE_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|r| r.parse::<Role>().ok());
    let (Some(user), Some(role)) = (user, role) else {
        return refuse(
            state,
            &request,
            ErrorCode::Unauthorized,
            "a hub request without its user",
            "a request from the hub must name its user and role".into(),
        );
    };
    let actor = format!("via hub {}: {user}", tunnel.hub_name);
    let role = crate::fleet::capped(role, state.fleet.ceiling);
    let ended = state.lifetimes.of(&actor);
    request.extensions_mut().insert(Revocation(ended));
    request
        .extensions_mut()
        .insert(Actor::credential(actor, role));
    request.extensions_mut().insert(Source("fleet".into()));
    next.run(request).await
}

/// Refuses a request that came over this node's link to a route the hub does not forward (a hub
/// that asked for one anyway).
async fn not_over_a_link(request: Request, next: Next) -> Response {
    if request.extensions().get::<crate::fleet::Tunnel>().is_some() {
        return failure(
            ErrorCode::NotFound,
            "this route is not reachable through a hub; ask this machine directly",
        )
        .into_response();
    }
    next.run(request).await
}

/// Refuses a caller whose role does not satisfy the `required` role of the route (whose path
/// template is `route`): 403, naming the role.
async fn authorize(
    State((state, required, route)): State<(AppState, Role, Arc<str>)>,
    request: Request,
    next: Next,
) -> Response {
    let role = request
        .extensions()
        .get::<Actor>()
        .and_then(|actor| actor.role);
    match role {
        Some(role) if role.satisfies(required) => next.run(request).await,
        role => {
            let what = format!("{} {route}", request.method());
            let have = role.unwrap_or(Role::Viewer);
            tracing::info!("refused {what}: the {have} role may not");
            state.supervisor.services.audit.record_auth_failure(
                request.method().as_str(),
                request.uri().path(),
                &format!("role {have} may not; needs {required}"),
            );
            let mut refusal = ApiError::role_required(required, have, &what);
            if request.extensions().get::<crate::fleet::Tunnel>().is_some() {
                refusal.message = format!(
                    "{what} needs the {required} role; through a hub this machine allows at most \
                     {} (its `fleet` setting in config.json)",
                    state.fleet.ceiling
                );
            }
            Failure(refusal).into_response()
        }
    }
}

pub(crate) fn source_of(headers: &HeaderMap) -> String {
    headers
        .get(SOURCE_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|s| {
            !s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'-')
        })
        .unwrap_or("api")
        .to_owned()
}

/// The whole API and the dashboard, made from the route table. Every API route requires a
/// credential (the bearer secret or token, or a session) whose role satisfies the route's, the
/// unknown routes included, except the table's public routes: the terminal WebSocket, which
/// browsers open without headers (it requires a ticket instead), the login, which takes a
/// one-time code, and decision links (`/d/{token}`), whose signed token is the credential. The
/// dashboard's files (`/`, `/login`, `/assets/…`) hold no secret and are public.
pub(crate) fn router(state: AppState) -> Router {
    let mut public = Router::new();
    let mut authenticated = Router::new();
    for route in routes::table() {
        if route.via_hub {
            // The same route for a machine of the fleet: the hub checks the caller's role here,
            // the machine its own ceiling.
            let forward = route
                .methods()
                .into_iter()
                .filter_map(|method| axum::routing::MethodFilter::try_from(method).ok())
                .fold(axum::routing::MethodRouter::new(), |router, filter| {
                    router.on(filter, fleet::forward)
                });
            match route.access {
                Access::Public => public = public.route(&route.hub_path(), forward),
                Access::Any => authenticated = authenticated.route(&route.hub_path(), forward),
                Access::Role(required) => {
                    let check = middleware::from_fn_with_state(
                        (
                            state.clone(),
                            required,
                            Arc::from(route.hub_path().as_str()),
                        ),
                        authorize,
                    );
                    authenticated =
                        authenticated.route(&route.hub_path(), forward.route_layer(check));
                }
            }
        }
        let handler = match route.access {
            Access::Role(required) => route.handler.route_layer(middleware::from_fn_with_state(
                (state.clone(), required, Arc::from(route.path.as_str())),
                authorize,
            )),
            Access::Public | Access::Any => route.handler,
        };
        // A route a hub does not forward is not answered over a link either, whoever asks (this
        // layer is outermost: it refuses before any role check).
        let handler = if route.via_hub {
            handler
        } else {
            handler.route_layer(middleware::from_fn(not_over_a_link))
        };
        match route.access {
            Access::Public => public = public.route(&route.path, handler),
            Access::Any | Access::Role(_) => {
                authenticated = authenticated.route(&route.path, handler)
            }
        }
    }
    let public = public
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state.clone())
        .merge(celistra_dashboard::router());
    authenticated
        .fallback(|| async { failure(ErrorCode::NotFound, "no such route; see /v1/openapi.json") })
        .method_not_allowed_fallback(|| async {
            failure(
                ErrorCode::MethodNotAllowed,
                "method not allowed on this route; see /v1/openapi.json",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .with_state(state.clone())
        .merge(public)
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state.supervisor.services.metrics),
            crate::metrics::time_requests,
        ))
}

/// Daemon status.
#[utoipa::path(get, path = "/v1/health", tag = "daemon", responses((status = 200, body = Health), (status = 401, body = ApiError)))]
pub(crate) async fn health(State(state): State<AppState>) -> Json<Health> {
    let (agents, agents_running) = state.supervisor.counts();
    let audit = state.supervisor.services.audit.health();
    let altered = audit
        .last_verification
        .as_ref()
        .is_some_and(|verification| !verification.ok);
    Json(Health {
        agents,
        agents_running,
        history: state.supervisor.services.history.health(),
        status: if altered {
            "audit_verify_failed".into()
        } else {
            state.health.status.clone()
        },
        audit,
        tls: state.certificates.as_ref().map(|c| c.health()),
        ..(*state.health).clone()
    })
}
