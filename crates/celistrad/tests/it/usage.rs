//! Resource use on a real daemon: agents' CPU and memory sampled (`ls`, `status`, the API), an
//! agent that really allocates past its `--max-memory` restarted (recorded as an event, an audit
//! entry and a note in its log) while one under its threshold is left alone; and the daemon's own
//! use when it has no agent: none of its threads wakes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use celistra_proto::{AgentSpec, AgentState, AuditQuery, EventKind};

use crate::{Daemon, spec};

/// A perl program that allocates (and writes) `step_mib` MiB every 300 ms, `steps` times, then
/// sleeps.
fn allocator(step_mib: u32, steps: u32) -> String {
    format!(
        "exec perl -e '$|=1; my @held; for my $i (1..{steps}) {{ push @held, \"x\" x ({step_mib} << 20); \
         print \"holding \", $i * {step_mib}, \" MiB\\n\"; select(undef, undef, undef, 0.3) }} sleep 600'"
    )
}

#[tokio::test]
async fn an_agent_whose_memory_stays_above_max_memory_is_restarted_and_one_under_it_is_not() {
    let daemon = Daemon::start().await;
    // Under its threshold: 3 × 8 MiB held, restarted only above 200 MiB. Spawned with the CLI.
    let spawned = daemon.ctl(&[
        "spawn",
        "--name",
        "modest",
        "--workspace",
        &daemon.work.path().display().to_string(),
        "--max-memory",
        "200M",
        "--",
        &allocator(8, 3),
    ]);
    assert!(spawned.status.success(), "{spawned:?}");
    // Above its threshold: 16 MiB more every 300 ms, past 48 MiB within a second.
    let greedy = daemon
        .spawn(AgentSpec {
            memory_restart: Some(48 << 20),
            ..spec("greedy", &allocator(16, 12))
        })
        .await;
    let events = daemon
        .events_until(0, |e| {
            matches!(&e.kind, EventKind::AgentMemoryRestart { agent_id, .. } if *agent_id == greedy.id)
        })
        .await;
    let Some(EventKind::AgentMemoryRestart {
        memory_bytes,
        limit_bytes,
        ..
    }) = events.last().map(|e| &e.kind)
    else {
        unreachable!("events_until ends on the memory restart")
    };
    assert_eq!(*limit_bytes, 48 << 20);
    assert!(*memory_bytes > 48 << 20, "{memory_bytes}");
    let restarted = daemon
        .wait_agent("greedy", "restarted", |a| {
            a.restarts >= 1 && a.run >= 2 && a.state == AgentState::Running
        })
        .await;
    assert!(restarted.last_error.is_none(), "{restarted:?}");

    // Why is on record: the audit log (by the actor `memory`) and the agent's log.
    let audit = daemon
        .client
        .list_audit(&AuditQuery {
            agent: Some(greedy.id.clone()),
            limit: Some(100),
            ..AuditQuery::default()
        })
        .await
        .expect("audit");
    let memory_entries: Vec<_> = audit
        .entries
        .iter()
        .filter(|e| e.actor == "memory")
        .map(|e| e.action.as_str())
        .collect();
    assert!(
        memory_entries.contains(&"agent_memory_restart")
            && memory_entries.contains(&"agent_start_requested"),
        "{:?}",
        audit.entries
    );
    let logs = daemon.ctl(&["logs", "greedy"]);
    let logs = String::from_utf8_lossy(&logs.stdout);
    assert!(
        logs.contains("stayed above --max-memory 48.0 MiB"),
        "{logs}"
    );

    // The modest agent is sampled (so it was checked) and never restarted.
    let modest = daemon
        .wait_agent("modest", "sampled holding its 24 MiB", |a| {
            a.usage.is_some_and(|u| u.memory_bytes >= 24 << 20)
        })
        .await;
    let checked_until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < checked_until {
        assert_eq!(daemon.agent("modest").await.restarts, 0);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(modest.run, 1);

    // `ls` and `status` show CPU and memory like `pm2 ls`.
    let ls = daemon.ctl(&["ls"]);
    let ls = String::from_utf8_lossy(&ls.stdout);
    let header = ls.lines().next().unwrap_or_default();
    assert!(header.contains("CPU") && header.contains("MEM"), "{ls}");
    let modest_line = ls
        .lines()
        .find(|l| l.contains("modest"))
        .unwrap_or_default();
    assert!(
        modest_line.contains(" MiB") && modest_line.contains('%'),
        "{ls}"
    );
    let status = daemon.ctl(&["status", "modest"]);
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.contains("memory:") && status.contains(" MiB"),
        "{status}"
    );

    // `set --no-max-memory` takes the threshold away; a size that is no size is a usage error.
    let cleared = daemon.ctl(&["set", "greedy", "--no-max-memory"]);
    assert!(cleared.status.success(), "{cleared:?}");
    let spec = daemon.client.get_agent_spec("greedy").await.expect("spec");
    assert_eq!(spec.memory_restart, None);
    let bad = daemon.ctl(&["set", "greedy", "--max-memory", "lots"]);
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
}

#[tokio::test]
async fn top_without_a_terminal_is_a_usage_error_that_points_to_ls() {
    let daemon = Daemon::start().await;
    let top = daemon.ctl(&["top"]);
    assert_eq!(top.status.code(), Some(2), "{top:?}");
    let said = String::from_utf8_lossy(&top.stderr);
    assert!(
        said.contains("terminal") && said.contains("ctl ls"),
        "{said}"
    );
}

/// How often each thread of process `pid` was scheduled off the CPU (voluntarily or not), by
/// thread id: a thread that sleeps without waking keeps its count.
fn switches_by_thread(pid: u32) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return counts;
    };
    for task in tasks.flatten() {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        let switches = status
            .lines()
            .filter(|line| line.contains("ctxt_switches:"))
            .filter_map(|line| line.split_whitespace().last()?.parse::<u64>().ok())
            .sum();
        counts.insert(task.file_name().to_string_lossy().into_owned(), switches);
    }
    counts
}

/// Waits (bounded) for a window of two seconds in which no thread of `pid` ran.
fn wait_until_asleep(pid: u32, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let before = switches_by_thread(pid);
        std::thread::sleep(Duration::from_secs(2));
        let after = switches_by_thread(pid);
        if before == after {
            return;
        }
        let woke: Vec<_> = after
            .iter()
            .filter(|(tid, n)| before.get(*tid) != Some(n))
            .map(|(tid, _)| std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")))
            .filter_map(Result::ok)
            .collect();
        assert!(
            Instant::now() < deadline,
            "{what}: threads kept waking: {woke:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_daemon_without_agents_sleeps_and_wakes_to_sample_a_new_one() {
    let daemon = Daemon::start().await;
    let pid = daemon.pid();
    // The 1 s activity look, the 2 s sampler, the history's maintenance and WAL copies used to
    // wake it all the time; with nothing to supervise nothing is due.
    tokio::task::block_in_place(|| wait_until_asleep(pid, "a daemon without agents"));
    // An agent wakes the sampler: its memory is read.
    daemon.spawn(spec("sampled", "exec sleep 600")).await;
    daemon
        .wait_agent("sampled", "sampled", |a| a.usage.is_some())
        .await;
    // Removed, the daemon sleeps again.
    let removed = daemon.ctl(&["rm", "sampled"]);
    assert!(removed.status.success(), "{removed:?}");
    tokio::task::block_in_place(|| wait_until_asleep(pid, "a daemon whose agent was removed"));
}
