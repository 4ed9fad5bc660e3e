//! `GET /metrics` on a real daemon: valid Prometheus text by `promtool check metrics`, values that
//! follow what happened (a restart, output, API requests), readable with a viewer token, refused
//! without a credential.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use celistra_client::Client;
use celistra_proto::{AgentState, Role, TokenCreated, TokenRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{Daemon, PATIENCE, get_raw, spec};

/// `promtool` (Debian's `prometheus` package, installed by `scripts/setup`), if on this machine.
/// Under `CI=true` its absence fails the test; elsewhere the check is skipped, saying why.
#[allow(
    clippy::print_stderr,
    reason = "a skipped check says so where the test runner shows it"
)]
fn promtool() -> Option<PathBuf> {
    let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join("promtool"))
        .find(|path| path.is_file());
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "promtool is missing; run scripts/setup (Debian package `prometheus`)"
        );
        eprintln!("skipping promtool check metrics: promtool is not installed (scripts/setup)");
    }
    found
}

/// The value of the sample `series` (name and labels exactly as written) in `text`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.parse().ok())
}

/// A request without any credential, over TCP: its status line's code.
async fn status_without_credential(daemon: &Daemon, path: &str) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(daemon.tcp_addr())
        .await
        .expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer))
        .await
        .expect("an answer in time")
        .expect("read");
    String::from_utf8_lossy(&answer)[9..12]
        .parse()
        .expect("a status line")
}

/// Scrapes `/metrics` as `scraper` until the agent `labels` names has had at least `bytes` of
/// output counted (bounded); the last scrape.
async fn scrape_after_output(scraper: &Client, labels: &str, bytes: f64) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (status, body) = get_raw(scraper, "/metrics").await;
        let text = String::from_utf8(body).expect("UTF-8");
        assert!(status.is_success(), "{status}: {text}");
        let output = sample(&text, &format!("celistra_agent_output_bytes_total{labels}"));
        if output.is_some_and(|counted| counted >= bytes) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "the output was never counted: {text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn metrics_are_valid_prometheus_text_follow_restarts_and_need_a_viewer() {
    let daemon = Daemon::start().await;
    let viewer = daemon.client.clone().with_secret(
        &daemon
            .client
            .create_token(&TokenRequest {
                name: "scraper".into(),
                role: Role::Viewer,
                expires_in_secs: None,
            })
            .await
            .map(|created: TokenCreated| created.token)
            .expect("a viewer token"),
    );
    let agent = daemon
        .spawn(spec("talker", "echo hello from talker; exec sleep 600"))
        .await;
    let labels = format!("{{agent_id=\"{}\",name=\"talker\"}}", agent.id);
    let greeting = "hello from talker\r\n".len() as f64;
    // Each run greets once: the first run's greeting is counted before the restart, both after.
    scrape_after_output(&viewer, &labels, greeting).await;
    daemon
        .client
        .restart_agent("talker")
        .await
        .expect("restart");
    daemon
        .wait_agent("talker", "restarted and sampled", |a| {
            a.restarts == 1 && a.state == AgentState::Running && a.usage.is_some()
        })
        .await;
    let text = scrape_after_output(&viewer, &labels, 2.0 * greeting).await;

    assert_eq!(
        sample(&text, &format!("celistra_agent_restarts_total{labels}")),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "celistra_agents{state=\"running\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "celistra_agents{state=\"failed\"}"),
        Some(0.0)
    );
    assert!(
        sample(&text, &format!("celistra_agent_memory_bytes{labels}")).is_some_and(|b| b > 0.0),
        "{text}"
    );
    assert!(
        sample(&text, &format!("celistra_agent_cpu_seconds_total{labels}")).is_some(),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            &format!("celistra_agent_output_dropped_bytes_total{labels}")
        ),
        Some(0.0)
    );
    assert!(sample(&text, "celistra_audit_entries_total").is_some_and(|n| n > 0.0));
    // The restart above went through the API: counted under its route template, not its path.
    assert!(
        sample(
            &text,
            "celistra_api_request_duration_seconds_count{route=\"/v1/agents/{agent}/restart\",method=\"POST\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(!text.contains("/v1/agents/talker"), "{text}");
    assert_eq!(
        sample(
            &text,
            "celistra_approval_decision_seconds_count{decision=\"approved\"}"
        ),
        Some(0.0)
    );

    if let Some(promtool) = promtool() {
        let file = daemon.home().join("metrics.txt");
        std::fs::write(&file, &text).expect("write the scrape");
        let checked = Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(std::fs::File::open(&file).expect("the scrape"))
            .output()
            .expect("run promtool");
        assert!(
            checked.status.success() && checked.stdout.is_empty() && checked.stderr.is_empty(),
            "promtool check metrics: {}{}\n{text}",
            String::from_utf8_lossy(&checked.stdout),
            String::from_utf8_lossy(&checked.stderr)
        );
    }

    assert_eq!(status_without_credential(&daemon, "/metrics").await, 401);
}
