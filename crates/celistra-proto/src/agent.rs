//! Agents as the API shows them: specs, live state, settings and the bodies of agent requests.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::Signal;

/// Lifecycle state of an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AgentState {
    /// Its process is being created.
    Starting,
    /// Its process is alive.
    Running,
    /// Its process is alive and waiting for a person to approve or deny a request.
    WaitingApproval,
    /// It died and will be restarted at `next_restart_at_ms`.
    Backoff,
    /// An operator asked it to stop; waiting for its process group to exit.
    Stopping,
    /// It exited with code 0 (or, with `expected_exit_codes`, one of those) and will not be
    /// restarted.
    Exited,
    /// It exited non-zero or by a signal and will not be restarted.
    Failed,
    /// An operator stopped it.
    Stopped,
    /// It hit its restart ceiling and will not be restarted until started again.
    CrashedOut,
    /// It should run and waits for its dependencies (`waiting_for` names them).
    Waiting,
}

impl AgentState {
    /// Whether a process exists (or is about to) in this state.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            AgentState::Starting
                | AgentState::Running
                | AgentState::WaitingApproval
                | AgentState::Stopping
        )
    }

    /// The kebab-case name used on the wire and in tables.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentState::Starting => "starting",
            AgentState::Running => "running",
            AgentState::WaitingApproval => "waiting-approval",
            AgentState::Backoff => "backoff",
            AgentState::Stopping => "stopping",
            AgentState::Exited => "exited",
            AgentState::Failed => "failed",
            AgentState::Stopped => "stopped",
            AgentState::CrashedOut => "crashed-out",
            AgentState::Waiting => "waiting",
        }
    }
}

/// What an agent is: everything needed to (re)spawn it. `POST /v1/agents` takes it (an empty `name`
/// means "generate one"), `apply` files list it, and `apply` compares it field by field. The optional
/// settings override the daemon's defaults (`config.json`); absent ones take the default in force when
/// the agent is next spawned.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentSpec {
    /// Unique on this machine: letters, digits, `.`, `_`, `-`, at most 64 characters, not shaped like an id.
    #[serde(default)]
    #[schema(
        max_length = 64,
        pattern = "^$|^(?!ag-[a-z0-9]{4,}$)[A-Za-z0-9_][A-Za-z0-9._-]*$"
    )]
    pub name: String,
    /// Shell command line, run as `/bin/sh -c COMMAND`.
    #[schema(min_length = 1, max_length = 65536)]
    pub command: String,
    /// Working directory; must exist. Absent: the daemon's home directory (`$HOME`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^/")]
    pub workspace: Option<String>,
    /// Extra environment variables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Restart after any exit the operator did not ask for.
    #[serde(default)]
    pub auto_restart: bool,
    /// Signal sent to the process group by `stop` (default TERM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<Signal>,
    /// Grace period between the stop signal and SIGKILL, in milliseconds (default 10000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 86_400_000)]
    pub stop_timeout_ms: Option<u64>,
    /// Restart ceiling: at most this many restarts in any rolling window (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 10_000)]
    pub restart_max: Option<u32>,
    /// Length of the rolling restart window, in seconds (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 86_400)]
    pub restart_window_secs: Option<u64>,
    /// Delay before the second consecutive restart, in milliseconds (the first is immediate); doubles
    /// per further crash (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 86_400_000)]
    pub backoff_initial_ms: Option<u64>,
    /// Cap of the restart delay, in milliseconds (default 30000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 86_400_000)]
    pub backoff_max_ms: Option<u64>,
    /// Uptime after which a run counts as healthy and the backoff resets, in seconds (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 86_400)]
    pub backoff_reset_secs: Option<u64>,
    /// Size of the agent's output ring, in KiB (default: the daemon's `--scrollback-kb`, 64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 65_536)]
    pub scrollback_kb: Option<u32>,
    /// Run with stdin, stdout and stderr on pipes instead of a PTY (`--no-pty`), like supervisord and
    /// PM2: stdout and stderr are logged apart and output is not capped by the PTY layer.
    #[serde(default, skip_serializing_if = "is_false")]
    pub no_pty: bool,
    /// Capability tokens added to the default set (`--cap`), e.g. `write:/srv/out`, `privileged`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
    /// Capability tokens removed from the effective set (`--drop-cap`); they win over any grant.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drop_capabilities: Vec<String>,
    /// User to run as, by name or uid (`--user`). Absent: the daemon's own user, or, when the daemon
    /// runs as root, the owner of the workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 32, pattern = "^[A-Za-z0-9_.][A-Za-z0-9_.-]*$")]
    pub user: Option<String>,
    /// Memory ceiling in bytes (`--memory-max`); the kernel kills the agent beyond it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 4_194_304)]
    pub memory_max: Option<u64>,
    /// Most processes and threads the agent may have at once (`--pids-max`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 4_194_304)]
    pub pids_max: Option<u32>,
    /// CPU share relative to other agents, 1 to 10000, default 100 (`--cpu-weight`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 10_000)]
    pub cpu_weight: Option<u32>,
    /// Which AI agent CLI it runs (`claude`, `codex`, `gemini`, `aider`, or another name): picks
    /// its screen rules and hook format. Absent: guessed from the command's first word.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 32, pattern = "^[a-z0-9][a-z0-9_-]*$")]
    pub kind: Option<String>,
    /// Typed into a running agent (then Enter) when its usage limit resets, e.g. `continue`;
    /// absent: the agent is restarted at the reset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 4096)]
    pub limit_input: Option<String>,
    /// Most restarts after transient model errors in `model_error_window_secs` before the agent
    /// is stopped (default 10). They do not count toward `restart_max`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 10_000)]
    pub model_error_max: Option<u32>,
    /// Window of `model_error_max`, in seconds (default 3600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 604_800)]
    pub model_error_window_secs: Option<u64>,
    /// Notify when the agent has been in an activity for a while (`--notify-on needs-input:60s`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify_activity: Vec<crate::ActivityNotify>,
    /// Start the agent at these times (`--schedule`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Box<crate::Schedule>>,
    /// Restart the agent, when it runs, at these times (`--restart-cron`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_cron: Option<Box<crate::RestartCron>>,
    /// Secrets (`ctl secret set`) given to the agent as environment variables of the same name
    /// (`--secret NAME`); an `env` value `secret:NAME` takes one under another name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// Run in a git worktree of the workspace on this branch (`--worktree BRANCH`), made at the
    /// first spawn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 200)]
    pub worktree: Option<String>,
    /// Restart the agent when these files change (`--watch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch: Option<Box<crate::Watch>>,
    // Importer fields (supervisord `autorestart=unexpected` + `exitcodes`, `autostart=false`).
    /// Exit codes that are expected (`--expected-exit-code`): with `auto_restart`, an exit with
    /// one of them is not restarted and leaves the agent `exited`; any other exit, a signal
    /// included, is restarted. Empty: code 0 is the clean one and `auto_restart` restarts every
    /// exit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(max_items = 256)]
    pub expected_exit_codes: Vec<i32>,
    /// Create the agent stopped (`spawn --no-autostart`): it runs once an operator starts it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub no_autostart: bool,
    /// Run this many copies (`--instances N`), named `NAME-0` … `NAME-(N-1)`, each with
    /// `CELISTRA_INSTANCE` set to its number; `NAME` then names the group (`ctl scale NAME N`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1000)]
    pub instances: Option<u32>,
    /// A listening socket the daemon binds once and hands to the agent (every instance of a
    /// group) as fd 3, with `LISTEN_FDS=1` and `LISTEN_PID` (systemd socket activation): `PORT`
    /// (loopback), `HOST:PORT` with an IP address, or an absolute Unix socket path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 108)]
    pub socket: Option<String>,
    /// Decides `ready` (`--ready-http`, `--ready-tcp`, `--ready-cmd`, `--ready-line`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<Box<crate::Probe>>,
    /// Restarts the agent after `failure_threshold` failures in a row (`--live-http`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness: Option<Box<crate::Probe>>,
    /// Start-success window in seconds (supervisord `startsecs`, PM2 `min_uptime`): a run that
    /// ends sooner is a failed start, retried within the restart ceiling even without
    /// `auto_restart`; one that lives that long is `running`. Absent: running at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 86_400)]
    pub start_secs: Option<u64>,
    /// Agents that must be started, ready or completed before this one starts (`--depends-on`);
    /// they stop after it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<crate::Dependency>,
    /// Restart the agent (gracefully, like `restart`) when its memory stays above this many bytes
    /// (`--max-memory 500M`; PM2's `max_memory_restart`). Sampled every 2 s: two samples in a row
    /// above it restart it. Unlike `memory_max`, nothing is killed by the kernel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1_048_576)]
    pub memory_restart: Option<u64>,
}

fn is_false(value: &bool) -> bool {
    !value
}

/// Body of `PATCH /v1/agents/{agent}`: the fields to change; absent (or null) fields stay as they are.
/// Changes apply from the next spawn; `restart: true` restarts a running agent at once so they do.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(
        max_length = 64,
        pattern = "^(?!ag-[a-z0-9]{4,}$)[A-Za-z0-9_][A-Za-z0-9._-]*$"
    )]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 65536)]
    pub command: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^/")]
    pub workspace: Option<String>,
    /// Replaces the whole environment map.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_restart: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<Signal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 86_400_000)]
    pub stop_timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 10_000)]
    pub restart_max: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 86_400)]
    pub restart_window_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 86_400_000)]
    pub backoff_initial_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 86_400_000)]
    pub backoff_max_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 86_400)]
    pub backoff_reset_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 65_536)]
    pub scrollback_kb: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_pty: Option<bool>,
    /// Replaces the added capability tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Vec<String>>,
    /// Replaces the dropped capability tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_capabilities: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 32, pattern = "^[A-Za-z0-9_.][A-Za-z0-9_.-]*$")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 4_194_304)]
    pub memory_max: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 4_194_304)]
    pub pids_max: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 10_000)]
    pub cpu_weight: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 32, pattern = "^[a-z0-9][a-z0-9_-]*$")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 4096)]
    pub limit_input: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 10_000)]
    pub model_error_max: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 604_800)]
    pub model_error_window_secs: Option<u64>,
    /// Replaces the activity notifications.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_activity: Option<Vec<crate::ActivityNotify>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<crate::Schedule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_cron: Option<crate::RestartCron>,
    /// Remove the schedule (`set --no-schedule`): the agent no longer starts by itself.
    #[serde(default, skip_serializing_if = "is_false")]
    pub clear_schedule: bool,
    /// Remove the `restart_cron` (`set --no-restart-cron`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub clear_restart_cron: bool,
    /// Replaces the secrets the agent gets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<Vec<String>>,
    /// Replaces the file watching (`--watch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch: Option<crate::Watch>,
    /// Stop watching files (`set --no-watch`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub clear_watch: bool,
    /// Restart the agent now so the change takes effect.
    #[serde(default)]
    pub restart: bool,
    // Importer fields.
    /// Replaces the expected exit codes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_items = 256)]
    pub expected_exit_codes: Option<Vec<i32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_autostart: Option<bool>,
    /// Only for a group's template (`apply`); an instance is scaled with `ctl scale`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1000)]
    pub instances: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 108)]
    pub socket: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<crate::Probe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness: Option<crate::Probe>,
    /// Remove the readiness probe (`set --no-ready`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub clear_readiness: bool,
    /// Remove the liveness probe (`set --no-live`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub clear_liveness: bool,
    /// 0 removes the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 86_400)]
    pub start_secs: Option<u64>,
    /// Replaces the dependencies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depends_on: Option<Vec<crate::Dependency>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1_048_576)]
    pub memory_restart: Option<u64>,
    /// Remove the memory restart threshold (`set --no-max-memory`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub clear_memory_restart: bool,
}

/// Body of `POST /v1/agents/{agent}/rename`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenameRequest {
    /// Letters, digits, `.`, `_`, `-`, at most 64 characters, not shaped like an id.
    #[schema(
        max_length = 64,
        pattern = "^(?!ag-[a-z0-9]{4,}$)[A-Za-z0-9_][A-Za-z0-9._-]*$"
    )]
    pub name: String,
}

/// Query of `DELETE /v1/agents/{agent}`: what happens to a `--worktree` agent's worktree. By
/// default a clean worktree is removed (its branch stays) and one holding uncommitted or untracked
/// work is refused (409, listing the files).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RemoveQuery {
    /// Keep the worktree and its branch; only the agent goes.
    #[serde(default)]
    pub keep_worktree: bool,
    /// Remove the worktree even with uncommitted or untracked work in it (the branch and its
    /// commits stay).
    #[serde(default)]
    pub discard_worktree: bool,
}

/// Body of `POST /v1/agents/{agent}/kill`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KillRequest {
    pub signal: Signal,
}

/// The settings an agent's current (or last) run was spawned with, defaults resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EffectiveSettings {
    pub stop_signal: Signal,
    pub stop_timeout_ms: u64,
    pub restart_max: u32,
    pub restart_window_secs: u64,
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    pub backoff_reset_secs: u64,
    pub scrollback_kb: u32,
}

/// An agent as `ls` and `status` show it. Environment values are never shown here (see
/// `GET /v1/agents/{agent}/spec`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AgentInfo {
    /// `ag-` followed by 4 or more lowercase letters and digits.
    pub id: String,
    pub name: String,
    pub state: AgentState,
    /// Pid of the agent's process (its session and process-group leader) while one exists.
    pub pid: Option<u32>,
    /// Restarts since the operator last spawned or started it.
    pub restarts: u32,
    /// Exit code of the last run, when it exited normally.
    pub exit_code: Option<i32>,
    /// Signal that ended the last run, e.g. `SIGKILL`.
    pub exit_signal: Option<String>,
    pub command: String,
    pub workspace: String,
    pub env_keys: Vec<String>,
    pub auto_restart: bool,
    /// Which surface spawned it: `cli`, `api`, `config`, …
    pub source: String,
    /// Run counter: 1 for the first run, +1 for every spawn of a new process.
    pub run: u64,
    pub created_at_ms: u64,
    pub started_at_ms: Option<u64>,
    pub exited_at_ms: Option<u64>,
    /// When the next restart is due (state `backoff`).
    pub next_restart_at_ms: Option<u64>,
    /// Why the last spawn failed, if it did.
    pub last_error: Option<String>,
    pub settings: EffectiveSettings,
    pub mode: crate::IoMode,
    /// How the current (or last) run was confined; absent before the first spawn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<crate::RunSandbox>,
    /// Which AI agent CLI it runs (its spec's `kind`, or guessed from its command); `generic`
    /// when not one the daemon knows.
    #[serde(default)]
    pub kind: String,
    /// What it is doing and why; absent before its first signal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activity: Option<crate::ActivityInfo>,
    /// How its last run ended, or its last turn failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_class: Option<Box<crate::ExitClassification>>,
    /// The usage limit it waits on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<Box<crate::LimitWait>>,
    /// Restarts after transient model errors in the current window (`model_error_max`).
    #[serde(default)]
    pub model_errors: u32,
    /// Its schedule (from its spec), for `status` and the dashboard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Box<crate::Schedule>>,
    /// Its `restart_cron` (from its spec).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_cron: Option<Box<crate::RestartCron>>,
    /// When its schedule next starts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run_at_ms: Option<u64>,
    /// When its `restart_cron` next restarts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_restart_cron_at_ms: Option<u64>,
    /// The git worktree it runs in (`--worktree`), as a path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worktree: Option<String>,
    /// Its file watching (from its spec).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch: Option<Box<crate::Watch>>,
    /// Whether its readiness probe passes in this run; absent without a readiness probe. A
    /// rolling restart waits for `ready != false` and state `running`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
    /// Its readiness probe's last result in this run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<Box<crate::ProbeStatus>>,
    /// Its liveness probe's last result in this run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness: Option<Box<crate::ProbeStatus>>,
    /// What it waits for (state `waiting`), e.g. `db (ready)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
    /// Its spec's `depends_on`: what it starts after and stops before.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<crate::Dependency>,
    /// CPU and memory as last sampled (every 2 s) while it has a process; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// An agent's resource use as the daemon last sampled it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Usage {
    /// CPU load over the last sampling interval, in percent of one core (200 is two busy cores).
    pub cpu_percent: f32,
    /// Memory in use, in bytes (see [`AgentUsage::scope`]).
    pub memory_bytes: u64,
}

/// `cpu_percent` is computed from two CPU-time counters and a positive interval, never NaN, so
/// equality is total.
impl Eq for Usage {}

/// Body of `POST /v1/apply`: make the daemon's agents match `agents`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplyRequest {
    pub agents: Vec<AgentSpec>,
    /// Remove agents that are not in `agents`.
    #[serde(default)]
    pub prune: bool,
    /// Report what would be done without doing it.
    #[serde(default)]
    pub dry_run: bool,
}

/// What `apply` did (or would do), by agent name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ApplyReport {
    pub created: Vec<String>,
    pub updated: Vec<String>,
    pub unchanged: Vec<String>,
    pub removed: Vec<String>,
    pub dry_run: bool,
}

/// Body of `POST /v1/daemon/stop`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DaemonStopRequest {
    /// Leave the agents running in the keeper, for the next daemon to take over; else they are
    /// stopped gracefully (and come back on the next start).
    #[serde(default)]
    pub keep_agents: bool,
}

/// Body of `POST /v1/daemon/upgrade`: nothing to choose; the daemon re-executes its binary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DaemonUpgradeRequest {}

/// Answer of `POST /v1/daemon/stop` and `/v1/daemon/upgrade`: the daemon that was asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DaemonLeaving {
    pub pid: u32,
    pub version: String,
    pub started_at_ms: u64,
}

/// Body of `GET /v1/health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    pub status: String,
    pub version: String,
    /// Stable id of this machine's daemon state.
    pub machine_id: String,
    /// The machine's name in a fleet (`--machine-name`, kept in the state directory; by default
    /// the host name's first label): a lower-case DNS label.
    #[serde(default)]
    pub machine_name: String,
    pub hostname: String,
    pub pid: u32,
    pub started_at_ms: u64,
    pub agents: u32,
    pub agents_running: u32,
    /// Whether per-agent cgroups are in use (every descendant is tracked and killed with its agent).
    pub cgroups: bool,
    pub history: crate::HistoryHealth,
    /// The audit log: its size and its last verification.
    pub audit: AuditHealth,
    /// The TCP port's TLS, when it speaks HTTPS (`--tls`, `--tls-cert`); `null` for plain HTTP.
    #[serde(default)]
    pub tls: Option<TlsHealth>,
}

/// The TLS part of `GET /v1/health`: which certificate the daemon serves now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TlsHealth {
    /// SHA-256 of the served end-entity certificate (its DER bytes) as 64 lowercase hex digits.
    /// Clients pin it (`ctl --fingerprint`), and accept it with or without colons between bytes.
    pub fingerprint_sha256: String,
    /// `generated`: the daemon's own self-signed certificate (`tls-cert.pem` in its state
    /// directory); `files`: the operator's `--tls-cert`/`--tls-key`, reloaded when they change.
    pub source: String,
    /// Why the latest change of `--tls-cert`/`--tls-key` was not taken (the previous pair is still
    /// served); absent once a good pair is loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reload_error: Option<String>,
}

/// The audit log's part of `GET /v1/health`. A failed verification also turns `status` to
/// `audit_verify_failed`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditHealth {
    pub entries: u64,
    /// The last verification (hourly, and on `POST /v1/audit/verify`), if any ran yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verification: Option<crate::AuditVerification>,
}

/// One running agent's resource use, from `GET /v1/usage`: the daemon's last sample (every 2 s).
/// CPU load is `cpu_percent`, or from two readings `Δcpu_usec / Δtime`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AgentUsage {
    pub agent_id: String,
    /// CPU time used by the agent's processes, in microseconds.
    pub cpu_usec: u64,
    /// Memory in use, in bytes.
    pub memory_bytes: u64,
    /// `cgroup`: the whole agent (every process it started), or `process`: its process tree from
    /// `/proc` (no per-agent cgroup on this machine; the sum of the processes' resident sets).
    pub scope: String,
    /// When it was read (ms since the epoch).
    pub time_ms: u64,
    /// CPU load since the previous reading, in percent of one core; absent for a run's first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<f32>,
}

/// Body of `POST /v1/groups/{group}/scale`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScaleRequest {
    /// How many instances the group should have; the highest-numbered ones are added or removed.
    #[schema(minimum = 1, maximum = 1000)]
    pub instances: u32,
}

/// A group of instances (`instances` in a spec), as `scale` and `rolling-restart` answer it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GroupInfo {
    pub name: String,
    /// The instances' names, `NAME-0` first.
    pub instances: Vec<String>,
    /// The shared listening socket, as its spec gives it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<String>,
}
/// See [`Usage`]: `cpu_percent` is never NaN.
impl Eq for AgentUsage {}
