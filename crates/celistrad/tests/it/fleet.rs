//! The fleet on a real network: a hub and two nodes, each a daemon in its own network namespace on
//! a bridge the test makes (`netns.rs`). Pairing and its refusals, spawning and attaching a
//! terminal through the hub, a cut link, a lossy one and a slow one while the node keeps
//! supervising (no event lost or repeated in the hub's merged stream), revocation, a hub restart
//! with nodes attached; and on loopback: witnessing, a dead node, the newest link, a rogue hub.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use celistra_client::{Client, ClientError, TerminalEvent};
use celistra_proto::{
    AgentState, AuditQuery, EventKind, EventsQuery, JoinRequest, Machine, PairingCode, TerminalRole,
};

use crate::netns::{Host, Lan};
use crate::{Daemon, PATIENCE, spec};

/// Longest a silent link may stay up on the hub (PING every 10 s, 10 s timeout), with a margin
/// for this busy machine.
const SILENT_LINK_DETECTED: Duration = Duration::from_secs(30);

async fn start_hub(host: &Host) -> Daemon {
    let listen = format!("{}:0", host.ip());
    let link = format!("{}:33121", host.ip());
    Daemon::start_in_netns(
        host.netns(),
        &[
            "--listen",
            &listen,
            "--tls",
            "--hub",
            "--hub-listen",
            &link,
            "--machine-name",
            "hub",
        ],
    )
    .await
}

async fn start_node(host: &Host, name: &str) -> Daemon {
    let listen = format!("{}:0", host.ip());
    Daemon::start_in_netns(
        host.netns(),
        &["--listen", &listen, "--tls", "--machine-name", name],
    )
    .await
}

fn join_request(code: &PairingCode) -> JoinRequest {
    JoinRequest {
        hub: code.hub.clone(),
        code: code.code.clone(),
        fingerprint: code.fingerprint.clone(),
    }
}

pub(crate) async fn join(hub: &Daemon, node: &Daemon) {
    let code = hub.client.create_pairing_code().await.expect("a code");
    node.client
        .join_hub(&join_request(&code))
        .await
        .expect("the node joins");
}

/// The API error message of a refused call.
fn refusal<T: std::fmt::Debug>(result: Result<T, ClientError>) -> String {
    match result {
        Err(ClientError::Api(error)) => error.message,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Polls the hub's machine list until `done` holds for machine `name` (bounded by `within`).
pub(crate) async fn machine_until(
    hub: &Daemon,
    name: &str,
    within: Duration,
    what: &str,
    done: impl Fn(&Machine) -> bool,
) -> Machine {
    let deadline = Instant::now() + within;
    loop {
        let machines = hub.client.list_machines().await.expect("machines");
        if let Some(machine) = machines.iter().find(|m| m.name == name)
            && done(machine)
        {
            return machine.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{name} never {what} within {within:?}: {machines:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every event of a stream that is not followed.
async fn drain(mut stream: celistra_client::SseStream) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    while let Some(frame) = tokio::time::timeout(PATIENCE, stream.next_frame())
        .await
        .expect("the replay ends")
        .expect("a frame")
    {
        out.push(serde_json::from_str(&frame.data).expect("event JSON"));
    }
    out
}

/// Every event a daemon still has (its backlog), as JSON.
async fn events_of(client: &Client) -> Vec<serde_json::Value> {
    drain(client.stream_events(&EVERYTHING).await.expect("events")).await
}

/// A replay of everything still kept, not followed.
const EVERYTHING: EventsQuery = EventsQuery {
    after: Some(0),
    follow: false,
};

/// The node's own event ids after `after`, and how many times each appears in the hub's merged
/// stream for that machine.
async fn merged_counts(
    hub: &Client,
    node: &Client,
    machine: &str,
    after: u64,
) -> (Vec<u64>, BTreeMap<u64, u32>) {
    let own: Vec<u64> = events_of(node)
        .await
        .iter()
        .filter(|e| e["type"] != "resync")
        .map(|e| e["id"].as_u64().expect("an id"))
        .filter(|id| *id > after)
        .collect();
    let mut counts = BTreeMap::new();
    for event in drain(
        hub.stream_fleet_events(&EVERYTHING)
            .await
            .expect("merged events"),
    )
    .await
    {
        if event["machine"] == machine {
            *counts
                .entry(event["machine_event_id"].as_u64().expect("an id"))
                .or_insert(0) += 1;
        }
    }
    (own, counts)
}

/// Waits until every event the node emitted after `after` is in the hub's merged stream exactly
/// once.
async fn merged_stream_has_node_events_once(
    hub: &Daemon,
    node: &Daemon,
    machine: &str,
    after: u64,
) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (own, counts) = merged_counts(&hub.client, &node.client, machine, after).await;
        let repeated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            repeated.is_empty(),
            "events repeated in the merged stream: {repeated:?}"
        );
        let missing: Vec<_> = own.iter().filter(|id| !counts.contains_key(id)).collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "events of {machine} missing from the hub's merged stream: {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The id of the node's latest event.
async fn last_event_id(node: &Daemon) -> u64 {
    events_of(&node.client)
        .await
        .iter()
        .filter_map(|e| e["id"].as_u64())
        .max()
        .expect("the node has events")
}

/// Reads terminal output until it contains `text`.
async fn read_until_text(terminal: &mut celistra_client::Terminal, text: &str) -> String {
    let deadline = Instant::now() + PATIENCE;
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains(text) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, terminal.next()).await {
            Ok(TerminalEvent::Output(bytes)) => seen.extend_from_slice(&bytes),
            Ok(TerminalEvent::Control(_)) => {}
            Ok(TerminalEvent::Closed { code, reason }) => {
                panic!("terminal closed ({code} {reason}) before {text:?}")
            }
            Err(_) => panic!(
                "never saw {text:?}; saw {:?}",
                String::from_utf8_lossy(&seen)
            ),
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_and_two_nodes_pair_work_across_and_ride_out_a_cut_link_and_a_hub_restart() {
    let lan = Lan::new(&["hub", "n1", "n2"]);
    let mut hub = start_hub(lan.host("hub")).await;
    let n1 = start_node(lan.host("n1"), "n1").await;
    let n2 = start_node(lan.host("n2"), "n2").await;
    join(&hub, &n1).await;
    join(&hub, &n2).await;
    for name in ["n1", "n2"] {
        let machine = machine_until(&hub, name, PATIENCE, "came online", |m| m.online).await;
        assert_eq!(
            machine.address.as_deref(),
            Some(lan.host(name).ip().to_string().as_str())
        );
    }

    // Spawn on n1 through the hub: it runs on n1, the hub's cache lists it, and n1's audit log
    // names the hub's user.
    let on_n1 = hub.client.on_machine("n1");
    let cat = on_n1
        .spawn_agent(&spec("echoer", "cat"))
        .await
        .expect("spawned through the hub");
    assert_eq!(
        n1.client.get_agent("echoer").await.expect("on n1").id,
        cat.id
    );
    n1.wait_state("echoer", AgentState::Running).await;
    let deadline = Instant::now() + PATIENCE;
    loop {
        let fleet = hub.client.list_fleet_agents().await.expect("fleet agents");
        let listed = fleet.iter().find(|m| m.machine == "n1").is_some_and(|m| {
            m.agents
                .iter()
                .any(|a| a.id == cat.id && a.state == AgentState::Running)
        });
        if listed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the hub's cache never listed it: {fleet:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let audit = n1
        .client
        .list_audit(&AuditQuery::default())
        .await
        .expect("n1's audit");
    assert!(
        audit
            .entries
            .iter()
            .any(|e| e.action == "agent_spawned" && e.actor == "via hub hub: machine-secret"),
        "n1's audit log does not name the hub's user: {:?}",
        audit.entries
    );

    // The hub's ceiling on n1 is operator: the spec (environment values) stays n1's.
    let refused = refusal(on_n1.get_agent_spec("echoer").await);
    assert!(refused.contains("owner"), "{refused}");

    // A terminal through the hub: keystrokes reach n1's agent and its echo comes back.
    let mut terminal = on_n1
        .attach("echoer", TerminalRole::Writer)
        .await
        .expect("attached through the hub");
    terminal
        .send_input("through-the-hub\n")
        .await
        .expect("typed");
    read_until_text(&mut terminal, "through-the-hub").await;
    terminal.close().await.expect("closed");

    // Cut n1's link silently. n1 keeps supervising (an agent it starts meanwhile runs), the hub
    // marks it offline, and once the link is back the merged stream has every event n1 emitted
    // while apart, none twice.
    let echo_pid = n1.agent("echoer").await.pid;
    assert!(echo_pid.is_some());
    let cut = Instant::now();
    lan.host("n1").link_down();
    let during = n1.spawn(spec("while-apart", "sleep 1000")).await;
    n1.wait_state(&during.id, AgentState::Running).await;
    machine_until(&hub, "n1", SILENT_LINK_DETECTED, "went offline", |m| {
        !m.online
    })
    .await;
    let detected = cut.elapsed();
    let offline = refusal(on_n1.list_agents().await);
    assert!(offline.contains("offline"), "{offline}");
    n1.client
        .stop_agent("while-apart")
        .await
        .expect("stopped on n1");
    let healed = Instant::now();
    lan.host("n1").link_up();
    machine_until(&hub, "n1", SILENT_LINK_DETECTED, "came back", |m| m.online).await;
    let back = healed.elapsed();
    merged_stream_has_node_events_once(&hub, &n1, "n1", 0).await;
    assert_eq!(
        n1.agent("echoer").await.pid,
        echo_pid,
        "the agent kept running"
    );

    // Loss: a third of the packets dropped while n1 keeps emitting events.
    // Then the same through a slow link (rate-shaped: this kernel has no netem for delay). The
    // terminal through the hub still echoes, and every event still arrives once.
    lan.host("n1").set_loss(30);
    for round in 0..3 {
        n1.spawn(spec(&format!("lossy-{round}"), "true")).await;
    }
    let mut terminal = on_n1
        .attach("echoer", TerminalRole::Writer)
        .await
        .expect("attached through a lossy link");
    terminal.send_input("under-loss\n").await.expect("typed");
    read_until_text(&mut terminal, "under-loss").await;
    lan.host("n1").clear_loss();
    lan.host("n1").shape(256);
    n1.spawn(spec("shaped", "true")).await;
    terminal.send_input("shaped-link\n").await.expect("typed");
    read_until_text(&mut terminal, "shaped-link").await;
    terminal.close().await.expect("closed");
    lan.host("n1").clear_shape();
    merged_stream_has_node_events_once(&hub, &n1, "n1", 0).await;

    // Revoking n2 closes its link at once and for good.
    hub.client.revoke_machine("n2").await.expect("revoked");
    let deadline = Instant::now() + PATIENCE;
    loop {
        let status = n2.client.fleet_status().await.expect("n2's status");
        let membership = status.member_of.expect("n2 still remembers the hub");
        if !membership.connected
            && membership
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("revoked"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "n2 was never told it is revoked: {membership:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !hub.client
            .list_machines()
            .await
            .expect("machines")
            .iter()
            .any(|m| m.name == "n2"),
        "a revoked machine is not listed"
    );

    // A hub restart with n1 attached: n1's agents never stop, what n1 does while the hub is down
    // reaches the merged stream once the hub is back (which it does within 10 s), once.
    let pid_before = n1.agent("echoer").await.pid;
    let seen_before = last_event_id(&n1).await;
    hub.signal_and_wait("TERM");
    n1.spawn(spec("while-the-hub-is-down", "true")).await;
    let restarted = Instant::now();
    hub.restart_process().await;
    machine_until(
        &hub,
        "n1",
        Duration::from_secs(15),
        "came back after the restart",
        |m| m.online,
    )
    .await;
    let hub_back = restarted.elapsed();
    assert_eq!(n1.agent("echoer").await.pid, pid_before);
    assert!(
        hub_back < Duration::from_secs(10),
        "n1 took {hub_back:?} to come back"
    );
    merged_stream_has_node_events_once(&hub, &n1, "n1", seen_before).await;
    eprintln!(
        "silent cut detected in {detected:?}; back {back:?} after the link healed; back {hub_back:?} after a hub restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairing_refuses_a_wrong_fingerprint_a_wrong_used_or_replayed_code_and_a_taken_name() {
    let lan = Lan::new(&["hub", "n1", "n2"]);
    let hub = start_hub(lan.host("hub")).await;
    let n1 = start_node(lan.host("n1"), "n1").await;
    // A second machine that claims n1's name.
    let impostor = start_node(lan.host("n2"), "n1").await;
    let code = hub.client.create_pairing_code().await.expect("a code");

    let mut wrong_pin = join_request(&code);
    wrong_pin.fingerprint = "ab".repeat(32);
    let message = refusal(n1.client.join_hub(&wrong_pin).await);
    assert!(message.contains("wrong fingerprint"), "{message}");

    let mut wrong_code = join_request(&code);
    wrong_code.code = "AAAA-BBBB-CCCC-DDDD".into();
    let message = refusal(n1.client.join_hub(&wrong_code).await);
    assert!(message.contains("wrong pairing code"), "{message}");

    n1.client
        .join_hub(&join_request(&code))
        .await
        .expect("n1 joins");
    machine_until(&hub, "n1", PATIENCE, "came online", |m| m.online).await;

    // The same code again (replayed): used.
    let message = refusal(impostor.client.join_hub(&join_request(&code)).await);
    assert!(message.contains("already used"), "{message}");
    // A fresh code, but the name is n1's: refused, and n1 stays n1.
    let fresh = hub.client.create_pairing_code().await.expect("a code");
    let message = refusal(impostor.client.join_hub(&join_request(&fresh)).await);
    assert!(message.contains("taken"), "{message}");
    let machines = hub.client.list_machines().await.expect("machines");
    assert_eq!(machines.iter().filter(|m| m.name == "n1").count(), 1);

    // Every refusal is in the hub's audit log.
    let audit = hub
        .client
        .list_audit(&AuditQuery::default())
        .await
        .expect("the hub's audit");
    let refused = audit
        .entries
        .iter()
        .filter(|e| e.action == "pairing_refused")
        .count();
    assert_eq!(
        refused, 3,
        "wrong code, used code, taken name: {:?}",
        audit.entries
    );
    let joined = events_of(&hub.client)
        .await
        .iter()
        .filter(|e| {
            e["type"]
                == EventKind::MachineJoined {
                    name: String::new(),
                    address: String::new(),
                }
                .name()
        })
        .count();
    assert_eq!(joined, 1);
}

async fn loopback_hub() -> Daemon {
    Daemon::start_with_args(&[
        "--hub",
        "--hub-listen",
        "127.0.0.1:0",
        "--machine-name",
        "hub",
    ])
    .await
}

#[tokio::test]
async fn a_node_whose_audit_history_was_replaced_is_flagged_and_reported() {
    let hub = loopback_hub().await;
    let mut node = Daemon::start_with_args(&["--machine-name", "n1"]).await;
    join(&hub, &node).await;
    let witnessed = machine_until(&hub, "n1", PATIENCE, "was witnessed", |m| {
        m.audit.status == celistra_proto::WitnessStatus::Ok && m.audit.size > 0
    })
    .await;

    // Replace the node's audit history with a new one under the same signing key, as someone
    // covering their tracks would: a fresh log and no stored checkpoint.
    node.signal_and_wait("TERM");
    for file in ["audit.log", "audit.checkpoint"] {
        std::fs::remove_file(node.home().join(file)).expect("removed");
    }
    node.restart_process().await;
    let flagged = machine_until(&hub, "n1", PATIENCE, "was flagged", |m| {
        m.audit.status == celistra_proto::WitnessStatus::Tampered
    })
    .await;
    let problem = flagged.audit.problem.expect("the problem is said");
    assert!(
        problem.starts_with("rolled back") || problem.starts_with("rewritten"),
        "{problem} (witnessed {} entries before)",
        witnessed.audit.size
    );
    let events = events_of(&hub.client).await;
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "machine_audit_tampered" && e["name"] == "n1"),
        "no event reported it: {events:?}"
    );
    let listed = hub.ctl(&["machines"]);
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains("TAMPERED"),
        "{}",
        String::from_utf8_lossy(&listed.stdout)
    );
}

#[tokio::test]
async fn a_node_whose_daemon_dies_is_offline_on_the_hub_within_a_second() {
    let hub = loopback_hub().await;
    let mut node = Daemon::start_with_args(&["--machine-name", "n1"]).await;
    join(&hub, &node).await;
    machine_until(&hub, "n1", PATIENCE, "came online", |m| m.online).await;
    // SIGKILL: the kernel closes the link's socket, the hub sees the connection end.
    node.signal_and_wait("KILL");
    machine_until(&hub, "n1", Duration::from_secs(1), "went offline", |m| {
        !m.online
    })
    .await;
}

/// The pid of the daemon that answers for `machine` through the hub right now.
async fn pid_through_hub(hub: &Daemon, machine: &str) -> Option<u32> {
    hub.client
        .on_machine(machine)
        .get_health()
        .await
        .ok()
        .map(|health| health.pid)
}

async fn until_served_by(hub: &Daemon, machine: &str, pid: u32, what: &str) {
    let deadline = Instant::now() + PATIENCE;
    while pid_through_hub(hub, machine).await != Some(pid) {
        assert!(Instant::now() < deadline, "{machine} never {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_newest_link_of_a_machine_replaces_the_older_one() {
    let hub = loopback_hub().await;
    let node = Daemon::start_with_args(&["--machine-name", "n1"]).await;
    join(&hub, &node).await;
    until_served_by(&hub, "n1", node.pid(), "was served by the node").await;

    // A second daemon with the node's identity (its key, certificate and membership copied): its
    // link is the newer, and replaces the node's without the machine going offline.
    let copy = tempfile::tempdir().expect("temp dir");
    for file in [
        "fleet-key.pem",
        "fleet-cert.pem",
        "fleet.json",
        "machine-name",
    ] {
        std::fs::copy(node.home().join(file), copy.path().join(file)).expect("copied");
    }
    let mut twin = Daemon::start_on(copy).await;
    until_served_by(&hub, "n1", twin.pid(), "was served by the newer link").await;

    // Once the twin is gone, the node's own link is the newest again.
    twin.signal_and_wait("KILL");
    until_served_by(&hub, "n1", node.pid(), "was served by the node again").await;
    let events = events_of(&hub.client).await;
    let online = events
        .iter()
        .filter(|e| e["type"] == "machine_online" && e["name"] == "n1")
        .count();
    assert!(online >= 1, "{events:?}");
}

/// What a hub's key holder could do: take the hub's place (its address, certificate and key) and
/// ask the node for anything, claiming an owner. The node answers only the routes a hub forwards,
/// and only up to its `fleet` ceiling.
#[tokio::test]
async fn a_node_answers_a_rogue_hub_only_within_the_allow_list_and_its_ceiling() {
    use http_body_util::BodyExt;
    use rustls::pki_types::pem::PemObject;

    let mut hub = loopback_hub().await;
    let node = Daemon::start_with_args(&["--machine-name", "n1"]).await;
    join(&hub, &node).await;
    machine_until(&hub, "n1", PATIENCE, "came online", |m| m.online).await;
    node.spawn(spec("worker", "sleep 1000")).await;
    let link_port = std::fs::read_to_string(hub.home().join("hub.addr")).expect("hub.addr");
    let certificate =
        rustls::pki_types::CertificateDer::from_pem_file(hub.home().join("fleet-cert.pem"))
            .expect("the hub's certificate");
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(hub.home().join("fleet-key.pem"))
        .expect("the hub's key");
    hub.signal_and_wait("TERM");

    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_no_client_auth()
        .with_single_cert(vec![certificate], key)
        .expect("the hub's pair");
    config.alpn_protocols = vec![celistra_proto::FLEET_ALPN.to_vec()];
    let listener = tokio::net::TcpListener::bind(link_port.trim())
        .await
        .expect("the hub's link port");
    let (tcp, _) = tokio::time::timeout(PATIENCE, listener.accept())
        .await
        .expect("the node dials again")
        .expect("accepted");
    let tls = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config))
        .accept(tcp)
        .await
        .expect("handshake");
    let (mut send, connection) =
        hyper::client::conn::http2::handshake::<_, _, http_body_util::Empty<hyper::body::Bytes>>(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tls),
        )
        .await
        .expect("HTTP/2 to the node");
    tokio::spawn(connection);
    let mut ask = async |method: &str, path: &str| {
        let request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("celistra-fleet-user", "mallory")
            .header("celistra-fleet-role", "owner")
            .body(http_body_util::Empty::new())
            .expect("a request");
        send.ready().await.expect("ready");
        let answer = send.send_request(request).await.expect("an answer");
        let status = answer.status().as_u16();
        let body = answer
            .into_body()
            .collect()
            .await
            .expect("a body")
            .to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    };
    let (status, body) = ask("GET", "/v1/agents").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("worker"), "{body}");
    let (status, body) = ask("GET", "/v1/tokens").await;
    assert_eq!(status, 404, "a route a hub does not forward: {body}");
    assert!(body.contains("not reachable through a hub"), "{body}");
    let (status, body) = ask("GET", "/v1/agents/worker/spec").await;
    assert_eq!(
        status, 403,
        "environment values are above the ceiling: {body}"
    );
    assert!(body.contains("at most operator"), "{body}");
    let (status, body) = ask("DELETE", "/v1/agents/worker/logs").await;
    assert_eq!(status, 403, "clearing logs is above the ceiling: {body}");
    let audit = node
        .client
        .list_audit(&AuditQuery::default())
        .await
        .expect("the node's audit");
    assert!(
        audit.entries.iter().any(|e| e.action == "auth_failed"
            && e.body["reason"]
                .as_str()
                .is_some_and(|r| r.contains("needs owner"))),
        "the refusals are audited: {:?}",
        audit.entries
    );
}
