//! Witnessing a node's audit log: each new signed checkpoint must verify with the key pinned when
//! the node joined and extend the last one witnessed (a consistency proof), or the node's audit
//! history was rewritten or rolled back.

use celistra_audit::{Checkpoint, hash_from_hex, verify_checkpoint};

/// Checks checkpoint `note`, signed with `audit_key`, against the one witnessed before
/// (`previous`), using `proof` (hex hashes from the node's `/v1/audit/proof?old_size=…`).
/// Returns the new checkpoint, or what is wrong.
pub(crate) fn witness(
    previous: Option<&str>,
    audit_key: &str,
    note: &str,
    proof: &[String],
) -> Result<Checkpoint, String> {
    let new = verify_checkpoint(note, audit_key).map_err(|e| {
        format!("the new checkpoint does not verify with the key pinned at joining: {e}")
    })?;
    let Some(previous) = previous else {
        return Ok(new);
    };
    let old = verify_checkpoint(previous, audit_key)
        .map_err(|e| format!("the witnessed checkpoint no longer verifies: {e}"))?;
    if new.size < old.size {
        return Err(format!(
            "rolled back: the log had {} entries when witnessed, it now claims {}",
            old.size, new.size
        ));
    }
    let proof = proof
        .iter()
        .map(|hash| {
            hash_from_hex(hash).ok_or_else(|| format!("the proof hash {hash:?} is not hex"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if celistra_audit::merkle::verify_consistency_proof(
        old.size, new.size, &old.root, &new.root, &proof,
    ) {
        Ok(new)
    } else {
        Err(format!(
            "rewritten: the log of {} entries does not extend the {} entries witnessed before",
            new.size, old.size
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use celistra_audit::{AuditLog, NewEntry};
    use serde_json::json;

    fn append(log: &AuditLog, what: &str) {
        log.append(NewEntry {
            actor: "tester".into(),
            action: what.into(),
            target: String::new(),
            body: json!({}),
        });
        log.sync().expect("synced");
    }

    fn proof(log: &AuditLog, old: u64, new: u64) -> Vec<String> {
        log.consistency_proof(old, new).expect("a proof")
    }

    #[test]
    fn a_growing_log_is_witnessed_and_a_rewritten_or_rolled_back_one_is_not() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (log, _) = AuditLog::open(dir.path(), "celistra/test").expect("opens");
        let key = log.public_key();
        append(&log, "one");
        append(&log, "two");
        let first = log.checkpoint().expect("checkpoint");
        let seen = witness(None, &key, &first, &[]).expect("a first checkpoint is taken");
        append(&log, "three");
        let second = log.checkpoint().expect("checkpoint");
        let grown = witness(
            Some(&first),
            &key,
            &second,
            &proof(&log, seen.size, log.tree_size()),
        )
        .expect("an extension is consistent");
        assert!(grown.size > seen.size);

        // Another log under the same key (the node's key, its history replaced).
        let other_dir = tempfile::tempdir().expect("temp dir");
        std::fs::copy(
            dir.path().join("audit.key"),
            other_dir.path().join("audit.key"),
        )
        .expect("the key copies");
        let (other, _) = AuditLog::open(other_dir.path(), "celistra/test").expect("opens");
        assert_eq!(other.public_key(), key);
        for what in ["uno", "dos", "tres", "cuatro"] {
            append(&other, what);
        }
        let rewritten = other.checkpoint().expect("checkpoint");
        let problem = witness(
            Some(&second),
            &key,
            &rewritten,
            &proof(&other, grown.size, other.tree_size()),
        )
        .expect_err("a rewritten history is caught");
        assert!(problem.starts_with("rewritten"), "{problem}");
        // An older checkpoint presented after a newer one: rolled back.
        let problem = witness(Some(&second), &key, &first, &[]).expect_err("caught");
        assert!(problem.starts_with("rolled back"), "{problem}");
        // A checkpoint signed by another key.
        let problem = witness(Some(&second), &key, &other_checkpoint(), &[]).expect_err("caught");
        assert!(problem.contains("does not verify"), "{problem}");
    }

    fn other_checkpoint() -> String {
        let dir = tempfile::tempdir().expect("temp dir");
        let (log, _) = AuditLog::open(dir.path(), "celistra/test").expect("opens");
        append(&log, "elsewhere");
        log.checkpoint().expect("checkpoint")
    }
}
