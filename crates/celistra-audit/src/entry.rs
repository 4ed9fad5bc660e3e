//! Audit entries, their canonical content serialisation and the hash chain that binds each entry to
//! the one before it (docs/audit-format.md is the specification; this is its implementation).

use std::borrow::Cow;
use std::io::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::digest::{Hash, sha256, to_hex};

/// The `prev_hash` of the first entry (seq 0): 32 zero bytes.
pub const GENESIS_HASH: Hash = [0; 32];

/// What a caller records; the log assigns the sequence number, the time and the hashes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEntry {
    /// Who did it: a credential's name, or `system`.
    pub actor: String,
    /// What was done, e.g. `agent_spawn`.
    pub action: String,
    /// What it was done to, e.g. an agent id; empty when there is no target.
    pub target: String,
    /// Action-specific details, secrets already removed (see [`redact`]).
    pub body: Value,
}

/// One line of `audit.log`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Position in the log, from 0; also the entry's leaf index in the Merkle tree.
    pub seq: u64,
    /// Milliseconds since the Unix epoch, never less than the previous entry's.
    pub time_ms: u64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub body: Value,
    /// The previous entry's `hash` (64 hex digits; zeros for seq 0).
    pub prev_hash: String,
    /// This entry's chain hash (64 hex digits).
    pub hash: String,
}

impl Entry {
    /// Builds the entry that follows `prev_hash`, computing its hash.
    pub(crate) fn seal(new: NewEntry, seq: u64, time_ms: u64, prev_hash: &Hash) -> (Entry, Hash) {
        let hash = chain_hash(
            prev_hash,
            seq,
            time_ms,
            &content_hash(&new.actor, &new.action, &new.target, &new.body),
        );
        let entry = Entry {
            seq,
            time_ms,
            actor: new.actor,
            action: new.action,
            target: new.target,
            body: new.body,
            prev_hash: to_hex(prev_hash),
            hash: to_hex(&hash),
        };
        (entry, hash)
    }

    /// The hash this entry's fields call for, whatever its `hash` field says.
    pub fn computed_hash(&self, prev_hash: &Hash) -> Hash {
        chain_hash(
            prev_hash,
            self.seq,
            self.time_ms,
            &content_hash(&self.actor, &self.action, &self.target, &self.body),
        )
    }
}

/// An `Entry` as read for verification: the same fields, borrowed from the line where they need
/// no unescaping, which saves most of the allocations of reading a million entries.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EntryLine<'a> {
    pub(crate) seq: u64,
    pub(crate) time_ms: u64,
    #[serde(borrow)]
    actor: Cow<'a, str>,
    #[serde(borrow)]
    action: Cow<'a, str>,
    #[serde(borrow)]
    target: Cow<'a, str>,
    body: Value,
    #[serde(borrow)]
    pub(crate) prev_hash: Cow<'a, str>,
    #[serde(borrow)]
    pub(crate) hash: Cow<'a, str>,
}

impl EntryLine<'_> {
    /// The hash this entry's fields call for, whatever its `hash` field says.
    pub(crate) fn computed_hash(&self, prev_hash: &Hash) -> Hash {
        chain_hash(
            prev_hash,
            self.seq,
            self.time_ms,
            &content_hash(&self.actor, &self.action, &self.target, &self.body),
        )
    }
}

/// The canonical content: `{"action":…,"actor":…,"body":…,"target":…}` with the keys of every object
/// sorted by their UTF-8 bytes, no whitespace, strings escaped as serde_json escapes them and
/// numbers formatted as serde_json formats them.
pub fn canonical_content(actor: &str, action: &str, target: &str, body: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(b"{\"action\":");
    write_string(action, &mut out);
    out.extend_from_slice(b",\"actor\":");
    write_string(actor, &mut out);
    out.extend_from_slice(b",\"body\":");
    write_canonical(body, &mut out);
    out.extend_from_slice(b",\"target\":");
    write_string(target, &mut out);
    out.push(b'}');
    out
}

/// SHA-256 of the canonical content.
pub fn content_hash(actor: &str, action: &str, target: &str, body: &Value) -> Hash {
    sha256(&[&canonical_content(actor, action, target, body)])
}

/// SHA-256(prev_hash ‖ seq as u64 big-endian ‖ time_ms as u64 big-endian ‖ content_hash).
pub fn chain_hash(prev_hash: &Hash, seq: u64, time_ms: u64, content_hash: &Hash) -> Hash {
    sha256(&[
        prev_hash,
        &seq.to_be_bytes(),
        &time_ms.to_be_bytes(),
        content_hash,
    ])
}

/// Sorts keys itself rather than trusting `serde_json::Map`'s order, which turns into insertion
/// order when any crate in the build enables serde_json's `preserve_order`.
fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        // Writing into a Vec cannot fail.
        Value::Number(number) => drop(write!(out, "{number}")),
        Value::String(text) => write_string(text, out),
        Value::Array(items) => {
            out.push(b'[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut fields: Vec<(&String, &Value)> = map.iter().collect();
            fields.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (index, (key, item)) in fields.into_iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_string(key, out);
                out.push(b':');
                write_canonical(item, out);
            }
            out.push(b'}');
        }
    }
}

fn write_string(text: &str, out: &mut Vec<u8>) {
    // Serialising a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
}

/// The word that replaces a secret's value.
pub const REDACTED: &str = "[redacted]";

/// Words that mark a key as holding a secret, compared with each word of the key (split at
/// non-alphanumerics and lower-to-upper case changes), so `api_key` and `sshKey` match but
/// `keyboard` and `tokens_used` do not.
const SECRET_WORDS: &[&str] = &[
    "secret",
    "secrets",
    "token",
    "password",
    "passwd",
    "passphrase",
    "key",
    "apikey",
    "authorization",
    "credential",
    "credentials",
    "cookie",
];

/// Replaces, at any depth, the values of keys that look secret with `"[redacted]"`, and the values
/// of an `env` (or `environment`) object (or the `VALUE` of each `NAME=VALUE` in an `env` array),
/// keeping the names: which variable was set is audit information, its value may be a credential.
pub fn redact(body: &mut Value) {
    match body {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                if is_secret_key(key) {
                    *value = Value::String(REDACTED.to_owned());
                } else if key.eq_ignore_ascii_case("env") || key.eq_ignore_ascii_case("environment")
                {
                    redact_env(value);
                } else {
                    redact(value);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

fn redact_env(env: &mut Value) {
    match env {
        Value::Object(vars) => {
            for value in vars.values_mut() {
                *value = Value::String(REDACTED.to_owned());
            }
        }
        Value::Array(items) => {
            for item in items {
                *item = match item {
                    Value::String(text) => match text.split_once('=') {
                        Some((name, _)) => Value::String(format!("{name}={REDACTED}")),
                        None => Value::String(text.clone()),
                    },
                    _ => Value::String(REDACTED.to_owned()),
                };
            }
        }
        Value::Null => {}
        other => *other = Value::String(REDACTED.to_owned()),
    }
}

fn is_secret_key(key: &str) -> bool {
    key_words(key).into_iter().any(|word| {
        SECRET_WORDS
            .iter()
            .any(|secret| word.eq_ignore_ascii_case(secret))
    })
}

/// `"sshKey"` → `ssh`, `Key`; `"api_key"` → `api`, `key`; `"X-Auth-Token"` → `X`, `Auth`, `Token`.
fn key_words(key: &str) -> Vec<&str> {
    let mut words = Vec::new();
    let mut start: Option<usize> = None;
    let mut previous_lower = false;
    for (index, ch) in key.char_indices() {
        let separator = !ch.is_alphanumeric();
        if (separator || (previous_lower && ch.is_uppercase()))
            && let Some(word_start) = start.take()
        {
            words.push(&key[word_start..index]);
        }
        if !separator {
            start.get_or_insert(index);
        }
        previous_lower = ch.is_lowercase();
    }
    if let Some(word_start) = start {
        words.push(&key[word_start..]);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_content_sorts_keys_at_every_level_without_whitespace() {
        let body =
            json!({"zeta": 1, "alpha": {"b": [true, null, 1.5], "a": "é\n\"x\""}, "Beta": -3});
        let text =
            String::from_utf8(canonical_content("ops", "agent_spawn", "ag-1", &body)).unwrap();
        assert_eq!(
            text,
            r#"{"action":"agent_spawn","actor":"ops","body":{"Beta":-3,"alpha":{"a":"é\n\"x\"","b":[true,null,1.5]},"zeta":1},"target":"ag-1"}"#
        );
    }

    #[test]
    fn float_bodies_hash_the_same_after_a_round_trip_through_the_file() {
        let body = json!({"ratio": 0.1 + 0.2, "big": 1e300, "tiny": 5e-324, "neg": -0.0});
        let (entry, hash) = Entry::seal(
            NewEntry {
                actor: "a".into(),
                action: "b".into(),
                target: String::new(),
                body,
            },
            0,
            1,
            &GENESIS_HASH,
        );
        let line = serde_json::to_vec(&entry).unwrap();
        let parsed: Entry = serde_json::from_slice(&line).unwrap();
        assert_eq!(parsed.computed_hash(&GENESIS_HASH), hash);
    }

    #[test]
    fn key_words_split_at_separators_and_case_changes() {
        let words = key_words;
        assert_eq!(words("sshKey"), ["ssh", "Key"]);
        assert_eq!(words("api_key"), ["api", "key"]);
        assert_eq!(words("X-Auth-Token"), ["X", "Auth", "Token"]);
        assert_eq!(words("keyboard"), ["keyboard"]);
        assert!(words("__").is_empty());
    }

    #[test]
    fn redact_replaces_secret_values_and_env_values_at_any_depth() {
        let mut body = json!({
            "command": "run.sh",
            "password": "hunter2",
            "headers": {"Authorization": "Bearer abc", "Accept": "*/*"},
            "spec": {"env": {"HOME": "/root", "AWS_SECRET": "x"}, "apiKey": {"nested": 1}},
            "envs": [{"environment": ["A=1", "B=two=2", "C"]}],
            "monkey": "banana",
            "tokens_used": 12,
            "keys": ["k1"],
            "private_key_path": "/k",
        });
        redact(&mut body);
        assert_eq!(
            body,
            json!({
                "command": "run.sh",
                "password": REDACTED,
                "headers": {"Authorization": REDACTED, "Accept": "*/*"},
                "spec": {"env": {"HOME": REDACTED, "AWS_SECRET": REDACTED}, "apiKey": REDACTED},
                "envs": [{"environment": ["A=[redacted]", "B=[redacted]", "C"]}],
                "monkey": "banana",
                "tokens_used": 12,
                "keys": ["k1"],
                "private_key_path": REDACTED,
            })
        );
    }
}
