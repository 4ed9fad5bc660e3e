//! `GET /v1/openapi.json`: the OpenAPI document: its frame and the wire types' schemas here, its
//! operations from the route table (`routes.rs`) and the handlers' annotations.

use axum::Json;
use celistra_proto::{
    AgentInfo, AgentSpec, AgentState, AgentUsage, ApiError, ApplyReport, ApplyRequest, Approval,
    ApprovalStatus, AskOrigin, AskRequest, AuditBundle, AuditCheckpoint, AuditEntry,
    AuditExportFormat, AuditHealth, AuditPage, AuditProof, AuditVerification, CapabilitySource,
    ChannelStatus, Cleared, DaemonLeaving, DaemonStopRequest, DaemonUpgradeRequest,
    DecisionRequest, EffectiveSettings, ErrorCode, Event, EventKind, ExitCause, ExplainRequest,
    FleetEvent, FleetStatus, GroupInfo, Health, HistoryHealth, IoMode, JoinRequest, KillRequest,
    LinkDecision, LogFormat, LogLine, LogStream, LoginLink, LoginRequest, Machine, MachineAgents,
    Membership, Notice, NoticeKind, NotificationsStatus, PairingCode, PushKeys,
    PushSubscriptionInfo, PushSubscriptionRequest, RenameRequest, Role, RunCause, RunRecord,
    RunSandbox, SandboxBlock, SandboxExplanation, SandboxStatus, SandboxSwitch, ScaleRequest,
    SecretInfo, SecretRequest, SessionInfo, SessionState, Signal, TermSize, TerminalClientMessage,
    TerminalRole, TerminalServerMessage, TerminalTicket, TicketRequest, TimeoutDefault, TlsHealth,
    TokenCreated, TokenInfo, TokenRequest, UpdateRequest, VapidKeyInfo, Verdict, WitnessState,
    WitnessStatus,
};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "celistrad API", description = "One machine's supervisor: agents, their state, output, history and events; on a fleet hub, every machine of the fleet: each operation marked `x-celistra-via-hub` is also served as `/v1/machines/{machine}` followed by its path without `/v1`, checked here against the operation's role and on the machine against its own `fleet` ceiling. Every route needs a credential (`Authorization: Bearer <credential>`: the machine secret, an owner's, or an API token with its role) whose role satisfies the operation's `x-celistra-role` (owner, operator, viewer, approver; `any`: any credential; `public`: none), except the terminal WebSocket, which needs a ticket (docs/terminal-protocol.md), the dashboard login, which takes a one-time code, and decision links (`GET`/`POST /d/{token}`, docs/approvals.md), whose signed token is the credential. A dashboard session cookie is accepted instead of the bearer secret; with it, requests that change state must send `X-CSRF-Token`."),
    components(schemas(
        AgentInfo, AgentSpec, AgentState, ApiError, ApplyReport, ApplyRequest, EffectiveSettings, ErrorCode,
        Event, EventKind, ExitCause, Health, KillRequest, RenameRequest, UpdateRequest,
        HistoryHealth, IoMode, LogLine, RunCause, RunRecord, Cleared, LogFormat, LogStream, Signal,
        TermSize, TerminalClientMessage, TerminalRole, TerminalServerMessage, TerminalTicket, TicketRequest,
        RunSandbox, SandboxStatus, SandboxSwitch, ExplainRequest, SandboxExplanation, CapabilitySource,
        SandboxBlock, AuditEntry, AuditPage, AuditCheckpoint, AuditProof, AuditVerification,
        AuditBundle, AuditHealth, Approval, ApprovalStatus, AskRequest, DecisionRequest, TimeoutDefault,
        ChannelStatus, NotificationsStatus, PushKeys, PushSubscriptionInfo, PushSubscriptionRequest,
        VapidKeyInfo, Notice, NoticeKind, LinkDecision, Verdict,
        LoginLink, LoginRequest, SessionInfo, SessionState, AgentUsage, TlsHealth,
        Role, TokenRequest, TokenInfo, TokenCreated, AuditExportFormat, AskOrigin,
        Machine, WitnessState, WitnessStatus, PairingCode, JoinRequest, FleetStatus, Membership,
        MachineAgents, FleetEvent, SecretInfo, SecretRequest, DaemonStopRequest,
        DaemonUpgradeRequest, DaemonLeaving, ScaleRequest, GroupInfo,
    )),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document's frame and schemas, without operations.
pub(crate) fn base() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}

/// The OpenAPI 3.1 document of this API. Each operation's `x-celistra-role` is the role it
/// requires: `owner`, `operator`, `viewer`, `approver`, `any` (any credential) or `public`.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    operation_id = "get_openapi",
    tag = "daemon",
    responses((status = 200, description = "OpenAPI document", body = Object))
)]
pub(crate) async fn document() -> Json<&'static utoipa::openapi::OpenApi> {
    Json(super::routes::cached_document())
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    fn sorted(value: serde_json::Value) -> serde_json::Value {
        match value {
            serde_json::Value::Object(map) => {
                let mut entries: Vec<_> = map.into_iter().collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                entries.into_iter().map(|(k, v)| (k, sorted(v))).collect()
            }
            serde_json::Value::Array(items) => items.into_iter().map(sorted).collect(),
            other => other,
        }
    }

    /// The dashboard's TypeScript types are generated from `web/openapi.json` at build time, when
    /// no daemon runs; this keeps that copy equal to what the daemon serves.
    #[test]
    fn web_openapi_json_is_what_the_daemon_serves() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../web/openapi.json");
        let document = super::document().now_or_never().expect("no awaits").0;
        // Extensions are kept in a hash map: sorting every object's keys makes the copy stable.
        let generated = serde_json::to_string_pretty(&sorted(
            serde_json::to_value(document).expect("serialises"),
        ))
        .expect("serialises")
            + "\n";
        if std::env::var_os("UPDATE_OPENAPI").is_some() {
            std::fs::write(path, &generated).expect("write web/openapi.json");
            return;
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == generated,
            "web/openapi.json differs from the document the daemon generates; update it with \
             `UPDATE_OPENAPI=1 cargo test -p celistra-daemon web_openapi_json` and commit it"
        );
    }

    /// The limits the schemas state are the ones the daemon enforces.
    #[test]
    fn schema_limits_are_the_enforced_ones() {
        use celistra_core::{approval_line, names, spec};

        let document = super::document().now_or_never().expect("no awaits").0;
        let document = serde_json::to_value(document).expect("serialises");
        let schemas = &document["components"]["schemas"];
        let field = |schema: &str, name: &str| schemas[schema]["properties"][name].clone();
        let limit = |schema: &str, name: &str, key: &str| field(schema, name)[key].as_u64();
        for schema in ["AgentSpec", "UpdateRequest", "RenameRequest"] {
            assert_eq!(
                limit(schema, "name", "maxLength"),
                Some(names::MAX_NAME_LEN as u64),
                "{schema}"
            );
        }
        for schema in ["AgentSpec", "UpdateRequest"] {
            assert_eq!(
                limit(schema, "command", "maxLength"),
                Some(spec::MAX_COMMAND_LEN as u64)
            );
            assert_eq!(
                limit(schema, "scrollback_kb", "maximum"),
                Some(u64::from(spec::MAX_SCROLLBACK_KB))
            );
            assert_eq!(
                limit(schema, "memory_max", "minimum"),
                Some(spec::MIN_MEMORY_MAX)
            );
        }
        assert_eq!(
            limit("AskRequest", "prompt", "maxLength"),
            Some(approval_line::MAX_PROMPT_BYTES as u64)
        );
        assert_eq!(
            limit("AskRequest", "ttl_secs", "maximum"),
            Some(approval_line::MAX_TTL_SECS)
        );
        let signals: Vec<&str> = schemas["Signal"]["enum"]
            .as_array()
            .expect("signal names")
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        let names: Vec<&str> = celistra_proto::Signal::ALL.map(|s| s.name()).to_vec();
        assert_eq!(signals, names);
    }
}
