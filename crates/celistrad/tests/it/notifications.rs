//! Notification channels end to end: a real agent asks, loopback receivers play the push service,
//! the ntfy server and the webhook endpoint; what they receive is decrypted or verified, and the
//! decision links they carry decide the request, once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use celistra_notify::webpush::Browser;
use celistra_proto::{
    Approval, ApprovalStatus, AuditPage, ErrorCode, EventKind, Notice, NoticeKind,
    NotificationsStatus, PushSubscriptionInfo, PushSubscriptionRequest, VapidKeyInfo,
};
use http_body_util::BodyExt;
use hyper::Method;
use tokio::sync::mpsc;

use crate::approvals::{asking, pending_of, wait_output};
use crate::{Daemon, PATIENCE, spec};

/// One request a receiver got.
pub(crate) struct Hit {
    pub(crate) at: Instant,
    pub(crate) path: String,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

/// A loopback HTTP server that records every request. Each path answers the statuses scripted
/// for it in turn, then 200.
pub(crate) struct Receiver {
    addr: SocketAddr,
    hits: mpsc::UnboundedReceiver<Hit>,
}

impl Receiver {
    pub(crate) async fn start(script: &[(&str, &[u16])]) -> Receiver {
        let script: HashMap<String, Vec<u16>> = script
            .iter()
            .map(|(path, statuses)| ((*path).to_owned(), statuses.to_vec()))
            .collect();
        let script = Arc::new(Mutex::new(script));
        let (sender, hits) = mpsc::unbounded_channel();
        let app = axum::Router::new().fallback(
            move |uri: axum::http::Uri, headers: HeaderMap, body: Bytes| {
                let script = Arc::clone(&script);
                let sender = sender.clone();
                async move {
                    let path = uri.path().to_owned();
                    let status = script
                        .lock()
                        .unwrap()
                        .get_mut(&path)
                        .and_then(|statuses| (!statuses.is_empty()).then(|| statuses.remove(0)))
                        .unwrap_or(200);
                    let _ = sender.send(Hit {
                        at: Instant::now(),
                        path,
                        headers,
                        body,
                    });
                    StatusCode::from_u16(status).unwrap()
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { addr, hits }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The next request, whenever it comes (`None`: the receiver stopped).
    pub(crate) async fn next_hit(&mut self) -> Option<Hit> {
        self.hits.recv().await
    }

    pub(crate) async fn next(&mut self) -> Hit {
        tokio::time::timeout(PATIENCE, self.hits.recv())
            .await
            .expect("the receiver got nothing in time")
            .expect("receiver running")
    }
}

fn tcp_addr(daemon: &Daemon) -> SocketAddr {
    std::fs::read_to_string(daemon.home().join("http.addr"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// What a phone does with a decision link: no bearer secret, only the link.
async fn open_link(
    daemon: &Daemon,
    method: Method,
    url: &str,
    body: Option<&str>,
) -> (StatusCode, HeaderMap, String) {
    let path = &url[url.find("/d/").expect("a decision link")..];
    let response = daemon
        .client
        .clone()
        .over_tcp(tcp_addr(daemon))
        .with_secret("")
        .send(method, path, body.map(|b| b.as_bytes().to_vec()))
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

fn code_of(body: &str) -> Option<ErrorCode> {
    serde_json::from_str::<celistra_proto::ApiError>(body)
        .ok()
        .map(|e| e.code)
}

fn mode_of(path: &std::path::Path) -> u32 {
    std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(path).unwrap().permissions()) & 0o777
}

#[tokio::test]
async fn web_push_reaches_the_device_encrypted_and_its_link_decides_once() {
    let mut push = Receiver::start(&[("/push/gone", &[410])]).await;
    let daemon = Daemon::start().await;
    let vapid: VapidKeyInfo = daemon.client.get_vapid_key().await.unwrap();
    let phone = Browser::generate().unwrap();
    let subscribe = |endpoint: String, keys, label: &str| PushSubscriptionRequest {
        endpoint,
        keys,
        expiration_time: None,
        label: Some(label.into()),
    };
    let add = async |request: PushSubscriptionRequest| -> PushSubscriptionInfo {
        daemon.client.subscribe_push(&request).await.unwrap()
    };
    let device = add(subscribe(
        push.url("/push/phone"),
        phone.keys(),
        "test phone",
    ))
    .await;
    let gone_phone = Browser::generate().unwrap();
    let gone = add(subscribe(
        push.url("/push/gone"),
        gone_phone.keys(),
        "old phone",
    ))
    .await;
    // The device's keys are kept private.
    let stored = daemon.home().join("push-subscriptions.json");
    assert_eq!(mode_of(&stored), 0o600);
    assert_eq!(mode_of(&daemon.home().join("vapid.key")), 0o600);
    assert_eq!(mode_of(&daemon.home().join("decision-links.key")), 0o600);
    // A subscription a browser could not have made is refused, saying why.
    let bad = daemon
        .client
        .subscribe_push(&subscribe(
            "http://192.0.2.1/push".into(),
            phone.keys(),
            "plain http elsewhere",
        ))
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("endpoint"), "{bad}");

    let agent = daemon
        .spawn(spec(
            "pusher",
            &asking("'git push origin main' --detail '3 commits'"),
        ))
        .await;
    let approval = pending_of(&daemon, &agent.id).await;
    let mut hits = [push.next().await, push.next().await];
    hits.sort_by(|a, b| a.path.cmp(&b.path));
    let (gone_hit, hit) = (&hits[0], &hits[1]);
    assert_eq!(gone_hit.path, "/push/gone");
    assert_eq!(hit.path, "/push/phone");
    assert_eq!(hit.headers["content-encoding"], "aes128gcm");
    assert_eq!(hit.headers["urgency"], "high");
    let authorization = hit.headers["authorization"].to_str().unwrap();
    assert!(
        authorization.starts_with("vapid t=")
            && authorization.ends_with(&format!(", k={}", vapid.public_key)),
        "{authorization}"
    );
    let notice: Notice = serde_json::from_slice(&phone.decrypt(&hit.body).unwrap()).unwrap();
    assert_eq!(notice.kind, NoticeKind::ApprovalRequested);
    let sent = notice.approval.clone().unwrap();
    assert_eq!(
        (sent.id.as_str(), sent.prompt.as_str()),
        (approval.id.as_str(), "git push origin main")
    );
    assert!(
        phone.decrypt(&gone_hit.body).is_err(),
        "each device has its own keys"
    );
    let link = notice.decide_url.unwrap();

    // The page: the request, a press-and-hold button, a strict policy, never cached.
    let (status, headers, page) = open_link(&daemon, Method::GET, &link, None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("git push origin main") && page.contains("Hold to approve"));
    let policy = headers["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("script-src 'nonce-") && policy.contains("frame-ancestors 'none'"));
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["referrer-policy"], "no-referrer");

    let (status, _, body) = open_link(
        &daemon,
        Method::POST,
        &link,
        Some(r#"{"verdict":"approve"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let decided: Approval = serde_json::from_str(&body).unwrap();
    assert_eq!(decided.status, ApprovalStatus::Approved);
    assert_eq!(decided.decided_by, Some(format!("link:push:{}", device.id)));
    wait_output(&daemon, &agent.id, "verdict: go").await;

    // Replayed: refused, saying it was already decided; the page says so too.
    let (status, _, body) =
        open_link(&daemon, Method::POST, &link, Some(r#"{"verdict":"deny"}"#)).await;
    assert_eq!(
        (status, code_of(&body)),
        (StatusCode::CONFLICT, Some(ErrorCode::Conflict))
    );
    assert!(body.contains("already used"), "{body}");
    let (status, _, page) = open_link(&daemon, Method::GET, &link, None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(page.contains("approved by link:push:"), "{page}");

    // The phone hears of the decision, so it can take the notification down.
    let decided_hit = push.next().await;
    let notice: Notice =
        serde_json::from_slice(&phone.decrypt(&decided_hit.body).unwrap()).unwrap();
    assert_eq!(notice.kind, NoticeKind::ApprovalDecided);
    assert!(notice.decide_url.is_none());

    // The device whose push service answered 410 is forgotten; the other stays.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let devices: Vec<PushSubscriptionInfo> =
            daemon.client.list_push_subscriptions().await.unwrap();
        if devices.iter().all(|d| d.id != gone.id) {
            assert!(devices.iter().any(|d| d.id == device.id));
            break;
        }
        assert!(Instant::now() < deadline, "the gone device is still listed");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let query = celistra_proto::AuditQuery {
        limit: Some(500),
        ..celistra_proto::AuditQuery::default()
    };
    let audit: AuditPage = daemon.client.list_audit(&query).await.unwrap();
    let actions: Vec<(&str, &str, &str)> = audit
        .entries
        .iter()
        .map(|e| (e.action.as_str(), e.actor.as_str(), e.target.as_str()))
        .collect();
    assert!(actions.contains(&("push_subscribed", "machine-secret", device.id.as_str())));
    assert!(actions.contains(&("push_unsubscribed", "system", gone.id.as_str())));
    let link_actor = format!("link:push:{}", device.id);
    assert!(
        actions
            .iter()
            .any(|(action, actor, _)| *action == "approval_decided" && *actor == link_actor),
        "{actions:?}"
    );
}

#[tokio::test]
async fn ntfy_buttons_decide_and_forged_or_expired_links_are_refused() {
    let mut ntfy = Receiver::start(&[]).await;
    let token_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token_file.path(), "tk_secret_token\n").unwrap();
    let config = serde_json::json!({"notifications": {"ntfy": [{
        "name": "phone", "server": ntfy.url(""), "topic": "celistra-test",
        "token_file": token_file.path(),
    }]}});
    let daemon = Daemon::start_with_config(&config.to_string()).await;
    let agent = daemon
        .spawn(spec("ntfy-asker", &asking("'drop table users'")))
        .await;
    let approval = pending_of(&daemon, &agent.id).await;
    let hit = ntfy.next().await;
    assert_eq!(hit.path, "/");
    assert_eq!(hit.headers["authorization"], "Bearer tk_secret_token");
    let publish: serde_json::Value = serde_json::from_slice(&hit.body).unwrap();
    assert_eq!(publish["topic"], "celistra-test");
    assert_eq!(publish["message"], "drop table users");
    let approve = &publish["actions"][0];
    assert_eq!(approve["label"], "Approve");
    let link = approve["url"].as_str().unwrap().to_owned();
    assert_eq!(publish["click"], link.as_str());
    assert!(link.contains(&approval.id), "{link}");

    // Forged: a changed signature, a stretched expiry, another request's id, junk.
    let (mac_at, tampered_mac) = {
        let at = link.rfind('.').unwrap() + 1;
        let mut bytes = link.clone().into_bytes();
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        (at, String::from_utf8(bytes).unwrap())
    };
    assert!(mac_at > 0);
    let expiry = approval.expires_at_ms.to_string();
    let stretched = link.replace(&expiry, &(approval.expires_at_ms + 3_600_000).to_string());
    let other = link.replace(&approval.id, "ap-000000000000");
    let verdict = Some(r#"{"verdict":"approve"}"#);
    for forged in [&tampered_mac, &stretched, &other] {
        let (status, _, body) = open_link(&daemon, Method::POST, forged, verdict).await;
        assert_eq!(
            (status, code_of(&body)),
            (StatusCode::FORBIDDEN, Some(ErrorCode::Forbidden)),
            "{forged}: {body}"
        );
    }
    let (status, _, _) = open_link(&daemon, Method::POST, "/d/nonsense", verdict).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let still: Approval = daemon.client.get_approval(&approval.id).await.unwrap();
    assert_eq!(still.status, ApprovalStatus::Pending);

    // The Deny button, pressed as the ntfy app does: its method, URL and body.
    let deny = &publish["actions"][1];
    assert_eq!(
        (deny["method"].as_str(), deny["url"].as_str()),
        (Some("POST"), Some(link.as_str()))
    );
    let (status, _, body) = open_link(&daemon, Method::POST, &link, deny["body"].as_str()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    wait_output(&daemon, &agent.id, "verdict: stop 1").await;

    // A link outlives nothing: once its request expired, it is gone.
    let brief = daemon
        .spawn(spec("brief", &asking("'quick thing' --ttl 1")))
        .await;
    let hit = ntfy.next().await;
    let publish: serde_json::Value = serde_json::from_slice(&hit.body).unwrap();
    let link = publish["actions"][0]["url"].as_str().unwrap().to_owned();
    wait_output(&daemon, &brief.id, "verdict: stop 3").await;
    let (status, _, body) = open_link(&daemon, Method::POST, &link, verdict).await;
    assert_eq!(
        (status, code_of(&body)),
        (StatusCode::GONE, Some(ErrorCode::Gone)),
        "{body}"
    );
    // Forged links are failed authentications in the audit log.
    let audit: AuditPage = daemon
        .client
        .list_audit(&celistra_proto::AuditQuery {
            action: Some("auth_failed".into()),
            limit: Some(100),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(audit.entries.len() >= 3, "{:?}", audit.entries);
}

// Multi-threaded: the receiver must keep serving while the test waits for `ctl`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_signed_and_retried_with_backoff() {
    let mut hook = Receiver::start(&[("/hook", &[503, 502])]).await;
    let config = serde_json::json!({"notifications": {"webhooks": [{
        "name": "ops", "url": hook.url("/hook"), "retry_initial_ms": 200,
    }]}});
    let daemon = Daemon::start_with_config(&config.to_string()).await;
    let agent = daemon
        .spawn(spec("hooked", &asking("'restart prod'")))
        .await;
    let approval = pending_of(&daemon, &agent.id).await;
    let attempts = [hook.next().await, hook.next().await, hook.next().await];
    let secret_file = daemon.home().join("webhook-ops.secret");
    assert_eq!(mode_of(&secret_file), 0o600);
    let secret = std::fs::read_to_string(&secret_file).unwrap();
    let secret = secret.trim().as_bytes();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let delivery = &attempts[0].headers["x-celistra-delivery"];
    for hit in &attempts {
        let signature = hit.headers["x-celistra-signature"].to_str().unwrap();
        assert!(
            celistra_notify::webhook::verify(secret, signature, &hit.body, now, 60),
            "{signature}"
        );
        assert!(!celistra_notify::webhook::verify(
            b"wrong", signature, &hit.body, now, 60
        ));
        assert_eq!(
            &hit.headers["x-celistra-delivery"], delivery,
            "one delivery id across retries"
        );
        assert_eq!(hit.headers["x-celistra-event"], "approval_requested");
    }
    // Backoff: about 200 ms, then about 400 ms (jitter is a fifth either way).
    let gaps = [
        attempts[1].at - attempts[0].at,
        attempts[2].at - attempts[1].at,
    ];
    assert!(
        gaps[0].as_millis() >= 160 && gaps[1].as_millis() >= 320,
        "{gaps:?}"
    );
    let notice: Notice = serde_json::from_slice(&attempts[2].body).unwrap();
    assert_eq!(notice.approval.as_ref().unwrap().id, approval.id);
    let link = notice.decide_url.unwrap();
    let (status, _, body) = open_link(
        &daemon,
        Method::POST,
        &link,
        Some(r#"{"verdict":"approve"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    wait_output(&daemon, &agent.id, "verdict: go").await;
    let decided = hook.next().await;
    assert_eq!(decided.headers["x-celistra-event"], "approval_decided");
    let status: NotificationsStatus = daemon.client.get_notifications().await.unwrap();
    let ops = status
        .channels
        .iter()
        .find(|c| c.channel == "webhook:ops")
        .unwrap();
    assert_eq!((ops.delivered, ops.failed), (2, 0), "{ops:?}");
    let out = daemon.ctl(&["notifications", "test"]);
    assert!(out.status.success(), "{out:?}");
    let test = hook.next().await;
    assert_eq!(test.headers["x-celistra-event"], "test");
}

#[tokio::test]
async fn a_channel_that_is_down_never_holds_up_a_decision() {
    // One channel takes the connection and never answers; another refuses connections.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let refused = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let refused_addr = refused.local_addr().unwrap();
    drop(refused);
    let config = serde_json::json!({"notifications": {
        "webhooks": [{"name": "silent", "url": format!("http://{silent_addr}/hook")}],
        "ntfy": [{"name": "down", "server": format!("http://{refused_addr}"), "topic": "t"}],
    }});
    let daemon = Daemon::start_with_config(&config.to_string()).await;
    let agent = daemon.spawn(spec("undeterred", &asking("'ship it'"))).await;
    let approval = pending_of(&daemon, &agent.id).await;
    // The silent channel's request is in flight, and stays unanswered, while the CLI decides.
    let (held, _) = tokio::time::timeout(PATIENCE, silent.accept())
        .await
        .expect("the webhook connects")
        .unwrap();
    let out = daemon.ctl(&["approvals", "approve", &approval.id]);
    assert!(out.status.success(), "{out:?}");
    wait_output(&daemon, &agent.id, "verdict: go").await;
    drop(held);
    // The refused channel's failure is reported, not hidden.
    daemon
        .events_until(0, |e| {
            matches!(&e.kind, EventKind::NotificationFailed { channel, approval_id, .. }
                if channel == "ntfy:down" && approval_id.as_deref() == Some(approval.id.as_str()))
        })
        .await;
    let out = daemon.ctl(&["notifications"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("ntfy:down") && text.contains("webhook:silent"),
        "{text}"
    );
}

#[tokio::test]
async fn bad_channel_settings_are_named_at_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"notifications": {"webhooks": [{"name": "ops", "url": "http://192.0.2.7/hook"}]}}"#,
    )
    .unwrap();
    let out = std::process::Command::new(crate::BIN)
        .args([
            "--home",
            dir.path().to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("notifications.webhooks[0].url") && err.contains("use https"),
        "{err}"
    );
}
