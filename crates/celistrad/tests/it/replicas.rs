//! Groups of instances (`--instances`) and the listening socket they share (`--socket`): instance
//! numbers, scaling, group verbs, load shared across instances (sandboxed and not), a rolling
//! restart without a refused connection, the socket kept across an upgrade, and clear refusals.

use std::time::{Duration, Instant};

use celistra_proto::{AgentInfo, AgentSpec, AgentState, ScaleRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{Daemon, PATIENCE, get_text};

/// A tiny HTTP/1.0 server on the socket it was handed (fd 3), answering
/// `INSTANCE PID LISTEN_PID-is-mine` to every request. It does nothing until it sees its own pid in
/// `LISTEN_PID`, as socket activation libraries check.
const SERVER: &str = r#"
import os, socket
me = os.environ["CELISTRA_INSTANCE"]
mine = os.environ.get("LISTEN_PID") == str(os.getpid()) and os.environ.get("LISTEN_FDS") == "1"
listener = socket.socket(fileno=3)
print("serving", me, flush=True)
while True:
    conn, _ = listener.accept()
    conn.recv(65536)
    body = ("%s %d %s" % (me, os.getpid(), mine)).encode()
    conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
    conn.close()
"#;

/// The system's Python 3 (not a user's shim, which a sandbox may not see).
fn python() -> &'static str {
    ["/usr/bin/python3", "/usr/local/bin/python3"]
        .into_iter()
        .find(|path| std::path::Path::new(path).exists())
        .expect("these tests need python3 in /usr/bin or /usr/local/bin")
}

/// A loopback port free right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The spec of a group `name` of `instances` servers sharing `socket`.
fn server_spec(daemon: &Daemon, name: &str, instances: u32, socket: &str) -> AgentSpec {
    std::fs::write(daemon.work.path().join("server.py"), SERVER).expect("write server.py");
    AgentSpec {
        name: name.into(),
        command: format!("{} server.py", python()),
        instances: Some(instances),
        socket: Some(socket.into()),
        ..AgentSpec::default()
    }
}

/// Spawns the group of `spec` and waits until every instance serves.
async fn start_group(daemon: &Daemon, spec: AgentSpec) {
    let (name, instances) = (spec.name.clone(), spec.instances.unwrap_or(1));
    daemon.spawn(spec).await;
    for index in 0..instances {
        wait_serving(daemon, &format!("{name}-{index}")).await;
    }
}

/// A group `name` of `instances` sandboxed servers sharing loopback port `port`.
async fn server_group(daemon: &Daemon, name: &str, instances: u32, port: u16) {
    start_group(
        daemon,
        server_spec(daemon, name, instances, &port.to_string()),
    )
    .await;
}

/// Where requests go: a loopback port or a Unix socket.
#[derive(Clone)]
enum Target {
    Port(u16),
    Path(std::path::PathBuf),
}

/// Waits until the instance's server has printed that it serves (bounded).
async fn wait_serving(daemon: &Daemon, agent: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let info = daemon.agent(agent).await;
        let logs = get_text(&daemon.client, &format!("/v1/agents/{agent}/logs")).await;
        if info.state == AgentState::Running && logs.contains("serving") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{agent} never served: {info:?}\n{logs}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One request on a fresh connection to loopback port `port`: the answer's body, or what went
/// wrong.
async fn ask(port: u16) -> Result<String, String> {
    ask_at(&Target::Port(port)).await
}

async fn ask_at(target: &Target) -> Result<String, String> {
    let exchange = async {
        match target {
            Target::Port(port) => {
                let stream = tokio::net::TcpStream::connect(("127.0.0.1", *port))
                    .await
                    .map_err(|e| format!("connect: {e}"))?;
                http_get(stream).await
            }
            Target::Path(path) => {
                let stream = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(|e| format!("connect: {e}"))?;
                http_get(stream).await
            }
        }
    };
    tokio::time::timeout(PATIENCE, exchange)
        .await
        .unwrap_or_else(|_| Err("no answer in time".into()))
}

/// `GET /` over `stream`: the answer's body.
async fn http_get(
    mut stream: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
) -> Result<String, String> {
    {
        stream
            .write_all(b"GET / HTTP/1.0\r\n\r\n")
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut answer = String::new();
        stream
            .read_to_string(&mut answer)
            .await
            .map_err(|e| format!("read: {e}"))?;
        answer
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .ok_or_else(|| format!("no HTTP answer: {answer:?}"))
    }
}

/// The answers of `count` requests, each on its own connection, as `(instance, pid)`; every
/// server must have found its own pid in `LISTEN_PID`.
async fn spread(port: u16, count: usize) -> Vec<(String, u32)> {
    spread_at(&Target::Port(port), count).await
}

async fn spread_at(target: &Target, count: usize) -> Vec<(String, u32)> {
    let mut seen = vec![];
    for _ in 0..count {
        let body = ask_at(target)
            .await
            .expect("a request through the shared socket");
        let fields: Vec<&str> = body.split(' ').collect();
        assert_eq!(
            fields.get(2),
            Some(&"True"),
            "LISTEN_PID/LISTEN_FDS wrong: {body}"
        );
        seen.push((fields[0].to_owned(), fields[1].parse().expect("a pid")));
    }
    seen
}

fn instances_answering(answers: &[(String, u32)]) -> std::collections::BTreeSet<String> {
    answers
        .iter()
        .map(|(instance, _)| instance.clone())
        .collect()
}

fn names(agents: &[AgentInfo]) -> Vec<String> {
    let mut names: Vec<String> = agents.iter().map(|a| a.name.clone()).collect();
    names.sort();
    names
}

#[tokio::test]
async fn instances_know_their_number_and_a_group_scales_stops_starts_and_goes_as_one() {
    let mut daemon = Daemon::start().await;
    let spec = AgentSpec {
        name: "worker".into(),
        command: "echo \"instance=$CELISTRA_INSTANCE\"; sleep 600".into(),
        instances: Some(3),
        ..AgentSpec::default()
    };
    daemon.spawn(spec).await;
    let agents = daemon.client.list_agents().await.unwrap();
    assert_eq!(names(&agents), ["worker-0", "worker-1", "worker-2"]);
    for index in 0..3 {
        let agent = format!("worker-{index}");
        daemon.wait_state(&agent, AgentState::Running).await;
        let deadline = Instant::now() + PATIENCE;
        while !get_text(&daemon.client, &format!("/v1/agents/{agent}/logs"))
            .await
            .contains(&format!("instance={index}"))
        {
            assert!(Instant::now() < deadline, "{agent} never said its number");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // The group's name is taken, as are its instances' names.
    let again = daemon.ctl(&["spawn", "--name", "worker", "--", "sleep 1"]);
    assert_eq!(again.status.code(), Some(1));

    // Verbs on the group's name act on every instance.
    let stopped = daemon.ctl(&["stop", "worker"]);
    assert!(stopped.status.success(), "{stopped:?}");
    assert_eq!(
        String::from_utf8_lossy(&stopped.stdout).trim(),
        "stopped group worker (every instance)"
    );
    for index in 0..3 {
        daemon
            .wait_state(&format!("worker-{index}"), AgentState::Stopped)
            .await;
    }
    assert!(daemon.ctl(&["start", "worker"]).status.success());
    for index in 0..3 {
        daemon
            .wait_state(&format!("worker-{index}"), AgentState::Running)
            .await;
    }

    // Scaling adds and removes the highest-numbered instances.
    let scaled = daemon.ctl(&["scale", "worker", "5"]);
    assert!(scaled.status.success(), "{scaled:?}");
    assert_eq!(
        String::from_utf8_lossy(&scaled.stdout).trim(),
        "scaled worker: worker-0 worker-1 worker-2 worker-3 worker-4"
    );
    daemon.wait_state("worker-4", AgentState::Running).await;
    let down = daemon
        .client
        .scale_group("worker", &ScaleRequest { instances: 2 })
        .await
        .unwrap();
    assert_eq!(down.instances, ["worker-0", "worker-1"]);
    let agents = daemon.client.list_agents().await.unwrap();
    assert_eq!(names(&agents), ["worker-0", "worker-1"]);

    // The group survives the daemon's restart: it scales from its template afterwards.
    crate::run_kill("TERM", daemon.pid());
    daemon.wait_exit();
    daemon.restart_process().await;
    daemon.wait_state("worker-1", AgentState::Running).await;
    let up = daemon
        .client
        .scale_group("worker", &ScaleRequest { instances: 3 })
        .await
        .unwrap();
    assert_eq!(up.instances, ["worker-0", "worker-1", "worker-2"]);
    daemon.wait_state("worker-2", AgentState::Running).await;
    let audit = daemon.ctl(&["audit", "ls", "--action", "group_scaled", "--json"]);
    assert!(
        String::from_utf8_lossy(&audit.stdout).contains("group_scaled"),
        "scaling is audited: {audit:?}"
    );

    // `rm` of the group removes every instance and the group.
    let removed = daemon.ctl(&["rm", "worker"]);
    assert!(removed.status.success(), "{removed:?}");
    assert!(daemon.client.list_agents().await.unwrap().is_empty());
    let gone = daemon.ctl(&["scale", "worker", "2"]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&gone.stderr).contains("no group named `worker`"));
}

#[tokio::test]
async fn requests_through_a_shared_socket_reach_every_instance_sandboxed_or_not() {
    let daemon = Daemon::start().await;
    let unix_path = daemon.work.path().join("web.sock");
    let cases = [
        ("sandboxed", vec![], vec![], Target::Port(free_port())),
        (
            "offline",
            vec![],
            vec!["network".to_owned()],
            Target::Port(free_port()),
        ),
        (
            "unsandboxed",
            vec!["privileged".to_owned()],
            vec![],
            Target::Port(free_port()),
        ),
        ("unix", vec![], vec![], Target::Path(unix_path.clone())),
    ];
    for (group, capabilities, drop_capabilities, target) in cases {
        let socket = match &target {
            Target::Port(port) => port.to_string(),
            Target::Path(path) => path.display().to_string(),
        };
        let spec = AgentSpec {
            capabilities,
            drop_capabilities,
            ..server_spec(&daemon, group, 2, &socket)
        };
        start_group(&daemon, spec).await;
        let sandboxed = daemon
            .agent(&format!("{group}-0"))
            .await
            .sandbox
            .is_some_and(|s| s.sandboxed);
        assert_eq!(sandboxed, group != "unsandboxed", "{group}");
        let answers = spread_at(&target, 60).await;
        let answering = instances_answering(&answers);
        assert_eq!(
            answering.into_iter().collect::<Vec<_>>(),
            ["0", "1"],
            "{group}: both instances answer within 60 requests"
        );
    }
}

#[tokio::test]
async fn a_rolling_restart_refuses_no_connection_and_replaces_every_instance() {
    let daemon = Daemon::start().await;
    let port = free_port();
    server_group(&daemon, "web", 2, port).await;
    let before: Vec<u32> = [
        daemon.agent("web-0").await.pid,
        daemon.agent("web-1").await.pid,
    ]
    .into_iter()
    .map(|pid| pid.expect("a running instance"))
    .collect();

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client_loop = tokio::spawn({
        let stop = std::sync::Arc::clone(&stop);
        async move {
            let (mut answered, mut failed) = (0u32, vec![]);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match ask(port).await {
                    Ok(_) => answered += 1,
                    Err(e) => failed.push(e),
                }
            }
            (answered, failed)
        }
    });
    let restarted = daemon.ctl(&["restart", "web", "--rolling"]);
    assert!(restarted.status.success(), "{restarted:?}");
    // A last moment of traffic on the new instances.
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (answered, failed) = client_loop.await.unwrap();
    assert!(
        failed.is_empty(),
        "{} requests failed: {failed:?}",
        failed.len()
    );
    assert!(answered > 20, "only {answered} requests in the restart");

    for (index, old) in before.iter().enumerate() {
        let agent = format!("web-{index}");
        let now = daemon.agent(&agent).await;
        assert_eq!(now.state, AgentState::Running);
        assert_ne!(now.pid, Some(*old), "{agent} was not replaced");
    }
    let answers = spread(port, 40).await;
    assert!(answers.iter().all(|(_, pid)| !before.contains(pid)));
}

#[tokio::test]
async fn the_shared_socket_survives_an_upgrade_on_the_same_port() {
    let mut daemon = Daemon::start().await;
    let port = free_port();
    server_group(&daemon, "api", 2, port).await;
    spread(port, 4).await;
    // Twice: the second image hands over the socket it took back though no run asked for it.
    for _ in 0..2 {
        let before = daemon.client.get_health().await.unwrap().started_at_ms;
        let upgraded = daemon.ctl(&["daemon", "upgrade"]);
        assert!(upgraded.status.success(), "{upgraded:?}");
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(client) = celistra_client::Client::for_home(daemon.home(), "test")
                && client
                    .get_health()
                    .await
                    .is_ok_and(|h| h.started_at_ms > before)
            {
                daemon.client = client;
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the upgraded daemon never answered"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        spread(port, 10).await;
    }
    // A new instance after the upgrade gets the same socket, not a new one.
    daemon
        .client
        .scale_group("api", &ScaleRequest { instances: 3 })
        .await
        .unwrap();
    wait_serving(&daemon, "api-2").await;
    let answers = spread(port, 90).await;
    assert!(
        instances_answering(&answers).contains("2"),
        "the instance spawned after the upgrade shares the port"
    );
    assert_eq!(
        listening_sockets(port),
        1,
        "one socket, not one bound again"
    );
}

/// How many sockets listen on loopback port `port` (`/proc/net/tcp`, state `0A`).
fn listening_sockets(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    let local = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.get(1) == Some(&local.as_str()) && fields.get(3) == Some(&"0A")
        })
        .count()
}

#[tokio::test]
async fn a_privileged_malformed_or_taken_socket_address_is_refused_saying_why() {
    let daemon = Daemon::start().await;
    let work = daemon.work.path().display().to_string();
    let spawn_group = |socket: &str| {
        daemon.ctl(&[
            "spawn",
            "--name",
            "svc",
            "--workspace",
            &work,
            "--instances",
            "2",
            "--socket",
            socket,
            "--",
            "sleep 600",
        ])
    };
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port().to_string();
    for (socket, says) in [
        ("80", "below 1024"),
        ("localhost:8080", "neither a port"),
        (taken_port.as_str(), "another program listens there"),
    ] {
        let output = spawn_group(socket);
        assert_eq!(output.status.code(), Some(1), "{socket}: {output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(says), "{socket}: {stderr}");
    }
    assert!(daemon.client.list_agents().await.unwrap().is_empty());
    // Nothing of the refused groups is left: the name is free.
    drop(taken);
    let output = spawn_group(&taken_port);
    assert!(output.status.success(), "{output:?}");
}

#[tokio::test]
async fn after_a_daemon_crash_adopted_and_new_instances_both_serve_the_port() {
    let mut daemon = Daemon::start().await;
    let port = free_port();
    server_group(&daemon, "svc", 2, port).await;
    crate::run_kill("KILL", daemon.pid());
    daemon.wait_exit();
    // The adopted instances still accept on the old socket meanwhile.
    spread(port, 4).await;
    daemon.restart_process().await;
    daemon.wait_state("svc-1", AgentState::Running).await;
    spread(port, 4).await;
    // A restarted instance gets the socket the new daemon bound beside the old one.
    let old = daemon.agent("svc-1").await.pid;
    assert!(daemon.ctl(&["restart", "svc-1"]).status.success());
    daemon
        .wait_agent("svc-1", "restarted", |a| {
            a.state == AgentState::Running && a.pid != old
        })
        .await;
    wait_serving(&daemon, "svc-1").await;
    let answers = spread(port, 80).await;
    assert_eq!(
        instances_answering(&answers)
            .into_iter()
            .collect::<Vec<_>>(),
        ["0", "1"],
        "both the adopted and the restarted instance take connections"
    );
}

#[tokio::test]
async fn apply_scales_a_group_whose_size_alone_changed_and_prunes_it_whole() {
    let daemon = Daemon::start().await;
    let spec = AgentSpec {
        name: "pool".into(),
        command: "sleep 600".into(),
        workspace: Some(daemon.work.path().display().to_string()),
        instances: Some(2),
        ..AgentSpec::default()
    };
    let apply = |agents: Vec<AgentSpec>, prune| celistra_proto::ApplyRequest {
        agents,
        prune,
        dry_run: false,
    };
    let created = daemon
        .client
        .apply(&apply(vec![spec.clone()], false))
        .await
        .unwrap();
    assert_eq!(created.created, ["pool"]);
    let first = daemon.wait_state("pool-0", AgentState::Running).await;
    let again = daemon
        .client
        .apply(&apply(vec![spec.clone()], false))
        .await
        .unwrap();
    assert_eq!(again.unchanged, ["pool"]);

    let bigger = AgentSpec {
        instances: Some(3),
        ..spec.clone()
    };
    let scaled = daemon
        .client
        .apply(&apply(vec![bigger.clone()], false))
        .await
        .unwrap();
    assert_eq!(scaled.updated, ["pool"]);
    daemon.wait_state("pool-2", AgentState::Running).await;
    assert_eq!(
        daemon.agent("pool-0").await.pid,
        first.pid,
        "a change of size alone leaves the running instances alone"
    );

    let changed = AgentSpec {
        command: "sleep 700".into(),
        ..bigger
    };
    daemon
        .client
        .apply(&apply(vec![changed], false))
        .await
        .unwrap();
    let replaced = daemon.wait_state("pool-0", AgentState::Running).await;
    assert_eq!(replaced.command, "sleep 700");
    assert_eq!(daemon.client.list_agents().await.unwrap().len(), 3);

    let pruned = daemon.client.apply(&apply(vec![], true)).await.unwrap();
    assert_eq!(pruned.removed, ["pool"]);
    assert!(daemon.client.list_agents().await.unwrap().is_empty());
}
