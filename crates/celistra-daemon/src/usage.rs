//! Agents' CPU time and memory: from each agent's cgroup (`cpu.stat`, `memory.current`) when the
//! daemon has per-agent cgroups, else from the leader process's `/proc/<pid>/stat` and `status`.
//! The parsers are pure and tested; reading never fails loudly: an unreadable agent is left out.

use std::path::Path;

use celistra_proto::AgentUsage;

/// Clock ticks per second of `/proc/<pid>/stat` times (`USER_HZ`, fixed at 100 on Linux).
const USER_HZ: u64 = 100;

/// `usage_usec` of a cgroup v2 `cpu.stat`.
pub(crate) fn parse_cpu_stat(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("usage_usec "))
        .and_then(|v| v.trim().parse().ok())
}

/// utime + stime of `/proc/<pid>/stat`, in microseconds. The command name (field 2) may hold
/// spaces and parentheses, so fields are counted from its last `)`.
pub(crate) fn parse_proc_stat(text: &str) -> Option<u64> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) and stime (15) are at 11 and 12 here.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) * (1_000_000 / USER_HZ))
}

/// `VmRSS` of `/proc/<pid>/status`, in bytes.
pub(crate) fn parse_status_rss(text: &str) -> Option<u64> {
    let line = text.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let kib: u64 = line.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}

/// The usage of agent `agent_id`, whose cgroup is `cgroup` (if any) and leader `pid`.
pub(crate) fn read(
    agent_id: &str,
    cgroup: Option<&Path>,
    pid: u32,
    time_ms: u64,
) -> Option<AgentUsage> {
    if let Some(dir) = cgroup {
        let cpu = std::fs::read_to_string(dir.join("cpu.stat"))
            .ok()
            .and_then(|t| parse_cpu_stat(&t));
        let memory = std::fs::read_to_string(dir.join("memory.current"))
            .ok()
            .and_then(|t| t.trim().parse().ok());
        if let (Some(cpu_usec), Some(memory_bytes)) = (cpu, memory) {
            return Some(AgentUsage {
                agent_id: agent_id.to_owned(),
                cpu_usec,
                memory_bytes,
                scope: "cgroup".into(),
                time_ms,
            });
        }
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(AgentUsage {
        agent_id: agent_id.to_owned(),
        cpu_usec: parse_proc_stat(&stat)?,
        memory_bytes: parse_status_rss(&status).unwrap_or(0),
        scope: "process".into(),
        time_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cgroup_and_proc_files() {
        assert_eq!(
            parse_cpu_stat("usage_usec 123456\nuser_usec 100000\nsystem_usec 23456\n"),
            Some(123_456)
        );
        assert_eq!(parse_cpu_stat("user_usec 1\n"), None);
        let stat = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 100 1000 200";
        assert_eq!(parse_proc_stat(stat), Some(300 * 10_000));
        assert_eq!(parse_proc_stat("garbage"), None);
        assert_eq!(
            parse_status_rss("Name:\tsh\nVmRSS:\t    2048 kB\n"),
            Some(2048 * 1024)
        );
        assert_eq!(parse_status_rss("Name:\tsh\n"), None);
    }

    #[test]
    fn reads_this_process() {
        let usage = read("ag-self", None, std::process::id(), 1).expect("own usage");
        assert!(usage.memory_bytes > 0);
        assert_eq!(usage.scope, "process");
    }
}
