//! Which agent a process belongs to: from its kernel audit session (one per run, see
//! `SpawnSpec::audit_login_uid`), or from its cgroup: agent cgroups are
//! `<instance cgroup>/<agent id>`, and `/proc/PID/cgroup` names a process's cgroup v2 path
//! relative to the unified mount.

use std::fs;
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

/// The agent id of process `pid` when it lives in (or below) an agent cgroup of the instance
/// cgroup `instance_cgroup` (a path under the cgroup2 mount, as `CgroupRoot::path` gives it).
/// `None` for other processes, exited ones, or without cgroup v2.
pub fn agent_of_pid(pid: u32, instance_cgroup: &Path) -> Option<String> {
    let instance = instance_cgroup.strip_prefix(unified_mount()?).ok()?;
    let cgroups = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    agent_in(&cgroups, instance)
}

/// The audit session of process `pid`; `None` when it has none (or is gone).
pub fn audit_session_of(pid: u32) -> Option<u32> {
    fs::read_to_string(format!("/proc/{pid}/sessionid"))
        .ok()?
        .trim()
        .parse::<u32>()
        .ok()
        .filter(|session| *session != u32::MAX)
}

/// The cgroup2 mount point, read once: the daemon never sees it move.
fn unified_mount() -> Option<&'static Path> {
    static MOUNT: OnceLock<Option<PathBuf>> = OnceLock::new();
    MOUNT
        .get_or_init(|| cgroup2_mount(&fs::read_to_string("/proc/self/mountinfo").ok()?))
        .as_deref()
}

/// The mount point of the first cgroup2 filesystem in a `mountinfo` text.
fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (mount, filesystem) = line.split_once(" - ")?;
        filesystem
            .starts_with("cgroup2 ")
            .then(|| mount.split(' ').nth(4).map(PathBuf::from))?
    })
}

/// The first path component below `instance` (relative to the cgroup2 mount) of the unified
/// (`0::`) line of a `/proc/PID/cgroup` text.
fn agent_in(proc_cgroup: &str, instance: &Path) -> Option<String> {
    let path = proc_cgroup
        .lines()
        .find_map(|line| line.strip_prefix("0::"))?;
    let below = Path::new(path)
        .strip_prefix("/")
        .ok()?
        .strip_prefix(instance)
        .ok()?;
    match below.components().next()? {
        Component::Normal(agent) => agent.to_str().map(str::to_owned),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "12:pids:/user.slice\n\
                          4:memory:/user.slice\n\
                          1:name=systemd:/user.slice\n\
                          0::/srv/celistra-3fa2-881/ag-k2x9/worker\n";

    #[test]
    fn the_agent_below_the_instance() {
        let instance = Path::new("srv/celistra-3fa2-881");
        assert_eq!(agent_in(HYBRID, instance).as_deref(), Some("ag-k2x9"));
        let direct = "0::/srv/celistra-3fa2-881/ag-7h3q\n";
        assert_eq!(agent_in(direct, instance).as_deref(), Some("ag-7h3q"));
    }

    #[test]
    fn other_cgroups_have_no_agent() {
        let instance = Path::new("srv/celistra-3fa2-881");
        for other in [
            "0::/srv/celistra-3fa2-881\n",
            "0::/srv/celistra-3fa2-8810/ag-k2x9\n",
            "0::/srv/celistra-3fa2-999/ag-k2x9\n",
            "0::/\n",
            "4:memory:/srv/celistra-3fa2-881/ag-k2x9\n",
            "0::srv/celistra-3fa2-881/ag-k2x9\n",
            "",
        ] {
            assert_eq!(agent_in(other, instance), None, "{other:?}");
        }
    }

    #[test]
    fn an_instance_at_the_root_of_the_hierarchy() {
        let instance = Path::new("celistra-3fa2-881");
        assert_eq!(
            agent_in("0::/celistra-3fa2-881/ag-k2x9\n", instance).as_deref(),
            Some("ag-k2x9")
        );
    }

    #[test]
    fn finds_the_cgroup2_mount_among_v1_ones() {
        let mountinfo = "\
            25 30 0:22 / /sys rw,nosuid - sysfs sysfs rw\n\
            31 25 0:26 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
            32 25 0:27 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            cgroup2_mount(mountinfo),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(cgroup2_mount("garbage\n - cgroup2 x\n"), None);
    }

    /// Against this machine: a process moved into `<instance>/ag-test` belongs to `ag-test`.
    #[test]
    fn a_process_in_an_agent_cgroup() {
        let Some(mount) = unified_mount() else {
            return;
        };
        let instance = mount.join(format!("celistra-owner-test-{}", std::process::id()));
        let agent = instance.join("ag-test");
        if fs::create_dir_all(&agent).is_err() {
            return; // no writable cgroup2 hierarchy here
        }
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let moved = fs::write(agent.join("cgroup.procs"), child.id().to_string());
        let found = agent_of_pid(child.id(), &instance);
        let own = agent_of_pid(std::process::id(), &instance);
        let _ = child.kill();
        let _ = child.wait();
        let _ = fs::remove_dir(&agent);
        let _ = fs::remove_dir(&instance);
        moved.expect("move the child into the agent cgroup");
        assert_eq!(found.as_deref(), Some("ag-test"));
        assert_eq!(own, None);
    }
}
