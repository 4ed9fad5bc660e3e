//! The dashboard: its files and headers, one-time login links, session cookies, CSRF, revocation,
//! `ctl dashboard` and `ctl sessions`, through real HTTP; then the whole dashboard in a real
//! browser (web/e2e/dashboard.mjs: chromium through playwright-core): an owner on a desktop and a
//! phone over HTTP, then a viewer and an approver over HTTPS, then a fleet (the HTTP daemon is a hub
//! and a second daemon joined it); and the first-load budget.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use celistra_proto::{ErrorCode, LoginLink, SessionInfo, SessionState};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};

use crate::{BIN, Daemon};

/// One HTTP/1.1 request over TCP with exactly the headers given (no bearer secret).
pub(crate) async fn request(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (StatusCode, hyper::HeaderMap, String) {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(connection);
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    if body.is_some() {
        builder = builder.header("content-type", "application/json");
    }
    let request = builder
        .body(Full::new(Bytes::from(body.unwrap_or("").to_owned())))
        .expect("request");
    let response = sender.send_request(request).await.expect("send");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (
        status,
        headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

pub(crate) fn addr(daemon: &Daemon) -> SocketAddr {
    std::fs::read_to_string(daemon.home().join("http.addr"))
        .expect("http.addr")
        .trim()
        .parse()
        .expect("address")
}

fn code_of(body: &str) -> Option<ErrorCode> {
    serde_json::from_str::<celistra_proto::ApiError>(body)
        .ok()
        .map(|e| e.code)
}

async fn login_link(daemon: &Daemon) -> LoginLink {
    daemon
        .client
        .issue_login_code(None)
        .await
        .expect("login code")
}

/// Logs in with a fresh code; returns the cookie header value and the CSRF token.
async fn login(daemon: &Daemon) -> (String, String) {
    let link = login_link(daemon).await;
    let body = format!(r#"{{"code":"{}"}}"#, link.code);
    let (status, headers, text) = request(
        addr(daemon),
        Method::POST,
        "/v1/sessions/login",
        &[],
        Some(&body),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let set_cookie = headers["set-cookie"].to_str().unwrap().to_owned();
    let pair = set_cookie.split(';').next().unwrap().to_owned();
    let state: SessionState = serde_json::from_str(&text).unwrap();
    (pair, state.csrf_token)
}

#[tokio::test]
async fn the_dashboard_is_served_with_strict_headers_and_holds_no_secret() {
    let daemon = Daemon::start().await;
    let secret = daemon.secret();
    let addr = addr(&daemon);
    let (status, headers, html) = request(addr, Method::GET, "/", &[], None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self';") && csp.contains("frame-ancestors 'none'"));
    assert!(!csp.contains("script-src 'self' 'unsafe-inline'"));
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert_eq!(headers["cache-control"], "no-cache");
    assert!(!html.contains(&secret));
    assert!(!html.contains("<script>"), "no inline script");
    // The hashed script: immutable, compressed on request, 304 on its ETag.
    let script = html
        .split("src=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("script tag")
        .to_owned();
    let (status, headers, _) = request(
        addr,
        Method::GET,
        &script,
        &[("accept-encoding", "br")],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-encoding"], "br");
    assert!(
        headers["cache-control"]
            .to_str()
            .unwrap()
            .contains("immutable")
    );
    let etag = headers["etag"].to_str().unwrap().to_owned();
    let (status, _, _) = request(
        addr,
        Method::GET,
        &script,
        &[("if-none-match", &etag)],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    for path in [
        "/sw.js",
        "/manifest.webmanifest",
        "/icons/icon-192.png",
        "/login",
    ] {
        let (status, _, _) = request(addr, Method::GET, path, &[], None).await;
        assert_eq!(status, StatusCode::OK, "{path}");
    }
    // Anything else is the API's, and needs a credential.
    let (status, _, _) = request(addr, Method::GET, "/secret.txt", &[], None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_login_code_opens_one_session_whose_cookie_needs_csrf_to_change_anything() {
    let daemon = Daemon::start().await;
    let addr = addr(&daemon);
    let link = login_link(&daemon).await;
    assert_eq!(link.url, format!("http://{addr}/login#{}", link.code));
    let body = format!(r#"{{"code":"{}"}}"#, link.code);
    let (status, headers, text) = request(
        addr,
        Method::POST,
        "/v1/sessions/login",
        &[("user-agent", "it-browser")],
        Some(&body),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let set_cookie = headers["set-cookie"].to_str().unwrap();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
        assert!(set_cookie.contains(flag), "{set_cookie}");
    }
    assert!(
        !set_cookie.contains("Secure"),
        "plain HTTP: a Secure cookie would never come back"
    );
    let state: SessionState = serde_json::from_str(&text).unwrap();
    let cookie = set_cookie.split(';').next().unwrap().to_owned();

    // Replayed: refused, and says what to do.
    let (status, _, text) =
        request(addr, Method::POST, "/v1/sessions/login", &[], Some(&body)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        text.contains("already used") && text.contains("ctl dashboard"),
        "{text}"
    );

    // Reading works with the cookie alone; the session sees its own CSRF token again.
    let (status, _, text) = request(
        addr,
        Method::GET,
        "/v1/session",
        &[("cookie", &cookie)],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let again: SessionState = serde_json::from_str(&text).unwrap();
    assert_eq!(again.csrf_token, state.csrf_token);
    let (status, _, _) = request(
        addr,
        Method::GET,
        "/v1/agents",
        &[("cookie", &cookie)],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    // Changing something: without the CSRF token 403, with a wrong one 403, from another origin 403.
    let spawn = format!(
        r#"{{"name":"by-cookie","command":"sleep 1000003","workspace":"{}"}}"#,
        daemon.work.path().display()
    );
    let (status, _, text) = request(
        addr,
        Method::POST,
        "/v1/agents",
        &[("cookie", &cookie)],
        Some(&spawn),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{text}");
    assert_eq!(code_of(&text), Some(ErrorCode::CsrfFailed));
    let (status, _, _) = request(
        addr,
        Method::POST,
        "/v1/agents",
        &[("cookie", &cookie), ("x-csrf-token", &"0".repeat(64))],
        Some(&spawn),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, text) = request(
        addr,
        Method::POST,
        "/v1/agents",
        &[
            ("cookie", &cookie),
            ("x-csrf-token", &state.csrf_token),
            ("origin", "http://evil.example"),
        ],
        Some(&spawn),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(code_of(&text), Some(ErrorCode::OriginNotAllowed));
    let origin = format!("http://{addr}");
    let (status, _, text) = request(
        addr,
        Method::POST,
        "/v1/agents",
        &[
            ("cookie", &cookie),
            ("x-csrf-token", &state.csrf_token),
            ("origin", &origin),
            ("x-celistra-source", "dashboard"),
        ],
        Some(&spawn),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{text}");

    // The session is the actor of what it did; login and spawn are in the audit log.
    let actor = state.session.actor.clone();
    assert_eq!(actor, format!("session:{}", state.session.id));
    let query = celistra_proto::AuditQuery {
        limit: Some(100),
        ..celistra_proto::AuditQuery::default()
    };
    let audit = daemon.client.list_audit(&query).await.unwrap();
    let actions: Vec<(&str, &str)> = audit
        .entries
        .iter()
        .map(|e| (e.action.as_str(), e.actor.as_str()))
        .collect();
    assert!(
        actions.contains(&("session_login", actor.as_str())),
        "{actions:?}"
    );
    assert!(
        actions.contains(&("login_code_issued", "machine-secret")),
        "{actions:?}"
    );
    assert!(
        audit
            .entries
            .iter()
            .any(|e| e.actor == actor && e.action.starts_with("agent_spawn")),
        "{actions:?}"
    );

    // Listed (`ctl sessions`), revoked (`ctl sessions revoke`): the cookie stops working at once.
    let listed = daemon.ctl(&["sessions", "ls", "--json"]);
    assert!(listed.status.success());
    let sessions: Vec<SessionInfo> = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].user_agent, "it-browser");
    let table = daemon.ctl(&["sessions"]);
    assert!(String::from_utf8_lossy(&table.stdout).contains(&state.session.id));
    let revoked = daemon.ctl(&["sessions", "revoke", &state.session.id]);
    assert!(revoked.status.success(), "{revoked:?}");
    let (status, _, text) = request(
        addr,
        Method::GET,
        "/v1/agents",
        &[("cookie", &cookie)],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(text.contains("session has ended"), "{text}");
    let unknown = daemon.ctl(&["sessions", "revoke", "se-000000000000"]);
    assert_eq!(unknown.status.code(), Some(1));
    let audit: celistra_proto::AuditPage = daemon
        .client
        .list_audit(&celistra_proto::AuditQuery {
            action: Some("session_revoked".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(audit.entries.len(), 1);
}

#[tokio::test]
async fn usage_reports_cpu_time_and_memory_of_running_agents() {
    let daemon = Daemon::start().await;
    let agent = daemon.spawn(crate::spec("busy", "sleep 1000004")).await;
    daemon
        .wait_state(&agent.id, celistra_proto::AgentState::Running)
        .await;
    // The sampler reads every agent every 2 s: a new agent's first reading comes at the next.
    let deadline = std::time::Instant::now() + crate::PATIENCE;
    let mine = loop {
        let usage: Vec<celistra_proto::AgentUsage> = daemon.client.list_usage().await.unwrap();
        if let Some(mine) = usage.into_iter().find(|u| u.agent_id == agent.id) {
            break mine;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the running agent was never sampled"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(mine.memory_bytes > 0, "{mine:?}");
    assert!(mine.scope == "cgroup" || mine.scope == "process");
}

#[tokio::test]
async fn logout_ends_the_session_and_bad_codes_are_refused() {
    let daemon = Daemon::start().await;
    let addr = addr(&daemon);
    let (cookie, csrf) = login(&daemon).await;
    let (status, headers, _) = request(
        addr,
        Method::POST,
        "/v1/session/logout",
        &[("cookie", &cookie), ("x-csrf-token", &csrf)],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let (status, _, _) = request(
        addr,
        Method::GET,
        "/v1/session",
        &[("cookie", &cookie)],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    for code in ["", "nope", &"ab".repeat(32)] {
        let body = format!(r#"{{"code":"{code}"}}"#);
        let (status, _, text) =
            request(addr, Method::POST, "/v1/sessions/login", &[], Some(&body)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{text}");
    }
    let (status, _, text) = request(
        addr,
        Method::POST,
        "/v1/sessions/login",
        &[],
        Some("{\"code\": 3}"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    // The machine secret is not a session.
    let response = daemon
        .client
        .send(Method::GET, "/v1/session", None)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    // `ctl dashboard` prints a link that works once.
    let output = daemon.ctl(&["dashboard", "--no-open"]);
    assert!(output.status.success());
    let url = String::from_utf8(output.stdout).unwrap();
    assert!(
        url.trim().starts_with(&format!("http://{addr}/login#")),
        "{url}"
    );
}

#[tokio::test]
async fn an_expired_login_code_is_refused() {
    // Codes live 5 minutes; this daemon's live 50 ms (the knob only shortens them).
    let daemon = Daemon::start_with_env(&[("CELISTRA_LOGIN_CODE_TTL_MS", "50")]).await;
    let addr = addr(&daemon);
    let link = login_link(&daemon).await;
    let deadline = Instant::now() + crate::PATIENCE;
    while celistra_now_ms() <= link.expires_at_ms {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let body = format!(r#"{{"code":"{}"}}"#, link.code);
    let (status, _, text) =
        request(addr, Method::POST, "/v1/sessions/login", &[], Some(&body)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(text.contains("expired"), "{text}");
}

fn celistra_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn web_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../web")
}

fn target_dir() -> PathBuf {
    // The test binary lives in <target>/<profile>/deps/.
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("target"))
}

/// Kills the browser test's whole process group (node and the chromium it started) on every way
/// out.
struct Group(u32);

impl Drop for Group {
    fn drop(&mut self) {
        crate::run_kill("KILL", self.0);
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0)])
            .status();
    }
}

#[tokio::test]
async fn the_dashboard_works_in_a_real_browser_on_a_desktop_a_phone_and_over_https_for_each_role() {
    // The HTTP daemon is a fleet hub, and a second daemon (the node) joins it: the last part of the
    // browser test shows both machines and works on the node through the hub.
    let daemon = Daemon::start_with_args(&[
        "--hub",
        "--hub-listen",
        "127.0.0.1:0",
        "--machine-name",
        "e2e-hub",
    ])
    .await;
    let node = Daemon::start_with_args(&["--machine-name", "e2e-node"]).await;
    crate::fleet::join(&daemon, &node).await;
    crate::fleet::machine_until(&daemon, "e2e-node", crate::PATIENCE, "came online", |m| {
        m.online
    })
    .await;
    // The viewer and approver sessions use a daemon that serves HTTPS with its generated
    // certificate, which the browser trusts by its SPKI hash (the script checks it against
    // `/v1/health`).
    let tls = Daemon::start_with_args(&["--tls"]).await;
    let browser = std::env::var("CELISTRA_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&browser).exists(),
        "{browser} is missing: run scripts/setup (apt-get install chromium) or set CELISTRA_CHROMIUM"
    );
    let shots = target_dir().join("dashboard-screenshots");
    let mut script = Command::new("node");
    script
        .arg(web_dir().join("e2e/dashboard.mjs"))
        .arg("--bin")
        .arg(BIN)
        .arg("--home")
        .arg(daemon.home())
        .arg("--work")
        .arg(daemon.work.path())
        .arg("--shots")
        .arg(&shots)
        .arg("--tls-home")
        .arg(tls.home())
        .arg("--tls-work")
        .arg(tls.work.path())
        .arg("--hub-name")
        .arg("e2e-hub")
        .arg("--node-name")
        .arg("e2e-node")
        .arg("--node-home")
        .arg(node.home())
        .arg("--node-work")
        .arg(node.work.path())
        .arg("--browser")
        .arg(&browser);
    let output = run_browser_script(script, Duration::from_secs(300), &shots).await;
    println!("{output}");
    assert!(
        output.contains("0 failed")
            && output.contains("BENCH ")
            && output.contains("ok   https viewer: the terminal is read-only")
            && output.contains("ok   https approver: approves a real request")
            && output.contains("ok   fleet: the node's terminal through the hub")
            && output.contains("ok   fleet: back on the hub")
            && output.contains("ok   fleet: a node that stops is shown offline"),
        "{output}"
    );
}

/// A screen rule that turns a stand-in's question into `needs-input` (docs/agents.md).
const ASKER_RULES: &str = r#"{"kinds": {"stand-in": {
    "quiet_idle_secs": 1,
    "rules": [{"name": "asks", "activity": "needs-input", "pattern": "Proceed\\?", "lines": 1}]
}}}"#;

#[tokio::test]
async fn the_dashboard_shows_activity_evidence_and_usage_limits_live_across_a_fleet() {
    // A hub whose stand-in asks a question once the browser test says so (a file `go` in its
    // workspace), and a node whose Claude Code stand-in hits its usage limit, reset in an hour.
    let hub = Daemon::start_with_args(&[
        "--hub",
        "--hub-listen",
        "127.0.0.1:0",
        "--machine-name",
        "aw-hub",
    ])
    .await;
    let node = Daemon::start_with_args(&["--machine-name", "aw-node"]).await;
    crate::fleet::join(&hub, &node).await;
    crate::fleet::machine_until(&hub, "aw-node", crate::PATIENCE, "came online", |m| {
        m.online
    })
    .await;
    std::fs::write(hub.home().join("agent-rules.json"), ASKER_RULES).unwrap();
    hub.spawn(celistra_proto::AgentSpec {
        kind: Some("stand-in".into()),
        ..crate::spec(
            "asker",
            "echo started; while [ ! -e go ]; do sleep 0.2; done; printf 'Proceed? [y/n] '; read answer; sleep 600",
        )
    })
    .await;
    let reset_s = celistra_now_ms() / 1000 + 3600;
    let limited = node
        .spawn(celistra_proto::AgentSpec {
            kind: Some("claude".into()),
            ..crate::spec(
                "limited",
                &format!("echo 'Claude AI usage limit reached|{reset_s}'; exit 1"),
            )
        })
        .await;
    node.wait_agent(&limited.id, "waiting on its limit", |a| a.limit.is_some())
        .await;
    let browser = std::env::var("CELISTRA_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&browser).exists(),
        "{browser} is missing: run scripts/setup (apt-get install chromium) or set CELISTRA_CHROMIUM"
    );
    let shots = target_dir().join("dashboard-awareness-screenshots");
    let mut script = Command::new("node");
    script
        .arg(web_dir().join("e2e/awareness.mjs"))
        .arg("--bin")
        .arg(BIN)
        .arg("--home")
        .arg(hub.home())
        .arg("--work")
        .arg(hub.work.path())
        .arg("--node-home")
        .arg(node.home())
        .arg("--reset-ms")
        .arg((reset_s * 1000).to_string())
        .arg("--shots")
        .arg(&shots)
        .arg("--browser")
        .arg(&browser);
    let output = run_browser_script(script, Duration::from_secs(180), &shots).await;
    println!("{output}");
    assert!(output.contains("0 failed"), "{output}");
    for step in [
        "ok   a question on screen turns the badge to needs-input, live",
        "ok   waiting on a limit, across the fleet",
        "ok   needs attention, across the fleet",
        "ok   the agent's detail",
        "ok   history shows the run's exit class",
        "ok   the service worker shows an agent_activity push notice",
        "ok   a link to an agent without its machine (a notice's) finds the machine",
    ] {
        assert!(output.contains(step), "{step}\n{output}");
    }
}

/// Runs a playwright script (`node web/e2e/….mjs …`) in its own process group with a throwaway
/// profile, bounded by `limit`; returns its output once it succeeded.
async fn run_browser_script(
    mut script: Command,
    limit: Duration,
    shots: &std::path::Path,
) -> String {
    use std::os::unix::process::CommandExt;
    let profile = tempfile::tempdir().expect("temp dir");
    let mut child = script
        .env("TMPDIR", profile.path())
        .env("HOME", profile.path())
        .current_dir(web_dir())
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run node (install Node.js 20+: scripts/setup)");
    let group = Group(child.id());
    let stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    drop(group);
    let _ = child.wait();
    let output = reader.join().unwrap_or_default();
    let status =
        status.unwrap_or_else(|| panic!("the browser test did not finish within {limit:?}"));
    assert!(
        status.success(),
        "the browser test failed ({status}); screenshots in {}:\n{output}",
        shots.display()
    );
    output
}
