//! Cgroups on this machine: where the daemon's own cgroups are (v2 and v1, read from `/proc`), the
//! per-agent v2 cgroups that track every descendant of an agent so it is found and killed with it,
//! and the v1 instance cgroups that carry resource limits on hybrid and v1-only machines.

use std::ffi::CStr;
use std::fs;
use std::io::{self, ErrorKind};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::process::{Pid, PidfdFlags, Signal};
use serde::{Deserialize, Serialize};

use crate::Error;

/// The two cgroup interfaces; they differ in files and in how a cgroup is emptied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupVersion {
    V1,
    V2,
}

/// Where this process's own cgroups are, per hierarchy, as `/proc/self/cgroup` and
/// `/proc/self/mountinfo` tell.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupLayout {
    /// The own cgroup's directory in the unified (v2) hierarchy, if one is mounted.
    pub unified: Option<PathBuf>,
    /// Every mounted v1 hierarchy that has controllers, with the own cgroup's directory in it.
    pub v1: Vec<V1Hierarchy>,
}

/// One mounted cgroup v1 hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Hierarchy {
    /// Its controllers, as `/proc/self/cgroup` names them (`memory`, `pids`, `cpu`, `cpuacct`, …).
    pub controllers: Vec<String>,
    /// The directory of this process's own cgroup in it.
    pub own_dir: PathBuf,
}

impl CgroupLayout {
    /// Reads this process's layout from `/proc`.
    pub fn detect() -> io::Result<CgroupLayout> {
        Ok(CgroupLayout::parse(
            &fs::read_to_string("/proc/self/cgroup")?,
            &fs::read_to_string("/proc/self/mountinfo")?,
        ))
    }

    /// The layout described by the texts of `/proc/self/cgroup` and `/proc/self/mountinfo`.
    /// A hierarchy that is not mounted, or whose mount does not contain the own cgroup (a mount of
    /// a sub-tree from another cgroup namespace), is left out.
    pub fn parse(proc_cgroup: &str, mountinfo: &str) -> CgroupLayout {
        let mounts: Vec<CgroupMount> = mountinfo.lines().filter_map(CgroupMount::parse).collect();
        let mut layout = CgroupLayout::default();
        for line in proc_cgroup.lines() {
            let mut fields = line.splitn(3, ':');
            let (Some(_id), Some(controllers), Some(own)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            if controllers.is_empty() {
                if layout.unified.is_none() {
                    layout.unified = mounts.iter().filter(|m| m.v2).find_map(|m| m.dir_of(own));
                }
                continue;
            }
            let controllers: Vec<String> = controllers
                .split(',')
                .filter(|c| !c.starts_with("name="))
                .map(str::to_owned)
                .collect();
            if controllers.is_empty() {
                continue;
            }
            let own_dir = mounts
                .iter()
                .filter(|m| !m.v2 && controllers.iter().all(|c| m.options.contains(c)))
                .find_map(|m| m.dir_of(own));
            if let Some(own_dir) = own_dir {
                layout.v1.push(V1Hierarchy {
                    controllers,
                    own_dir,
                });
            }
        }
        layout
    }

    /// The v1 hierarchy that carries `controller`, if one is mounted.
    pub fn v1_hierarchy(&self, controller: &str) -> Option<&V1Hierarchy> {
        self.v1
            .iter()
            .find(|h| h.controllers.iter().any(|c| c == controller))
    }
}

/// A cgroup filesystem from one line of `/proc/self/mountinfo`.
struct CgroupMount {
    v2: bool,
    /// The cgroup of the hierarchy that is mounted (`/` unless a sub-tree is).
    root: PathBuf,
    mount_point: PathBuf,
    /// Superblock options; for v1 they include the controllers.
    options: Vec<String>,
}

impl CgroupMount {
    /// `36 25 0:32 / /sys/fs/cgroup/memory rw,relatime shared:15 - cgroup cgroup rw,memory`
    fn parse(line: &str) -> Option<CgroupMount> {
        let (mount, filesystem) = line.split_once(" - ")?;
        let mut mount = mount.split(' ');
        let root = unescape_mount_field(mount.nth(3)?);
        let mount_point = unescape_mount_field(mount.next()?);
        let mut filesystem = filesystem.split(' ');
        let v2 = match filesystem.next()? {
            "cgroup2" => true,
            "cgroup" => false,
            _ => return None,
        };
        let options = filesystem
            .nth(1)
            .unwrap_or_default()
            .split(',')
            .map(str::to_owned)
            .collect();
        Some(CgroupMount {
            v2,
            root: PathBuf::from(root),
            mount_point: PathBuf::from(mount_point),
            options,
        })
    }

    /// Where cgroup `path` of this hierarchy is, if this mount shows it.
    fn dir_of(&self, path: &str) -> Option<PathBuf> {
        let inside = Path::new(path).strip_prefix(&self.root).ok()?;
        // `join("")` would add a trailing slash.
        Some(if inside.as_os_str().is_empty() {
            self.mount_point.clone()
        } else {
            self.mount_point.join(inside)
        })
    }
}

/// Mountinfo escapes space, tab, newline and backslash as three octal digits (`\040`).
fn unescape_mount_field(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|digits| {
            let digits = std::str::from_utf8(digits).ok()?;
            u8::from_str_radix(digits, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// This daemon instance's cgroup, `<unified mount><own cgroup>/celistra-<tag>-<pid>`, holding one
/// child cgroup per agent. Killing it kills every agent process of the instance.
#[derive(Debug)]
pub struct CgroupRoot {
    dir: PathBuf,
}

/// One agent's cgroup.
#[derive(Debug)]
pub struct AgentCgroup {
    dir: PathBuf,
}

impl CgroupRoot {
    /// Creates (or, for a keeper that already holds agents, reuses) the cgroup of instance
    /// `instance` (the keeper's pid), after killing and removing cgroups that an earlier instance
    /// with the same `tag` left behind (it died without cleaning up). `None` when cgroup v2 is not
    /// usable here; the reason is logged.
    pub fn create(tag: &str, instance: u32) -> Option<CgroupRoot> {
        let parent = match own_unified_cgroup() {
            Ok(parent) => parent,
            Err(e) => {
                tracing::info!("per-agent cgroups are off: {e}");
                return None;
            }
        };
        remove_stale_instances(&parent, tag, instance, CgroupVersion::V2);
        let dir = instance_dir(&parent, tag, instance);
        match create_or_reuse(&dir) {
            // The root cgroup has no cgroup.kill, so its presence is checked on our own child.
            Ok(()) if dir.join("cgroup.kill").exists() => Some(CgroupRoot { dir }),
            Ok(()) => {
                let _ = fs::remove_dir(&dir);
                tracing::info!(
                    "per-agent cgroups are off: the kernel has no cgroup.kill (Linux 5.14 or later needed)"
                );
                None
            }
            Err(e) => {
                tracing::info!(
                    "per-agent cgroups are off: cannot create {}: {e}",
                    dir.display()
                );
                None
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Creates (or reuses) the cgroup of agent `id`.
    pub fn agent(&self, id: &str) -> Result<AgentCgroup, Error> {
        let dir = self.dir.join(id);
        create_or_reuse(&dir)?;
        Ok(AgentCgroup { dir })
    }

    /// The cgroup of agent `id` for a new run: made anew when the one of an earlier run is empty,
    /// else (stragglers still dying) reused. Linux 6.18 kills every child started with
    /// `CLONE_INTO_CGROUP` in a cgroup that `cgroup.kill` was ever written to (it compares the
    /// kill counts of the parent's cgroup and of the target), so a run starts in a fresh one
    /// where it can; the spawn notices the other case and joins by writing `cgroup.procs`.
    pub fn agent_for_run(&self, id: &str) -> Result<AgentCgroup, Error> {
        let dir = self.dir.join(id);
        match fs::remove_dir(&dir) {
            Ok(()) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::EBUSY)) => {}
            Err(source) => {
                return Err(Error::Cgroup {
                    path: dir.display().to_string(),
                    source,
                });
            }
        }
        create_or_reuse(&dir)?;
        Ok(AgentCgroup { dir })
    }

    /// Kills every process below this cgroup and removes it.
    pub fn destroy(&self) {
        destroy_instance(&self.dir, CgroupVersion::V2);
    }
}

#[cfg(test)]
impl CgroupRoot {
    /// A root at `dir`, which a test fills with the control files the kernel would show.
    pub(crate) fn at(dir: PathBuf) -> CgroupRoot {
        CgroupRoot { dir }
    }
}

impl AgentCgroup {
    pub(crate) fn path(&self) -> &Path {
        &self.dir
    }

    /// SIGKILLs every process in the cgroup.
    pub fn kill(&self) {
        kill_all(&self.dir, CgroupVersion::V2);
    }

    /// Kills what is left and removes the cgroup.
    pub fn remove(&self) {
        remove_cgroup(&self.dir, CgroupVersion::V2);
    }
}

/// This daemon instance's cgroup in one v1 hierarchy, `<own v1 cgroup>/celistra-<tag>-<pid>`, holding
/// the agents' cgroups of that hierarchy's controllers.
#[derive(Debug)]
pub(crate) struct V1Instance {
    pub(crate) controllers: Vec<String>,
    pub(crate) dir: PathBuf,
}

impl V1Instance {
    /// Creates the instance cgroup in `hierarchy`, after removing those an earlier instance with the
    /// same `tag` left behind.
    pub(crate) fn create(
        hierarchy: &V1Hierarchy,
        tag: &str,
        instance: u32,
    ) -> Result<V1Instance, Error> {
        remove_stale_instances(&hierarchy.own_dir, tag, instance, CgroupVersion::V1);
        let dir = instance_dir(&hierarchy.own_dir, tag, instance);
        create_or_reuse(&dir)?;
        Ok(V1Instance {
            controllers: hierarchy.controllers.clone(),
            dir,
        })
    }

    /// Kills every process below this cgroup and removes it.
    pub(crate) fn destroy(&self) {
        destroy_instance(&self.dir, CgroupVersion::V1);
    }
}

/// `<parent>/celistra-<tag>-<instance>`: the tag tells instances on different state directories
/// apart, the instance (the keeper's pid) tells the live one from the dead ones of the same tag.
fn instance_dir(parent: &Path, tag: &str, instance: u32) -> PathBuf {
    parent.join(format!("celistra-{tag}-{instance}"))
}

fn remove_stale_instances(parent: &Path, tag: &str, instance: u32, version: CgroupVersion) {
    let prefix = format!("celistra-{tag}-");
    let ours = instance_dir(parent, tag, instance);
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) && entry.path() != ours {
            tracing::warn!(cgroup = %entry.path().display(), "killing processes left by an earlier daemon");
            destroy_instance(&entry.path(), version);
        }
    }
}

pub(crate) fn create_or_reuse(dir: &Path) -> Result<(), Error> {
    match fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(Error::Cgroup {
            path: dir.display().to_string(),
            source,
        }),
    }
}

/// Writes one control file of cgroup `dir`.
pub(crate) fn write_control(dir: &Path, file: &str, value: &str) -> Result<(), Error> {
    let path = dir.join(file);
    fs::write(&path, value).map_err(|source| Error::Cgroup {
        path: path.display().to_string(),
        source,
    })
}

/// The `cgroup.procs` path of `dir`, ready for the child to join the cgroup without allocating.
pub(crate) fn procs_path_c(dir: &Path) -> io::Result<std::ffi::CString> {
    std::ffi::CString::new(dir.join("cgroup.procs").as_os_str().as_bytes()).map_err(|_| {
        io::Error::new(
            ErrorKind::InvalidInput,
            format!("cgroup path {} holds a NUL byte", dir.display()),
        )
    })
}

/// Moves the calling process into the cgroup whose `cgroup.procs` is `procs`. Only syscalls: safe
/// between fork and exec.
pub(crate) fn join_cgroup(procs: &CStr) -> io::Result<()> {
    let fd = rustix::fs::open(procs, rustix::fs::OFlags::WRONLY, rustix::fs::Mode::empty())?;
    rustix::io::write(&fd, b"0")?;
    Ok(())
}

/// The unified (v2) hierarchy's directory for this process's own cgroup, if writable.
fn own_unified_cgroup() -> io::Result<PathBuf> {
    let dir = CgroupLayout::detect()?.unified.ok_or_else(|| {
        io::Error::other(
            "no cgroup2 filesystem is mounted, or it does not show this process's cgroup",
        )
    })?;
    rustix::fs::access(&dir, rustix::fs::Access::WRITE_OK).map_err(io::Error::from)?;
    Ok(dir)
}

/// Kills every process in an instance cgroup and its agents' cgroups, and removes them all.
fn destroy_instance(dir: &Path, version: CgroupVersion) {
    kill_all(dir, version);
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten().filter(|e| e.path().is_dir()) {
            remove_cgroup(&entry.path(), version);
        }
    }
    remove_when_empty(dir);
}

/// Kills what is left in a leaf cgroup and removes it.
pub(crate) fn remove_cgroup(dir: &Path, version: CgroupVersion) {
    kill_all(dir, version);
    remove_when_empty(dir);
}

/// SIGKILLs every process in cgroup `dir` (v2: and below it).
pub(crate) fn kill_all(dir: &Path, version: CgroupVersion) {
    match version {
        // An empty cgroup is left alone: a write to cgroup.kill marks it for good (see
        // `CgroupRoot::agent_for_run`).
        CgroupVersion::V2 if !populated(dir) => {}
        CgroupVersion::V2 => {
            if let Err(e) = fs::write(dir.join("cgroup.kill"), "1")
                && e.kind() != ErrorKind::NotFound
            {
                tracing::warn!(cgroup = %dir.display(), "cgroup.kill failed: {e}");
            }
        }
        CgroupVersion::V1 => kill_listed(dir),
    }
}

/// Whether a v2 cgroup or one below it holds a live process (`populated` in `cgroup.events`);
/// true when that cannot be read.
fn populated(dir: &Path) -> bool {
    match fs::read_to_string(dir.join("cgroup.events")) {
        Ok(events) => !events.lines().any(|line| line == "populated 0"),
        Err(e) => e.kind() != ErrorKind::NotFound,
    }
}

/// v1 has no `cgroup.kill`: SIGKILLs the processes `cgroup.procs` lists, again until none is left,
/// since one may fork between a read and its kill. A pid is signalled through a pidfd opened while
/// it was still listed, so a pid reused by an unrelated process is never signalled.
fn kill_listed(dir: &Path) {
    let procs = dir.join("cgroup.procs");
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let listed = match read_pids(&procs) {
            Ok(pids) if pids.is_empty() => return,
            Ok(pids) => pids,
            Err(e) if e.kind() == ErrorKind::NotFound => return,
            Err(e) => {
                tracing::warn!(cgroup = %dir.display(), "cannot list processes to kill: {e}");
                return;
            }
        };
        let opened: Vec<_> = listed
            .iter()
            .filter_map(|&pid| {
                let fd = rustix::process::pidfd_open(Pid::from_raw(pid)?, PidfdFlags::empty());
                Some((pid, fd.ok()?))
            })
            .collect();
        let still_listed = read_pids(&procs).unwrap_or_default();
        for (pid, pidfd) in &opened {
            if still_listed.contains(pid) {
                let _ = rustix::process::pidfd_send_signal(pidfd, Signal::KILL);
            }
        }
        if Instant::now() >= deadline {
            tracing::warn!(cgroup = %dir.display(), "processes survive SIGKILL; giving up");
            return;
        }
        // Killed processes leave the list once they have exited.
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn read_pids(procs: &Path) -> io::Result<Vec<i32>> {
    Ok(fs::read_to_string(procs)?
        .split_whitespace()
        .filter_map(|pid| pid.parse().ok())
        .collect())
}

/// Removes an emptied cgroup. Killed processes leave it within microseconds once reaped; waiting is
/// bounded so a stuck process (uninterruptible sleep) costs at most a second and a warning.
fn remove_when_empty(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == ErrorKind::NotFound => return,
            Err(e) if Instant::now() >= deadline => {
                tracing::warn!(cgroup = %dir.display(), "cannot remove cgroup: {e}");
                return;
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine: v1 controllers plus a v2 tree without controllers, and a memory cgroup below
    /// the root.
    const HYBRID_CGROUP: &str = "\
9:name=systemd:/
8:pids:/
4:memory:/process_api/c1eb
2:cpuacct:/
1:cpu:/
0::/
";
    const HYBRID_MOUNTINFO: &str = "\
23 1 0:21 / /sys rw,nosuid,nodev,noexec,relatime - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn hybrid_layout_finds_v1_controllers_under_the_own_cgroup_and_the_unified_tree() {
        let layout = CgroupLayout::parse(HYBRID_CGROUP, HYBRID_MOUNTINFO);
        assert_eq!(
            layout.unified.as_deref(),
            Some(Path::new("/sys/fs/cgroup/unified"))
        );
        let dir = |c: &str| layout.v1_hierarchy(c).map(|h| h.own_dir.clone());
        assert_eq!(
            dir("memory"),
            Some(PathBuf::from("/sys/fs/cgroup/memory/process_api/c1eb"))
        );
        assert_eq!(dir("pids"), Some(PathBuf::from("/sys/fs/cgroup/pids")));
        assert_eq!(dir("cpu"), Some(PathBuf::from("/sys/fs/cgroup/cpu")));
        assert_eq!(dir("freezer"), None, "not mounted");
        assert_eq!(
            layout.v1.len(),
            4,
            "cpu, cpuacct, memory, pids; not name=systemd"
        );
    }

    #[test]
    fn pure_v2_layout_has_no_v1_hierarchies() {
        let layout = CgroupLayout::parse(
            "0::/system.slice/celistrad.service\n",
            "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n",
        );
        assert_eq!(
            layout,
            CgroupLayout {
                unified: Some(PathBuf::from(
                    "/sys/fs/cgroup/system.slice/celistrad.service"
                )),
                v1: vec![],
            }
        );
    }

    #[test]
    fn v1_only_layout_with_co_mounted_controllers_and_an_escaped_mount_point() {
        let layout = CgroupLayout::parse(
            "\
11:pids:/user.slice/user-1000.slice
4:cpu,cpuacct:/user.slice
3:memory:/user.slice/user-1000.slice
1:name=systemd:/user.slice/user-1000.slice/session-2.scope
",
            "\
25 18 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:8 - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/systemd rw,nosuid - cgroup cgroup rw,xattr,release_agent=/usr/lib/systemd/systemd-cgroups-agent,name=systemd
29 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,cpu,cpuacct
30 25 0:27 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,memory
37 25 0:34 / /sys/fs/cgroup/my\\040pids rw,nosuid,nodev,noexec,relatime shared:18 - cgroup cgroup rw,pids
",
        );
        assert_eq!(layout.unified, None);
        let cpu = layout.v1_hierarchy("cpu").expect("cpu is mounted");
        assert_eq!(cpu.controllers, ["cpu", "cpuacct"]);
        assert_eq!(
            cpu.own_dir,
            Path::new("/sys/fs/cgroup/cpu,cpuacct/user.slice")
        );
        assert_eq!(
            layout.v1_hierarchy("pids").map(|h| h.own_dir.clone()),
            Some(PathBuf::from(
                "/sys/fs/cgroup/my pids/user.slice/user-1000.slice"
            ))
        );
        assert!(layout.v1_hierarchy("memory").is_some());
    }

    #[test]
    fn a_mount_of_another_sub_tree_does_not_show_the_own_cgroup() {
        // A container sees its memory cgroup as `/` through a mount of `/docker/abc`, but this
        // process lives in `/elsewhere`: that mount cannot reach it.
        let layout = CgroupLayout::parse(
            "4:memory:/elsewhere\n",
            "35 31 0:32 /docker/abc /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n",
        );
        assert_eq!(layout.v1, vec![]);
        let layout = CgroupLayout::parse(
            "4:memory:/docker/abc/inner\n",
            "35 31 0:32 /docker/abc /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n",
        );
        assert_eq!(
            layout.v1_hierarchy("memory").map(|h| h.own_dir.clone()),
            Some(PathBuf::from("/sys/fs/cgroup/memory/inner"))
        );
    }
}
