//! One typed method per route of the API, named after its OpenAPI operation id: each route's path
//! is written here once, path segments are percent-encoded, and query strings are serialised from
//! the query types of `celistra-proto`.

use std::borrow::Cow;
use std::collections::VecDeque;

use celistra_proto::{
    AgentInfo, AgentSpec, AgentUsage, ApplyReport, ApplyRequest, Approval, ApprovalsQuery,
    AskQuery, AskRequest, AuditBundle, AuditCheckpoint, AuditPage, AuditProof, AuditQuery,
    AuditTailQuery, AuditVerification, ChannelStatus, Cleared, DaemonLeaving, DaemonStopRequest,
    DaemonUpgradeRequest, DecisionRequest, EventsQuery, ExplainRequest, ExportQuery, FleetStatus,
    GroupInfo, Health, HistoryQuery, HookReport, JoinRequest, KillRequest, LinkDecision,
    LoginCodeQuery, LoginLink, LoginRequest, LogsQuery, Machine, MachineAgents, Membership,
    NotificationsStatus, PairingCode, ProofQuery, PushSubscriptionInfo, PushSubscriptionRequest,
    RemoveQuery, RenameRequest, Role, RunRecord, SandboxExplanation, SandboxStatus, SandboxSwitch,
    ScaleRequest, SearchQuery, SecretInfo, SecretRequest, SessionInfo, SessionState,
    TerminalTicket, TicketRequest, TokenCreated, TokenInfo, TokenRequest, UpdateRequest,
    VapidKeyInfo, Verdict,
};
use hyper::Method;
use hyper::body::Incoming;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Serialize;

use crate::{Client, ClientError, SseFrame, SseParser, next_chunk};

/// What a path segment keeps as is: RFC 3986's unreserved characters.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `text` (an agent id or name, a request id, …) as one path segment.
fn segment(text: &str) -> String {
    utf8_percent_encode(text, SEGMENT).to_string()
}

/// `path` with `query` as its query string (none when every field is absent).
fn with_query(path: &str, query: &impl Serialize) -> String {
    let query = serde_urlencoded::to_string(query).expect("query types serialise");
    if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    }
}

/// The routes a hub forwards to its machines, by path prefix: the daemon's route table marks them
/// `via_hub` (`x-celistra-via-hub` in the OpenAPI document; a test of `celistrad` checks that the
/// two agree). An allow-list, like the daemon's: a route added later stays the hub's own until
/// both say otherwise. Tokens, secrets, sessions, notifications, the fleet's routes, the OpenAPI document,
/// decision links and an agent's own `/v1/ask` are not here.
const VIA_HUB: &[&str] = &[
    "/v1/health",
    "/v1/agents",
    "/v1/groups",
    "/v1/apply",
    "/v1/usage",
    "/v1/logs",
    "/v1/history",
    "/v1/events",
    "/v1/sandbox",
    "/v1/audit",
    "/v1/approvals",
];

/// Whether a hub forwards `path` (with or without a query string) to a machine as
/// `/v1/machines/{machine}/…`.
pub fn via_hub(path: &str) -> bool {
    let path = path.split_once('?').map_or(path, |(path, _)| path);
    VIA_HUB.iter().any(|prefix| {
        path.strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

/// `path` addressed to `machine` through a hub: `/v1/x…` becomes `/v1/machines/{machine}/x…` for
/// a route the hub forwards; any other path is the hub's own and stays as it is.
pub(crate) fn machine_path<'a>(machine: &str, path: &'a str) -> Cow<'a, str> {
    match path.strip_prefix("/v1") {
        Some(rest) if via_hub(path) => {
            Cow::Owned(format!("/v1/machines/{}{rest}", segment(machine)))
        }
        _ => Cow::Borrowed(path),
    }
}

fn agent_path(agent: &str) -> String {
    format!("/v1/agents/{}", segment(agent))
}

fn group_path(group: &str) -> String {
    format!("/v1/groups/{}", segment(group))
}

/// A Server-Sent Events response (events, the audit tail), read a frame at a time.
pub struct SseStream {
    body: Incoming,
    parser: SseParser,
    ready: VecDeque<SseFrame>,
}

impl SseStream {
    fn new(body: Incoming) -> SseStream {
        SseStream {
            body,
            parser: SseParser::default(),
            ready: VecDeque::new(),
        }
    }

    /// The next event; `None` once the daemon ends the stream.
    pub async fn next_frame(&mut self) -> Result<Option<SseFrame>, ClientError> {
        loop {
            if let Some(frame) = self.ready.pop_front() {
                return Ok(Some(frame));
            }
            match next_chunk(&mut self.body).await? {
                Some(chunk) => self.ready.extend(self.parser.feed(&chunk)),
                None => return Ok(None),
            }
        }
    }
}

impl Client {
    /// `GET /v1/health`.
    pub async fn get_health(&self) -> Result<Health, ClientError> {
        self.get("/v1/health").await
    }

    /// `GET /v1/openapi.json`: the OpenAPI document, as JSON.
    pub async fn get_openapi(&self) -> Result<serde_json::Value, ClientError> {
        self.get("/v1/openapi.json").await
    }

    // Agents.

    pub async fn list_agents(&self) -> Result<Vec<AgentInfo>, ClientError> {
        self.get("/v1/agents").await
    }

    pub async fn spawn_agent(&self, spec: &AgentSpec) -> Result<AgentInfo, ClientError> {
        self.post("/v1/agents", spec).await
    }

    pub async fn get_agent(&self, agent: &str) -> Result<AgentInfo, ClientError> {
        self.get(&agent_path(agent)).await
    }

    pub async fn update_agent(
        &self,
        agent: &str,
        update: &UpdateRequest,
    ) -> Result<AgentInfo, ClientError> {
        self.call(Method::PATCH, &agent_path(agent), Some(update))
            .await
    }

    /// Removes an agent; `query` says what becomes of a `--worktree` agent's worktree.
    pub async fn remove_agent(
        &self,
        agent: &str,
        query: &RemoveQuery,
    ) -> Result<AgentInfo, ClientError> {
        self.call(
            Method::DELETE,
            &with_query(&agent_path(agent), query),
            None::<&()>,
        )
        .await
    }

    /// The agent's full spec, environment values included.
    pub async fn get_agent_spec(&self, agent: &str) -> Result<AgentSpec, ClientError> {
        self.get(&format!("{}/spec", agent_path(agent))).await
    }

    pub async fn stop_agent(&self, agent: &str) -> Result<AgentInfo, ClientError> {
        self.call(
            Method::POST,
            &format!("{}/stop", agent_path(agent)),
            None::<&()>,
        )
        .await
    }

    pub async fn start_agent(&self, agent: &str) -> Result<AgentInfo, ClientError> {
        self.call(
            Method::POST,
            &format!("{}/start", agent_path(agent)),
            None::<&()>,
        )
        .await
    }

    pub async fn restart_agent(&self, agent: &str) -> Result<AgentInfo, ClientError> {
        self.call(
            Method::POST,
            &format!("{}/restart", agent_path(agent)),
            None::<&()>,
        )
        .await
    }

    pub async fn scale_group(
        &self,
        group: &str,
        request: &ScaleRequest,
    ) -> Result<GroupInfo, ClientError> {
        self.call(
            Method::POST,
            &format!("{}/scale", group_path(group)),
            Some(request),
        )
        .await
    }

    pub async fn rolling_restart_group(&self, group: &str) -> Result<GroupInfo, ClientError> {
        self.call(
            Method::POST,
            &format!("{}/rolling-restart", group_path(group)),
            None::<&()>,
        )
        .await
    }

    pub async fn kill_agent(
        &self,
        agent: &str,
        request: &KillRequest,
    ) -> Result<AgentInfo, ClientError> {
        self.post(&format!("{}/kill", agent_path(agent)), request)
            .await
    }

    pub async fn rename_agent(
        &self,
        agent: &str,
        request: &RenameRequest,
    ) -> Result<AgentInfo, ClientError> {
        self.post(&format!("{}/rename", agent_path(agent)), request)
            .await
    }

    pub async fn apply(&self, request: &ApplyRequest) -> Result<ApplyReport, ClientError> {
        self.post("/v1/apply", request).await
    }

    pub async fn list_usage(&self) -> Result<Vec<AgentUsage>, ClientError> {
        self.get("/v1/usage").await
    }

    // History.

    /// An agent's output, streamed in the format the query asks for.
    pub async fn get_logs(&self, agent: &str, query: &LogsQuery) -> Result<Incoming, ClientError> {
        self.open_stream(&with_query(&format!("{}/logs", agent_path(agent)), query))
            .await
    }

    pub async fn clear_logs(&self, agent: &str) -> Result<Cleared, ClientError> {
        self.call(
            Method::DELETE,
            &format!("{}/logs", agent_path(agent)),
            None::<&()>,
        )
        .await
    }

    /// Matching lines across agents, streamed in the format the query asks for.
    pub async fn search_logs(&self, query: &SearchQuery) -> Result<Incoming, ClientError> {
        self.open_stream(&with_query("/v1/logs", query)).await
    }

    pub async fn list_runs(&self, query: &HistoryQuery) -> Result<Vec<RunRecord>, ClientError> {
        self.get(&with_query("/v1/history", query)).await
    }

    // Events.

    pub async fn stream_events(&self, query: &EventsQuery) -> Result<SseStream, ClientError> {
        Ok(SseStream::new(
            self.open_stream(&with_query("/v1/events", query)).await?,
        ))
    }

    // Terminals.

    /// A single-use ticket that opens the agent's terminal (see [`Client::attach`]).
    pub async fn issue_terminal_ticket(
        &self,
        agent: &str,
        request: &TicketRequest,
    ) -> Result<TerminalTicket, ClientError> {
        self.post(&format!("{}/terminal/tickets", agent_path(agent)), request)
            .await
    }

    // Sandbox.

    pub async fn get_sandbox(&self) -> Result<SandboxStatus, ClientError> {
        self.get("/v1/sandbox").await
    }

    /// Asks the daemon to stop (its agents too, unless `keep_agents`).
    pub async fn stop_daemon(
        &self,
        request: &DaemonStopRequest,
    ) -> Result<DaemonLeaving, ClientError> {
        self.call(Method::POST, "/v1/daemon/stop", Some(request))
            .await
    }

    /// Asks the daemon to re-execute its binary, its agents left running.
    pub async fn upgrade_daemon(&self) -> Result<DaemonLeaving, ClientError> {
        self.call(
            Method::POST,
            "/v1/daemon/upgrade",
            Some(&DaemonUpgradeRequest {}),
        )
        .await
    }

    pub async fn switch_sandbox(
        &self,
        request: &SandboxSwitch,
    ) -> Result<SandboxStatus, ClientError> {
        self.call(Method::PUT, "/v1/sandbox", Some(request)).await
    }

    pub async fn explain_sandbox(
        &self,
        request: &ExplainRequest,
    ) -> Result<SandboxExplanation, ClientError> {
        self.post("/v1/sandbox/explain", request).await
    }

    // Audit.

    pub async fn list_audit(&self, query: &AuditQuery) -> Result<AuditPage, ClientError> {
        self.get(&with_query("/v1/audit", query)).await
    }

    /// New audit entries as they are appended (`audit` events), after a replay.
    pub async fn tail_audit(&self, query: &AuditTailQuery) -> Result<SseStream, ClientError> {
        Ok(SseStream::new(
            self.open_stream(&with_query("/v1/audit/tail", query))
                .await?,
        ))
    }

    pub async fn sign_audit_checkpoint(&self) -> Result<AuditCheckpoint, ClientError> {
        self.call(Method::POST, "/v1/audit/checkpoint", None::<&()>)
            .await
    }

    pub async fn get_audit_proof(&self, query: &ProofQuery) -> Result<AuditProof, ClientError> {
        self.get(&with_query("/v1/audit/proof", query)).await
    }

    pub async fn verify_audit(&self) -> Result<AuditVerification, ClientError> {
        self.call(Method::POST, "/v1/audit/verify", None::<&()>)
            .await
    }

    /// Every entry, streamed as JSON lines or CSV.
    pub async fn export_audit(&self, query: &ExportQuery) -> Result<Incoming, ClientError> {
        self.open_stream(&with_query("/v1/audit/export", query))
            .await
    }

    pub async fn get_audit_bundle(&self) -> Result<AuditBundle, ClientError> {
        self.get("/v1/audit/bundle").await
    }

    // Approvals.

    pub async fn list_approvals(
        &self,
        query: &ApprovalsQuery,
    ) -> Result<Vec<Approval>, ClientError> {
        self.get(&with_query("/v1/approvals", query)).await
    }

    pub async fn get_approval(&self, id: &str) -> Result<Approval, ClientError> {
        self.get(&format!("/v1/approvals/{}", segment(id))).await
    }

    pub async fn decide_approval(
        &self,
        id: &str,
        verdict: Verdict,
        request: &DecisionRequest,
    ) -> Result<Approval, ClientError> {
        let path = format!("/v1/approvals/{}/{}", segment(id), verdict.as_str());
        self.post(&path, request).await
    }

    /// Decides through a decision link's token (`/d/{token}`), which is its own credential.
    pub async fn decide_by_link(
        &self,
        token: &str,
        decision: &LinkDecision,
    ) -> Result<Approval, ClientError> {
        self.post(&format!("/d/{}", segment(token)), decision).await
    }

    /// Asks for approval as the agent whose own socket this client talks to.
    pub async fn ask(
        &self,
        query: &AskQuery,
        request: &AskRequest,
    ) -> Result<Approval, ClientError> {
        self.post(&with_query("/v1/ask", query), request).await
    }

    /// Reports a hook of the agent's CLI (`celistrad hook`), as the agent whose own socket this
    /// client talks to: `POST /v1/hook`, answered 204.
    pub async fn report_hook(&self, report: &HookReport) -> Result<(), ClientError> {
        let body = serde_json::to_vec(report).expect("request bodies serialise");
        let response = self.send(Method::POST, "/v1/hook", Some(body)).await?;
        let status = response.status();
        let bytes = crate::read_all(response).await?;
        if status.is_success() {
            return Ok(());
        }
        crate::decode::<serde_json::Value>(status, &bytes).map(drop)
    }

    // Notifications.

    pub async fn get_notifications(&self) -> Result<NotificationsStatus, ClientError> {
        self.get("/v1/notifications").await
    }

    pub async fn test_notifications(&self) -> Result<Vec<ChannelStatus>, ClientError> {
        self.call(Method::POST, "/v1/notifications/test", None::<&()>)
            .await
    }

    pub async fn get_vapid_key(&self) -> Result<VapidKeyInfo, ClientError> {
        self.get("/v1/push/vapid-key").await
    }

    pub async fn list_push_subscriptions(&self) -> Result<Vec<PushSubscriptionInfo>, ClientError> {
        self.get("/v1/push/subscriptions").await
    }

    pub async fn subscribe_push(
        &self,
        request: &PushSubscriptionRequest,
    ) -> Result<PushSubscriptionInfo, ClientError> {
        self.post("/v1/push/subscriptions", request).await
    }

    pub async fn unsubscribe_push(&self, id: &str) -> Result<PushSubscriptionInfo, ClientError> {
        self.call(
            Method::DELETE,
            &format!("/v1/push/subscriptions/{}", segment(id)),
            None::<&()>,
        )
        .await
    }

    // The fleet: machines, pairing and membership, and the hub's views of every machine.

    /// `GET /v1/machines`: this daemon's machine, then (on a hub) every machine that joined.
    pub async fn list_machines(&self) -> Result<Vec<Machine>, ClientError> {
        self.get("/v1/machines").await
    }

    /// Cuts a machine off the hub's fleet for good.
    pub async fn revoke_machine(&self, machine: &str) -> Result<Machine, ClientError> {
        let path = format!("/v1/machines/{}", segment(machine));
        self.call(Method::DELETE, &path, None::<&()>).await
    }

    pub async fn fleet_status(&self) -> Result<FleetStatus, ClientError> {
        self.get("/v1/fleet").await
    }

    /// A single-use pairing code, with the one line that joins a new machine (hubs only).
    pub async fn create_pairing_code(&self) -> Result<PairingCode, ClientError> {
        self.call(Method::POST, "/v1/fleet/pairing-codes", None::<&()>)
            .await
    }

    /// Tells this daemon to join a hub.
    pub async fn join_hub(&self, request: &JoinRequest) -> Result<Membership, ClientError> {
        self.post("/v1/fleet/join", request).await
    }

    /// Tells this daemon to leave its hub.
    pub async fn leave_hub(&self) -> Result<FleetStatus, ClientError> {
        self.call(Method::DELETE, "/v1/fleet/membership", None::<&()>)
            .await
    }

    /// Every machine's agents, from the hub's cache.
    pub async fn list_fleet_agents(&self) -> Result<Vec<MachineAgents>, ClientError> {
        self.get("/v1/fleet/agents").await
    }

    /// The hub's merged event stream: each frame's data is a [`celistra_proto::FleetEvent`].
    pub async fn stream_fleet_events(&self, query: &EventsQuery) -> Result<SseStream, ClientError> {
        Ok(SseStream::new(
            self.open_stream(&with_query("/v1/fleet/events", query))
                .await?,
        ))
    }

    // Dashboard sessions.

    /// A single-use login link for a dashboard session with `role` (owner when `None`).
    pub async fn issue_login_code(&self, role: Option<Role>) -> Result<LoginLink, ClientError> {
        let path = with_query("/v1/sessions/login-codes", &LoginCodeQuery { role });
        self.call(Method::POST, &path, None::<&()>).await
    }

    // Secrets: a hub never forwards them (see `VIA_HUB`), so they are always this daemon's own.

    /// Every secret's name and times; never a value.
    pub async fn list_secrets(&self) -> Result<Vec<SecretInfo>, ClientError> {
        self.get("/v1/secrets").await
    }

    /// Sets a secret's value (only an owner may).
    pub async fn set_secret(
        &self,
        name: &str,
        request: &SecretRequest,
    ) -> Result<SecretInfo, ClientError> {
        let path = format!("/v1/secrets/{}", segment(name));
        self.call(Method::PUT, &path, Some(request)).await
    }

    pub async fn remove_secret(&self, name: &str) -> Result<SecretInfo, ClientError> {
        let path = format!("/v1/secrets/{}", segment(name));
        self.call(Method::DELETE, &path, None::<&()>).await
    }

    pub async fn list_tokens(&self) -> Result<Vec<TokenInfo>, ClientError> {
        self.get("/v1/tokens").await
    }

    /// Makes an API token; its value is in the answer and nowhere else.
    pub async fn create_token(&self, request: &TokenRequest) -> Result<TokenCreated, ClientError> {
        self.post("/v1/tokens", request).await
    }

    pub async fn revoke_token(&self, name: &str) -> Result<TokenInfo, ClientError> {
        let path = format!("/v1/tokens/{}", segment(name));
        self.call(Method::DELETE, &path, None::<&()>).await
    }

    /// Exchanges a login code for a session (the cookie it sets is not kept by this client).
    pub async fn login(&self, request: &LoginRequest) -> Result<SessionState, ClientError> {
        self.post("/v1/sessions/login", request).await
    }

    pub async fn list_sessions(&self) -> Result<Vec<SessionInfo>, ClientError> {
        self.get("/v1/sessions").await
    }

    pub async fn revoke_session(&self, id: &str) -> Result<SessionInfo, ClientError> {
        self.call(
            Method::DELETE,
            &format!("/v1/sessions/{}", segment(id)),
            None::<&()>,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use celistra_proto::{LogFormat, LogStream};

    use super::*;

    #[test]
    fn encodes_path_segments_and_query_strings() {
        assert_eq!(agent_path("a b/c%"), "/v1/agents/a%20b%2Fc%25");
        assert_eq!(agent_path("web-1.x_y~"), "/v1/agents/web-1.x_y~");
        let query = LogsQuery {
            tail: Some(5),
            grep: Some("a&b=c d".into()),
            stream: Some(LogStream::Stderr),
            format: LogFormat::Jsonl,
            ..LogsQuery::default()
        };
        assert_eq!(
            with_query("/v1/agents/x/logs", &query),
            "/v1/agents/x/logs?tail=5&follow=false&grep=a%26b%3Dc+d&stream=stderr&timestamps=false&format=jsonl"
        );
        assert_eq!(
            with_query("/v1/audit/tail", &AuditTailQuery::default()),
            "/v1/audit/tail"
        );
    }

    #[test]
    fn a_machine_scope_rewrites_only_the_routes_a_hub_forwards() {
        for (path, through_hub) in [
            ("/v1/health", "/v1/machines/m2/health"),
            ("/v1/agents", "/v1/machines/m2/agents"),
            (
                "/v1/agents/web/logs?tail=5",
                "/v1/machines/m2/agents/web/logs?tail=5",
            ),
            (
                "/v1/agents/ag-1/terminal?ticket=t",
                "/v1/machines/m2/agents/ag-1/terminal?ticket=t",
            ),
            ("/v1/history?limit=3", "/v1/machines/m2/history?limit=3"),
            (
                "/v1/events?follow=true",
                "/v1/machines/m2/events?follow=true",
            ),
            ("/v1/audit/tail", "/v1/machines/m2/audit/tail"),
            (
                "/v1/approvals/a1/approve",
                "/v1/machines/m2/approvals/a1/approve",
            ),
            ("/v1/sandbox/explain", "/v1/machines/m2/sandbox/explain"),
            ("/v1/apply", "/v1/machines/m2/apply"),
            ("/v1/usage", "/v1/machines/m2/usage"),
            ("/v1/logs?grep=x", "/v1/machines/m2/logs?grep=x"),
        ] {
            assert_eq!(machine_path("m2", path), through_hub, "{path}");
        }
        for hub_own in [
            "/v1/machines",
            "/v1/machines/m3",
            "/v1/fleet",
            "/v1/fleet/agents",
            "/v1/fleet/events?follow=true",
            "/v1/tokens/ci",
            "/v1/secrets/GH_TOKEN",
            "/v1/session",
            "/v1/sessions/login",
            "/v1/push/vapid-key",
            "/v1/notifications",
            "/v1/openapi.json",
            "/v1/ask",
            "/d/token",
            // A prefix must end at a segment: these are not `/v1/agents` nor `/v1/logs`.
            "/v1/agentsx",
            "/v1/logsearch",
        ] {
            assert_eq!(machine_path("m2", hub_own), hub_own);
        }
        // The machine is one path segment, whatever it holds.
        assert_eq!(
            machine_path("a/b", "/v1/health"),
            "/v1/machines/a%2Fb/health"
        );
    }

    #[test]
    fn a_scoped_client_keeps_its_daemon_and_only_changes_paths() {
        let client = Client::remote("http://127.0.0.1:9", "t", None, "test").unwrap();
        let scoped = client.on_machine("m2");
        assert_eq!(scoped.target(), client.target());
        assert_eq!(scoped.machine(), Some("m2"));
        assert_eq!(client.machine(), None);
        assert_eq!(scoped.request_path("/v1/agents"), "/v1/machines/m2/agents");
        assert_eq!(client.request_path("/v1/agents"), "/v1/agents");
        // Scoping again replaces the machine rather than nesting it.
        let other = scoped.on_machine("m3");
        assert_eq!(other.request_path("/v1/health"), "/v1/machines/m3/health");
    }
}
