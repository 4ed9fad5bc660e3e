//! Dashboard sessions: single-use login codes (kept in memory, hashed, 5 minutes) and the browser
//! sessions they open (`sessions.json`, 0600, holding only SHA-256 hashes of the tokens). A session
//! token travels only in an HttpOnly cookie; its CSRF token is derived from it, so nothing else is
//! stored.

use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

use celistra_proto::{ApiError, ErrorCode, Role, SessionInfo};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use celistra_audit::to_hex;

use crate::home::{random_hex, write_atomic_private};

/// How long a login code is good for.
pub(crate) const CODE_TTL_MS: u64 = 5 * 60 * 1000;
/// How long a session lasts from its login.
pub(crate) const SESSION_TTL_MS: u64 = 30 * 24 * 3600 * 1000;
/// Most unused login codes kept; the oldest is forgotten first.
const MAX_CODES: usize = 16;
/// Most sessions kept; the least recently seen is dropped first.
const MAX_SESSIONS: usize = 64;
/// `last_seen_ms` is written to disk at most this often per session.
const SEEN_PERSIST_MS: u64 = 60_000;

struct LoginCode {
    hash: [u8; 32],
    expires_at_ms: u64,
    created_by: String,
    role: Role,
}

/// Sessions from before roles were owners'.
fn owner() -> Role {
    Role::Owner
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredSession {
    id: String,
    /// SHA-256 of the token, hex.
    hash: String,
    created_at_ms: u64,
    expires_at_ms: u64,
    last_seen_ms: u64,
    user_agent: String,
    created_by: String,
    #[serde(default = "owner")]
    role: Role,
}

#[derive(Default, Serialize, Deserialize)]
struct File {
    sessions: Vec<StoredSession>,
}

/// Why a login code was refused; each says what to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CodeRefusal {
    /// Not a code this daemon issued, or already used.
    Unknown,
    Expired,
}

impl CodeRefusal {
    pub(crate) fn to_api_error(self) -> ApiError {
        let message = match self {
            CodeRefusal::Unknown => {
                "this login link is not valid or was already used (each link works once); run `celistrad ctl dashboard` for a new one"
            }
            CodeRefusal::Expired => {
                "this login link has expired (links last 5 minutes); run `celistrad ctl dashboard` for a new one"
            }
        };
        ApiError::new(ErrorCode::Unauthorized, message)
    }
}

/// A session a request presented: its id, actor name and role.
#[derive(Debug, Clone)]
pub(crate) struct Authenticated {
    pub id: String,
    pub actor: String,
    pub role: Role,
}

pub(crate) struct Sessions {
    path: PathBuf,
    /// How long a new login code lives: [`CODE_TTL_MS`], or less with `CELISTRA_LOGIN_CODE_TTL_MS`
    /// (for tests of expiry).
    code_ttl_ms: u64,
    codes: Mutex<Vec<LoginCode>>,
    sessions: Mutex<Vec<StoredSession>>,
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The CSRF token of the session whose token is `token`.
pub(crate) fn csrf_token(token: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"celistra-csrf\0");
    hasher.update(token.as_bytes());
    to_hex(&hasher.finalize())
}

/// Whether `presented` is the CSRF token of `token`, in constant time.
pub(crate) fn csrf_matches(token: &str, presented: &str) -> bool {
    csrf_token(token)
        .as_bytes()
        .ct_eq(presented.as_bytes())
        .into()
}

fn internal(context: &str, error: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        ErrorCode::Internal,
        format!("{context}: {error}; check the daemon's state directory"),
    )
}

impl Sessions {
    /// Loads `sessions.json` (absent or unreadable: no sessions, and a warning).
    pub(crate) fn load(path: PathBuf) -> Sessions {
        let sessions = match std::fs::read_to_string(&path) {
            Ok(text) => match serde_json::from_str::<File>(&text) {
                Ok(file) => file.sessions,
                Err(e) => {
                    tracing::warn!(
                        "{} is damaged ({e}); every dashboard session must log in again",
                        path.display()
                    );
                    vec![]
                }
            },
            Err(_) => vec![],
        };
        let code_ttl_ms = std::env::var("CELISTRA_LOGIN_CODE_TTL_MS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(CODE_TTL_MS, |ms| ms.clamp(1, CODE_TTL_MS));
        Sessions {
            path,
            code_ttl_ms,
            codes: Mutex::default(),
            sessions: Mutex::new(sessions),
        }
    }

    fn persist(&self, sessions: &[StoredSession]) -> Result<(), ApiError> {
        let file = File {
            sessions: sessions.to_vec(),
        };
        let text =
            serde_json::to_vec_pretty(&file).map_err(|e| internal("cannot encode sessions", e))?;
        write_atomic_private(&self.path, &text)
            .map_err(|e| internal(&format!("cannot write {}", self.path.display()), e))
    }

    /// A new single-use login code for a session with `role`, good for [`CODE_TTL_MS`].
    pub(crate) fn issue_code(
        &self,
        created_by: &str,
        role: Role,
        now_ms: u64,
    ) -> Result<(String, u64), ApiError> {
        let code = random_hex(32).map_err(|e| internal("cannot make a login code", e))?;
        let expires_at_ms = now_ms + self.code_ttl_ms;
        let mut codes = self.codes.lock().unwrap_or_else(PoisonError::into_inner);
        codes.retain(|c| c.expires_at_ms > now_ms);
        if codes.len() >= MAX_CODES {
            codes.remove(0);
        }
        codes.push(LoginCode {
            hash: sha256(code.as_bytes()),
            expires_at_ms,
            created_by: created_by.to_owned(),
            role,
        });
        Ok((code, expires_at_ms))
    }

    /// Uses a login code up (whatever the outcome, it never works again) and opens a session.
    /// Returns the session's token (for the cookie) and what it is.
    pub(crate) fn login(
        &self,
        code: &str,
        user_agent: &str,
        now_ms: u64,
    ) -> Result<(String, SessionInfo), CodeRefusal> {
        let presented = sha256(code.as_bytes());
        let used = {
            let mut codes = self.codes.lock().unwrap_or_else(PoisonError::into_inner);
            let found = codes
                .iter()
                .position(|c| bool::from(c.hash.ct_eq(&presented)));
            found.map(|i| codes.remove(i))
        };
        let Some(used) = used else {
            return Err(CodeRefusal::Unknown);
        };
        if used.expires_at_ms <= now_ms {
            return Err(CodeRefusal::Expired);
        }
        let token = random_hex(32).map_err(|_| CodeRefusal::Unknown)?;
        let hash = to_hex(&sha256(token.as_bytes()));
        let stored = StoredSession {
            id: format!("se-{}", &hash[..12]),
            hash,
            created_at_ms: now_ms,
            expires_at_ms: now_ms + SESSION_TTL_MS,
            last_seen_ms: now_ms,
            user_agent: user_agent.chars().take(200).collect(),
            created_by: used.created_by,
            role: used.role,
        };
        let info = info(&stored, true);
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        sessions.retain(|s| s.expires_at_ms > now_ms);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .enumerate()
                .min_by_key(|(_, s)| s.last_seen_ms)
                .map(|(i, _)| i)
        {
            sessions.remove(oldest);
        }
        sessions.push(stored);
        if let Err(e) = self.persist(&sessions) {
            tracing::warn!("{}", e.message);
        }
        Ok((token, info))
    }

    /// The live session whose token is `token`, if any; notes that it was seen.
    pub(crate) fn authenticate(&self, token: &str, now_ms: u64) -> Option<Authenticated> {
        let presented = to_hex(&sha256(token.as_bytes()));
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        let mut found = None;
        for session in sessions.iter_mut() {
            if bool::from(session.hash.as_bytes().ct_eq(presented.as_bytes())) {
                found = Some(session);
            }
        }
        let session = found.filter(|s| s.expires_at_ms > now_ms)?;
        let stale = now_ms.saturating_sub(session.last_seen_ms) >= SEEN_PERSIST_MS;
        session.last_seen_ms = now_ms;
        let authenticated = Authenticated {
            id: session.id.clone(),
            actor: format!("session:{}", session.id),
            role: session.role,
        };
        if stale {
            let _ = self.persist(&sessions);
        }
        Some(authenticated)
    }

    /// Every live session, newest first; `current` marks the one with id `current`.
    pub(crate) fn list(&self, current: Option<&str>, now_ms: u64) -> Vec<SessionInfo> {
        let sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        let mut list: Vec<SessionInfo> = sessions
            .iter()
            .filter(|s| s.expires_at_ms > now_ms)
            .map(|s| info(s, Some(s.id.as_str()) == current))
            .collect();
        list.sort_by_key(|s| std::cmp::Reverse(s.created_at_ms));
        list
    }

    /// The session with id `id`.
    pub(crate) fn get(&self, id: &str, now_ms: u64) -> Option<SessionInfo> {
        self.list(Some(id), now_ms).into_iter().find(|s| s.id == id)
    }

    /// Ends a session at once: its cookie stops working with the next request.
    pub(crate) fn revoke(&self, id: &str) -> Result<SessionInfo, ApiError> {
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(index) = sessions.iter().position(|s| s.id == id) else {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                format!("no session {id}; list them with `celistrad ctl sessions`"),
            ));
        };
        let removed = sessions.remove(index);
        self.persist(&sessions)?;
        Ok(info(&removed, false))
    }
}

fn info(stored: &StoredSession, current: bool) -> SessionInfo {
    SessionInfo {
        id: stored.id.clone(),
        actor: format!("session:{}", stored.id),
        created_at_ms: stored.created_at_ms,
        expires_at_ms: stored.expires_at_ms,
        last_seen_ms: stored.last_seen_ms,
        user_agent: stored.user_agent.clone(),
        created_by: stored.created_by.clone(),
        role: stored.role,
        current,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sessions() -> (tempfile::TempDir, Sessions) {
        let dir = tempfile::tempdir().unwrap();
        let sessions = Sessions::load(dir.path().join("sessions.json"));
        (dir, sessions)
    }

    #[test]
    fn a_code_works_once_and_not_after_it_expires() {
        let (dir, sessions) = sessions();
        let (code, expires) = sessions
            .issue_code("machine-secret", Role::Owner, 1000)
            .unwrap();
        assert_eq!(expires, 1000 + CODE_TTL_MS);
        let (token, info) = sessions.login(&code, "test", 2000).unwrap();
        assert!(info.id.starts_with("se-") && info.id.len() == 15);
        assert_eq!(
            sessions.login(&code, "test", 2000).unwrap_err(),
            CodeRefusal::Unknown
        );
        let (late, _) = sessions
            .issue_code("machine-secret", Role::Owner, 1000)
            .unwrap();
        assert_eq!(
            sessions.login(&late, "test", expires).unwrap_err(),
            CodeRefusal::Expired
        );
        assert_eq!(
            sessions.login(&late, "test", 2000).unwrap_err(),
            CodeRefusal::Unknown
        );
        let seen = sessions.authenticate(&token, 3000).unwrap();
        assert_eq!(seen.actor, format!("session:{}", info.id));
        assert!(sessions.authenticate("nope", 3000).is_none());
        // The file holds hashes, never the token; a reload keeps the session.
        let text = std::fs::read_to_string(dir.path().join("sessions.json")).unwrap();
        assert!(!text.contains(&token));
        let reloaded = Sessions::load(dir.path().join("sessions.json"));
        assert!(reloaded.authenticate(&token, 3000).is_some());
        reloaded.revoke(&info.id).unwrap();
        assert!(reloaded.authenticate(&token, 3000).is_none());
        assert!(reloaded.revoke(&info.id).is_err());
    }

    #[test]
    fn sessions_expire_and_csrf_tokens_bind_to_the_session() {
        let (_dir, sessions) = sessions();
        let (code, _) = sessions
            .issue_code("machine-secret", Role::Owner, 0)
            .unwrap();
        let (token, _) = sessions.login(&code, "ua", 0).unwrap();
        assert!(sessions.authenticate(&token, SESSION_TTL_MS - 1).is_some());
        assert!(sessions.authenticate(&token, SESSION_TTL_MS).is_none());
        assert!(csrf_matches(&token, &csrf_token(&token)));
        assert!(!csrf_matches(&token, &csrf_token("other")));
        assert!(!csrf_matches(&token, ""));
    }
}
