//! The sandbox as the API shows it: how a run was confined, the master switch, `explain`, and the
//! kernel's block decisions.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AgentSpec;

/// How one run was confined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RunSandbox {
    /// Whether the run is inside the kernel sandbox.
    pub sandboxed: bool,
    /// Why it is not: `privileged` (the agent holds that capability) or `switched_off` (`ctl sandbox off`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsandboxed_because: Option<String>,
    /// The effective capability tokens.
    pub capabilities: Vec<String>,
    /// The user the run executes as, `name (uid)`.
    pub user: String,
    /// Each resource limit and how it was applied (or why it was not).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub limits: Vec<String>,
}

/// Body of `GET /v1/sandbox`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SandboxStatus {
    /// The master switch: when off, every agent runs unsandboxed (and is flagged).
    pub enabled: bool,
    /// Who last turned the switch, and when; absent if it never was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_at_ms: Option<u64>,
    /// Path of the launcher that sets up each sandbox (namespaces, mounts) and confines the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launcher: Option<String>,
    /// Why sandboxed spawns are refused right now (no launcher), if they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// Landlock ABI version of this kernel (0: none).
    pub landlock_abi: u32,
    /// How kernel block decisions are observed, or why they are not.
    pub block_reporting: String,
}

/// Body of `PUT /v1/sandbox`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SandboxSwitch {
    pub enabled: bool,
}

/// Body of `POST /v1/sandbox/explain`: an existing agent (`agent`, id or name) or a prospective
/// spawn (`spec`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExplainRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<AgentSpec>,
}

/// Where some capabilities came from: `default`, `agent` (its own `--cap`), `grant N` (index in
/// `capabilities.json`), or `dropped` (its own `--drop-cap`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CapabilitySource {
    pub origin: String,
    pub capabilities: Vec<String>,
}

/// What a spawn would run with, down to the kernel's rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SandboxExplanation {
    pub run: RunSandbox,
    pub sources: Vec<CapabilitySource>,
    /// The launcher's command line (empty when unsandboxed).
    pub launch_argv: Vec<String>,
    /// Namespaces, then the sandbox's filesystem, one mount per line in the order they are made.
    pub mounts: Vec<String>,
    /// Landlock rules, one per line.
    pub landlock: Vec<String>,
    /// seccomp policy, one rule per line.
    pub seccomp: Vec<String>,
    /// Caveats: what this kernel cannot enforce, what is recorded but has no effect here.
    pub notes: Vec<String>,
}

/// What the kernel refused a sandboxed process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SandboxBlock {
    pub agent_id: String,
    pub name: String,
    /// When the kernel decided, in ms since the epoch.
    pub time_ms: u64,
    /// `filesystem`, `network`, `scope` or `syscall`.
    pub kind: String,
    /// The refused access, e.g. `write_file`, `connect_tcp`, `ptrace`.
    pub access: String,
    /// Path, port, syscall or signal target, when the kernel names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// One line for people: `write_file /etc/passwd`.
    pub summary: String,
    pub pid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    /// Blocks of this agent not reported since the previous one (rate limit).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub suppressed: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}
