//! An approval request's way through the daemon: checked and recorded by the broker
//! (`approvals.rs`), announced as events and through the notification channels, shown in the asking
//! agent's state (`waiting-approval`), and expired at its deadline if nobody decides it.

use std::sync::{Arc, Weak};
use std::time::Duration;

use celistra_proto::{
    ApiError, Approval, ApprovalStatus, AskRequest, ErrorCode, EventKind, NoticeKind,
};

use crate::actor::Actor;
use crate::approvals::{Submission, Verdict};
use crate::now_ms;
use crate::services::{AgentDirectory, Services};

/// The approval operations of one daemon. Cheap to clone.
#[derive(Clone)]
pub(crate) struct ApprovalFlow {
    services: Arc<Services>,
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
    pub(crate) fn new(services: Arc<Services>, agents: Weak<dyn AgentDirectory>) -> ApprovalFlow {
        ApprovalFlow { services, agents }
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
        let submission =
            self.services
                .approvals
                .submit(agent_id, &agent.name, origin, ask, now_ms())?;
        let receiver = match submission {
            Submission::Decided(approval) => return Ok(*approval),
            Submission::Joined(receiver) => receiver,
            Submission::Created(approval, receiver) => {
                self.services.events.publish(EventKind::ApprovalRequested {
                    approval: approval.clone(),
                });
                self.announce(NoticeKind::ApprovalRequested, &approval);
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
        let broker = &self.services.approvals;
        let approval = broker.decide(id, verdict, now_ms())?;
        self.services.events.publish(EventKind::ApprovalDecided {
            approval: Box::new(approval.clone()),
        });
        self.announce(NoticeKind::ApprovalDecided, &approval);
        if !broker.has_pending(&approval.agent_id)
            && let Some(agents) = self.agents.upgrade()
        {
            agents.set_waiting_approval(&approval.agent_id, false);
        }
        Ok(approval)
    }

    /// After a restart: every pending request gets its expiry again (overdue ones expire at once).
    pub(crate) fn restore(&self) {
        for approval in self.services.approvals.list(true) {
            self.expire_at_deadline(approval);
        }
    }

    /// Tells every channel (read afresh from `config.json`) of a request or a decision.
    fn announce(&self, kind: NoticeKind, approval: &Approval) {
        match self.services.config() {
            Ok(config) => self
                .services
                .notify
                .announce(&config.notifications, kind, approval),
            Err(e) => tracing::warn!("no notifications for {}: {}", approval.id, e.message),
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
}
