//! API token routes: list (never a token's value), create (the value, shown once) and revoke
//! (at once, also for the token's open streams and terminals). Every change is audited.

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use celistra_proto::{ApiError, TokenCreated, TokenInfo, TokenRequest};
use serde_json::json;

use super::{Actor, AppState, Failure, JsonBody};
use crate::now_ms;

/// Every API token: name, role, when it was made and by whom, when it expires and when it was
/// last used. Never a token's value.
#[utoipa::path(get, path = "/v1/tokens", tag = "tokens", operation_id = "list_tokens",
    responses((status = 200, body = Vec<TokenInfo>)))]
pub(crate) async fn list(State(state): State<AppState>) -> Json<Vec<TokenInfo>> {
    Json(state.tokens.list())
}

/// Make an API token with a role. Its value is in this answer and nowhere else: the daemon keeps
/// only its SHA-256.
#[utoipa::path(post, path = "/v1/tokens", tag = "tokens", operation_id = "create_token",
    request_body = TokenRequest,
    responses((status = 200, body = TokenCreated), (status = 400, body = ApiError), (status = 409, body = ApiError)))]
pub(crate) async fn create(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    JsonBody(request): JsonBody<TokenRequest>,
) -> Result<Response, Failure> {
    let created = state.tokens.create(&request, &actor.name, now_ms())?;
    state.supervisor.services.audit.record(
        &actor,
        "token_created",
        &created.info.actor,
        json!({ "role": created.info.role, "expires_at_ms": created.info.expires_at_ms }),
    );
    state.supervisor.sync().await?;
    let mut response = Json(created).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Revoke an API token: it stops working at once, and its open event streams, log follows and
/// terminals are closed.
#[utoipa::path(delete, path = "/v1/tokens/{name}", tag = "tokens", operation_id = "revoke_token",
    params(("name" = String, Path, description = "the token's name")),
    responses((status = 200, body = TokenInfo), (status = 404, body = ApiError)))]
pub(crate) async fn revoke(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(name): Path<String>,
) -> Result<Json<TokenInfo>, Failure> {
    let revoked = state.tokens.revoke(&name)?;
    state.lifetimes.end(&revoked.actor);
    state.supervisor.services.audit.record(
        &actor,
        "token_revoked",
        &revoked.actor,
        json!({ "role": revoked.role }),
    );
    state.supervisor.sync().await?;
    Ok(Json(revoked))
}
