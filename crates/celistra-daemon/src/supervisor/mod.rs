//! The supervisor: the registry of agents (by id and by name) and every operation on them. Each
//! agent's process is owned by its own task (`agent.rs`); this module creates, finds, commands and
//! removes those tasks, and keeps names unique and records durable.

mod activity;
mod agent;
mod dependencies;
pub(crate) mod fanout;
mod groups;
mod mailbox;
mod probes;
mod reader_thread;
mod standby;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};

use celistra_core::{apply, names, spec as spec_rules};
use celistra_history::History;
use celistra_proto::{
    AgentInfo, AgentSpec, AgentState, ApiError, ApplyReport, ApplyRequest, ErrorCode, EventKind,
    IoMode, RemoveQuery, Signal, UpdateRequest,
};
use futures_util::FutureExt;

pub(crate) use agent::AgentHandle;
use agent::Command;
use fanout::Fanout;
pub(crate) use reader_thread::ReaderThread;

use crate::actor::Actor;
use crate::approval_flow::ApprovalFlow;
use crate::now_ms;
use crate::services::{AgentDirectory, AgentRef, Services};
use crate::store::StoredAgent;
use agent::Adoption;
use celistra_sandbox::keeper::AdoptedRun;

/// The last `bytes` of an agent's saved output, as written (empty if there is none or it cannot be
/// read: the scrollback is a convenience, the history is the record), and whether that is all of it.
fn saved_tail(history: &History, agent_id: &str, bytes: usize) -> (Vec<u8>, bool) {
    let filter = celistra_history::LogFilter {
        agent_id: Some(agent_id.to_owned()),
        ..Default::default()
    };
    let Ok(end) = history.end_pos(agent_id) else {
        return (vec![], true);
    };
    let mut cursor = celistra_history::Cursor::new(end.saturating_sub(bytes as u64), true);
    let mut tail = Vec::with_capacity(bytes);
    let read = history.read_forward(&filter, &mut cursor, &mut |piece| {
        if let celistra_history::Piece::Bytes { bytes, stream, .. } = piece
            && stream.is_output()
        {
            tail.extend_from_slice(&bytes);
        }
        true
    });
    if let Err(e) = read {
        tracing::warn!(
            agent = agent_id,
            "cannot read the saved output for the scrollback: {e}"
        );
    }
    (tail, end <= bytes as u64)
}

#[derive(Debug, Default)]
struct Registry {
    by_id: HashMap<String, Arc<AgentHandle>>,
    id_by_name: HashMap<String, String>,
    /// Groups of instances by name (see `groups.rs`); their instances are in `by_id` too.
    groups: std::collections::BTreeMap<String, crate::store::StoredGroup>,
}

/// An operator's stop, start or restart (`Supervisor::lifecycle`).
#[derive(Clone, Copy)]
enum Lifecycle {
    Stop,
    Start,
    Restart,
}

#[derive(Debug)]
pub(crate) struct Supervisor {
    pub services: Arc<Services>,
    /// The approval operations, answering for the agents here.
    pub approvals: ApprovalFlow,
    registry: RwLock<Registry>,
    /// How many agents there are, for the periodic tasks that have nothing to do without one.
    agent_count: tokio::sync::watch::Sender<usize>,
    shutting_down: AtomicBool,
    /// The one scheduler of every agent's probes.
    probes: probes::Probes,
}

/// Looks at every running agent's activity once a second (see `activity::tick`) while the
/// supervisor lives and has agents.
pub(crate) async fn watch_activity(supervisor: Weak<Supervisor>) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let Some(mut count) = supervisor.upgrade().map(|s| s.agent_count()) else {
        return;
    };
    while some_agents(&mut count).await {
        every.tick().await;
        let Some(supervisor) = supervisor.upgrade() else {
            return;
        };
        for handle in supervisor.handles() {
            activity::tick(&handle, &supervisor.services);
        }
    }
}

/// Waits until there is an agent; `false` once the supervisor is gone. A periodic task waits
/// here rather than ticking, so a daemon with no agent sleeps: no wake-up faults its code back
/// in (`code_pages.rs`).
pub(crate) async fn some_agents(count: &mut tokio::sync::watch::Receiver<usize>) -> bool {
    count.wait_for(|n| *n > 0).await.is_ok()
}

fn not_found(key: &str) -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        format!("no agent with id or name `{key}`; `celistrad ctl ls` lists them"),
    )
}

impl Supervisor {
    pub(crate) fn new(services: Arc<Services>) -> Arc<Supervisor> {
        let supervisor = Arc::new_cyclic(|me: &Weak<Supervisor>| {
            let agents: Weak<dyn AgentDirectory> = me.clone();
            Supervisor {
                approvals: ApprovalFlow::new(
                    Arc::clone(&services.approvals),
                    Arc::clone(&services.events),
                    Arc::clone(&services) as Arc<dyn crate::services::Announce>,
                    agents,
                ),
                probes: probes::Probes::start(Arc::clone(&services)),
                services,
                registry: RwLock::default(),
                agent_count: tokio::sync::watch::channel(0).0,
                shutting_down: AtomicBool::new(false),
            }
        });
        tokio::spawn(dependencies::start_when_met(Arc::downgrade(&supervisor)));
        supervisor
    }

    fn read(&self) -> RwLockReadGuard<'_, Registry> {
        self.registry.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Registry> {
        self.registry
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Every agent's handle, oldest first.
    pub(crate) fn oldest_first(&self) -> Vec<Arc<AgentHandle>> {
        let mut handles: Vec<Arc<AgentHandle>> = self.read().by_id.values().cloned().collect();
        handles.sort_by_cached_key(|h| (h.info().created_at_ms, h.id.clone()));
        handles
    }

    /// Every agent, oldest first.
    pub(crate) fn list(&self) -> Vec<celistra_proto::AgentInfo> {
        self.oldest_first()
            .iter()
            .map(|handle| (*handle.info()).clone())
            .collect()
    }

    /// A copy of one agent's info, by id; `None` once it is removed.
    pub(crate) fn info_of(&self, agent_id: &str) -> Option<celistra_proto::AgentInfo> {
        let handle = self.read().by_id.get(agent_id).cloned()?;
        let info = (*handle.info()).clone();
        Some(info)
    }

    /// Every agent, oldest first, as a JSON array. Each agent is serialised under its own lock
    /// rather than cloned first: `ls` of a thousand agents is mostly this.
    pub(crate) fn list_json(&self) -> Vec<u8> {
        let handles = self.oldest_first();
        let mut json = Vec::with_capacity(handles.len() * 1024 + 2);
        json.push(b'[');
        for (i, handle) in handles.iter().enumerate() {
            if i > 0 {
                json.push(b',');
            }
            handle.info.append_json(&mut json);
        }
        json.push(b']');
        json
    }

    /// CPU time and memory of every agent with a live process, as last sampled (`usage.rs`).
    pub(crate) fn usage(&self) -> Vec<celistra_proto::AgentUsage> {
        self.oldest_first()
            .iter()
            .filter_map(|handle| handle.sampled().clone())
            .collect()
    }

    /// How many agents there are, as it changes.
    pub(crate) fn agent_count(&self) -> tokio::sync::watch::Receiver<usize> {
        self.agent_count.subscribe()
    }

    /// Every agent's handle, in no particular order.
    pub(crate) fn handles(&self) -> Vec<Arc<AgentHandle>> {
        self.read().by_id.values().cloned().collect()
    }

    /// Finds an agent by id or by name.
    pub(crate) fn find(&self, key: &str) -> Result<Arc<AgentHandle>, ApiError> {
        let registry = self.read();
        let id = registry.id_by_name.get(key).map_or(key, String::as_str);
        registry
            .by_id
            .get(id)
            .cloned()
            .ok_or_else(|| not_found(key))
    }

    pub(crate) fn counts(&self) -> (u32, u32) {
        let registry = self.read();
        let running = registry
            .by_id
            .values()
            .filter(|h| h.info().state == AgentState::Running)
            .count();
        (registry.by_id.len() as u32, running as u32)
    }

    fn refuse_if_stopping(&self) -> Result<(), ApiError> {
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err(ApiError::new(
                ErrorCode::ShuttingDown,
                "the daemon is shutting down; retry once it is back",
            ));
        }
        Ok(())
    }

    /// The directory an agent with `spec` runs in.
    pub(crate) fn workspace_of(&self, spec: &AgentSpec) -> String {
        spec.workspace
            .clone()
            .unwrap_or_else(|| self.services.default_workspace.clone())
    }

    /// Checks a spec against the rules and the filesystem.
    fn check_spec(&self, spec: &AgentSpec, name_required: bool) -> Result<(), ApiError> {
        spec_rules::validate(spec, name_required)
            .map_err(|e| ApiError::new(ErrorCode::InvalidRequest, e))?;
        let workspace = spec
            .workspace
            .as_deref()
            .unwrap_or(&self.services.default_workspace);
        if !std::path::Path::new(workspace).is_dir() {
            return Err(ApiError::new(
                ErrorCode::WorkspaceInvalid,
                format!(
                    "workspace {workspace} does not exist or is not a directory; create it or pass another"
                ),
            ));
        }
        let watched = spec.watch.iter().flat_map(|w| &w.paths);
        if let Some(missing) = watched
            .map(|p| std::path::Path::new(workspace).join(p))
            .find(|p| !p.exists())
        {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "watch: {} does not exist; create it, or watch a path that does (relative paths are relative to the workspace)",
                    missing.display()
                ),
            ));
        }
        Ok(())
    }

    /// Creates an agent and starts it, unless it has a schedule (then it waits for its times,
    /// `scheduler.rs`) or `no_autostart` (then it waits for an operator's `start`). Returns it as
    /// it is once the spawn was attempted.
    pub(crate) async fn spawn(
        &self,
        spec: AgentSpec,
        source: &str,
        actor: &Actor,
    ) -> Result<AgentInfo, ApiError> {
        self.check_dependencies(&spec, None)?;
        self.create(spec, source, actor).await
    }

    /// [`Supervisor::spawn`] once its dependencies are checked (`apply` checks a whole file's).
    async fn create(
        &self,
        mut spec: AgentSpec,
        source: &str,
        actor: &Actor,
    ) -> Result<AgentInfo, ApiError> {
        self.refuse_if_stopping()?;
        if spec.instances.is_some() {
            return self.spawn_group(spec, source, actor).await;
        }
        self.check_spec(&spec, false)?;
        self.services.secrets.check_references(&spec, actor)?;
        self.services.config()?;
        // Bound now, so an address in use is the request's error.
        if let Some(socket) = &spec.socket {
            self.services.sockets.get(socket)?;
        }
        // Made now, so a workspace outside git or a branch in use is the request's error (and
        // not for a name that is taken: checked again below, under the lock).
        let worktree = if spec.worktree.is_some() {
            if !spec.name.is_empty() && self.read().id_by_name.contains_key(&spec.name) {
                return Err(name_taken(&spec.name));
            }
            crate::worktree::for_run(&self.services, &spec).await?
        } else {
            None
        };
        let waits = spec.schedule.is_some() || spec.no_autostart;
        let handle = {
            let mut registry = self.write();
            if let Some(worktree) = &worktree {
                refuse_shared_worktree(&registry, &spec, &worktree.path)?;
            }
            if spec.name.is_empty() {
                spec.name =
                    names::generate_name(&spec.command, |n| registry.id_by_name.contains_key(n));
            } else if registry.id_by_name.contains_key(&spec.name)
                || registry.groups.contains_key(&spec.name)
            {
                return Err(name_taken(&spec.name));
            }
            let id = new_id(&registry)?;
            let stored = StoredAgent {
                id: id.clone(),
                spec,
                source: source.to_owned(),
                created_at_ms: now_ms(),
                state: if waits {
                    AgentState::Stopped
                } else {
                    AgentState::Running
                },
                exit_code: None,
                exit_signal: None,
                restarts: 0,
                run: 0,
                last_fire_ms: None,
                limit: None,
            };
            self.services.store.put(stored.clone());
            let handle = self.insert(&mut registry, &stored);
            handle.info_mut().worktree = worktree.map(|w| w.path.display().to_string());
            handle
        };
        self.services.events.publish(EventKind::AgentSpawned {
            agent: Box::new(handle.info().clone()),
            actor: actor.name.clone(),
            actor_role: actor.role,
        });
        self.sync().await?;
        if waits {
            return Ok(handle.info().clone());
        }
        // A failed spawn is reported in the agent's state and `last_error`; the agent exists.
        let _ = self.start_or_wait(&handle, actor).await;
        Ok(handle.info().clone())
    }

    /// Registers an agent and starts its task (idle until told to start).
    fn insert(&self, registry: &mut Registry, stored: &StoredAgent) -> Arc<AgentHandle> {
        let settings = self
            .services
            .config()
            .unwrap_or_default()
            .resolve(&stored.spec);
        let mut info = AgentInfo {
            id: stored.id.clone(),
            name: String::new(),
            // A new agent that should run is not running until its task says so: what depends
            // on it must not start before.
            state: match stored.state {
                AgentState::Running => AgentState::Starting,
                state => state,
            },
            pid: None,
            restarts: stored.restarts,
            exit_code: stored.exit_code,
            exit_signal: stored.exit_signal.clone(),
            command: String::new(),
            workspace: String::new(),
            env_keys: vec![],
            auto_restart: false,
            source: stored.source.clone(),
            run: stored.run,
            created_at_ms: stored.created_at_ms,
            started_at_ms: None,
            exited_at_ms: None,
            next_restart_at_ms: None,
            last_error: None,
            settings: settings.clone(),
            mode: IoMode::Pty,
            sandbox: None,
            kind: String::new(),
            activity: None,
            exit_class: None,
            limit: None,
            model_errors: 0,
            usage: None,
            schedule: None,
            restart_cron: None,
            next_run_at_ms: None,
            next_restart_cron_at_ms: None,
            worktree: None,
            watch: None,
            ready: None,
            readiness: None,
            liveness: None,
            waiting_for: None,
            depends_on: vec![],
        };
        self.describe(&mut info, &stored.spec);
        let handle = Arc::new(AgentHandle {
            id: stored.id.clone(),
            info: agent::InfoCell::new(info),
            spec: std::sync::Mutex::new(stored.spec.clone()),
            fanout: Fanout::new(settings.scrollback_kb as usize * 1024),
            orders: mailbox::Orders::default(),
            history_run: std::sync::atomic::AtomicU64::new(0),
            activity: activity::Tracker::default(),
            resume: mailbox::ResumeAt::default(),
            sampled: std::sync::Mutex::new(None),
            output_bytes: std::sync::atomic::AtomicU64::new(0),
        });
        self.services.asks.open(&stored.id, self.approvals.clone());
        registry
            .id_by_name
            .insert(stored.spec.name.clone(), stored.id.clone());
        registry
            .by_id
            .insert(stored.id.clone(), Arc::clone(&handle));
        self.agent_count.send_replace(registry.by_id.len());
        let task = agent::run(
            Arc::clone(&self.services),
            self.approvals.clone(),
            Arc::clone(&handle),
            self.probes.clone(),
        );
        let id = stored.id.clone();
        let watched = Arc::clone(&handle);
        // A combinator, not an `async` block: a block would hold the task twice, as what it
        // captured and as what it awaits (about 1 KiB more per agent).
        tokio::spawn(
            std::panic::AssertUnwindSafe(task)
                .catch_unwind()
                .map(move |ended| {
                    if ended.is_err() {
                        // Its orders would never be taken: whoever gives one hears it is gone.
                        watched.orders.close();
                        tracing::error!(
                            agent = %id,
                            "agent task panicked; the agent is marked failed"
                        );
                        let mut info = watched.info_mut();
                        info.state = AgentState::Failed;
                        info.last_error =
                            Some("internal error: the agent's supervisor task panicked".into());
                    }
                }),
        );
        handle
    }

    /// Copies the spec's visible fields into an agent's info.
    fn describe(&self, info: &mut AgentInfo, spec: &AgentSpec) {
        info.name = spec.name.clone();
        info.command = spec.command.clone();
        info.workspace = spec
            .workspace
            .clone()
            .unwrap_or_else(|| self.services.default_workspace.clone());
        info.env_keys = spec.env.keys().cloned().collect();
        // The variables its secrets are given as (`--secret NAME`): names only, like the rest.
        for name in &spec.secrets {
            if !info.env_keys.contains(name) {
                info.env_keys.push(name.clone());
            }
        }
        info.auto_restart = spec.auto_restart;
        info.kind = spec
            .kind
            .clone()
            .unwrap_or_else(|| celistra_core::agents::guess_kind(&spec.command).to_owned());
        info.mode = if spec.no_pty {
            IoMode::Pipes
        } else {
            IoMode::Pty
        };
        info.schedule = spec.schedule.clone();
        info.restart_cron = spec.restart_cron.clone();
        info.watch = spec.watch.clone();
        // Without a readiness probe there is no readiness; a new probe has not passed yet.
        info.ready = spec.readiness.as_ref().map(|_| info.ready.unwrap_or(false));
        info.depends_on.clone_from(&spec.depends_on);
        (info.next_run_at_ms, info.next_restart_cron_at_ms) = celistra_core::schedule::next_times(
            spec.schedule.as_deref(),
            spec.restart_cron.as_deref(),
            crate::zone::machine_zone(),
            now_ms(),
        );
    }

    /// Brings back the agents of the previous run: the runs the keeper held are taken over, the
    /// other agents that should run are started.
    pub(crate) async fn restore(&self, stored: Vec<StoredAgent>, mut held: Vec<AdoptedRun>) {
        let mut to_start = vec![];
        let mut to_adopt = vec![];
        let mut restored = vec![];
        {
            let mut registry = self.write();
            registry.groups = self
                .services
                .store
                .groups()
                .into_iter()
                .map(|g| (g.name.clone(), g))
                .collect();
            for mut agent in stored {
                if let Some(socket) = &agent.spec.socket {
                    self.services.sockets.adopt_inherited(socket);
                }
                let should_run = matches!(
                    agent.state,
                    AgentState::Running
                        | AgentState::Starting
                        | AgentState::Backoff
                        | AgentState::Stopping
                );
                // The keeper's newest run of the agent; older ones ended and were recorded.
                let adoption = held
                    .iter()
                    .enumerate()
                    .filter(|(_, h)| h.run.agent_id == agent.id)
                    .max_by_key(|(_, h)| h.run.run_id)
                    .map(|(at, _)| at)
                    .and_then(|at| {
                        let note = serde_json::from_value(held[at].run.note.clone()).ok()?;
                        Some(Adoption {
                            run: held.swap_remove(at),
                            note,
                        })
                    });
                if should_run || adoption.is_some() {
                    agent.state = AgentState::Stopped;
                }
                let handle = self.insert(&mut registry, &agent);
                if let Some(adoption) = adoption {
                    to_adopt.push((Arc::clone(&handle), adoption));
                } else if should_run {
                    // A wait for a usage limit's reset goes on; one that passed starts now.
                    let waiting = agent.limit.clone().filter(|l| l.resume_at_ms > now_ms());
                    to_start.push((Arc::clone(&handle), waiting));
                }
                restored.push(handle);
            }
        }
        // Where each worktree agent's worktree is, before any runs, so `ls` shows it and a new
        // agent cannot take its branch.
        for handle in &restored {
            let spec = handle.spec().clone();
            if spec.worktree.is_some()
                && let Some(path) = crate::worktree::locate(&self.services, &spec).await
            {
                handle.info_mut().worktree = Some(path.display().to_string());
            }
        }
        // A client that reconnects after the daemon restarted sees the output from before it.
        let history = self.services.history.clone();
        let seeded = tokio::task::spawn_blocking(move || {
            for handle in restored {
                let (tail, whole) = saved_tail(&history, &handle.id, handle.fanout.capacity());
                handle.fanout.seed(&tail, whole);
            }
        });
        if let Err(e) = seeded.await {
            tracing::warn!("cannot restore the scrollback: {e}");
        }
        // Runs no agent claims (removed, or started just before a crash, before they were
        // recorded) end: nothing would supervise them.
        for stray in held {
            tracing::warn!(
                agent = stray.run.agent_id,
                pid = stray.run.pid,
                "the keeper held a run no agent claims; killing it"
            );
            let _ = celistra_sandbox::signal_group(stray.run.pid, Signal::Kill.number());
            if let Some(cgroup) = self
                .services
                .cgroups
                .as_ref()
                .and_then(|root| root.agent(&stray.run.agent_id).ok())
            {
                cgroup.kill();
            }
            if let Some(keeper) = &self.services.keeper {
                keeper.forget(stray.run.pid).await;
            }
        }
        let system = Actor::system();
        let adoptions = to_adopt.into_iter().map(|(handle, adoption)| {
            let system = &system;
            async move {
                let adoption = Box::new(adoption);
                handle.ask(system, |r| Command::Adopt(adoption, r)).await
            }
        });
        futures_util::future::join_all(adoptions).await;
        let starts = to_start.into_iter().map(|(handle, waiting)| {
            let system = &system;
            async move {
                match waiting {
                    Some(limit) => handle.ask(system, |r| Command::AwaitReset(limit, r)).await,
                    None => self.start_or_wait(&handle, system).await,
                }
            }
        });
        futures_util::future::join_all(starts).await;
    }

    /// Makes `agents.json` and the audit entries so far durable before a change is acknowledged.
    pub(crate) async fn sync(&self) -> Result<(), ApiError> {
        self.services
            .store
            .sync()
            .await
            .map_err(|e| ApiError::new(ErrorCode::Internal, e))?;
        let audit = Arc::clone(&self.services.audit);
        tokio::task::spawn_blocking(move || audit.log().sync())
            .await
            .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?
            .map_err(|e| ApiError::new(ErrorCode::Internal, format!("audit log: {e}")))
    }

    /// Changes an agent's spec; optionally restarts it so the change applies now.
    pub(crate) async fn update(
        &self,
        key: &str,
        update: &UpdateRequest,
        actor: &Actor,
    ) -> Result<AgentInfo, ApiError> {
        let handle = self.find(key)?;
        spec_rules::check_update(update)
            .map_err(|e| ApiError::new(ErrorCode::InvalidRequest, e))?;
        let mut spec = handle.spec().clone();
        let old_name = spec.name.clone();
        if update.instances.is_some() {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "`{old_name}` is one agent; change a group's size with `celistrad ctl scale \
                     GROUP N`"
                ),
            ));
        }
        if let Some(group) = groups::group_of(&self.read(), &old_name)
            && update.name.as_ref().is_some_and(|name| *name != old_name)
        {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "`{old_name}` is an instance of group `{}` and keeps its name; scale the group \
                     instead",
                    group.name
                ),
            ));
        }
        spec_rules::apply_update(&mut spec, update);
        self.check_spec(&spec, true)?;
        self.check_dependencies(&spec, Some(&handle.id))?;
        // A rename cannot make an agent give its secrets away; any other change could.
        let rename_only = UpdateRequest {
            name: None,
            ..update.clone()
        } == UpdateRequest::default();
        if !rename_only {
            self.services.secrets.check_references(&spec, actor)?;
        }
        self.replace_spec(&handle, spec, &old_name, actor)?;
        // A new name alone is recorded as `agent_renamed` (from its event).
        let settings_changed = UpdateRequest {
            name: None,
            ..update.clone()
        } != UpdateRequest::default();
        if settings_changed {
            self.services.audit.record(
                actor,
                "agent_updated",
                &handle.id,
                serde_json::to_value(update).unwrap_or_default(),
            );
        }
        self.sync().await?;
        if update.restart && handle.info().state.is_active() {
            handle.ask(actor, Command::Restart).await?;
        }
        Ok(handle.info().clone())
    }

    /// Agents that depend on an agent renamed from `old_name` follow it to `new_name` (their specs,
    /// stored too); returns their ids and names.
    fn follow_rename(
        &self,
        registry: &Registry,
        old_name: &str,
        new_name: &str,
    ) -> Vec<(String, String)> {
        let mut followers = vec![];
        for other in registry.by_id.values() {
            let mut spec = other.spec().clone();
            let mut changed = false;
            for dependency in spec.depends_on.iter_mut().filter(|d| d.agent == old_name) {
                dependency.agent = new_name.to_owned();
                changed = true;
            }
            if !changed {
                continue;
            }
            self.describe(&mut other.info_mut(), &spec);
            *other.spec() = spec.clone();
            followers.push((other.id.clone(), spec.name.clone()));
            self.services
                .store
                .update(&other.id, |stored| stored.spec = spec);
        }
        followers
    }

    /// Installs a new spec for an agent (renaming it in the registry if needed) and publishes it.
    fn replace_spec(
        &self,
        handle: &AgentHandle,
        spec: AgentSpec,
        old_name: &str,
        actor: &Actor,
    ) -> Result<(), ApiError> {
        let renamed = spec.name != old_name;
        let mut followers = vec![];
        {
            let mut registry = self.write();
            if renamed {
                if registry.id_by_name.contains_key(&spec.name) {
                    return Err(ApiError::new(
                        ErrorCode::NameTaken,
                        format!(
                            "an agent named `{}` already exists; pick another name",
                            spec.name
                        ),
                    ));
                }
                registry.id_by_name.remove(old_name);
                registry
                    .id_by_name
                    .insert(spec.name.clone(), handle.id.clone());
            }
            self.describe(&mut handle.info_mut(), &spec);
            *handle.spec() = spec.clone();
            self.services
                .store
                .update(&handle.id, |stored| stored.spec = spec.clone());
            if renamed {
                followers = self.follow_rename(&registry, old_name, &spec.name);
            }
        }
        if renamed {
            self.services.events.publish(EventKind::AgentRenamed {
                agent_id: handle.id.clone(),
                old_name: old_name.to_owned(),
                new_name: spec.name.clone(),
                actor: actor.name.clone(),
                actor_role: actor.role,
            });
        }
        self.services.events.publish(EventKind::AgentUpdated {
            agent_id: handle.id.clone(),
            name: spec.name,
            actor: actor.name.clone(),
            actor_role: actor.role,
        });
        for (agent_id, name) in followers {
            self.services.events.publish(EventKind::AgentUpdated {
                agent_id,
                name,
                actor: actor.name.clone(),
                actor_role: actor.role,
            });
        }
        Ok(())
    }

    pub(crate) async fn rename(
        &self,
        key: &str,
        name: &str,
        actor: &Actor,
    ) -> Result<AgentInfo, ApiError> {
        names::validate_name(name).map_err(|e| ApiError::new(ErrorCode::InvalidRequest, e))?;
        let update = UpdateRequest {
            name: Some(name.to_owned()),
            ..UpdateRequest::default()
        };
        self.update(key, &update, actor).await
    }

    pub(crate) async fn stop(&self, key: &str, actor: &Actor) -> Result<AgentInfo, ApiError> {
        self.lifecycle(key, actor, Lifecycle::Stop).await
    }

    /// Starts an agent, or, when its dependencies are not met, makes it wait for them.
    pub(crate) async fn start(&self, key: &str, actor: &Actor) -> Result<AgentInfo, ApiError> {
        self.refuse_if_stopping()?;
        self.lifecycle(key, actor, Lifecycle::Start).await
    }

    pub(crate) async fn restart(&self, key: &str, actor: &Actor) -> Result<AgentInfo, ApiError> {
        self.refuse_if_stopping()?;
        self.lifecycle(key, actor, Lifecycle::Restart).await
    }

    /// Publishes the operator's request for the agent (or every instance of the group `key`
    /// names), has its task carry it out, and waits until the resulting desired state is on disk.
    async fn lifecycle(
        &self,
        key: &str,
        actor: &Actor,
        act: Lifecycle,
    ) -> Result<AgentInfo, ApiError> {
        let handles = self.agent_or_group(key)?;
        for handle in &handles {
            let (id, name) = (handle.id.clone(), handle.info().name.clone());
            let requested = match act {
                Lifecycle::Stop => stop_requested(id, name, actor),
                Lifecycle::Start | Lifecycle::Restart => start_requested(id, name, actor),
            };
            self.services.events.publish(requested);
            match act {
                Lifecycle::Stop => handle.ask(actor, Command::Stop).await?,
                Lifecycle::Restart => handle.ask(actor, Command::Restart).await?,
                Lifecycle::Start if handle.info().state.is_active() => {
                    handle.ask(actor, Command::Start).await?;
                }
                Lifecycle::Start => self.start_or_wait(handle, actor).await?,
            }
        }
        self.sync().await?;
        Ok(handles[0].info().clone())
    }

    pub(crate) async fn kill(
        &self,
        key: &str,
        signal: Signal,
        actor: &Actor,
    ) -> Result<AgentInfo, ApiError> {
        let handle = self.find(key)?;
        handle
            .ask(actor, |reply| Command::Kill(signal, reply))
            .await?;
        self.services.events.publish(EventKind::AgentSignalled {
            agent_id: handle.id.clone(),
            name: handle.info().name.clone(),
            signal,
            actor: actor.name.clone(),
            actor_role: actor.role,
        });
        Ok(handle.info().clone())
    }

    /// Stops an agent and forgets it; its worktree goes as `query` says (see `worktree.rs`).
    pub(crate) async fn remove(
        &self,
        key: &str,
        query: &RemoveQuery,
        actor: &Actor,
    ) -> Result<AgentInfo, ApiError> {
        if self.find(key).is_err() && self.is_group(key) {
            let mut first = None;
            for member in self.group_members(key).unwrap_or_default() {
                let removed = Box::pin(self.remove(&member.id, query, actor)).await?;
                first.get_or_insert(removed);
            }
            self.forget_group(key);
            self.sync().await?;
            return first.ok_or_else(|| not_found(key));
        }
        let handle = self.find(key)?;
        let spec = handle.spec().clone();
        let known = handle.info().worktree.clone();
        // Checked before the agent stops, so a refusal leaves it as it was.
        let worktree = crate::worktree::plan_removal(
            &self.services,
            &spec,
            known.as_deref(),
            query,
            &spec.name,
        )
        .await?;
        handle.ask(actor, Command::Remove).await?;
        let mut info = handle.info().clone();
        info.state = AgentState::Stopped;
        {
            let mut registry = self.write();
            registry.by_id.remove(&handle.id);
            registry.id_by_name.remove(&info.name);
            self.agent_count.send_replace(registry.by_id.len());
        }
        self.services.store.remove(&handle.id);
        handle.fanout.close();
        if let Some(root) = &self.services.cgroups
            && let Ok(cgroup) = root.agent(&handle.id)
        {
            cgroup.remove();
        }
        self.services.limits.remove_agent(&handle.id);
        self.services.asks.close(&handle.id);
        if let Some(socket) = &spec.socket {
            let still_used = self.read().by_id.values().any(|other| {
                other.spec().socket.as_ref().is_some_and(|s| {
                    celistra_core::listen::ListenAddr::parse(s).ok()
                        == celistra_core::listen::ListenAddr::parse(socket).ok()
                })
            });
            self.services.sockets.release(socket, still_used);
        }
        self.services.events.publish(EventKind::AgentRemoved {
            agent_id: handle.id.clone(),
            name: info.name.clone(),
            actor: actor.name.clone(),
            actor_role: actor.role,
        });
        self.sync().await?;
        if let Some(worktree) = worktree {
            match worktree.execute().await {
                Ok(()) => info.worktree = None,
                Err(e) => tracing::warn!(agent = %handle.id, "{}", e.message),
            }
        }
        Ok(info)
    }

    /// Makes the agents match `request.agents`: creates missing ones, replaces and restarts changed
    /// ones (a changed agent that is not running keeps its state), leaves unchanged ones alone, and
    /// with `prune` removes the rest.
    pub(crate) async fn apply(
        &self,
        request: ApplyRequest,
        source: &str,
        actor: &Actor,
    ) -> Result<ApplyReport, ApiError> {
        self.refuse_if_stopping()?;
        // A group is compared as its template; its instances are not listed on their own.
        let current: Vec<AgentSpec> = {
            let registry = self.read();
            registry
                .by_id
                .values()
                .map(|h| h.spec().clone())
                .filter(|spec| groups::group_of(&registry, &spec.name).is_none())
                .chain(registry.groups.values().map(|g| g.spec.clone()))
                .collect()
        };
        let plan = apply::plan(&current, &request.agents, request.prune)
            .map_err(|e| ApiError::new(ErrorCode::InvalidRequest, e))?;
        for spec in plan.create.iter().chain(&plan.update) {
            self.check_spec(spec, true).map_err(|e| {
                ApiError::new(e.code, format!("agent `{}`: {}", spec.name, e.message))
            })?;
            self.services
                .secrets
                .check_references(spec, actor)
                .map_err(|e| ApiError {
                    message: format!("agent `{}`: {}", spec.name, e.message),
                    ..e
                })?;
        }
        let report = ApplyReport {
            created: plan.create.iter().map(|s| s.name.clone()).collect(),
            updated: plan.update.iter().map(|s| s.name.clone()).collect(),
            unchanged: plan.unchanged.clone(),
            removed: plan.remove.clone(),
            dry_run: request.dry_run,
        };
        if request.dry_run {
            return Ok(report);
        }
        // Created and removed agents get their own entries; updated ones are recorded here with
        // their new specs.
        self.services.audit.record(
            actor,
            "config_applied",
            "",
            serde_json::json!({
                "source": source,
                "report": report,
                "updated_specs": plan.update,
                "prune": request.prune,
            }),
        );
        // The plan was made from a snapshot: an agent removed meanwhile by another request is
        // already what pruning asked for, and one to update is a conflict, not a missing route.
        for name in &plan.remove {
            match self.remove(name, &RemoveQuery::default(), actor).await {
                Err(e) if e.code == ErrorCode::NotFound => {}
                removed => {
                    removed?;
                }
            }
        }
        for spec in plan.update {
            if self.is_group(&spec.name) || spec.instances.is_some() {
                self.replace_group(spec, source, actor).await?;
                continue;
            }
            let handle = self.find(&spec.name).map_err(|_| {
                ApiError::new(
                    ErrorCode::Conflict,
                    format!(
                        "agent `{}` was removed while this apply ran; apply again",
                        spec.name
                    ),
                )
            })?;
            let name = spec.name.clone();
            self.replace_spec(&handle, spec, &name, actor)?;
            if handle.info().state.is_active() || handle.info().state == AgentState::Backoff {
                handle.ask(actor, Command::Restart).await?;
            }
        }
        let creations = plan
            .create
            .into_iter()
            .map(|spec| self.create(spec, source, actor));
        for created in futures_util::future::join_all(creations).await {
            created?;
        }
        self.sync().await?;
        Ok(report)
    }

    /// Leaves every agent running in the keeper for the next daemon: each task stops reading and
    /// writing its run and ends, the processes untouched.
    pub(crate) async fn leave(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        let handles: Vec<Arc<AgentHandle>> = self.read().by_id.values().cloned().collect();
        let system = Actor::system();
        futures_util::future::join_all(handles.iter().map(|h| h.ask(&system, Command::Leave)))
            .await;
    }

    /// Stops every agent without changing what should run after the next start: dependents
    /// before what they depend on, each wave all at once (each agent with its own grace period).
    pub(crate) async fn shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        let system = Actor::system();
        for wave in self.stop_waves() {
            futures_util::future::join_all(wave.iter().map(|h| h.ask(&system, Command::Shutdown)))
                .await;
        }
    }
}

impl AgentDirectory for Supervisor {
    fn report_hook(
        &self,
        agent_id: &str,
        report: &celistra_proto::HookReport,
    ) -> Result<(), ApiError> {
        let handle = self.find(agent_id)?;
        activity::on_hook(&handle, &self.services, report)
    }

    fn lookup(&self, agent_id: &str) -> Option<AgentRef> {
        let handle = self.read().by_id.get(agent_id).cloned()?;
        Some(AgentRef {
            name: handle.info().name.clone(),
            history_run: handle.history_run.load(Ordering::SeqCst),
        })
    }

    fn set_waiting_approval(&self, agent_id: &str, waiting: bool) {
        let Ok(handle) = self.find(agent_id) else {
            return;
        };
        let (from, to) = if waiting {
            (AgentState::Running, AgentState::WaitingApproval)
        } else {
            (AgentState::WaitingApproval, AgentState::Running)
        };
        if handle.info().state != from {
            return;
        }
        // The daemon's own approval flow is the most structured signal there is; the activity
        // is set first, so whoever sees the new state sees it too.
        activity::note_approval(&handle, &self.services, waiting);
        let changed = {
            let mut info = handle.info_mut();
            if info.state == from {
                info.state = to;
                Some((info.name.clone(), info.pid))
            } else {
                None
            }
        };
        if let Some((name, pid)) = changed {
            self.services.events.publish(EventKind::AgentState {
                agent_id: agent_id.to_owned(),
                name,
                state: to,
                pid,
            });
        }
    }
}

fn stop_requested(agent_id: String, name: String, actor: &Actor) -> EventKind {
    EventKind::AgentStopRequested {
        agent_id,
        name,
        actor: actor.name.clone(),
        actor_role: actor.role,
    }
}

fn start_requested(agent_id: String, name: String, actor: &Actor) -> EventKind {
    EventKind::AgentStartRequested {
        agent_id,
        name,
        actor: actor.name.clone(),
        actor_role: actor.role,
    }
}

fn name_taken(name: &str) -> ApiError {
    ApiError::new(
        ErrorCode::NameTaken,
        format!("an agent named `{name}` already exists; pick another name or remove it first"),
    )
}

/// Refuses a second agent in a worktree another agent works in (git would let both share it).
fn refuse_shared_worktree(
    registry: &Registry,
    spec: &AgentSpec,
    path: &std::path::Path,
) -> Result<(), ApiError> {
    let path = path.display().to_string();
    for handle in registry.by_id.values() {
        let info = handle.info();
        if info.worktree.as_deref() == Some(path.as_str()) {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "agent `{}` ({}) already works on branch `{}` in {path}; give this agent \
                     another branch, or remove that agent first",
                    info.name,
                    info.id,
                    spec.worktree.as_deref().unwrap_or_default()
                ),
            ));
        }
    }
    Ok(())
}

/// A fresh agent id: 4 random characters, more if the space gets crowded.
fn new_id(registry: &Registry) -> Result<String, ApiError> {
    for attempt in 0..64usize {
        let len = 4 + attempt / 8;
        let mut random = [0u8; 32];
        getrandom::fill(&mut random)
            .map_err(|e| ApiError::new(ErrorCode::Internal, format!("no randomness: {e}")))?;
        if let Some(id) = names::agent_id_from_random(&random, len)
            && !registry.by_id.contains_key(&id)
        {
            return Ok(id);
        }
    }
    Err(ApiError::new(
        ErrorCode::Internal,
        "could not find a free agent id",
    ))
}
