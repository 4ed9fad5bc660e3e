//! Agent routes: list, get, spawn, update, rename, stop, start, restart, kill, remove, apply.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use celistra_proto::{
    AgentInfo, AgentSpec, AgentUsage, ApiError, ApplyReport, ApplyRequest, KillRequest,
    RemoveQuery, RenameRequest, UpdateRequest,
};

use super::responses::{BadBody, BadQuery};
use super::{Actor, Failure, JsonBody, Source};
use crate::supervisor::Supervisor;

type ApiResult<T> = Result<T, Failure>;

/// List every agent, oldest first.
#[utoipa::path(
    get,
    path = "/v1/agents",
    operation_id = "list_agents",
    tag = "agents",
    responses((status = 200, body = Vec<AgentInfo>))
)]
pub(crate) async fn list(State(supervisor): State<Arc<Supervisor>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        supervisor.list_json(),
    )
}

/// One agent, by id or name.
#[utoipa::path(
    get,
    path = "/v1/agents/{agent}",
    operation_id = "get_agent",
    tag = "agents",
    params(("agent" = String, Path, description = "Agent id or name")),
    responses((status = 200, body = AgentInfo), (status = 404, description = "`not_found`: no such agent", body = ApiError))
)]
pub(crate) async fn get(
    State(supervisor): State<Arc<Supervisor>>,
    Path(agent): Path<String>,
) -> ApiResult<Json<AgentInfo>> {
    Ok(Json(supervisor.find(&agent)?.info().clone()))
}

/// An agent's full spec, environment values included (as `apply` files hold it).
#[utoipa::path(
    get,
    path = "/v1/agents/{agent}/spec",
    operation_id = "get_agent_spec",
    tag = "agents",
    params(("agent" = String, Path, description = "Agent id or name")),
    responses((status = 200, body = AgentSpec), (status = 404, description = "`not_found`: no such agent", body = ApiError))
)]
pub(crate) async fn spec(
    State(supervisor): State<Arc<Supervisor>>,
    Path(agent): Path<String>,
) -> ApiResult<Json<AgentSpec>> {
    Ok(Json(supervisor.find(&agent)?.spec().clone()))
}

/// Spawn a new agent. An empty `name` gets a generated one.
#[utoipa::path(
    post,
    path = "/v1/agents",
    operation_id = "spawn_agent",
    tag = "agents",
    request_body = AgentSpec,
    responses((status = 201, body = AgentInfo), BadBody, (status = 409, description = "`name_taken`: another agent has that name", body = ApiError), (status = 500, description = "`config_invalid`: the daemon's config.json is malformed; `internal`", body = ApiError), (status = 503, description = "`shutting_down`: the daemon is stopping", body = ApiError))
)]
pub(crate) async fn spawn(
    State(supervisor): State<Arc<Supervisor>>,
    Extension(actor): Extension<Actor>,
    Extension(source): Extension<Source>,
    JsonBody(spec): JsonBody<AgentSpec>,
) -> ApiResult<(StatusCode, Json<AgentInfo>)> {
    let info = supervisor.spawn(spec, &source.0, &actor).await?;
    Ok((StatusCode::CREATED, Json(info)))
}

/// Change an agent's settings; they apply from its next spawn (or now, with `restart: true`).
#[utoipa::path(
    patch,
    path = "/v1/agents/{agent}",
    operation_id = "update_agent",
    tag = "agents",
    params(("agent" = String, Path, description = "Agent id or name")),
    request_body = UpdateRequest,
    responses((status = 200, body = AgentInfo), BadBody, (status = 404, description = "`not_found`: no such agent", body = ApiError), (status = 409, description = "`name_taken`: another agent has the new name", body = ApiError), (status = 503, description = "`shutting_down`: the daemon is stopping", body = ApiError))
)]
pub(crate) async fn update(
    State(supervisor): State<Arc<Supervisor>>,
    Extension(actor): Extension<Actor>,
    Path(agent): Path<String>,
    JsonBody(update): JsonBody<UpdateRequest>,
) -> ApiResult<Json<AgentInfo>> {
    Ok(Json(supervisor.update(&agent, &update, &actor).await?))
}

/// Rename an agent.
#[utoipa::path(
    post,
    path = "/v1/agents/{agent}/rename",
    operation_id = "rename_agent",
    tag = "agents",
    params(("agent" = String, Path, description = "Agent id or name")),
    request_body = RenameRequest,
    responses((status = 200, body = AgentInfo), BadBody, (status = 404, description = "`not_found`: no such agent", body = ApiError), (status = 409, description = "`name_taken`: another agent has that name", body = ApiError), (status = 503, description = "`shutting_down`: the daemon is stopping", body = ApiError))
)]
pub(crate) async fn rename(
    State(supervisor): State<Arc<Supervisor>>,
    Extension(actor): Extension<Actor>,
    Path(agent): Path<String>,
    JsonBody(request): JsonBody<RenameRequest>,
) -> ApiResult<Json<AgentInfo>> {
    Ok(Json(
        supervisor.rename(&agent, &request.name, &actor).await?,
    ))
}

/// Stop an agent: its stop signal to the process group, the grace period, then SIGKILL. Answers
/// once it has stopped.
#[utoipa::path(
    post,
    path = "/v1/agents/{agent}/stop",
    operation_id = "stop_agent",
    tag = "agents",
    params(("agent" = String, Path, description = "Agent id or name")),
    responses((status = 200, body = AgentInfo), (status = 404, description = "`not_found`: no such agent", body = ApiError), (status = 503, description = "`shutting_down`: the daemon is stopping", body = ApiError))
)]
pub(crate) async fn stop(
    State(supervisor): State<Arc<Supervisor>>,
    Extension(actor): Extension<Actor>,
    Path(agent): Path<String>,
) -> ApiResult<Json<AgentInfo>> {
    Ok(Json(supervisor.stop(&agent, &actor).await?))
}

/// Start an agent that is not running (resets its restart ceiling).
#[utoipa::path(
    post,
    path = "/v1/agents/{agent}/start",
    operation_id = "start_agent",
    tag = "agents",
    params(("agent" = String, Path, description = "Agent id or name")),
    responses((status = 200, body = AgentInfo), (status = 404, description = "`not_found`: no such agent", body = ApiError), (status = 503, description = "`shutting_down`: the daemon is stopping", body = ApiError))
)]
pub(crate) async fn start(
    State(supervisor): State<Arc<Supervisor>>,
    Extension(actor): Extension<Actor>,
    Path(agent): Path<String>,
) -> ApiResult<Json<AgentInfo>> {
    Ok(Json(supervisor.start(&agent, &actor).await?))
}

/// Stop (if running) and start an agent.
#[utoipa::path(
    post,
    path = "/v1/agents/{agent}/restart",
    operation_id = "restart_agent",
    tag = "agents",
    params(("agent" = String, Path, description = "Agent id or name")),
    responses((status = 200, body = AgentInfo), (status = 404, description = "`not_found`: no such agent", body = ApiError), (status = 503, description = "`shutting_down`: the daemon is stopping", body = ApiError))
)]
pub(crate) async fn restart(
    State(supervisor): State<Arc<Supervisor>>,
    Extension(actor): Extension<Actor>,
    Path(agent): Path<String>,
) -> ApiResult<Json<AgentInfo>> {
    Ok(Json(supervisor.restart(&agent, &actor).await?))
}

/// Send a signal: `HUP` hangs up the agent's terminal, the others go to its process group. The run
/// it ends is not restarted.
#[utoipa::path(
    post,
    path = "/v1/agents/{agent}/kill",
    operation_id = "kill_agent",
    tag = "agents",
    params(("agent" = String, Path, description = "Agent id or name")),
    request_body = KillRequest,
    responses((status = 200, body = AgentInfo), BadBody, (status = 404, description = "`not_found`: no such agent", body = ApiError), (status = 409, description = "`conflict`: the agent has no process to signal", body = ApiError), (status = 503, description = "`shutting_down`: the daemon is stopping", body = ApiError))
)]
pub(crate) async fn kill(
    State(supervisor): State<Arc<Supervisor>>,
    Extension(actor): Extension<Actor>,
    Path(agent): Path<String>,
    JsonBody(request): JsonBody<KillRequest>,
) -> ApiResult<Json<AgentInfo>> {
    Ok(Json(supervisor.kill(&agent, request.signal, &actor).await?))
}

/// Stop an agent and forget it. A `--worktree` agent's worktree is removed when clean (its branch
/// stays); one with uncommitted or untracked work is refused (409, listing the files) unless
/// `keep_worktree` or `discard_worktree` says what to do.
#[utoipa::path(
    delete,
    path = "/v1/agents/{agent}",
    operation_id = "remove_agent",
    tag = "agents",
    params(("agent" = String, Path, description = "Agent id or name"), RemoveQuery),
    responses((status = 200, body = AgentInfo), BadQuery, (status = 404, description = "`not_found`: no such agent", body = ApiError), (status = 409, description = "`conflict`: the agent's worktree holds work removing it would lose; the message lists it and the options", body = ApiError), (status = 503, description = "`shutting_down`: the daemon is stopping", body = ApiError))
)]
pub(crate) async fn remove(
    State(supervisor): State<Arc<Supervisor>>,
    Extension(actor): Extension<Actor>,
    Path(agent): Path<String>,
    query: Result<Query<RemoveQuery>, QueryRejection>,
) -> ApiResult<Json<AgentInfo>> {
    let Query(query) = query.map_err(super::bad_query)?;
    Ok(Json(supervisor.remove(&agent, &query, &actor).await?))
}

/// Make the agents match a list of specs.
#[utoipa::path(
    post,
    path = "/v1/apply",
    operation_id = "apply",
    tag = "agents",
    request_body = ApplyRequest,
    responses((status = 200, body = ApplyReport), BadBody, (status = 409, description = "`name_taken`: two specs share a name", body = ApiError), (status = 500, description = "`config_invalid`: the daemon's config.json is malformed; `internal`", body = ApiError), (status = 503, description = "`shutting_down`: the daemon is stopping", body = ApiError))
)]
pub(crate) async fn apply(
    State(supervisor): State<Arc<Supervisor>>,
    Extension(actor): Extension<Actor>,
    Extension(source): Extension<Source>,
    JsonBody(request): JsonBody<ApplyRequest>,
) -> ApiResult<Json<ApplyReport>> {
    let source = if source.0 == "api" {
        "config".to_owned()
    } else {
        source.0
    };
    Ok(Json(supervisor.apply(request, &source, &actor).await?))
}

/// CPU time, load and memory of every agent with a live process, as last sampled (every 2 s; from
/// its cgroup, else its process tree).
#[utoipa::path(
    get,
    path = "/v1/usage",
    operation_id = "list_usage",
    tag = "agents",
    responses((status = 200, body = Vec<AgentUsage>))
)]
pub(crate) async fn usage(State(supervisor): State<Arc<Supervisor>>) -> Json<Vec<AgentUsage>> {
    Json(supervisor.usage())
}
