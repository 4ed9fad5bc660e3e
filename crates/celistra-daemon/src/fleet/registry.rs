//! The hub's durable state (`hub.json`, 0600, replaced atomically): the machines that joined (name,
//! link certificate fingerprint, audit key, last witnessed checkpoint), the certificates revoked
//! for good, and the pairing codes (only their SHA-256), with the limit on failed pairing attempts.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::Error;
use crate::home::write_atomic_private;

/// How long a pairing code may be used.
pub(crate) const CODE_LIFETIME_MS: u64 = 15 * 60 * 1000;
/// Random bytes in a pairing code: 160 bits, above the 128 asked for.
const CODE_BYTES: usize = 20;
/// Failed pairing attempts allowed per source address, and from everywhere, in [`FAILURE_WINDOW`].
const FAILURES_PER_ADDRESS: u32 = 5;
const FAILURES_OVERALL: u32 = 30;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Crockford's base32: no I, L, O or U, so a code read aloud or retyped has no look-alikes.
const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A machine that joined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MachineRecord {
    pub name: String,
    /// SHA-256 of its link certificate (lowercase hex): its identity on every link.
    pub fingerprint: String,
    /// Its audit log's verification key, pinned at joining, to witness its checkpoints with.
    pub audit_key: String,
    pub joined_at_ms: u64,
    pub version: String,
    pub last_address: Option<String>,
    pub last_seen_ms: Option<u64>,
    /// The latest checkpoint note witnessed, and its size.
    pub witnessed: Option<Witnessed>,
    /// What witnessing found wrong: a rewritten or rolled-back history. Kept until an owner
    /// removes the machine; never cleared by a later good checkpoint.
    pub tampered: Option<String>,
    pub checked_at_ms: Option<u64>,
    /// The last of its events the hub took, saved when the hub stops: where it resumes.
    #[serde(default)]
    pub last_event_id: Option<u64>,
    /// The run of its daemon (start time) `last_event_id` belongs to.
    #[serde(default)]
    pub boot: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Witnessed {
    pub note: String,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct CodeRecord {
    /// SHA-256 of the code's canonical form, lowercase hex.
    hash: String,
    expires_at_ms: u64,
    used_at_ms: Option<u64>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct State {
    machines: BTreeMap<String, MachineRecord>,
    /// Certificates cut off for good: a link presenting one is refused.
    revoked: BTreeSet<String>,
    codes: Vec<CodeRecord>,
}

/// Why a pairing was refused; each says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PairingRefusal {
    #[error(
        "this pairing code was already used; run `celistrad ctl pair` on the hub for a new one"
    )]
    Used,
    #[error(
        "this pairing code expired (codes last 15 minutes); run `celistrad ctl pair` on the hub for a new one"
    )]
    Expired,
    #[error(
        "wrong pairing code; copy the whole line `celistrad ctl pair` printed on the hub, or make a new code"
    )]
    Wrong,
    #[error("too many failed pairing attempts; try again in {0} s")]
    TooMany(u64),
    #[error(
        "the machine name `{0}` is taken by another machine of this fleet; start this daemon with another --machine-name, or remove the other with `celistrad ctl machines revoke {0}` on the hub"
    )]
    NameTaken(String),
    #[error(
        "the name `{0}` is the hub's own machine name; start this daemon with another --machine-name"
    )]
    HubName(String),
    #[error(
        "this machine's link key was revoked on the hub; run `celistrad ctl leave` here (which makes a new key), then join with a new code"
    )]
    Revoked,
}

/// The failed attempts in the current window.
#[derive(Debug)]
struct Failures {
    started: Instant,
    overall: u32,
    by_address: HashMap<IpAddr, u32>,
}

#[derive(Debug)]
pub(crate) struct Registry {
    path: PathBuf,
    hub_name: String,
    state: Mutex<State>,
    failures: Mutex<Failures>,
}

impl Registry {
    /// Loads `hub.json`, or starts empty when there is none.
    pub(crate) fn load(path: PathBuf, hub_name: &str) -> Result<Registry, Error> {
        let state = match std::fs::read_to_string(&path) {
            Ok(text) => celistra_core::json::parse(&text, &path.display().to_string())
                .map_err(|e| Error::Invalid(e.to_string()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(Error::io(format!("cannot read {}", path.display()), e)),
        };
        Ok(Registry {
            path,
            hub_name: hub_name.to_owned(),
            state: Mutex::new(state),
            failures: Mutex::new(Failures {
                started: Instant::now(),
                overall: 0,
                by_address: HashMap::new(),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes the state; a failure is logged, the state in memory stays authoritative.
    fn save(&self, state: &State) {
        let text = serde_json::to_vec_pretty(state).expect("the hub state serialises");
        if let Err(e) = write_atomic_private(&self.path, &text) {
            tracing::error!("cannot write {}: {e}", self.path.display());
        }
    }

    /// Mints a pairing code: returned once, kept only as its hash.
    pub(crate) fn mint_code(&self, now_ms: u64) -> Result<(String, u64), Error> {
        let mut bytes = [0u8; CODE_BYTES];
        getrandom::fill(&mut bytes).map_err(|e| {
            Error::io(
                "cannot read random bytes".into(),
                std::io::Error::other(e.to_string()),
            )
        })?;
        let code = encode_code(&bytes);
        let expires_at_ms = now_ms + CODE_LIFETIME_MS;
        let mut state = self.lock();
        // Codes long past their expiry are no use even for telling "expired" from "wrong".
        state
            .codes
            .retain(|c| c.expires_at_ms + CODE_LIFETIME_MS > now_ms);
        state.codes.push(CodeRecord {
            hash: code_hash(&code),
            expires_at_ms,
            used_at_ms: None,
        });
        self.save(&state);
        Ok((code, expires_at_ms))
    }

    /// Checks a failed-attempt budget before trying a code from `from`.
    fn check_budget(&self, from: IpAddr) -> Result<(), PairingRefusal> {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        let elapsed = failures.started.elapsed();
        if elapsed >= FAILURE_WINDOW {
            *failures = Failures {
                started: Instant::now(),
                overall: 0,
                by_address: HashMap::new(),
            };
        }
        let from_here = failures.by_address.get(&from).copied().unwrap_or(0);
        if from_here >= FAILURES_PER_ADDRESS || failures.overall >= FAILURES_OVERALL {
            let wait = FAILURE_WINDOW.saturating_sub(failures.started.elapsed());
            return Err(PairingRefusal::TooMany(wait.as_secs().max(1)));
        }
        Ok(())
    }

    fn count_failure(&self, from: IpAddr) {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        failures.overall += 1;
        *failures.by_address.entry(from).or_default() += 1;
    }

    /// Enrols a machine presenting `code` from address `from`, its link certificate's
    /// `fingerprint` and its audit key: burns the code and records the machine. Every code is
    /// compared (in constant time) so the time taken says nothing about which one was close.
    pub(crate) fn enroll(
        &self,
        code: &str,
        from: IpAddr,
        machine: MachineRecord,
        now_ms: u64,
    ) -> Result<(), PairingRefusal> {
        self.check_budget(from)?;
        let presented = code_hash(code);
        let mut state = self.lock();
        let mut found = None;
        for (index, record) in state.codes.iter().enumerate() {
            if bool::from(record.hash.as_bytes().ct_eq(presented.as_bytes())) {
                found = Some(index);
            }
        }
        let refusal = match found.map(|i| &state.codes[i]) {
            None => Some(PairingRefusal::Wrong),
            Some(record) if record.used_at_ms.is_some() => Some(PairingRefusal::Used),
            Some(record) if record.expires_at_ms <= now_ms => Some(PairingRefusal::Expired),
            Some(_) if state.revoked.contains(&machine.fingerprint) => {
                Some(PairingRefusal::Revoked)
            }
            Some(_) if machine.name == self.hub_name => {
                Some(PairingRefusal::HubName(machine.name.clone()))
            }
            Some(_) => state
                .machines
                .get(&machine.name)
                .filter(|existing| existing.fingerprint != machine.fingerprint)
                .map(|_| PairingRefusal::NameTaken(machine.name.clone())),
        };
        if let Some(refusal) = refusal {
            if matches!(
                refusal,
                PairingRefusal::Wrong | PairingRefusal::Used | PairingRefusal::Expired
            ) {
                drop(state);
                self.count_failure(from);
            }
            return Err(refusal);
        }
        let index = found.expect("a refusal otherwise");
        state.codes[index].used_at_ms = Some(now_ms);
        // The same key joining again under another name leaves its old name.
        state
            .machines
            .retain(|_, m| m.fingerprint != machine.fingerprint);
        state.machines.insert(machine.name.clone(), machine);
        self.save(&state);
        Ok(())
    }

    /// The machine whose link certificate has this fingerprint, unless revoked.
    pub(crate) fn machine_by_fingerprint(&self, fingerprint: &str) -> Option<MachineRecord> {
        let state = self.lock();
        if state.revoked.contains(fingerprint) {
            return None;
        }
        state
            .machines
            .values()
            .find(|m| m.fingerprint == fingerprint)
            .cloned()
    }

    /// Whether a certificate was revoked.
    pub(crate) fn is_revoked(&self, fingerprint: &str) -> bool {
        self.lock().revoked.contains(fingerprint)
    }

    /// Every machine that joined, by name.
    pub(crate) fn machines(&self) -> Vec<MachineRecord> {
        self.lock().machines.values().cloned().collect()
    }

    pub(crate) fn machine(&self, name: &str) -> Option<MachineRecord> {
        self.lock().machines.get(name).cloned()
    }

    /// Cuts a machine off for good: forgets it and refuses its certificate from now on.
    pub(crate) fn revoke(&self, name: &str) -> Option<MachineRecord> {
        let mut state = self.lock();
        let removed = state.machines.remove(name)?;
        state.revoked.insert(removed.fingerprint.clone());
        self.save(&state);
        Some(removed)
    }

    /// Changes every machine's record, then saves once.
    pub(crate) fn update_each(&self, mut change: impl FnMut(&mut MachineRecord)) {
        let mut state = self.lock();
        state.machines.values_mut().for_each(&mut change);
        self.save(&state);
    }

    /// Changes a machine's record (seen, witnessed) and saves.
    pub(crate) fn update(&self, name: &str, change: impl FnOnce(&mut MachineRecord)) {
        let mut state = self.lock();
        if let Some(machine) = state.machines.get_mut(name) {
            change(machine);
            self.save(&state);
        }
    }
}

/// A code as people see it: Crockford base32 in groups of four.
fn encode_code(bytes: &[u8]) -> String {
    let mut bits = 0u32;
    let mut held = 0u32;
    let mut symbols = Vec::new();
    for &byte in bytes {
        bits = (bits << 8) | u32::from(byte);
        held += 8;
        while held >= 5 {
            held -= 5;
            symbols.push(CROCKFORD[((bits >> held) & 31) as usize]);
        }
    }
    if held > 0 {
        symbols.push(CROCKFORD[((bits << (5 - held)) & 31) as usize]);
    }
    symbols
        .chunks(4)
        .map(|group| String::from_utf8_lossy(group).into_owned())
        .collect::<Vec<_>>()
        .join("-")
}

/// The hash a code is kept as: of its canonical form (upper case, no separators, Crockford's
/// look-alikes read as the digits they stand for), so a retyped code still matches.
fn code_hash(code: &str) -> String {
    let canonical: String = code
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .map(|c| match c.to_ascii_uppercase() {
            'O' => '0',
            'I' | 'L' => '1',
            other => other,
        })
        .collect();
    celistra_audit::to_hex(&Sha256::digest(canonical.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> (tempfile::TempDir, Registry) {
        let dir = tempfile::tempdir().expect("temp dir");
        let registry = Registry::load(dir.path().join("hub.json"), "hub").expect("loads");
        (dir, registry)
    }

    fn machine(name: &str, fingerprint: &str) -> MachineRecord {
        MachineRecord {
            name: name.into(),
            fingerprint: fingerprint.into(),
            audit_key: "key".into(),
            joined_at_ms: 1,
            version: "0.1.0".into(),
            last_address: None,
            last_seen_ms: None,
            witnessed: None,
            tampered: None,
            checked_at_ms: None,
            last_event_id: None,
            boot: None,
        }
    }

    const HERE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn a_code_has_160_bits_in_crockford_groups_and_only_its_hash_is_kept() {
        let (dir, registry) = registry();
        let (code, expires) = registry.mint_code(1_000).expect("mints");
        assert_eq!(expires, 1_000 + CODE_LIFETIME_MS);
        let symbols: String = code.chars().filter(|c| *c != '-').collect();
        assert_eq!(symbols.len(), 32, "{code}");
        assert!(symbols.bytes().all(|b| CROCKFORD.contains(&b)), "{code}");
        let saved = std::fs::read_to_string(dir.path().join("hub.json")).expect("saved");
        assert!(!saved.contains(&code) && !saved.contains(&symbols));
        assert!(saved.contains(&code_hash(&code)));
        let mode = std::fs::metadata(dir.path().join("hub.json"))
            .expect("saved")
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
    }

    #[test]
    fn a_code_works_once_before_it_expires_and_each_refusal_says_why() {
        let (_dir, registry) = registry();
        let (code, expires) = registry.mint_code(0).expect("mints");
        assert_eq!(
            registry.enroll("AAAA-BBBB", HERE, machine("m1", "f1"), 1),
            Err(PairingRefusal::Wrong)
        );
        // Retyped in lower case: still the code.
        registry
            .enroll(&code.to_lowercase(), HERE, machine("m1", "f1"), 1)
            .expect("joins");
        assert_eq!(
            registry.enroll(&code, HERE, machine("m2", "f2"), 2),
            Err(PairingRefusal::Used)
        );
        let (late, late_expiry) = registry.mint_code(0).expect("mints");
        assert_eq!(late_expiry, expires);
        assert_eq!(
            registry.enroll(&late, HERE, machine("m2", "f2"), late_expiry),
            Err(PairingRefusal::Expired)
        );
        assert_eq!(
            registry.machine_by_fingerprint("f1").expect("m1").name,
            "m1"
        );
    }

    #[test]
    fn names_are_unique_and_a_revoked_key_stays_refused() {
        let (dir, registry) = registry();
        let (code, _) = registry.mint_code(0).expect("mints");
        registry
            .enroll(&code, HERE, machine("m1", "f1"), 1)
            .expect("joins");
        let (code, _) = registry.mint_code(0).expect("mints");
        assert_eq!(
            registry.enroll(&code, HERE, machine("m1", "other"), 1),
            Err(PairingRefusal::NameTaken("m1".into()))
        );
        assert_eq!(
            registry.enroll(&code, HERE, machine("hub", "f3"), 1),
            Err(PairingRefusal::HubName("hub".into()))
        );
        assert!(registry.revoke("m1").is_some());
        assert!(registry.machine_by_fingerprint("f1").is_none());
        assert_eq!(
            registry.enroll(&code, HERE, machine("m1", "f1"), 1),
            Err(PairingRefusal::Revoked)
        );
        // The code was not burnt by those refusals, and the state survives a restart.
        registry
            .enroll(&code, HERE, machine("m1", "f4"), 1)
            .expect("a new key joins");
        let reloaded = Registry::load(dir.path().join("hub.json"), "hub").expect("loads");
        assert!(reloaded.is_revoked("f1"));
        assert_eq!(reloaded.machine("m1").expect("kept").fingerprint, "f4");
    }

    #[test]
    fn failed_attempts_are_limited_per_address() {
        let (_dir, registry) = registry();
        let (code, _) = registry.mint_code(0).expect("mints");
        for _ in 0..FAILURES_PER_ADDRESS {
            assert_eq!(
                registry.enroll("WRONG", HERE, machine("m1", "f1"), 1),
                Err(PairingRefusal::Wrong)
            );
        }
        assert!(matches!(
            registry.enroll(&code, HERE, machine("m1", "f1"), 1),
            Err(PairingRefusal::TooMany(_))
        ));
        let elsewhere: IpAddr = "10.0.0.2".parse().expect("address");
        registry
            .enroll(&code, elsewhere, machine("m1", "f1"), 1)
            .expect("another address still may");
    }
}
