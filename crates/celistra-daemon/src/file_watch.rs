//! File watching (`--watch`): one task that keeps an inotify watcher (the `notify` crate) for each
//! agent with a `watch`, gathers its changes until none has come for the watch's delay, then
//! restarts the agent once, as the actor `watch`. Every trigger is an `agent_watch_triggered`
//! event (and so an audit entry).
//!
//! - One watcher per agent, not one for all: watches of nested or shared directories would
//!   otherwise share inotify watch descriptors, and removing one agent's would blind another.
//!   The price is one inotify instance and one thread per watching agent.
//! - The watcher's callback runs on notify's thread; it only filters the change (its root, the
//!   ignore globs) and adds it to the agent's batch, so a flood of changes costs a short lock
//!   each and memory stays bounded.
//! - What a trigger does depends on the agent's state (`celistra_core::watch::Reaction`).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use celistra_core::watch::{IgnoreMatcher, Reaction};
use celistra_proto::{AgentInfo, EventKind, Watch};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::Notify;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::actor::Actor;
use crate::supervisor::Supervisor;

/// Changed paths kept per batch, to show in the event.
const PATHS_SHOWN: usize = 10;

/// Changes gathered for one agent since its last trigger.
struct Batch {
    last_change: Instant,
    paths: Vec<String>,
    changes: u64,
}

/// What the watchers' callbacks and the task share.
#[derive(Default)]
struct Shared {
    batches: Mutex<HashMap<String, Batch>>,
    wake: Notify,
}

impl Shared {
    fn record(&self, agent_id: &str, path: &Path) {
        let mut batches = self.batches.lock().unwrap_or_else(PoisonError::into_inner);
        let batch = batches.entry(agent_id.to_owned()).or_insert_with(|| Batch {
            last_change: Instant::now(),
            paths: vec![],
            changes: 0,
        });
        batch.last_change = Instant::now();
        batch.changes += 1;
        // A flood of changes only counts once the paths shown are gathered.
        if batch.paths.len() < PATHS_SHOWN {
            let shown = path.display().to_string();
            if !batch.paths.contains(&shown) {
                batch.paths.push(shown);
            }
        }
        drop(batches);
        self.wake.notify_one();
    }
}

/// A watched path: a directory with everything below it, or one file (whose directory is
/// watched, so that editors that replace the file by renaming are seen).
struct Root {
    path: PathBuf,
    is_dir: bool,
}

impl Root {
    /// The change's path relative to this root, if it is this root's.
    fn relative<'a>(&self, changed: &'a Path) -> Option<&'a Path> {
        if self.is_dir {
            changed.strip_prefix(&self.path).ok()
        } else {
            (changed == self.path).then(|| Path::new(""))
        }
    }
}

/// One watching agent.
struct Entry {
    /// The watch and the directory its relative paths start from.
    made_from: (Watch, PathBuf),
    delay: Duration,
    /// Kept for its drop, which stops watching.
    _watcher: RecommendedWatcher,
}

struct Watches {
    supervisor: Arc<Supervisor>,
    shared: Arc<Shared>,
    entries: HashMap<String, Entry>,
}

/// Runs the file watching until `stopping`.
pub(crate) async fn run(supervisor: Arc<Supervisor>, stopping: CancellationToken) {
    let mut events = supervisor.services.events.subscribe(None).live;
    let shared = Arc::new(Shared::default());
    let mut watches = Watches {
        supervisor,
        shared: Arc::clone(&shared),
        entries: HashMap::new(),
    };
    watches.reconcile();
    loop {
        let next_due = watches.trigger_due(Instant::now());
        let wait_due = async {
            match next_due {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = stopping.cancelled() => return,
            () = shared.wake.notified() => {}
            () = wait_due => {}
            event = events.recv() => match event {
                Ok(event) => {
                    if matches!(
                        event.kind,
                        EventKind::AgentSpawned { .. }
                            | EventKind::AgentUpdated { .. }
                            | EventKind::AgentRemoved { .. }
                    ) && let Some(agent_id) = event.kind.changed_agent()
                    {
                        watches.reconcile_one(agent_id);
                    }
                }
                Err(RecvError::Lagged(_)) => watches.reconcile(),
                Err(RecvError::Closed) => return,
            },
        }
    }
}

impl Watches {
    /// Makes the watchers match the agents' specs: a new one for a new or changed watch, none
    /// for agents without one.
    fn reconcile(&mut self) {
        let agents = self.supervisor.list();
        let watching: HashSet<&str> = agents
            .iter()
            .filter(|a| a.watch.is_some())
            .map(|a| a.id.as_str())
            .collect();
        self.entries.retain(|id, _| watching.contains(id.as_str()));
        self.shared
            .batches
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|id, _| self.entries.contains_key(id));
        for agent in &agents {
            self.reconcile_agent(agent);
        }
    }

    /// [`Watches::reconcile`] for the one agent an event named (made, changed or removed): a
    /// thousand agents made at once cost a thousand looks, not a million.
    fn reconcile_one(&mut self, agent_id: &str) {
        match self.supervisor.info_of(agent_id) {
            Some(agent) if agent.watch.is_some() => self.reconcile_agent(&agent),
            _ => {
                self.entries.remove(agent_id);
                self.shared
                    .batches
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(agent_id);
            }
        }
    }

    /// A watcher for `agent` if it has a watch and none was made from the same one.
    fn reconcile_agent(&mut self, agent: &AgentInfo) {
        let Some(watch) = &agent.watch else {
            return;
        };
        let base = PathBuf::from(agent.worktree.as_ref().unwrap_or(&agent.workspace));
        let made_from = (watch.as_ref().clone(), base);
        if self
            .entries
            .get(&agent.id)
            .is_some_and(|e| e.made_from == made_from)
        {
            return;
        }
        self.entries.remove(&agent.id);
        match self.start_watching(&agent.id, &made_from) {
            Ok(watcher) => {
                self.entries.insert(
                    agent.id.clone(),
                    Entry {
                        delay: Duration::from_millis(watch.delay_ms()),
                        made_from,
                        _watcher: watcher,
                    },
                );
            }
            Err(error) => {
                tracing::warn!(agent = %agent.id, "cannot watch its files: {error}");
                self.publish(agent, "failed", None, Some(error));
            }
        }
    }

    fn start_watching(
        &self,
        agent_id: &str,
        (watch, base): &(Watch, PathBuf),
    ) -> Result<RecommendedWatcher, String> {
        // Specs are checked before they are stored; a stored file edited by hand may still hold a bad glob.
        let ignore = IgnoreMatcher::new(&watch.ignore_globs())?;
        let roots: Vec<Root> = watch
            .paths
            .iter()
            .map(|p| {
                let path = std::path::absolute(base.join(p)).unwrap_or_else(|_| base.join(p));
                let is_dir = path.is_dir();
                Root { path, is_dir }
            })
            .collect();
        let mut targets: Vec<(PathBuf, RecursiveMode)> = vec![];
        for root in &roots {
            let target = if root.is_dir {
                (root.path.clone(), RecursiveMode::Recursive)
            } else {
                let parent = root.path.parent().unwrap_or(Path::new("/"));
                (parent.to_path_buf(), RecursiveMode::NonRecursive)
            };
            if !targets.contains(&target) {
                targets.push(target);
            }
        }
        let shared = Arc::clone(&self.shared);
        let id = agent_id.to_owned();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let Ok(event) = event else {
                    return;
                };
                if matches!(event.kind, notify::EventKind::Access(_)) {
                    return;
                }
                for changed in &event.paths {
                    let relevant = roots.iter().any(|root| {
                        root.relative(changed)
                            .is_some_and(|relative| !ignore.is_ignored(relative))
                    });
                    if relevant {
                        shared.record(&id, changed);
                    }
                }
            })
            .map_err(|e| format!("cannot start watching: {e}"))?;
        for (path, mode) in &targets {
            watcher.watch(path, *mode).map_err(|e| {
                format!(
                    "cannot watch {}: {e}; check that it exists and that \
                     fs.inotify.max_user_watches and max_user_instances are large enough",
                    path.display()
                )
            })?;
        }
        Ok(watcher)
    }

    /// Triggers every agent whose changes have been quiet for its delay; returns when the next
    /// one falls due.
    fn trigger_due(&self, now: Instant) -> Option<Instant> {
        let mut due = vec![];
        let mut next = None::<Instant>;
        {
            let mut batches = self
                .shared
                .batches
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            batches.retain(|id, batch| {
                let Some(entry) = self.entries.get(id) else {
                    return false;
                };
                let at = batch.last_change + entry.delay;
                if at <= now {
                    due.push((id.clone(), std::mem::take(&mut batch.paths), batch.changes));
                    return false;
                }
                next = Some(next.map_or(at, |n| n.min(at)));
                true
            });
        }
        for (id, paths, changes) in due {
            self.trigger(&id, paths, changes);
        }
        next
    }

    /// Restarts or starts the agent, as its state says, in a task of its own (a restart waits
    /// for the agent's grace period, and other agents' triggers do not).
    fn trigger(&self, agent_id: &str, paths: Vec<String>, changes: u64) {
        let Ok(handle) = self.supervisor.find(agent_id) else {
            return;
        };
        let agent = handle.info().clone();
        let Some(reaction) = Reaction::to_changes_in(agent.state) else {
            tracing::debug!(agent = %agent_id, "files changed; it does not run, so it stays as it is");
            return;
        };
        let action = reaction.as_str();
        tracing::info!(agent = %agent_id, changes, "watched files changed: {action}");
        self.publish(&agent, action, Some((paths, changes)), None);
        let supervisor = Arc::clone(&self.supervisor);
        let id = agent_id.to_owned();
        tokio::spawn(async move {
            let actor = Actor::watch();
            let done = if reaction == Reaction::Start {
                supervisor.start(&id, &actor).await
            } else {
                supervisor.restart(&id, &actor).await
            };
            if let Err(e) = done {
                tracing::warn!(agent = %id, "watch {action}: {}", e.message);
            }
        });
    }

    fn publish(
        &self,
        agent: &AgentInfo,
        action: &str,
        changed: Option<(Vec<String>, u64)>,
        error: Option<String>,
    ) {
        let (paths, changes) = changed.unwrap_or_default();
        self.supervisor
            .services
            .events
            .publish(EventKind::AgentWatchTriggered {
                agent_id: agent.id.clone(),
                name: agent.name.clone(),
                action: action.to_owned(),
                paths,
                changes,
                error,
            });
    }
}
