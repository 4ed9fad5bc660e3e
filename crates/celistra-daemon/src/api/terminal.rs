//! Shared terminals over WebSocket (docs/terminal-protocol.md): single-use tickets issued over the
//! authenticated API, and the `/v1/agents/{agent}/terminal` connection that attaches a client to an
//! agent's terminal fan-out, with its roles, size policy and flow control.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use celistra_proto::{
    ApiError, ErrorCode, IoMode, Role, TERMINAL_PROTOCOL, TERMINAL_PROTOCOL_VERSION, TermSize,
    TerminalClientMessage, TerminalQuery, TerminalRole, TerminalServerMessage, TerminalTicket,
    TicketRequest,
};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use subtle::ConstantTimeEq;
use tokio_tungstenite::tungstenite;
use tokio_util::sync::CancellationToken;

use super::responses::{BadBody, Internal};
use super::{Actor, AppState, Failure, JsonBody, Lifetimes, Revocation, failure};
use crate::supervisor::AgentHandle;
use crate::supervisor::fanout::{self, Client, Delivery, InputOp, Next};

/// How long a ticket can be used.
const TICKET_LIFETIME: Duration = Duration::from_secs(30);
/// Unused tickets kept at most; the oldest is forgotten first.
const MAX_TICKETS: usize = 256;
/// A client whose socket takes nothing for this long is closed.
const STALL_LIMIT: Duration = Duration::from_secs(30);
/// How long a closing client's remaining input, or a close frame to it, may take.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);
/// Largest frame sent (replays are cut) and largest message accepted.
const MAX_FRAME: usize = 64 * 1024;
/// Largest terminal dimension accepted.
const MAX_CELLS: u16 = 1000;
/// Close codes (section 7 of the protocol).
const CLOSE_REMOVED: u16 = 1000;
const CLOSE_STOPPING: u16 = 1001;
const CLOSE_TOO_BIG: u16 = 1009;
const CLOSE_TRY_LATER: u16 = 1013;
const CLOSE_TOO_SLOW: u16 = 4008;
const CLOSE_REVOKED: u16 = 4003;

struct Ticket {
    secret: String,
    agent_id: String,
    role: TerminalRole,
    actor: String,
    /// Ends the session when the credential that asked for the ticket is revoked.
    ended: CancellationToken,
    expires: Instant,
}

/// Tickets issued and not used yet.
#[derive(Default)]
pub(crate) struct Tickets {
    issued: Mutex<Vec<Ticket>>,
}

impl Tickets {
    fn issue(
        &self,
        agent_id: &str,
        role: TerminalRole,
        actor: &str,
        ended: CancellationToken,
    ) -> Result<String, Failure> {
        self.issue_at(agent_id, role, actor, ended, Instant::now())
    }

    fn issue_at(
        &self,
        agent_id: &str,
        role: TerminalRole,
        actor: &str,
        ended: CancellationToken,
        now: Instant,
    ) -> Result<String, Failure> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| {
            failure(
                ErrorCode::Internal,
                format!("no randomness for a ticket: {e}"),
            )
        })?;
        let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let mut issued = self.issued.lock().unwrap_or_else(PoisonError::into_inner);
        issued.retain(|t| t.expires > now);
        if issued.len() >= MAX_TICKETS {
            issued.remove(0);
        }
        issued.push(Ticket {
            secret: secret.clone(),
            agent_id: agent_id.to_owned(),
            role,
            actor: actor.to_owned(),
            ended,
            expires: now + TICKET_LIFETIME,
        });
        Ok(secret)
    }

    /// Takes the ticket presented, if it is known, unexpired and for `agent_id`. A ticket is used
    /// up by any attempt, even one for the wrong agent. Every ticket is compared, in constant time.
    fn redeem(&self, presented: &str, agent_id: &str) -> Option<Ticket> {
        self.redeem_at(presented, agent_id, Instant::now())
    }

    fn redeem_at(&self, presented: &str, agent_id: &str, now: Instant) -> Option<Ticket> {
        let mut issued = self.issued.lock().unwrap_or_else(PoisonError::into_inner);
        let mut found = None;
        for (index, ticket) in issued.iter().enumerate() {
            if bool::from(ticket.secret.as_bytes().ct_eq(presented.as_bytes())) {
                found = Some(index);
            }
        }
        let ticket = issued.remove(found?);
        (ticket.expires > now && ticket.agent_id == agent_id).then_some(ticket)
    }
}

/// Issue a single-use ticket that opens the agent's terminal WebSocket within 30 seconds. A
/// writer ticket needs the operator role (the owner's, for an agent that gets secrets); a viewer
/// may ask only for viewer tickets (else 403).
#[utoipa::path(
    post,
    path = "/v1/agents/{agent}/terminal/tickets",
    operation_id = "issue_terminal_ticket",
    tag = "terminal",
    params(("agent" = String, Path, description = "Agent id or name")),
    request_body = TicketRequest,
    responses((status = 200, body = TerminalTicket), BadBody, (status = 404, description = "`not_found`: no such agent", body = ApiError), Internal)
)]
pub(crate) async fn ticket(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Extension(Revocation(ended)): Extension<Revocation>,
    Path(agent): Path<String>,
    JsonBody(request): JsonBody<TicketRequest>,
) -> Result<Json<TerminalTicket>, Failure> {
    // A request's actor is a credential, so it has a role; none would count as the least.
    let role = actor.role.unwrap_or(Role::Viewer);
    if request.role == TerminalRole::Writer && !role.satisfies(Role::Operator) {
        return Err(Failure(ApiError::role_required(
            Role::Operator,
            role,
            "a writer ticket (typing into an agent's terminal)",
        )));
    }
    let handle = state.supervisor.find(&agent)?;
    // Typing into an agent that has secrets could make it print or send them: an owner's.
    let has_secrets = !celistra_core::secret::references(&handle.spec()).is_empty();
    if request.role == TerminalRole::Writer && has_secrets && role != Role::Owner {
        return Err(Failure(ApiError::role_required(
            Role::Owner,
            role,
            "a writer ticket to an agent that gets secrets (typing into it could make it print or send them)",
        )));
    }
    let secret = state
        .tickets
        .issue(&handle.id, request.role, &actor.name, ended)?;
    Ok(Json(TerminalTicket {
        path: format!("/v1/agents/{}/terminal?ticket={secret}", handle.id),
        ticket: secret,
        agent_id: handle.id.clone(),
        role: request.role,
        expires_at_ms: crate::now_ms() + TICKET_LIFETIME.as_millis() as u64,
    }))
}

/// Attach to the agent's terminal: a WebSocket upgrade with `?ticket=` (see docs/terminal-protocol.md).
#[utoipa::path(
    get,
    path = "/v1/agents/{agent}/terminal",
    operation_id = "open_terminal",
    tag = "terminal",
    security(()),
    params(("agent" = String, Path, description = "Agent id or name"), TerminalQuery),
    responses((status = 101, description = "WebSocket, subprotocol celistra.terminal.v1"), (status = 400, description = "`invalid_request`: not a WebSocket upgrade, or without the subprotocol", body = ApiError), (status = 401, description = "`unauthorized`: an unknown, used or expired ticket, or one for another agent", body = ApiError), (status = 403, description = "`origin_not_allowed`: a browser request from another origin", body = ApiError), (status = 404, description = "`not_found`: no such agent", body = ApiError), (status = 429, description = "`too_many_clients`: the agent has as many terminal clients as it accepts", body = ApiError))
)]
pub(crate) async fn connect(
    State(state): State<AppState>,
    Path(agent): Path<String>,
    Query(query): Query<TerminalQuery>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    match admit(&state, &agent, &query, &headers) {
        Err(refusal) => refusal.into_response(),
        Ok((handle, ticket)) => match upgrade {
            Err(rejection) => failure(
                ErrorCode::InvalidRequest,
                format!("not a WebSocket upgrade: {}", rejection.body_text()),
            )
            .into_response(),
            Ok(upgrade) => {
                tracing::info!(agent = %handle.id, actor = %ticket.actor, role = ticket.role.as_str(), "terminal attached");
                let lifetimes = Arc::clone(&state.lifetimes);
                upgrade
                    .protocols([TERMINAL_PROTOCOL])
                    .max_message_size(MAX_FRAME)
                    .on_upgrade(move |socket| session(socket, handle, ticket, lifetimes))
            }
        },
    }
}

/// Checks origin, ticket, agent, subprotocol and room, in that order. The ticket presented is
/// spent whatever the answer (docs/terminal-protocol.md).
fn admit(
    state: &AppState,
    agent: &str,
    query: &TerminalQuery,
    headers: &HeaderMap,
) -> Result<(Arc<AgentHandle>, Ticket), Failure> {
    let handle = state.supervisor.find(agent).ok();
    let agent_id = handle.as_ref().map_or(agent, |h| h.id.as_str());
    // Redeemed before any check, so that every refusal spends the ticket presented.
    let ticket = state.tickets.redeem(&query.ticket, agent_id);
    crate::wire::check_origin(headers)?;
    let ticket = ticket.ok_or_else(|| {
        failure(
            ErrorCode::Unauthorized,
            "missing, unknown, expired or used ticket; get one with POST /v1/agents/{agent}/terminal/tickets",
        )
    })?;
    let handle =
        handle.ok_or_else(|| failure(ErrorCode::NotFound, format!("no agent `{agent}`")))?;
    let offered = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == TERMINAL_PROTOCOL);
    if !offered {
        return Err(failure(
            ErrorCode::InvalidRequest,
            format!("offer the WebSocket subprotocol {TERMINAL_PROTOCOL}"),
        ));
    }
    if handle.fanout.clients() >= fanout::MAX_CLIENTS {
        return Err(failure(
            ErrorCode::TooManyClients,
            format!(
                "agent {} has {} terminal clients, the most it accepts",
                handle.id,
                fanout::MAX_CLIENTS
            ),
        ));
    }
    Ok((handle, ticket))
}

type Sink = SplitSink<WebSocket, Message>;

/// Why a session ended, from the daemon's side.
enum Ending {
    /// The client closed (its reader has seen the end of its frames).
    ClientGone,
    /// A write to the client failed: it is closing or its connection broke. Its reader may still
    /// have input to deliver.
    SendFailed,
    Close(u16, &'static str),
}

async fn session(
    socket: WebSocket,
    handle: Arc<AgentHandle>,
    ticket: Ticket,
    lifetimes: Arc<Lifetimes>,
) {
    let (mut sink, stream) = socket.split();
    let Some((client, replay)) = handle.fanout.attach(ticket.role) else {
        let _ = close(&mut sink, CLOSE_TRY_LATER, "too many clients").await;
        return;
    };
    let hello = {
        let info = handle.info();
        TerminalServerMessage::Hello {
            protocol: TERMINAL_PROTOCOL_VERSION,
            agent_id: info.id.clone(),
            name: info.name.clone(),
            role: ticket.role,
            mode: info.mode,
            state: info.state,
            run: info.run,
            size: handle.fanout.size(),
            title: handle.fanout.title(),
        }
    };
    let mut reader = tokio::spawn(read_client(
        stream,
        Arc::clone(&handle),
        Arc::clone(&client),
    ));
    let ending: Result<(), Ending> = async {
        feed_control(&mut sink, &hello).await?;
        feed_replay(&mut sink, replay).await?;
        flush(&mut sink).await?;
        let mut resync_due = None;
        loop {
            // A batch is written with one flush: one system call for many frames.
            match handle.fanout.next_for(&client) {
                Next::Items(items) => {
                    for item in items {
                        match item {
                            Delivery::Output(bytes) => {
                                feed(&mut sink, Message::Binary(bytes)).await?
                            }
                            Delivery::Control(message) => feed_control(&mut sink, &message).await?,
                            Delivery::Resync { skipped, replay } => {
                                feed_resync(&mut sink, skipped, replay).await?
                            }
                            Delivery::Closed => {
                                return Err(Ending::Close(CLOSE_REMOVED, "agent removed"));
                            }
                        }
                    }
                    flush(&mut sink).await?;
                    continue;
                }
                Next::Resync { skipped, replay } => {
                    feed_resync(&mut sink, skipped, replay).await?;
                    flush(&mut sink).await?;
                    continue;
                }
                Next::ResyncAt(due) => resync_due = Some(due),
                Next::Nothing => {}
            }
            let resync_timer = async {
                match resync_due.take() {
                    Some(due) => tokio::time::sleep_until(due.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = client.ready.notified() => {}
                () = resync_timer => {}
                read = &mut reader => return Err(match read {
                    Ok(ReaderEnd::TooBig) => Ending::Close(CLOSE_TOO_BIG, "message over 64 KiB"),
                    _ => Ending::ClientGone,
                }),
                () = ticket.ended.cancelled() => return Err(if lifetimes.daemon_stopping() {
                    Ending::Close(CLOSE_STOPPING, "daemon stopping")
                } else {
                    Ending::Close(CLOSE_REVOKED, "credential revoked")
                }),
            }
        }
    }
    .await;
    handle.fanout.detach(&client);
    match ending {
        // Input a client sent just before closing is still delivered.
        Err(Ending::SendFailed) => {
            let _ = tokio::time::timeout(DRAIN_LIMIT, &mut reader).await;
        }
        Err(Ending::Close(code, reason)) => {
            // A stalled client cannot take a close frame either; do not wait for it long.
            let _ = tokio::time::timeout(DRAIN_LIMIT, close(&mut sink, code, reason)).await;
        }
        // Answers the client's close frame, so it knows all it sent was taken.
        Ok(()) | Err(Ending::ClientGone) => {
            let _ = tokio::time::timeout(DRAIN_LIMIT, sink.close()).await;
        }
    }
    reader.abort();
    tracing::info!(agent = %handle.id, actor = %ticket.actor, "terminal detached");
}

/// Gives up on a client that takes nothing for `STALL_LIMIT`.
async fn within_stall_limit(
    write: impl Future<Output = Result<(), axum::Error>>,
) -> Result<(), Ending> {
    match tokio::time::timeout(STALL_LIMIT, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(Ending::SendFailed),
        Err(_) => Err(Ending::Close(CLOSE_TOO_SLOW, "client too slow")),
    }
}

/// Queues one frame in the connection's write buffer (written when it fills or at `flush`).
async fn feed(sink: &mut Sink, message: Message) -> Result<(), Ending> {
    within_stall_limit(sink.feed(message)).await
}

async fn flush(sink: &mut Sink) -> Result<(), Ending> {
    within_stall_limit(sink.flush()).await
}

async fn feed_control(sink: &mut Sink, message: &TerminalServerMessage) -> Result<(), Ending> {
    let text = serde_json::to_string(message).expect("control messages serialise");
    feed(sink, Message::Text(text.into())).await
}

/// The replay in frames of at most `MAX_FRAME`, then `replayed`.
async fn feed_replay(sink: &mut Sink, replay: Bytes) -> Result<(), Ending> {
    let bytes = replay.len() as u64;
    let mut rest = replay;
    while !rest.is_empty() {
        let frame = rest.split_to(rest.len().min(MAX_FRAME));
        feed(sink, Message::Binary(frame)).await?;
    }
    feed_control(sink, &TerminalServerMessage::Replayed { bytes }).await
}

async fn feed_resync(sink: &mut Sink, skipped: u64, replay: Bytes) -> Result<(), Ending> {
    let resync = TerminalServerMessage::Resync {
        skipped_bytes: skipped,
    };
    feed_control(sink, &resync).await?;
    feed_replay(sink, replay).await
}

async fn close(sink: &mut Sink, code: u16, reason: &'static str) -> Result<(), axum::Error> {
    sink.send(Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    })))
    .await
}

/// Why a client's frames ended.
enum ReaderEnd {
    /// It closed, or its connection broke.
    Gone,
    /// It sent a message over `MAX_FRAME`: the session closes with 1009.
    TooBig,
}

/// Reads a client's frames until it closes: input for the program, resizes, or refusals.
async fn read_client(
    mut stream: SplitStream<WebSocket>,
    handle: Arc<AgentHandle>,
    client: Arc<Client>,
) -> ReaderEnd {
    while let Some(read) = stream.next().await {
        let message = match read {
            Ok(message) => message,
            Err(e) => {
                let too_big = e
                    .into_inner()
                    .downcast_ref::<tungstenite::Error>()
                    .is_some_and(|e| matches!(e, tungstenite::Error::Capacity(_)));
                return if too_big {
                    ReaderEnd::TooBig
                } else {
                    ReaderEnd::Gone
                };
            }
        };
        match message {
            Message::Binary(bytes) => input(&handle, &client, bytes).await,
            Message::Text(text) => match serde_json::from_str::<TerminalClientMessage>(&text) {
                Ok(TerminalClientMessage::Resize { cols, rows }) => {
                    resize(&handle, &client, TermSize { cols, rows }).await;
                }
                Err(e) => refuse(
                    &client,
                    "bad_message",
                    format!(
                        "not a control message this daemon knows ({e}); see docs/terminal-protocol.md"
                    ),
                ),
            },
            Message::Close(_) => return ReaderEnd::Gone,
            Message::Ping(_) | Message::Pong(_) => {}
        }
    }
    ReaderEnd::Gone
}

fn refuse(client: &Client, code: &str, message: String) {
    client.tell(TerminalServerMessage::Error {
        code: code.to_owned(),
        message,
    });
}

async fn input(handle: &AgentHandle, client: &Client, bytes: Bytes) {
    if client.role == TerminalRole::Viewer {
        return refuse(
            client,
            "read_only",
            "this client is attached read-only (viewer); input is not accepted".to_owned(),
        );
    }
    let delivered = match handle.fanout.input() {
        // Waits while the program is not reading: this client's frames are then read more slowly.
        Some(input) => input.send(Box::new(InputOp::Bytes(bytes))).await.is_ok(),
        None => false,
    };
    if !delivered {
        refuse(
            client,
            "not_running",
            format!(
                "agent {} is not running; the input was discarded",
                handle.id
            ),
        );
    }
}

async fn resize(handle: &AgentHandle, client: &Client, size: TermSize) {
    let valid = |n: u16| (1..=MAX_CELLS).contains(&n);
    if !valid(size.cols) || !valid(size.rows) {
        return refuse(
            client,
            "bad_size",
            format!(
                "cols and rows must be 1 to {MAX_CELLS}, not {}x{}",
                size.cols, size.rows
            ),
        );
    }
    if client.role == TerminalRole::Viewer {
        // A viewer does not size the terminal; it is told the size to fit its view to.
        let size = handle.fanout.size();
        return client.tell(TerminalServerMessage::Size {
            cols: size.cols,
            rows: size.rows,
        });
    }
    if handle.info().mode == IoMode::Pipes {
        return refuse(
            client,
            "not_a_terminal",
            format!(
                "agent {} runs on pipes (--no-pty) and has no terminal size",
                handle.id
            ),
        );
    }
    if let Some(input) = handle.fanout.resize(size) {
        let _ = input.send(Box::new(InputOp::Resize(size))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issue(tickets: &Tickets, now: Instant) -> String {
        tickets
            .issue_at(
                "ag-1",
                TerminalRole::Writer,
                "owner",
                CancellationToken::new(),
                now,
            )
            .unwrap_or_else(|_| panic!("issued"))
    }

    #[test]
    fn a_ticket_expires_and_is_good_once() {
        let tickets = Tickets::default();
        let start = Instant::now();
        let ticket = issue(&tickets, start);
        assert_eq!(ticket.len(), 64);
        let later = start + TICKET_LIFETIME - Duration::from_millis(1);
        let redeemed = tickets.redeem_at(&ticket, "ag-1", later).expect("valid");
        assert_eq!(
            (redeemed.role, redeemed.actor.as_str()),
            (TerminalRole::Writer, "owner")
        );
        assert!(tickets.redeem_at(&ticket, "ag-1", later).is_none(), "used");
        let ticket = issue(&tickets, start);
        assert!(
            tickets
                .redeem_at(&ticket, "ag-1", start + TICKET_LIFETIME)
                .is_none(),
            "expired"
        );
        assert!(tickets.redeem_at("", "ag-1", start).is_none());
    }

    #[test]
    fn the_oldest_unused_ticket_is_forgotten_first() {
        let tickets = Tickets::default();
        let now = Instant::now();
        let first = issue(&tickets, now);
        let second = issue(&tickets, now);
        for _ in 0..MAX_TICKETS - 1 {
            issue(&tickets, now);
        }
        assert!(tickets.redeem_at(&first, "ag-1", now).is_none());
        assert!(tickets.redeem_at(&second, "ag-1", now).is_some());
    }
}
