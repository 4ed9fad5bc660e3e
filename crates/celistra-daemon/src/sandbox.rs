//! The daemon's side of the sandbox: the persisted master switch, the grants file read at every
//! spawn, and turning an agent's spec into the confinement of its next run (capabilities → policy →
//! namespaces/Landlock/seccomp plan, user, resource limits).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use celistra_core::capability::{self, Capability, GrantsFile, Resolution, SpawnContext};
use celistra_proto::{
    AgentSpec, ApiError, CapabilitySource, ErrorCode, RunSandbox, SandboxExplanation, SandboxStatus,
};
use celistra_sandbox::{
    AttributedBlock, BlockMonitor, CgroupRoot, Credentials, MacosGrants, Network, Policy,
    ResourceLimits, SandboxPlan, Tools, agent_of_pid,
};
use serde::{Deserialize, Serialize};

use crate::home::{Home, write_atomic_private};
use crate::now_ms;

/// `sandbox.json`: the master switch and who turned it last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SwitchFile {
    version: u32,
    enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    changed_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    changed_at_ms: Option<u64>,
}

impl Default for SwitchFile {
    fn default() -> SwitchFile {
        SwitchFile {
            version: 1,
            enabled: true,
            changed_by: None,
            changed_at_ms: None,
        }
    }
}

/// The sandbox settings of one daemon.
#[derive(Debug)]
pub(crate) struct SandboxControl {
    switch_path: PathBuf,
    grants_path: PathBuf,
    switch: Mutex<SwitchFile>,
    /// The binary whose launcher mode sets up each sandbox (`celistrad` itself); `None`
    /// when the daemon runs inside a program that has no launcher, which then cannot sandbox.
    launcher: Option<PathBuf>,
    /// The daemon's state directory: never visible inside a sandbox.
    state_dir: PathBuf,
    /// How kernel blocks are observed, or why not.
    block_reporting: Mutex<String>,
    /// Kernel audit sessions of recent runs and their agents, while blocks are reported (one
    /// session per run; see [`SandboxControl::note_run`]).
    sessions: Arc<Mutex<Sessions>>,
    daemon_is_root: bool,
    audit: Arc<crate::audit::Auditor>,
}

/// Everything a run's confinement needs, worked out before the fork.
pub(crate) struct Confinement {
    pub info: RunSandbox,
    pub sources: Vec<CapabilitySource>,
    pub plan: Option<SandboxPlan>,
    pub credentials: Option<Credentials>,
    pub limits: ResourceLimits,
}

fn spawn_refused(message: String) -> ApiError {
    ApiError::new(ErrorCode::SpawnFailed, message)
}

impl SandboxControl {
    /// Reads `sandbox.json` (absent: the sandbox is on). A malformed file stops the daemon from
    /// starting rather than guessing whether the operator wanted agents confined.
    pub(crate) fn load(
        home: &Home,
        launcher: Option<PathBuf>,
        audit: Arc<crate::audit::Auditor>,
    ) -> Result<SandboxControl, crate::Error> {
        let switch_path = home.dir.join("sandbox.json");
        let switch = match std::fs::read_to_string(&switch_path) {
            Ok(text) => {
                celistra_core::json::parse::<SwitchFile>(&text, &switch_path.display().to_string())
                    .map_err(|e| {
                        crate::Error::Invalid(format!(
                            "{e}; fix the file or delete it (the sandbox is then on)"
                        ))
                    })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => SwitchFile::default(),
            Err(e) => {
                return Err(crate::Error::io(
                    format!("cannot read {}", switch_path.display()),
                    e,
                ));
            }
        };
        if let Some(tools) = launcher.clone().and_then(|daemon| Tools::find(daemon).ok())
            && tools.launcher == tools.daemon
        {
            tracing::info!(
                "celistra-launch is not next to {}: sandboxed agents start through `celistrad \
                 __sandbox-exec`, about 2 ms slower each; install both binaries together",
                tools.daemon.display()
            );
        }
        let state_dir = std::fs::canonicalize(&home.dir).unwrap_or_else(|_| home.dir.clone());
        Ok(SandboxControl {
            switch_path,
            grants_path: home.dir.join("capabilities.json"),
            switch: Mutex::new(switch),
            launcher,
            state_dir,
            block_reporting: Mutex::new("not started".into()),
            sessions: Arc::default(),
            daemon_is_root: rustix::process::geteuid().is_root(),
            audit,
        })
    }

    pub(crate) fn enabled(&self) -> bool {
        self.switch
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .enabled
    }

    /// Turns the master switch and persists it before answering.
    pub(crate) fn set_enabled(&self, enabled: bool, actor: &str) -> Result<(), ApiError> {
        let mut switch = self.switch.lock().unwrap_or_else(PoisonError::into_inner);
        let next = SwitchFile {
            version: 1,
            enabled,
            changed_by: Some(actor.to_owned()),
            changed_at_ms: Some(now_ms()),
        };
        let text = serde_json::to_vec_pretty(&next).map_err(|e| {
            ApiError::new(
                ErrorCode::Internal,
                format!("cannot encode the switch: {e}"),
            )
        })?;
        write_atomic_private(&self.switch_path, &text).map_err(|e| {
            ApiError::new(
                ErrorCode::Internal,
                format!("cannot save {}: {e}", self.switch_path.display()),
            )
        })?;
        *switch = next;
        Ok(())
    }

    /// The login uid that starts a run's own audit session, when blocks are reported.
    pub(crate) fn audit_login_uid(&self, credentials: Option<&Credentials>) -> Option<u32> {
        lock(&self.sessions).reporting.then(|| {
            credentials.map_or_else(|| rustix::process::geteuid().as_raw(), |user| user.uid)
        })
    }

    /// Remembers the audit session of a run that just started (as its keeper read it), so its
    /// blocks are attributed even after its processes exit.
    pub(crate) fn note_run(&self, agent_id: &str, audit_session: Option<u32>) {
        let mut sessions = lock(&self.sessions);
        if sessions.reporting
            && let Some(session) = audit_session
        {
            sessions.insert(session, agent_id);
        }
    }

    pub(crate) fn set_block_reporting(&self, how: String) {
        *self
            .block_reporting
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = how;
    }

    pub(crate) fn status(&self) -> SandboxStatus {
        let switch = self
            .switch
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let tools = self.tools();
        SandboxStatus {
            enabled: switch.enabled,
            changed_by: switch.changed_by,
            changed_at_ms: switch.changed_at_ms,
            launcher: tools
                .as_ref()
                .ok()
                .map(|tools| tools.launcher.display().to_string()),
            problem: tools.err(),
            landlock_abi: celistra_sandbox::kernel_landlock_abi(),
            block_reporting: self
                .block_reporting
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }

    fn tools(&self) -> Result<Tools, String> {
        let launcher = self.launcher.clone().ok_or_else(|| {
            "this daemon was started without its sandbox launcher; run the `celistrad` binary"
                .to_owned()
        })?;
        Tools::find(launcher).map_err(|e| e.to_string())
    }

    /// Reads `capabilities.json` afresh (absent: no grants). A malformed file refuses the spawn.
    fn grants(&self) -> Result<GrantsFile, ApiError> {
        let read = std::fs::read_to_string(&self.grants_path);
        match &read {
            Ok(text) => self.audit.note_file("capabilities.json", Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.audit.note_file("capabilities.json", None);
            }
            Err(_) => {}
        }
        match read {
            Ok(text) => {
                GrantsFile::parse(&text, &self.grants_path.display().to_string()).map_err(|e| {
                    ApiError::new(
                        ErrorCode::ConfigInvalid,
                        format!("{e}; spawns are refused until the grants file is fixed"),
                    )
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(GrantsFile::default()),
            Err(e) => Err(ApiError::new(
                ErrorCode::ConfigInvalid,
                format!("cannot read {}: {e}", self.grants_path.display()),
            )),
        }
    }

    /// Works out how the next run of `spec` is confined. `explain` builds the sandbox even when the
    /// agent would run unsandboxed, so an operator can see what turning the switch on would do.
    /// `worktree_git_dir`: the run is in a git worktree (`--worktree`) whose commits write this
    /// common git directory, which an agent that may write its workspace may then write too
    /// (origin `worktree` in the capability sources).
    pub(crate) fn confine(
        &self,
        spec: &AgentSpec,
        source: &str,
        workspace: &Path,
        ask_socket: Option<&Path>,
        worktree_git_dir: Option<&Path>,
    ) -> Result<Confinement, ApiError> {
        let grants = self.grants()?;
        let mut resolution = capability::resolve(
            &spec.capabilities,
            &spec.drop_capabilities,
            &grants,
            &SpawnContext {
                name: &spec.name,
                source,
                command: &spec.command,
            },
        )
        .map_err(spawn_refused)?;
        if let Some(git_dir) = worktree_git_dir {
            grant_worktree_git_dir(&mut resolution, git_dir);
        }
        let credentials = self.credentials(spec, workspace)?;
        let unsandboxed_because = if resolution.has(&Capability::Privileged) {
            Some("privileged".to_owned())
        } else if !self.enabled() {
            Some("switched_off".to_owned())
        } else {
            None
        };
        let plan = match unsandboxed_because {
            Some(_) => None,
            None => Some(self.plan(&resolution, workspace, ask_socket)?),
        };
        let user = match &credentials {
            Some(user) => format!("{} ({})", user.name, user.uid),
            None => {
                let own = Credentials::current().map_err(|e| spawn_refused(e.to_string()))?;
                format!("{} ({})", own.name, own.uid)
            }
        };
        Ok(Confinement {
            info: RunSandbox {
                sandboxed: plan.is_some(),
                unsandboxed_because,
                capabilities: resolution.tokens(),
                user,
                limits: vec![],
            },
            sources: resolution
                .contributions
                .iter()
                .map(|c| CapabilitySource {
                    origin: c.origin.clone(),
                    capabilities: c.capabilities.clone(),
                })
                .collect(),
            plan,
            credentials,
            limits: ResourceLimits {
                memory_max: spec.memory_max,
                pids_max: spec.pids_max,
                cpu_weight: spec.cpu_weight,
            },
        })
    }

    /// The answer of `ctl sandbox explain`: the confinement, down to the kernel's rules.
    pub(crate) fn explain(
        &self,
        spec: &AgentSpec,
        source: &str,
        workspace: &Path,
        worktree_git_dir: Option<&Path>,
    ) -> Result<SandboxExplanation, ApiError> {
        let confinement = self.confine(spec, source, workspace, None, worktree_git_dir)?;
        let mut notes = vec![];
        if let Some(because) = &confinement.info.unsandboxed_because {
            notes.push(format!(
                "runs UNSANDBOXED ({because}): no namespaces, Landlock or seccomp apply"
            ));
        }
        for token in ["screen_capture", "accessibility", "full_disk_access"] {
            if confinement.info.capabilities.iter().any(|c| c == token) {
                notes.push(format!(
                    "`{token}` is recorded but only has an effect on macOS"
                ));
            }
        }
        let description = confinement.plan.as_ref().map(SandboxPlan::describe);
        let (launch_argv, mounts, landlock, seccomp) = match description {
            Some(description) => {
                notes.extend(description.notes);
                let mut argv = description.launch_argv;
                argv.extend(["/bin/sh".into(), "-c".into(), spec.command.clone()]);
                (
                    argv,
                    description.mounts,
                    description.landlock,
                    description.seccomp,
                )
            }
            None => (vec![], vec![], vec![], vec![]),
        };
        Ok(SandboxExplanation {
            run: confinement.info,
            sources: confinement.sources,
            launch_argv,
            mounts,
            landlock,
            seccomp,
            notes,
        })
    }

    fn plan(
        &self,
        resolution: &Resolution,
        workspace: &Path,
        ask_socket: Option<&Path>,
    ) -> Result<SandboxPlan, ApiError> {
        let workspace = std::fs::canonicalize(workspace)
            .map_err(|e| spawn_refused(format!("workspace {}: {e}", workspace.display())))?;
        if workspace.starts_with(&self.state_dir) {
            return Err(spawn_refused(format!(
                "workspace {} is inside the daemon's state directory {}, which a sandbox never sees; \
                 use another workspace",
                workspace.display(),
                self.state_dir.display()
            )));
        }
        let mut policy = policy_for(resolution, workspace, self.state_dir.clone());
        policy.ask_socket = ask_socket.map(Path::to_owned);
        let tools = self.tools().map_err(spawn_refused)?;
        SandboxPlan::new(&policy, &tools).map_err(|e| spawn_refused(e.to_string()))
    }

    /// The user `spec`'s runs execute as, when it is not the daemon's own (for the git commands
    /// run on an agent's behalf, so what they make is the agent's).
    pub(crate) fn run_as(
        &self,
        spec: &AgentSpec,
        workspace: &Path,
    ) -> Result<Option<Credentials>, ApiError> {
        self.credentials(spec, workspace)
    }

    /// The user a run executes as, when it is not the daemon's own: `--user`, or, for a root daemon,
    /// the owner of the workspace.
    fn credentials(
        &self,
        spec: &AgentSpec,
        workspace: &Path,
    ) -> Result<Option<Credentials>, ApiError> {
        let own_uid = rustix::process::geteuid().as_raw();
        let wanted = match &spec.user {
            Some(user) => Credentials::lookup(user).map_err(|e| spawn_refused(e.to_string()))?,
            None if self.daemon_is_root => {
                Credentials::owner_of(workspace).map_err(|e| spawn_refused(e.to_string()))?
            }
            None => return Ok(None),
        };
        if wanted.uid == own_uid {
            return Ok(None);
        }
        if !self.daemon_is_root {
            return Err(spawn_refused(format!(
                "the daemon runs as uid {own_uid} and cannot start agents as `{}` ({}); run the \
                 daemon as root or leave out --user",
                wanted.name, wanted.uid
            )));
        }
        Ok(Some(wanted))
    }
}

impl SandboxControl {
    /// Starts reading the kernel's block decisions and hands each one, attributed to its agent, to
    /// `sink`. Needs root (audit records) and per-agent cgroups (to tell whose process was
    /// blocked); otherwise blocks are still enforced, and `GET /v1/sandbox` says why they are not
    /// reported.
    pub(crate) fn monitor_blocks(
        &self,
        cgroups: Option<&CgroupRoot>,
        sink: impl Fn(AttributedBlock) + Send + 'static,
    ) -> Option<BlockMonitor> {
        if !rustix::process::geteuid().is_root() {
            self.set_block_reporting(
                "off: only a daemon running as root can read the kernel's audit records; blocks \
                 are still enforced, and the agent sees EACCES/EPERM"
                    .into(),
            );
            return None;
        }
        let Some(instance) = cgroups.map(|root| root.path().to_owned()) else {
            self.set_block_reporting(
                "off: blocks are attributed to agents by cgroup, and per-agent cgroups are \
                 unavailable (see the daemon's log); blocks are still enforced"
                    .into(),
            );
            return None;
        };
        let sessions = Arc::clone(&self.sessions);
        let started = BlockMonitor::start(
            move |pid, session| {
                session
                    .and_then(|session| lock(&sessions).agent(session))
                    .or_else(|| agent_of_pid(pid, &instance))
            },
            sink,
        );
        match started {
            Ok((monitor, report)) => {
                let mut how =
                    "on: Landlock and seccomp denials from kernel audit records".to_owned();
                if report.enabled_kernel_audit {
                    tracing::info!("enabled kernel audit to record sandbox blocks");
                    how.push_str(" (the daemon enabled kernel audit)");
                }
                self.set_block_reporting(how);
                lock(&self.sessions).reporting = true;
                Some(monitor)
            }
            Err(e) => {
                tracing::info!("sandbox blocks are not reported: {e}");
                self.set_block_reporting(format!("off: {e}"));
                None
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Audit sessions of the last few runs of each agent. Blocks of a run may be read after it ended,
/// so a session is kept until the agent has started a few more.
#[derive(Debug, Default)]
struct Sessions {
    /// Whether blocks are reported at all (else no session is started).
    reporting: bool,
    agents: std::collections::HashMap<u32, String>,
}

/// Sessions kept per agent.
const SESSIONS_PER_AGENT: usize = 4;

impl Sessions {
    fn insert(&mut self, session: u32, agent_id: &str) {
        let mut own: Vec<u32> = self
            .agents
            .iter()
            .filter(|(_, agent)| agent.as_str() == agent_id)
            .map(|(session, _)| *session)
            .collect();
        // Sessions are numbered upwards by the kernel: the smallest are the oldest.
        own.sort_unstable();
        for old in own
            .iter()
            .take((own.len() + 1).saturating_sub(SESSIONS_PER_AGENT))
        {
            self.agents.remove(old);
        }
        self.agents.insert(session, agent_id.to_owned());
    }

    fn agent(&self, session: u32) -> Option<String> {
        self.agents.get(&session).cloned()
    }
}

/// A worktree's commits write the repository's common git directory (objects, refs, the
/// worktree's own index under `worktrees/`): an agent that may write its workspace may write it.
fn grant_worktree_git_dir(resolution: &mut Resolution, git_dir: &Path) {
    if !resolution.has(&Capability::WorkspaceRw) {
        return;
    }
    let grant = Capability::Write(git_dir.display().to_string());
    resolution.contributions.push(capability::Contribution {
        origin: "worktree".into(),
        capabilities: vec![grant.to_string()],
    });
    resolution.effective.insert(grant);
}

/// Turns capabilities into the concrete permissions every platform's sandbox is generated from.
fn policy_for(resolution: &Resolution, workspace: PathBuf, state_dir: PathBuf) -> Policy {
    let mut read = vec![];
    let mut write = vec![];
    let mut exec = vec![];
    let mut connect = vec![];
    let mut bind = vec![];
    for capability in &resolution.effective {
        match capability {
            Capability::Read(path) => read.push(canonical(path)),
            Capability::Write(path) => write.push(canonical(path)),
            Capability::Exec(path) => exec.push(canonical(path)),
            Capability::Connect(port) => connect.push(*port),
            Capability::Bind(port) => bind.push(*port),
            _ => {}
        }
    }
    let network = if resolution.has(&Capability::Network) {
        Network::Full
    } else if connect.is_empty() && bind.is_empty() {
        Network::None
    } else {
        Network::Ports { connect, bind }
    };
    Policy {
        workspace,
        workspace_writable: resolution.has(&Capability::WorkspaceRw),
        read_anywhere: resolution.has(&Capability::ReadAnywhere),
        network,
        subprocess: resolution.has(&Capability::Subprocess),
        read,
        write,
        exec,
        hidden: vec![state_dir],
        macos: MacosGrants {
            screen_capture: resolution.has(&Capability::ScreenCapture),
            accessibility: resolution.has(&Capability::Accessibility),
            full_disk_access: resolution.has(&Capability::FullDiskAccess),
        },
        ask_socket: None,
    }
}

/// A granted path as the kernel will see it: symlinks resolved, so a rule on `/srv/link` covers what
/// the link points to. Paths that do not exist yet are kept as given.
fn canonical(path: &str) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| PathBuf::from(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolution(add: &[&str], drop: &[&str]) -> Resolution {
        let strings = |t: &[&str]| t.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        capability::resolve(
            &strings(add),
            &strings(drop),
            &GrantsFile::default(),
            &SpawnContext {
                name: "a",
                source: "cli",
                command: "true",
            },
        )
        .unwrap()
    }

    #[test]
    fn sessions_keep_the_last_few_runs_of_each_agent() {
        let mut sessions = Sessions::default();
        for session in 1..=6 {
            sessions.insert(session, "ag-a");
        }
        sessions.insert(7, "ag-b");
        assert_eq!(sessions.agent(2), None);
        assert_eq!(sessions.agent(3).as_deref(), Some("ag-a"));
        assert_eq!(sessions.agent(6).as_deref(), Some("ag-a"));
        assert_eq!(sessions.agent(7).as_deref(), Some("ag-b"));
        assert_eq!(sessions.agents.len(), SESSIONS_PER_AGENT + 1);
    }

    #[test]
    fn default_capabilities_make_the_default_policy() {
        let policy = policy_for(&resolution(&[], &[]), "/w".into(), "/state".into());
        assert!(policy.workspace_writable && policy.read_anywhere && policy.subprocess);
        assert_eq!(policy.network, Network::Full);
        assert_eq!(policy.hidden, [PathBuf::from("/state")]);
    }

    #[test]
    fn a_worktree_agent_that_writes_its_workspace_may_write_the_common_git_dir() {
        let mut writer = resolution(&[], &[]);
        grant_worktree_git_dir(&mut writer, Path::new("/src/app/.git"));
        assert!(writer.has(&Capability::Write("/src/app/.git".into())));
        assert_eq!(writer.contributions.last().unwrap().origin, "worktree");
        let mut reader = resolution(&[], &["workspace_rw"]);
        grant_worktree_git_dir(&mut reader, Path::new("/src/app/.git"));
        assert!(!reader.has(&Capability::Write("/src/app/.git".into())));
    }

    #[test]
    fn ports_limit_the_network_only_without_network() {
        let policy = policy_for(
            &resolution(&["connect:443", "bind:8080"], &["network", "subprocess"]),
            "/w".into(),
            "/s".into(),
        );
        assert_eq!(
            policy.network,
            Network::Ports {
                connect: vec![443],
                bind: vec![8080]
            }
        );
        assert!(!policy.subprocess);
        let offline = policy_for(&resolution(&[], &["network"]), "/w".into(), "/s".into());
        assert_eq!(offline.network, Network::None);
    }
}
