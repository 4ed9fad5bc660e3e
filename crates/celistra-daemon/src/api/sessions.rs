//! Dashboard session routes: login codes (`ctl dashboard`), the login that turns one into an
//! HttpOnly cookie, the session's own view (its CSRF token), logout, and listing and revoking
//! sessions. Every route but the login itself is authenticated like the rest of the API.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use celistra_proto::{
    ApiError, ErrorCode, LoginCodeQuery, LoginLink, LoginRequest, Role, SESSION_COOKIE,
    SessionInfo, SessionState,
};
use serde_json::json;

use super::responses::{BadBody, BadQuery, Internal};
use super::{Actor, AppState, Failure, JsonBody, SessionToken, failure};
use crate::now_ms;
use crate::sessions::{SESSION_TTL_MS, csrf_token};

type ApiResult<T> = Result<T, Failure>;

/// The `Set-Cookie` value that holds a session token (or, with `None`, clears it).
fn cookie(token: Option<&str>, secure: bool) -> HeaderValue {
    let (value, age) = match token {
        Some(token) => (token, SESSION_TTL_MS / 1000),
        None => ("", 0),
    };
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={age}{secure}"
    ))
    .unwrap_or(HeaderValue::from_static("celistra_session=; Max-Age=0"))
}

/// Make a single-use login link for the dashboard (what `celistrad ctl dashboard` prints). It
/// expires in 5 minutes; the code rides in the URL's fragment, which browsers never send.
#[utoipa::path(
    post,
    path = "/v1/sessions/login-codes",
    operation_id = "issue_login_code",
    tag = "sessions",
    params(LoginCodeQuery),
    responses((status = 200, body = LoginLink), BadQuery, Internal)
)]
pub(crate) async fn issue_code(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    query: Result<Query<LoginCodeQuery>, QueryRejection>,
) -> ApiResult<Json<LoginLink>> {
    let Query(query) = query.map_err(super::bad_query)?;
    let role = query.role.unwrap_or(Role::Owner);
    let (code, expires_at_ms) = state.sessions.issue_code(&actor.name, role, now_ms())?;
    state.supervisor.services.audit.record(
        &actor,
        "login_code_issued",
        "dashboard",
        json!({ "expires_at_ms": expires_at_ms, "role": role }),
    );
    Ok(Json(LoginLink {
        url: format!("{}/login#{code}", state.base_url),
        code,
        expires_at_ms,
    }))
}

/// Exchange a login code for a session: sets the HttpOnly, SameSite=Strict session cookie and
/// answers the CSRF token state-changing requests must send. Needs no other credential; a used,
/// unknown or expired code is refused (401) with what to do.
#[utoipa::path(
    post,
    path = "/v1/sessions/login",
    operation_id = "login",
    tag = "sessions",
    security(()),
    request_body = LoginRequest,
    responses((status = 200, body = SessionState), BadBody, (status = 401, description = "`unauthorized`: an unknown, used or expired login code", body = ApiError), (status = 403, description = "`origin_not_allowed`: a browser request from another origin", body = ApiError), Internal)
)]
pub(crate) async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(request): JsonBody<LoginRequest>,
) -> Response {
    if let Err(refusal) = super::check_origin(&headers) {
        return refusal.into_response();
    }
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match state.sessions.login(&request.code, user_agent, now_ms()) {
        Err(refusal) => {
            let error = refusal.to_api_error();
            state.supervisor.services.audit.record_auth_failure(
                "POST",
                "/v1/sessions/login",
                "unknown, used or expired login code",
            );
            Failure(error).into_response()
        }
        Ok((token, session)) => {
            state.supervisor.services.audit.record(
                &Actor::credential(session.actor.clone(), session.role),
                "session_login",
                &session.id,
                json!({ "user_agent": session.user_agent, "code_from": session.created_by }),
            );
            let body = SessionState {
                csrf_token: csrf_token(&token),
                session,
            };
            let mut response = Json(body).into_response();
            let headers = response.headers_mut();
            headers.insert(header::SET_COOKIE, cookie(Some(&token), state.tls));
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
    }
}

fn session_of(token: Option<Extension<SessionToken>>) -> ApiResult<SessionToken> {
    token.map(|Extension(t)| t).ok_or_else(|| {
        failure(
            ErrorCode::InvalidRequest,
            "this request was made with the machine secret, not a dashboard session",
        )
    })
}

/// The session making the request and its CSRF token (for a page that was reloaded).
#[utoipa::path(
    get,
    path = "/v1/session",
    operation_id = "get_session",
    tag = "sessions",
    responses((status = 200, body = SessionState), (status = 400, description = "`invalid_request`: the request was made with the machine secret, not a session", body = ApiError))
)]
pub(crate) async fn current(
    State(state): State<AppState>,
    token: Option<Extension<SessionToken>>,
) -> ApiResult<Response> {
    let token = session_of(token)?;
    let session = state.sessions.get(&token.id, now_ms()).ok_or_else(|| {
        failure(
            ErrorCode::Unauthorized,
            "this session has ended; log in again",
        )
    })?;
    let mut response = Json(SessionState {
        session,
        csrf_token: csrf_token(&token.token),
    })
    .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// End the session making the request and clear its cookie.
#[utoipa::path(
    post,
    path = "/v1/session/logout",
    operation_id = "logout",
    tag = "sessions",
    responses((status = 200, body = SessionInfo), (status = 400, description = "`invalid_request`: the request was made with the machine secret, not a session", body = ApiError), Internal)
)]
pub(crate) async fn logout(
    State(state): State<AppState>,
    token: Option<Extension<SessionToken>>,
) -> ApiResult<Response> {
    let token = session_of(token)?;
    let session = state.sessions.revoke(&token.id)?;
    state.lifetimes.end(&session.actor);
    state.supervisor.services.audit.record(
        &Actor::credential(session.actor.clone(), session.role),
        "session_logout",
        &session.id,
        json!({}),
    );
    let mut response = Json(session).into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cookie(None, state.tls));
    Ok(response)
}

/// Every live dashboard session, newest first.
#[utoipa::path(
    get,
    path = "/v1/sessions",
    operation_id = "list_sessions",
    tag = "sessions",
    responses((status = 200, body = Vec<SessionInfo>))
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    token: Option<Extension<SessionToken>>,
) -> Json<Vec<SessionInfo>> {
    let current = token.map(|Extension(t)| t.id);
    Json(state.sessions.list(current.as_deref(), now_ms()))
}

/// End a session: its cookie stops working at once.
#[utoipa::path(
    delete,
    path = "/v1/sessions/{id}",
    operation_id = "revoke_session",
    tag = "sessions",
    params(("id" = String, Path, description = "The session's id")),
    responses((status = 200, body = SessionInfo), (status = 404, description = "`not_found`: no such session", body = ApiError), Internal)
)]
pub(crate) async fn revoke(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<SessionInfo>)> {
    let session = state.sessions.revoke(&id)?;
    state.lifetimes.end(&session.actor);
    state
        .supervisor
        .services
        .audit
        .record(&actor, "session_revoked", &session.id, json!({}));
    Ok((StatusCode::OK, Json(session)))
}
