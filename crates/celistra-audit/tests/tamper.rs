//! Issue 6's tamper cases: each edit an attacker with write access to the state directory (but not
//! the signing key's past signatures, which clients hold) can make, and the sequence number
//! verification blames for it.

mod common;

use std::path::Path;

use celistra_audit::{
    AuditLog, Error, Tamper, verify_bundle, verify_checkpoint, verify_consistency,
};
use common::{fill, lines, open, parse, rechain, render, reseal, write_lines};

/// Ten entries (seq 0..=9) covered by a signed checkpoint, the log closed.
fn signed_log(dir: &Path) {
    let (log, _) = open(dir);
    fill(&log, 10);
    log.checkpoint().unwrap();
}

/// Applies `edit` to the closed log's lines, reopens it, and returns what open and verify report.
/// Open must leave a log damaged in the middle as it is.
fn tamper(edit: impl FnOnce(&mut Vec<String>)) -> (Option<Tamper>, Tamper) {
    let dir = tempfile::tempdir().unwrap();
    signed_log(dir.path());
    let mut edited = lines(dir.path());
    edit(&mut edited);
    write_lines(dir.path(), &edited);
    let (log, report) = open(dir.path());
    assert_eq!(report.truncated_bytes, None);
    let verdict = log.verify(0, &mut |_, _| {}).unwrap_err();
    drop(log);
    assert_eq!(lines(dir.path()), edited, "open changed a tampered log");
    (report.problem, verdict)
}

#[test]
fn an_edited_body_is_blamed_on_its_entry() {
    let (at_open, verdict) = tamper(|lines| {
        let mut entry = parse(&lines[4]);
        entry.body["command"] = "rm -rf /".into();
        lines[4] = render(&entry);
    });
    assert_eq!((at_open.unwrap().seq, verdict.seq), (Some(4), Some(4)));
    assert!(verdict.what.contains("hash does not match"), "{verdict}");
}

#[test]
fn an_edited_body_with_a_recomputed_hash_is_blamed_on_its_entry() {
    let (_, verdict) = tamper(|lines| {
        let mut entry = parse(&lines[4]);
        entry.actor = "nobody".into();
        reseal(&mut entry);
        lines[4] = render(&entry);
    });
    assert_eq!(verdict.seq, Some(4), "{verdict}");
    assert!(verdict.what.contains("rewritten"), "{verdict}");
}

#[test]
fn a_changed_timestamp_is_blamed_on_its_entry() {
    let (_, verdict) = tamper(|lines| {
        let mut entry = parse(&lines[4]);
        entry.time_ms -= 3_600_000;
        lines[4] = render(&entry);
    });
    assert_eq!(verdict.seq, Some(4), "{verdict}");
}

#[test]
fn a_deleted_entry_is_reported_missing() {
    let (_, verdict) = tamper(|lines| {
        lines.remove(4);
    });
    assert_eq!(verdict.seq, Some(4), "{verdict}");
    assert!(verdict.what.contains("removed"), "{verdict}");
}

#[test]
fn an_inserted_entry_is_found_even_when_it_chains() {
    let (_, verdict) = tamper(|lines| {
        let mut forged = parse(&lines[4]);
        forged.actor = "intruder".into();
        forged.prev_hash = parse(&lines[3]).hash;
        reseal(&mut forged);
        lines.insert(4, render(&forged));
    });
    assert_eq!(verdict.seq, Some(4), "{verdict}");
    assert!(verdict.what.contains("appears twice"), "{verdict}");
}

#[test]
fn swapped_entries_are_reported_at_the_first() {
    let (_, verdict) = tamper(|lines| lines.swap(4, 5));
    assert_eq!(verdict.seq, Some(4), "{verdict}");
}

#[test]
fn a_tail_truncated_at_a_line_boundary_is_found_against_the_checkpoint() {
    let (at_open, verdict) = tamper(|lines| lines.truncate(7));
    assert_eq!(
        (at_open.unwrap().seq, verdict.seq),
        (Some(7), Some(7)),
        "{verdict}"
    );
}

#[test]
fn a_chain_rewritten_from_one_entry_on_is_found_by_the_root() {
    let (_, verdict) = tamper(|lines| {
        let mut entry = parse(&lines[4]);
        entry.target = "ag-hidden".into();
        lines[4] = render(&entry);
        rechain(lines, 4);
    });
    // Every link holds, so only the signed root tells, and a root cannot say which entry.
    assert_eq!(verdict.seq, None, "{verdict}");
    assert!(verdict.what.contains("root"), "{verdict}");
}

#[test]
fn a_running_daemon_pins_a_rewritten_chain_to_the_first_changed_entry() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path());
    fill(&log, 10);
    let mut edited = lines(dir.path());
    let mut entry = parse(&edited[4]);
    entry.target = "ag-hidden".into();
    edited[4] = render(&entry);
    rechain(&mut edited, 4);
    write_lines(dir.path(), &edited);
    let verdict = log.verify(0, &mut |_, _| {}).unwrap_err();
    assert_eq!(verdict.seq, Some(4), "{verdict}");
}

#[test]
fn a_rollback_to_an_older_copy_fails_against_a_checkpoint_the_client_saw() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path());
    let trusted_key = log.public_key();
    fill(&log, 5);
    log.checkpoint().unwrap();
    let old_log = std::fs::read(dir.path().join("audit.log")).unwrap();
    let old_checkpoint = std::fs::read(dir.path().join("audit.checkpoint")).unwrap();
    fill(&log, 5);
    let seen = verify_checkpoint(&log.checkpoint().unwrap(), &trusted_key).unwrap();
    drop(log);

    std::fs::write(dir.path().join("audit.log"), old_log).unwrap();
    std::fs::write(dir.path().join("audit.checkpoint"), old_checkpoint).unwrap();
    let (log, report) = open(dir.path());
    // The old copy is consistent with itself...
    assert_eq!(report.problem, None);
    log.verify(0, &mut |_, _| {}).unwrap();
    // ...but not with what the client saw: first smaller than it,
    let now = verify_checkpoint(&log.checkpoint().unwrap(), &trusted_key).unwrap();
    assert!(matches!(
        log.consistency_proof(seen.size, now.size),
        Err(Error::OutOfRange(_))
    ));
    let verdict = verify_consistency(&seen, &now, &[]).unwrap_err();
    assert_eq!(verdict.seq, Some(5), "{verdict}");
    // then, once it has grown past it, not an extension of it.
    fill(&log, 7);
    let now = verify_checkpoint(&log.checkpoint().unwrap(), &trusted_key).unwrap();
    let proof = log.consistency_proof(seen.size, now.size).unwrap();
    let verdict = verify_consistency(&seen, &now, &proof).unwrap_err();
    assert!(verdict.what.contains("does not extend"), "{verdict}");
}

#[test]
fn a_replaced_key_is_refused_and_its_checkpoints_fail_against_the_saved_key() {
    let dir = tempfile::tempdir().unwrap();
    signed_log(dir.path());
    let saved_key = std::fs::read_to_string(dir.path().join("audit.pub")).unwrap();
    std::fs::remove_file(dir.path().join("audit.key")).unwrap();

    let (log, report) = open(dir.path());
    assert!(report.key_created);
    assert!(report.problem.unwrap().what.contains("replaced"));
    assert!(
        log.verify(0, &mut |_, _| {})
            .unwrap_err()
            .what
            .contains("replaced")
    );
    assert!(matches!(log.checkpoint(), Err(Error::Inconsistent(_))));
    drop(log);

    // With the old checkpoint moved aside the new key signs, but not as the key clients saved.
    std::fs::remove_file(dir.path().join("audit.checkpoint")).unwrap();
    let (log, _) = open(dir.path());
    let note = log.checkpoint().unwrap();
    assert_ne!(log.public_key(), saved_key.trim_end());
    let verdict = verify_checkpoint(&note, saved_key.trim_end()).unwrap_err();
    assert!(verdict.what.contains("no signature by"), "{verdict}");
}

#[test]
fn a_replaced_checkpoint_file_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path());
    fill(&log, 3);
    log.checkpoint().unwrap();
    let older = std::fs::read(dir.path().join("audit.checkpoint")).unwrap();
    fill(&log, 3);
    log.checkpoint().unwrap();
    std::fs::write(dir.path().join("audit.checkpoint"), older).unwrap();
    assert!(
        log.verify(0, &mut |_, _| {})
            .unwrap_err()
            .what
            .contains("replaced")
    );
}

#[test]
fn a_tampered_export_fails_offline() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path());
    fill(&log, 10);
    let bundle = dir.path().join("bundle");
    log.export(&bundle).unwrap();
    let entries = bundle.join("entries.jsonl");
    let original = std::fs::read_to_string(&entries).unwrap();

    let mut rewritten: Vec<String> = original.lines().map(str::to_owned).collect();
    rewritten.swap(2, 3);
    std::fs::write(&entries, rewritten.join("\n") + "\n").unwrap();
    assert_eq!(
        verify_bundle(&bundle, &mut |_, _| {}).unwrap_err().seq,
        Some(2)
    );

    let truncated: Vec<&str> = original.lines().take(8).collect();
    std::fs::write(&entries, truncated.join("\n") + "\n").unwrap();
    assert_eq!(
        verify_bundle(&bundle, &mut |_, _| {}).unwrap_err().seq,
        Some(8)
    );

    std::fs::write(&entries, &original).unwrap();
    let other = tempfile::tempdir().unwrap();
    let (stranger, _) = AuditLog::open(other.path(), common::ORIGIN).unwrap();
    std::fs::write(bundle.join("public.key"), stranger.public_key()).unwrap();
    assert!(verify_bundle(&bundle, &mut |_, _| {}).is_err());
}
