//! The audit log as the API shows it: entries, pages of a query, checkpoints, proofs and the
//! result of a verification. The formats are specified in docs/audit-format.md.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

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

/// Most entries one page of `GET /v1/audit` holds.
pub const MAX_AUDIT_PAGE: usize = 1000;

/// Query of `GET /v1/audit`; the filters combine.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only entries from this time: a duration ago (`30m`, `7d`) or an RFC 3339 time.
    pub since: Option<String>,
    /// Only entries until this time, in the same forms.
    pub until: Option<String>,
    /// Only entries of this actor.
    pub actor: Option<String>,
    /// Only entries of this action (e.g. `agent_spawned`, `sandbox_block`).
    pub action: Option<String>,
    /// Only entries about this agent id (or other target).
    pub agent: Option<String>,
    /// Only entries whose JSON contains this text (case-insensitive).
    pub text: Option<String>,
    /// Entries older than this sequence number (paging: the previous page's `next_after`).
    pub after: Option<u64>,
    /// Page size (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

/// Query of `GET /v1/audit/tail`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditTailQuery {
    /// Replay the entries after this sequence number first.
    pub after: Option<u64>,
}

/// Query of `GET /v1/audit/proof`: `seq` (inclusion) or `old_size` (consistency), with `tree_size`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ProofQuery {
    /// Inclusion: the entry's sequence number.
    pub seq: Option<u64>,
    /// Consistency: the older tree size.
    pub old_size: Option<u64>,
    /// The tree size the proof is for (a checkpoint's size).
    pub tree_size: u64,
}

/// How `GET /v1/audit/export` writes the entries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AuditExportFormat {
    /// The entries exactly as stored, one JSON object per line.
    #[default]
    Jsonl,
    /// One row per entry.
    Csv,
}

/// Query of `GET /v1/audit/export`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// `jsonl` (default) or `csv`.
    #[serde(default)]
    #[param(inline)]
    pub format: AuditExportFormat,
}
