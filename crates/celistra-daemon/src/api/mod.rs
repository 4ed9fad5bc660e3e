//! The HTTP API under `/v1`: routing, authentication (the bearer secret, or a dashboard session
//! cookie with its CSRF token), JSON bodies and JSON errors; the embedded dashboard at `/`. The same
//! router serves the Unix socket and the TCP listener.

mod agents;
mod approvals;
mod audit;
mod decide;
mod events;
mod history;
mod notifications;
mod openapi;
mod responses;
mod sandbox;
mod sessions;
mod terminal;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use celistra_proto::{ApiError, CSRF_HEADER, ErrorCode, Health, SESSION_COOKIE, SOURCE_HEADER};
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use crate::supervisor::Supervisor;

/// The only credential so far; every request records it as its actor. Roles will add more.
pub(crate) const SECRET_ACTOR: &str = "machine-secret";

#[derive(Clone)]
pub(crate) struct AppState {
    pub supervisor: Arc<Supervisor>,
    pub secret: Arc<str>,
    pub health: Arc<Health>,
    /// Cancelled when the daemon stops, ending long-lived streams so shutdown is not held up.
    pub stopping: CancellationToken,
    pub tickets: Arc<terminal::Tickets>,
    /// Dashboard login codes and sessions.
    pub sessions: Arc<crate::sessions::Sessions>,
    /// `http://<address the TCP listener is bound to>`, for login links.
    pub base_url: Arc<str>,
    /// Whether the API is served over TLS (then session cookies are `Secure`). Not yet: the
    /// listener is plain HTTP on loopback.
    pub tls: bool,
}

/// The dashboard session a request presented (its cookie), for the session routes.
#[derive(Debug, Clone)]
pub(crate) struct SessionToken {
    pub id: String,
    pub token: String,
}

pub(crate) use crate::wire::{Failure, JsonBody, MAX_BODY, bad_query, failure};
pub(crate) use terminal::check_origin;

/// Who made a request: the credential's name. Set by [`authenticate`].
#[derive(Debug, Clone)]
pub(crate) struct Actor(pub String);

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

/// Authenticates a request: `Authorization: Bearer <secret>` (constant-time compare), or else a
/// dashboard session cookie. A cookie request must come from the daemon's own origin (when it says
/// one), and one that may change state (any method but GET, HEAD, OPTIONS) must carry the session's
/// CSRF token in `X-CSRF-Token`. Records the actor and source.
async fn authenticate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.strip_prefix("Bearer ").unwrap_or(""));
    let session = cookie(request.headers(), SESSION_COOKIE).filter(|v| !v.is_empty());
    let actor = match (bearer, session) {
        (bearer, None) | (bearer @ Some(_), Some(_)) => {
            let presented = bearer.unwrap_or("");
            let matches: bool = presented.as_bytes().ct_eq(state.secret.as_bytes()).into();
            if !matches {
                let why = if presented.is_empty() {
                    "missing bearer token"
                } else {
                    "wrong bearer token"
                };
                return refuse(
                    &state,
                    &request,
                    ErrorCode::Unauthorized,
                    why,
                    format!(
                        "{why}; send `Authorization: Bearer <secret>` with the secret from auth.json in the daemon's state directory, or log in to the dashboard with `celistrad ctl dashboard`"
                    ),
                );
            }
            SECRET_ACTOR.to_owned()
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
            session.actor
        }
    };
    let source = source_of(request.headers());
    request.extensions_mut().insert(Actor(actor));
    request.extensions_mut().insert(Source(source));
    next.run(request).await
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

/// The whole API and the dashboard. Every API route, the unknown ones included, requires a
/// credential (the bearer secret or a session), except the terminal WebSocket, which browsers open
/// without headers (it requires a ticket instead), the login, which takes a one-time code, and
/// decision links (`/d/{token}`), whose signed token is the credential. The dashboard's files
/// (`/`, `/login`, `/assets/…`) hold no secret and are public.
pub(crate) fn router(state: AppState) -> Router {
    let public = Router::new()
        .route("/v1/agents/{agent}/terminal", get(terminal::connect))
        .route("/v1/sessions/login", post(sessions::login))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state.clone())
        .merge(celistra_dashboard::router())
        .merge(decide::router(state.clone()));
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/openapi.json", get(openapi::document))
        .route("/v1/agents", get(agents::list).post(agents::spawn))
        .route(
            "/v1/agents/{agent}",
            get(agents::get)
                .patch(agents::update)
                .delete(agents::remove),
        )
        .route("/v1/agents/{agent}/spec", get(agents::spec))
        .route("/v1/agents/{agent}/stop", post(agents::stop))
        .route("/v1/agents/{agent}/start", post(agents::start))
        .route("/v1/agents/{agent}/restart", post(agents::restart))
        .route("/v1/agents/{agent}/kill", post(agents::kill))
        .route("/v1/agents/{agent}/rename", post(agents::rename))
        .route(
            "/v1/agents/{agent}/logs",
            get(history::logs).delete(history::clear),
        )
        .route("/v1/logs", get(history::search))
        .route("/v1/history", get(history::runs))
        .route("/v1/apply", post(agents::apply))
        .route("/v1/sandbox", get(sandbox::status).put(sandbox::switch))
        .route("/v1/approvals", get(approvals::list))
        .route("/v1/approvals/{id}", get(approvals::get))
        .route("/v1/approvals/{id}/{verdict}", post(approvals::decide))
        .route("/v1/notifications", get(notifications::status))
        .route("/v1/notifications/test", post(notifications::test))
        .route("/v1/push/vapid-key", get(notifications::vapid_key))
        .route(
            "/v1/push/subscriptions",
            get(notifications::subscriptions).post(notifications::subscribe),
        )
        .route(
            "/v1/push/subscriptions/{id}",
            axum::routing::delete(notifications::unsubscribe),
        )
        .route("/v1/audit", get(audit::list))
        .route("/v1/audit/tail", get(audit::tail))
        .route("/v1/audit/checkpoint", post(audit::checkpoint))
        .route("/v1/audit/proof", get(audit::proof))
        .route("/v1/audit/verify", post(audit::verify))
        .route("/v1/audit/export", get(audit::export))
        .route("/v1/audit/bundle", get(audit::bundle))
        .route("/v1/sandbox/explain", post(sandbox::explain))
        .route("/v1/events", get(events::stream))
        .route(
            "/v1/agents/{agent}/terminal/tickets",
            post(terminal::ticket),
        )
        .route("/v1/usage", get(agents::usage))
        .route("/v1/sessions", get(sessions::list))
        .route("/v1/sessions/login-codes", post(sessions::issue_code))
        .route("/v1/sessions/{id}", axum::routing::delete(sessions::revoke))
        .route("/v1/session", get(sessions::current))
        .route("/v1/session/logout", post(sessions::logout))
        .fallback(|| async { failure(ErrorCode::NotFound, "no such route; see /v1/openapi.json") })
        .method_not_allowed_fallback(|| async {
            failure(
                ErrorCode::MethodNotAllowed,
                "method not allowed on this route; see /v1/openapi.json",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .with_state(state)
        .merge(public)
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
        ..(*state.health).clone()
    })
}
