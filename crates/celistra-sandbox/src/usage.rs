//! What agents use, read from the kernel: CPU time and memory of a cgroup (`cpu.stat`,
//! `memory.current`), else of a process tree from `/proc` (one walk of `/proc` serves every agent).
//! The parsers are pure and tested; reading never fails loudly: what cannot be read is `None`.

use std::collections::HashMap;
use std::path::Path;

/// Clock ticks per second of `/proc/<pid>/stat` times (`USER_HZ`, fixed at 100 on Linux).
const USER_HZ: u64 = 100;

/// CPU time and memory of an agent's processes, at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceUse {
    /// CPU time used so far (user and system), in microseconds.
    pub cpu_usec: u64,
    /// Memory in use, in bytes: the cgroup's `memory.current`, or the tree's resident set (the sum
    /// of each process's RSS, so pages shared between them count once per process, as `ps` and
    /// PM2 count them).
    pub memory_bytes: u64,
}

/// Where a reading came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageScope {
    /// The agent's cgroup: every process it started.
    Cgroup,
    /// Its process tree as `/proc` shows it: the leader and its descendants (a process that left
    /// the tree, reparented to the subreaper, is not counted).
    ProcessTree,
}

impl UsageScope {
    /// `cgroup` or `process`, as the API names it.
    pub fn as_str(self) -> &'static str {
        match self {
            UsageScope::Cgroup => "cgroup",
            UsageScope::ProcessTree => "process",
        }
    }
}

/// The use of the cgroup at `dir` (cgroup v2), if its files can be read.
pub fn cgroup_use(dir: &Path) -> Option<ResourceUse> {
    let cpu = std::fs::read_to_string(dir.join("cpu.stat")).ok()?;
    let memory = std::fs::read_to_string(dir.join("memory.current")).ok()?;
    Some(ResourceUse {
        cpu_usec: parse_cpu_stat(&cpu)?,
        memory_bytes: memory.trim().parse().ok()?,
    })
}

/// Every process of the machine at one moment, by parent: the trees of many agents from one walk
/// of `/proc`.
#[derive(Debug, Default)]
pub struct ProcessTable {
    own: HashMap<u32, ResourceUse>,
    children: HashMap<u32, Vec<u32>>,
}

impl ProcessTable {
    /// Reads `/proc/<pid>/stat` of every process (one read each). Processes that end meanwhile
    /// are left out.
    pub fn scan() -> ProcessTable {
        let page_size = rustix::param::page_size() as u64;
        let mut table = ProcessTable::default();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return table;
        };
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            if let Some(stat) = parse_proc_stat(&text, page_size) {
                table.insert(pid, stat);
            }
        }
        table
    }

    fn insert(&mut self, pid: u32, stat: ProcStat) {
        self.own.insert(pid, stat.usage);
        self.children.entry(stat.ppid).or_default().push(pid);
    }

    /// The use of `pid` and all its descendants; `None` when `pid` is not running.
    pub fn tree_use(&self, pid: u32) -> Option<ResourceUse> {
        let mut total = *self.own.get(&pid)?;
        let mut pending: Vec<u32> = self.children.get(&pid).cloned().unwrap_or_default();
        while let Some(child) = pending.pop() {
            if let Some(usage) = self.own.get(&child) {
                total.cpu_usec += usage.cpu_usec;
                total.memory_bytes += usage.memory_bytes;
            }
            if let Some(grandchildren) = self.children.get(&child) {
                pending.extend_from_slice(grandchildren);
            }
        }
        Some(total)
    }
}

/// One process's line of `/proc/<pid>/stat`, the fields we use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProcStat {
    ppid: u32,
    usage: ResourceUse,
}

/// `usage_usec` of a cgroup v2 `cpu.stat`.
fn parse_cpu_stat(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("usage_usec "))
        .and_then(|v| v.trim().parse().ok())
}

/// The parent, utime + stime (in microseconds) and RSS (pages of `page_size` bytes) of a
/// `/proc/<pid>/stat` line. The command name (field 2) may hold spaces and parentheses, so fields
/// are counted from its last `)`.
fn parse_proc_stat(text: &str, page_size: u64) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name, field 3 (state) is at 0: ppid (4) is at 1, utime (14) and stime (15) at 11
    // and 12, rss (24) at 21.
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let rss_pages: u64 = fields.get(21)?.parse().ok()?;
    Some(ProcStat {
        ppid,
        usage: ResourceUse {
            cpu_usec: (utime + stime) * (1_000_000 / USER_HZ),
            memory_bytes: rss_pages * page_size,
        },
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
        let stat = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 100 1000 200 18446744073709551615";
        assert_eq!(
            parse_proc_stat(stat, 4096),
            Some(ProcStat {
                ppid: 1,
                usage: ResourceUse {
                    cpu_usec: 300 * 10_000,
                    memory_bytes: 200 * 4096,
                },
            })
        );
        assert_eq!(parse_proc_stat("garbage", 4096), None);
    }

    #[test]
    fn a_tree_sums_the_leader_and_every_descendant_but_not_its_parent_or_siblings() {
        let mut table = ProcessTable::default();
        let process = |ppid, cpu_usec, memory_bytes| ProcStat {
            ppid,
            usage: ResourceUse {
                cpu_usec,
                memory_bytes,
            },
        };
        table.insert(1, process(0, 1, 1));
        table.insert(10, process(1, 100, 1000));
        table.insert(11, process(10, 20, 200));
        table.insert(12, process(11, 3, 30));
        table.insert(20, process(1, 5000, 50_000));
        assert_eq!(
            table.tree_use(10),
            Some(ResourceUse {
                cpu_usec: 123,
                memory_bytes: 1230
            })
        );
        assert_eq!(table.tree_use(99), None);
    }

    #[test]
    fn reads_this_process_from_proc() {
        let table = ProcessTable::scan();
        let own = table.tree_use(std::process::id()).expect("own usage");
        assert!(own.memory_bytes > 0);
    }
}
