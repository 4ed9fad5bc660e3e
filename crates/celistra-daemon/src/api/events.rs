//! `GET /v1/events`: Server-Sent Events with resumption by `Last-Event-ID`.

use std::convert::Infallible;

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use celistra_proto::{Event, EventKind, EventsQuery, Role};
use futures_util::{Stream, StreamExt};
use tokio::sync::broadcast::error::RecvError;

use super::responses::{BadQuery, EventStream};
use super::{Actor, Failure, Revocation};
use crate::services::Services;

/// Live events as Server-Sent Events. Each SSE event's name is the event's `type`, its id the
/// event's `id`, its data the event as JSON. With `Last-Event-ID` (or `?after=`), events still in the
/// backlog (4096) are replayed first; if some were lost a `resync` event says so. An approver
/// gets only approval events. The stream ends when the credential is revoked.
#[utoipa::path(
    get,
    path = "/v1/events",
    operation_id = "stream_events",
    tag = "events",
    params(EventsQuery, ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this event id; wins over `after`")),
    responses(EventStream, BadQuery)
)]
pub(crate) async fn stream(
    State(services): State<Arc<Services>>,
    Extension(actor): Extension<Actor>,
    Extension(Revocation(ended)): Extension<Revocation>,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, Failure> {
    let Query(query) = query.map_err(super::bad_query)?;
    let last_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .or(query.after);
    let subscription = services.events.subscribe(last_id);
    let replay = futures_util::stream::iter(subscription.replay);
    let live = futures_util::stream::unfold(subscription.live, |mut live| async move {
        let event = match live.recv().await {
            Ok(event) => Arc::unwrap_or_clone(event),
            // This client fell more than the backlog behind: tell it to re-read the agents.
            Err(RecvError::Lagged(_)) => Event {
                id: 0,
                time_ms: crate::now_ms(),
                kind: EventKind::Resync {
                    oldest_available: 0,
                },
            },
            Err(RecvError::Closed) => return None,
        };
        Some((event, live))
    });
    let events = if query.follow {
        replay.chain(live).boxed()
    } else {
        replay.boxed()
    };
    let approvals_only = actor.role == Some(Role::Approver);
    let events = events
        .filter(move |event| std::future::ready(!approvals_only || is_for_approvers(&event.kind)))
        .map(|event| Ok(to_sse(&event)))
        .take_until(ended.cancelled_owned());
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// What an approver sees of the event stream: requests and decisions, and lost-event markers.
fn is_for_approvers(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::ApprovalRequested { .. }
            | EventKind::ApprovalDecided { .. }
            | EventKind::Resync { .. }
    )
}

fn to_sse(event: &Event) -> SseEvent {
    let data = serde_json::to_string(event).expect("events serialise");
    let sse = SseEvent::default().event(event.kind.name()).data(data);
    // A lag marker has no id of its own: leaving the SSE id out keeps the client's resume point.
    if event.id == 0 {
        sse
    } else {
        sse.id(event.id.to_string())
    }
}
