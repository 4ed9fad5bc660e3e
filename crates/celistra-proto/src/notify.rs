//! Notification channels as the API shows them: Web Push subscriptions, the status of each
//! channel, what every channel carries, and a decision made through a link.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::Approval;

/// A browser's push subscription keys, as `PushSubscription.toJSON()` gives them (base64url).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PushKeys {
    /// The browser's P-256 public key, uncompressed (65 bytes).
    pub p256dh: String,
    /// The browser's 16-byte authentication secret.
    pub auth: String,
}

/// What a dashboard sends to receive notifications on this device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PushSubscriptionRequest {
    /// The push service's URL for this device (https).
    pub endpoint: String,
    pub keys: PushKeys,
    /// Set by browsers; ignored.
    #[serde(default, rename = "expirationTime", skip_serializing)]
    pub expiration_time: Option<u64>,
    /// A name for the device (`Pixel 8`), shown in lists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// A device that receives Web Push notifications. Its keys are never shown again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PushSubscriptionInfo {
    /// `ps-` and 12 hex digits.
    pub id: String,
    pub endpoint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    pub created_at_ms: u64,
}

/// The key browsers subscribe with (`applicationServerKey`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VapidKeyInfo {
    /// Uncompressed P-256 public key, base64url without padding.
    pub public_key: String,
}

/// How one channel has fared since the daemon started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ChannelStatus {
    /// `ntfy:<name>`, `webhook:<name>` or `push:<subscription id>`.
    pub channel: String,
    /// Deliveries the receiver accepted.
    pub delivered: u64,
    /// Deliveries given up after every attempt.
    pub failed: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_delivered_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error_ms: Option<u64>,
}

/// `GET /v1/notifications`: the channels configured and how they fare.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NotificationsStatus {
    /// Where decision links point (`public_url`, else this daemon's listen address).
    pub decision_base: String,
    /// Every configured channel and subscribed device, in that order.
    pub channels: Vec<ChannelStatus>,
    pub subscriptions: Vec<PushSubscriptionInfo>,
}

/// What each channel carries (the Web Push payload and the webhook body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    ApprovalRequested,
    ApprovalDecided,
    /// Sent by `ctl notifications test`.
    Test,
    /// An agent has been in an activity for as long as its `notify_activity` says.
    AgentActivity,
}

/// One notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Notice {
    pub kind: NoticeKind,
    /// The daemon's machine id.
    pub machine: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<Approval>,
    /// A page that decides this request (press and hold to approve); `POST` to it with
    /// `{"verdict": "approve" | "deny"}` decides directly. Single use, expires with the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decide_url: Option<String>,
    /// For `agent_activity`: the agent and its activity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activity: Option<ActivityNotice>,
    pub sent_at_ms: u64,
}

/// The agent a `agent_activity` notice is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ActivityNotice {
    pub agent_id: String,
    pub agent_name: String,
    pub activity: crate::ActivityInfo,
}

/// Approve or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Approve,
    Deny,
}

impl Verdict {
    /// The name on the wire, also the last segment of `POST /v1/approvals/{id}/{verdict}`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Approve => "approve",
            Verdict::Deny => "deny",
        }
    }
}

/// `POST` to a decision link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkDecision {
    pub verdict: Verdict,
}
