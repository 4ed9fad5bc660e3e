//! Resource limits on this machine's real cgroups (run as root): each limit is enforced on a real
//! process, the rlimit fallback works when no cgroup is available, and nothing is left behind.
//! Every test uses its own tag, so the instance cgroups of tests running in parallel never meet.

#![allow(
    clippy::disallowed_methods,
    reason = "a straggler process escapes its group on purpose"
)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use celistra_sandbox::{
    AgentLimits, CgroupLayout, CgroupRoot, Enforcement, ExitInfo, LimitKind, ResourceControl,
    ResourceLimits, SpawnSpec, SpawnedPipes, spawn_with_pipes,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: u64 = 1024 * 1024;
const AGENT: &str = "ag-test";

/// The cgroups of one test, removed with their processes even when the test fails.
struct Instance {
    control: ResourceControl,
    tracking: Option<CgroupRoot>,
}

impl Instance {
    /// Like the daemon: a v2 tracking cgroup where possible, limits wherever this machine has them.
    fn create(tag: &str) -> Instance {
        let tracking = CgroupRoot::create(tag, std::process::id());
        let control = ResourceControl::create(tag, std::process::id(), tracking.as_ref());
        Instance { control, tracking }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.control.destroy();
        if let Some(root) = &self.tracking {
            root.destroy();
        }
    }
}

fn spec<'a>(script: &str, limits: &'a AgentLimits) -> SpawnSpec<'a> {
    SpawnSpec {
        program: "/bin/sh".into(),
        args: vec!["-c".into(), script.into()],
        cwd: "/".into(),
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        cgroup: None,
        limits: Some(limits),
        sandbox: None,
        credentials: None,
        audit_login_uid: None,
    }
}

/// Waits for the child, bounded.
async fn exit_of(spawned: &mut SpawnedPipes, within: Duration) -> ExitInfo {
    tokio::time::timeout(within, spawned.child.wait())
        .await
        .expect("the child did not exit in time")
        .expect("wait failed")
}

/// Pids of live processes running `sleep <marker>`.
fn marker_processes(marker: &str) -> Vec<u32> {
    let wanted = format!("sleep\0{marker}\0");
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| cmdline.ends_with(wanted.as_bytes()))
        })
        .collect()
}

fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The cgroup directory a limit was written to; fails the test when it fell back.
fn cgroup_dir(limits: &AgentLimits, kind: LimitKind) -> PathBuf {
    let applied = limits
        .applied()
        .0
        .iter()
        .find(|a| a.limit == kind)
        .expect("the limit is reported");
    match &applied.enforcement {
        Enforcement::Cgroup { dir, .. } => dir.clone(),
        other => panic!("{kind} is not enforced by a cgroup on this machine: {other}"),
    }
}

#[tokio::test]
async fn pids_max_stops_the_forks_past_it_and_removal_leaves_no_process() {
    let instance = Instance::create("test-pids");
    let limits = ResourceLimits {
        pids_max: Some(20),
        ..ResourceLimits::default()
    };
    let agent = instance
        .control
        .prepare(AGENT, &limits, None)
        .expect("valid limits");
    let dir = cgroup_dir(&agent, LimitKind::PidsMax);
    let marker = "7.1301";
    let mut spawned = spawn_with_pipes(&spec(
        &format!("for i in $(seq 40); do sleep {marker} >/dev/null 2>&1 & done; wait"),
        &agent,
    ))
    .expect("spawn");
    let exit = exit_of(&mut spawned, Duration::from_secs(5)).await;
    let mut stderr = String::new();
    spawned
        .stderr
        .read_to_string(&mut stderr)
        .await
        .expect("stderr");
    assert!(
        stderr.contains("fork"),
        "no fork failed (exit {exit:?}): {stderr}"
    );
    let started = marker_processes(marker).len();
    assert!(
        (1..20).contains(&started),
        "{started} sleeps started under pids.max 20"
    );

    // The shell died of its failed fork; its sleeps are orphans only the cgroup still knows.
    agent.remove();
    wait_until("the sleeps are gone", Duration::from_secs(2), || {
        marker_processes(marker).is_empty()
    });
    assert!(!dir.exists(), "{} was not removed", dir.display());
}

#[tokio::test]
async fn memory_max_has_the_kernel_kill_a_process_that_allocates_past_it() {
    let instance = Instance::create("test-memory");
    let limits = ResourceLimits {
        memory_max: Some(64 * MIB),
        ..ResourceLimits::default()
    };
    let agent = instance
        .control
        .prepare(AGENT, &limits, None)
        .expect("valid limits");
    cgroup_dir(&agent, LimitKind::MemoryMax);
    // tail keeps a line that never ends in memory: it grows with every byte it is fed.
    let mut spawned = spawn_with_pipes(&spec("exec tail", &agent)).expect("spawn");
    let exit = {
        let mut stdin = spawned.stdin;
        let feed = tokio::spawn(async move {
            let chunk = vec![0u8; MIB as usize];
            for _ in 0..256 {
                if stdin.write_all(&chunk).await.is_err() {
                    break;
                }
            }
        });
        let drain = tokio::spawn(async move {
            let _ = tokio::io::copy(&mut spawned.stdout, &mut tokio::io::sink()).await;
        });
        let exit = tokio::time::timeout(Duration::from_secs(30), spawned.child.wait())
            .await
            .expect("tail did not end")
            .expect("wait");
        feed.await.expect("feeder");
        drain.await.expect("drain");
        exit
    };
    assert_eq!(
        exit,
        ExitInfo {
            code: None,
            signal: Some(9)
        },
        "tail holding 256 MiB under a 64 MiB limit was not OOM-killed"
    );
    agent.remove();
}

#[tokio::test]
async fn cpu_weight_is_written_and_the_child_joins_every_limit_cgroup() {
    let instance = Instance::create("test-cpu");
    eprintln!("on this machine: {}", instance.control);
    let limits = ResourceLimits {
        memory_max: Some(512 * MIB),
        pids_max: Some(100),
        cpu_weight: Some(50),
    };
    let agent = instance
        .control
        .prepare(AGENT, &limits, None)
        .expect("valid limits");
    eprintln!("applied: {}", agent.applied());
    let cpu_dir = cgroup_dir(&agent, LimitKind::CpuWeight);
    let (file, value) = if cpu_dir.join("cpu.shares").exists() {
        ("cpu.shares", "512")
    } else {
        ("cpu.weight", "50")
    };
    assert_eq!(
        std::fs::read_to_string(cpu_dir.join(file))
            .expect("cpu file")
            .trim(),
        value
    );

    let marker = "7.1302";
    let mut spawned =
        spawn_with_pipes(&spec(&format!("exec sleep {marker}"), &agent)).expect("spawn");
    let own = std::fs::read_to_string(format!("/proc/{}/cgroup", spawned.child.pid()))
        .expect("the child's cgroups");
    for kind in LimitKind::ALL {
        let dir = cgroup_dir(&agent, kind);
        let relative = dir
            .strip_prefix(dir.ancestors().nth(2).expect("instance and agent"))
            .expect("below the instance");
        assert!(
            own.lines()
                .any(|line| line.ends_with(&format!("/{}", relative.display()))),
            "the child is not in {} for {kind}: {own}",
            dir.display()
        );
    }
    agent.remove();
    let exit = exit_of(&mut spawned, Duration::from_secs(2)).await;
    assert_eq!(exit.signal, Some(9), "removal kills what is left");
}

#[tokio::test]
async fn without_cgroups_memory_and_pids_fall_back_to_rlimits() {
    // Injected: no cgroup of any version can take a limit.
    let control = ResourceControl::with_layout(
        "test-rlimit",
        std::process::id(),
        None,
        &CgroupLayout::default(),
    );
    let limits = ResourceLimits {
        memory_max: Some(64 * MIB),
        pids_max: Some(20),
        cpu_weight: Some(50),
    };
    let agent = control.prepare(AGENT, &limits, None).expect("valid limits");
    let mechanisms: Vec<String> = agent
        .applied()
        .0
        .iter()
        .map(|a| match &a.enforcement {
            Enforcement::Rlimit {
                resource, value, ..
            } => format!("{resource}={value}"),
            Enforcement::NotApplied { .. } => "not applied".to_owned(),
            Enforcement::Cgroup { .. } => "cgroup".to_owned(),
        })
        .collect();
    assert_eq!(
        mechanisms,
        ["RLIMIT_AS=67108864", "RLIMIT_NPROC=20", "not applied"]
    );

    let mut spawned = spawn_with_pipes(&spec(
        "grep -E 'address space|processes' /proc/self/limits; head -c 256M /dev/zero | tail",
        &agent,
    ))
    .expect("spawn");
    let exit = exit_of(&mut spawned, Duration::from_secs(10)).await;
    let (mut stdout, mut stderr) = (String::new(), String::new());
    spawned
        .stdout
        .read_to_string(&mut stdout)
        .await
        .expect("stdout");
    spawned
        .stderr
        .read_to_string(&mut stderr)
        .await
        .expect("stderr");
    assert!(
        stdout.contains("Max address space         67108864             67108864"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Max processes             20                   20"),
        "{stdout}"
    );
    assert_eq!(
        exit.code,
        Some(1),
        "tail gets no memory past the limit: {stderr}"
    );
    assert!(stderr.contains("memory exhausted"), "{stderr}");
}

#[tokio::test]
async fn a_restarted_daemon_removes_the_v1_cgroups_and_processes_an_earlier_one_left() {
    let Some(hierarchy) = CgroupLayout::detect()
        .expect("layout")
        .v1_hierarchy("pids")
        .cloned()
    else {
        eprintln!("skipped: no cgroup v1 pids hierarchy on this machine");
        return;
    };
    // What a daemon SIGKILLed with an agent running leaves: its instance, the agent's cgroup and a
    // process in it.
    let stale = hierarchy.own_dir.join("celistra-test-stale-4194305");
    let agent_dir = stale.join(AGENT);
    std::fs::create_dir_all(&agent_dir).expect("stale cgroup");
    let marker = "7.1303";
    let procs = agent_dir.join("cgroup.procs");
    let mut straggler = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > '{}' && exec sleep {marker}",
            procs.display()
        ))
        .spawn()
        .expect("straggler");
    wait_until("the straggler runs", Duration::from_secs(2), || {
        !marker_processes(marker).is_empty()
    });

    let _instance = Instance::create("test-stale");
    assert!(
        !Path::new(&stale).exists(),
        "the stale instance is still there"
    );
    let status = straggler.wait().expect("straggler exit");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
}
