//! The monitor against the real kernel (root only; skipped otherwise): children restricted with
//! Landlock or seccomp are denied, and their blocks must reach the sink attributed to them. Tests
//! run in parallel and every monitor receives every record, so each resolves only its own children.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Write};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use landlock::{
    ABI, Access, AccessFs, AccessNet, Ruleset, RulesetAttr, RulesetCreatedAttr, path_beneath_rules,
};
use seccompiler::{BpfProgram, SeccompAction, SeccompFilter};

use super::{AttributedBlock, BlockMonitor, Blocked, netlink};

/// How long a test waits for the record it caused; they arrive within milliseconds.
const RECORD_DEADLINE: Duration = Duration::from_secs(10);

/// A monitor that attributes the test's registered children to `agent`.
struct Harness {
    agent: String,
    children: Arc<Mutex<HashSet<u32>>>,
    blocks: Receiver<AttributedBlock>,
    _monitor: BlockMonitor,
}

impl Harness {
    /// `None` (the test is skipped) when not running as root.
    fn start(agent: &str) -> Option<Harness> {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: reading kernel audit records needs root");
            return None;
        }
        let children = Arc::new(Mutex::new(HashSet::new()));
        let (sender, blocks) = mpsc::channel();
        let resolve = {
            let children = children.clone();
            let agent = agent.to_owned();
            move |pid, _| {
                let known = children.lock().ok()?.contains(&pid);
                known.then(|| agent.clone())
            }
        };
        let sink = move |block| {
            let _ = sender.send(block);
        };
        let (monitor, _) = BlockMonitor::start(resolve, sink).expect("start the block monitor");
        Some(Harness {
            agent: agent.to_owned(),
            children,
            blocks,
            _monitor: monitor,
        })
    }

    /// Runs `sh -c SCRIPT sh ARGS…` restricted by `restrict`. The script starts with `read line`:
    /// the child waits until its pid is registered, so its first block is already its agent's.
    fn spawn(
        &self,
        script: &str,
        args: &[&str],
        restrict: impl FnMut() -> io::Result<()> + Send + Sync + 'static,
    ) -> Child {
        let mut command = Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(format!("read line; {script}"))
            .arg("sh")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: `restrict` only issues syscalls on data prepared before the fork (a Landlock
        // ruleset fd, a BPF program); it allocates nothing and takes no locks.
        unsafe { command.pre_exec(restrict) };
        let mut child = command.spawn().expect("spawn a restricted child");
        self.children.lock().expect("pid set").insert(child.id());
        let mut gate = child.stdin.take().expect("piped stdin");
        gate.write_all(b"go\n").expect("open the gate");
        child
    }

    /// The first block matching `wanted`, waiting up to [`RECORD_DEADLINE`].
    fn expect(&self, what: &str, wanted: impl Fn(&AttributedBlock) -> bool) -> AttributedBlock {
        let (_, found) = self.blocks_until(what, wanted);
        found
    }

    /// The blocks received before the first one matching `wanted`, and that one.
    fn blocks_until(
        &self,
        what: &str,
        wanted: impl Fn(&AttributedBlock) -> bool,
    ) -> (Vec<AttributedBlock>, AttributedBlock) {
        let deadline = Instant::now() + RECORD_DEADLINE;
        let mut before = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.blocks.recv_timeout(left) {
                Ok(block) if wanted(&block) => return (before, block),
                Ok(block) => before.push(block),
                Err(_) => break,
            }
        }
        let received: Vec<_> = before.iter().map(|b| b.block.what.to_string()).collect();
        panic!("no block {what} within {RECORD_DEADLINE:?}; received instead: {received:?}");
    }
}

fn wait(mut child: Child) {
    child.wait().expect("reap the child");
}

/// Landlock: read and execute everywhere, write only `/dev/null`, no TCP bind or connect;
/// denials after exec are logged. The ruleset is built before the fork.
fn landlocked() -> impl FnMut() -> io::Result<()> + Send + Sync + 'static {
    let abi = ABI::V7;
    let ruleset = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))
        .and_then(|r| r.handle_access(AccessNet::BindTcp | AccessNet::ConnectTcp))
        .and_then(|r| r.create())
        .and_then(|r| r.add_rules(path_beneath_rules(["/"], AccessFs::from_read(abi))))
        .and_then(|r| r.add_rules(path_beneath_rules(["/dev/null"], AccessFs::from_all(abi))))
        .and_then(|r| r.log_new_exec(true))
        .expect("build a Landlock ruleset");
    let mut ruleset = Some(ruleset);
    move || {
        let ruleset = ruleset.take().ok_or(io::ErrorKind::AlreadyExists)?;
        ruleset
            .restrict_self()
            .map(drop)
            .map_err(|_| io::Error::last_os_error())
    }
}

/// seccomp: `syscall` fails with EPERM, and the filter asks for the denial to be logged.
fn seccomp_denying(
    syscall: libc::c_long,
) -> impl FnMut() -> io::Result<()> + Send + Sync + 'static {
    let filter = SeccompFilter::new(
        [(syscall, Vec::new())].into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        std::env::consts::ARCH
            .try_into()
            .expect("a seccompiler architecture"),
    )
    .expect("build a seccomp filter");
    let program: BpfProgram = filter.try_into().expect("compile the seccomp filter");
    let length = u16::try_from(program.len()).expect("a short filter");
    move || {
        rustix::thread::set_no_new_privs(true)?;
        let fprog = libc::sock_fprog {
            len: length,
            filter: program.as_ptr().cast::<libc::sock_filter>().cast_mut(),
        };
        // SAFETY: `fprog` points to `program`, a live array of `length` instructions whose layout
        // seccompiler declares `repr(C)` like the kernel's `sock_filter`; the kernel copies it.
        let installed = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                libc::SECCOMP_FILTER_FLAG_LOG,
                &raw const fprog,
            )
        };
        if installed == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

/// A directory whose name has a space, so the kernel logs paths in it hex-encoded.
fn scratch_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("celistra audit ")
        .tempdir()
        .expect("create a scratch directory")
}

fn existing_file(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, "").expect("create a file");
    path
}

fn names_path(block: &AttributedBlock, path: &Path) -> bool {
    matches!(&block.block.what, Blocked::Filesystem { path: Some(p), .. } if Path::new(p) == path)
}

fn text(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

#[test]
fn a_landlock_write_denial_names_the_file_and_process() {
    let Some(harness) = Harness::start("ag-write") else {
        return;
    };
    let dir = scratch_dir();
    let file = existing_file(dir.path(), "denied");
    let child = harness.spawn(r#"echo > "$1""#, &[text(&file)], landlocked());
    let pid = child.id();
    let block = harness.expect("writing the file", |b| names_path(b, &file));
    wait(child);
    assert_eq!(block.agent_id, harness.agent);
    assert_eq!(block.block.pid, pid);
    assert_eq!(block.block.comm.as_deref(), Some("sh"));
    assert!(block.block.domain.is_some());
    assert_eq!(
        block.block.what.to_string(),
        format!("write_file {}", file.display())
    );
}

#[test]
fn a_landlock_connect_denial_names_the_port() {
    let Some(harness) = Harness::start("ag-connect") else {
        return;
    };
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen on loopback");
    let port = listener.local_addr().expect("local address").port();
    let child = harness.spawn(
        r#"exec bash -c 'echo > /dev/tcp/127.0.0.1/$0' "$1""#,
        &[&port.to_string()],
        landlocked(),
    );
    let block = harness.expect("connecting", |b| {
        b.block.what
            == Blocked::Network {
                access: "connect_tcp".into(),
                port,
            }
    });
    wait(child);
    assert_eq!(block.agent_id, harness.agent);
    assert_eq!(block.block.comm.as_deref(), Some("bash"));
}

#[test]
fn a_seccomp_errno_names_the_syscall() {
    let Some(harness) = Harness::start("ag-seccomp") else {
        return;
    };
    let child = harness.spawn(
        "exec unshare -U true",
        &[],
        seccomp_denying(libc::SYS_unshare),
    );
    let pid = child.id();
    let block = harness.expect(
        "calling unshare",
        |b| matches!(b.block.what, Blocked::Syscall { number, .. } if number == libc::SYS_unshare),
    );
    wait(child);
    assert_eq!(block.block.pid, pid);
    assert_eq!(block.block.comm.as_deref(), Some("unshare"));
    assert_eq!(block.block.what.to_string(), "syscall unshare");
}

#[test]
fn a_process_nobody_registered_is_attributed_through_its_domain() {
    let Some(harness) = Harness::start("ag-domain") else {
        return;
    };
    let dir = scratch_dir();
    let file = existing_file(dir.path(), "denied to a grandchild");
    // The trailing `true` keeps sh from exec'ing the inner shell in place: it gets its own pid.
    let child = harness.spawn(
        r#"sh -c 'echo > "$0"' "$1"; true"#,
        &[text(&file)],
        landlocked(),
    );
    let registered = child.id();
    let block = harness.expect("writing from the inner shell", |b| names_path(b, &file));
    wait(child);
    assert_eq!(block.agent_id, harness.agent);
    assert_ne!(block.block.pid, registered);
}

#[test]
fn a_denial_loop_is_rate_limited() {
    let Some(harness) = Harness::start("ag-flood") else {
        return;
    };
    let dir = scratch_dir();
    let looped = existing_file(dir.path(), "looped");
    let last = existing_file(dir.path(), "last");
    let script = r#"i=0; while [ $i -lt 100 ]; do echo 2>/dev/null > "$1"; i=$((i+1)); done;
                    sleep 0.3; echo > "$2""#;
    let spawned = Instant::now();
    let child = harness.spawn(script, &[text(&looped), text(&last)], landlocked());
    let (before, end) = harness.blocks_until("after the loop", |b| names_path(b, &last));
    // The loop lasted less than this, and earned at most one token per 100 ms of it.
    let refills = (spawned.elapsed().as_millis() / 100) as u64;
    wait(child);
    let delivered = before.iter().filter(|b| names_path(b, &looped)).count() as u64;
    assert!(
        (20..=21 + refills).contains(&delivered),
        "the burst of 20 gets through, then 10 per second, then the last one held back: {delivered}"
    );
    let accounted: u64 = before.iter().chain([&end]).map(|b| 1 + b.suppressed).sum();
    assert_eq!(
        accounted, 101,
        "every denial is delivered or counted in the next delivered block"
    );
}

#[test]
fn starting_enables_audit_and_dropping_stops_promptly() {
    let Some(harness) = Harness::start("ag-lifecycle") else {
        return;
    };
    let status = netlink::audit_status().expect("read the audit status");
    assert_ne!(status.enabled, 0);
    if status.daemon_pid == 0 {
        assert!(status.backlog_limit == 0 || status.backlog_limit >= super::AUDIT_BACKLOG);
    }
    let started = Instant::now();
    drop(harness);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
}
