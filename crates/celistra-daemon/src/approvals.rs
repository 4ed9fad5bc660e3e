//! The approval broker: requests agents make (through their own socket, see `asks.rs`), kept in
//! `approvals.json` across restarts; the first decision wins, a request nobody decides expires at
//! its deadline with its `on_timeout` (deny unless the agent asked otherwise); an agent with a
//! pending request is `waiting-approval`. Every ask, decision and expiry is an event (and so an
//! audit entry).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use celistra_proto::{
    AgentState, ApiError, Approval, ApprovalStatus, AskRequest, ErrorCode, EventKind, NoticeKind,
};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::home::write_atomic_private;
use crate::now_ms;
use crate::supervisor::{SYSTEM, Supervisor};

/// Default time to decide, as the reference product.
pub(crate) const DEFAULT_TTL: Duration = Duration::from_secs(300);
/// Longest time an agent may ask to wait.
const MAX_TTL_SECS: u64 = 86_400;
/// Decided requests kept for `GET /v1/approvals` (pending ones are all kept).
const KEEP_DECIDED: usize = 1000;
const MAX_PROMPT: usize = 4096;
/// Pending requests one agent may have at once: a loop that asks without waiting cannot grow
/// `approvals.json` (or anyone's inbox) without bound.
const MAX_PENDING_PER_AGENT: usize = 32;
const MAX_DETAIL: usize = 64 * 1024;

#[derive(Debug, Default, Serialize, Deserialize)]
struct ApprovalsFile {
    version: u32,
    approvals: Vec<Approval>,
}

#[derive(Debug, Default)]
struct Book {
    approvals: BTreeMap<String, Approval>,
    /// Agents' `ask` calls waiting for a decision, by request id.
    waiters: HashMap<String, Vec<oneshot::Sender<Approval>>>,
}

/// The broker's state; the operations that need the agents are functions taking the supervisor.
#[derive(Debug)]
pub(crate) struct Broker {
    path: PathBuf,
    book: Mutex<Book>,
}

fn refused(code: ErrorCode, message: impl Into<String>) -> ApiError {
    ApiError::new(code, message)
}

impl Broker {
    /// Reads `approvals.json`; a damaged file is moved aside (the requests in it are listed in the
    /// daemon's log) rather than stopping the daemon.
    pub(crate) fn load(path: PathBuf) -> Broker {
        let mut book = Book::default();
        match std::fs::read_to_string(&path) {
            Ok(text) => match serde_json::from_str::<ApprovalsFile>(&text) {
                Ok(file) => {
                    for approval in file.approvals {
                        book.approvals.insert(approval.id.clone(), approval);
                    }
                }
                Err(e) => {
                    let aside = path.with_extension(format!("json.corrupt-{}", now_ms()));
                    tracing::error!(
                        "{} is unreadable ({e}); moved to {}",
                        path.display(),
                        aside.display()
                    );
                    let _ = std::fs::rename(&path, aside);
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::error!("cannot read {}: {e}", path.display()),
        }
        Broker {
            path,
            book: Mutex::new(book),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every request, newest first; only pending ones with `pending_only`.
    pub(crate) fn list(&self, pending_only: bool) -> Vec<Approval> {
        let mut all: Vec<Approval> = self
            .lock()
            .approvals
            .values()
            .filter(|a| !pending_only || a.status == ApprovalStatus::Pending)
            .cloned()
            .collect();
        all.sort_by(|a, b| (b.created_at_ms, &b.id).cmp(&(a.created_at_ms, &a.id)));
        all
    }

    pub(crate) fn get(&self, id: &str) -> Result<Approval, ApiError> {
        self.lock().approvals.get(id).cloned().ok_or_else(|| {
            refused(
                ErrorCode::NotFound,
                format!("no approval request `{id}`; `celistrad ctl approvals` lists them"),
            )
        })
    }

    fn has_pending(&self, agent_id: &str) -> bool {
        self.lock()
            .approvals
            .values()
            .any(|a| a.agent_id == agent_id && a.status == ApprovalStatus::Pending)
    }

    /// Writes the file (0600, atomically): pending requests and the most recent decided ones.
    fn persist(&self, book: &mut Book) -> Result<(), ApiError> {
        let mut decided: Vec<&Approval> = book
            .approvals
            .values()
            .filter(|a| a.status != ApprovalStatus::Pending)
            .collect();
        decided.sort_by_key(|a| std::cmp::Reverse(a.decided_at_ms));
        let forget: Vec<String> = decided
            .iter()
            .skip(KEEP_DECIDED)
            .map(|a| a.id.clone())
            .collect();
        for id in forget {
            book.approvals.remove(&id);
        }
        let file = ApprovalsFile {
            version: 1,
            approvals: book.approvals.values().cloned().collect(),
        };
        let text = serde_json::to_vec_pretty(&file)
            .map_err(|e| refused(ErrorCode::Internal, format!("cannot encode approvals: {e}")))?;
        write_atomic_private(&self.path, &text).map_err(|e| {
            refused(
                ErrorCode::Internal,
                format!("cannot save {}: {e}", self.path.display()),
            )
        })
    }
}

fn new_approval_id() -> Result<String, ApiError> {
    let mut random = [0u8; 12];
    getrandom::fill(&mut random)
        .map_err(|e| refused(ErrorCode::Internal, format!("no randomness: {e}")))?;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    Ok(format!(
        "ap-{}",
        random
            .iter()
            .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
            .collect::<String>()
    ))
}

fn check_ask(ask: &AskRequest) -> Result<(), ApiError> {
    let invalid = |m: String| refused(ErrorCode::InvalidRequest, m);
    if ask.prompt.trim().is_empty() {
        return Err(invalid(
            "the prompt is empty: say what you want to do".into(),
        ));
    }
    if ask.prompt.len() > MAX_PROMPT {
        return Err(invalid(format!(
            "the prompt is {} bytes; at most {MAX_PROMPT} (put the rest in the detail)",
            ask.prompt.len()
        )));
    }
    if ask.detail.as_ref().is_some_and(|d| d.len() > MAX_DETAIL) {
        return Err(invalid(format!(
            "the detail is longer than {MAX_DETAIL} bytes"
        )));
    }
    if let Some(ttl) = ask.ttl_secs
        && !(1..=MAX_TTL_SECS).contains(&ttl)
    {
        return Err(invalid(format!(
            "ttl {ttl} s is out of range; use 1 to {MAX_TTL_SECS}"
        )));
    }
    if ask
        .key
        .as_ref()
        .is_some_and(|k| k.is_empty() || k.len() > 128)
    {
        return Err(invalid("the key must be 1 to 128 bytes".into()));
    }
    Ok(())
}

/// Shows a pending request in the agent's state (while it runs).
fn mark_waiting(supervisor: &Supervisor, agent_id: &str, waiting: bool) {
    let Ok(handle) = supervisor.find(agent_id) else {
        return;
    };
    let (from, to) = if waiting {
        (AgentState::Running, AgentState::WaitingApproval)
    } else {
        (AgentState::WaitingApproval, AgentState::Running)
    };
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
        supervisor.shared.events.publish(EventKind::AgentState {
            agent_id: agent_id.to_owned(),
            name,
            state: to,
            pid,
        });
    }
}

/// An agent asks (`origin`: `ask`, `hook` or `line`). Returns once the request is decided or
/// expired. With a `key` that names a pending request of the same agent, waits for that one.
pub(crate) async fn ask(
    supervisor: &Arc<Supervisor>,
    agent_id: &str,
    origin: &str,
    ask: AskRequest,
) -> Result<Approval, ApiError> {
    let waiting = submit(supervisor, agent_id, origin, ask)?;
    Ok(match waiting {
        Submitted::Decided(approval) => *approval,
        Submitted::Waiting(receiver) => receiver.await.map_err(|_| {
            refused(
                ErrorCode::ShuttingDown,
                "the daemon is stopping; ask again once it is back",
            )
        })?,
    })
}

/// A request just made (or joined), and how to learn its outcome.
pub(crate) enum Submitted {
    Decided(Box<Approval>),
    Waiting(oneshot::Receiver<Approval>),
}

/// Records a request (or joins a pending one with the same key) and returns how to wait for it.
pub(crate) fn submit(
    supervisor: &Arc<Supervisor>,
    agent_id: &str,
    origin: &str,
    ask: AskRequest,
) -> Result<Submitted, ApiError> {
    check_ask(&ask)?;
    let handle = supervisor.find(agent_id)?;
    let agent_name = handle.info().name.clone();
    let broker = &supervisor.shared.approvals;
    let (sender, receiver) = oneshot::channel();
    let created = {
        let mut book = broker.lock();
        let joined = ask.key.as_ref().and_then(|key| {
            book.approvals
                .values()
                .find(|a| a.agent_id == agent_id && a.key.as_ref() == Some(key))
                .cloned()
        });
        match joined {
            Some(approval) if approval.status != ApprovalStatus::Pending => {
                return Ok(Submitted::Decided(Box::new(approval)));
            }
            Some(approval) => {
                book.waiters.entry(approval.id).or_default().push(sender);
                None
            }
            None => {
                let pending = book
                    .approvals
                    .values()
                    .filter(|a| a.agent_id == agent_id && a.status == ApprovalStatus::Pending)
                    .count();
                if pending >= MAX_PENDING_PER_AGENT {
                    return Err(refused(
                        ErrorCode::TooManyClients,
                        format!(
                            "this agent already has {pending} requests waiting for a decision; \
                             wait for them before asking again"
                        ),
                    ));
                }
                let now = now_ms();
                let ttl_ms = ask
                    .ttl_secs
                    .map_or(DEFAULT_TTL.as_millis() as u64, |s| s * 1000);
                let approval = Approval {
                    id: new_approval_id()?,
                    agent_id: agent_id.to_owned(),
                    agent_name,
                    origin: origin.to_owned(),
                    key: ask.key,
                    prompt: ask.prompt,
                    detail: ask.detail,
                    created_at_ms: now,
                    expires_at_ms: now + ttl_ms,
                    on_timeout: ask.on_timeout,
                    status: ApprovalStatus::Pending,
                    decided_by: None,
                    decided_via: None,
                    decided_at_ms: None,
                    reason: None,
                };
                book.approvals.insert(approval.id.clone(), approval.clone());
                book.waiters
                    .entry(approval.id.clone())
                    .or_default()
                    .push(sender);
                broker.persist(&mut book)?;
                Some(approval)
            }
        }
    };
    if let Some(approval) = created {
        supervisor
            .shared
            .events
            .publish(EventKind::ApprovalRequested {
                approval: Box::new(approval.clone()),
            });
        crate::notify::announce(&supervisor.shared, NoticeKind::ApprovalRequested, &approval);
        expire_at_deadline(Arc::clone(supervisor), approval);
    }
    mark_waiting(supervisor, agent_id, true);
    Ok(Submitted::Waiting(receiver))
}

/// Decides a pending request; the first decision wins, later ones get a conflict.
pub(crate) fn decide(
    supervisor: &Supervisor,
    id: &str,
    status: ApprovalStatus,
    actor: &str,
    via: &str,
    reason: Option<String>,
) -> Result<Approval, ApiError> {
    let broker = &supervisor.shared.approvals;
    let (approval, waiters) = {
        let mut book = broker.lock();
        let Some(approval) = book.approvals.get_mut(id) else {
            return Err(refused(
                ErrorCode::NotFound,
                format!("no approval request `{id}`; `celistrad ctl approvals` lists them"),
            ));
        };
        if approval.status != ApprovalStatus::Pending {
            return Err(refused(
                ErrorCode::Conflict,
                format!(
                    "request {id} was already {} by {} via {}",
                    match approval.status {
                        ApprovalStatus::Approved => "approved",
                        ApprovalStatus::Denied => "denied",
                        _ => "expired",
                    },
                    approval.decided_by.as_deref().unwrap_or("-"),
                    approval.decided_via.as_deref().unwrap_or("-"),
                ),
            ));
        }
        approval.status = status;
        approval.decided_by = Some(actor.to_owned());
        approval.decided_via = Some(via.to_owned());
        approval.decided_at_ms = Some(now_ms());
        approval.reason = reason;
        let approval = approval.clone();
        let waiters = book.waiters.remove(id).unwrap_or_default();
        broker.persist(&mut book)?;
        (approval, waiters)
    };
    for waiter in waiters {
        let _ = waiter.send(approval.clone());
    }
    supervisor
        .shared
        .events
        .publish(EventKind::ApprovalDecided {
            approval: Box::new(approval.clone()),
        });
    crate::notify::announce(&supervisor.shared, NoticeKind::ApprovalDecided, &approval);
    if !broker.has_pending(&approval.agent_id) {
        mark_waiting(supervisor, &approval.agent_id, false);
    }
    Ok(approval)
}

/// Expires a request at its deadline if nobody decided it by then.
pub(crate) fn expire_at_deadline(supervisor: Arc<Supervisor>, approval: Approval) {
    tokio::spawn(async move {
        let wait = approval.expires_at_ms.saturating_sub(now_ms());
        tokio::time::sleep(Duration::from_millis(wait)).await;
        // Already decided is the normal case.
        let _ = decide(
            &supervisor,
            &approval.id,
            ApprovalStatus::Expired,
            SYSTEM,
            "timeout",
            Some("nobody decided in time".into()),
        );
    });
}

/// After a restart: every pending request gets its expiry again (overdue ones expire at once).
pub(crate) fn restore(supervisor: &Arc<Supervisor>) {
    for approval in supervisor.shared.approvals.list(true) {
        expire_at_deadline(Arc::clone(supervisor), approval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(prompt: &str) -> AskRequest {
        AskRequest {
            prompt: prompt.into(),
            detail: None,
            ttl_secs: None,
            on_timeout: Default::default(),
            key: None,
        }
    }

    #[test]
    fn asks_are_checked() {
        assert!(check_ask(&ask("git push")).is_ok());
        assert!(check_ask(&ask("  ")).is_err());
        assert!(check_ask(&ask(&"x".repeat(MAX_PROMPT + 1))).is_err());
        let forever = AskRequest {
            ttl_secs: Some(MAX_TTL_SECS + 1),
            ..ask("x")
        };
        assert!(
            check_ask(&forever)
                .unwrap_err()
                .message
                .contains("out of range")
        );
    }

    #[test]
    fn ids_look_like_ids() {
        let id = new_approval_id().unwrap();
        assert!(id.starts_with("ap-") && id.len() == 15, "{id}");
    }

    #[test]
    fn a_damaged_file_is_moved_aside_and_decided_ones_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("approvals.json");
        std::fs::write(&path, "{").unwrap();
        let broker = Broker::load(path.clone());
        assert!(broker.list(false).is_empty());
        assert!(!path.exists());
        let mut book = broker.lock();
        for i in 0..(KEEP_DECIDED + 5) {
            let id = format!("ap-{i:012}");
            book.approvals.insert(
                id.clone(),
                Approval {
                    id,
                    agent_id: "ag-abcd".into(),
                    agent_name: "a".into(),
                    origin: "ask".into(),
                    key: None,
                    prompt: "p".into(),
                    detail: None,
                    created_at_ms: i as u64,
                    expires_at_ms: i as u64,
                    on_timeout: Default::default(),
                    status: ApprovalStatus::Denied,
                    decided_by: None,
                    decided_via: None,
                    decided_at_ms: Some(i as u64),
                    reason: None,
                },
            );
        }
        broker.persist(&mut book).unwrap();
        assert_eq!(book.approvals.len(), KEEP_DECIDED);
        assert!(
            book.approvals
                .contains_key(&format!("ap-{:012}", KEEP_DECIDED + 4))
        );
    }
}
