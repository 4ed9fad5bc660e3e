//! The store end to end: append, durability across reopening, the live tail, queries and paging,
//! checkpoints and proofs, export and CSV, key file permissions, concurrent writers and torn tails.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;

use celistra_audit::{
    AuditLog, Error, Query, verify_bundle, verify_checkpoint, verify_consistency, verify_inclusion,
};
use common::{ORIGIN, fill, lines, new_entry, open, parse};

#[test]
fn entries_survive_reopening_and_the_chain_continues() {
    let dir = tempfile::tempdir().unwrap();
    let (log, report) = open(dir.path());
    assert_eq!(
        (
            report.entries,
            report.truncated_bytes,
            report.problem,
            report.key_created
        ),
        (0, None, None, true)
    );
    assert_eq!(log.append(new_entry(0)), 0);
    assert_eq!(log.append(new_entry(1)), 1);
    log.sync().unwrap();
    let key = log.public_key();
    drop(log);

    let (log, report) = open(dir.path());
    assert_eq!(
        (report.entries, report.problem, report.key_created),
        (2, None, false)
    );
    assert_eq!(log.public_key(), key);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("audit.pub")).unwrap(),
        format!("{key}\n")
    );
    assert_eq!(log.append(new_entry(2)), 2);
    drop(log); // dropping writes what is queued

    let written = lines(dir.path());
    assert_eq!(written.len(), 3);
    assert_eq!(parse(&written[2]).prev_hash, parse(&written[1]).hash);
    assert_eq!(parse(&written[0]).prev_hash, "0".repeat(64));
    let (log, _) = open(dir.path());
    assert_eq!(log.verify(0, &mut |_, _| {}).unwrap().entries, 3);
    let mode = std::fs::metadata(dir.path().join("audit.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn a_key_others_can_read_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    let key = dir.path().join("audit.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let error = AuditLog::open(dir.path(), ORIGIN).err().unwrap();
    assert!(
        matches!(error, Error::InsecureKey { mode: 0o640, .. }),
        "{error}"
    );
    assert!(error.to_string().contains("chmod 600"), "{error}");
    assert!(matches!(
        AuditLog::open(dir.path(), "two words").err().unwrap(),
        Error::BadOrigin(_)
    ));
}

#[test]
fn subscribers_see_new_entries_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path());
    log.append(new_entry(0));
    let mut live = log.subscribe();
    log.append(new_entry(1));
    log.append(new_entry(2));
    assert_eq!(live.blocking_recv().unwrap().seq, 1);
    assert_eq!(live.blocking_recv().unwrap().seq, 2);
}

#[test]
fn queries_filter_and_page_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path());
    fill(&log, 1500);

    let page = log
        .query(&Query {
            limit: 10,
            ..Query::default()
        })
        .unwrap();
    assert_eq!(
        page.entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1490..1500).rev().collect::<Vec<_>>()
    );
    assert_eq!(page.next, Some(1490));

    // Paging through one filter visits every match once, across read windows.
    let mut seen = Vec::new();
    let mut query = Query {
        actor: Some("ops".into()),
        action: Some("agent_stop".into()),
        limit: 37,
        ..Query::default()
    };
    loop {
        let page = log.query(&query).unwrap();
        seen.extend(page.entries.iter().map(|e| e.seq));
        match page.next {
            Some(next) => query.after_seq = Some(next),
            None => break,
        }
    }
    let expected: Vec<u64> = (0..1500u64).rev().filter(|i| i.is_multiple_of(6)).collect();
    assert_eq!(seen, expected);

    let by_target = log
        .query(&Query {
            target: Some("ag-0003".into()),
            text: Some("RUN-1403".into()),
            ..Query::default()
        })
        .unwrap();
    assert_eq!(
        by_target.entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [1403]
    );

    let first = log
        .query(&Query {
            after_seq: Some(1),
            ..Query::default()
        })
        .unwrap();
    let t0 = first.entries[0].time_ms;
    let since = log
        .query(&Query {
            since_ms: Some(t0 + 1_000_000),
            ..Query::default()
        })
        .unwrap();
    assert!(since.entries.is_empty() && since.next.is_none());
    let until = log
        .query(&Query {
            until_ms: Some(t0),
            ..Query::default()
        })
        .unwrap();
    assert!(until.entries.is_empty());
}

#[test]
fn checkpoints_and_proofs_verify_from_the_outside() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path());
    let vkey = log.public_key();
    fill(&log, 13);
    let old = verify_checkpoint(&log.checkpoint().unwrap(), &vkey).unwrap();
    assert_eq!((old.origin.as_str(), old.size), (ORIGIN, 13));
    fill(&log, 21);
    let note = log.checkpoint().unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("audit.checkpoint")).unwrap(),
        note
    );
    let new = verify_checkpoint(&note, &vkey).unwrap();
    assert_eq!(new.size, 34);
    assert!(new.time_ms >= old.time_ms);

    let entries = log
        .query(&Query {
            limit: 100,
            ..Query::default()
        })
        .unwrap()
        .entries;
    for entry in &entries {
        let proof = log.inclusion_proof(entry.seq, new.size).unwrap();
        verify_inclusion(entry, &proof, &new).unwrap();
        if entry.seq < old.size {
            verify_inclusion(
                entry,
                &log.inclusion_proof(entry.seq, old.size).unwrap(),
                &old,
            )
            .unwrap();
        }
    }
    let mut forged = entries[3].clone();
    forged.body = serde_json::json!({"i": "forged"});
    assert_eq!(
        verify_inclusion(
            &forged,
            &log.inclusion_proof(forged.seq, new.size).unwrap(),
            &new
        )
        .unwrap_err()
        .seq,
        Some(forged.seq)
    );

    verify_consistency(
        &old,
        &new,
        &log.consistency_proof(old.size, new.size).unwrap(),
    )
    .unwrap();
    assert!(
        verify_consistency(
            &old,
            &new,
            &log.consistency_proof(old.size - 1, new.size).unwrap()
        )
        .is_err()
    );
    assert!(matches!(
        log.inclusion_proof(34, 34),
        Err(Error::OutOfRange(_))
    ));
    assert!(matches!(
        log.consistency_proof(35, 34),
        Err(Error::OutOfRange(_))
    ));
    let verified = log.verify(0, &mut |_, _| {}).unwrap();
    assert_eq!(
        (verified.entries, verified.checkpoint.map(|c| c.size)),
        (34, Some(34))
    );
}

#[test]
fn verification_reports_progress_and_resumes_from_a_seq() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path());
    fill(&log, 2500);
    log.checkpoint().unwrap();
    let mut calls = Vec::new();
    let verified = log
        .verify(0, &mut |done, total| calls.push((done, total)))
        .unwrap();
    assert_eq!(verified.entries, 2500);
    assert_eq!(calls, [(1024, 2500), (2048, 2500), (2500, 2500)]);
    fill(&log, 10);
    assert_eq!(log.verify(2500, &mut |_, _| {}).unwrap().entries, 10);
}

#[test]
fn an_export_verifies_offline_and_csv_has_one_row_per_entry() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path());
    fill(&log, 25);
    let out = dir.path().join("bundle");
    let report = log.export(&out).unwrap();
    assert_eq!(report.entries, 25);
    assert_eq!(
        std::fs::read_to_string(out.join("public.key"))
            .unwrap()
            .trim_end(),
        log.public_key()
    );
    assert_eq!(verify_bundle(&out, &mut |_, _| {}).unwrap().entries, 25);

    // An entry added to the bundle is not covered by its signature.
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(out.join("entries.jsonl"))
        .unwrap();
    let extra = lines(dir.path())[0].replace("\"seq\":0", "\"seq\":25");
    writeln!(file, "{extra}").unwrap();
    assert!(verify_bundle(&out, &mut |_, _| {}).is_err());

    let mut csv = Vec::new();
    assert_eq!(log.export_csv(&mut csv).unwrap(), 25);
    let csv = String::from_utf8(csv).unwrap();
    assert_eq!(csv.lines().count(), 26);
    assert!(csv.starts_with("seq,time,time_ms,actor,action,target,body,prev_hash,hash\n0,"));
}

#[test]
fn four_writers_get_distinct_seqs_and_one_chain() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path());
    let seqs: Vec<u64> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let log = &log;
                scope.spawn(move || {
                    (0..2000)
                        .map(|i| log.append(new_entry(t * 10_000 + i)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let mut sorted = seqs.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted, (0..8000).collect::<Vec<_>>());
    log.checkpoint().unwrap();
    assert_eq!(log.verify(0, &mut |_, _| {}).unwrap().entries, 8000);
}

#[test]
fn a_torn_last_write_is_cut_and_the_cut_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path());
    fill(&log, 5);
    log.checkpoint().unwrap();
    fill(&log, 1);
    drop(log);
    // kill -9 in the middle of a write: half of the next line reached the disk.
    let full = lines(dir.path())[5].clone();
    let half = &full[..full.len() / 2];
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.path().join("audit.log"))
        .unwrap();
    file.write_all(half.as_bytes()).unwrap();
    drop(file);

    let (log, report) = open(dir.path());
    assert_eq!(report.truncated_bytes, Some(half.len() as u64));
    assert_eq!(report.problem, None);
    assert_eq!(report.entries, 7);
    log.sync().unwrap();
    let record = parse(&lines(dir.path())[6]);
    assert_eq!(
        (record.seq, record.actor.as_str(), record.action.as_str()),
        (6, "system", "audit_log_truncated")
    );
    assert_eq!(record.body["bytes"], half.len() as u64);
    assert_eq!(log.verify(0, &mut |_, _| {}).unwrap().entries, 7);
    log.checkpoint().unwrap();
}

#[test]
fn a_bad_last_line_after_the_checkpoint_is_cut_but_one_it_covers_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path());
    fill(&log, 5);
    log.checkpoint().unwrap();
    fill(&log, 1);
    drop(log);
    let mut written = lines(dir.path());
    written[5] = written[5].replace("agent_", "agent-");
    common::write_lines(dir.path(), &written);
    let (log, report) = open(dir.path());
    assert_eq!(report.truncated_bytes, Some(written[5].len() as u64 + 1));
    assert_eq!(log.verify(0, &mut |_, _| {}).unwrap().entries, 6);
    log.checkpoint().unwrap();
    drop(log);

    // Now every line is covered by the checkpoint: damage to the last is tampering, and stays.
    let mut written = lines(dir.path());
    written[5] = written[5].replace("system", "intruder");
    common::write_lines(dir.path(), &written);
    let (log, report) = open(dir.path());
    assert_eq!(report.truncated_bytes, None);
    assert_eq!(report.problem.unwrap().seq, Some(5));
    assert_eq!(log.verify(0, &mut |_, _| {}).unwrap_err().seq, Some(5));
    assert_eq!(lines(dir.path()), written);
}
