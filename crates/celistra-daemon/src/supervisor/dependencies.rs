//! `depends_on` at run time: whether an agent's dependencies are met, starting it or making it
//! wait (state `waiting`), the one task that starts waiting agents once what they wait for
//! happens, the checks of `spawn` and `set` (unknown agents, cycles), and the stop order.

use std::sync::{Arc, Weak};

use celistra_core::depends::{self, Observed};
use celistra_proto::{AgentSpec, AgentState, ApiError, Dependency, ErrorCode};
use tokio::sync::broadcast::error::RecvError;

use super::agent::Command;
use super::{AgentHandle, Supervisor};
use crate::actor::Actor;

impl Supervisor {
    /// What `spec`'s dependencies still wait for, in words; `None` when every one is met.
    pub(super) fn unmet_dependencies(&self, spec: &AgentSpec) -> Option<String> {
        if spec.depends_on.is_empty() {
            return None;
        }
        let registry = self.read();
        let unmet: Vec<(&Dependency, bool)> = spec
            .depends_on
            .iter()
            .filter_map(|dependency| {
                let found = registry
                    .id_by_name
                    .get(&dependency.agent)
                    .and_then(|id| registry.by_id.get(id));
                match found {
                    Some(handle) => {
                        let info = handle.info();
                        let seen = Observed {
                            state: info.state,
                            ready: info.ready,
                            exit_code: info.exit_code,
                        };
                        (!depends::met(dependency.condition, seen)).then_some((dependency, true))
                    }
                    None => Some((dependency, false)),
                }
            })
            .collect();
        (!unmet.is_empty()).then(|| depends::describe_unmet(&unmet))
    }

    /// Starts an agent whose dependencies are met, or makes it wait for them.
    pub(super) async fn start_or_wait(
        &self,
        handle: &AgentHandle,
        actor: &Actor,
    ) -> Result<(), ApiError> {
        let spec = handle.spec().clone();
        let Some(waiting_for) = self.unmet_dependencies(&spec) else {
            return handle.ask(actor, Command::Start).await;
        };
        handle
            .ask(actor, |reply| Command::Wait(waiting_for, reply))
            .await?;
        // What it waits for may have happened while it was told to wait.
        if self.unmet_dependencies(&spec).is_none() {
            return handle.ask(actor, Command::Start).await;
        }
        Ok(())
    }

    /// Refuses a spec whose dependencies name no agent or close a cycle; `replacing` is the id of
    /// the agent whose spec it replaces.
    pub(super) fn check_dependencies(
        &self,
        spec: &AgentSpec,
        replacing: Option<&str>,
    ) -> Result<(), ApiError> {
        // A cycle through this agent needs a dependency of its own.
        if spec.depends_on.is_empty() {
            return Ok(());
        }
        let others: Vec<AgentSpec> = {
            let registry = self.read();
            if let Some(missing) = spec
                .depends_on
                .iter()
                .find(|d| !registry.id_by_name.contains_key(&d.agent))
            {
                return Err(ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!(
                        "depends_on: no agent is named `{}`; spawn it first, or list both in one \
                         file for `ctl apply`",
                        missing.agent
                    ),
                ));
            }
            registry
                .by_id
                .values()
                .filter(|h| Some(h.id.as_str()) != replacing)
                .map(|h| h.spec().clone())
                .collect()
        };
        let graph = depends::graph(
            others
                .iter()
                .chain(std::iter::once(spec))
                .map(|s| (s.name.as_str(), s.depends_on.as_slice())),
        );
        depends::refuse_cycles(&graph, Some(&spec.name))
            .map_err(|e| ApiError::new(ErrorCode::InvalidRequest, e))
    }

    /// Every agent's handle in stop order: waves, each after the agents that depend on it.
    pub(super) fn stop_waves(&self) -> Vec<Vec<Arc<AgentHandle>>> {
        let registry = self.read();
        let specs: Vec<AgentSpec> = registry.by_id.values().map(|h| h.spec().clone()).collect();
        let graph = depends::graph(
            specs
                .iter()
                .map(|s| (s.name.as_str(), s.depends_on.as_slice())),
        );
        depends::stop_waves(&graph)
            .into_iter()
            .map(|wave| {
                wave.iter()
                    .filter_map(|name| registry.id_by_name.get(name))
                    .filter_map(|id| registry.by_id.get(id).cloned())
                    .collect()
            })
            .collect()
    }

    /// Starts every waiting agent whose dependencies are now met.
    async fn start_met_waiters(&self) {
        if self.shutting_down.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let waiting: Vec<Arc<AgentHandle>> = self
            .read()
            .by_id
            .values()
            .filter(|h| h.info().state == AgentState::Waiting)
            .cloned()
            .collect();
        let system = Actor::system();
        let orders = waiting.iter().filter_map(|handle| {
            let spec = handle.spec().clone();
            let order: Box<dyn FnOnce(_) -> Command + Send> = match self.unmet_dependencies(&spec) {
                None => Box::new(Command::Start),
                // What it waits for changed (one dependency met, another not yet).
                Some(still) if handle.info().waiting_for.as_deref() != Some(still.as_str()) => {
                    Box::new(|reply| Command::Wait(still, reply))
                }
                Some(_) => return None,
            };
            Some(handle.ask(&system, order))
        });
        futures_util::future::join_all(orders).await;
    }
}

/// Starts waiting agents when an event may have met what they wait for, while the supervisor
/// lives: one task for all of them, woken by the event bus.
pub(super) async fn start_when_met(supervisor: Weak<Supervisor>) {
    let Some(mut events) = supervisor
        .upgrade()
        .map(|s| s.services.events.subscribe(None).live)
    else {
        return;
    };
    loop {
        match events.recv().await {
            Ok(event) if event.kind.changed_agent().is_none() => continue,
            Err(RecvError::Closed) => return,
            // A lagging receiver missed some: look at every waiting agent anyway.
            Ok(_) | Err(RecvError::Lagged(_)) => {}
        }
        let Some(supervisor) = supervisor.upgrade() else {
            return;
        };
        supervisor.start_met_waiters().await;
    }
}
