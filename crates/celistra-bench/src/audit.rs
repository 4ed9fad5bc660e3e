//! Audit log phases, through `celistra-audit`'s public API on a temporary directory (no daemon):
//! append throughput with four writer threads until durable (group commit), one append + sync at
//! a time, verification of a million entries, proof latency, and disk bytes per entry.

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use celistra_audit::{AuditLog, NewEntry};
use serde_json::json;

use crate::{Report, phase_within};

const WRITERS: u64 = 4;
const ENTRIES: u64 = 1_000_000;
const ORIGIN: &str = "bench.celistra/audit";

/// A typical privileged action: an agent spawn with a short command line.
fn sample(i: u64) -> NewEntry {
    NewEntry {
        actor: "machine-secret".into(),
        action: "agent_spawned".into(),
        target: format!("ag-{:04x}", i % 4096),
        body: json!({"name": format!("worker-{i}"), "command": "python3 worker.py --queue jobs"}),
    }
}

fn per_second(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

pub(crate) async fn phases(report: &mut Report) -> Vec<Result<()>> {
    vec![
        phase_within(Duration::from_secs(300), "audit log", async {
            tokio::task::block_in_place(|| measure(report))
        })
        .await,
    ]
}

fn measure(report: &mut Report) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (log, _) = AuditLog::open(dir.path(), ORIGIN)?;
    let started = Instant::now();
    std::thread::scope(|scope| {
        for writer in 0..WRITERS {
            let log = &log;
            scope.spawn(move || {
                for i in (writer..ENTRIES).step_by(WRITERS as usize) {
                    log.append(sample(i));
                }
            });
        }
    });
    let appended = started.elapsed();
    log.sync()?;
    let durable = started.elapsed();
    let rate = per_second(ENTRIES, durable);
    report.add(
        "audit append, 4 writers, until durable (group commit)",
        ">= 50 000 entries/s",
        format!(
            "{rate:.0} entries/s ({ENTRIES} in {:.2} s; appends returned at {:.0}/s)",
            durable.as_secs_f64(),
            per_second(ENTRIES, appended)
        ),
        Some(rate >= 50_000.0),
    );

    let started = Instant::now();
    for i in 0..1000 {
        log.append(sample(i));
        log.sync()?;
    }
    report.add(
        "audit append + sync, one at a time",
        "none",
        format!("{:.0} µs each", started.elapsed().as_secs_f64() * 1e3),
        None,
    );
    log.checkpoint()?;
    let size = log.tree_size();
    let bytes = std::fs::metadata(dir.path().join("audit.log"))?.len();
    report.add(
        "audit disk bytes per entry",
        "none",
        format!("{:.0} bytes", bytes as f64 / size as f64),
        None,
    );

    let started = Instant::now();
    let verified = log
        .verify(0, &mut |_, _| {})
        .map_err(|tamper| anyhow!("{tamper}"))?;
    let took = started.elapsed();
    report.add(
        "audit verify of ~1 000 000 entries",
        "<= 2 s",
        format!(
            "{} entries in {:.2} s",
            verified.entries,
            took.as_secs_f64()
        ),
        Some(took <= Duration::from_secs(2)),
    );

    let rounds = 10_000u64;
    let started = Instant::now();
    for i in 0..rounds {
        log.inclusion_proof((i * 7919) % size, size)?;
    }
    let inclusion = started.elapsed();
    let started = Instant::now();
    for i in 0..rounds {
        log.consistency_proof(1 + (i * 7919) % (size - 1), size)?;
    }
    report.add(
        "audit proof latency at 1M entries (inclusion / consistency)",
        "none",
        format!(
            "{:.1} / {:.1} µs",
            inclusion.as_secs_f64() * 1e6 / rounds as f64,
            started.elapsed().as_secs_f64() * 1e6 / rounds as f64
        ),
        None,
    );
    drop(log);
    let started = Instant::now();
    let (_log, opened) = AuditLog::open(dir.path(), ORIGIN)?;
    report.add(
        "audit open of that log (scan, chain check, tree)",
        "none",
        format!(
            "{} entries in {:.2} s",
            opened.entries,
            started.elapsed().as_secs_f64()
        ),
        None,
    );
    Ok(())
}
