//! The audit log as the API shows it: entries, pages of a query, checkpoints, proofs and the
//! result of a verification. The formats are specified in docs/audit-format.md.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One entry of the audit log, exactly as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    pub seq: u64,
    pub time_ms: u64,
    /// The credential that caused it, `system` for the daemon itself, `unauthenticated` for
    /// refused requests.
    pub actor: String,
    pub action: String,
    /// The agent (or file, route) acted on; empty when there is none.
    pub target: String,
    #[schema(value_type = Object)]
    pub body: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
}

/// Body of `GET /v1/audit`: matching entries, newest first, and where the next (older) page starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    /// Pass as `after` for the next page; absent on the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_after: Option<u64>,
}

/// A signed checkpoint (C2SP tlog-checkpoint as a signed note) and the key that verifies it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditCheckpoint {
    pub checkpoint: String,
    pub tree_size: u64,
    pub public_key: String,
}

/// An inclusion proof (`seq` in a tree of `tree_size`) or a consistency proof (`old_size` to
/// `tree_size`): hex hashes, RFC 6962 order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditProof {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_size: Option<u64>,
    pub tree_size: u64,
    pub proof: Vec<String>,
}

/// The result of verifying the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditVerification {
    pub ok: bool,
    /// Entries checked and found sound.
    pub entries: u64,
    /// The first entry found wrong, and what is wrong with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_bad_seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    pub checked_at_ms: u64,
}

/// Body of `GET /v1/audit/bundle`: the three files of an export bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditBundle {
    /// `entries.jsonl`: every entry as stored, one per line, in order.
    pub entries_jsonl: String,
    /// `checkpoint`: a signed checkpoint covering exactly those entries.
    pub checkpoint: String,
    /// `public.key`: the verifier key of the log.
    pub public_key: String,
}
