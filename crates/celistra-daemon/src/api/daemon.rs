//! Stopping and upgrading the daemon itself (owner only, audited): a stop leaves the agents
//! stopped or, with `keep_agents`, running in the keeper; an upgrade re-executes the binary with
//! the agents left running, as SIGHUP does. Both answer before the daemon goes.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, State};
use celistra_proto::{DaemonLeaving, DaemonStopRequest, DaemonUpgradeRequest};

use super::{Actor, Failure, JsonBody};
use crate::Leaving;
use crate::api::DaemonControl;

/// Stop the daemon: its agents are stopped gracefully (each with its grace period) and come back
/// on the next start, or with `keep_agents` left running in the keeper for the next daemon to
/// take over. Answers at once; the daemon then stops.
#[utoipa::path(post, path = "/v1/daemon/stop", tag = "daemon", operation_id = "stop_daemon",
    request_body = DaemonStopRequest,
    responses((status = 202, body = DaemonLeaving), (status = 400, body = celistra_proto::ApiError)))]
pub(crate) async fn stop(
    State(control): State<Arc<DaemonControl>>,
    Extension(actor): Extension<Actor>,
    JsonBody(request): JsonBody<DaemonStopRequest>,
) -> Result<(axum::http::StatusCode, Json<DaemonLeaving>), Failure> {
    let leaving = if request.keep_agents {
        Leaving::KeepAgents
    } else {
        Leaving::StopAgents
    };
    leave(&control, &actor, leaving, "daemon_stop_requested").await
}

/// Upgrade in place: the daemon re-executes its binary (a new version if it was replaced on disk),
/// keeping its pid; every agent keeps running, and the new daemon takes them over. Answers at
/// once; the API answers again when the new daemon is up.
#[utoipa::path(post, path = "/v1/daemon/upgrade", tag = "daemon", operation_id = "upgrade_daemon",
    request_body = DaemonUpgradeRequest,
    responses((status = 202, body = DaemonLeaving), (status = 400, body = celistra_proto::ApiError)))]
pub(crate) async fn upgrade(
    State(control): State<Arc<DaemonControl>>,
    Extension(actor): Extension<Actor>,
    JsonBody(DaemonUpgradeRequest {}): JsonBody<DaemonUpgradeRequest>,
) -> Result<(axum::http::StatusCode, Json<DaemonLeaving>), Failure> {
    leave(
        &control,
        &actor,
        Leaving::Upgrade,
        "daemon_upgrade_requested",
    )
    .await
}

async fn leave(
    control: &DaemonControl,
    actor: &Actor,
    leaving: Leaving,
    action: &str,
) -> Result<(axum::http::StatusCode, Json<DaemonLeaving>), Failure> {
    control.services.audit.record(
        actor,
        action,
        "daemon",
        serde_json::json!({
            "pid": control.this.pid,
            "version": control.this.version,
            "keep_agents": leaving != Leaving::StopAgents,
        }),
    );
    let audit = Arc::clone(&control.services.audit);
    // Durable before the answer, like every audited change.
    tokio::task::spawn_blocking(move || audit.log().sync())
        .await
        .map_err(|e| {
            celistra_proto::ApiError::new(celistra_proto::ErrorCode::Internal, e.to_string())
        })?
        .map_err(|e| {
            celistra_proto::ApiError::new(
                celistra_proto::ErrorCode::Internal,
                format!("audit log: {e}"),
            )
        })?;
    control.leaving.send_replace(leaving);
    control.shutdown.cancel();
    Ok((axum::http::StatusCode::ACCEPTED, Json(control.this.clone())))
}
