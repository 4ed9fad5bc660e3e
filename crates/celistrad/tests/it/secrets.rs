//! Secrets: set through `ctl` from stdin, listed by name, removed; given to agents by `secrets` and
//! by `env` `secret:NAME`; masked in the output wherever it is read (logs, terminals, search); never
//! in clear in a file of the state directory or an answer of the API; only an owner may set or give
//! one; a missing one refused by name, and a removed one failing the spawn with a clear error.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use celistra_client::{ClientError, TerminalEvent};
use celistra_proto::{
    AgentSpec, AgentState, ApplyRequest, AuditQuery, ErrorCode, HistoryQuery, Role, SecretInfo,
    SecretRequest, TerminalRole, TokenCreated, TokenRequest, UpdateRequest,
};

use crate::{BIN, Daemon, PATIENCE, get_text, marker, spec};

/// `ctl` with `input` on its stdin (a pipe, so not a terminal).
fn ctl_with_stdin(daemon: &Daemon, args: &[&str], input: &str) -> std::process::Output {
    let mut child = Command::new(BIN)
        .arg("ctl")
        .arg("--home")
        .arg(daemon.home())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ctl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("ctl output")
}

/// A value that occurs nowhere else: 20 bytes and more.
fn unique_value(label: &str) -> String {
    format!("{label}{}Zq7", marker())
}

async fn set(daemon: &Daemon, name: &str, value: &str) {
    daemon
        .client
        .set_secret(
            name,
            &SecretRequest {
                value: value.to_owned(),
            },
        )
        .await
        .expect("set secret");
}

/// Every regular file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = vec![];
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            found.extend(files_under(&path));
        } else if kind.is_file() {
            found.push(path);
        }
    }
    found
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Asserts no file of the state directory holds any of `values` in clear.
fn assert_not_in_state_files(daemon: &Daemon, values: &[&str]) {
    let files = files_under(daemon.home());
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for expected in [
        "secrets.json",
        "secrets.key",
        "agents.json",
        "history.db",
        "audit.log",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "no {expected} in {names:?}"
        );
    }
    for file in &files {
        let bytes = std::fs::read(file).unwrap_or_default();
        for value in values {
            assert!(
                !contains(&bytes, value.as_bytes()),
                "{} holds a secret's value in clear",
                file.display()
            );
        }
    }
}

#[tokio::test]
async fn secrets_are_set_from_stdin_listed_by_name_only_and_removed_through_ctl() {
    let daemon = Daemon::start().await;
    let value = unique_value("ctl");
    let set = ctl_with_stdin(
        &daemon,
        &["secret", "set", "DEPLOY_KEY"],
        &format!("{value}\n"),
    );
    assert!(set.status.success(), "{set:?}");
    let listed = daemon.ctl(&["secret", "ls"]);
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(text.contains("DEPLOY_KEY"), "{text}");
    assert!(!text.contains(&value), "{text}");
    let json = daemon.ctl(&["secret", "ls", "--json"]);
    let secrets: Vec<SecretInfo> = serde_json::from_slice(&json.stdout).expect("ls --json");
    assert_eq!(secrets.len(), 1);
    assert_eq!(secrets[0].name, "DEPLOY_KEY");
    assert!(!String::from_utf8_lossy(&json.stdout).contains(&value));

    // The value read from stdin is the one agents get (the trailing newline dropped).
    daemon
        .spawn(AgentSpec {
            secrets: vec!["DEPLOY_KEY".into()],
            ..spec(
                "reader",
                "printf 'len=%s\\n' \"${#DEPLOY_KEY}\"; sleep 1000",
            )
        })
        .await;
    let expected = format!("len={}", value.len());
    wait_logs(&daemon, "reader", |text| text.contains(&expected)).await;

    // Too short to mask: refused, saying so.
    let short = ctl_with_stdin(&daemon, &["secret", "set", "TINY"], "abc");
    assert!(!short.status.success());
    let stderr = String::from_utf8_lossy(&short.stderr);
    assert!(stderr.contains("too short to mask"), "{stderr}");
    // Never from the command line.
    let argv = daemon.ctl(&["secret", "set", "DEPLOY_KEY", &value]);
    assert!(!argv.status.success());

    let removed = daemon.ctl(&["secret", "rm", "DEPLOY_KEY"]);
    assert!(removed.status.success(), "{removed:?}");
    let json = daemon.ctl(&["secret", "ls", "--json"]);
    let secrets: Vec<SecretInfo> = serde_json::from_slice(&json.stdout).expect("ls --json");
    assert!(secrets.is_empty());
    let again = daemon.ctl(&["secret", "rm", "DEPLOY_KEY"]);
    assert!(!again.status.success());
    assert_not_in_state_files(&daemon, &[&value]);
}

/// Polls an agent's logs until `done` holds (bounded).
async fn wait_logs(daemon: &Daemon, agent: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let text = get_text(&daemon.client, &format!("/v1/agents/{agent}/logs")).await;
        if done(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "logs of {agent}: {text}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_agent_s_secrets_are_masked_in_its_output_and_never_in_clear_in_files_or_the_api() {
    let daemon = Daemon::start().await;
    let token = unique_value("tok");
    let other = unique_value("oth");
    set(&daemon, "GH_TOKEN", &token).await;
    set(&daemon, "OTHER_KEY", &other).await;
    // Each value printed split across two writes with a pause between, and in one piece.
    let print = "printf 'split:%s' \"$(printf %s \"$1\" | cut -c1-8)\"; sleep 0.4; \
                 printf '%s:end\\n' \"$(printf %s \"$1\" | cut -c9-)\"; echo \"whole:$1:done\"";
    let command =
        format!("p() {{ {print}; }}; p \"$GH_TOKEN\"; p \"$ALIAS\"; echo finished; sleep 1000");
    let mut pty = AgentSpec {
        secrets: vec!["GH_TOKEN".into()],
        ..spec("masked", &command)
    };
    pty.env.insert("ALIAS".into(), "secret:OTHER_KEY".into());
    pty.env.insert("PLAIN".into(), "visible".into());
    daemon.spawn(pty).await;
    // On pipes too, stdout and stderr each.
    let mut pipes = AgentSpec {
        no_pty: true,
        ..spec(
            "piped",
            &format!(
                "p() {{ {print}; }}; p \"$ALIAS\"; p \"$ALIAS\" >&2; echo finished; sleep 1000"
            ),
        )
    };
    pipes.env.insert("ALIAS".into(), "secret:OTHER_KEY".into());
    daemon.spawn(pipes).await;

    let logs = wait_logs(&daemon, "masked", |t| t.contains("finished")).await;
    for expected in [
        "split:[secret:GH_TOKEN]:end",
        "whole:[secret:GH_TOKEN]:done",
        "split:[secret:OTHER_KEY]:end",
        "whole:[secret:OTHER_KEY]:done",
    ] {
        assert!(logs.contains(expected), "{expected} not in {logs}");
    }
    let piped = wait_logs(&daemon, "piped", |t| {
        t.contains("finished") && t.matches("whole:[secret:OTHER_KEY]:done").count() == 2
    })
    .await;
    assert_eq!(
        piped.matches("split:[secret:OTHER_KEY]:end").count(),
        2,
        "{piped}"
    );

    // A terminal client sees the mask too.
    let mut terminal = daemon
        .client
        .attach("masked", TerminalRole::Viewer)
        .await
        .expect("attach");
    let mut seen = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while !String::from_utf8_lossy(&seen).contains("finished") {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, terminal.next()).await {
            Ok(TerminalEvent::Output(bytes)) => seen.extend_from_slice(&bytes),
            Ok(TerminalEvent::Control(_)) => {}
            other => panic!("terminal ended early: {:?}", other.is_ok()),
        }
    }
    let screen = String::from_utf8_lossy(&seen);
    assert!(screen.contains("whole:[secret:GH_TOKEN]:done"), "{screen}");

    // The history's search finds the mask, never the value.
    let found = get_text(&daemon.client, "/v1/logs?grep=whole").await;
    assert!(found.contains("[secret:GH_TOKEN]"), "{found}");
    let values = [token.as_str(), other.as_str()];
    let halves: Vec<&str> = values.iter().map(|v| &v[8..]).collect();
    for value in values.iter().chain(&halves) {
        let searched = get_text(&daemon.client, &format!("/v1/logs?grep={value}")).await;
        assert!(!searched.contains(value), "search for a value: {searched}");
    }

    // The API: agents, specs (references only), events, audit, runs.
    let answers = [
        get_text(&daemon.client, "/v1/agents").await,
        get_text(&daemon.client, "/v1/agents/masked/spec").await,
        get_text(&daemon.client, "/v1/agents/piped/spec").await,
        get_text(&daemon.client, "/v1/events?after=0&follow=false").await,
        get_text(&daemon.client, "/v1/secrets").await,
        serde_json::to_string(
            &daemon
                .client
                .list_audit(&AuditQuery::default())
                .await
                .unwrap(),
        )
        .unwrap(),
        serde_json::to_string(
            &daemon
                .client
                .list_runs(&HistoryQuery::default())
                .await
                .unwrap(),
        )
        .unwrap(),
    ];
    for answer in &answers {
        for value in values.iter().chain(&halves) {
            assert!(!answer.contains(value), "a value in an answer: {answer}");
        }
    }
    assert!(answers[1].contains("secret:OTHER_KEY"), "{}", answers[1]);
    assert!(answers[1].contains("GH_TOKEN"), "{}", answers[1]);
    let agent = daemon.agent("masked").await;
    assert!(agent.env_keys.contains(&"GH_TOKEN".to_owned()), "{agent:?}");
    assert!(answers[5].contains("secret_set"), "{}", answers[5]);

    // Stopped, so everything is written; then every file of the state directory, byte by byte.
    daemon.client.stop_agent("masked").await.unwrap();
    daemon.client.stop_agent("piped").await.unwrap();
    assert_not_in_state_files(&daemon, &values);
    assert_not_in_state_files(&daemon, &halves);
}

async fn create_token(daemon: &Daemon, name: &str, role: Role) -> String {
    let created: TokenCreated = daemon
        .client
        .create_token(&TokenRequest {
            name: name.into(),
            role,
            expires_in_secs: None,
        })
        .await
        .expect("create token");
    created.token
}

fn refused(result: Result<impl std::fmt::Debug, ClientError>, code: ErrorCode) -> String {
    match result {
        Err(ClientError::Api(error)) if error.code == code => error.message,
        other => panic!("expected {code:?}, got {other:?}"),
    }
}

#[tokio::test]
async fn an_operator_can_list_secrets_but_neither_set_nor_give_nor_change_an_agent_that_has_one() {
    let daemon = Daemon::start().await;
    set(&daemon, "OWNED", &unique_value("own")).await;
    let operator = daemon
        .client
        .clone()
        .with_secret(&create_token(&daemon, "op", Role::Operator).await);
    let listed = operator
        .list_secrets()
        .await
        .expect("an operator lists names");
    assert_eq!(listed.len(), 1);
    let request = SecretRequest {
        value: unique_value("op"),
    };
    refused(
        operator.set_secret("OWNED", &request).await,
        ErrorCode::RoleRequired,
    );
    refused(
        operator.remove_secret("OWNED").await,
        ErrorCode::RoleRequired,
    );

    let work = daemon.work.path().display().to_string();
    let with_secret = AgentSpec {
        secrets: vec!["OWNED".into()],
        workspace: Some(work.clone()),
        ..spec("exfil", "sleep 1000")
    };
    let message = refused(
        operator.spawn_agent(&with_secret).await,
        ErrorCode::RoleRequired,
    );
    assert!(message.contains("secret"), "{message}");
    let mut by_env = AgentSpec {
        workspace: Some(work.clone()),
        ..spec("exfil", "sleep 1000")
    };
    by_env.env.insert("X".into(), "secret:OWNED".into());
    refused(operator.spawn_agent(&by_env).await, ErrorCode::RoleRequired);
    refused(
        operator
            .apply(&ApplyRequest {
                agents: vec![by_env.clone()],
                prune: false,
                dry_run: false,
            })
            .await,
        ErrorCode::RoleRequired,
    );
    // An agent the owner gave a secret: the operator cannot change it (its command could print
    // the secret), but may rename, stop and start it.
    daemon.spawn(with_secret).await;
    let change = UpdateRequest {
        command: Some("echo \"$OWNED\" | base64".into()),
        ..UpdateRequest::default()
    };
    refused(
        operator.update_agent("exfil", &change).await,
        ErrorCode::RoleRequired,
    );
    let plain = daemon.spawn(spec("plain", "sleep 1000")).await;
    let give = UpdateRequest {
        secrets: Some(vec!["OWNED".into()]),
        ..UpdateRequest::default()
    };
    refused(
        operator.update_agent(&plain.id, &give).await,
        ErrorCode::RoleRequired,
    );
    operator
        .rename_agent(
            "exfil",
            &celistra_proto::RenameRequest {
                name: "renamed".into(),
            },
        )
        .await
        .expect("a rename is an operator's");
    // Nor type into it; watching is fine.
    let typing = operator.attach("renamed", TerminalRole::Writer).await;
    let message = refused(typing.map(|_| ()), ErrorCode::RoleRequired);
    assert!(message.contains("secrets"), "{message}");
    operator
        .attach("renamed", TerminalRole::Viewer)
        .await
        .expect("a viewer terminal");
    operator
        .attach("plain", TerminalRole::Writer)
        .await
        .expect("a writer terminal elsewhere");
    operator.stop_agent("renamed").await.expect("stop");
    assert_eq!(operator.list_agents().await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_reference_to_a_missing_secret_is_refused_naming_it() {
    let daemon = Daemon::start().await;
    let work = daemon.work.path().display().to_string();
    let missing = AgentSpec {
        secrets: vec!["NOT_SET_A".into()],
        workspace: Some(work.clone()),
        ..spec("a", "sleep 1000")
    };
    let message = refused(
        daemon.client.spawn_agent(&missing).await,
        ErrorCode::InvalidRequest,
    );
    assert!(message.contains("NOT_SET_A"), "{message}");
    let mut by_env = AgentSpec {
        workspace: Some(work.clone()),
        ..spec("b", "echo \"got $TOKEN\"; sleep 1000")
    };
    by_env.env.insert("TOKEN".into(), "secret:NOT_SET_B".into());
    let message = refused(
        daemon
            .client
            .apply(&ApplyRequest {
                agents: vec![by_env.clone()],
                prune: false,
                dry_run: false,
            })
            .await,
        ErrorCode::InvalidRequest,
    );
    assert!(message.contains("NOT_SET_B"), "{message}");
    // Once it exists, the same file applies, and the agent gets it.
    set(&daemon, "NOT_SET_B", &unique_value("app")).await;
    let report = daemon
        .client
        .apply(&ApplyRequest {
            agents: vec![by_env],
            prune: false,
            dry_run: false,
        })
        .await
        .expect("apply");
    assert_eq!(report.created, ["b"]);
    wait_logs(&daemon, "b", |text| text.contains("[secret:NOT_SET_B]")).await;
    daemon.spawn(spec("c", "sleep 1000")).await;
    let set = daemon.ctl(&["set", "c", "--secret", "NOT_SET_C"]);
    assert!(!set.status.success());
    let stderr = String::from_utf8_lossy(&set.stderr);
    assert!(stderr.contains("NOT_SET_C"), "{stderr}");
    let bad = daemon.ctl(&[
        "spawn",
        "--name",
        "d",
        "--env",
        "T=secret:lower",
        "--",
        "true",
    ]);
    assert!(!bad.status.success());
    assert_eq!(daemon.client.list_agents().await.unwrap().len(), 2);
}

#[tokio::test]
async fn an_agent_whose_secret_was_removed_fails_to_spawn_with_a_clear_error() {
    let daemon = Daemon::start().await;
    set(&daemon, "SHORT_LIVED", &unique_value("gone")).await;
    let spawned = daemon
        .spawn(AgentSpec {
            secrets: vec!["SHORT_LIVED".into()],
            ..spec("orphan", "sleep 1000")
        })
        .await;
    assert_eq!(spawned.last_error, None);
    daemon.wait_state("orphan", AgentState::Running).await;
    daemon.client.stop_agent("orphan").await.unwrap();
    daemon.client.remove_secret("SHORT_LIVED").await.unwrap();
    let started = daemon.ctl(&["start", "orphan"]);
    assert!(!started.status.success(), "{started:?}");
    let agent = daemon
        .wait_agent("orphan", "failed", |a| a.last_error.is_some())
        .await;
    let error = agent.last_error.unwrap();
    assert!(
        error.contains("secret `SHORT_LIVED`") && error.contains("does not exist"),
        "{error}"
    );
    assert_ne!(agent.state, AgentState::Running);
    // Taking the reference away lets it start again.
    let cleared = daemon.ctl(&["set", "orphan", "--no-secrets"]);
    assert!(cleared.status.success(), "{cleared:?}");
    let started = daemon.ctl(&["start", "orphan"]);
    assert!(started.status.success(), "{started:?}");
    daemon.wait_state("orphan", AgentState::Running).await;
}
