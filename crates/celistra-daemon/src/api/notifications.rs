//! Notification routes: each channel's status, a test send, the Web Push key and the devices
//! subscribed to it. Subscribing and unsubscribing are audited.

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use celistra_proto::{
    ApiError, ChannelStatus, NotificationsStatus, PushSubscriptionInfo, PushSubscriptionRequest,
    VapidKeyInfo,
};
use serde_json::json;

use super::{Actor, AppState, Failure, JsonBody};

type ApiResult<T> = Result<T, Failure>;

/// The channels configured in `config.json` and the subscribed devices, with how each fared.
#[utoipa::path(get, path = "/v1/notifications", tag = "notifications",
    responses((status = 200, body = NotificationsStatus), (status = 500, body = ApiError)))]
pub(crate) async fn status(State(state): State<AppState>) -> ApiResult<Json<NotificationsStatus>> {
    let services = &state.supervisor.services;
    let config = services.config()?.notifications;
    Ok(Json(services.notify.status(&config)))
}

/// Sends a test notification on every channel, once, and reports how each went.
#[utoipa::path(post, path = "/v1/notifications/test", tag = "notifications",
    responses((status = 200, body = Vec<ChannelStatus>), (status = 500, body = ApiError)))]
pub(crate) async fn test(State(state): State<AppState>) -> ApiResult<Json<Vec<ChannelStatus>>> {
    let services = &state.supervisor.services;
    let config = services.config()?.notifications;
    Ok(Json(services.notify.test(&config).await))
}

/// The key a browser subscribes with (`applicationServerKey`).
#[utoipa::path(get, path = "/v1/push/vapid-key", tag = "notifications",
    responses((status = 200, body = VapidKeyInfo)))]
pub(crate) async fn vapid_key(State(state): State<AppState>) -> Json<VapidKeyInfo> {
    Json(VapidKeyInfo {
        public_key: state.supervisor.services.notify.vapid_public_key(),
    })
}

/// Devices that receive Web Push notifications.
#[utoipa::path(get, path = "/v1/push/subscriptions", tag = "notifications",
    responses((status = 200, body = Vec<PushSubscriptionInfo>)))]
pub(crate) async fn subscriptions(
    State(state): State<AppState>,
) -> Json<Vec<PushSubscriptionInfo>> {
    Json(state.supervisor.services.notify.subscriptions())
}

/// Subscribes a device: the body is `PushSubscription.toJSON()` plus an optional `label`.
#[utoipa::path(post, path = "/v1/push/subscriptions", tag = "notifications",
    request_body = PushSubscriptionRequest,
    responses((status = 201, body = PushSubscriptionInfo), (status = 400, body = ApiError)))]
pub(crate) async fn subscribe(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    JsonBody(request): JsonBody<PushSubscriptionRequest>,
) -> ApiResult<(StatusCode, Json<PushSubscriptionInfo>)> {
    let services = &state.supervisor.services;
    let device = services.notify.subscribe(request)?;
    services.audit.record(
        &actor,
        "push_subscribed",
        &device.id,
        json!({ "endpoint": device.endpoint, "label": device.label }),
    );
    state.supervisor.sync().await?;
    Ok((StatusCode::CREATED, Json(device)))
}

/// Unsubscribes a device.
#[utoipa::path(delete, path = "/v1/push/subscriptions/{id}", tag = "notifications",
    params(("id" = String, Path)),
    responses((status = 200, body = PushSubscriptionInfo), (status = 404, body = ApiError)))]
pub(crate) async fn unsubscribe(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> ApiResult<Json<PushSubscriptionInfo>> {
    let services = &state.supervisor.services;
    let device = services.notify.unsubscribe(&id)?;
    services.audit.record(
        &actor,
        "push_unsubscribed",
        &device.id,
        json!({ "endpoint": device.endpoint, "label": device.label }),
    );
    state.supervisor.sync().await?;
    Ok(Json(device))
}
