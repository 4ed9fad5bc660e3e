//! Secrets (`ctl secret set`): values kept encrypted at rest, given to an agent only by explicit
//! reference, and masked in its output.
//!
//! `secrets.json` (0600, written atomically) holds each secret's name, times, a random 96-bit nonce
//! and its value sealed with AES-256-GCM under the key in `secrets.key` (0600, 256 random bits as
//! hex, made on first use; both files refused if group or world can read them). The associated
//! data of each seal is [`AAD_PREFIX`] and the secret's name, so a sealed value moved to another
//! name does not open. Values are decrypted only in memory, when an agent's environment is built
//! and its output masker made (`environment`); they are never logged, put in an event, an audit
//! entry, an answer of the API or any other file.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use celistra_core::mask::Masker;
use celistra_core::secret as rules;
use celistra_proto::{AgentSpec, ApiError, ErrorCode, Role, SecretInfo};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::actor::Actor;
use crate::home::{read_private, write_atomic_private};

/// The `format` of `secrets.json`; a file of another format is refused rather than misread.
pub(crate) const FORMAT: &str = "celistra-secrets/1";
/// The cipher every value of a version 1 file is sealed with.
const CIPHER: &str = "AES-256-GCM";
/// What the associated data of a seal starts with; the secret's name follows.
pub(crate) const AAD_PREFIX: &str = "celistra-secrets/1 ";

/// `secrets.json` as stored.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    format: String,
    cipher: String,
    /// The first 16 hex digits of the SHA-256 of the key: tells a wrong `secrets.key` from a
    /// damaged value.
    key_id: String,
    secrets: Vec<Stored>,
}

/// One secret as stored: its value only sealed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    name: String,
    created_at_ms: u64,
    updated_at_ms: u64,
    /// 96 random bits, base64, new at every write of the value.
    nonce: String,
    /// The value's ciphertext and 128-bit tag, base64.
    sealed: String,
}

/// The key, and its id as `secrets.json` records it.
struct Key {
    key: LessSafeKey,
    id: String,
}

/// The secrets store of the state directory.
pub(crate) struct Secrets {
    file: PathBuf,
    key_file: PathBuf,
    /// Read (or made) on first use.
    key: Mutex<Option<Key>>,
    /// The key id the file was written with (empty when nothing is stored).
    file_key_id: Mutex<String>,
    entries: Mutex<BTreeMap<String, Stored>>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("file", &self.file)
            .field("count", &lock(&self.entries).len())
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn internal(context: &str, error: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        ErrorCode::Internal,
        format!("{context}: {error}; check the daemon's state directory"),
    )
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidRequest, message)
}

fn info(stored: &Stored) -> SecretInfo {
    SecretInfo {
        name: stored.name.clone(),
        created_at_ms: stored.created_at_ms,
        updated_at_ms: stored.updated_at_ms,
    }
}

fn aad(name: &str) -> Aad<Vec<u8>> {
    Aad::from(format!("{AAD_PREFIX}{name}").into_bytes())
}

impl Secrets {
    /// Loads `secrets.json` from `dir` (names and sealed values; the key is read on first use). A
    /// file others can read, or a damaged one, stops the daemon from starting: a secret must not
    /// silently disappear.
    pub(crate) fn load(dir: &std::path::Path) -> Result<Secrets, crate::Error> {
        let file = dir.join("secrets.json");
        let key_file = dir.join("secrets.key");
        let mut key_id = String::new();
        let entries = if file.exists() {
            let text = read_private(&file, "the encrypted secrets", None)?;
            let stored: File = serde_json::from_str(&text).map_err(|e| {
                crate::Error::Invalid(format!(
                    "{} is damaged ({e}); restore it from a backup, or remove it (and secrets.key) to forget every secret",
                    file.display()
                ))
            })?;
            if stored.format != FORMAT || stored.cipher != CIPHER {
                return Err(crate::Error::Invalid(format!(
                    "{} is in format `{}` with cipher `{}`, which this daemon does not read (it reads `{FORMAT}` with `{CIPHER}`)",
                    file.display(),
                    stored.format,
                    stored.cipher
                )));
            }
            key_id = stored.key_id;
            stored
                .secrets
                .into_iter()
                .map(|secret| (secret.name.clone(), secret))
                .collect()
        } else {
            BTreeMap::new()
        };
        Ok(Secrets {
            file,
            key_file,
            key: Mutex::new(None),
            file_key_id: Mutex::new(key_id),
            entries: Mutex::new(entries),
        })
    }

    /// Runs `f` with the key, reading `secrets.key` (or making it, when no secret is stored yet)
    /// the first time.
    fn with_key<T>(&self, f: impl FnOnce(&Key) -> Result<T, ApiError>) -> Result<T, ApiError> {
        let mut key = lock(&self.key);
        if key.is_none() {
            let nothing_stored = lock(&self.entries).is_empty();
            let make = || crate::home::random_hex(32);
            let create: Option<&dyn Fn() -> Result<String, crate::Error>> =
                if nothing_stored { Some(&make) } else { None };
            let text = read_private(&self.key_file, "the secrets' key", create)
                .map_err(|e| internal("cannot read the secrets' key", e))?;
            let bytes = decode_hex(&text).filter(|b| b.len() == 32).ok_or_else(|| {
                internal(
                    "cannot read the secrets' key",
                    format!("{} does not hold 64 hex digits", self.key_file.display()),
                )
            })?;
            let id = celistra_audit::to_hex(&Sha256::digest(&bytes))[..16].to_owned();
            let file_id = lock(&self.file_key_id).clone();
            if !file_id.is_empty() && file_id != id {
                return Err(internal(
                    "cannot read the secrets",
                    format!(
                        "{} is not the key {} was written with",
                        self.key_file.display(),
                        self.file.display()
                    ),
                ));
            }
            let unbound = UnboundKey::new(&AES_256_GCM, &bytes)
                .map_err(|_| internal("cannot use the secrets' key", "rejected"))?;
            *key = Some(Key {
                key: LessSafeKey::new(unbound),
                id,
            });
        }
        f(key.as_ref().expect("set above"))
    }

    /// Writes `secrets.json` (atomically, 0600).
    fn persist(&self, entries: &BTreeMap<String, Stored>, key_id: &str) -> Result<(), ApiError> {
        let file = File {
            format: FORMAT.to_owned(),
            cipher: CIPHER.to_owned(),
            key_id: key_id.to_owned(),
            secrets: entries.values().cloned().collect(),
        };
        let text =
            serde_json::to_vec_pretty(&file).map_err(|e| internal("cannot encode secrets", e))?;
        write_atomic_private(&self.file, &text)
            .map_err(|e| internal(&format!("cannot write {}", self.file.display()), e))?;
        *lock(&self.file_key_id) = key_id.to_owned();
        Ok(())
    }

    /// Every secret's name and times, by name. Never a value.
    pub(crate) fn list(&self) -> Vec<SecretInfo> {
        lock(&self.entries).values().map(info).collect()
    }

    /// Sets a secret (new, or a new value), returning it and whether it is new.
    pub(crate) fn set(
        &self,
        name: &str,
        value: &str,
        now_ms: u64,
    ) -> Result<(SecretInfo, bool), ApiError> {
        rules::validate_name(name).map_err(invalid)?;
        rules::validate_value(value).map_err(invalid)?;
        self.with_key(|key| {
            let mut nonce = [0u8; NONCE_LEN];
            getrandom::fill(&mut nonce).map_err(|e| internal("no randomness", e))?;
            let mut sealed = value.as_bytes().to_vec();
            key.key
                .seal_in_place_append_tag(
                    Nonce::assume_unique_for_key(nonce),
                    aad(name),
                    &mut sealed,
                )
                .map_err(|_| internal("cannot encrypt the secret", "sealing failed"))?;
            let mut entries = lock(&self.entries);
            let previous = entries.get(name).cloned();
            let stored = Stored {
                name: name.to_owned(),
                created_at_ms: previous.as_ref().map_or(now_ms, |p| p.created_at_ms),
                updated_at_ms: now_ms,
                nonce: BASE64.encode(nonce),
                sealed: BASE64.encode(&sealed),
            };
            entries.insert(name.to_owned(), stored.clone());
            if let Err(e) = self.persist(&entries, &key.id) {
                match previous.clone() {
                    Some(previous) => entries.insert(name.to_owned(), previous),
                    None => entries.remove(name),
                };
                return Err(e);
            }
            Ok((info(&stored), previous.is_none()))
        })
    }

    /// Forgets a secret.
    pub(crate) fn remove(&self, name: &str) -> Result<SecretInfo, ApiError> {
        let mut entries = lock(&self.entries);
        let Some(removed) = entries.remove(name) else {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                format!("no secret named `{name}`; `celistrad ctl secret ls` lists them"),
            ));
        };
        let key_id = lock(&self.file_key_id).clone();
        if let Err(e) = self.persist(&entries, &key_id) {
            entries.insert(name.to_owned(), removed);
            return Err(e);
        }
        Ok(info(&removed))
    }

    /// Checks the secrets a spec refers to before it is accepted: only an owner (or the daemon)
    /// may give an agent a secret, since the agent can print it or send it anywhere; and every
    /// secret named must exist.
    pub(crate) fn check_references(&self, spec: &AgentSpec, actor: &Actor) -> Result<(), ApiError> {
        let names = rules::references(spec);
        if names.is_empty() {
            return Ok(());
        }
        if let Some(role) = actor.role
            && role != Role::Owner
        {
            return Err(ApiError::role_required(
                Role::Owner,
                role,
                "an agent that gets secrets (`--secret NAME`, or an env value `secret:NAME`) can print or send them anywhere, so giving it one, or changing such an agent,",
            ));
        }
        let entries = lock(&self.entries);
        let missing: Vec<&str> = names
            .iter()
            .filter(|name| !entries.contains_key(*name))
            .map(String::as_str)
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(invalid(format!(
            "no secret named {}; set it first with `celistrad ctl secret set NAME` (`ctl secret ls` lists them)",
            missing
                .iter()
                .map(|name| format!("`{name}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }

    /// The value of one secret, decrypted.
    fn open(&self, key: &Key, stored: &Stored) -> Result<String, String> {
        let damaged = |what: &str| {
            format!(
                "secret `{}` cannot be decrypted ({what}); set it again with `celistrad ctl secret set {}`",
                stored.name, stored.name
            )
        };
        let nonce: [u8; NONCE_LEN] = BASE64
            .decode(&stored.nonce)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or_else(|| damaged("bad nonce"))?;
        let mut sealed = BASE64
            .decode(&stored.sealed)
            .map_err(|_| damaged("bad encoding"))?;
        let plain = key
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                aad(&stored.name),
                &mut sealed,
            )
            .map_err(|_| damaged("it was altered, or sealed under another name or key"))?;
        String::from_utf8(plain.to_vec()).map_err(|_| damaged("not UTF-8"))
    }

    /// An agent's environment from its spec: its `env` with each `secret:NAME` value replaced by
    /// the secret's value, plus each of its `secrets` under its own name; and the masker of its
    /// output, over the values it gets. A secret that no longer exists fails the spawn, naming it.
    pub(crate) fn environment(
        &self,
        spec: &AgentSpec,
    ) -> Result<(Vec<(String, String)>, Masker), String> {
        let mut env: Vec<(String, String)> = spec
            .env
            .iter()
            .filter(|(_, value)| rules::env_reference(value).is_none())
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        let bindings = rules::bindings(spec);
        if bindings.is_empty() {
            return Ok((env, Masker::new(Vec::<(String, String)>::new())));
        }
        let stored: Vec<(String, Stored)> = {
            let entries = lock(&self.entries);
            bindings
                .iter()
                .map(|(variable, name)| match entries.get(name) {
                    Some(stored) => Ok((variable.clone(), stored.clone())),
                    None => Err(format!(
                        "secret `{name}` (for ${variable}) does not exist any more; set it with `celistrad ctl secret set {name}` or stop referring to it (`celistrad ctl set AGENT`)"
                    )),
                })
                .collect::<Result<_, _>>()?
        };
        let mut values: Vec<(String, String)> = vec![];
        self.with_key(|key| {
            for (variable, stored) in &stored {
                let value = self
                    .open(key, stored)
                    .map_err(|e| ApiError::new(ErrorCode::Internal, e))?;
                env.push((variable.clone(), value.clone()));
                values.push((stored.name.clone(), value));
            }
            Ok(())
        })
        .map_err(|e| e.message)?;
        Ok((env, Masker::new(values)))
    }
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    const VALUE: &str = "ghp_s3cr3t-value-0123456789";

    fn owner() -> Actor {
        Actor::credential("machine-secret", Role::Owner)
    }

    #[test]
    fn a_value_is_stored_encrypted_and_given_back_only_in_an_agent_s_environment() {
        let dir = tempfile::tempdir().unwrap();
        let secrets = Secrets::load(dir.path()).unwrap();
        let (info, created) = secrets.set("GH_TOKEN", VALUE, 1000).unwrap();
        assert!(created);
        assert_eq!(info.name, "GH_TOKEN");
        for file in ["secrets.json", "secrets.key"] {
            let path = dir.path().join(file);
            let bytes = std::fs::read(&path).unwrap();
            assert!(!String::from_utf8_lossy(&bytes).contains(VALUE), "{file}");
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{file}");
        }
        // A second start reads the same key.
        let reloaded = Secrets::load(dir.path()).unwrap();
        let mut spec = AgentSpec {
            secrets: vec!["GH_TOKEN".into()],
            ..AgentSpec::default()
        };
        spec.env.insert("ALIAS".into(), "secret:GH_TOKEN".into());
        spec.env.insert("PLAIN".into(), "x".into());
        let (env, masker) = reloaded.environment(&spec).unwrap();
        let mut env: Vec<_> = env.into_iter().collect();
        env.sort();
        assert_eq!(
            env,
            [
                ("ALIAS".to_owned(), VALUE.to_owned()),
                ("GH_TOKEN".to_owned(), VALUE.to_owned()),
                ("PLAIN".to_owned(), "x".to_owned()),
            ]
        );
        let mut masker = masker;
        let mut out = vec![];
        masker.push(format!("token {VALUE}").as_bytes(), &mut out);
        masker.finish(&mut out);
        assert_eq!(out, b"token [secret:GH_TOKEN]");
    }

    #[test]
    fn each_write_has_a_new_nonce_and_a_value_moved_to_another_name_does_not_open() {
        let dir = tempfile::tempdir().unwrap();
        let secrets = Secrets::load(dir.path()).unwrap();
        secrets.set("A_KEY", VALUE, 1).unwrap();
        let first = lock(&secrets.entries)["A_KEY"].clone();
        let (again, created) = secrets.set("A_KEY", VALUE, 2).unwrap();
        assert!(!created);
        assert_eq!((again.created_at_ms, again.updated_at_ms), (1, 2));
        let second = lock(&secrets.entries)["A_KEY"].clone();
        assert_ne!(first.nonce, second.nonce);
        assert_ne!(first.sealed, second.sealed);
        // Sealed for A_KEY, presented as B_KEY: the associated data differs.
        let moved = Stored {
            name: "B_KEY".into(),
            ..second
        };
        lock(&secrets.entries).insert("B_KEY".into(), moved);
        let spec = AgentSpec {
            secrets: vec!["B_KEY".into()],
            ..AgentSpec::default()
        };
        let error = secrets.environment(&spec).unwrap_err();
        assert!(error.contains("`B_KEY` cannot be decrypted"), "{error}");
    }

    #[test]
    fn short_values_bad_names_others_and_missing_references_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let secrets = Secrets::load(dir.path()).unwrap();
        let short = secrets.set("A", "abc", 1).unwrap_err();
        assert!(
            short.message.contains("too short to mask"),
            "{}",
            short.message
        );
        assert!(secrets.set("lower", VALUE, 1).is_err());
        secrets.set("THERE", VALUE, 1).unwrap();
        let mut spec = AgentSpec {
            secrets: vec!["THERE".into()],
            ..AgentSpec::default()
        };
        spec.env.insert("X".into(), "secret:GONE".into());
        let missing = secrets.check_references(&spec, &owner()).unwrap_err();
        assert_eq!(missing.code, ErrorCode::InvalidRequest);
        assert!(missing.message.contains("`GONE`"), "{}", missing.message);
        let operator = Actor::credential("token:op", Role::Operator);
        let refused = secrets.check_references(&spec, &operator).unwrap_err();
        assert_eq!(refused.code, ErrorCode::RoleRequired);
        assert_eq!(
            secrets.check_references(&AgentSpec::default(), &operator),
            Ok(())
        );
        secrets.remove("THERE").unwrap();
        assert_eq!(
            secrets.remove("THERE").unwrap_err().code,
            ErrorCode::NotFound
        );
        assert!(secrets.list().is_empty());
    }

    #[test]
    fn a_key_or_secrets_file_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        Secrets::load(dir.path())
            .unwrap()
            .set("A_KEY", VALUE, 1)
            .unwrap();
        let file = dir.path().join("secrets.json");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(Secrets::load(dir.path()).is_err());
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let key = dir.path().join("secrets.key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
        let secrets = Secrets::load(dir.path()).unwrap();
        let spec = AgentSpec {
            secrets: vec!["A_KEY".into()],
            ..AgentSpec::default()
        };
        let error = secrets.environment(&spec).unwrap_err();
        assert!(error.contains("chmod 600"), "{error}");
    }

    #[test]
    fn a_missing_key_is_not_made_anew_while_secrets_are_stored() {
        let dir = tempfile::tempdir().unwrap();
        Secrets::load(dir.path())
            .unwrap()
            .set("A_KEY", VALUE, 1)
            .unwrap();
        std::fs::remove_file(dir.path().join("secrets.key")).unwrap();
        let secrets = Secrets::load(dir.path()).unwrap();
        assert!(secrets.set("B_KEY", VALUE, 2).is_err());
        assert!(!dir.path().join("secrets.key").exists());
    }
}
