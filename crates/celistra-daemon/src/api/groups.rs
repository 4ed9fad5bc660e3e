//! Group routes: scaling a group of instances and restarting it one instance at a time. The
//! agent routes (`stop`, `start`, `restart`, `DELETE`) also take a group's name and act on every
//! instance.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Path, State};
use celistra_proto::{ApiError, GroupInfo, ScaleRequest};

use super::responses::BadBody;
use super::{Actor, Failure, JsonBody, Source};
use crate::supervisor::Supervisor;

/// Give a group this many instances: the missing ones are spawned, or the highest-numbered ones
/// removed.
#[utoipa::path(
    post,
    path = "/v1/groups/{group}/scale",
    operation_id = "scale_group",
    tag = "agents",
    params(("group" = String, Path, description = "Group name")),
    request_body = ScaleRequest,
    responses((status = 200, body = GroupInfo), BadBody, (status = 404, description = "`not_found`: no such group", body = ApiError), (status = 503, description = "`shutting_down`: the daemon is stopping", body = ApiError))
)]
pub(crate) async fn scale(
    State(supervisor): State<Arc<Supervisor>>,
    Extension(actor): Extension<Actor>,
    Extension(source): Extension<Source>,
    Path(group): Path<String>,
    JsonBody(request): JsonBody<ScaleRequest>,
) -> Result<Json<GroupInfo>, Failure> {
    Ok(Json(
        supervisor
            .scale(&group, request.instances, &source.0, &actor)
            .await?,
    ))
}

/// Restart a group's instances one at a time, each new one running before the next old one
/// stops; the shared socket stays open, so no connection is refused meanwhile.
#[utoipa::path(
    post,
    path = "/v1/groups/{group}/rolling-restart",
    operation_id = "rolling_restart_group",
    tag = "agents",
    params(("group" = String, Path, description = "Group name")),
    responses((status = 200, body = GroupInfo), (status = 404, description = "`not_found`: no such group", body = ApiError), (status = 409, description = "`conflict`: an instance did not come back; the rest were left as they were", body = ApiError), (status = 503, description = "`shutting_down`: the daemon is stopping", body = ApiError))
)]
pub(crate) async fn rolling_restart(
    State(supervisor): State<Arc<Supervisor>>,
    Extension(actor): Extension<Actor>,
    Path(group): Path<String>,
) -> Result<Json<GroupInfo>, Failure> {
    Ok(Json(supervisor.rolling_restart(&group, &actor).await?))
}
