//! The HTTP API: authentication on every route, clear errors for bad input, SSE resumption, apply.

use celistra_client::ClientError;
use celistra_proto::{
    AgentInfo, AgentState, ApplyReport, ApplyRequest, ErrorCode, EventKind, EventsQuery, Health,
    LogsQuery,
};
use http_body_util::BodyExt;
use hyper::{Method, StatusCode};

use crate::{Daemon, spec};

async fn status_and_code(
    response: hyper::Response<hyper::body::Incoming>,
) -> (StatusCode, Option<ErrorCode>) {
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let code = serde_json::from_slice::<celistra_proto::ApiError>(&bytes)
        .ok()
        .map(|e| e.code);
    (status, code)
}

#[tokio::test]
async fn every_route_requires_the_secret_over_tcp_and_the_socket() {
    let daemon = Daemon::start().await;
    let addr: std::net::SocketAddr = std::fs::read_to_string(daemon.home().join("http.addr"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(addr.ip().is_loopback());
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(daemon.home().join("auth.json"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let doc = daemon.client.get_openapi().await.unwrap();
    let paths = doc["paths"].as_object().expect("paths");
    assert!(paths.len() >= 10, "{paths:?}");
    let tcp = daemon.client.clone().over_tcp(addr);
    for (path, methods) in paths {
        // The dashboard login takes a one-time code, not the secret (tested in dashboard.rs), and
        // a decision link's token is its credential (tested in notifications.rs).
        if path == "/v1/sessions/login" || path.starts_with("/d/") {
            continue;
        }
        let concrete = path.replace("{agent}", "x").replace("{id}", "x");
        for method in methods.as_object().unwrap().keys() {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            for client in [
                tcp.clone().with_secret(""),
                tcp.clone().with_secret("00ff"),
                daemon.client.clone().with_secret(""),
            ] {
                let response = client.send(method.clone(), &concrete, None).await.unwrap();
                let www = response.headers().get("www-authenticate").cloned();
                assert_eq!(
                    status_and_code(response).await,
                    (StatusCode::UNAUTHORIZED, Some(ErrorCode::Unauthorized)),
                    "{method} {path}"
                );
                // The terminal WebSocket takes a ticket, not the secret (tested in terminal.rs).
                if !path.ends_with("/terminal") {
                    assert_eq!(www.unwrap(), "Bearer");
                }
            }
        }
    }
    let unknown = tcp
        .clone()
        .with_secret("")
        .send(Method::GET, "/v2/nothing", None)
        .await
        .unwrap();
    assert_eq!(status_and_code(unknown).await.0, StatusCode::UNAUTHORIZED);
    let health: Health = tcp.get_health().await.unwrap();
    assert_eq!(health.pid, daemon.pid());
}

#[tokio::test]
async fn bad_input_gets_clear_errors_and_the_daemon_keeps_serving() {
    let daemon = Daemon::start().await;
    let client = &daemon.client;
    let api_error = |result: Result<AgentInfo, ClientError>| match result {
        Err(ClientError::Api(e)) => e,
        other => panic!("expected an API error, got {other:?}"),
    };
    let e = api_error(client.get_agent("nobody").await);
    assert_eq!(e.code, ErrorCode::NotFound);
    assert!(e.message.contains("nobody"));

    daemon.spawn(spec("taken", "sleep 100")).await;
    // A signal the typed request cannot hold, sent as raw JSON.
    let response = client
        .send(
            Method::POST,
            "/v1/agents/taken/kill",
            Some(br#"{"signal": "USR9"}"#.to_vec()),
        )
        .await
        .unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let e = api_error(celistra_client::decode(status, &body));
    assert_eq!(e.code, ErrorCode::InvalidJson);
    assert!(
        e.message.contains("unknown signal `USR9`") && e.message.contains("signal"),
        "{}",
        e.message
    );

    let missing = celistra_proto::AgentSpec {
        workspace: Some("/does/not/exist".into()),
        ..spec("w", "true")
    };
    let e = api_error(client.spawn_agent(&missing).await);
    assert_eq!(e.code, ErrorCode::WorkspaceInvalid);
    assert!(e.message.contains("/does/not/exist"));

    let dup = celistra_proto::AgentSpec {
        workspace: Some("/tmp".into()),
        ..spec("taken", "true")
    };
    assert_eq!(
        api_error(client.spawn_agent(&dup).await).code,
        ErrorCode::NameTaken
    );

    for (body, needle) in [
        ("{\"command\": ", "EOF"),
        (
            "{\"command\": \"x\", \"comand\": 1}",
            "unknown field `comand`",
        ),
        ("[1,2]", "invalid type"),
        (
            "{\"command\": \"x\", \"name\": \"bad name\"}",
            "contains ` `",
        ),
    ] {
        let response = client
            .send(Method::POST, "/v1/agents", Some(body.as_bytes().to_vec()))
            .await
            .unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let error: celistra_proto::ApiError = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(error.message.contains(needle), "{body}: {}", error.message);
    }
    // A body announced as 2 MiB is refused from its headers, before any of it is read.
    let secret: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(daemon.home().join("auth.json")).unwrap())
            .unwrap();
    let addr = std::fs::read_to_string(daemon.home().join("http.addr")).unwrap();
    let mut stream = tokio::net::TcpStream::connect(addr.trim()).await.unwrap();
    let head = format!(
        "POST /v1/agents HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\n\r\n",
        secret["secret"].as_str().unwrap(),
        2 * 1024 * 1024
    );
    tokio::io::AsyncWriteExt::write_all(&mut stream, head.as_bytes())
        .await
        .unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(
        crate::PATIENCE,
        tokio::io::AsyncReadExt::read(&mut stream, &mut answer),
    )
    .await
    .unwrap()
    .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(
        answer.starts_with("HTTP/1.1 413") && answer.contains("payload_too_large"),
        "{answer}"
    );
    let response = client.send(Method::PUT, "/v1/agents", None).await.unwrap();
    assert_eq!(
        status_and_code(response).await,
        (
            StatusCode::METHOD_NOT_ALLOWED,
            Some(ErrorCode::MethodNotAllowed)
        )
    );
    let response = client
        .send(Method::GET, "/v1/agents/taken/logs?tail=many", None)
        .await
        .unwrap();
    assert_eq!(
        status_and_code(response).await,
        (StatusCode::BAD_REQUEST, Some(ErrorCode::InvalidRequest))
    );

    let health: Health = client.get_health().await.unwrap();
    assert_eq!(health.agents, 1);
}

#[tokio::test]
async fn events_resume_after_last_event_id_without_loss() {
    let daemon = Daemon::start().await;
    let first = daemon.spawn(spec("one", "sleep 100")).await;
    let seen = daemon
        .events_until(
            0,
            |e| matches!(&e.kind, EventKind::AgentState { agent_id, .. } if *agent_id == first.id),
        )
        .await;
    let resume_from = seen.last().unwrap().id;
    daemon
        .client
        .rename_agent("one", &celistra_proto::RenameRequest { name: "uno".into() })
        .await
        .unwrap();
    let resumed = daemon
        .events_until(resume_from, |e| {
            matches!(e.kind, EventKind::AgentUpdated { .. })
        })
        .await;
    assert!(resumed.iter().all(|e| e.id > resume_from));
    assert!(
        resumed.windows(2).all(|w| w[1].id == w[0].id + 1),
        "ids have gaps: {resumed:?}"
    );
    assert!(resumed.iter().any(|e| matches!(&e.kind, EventKind::AgentRenamed { old_name, new_name, .. } if old_name == "one" && new_name == "uno")));
    // With follow=false the stream ends after the replay, which holds the same events.
    let query = EventsQuery {
        after: Some(resume_from),
        follow: false,
    };
    let mut events = daemon.client.stream_events(&query).await.unwrap();
    let mut ids = vec![];
    let read_all = async {
        while let Some(frame) = events.next_frame().await.unwrap() {
            ids.push(frame.id.unwrap().parse::<u64>().unwrap());
        }
    };
    tokio::time::timeout(crate::PATIENCE, read_all)
        .await
        .expect("a follow=false stream ends");
    assert_eq!(
        &ids[..resumed.len()],
        resumed.iter().map(|e| e.id).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn apply_creates_restarts_only_changed_agents_and_prunes() {
    let daemon = Daemon::start().await;
    let ws = Some(daemon.work.path().display().to_string());
    let agents = |b_command: &str| {
        vec![
            celistra_proto::AgentSpec {
                workspace: ws.clone(),
                ..spec("a", "sleep 101")
            },
            celistra_proto::AgentSpec {
                workspace: ws.clone(),
                ..spec("b", b_command)
            },
        ]
    };
    let apply = |agents, prune, dry_run| ApplyRequest {
        agents,
        prune,
        dry_run,
    };
    let report: ApplyReport = daemon
        .client
        .apply(&apply(agents("sleep 102"), false, false))
        .await
        .unwrap();
    assert_eq!(report.created, ["a", "b"]);
    daemon.spawn(spec("extra", "sleep 103")).await;
    let a_pid = daemon
        .wait_state("a", celistra_proto::AgentState::Running)
        .await
        .pid;
    let b_pid = daemon
        .wait_state("b", celistra_proto::AgentState::Running)
        .await
        .pid;

    let report: ApplyReport = daemon
        .client
        .apply(&apply(agents("sleep 102"), false, false))
        .await
        .unwrap();
    assert_eq!(
        (
            report.unchanged.len(),
            report.created.len(),
            report.updated.len()
        ),
        (2, 0, 0)
    );
    let report: ApplyReport = daemon
        .client
        .apply(&apply(agents("sleep 104"), true, true))
        .await
        .unwrap();
    assert_eq!(
        (
            report.updated.clone(),
            report.removed.clone(),
            report.dry_run
        ),
        (vec!["b".to_owned()], vec!["extra".to_owned()], true)
    );
    assert_eq!(
        daemon.agent("b").await.pid,
        b_pid,
        "a dry run changed something"
    );

    daemon
        .client
        .apply(&apply(agents("sleep 104"), true, false))
        .await
        .unwrap();
    assert_eq!(
        daemon.agent("a").await.pid,
        a_pid,
        "an unchanged agent was restarted"
    );
    let b = daemon
        .wait_state("b", celistra_proto::AgentState::Running)
        .await;
    assert_ne!(b.pid, b_pid);
    assert_eq!(b.command, "sleep 104");
    assert!(
        matches!(daemon.client.get_agent("extra").await, Err(ClientError::Api(e)) if e.code == ErrorCode::NotFound)
    );
}

#[tokio::test]
async fn logs_keep_output_and_follow_it_across_restarts() {
    let daemon = Daemon::start().await;
    let agent = daemon
        .spawn(spec("talker", "printf 'one\\ntwo\\nthree\\n'; sleep 100"))
        .await;
    let deadline = std::time::Instant::now() + crate::PATIENCE;
    let tail = loop {
        let output = daemon.ctl(&["logs", &agent.id, "--tail", "2"]);
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        if text.contains("three") {
            break text;
        }
        assert!(std::time::Instant::now() < deadline, "output never arrived");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert_eq!(tail.replace('\r', ""), "two\nthree\n");

    let query = LogsQuery {
        follow: true,
        tail: Some(0),
        ..LogsQuery::default()
    };
    let mut follow = daemon.client.get_logs(&agent.id, &query).await.unwrap();
    daemon.client.restart_agent(&agent.id).await.unwrap();
    let mut seen = String::new();
    let read = async {
        while !seen.contains("three") {
            let chunk = celistra_client::next_chunk(&mut follow)
                .await
                .unwrap()
                .expect("stream open");
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    tokio::time::timeout(crate::PATIENCE, read)
        .await
        .expect("followed output of the new run");
}

/// Sends one HTTP/1.1 request over TCP exactly as given (no header added but the secret), and
/// returns the status and the body.
async fn raw_request(
    daemon: &Daemon,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &str,
) -> (u16, String) {
    let secret: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(daemon.home().join("auth.json")).unwrap())
            .unwrap();
    let addr = std::fs::read_to_string(daemon.home().join("http.addr")).unwrap();
    let mut stream = tokio::net::TcpStream::connect(addr.trim()).await.unwrap();
    let content_type = content_type.map_or(String::new(), |t| format!("Content-Type: {t}\r\n"));
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {}\r\n\
         {content_type}Content-Length: {}\r\n\r\n{body}",
        secret["secret"].as_str().unwrap(),
        body.len()
    );
    tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes())
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(
        crate::PATIENCE,
        tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut answer),
    )
    .await
    .unwrap()
    .unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer[9..12].parse().unwrap();
    let body = answer.split_once("\r\n\r\n").unwrap().1.to_owned();
    (status, body)
}

#[tokio::test]
async fn request_bodies_are_json_objects_sent_as_json() {
    let daemon = Daemon::start().await;
    let agent = daemon.spawn(spec("target", "sleep 100")).await;
    let kill = format!("/v1/agents/{}/kill", agent.id);

    // serde would take an array as the fields in order: `["KILL"]` must not kill.
    let json = Some("application/json");
    let (status, body) = raw_request(&daemon, "POST", &kill, json, "[\"KILL\"]").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("invalid_json") && body.contains("JSON object"),
        "{body}"
    );
    let nested = r#"{"agents": [["a", "sleep 1"]]}"#;
    let (status, body) = raw_request(&daemon, "POST", "/v1/apply", json, nested).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("agents[0]") && body.contains("JSON object"),
        "{body}"
    );
    assert_eq!(daemon.agent("target").await.state, AgentState::Running);

    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let (status, body) = raw_request(
            &daemon,
            "POST",
            &kill,
            content_type,
            r#"{"signal": "KILL"}"#,
        )
        .await;
        assert_eq!(status, 415, "{content_type:?}: {body}");
        assert!(
            body.contains("unsupported_media_type") && body.contains("application/json"),
            "{body}"
        );
    }
    assert_eq!(daemon.agent("target").await.state, AgentState::Running);

    // A route without a body needs no content type.
    let stop = format!("/v1/agents/{}/stop", agent.id);
    let (status, body) = raw_request(&daemon, "POST", &stop, None, "").await;
    assert_eq!(status, 200, "{body}");
    let start = format!("/v1/agents/{}/start", agent.id);
    let (status, body) = raw_request(&daemon, "POST", &start, None, "").await;
    assert_eq!(status, 200, "{body}");
    daemon.wait_state("target", AgentState::Running).await;
    let charset = Some("application/json; charset=utf-8");
    let (status, body) =
        raw_request(&daemon, "POST", &kill, charset, r#"{"signal": "TERM"}"#).await;
    assert_eq!(status, 200, "{body}");
}
