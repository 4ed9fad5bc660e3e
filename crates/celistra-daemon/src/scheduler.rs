//! The scheduler: one task that starts agents at the times of their `schedule` and restarts them
//! at those of their `restart_cron`. Each scheduled agent has a [`Timer`] (the pure state machine
//! in `celistra_core::schedule`); this task only feeds it the wall clock and the agent's state,
//! and carries out what it decides through the registry's own `start` and `restart`, as the
//! actor `schedule`. Every decision is an `agent_scheduled` event (and so an audit entry).
//!
//! - It sleeps until the earliest time due, at most a minute at a time (the monotonic clock
//!   stands still while the machine sleeps; the wall clock does not), and wakes on the events
//!   that change specs (spawned, updated, removed) and states (a queued start waits for a run
//!   to end).
//! - The last fire of each schedule is kept in `agents.json` with the agent (`last_fire_ms`): it
//!   is removed with the agent and written by the store's group commit, and at most one write a
//!   minute per agent is a small price. At daemon start, a time that fell due while the daemon
//!   was down is a missed run (`missed: run-once` starts it once; `skip` does not).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use celistra_core::schedule::{Act, Decision, Timer};
use celistra_proto::{AgentInfo, AgentState, EventKind, RestartCron, Schedule};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::actor::Actor;
use crate::now_ms;
use crate::supervisor::Supervisor;

/// Longest sleep between two looks at the wall clock.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// Whether a process exists or is about to, for the overlap policy: a run in backoff will be
/// restarted, so it counts as running.
fn running(state: AgentState) -> bool {
    state.is_active() || state == AgentState::Backoff
}

/// One scheduled agent.
struct Entry {
    /// The spec's schedule and `restart_cron` the timer was made from.
    made_from: (Option<Schedule>, Option<RestartCron>),
    timer: Timer,
}

struct Scheduler {
    supervisor: Arc<Supervisor>,
    entries: HashMap<String, Entry>,
    /// Last fires read from `agents.json` at start, taken as each agent's timer is made.
    stored_last_fire: HashMap<String, u64>,
}

/// Runs the scheduler until `stopping`. `stored_last_fire` holds the last fires persisted by the
/// previous run of the daemon, by agent id.
pub(crate) async fn run(
    supervisor: Arc<Supervisor>,
    stored_last_fire: HashMap<String, u64>,
    stopping: CancellationToken,
) {
    let mut events = supervisor.services.events.subscribe(None).live;
    let mut scheduler = Scheduler {
        supervisor,
        entries: HashMap::new(),
        stored_last_fire,
    };
    scheduler.reconcile(now_ms(), true);
    loop {
        scheduler.tick(now_ms());
        let sleep = scheduler
            .next_wake()
            .map_or(MAX_SLEEP, |at| {
                Duration::from_millis(at.saturating_sub(now_ms()))
            })
            .min(MAX_SLEEP);
        tokio::select! {
            () = stopping.cancelled() => return,
            () = tokio::time::sleep(sleep) => {}
            event = events.recv() => match event {
                Ok(event) => scheduler.on_event(&event.kind),
                Err(RecvError::Lagged(_)) => {
                    scheduler.reconcile(now_ms(), false);
                    scheduler.check_queued();
                }
                Err(RecvError::Closed) => return,
            },
        }
    }
}

impl Scheduler {
    fn on_event(&mut self, kind: &EventKind) {
        match kind {
            EventKind::AgentSpawned { .. }
            | EventKind::AgentUpdated { .. }
            | EventKind::AgentRemoved { .. } => {
                if let Some(agent_id) = kind.changed_agent() {
                    self.reconcile_one(agent_id, now_ms());
                }
            }
            EventKind::AgentState {
                agent_id, state, ..
            } if !running(*state) => self.run_ended(agent_id),
            _ => {}
        }
    }

    /// Makes the timers match the agents' specs: new ones for new or changed schedules (keeping
    /// the last fire), none for agents without one. At daemon start (`starting`), runs missed
    /// while it was down are caught up.
    fn reconcile(&mut self, now: u64, starting: bool) {
        let agents = self.supervisor.list();
        let scheduled: HashSet<&str> = agents
            .iter()
            .filter(|a| is_scheduled(a))
            .map(|a| a.id.as_str())
            .collect();
        self.entries.retain(|id, _| scheduled.contains(id.as_str()));
        let mut due = vec![];
        for agent in agents.iter().filter(|a| is_scheduled(a)) {
            if let Some(decision) = self.make_timer(agent, now, starting) {
                due.push((agent.id.clone(), decision));
            }
        }
        self.publish_times();
        for (id, decision) in due {
            self.carry_out(&id, decision);
        }
    }

    /// [`Scheduler::reconcile`] for the one agent an event named (made, changed or removed): a
    /// thousand agents made at once cost a thousand looks, not a million.
    fn reconcile_one(&mut self, agent_id: &str, now: u64) {
        match self.supervisor.info_of(agent_id) {
            Some(agent) if is_scheduled(&agent) => {
                self.make_timer(&agent, now, false);
            }
            _ => {
                self.entries.remove(agent_id);
            }
        }
        self.publish_times();
    }

    /// A timer for `agent`'s schedule unless one was made from the same spec (keeping the last
    /// fire); at daemon start (`starting`), what a missed run calls for.
    fn make_timer(&mut self, agent: &AgentInfo, now: u64, starting: bool) -> Option<Decision> {
        let made_from = (
            agent.schedule.as_deref().cloned(),
            agent.restart_cron.as_deref().cloned(),
        );
        let last_fire = match self.entries.get(&agent.id) {
            Some(entry) if entry.made_from == made_from => return None,
            Some(entry) => Some(entry.timer.last_fire()),
            None => self.stored_last_fire.remove(&agent.id),
        };
        let timer = Timer::new(
            made_from.0.as_ref(),
            made_from.1.as_ref(),
            crate::zone::machine_zone(),
            last_fire,
            now,
        );
        let mut timer = match timer {
            Ok(timer) => timer,
            Err(e) => {
                // Specs are validated before they are stored; this is a stored file edited by hand.
                tracing::warn!(agent = %agent.id, "schedule ignored: {e}");
                return None;
            }
        };
        let decision = if starting {
            timer.catch_up(now, running(agent.state))
        } else {
            None
        };
        self.entries
            .insert(agent.id.clone(), Entry { made_from, timer });
        decision
    }

    /// Everything due at `now`.
    fn tick(&mut self, now: u64) {
        let mut due = vec![];
        for (id, entry) in &mut self.entries {
            let Ok(handle) = self.supervisor.find(id) else {
                continue;
            };
            let is_running = running(handle.info().state);
            for decision in entry.timer.tick(now, is_running) {
                due.push((id.clone(), decision));
            }
        }
        self.publish_times();
        for (id, decision) in due {
            self.carry_out(&id, decision);
        }
    }

    fn next_wake(&self) -> Option<u64> {
        self.entries
            .values()
            .filter_map(|e| e.timer.next_wake())
            .min()
    }

    /// An agent's run ended: its queued start, if one waits.
    fn run_ended(&mut self, agent_id: &str) {
        let decision = self
            .entries
            .get_mut(agent_id)
            .and_then(|e| e.timer.run_ended());
        if let Some(decision) = decision {
            self.carry_out(agent_id, decision);
        }
    }

    /// After missed events: the queued starts of agents that no longer run.
    fn check_queued(&mut self) {
        let ended: Vec<String> = self
            .entries
            .iter()
            .filter(|(id, e)| {
                e.timer.is_queued()
                    && self
                        .supervisor
                        .find(id)
                        .is_ok_and(|h| !running(h.info().state))
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in ended {
            self.run_ended(&id);
        }
    }

    /// Persists changed last fires and copies the next times into the agents' info.
    fn publish_times(&mut self) {
        for (id, entry) in &mut self.entries {
            if let Some(last_fire) = entry.timer.take_last_fire() {
                self.supervisor
                    .services
                    .store
                    .update(id, |stored| stored.last_fire_ms = Some(last_fire));
            }
            let Ok(handle) = self.supervisor.find(id) else {
                continue;
            };
            let times = (entry.timer.next_run_at(), entry.timer.next_restart_at());
            let current = {
                let info = handle.info();
                (info.next_run_at_ms, info.next_restart_cron_at_ms)
            };
            if current != times {
                let mut info = handle.info_mut();
                (info.next_run_at_ms, info.next_restart_cron_at_ms) = times;
            }
        }
    }

    /// Publishes the decision and, for a start or restart, has the registry do it (in its own
    /// task: a restart waits for the agent's grace period, and other agents' times do not).
    fn carry_out(&self, agent_id: &str, decision: Decision) {
        let Ok(handle) = self.supervisor.find(agent_id) else {
            return;
        };
        let name = handle.info().name.clone();
        tracing::info!(
            agent = %agent_id,
            action = decision.act.as_str(),
            due_at_ms = decision.due_at_ms,
            "schedule fell due"
        );
        self.supervisor
            .services
            .events
            .publish(EventKind::AgentScheduled {
                agent_id: agent_id.to_owned(),
                name,
                action: decision.act.as_str().to_owned(),
                due_at_ms: decision.due_at_ms,
            });
        if !(decision.act.starts() || decision.act.restarts()) {
            return;
        }
        let supervisor = Arc::clone(&self.supervisor);
        let id = agent_id.to_owned();
        let act = decision.act;
        tokio::spawn(async move {
            let actor = Actor::schedule();
            let done = if act == Act::Start || act == Act::Missed {
                supervisor.start(&id, &actor).await
            } else {
                supervisor.restart(&id, &actor).await
            };
            if let Err(e) = done {
                tracing::warn!(agent = %id, "scheduled {}: {}", act.as_str(), e.message);
            }
        });
    }
}

fn is_scheduled(agent: &AgentInfo) -> bool {
    agent.schedule.is_some() || agent.restart_cron.is_some()
}
