//! Secret routes: list (names and times, never a value), set and remove. Setting and removing are
//! audited by name only. None of them is forwarded by a fleet hub: a hub never sees a value.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use celistra_proto::{ApiError, SecretInfo, SecretRequest};
use serde_json::json;

use super::responses::BadBody;
use super::{Actor, Failure, JsonBody};
use crate::now_ms;
use crate::supervisor::Supervisor;

/// Every secret by name, with when it was created and last set. Never a value.
#[utoipa::path(get, path = "/v1/secrets", tag = "secrets", operation_id = "list_secrets",
    responses((status = 200, body = Vec<SecretInfo>)))]
pub(crate) async fn list(State(supervisor): State<Arc<Supervisor>>) -> Json<Vec<SecretInfo>> {
    Json(supervisor.services.secrets.list())
}

/// Set a secret's value (creating the secret, or replacing its value). It is kept encrypted, given
/// only to agents that refer to it, and masked in their output; no answer ever carries it.
#[utoipa::path(put, path = "/v1/secrets/{name}", tag = "secrets", operation_id = "set_secret",
    params(("name" = String, Path, description = "the secret's name, `[A-Z_][A-Z0-9_]*`")),
    request_body = SecretRequest,
    responses((status = 200, body = SecretInfo), BadBody))]
pub(crate) async fn set(
    State(supervisor): State<Arc<Supervisor>>,
    Extension(actor): Extension<Actor>,
    Path(name): Path<String>,
    JsonBody(request): JsonBody<SecretRequest>,
) -> Result<Response, Failure> {
    let services = &supervisor.services;
    let (info, created) = services.secrets.set(&name, &request.value, now_ms())?;
    drop(request);
    services.audit.record(
        &actor,
        "secret_set",
        &info.name,
        json!({ "created": created }),
    );
    supervisor.sync().await?;
    let mut response = Json(info).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Forget a secret. Agents that refer to it keep running; their next spawn fails, naming it.
#[utoipa::path(delete, path = "/v1/secrets/{name}", tag = "secrets", operation_id = "remove_secret",
    params(("name" = String, Path, description = "the secret's name")),
    responses((status = 200, body = SecretInfo), (status = 404, description = "`not_found`: no such secret", body = ApiError)))]
pub(crate) async fn remove(
    State(supervisor): State<Arc<Supervisor>>,
    Extension(actor): Extension<Actor>,
    Path(name): Path<String>,
) -> Result<Json<SecretInfo>, Failure> {
    let removed = supervisor.services.secrets.remove(&name)?;
    supervisor
        .services
        .audit
        .record(&actor, "secret_removed", &removed.name, json!({}));
    supervisor.sync().await?;
    Ok(Json(removed))
}
