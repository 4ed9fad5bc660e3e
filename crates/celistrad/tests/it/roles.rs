//! Roles and tokens: a sweep of every route in the route table (read from `/v1/openapi.json`) with
//! every role, no credential, a revoked and an expired token; the token lifecycle through `ctl`;
//! revocation closing open streams and terminals; login links with a role.

use std::time::{Duration, Instant};

use celistra_client::{Client, TerminalEvent, next_chunk};
use celistra_proto::{
    Access, ApiError, ErrorCode, EventsQuery, LogsQuery, Role, TerminalRole, TicketRequest,
    TokenCreated, TokenInfo, TokenRequest,
};
use http_body_util::BodyExt;
use hyper::{Method, StatusCode};

use crate::{Daemon, PATIENCE, spec};

async fn create_token(daemon: &Daemon, name: &str, role: Role, expires: Option<u64>) -> String {
    let created: TokenCreated = daemon
        .client
        .create_token(&TokenRequest {
            name: name.into(),
            role,
            expires_in_secs: expires,
        })
        .await
        .expect("create token");
    created.token
}

/// Status and JSON error (if any) of a request with `credential`.
async fn ask(
    client: &Client,
    credential: &str,
    method: Method,
    path: &str,
) -> (StatusCode, Option<ApiError>) {
    let response = client
        .clone()
        .with_secret(credential)
        .send(method, path, None)
        .await
        .expect("request");
    let status = response.status();
    // Streams (events, audit tail) answer 200 and stay open: their status is all that is needed.
    if status == StatusCode::OK {
        return (status, None);
    }
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).ok())
}

/// Waits until `token` is refused as expired.
async fn until_expired(client: &Client, token: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (status, error) = ask(client, token, Method::GET, "/v1/health").await;
        if status == StatusCode::UNAUTHORIZED {
            assert!(error.unwrap().message.contains("expired"));
            return;
        }
        assert!(Instant::now() < deadline, "the token never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn every_route_answers_each_role_exactly_as_the_route_table_says() {
    let daemon = Daemon::start().await;
    let secret = daemon.secret();
    let mut credentials = vec![(secret, Role::Owner)];
    for role in Role::ALL {
        credentials.push((create_token(&daemon, role.as_str(), role, None).await, role));
    }
    let revoked = create_token(&daemon, "revoked", Role::Owner, None).await;
    let revoke = daemon.ctl(&["token", "revoke", "revoked"]);
    assert!(revoke.status.success(), "{revoke:?}");
    let expired = create_token(&daemon, "expired", Role::Owner, Some(1)).await;
    until_expired(&daemon.client, &expired).await;

    let doc: serde_json::Value = daemon.client.get_openapi().await.unwrap();
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        // Placeholders name nothing that exists, so no request changes anything.
        let concrete = path
            .replace("{agent}", "nobody")
            .replace("{id}", "nothing")
            .replace("{name}", "nothing")
            .replace("{token}", "nothing")
            .replace("{verdict}", "approve");
        for (method, operation) in item.as_object().unwrap() {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let role = operation["x-celistra-role"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path} has no x-celistra-role"));
            let access: Access = role
                .parse()
                .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
            for (credential, role) in &credentials {
                let (status, error) =
                    ask(&daemon.client, credential, method.clone(), &concrete).await;
                let refused_for_role = error
                    .as_ref()
                    .is_some_and(|e| e.code == ErrorCode::RoleRequired);
                if access.allows(Some(*role)) {
                    assert!(
                        !refused_for_role && status != StatusCode::FORBIDDEN,
                        "{role} refused on {method} {path}: {status} {error:?}"
                    );
                    if access != Access::Public {
                        assert_ne!(
                            status,
                            StatusCode::UNAUTHORIZED,
                            "{role} on {method} {path}"
                        );
                    }
                } else {
                    assert_eq!(status, StatusCode::FORBIDDEN, "{role} on {method} {path}");
                    let error = error.expect("a JSON error");
                    let Access::Role(needed) = access else {
                        panic!("only role routes refuse a role")
                    };
                    assert_eq!(error.code, ErrorCode::RoleRequired);
                    assert_eq!(error.required_role, Some(needed), "{method} {path}");
                    assert!(error.message.contains(needed.as_str()), "{}", error.message);
                }
                checked += 1;
            }
            if access != Access::Public {
                for nobody in ["", revoked.as_str(), expired.as_str(), "cel_00ff"] {
                    let (status, error) =
                        ask(&daemon.client, nobody, method.clone(), &concrete).await;
                    assert_eq!(
                        status,
                        StatusCode::UNAUTHORIZED,
                        "{method} {path} with {nobody:?}"
                    );
                    assert_eq!(error.unwrap().code, ErrorCode::Unauthorized);
                }
            }
        }
    }
    assert!(checked >= 50 * credentials.len(), "only {checked} checks");
    // The daemon still serves after all that.
    let (status, _) = ask(&daemon.client, &credentials[0].0, Method::GET, "/v1/health").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn terminal_tickets_follow_the_role_a_viewer_gets_only_viewer_tickets() {
    let daemon = Daemon::start().await;
    daemon.spawn(spec("shell", "exec cat")).await;
    let viewer = daemon
        .client
        .clone()
        .with_secret(&create_token(&daemon, "v", Role::Viewer, None).await);
    let approver = daemon
        .client
        .clone()
        .with_secret(&create_token(&daemon, "a", Role::Approver, None).await);
    let operator = daemon
        .client
        .clone()
        .with_secret(&create_token(&daemon, "o", Role::Operator, None).await);
    let refusal = |result: Result<_, celistra_client::ClientError>| match result {
        Err(celistra_client::ClientError::Api(e)) => e,
        other => panic!("expected a refusal, got {other:?}"),
    };
    let error = refusal(
        viewer
            .issue_terminal_ticket(
                "shell",
                &TicketRequest {
                    role: TerminalRole::Writer,
                },
            )
            .await,
    );
    assert_eq!(
        (error.code, error.required_role),
        (ErrorCode::RoleRequired, Some(Role::Operator))
    );
    let error = refusal(
        approver
            .issue_terminal_ticket(
                "shell",
                &TicketRequest {
                    role: TerminalRole::Viewer,
                },
            )
            .await,
    );
    assert_eq!(
        (error.code, error.required_role),
        (ErrorCode::RoleRequired, Some(Role::Viewer))
    );
    let ticket = viewer
        .issue_terminal_ticket(
            "shell",
            &TicketRequest {
                role: TerminalRole::Viewer,
            },
        )
        .await
        .unwrap();
    assert_eq!(ticket.role, TerminalRole::Viewer);
    let ticket = operator
        .issue_terminal_ticket(
            "shell",
            &TicketRequest {
                role: TerminalRole::Writer,
            },
        )
        .await
        .unwrap();
    assert_eq!(ticket.role, TerminalRole::Writer);
}

#[tokio::test]
async fn revoking_a_token_ends_its_event_streams_and_terminals_at_once() {
    let daemon = Daemon::start().await;
    daemon.spawn(spec("shell", "exec cat")).await;
    let token = create_token(&daemon, "watcher", Role::Viewer, None).await;
    let watcher = daemon.client.clone().with_secret(&token);
    let follow = EventsQuery {
        after: None,
        follow: true,
    };
    let mut events = watcher.stream_events(&follow).await.unwrap();
    let mut audit = watcher.tail_audit(&Default::default()).await.unwrap();
    let logs_query = LogsQuery {
        follow: true,
        ..Default::default()
    };
    let mut logs = watcher.get_logs("shell", &logs_query).await.unwrap();
    let mut terminal = watcher.attach("shell", TerminalRole::Viewer).await.unwrap();
    // The owner's own stream stays open.
    let mut owners = daemon.client.stream_events(&follow).await.unwrap();

    let revoke = daemon.ctl(&["token", "revoke", "watcher"]);
    assert!(revoke.status.success(), "{revoke:?}");
    for (what, stream) in [("events", &mut events), ("audit tail", &mut audit)] {
        let ended = tokio::time::timeout(PATIENCE, async {
            while stream.next_frame().await.ok().flatten().is_some() {}
        })
        .await;
        assert!(ended.is_ok(), "the {what} stream stayed open");
    }
    let ended = tokio::time::timeout(PATIENCE, async {
        while next_chunk(&mut logs).await.ok().flatten().is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "the log follow stayed open");
    let code = tokio::time::timeout(PATIENCE, async {
        loop {
            if let TerminalEvent::Closed { code, .. } = terminal.next().await {
                return code;
            }
        }
    })
    .await
    .expect("the terminal stayed open");
    assert_eq!(code, 4003);
    // Others' streams are untouched: the owner's stream sees the next event.
    daemon.spawn(spec("after", "sleep 100")).await;
    let seen = tokio::time::timeout(PATIENCE, async {
        while let Ok(Some(frame)) = owners.next_frame().await {
            if frame.data.contains("\"after\"") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(seen, Ok(true));
    let (status, _) = ask(&daemon.client, &token, Method::GET, "/v1/agents").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn ctl_token_prints_the_token_once_lists_without_it_and_nothing_stores_it_in_clear() {
    let daemon = Daemon::start().await;
    let created = daemon.ctl(&[
        "token",
        "create",
        "--role",
        "operator",
        "--name",
        "deploy",
        "--expires",
        "30d",
    ]);
    assert!(created.status.success(), "{created:?}");
    let stdout = String::from_utf8(created.stdout).unwrap();
    let token = stdout.lines().last().unwrap().to_owned();
    assert!(token.starts_with("cel_") && token.len() == 68, "{stdout}");
    let client = daemon.client.clone().with_secret(&token);
    client.list_agents().await.unwrap();
    // An operator runs agents; the audit log names the token.
    let spec = celistra_proto::AgentSpec {
        workspace: Some(daemon.work.path().display().to_string()),
        ..spec("job", "sleep 100")
    };
    client.spawn_agent(&spec).await.unwrap();
    // But not create tokens.
    let again = daemon.client.clone().with_secret(&token);
    let refused = again
        .create_token(&TokenRequest {
            name: "mine".into(),
            role: Role::Owner,
            expires_in_secs: None,
        })
        .await;
    assert!(
        matches!(&refused, Err(celistra_client::ClientError::Api(e)) if e.code == ErrorCode::RoleRequired),
        "{refused:?}"
    );

    let listed = daemon.ctl(&["token", "ls", "--json"]);
    assert!(listed.status.success());
    let text = String::from_utf8(listed.stdout).unwrap();
    assert!(!text.contains(&token[4..]), "ls shows the token");
    let tokens: Vec<TokenInfo> = serde_json::from_str(&text).unwrap();
    let deploy = tokens.iter().find(|t| t.name == "deploy").unwrap();
    assert_eq!(deploy.role, Role::Operator);
    assert!(deploy.last_used_ms.is_some());
    let days = (deploy.expires_at_ms.unwrap() - deploy.created_at_ms) / 86_400_000;
    assert_eq!(days, 30);
    let table = daemon.ctl(&["token", "ls"]);
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(
        table.contains("deploy") && table.contains("operator"),
        "{table}"
    );

    let entries = daemon.ctl(&["audit", "ls", "--json", "--actor", "token:deploy"]);
    let entries = String::from_utf8(entries.stdout).unwrap();
    assert!(
        entries.contains("agent_spawned") || entries.contains("spawn"),
        "{entries}"
    );

    // Nothing in the state directory holds the token in clear.
    let secret_part = &token[4..];
    for entry in walk(daemon.home()) {
        if let Ok(bytes) = std::fs::read(&entry) {
            let text = String::from_utf8_lossy(&bytes);
            assert!(
                !text.contains(secret_part),
                "{} holds the token",
                entry.display()
            );
        }
    }
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(daemon.home().join("tokens.json"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    // ctl with a viewer's token: reading works, running agents is refused naming the role.
    let viewer = create_token(&daemon, "reader", Role::Viewer, None).await;
    let as_viewer = |args: &[&str]| {
        std::process::Command::new(crate::BIN)
            .args(["ctl", "--home"])
            .arg(daemon.home())
            .args(["--token", &viewer])
            .args(args)
            .output()
            .expect("run ctl")
    };
    let listed = as_viewer(&["ls"]);
    assert!(listed.status.success(), "{listed:?}");
    assert!(String::from_utf8_lossy(&listed.stdout).contains("job"));
    let refused = as_viewer(&["stop", "job"]);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("needs the operator role"), "{stderr}");
    let refused = as_viewer(&["token", "ls"]);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("not allowed (403)") && stderr.contains("owner"),
        "{stderr}"
    );

    let bad = daemon.ctl(&["token", "create", "--role", "root", "--name", "x"]);
    assert_eq!(bad.status.code(), Some(2));
    let gone = daemon.ctl(&["token", "revoke", "nothing"]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&gone.stderr).contains("no token named"));
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = vec![];
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else if path.is_file() {
            files.push(path);
        }
    }
    files
}

#[tokio::test]
async fn a_login_link_carries_its_role_into_the_session() {
    let daemon = Daemon::start().await;
    let out = daemon.ctl(&["dashboard", "--no-open", "--json", "--role", "viewer"]);
    assert!(out.status.success(), "{out:?}");
    let link: celistra_proto::LoginLink = serde_json::from_slice(&out.stdout).unwrap();
    let addr = crate::dashboard::addr(&daemon);
    let body = format!(r#"{{"code":"{}"}}"#, link.code);
    let (status, headers, text) =
        crate::dashboard::request(addr, Method::POST, "/v1/sessions/login", &[], Some(&body)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let cookie = headers["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let state: celistra_proto::SessionState = serde_json::from_str(&text).unwrap();
    assert_eq!(state.session.role, Role::Viewer);
    let session_headers = [
        ("cookie", cookie.as_str()),
        ("x-csrf-token", state.csrf_token.as_str()),
    ];
    let (status, _, _) =
        crate::dashboard::request(addr, Method::GET, "/v1/agents", &session_headers, None).await;
    assert_eq!(status, StatusCode::OK);
    let spawn = serde_json::to_string(&spec("x", "true")).unwrap();
    let (status, _, text) = crate::dashboard::request(
        addr,
        Method::POST,
        "/v1/agents",
        &session_headers,
        Some(&spawn),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{text}");
    let error: ApiError = serde_json::from_str(&text).unwrap();
    assert_eq!(error.required_role, Some(Role::Operator));
    let sessions = daemon.ctl(&["sessions"]);
    assert!(String::from_utf8_lossy(&sessions.stdout).contains("viewer"));
    // Revoking the session ends it.
    let revoke = daemon.ctl(&["sessions", "revoke", &state.session.id]);
    assert!(revoke.status.success());
    let (status, _, _) =
        crate::dashboard::request(addr, Method::GET, "/v1/agents", &session_headers, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
