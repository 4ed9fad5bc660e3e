//! Integration tests: a real `celistrad` process per test, in its own temporary state directory,
//! driven through the HTTP client and the `ctl` command line. Every wait is bounded.

#![allow(
    clippy::disallowed_methods,
    reason = "tests start daemons, `ctl`, browsers and helpers, and signal them"
)]

mod api;
mod approvals;
mod attach;
mod audit;
mod awareness;
mod cli;
mod contract;
mod dashboard;
mod edge;
mod fleet;
mod fleet_cli;
mod fuzz;
mod history;
mod hooks;
mod import;
mod machine;
mod metrics;
mod netns;
mod notifications;
mod probes;
mod recipes;
mod remote;
mod replicas;
mod roles;
mod sandbox;
mod schedule;
mod secrets;
mod service;
mod standby;
mod supervision;
mod survival;
mod terminal;
mod tidy;
mod tls;
mod usage;
mod watch;
mod worktree;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use celistra_client::{Client, next_chunk};
use celistra_proto::{
    AgentInfo, AgentSpec, AgentState, Event, EventsQuery, HistoryQuery, RunRecord,
};
use http_body_util::BodyExt;

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_celistrad");
/// Upper bound of any single wait in these tests.
pub(crate) const PATIENCE: Duration = Duration::from_secs(20);

/// A running daemon on a temporary state directory; stopped (and its agents with it) on drop.
pub(crate) struct Daemon {
    pub dir: tempfile::TempDir,
    /// Default workspace of agents spawned through [`Daemon::spawn`]: outside the state directory,
    /// which a sandbox never sees.
    pub work: tempfile::TempDir,
    pub process: Option<Child>,
    pub client: Client,
    /// How the daemon process is started (again, by `restart_process`).
    launch: Launch,
}

/// How to start the daemon process.
#[derive(Clone, Default)]
struct Launch {
    env: Vec<(String, String)>,
    /// Run as this (uid, gid), from a copy of the binary (in the directory) that user can execute.
    user: Option<(u32, u32, std::sync::Arc<tempfile::TempDir>)>,
    /// Extra daemon flags (`--listen` among them replaces the loopback default).
    args: Vec<String>,
    /// Run inside this network namespace (`ip netns exec`, as root: not with `user`).
    netns: Option<String>,
    /// Run this binary rather than the one cargo built (a copy a test replaces).
    binary: Option<PathBuf>,
}

impl Daemon {
    pub(crate) async fn start() -> Daemon {
        Daemon::start_in_dir(tempfile::tempdir().expect("temp dir"), Launch::default()).await
    }

    /// Starts a daemon with extra environment variables.
    pub(crate) async fn start_with_env(env: &[(&str, &str)]) -> Daemon {
        let launch = Launch {
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..Launch::default()
        };
        Daemon::start_in_dir(tempfile::tempdir().expect("temp dir"), launch).await
    }

    /// Starts a daemon with extra flags (`--tls`, …).
    pub(crate) async fn start_with_args(args: &[&str]) -> Daemon {
        let launch = Launch {
            args: args.iter().map(|&arg| arg.to_owned()).collect(),
            ..Launch::default()
        };
        Daemon::start_in_dir(tempfile::tempdir().expect("temp dir"), launch).await
    }

    /// Starts a daemon with extra flags inside the network namespace `netns` (a [`netns::Host`]'s):
    /// its TCP listener is that host's, while its state directory and Unix socket stay on the
    /// shared filesystem, where `client` and `ctl` reach it from the test.
    pub(crate) async fn start_in_netns(netns: &str, args: &[&str]) -> Daemon {
        let launch = Launch {
            args: args.iter().map(|&arg| arg.to_owned()).collect(),
            netns: Some(netns.to_owned()),
            ..Launch::default()
        };
        Daemon::start_in_dir(tempfile::tempdir().expect("temp dir"), launch).await
    }

    /// Starts a daemon running as the unprivileged user `(uid, gid)`, from a copy of the binary in a
    /// directory that user can reach, on a state directory it owns.
    pub(crate) async fn start_as((uid, gid): (u32, u32)) -> Daemon {
        use std::os::unix::fs::PermissionsExt;
        let bin_dir = tempfile::Builder::new()
            .prefix("celistra-bin-")
            .tempdir_in("/var/tmp")
            .expect("bin dir");
        let bin = bin_dir.path().join("celistrad");
        std::fs::copy(BIN, &bin).expect("copy celistrad");
        for path in [bin_dir.path(), &bin] {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        let dir = tempfile::tempdir().expect("temp dir");
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown home");
        let launch = Launch {
            env: vec![("HOME".into(), dir.path().display().to_string())],
            user: Some((uid, gid, std::sync::Arc::new(bin_dir))),
            ..Launch::default()
        };
        Daemon::start_in_dir(dir, launch).await
    }

    /// Starts a daemon whose `config.json` holds `config`.
    pub(crate) async fn start_with_config(config: &str) -> Daemon {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("config.json"), config).expect("write config");
        Daemon::start_on(dir).await
    }

    /// Starts a daemon on a state directory the test prepared (removed with the daemon).
    /// Starts a daemon from `binary` (a copy of the built one, which the test may replace).
    pub(crate) async fn start_from(binary: &Path) -> Daemon {
        let launch = Launch {
            binary: Some(binary.to_path_buf()),
            ..Launch::default()
        };
        Daemon::start_in_dir(tempfile::tempdir().expect("temp dir"), launch).await
    }

    pub(crate) async fn start_on(dir: tempfile::TempDir) -> Daemon {
        Daemon::start_in_dir(dir, Launch::default()).await
    }

    /// Starts a daemon whose state directory is `home` (created; removed with the daemon).
    pub(crate) async fn start_in(home: PathBuf) -> Daemon {
        std::fs::create_dir_all(&home).expect("create home");
        Daemon::start_in_dir(
            tempfile::TempDir::new_in(&home).expect("temp dir"),
            Launch::default(),
        )
        .await
    }

    async fn start_in_dir(dir: tempfile::TempDir, launch: Launch) -> Daemon {
        let process = spawn_daemon(dir.path(), &launch);
        let client = wait_until_serving(dir.path()).await;
        let work = tempfile::Builder::new()
            .prefix("celistra-work-")
            .tempdir()
            .expect("work dir");
        if let Some((uid, gid, _)) = &launch.user {
            std::os::unix::fs::chown(work.path(), Some(*uid), Some(*gid)).expect("chown work");
        }
        Daemon {
            dir,
            work,
            process: Some(process),
            client,
            launch,
        }
    }

    /// Starts another daemon process on the same state directory (after a crash or a stop).
    pub(crate) async fn restart_process(&mut self) {
        self.process = Some(spawn_daemon(self.dir.path(), &self.launch));
        self.client = wait_until_serving(self.dir.path()).await;
    }

    pub(crate) fn home(&self) -> &Path {
        self.dir.path()
    }

    /// The machine secret (an owner token).
    pub(crate) fn secret(&self) -> String {
        let text = std::fs::read_to_string(self.home().join("auth.json")).expect("auth.json");
        let auth: serde_json::Value = serde_json::from_str(&text).expect("auth json");
        auth["secret"].as_str().expect("secret").to_owned()
    }

    /// The bound TCP address (`http.addr`).
    pub(crate) fn tcp_addr(&self) -> std::net::SocketAddr {
        std::fs::read_to_string(self.home().join("http.addr"))
            .expect("http.addr")
            .trim()
            .parse()
            .expect("address")
    }

    pub(crate) fn pid(&self) -> u32 {
        self.process.as_ref().expect("daemon running").id()
    }

    /// Sends `signal` to the daemon and waits (bounded) for it to exit; returns its exit status.
    /// The pid of the keeper holding this daemon's agents, while one lives.
    pub(crate) fn keeper_pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.home().join("keeper/keeper.lock")).ok()?;
        let pid: u32 = text.trim().parse().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        // Its own keeper, not another test's that took a reused pid.
        let dir = self.home().join("keeper");
        let mut args = cmdline.split(|&b| b == 0);
        let ours = args.nth(1) == Some(&b"__keeper"[..])
            && args.next() == Some(dir.as_os_str().as_encoded_bytes());
        ours.then_some(pid)
    }

    pub(crate) fn signal_and_wait(&mut self, signal: &str) -> std::process::ExitStatus {
        run_kill(signal, self.pid());
        self.wait_exit()
    }

    /// Waits (bounded) until the daemon process exits, which something else made it do.
    pub(crate) fn wait_exit(&mut self) -> std::process::ExitStatus {
        let mut child = self.process.take().expect("daemon running");
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "the daemon did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub(crate) fn ctl(&self, args: &[&str]) -> std::process::Output {
        Command::new(BIN)
            .arg("ctl")
            .arg("--home")
            .arg(self.home())
            .args(args)
            .output()
            .expect("run ctl")
    }

    pub(crate) async fn spawn(&self, spec: AgentSpec) -> AgentInfo {
        let spec = AgentSpec {
            workspace: spec
                .workspace
                .or_else(|| Some(self.work.path().display().to_string())),
            ..spec
        };
        self.client.spawn_agent(&spec).await.expect("spawn")
    }

    pub(crate) async fn agent(&self, key: &str) -> AgentInfo {
        self.client.get_agent(key).await.expect("get agent")
    }

    /// Polls the agent until `done` holds (bounded by [`PATIENCE`]).
    pub(crate) async fn wait_agent(
        &self,
        key: &str,
        what: &str,
        done: impl Fn(&AgentInfo) -> bool,
    ) -> AgentInfo {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let agent = self.agent(key).await;
            if done(&agent) {
                return agent;
            }
            assert!(
                Instant::now() < deadline,
                "agent {key} never became {what}: {agent:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Polls the agent's run history until `done` holds (bounded by [`PATIENCE`]): a run's
    /// record is written after its end is seen.
    pub(crate) async fn wait_runs(
        &self,
        agent: &str,
        done: impl Fn(&[RunRecord]) -> bool,
    ) -> Vec<RunRecord> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let runs = self
                .client
                .list_runs(&HistoryQuery {
                    agent: Some(agent.to_owned()),
                    ..Default::default()
                })
                .await
                .expect("history");
            if done(&runs) {
                return runs;
            }
            assert!(
                Instant::now() < deadline,
                "history of {agent} never matched: {runs:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub(crate) async fn wait_state(&self, key: &str, state: AgentState) -> AgentInfo {
        self.wait_agent(key, state.as_str(), |a| a.state == state)
            .await
    }

    /// Reads events after `after` until `stop` returns true for one (bounded).
    pub(crate) async fn events_until(
        &self,
        after: u64,
        stop: impl Fn(&Event) -> bool,
    ) -> Vec<Event> {
        let query = EventsQuery {
            after: Some(after),
            ..EventsQuery::default()
        };
        let mut events = self.client.stream_events(&query).await.expect("events");
        let mut seen = vec![];
        let collect = async {
            while let Some(frame) = events.next_frame().await.expect("event stream") {
                let event: Event = serde_json::from_str(&frame.data).expect("event json");
                let last = stop(&event);
                seen.push(event);
                if last {
                    return;
                }
            }
        };
        tokio::time::timeout(PATIENCE, collect)
            .await
            .expect("expected event never came");
        seen
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.process.take() {
            run_kill("TERM", child.id());
            let deadline = Instant::now() + PATIENCE;
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // A test that killed its daemon left the agents to the keeper: their death signal and
        // the keeper's guard end them with it.
        if let Some(keeper) = self.keeper_pid() {
            run_kill("KILL", keeper);
        }
    }
}

fn spawn_daemon(home: &Path, launch: &Launch) -> Child {
    use std::os::unix::process::CommandExt;
    let mut command = match (&launch.user, &launch.netns) {
        (Some((uid, gid, bin_dir)), None) => {
            // std clears the supplementary groups when a root parent sets the uid.
            let mut command = Command::new(bin_dir.path().join("celistrad"));
            command.uid(*uid).gid(*gid);
            command
        }
        (None, None) => Command::new(launch.binary.as_deref().unwrap_or(Path::new(BIN))),
        // `ip netns exec` enters the namespace and execs the daemon in its own place, so the child
        // is the daemon itself (its pid, its signals).
        (None, Some(netns)) => {
            let mut command = Command::new("ip");
            command.args(["netns", "exec", netns, BIN]);
            command
        }
        (Some(_), Some(_)) => panic!("a daemon runs as another user or in a namespace, not both"),
    };
    if !launch.args.iter().any(|arg| arg == "--listen") {
        command.args(["--listen", "127.0.0.1:0"]);
    }
    command
        .arg("--home")
        .arg(home)
        .args(&launch.args)
        .env("CELISTRA_LOG", "warn")
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start celistrad")
}

pub(crate) async fn wait_until_serving(home: &Path) -> Client {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Ok(client) = Client::for_home(home, "test")
            && client.get_health().await.is_ok()
        {
            return client;
        }
        assert!(
            Instant::now() < deadline,
            "daemon at {} never answered",
            home.display()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The parent pid of process `pid` (0 once it is gone).
pub(crate) fn parent_of(pid: u32) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the command name in parentheses: state, then the parent's pid.
    stat.rsplit(')')
        .next()
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|ppid| ppid.parse().ok())
        .unwrap_or(0)
}

/// Milliseconds since the epoch, as the daemon stamps things.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Runs `command` with `stdin` as its input to its end, which must come within [`PATIENCE`]
/// (then it is killed): its output, or why there is none.
pub(crate) fn output_within(command: &mut Command, stdin: &str) -> Result<Output, String> {
    use std::io::Write;
    let mut child: Child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start: {e}"))?;
    let mut input = child.stdin.take().expect("piped stdin");
    input
        .write_all(stdin.as_bytes())
        .map_err(|e| format!("writing its input: {e}"))?;
    drop(input);
    let pid = child.id();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(child.wait_with_output()));
    let output = match finished.recv_timeout(PATIENCE) {
        Ok(output) => output,
        Err(_) => {
            crate::run_kill("KILL", pid);
            return Err(format!("still running after {PATIENCE:?}: killed"));
        }
    };
    output.map_err(|e| format!("waiting: {e}"))
}

pub(crate) fn run_kill(signal: &str, pid: u32) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status();
}

/// A spec with the given name and command; other fields default.
pub(crate) fn spec(name: &str, command: &str) -> AgentSpec {
    AgentSpec {
        name: name.into(),
        command: command.into(),
        ..AgentSpec::default()
    }
}

/// Live (non-zombie) processes whose command line contains `marker`.
pub(crate) fn live_processes_with(marker: &str) -> Vec<u32> {
    live_processes_matching(|cmdline| cmdline.contains(marker))
}

/// Live (non-zombie) processes whose command line is exactly `command`.
pub(crate) fn live_processes_exactly(command: &str) -> Vec<u32> {
    live_processes_matching(|cmdline| cmdline.trim_end() == command)
}

fn live_processes_matching(matches: impl Fn(&str) -> bool) -> Vec<u32> {
    let mut found = vec![];
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let dir: PathBuf = entry.path();
        let Ok(cmdline) = std::fs::read(dir.join("cmdline")) else {
            continue;
        };
        let zombie = std::fs::read_to_string(dir.join("stat"))
            .map(|stat| {
                stat.rsplit_once(')')
                    .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
            })
            .unwrap_or(true);
        if !zombie && matches(&String::from_utf8_lossy(&cmdline).replace('\0', " ")) {
            found.push(pid);
        }
    }
    found
}

/// Waits (bounded) until no live process has `marker` in its command line.
pub(crate) async fn wait_no_process_with(marker: &str) {
    let deadline = Instant::now() + PATIENCE;
    while !live_processes_with(marker).is_empty() {
        assert!(
            Instant::now() < deadline,
            "processes with `{marker}` survived: {:?}",
            live_processes_with(marker)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A number unique to this test process and call, used as `sleep <marker>` to find a test's own
/// processes among everything else on the machine.
pub(crate) fn marker() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("{}{:03}", 100_000 + std::process::id() % 800_000, n)
}

/// A `GET` of `path` as written: its status and whole body.
pub(crate) async fn get_raw(client: &Client, path: &str) -> (hyper::StatusCode, Vec<u8>) {
    let response = client
        .send(hyper::Method::GET, path, None)
        .await
        .expect("request");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, body.to_vec())
}

/// The whole body of a `GET` of `path` as text, which must succeed: for tests of the query strings
/// the daemon takes, written as a client would send them.
pub(crate) async fn get_text(client: &Client, path: &str) -> String {
    let (status, body) = get_raw(client, path).await;
    let text = String::from_utf8_lossy(&body).into_owned();
    assert!(status.is_success(), "GET {path}: {status}: {text}");
    text
}

/// The whole of a streamed body (logs, a search, an export) as text.
pub(crate) async fn read_body(mut body: hyper::body::Incoming) -> String {
    let mut bytes = Vec::new();
    while let Some(chunk) = next_chunk(&mut body).await.expect("body") {
        bytes.extend_from_slice(&chunk);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// GET `path` as written (for tests of how the daemon reads query strings): the decoded JSON
/// answer, or the API error.
pub(crate) async fn get_json<T: serde::de::DeserializeOwned>(
    client: &Client,
    path: &str,
) -> Result<T, celistra_client::ClientError> {
    let (status, body) = get_raw(client, path).await;
    celistra_client::decode(status, &body)
}
