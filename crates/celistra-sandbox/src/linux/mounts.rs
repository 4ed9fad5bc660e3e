//! The sandbox's filesystem: the mounts the launcher makes, in order, in the sandbox's own mount
//! namespace before the agent starts. Planned in the daemon ([`super::plan`]), carried on the
//! launcher's command line, applied here, and described by `ctl sandbox explain`.
//!
//! How: the launcher mounts a tmpfs over the host's `/tmp` (its own mount namespace, so the host
//! sees nothing), pivots into it with the host's tree at `/oldroot`, builds the sandbox in a second
//! tmpfs at `/newroot` from `/oldroot`'s paths, pivots into that and detaches the host's tree. A
//! bind is three system calls of the new mount API: `open_tree` clones the host's tree (every
//! mount below it too), `mount_setattr` makes all of it nosuid, nodev and maybe read-only at once,
//! `move_mount` puts it in place: no `/proc/self/mountinfo` walk per bind.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One step of building the sandbox's filesystem. Paths are as the agent sees them; a bind's
/// source is the host's path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum MountStep {
    /// The host's `source`, with every mount below it, at `target`; never setuid, never device
    /// nodes.
    Bind {
        source: String,
        target: String,
        writable: bool,
    },
    /// A symlink at `path` to `target` (merged /usr's `/bin -> usr/bin`).
    Symlink { target: String, path: String },
    /// A fresh procfs of the sandbox's PID namespace; its kernel knobs read-only.
    Proc { path: String },
    /// A private /dev: the usual device nodes, a devpts of its own, shm.
    Dev { path: String },
    /// An empty tmpfs: the private /tmp, or a hidden directory's read-only mask.
    Tmpfs { path: String, writable: bool },
}

impl MountStep {
    /// One line for `ctl sandbox explain`.
    pub(crate) fn describe(&self) -> String {
        let access = |writable: bool| if writable { "read-write" } else { "read-only" };
        match self {
            MountStep::Bind {
                source,
                target,
                writable,
            } if source == target => format!("bind {:<10} {target}", access(*writable)),
            MountStep::Bind {
                source,
                target,
                writable,
            } => format!("bind {:<10} {target} (from {source})", access(*writable)),
            MountStep::Symlink { target, path } => format!("symlink         {path} -> {target}"),
            MountStep::Proc { path } => format!("proc            {path}"),
            MountStep::Dev { path } => format!("dev             {path}"),
            MountStep::Tmpfs { path, writable } => {
                format!("tmpfs {:<9} {path}", access(*writable))
            }
        }
    }
}

/// Where the host's tree is while the sandbox is built.
const OLD_ROOT: &str = "/oldroot";
/// Where the sandbox's root is built.
const NEW_ROOT: &str = "/newroot";
/// A directory every host has, hidden under the building tmpfs (in this mount namespace only).
const BUILD_BASE: &str = "/tmp";
/// Device nodes of the host bound into the private /dev (bubblewrap's set).
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];
/// /proc entries that change the kernel: read-only inside.
const PROC_KNOBS: [&str; 4] = ["sys", "sysrq-trigger", "irq", "bus"];
const READ_ONLY_KNOB: u64 =
    libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV;

/// A failed step, naming it.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub(crate) struct MountError {
    what: String,
    source: io::Error,
}

fn failed(what: impl Into<String>) -> impl FnOnce(io::Error) -> MountError {
    let what = what.into();
    move |source| MountError { what, source }
}

/// Builds the sandbox's filesystem from `steps` and makes it this process's root, with `workdir`
/// as its working directory. Needs a mount namespace of its own and CAP_SYS_ADMIN over it.
pub(crate) fn build_root(steps: &[MountStep], workdir: &str) -> Result<(), MountError> {
    mount(None, "/", None, libc::MS_REC | libc::MS_SLAVE, None)
        .map_err(failed("making the host's mounts one-way"))?;
    mount_tmpfs(BUILD_BASE, "0755", 0).map_err(failed("mounting the building tmpfs"))?;
    for dir in [OLD_ROOT, NEW_ROOT] {
        std::fs::create_dir(format!("{BUILD_BASE}{dir}"))
            .map_err(failed(format!("mkdir {dir}")))?;
    }
    rustix::process::pivot_root(BUILD_BASE, format!("{BUILD_BASE}{OLD_ROOT}").as_str())
        .map_err(io::Error::from)
        .map_err(failed("pivoting into the building tmpfs"))?;
    std::env::set_current_dir("/").map_err(failed("chdir /"))?;
    mount_tmpfs(NEW_ROOT, "0755", 0).map_err(failed("mounting the sandbox's root"))?;
    for step in steps {
        apply(step).map_err(failed(step.describe()))?;
    }
    std::env::set_current_dir(NEW_ROOT).map_err(failed("chdir to the sandbox's root"))?;
    rustix::process::pivot_root(".", ".")
        .map_err(io::Error::from)
        .map_err(failed("pivoting into the sandbox's root"))?;
    rustix::mount::unmount(".", rustix::mount::UnmountFlags::DETACH)
        .map_err(io::Error::from)
        .map_err(failed("detaching the host's tree"))?;
    std::env::set_current_dir("/").map_err(failed("chdir /"))?;
    std::env::set_current_dir(workdir).map_err(failed(format!("chdir {workdir}")))
}

fn apply(step: &MountStep) -> io::Result<()> {
    match step {
        MountStep::Bind {
            source,
            target,
            writable,
        } => {
            let source = format!("{OLD_ROOT}{source}");
            let target = inside(target);
            make_mount_point(&target, Path::new(&source).is_dir())?;
            let read_only = if *writable {
                0
            } else {
                libc::MOUNT_ATTR_RDONLY
            };
            bind(
                &source,
                &target,
                libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV | read_only,
            )
        }
        MountStep::Symlink { target, path } => {
            let path = inside(path);
            make_parent(&path)?;
            std::os::unix::fs::symlink(target, &path)
        }
        MountStep::Proc { path } => {
            let path = inside(path);
            std::fs::create_dir_all(&path)?;
            mount(
                Some("proc"),
                &path,
                Some("proc"),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                None,
            )?;
            for knob in PROC_KNOBS {
                let knob = path.join(knob);
                if knob.exists() {
                    bind(&knob, &knob, READ_ONLY_KNOB)?;
                }
            }
            Ok(())
        }
        MountStep::Dev { path } => private_dev(&inside(path)),
        MountStep::Tmpfs { path, writable } => {
            let path = inside(path);
            std::fs::create_dir_all(&path)?;
            let (mode, read_only) = if *writable {
                ("1777", 0)
            } else {
                ("0755", libc::MS_RDONLY)
            };
            mount_tmpfs(&path, mode, read_only)
        }
    }
}

/// `path` of the sandbox as it is while being built.
fn inside(path: &str) -> PathBuf {
    PathBuf::from(format!("{NEW_ROOT}{path}"))
}

fn make_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(parent) => std::fs::create_dir_all(parent),
        None => Ok(()),
    }
}

/// A directory or an empty file at `path` for a bind to land on, unless something is there.
fn make_mount_point(path: &Path, directory: bool) -> io::Result<()> {
    if path.symlink_metadata().is_ok() {
        return Ok(());
    }
    if directory {
        return std::fs::create_dir_all(path);
    }
    make_parent(path)?;
    std::fs::File::create(path).map(drop)
}

/// /dev as bubblewrap makes it: a tmpfs with the host's harmless device nodes bound in, a devpts
/// instance of its own, shm, the usual symlinks, and the terminal as /dev/console.
fn private_dev(dev: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dev)?;
    mount_tmpfs(dev, "0755", 0)?;
    for node in DEVICES {
        let target = dev.join(node);
        std::fs::File::create(&target)?;
        // Device nodes must open: nosuid, but not nodev.
        bind(
            Path::new(&format!("{OLD_ROOT}/dev/{node}")),
            &target,
            libc::MOUNT_ATTR_NOSUID,
        )?;
    }
    let shm = dev.join("shm");
    std::fs::create_dir(&shm)?;
    std::fs::set_permissions(&shm, std::os::unix::fs::PermissionsExt::from_mode(0o1777))?;
    let pts = dev.join("pts");
    std::fs::create_dir(&pts)?;
    mount(
        Some("devpts"),
        &pts,
        Some("devpts"),
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=620"),
    )?;
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("core", "/proc/kcore"),
    ] {
        std::os::unix::fs::symlink(target, dev.join(link))?;
    }
    // The agent's terminal, a host PTY, is its /dev/console, as bubblewrap has it.
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        let terminal = std::fs::read_link(format!("{OLD_ROOT}/proc/self/fd/0"))?;
        let console = dev.join("console");
        std::fs::File::create(&console)?;
        let source = Path::new(OLD_ROOT).join(terminal.strip_prefix("/").unwrap_or(&terminal));
        bind(&source, &console, libc::MOUNT_ATTR_NOSUID)?;
    }
    Ok(())
}

fn c_path(path: impl AsRef<Path>) -> io::Result<CString> {
    CString::new(path.as_ref().as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path holds a NUL byte"))
}

fn mount_tmpfs(path: impl AsRef<Path>, mode: &str, flags: libc::c_ulong) -> io::Result<()> {
    mount(
        Some("tmpfs"),
        path,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV | flags,
        Some(&format!("mode={mode}")),
    )
}

fn mount(
    source: Option<&str>,
    target: impl AsRef<Path>,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let text = |s: Option<&str>| s.map(c_path).transpose();
    let (source, fstype, data) = (text(source)?, text(fstype)?, text(data)?);
    let target = c_path(target)?;
    let pointer = |s: &Option<CString>| s.as_ref().map_or(std::ptr::null(), |s| s.as_ptr());
    // SAFETY: every pointer is null or a NUL-terminated string alive for the call.
    let done = unsafe {
        libc::mount(
            pointer(&source),
            target.as_ptr(),
            pointer(&fstype),
            flags,
            pointer(&data).cast(),
        )
    };
    if done != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Binds the tree at `source` (every mount below it too) at `target` with `attrs` set on all of
/// it.
fn bind(source: impl AsRef<Path>, target: impl AsRef<Path>, attrs: u64) -> io::Result<()> {
    let source = c_path(source)?;
    let target = c_path(target)?;
    // SAFETY: a NUL-terminated path alive for the call; returns a new descriptor or -1.
    let tree = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            source.as_ptr(),
            libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC | libc::AT_RECURSIVE as libc::c_uint,
        )
    };
    if tree < 0 {
        return Err(io::Error::last_os_error());
    }
    let tree = i32::try_from(tree).map_err(|_| io::Error::other("open_tree: bad descriptor"))?;
    // SAFETY: the kernel just opened this descriptor for this process alone.
    let tree = unsafe { OwnedFd::from_raw_fd(tree) };
    let attr = libc::mount_attr {
        attr_set: attrs,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: `attr` is a valid mount_attr of the size given; "" with AT_EMPTY_PATH names the
    // descriptor itself.
    let set = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_RECURSIVE,
            &raw const attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if set != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above; both paths are NUL-terminated strings alive for the call.
    let moved = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if moved != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Brings up the loopback interface of a new network namespace (down when it is made).
pub(crate) fn loopback_up() -> io::Result<()> {
    let socket = rustix::net::socket_with(
        rustix::net::AddressFamily::INET,
        rustix::net::SocketType::DGRAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )?;
    // SAFETY: an all-zero ifreq is valid; the name "lo" and its NUL fit in IFNAMSIZ; both ioctls
    // read and write only the ifreq passed.
    unsafe {
        let mut request: libc::ifreq = std::mem::zeroed();
        for (slot, byte) in request.ifr_name.iter_mut().zip(b"lo") {
            *slot = *byte as libc::c_char;
        }
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &raw mut request) != 0 {
            return Err(io::Error::last_os_error());
        }
        request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &raw const request) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
