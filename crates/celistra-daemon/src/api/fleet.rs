//! Fleet routes: the machines (`/v1/machines`, revoke), pairing codes (on a hub), joining and
//! leaving a hub (on a node), the hub's cached agent lists and merged event stream, and the
//! forwarding of every allow-listed route to a machine as `/v1/machines/{machine}/…`.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use celistra_proto::{
    ApiError, ErrorCode, EventsQuery, FLEET_ROLE_HEADER, FLEET_USER_HEADER, FleetEvent,
    FleetStatus, JoinRequest, Machine, MachineAgents, Membership, PairingCode, WitnessState,
    WitnessStatus,
};
use futures_util::{Stream, StreamExt};
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use super::responses::{BadBody, Internal};
use super::{Actor, AppState, Failure, JsonBody, Revocation, failure};
use crate::fleet::{Hub, JoinError};

/// Request headers a hub never passes to a node: the hub user's own credentials (the node does not
/// know them; the hub says who the user is instead), and the headers of one hop.
const NOT_FORWARDED: &[&str] = &[
    "authorization",
    "cookie",
    "x-csrf-token",
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "upgrade",
    FLEET_USER_HEADER,
    FLEET_ROLE_HEADER,
];

fn this_machine(state: &AppState) -> Machine {
    let (agents, agents_running) = state.supervisor.counts();
    Machine {
        name: state.fleet.machine_name.clone(),
        this: true,
        online: true,
        last_seen_ms: Some(crate::now_ms()),
        address: Some(state.base_url.to_string()),
        version: Some(env!("CARGO_PKG_VERSION").into()),
        agents,
        agents_running,
        joined_at_ms: None,
        audit: WitnessState {
            status: WitnessStatus::Ok,
            ..WitnessState::default()
        },
    }
}

fn hub_of(state: &AppState) -> Result<&std::sync::Arc<Hub>, Failure> {
    state.fleet.hub.as_ref().ok_or_else(|| {
        failure(
            ErrorCode::NotFound,
            "this daemon is not a hub; start it with --hub to pair machines with it",
        )
    })
}

/// The machines of the fleet: this one first, then (on a hub) every machine that joined, with
/// whether its link is up, when it was last seen, its address, version, agent counts and what
/// witnessing its audit log found.
#[utoipa::path(get, path = "/v1/machines", tag = "fleet", operation_id = "list_machines",
    responses((status = 200, body = Vec<Machine>)))]
pub(crate) async fn machines(State(state): State<AppState>) -> Json<Vec<Machine>> {
    let this = this_machine(&state);
    Json(match &state.fleet.hub {
        Some(hub) => hub.machines(this),
        None => vec![this],
    })
}

/// Cut a machine off the fleet for good: its link is closed at once and its key refused from
/// then on. It keeps running its agents; `celistrad ctl leave` on it forgets the hub.
#[utoipa::path(delete, path = "/v1/machines/{machine}", tag = "fleet", operation_id = "revoke_machine",
    params(("machine" = String, Path, description = "the machine's name")),
    responses((status = 200, body = Machine), (status = 404, body = ApiError)))]
pub(crate) async fn revoke(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(machine): Path<String>,
) -> Result<Json<Machine>, Failure> {
    let hub = hub_of(&state)?;
    let Some(found) = hub
        .machines(this_machine(&state))
        .into_iter()
        .find(|m| m.name == machine && !m.this)
    else {
        return Err(failure(
            ErrorCode::NotFound,
            format!(
                "no machine named `{machine}` joined this hub; `celistrad ctl machines` lists them"
            ),
        ));
    };
    hub.revoke(&machine, &actor);
    Ok(Json(Machine {
        online: false,
        ..found
    }))
}

/// This daemon's place in a fleet: its machine name, whether it is a hub, the hub it joined and
/// whether the link is up, and the most a hub may do here.
#[utoipa::path(get, path = "/v1/fleet", tag = "fleet", operation_id = "fleet_status",
    responses((status = 200, body = FleetStatus)))]
pub(crate) async fn status(State(state): State<AppState>) -> Json<FleetStatus> {
    Json(fleet_status(&state))
}

fn fleet_status(state: &AppState) -> FleetStatus {
    FleetStatus {
        machine_name: state.fleet.machine_name.clone(),
        hub: state.fleet.hub.is_some(),
        member_of: state.fleet.member.membership(),
        ceiling: state.fleet.ceiling,
    }
}

/// Mint a single-use pairing code (160 random bits, valid 15 minutes, kept only as its hash) and
/// the one line that joins a new machine with it.
#[utoipa::path(post, path = "/v1/fleet/pairing-codes", tag = "fleet", operation_id = "create_pairing_code",
    responses((status = 200, body = PairingCode), (status = 404, description = "`not_found`: this daemon is not a hub", body = ApiError), Internal))]
pub(crate) async fn pair(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
) -> Result<Response, Failure> {
    let hub = hub_of(&state)?;
    let (code, expires_at_ms) = hub
        .mint_code()
        .map_err(|e| failure(ErrorCode::Internal, e.to_string()))?;
    state.supervisor.services.audit.record(
        &actor,
        "pairing_code_created",
        "",
        json!({ "expires_at_ms": expires_at_ms }),
    );
    let fingerprint = hub.identity.fingerprint.clone();
    let command = format!(
        "celistrad ctl join {} {code} --fingerprint {fingerprint}",
        hub.address
    );
    let mut response = Json(PairingCode {
        code,
        expires_at_ms,
        hub: hub.address.clone(),
        fingerprint,
        command,
    })
    .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Join a hub: this daemon makes its link key (which never leaves this machine), presents the
/// code to the hub over a connection pinned to the hub's certificate, and keeps a link to it.
#[utoipa::path(post, path = "/v1/fleet/join", tag = "fleet", operation_id = "join_hub",
    request_body = JoinRequest,
    responses((status = 200, body = Membership), BadBody,
        (status = 403, description = "`pairing_refused`: a wrong fingerprint, or the hub refused the code (wrong, used, expired) or the name (taken)", body = ApiError),
        (status = 409, description = "`conflict`: this machine already belongs to a hub, or its name is taken in the hub's fleet", body = ApiError),
        (status = 429, description = "`too_many_attempts`: the hub refused after too many failed codes", body = ApiError),
        (status = 503, description = "`machine_offline`: the hub cannot be reached", body = ApiError),
        Internal))]
pub(crate) async fn join(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    JsonBody(request): JsonBody<JoinRequest>,
) -> Result<Json<Membership>, Failure> {
    let hub = request.hub.clone();
    let joined = state.fleet.member.join(request).await.map_err(|e| {
        let code = match &e {
            JoinError::Usage(_) => ErrorCode::InvalidRequest,
            JoinError::AlreadyMember(_) => ErrorCode::Conflict,
            JoinError::WrongFingerprint { .. } => ErrorCode::PairingRefused,
            JoinError::Refused { code, .. } => *code,
            JoinError::Unreachable { .. } => ErrorCode::MachineOffline,
            JoinError::Local(_) => ErrorCode::Internal,
        };
        failure(code, e.to_string())
    })?;
    state.supervisor.services.audit.record(
        &actor,
        "fleet_joined",
        &joined.hub_name,
        json!({ "hub": hub, "fingerprint": joined.fingerprint }),
    );
    Ok(Json(joined))
}

/// Leave the hub: the link ends, the membership and the link key are forgotten. Agents keep
/// running.
#[utoipa::path(delete, path = "/v1/fleet/membership", tag = "fleet", operation_id = "leave_hub",
    responses((status = 200, body = FleetStatus), (status = 404, description = "`not_found`: this machine belongs to no hub", body = ApiError), Internal))]
pub(crate) async fn leave(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
) -> Result<Json<FleetStatus>, Failure> {
    let left = state
        .fleet
        .member
        .leave()
        .map_err(|e| failure(ErrorCode::Internal, e.to_string()))?;
    let Some(hub_name) = left else {
        return Err(failure(
            ErrorCode::NotFound,
            "this machine belongs to no hub",
        ));
    };
    state
        .supervisor
        .services
        .audit
        .record(&actor, "fleet_left", &hub_name, json!({}));
    Ok(Json(fleet_status(&state)))
}

/// Every machine's agents, from the hub's cache (kept live by each machine's event stream; never
/// by asking every machine per request). An offline machine is listed with the agents it had.
#[utoipa::path(get, path = "/v1/fleet/agents", tag = "fleet", operation_id = "list_fleet_agents",
    responses((status = 200, body = Vec<MachineAgents>)))]
pub(crate) async fn agents(State(state): State<AppState>) -> Json<Vec<MachineAgents>> {
    let mut all = vec![MachineAgents {
        machine: state.fleet.machine_name.clone(),
        online: true,
        agents: state.supervisor.list(),
    }];
    if let Some(hub) = &state.fleet.hub {
        all.extend(hub.all_cached_agents());
    }
    Json(all)
}

/// The merged event stream of the fleet: every machine's events, each tagged with its machine,
/// numbered by the hub (resume with `Last-Event-ID`). A lone daemon's own events only.
#[utoipa::path(get, path = "/v1/fleet/events", tag = "fleet", operation_id = "stream_fleet_events",
    params(EventsQuery, ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this hub event id")),
    responses((status = 200, content_type = "text/event-stream", description = "Server-Sent Events, each a FleetEvent"), super::responses::BadQuery, (status = 404, body = ApiError)))]
pub(crate) async fn events(
    State(state): State<AppState>,
    Extension(Revocation(ended)): Extension<Revocation>,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, Failure> {
    let Query(query) = query.map_err(super::bad_query)?;
    let hub = hub_of(&state)?;
    let last_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .or(query.after);
    let subscription = hub.subscribe(last_id);
    let replay = futures_util::stream::iter(subscription.replay);
    let live = futures_util::stream::unfold(subscription.live, |mut live| async move {
        loop {
            match live.recv().await {
                Ok(event) => return Some((event, live)),
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return None,
            }
        }
    });
    let events = if query.follow {
        replay.chain(live).boxed()
    } else {
        replay.boxed()
    };
    let events = events
        .map(|event: FleetEvent| {
            let data = serde_json::to_string(&event).expect("events serialise");
            Ok(SseEvent::default()
                .event(event.event.kind.name())
                .id(event.event.id.to_string())
                .data(data))
        })
        .take_until(ended.cancelled_owned());
    Ok(Sse::new(events).keep_alive(KeepAlive::default().interval(Duration::from_secs(15))))
}

/// A route of the allow-list, addressed to a machine: to this daemon's own router when it names
/// this machine, else over the machine's link, with the caller's identity (name and role) in
/// place of their credential. A list of agents comes from the hub's cache.
pub(crate) async fn forward(State(state): State<AppState>, request: Request) -> Response {
    let (machine, rest) = {
        let path = request.uri().path();
        let tail = path.strip_prefix("/v1/machines/").unwrap_or_default();
        let (machine, rest) = tail.split_once('/').unwrap_or((tail, ""));
        (machine.to_owned(), format!("/v1/{rest}"))
    };
    let path_and_query = match request.uri().query() {
        Some(query) => format!("{rest}?{query}"),
        None => rest.clone(),
    };
    if machine == state.fleet.machine_name {
        let Some(local) = state.fleet.local.get().cloned() else {
            return failure(ErrorCode::Internal, "the API is not ready").into_response();
        };
        let Ok(uri) = path_and_query.parse() else {
            return failure(ErrorCode::InvalidRequest, "bad path").into_response();
        };
        // A fresh request: the outer route's path parameters and credentials' extensions stay
        // behind (the router authenticates it again); a WebSocket's upgrade goes along.
        let (mut parts, body) = request.into_parts();
        let mut local_request = Request::new(body);
        *local_request.method_mut() = parts.method;
        *local_request.uri_mut() = uri;
        *local_request.version_mut() = parts.version;
        *local_request.headers_mut() = parts.headers;
        if let Some(upgrade) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() {
            local_request.extensions_mut().insert(upgrade);
        }
        return tower::ServiceExt::oneshot(local, local_request)
            .await
            .unwrap_or_else(|never| match never {});
    }
    let Some(hub) = &state.fleet.hub else {
        return failure(
            ErrorCode::NotFound,
            format!(
                "no machine named `{machine}`: this daemon is `{}` and not a hub",
                state.fleet.machine_name
            ),
        )
        .into_response();
    };
    if request.method() == axum::http::Method::GET
        && rest == "/v1/agents"
        && request.uri().query().is_none()
    {
        return match hub.cached_agents(&machine) {
            Ok(agents) => Json(agents).into_response(),
            Err(e) => failure(e.code(), e.to_string()).into_response(),
        };
    }
    if request.headers().contains_key(header::UPGRADE) {
        // A terminal: its ticket (from the node, through the hub) is the credential.
        return hub.terminal(&machine, request, &path_and_query).await;
    }
    let actor = request.extensions().get::<Actor>().cloned();
    let (parts, body) = request.into_parts();
    let mut forwarded = Request::builder().method(parts.method).uri(path_and_query);
    for (name, value) in &parts.headers {
        if !NOT_FORWARDED.contains(&name.as_str()) {
            forwarded = forwarded.header(name, value);
        }
    }
    if let Some(actor) = actor {
        forwarded = forwarded
            .header(FLEET_USER_HEADER, actor.name.as_str())
            .header(
                FLEET_ROLE_HEADER,
                actor.role.map_or("viewer", |r| r.as_str()),
            );
    }
    let Ok(forwarded) = forwarded.body(body) else {
        return failure(ErrorCode::InvalidRequest, "the request cannot be forwarded")
            .into_response();
    };
    match hub.send(&machine, forwarded).await {
        Ok(answer) => answer.map(Body::new),
        Err(e) => failure(e.code(), e.to_string()).into_response(),
    }
}
