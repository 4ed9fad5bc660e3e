//! One agent's task: it owns the agent's process, PTY and restart history, and carries out operator
//! commands one at a time, so an agent's state changes in a single place.

use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use celistra_core::agents::{classify, clip_said};
use celistra_core::approval_line::{Decision, LineRequest, LineScanner, response_line};
use celistra_core::config::restart_policy;
use celistra_core::logtext::Stream;
use celistra_core::mask::Masker;
use celistra_core::model_trouble::{
    DEFAULT_MODEL_ERROR_MAX, DEFAULT_MODEL_ERROR_WINDOW_SECS, ModelErrorBudget, ModelErrorDecision,
    limit_resume_at,
};
use celistra_core::restart::{RestartDecision, RestartTracker};
use celistra_history::{History, RunEnd, RunStart};
use celistra_proto::{
    Activity, AgentInfo, AgentSpec, AgentState, ApiError, ApprovalStatus, CapabilitySource,
    EffectiveSettings, ErrorCode, EventKind, Evidence, ExitCause, ExitClass, ExitClassification,
    IoMode, LimitWait, RunCause, RunRecord, RunSandbox, Signal, SignalTier, TermSize,
    TerminalServerMessage, signal_name,
};
use celistra_sandbox::keeper::{AdoptedRun, KeptChild, KeptOutput, OutputStream};
use celistra_sandbox::{
    AgentCgroup, AgentLimits, ExitInfo, PtySize, SandboxReady, SpawnSpec, signal_group,
};
use tokio::net::unix::pipe;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::activity;
use super::fanout::{Fanout, Input, InputOp};
use super::mailbox::{Orders, ResumeAt};
use super::probes::{ProbeSetup, Probes};
use super::standby::{self, Standby};
use crate::actor::Actor;
use crate::approval_flow::ApprovalFlow;
use crate::now_ms;
use crate::services::Services;

/// Reply to a command: `Ok` or an error for the API.
pub(crate) type Reply = oneshot::Sender<Result<(), ApiError>>;

/// What an operator (or the daemon) asks of an agent.
#[derive(Debug)]
pub(crate) enum Command {
    /// Start if not running (resets the restart ceiling). Replies once the spawn was attempted.
    Start(Reply),
    /// Stop gracefully: stop signal to the group, grace period, then SIGKILL.
    Stop(Reply),
    /// Stop if running, then start.
    Restart(Reply),
    /// Send a signal; `HUP` hangs up the PTY. The run this ends is never restarted.
    Kill(Signal, Reply),
    /// Stop and end the task: the agent is being removed.
    Remove(Reply),
    /// Stop and end the task without changing the agent's desired state: the daemon is stopping.
    Shutdown(Reply),
    /// End the task and leave the run to the keeper: the daemon is stopping and a next one takes
    /// the run over.
    Leave(Reply),
    /// Go on waiting for a usage limit's reset that an earlier daemon was waiting for, then start.
    AwaitReset(LimitWait, Reply),
    /// Take over a run the keeper held while no daemon ran (it may have ended meanwhile).
    Adopt(Box<Adoption>, Reply),
    /// Run number `.0`'s liveness probe failed (`.1` says how): stop it and restart it.
    Unhealthy(u64, String, Reply),
    /// Wait for dependencies (`.0` names them) before starting: state `waiting`.
    Wait(String, Reply),
}

/// A run to take over from the keeper, with what the daemon that spawned it noted.
#[derive(Debug)]
pub(crate) struct Adoption {
    pub run: AdoptedRun,
    pub note: RunNote,
}

/// What a daemon notes with each run it spawns, and the keeper gives back to the next daemon.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct RunNote {
    /// The agent's run number and restart count with this run (`agents.json` may not have
    /// them yet when the daemon dies just after a start).
    pub run: u64,
    pub restarts: u32,
    pub started_at_ms: u64,
    pub settings: EffectiveSettings,
    pub sandbox: RunSandbox,
}

/// A command and the credential that gave it (`system` for the daemon itself).
#[derive(Debug)]
pub(crate) struct Order {
    pub command: Command,
    pub actor: Actor,
}

/// Everything about one agent that others may read.
#[derive(Debug)]
pub(crate) struct AgentHandle {
    pub id: String,
    pub info: InfoCell,
    pub spec: Mutex<AgentSpec>,
    pub fanout: Fanout,
    /// Orders for its task; boxed, since an order is large and most agents have none waiting.
    pub orders: Orders<Box<Order>>,
    /// History id of the current (or last) run, where the daemon's notes about the agent go.
    pub history_run: std::sync::atomic::AtomicU64,
    /// What has been seen of the current run's activity.
    pub activity: super::activity::Tracker,
    /// When a running agent waiting on a usage limit is resumed (its task sleeps until then).
    pub resume: ResumeAt,
    /// The usage sampler's last reading while the agent has a process (see `usage.rs`).
    pub sampled: Mutex<Option<celistra_proto::AgentUsage>>,
    /// Bytes of output read from the agent since the daemon started (`/metrics`).
    pub output_bytes: std::sync::atomic::AtomicU64,
}

/// An agent's [`AgentInfo`] with its JSON cached: `ls` of many agents copies bytes instead of
/// serialising every agent again. Changes go through [`InfoCell::write`], which drops the cache.
#[derive(Debug)]
pub(crate) struct InfoCell(Mutex<CachedInfo>);

#[derive(Debug)]
struct CachedInfo {
    info: AgentInfo,
    /// Exactly its length: serialising leaves up to half of a `Vec` unused, per agent.
    json: Option<Box<[u8]>>,
}

/// Read access to an agent's info.
pub(crate) struct InfoRead<'a>(MutexGuard<'a, CachedInfo>);

/// Write access to an agent's info; its cached JSON is already dropped.
pub(crate) struct InfoWrite<'a>(MutexGuard<'a, CachedInfo>);

impl std::ops::Deref for InfoRead<'_> {
    type Target = AgentInfo;
    fn deref(&self) -> &AgentInfo {
        &self.0.info
    }
}

impl std::ops::Deref for InfoWrite<'_> {
    type Target = AgentInfo;
    fn deref(&self) -> &AgentInfo {
        &self.0.info
    }
}

impl std::ops::DerefMut for InfoWrite<'_> {
    fn deref_mut(&mut self) -> &mut AgentInfo {
        &mut self.0.info
    }
}

impl InfoCell {
    pub(crate) fn new(info: AgentInfo) -> InfoCell {
        InfoCell(Mutex::new(CachedInfo { info, json: None }))
    }

    fn lock(&self) -> MutexGuard<'_, CachedInfo> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn write(&self) -> InfoWrite<'_> {
        let mut cached = self.lock();
        cached.json = None;
        InfoWrite(cached)
    }

    /// Appends the info as JSON to `out`, serialising it only if it changed since last time.
    pub(crate) fn append_json(&self, out: &mut Vec<u8>) {
        let mut cached = self.lock();
        if cached.json.is_none() {
            let json = serde_json::to_vec(&cached.info).unwrap_or_else(|_| b"null".to_vec());
            cached.json = Some(json.into_boxed_slice());
        }
        if let Some(json) = &cached.json {
            out.extend_from_slice(json);
        }
    }
}

impl AgentHandle {
    pub(crate) fn info(&self) -> InfoRead<'_> {
        InfoRead(self.info.lock())
    }

    pub(crate) fn info_mut(&self) -> InfoWrite<'_> {
        self.info.write()
    }

    pub(crate) fn spec(&self) -> MutexGuard<'_, AgentSpec> {
        self.spec.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The usage sampler's last reading, while the agent has a process.
    pub(crate) fn sampled(&self) -> MutexGuard<'_, Option<celistra_proto::AgentUsage>> {
        self.sampled.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends a command and waits for its reply.
    pub(crate) async fn ask(
        &self,
        actor: &Actor,
        make: impl FnOnce(Reply) -> Command,
    ) -> Result<(), ApiError> {
        let (reply, answer) = oneshot::channel();
        let order = Box::new(Order {
            command: make(reply),
            actor: actor.clone(),
        });
        if self.orders.give(order).is_err() {
            return Err(gone(&self.id));
        }
        answer.await.unwrap_or_else(|_| Err(gone(&self.id)))
    }
}

fn gone(id: &str) -> ApiError {
    ApiError::new(
        ErrorCode::Conflict,
        format!("agent {id} is being removed or its task has failed"),
    )
}

/// A terminal size as the sandbox takes it.
fn pty_size(size: TermSize) -> PtySize {
    PtySize {
        rows: size.rows,
        cols: size.cols,
    }
}

/// Longest wait for a run's output to be read to its end once it exited (a process that left the
/// agent's session and cgroup could hold its terminal open for ever).
const OUTPUT_DRAIN_LIMIT: Duration = Duration::from_millis(500);

/// Longest wait for a sandbox to be set up before the run counts as running anyway.
const SANDBOX_SETUP_LIMIT: Duration = Duration::from_secs(5);

/// A live process of the agent.
struct Run {
    child: KeptChild,
    /// History id of this run: its output and its record carry it.
    id: u64,
    mode: IoMode,
    readers: Vec<JoinHandle<()>>,
    started: Instant,
    cgroup: Option<AgentCgroup>,
    /// The run's resource limits: its v1 cgroups, killed with the run.
    limits: AgentLimits,
    /// How the run is confined, as `ls` and `status` show it.
    sandbox: RunSandbox,
    /// Where its capabilities came from (for the audit log).
    capability_sources: Vec<CapabilitySource>,
    /// A sandboxed run's signal that its program is starting; taken before it counts as running.
    ready: Option<SandboxReady>,
    settings: EffectiveSettings,
    /// An operator signalled this run: its end is the operator's doing and is not restarted.
    signalled: bool,
    /// Its probes, until the run counts as running and they are armed.
    probes: Vec<ProbeSetup>,
    /// The end of its `start_secs` window, while it lasts: an exit before it is a failed start.
    start_window: Option<tokio::time::Instant>,
    /// Its readiness line, as its output pumps look for it.
    readiness_line: Option<ReadinessLine>,
}

/// What a run starts with, worked out before anything starts (see `Agent::plan_run`).
struct RunPlan {
    spec: AgentSpec,
    settings: EffectiveSettings,
    workspace: String,
    confinement: crate::sandbox::Confinement,
    env: Vec<(String, String)>,
    masker: Masker,
    cgroup: Option<AgentCgroup>,
    limits: AgentLimits,
    /// A shared listening socket (`spec.socket`).
    listener: Option<Arc<OwnedFd>>,
    mode: IoMode,
    /// The PTY's size; none on pipes.
    size: Option<PtySize>,
    audit_login_uid: Option<u32>,
}

impl RunPlan {
    fn spawn_spec(&self) -> SpawnSpec<'_> {
        SpawnSpec {
            program: "/bin/sh".into(),
            args: shell_args(&self.spec.command, self.listener.is_some()),
            cwd: self.workspace.clone().into(),
            env: self.env.clone(),
            cgroup: self.cgroup.as_ref(),
            sandbox: self.confinement.plan.as_ref(),
            credentials: self.confinement.credentials.as_ref(),
            limits: Some(&self.limits),
            audit_login_uid: self.audit_login_uid,
        }
    }
}

enum Phase {
    Idle,
    Backoff(tokio::time::Instant),
    Running(Box<Run>),
    Ended,
}

struct Agent {
    services: Arc<Services>,
    approvals: ApprovalFlow,
    handle: Arc<AgentHandle>,
    tracker: RestartTracker,
    /// Automatic restarts in a row; 0 after an operator's start.
    attempt: u32,
    /// Transient model errors: their own backoff and budget, apart from the crash ceiling.
    model_errors: ModelErrorBudget,
    /// Who gave the command being carried out.
    actor: Actor,
    /// The probe scheduler, which checks this agent's runs.
    probes: Probes,
    /// The next run's sandbox, set up ahead once the agent was restarted automatically.
    standby: Option<Box<Standby>>,
    /// When to set the standby up (see `standby::AFTER_START`).
    standby_due: Option<tokio::time::Instant>,
}

/// Runs the agent's task until it is removed or the daemon stops. Each step is boxed while it
/// runs, so that the task every agent keeps for life holds only what waits between steps.
pub(crate) async fn run(
    services: Arc<Services>,
    approvals: ApprovalFlow,
    handle: Arc<AgentHandle>,
    probes: Probes,
) {
    // Its own reference to the handle's mailbox, so that waiting for an order or a resume time
    // borrows nothing of `agent`.
    let inbox = Arc::clone(&handle);
    let mut agent = Agent {
        services,
        approvals,
        probes,
        handle,
        tracker: RestartTracker::default(),
        attempt: 0,
        model_errors: ModelErrorBudget::default(),
        actor: Actor::system(),
        standby: None,
        standby_due: None,
    };
    let mut phase = Phase::Idle;
    loop {
        phase = match phase {
            Phase::Ended => {
                inbox.orders.close();
                return;
            }
            Phase::Idle => {
                let command = agent.take(*inbox.orders.next().await);
                Box::pin(agent.command_when_idle(command)).await
            }
            Phase::Backoff(deadline) => {
                // A restart that is due already does not wait for a timer, which would take until
                // the runtime's next millisecond tick (about 1 ms of every immediate restart).
                let due = async {
                    if deadline > tokio::time::Instant::now() {
                        tokio::time::sleep_until(deadline).await;
                    }
                };
                tokio::select! {
                    // An order waiting in the queue (a stop, a removal) comes before the restart.
                    biased;
                    order = inbox.orders.next() => {
                        let command = agent.take(*order);
                        Box::pin(agent.command_in_backoff(command)).await
                    }
                    () = due => {
                        agent.attempt += 1;
                        agent.actor = Actor::system();
                        Box::pin(agent.spawn(true)).await.0
                    }
                }
            }
            Phase::Running(mut run) => {
                let resume_at = inbox.resume.get();
                let standby_due = agent.standby_due;
                tokio::select! {
                    () = sleep_until_instant(standby_due) => {
                        agent.standby_due = None;
                        agent.standby = Box::pin(agent.make_standby()).await;
                        Phase::Running(run)
                    }
                    () = sleep_until_ms(resume_at) => {
                        Box::pin(agent.resume_after_limit(run)).await
                    }
                    () = sleep_until_instant(run.start_window) => {
                        agent.started_for_good(&mut run);
                        Phase::Running(run)
                    }
                    () = inbox.resume.changed() => Phase::Running(run),
                    exit = run.child.wait() => {
                        let cause = if run.signalled { ExitCause::Operator } else { ExitCause::Exited };
                        Box::pin(agent.after_exit(run, exit.unwrap_or(ExitInfo { code: None, signal: None }), cause)).await
                    }
                    order = inbox.orders.next() => {
                        let command = agent.take(*order);
                        Box::pin(agent.command_when_running(run, command)).await
                    }
                }
            }
        };
        if !matches!(phase, Phase::Running(_)) {
            agent.standby_due = None;
        }
        if matches!(phase, Phase::Idle) {
            // Stopped, exited for good or crashed out: no restart comes to use it.
            agent.standby = None;
        }
    }
}

impl Agent {
    fn id(&self) -> &str {
        &self.handle.id
    }

    fn name(&self) -> String {
        self.handle.info().name.clone()
    }

    /// Notes who gave an order and returns its command.
    fn take(&mut self, order: Order) -> Command {
        self.actor = order.actor;
        order.command
    }

    /// Sets the state (and pid) and publishes the change.
    fn set_state(&self, state: AgentState, pid: Option<u32>) {
        let name = {
            let mut info = self.handle.info_mut();
            if info.state == state && info.pid == pid {
                return;
            }
            info.state = state;
            info.pid = pid;
            if state != AgentState::Backoff {
                info.next_restart_at_ms = None;
            }
            info.name.clone()
        };
        self.services.events.publish(EventKind::AgentState {
            agent_id: self.id().to_owned(),
            name,
            state,
            pid,
        });
    }

    /// Records the state the agent should come back in after a daemon restart.
    fn persist(&self, state: AgentState) {
        let (exit_code, exit_signal, restarts, run, limit) = {
            let info = self.handle.info();
            (
                info.exit_code,
                info.exit_signal.clone(),
                info.restarts,
                info.run,
                // Only a wait between runs is kept: a running agent's ends with the daemon.
                info.limit
                    .as_deref()
                    .cloned()
                    .filter(|_| info.state == AgentState::Backoff),
            )
        };
        self.services.store.update(self.id(), |stored| {
            stored.state = state;
            stored.exit_code = exit_code;
            stored.exit_signal = exit_signal;
            stored.restarts = restarts;
            stored.run = run;
            stored.limit = limit;
        });
    }

    async fn command_when_idle(&mut self, command: Command) -> Phase {
        match command {
            Command::Start(reply) | Command::Restart(reply) => {
                self.start_afresh(reply, false).await
            }
            Command::Stop(reply) => {
                self.mark_stopped();
                let _ = reply.send(Ok(()));
                Phase::Idle
            }
            Command::Kill(_, reply) => {
                let state = self.handle.info().state;
                let _ = reply.send(Err(ApiError::new(
                    ErrorCode::Conflict,
                    format!(
                        "agent {} is not running (state {}); start it first",
                        self.id(),
                        state.as_str()
                    ),
                )));
                Phase::Idle
            }
            Command::Remove(reply) | Command::Shutdown(reply) | Command::Leave(reply) => {
                let _ = reply.send(Ok(()));
                Phase::Ended
            }
            Command::AwaitReset(limit, reply) => {
                let _ = reply.send(Ok(()));
                self.await_reset(limit)
            }
            Command::Adopt(adoption, reply) => {
                let phase = self.adopt(*adoption).await;
                let _ = reply.send(Ok(()));
                phase
            }
            Command::Wait(waiting_for, reply) => {
                self.handle.info_mut().waiting_for = Some(waiting_for);
                self.set_state(AgentState::Waiting, None);
                // Still "should run": a daemon restart waits again.
                self.persist(AgentState::Running);
                let _ = reply.send(Ok(()));
                Phase::Idle
            }
            // The run it was about has ended.
            Command::Unhealthy(_, _, reply) => {
                let _ = reply.send(Ok(()));
                Phase::Idle
            }
        }
    }

    async fn command_in_backoff(&mut self, command: Command) -> Phase {
        match command {
            Command::Start(reply) | Command::Restart(reply) => self.start_afresh(reply, true).await,
            // A kill while waiting to restart cancels the restart, like a stop: an operator's kill
            // never leads to an automatic restart.
            Command::Stop(reply) | Command::Kill(_, reply) => {
                self.mark_stopped();
                let _ = reply.send(Ok(()));
                Phase::Idle
            }
            Command::Remove(reply) | Command::Shutdown(reply) | Command::Leave(reply) => {
                let _ = reply.send(Ok(()));
                Phase::Ended
            }
            Command::AwaitReset(limit, reply) => {
                let _ = reply.send(Ok(()));
                self.await_reset(limit)
            }
            // Only sent to an agent that is idle, right after the daemon started; the run an
            // unhealthy report was about has ended; waiting is for agents that are not running.
            Command::Adopt(_, reply)
            | Command::Unhealthy(_, _, reply)
            | Command::Wait(_, reply) => {
                let _ = reply.send(Ok(()));
                Phase::Idle
            }
        }
    }

    async fn command_when_running(&mut self, mut run: Box<Run>, command: Command) -> Phase {
        match command {
            Command::Start(reply) => {
                let _ = reply.send(Ok(()));
                Phase::Running(run)
            }
            Command::Stop(reply) => {
                self.stop(run, ExitCause::Operator).await;
                self.mark_stopped();
                let _ = reply.send(Ok(()));
                Phase::Idle
            }
            Command::Restart(reply) => {
                self.stop(run, ExitCause::Operator).await;
                self.start_afresh(reply, true).await
            }
            Command::Kill(signal, reply) => {
                run.signalled = true;
                let sent = if signal == Signal::Hup {
                    hang_up(&self.services, &self.handle, &mut run).await
                } else {
                    signal_group(run.child.pid(), signal.number())
                };
                let result = sent.map_err(|e| {
                    ApiError::new(
                        ErrorCode::Internal,
                        format!("cannot send {signal} to agent {}: {e}", self.id()),
                    )
                });
                let _ = reply.send(result);
                Phase::Running(run)
            }
            Command::Remove(reply) => {
                self.stop(run, ExitCause::Operator).await;
                let _ = reply.send(Ok(()));
                Phase::Ended
            }
            Command::Shutdown(reply) => {
                self.stop(run, ExitCause::Shutdown).await;
                let _ = reply.send(Ok(()));
                Phase::Ended
            }
            Command::Leave(reply) => {
                // What was read is delivered: the readers stop between reads, and the rest
                // waits in the terminal for the keeper.
                self.handle.fanout.set_input(None);
                for task in run.readers.drain(..) {
                    task.abort();
                    let _ = task.await;
                }
                let _ = reply.send(Ok(()));
                Phase::Ended
            }
            Command::Unhealthy(number, reason, reply) => {
                let _ = reply.send(Ok(()));
                if number == self.handle.info().run {
                    self.restart_unhealthy(run, reason).await
                } else {
                    Phase::Running(run)
                }
            }
            // Only sent to an agent that is not running yet.
            Command::AwaitReset(_, reply) | Command::Adopt(_, reply) | Command::Wait(_, reply) => {
                let _ = reply.send(Ok(()));
                Phase::Running(run)
            }
        }
    }

    /// Takes over a run the keeper held: stores the output it kept with the times it came, records
    /// the gap, and goes on supervising the run (or, if it ended meanwhile, handles its end as if
    /// it had just happened: recorded with its real status, restarted as its policy says).
    async fn adopt(&mut self, adoption: Adoption) -> Phase {
        let Adoption {
            run: adopted,
            note: live,
        } = adoption;
        let spec = self.handle.spec().clone();
        let masker = match self.services.secrets.environment(&spec) {
            Ok((_, masker)) => masker,
            Err(_) => celistra_core::mask::Masker::new(Vec::<(String, String)>::new()),
        };
        let output = OutputSink {
            handle: Arc::clone(&self.handle),
            agent_id: Arc::from(self.id()),
            history: self.services.history.clone(),
            run_id: adopted.run.run_id,
            services: Arc::clone(&self.services),
            approvals: self.approvals.clone(),
            masker,
            readiness_line: None,
        };
        let kept_bytes: usize = adopted.output.iter().map(|o| o.bytes.len()).sum();
        output.keep(&adopted.output);
        let mode = if adopted.run.pty {
            IoMode::Pty
        } else {
            IoMode::Pipes
        };
        let readers = if adopted.fds.is_empty() {
            vec![]
        } else {
            attach(&self.services, &self.handle, adopted.fds, mode, &output).unwrap_or_else(|e| {
                tracing::warn!(agent = self.id(), "cannot read the adopted run: {e}");
                vec![]
            })
        };
        let age = Duration::from_millis(now_ms().saturating_sub(live.started_at_ms));
        self.handle
            .fanout
            .set_capacity(live.settings.scrollback_kb as usize * 1024);
        let run = Box::new(Run {
            child: adopted.child,
            id: adopted.run.run_id,
            mode,
            readers,
            started: Instant::now().checked_sub(age).unwrap_or_else(Instant::now),
            cgroup: self
                .services
                .cgroups
                .as_ref()
                .and_then(|root| root.agent(self.id()).ok()),
            limits: AgentLimits::default(),
            sandbox: live.sandbox.clone(),
            capability_sources: vec![],
            ready: None,
            settings: live.settings.clone(),
            signalled: false,
            probes: vec![],
            start_window: None,
            readiness_line: None,
        });
        let pid = run.child.pid();
        {
            let mut info = self.handle.info_mut();
            info.run = live.run;
            info.restarts = live.restarts;
            info.started_at_ms = Some(live.started_at_ms);
            info.exited_at_ms = None;
            info.exit_code = None;
            info.exit_signal = None;
            info.settings = live.settings.clone();
            info.sandbox = Some(live.sandbox.clone());
        }
        self.handle
            .history_run
            .store(run.id, std::sync::atomic::Ordering::SeqCst);
        // The history marked the run as lost when it opened; it is not.
        self.record_start(&run);
        self.services.audit.record(
            &Actor::system(),
            "agent_run_adopted",
            self.id(),
            serde_json::json!({
                "name": spec.name,
                "run": self.handle.info().run,
                "pid": pid,
                "unattended_since_ms": adopted.run.unattended_since_ms,
                "adopted_at_ms": now_ms(),
                "kept_bytes": kept_bytes,
                "dropped_bytes": adopted.run.dropped_bytes,
                "ended_meanwhile": adopted.run.exit.is_some(),
            }),
        );
        self.services.events.publish(EventKind::AgentAdopted {
            agent_id: self.id().to_owned(),
            name: spec.name.clone(),
            run: self.handle.info().run,
            pid,
            unattended_since_ms: adopted.run.unattended_since_ms,
            kept_bytes: kept_bytes as u64,
            dropped_bytes: adopted.run.dropped_bytes,
        });
        self.rearm_probes(&spec, live.run);
        self.set_state(AgentState::Running, Some(pid));
        self.persist(AgentState::Running);
        match adopted.run.exit {
            Some(exit) => self.after_exit(run, exit.info(), ExitCause::Exited).await,
            None => Phase::Running(run),
        }
    }

    /// Goes on waiting for a usage limit's reset that the previous daemon waited for.
    fn await_reset(&mut self, limit: LimitWait) -> Phase {
        let now = now_ms();
        {
            let mut info = self.handle.info_mut();
            info.limit = Some(Box::new(limit.clone()));
            info.next_restart_at_ms = Some(limit.resume_at_ms);
        }
        self.set_state(AgentState::Backoff, None);
        activity::record_activity(
            &self.handle,
            &self.services,
            Activity::WaitingLimit,
            Evidence {
                tier: SignalTier::Hook,
                signal: "usage limit, still waited for after a daemon restart".into(),
                said: limit.said.clone(),
                at_ms: now,
            },
        );
        Phase::Backoff(
            tokio::time::Instant::now()
                + Duration::from_millis(limit.resume_at_ms.saturating_sub(now)),
        )
    }

    /// An operator's start: the restart ceiling starts over, then a new run is spawned.
    async fn start_afresh(&mut self, reply: Reply, is_restart: bool) -> Phase {
        self.tracker.reset();
        self.attempt = 0;
        self.model_errors.reset();
        self.handle.info_mut().model_errors = 0;
        let (phase, result) = self.spawn(is_restart).await;
        let _ = reply.send(result);
        phase
    }

    fn mark_stopped(&self) {
        {
            let mut info = self.handle.info_mut();
            info.activity = None;
            info.limit = None;
            info.waiting_for = None;
        }
        self.handle.resume.set(None);
        self.set_state(AgentState::Stopped, None);
        self.persist(AgentState::Stopped);
    }

    /// Starts a new run. On failure the agent is treated as if the run had died at once.
    async fn spawn(&mut self, is_restart: bool) -> (Phase, Result<(), ApiError>) {
        self.set_state(AgentState::Starting, None);
        // Before the process exists: its first output belongs to the new run, and what the
        // screen shows of it (read while the sandbox reports ready) must not be wiped after.
        self.handle.activity.new_run();
        {
            let mut info = self.handle.info_mut();
            info.activity = None;
            info.limit = None;
        }
        let spec = self.handle.spec().clone();
        let started = match crate::worktree::for_run(&self.services, &spec).await {
            Ok(worktree) => {
                self.handle.info_mut().worktree =
                    worktree.as_ref().map(|w| w.path.display().to_string());
                let standby = self.standby.take();
                self.start_process(worktree.as_ref(), is_restart, standby)
                    .await
            }
            Err(e) => Err(e.message),
        };
        match started {
            Ok(mut run) => {
                if let Some(ready) = run.ready.take() {
                    // Signals sent before the sandbox is in place would be lost (see
                    // `SandboxReady`): commands wait in the queue until the program starts.
                    if !ready.wait(SANDBOX_SETUP_LIMIT).await {
                        tracing::debug!(agent = self.id(), "sandbox ended or was slow to start");
                    }
                }
                let pid = run.child.pid();
                let (restarts, name) = {
                    let mut info = self.handle.info_mut();
                    info.run += 1;
                    info.started_at_ms = Some(now_ms());
                    info.exited_at_ms = None;
                    info.exit_code = None;
                    info.exit_signal = None;
                    info.last_error = None;
                    info.settings = run.settings.clone();
                    info.sandbox = Some(run.sandbox.clone());
                    info.waiting_for = None;
                    info.ready = info.ready.map(|_| false);
                    info.readiness = None;
                    info.liveness = None;
                    if is_restart {
                        info.restarts += 1;
                    }
                    (info.restarts, info.name.clone())
                };
                self.handle
                    .history_run
                    .store(run.id, std::sync::atomic::Ordering::SeqCst);
                self.handle.resume.set(None);
                self.services.audit.record(
                    &self.actor,
                    "agent_run_started",
                    self.id(),
                    serde_json::json!({
                        "name": name,
                        "run": self.handle.info().run,
                        "pid": pid,
                        "automatic_restart": self.actor.is_system(),
                        "sandbox": run.sandbox,
                        "capability_sources": run.capability_sources,
                    }),
                );
                if let Some(because) = &run.sandbox.unsandboxed_because {
                    self.services.events.publish(EventKind::AgentUnsandboxed {
                        agent_id: self.id().to_owned(),
                        name: name.clone(),
                        run: self.handle.info().run,
                        because: because.clone(),
                    });
                }
                self.record_start(&run);
                let number = self.handle.info().run;
                self.probes.arm(
                    Arc::clone(&self.handle),
                    number,
                    std::mem::take(&mut run.probes),
                );
                // A line printed before the probes were armed was reported to no one.
                if let Some(line) = run.readiness_line.as_ref().and_then(ReadinessLine::seen) {
                    self.probes.line_seen(self.id(), number, &line);
                }
                let state = if run.start_window.is_some() {
                    AgentState::Starting
                } else {
                    AgentState::Running
                };
                self.set_state(state, Some(pid));
                self.handle
                    .fanout
                    .announce(&TerminalServerMessage::Restarted {
                        run: self.handle.info().run,
                        pid,
                        mode: run.mode,
                    });
                if is_restart {
                    self.services.events.publish(EventKind::AgentRestarted {
                        agent_id: self.id().to_owned(),
                        name,
                        attempt: restarts,
                        pid,
                    });
                }
                self.persist(AgentState::Running);
                if is_restart && self.actor.is_system() && self.handle.info().auto_restart {
                    self.standby_due = Some(tokio::time::Instant::now() + standby::AFTER_START);
                }
                (Phase::Running(Box::new(run)), Ok(()))
            }
            Err(error) => {
                tracing::warn!(agent = self.id(), "spawn failed: {error}");
                self.handle.info_mut().last_error = Some(error.clone());
                self.services.events.publish(EventKind::AgentSpawnFailed {
                    agent_id: self.id().to_owned(),
                    name: self.name(),
                    error: error.clone(),
                });
                let phase = self.decide_after_death(0, false);
                (phase, Err(ApiError::new(ErrorCode::SpawnFailed, error)))
            }
        }
    }

    /// Starts a run, in `worktree` (its `cwd`) for a `--worktree` agent; `is_restart` when it
    /// counts as a restart. A `standby` set up for exactly this run is woken instead of starting
    /// another sandbox; one that no longer fits (the spec, config or grants changed) is ended.
    async fn start_process(
        &self,
        worktree: Option<&crate::worktree::Worktree>,
        is_restart: bool,
        standby: Option<Box<Standby>>,
    ) -> Result<Run, String> {
        // Never closed, so `acquire` only waits.
        let _starting = self.services.spawning.acquire().await;
        let plan = self.plan_run(worktree)?;
        let spec = &plan.spec;
        let probes = probe_setups(spec, Some(&plan.spawn_spec()))?;
        let run_number = self.handle.info().run + 1;
        let readiness_line = ReadinessLine::of(spec, &self.probes, run_number);
        let run_id = self.services.history.next_run_id(now_ms());
        let output = OutputSink {
            handle: Arc::clone(&self.handle),
            agent_id: Arc::from(self.id()),
            history: self.services.history.clone(),
            run_id,
            services: Arc::clone(&self.services),
            approvals: self.approvals.clone(),
            masker: plan.masker.clone(),
            readiness_line: readiness_line.clone(),
        };
        let launch = plan.spawn_spec().resolve().map_err(|e| e.to_string())?;
        let keeper = self.services.keeper().map_err(|e| e.message)?;
        let sandbox = RunSandbox {
            limits: plan
                .limits
                .applied()
                .0
                .iter()
                .map(ToString::to_string)
                .collect(),
            ..plan.confinement.info.clone()
        };
        // What the next daemon needs of the run if it has to take it over.
        let (run, restarts) = {
            let info = self.handle.info();
            (info.run + 1, info.restarts + u32::from(is_restart))
        };
        let note = RunNote {
            run,
            restarts,
            started_at_ms: now_ms(),
            settings: plan.settings.clone(),
            sandbox: sandbox.clone(),
        };
        let note = serde_json::to_value(note).map_err(|e| e.to_string())?;
        let spawned = match standby::take_fitting(standby, &launch, plan.size) {
            Some(standby) => standby.wake(keeper, run_id, note, plan.size).await,
            None => {
                keeper
                    .spawn(
                        self.id(),
                        run_id,
                        launch,
                        plan.size,
                        plan.listener.as_deref().map(std::os::fd::AsFd::as_fd),
                        note,
                        false,
                    )
                    .await
            }
        }
        .map_err(|e| e.to_string())?;
        // Usually before the program can run into its sandbox: its blocks name this session.
        self.services
            .sandbox
            .note_run(self.id(), spawned.audit_session);
        let (child, ready) = (spawned.child, spawned.ready);
        let readers = attach(
            &self.services,
            &self.handle,
            spawned.fds,
            plan.mode,
            &output,
        )
        .map_err(|e| format!("cannot read the agent's output: {e}"))?;
        Ok(Run {
            child,
            id: run_id,
            mode: plan.mode,
            readers,
            started: Instant::now(),
            cgroup: plan.cgroup,
            sandbox,
            capability_sources: plan.confinement.sources,
            limits: plan.limits,
            ready,
            settings: plan.settings,
            signalled: false,
            probes,
            readiness_line,
            start_window: spec
                .start_secs
                .filter(|&secs| secs > 0)
                .map(|secs| tokio::time::Instant::now() + Duration::from_secs(secs)),
        })
    }

    /// Sets up the sandbox of the agent's next run ahead, waiting to be woken (see
    /// `standby.rs`), if the agent may have one.
    async fn make_standby(&self) -> Option<Box<Standby>> {
        let spec = self.handle.spec().clone();
        let keeper = self.services.keeper().ok()?;
        if !standby::may_have_one(&spec) || !keeper.sets_up_standbys() {
            return None;
        }
        let _starting = self.services.spawning.acquire().await;
        let plan = match self.plan_run(None) {
            Ok(plan) => plan,
            Err(e) => {
                tracing::debug!(agent = self.id(), "no standby: {e}");
                return None;
            }
        };
        if plan.confinement.plan.is_none() || plan.limits.has_v1_cgroups() {
            return None;
        }
        let launch = plan.spawn_spec().resolve().ok()?;
        Standby::start(keeper, self.id(), launch, plan.size).await
    }

    /// Works out what the next run starts with: config.json's settings, the workspace, the
    /// sandbox and the grants, the environment and secrets, the cgroup and its limits. Each is
    /// read afresh: an edit applies from the next run on.
    fn plan_run(&self, worktree: Option<&crate::worktree::Worktree>) -> Result<RunPlan, String> {
        let config = self.services.config().map_err(|e| e.to_string())?;
        // Retention settings apply from the next spawn on, like every other setting of config.json.
        self.services.history.set_limits(crate::log_limits(&config));
        let spec = self.handle.spec().clone();
        let mut settings = config.resolve(&spec);
        if spec.scrollback_kb.is_none()
            && let Some(kb) = self.services.scrollback_kb
        {
            settings.scrollback_kb = kb;
        }
        self.handle
            .fanout
            .set_capacity(settings.scrollback_kb as usize * 1024);
        let workspace = spec
            .workspace
            .clone()
            .unwrap_or_else(|| self.services.default_workspace.clone());
        if !std::path::Path::new(&workspace).is_dir() {
            return Err(format!(
                "workspace {workspace} does not exist or is not a directory"
            ));
        }
        let workspace = worktree.map_or(workspace, |w| w.cwd.display().to_string());
        let source = self.handle.info().source.clone();
        let ask_socket = self.services.asks.path(self.id());
        let confinement = self
            .services
            .sandbox
            .confine(
                &spec,
                &source,
                std::path::Path::new(&workspace),
                Some(&ask_socket),
                worktree.map(|w| w.common_dir.as_path()),
            )
            .map_err(|e| e.message)?;
        if let Some(user) = &confinement.credentials {
            self.services.asks.hand_to(self.id(), user.uid, user.gid);
        }
        let mut env = self.services.base_env.clone();
        if let Some(user) = &confinement.credentials {
            // Like a login: the agent's own HOME and names, unless its spec sets them.
            env.retain(|(key, _)| !matches!(key.as_str(), "HOME" | "USER" | "LOGNAME"));
            env.push(("HOME".into(), user.home.display().to_string()));
            env.push(("USER".into(), user.name.clone()));
            env.push(("LOGNAME".into(), user.name.clone()));
        }
        // `secret:NAME` values and `secrets` resolved in memory only; the masker hides them in output.
        let (spec_env, masker) = self.services.secrets.environment(&spec)?;
        env.extend(spec_env);
        env.push(("CELISTRA_AGENT_ID".into(), self.id().to_owned()));
        env.push((
            crate::asks::ASK_SOCKET_ENV.into(),
            if confinement.plan.is_some() {
                celistra_sandbox::ASK_SOCKET_INSIDE.to_owned()
            } else {
                ask_socket.display().to_string()
            },
        ));
        env.push(("CELISTRA_AGENT_NAME".into(), spec.name.clone()));
        // `celistrad` (ask, hook) first on the agent's PATH: the daemon's own binary, read-only.
        let bin_dir = if confinement.plan.is_some() {
            Some(celistra_sandbox::AGENT_BIN_INSIDE.to_owned())
        } else {
            self.services
                .asks
                .bin_dir()
                .map(|dir| dir.display().to_string())
        };
        if let Some(bin_dir) = bin_dir {
            let path = env.iter().rev().find(|(key, _)| key == "PATH").map_or_else(
                || "/usr/local/bin:/usr/bin:/bin".to_owned(),
                |(_, v)| v.clone(),
            );
            env.retain(|(key, _)| key != "PATH");
            env.push(("PATH".into(), format!("{bin_dir}:{path}")));
        }
        let cgroup = match &self.services.cgroups {
            Some(root) => Some(root.agent_for_run(self.id()).map_err(|e| e.to_string())?),
            None => None,
        };
        let limits = self
            .services
            .limits
            .prepare(self.id(), &confinement.limits, cgroup.as_ref())
            .map_err(|e| e.to_string())?;
        let listener = match &spec.socket {
            Some(socket) => {
                let listener = self.services.sockets.get(socket).map_err(|e| e.message)?;
                env.extend(socket_activation_env());
                Some(listener)
            }
            None => None,
        };
        let mode = if spec.no_pty {
            IoMode::Pipes
        } else {
            IoMode::Pty
        };
        let audit_login_uid = self
            .services
            .sandbox
            .audit_login_uid(confinement.credentials.as_ref());
        Ok(RunPlan {
            // A restarted agent starts with the size its writers last gave it.
            size: (mode == IoMode::Pty).then(|| pty_size(self.handle.fanout.size())),
            spec,
            settings,
            workspace,
            confinement,
            env,
            masker,
            cgroup,
            limits,
            listener,
            mode,
            audit_login_uid,
        })
    }

    /// Records the start of a run in the history, with the names of its variables but not their values.
    fn record_start(&self, run: &Run) {
        let spec = self.handle.spec().clone();
        let info = self.handle.info().clone();
        self.services.history.run_started(RunStart {
            run_id: run.id,
            record: RunRecord {
                agent_id: self.id().to_owned(),
                name: info.name,
                run: info.run,
                command: spec.command,
                workspace: info.workspace,
                env_keys: spec.env.into_keys().collect(),
                mode: info.mode,
                pid: run.child.pid(),
                attempt: self.attempt,
                settings: run.settings.clone(),
                started_at_ms: info.started_at_ms.unwrap_or_else(now_ms),
                ended_at_ms: None,
                exit_code: None,
                exit_signal: None,
                cause: None,
                stopped_by: None,
                output_bytes: 0,
                exit_class: None,
            },
        });
    }

    /// Records how a run ended in the history.
    fn record_end(
        &self,
        run_id: u64,
        exit: ExitInfo,
        cause: RunCause,
        exit_class: Option<ExitClass>,
    ) {
        self.services.history.run_ended(
            run_id,
            RunEnd {
                // When the keeper reaped it (see `finish`), also for a run that ended while no
                // daemon ran.
                ended_ms: self.handle.info().exited_at_ms.unwrap_or_else(now_ms),
                exit_code: exit.code,
                exit_signal: exit.signal.map(signal_name),
                cause,
                stopped_by: (cause == RunCause::Operator).then(|| self.actor.name.clone()),
                exit_class,
            },
        );
    }

    /// Stops a run: the stop signal to its process group, the grace period, then SIGKILL.
    async fn stop(&mut self, mut run: Box<Run>, cause: ExitCause) {
        self.set_state(AgentState::Stopping, Some(run.child.pid()));
        let signal = run.settings.stop_signal;
        let sent = if signal == Signal::Hup {
            hang_up(&self.services, &self.handle, &mut run).await
        } else {
            signal_group(run.child.pid(), signal.number())
        };
        if let Err(e) = sent {
            tracing::warn!(agent = self.id(), "cannot send {signal}: {e}");
        }
        let grace = Duration::from_millis(run.settings.stop_timeout_ms);
        let exit = match tokio::time::timeout(grace, run.child.wait()).await {
            Ok(exit) => exit,
            Err(_) => {
                tracing::info!(
                    agent = self.id(),
                    "still running after {grace:?}; sending SIGKILL"
                );
                kill_everything(&run, self.standby.is_some());
                run.child.wait().await
            }
        };
        let exit = exit.unwrap_or(ExitInfo {
            code: None,
            signal: None,
        });
        let run_id = run.id;
        self.finish(run, exit, cause, None);
        let cause = match cause {
            ExitCause::Shutdown => RunCause::Shutdown,
            ExitCause::Unhealthy => RunCause::Unhealthy,
            ExitCause::Exited | ExitCause::Operator => RunCause::Operator,
        };
        self.record_end(run_id, exit, cause, None);
    }

    /// The run lived through its `start_secs` window: it counts as started.
    fn started_for_good(&mut self, run: &mut Run) {
        run.start_window = None;
        if self.handle.info().state == AgentState::Starting {
            self.set_state(AgentState::Running, Some(run.child.pid()));
        }
    }

    /// The run ended inside its `start_secs` window: a failed start. Like supervisord's
    /// `startretries`, it is retried within the restart ceiling even without `auto_restart`.
    fn after_failed_start(&mut self, run: Box<Run>, exit: ExitInfo) -> Phase {
        let run_id = run.id;
        let window = self.handle.spec().start_secs.unwrap_or_default();
        let uptime_ms = self.finish(run, exit, ExitCause::Exited, None);
        self.handle.info_mut().last_error = Some(format!(
            "failed start: it ended ({}) {uptime_ms} ms after starting, within its start window \
             of {window} s; it is retried within the restart ceiling",
            match (exit.code, exit.signal) {
                (Some(code), _) => format!("exit code {code}"),
                (None, Some(signal)) => format!("killed by {}", signal_name(signal)),
                (None, None) => "ended".into(),
            }
        ));
        let phase = self.restart_within_ceiling(uptime_ms);
        let cause = if self.handle.info().state == AgentState::CrashedOut {
            RunCause::CrashedOut
        } else {
            RunCause::FailedStart
        };
        self.record_end(run_id, exit, cause, None);
        phase
    }

    /// The run's liveness probe failed: it is stopped and restarted, whatever `auto_restart`
    /// says, and the restart counts toward the ceiling like a crash.
    async fn restart_unhealthy(&mut self, run: Box<Run>, reason: String) -> Phase {
        self.actor = Actor::system();
        let uptime_ms = u64::try_from(run.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        tracing::info!(agent = self.id(), "restarting: {reason}");
        self.stop(run, ExitCause::Unhealthy).await;
        self.restart_within_ceiling(uptime_ms)
    }

    /// Arms the probes of a run taken over from the keeper: network probes as usual; a line or
    /// exec readiness probe is taken as passed (the run was ready enough to be left running).
    fn rearm_probes(&self, spec: &AgentSpec, run_number: u64) {
        let assumed_ready = spec
            .readiness
            .as_ref()
            .map(|probe| probe.line.is_some() || probe.exec.is_some());
        self.handle.info_mut().ready = assumed_ready;
        match probe_setups(spec, None) {
            Ok(setups) => self
                .probes
                .arm(Arc::clone(&self.handle), run_number, setups),
            Err(e) => tracing::warn!(agent = self.id(), "cannot arm the probes: {e}"),
        }
    }

    /// Cleans up after a run's leader exited, records how it ended and publishes it.
    fn finish(
        &self,
        run: Box<Run>,
        exit: ExitInfo,
        cause: ExitCause,
        class: Option<ExitClassification>,
    ) -> u64 {
        // Whatever the leader left behind (background jobs, daemonised children) ends with it.
        kill_everything(&run, self.standby.is_some());
        let services = Arc::clone(&self.services);
        let pid = run.child.pid();
        tokio::spawn(async move {
            if let Some(keeper) = &services.keeper {
                keeper.forget(pid).await;
            }
        });
        self.handle.fanout.set_input(None);
        let uptime_ms = u64::try_from(run.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let (name, run_number) = {
            let mut info = self.handle.info_mut();
            self.probes.disarm(&self.handle.id, info.run);
            info.ready = info.ready.map(|_| false);
            info.exit_code = exit.code;
            info.exit_signal = exit.signal.map(signal_name);
            info.exited_at_ms = Some(run.child.ended().map_or_else(now_ms, |e| e.at_ms));
            info.activity = None;
            if class.is_some() {
                info.exit_class = class.clone().map(Box::new);
            }
            (info.name.clone(), info.run)
        };
        self.handle.fanout.announce(&TerminalServerMessage::Exit {
            run: run_number,
            exit_code: exit.code,
            exit_signal: exit.signal.map(signal_name),
        });
        self.services.events.publish(EventKind::AgentExited {
            agent_id: self.id().to_owned(),
            name,
            run: run_number,
            exit_code: exit.code,
            exit_signal: exit.signal.map(signal_name),
            cause,
            uptime_ms,
            class,
        });
        uptime_ms
    }

    async fn after_exit(&mut self, mut run: Box<Run>, exit: ExitInfo, cause: ExitCause) -> Phase {
        let run_id = run.id;
        if self.services.keeper.as_ref().is_some_and(|k| !k.is_alive()) {
            // The keeper died and took the run with it: the daemon starts again (see `run` in
            // lib.rs), and the agent comes back as it should be, so nothing is decided here.
            self.finish(run, exit, cause, None);
            self.record_end(run_id, exit, RunCause::DaemonLost, None);
            return Phase::Idle;
        }
        if cause == ExitCause::Operator {
            self.finish(run, exit, cause, None);
            self.record_end(run_id, exit, RunCause::Operator, None);
            self.mark_stopped();
            return Phase::Idle;
        }
        if run.start_window.is_some() {
            return self.after_failed_start(run, exit);
        }
        // The run's last words say why it ended: read them all before classifying.
        kill_everything(&run, self.standby.is_some());
        let readers = std::mem::take(&mut run.readers);
        let _ =
            tokio::time::timeout(OUTPUT_DRAIN_LIMIT, futures_util::future::join_all(readers)).await;
        let class = self.classify_exit(exit);
        let uptime_ms = self.finish(run, exit, cause, Some(class.clone()));
        if uptime_ms >= self.handle.info().settings.backoff_reset_secs * 1000 {
            self.model_errors.healthy();
        }
        let clean = celistra_core::spec::exit_is_expected(
            &self.handle.spec().expected_exit_codes,
            exit.code,
        );
        let trouble = match class.class {
            _ if !self.retries_model_trouble() => None,
            ExitClass::UsageLimit => Some(self.wait_for_reset(&class)),
            transient if transient.is_transient_model_error() => {
                Some(self.after_model_error(&class))
            }
            ExitClass::Auth => Some(self.refused_credentials(&class)),
            _ => None,
        };
        if let Some(phase) = trouble {
            let cause = if clean {
                RunCause::Exited
            } else {
                RunCause::Crashed
            };
            self.record_end(run_id, exit, cause, Some(class.class));
            return phase;
        }
        let phase = self.decide_after_death(uptime_ms, clean);
        let cause = if self.handle.info().state == AgentState::CrashedOut {
            RunCause::CrashedOut
        } else if clean {
            RunCause::Exited
        } else {
            RunCause::Crashed
        };
        self.record_end(run_id, exit, cause, Some(class.class));
        phase
    }

    /// Waits `delay_ms` in `backoff`, then restarts.
    fn back_off(&self, delay_ms: u64) -> Phase {
        let next = now_ms() + delay_ms;
        self.handle.info_mut().next_restart_at_ms = Some(next);
        self.set_state(AgentState::Backoff, None);
        self.services.events.publish(EventKind::AgentBackoff {
            agent_id: self.id().to_owned(),
            name: self.name(),
            delay_ms,
            next_restart_at_ms: next,
        });
        Phase::Backoff(tokio::time::Instant::now() + Duration::from_millis(delay_ms))
    }

    /// Why the run ended: a failure its hooks reported, else its JSON result or the tail of its
    /// output. A clean exit (code 0) believes only the hooks and a JSON result: a retried error
    /// line in the output of a run that then succeeded is not why it ended.
    fn classify_exit(&self, exit: ExitInfo) -> ExitClassification {
        let now = now_ms();
        if let Some(reported) = self.handle.activity.take_failure() {
            return reported;
        }
        let tail = self.handle.activity.tail_text();
        if let Some((found, source)) = classify::classify_tail(&tail, now, self.services.zone)
            && (exit.code != Some(0) || source == classify::Source::Result)
        {
            return found.into_classification(source.as_str(), now);
        }
        ExitClassification {
            class: ExitClass::Other,
            source: "exit".into(),
            said: match (exit.code, exit.signal) {
                (Some(code), _) => format!("exit code {code}"),
                (None, Some(signal)) => format!("killed by {}", signal_name(signal)),
                (None, None) => "ended".into(),
            },
            retry_after_ms: None,
            reset_at_ms: None,
            at_ms: now,
        }
    }

    /// Whether model errors and usage limits bring the agent back by themselves: always for the
    /// AI agent CLIs the daemon knows, else only with `auto_restart`.
    fn retries_model_trouble(&self) -> bool {
        let info = self.handle.info();
        info.auto_restart || matches!(info.kind.as_str(), "claude" | "codex" | "gemini" | "aider")
    }

    /// The run ended on a usage limit: the agent waits in backoff until the reset plus jitter.
    fn wait_for_reset(&mut self, class: &ExitClassification) -> Phase {
        let now = now_ms();
        let resume_at_ms = limit_resume_at(class.reset_at_ms, now, random_unit());
        let limit = LimitWait {
            reset_at_ms: class.reset_at_ms,
            resume_at_ms,
            action: "restart".into(),
            said: class.said.clone(),
        };
        {
            let mut info = self.handle.info_mut();
            info.limit = Some(Box::new(limit.clone()));
            info.next_restart_at_ms = Some(resume_at_ms);
        }
        // Before the state: whoever sees the agent waiting in backoff sees why.
        self.note_trouble(Activity::WaitingLimit, class);
        self.set_state(AgentState::Backoff, None);
        // Still "should run", with the wait: a daemon restart goes on waiting.
        self.persist(AgentState::Running);
        self.services.events.publish(EventKind::AgentWaitingLimit {
            agent_id: self.id().to_owned(),
            name: self.name(),
            limit,
        });
        Phase::Backoff(
            tokio::time::Instant::now() + Duration::from_millis(resume_at_ms.saturating_sub(now)),
        )
    }

    /// The run ended on a transient model error: restart after the model-error backoff, or stop
    /// once the budget is spent. The crash ceiling is not touched.
    fn after_model_error(&mut self, class: &ExitClassification) -> Phase {
        let (max, window_secs) = {
            let spec = self.handle.spec();
            (
                spec.model_error_max.unwrap_or(DEFAULT_MODEL_ERROR_MAX),
                spec.model_error_window_secs
                    .unwrap_or(DEFAULT_MODEL_ERROR_WINDOW_SECS),
            )
        };
        let now = now_ms();
        self.note_trouble(Activity::ModelError, class);
        match self.model_errors.on_error(
            max,
            window_secs * 1000,
            now,
            class.retry_after_ms,
            random_unit(),
        ) {
            ModelErrorDecision::Retry {
                delay_ms,
                errors_in_window,
            } => {
                self.handle.info_mut().model_errors = errors_in_window;
                self.back_off(delay_ms)
            }
            ModelErrorDecision::Exhausted { errors_in_window } => {
                {
                    let mut info = self.handle.info_mut();
                    info.model_errors = errors_in_window;
                    info.last_error = Some(format!(
                        "stopped after {errors_in_window} model errors in {window_secs} s \
                         (model_error_max {max}); the provider keeps failing, last: {}; start it \
                         again when the provider is back",
                        class.said
                    ));
                }
                self.set_state(AgentState::Failed, None);
                self.persist(AgentState::Failed);
                self.services
                    .events
                    .publish(EventKind::AgentModelErrorsExhausted {
                        agent_id: self.id().to_owned(),
                        name: self.name(),
                        model_errors: errors_in_window,
                        window_secs,
                    });
                Phase::Idle
            }
        }
    }

    /// The provider refused the agent's credentials: restarting cannot help, so it is not.
    fn refused_credentials(&mut self, class: &ExitClassification) -> Phase {
        self.handle.info_mut().last_error = Some(format!(
            "the model provider refused the agent's credentials ({}); not restarted: log it in \
             again (or fix its API key) and start it",
            class.said
        ));
        self.note_trouble(Activity::NeedsInput, class);
        self.set_state(AgentState::Failed, None);
        self.persist(AgentState::Failed);
        Phase::Idle
    }

    /// Shows what an exit's class means for the agent's activity, with the class as evidence.
    fn note_trouble(&self, activity: Activity, class: &ExitClassification) {
        activity::record_activity(
            &self.handle,
            &self.services,
            activity,
            Evidence {
                tier: if class.source == "output" {
                    SignalTier::Screen
                } else {
                    SignalTier::Hook
                },
                signal: format!(
                    "exit classified {} from its {}",
                    class.class.as_str(),
                    class.source
                ),
                said: class.said.clone(),
                at_ms: class.at_ms,
            },
        );
    }

    /// A running agent's usage limit reset: type its `limit_input`, or restart it.
    async fn resume_after_limit(&mut self, run: Box<Run>) -> Phase {
        self.handle.resume.set(None);
        self.handle.info_mut().limit = None;
        let input = self.handle.spec().limit_input.clone();
        self.actor = Actor::system();
        match (input, self.handle.fanout.input()) {
            (Some(text), Some(sender)) => {
                // Recorded before it is typed: the prompt hook the agent's CLI sends on reading
                // it must find the spell of work already begun by the typing.
                activity::record_activity(
                    &self.handle,
                    &self.services,
                    Activity::Working,
                    Evidence {
                        tier: SignalTier::Hook,
                        signal: "usage limit reset: the daemon typed limit_input".into(),
                        said: clip_said(&text),
                        at_ms: now_ms(),
                    },
                );
                let _ = sender
                    .send(Box::new(InputOp::Bytes(Bytes::from(format!("{text}\r")))))
                    .await;
                Phase::Running(run)
            }
            _ => {
                self.stop(run, ExitCause::Operator).await;
                self.spawn(true).await.0
            }
        }
    }

    /// After a run died by itself (or could not start): restart with backoff, crash out, or rest.
    /// `clean` is an expected exit: with `expected_exit_codes` listed, one is not restarted.
    fn decide_after_death(&mut self, uptime_ms: u64, clean: bool) -> Phase {
        let auto_restart = self.handle.info().auto_restart;
        let restarts_only_unexpected = !self.handle.spec().expected_exit_codes.is_empty();
        if !auto_restart || (clean && restarts_only_unexpected) {
            let state = if clean {
                AgentState::Exited
            } else {
                AgentState::Failed
            };
            self.set_state(state, None);
            self.persist(state);
            return Phase::Idle;
        }
        self.restart_within_ceiling(uptime_ms)
    }

    /// Restarts with backoff, or crashes out at the restart ceiling.
    fn restart_within_ceiling(&mut self, uptime_ms: u64) -> Phase {
        let settings = self.handle.info().settings.clone();
        let policy = restart_policy(&settings);
        match self
            .tracker
            .on_exit(&policy, now_ms(), uptime_ms, random_unit())
        {
            RestartDecision::Restart { delay_ms, .. } => self.back_off(delay_ms),
            RestartDecision::CrashedOut { restarts_in_window } => {
                tracing::warn!(
                    agent = self.id(),
                    "crashed out after {restarts_in_window} restarts"
                );
                self.set_state(AgentState::CrashedOut, None);
                self.persist(AgentState::CrashedOut);
                self.services.events.publish(EventKind::AgentCrashedOut {
                    agent_id: self.id().to_owned(),
                    name: self.name(),
                    restarts_in_window,
                    window_secs: settings.restart_window_secs,
                });
                Phase::Idle
            }
        }
    }
}

/// Hangs up a run. On a PTY, closing the master makes the kernel hang up the terminal and send SIGHUP
/// to the session leader; pipes have no terminal, so the group gets SIGHUP directly.
async fn hang_up(services: &Services, handle: &AgentHandle, run: &mut Run) -> std::io::Result<()> {
    match run.mode {
        IoMode::Pty => {
            // The input and the reader each hold the master, and so does the keeper: all must
            // let go for the terminal to hang up.
            handle.fanout.set_input(None);
            for task in run.readers.drain(..) {
                task.abort();
            }
            if let Some(keeper) = &services.keeper {
                keeper.hang_up(run.child.pid()).await;
            }
            // In a sandbox the session leader is the launcher, the init of its PID namespace, which
            // ignores SIGHUP so that the agent can handle it: the agent's group gets it directly,
            // as the leader would have had it.
            if run.sandbox.sandboxed {
                signal_group(run.child.pid(), Signal::Hup.number())?;
            }
            Ok(())
        }
        IoMode::Pipes => signal_group(run.child.pid(), Signal::Hup.number()),
    }
}

/// Reads a run's output and feeds its input through the descriptors the keeper handed over: a
/// PTY's master, or stdout, stderr and stdin. Output is read on the reader thread's runtime, input
/// written on the daemon's.
fn attach(
    services: &Services,
    handle: &AgentHandle,
    fds: Vec<OwnedFd>,
    mode: IoMode,
    output: &OutputSink,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    for fd in &fds {
        rustix::io::ioctl_fionbio(fd, true)?;
    }
    let missing = || std::io::Error::other("the keeper handed over too few descriptors");
    let mut fds = fds.into_iter();
    let readers_runtime = &services.readers;
    let (readers, input) = match mode {
        IoMode::Pty => {
            let master = fds.next().ok_or_else(missing)?;
            let reading = master.try_clone()?;
            let registered_there = readers_runtime.enter();
            let reader = pipe::Receiver::from_owned_fd_unchecked(reading)?;
            let readers = vec![readers_runtime.spawn(output.clone().pump(reader, Stream::Pty))];
            drop(registered_there);
            (readers, Input::Pty(master))
        }
        IoMode::Pipes => {
            let (stdout, stderr, stdin) = (
                fds.next().ok_or_else(missing)?,
                fds.next().ok_or_else(missing)?,
                fds.next().ok_or_else(missing)?,
            );
            let registered_there = readers_runtime.enter();
            let stdout = pipe::Receiver::from_owned_fd_unchecked(stdout)?;
            let stderr = pipe::Receiver::from_owned_fd_unchecked(stderr)?;
            let readers = vec![
                readers_runtime.spawn(output.clone().pump(stdout, Stream::Stdout)),
                readers_runtime.spawn(output.clone().pump(stderr, Stream::Stderr)),
            ];
            drop(registered_there);
            (readers, Input::Pipe(stdin))
        }
    };
    handle.fanout.set_input(Some(input));
    Ok(readers)
}

/// SIGKILLs the run's process group and, when there is one, its whole cgroup. A sandboxed run
/// with a `standby` beside it in the cgroup is ended by its group's kill alone: the group holds
/// the init of the run's PID namespace, whose end takes every process of the sandbox along.
fn kill_everything(run: &Run, standby: bool) {
    let _ = signal_group(run.child.pid(), Signal::Kill.number());
    if standby && run.sandbox.sandboxed {
        return;
    }
    if let Some(cgroup) = &run.cgroup {
        cgroup.kill();
    }
    run.limits.kill();
}

/// The largest read of a run's output (a pipe's; a PTY's is 64 KiB).
const READ_BUFFER_SIZE: usize = 256 * 1024;

thread_local! {
    /// The reader thread's one read buffer, shared by every agent's output (see `pump`).
    static READ_BUFFER: std::cell::RefCell<Vec<u8>> =
        std::cell::RefCell::new(vec![0; READ_BUFFER_SIZE]);
}

/// Where a run's output goes: the agent's ring and live followers, and the history.
#[derive(Clone)]
struct OutputSink {
    handle: Arc<AgentHandle>,
    agent_id: Arc<str>,
    history: History,
    run_id: u64,
    services: Arc<Services>,
    approvals: ApprovalFlow,
    /// Masks the values of the run's secrets (each stream its own copy, see `pump`).
    masker: Masker,
    /// The readiness line to look for, if the agent has one.
    readiness_line: Option<ReadinessLine>,
}

impl OutputSink {
    /// Copies one stream until it closes (for a PTY, EIO once the last process holding it exits).
    /// On a terminal, approval request lines are taken out (see `approval_line`) and asked.
    #[expect(
        clippy::manual_async_fn,
        reason = "an `async fn`'s task holds the sink and the reader twice, as its arguments and \
                  as the body's own (about 0.5 KiB more per stream)"
    )]
    fn pump(mut self, reader: pipe::Receiver, stream: Stream) -> impl Future<Output = ()> {
        async move {
            // Pipes can be read in larger pieces than a PTY ever delivers.
            let read_size = if stream == Stream::Pty {
                64 * 1024
            } else {
                READ_BUFFER_SIZE
            };
            let mut requests = (stream == Stream::Pty).then(LineScanner::new);
            loop {
                if reader.readable().await.is_err() {
                    break;
                }
                // Read into the reader thread's one buffer, between two awaits, and copy out the exact
                // size: an agent holds no read buffer of its own, and queued chunks no more memory
                // than their bytes.
                let (bytes, ended) = READ_BUFFER.with_borrow_mut(|buf| {
                    let mut filled = 0;
                    let mut ended = false;
                    // A PTY hands out at most a few KiB per read: take what is already waiting too,
                    // so a chatty program costs one chunk per wake-up rather than one per read.
                    while filled < read_size {
                        match reader.try_read(&mut buf[filled..read_size]) {
                            Ok(0) => {
                                ended = true;
                                break;
                            }
                            Ok(n) => filled += n,
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                            Err(_) => {
                                ended = true;
                                break;
                            }
                        }
                    }
                    (buf[..filled].to_vec(), ended)
                });
                if bytes.is_empty() && !ended {
                    continue;
                }
                // Secret values are masked first: nothing after this sees them.
                let read = if self.masker.is_empty() {
                    bytes
                } else {
                    let mut masked = Vec::with_capacity(bytes.len());
                    self.masker.push(&bytes, &mut masked);
                    masked
                };
                let chunk = match &mut requests {
                    Some(scanner) => {
                        let mut passed = Vec::with_capacity(read.len());
                        for request in scanner.push(&read, &mut passed) {
                            self.ask_for_line(request);
                        }
                        Bytes::from(passed)
                    }
                    None => Bytes::from(read),
                };
                self.deliver(stream, chunk).await;
                if ended {
                    break;
                }
            }
            let mut released = Vec::new();
            self.masker.finish(&mut released);
            if let Some(mut scanner) = requests {
                let mut held = Vec::new();
                for request in scanner.push(&released, &mut held) {
                    self.ask_for_line(request);
                }
                scanner.finish(&mut held);
                self.deliver(stream, Bytes::from(held)).await;
            } else {
                self.deliver(stream, Bytes::from(released)).await;
            }
        }
    }

    /// Stores output the keeper read while no daemon ran, with the times it came.
    fn keep(&self, output: &[KeptOutput]) {
        let mut masker = self.masker.clone();
        for (at, kept) in output.iter().enumerate() {
            let stream = match kept.stream {
                OutputStream::Pty => Stream::Pty,
                OutputStream::Stdout => Stream::Stdout,
                OutputStream::Stderr => Stream::Stderr,
            };
            let mut masked = Vec::with_capacity(kept.bytes.len());
            masker.push(&kept.bytes, &mut masked);
            if at + 1 == output.len() {
                masker.finish(&mut masked);
            }
            let chunk = Bytes::from(masked);
            self.handle.fanout.push(&chunk);
            self.handle
                .output_bytes
                .fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
            self.history
                .append(&self.agent_id, self.run_id, stream, kept.at_ms, chunk);
        }
    }

    async fn deliver(&self, stream: Stream, chunk: Bytes) {
        if chunk.is_empty() {
            return;
        }
        self.handle.fanout.push(&chunk);
        self.handle
            .output_bytes
            .fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
        // Saved right after viewers got it, before the screen is read (which compiles a kind's
        // rules the first time): what a viewer saw must not be lost to a daemon stopping then.
        self.history.room_for(chunk.len()).await;
        self.history
            .append(&self.agent_id, self.run_id, stream, now_ms(), chunk.clone());
        activity::on_output(&self.handle, &self.services, &chunk);
        if let Some(line) = &self.readiness_line {
            line.look(&self.agent_id, stream, &chunk);
        }
    }

    /// Asks the broker for an approval line the agent printed, and answers it on the agent's
    /// input once decided (on the daemon's runtime: the reader thread only reads).
    fn ask_for_line(&self, request: LineRequest) {
        let approvals = self.approvals.clone();
        let handle = Arc::clone(&self.handle);
        let agent_id = self.agent_id.to_string();
        self.services.main.spawn(async move {
            let id = request.id.clone();
            match approvals.ask(&agent_id, "line", request.into()).await {
                Ok(approval) => {
                    let decision = match approval.status {
                        ApprovalStatus::Approved => Decision::Approved,
                        ApprovalStatus::Expired => Decision::Expired,
                        ApprovalStatus::Denied | ApprovalStatus::Pending => Decision::Denied,
                    };
                    let answer = response_line(id.as_deref().unwrap_or(&approval.id), decision);
                    if let Some(input) = handle.fanout.input() {
                        let _ = input
                            .send(Box::new(InputOp::Bytes(Bytes::from(answer))))
                            .await;
                    }
                }
                Err(e) => tracing::warn!(
                    agent = agent_id,
                    "an approval line was refused: {}",
                    e.message
                ),
            }
        });
    }
}

/// Sleeps until `at`; forever when there is none.
async fn sleep_until_instant(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A run's probes. `launch` is the run's own spawn, whose sandbox, user, environment and
/// directory an exec probe's command gets; without it (a run taken over from the keeper) exec and
/// line probes are left out.
fn probe_setups(
    spec: &AgentSpec,
    launch: Option<&SpawnSpec<'_>>,
) -> Result<Vec<ProbeSetup>, String> {
    use celistra_core::probe::{Check, ProbeKind, Timing, check};
    let mut setups = vec![];
    for (kind, probe) in [
        (ProbeKind::Readiness, &spec.readiness),
        (ProbeKind::Liveness, &spec.liveness),
    ] {
        let Some(probe) = probe else { continue };
        let check = check(probe, kind)?;
        let exec = match (&check, launch) {
            (Check::Exec(command), Some(launch)) => Some(
                SpawnSpec {
                    args: vec!["-c".into(), command.clone()],
                    cgroup: None,
                    limits: None,
                    audit_login_uid: None,
                    ..launch.clone()
                }
                .resolve()
                .map_err(|e| format!("{}: {e}", kind.as_str()))?,
            ),
            (Check::Exec(_) | Check::Line(_), None) => continue,
            _ => None,
        };
        setups.push(ProbeSetup {
            kind,
            check,
            timing: Timing::of(probe),
            exec,
        });
    }
    Ok(setups)
}

/// A run's readiness line (`readiness.line`), looked for in its output until it shows. A line
/// seen before the run's probes were armed is reported again once they are (see `spawn`).
#[derive(Clone)]
struct ReadinessLine {
    watch: Arc<Mutex<celistra_core::probe::LineWatch>>,
    probes: Probes,
    run: u64,
}

impl ReadinessLine {
    fn of(spec: &AgentSpec, probes: &Probes, run: u64) -> Option<ReadinessLine> {
        let pattern = spec.readiness.as_ref()?.line.as_ref()?;
        let matcher = celistra_core::probe::LineMatcher::new(pattern).ok()?;
        Some(ReadinessLine {
            watch: Arc::new(Mutex::new(celistra_core::probe::LineWatch::new(matcher))),
            probes: probes.clone(),
            run,
        })
    }

    fn look(&self, agent_id: &str, stream: Stream, chunk: &[u8]) {
        let mut watch = self.watch.lock().unwrap_or_else(PoisonError::into_inner);
        if watch.matched().is_some() {
            return;
        }
        if let Some(line) = watch.push(stream, chunk) {
            self.probes.line_seen(agent_id, self.run, &line);
        }
    }

    /// The line that matched, if one did.
    fn seen(&self) -> Option<String> {
        let watch = self.watch.lock().unwrap_or_else(PoisonError::into_inner);
        watch.matched().map(str::to_owned)
    }
}

/// Sleeps until a wall-clock time in ms; forever when there is none.
async fn sleep_until_ms(at_ms: Option<u64>) {
    match at_ms {
        Some(at) => tokio::time::sleep(Duration::from_millis(at.saturating_sub(now_ms()))).await,
        None => std::future::pending().await,
    }
}

/// A uniform random number in `[0, 1)` for backoff jitter.
pub(crate) fn random_unit() -> f64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

/// What a run with a shared socket is told of it, as systemd socket activation says it: one
/// descriptor from fd 3, named `socket`. `LISTEN_PID` is set by the shell (see [`shell_args`]).
fn socket_activation_env() -> [(String, String); 2] {
    [
        ("LISTEN_FDS".into(), "1".into()),
        ("LISTEN_FDNAMES".into(), "socket".into()),
    ]
}

/// `/bin/sh`'s arguments to run `command`. With a shared socket, the shell first sets
/// `LISTEN_PID` to its own pid (`$$`, in the sandbox's pid namespace too), then replaces itself by
/// the command: a plain one (see [`is_plain_command`]) with `exec`, so the program that reads
/// `LISTEN_PID` finds its own pid there, as socket activation libraries check; any other by the
/// shell that runs it (whose last program should be started with `exec` for those libraries).
fn shell_args(command: &str, with_socket: bool) -> Vec<String> {
    if !with_socket {
        return vec!["-c".into(), command.to_owned()];
    }
    let run = if is_plain_command(command) {
        "exec $0"
    } else {
        "exec /bin/sh -c \"$0\""
    };
    vec![
        "-c".into(),
        format!("LISTEN_PID=$$; export LISTEN_PID; {run}"),
        command.to_owned(),
    ]
}

/// Whether `command` is one program with its arguments and nothing the shell would interpret:
/// words of letters, digits and `_ . / - + , : @ %`, the first without `=` (not an assignment).
/// Such a command means the same unquoted (`$0` split on spaces), and `exec` may run it.
fn is_plain_command(command: &str) -> bool {
    let plain_word = |word: &str| {
        !word.is_empty()
            && word
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_./-+,:@%=".contains(&b))
    };
    let mut words = command.split(' ').filter(|w| !w.is_empty());
    words
        .next()
        .is_some_and(|first| plain_word(first) && !first.contains('='))
        && words.all(plain_word)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_task_stays_small() {
        fn size_of_future<A, B, C, D, F>(_: impl FnOnce(A, B, C, D) -> F) -> usize {
            std::mem::size_of::<F>()
        }
        // Every agent keeps its task for life: 6,224 bytes (this build) before its steps were
        // boxed, 12.7 KiB per agent in a release daemon (heaptrack).
        let size = size_of_future(run);
        assert!(
            size <= 2048,
            "the agent task takes {size} bytes; box the step that grew it"
        );
    }

    #[test]
    fn only_a_program_with_plain_arguments_is_execed_directly() {
        for plain in [
            "python3 server.py",
            "/usr/bin/node app.js --port=8080",
            "  gunicorn -w 1 app:app ",
        ] {
            assert!(is_plain_command(plain), "{plain}");
            assert_eq!(
                shell_args(plain, true)[1],
                "LISTEN_PID=$$; export LISTEN_PID; exec $0"
            );
        }
        for shell in [
            "cd app && python3 server.py",
            "PORT=1 node app.js",
            "node $APP",
            "echo *",
            "run 'a b'",
            "a\tb",
            "",
        ] {
            assert!(!is_plain_command(shell), "{shell}");
        }
        assert_eq!(shell_args("a; b", false), ["-c", "a; b"]);
    }
}
