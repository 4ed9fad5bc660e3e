//! Notification routes: each channel's status, a test send, the Web Push key and the devices
//! subscribed to it. Subscribing and unsubscribing are audited.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use celistra_proto::{
    ApiError, ChannelStatus, NotificationsStatus, PushSubscriptionInfo, PushSubscriptionRequest,
    VapidKeyInfo,
};
use serde_json::json;

use super::responses::{BadBody, Internal};
use super::{Actor, Failure, JsonBody};
use crate::supervisor::Supervisor;

type ApiResult<T> = Result<T, Failure>;

/// The channels configured in `config.json` and the subscribed devices, with how each fared.
#[utoipa::path(
    get,
    path = "/v1/notifications",
    operation_id = "get_notifications",
    tag = "notifications",
    responses((status = 200, body = NotificationsStatus), (status = 500, description = "`config_invalid`: the daemon's config.json is malformed", body = ApiError))
)]
pub(crate) async fn status(
    State(supervisor): State<Arc<Supervisor>>,
) -> ApiResult<Json<NotificationsStatus>> {
    let services = &supervisor.services;
    let config = services.config()?.notifications;
    Ok(Json(services.notify.status(&config)))
}

/// Sends a test notification on every channel, once, and reports how each went.
#[utoipa::path(
    post,
    path = "/v1/notifications/test",
    operation_id = "test_notifications",
    tag = "notifications",
    responses((status = 200, body = Vec<ChannelStatus>), (status = 500, description = "`config_invalid`: the daemon's config.json is malformed", body = ApiError))
)]
pub(crate) async fn test(
    State(supervisor): State<Arc<Supervisor>>,
) -> ApiResult<Json<Vec<ChannelStatus>>> {
    let services = &supervisor.services;
    let config = services.config()?.notifications;
    Ok(Json(services.notify.test(&config).await))
}

/// The key a browser subscribes with (`applicationServerKey`).
#[utoipa::path(
    get,
    path = "/v1/push/vapid-key",
    operation_id = "get_vapid_key",
    tag = "notifications",
    responses((status = 200, body = VapidKeyInfo))
)]
pub(crate) async fn vapid_key(State(supervisor): State<Arc<Supervisor>>) -> Json<VapidKeyInfo> {
    Json(VapidKeyInfo {
        public_key: supervisor.services.notify.vapid_public_key(),
    })
}

/// Devices that receive Web Push notifications.
#[utoipa::path(
    get,
    path = "/v1/push/subscriptions",
    operation_id = "list_push_subscriptions",
    tag = "notifications",
    responses((status = 200, body = Vec<PushSubscriptionInfo>))
)]
pub(crate) async fn subscriptions(
    State(supervisor): State<Arc<Supervisor>>,
) -> Json<Vec<PushSubscriptionInfo>> {
    Json(supervisor.services.notify.subscriptions())
}

/// Subscribes a device: the body is `PushSubscription.toJSON()` plus an optional `label`.
#[utoipa::path(
    post,
    path = "/v1/push/subscriptions",
    operation_id = "subscribe_push",
    tag = "notifications",
    request_body = PushSubscriptionRequest,
    responses((status = 201, body = PushSubscriptionInfo), BadBody, Internal)
)]
pub(crate) async fn subscribe(
    State(supervisor): State<Arc<Supervisor>>,
    Extension(actor): Extension<Actor>,
    JsonBody(request): JsonBody<PushSubscriptionRequest>,
) -> ApiResult<(StatusCode, Json<PushSubscriptionInfo>)> {
    let services = &supervisor.services;
    let device = services.notify.subscribe(request)?;
    services.audit.record(
        &actor,
        "push_subscribed",
        &device.id,
        json!({ "endpoint": device.endpoint, "label": device.label }),
    );
    supervisor.sync().await?;
    Ok((StatusCode::CREATED, Json(device)))
}

/// Unsubscribes a device.
#[utoipa::path(
    delete,
    path = "/v1/push/subscriptions/{id}",
    operation_id = "unsubscribe_push",
    tag = "notifications",
    params(("id" = String, Path, description = "The device's id")),
    responses((status = 200, body = PushSubscriptionInfo), (status = 404, description = "`not_found`: no such device", body = ApiError), Internal)
)]
pub(crate) async fn unsubscribe(
    State(supervisor): State<Arc<Supervisor>>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> ApiResult<Json<PushSubscriptionInfo>> {
    let services = &supervisor.services;
    let device = services.notify.unsubscribe(&id)?;
    services.audit.record(
        &actor,
        "push_unsubscribed",
        &device.id,
        json!({ "endpoint": device.endpoint, "label": device.label }),
    );
    supervisor.sync().await?;
    Ok(Json(device))
}
