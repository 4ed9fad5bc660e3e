//! Starting a child process with `clone3`: the kernel places it in its cgroup before it runs
//! (`CLONE_INTO_CGROUP`) and hands back its pidfd; the child makes only system calls until it
//! executes its program, and reports a failure through a close-on-exec pipe.
//!
//! Why not `std::process::Command`: a child it forks must join its cgroup by writing
//! `cgroup.procs`, which takes the cgroup threadgroup lock for writing and waits out an RCU grace
//! period: 8-20 ms of every spawn on this machine, the largest part of a restart (issue 18).

use std::ffi::{CString, c_char};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::process::{Pid, PidfdFlags};

/// `CLONE_PIDFD`: the kernel writes a pidfd of the child into `CloneArgs::pidfd`.
const CLONE_PIDFD: u64 = 0x1000;
/// `CLONE_INTO_CGROUP` (Linux 5.7): the child starts in the cgroup whose directory `cgroup` names.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `struct clone_args` of `clone3(2)`, as of Linux 5.7.
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// A program with its arguments and environment as `execve` takes them, made before the fork so
/// the child allocates nothing.
pub(crate) struct Image {
    program: CString,
    // The pointer arrays below point into these.
    _strings: Vec<CString>,
    argv: Vec<*const c_char>,
    envp: Vec<*const c_char>,
}

impl Image {
    /// `program` (a bare name is looked up in the `PATH` of `env`, else this process's, as a shell
    /// would) with `args` after it and exactly `env`.
    pub(crate) fn new(
        program: &Path,
        args: &[String],
        env: &[(String, String)],
    ) -> io::Result<Image> {
        let resolved = resolve(program, env)?;
        let c = |bytes: &[u8]| {
            CString::new(bytes).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "an argument or environment variable holds a NUL byte",
                )
            })
        };
        let program_c = c(resolved.as_os_str().as_bytes())?;
        let mut strings = Vec::with_capacity(1 + args.len() + env.len());
        strings.push(c(program.as_os_str().as_bytes())?);
        for arg in args {
            strings.push(c(arg.as_bytes())?);
        }
        for (key, value) in env {
            strings.push(c(format!("{key}={value}").as_bytes())?);
        }
        let pointers = |range: std::ops::Range<usize>| {
            strings[range]
                .iter()
                .map(|s| s.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect::<Vec<_>>()
        };
        let argv = pointers(0..1 + args.len());
        let envp = pointers(1 + args.len()..strings.len());
        Ok(Image {
            program: program_c,
            _strings: strings,
            argv,
            envp,
        })
    }
}

/// Where `program` is: itself when it names a path, else the first executable file of that name in
/// `PATH` (from `env`, else this process's, else the usual directories). `NotFound` when none is.
fn resolve(program: &Path, env: &[(String, String)]) -> io::Result<PathBuf> {
    if program.as_os_str().as_bytes().contains(&b'/') {
        return Ok(program.to_path_buf());
    }
    let path = env
        .iter()
        .find(|(key, _)| key == "PATH")
        .map(|(_, value)| value.clone())
        .or_else(|| std::env::var("PATH").ok())
        .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".to_owned());
    path.split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(program))
        .find(|candidate| {
            candidate.is_file()
                && rustix::fs::access(candidate, rustix::fs::Access::EXEC_OK).is_ok()
        })
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} is not in PATH ({path})", program.display()),
            )
        })
}

/// A cgroup directory opened the way `CLONE_INTO_CGROUP` takes it.
pub(crate) fn open_cgroup(dir: &Path) -> io::Result<OwnedFd> {
    rustix::fs::open(
        dir,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(io::Error::from)
}

/// A started child: its pid and a pidfd to wait for it with.
pub(crate) struct Forked {
    pub(crate) pid: u32,
    pub(crate) pidfd: OwnedFd,
}

/// Starts a child that runs `setup` and then executes `image`, in new `namespaces` (`CLONE_NEW*`
/// flags, 0 for none). With `cgroup` (a directory of the
/// v2 hierarchy) the kernel places the child there before it runs, and `setup` is told so
/// (`true`); where it cannot (a kernel before 5.7, `clone3` refused by a seccomp filter, or a
/// child killed at birth: see [`crate::CgroupRoot::agent_for_run`]), `setup` is told `false` and
/// must join the cgroup itself.
///
/// `setup` runs in a copy of this possibly multi-threaded process: it may make system calls on data
/// prepared before, and nothing else (no allocation, no lock). An error it returns, or a failed
/// `execve`, becomes this function's error once the child is reaped.
pub(crate) fn spawn(
    cgroup: Option<BorrowedFd<'_>>,
    namespaces: u64,
    image: &Image,
    setup: &mut dyn FnMut(bool) -> io::Result<()>,
) -> io::Result<Forked> {
    if cgroup.is_some() {
        match start(cgroup, namespaces, image, setup) {
            Ok(Start::Running(forked)) => return Ok(forked),
            Ok(Start::Failed(error)) => return Err(error),
            // Placed by the kernel and killed there before running, or not placed at all.
            Ok(Start::KilledAtBirth) => {}
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => return Err(e),
            Err(_) => {}
        }
    }
    match start(None, namespaces, image, setup)? {
        Start::Running(forked) => Ok(forked),
        Start::Failed(error) => Err(error),
        Start::KilledAtBirth => Err(io::Error::other(
            "the new process was killed before it ran its first instruction",
        )),
    }
}

/// How one attempt to start a child ended.
enum Start {
    /// It executed its program.
    Running(Forked),
    /// `setup` or `execve` failed; the child is reaped.
    Failed(io::Error),
    /// It died before it ran (it never said it started); the child is reaped.
    KilledAtBirth,
}

/// The byte a child writes first, so that a child killed before it ran is told apart from one
/// that executed its program (both close the pipe without an error).
const STARTED: u8 = b'+';

fn start(
    cgroup: Option<BorrowedFd<'_>>,
    namespaces: u64,
    image: &Image,
    setup: &mut dyn FnMut(bool) -> io::Result<()>,
) -> io::Result<Start> {
    let (report_reader, report_writer) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    let (pid, pidfd) = clone(cgroup, namespaces)?;
    if pid == 0 {
        let _ = rustix::io::write(&report_writer, &[STARTED]);
        let error = setup(cgroup.is_some()).err().unwrap_or_else(|| {
            // SAFETY: every pointer is of `image`, which outlives this call; on success execve
            // does not return.
            unsafe {
                libc::execve(
                    image.program.as_ptr(),
                    image.argv.as_ptr(),
                    image.envp.as_ptr(),
                )
            };
            io::Error::last_os_error()
        });
        let code = error.raw_os_error().unwrap_or(libc::EINVAL);
        let _ = rustix::io::write(&report_writer, &code.to_ne_bytes());
        // SAFETY: ends the child without running this process's exit handlers.
        unsafe { libc::_exit(127) };
    }
    drop(report_writer);
    let pidfd = match pidfd {
        Some(fd) => fd,
        None => rustix::process::pidfd_open(
            Pid::from_raw(pid).ok_or_else(|| io::Error::other("clone returned no pid"))?,
            PidfdFlags::empty(),
        )?,
    };
    // The started byte, then an errno if the child failed, then the end of the pipe.
    let mut report = [0u8; 5];
    let mut filled = 0;
    while filled < report.len() {
        match rustix::io::read(&report_reader, &mut report[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if filled == 1 {
        return Ok(Start::Running(Forked {
            pid: pid.unsigned_abs(),
            pidfd,
        }));
    }
    let _ = rustix::process::waitid(
        rustix::process::WaitId::PidFd(pidfd.as_fd()),
        rustix::process::WaitIdOptions::EXITED,
    );
    Ok(match report {
        _ if filled == 0 => Start::KilledAtBirth,
        [_, code @ ..] => Start::Failed(io::Error::from_raw_os_error(i32::from_ne_bytes(code))),
    })
}

/// One `clone3` (a `fork` where the kernel has none and no namespace is asked for): the child's
/// pid (0 in the child) and, in the parent, its pidfd when the kernel gave one.
fn clone(cgroup: Option<BorrowedFd<'_>>, namespaces: u64) -> io::Result<(i32, Option<OwnedFd>)> {
    let mut pidfd: libc::c_int = -1;
    let mut args = CloneArgs {
        flags: CLONE_PIDFD | namespaces,
        pidfd: std::ptr::addr_of_mut!(pidfd) as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..CloneArgs::default()
    };
    if let Some(dir) = cgroup {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = dir.as_raw_fd() as u64;
    }
    // SAFETY: without CLONE_VM the child gets its own copy of memory and continues from here like
    // after fork; `args` is a valid clone_args of the size given.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            std::ptr::addr_of_mut!(args),
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if pid < 0 {
        let error = io::Error::last_os_error();
        if cgroup.is_some()
            || namespaces != 0
            || !matches!(error.raw_os_error(), Some(libc::ENOSYS | libc::EPERM))
        {
            return Err(error);
        }
        // SAFETY: as above; fork is what std's spawn uses.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        return Ok((pid, None));
    }
    let pid = i32::try_from(pid).map_err(|_| io::Error::other("clone3 returned an invalid pid"))?;
    if pid == 0 {
        return Ok((0, None));
    }
    // SAFETY: the kernel opened this pidfd for this process alone.
    Ok((pid, Some(unsafe { OwnedFd::from_raw_fd(pidfd) })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CgroupRoot;

    /// Removes the test's cgroups and what runs in them, even when the test fails.
    struct Instance(CgroupRoot);

    impl Drop for Instance {
        fn drop(&mut self) {
            self.0.destroy();
        }
    }

    /// Starts `sleep 30` in `dir`; `placed` is what the child must be told, when given.
    fn sleeper_in(dir: &Path, placed: Option<bool>) -> io::Result<Forked> {
        let image = Image::new(Path::new("sleep"), &["30".to_owned()], &[])?;
        let procs = crate::cgroup::procs_path_c(dir)?;
        let cgroup = open_cgroup(dir)?;
        spawn(Some(cgroup.as_fd()), 0, &image, &mut |in_cgroup| {
            if placed.is_some_and(|placed| placed != in_cgroup) {
                return Err(io::Error::from_raw_os_error(libc::EDOM));
            }
            if !in_cgroup {
                crate::cgroup::join_cgroup(&procs)?;
            }
            Ok(())
        })
    }

    /// Starts `sleep 30` in `agent` (told `placed`, when given), checks that it runs inside it,
    /// and kills it there.
    fn starts_inside(agent: &crate::AgentCgroup, placed: Option<bool>) -> io::Result<()> {
        let forked = sleeper_in(agent.path(), placed)?;
        let mut names = agent.path().iter().rev();
        let (leaf, instance) = (names.next().unwrap(), names.next().unwrap());
        let inside = format!("/{}/{}", instance.to_string_lossy(), leaf.to_string_lossy());
        let own = std::fs::read_to_string(format!("/proc/{}/cgroup", forked.pid))?;
        assert!(own.lines().any(|line| line.ends_with(&inside)), "{own}");
        agent.kill();
        let status = rustix::process::waitid(
            rustix::process::WaitId::PidFd(forked.pidfd.as_fd()),
            rustix::process::WaitIdOptions::EXITED,
        )?
        .expect("an exit");
        assert_eq!(status.terminating_signal(), Some(libc::SIGKILL));
        Ok(())
    }

    #[test]
    fn a_child_starts_in_its_cgroup_and_one_killed_there_before_still_gets_in() {
        let tag = format!("fork-test-{}", std::process::id());
        let Some(root) = CgroupRoot::create(&tag, std::process::id()) else {
            eprintln!("skipped: no writable cgroup v2 here");
            return;
        };
        let root = Instance(root);
        let agent = root.0.agent_for_run("ag-fork").expect("agent cgroup");
        starts_inside(&agent, Some(true)).expect("placed by the kernel");
        // The same cgroup, written to cgroup.kill once: the child still runs, inside it.
        starts_inside(&agent, None).expect("started after a cgroup.kill");
        // The next run's cgroup is made anew, so the kernel places the child again.
        let fresh = root.0.agent_for_run("ag-fork").expect("fresh agent cgroup");
        starts_inside(&fresh, Some(true)).expect("placed in the fresh cgroup");
    }

    #[test]
    fn a_failed_exec_is_the_spawns_error_and_a_bare_name_is_looked_up_in_path() {
        let missing = Image::new(Path::new("celistra-no-such-program"), &[], &[]);
        assert_eq!(
            missing.err().map(|e| e.kind()),
            Some(io::ErrorKind::NotFound)
        );
        let path = [("PATH".to_owned(), "/nonexistent:/bin".to_owned())];
        let image = Image::new(Path::new("true"), &[], &path).expect("true is in /bin");
        assert_eq!(image.program.as_bytes(), b"/bin/true");
        let error = spawn(None, 0, &image, &mut |_| {
            Err(io::Error::from_raw_os_error(libc::EDOM))
        })
        .err()
        .expect("the setup's error");
        assert_eq!(error.raw_os_error(), Some(libc::EDOM));
        let not_executable = Image::new(Path::new("/"), &[], &[]).expect("a path");
        let error = spawn(None, 0, &not_executable, &mut |_| Ok(()))
            .err()
            .expect("execve's error");
        assert_eq!(error.raw_os_error(), Some(libc::EACCES));
    }
}
