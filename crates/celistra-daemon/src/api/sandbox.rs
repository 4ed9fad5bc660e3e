//! Sandbox routes: the master switch and `explain`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, State};
use celistra_proto::{
    ApiError, ErrorCode, EventKind, ExplainRequest, SandboxExplanation, SandboxStatus,
    SandboxSwitch,
};

use super::responses::{BadBody, Internal};
use super::{Actor, Failure, JsonBody, Source};
use crate::supervisor::Supervisor;

/// The master switch, the launcher, Landlock and how blocks are reported.
#[utoipa::path(
    get,
    path = "/v1/sandbox",
    operation_id = "get_sandbox",
    tag = "sandbox",
    responses((status = 200, body = SandboxStatus))
)]
pub(crate) async fn status(State(supervisor): State<Arc<Supervisor>>) -> Json<SandboxStatus> {
    Json(supervisor.services.sandbox.status())
}

/// Turn the master switch. Off: every agent spawned from now on runs unsandboxed, flagged in `ls`,
/// `status` and an `agent_unsandboxed` event. Running agents keep their confinement until restarted.
#[utoipa::path(
    put,
    path = "/v1/sandbox",
    operation_id = "switch_sandbox",
    tag = "sandbox",
    request_body = SandboxSwitch,
    responses((status = 200, body = SandboxStatus), BadBody, Internal)
)]
pub(crate) async fn switch(
    State(supervisor): State<Arc<Supervisor>>,
    Extension(actor): Extension<Actor>,
    JsonBody(request): JsonBody<SandboxSwitch>,
) -> Result<Json<SandboxStatus>, Failure> {
    let services = &supervisor.services;
    if services.sandbox.enabled() != request.enabled {
        services.sandbox.set_enabled(request.enabled, &actor.name)?;
        services.events.publish(EventKind::SandboxSwitched {
            enabled: request.enabled,
            actor: actor.name.clone(),
            actor_role: actor.role,
        });
    }
    Ok(Json(services.sandbox.status()))
}

/// What an agent (`agent`) or a prospective spawn (`spec`) runs with: effective capabilities and
/// where they came from, the user, the launcher command line and mounts, Landlock rules and seccomp policy.
#[utoipa::path(
    post,
    path = "/v1/sandbox/explain",
    operation_id = "explain_sandbox",
    tag = "sandbox",
    request_body = ExplainRequest,
    responses((status = 200, body = SandboxExplanation), BadBody, (status = 404, description = "`not_found`: no such agent", body = ApiError), Internal)
)]
pub(crate) async fn explain(
    State(supervisor): State<Arc<Supervisor>>,
    Extension(source): Extension<Source>,
    JsonBody(request): JsonBody<ExplainRequest>,
) -> Result<Json<SandboxExplanation>, Failure> {
    let supervisor = &supervisor;
    let (spec, source) = match (request.agent, request.spec) {
        (Some(agent), None) => {
            let handle = supervisor.find(&agent)?;
            let source = handle.info().source.clone();
            let spec = handle.spec().clone();
            (spec, source)
        }
        (None, Some(spec)) => {
            celistra_core::spec::validate(&spec, false)
                .map_err(|e| ApiError::new(ErrorCode::InvalidRequest, e))?;
            (spec, source.0)
        }
        _ => {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "give either `agent` (an id or name) or `spec` (a prospective agent), not both",
            )
            .into());
        }
    };
    // A `--worktree` agent runs in its worktree (once made), with its git directory granted.
    let worktree = crate::worktree::existing(&supervisor.services, &spec).await;
    let workspace = match &worktree {
        Some(worktree) => worktree.cwd.clone(),
        None => supervisor.workspace_of(&spec).into(),
    };
    Ok(Json(supervisor.services.sandbox.explain(
        &spec,
        &source,
        &workspace,
        worktree.as_ref().map(|w| w.common_dir.as_path()),
    )?))
}
