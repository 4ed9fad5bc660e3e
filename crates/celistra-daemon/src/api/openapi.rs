//! `GET /v1/openapi.json`: the OpenAPI document: its frame and the wire types' schemas here, its
//! operations from the route table (`routes.rs`) and the handlers' annotations.

use axum::Json;
use celistra_proto::{
    AgentInfo, AgentSpec, AgentState, AgentUsage, ApiError, ApplyReport, ApplyRequest, Approval,
    ApprovalStatus, AskRequest, AuditBundle, AuditCheckpoint, AuditEntry, AuditHealth, AuditPage,
    AuditProof, AuditVerification, CapabilitySource, ChannelStatus, DecisionRequest,
    EffectiveSettings, ErrorCode, Event, EventKind, ExitCause, ExplainRequest, Health,
    HistoryHealth, IoMode, KillRequest, LinkDecision, LogLine, LoginLink, LoginRequest, Notice,
    NoticeKind, NotificationsStatus, PushKeys, PushSubscriptionInfo, PushSubscriptionRequest,
    RenameRequest, Role, RunCause, RunRecord, RunSandbox, SandboxBlock, SandboxExplanation,
    SandboxStatus, SandboxSwitch, SessionInfo, SessionState, TermSize, TerminalClientMessage,
    TerminalRole, TerminalServerMessage, TerminalTicket, TicketRequest, TimeoutDefault, TlsHealth,
    TokenCreated, TokenInfo, TokenRequest, UpdateRequest, VapidKeyInfo, Verdict,
};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::history;

#[derive(OpenApi)]
#[openapi(
    info(title = "celistrad API", description = "One machine's supervisor: agents, their state, output, history and events. Every route needs a credential (`Authorization: Bearer <credential>`: the machine secret, an owner's, or an API token with its role) whose role satisfies the operation's `x-celistra-role` (owner, operator, viewer, approver; `any`: any credential; `public`: none), except the terminal WebSocket, which needs a ticket (docs/terminal-protocol.md), the dashboard login, which takes a one-time code, and decision links (`GET`/`POST /d/{token}`, docs/approvals.md), whose signed token is the credential. A dashboard session cookie is accepted instead of the bearer secret; with it, requests that change state must send `X-CSRF-Token`."),
    components(schemas(
        AgentInfo, AgentSpec, AgentState, ApiError, ApplyReport, ApplyRequest, EffectiveSettings, ErrorCode,
        Event, EventKind, ExitCause, Health, KillRequest, RenameRequest, UpdateRequest,
        HistoryHealth, IoMode, LogLine, RunCause, RunRecord, history::Cleared, history::Format,
        TermSize, TerminalClientMessage, TerminalRole, TerminalServerMessage, TerminalTicket, TicketRequest,
        RunSandbox, SandboxStatus, SandboxSwitch, ExplainRequest, SandboxExplanation, CapabilitySource,
        SandboxBlock, AuditEntry, AuditPage, AuditCheckpoint, AuditProof, AuditVerification,
        AuditBundle, AuditHealth, Approval, ApprovalStatus, AskRequest, DecisionRequest, TimeoutDefault,
        ChannelStatus, NotificationsStatus, PushKeys, PushSubscriptionInfo, PushSubscriptionRequest,
        VapidKeyInfo, Notice, NoticeKind, LinkDecision, Verdict,
        LoginLink, LoginRequest, SessionInfo, SessionState, AgentUsage, TlsHealth,
        Role, TokenRequest, TokenInfo, TokenCreated,
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
#[utoipa::path(get, path = "/v1/openapi.json", tag = "daemon", operation_id = "openapi_document",
    responses((status = 200, description = "OpenAPI document")))]
pub(crate) async fn document() -> Json<&'static utoipa::openapi::OpenApi> {
    Json(super::routes::cached_document())
}
