//! API tokens (`tokens.json`, 0600): each a name, a role and an optional expiry, kept only as the
//! SHA-256 of its value, which is shown once when it is made. A token is `cel_` and 64 hex digits
//! (256 random bits), found by an index of its hash and compared in constant time.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};

use celistra_audit::to_hex;
use celistra_proto::{ApiError, ErrorCode, Role, TokenCreated, TokenInfo, TokenRequest};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::home::{random_hex, write_atomic_private};

/// What every token starts with, so a leaked one is recognisable (and scanners can find it).
pub(crate) const TOKEN_PREFIX: &str = "cel_";
/// Most live tokens kept.
const MAX_TOKENS: usize = 256;
/// `last_used_ms` is written to disk at most this often per token.
const USE_PERSIST_MS: u64 = 60_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredToken {
    name: String,
    role: Role,
    /// SHA-256 of the token, hex.
    hash: String,
    created_at_ms: u64,
    created_by: String,
    expires_at_ms: Option<u64>,
    last_used_ms: Option<u64>,
}

#[derive(Default, Serialize, Deserialize)]
struct File {
    tokens: Vec<StoredToken>,
}

/// A token that authenticated a request.
#[derive(Debug, Clone)]
pub(crate) struct TokenHolder {
    /// `token:<name>`.
    pub actor: String,
    pub role: Role,
}

/// Why a presented token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenRefusal {
    /// Never issued here, or revoked.
    Unknown,
    Expired,
}

/// The stored tokens by the index of their hash.
type ByHash = HashMap<String, StoredToken>;

/// Where a token's hash is kept in the map: its first 64 bits. The whole hash is then compared in
/// constant time, so the map's ordinary comparison only ever sees this index.
fn index_of(hash: &str) -> String {
    hash[..16].to_owned()
}

pub(crate) struct Tokens {
    path: PathBuf,
    tokens: Mutex<ByHash>,
}

fn sha256_hex(text: &str) -> String {
    to_hex(&Sha256::digest(text.as_bytes()))
}

fn internal(context: &str, error: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        ErrorCode::Internal,
        format!("{context}: {error}; check the daemon's state directory"),
    )
}

/// The actor a token's requests are recorded as.
pub(crate) fn actor_of(name: &str) -> String {
    format!("token:{name}")
}

fn check_name(name: &str) -> Result<(), ApiError> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if valid {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!(
                "bad token name `{name}`: use 1 to 64 of a-z, 0-9, `.`, `_`, `-`, starting with a letter or digit"
            ),
        ))
    }
}

fn info(stored: &StoredToken) -> TokenInfo {
    TokenInfo {
        name: stored.name.clone(),
        role: stored.role,
        actor: actor_of(&stored.name),
        created_at_ms: stored.created_at_ms,
        created_by: stored.created_by.clone(),
        expires_at_ms: stored.expires_at_ms,
        last_used_ms: stored.last_used_ms,
    }
}

impl Tokens {
    /// Loads `tokens.json`. A file others can read is refused (the daemon does not start), since
    /// its hashes would let them try values offline; a damaged one is an error too, so that no
    /// revoked token comes back and no live one silently stops working.
    pub(crate) fn load(path: PathBuf) -> Result<Tokens, crate::Error> {
        let tokens = if path.exists() {
            let text = crate::home::read_private(&path, "the API tokens' hashes", None)?;
            serde_json::from_str::<File>(&text)
                .map_err(|e| {
                    crate::Error::Invalid(format!(
                        "{} is damaged ({e}); fix or remove it (removing it revokes every token)",
                        path.display()
                    ))
                })?
                .tokens
                .into_iter()
                .map(|token| (index_of(&token.hash), token))
                .collect()
        } else {
            ByHash::new()
        };
        Ok(Tokens {
            path,
            tokens: Mutex::new(tokens),
        })
    }

    fn lock(&self) -> MutexGuard<'_, ByHash> {
        self.tokens.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes `tokens.json`, oldest token first.
    fn persist(&self, tokens: &ByHash) -> Result<(), ApiError> {
        let mut tokens: Vec<StoredToken> = tokens.values().cloned().collect();
        tokens.sort_by(|a, b| (a.created_at_ms, &a.name).cmp(&(b.created_at_ms, &b.name)));
        let file = File { tokens };
        let text =
            serde_json::to_vec_pretty(&file).map_err(|e| internal("cannot encode tokens", e))?;
        write_atomic_private(&self.path, &text)
            .map_err(|e| internal(&format!("cannot write {}", self.path.display()), e))
    }

    /// Makes a token. Its value is in the answer and nowhere else.
    pub(crate) fn create(
        &self,
        request: &TokenRequest,
        created_by: &str,
        now_ms: u64,
    ) -> Result<TokenCreated, ApiError> {
        check_name(&request.name)?;
        let expires_at_ms = match request.expires_in_secs {
            Some(0) => {
                return Err(ApiError::new(
                    ErrorCode::InvalidRequest,
                    "expires_in_secs must be at least 1; leave it out for a token that lasts until revoked",
                ));
            }
            Some(secs) => Some(now_ms.saturating_add(secs.saturating_mul(1000))),
            None => None,
        };
        let token = format!(
            "{TOKEN_PREFIX}{}",
            random_hex(32).map_err(|e| internal("cannot make a token", e))?
        );
        let mut tokens = self.lock();
        tokens.retain(|_, t| t.expires_at_ms.is_none_or(|at| at > now_ms));
        if tokens.values().any(|t| t.name == request.name) {
            return Err(ApiError::new(
                ErrorCode::NameTaken,
                format!(
                    "a token named `{}` exists; revoke it first (`celistrad ctl token revoke {}`) or pick another name",
                    request.name, request.name
                ),
            ));
        }
        if tokens.len() >= MAX_TOKENS {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!("there are {MAX_TOKENS} tokens already; revoke some first"),
            ));
        }
        let hash = sha256_hex(&token);
        if tokens.contains_key(&index_of(&hash)) {
            // One chance in 2^64 per stored token: refuse rather than shadow a live token.
            return Err(internal(
                "cannot make a token",
                "its index is taken; try again",
            ));
        }
        let stored = StoredToken {
            name: request.name.clone(),
            role: request.role,
            hash,
            created_at_ms: now_ms,
            created_by: created_by.to_owned(),
            expires_at_ms,
            last_used_ms: None,
        };
        let created = TokenCreated {
            token,
            info: info(&stored),
        };
        tokens.insert(index_of(&stored.hash), stored);
        self.persist(&tokens)?;
        Ok(created)
    }

    /// The token whose value is `presented`: found by the first 64 bits of its SHA-256, then its
    /// whole hash compared in constant time.
    ///
    /// One lookup instead of a constant-time comparison with every stored hash, which cost 24 µs
    /// a request with 256 tokens (BENCHMARKS.md, "Authentication"). The lookup's timing could tell
    /// at most how much of an index of SHA-256(`presented`) matches, which gives no token back (a
    /// preimage of 256 random bits).
    pub(crate) fn authenticate(
        &self,
        presented: &str,
        now_ms: u64,
    ) -> Result<TokenHolder, TokenRefusal> {
        let hash = sha256_hex(presented);
        let mut tokens = self.lock();
        let token = tokens
            .get_mut(&index_of(&hash))
            .filter(|token| bool::from(token.hash.as_bytes().ct_eq(hash.as_bytes())))
            .ok_or(TokenRefusal::Unknown)?;
        if token.expires_at_ms.is_some_and(|at| at <= now_ms) {
            return Err(TokenRefusal::Expired);
        }
        let stale = token
            .last_used_ms
            .is_none_or(|at| now_ms.saturating_sub(at) >= USE_PERSIST_MS);
        let holder = TokenHolder {
            actor: actor_of(&token.name),
            role: token.role,
        };
        if stale {
            token.last_used_ms = Some(now_ms);
            if let Err(e) = self.persist(&tokens) {
                tracing::warn!("{}", e.message);
            }
        }
        Ok(holder)
    }

    /// Every token (expired ones too, until they are revoked or a new token is made), by name.
    pub(crate) fn list(&self) -> Vec<TokenInfo> {
        let mut list: Vec<TokenInfo> = self.lock().values().map(info).collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }

    /// Revokes a token: it authenticates nothing from now on.
    pub(crate) fn revoke(&self, name: &str) -> Result<TokenInfo, ApiError> {
        let mut tokens = self.lock();
        let index = tokens
            .values()
            .find(|t| t.name == name)
            .map(|t| index_of(&t.hash));
        let Some(removed) = index.and_then(|index| tokens.remove(&index)) else {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                format!("no token named `{name}`; list them with `celistrad ctl token ls`"),
            ));
        };
        self.persist(&tokens)?;
        Ok(info(&removed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> (tempfile::TempDir, Tokens) {
        let dir = tempfile::tempdir().unwrap();
        let tokens = Tokens::load(dir.path().join("tokens.json")).unwrap();
        (dir, tokens)
    }

    fn request(name: &str, role: Role, expires_in_secs: Option<u64>) -> TokenRequest {
        TokenRequest {
            name: name.into(),
            role,
            expires_in_secs,
        }
    }

    #[test]
    fn a_token_authenticates_with_its_role_until_revoked_and_is_stored_only_hashed() {
        let (dir, tokens) = tokens();
        let created = tokens
            .create(&request("ci", Role::Operator, None), "machine-secret", 1000)
            .unwrap();
        assert!(created.token.starts_with(TOKEN_PREFIX));
        assert_eq!(created.token.len(), TOKEN_PREFIX.len() + 64);
        let holder = tokens.authenticate(&created.token, 2000).unwrap();
        assert_eq!(
            (holder.actor.as_str(), holder.role),
            ("token:ci", Role::Operator)
        );
        let file = std::fs::read_to_string(dir.path().join("tokens.json")).unwrap();
        assert!(!file.contains(&created.token[TOKEN_PREFIX.len()..]));
        assert!(file.contains(&sha256_hex(&created.token)));
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join("tokens.json"))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(tokens.list()[0].last_used_ms, Some(2000));
        tokens.revoke("ci").unwrap();
        assert_eq!(
            tokens.authenticate(&created.token, 3000).unwrap_err(),
            TokenRefusal::Unknown
        );
        let reloaded = Tokens::load(dir.path().join("tokens.json")).unwrap();
        assert!(reloaded.list().is_empty());
    }

    #[test]
    fn expired_tokens_wrong_values_bad_names_and_duplicates_are_refused() {
        let (_dir, tokens) = tokens();
        let created = tokens
            .create(&request("short", Role::Viewer, Some(5)), "owner", 1000)
            .unwrap();
        assert_eq!(created.info.expires_at_ms, Some(6000));
        assert!(tokens.authenticate(&created.token, 5999).is_ok());
        assert_eq!(
            tokens.authenticate(&created.token, 6000).unwrap_err(),
            TokenRefusal::Expired
        );
        let mut wrong = created.token.clone();
        wrong.pop();
        wrong.push('x');
        assert_eq!(
            tokens.authenticate(&wrong, 2000).unwrap_err(),
            TokenRefusal::Unknown
        );
        for bad in ["", "Upper", "-dash", "sp ace", &"a".repeat(65)] {
            let error = tokens
                .create(&request(bad, Role::Viewer, None), "owner", 1000)
                .unwrap_err();
            assert_eq!(error.code, ErrorCode::InvalidRequest, "{bad}");
        }
        let error = tokens
            .create(&request("short", Role::Owner, None), "owner", 1000)
            .unwrap_err();
        assert_eq!(error.code, ErrorCode::NameTaken);
        let error = tokens
            .create(&request("zero", Role::Owner, Some(0)), "owner", 1000)
            .unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidRequest);
    }

    #[test]
    fn a_value_whose_hash_only_shares_the_index_is_refused() {
        let (_dir, tokens) = tokens();
        let presented = "cel_not-issued";
        let hash = sha256_hex(presented);
        let lookalike = format!("{}{}", &hash[..16], "0".repeat(48));
        assert_ne!(lookalike, hash);
        tokens.lock().insert(
            index_of(&lookalike),
            StoredToken {
                name: "lookalike".into(),
                role: Role::Owner,
                hash: lookalike,
                created_at_ms: 0,
                created_by: "test".into(),
                expires_at_ms: None,
                last_used_ms: None,
            },
        );
        assert_eq!(
            tokens.authenticate(presented, 1).unwrap_err(),
            TokenRefusal::Unknown
        );
    }

    #[test]
    fn a_readable_tokens_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.json");
        std::fs::write(&path, r#"{"tokens":[]}"#).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        assert!(Tokens::load(path).is_err());
    }
}
