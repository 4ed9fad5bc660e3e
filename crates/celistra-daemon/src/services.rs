//! What the daemon's parts share, built once in `run()`: the event bus, the audit log, the agents'
//! store, the history, cgroups and limits, the sandbox control, the agents' sockets, the approval
//! broker, the notification channels and the secrets; plus the few operations that need two of them at once
//! (reading `config.json` and recording its changes; verifying the audit log and announcing an
//! altered one). Nothing here knows the supervisor: what services need of the agents goes through
//! [`AgentDirectory`].

use std::sync::Arc;

use celistra_core::config::DaemonConfig;
use celistra_history::History;
use celistra_proto::{ApiError, Approval, AuditVerification, ErrorCode, EventKind, NoticeKind};
use celistra_sandbox::{CgroupRoot, ResourceControl};
use tokio_util::sync::CancellationToken;

use crate::approvals::Broker;
use crate::asks::AskSockets;
use crate::audit::{Auditor, Scope, VERIFY_EVERY};
use crate::events::EventBus;
use crate::home::Home;
use crate::notify::Notifications;
use crate::sandbox::SandboxControl;
use crate::store::Store;

#[derive(Debug)]
pub(crate) struct Services {
    pub home: Home,
    pub events: Arc<EventBus>,
    /// The tamper-evident audit log of privileged actions.
    pub audit: Arc<Auditor>,
    pub store: Arc<Store>,
    pub history: History,
    pub cgroups: Option<CgroupRoot>,
    /// The keeper, parent of every agent (`None` for a daemon run without its binary, which
    /// cannot start agents).
    pub keeper: Option<celistra_sandbox::keeper::Keeper>,
    /// Where memory, process and CPU limits are enforced.
    pub limits: ResourceControl,
    /// The master switch, grants, and each run's confinement.
    pub sandbox: SandboxControl,
    /// Each agent's socket for asking approval.
    pub asks: AskSockets,
    /// Pending and recent approval requests.
    pub approvals: Arc<Broker>,
    /// Where requests and decisions are announced (ntfy, webhooks, Web Push).
    pub notify: Arc<Notifications>,
    /// The encrypted secrets agents may be given (`secrets.json`).
    pub secrets: Arc<crate::secrets::Secrets>,
    /// The listening sockets agents share (`socket`).
    pub sockets: crate::sockets::SharedSockets,
    /// `--scrollback-kb`: overrides `config.json` for agents without their own value.
    pub scrollback_kb: Option<u32>,
    /// Workspace of agents spawned without one: the daemon's `$HOME`.
    pub default_workspace: String,
    /// Environment every agent starts from: the daemon's own, less celistra's variables.
    pub base_env: Vec<(String, String)>,
    /// Runs the output readers (see `supervisor/reader_thread.rs`).
    pub readers: tokio::runtime::Handle,
    /// The daemon's own runtime, for work the readers start (approval lines).
    pub main: tokio::runtime::Handle,
    /// The screen rules of agent kinds (built in, and `agent-rules.json`).
    pub agent_rules: crate::agent_rules::AgentRules,
    /// The machine's time zone, for reset times that name none.
    pub zone: chrono_tz::Tz,
    /// What `GET /metrics` shows that is counted nowhere else.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Runs being started at once ([`SPAWNS_AT_ONCE`]).
    pub spawning: tokio::sync::Semaphore,
}

/// Most runs the daemon starts at once. The keeper starts them one after the other anyway, and
/// each start holds its plan, command line and keeper request until it is done: with a thousand
/// agents starting together, all of those were alive at once, interleaved with what the agents
/// keep, and left the daemon's heap 13 MiB and the keeper's 6 MiB larger once they ran.
pub(crate) const SPAWNS_AT_ONCE: usize = 16;

/// An agent as services see it.
#[derive(Debug, Clone)]
pub(crate) struct AgentRef {
    pub name: String,
    /// The history's id of its current (or last) run.
    pub history_run: u64,
}

/// What services need to know of, and do to, the agents, without depending on the supervisor
/// that keeps them.
pub(crate) trait AgentDirectory: Send + Sync {
    /// The agent with this id, if there is one.
    fn lookup(&self, agent_id: &str) -> Option<AgentRef>;
    /// Shows (or clears) a pending approval request in the agent's state, while it runs.
    fn set_waiting_approval(&self, agent_id: &str, waiting: bool);
    /// A structured signal from the agent's hooks (`celistrad hook <kind>`).
    fn report_hook(
        &self,
        agent_id: &str,
        report: &celistra_proto::HookReport,
    ) -> Result<(), ApiError>;
}

/// Who hears of approval requests and decisions: the notification channels (a trait, so the
/// approval flow can be tested without them).
pub(crate) trait Announce: Send + Sync {
    fn announce(&self, kind: NoticeKind, approval: &Approval);
}

impl Announce for Services {
    /// Tells every channel (read afresh from `config.json`) of a request or a decision.
    fn announce(&self, kind: NoticeKind, approval: &Approval) {
        match self.config() {
            Ok(config) => self.notify.announce(&config.notifications, kind, approval),
            Err(e) => tracing::warn!("no notifications for {}: {}", approval.id, e.message),
        }
    }
}

impl Services {
    /// The keeper, to spawn through; an error saying why agents cannot start without it.
    pub(crate) fn keeper(&self) -> Result<&celistra_sandbox::keeper::Keeper, ApiError> {
        match &self.keeper {
            Some(keeper) if keeper.is_alive() => Ok(keeper),
            Some(_) => Err(ApiError::new(
                ErrorCode::Internal,
                celistra_sandbox::keeper::KeeperError::Gone.to_string(),
            )),
            None => Err(ApiError::new(
                ErrorCode::Internal,
                "this daemon was started without its own binary, so it has no keeper and cannot \
                 start agents; run the `celistrad` binary",
            )),
        }
    }

    /// Reads `config.json` afresh (absent means defaults), so edits apply to the next spawn, and
    /// records a change of it in the audit log.
    pub(crate) fn config(&self) -> Result<DaemonConfig, ApiError> {
        let path = self.home.config_file();
        let read = std::fs::read_to_string(&path);
        match &read {
            Ok(text) => self.audit.note_file("config.json", Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.audit.note_file("config.json", None);
            }
            Err(_) => {}
        }
        match read {
            Ok(text) => DaemonConfig::parse(&text, &path.display().to_string()).map_err(|e| {
                ApiError::new(
                    ErrorCode::ConfigInvalid,
                    format!("{e}; fix the file and retry"),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DaemonConfig::default()),
            Err(e) => Err(ApiError::new(
                ErrorCode::ConfigInvalid,
                format!("cannot read {}: {e}", path.display()),
            )),
        }
    }

    /// Verifies the audit log; an altered log is also an `audit_verify_failed` event (and turns
    /// `/v1/health`'s status).
    pub(crate) async fn verify_audit(&self, scope: Scope) -> AuditVerification {
        let verification = self.audit.verify(scope).await;
        if !verification.ok {
            self.events.publish(EventKind::AuditVerifyFailed {
                first_bad_seq: verification.first_bad_seq,
                problem: verification.problem.clone().unwrap_or_default(),
            });
        }
        verification
    }

    /// Every [`VERIFY_EVERY`] until `stop`: verifies what was added since the last check and, when
    /// it is sound, signs a checkpoint (a damaged log is never re-signed).
    pub(crate) async fn verify_audit_periodically(self: Arc<Self>, stop: CancellationToken) {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(VERIFY_EVERY) => {}
            }
            if self.verify_audit(Scope::SinceLastCheck).await.ok {
                self.audit.sign_checkpoint().await;
            }
        }
    }
}
