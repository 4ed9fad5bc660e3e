//! The approval broker: the book of requests agents make, kept in `approvals.json` across
//! restarts. A request is checked, recorded (or joins a pending one with the same key), and decided
//! once: the first decision wins and wakes every waiter. It knows nothing of agents, events or
//! channels, so its rules are tested here alone; `approval_flow.rs` connects it to the rest.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use celistra_core::approval_line::{check_prompt, check_ttl, clip_detail};
use celistra_proto::{ApiError, Approval, ApprovalStatus, AskRequest, ErrorCode};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::actor::Actor;
use crate::home::write_atomic_private;

/// Default time to decide, as the reference product.
pub(crate) const DEFAULT_TTL: Duration = Duration::from_secs(300);
/// Decided requests kept for `GET /v1/approvals` (pending ones are all kept).
const KEEP_DECIDED: usize = 1000;
/// Pending requests one agent may have at once: a loop that asks without waiting cannot grow
/// `approvals.json` (or anyone's inbox) without bound.
pub(crate) const MAX_PENDING_PER_AGENT: usize = 32;
/// Longest request key, in bytes.
const MAX_KEY_BYTES: usize = 128;

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

/// The book of requests and the file that keeps it.
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
    pub(crate) fn load(path: PathBuf, now_ms: u64) -> Broker {
        let mut book = Book::default();
        match std::fs::read_to_string(&path) {
            Ok(text) => match serde_json::from_str::<ApprovalsFile>(&text) {
                Ok(file) => {
                    for approval in file.approvals {
                        book.approvals.insert(approval.id.clone(), approval);
                    }
                }
                Err(e) => {
                    let aside = path.with_extension(format!("json.corrupt-{now_ms}"));
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

    pub(crate) fn has_pending(&self, agent_id: &str) -> bool {
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

/// Checks a request with the rules every way of asking shares (`celistra_core::approval_line`),
/// and clips its detail as they do.
fn check_ask(ask: &mut AskRequest) -> Result<(), ApiError> {
    let invalid = |message: String| refused(ErrorCode::InvalidRequest, message);
    check_prompt(&ask.prompt).map_err(invalid)?;
    if let Some(ttl) = ask.ttl_secs {
        check_ttl(ttl).map_err(invalid)?;
    }
    if let Some(detail) = &mut ask.detail {
        *detail = clip_detail(detail);
    }
    if ask
        .key
        .as_ref()
        .is_some_and(|k| k.is_empty() || k.len() > MAX_KEY_BYTES)
    {
        return Err(invalid(format!(
            "the key must be 1 to {MAX_KEY_BYTES} bytes"
        )));
    }
    Ok(())
}

/// What became of a request handed to [`Broker::submit`].
pub(crate) enum Submission {
    /// A new pending request; the receiver hears its decision.
    Created(Box<Approval>, oneshot::Receiver<Approval>),
    /// It joined the pending request with the same key.
    Joined(oneshot::Receiver<Approval>),
    /// The request with the same key was already decided.
    Decided(Box<Approval>),
}

/// Who decides, and how.
pub(crate) struct Verdict<'a> {
    pub status: ApprovalStatus,
    pub actor: Actor,
    pub via: &'a str,
    pub reason: Option<String>,
}

impl Broker {
    /// Records agent `agent_id`'s request, or joins its pending request with the same `key`.
    pub(crate) fn submit(
        &self,
        agent_id: &str,
        agent_name: &str,
        origin: &str,
        mut ask: AskRequest,
        now_ms: u64,
    ) -> Result<Submission, ApiError> {
        check_ask(&mut ask)?;
        let (sender, receiver) = oneshot::channel();
        let mut book = self.lock();
        let joined = ask.key.as_ref().and_then(|key| {
            book.approvals
                .values()
                .find(|a| a.agent_id == agent_id && a.key.as_ref() == Some(key))
                .cloned()
        });
        if let Some(approval) = joined {
            if approval.status != ApprovalStatus::Pending {
                return Ok(Submission::Decided(Box::new(approval)));
            }
            book.waiters.entry(approval.id).or_default().push(sender);
            return Ok(Submission::Joined(receiver));
        }
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
        let ttl_ms = ask
            .ttl_secs
            .map_or(DEFAULT_TTL.as_millis() as u64, |s| s * 1000);
        let approval = Approval {
            id: new_approval_id()?,
            agent_id: agent_id.to_owned(),
            agent_name: agent_name.to_owned(),
            origin: origin.to_owned(),
            key: ask.key,
            prompt: ask.prompt,
            detail: ask.detail,
            created_at_ms: now_ms,
            expires_at_ms: now_ms + ttl_ms,
            on_timeout: ask.on_timeout,
            status: ApprovalStatus::Pending,
            decided_by: None,
            decided_by_role: None,
            decided_via: None,
            decided_at_ms: None,
            reason: None,
        };
        book.approvals.insert(approval.id.clone(), approval.clone());
        book.waiters
            .entry(approval.id.clone())
            .or_default()
            .push(sender);
        self.persist(&mut book)?;
        Ok(Submission::Created(Box::new(approval), receiver))
    }

    /// Decides a pending request and wakes its waiters; the first decision wins, later ones get
    /// a conflict that says who decided.
    pub(crate) fn decide(
        &self,
        id: &str,
        verdict: Verdict<'_>,
        now_ms: u64,
    ) -> Result<Approval, ApiError> {
        let (approval, waiters) = {
            let mut book = self.lock();
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
            approval.status = verdict.status;
            approval.decided_by = Some(verdict.actor.name.clone());
            approval.decided_by_role = verdict.actor.role;
            approval.decided_via = Some(verdict.via.to_owned());
            approval.decided_at_ms = Some(now_ms);
            approval.reason = verdict.reason;
            let approval = approval.clone();
            let waiters = book.waiters.remove(id).unwrap_or_default();
            self.persist(&mut book)?;
            (approval, waiters)
        };
        for waiter in waiters {
            let _ = waiter.send(approval.clone());
        }
        Ok(approval)
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

    fn keyed(prompt: &str, key: &str) -> AskRequest {
        AskRequest {
            key: Some(key.into()),
            ..ask(prompt)
        }
    }

    fn approve(actor: &str) -> Verdict<'static> {
        Verdict {
            status: ApprovalStatus::Approved,
            actor: Actor::credential(actor, celistra_proto::Role::Approver),
            via: "api",
            reason: None,
        }
    }

    fn broker() -> (tempfile::TempDir, Broker) {
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::load(dir.path().join("approvals.json"), 0);
        (dir, broker)
    }

    fn created(submission: Submission) -> (Approval, oneshot::Receiver<Approval>) {
        match submission {
            Submission::Created(approval, receiver) => (*approval, receiver),
            _ => panic!("expected a new request"),
        }
    }

    #[test]
    fn asks_are_checked_with_the_rules_every_way_of_asking_shares() {
        assert!(check_ask(&mut ask("git push")).is_ok());
        assert!(check_ask(&mut ask("  ")).is_err());
        let long = "x".repeat(celistra_core::approval_line::MAX_PROMPT_BYTES + 1);
        assert!(check_ask(&mut ask(&long)).is_err());
        let forever = AskRequest {
            ttl_secs: Some(celistra_core::approval_line::MAX_TTL_SECS + 1),
            ..ask("x")
        };
        assert!(
            check_ask(&mut forever.clone())
                .unwrap_err()
                .message
                .contains("out of range")
        );
        // An escape sequence or a second line in the prompt would be shown as is to every
        // approver: refused here as on the terminal-line and hook paths.
        for prompt in ["push\u{1b}[2J", "push\nnow", "tab\there"] {
            let error = check_ask(&mut ask(prompt)).unwrap_err();
            assert!(
                error.message.contains("control characters"),
                "{prompt:?}: {error:?}"
            );
        }
        let mut detailed = AskRequest {
            detail: Some("d".repeat(100_000)),
            ..ask("x")
        };
        check_ask(&mut detailed).unwrap();
        assert!(detailed.detail.unwrap().len() <= celistra_core::approval_line::MAX_DETAIL_BYTES);
        assert!(check_ask(&mut keyed("x", "")).is_err());
    }

    #[test]
    fn ids_look_like_ids() {
        let id = new_approval_id().unwrap();
        assert!(id.starts_with("ap-") && id.len() == 15, "{id}");
    }

    #[test]
    fn the_first_decision_wins_and_wakes_every_waiter() {
        let (_dir, broker) = broker();
        let (approval, mut first) = created(
            broker
                .submit("ag-a", "a", "ask", keyed("deploy", "k"), 10)
                .unwrap(),
        );
        assert_eq!(approval.status, ApprovalStatus::Pending);
        assert_eq!(approval.expires_at_ms, 10 + DEFAULT_TTL.as_millis() as u64);
        let Submission::Joined(mut second) = broker
            .submit("ag-a", "a", "ask", keyed("deploy", "k"), 11)
            .unwrap()
        else {
            panic!("the same key joins the pending request");
        };
        assert!(first.try_recv().is_err(), "nobody decided yet");
        assert!(broker.has_pending("ag-a"));

        let decided = broker
            .decide(&approval.id, approve("token:alice"), 20)
            .unwrap();
        assert_eq!(decided.status, ApprovalStatus::Approved);
        assert_eq!(decided.decided_by.as_deref(), Some("token:alice"));
        assert_eq!(decided.decided_at_ms, Some(20));
        assert_eq!(first.try_recv().unwrap().id, approval.id);
        assert_eq!(second.try_recv().unwrap().status, ApprovalStatus::Approved);
        assert!(!broker.has_pending("ag-a"));

        let late = Verdict {
            status: ApprovalStatus::Denied,
            ..approve("token:bob")
        };
        let conflict = broker.decide(&approval.id, late, 30).unwrap_err();
        assert_eq!(conflict.code, ErrorCode::Conflict);
        assert!(
            conflict.message.contains("approved by token:alice via api"),
            "{conflict:?}"
        );
        // Asking again with the key answers with the decision at once.
        let Submission::Decided(again) = broker
            .submit("ag-a", "a", "ask", keyed("deploy", "k"), 40)
            .unwrap()
        else {
            panic!("a decided key answers at once");
        };
        assert_eq!(again.status, ApprovalStatus::Approved);
        let unknown = broker.decide("ap-nothere", approve("x"), 50).unwrap_err();
        assert_eq!(unknown.code, ErrorCode::NotFound);
    }

    #[test]
    fn keys_are_per_agent_and_pending_requests_are_capped() {
        let (_dir, broker) = broker();
        let (mine, _r1) = created(
            broker
                .submit("ag-a", "a", "ask", keyed("p", "k"), 1)
                .unwrap(),
        );
        let (theirs, _r2) = created(
            broker
                .submit("ag-b", "b", "ask", keyed("p", "k"), 1)
                .unwrap(),
        );
        assert_ne!(mine.id, theirs.id, "another agent's key is not joined");
        let mut receivers = vec![];
        for _ in 1..MAX_PENDING_PER_AGENT {
            receivers.push(broker.submit("ag-a", "a", "ask", ask("p"), 2).unwrap());
        }
        let refused = broker
            .submit("ag-a", "a", "ask", ask("p"), 3)
            .err()
            .unwrap();
        assert_eq!(refused.code, ErrorCode::TooManyClients);
        assert!(broker.submit("ag-b", "b", "ask", ask("p"), 3).is_ok());
    }

    #[test]
    fn decisions_survive_a_reload_and_pending_requests_stay_pending() {
        let (dir, broker) = broker();
        let (decided, _r1) = created(broker.submit("ag-a", "a", "ask", ask("one"), 1).unwrap());
        let (pending, _r2) = created(broker.submit("ag-a", "a", "ask", ask("two"), 2).unwrap());
        let expired = Verdict {
            status: ApprovalStatus::Expired,
            actor: Actor::system(),
            via: "timeout",
            reason: Some("nobody decided in time".into()),
        };
        broker.decide(&decided.id, expired, 3).unwrap();
        drop(broker);
        let reloaded = Broker::load(dir.path().join("approvals.json"), 4);
        assert_eq!(
            reloaded.get(&decided.id).unwrap().status,
            ApprovalStatus::Expired
        );
        let still = reloaded.list(true);
        assert_eq!(still.len(), 1);
        assert_eq!(still[0].id, pending.id);
        // A restarted daemon can still decide it; the waiter from before the restart is gone.
        assert!(reloaded.decide(&pending.id, approve("owner"), 5).is_ok());
    }

    #[test]
    fn a_damaged_file_is_moved_aside_and_decided_ones_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("approvals.json");
        std::fs::write(&path, "{").unwrap();
        let broker = Broker::load(path.clone(), 0);
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
                    decided_by_role: None,
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
