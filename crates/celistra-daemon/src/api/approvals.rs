//! Approval routes: list, show, approve, deny. Deciding needs the machine secret: an agent's own
//! socket has no route for it, so an agent cannot answer its own request or another agent's.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Path, Query, State};
use celistra_proto::{
    ApiError, Approval, ApprovalStatus, ApprovalsQuery, DecisionRequest, ErrorCode, Verdict,
};

use super::responses::{BadBody, BadQuery};
use super::{Actor, Failure, JsonBody, Source};
use crate::supervisor::Supervisor;

type ApiResult<T> = Result<T, Failure>;

/// Approval requests, newest first (pending ones, and the last 1000 decided).
#[utoipa::path(
    get,
    path = "/v1/approvals",
    operation_id = "list_approvals",
    tag = "approvals",
    params(ApprovalsQuery),
    responses((status = 200, body = Vec<Approval>), BadQuery)
)]
pub(crate) async fn list(
    State(supervisor): State<Arc<Supervisor>>,
    query: Result<Query<ApprovalsQuery>, QueryRejection>,
) -> ApiResult<Json<Vec<Approval>>> {
    let Query(query) = query.map_err(super::bad_query)?;
    Ok(Json(supervisor.services.approvals.list(query.pending)))
}

/// One request.
#[utoipa::path(
    get,
    path = "/v1/approvals/{id}",
    operation_id = "get_approval",
    tag = "approvals",
    params(("id" = String, Path, description = "The request's id, `ap-…`")),
    responses((status = 200, body = Approval), (status = 404, description = "`not_found`: no such request", body = ApiError))
)]
pub(crate) async fn get(
    State(supervisor): State<Arc<Supervisor>>,
    Path(id): Path<String>,
) -> ApiResult<Json<Approval>> {
    Ok(Json(supervisor.services.approvals.get(&id)?))
}

/// Approve or deny a pending request: `verdict` is `approve` (the agent goes ahead) or `deny`. A
/// request already decided: 409, saying who decided.
#[utoipa::path(
    post,
    path = "/v1/approvals/{id}/{verdict}",
    operation_id = "decide_approval",
    tag = "approvals",
    params(("id" = String, Path, description = "The request's id, `ap-…`"), ("verdict" = Verdict, Path, description = "`approve` or `deny`")),
    request_body = DecisionRequest,
    responses((status = 200, body = Approval), BadBody, (status = 404, description = "`not_found`: no such request, or a verdict other than approve and deny", body = ApiError), (status = 409, description = "`conflict`: already decided; the message says by whom", body = ApiError), (status = 503, description = "`shutting_down`: the daemon is stopping", body = ApiError))
)]
pub(crate) async fn decide(
    State(supervisor): State<Arc<Supervisor>>,
    Path((id, verdict)): Path<(String, String)>,
    Extension(actor): Extension<Actor>,
    Extension(source): Extension<Source>,
    JsonBody(request): JsonBody<DecisionRequest>,
) -> ApiResult<Json<Approval>> {
    let status = match verdict.as_str() {
        v if v == Verdict::Approve.as_str() => ApprovalStatus::Approved,
        v if v == Verdict::Deny.as_str() => ApprovalStatus::Denied,
        _ => {
            return Err(super::failure(
                ErrorCode::NotFound,
                "no such route; decide with /v1/approvals/{id}/approve or /deny",
            ));
        }
    };
    let approval = supervisor.approvals.decide(
        &id,
        crate::approvals::Verdict {
            status,
            actor,
            via: &source.0,
            reason: request.reason,
        },
    )?;
    supervisor.sync().await?;
    Ok(Json(approval))
}
