//! The fleet's `ctl` verbs: `machines`, `pair`, `join`, `leave`, `--machine` and `MACHINE/AGENT`
//! addressing (through `/v1/machines/{machine}/…`, which a lone daemon answers for itself), and a
//! hub with one node joined by the line `ctl pair` prints.

use std::process::Output;
use std::time::{Duration, Instant};

use crate::{Daemon, PATIENCE};

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `ctl` and requires success; its stdout.
fn ok(daemon: &Daemon, args: &[&str]) -> String {
    let out = daemon.ctl(args);
    assert!(
        out.status.success(),
        "ctl {args:?} failed: {}{}",
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

/// Runs `ctl` and requires it to fail with `code`; its stderr.
fn fails(daemon: &Daemon, args: &[&str], code: i32) -> String {
    let out = daemon.ctl(args);
    assert_eq!(
        out.status.code(),
        Some(code),
        "ctl {args:?}: {}{}",
        stdout(&out),
        stderr(&out)
    );
    stderr(&out)
}

async fn machine_name(daemon: &Daemon) -> String {
    daemon.client.get_health().await.unwrap().machine_name
}

/// Runs `ctl` until its stdout satisfies `done` (bounded by [`PATIENCE`]); that stdout.
async fn ctl_until(
    daemon: &Daemon,
    args: &[&str],
    what: &str,
    done: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let out = daemon.ctl(args);
        let text = stdout(&out);
        if out.status.success() && done(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "ctl {args:?} never showed {what}: {text}{}",
            stderr(&out)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_lone_daemon_lists_itself_and_answers_for_its_own_machine_name() {
    let daemon = Daemon::start().await;
    let name = machine_name(&daemon).await;

    let machines: serde_json::Value =
        serde_json::from_str(&ok(&daemon, &["machines", "--json"])).unwrap();
    let machines = machines.as_array().expect("an array");
    assert_eq!(machines.len(), 1, "{machines:?}");
    assert_eq!(machines[0]["name"], name.as_str());
    assert_eq!(machines[0]["this"], true);
    assert_eq!(machines[0]["online"], true);
    let table = ok(&daemon, &["machines"]);
    let header = table.lines().next().unwrap();
    for column in [
        "NAME",
        "ONLINE",
        "LAST SEEN",
        "ADDRESS",
        "VERSION",
        "AGENTS",
        "AUDIT",
    ] {
        assert!(header.contains(column), "{table}");
    }
    let row = table.lines().nth(1).unwrap();
    assert!(
        row.starts_with(&name) && row.contains("yes") && row.contains("0/0"),
        "{table}"
    );

    // Agents addressed through `/v1/machines/<own name>/…`: --machine, and MACHINE/AGENT.
    let ws = daemon.work.path().display().to_string();
    let scoped_name = format!("{name}/scraper");
    let id = ok(
        &daemon,
        &[
            "spawn",
            "--name",
            &scoped_name,
            "--workspace",
            &ws,
            "echo fleet-hello; sleep 100",
        ],
    );
    let id = id.trim();
    assert!(id.starts_with("ag-"), "{id}");
    assert_eq!(daemon.agent("scraper").await.id, id);
    let listed = ok(&daemon, &["--machine", &name, "ls"]);
    assert!(
        listed.contains("scraper") && listed.contains(id),
        "{listed}"
    );
    let history = ok(&daemon, &["--machine", &name, "history", "scraper"]);
    assert!(history.contains(id), "{history}");
    let history = ok(&daemon, &["history", &scoped_name]);
    assert!(history.contains(id), "{history}");
    let audit = ok(&daemon, &["--machine", &name, "audit", "ls"]);
    assert!(!audit.trim().is_empty());

    // `ls --all-machines` on a lone daemon: its own agents, with a MACHINE column.
    let all = ok(&daemon, &["ls", "--all-machines"]);
    assert!(all.lines().next().unwrap().starts_with("MACHINE"), "{all}");
    assert!(all.lines().nth(1).unwrap().starts_with(&name), "{all}");

    // Another machine's name is refused by a daemon that is no hub, with its own name.
    let err = fails(&daemon, &["--machine", "elsewhere", "ls"], 1);
    assert!(
        err.contains("elsewhere") && err.contains("not a hub"),
        "{err}"
    );
    let err = fails(&daemon, &["logs", "elsewhere/scraper"], 1);
    assert!(err.contains("not a hub"), "{err}");
    // A malformed MACHINE/AGENT and --machine on a daemon-wide verb are usage errors.
    let err = fails(&daemon, &["status", "Bad/scraper"], 2);
    assert!(err.contains("MACHINE/AGENT"), "{err}");
    let err = fails(&daemon, &["--machine", &name, "token", "ls"], 2);
    assert!(err.contains("--machine"), "{err}");
}

/// A route with an agent in its path, addressed to the daemon's own machine name: the daemon's
/// local forward hands the inner router a request that still carries the outer route's path
/// parameters, and the handler's `Path` extractor fails (a 500).
#[tokio::test]
async fn an_agent_is_named_as_machine_slash_agent_on_its_own_machine() {
    let daemon = Daemon::start().await;
    let name = machine_name(&daemon).await;
    let ws = daemon.work.path().display().to_string();
    let id = ok(
        &daemon,
        &[
            "spawn",
            "--name",
            "scraper",
            "--workspace",
            &ws,
            "echo fleet-hello; sleep 100",
        ],
    );
    let scoped = format!("{name}/scraper");
    let status: serde_json::Value =
        serde_json::from_str(&ok(&daemon, &["status", &scoped, "--json"])).unwrap();
    assert_eq!(status["id"], id.trim());
    ctl_until(&daemon, &["logs", &scoped], "the agent's output", |text| {
        text.contains("fleet-hello")
    })
    .await;
    let logs = ok(&daemon, &["--machine", &name, "logs", "scraper"]);
    assert!(logs.contains("fleet-hello"), "{logs}");
    let stopped = ok(&daemon, &["stop", &scoped]);
    assert!(stopped.starts_with("stopped"), "{stopped}");
}

#[tokio::test]
async fn pair_leave_and_join_fail_clearly_on_a_lone_daemon() {
    let daemon = Daemon::start().await;
    let err = fails(&daemon, &["pair"], 1);
    assert!(err.contains("not a hub") && err.contains("--hub"), "{err}");
    let err = fails(&daemon, &["leave"], 1);
    assert!(err.contains("belongs to no hub"), "{err}");

    let err = fails(
        &daemon,
        &["join", "127.0.0.1:1", "CODE", "--fingerprint", "nope"],
        2,
    );
    assert!(err.contains("not a SHA-256 fingerprint"), "{err}");
    let err = fails(&daemon, &["join", "127.0.0.1:1", "CODE"], 2);
    assert!(err.contains("--fingerprint"), "{err}");
    let fingerprint = "ab".repeat(32);
    let err = fails(
        &daemon,
        &["join", "127.0.0.1:1", "CODE", "--fingerprint", &fingerprint],
        1,
    );
    assert!(err.contains("cannot reach the hub at 127.0.0.1:1"), "{err}");
    // Still alone.
    let fleet: serde_json::Value =
        serde_json::from_str(&ok(&daemon, &["fleet", "--json"])).unwrap();
    assert_eq!(fleet["member_of"], serde_json::Value::Null);
    assert_eq!(fleet["hub"], false);
}

/// The `/v1/` prefixes the client scopes to a machine are exactly the routes the daemon's table
/// marks `via_hub` (`x-celistra-via-hub` in the OpenAPI document it serves).
#[tokio::test]
async fn the_clients_machine_scope_matches_the_routes_a_hub_forwards() {
    let daemon = Daemon::start().await;
    let document = daemon.client.get_openapi().await.unwrap();
    let mut disagree = vec![];
    for (path, item) in document["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("operations") {
            let forwarded = operation["x-celistra-via-hub"] == true;
            let concrete = path.replace(['{', '}'], "");
            if celistra_client::via_hub(&concrete) != forwarded {
                disagree.push(format!("{method} {path}: via hub {forwarded}"));
            }
        }
    }
    assert!(
        disagree.is_empty(),
        "the client's VIA_HUB disagrees: {disagree:?}"
    );
}

fn hub_link_addr(hub: &Daemon) -> String {
    std::fs::read_to_string(hub.home().join("hub.addr"))
        .expect("hub.addr")
        .trim()
        .to_owned()
}

#[tokio::test]
async fn a_node_joins_a_hub_with_the_paired_line_and_is_reached_through_it() {
    let hub = Daemon::start_with_args(&[
        "--hub",
        "--hub-listen",
        "127.0.0.1:0",
        "--machine-name",
        "hub-1",
    ])
    .await;
    let node = Daemon::start_with_args(&["--machine-name", "node-1"]).await;
    let link = hub_link_addr(&hub);

    let human = hub.ctl(&["pair"]);
    assert!(human.status.success(), "{}", stderr(&human));
    assert!(stderr(&human).contains("valid until"), "{}", stderr(&human));
    assert!(
        stdout(&human).trim().starts_with("celistrad ctl join "),
        "{}",
        stdout(&human)
    );
    let code: serde_json::Value = serde_json::from_str(&ok(&hub, &["pair", "--json"])).unwrap();
    // The node dials the bound address: the one the hub advertises (`hub`) may be another.
    let (code_text, fingerprint) = (
        code["code"].as_str().unwrap(),
        code["fingerprint"].as_str().unwrap(),
    );
    assert!(code["command"].as_str().unwrap().contains(code_text));

    // A wrong fingerprint is refused, saying so, and leaves the node alone.
    let wrong = "00".repeat(32);
    let err = fails(
        &node,
        &["join", &link, code_text, "--fingerprint", &wrong],
        1,
    );
    assert!(err.contains("wrong fingerprint"), "{err}");

    let joined = ok(
        &node,
        &["join", &link, code_text, "--fingerprint", fingerprint],
    );
    assert!(joined.contains("joined hub hub-1"), "{joined}");
    let fleet: serde_json::Value = serde_json::from_str(&ok(&node, &["fleet", "--json"])).unwrap();
    assert_eq!(fleet["member_of"]["hub_name"], "hub-1");

    ctl_until(&hub, &["machines"], "node-1 online", |text| {
        text.lines()
            .any(|l| l.starts_with("node-1") && l.contains("yes"))
    })
    .await;

    let ws = node.work.path().display().to_string();
    ok(
        &node,
        &[
            "spawn",
            "--name",
            "scraper",
            "--workspace",
            &ws,
            "echo through-the-hub; sleep 100",
        ],
    );
    ctl_until(
        &hub,
        &["ls", "--all-machines"],
        "the node's agent",
        |text| {
            text.lines()
                .any(|l| l.starts_with("node-1") && l.contains("scraper"))
        },
    )
    .await;
    ctl_until(
        &hub,
        &["--machine", "node-1", "logs", "scraper"],
        "the node's logs",
        |text| text.contains("through-the-hub"),
    )
    .await;
    let status: serde_json::Value =
        serde_json::from_str(&ok(&hub, &["status", "node-1/scraper", "--json"])).unwrap();
    assert_eq!(status["name"], "scraper");

    // Revoked, the machine is cut off and forgotten: the hub no longer lists it online.
    let revoked = ok(&hub, &["machines", "revoke", "node-1"]);
    assert!(revoked.contains("revoked node-1"), "{revoked}");
    ctl_until(&hub, &["machines"], "node-1 gone or offline", |text| {
        !text
            .lines()
            .any(|l| l.starts_with("node-1") && l.contains("yes"))
    })
    .await;
    let err = fails(&hub, &["--machine", "node-1", "ls"], 1);
    assert!(err.contains("node-1"), "{err}");
    // The node leaves; its agent keeps running.
    ok(&node, &["leave"]);
}
