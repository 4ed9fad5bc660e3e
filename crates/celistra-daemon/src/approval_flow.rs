//! An approval request's way through the daemon: checked and recorded by the broker
//! (`approvals.rs`), announced as events and through the notification channels, shown in the asking
//! agent's state (`waiting-approval`), and expired at its deadline if nobody decides it. It holds
//! only the parts it needs, so it is tested here without a running daemon.

use std::sync::{Arc, Weak};
use std::time::Duration;

use celistra_proto::{
    ApiError, Approval, ApprovalStatus, AskRequest, ErrorCode, EventKind, HookReport, NoticeKind,
};

use crate::actor::Actor;
use crate::approvals::{Broker, Submission, Verdict};
use crate::events::EventBus;
use crate::now_ms;
use crate::services::{AgentDirectory, Announce};

/// The approval operations of one daemon. Cheap to clone.
#[derive(Clone)]
pub(crate) struct ApprovalFlow {
    broker: Arc<Broker>,
    events: Arc<EventBus>,
    channels: Arc<dyn Announce>,
    agents: Weak<dyn AgentDirectory>,
}

impl std::fmt::Debug for ApprovalFlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApprovalFlow").finish_non_exhaustive()
    }
}

fn stopping() -> ApiError {
    ApiError::new(
        ErrorCode::ShuttingDown,
        "the daemon is stopping; ask again once it is back",
    )
}

impl ApprovalFlow {
    pub(crate) fn new(
        broker: Arc<Broker>,
        events: Arc<EventBus>,
        channels: Arc<dyn Announce>,
        agents: Weak<dyn AgentDirectory>,
    ) -> ApprovalFlow {
        ApprovalFlow {
            broker,
            events,
            channels,
            agents,
        }
    }

    /// Agent `agent_id` asks (`origin`: `ask`, `hook` or `line`). Returns once the request is
    /// decided or expired. With a `key` that names a pending request of the same agent, waits for
    /// that one.
    pub(crate) async fn ask(
        &self,
        agent_id: &str,
        origin: &str,
        ask: AskRequest,
    ) -> Result<Approval, ApiError> {
        let agents = self.agents.upgrade().ok_or_else(stopping)?;
        let agent = agents.lookup(agent_id).ok_or_else(|| {
            ApiError::new(
                ErrorCode::NotFound,
                format!("no agent `{agent_id}`; it was removed"),
            )
        })?;
        let submission = self
            .broker
            .submit(agent_id, &agent.name, origin, ask, now_ms())?;
        let receiver = match submission {
            Submission::Decided(approval) => return Ok(*approval),
            Submission::Joined(receiver) => receiver,
            Submission::Created(approval, receiver) => {
                self.events.publish(EventKind::ApprovalRequested {
                    approval: approval.clone(),
                });
                self.channels
                    .announce(NoticeKind::ApprovalRequested, &approval);
                self.expire_at_deadline(*approval);
                receiver
            }
        };
        agents.set_waiting_approval(agent_id, true);
        drop(agents);
        receiver.await.map_err(|_| stopping())
    }

    /// Decides a pending request; the first decision wins, later ones get a conflict.
    pub(crate) fn decide(&self, id: &str, verdict: Verdict<'_>) -> Result<Approval, ApiError> {
        let approval = self.broker.decide(id, verdict, now_ms())?;
        self.events.publish(EventKind::ApprovalDecided {
            approval: Box::new(approval.clone()),
        });
        self.channels
            .announce(NoticeKind::ApprovalDecided, &approval);
        if !self.broker.has_pending(&approval.agent_id)
            && let Some(agents) = self.agents.upgrade()
        {
            agents.set_waiting_approval(&approval.agent_id, false);
        }
        Ok(approval)
    }

    /// After a restart: every pending request gets its expiry again (overdue ones expire at once).
    pub(crate) fn restore(&self) {
        for approval in self.broker.list(true) {
            self.expire_at_deadline(approval);
        }
    }

    /// Expires a request at its deadline if nobody decided it by then.
    fn expire_at_deadline(&self, approval: Approval) {
        let flow = self.clone();
        tokio::spawn(async move {
            let wait = approval.expires_at_ms.saturating_sub(now_ms());
            tokio::time::sleep(Duration::from_millis(wait)).await;
            let expiry = Verdict {
                status: ApprovalStatus::Expired,
                actor: Actor::system(),
                via: "timeout",
                reason: Some("nobody decided in time".into()),
            };
            // Already decided is the normal case.
            let _ = flow.decide(&approval.id, expiry);
        });
    }
}

impl crate::asks::Answerer for ApprovalFlow {
    fn answer(
        &self,
        agent_id: &str,
        origin: &'static str,
        request: AskRequest,
    ) -> impl Future<Output = Result<Approval, ApiError>> + Send {
        self.ask(agent_id, origin, request)
    }

    fn report(&self, agent_id: &str, report: &HookReport) -> Result<(), ApiError> {
        self.agents
            .upgrade()
            .ok_or_else(stopping)?
            .report_hook(agent_id, report)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use celistra_proto::{Role, TimeoutDefault};

    use super::*;
    use crate::services::AgentRef;

    /// One agent, `ag-1` named `web`, whose waiting flag is recorded.
    #[derive(Default)]
    struct Agents {
        waiting: Mutex<HashMap<String, bool>>,
    }

    impl AgentDirectory for Agents {
        fn lookup(&self, agent_id: &str) -> Option<AgentRef> {
            (agent_id == "ag-1").then(|| AgentRef {
                name: "web".into(),
                history_run: 1,
            })
        }

        fn set_waiting_approval(&self, agent_id: &str, waiting: bool) {
            self.waiting
                .lock()
                .unwrap()
                .insert(agent_id.to_owned(), waiting);
        }

        fn report_hook(&self, _: &str, _: &HookReport) -> Result<(), ApiError> {
            Ok(())
        }
    }

    /// What the channels were told.
    #[derive(Default)]
    struct Channels(Mutex<Vec<(NoticeKind, String)>>);

    impl Announce for Channels {
        fn announce(&self, kind: NoticeKind, approval: &Approval) {
            self.0.lock().unwrap().push((kind, approval.id.clone()));
        }
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        flow: ApprovalFlow,
        events: Arc<EventBus>,
        agents: Arc<Agents>,
        channels: Arc<Channels>,
    }

    async fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let broker = Arc::new(Broker::load(dir.path().join("approvals.json"), now_ms()));
        let (store, _, _) = crate::store::Store::load(dir.path().join("agents.json"));
        let (log, _) = celistra_audit::AuditLog::open(&dir.path().join("audit"), "test").unwrap();
        let audit = Arc::new(crate::audit::Auditor::new(log));
        let events = Arc::new(EventBus::new(0, 0, store, audit));
        let agents = Arc::new(Agents::default());
        let channels = Arc::new(Channels::default());
        let directory: Arc<dyn AgentDirectory> = agents.clone();
        let flow = ApprovalFlow::new(
            broker,
            Arc::clone(&events),
            channels.clone(),
            Arc::downgrade(&directory),
        );
        // The flow holds the directory weakly, as it holds the supervisor; `agents` keeps it.
        Fixture {
            _dir: dir,
            flow,
            events,
            agents,
            channels,
        }
    }

    fn ask(prompt: &str, ttl_secs: u64) -> AskRequest {
        AskRequest {
            prompt: prompt.into(),
            detail: None,
            ttl_secs: Some(ttl_secs),
            on_timeout: TimeoutDefault::Deny,
            key: None,
        }
    }

    fn approve(by: &str) -> Verdict<'static> {
        Verdict {
            status: ApprovalStatus::Approved,
            actor: Actor::credential(by, Role::Approver),
            via: "api",
            reason: None,
        }
    }

    /// Waits (bounded) until the broker has a pending request, and returns it.
    async fn pending(flow: &ApprovalFlow) -> Approval {
        for _ in 0..1000 {
            if let Some(approval) = flow.broker.list(true).into_iter().next() {
                return approval;
            }
            tokio::task::yield_now().await;
        }
        panic!("no request became pending");
    }

    #[tokio::test]
    async fn an_ask_waits_for_the_first_decision_which_is_announced_and_recorded() {
        let fixture = fixture().await;
        let mut live = fixture.events.subscribe(None).live;
        let flow = fixture.flow.clone();
        let asking = tokio::spawn(async move { flow.ask("ag-1", "ask", ask("deploy?", 60)).await });
        let request = pending(&fixture.flow).await;
        assert_eq!(
            (request.agent_name.as_str(), request.prompt.as_str()),
            ("web", "deploy?")
        );
        assert!(fixture.agents.waiting.lock().unwrap()["ag-1"]);

        let decided = fixture
            .flow
            .decide(&request.id, approve("token:alice"))
            .unwrap();
        assert_eq!(decided.status, ApprovalStatus::Approved);
        assert_eq!(decided.decided_by_role, Some(Role::Approver));
        let answered = asking.await.unwrap().unwrap();
        assert_eq!(
            (answered.id, answered.status),
            (request.id.clone(), ApprovalStatus::Approved)
        );
        assert!(!fixture.agents.waiting.lock().unwrap()["ag-1"]);

        // A second decision loses, saying who decided.
        let late = fixture
            .flow
            .decide(&request.id, approve("token:bob"))
            .unwrap_err();
        assert_eq!(late.code, ErrorCode::Conflict);
        assert!(late.message.contains("token:alice"), "{}", late.message);

        let kinds: Vec<&str> = [live.recv().await.unwrap(), live.recv().await.unwrap()]
            .iter()
            .map(|event| event.kind.name())
            .collect();
        assert_eq!(kinds, ["approval_requested", "approval_decided"]);
        let told = fixture.channels.0.lock().unwrap().clone();
        assert_eq!(
            told,
            [
                (NoticeKind::ApprovalRequested, request.id.clone()),
                (NoticeKind::ApprovalDecided, request.id)
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_undecided_request_expires_at_its_deadline_as_the_system() {
        let fixture = fixture().await;
        let answered = fixture
            .flow
            .ask("ag-1", "ask", ask("wait", 1))
            .await
            .unwrap();
        assert_eq!(answered.status, ApprovalStatus::Expired);
        assert_eq!(answered.decided_by.as_deref(), Some("system"));
        assert_eq!(answered.decided_by_role, None);
        assert!(!fixture.agents.waiting.lock().unwrap()["ag-1"]);
    }

    #[tokio::test]
    async fn a_removed_agent_cannot_ask() {
        let fixture = fixture().await;
        let error = fixture
            .flow
            .ask("ag-gone", "ask", ask("x", 60))
            .await
            .unwrap_err();
        assert_eq!(error.code, ErrorCode::NotFound);
        assert!(fixture.flow.broker.list(false).is_empty());
    }
}
