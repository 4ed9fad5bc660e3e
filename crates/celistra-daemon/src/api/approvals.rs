//! Approval routes: list, show, approve, deny. Deciding needs the machine secret: an agent's own
//! socket has no route for it, so an agent cannot answer its own request or another agent's.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Path, Query, State};
use celistra_proto::{ApiError, Approval, ApprovalStatus, DecisionRequest, ErrorCode};
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
    Ok(Json(
        state.supervisor.services.approvals.list(query.pending),
    ))
}

/// One request.
#[utoipa::path(get, path = "/v1/approvals/{id}", tag = "approvals", params(("id" = String, Path)),
    responses((status = 200, body = Approval), (status = 404, body = ApiError)))]
pub(crate) async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Approval>> {
    Ok(Json(state.supervisor.services.approvals.get(&id)?))
}

/// Approve or deny a pending request: `verdict` is `approve` (the agent goes ahead) or `deny`. A
/// request already decided: 409, saying who decided.
#[utoipa::path(post, path = "/v1/approvals/{id}/{verdict}", tag = "approvals",
    params(("id" = String, Path), ("verdict" = String, Path, description = "approve or deny")),
    request_body = DecisionRequest,
    responses((status = 200, body = Approval), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
pub(crate) async fn decide(
    State(state): State<AppState>,
    Path((id, verdict)): Path<(String, String)>,
    Extension(actor): Extension<Actor>,
    Extension(source): Extension<Source>,
    JsonBody(request): JsonBody<DecisionRequest>,
) -> ApiResult<Json<Approval>> {
    let status = match verdict.as_str() {
        "approve" => ApprovalStatus::Approved,
        "deny" => ApprovalStatus::Denied,
        _ => {
            return Err(super::failure(
                ErrorCode::NotFound,
                "no such route; decide with /v1/approvals/{id}/approve or /deny",
            ));
        }
    };
    let approval = state.supervisor.approvals.decide(
        &id,
        crate::approvals::Verdict {
            status,
            actor,
            via: &source.0,
            reason: request.reason,
        },
    )?;
    state.supervisor.sync().await?;
    Ok(Json(approval))
}
