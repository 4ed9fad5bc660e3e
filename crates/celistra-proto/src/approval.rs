//! Approvals as the API shows them: what an agent asks, the request the broker keeps, and a
//! decision.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// What happens when nobody decides in time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TimeoutDefault {
    /// Fail closed: the request is denied (the default).
    #[default]
    Deny,
    /// The agent asked to go ahead unless someone says no.
    Approve,
}

/// Where a request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalStatus {
    Pending,
    Approved,
    Denied,
    /// Nobody decided before the deadline; the agent got `on_timeout`.
    Expired,
}

/// What an agent sends to ask (`celistrad ask`, through its own socket).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AskRequest {
    /// One line for a person: what the agent wants to do (at most 4096 bytes, no control
    /// characters).
    #[schema(min_length = 1, max_length = 4096)]
    pub prompt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Seconds to wait for a decision (default 300, at most a day).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 86_400)]
    pub ttl_secs: Option<u64>,
    #[serde(default)]
    pub on_timeout: TimeoutDefault,
    /// The agent's own id for this request: asking again with the same id (after a restart) waits
    /// for the same request instead of making a new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 128)]
    pub key: Option<String>,
}

/// A request for approval, pending or decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Approval {
    /// `ap-` and 12 lowercase letters and digits.
    pub id: String,
    pub agent_id: String,
    pub agent_name: String,
    /// How the agent asked: `ask` (`celistrad ask`), `hook` (an agent CLI's hook) or `line` (a JSON
    /// line on its terminal).
    pub origin: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub prompt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
    pub on_timeout: TimeoutDefault,
    pub status: ApprovalStatus,
    /// Who decided (a credential), `system` for an expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    /// The role of the credential that decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by_role: Option<crate::Role>,
    /// From which surface: `cli`, `api`, `dashboard`, …, or `timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_via: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Approval {
    /// Whether the agent may go ahead: approved, or expired with `on_timeout: approve`.
    pub fn allows(&self) -> bool {
        match self.status {
            ApprovalStatus::Approved => true,
            ApprovalStatus::Expired => self.on_timeout == TimeoutDefault::Approve,
            ApprovalStatus::Pending | ApprovalStatus::Denied => false,
        }
    }

    /// How it stands, for people: `approved by <who> via <surface>`, `denied by …`, `expired
    /// before anyone decided`, or `waiting for a decision`.
    pub fn outcome(&self) -> String {
        let by = self.decided_by.as_deref().unwrap_or("-");
        let via = self.decided_via.as_deref().unwrap_or("-");
        match self.status {
            ApprovalStatus::Approved => format!("approved by {by} via {via}"),
            ApprovalStatus::Denied => format!("denied by {by} via {via}"),
            ApprovalStatus::Expired => "expired before anyone decided".into(),
            ApprovalStatus::Pending => "waiting for a decision".into(),
        }
    }
}

/// Body of `POST /v1/approvals/{id}/approve` and `…/deny`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Query of `GET /v1/approvals`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ApprovalsQuery {
    /// Only pending requests.
    #[serde(default)]
    pub pending: bool,
}

/// How an agent asks through its socket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AskOrigin {
    /// `celistrad ask PROMPT`.
    #[default]
    Ask,
    /// `celistrad ask --hook`: an approval hook of a coding agent.
    Hook,
}

impl AskOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            AskOrigin::Ask => "ask",
            AskOrigin::Hook => "hook",
        }
    }
}

/// Query of `POST /v1/ask` on an agent's own socket.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AskQuery {
    /// How the agent asks (default `ask`).
    #[serde(default)]
    #[param(inline)]
    pub origin: AskOrigin,
}
