//! Approval routes: list, show, approve, deny. Deciding needs the machine secret: an agent's own
//! socket has no route for it, so an agent cannot answer its own request or another agent's.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Path, Query, State};
use celistra_proto::{ApiError, Approval, ApprovalStatus, DecisionRequest};
use serde::Deserialize;

use super::{Actor, AppState, Failure, JsonBody, Source};

type ApiResult<T> = Result<T, Failure>;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    /// Only pending requests.
    #[serde(default)]
    pending: bool,
}

/// Approval requests, newest first (pending ones, and the last 1000 decided).
#[utoipa::path(get, path = "/v1/approvals", tag = "approvals", params(ListQuery),
    responses((status = 200, body = Vec<Approval>)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<Vec<Approval>>> {
    let Query(query) = query.map_err(super::bad_query)?;
    Ok(Json(state.supervisor.shared.approvals.list(query.pending)))
}

/// One request.
#[utoipa::path(get, path = "/v1/approvals/{id}", tag = "approvals", params(("id" = String, Path)),
    responses((status = 200, body = Approval), (status = 404, body = ApiError)))]
pub(crate) async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Approval>> {
    Ok(Json(state.supervisor.shared.approvals.get(&id)?))
}

async fn decide(
    state: &AppState,
    id: &str,
    status: ApprovalStatus,
    actor: &Actor,
    source: &Source,
    request: DecisionRequest,
) -> ApiResult<Json<Approval>> {
    let approval = crate::approvals::decide(
        &state.supervisor,
        id,
        status,
        &actor.0,
        &source.0,
        request.reason,
    )?;
    Ok(Json(approval))
}

/// Approve a pending request; the agent continues. A request already decided: 409.
#[utoipa::path(post, path = "/v1/approvals/{id}/approve", tag = "approvals", params(("id" = String, Path)),
    request_body = DecisionRequest,
    responses((status = 200, body = Approval), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
pub(crate) async fn approve(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Extension(actor): Extension<Actor>,
    Extension(source): Extension<Source>,
    JsonBody(request): JsonBody<DecisionRequest>,
) -> ApiResult<Json<Approval>> {
    decide(
        &state,
        &id,
        ApprovalStatus::Approved,
        &actor,
        &source,
        request,
    )
    .await
}

/// Deny a pending request. A request already decided: 409.
#[utoipa::path(post, path = "/v1/approvals/{id}/deny", tag = "approvals", params(("id" = String, Path)),
    request_body = DecisionRequest,
    responses((status = 200, body = Approval), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
pub(crate) async fn deny(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Extension(actor): Extension<Actor>,
    Extension(source): Extension<Source>,
    JsonBody(request): JsonBody<DecisionRequest>,
) -> ApiResult<Json<Approval>> {
    decide(
        &state,
        &id,
        ApprovalStatus::Denied,
        &actor,
        &source,
        request,
    )
    .await
}
