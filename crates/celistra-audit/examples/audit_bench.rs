//! Measures the audit log's issue-6 figures through its public API: append throughput with four
//! writer threads (group commit, durable at the end), opening and verifying a log of N entries,
//! proof latency, and disk bytes per entry.
//!
//! `cargo run --release -p celistra-audit --example audit_bench -- [N]` (N defaults to 1 000 000;
//! the log goes to a temporary directory that is removed at the end).

use std::time::{Duration, Instant};

use celistra_audit::{AuditLog, NewEntry};
use serde_json::json;

const WRITERS: u64 = 4;

/// A typical privileged action: an agent spawn with a short command line.
fn sample(i: u64) -> NewEntry {
    NewEntry {
        actor: "ops".into(),
        action: "agent_spawn".into(),
        target: format!("ag-{:04x}", i % 4096),
        body: json!({"name": format!("worker-{i}"), "command": "python3 worker.py --queue jobs", "restart": "on-failure"}),
    }
}

fn per_second(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let entries: u64 = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir()?;
    let (log, _) = AuditLog::open(dir.path(), "bench.celistra/audit")?;

    let started = Instant::now();
    std::thread::scope(|scope| {
        for writer in 0..WRITERS {
            let log = &log;
            scope.spawn(move || {
                for i in (writer..entries).step_by(WRITERS as usize) {
                    log.append(sample(i));
                }
            });
        }
    });
    let appended = started.elapsed();
    log.sync()?;
    let durable = started.elapsed();
    println!(
        "append, {WRITERS} writers: {entries} entries, {:.0} appends/s returned, {:.0} entries/s durable ({:.2} s), {:.2} µs per append call",
        per_second(entries, appended),
        per_second(entries, durable),
        durable.as_secs_f64(),
        appended.as_secs_f64() * 1e6 * WRITERS as f64 / entries as f64,
    );

    let started = Instant::now();
    for i in 0..1000 {
        log.append(sample(i));
        log.sync()?;
    }
    println!(
        "append + sync one at a time: {:.0} µs each",
        started.elapsed().as_secs_f64() * 1e6 / 1000.0
    );
    log.checkpoint()?;
    let size = log.tree_size();
    let bytes = std::fs::metadata(dir.path().join("audit.log"))?.len();
    println!(
        "disk: {bytes} bytes, {:.0} bytes per entry",
        bytes as f64 / size as f64
    );

    let started = Instant::now();
    let verified = log.verify(0, &mut |_, _| {}).map_err(|t| t.to_string())?;
    println!(
        "verify: {} entries in {:.2} s ({:.0} entries/s)",
        verified.entries,
        started.elapsed().as_secs_f64(),
        per_second(verified.entries, started.elapsed())
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
    println!(
        "proofs at size {size}: inclusion {:.1} µs, consistency {:.1} µs",
        inclusion.as_secs_f64() * 1e6 / rounds as f64,
        started.elapsed().as_secs_f64() * 1e6 / rounds as f64
    );
    drop(log);

    let started = Instant::now();
    let (_log, report) = AuditLog::open(dir.path(), "bench.celistra/audit")?;
    println!(
        "open (scan, chain check, tree): {} entries in {:.2} s",
        report.entries,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
