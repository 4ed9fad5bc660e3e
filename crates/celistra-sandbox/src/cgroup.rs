//! Per-agent cgroups (v2) so that every descendant of an agent, including ones that left its process
//! group or session, is found and killed with it. Used when the unified hierarchy is mounted and
//! writable; otherwise agents are tracked by process group alone.

use std::ffi::CString;
use std::fs;
use std::io::{self, ErrorKind};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::Error;

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
    /// Creates this instance's cgroup, after killing and removing cgroups that an earlier instance
    /// with the same `tag` left behind (it died without cleaning up). `None` when cgroup v2 is not
    /// usable here; the reason is logged.
    pub fn create(tag: &str) -> Option<CgroupRoot> {
        let parent = match own_unified_cgroup() {
            Ok(parent) => parent,
            Err(e) => {
                tracing::info!("per-agent cgroups are off: {e}");
                return None;
            }
        };
        let prefix = format!("celistra-{tag}-");
        if let Ok(entries) = fs::read_dir(&parent) {
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().starts_with(&prefix) {
                    let stale = CgroupRoot { dir: entry.path() };
                    tracing::warn!(cgroup = %stale.dir.display(), "killing processes left by an earlier daemon");
                    stale.destroy();
                }
            }
        }
        let dir = parent.join(format!("{prefix}{}", std::process::id()));
        match fs::create_dir(&dir) {
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
        match fs::create_dir(&dir) {
            Ok(()) => Ok(AgentCgroup { dir }),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(AgentCgroup { dir }),
            Err(source) => Err(Error::Cgroup {
                path: dir.display().to_string(),
                source,
            }),
        }
    }

    /// Kills every process below this cgroup and removes it.
    pub fn destroy(&self) {
        kill_tree(&self.dir);
        if let Ok(entries) = fs::read_dir(&self.dir) {
            for entry in entries.flatten().filter(|e| e.path().is_dir()) {
                AgentCgroup { dir: entry.path() }.remove();
            }
        }
        remove_when_empty(&self.dir);
    }
}

impl AgentCgroup {
    pub(crate) fn procs_path_c(&self) -> CString {
        CString::new(self.dir.join("cgroup.procs").as_os_str().as_bytes())
            .expect("cgroup paths are built from NUL-free parts")
    }

    /// SIGKILLs every process in the cgroup.
    pub fn kill(&self) {
        kill_tree(&self.dir);
    }

    /// Kills what is left and removes the cgroup.
    pub fn remove(&self) {
        kill_tree(&self.dir);
        remove_when_empty(&self.dir);
    }
}

/// The unified (v2) hierarchy's directory for this process's own cgroup, if writable.
fn own_unified_cgroup() -> io::Result<PathBuf> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
    let mount = mountinfo
        .lines()
        .find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            right
                .starts_with("cgroup2 ")
                .then(|| left.split(' ').nth(4).map(PathBuf::from))?
        })
        .ok_or_else(|| io::Error::other("no cgroup2 filesystem is mounted"))?;
    let own = fs::read_to_string("/proc/self/cgroup")?
        .lines()
        .find_map(|line| line.strip_prefix("0::").map(str::to_owned))
        .ok_or_else(|| io::Error::other("this process has no cgroup v2 path"))?;
    let dir = mount.join(own.trim_start_matches('/'));
    rustix::fs::access(&dir, rustix::fs::Access::WRITE_OK).map_err(io::Error::from)?;
    Ok(dir)
}

fn kill_tree(dir: &Path) {
    if let Err(e) = fs::write(dir.join("cgroup.kill"), "1")
        && e.kind() != ErrorKind::NotFound
    {
        tracing::warn!(cgroup = %dir.display(), "cgroup.kill failed: {e}");
    }
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
