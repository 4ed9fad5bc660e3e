//! The sandbox of one run, computed from a [`Policy`] before fork: the namespaces and mounts the
//! launcher makes, and the [`Confinement`] it applies to the agent. Also its human-readable
//! description for `ctl sandbox explain`.
//!
//! Filesystem layering: Landlock, not the mount table, decides what may be written whenever the
//! kernel lets it deny every kind of write (ABI 3 added truncation). A write refused by Landlock is
//! an audit record; an EROFS from a read-only bind is not. So with ABI >= 3 host paths are bound
//! read-write and Landlock grants writes only on the workspace, `write:` paths, the private /tmp and
//! a few device nodes. Older kernels get read-only binds for everything but the workspace and
//! `write:` paths, and the plan's notes say so.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::confinement::{Confinement, Rights, TcpPorts};
use super::interp::interpreters;
use super::launcher::{LAUNCHER_ARG, RunAs, SandboxSetup};
use super::mounts::MountStep;
use super::syscall_filter;
use super::tools::Tools;
use crate::{Error, Network, Policy};

/// The newest Landlock ABI this code was tested with; newer kernels are used at this level.
const NEWEST_TESTED_ABI: u32 = 7;
/// Landlock ABI that can deny truncation, and so every write.
const ABI_DENIES_ALL_WRITES: u32 = 3;
const ABI_TCP_PORTS: u32 = 4;
const ABI_SCOPES: u32 = 6;
const ABI_LOG_NEW_EXEC: u32 = 7;

/// What programs need to run when not everything is readable. Symlinks among them (merged /usr)
/// are recreated as symlinks.
const RUNTIME_DIRS: [&str; 8] = [
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc",
];
/// Filesystems the launcher makes fresh inside; readable whatever the policy.
const SANDBOX_FILESYSTEMS: [&str; 3] = ["/dev", "/proc", "/tmp"];
/// Device nodes (inside the private /dev) that ordinary programs write to or ioctl.
const WRITABLE_DEVICES: [&str; 9] = [
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/tty",
    "/dev/pts",
    "/dev/ptmx",
    "/dev/random",
    "/dev/urandom",
    "/dev/shm",
];
const SHELL: &str = "/bin/sh";

/// A sandboxed run's complete setup, built before fork. Give it to [`crate::SpawnSpec::sandbox`].
#[derive(Debug, Clone)]
pub struct SandboxPlan {
    tools: Tools,
    setup: SandboxSetup,
    /// `setup` as the launcher reads it.
    encoded: String,
    notes: Vec<String>,
}

/// A plan in words, for `ctl sandbox explain`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanDescription {
    /// The command line that precedes the agent's own program and arguments.
    pub launch_argv: Vec<String>,
    /// Namespaces, then the sandbox's filesystem, one mount per line in the order they are made.
    pub mounts: Vec<String>,
    /// Landlock rules, one per line.
    pub landlock: Vec<String>,
    /// seccomp denials, one per kind.
    pub seccomp: Vec<String>,
    /// The Landlock ABI enforced (0: none).
    pub landlock_abi: u32,
    /// Where this kernel or the policy weakens or changes the usual sandbox.
    pub notes: Vec<String>,
}

impl SandboxPlan {
    /// The plan for `policy` on the running kernel.
    pub fn new(policy: &Policy, tools: &Tools) -> Result<SandboxPlan, Error> {
        let abi = kernel_landlock_abi().min(NEWEST_TESTED_ABI);
        SandboxPlan::for_landlock_abi(policy, tools, abi)
    }

    /// The plan for `policy` on a kernel with Landlock ABI `abi` (0: none).
    pub(crate) fn for_landlock_abi(
        policy: &Policy,
        tools: &Tools,
        abi: u32,
    ) -> Result<SandboxPlan, Error> {
        syscall_filter::target_arch()?;
        let mut notes = Vec::new();
        let workspace = absolute(&policy.workspace)?;
        if !policy.workspace.is_dir() {
            return Err(path_error(
                &policy.workspace,
                "the workspace is not an existing directory",
            ));
        }
        let paths = GrantedPaths {
            workspace,
            reads: existing(&policy.read, "read", &mut notes)?,
            writes: existing(&policy.write, "write", &mut notes)?,
            execs: existing(&policy.exec, "exec", &mut notes)?,
            launcher: absolute(&tools.launcher)?,
            daemon: absolute(&tools.daemon)?,
        };
        let runtime = if policy.read_anywhere {
            Vec::new()
        } else {
            runtime_dirs()?
        };
        let (share_net, tcp) = network(&policy.network, abi, &mut notes);
        let setup = SandboxSetup {
            mounts: mounts(policy, &paths, &runtime, abi)?,
            workdir: paths.workspace.to_owned(),
            own_network: !share_net,
            confinement: confinement(policy, &paths, &runtime, abi, tcp)?,
        };
        kernel_notes(policy, abi, share_net, &mut notes);
        let encoded = serde_json::to_string(&setup).map_err(Error::PolicyEncoding)?;
        Ok(SandboxPlan {
            tools: tools.clone(),
            setup,
            encoded,
            notes,
        })
    }

    /// The program and arguments that run `program args…` in this sandbox as `user`:
    /// `<launcher> __sandbox-exec <encoded setup> <encoded user> -- program args…`.
    pub(crate) fn wrap(
        &self,
        program: &str,
        args: &[String],
        user: Option<&RunAs>,
    ) -> Result<(&Path, Vec<String>), Error> {
        let mut wrapped = self.prefix(user)?;
        wrapped.push(program.to_owned());
        wrapped.extend(args.iter().cloned());
        Ok((&self.tools.launcher, wrapped))
    }

    /// The launcher's arguments up to the agent's program.
    fn prefix(&self, user: Option<&RunAs>) -> Result<Vec<String>, Error> {
        Ok(vec![
            LAUNCHER_ARG.to_owned(),
            self.encoded.clone(),
            serde_json::to_string(&user).map_err(Error::PolicyEncoding)?,
            "--".to_owned(),
        ])
    }

    pub fn describe(&self) -> PlanDescription {
        let mut launch_argv = vec![self.tools.launcher.display().to_string()];
        launch_argv.extend(self.prefix(None).unwrap_or_default());
        let network = if self.setup.own_network {
            ", network (loopback only)"
        } else {
            ""
        };
        let mut mounts = vec![format!(
            "namespaces: pid, mount, ipc, uts, cgroup{network}; every capability dropped"
        )];
        mounts.extend(self.setup.mounts.iter().map(MountStep::describe));
        mounts.push(format!("chdir {}", self.setup.workdir));
        let confinement = &self.setup.confinement;
        PlanDescription {
            launch_argv,
            mounts,
            landlock: confinement.describe(),
            seccomp: syscall_filter::describe(confinement.subprocess),
            landlock_abi: confinement.landlock_abi,
            notes: self.notes.clone(),
        }
    }
}

/// The policy's paths that exist, as text.
struct GrantedPaths<'a> {
    workspace: &'a str,
    reads: Vec<&'a str>,
    writes: Vec<&'a str>,
    execs: Vec<&'a str>,
    launcher: &'a str,
    daemon: &'a str,
}

/// A runtime directory of this host, as the sandbox recreates it.
enum RuntimeDir {
    Directory(&'static str),
    /// A symlink such as merged /usr's `/bin -> usr/bin`.
    Symlink {
        path: &'static str,
        target: String,
    },
}

fn runtime_dirs() -> Result<Vec<RuntimeDir>, Error> {
    let mut found = Vec::new();
    for path in RUNTIME_DIRS {
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.is_symlink() => {
                let target = std::fs::read_link(path).map_err(|e| {
                    path_error(Path::new(path), &format!("cannot read the link: {e}"))
                })?;
                let target = text(&target)?.to_owned();
                found.push(RuntimeDir::Symlink { path, target });
            }
            Ok(meta) if meta.is_dir() => found.push(RuntimeDir::Directory(path)),
            _ => {}
        }
    }
    Ok(found)
}

/// The daemon's binary as a sandboxed agent runs it: `celistrad` in [`AGENT_BIN_INSIDE`].
///
/// [`AGENT_BIN_INSIDE`]: crate::AGENT_BIN_INSIDE
fn agent_binary() -> String {
    format!("{}/celistrad", crate::AGENT_BIN_INSIDE)
}

/// A bind of the host's `source` at `target`. The source's symlinks are resolved here: the
/// launcher reads it with the host's tree moved aside, where an absolute link would miss.
fn bind(source: &str, target: &str, writable: bool) -> Result<MountStep, Error> {
    let resolved =
        std::fs::canonicalize(source).map_err(|e| path_error(Path::new(source), &e.to_string()))?;
    Ok(MountStep::Bind {
        source: text(&resolved)?.to_owned(),
        target: target.to_owned(),
        writable,
    })
}

/// The sandbox's filesystem, in an order where later mounts win.
fn mounts(
    policy: &Policy,
    paths: &GrantedPaths<'_>,
    runtime: &[RuntimeDir],
    abi: u32,
) -> Result<Vec<MountStep>, Error> {
    let host_writable = abi >= ABI_DENIES_ALL_WRITES;
    let mut steps = Vec::new();
    let mut bound: Vec<&str> = Vec::new();
    if policy.read_anywhere {
        steps.push(bind("/", "/", host_writable)?);
        bound.push("/");
    }
    for dir in runtime {
        match dir {
            RuntimeDir::Directory(path) => {
                steps.push(bind(path, path, host_writable)?);
                bound.push(path);
            }
            RuntimeDir::Symlink { path, target } => steps.push(MountStep::Symlink {
                target: target.clone(),
                path: (*path).to_owned(),
            }),
        }
    }
    steps.extend([
        MountStep::Proc {
            path: "/proc".to_owned(),
        },
        MountStep::Dev {
            path: "/dev".to_owned(),
        },
        MountStep::Tmpfs {
            path: "/tmp".to_owned(),
            writable: true,
        },
    ]);
    // After the fresh /tmp, so paths below /tmp are visible again. Later binds win over earlier
    // ones, so the workspace and write paths stay writable inside read paths.
    for path in paths.reads.iter().chain(&paths.execs) {
        steps.push(bind(path, path, host_writable)?);
    }
    steps.push(bind(
        paths.workspace,
        paths.workspace,
        policy.workspace_writable || host_writable,
    )?);
    for path in &paths.writes {
        steps.push(bind(path, path, true)?);
    }
    steps.push(bind(paths.launcher, paths.launcher, false)?);
    // The daemon's binary where it is (hooks may name it by its path, which can be in the private
    // /tmp), and as the agent's own `celistrad` (ask, hook).
    if paths.daemon != paths.launcher {
        steps.push(bind(paths.daemon, paths.daemon, false)?);
    }
    steps.push(bind(paths.daemon, &agent_binary(), false)?);
    bound.extend(paths.reads.iter().chain(&paths.execs).chain(&paths.writes));
    bound.push(paths.workspace);
    // Last, so a hidden path inside the workspace or a bound path is masked all the same.
    for hidden in &policy.hidden {
        if !bound.iter().any(|b| hidden.starts_with(b)) {
            continue;
        }
        match std::fs::metadata(hidden) {
            Ok(meta) if meta.is_dir() => steps.push(MountStep::Tmpfs {
                path: absolute(hidden)?.to_owned(),
                writable: false,
            }),
            Ok(_) => steps.push(bind("/dev/null", absolute(hidden)?, false)?),
            Err(_) => {}
        }
    }
    if let Some(socket) = &policy.ask_socket {
        // Its directory, not the socket: a daemon that starts again binds a new socket there.
        let dir = socket.parent().ok_or_else(|| Error::SandboxPath {
            path: socket.display().to_string(),
            problem: "has no directory".into(),
        })?;
        steps.push(bind(absolute(dir)?, crate::policy::ASK_DIR_INSIDE, true)?);
    }
    Ok(steps)
}

/// The Landlock rules and seccomp choice the launcher applies.
fn confinement(
    policy: &Policy,
    paths: &GrantedPaths<'_>,
    runtime: &[RuntimeDir],
    abi: u32,
    tcp: Option<TcpPorts>,
) -> Result<Confinement, Error> {
    let mut confinement = Confinement {
        landlock_abi: abi,
        paths: BTreeMap::new(),
        tcp,
        subprocess: policy.subprocess,
    };
    let readable = Rights::READ.with_execute(policy.subprocess);
    let writable = Rights::READ_WRITE.with_execute(policy.subprocess);
    if policy.read_anywhere {
        confinement.grant(Path::new("/"), readable);
    }
    // A symlinked runtime directory is covered by its target's rule.
    let runtime_dirs = runtime.iter().filter_map(|dir| match dir {
        RuntimeDir::Directory(path) => Some(*path),
        RuntimeDir::Symlink { .. } => None,
    });
    for path in runtime_dirs
        .chain(SANDBOX_FILESYSTEMS)
        .chain([paths.workspace])
        .chain(paths.reads.iter().copied())
    {
        confinement.grant(Path::new(path), readable);
    }
    if policy.workspace_writable {
        confinement.grant(Path::new(paths.workspace), writable);
    }
    for path in paths.writes.iter().chain(&["/tmp"]) {
        confinement.grant(Path::new(path), writable);
    }
    for device in WRITABLE_DEVICES {
        confinement.grant(Path::new(device), Rights::READ_WRITE);
    }
    // Every agent may run `celistrad ask` and `celistrad hook`, with or without `subprocess`.
    confinement.grant(Path::new(&agent_binary()), Rights::READ_EXECUTE);
    if policy.subprocess {
        for path in &paths.execs {
            confinement.grant(Path::new(path), readable);
        }
        return Ok(confinement);
    }
    let shell = Path::new(SHELL)
        .canonicalize()
        .map_err(|e| path_error(Path::new(SHELL), &e.to_string()))?;
    let programs = std::iter::once(shell.as_path()).chain(paths.execs.iter().map(Path::new));
    for program in programs {
        confinement.grant(program, Rights::READ_EXECUTE);
        for interpreter in interpreters(program) {
            confinement.grant(&interpreter, Rights::READ_EXECUTE);
        }
    }
    Ok(confinement)
}

/// Whether the sandbox shares the host's network, and the TCP ports Landlock limits it to.
fn network(network: &Network, abi: u32, notes: &mut Vec<String>) -> (bool, Option<TcpPorts>) {
    match network {
        Network::Full => (true, None),
        Network::None => (false, None),
        Network::Ports { connect, bind } if abi >= ABI_TCP_PORTS => {
            notes.push(
                "only TCP is limited to the listed ports: UDP (DNS included) and other protocols \
                 reach the host's network"
                    .to_owned(),
            );
            let tcp = TcpPorts {
                connect: connect.clone(),
                bind: bind.clone(),
            };
            (true, Some(tcp))
        }
        Network::Ports { .. } => {
            notes.push(format!(
                "Landlock ABI {abi} cannot limit TCP ports (needs {ABI_TCP_PORTS}): the sandbox \
                 gets no network at all instead"
            ));
            (false, None)
        }
    }
}

fn kernel_notes(policy: &Policy, abi: u32, share_net: bool, notes: &mut Vec<String>) {
    if abi >= ABI_DENIES_ALL_WRITES {
        notes.push(
            "host paths are mounted read-write: Landlock denies writes outside the granted \
             paths, so each blocked write is an audit record"
                .to_owned(),
        );
    } else {
        notes.push(format!(
            "Landlock ABI {abi} cannot deny every write (truncation needs {ABI_DENIES_ALL_WRITES}): \
             host paths are mounted read-only instead, and a blocked write fails with EROFS and \
             is not audited"
        ));
    }
    if abi == 0 {
        let mut note =
            "Landlock is not available: reads are limited only by what is mounted".to_owned();
        if !policy.subprocess {
            note.push_str(", and any visible program may be executed (fork stays denied)");
        }
        notes.push(note);
    }
    if abi < ABI_SCOPES {
        let isolation = if share_net {
            "the PID namespace still hides other processes"
        } else {
            "the PID and network namespaces still hide other processes and abstract sockets"
        };
        notes.push(format!(
            "signals and abstract unix sockets are not scoped (needs Landlock ABI {ABI_SCOPES}); \
             {isolation}"
        ));
    }
    if abi < ABI_LOG_NEW_EXEC {
        notes.push(format!(
            "Landlock denials after exec are not audited (needs Landlock ABI {ABI_LOG_NEW_EXEC})"
        ));
    }
}

/// `paths` that exist, as text; the others are noted and left out (there is nothing to bind).
fn existing<'a>(
    paths: &'a [PathBuf],
    role: &str,
    notes: &mut Vec<String>,
) -> Result<Vec<&'a str>, Error> {
    let mut found = Vec::new();
    for path in paths {
        let path_text = absolute(path)?;
        if path.exists() {
            found.push(path_text);
        } else {
            notes.push(format!(
                "{role} path {path_text} does not exist and is left out"
            ));
        }
    }
    Ok(found)
}

/// An absolute `path` as text, as the encoded mounts and rules need it.
fn absolute(path: &Path) -> Result<&str, Error> {
    if !path.is_absolute() {
        return Err(path_error(path, "is not an absolute path"));
    }
    text(path)
}

fn text(path: &Path) -> Result<&str, Error> {
    path.to_str()
        .ok_or_else(|| path_error(path, "is not valid UTF-8"))
}

fn path_error(path: &Path, problem: &str) -> Error {
    Error::SandboxPath {
        path: path.display().to_string(),
        problem: problem.to_owned(),
    }
}

/// The kernel's Landlock ABI version, 0 when Landlock is missing or disabled.
pub fn kernel_landlock_abi() -> u32 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with a null attribute pointer, size 0 and only the VERSION flag, the kernel reads
    // and writes no memory; it returns the ABI version or -1.
    let version = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    u32::try_from(version).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MacosGrants;

    fn tools() -> Tools {
        Tools {
            launcher: PathBuf::from("/opt/celistra/celistra-launch"),
            daemon: PathBuf::from("/opt/celistra/celistrad"),
        }
    }

    fn policy(workspace: &Path) -> Policy {
        Policy {
            workspace: workspace.to_path_buf(),
            workspace_writable: true,
            read_anywhere: false,
            network: Network::None,
            subprocess: false,
            read: Vec::new(),
            write: Vec::new(),
            exec: Vec::new(),
            hidden: Vec::new(),
            macos: MacosGrants::default(),
            ask_socket: None,
        }
    }

    fn bind(source: &str, target: &str, writable: bool) -> MountStep {
        MountStep::Bind {
            source: source.to_owned(),
            target: target.to_owned(),
            writable,
        }
    }

    fn position(steps: &[MountStep], step: &MountStep) -> usize {
        steps
            .iter()
            .position(|s| s == step)
            .unwrap_or_else(|| panic!("{step:?} not in {steps:#?}"))
    }

    /// Tools that exist, for a plan whose binds resolve their sources.
    fn real_tools(dir: &Path) -> Tools {
        let launcher = dir.join("celistra-launch");
        let daemon = dir.join("celistrad");
        std::fs::write(&launcher, "").unwrap();
        std::fs::write(&daemon, "").unwrap();
        Tools { launcher, daemon }
    }

    #[test]
    fn default_policy_mounts() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().canonicalize().unwrap();
        let ws = ws.to_str().unwrap();
        let hidden = dir.path().join(".state");
        std::fs::create_dir(&hidden).unwrap();
        let mut policy = policy(dir.path());
        policy.hidden = vec![hidden.clone(), PathBuf::from("/nonexistent/state")];
        let tools = real_tools(dir.path());
        let plan = SandboxPlan::for_landlock_abi(&policy, &tools, 7).unwrap();
        let steps = &plan.setup.mounts;
        assert!(plan.setup.own_network);
        assert_eq!(plan.setup.workdir, dir.path().to_str().unwrap());
        // Landlock guards writes, so even system directories are bound read-write.
        let usr = position(steps, &bind("/usr", "/usr", true));
        let proc = position(
            steps,
            &MountStep::Proc {
                path: "/proc".into(),
            },
        );
        let tmp = position(
            steps,
            &MountStep::Tmpfs {
                path: "/tmp".into(),
                writable: true,
            },
        );
        let workspace = position(steps, &bind(ws, dir.path().to_str().unwrap(), true));
        let launcher = tools.launcher.to_str().unwrap();
        let launcher_bind = position(steps, &bind(launcher, launcher, false));
        // The agent's own `celistrad`: the daemon's binary, read-only, in its private /tmp, and
        // executable whatever its capabilities.
        let agent_bin = "/tmp/.celistra/bin/celistrad";
        let daemon = tools.daemon.to_str().unwrap();
        let agent_bin_bind = position(steps, &bind(daemon, agent_bin, false));
        assert!(tmp < position(steps, &bind(daemon, daemon, false)));
        assert_eq!(
            plan.setup.confinement.paths.get(Path::new(agent_bin)),
            Some(&Rights::READ_EXECUTE)
        );
        let mask = position(
            steps,
            &MountStep::Tmpfs {
                path: hidden.to_str().unwrap().into(),
                writable: false,
            },
        );
        assert!(usr < proc && proc < tmp && tmp < workspace && workspace < mask);
        assert!(launcher_bind < mask && tmp < agent_bin_bind);
        let described = plan.describe();
        assert!(!described.mounts.join("\n").contains("/nonexistent"));
        assert!(described.mounts[0].contains("network (loopback only)"));
        let argv = &described.launch_argv;
        assert_eq!(argv[..2], [launcher, LAUNCHER_ARG]);
        assert_eq!(argv[3..], ["null", "--"]);
        let decoded: SandboxSetup = serde_json::from_str(&argv[2]).unwrap();
        assert_eq!(decoded, plan.setup);
    }

    #[test]
    fn wrapping_appends_the_user_and_the_program() {
        let dir = tempfile::tempdir().unwrap();
        let plan =
            SandboxPlan::for_landlock_abi(&policy(dir.path()), &real_tools(dir.path()), 7).unwrap();
        let user = RunAs::Mapped {
            uid: 1000,
            gid: 1000,
        };
        let (launcher, args) = plan
            .wrap(
                "/bin/sh",
                &["-c".to_owned(), "echo hi".to_owned()],
                Some(&user),
            )
            .unwrap();
        assert_eq!(launcher, plan.tools.launcher);
        assert_eq!(args[..2], plan.describe().launch_argv[1..3]);
        let decoded: Option<RunAs> = serde_json::from_str(&args[2]).unwrap();
        assert_eq!(decoded, Some(user));
        assert_eq!(args[3..], ["--", "/bin/sh", "-c", "echo hi"]);
    }

    #[test]
    fn old_kernels_get_read_only_mounts_and_say_so() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().canonicalize().unwrap();
        let mut policy = policy(dir.path());
        policy.read_anywhere = true;
        policy.network = Network::Ports {
            connect: vec![443],
            bind: Vec::new(),
        };
        let plan = SandboxPlan::for_landlock_abi(&policy, &real_tools(dir.path()), 2).unwrap();
        let steps = &plan.setup.mounts;
        position(steps, &bind("/", "/", false));
        position(
            steps,
            &bind(ws.to_str().unwrap(), dir.path().to_str().unwrap(), true),
        );
        assert!(plan.setup.own_network);
        let description = plan.describe();
        let notes = description.notes.join("\n");
        for expected in [
            "read-only",
            "EROFS",
            "no network at all",
            "not scoped",
            "not audited",
        ] {
            assert!(notes.contains(expected), "{expected:?} not in {notes}");
        }
        let none = SandboxPlan::for_landlock_abi(&policy, &real_tools(dir.path()), 0)
            .unwrap()
            .describe();
        assert_eq!(none.landlock_abi, 0);
        assert!(none.landlock[0].contains("not available"));
        assert!(
            none.notes
                .join("\n")
                .contains("any visible program may be executed")
        );
    }

    #[test]
    fn description_lists_rules_by_path() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().display().to_string();
        let mut policy = policy(dir.path());
        policy.network = Network::Ports {
            connect: vec![443, 80],
            bind: Vec::new(),
        };
        policy.exec = vec![PathBuf::from("/usr/bin/env")];
        policy.read = vec![PathBuf::from("/nonexistent/read")];
        let plan = SandboxPlan::for_landlock_abi(&policy, &real_tools(dir.path()), 7).unwrap();
        assert!(!plan.setup.own_network);
        let description = plan.describe();
        assert_eq!(description.landlock_abi, 7);
        let line = |path: &str| {
            description
                .landlock
                .iter()
                .find(|l| l.ends_with(&format!(" {path}")))
                .unwrap_or_else(|| panic!("no rule for {path}: {:#?}", description.landlock))
                .split_whitespace()
                .next()
                .unwrap()
                .to_owned()
        };
        assert_eq!(line(&ws), "read+write");
        assert_eq!(line("/usr"), "read");
        assert_eq!(line("/tmp"), "read+write");
        assert_eq!(line("/dev/null"), "read+write");
        assert_eq!(line("/usr/bin/env"), "read+execute");
        let shell = Path::new(SHELL).canonicalize().unwrap();
        assert_eq!(line(shell.to_str().unwrap()), "read+execute");
        let landlock = description.landlock.join("\n");
        for expected in [
            "Truncate",
            "tcp connect: 443, 80",
            "tcp bind: none",
            "scoped",
            "logged",
        ] {
            assert!(
                landlock.contains(expected),
                "{expected:?} not in {landlock}"
            );
        }
        assert!(
            description
                .seccomp
                .iter()
                .any(|l| l.contains("clone without CLONE_THREAD"))
        );
        assert!(!description.mounts[0].contains("network"));
        assert!(
            description
                .notes
                .iter()
                .any(|n| n.contains("/nonexistent/read"))
        );
    }

    #[test]
    fn relative_or_missing_workspaces_are_refused() {
        for workspace in ["relative/ws", "/nonexistent/ws"] {
            let err = SandboxPlan::for_landlock_abi(&policy(Path::new(workspace)), &tools(), 7)
                .unwrap_err();
            assert!(matches!(err, Error::SandboxPath { .. }), "{err}");
        }
    }
}
