//! Approval phases: the daemon's own latency on both legs of a request, measured through an
//! agent's socket (as `celistrad ask` uses it, without that process's start-up): from the ask to
//! the `approval_requested` event, from the ask to a webhook's and a Web Push device's request
//! arriving at loopback receivers (the request has left the daemon), and from a decision to the
//! ask's answer.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use celistra_client::Client;
use celistra_proto::{
    AgentInfo, AgentSpec, Approval, AskQuery, AskRequest, DecisionRequest, EventsQuery,
    PushSubscriptionInfo, PushSubscriptionRequest, Verdict,
};
use tokio::sync::mpsc;

use crate::{Daemon, Report, median_p95, ms, phase};

const ROUNDS: usize = 50;

pub(crate) async fn phases(binary: &std::path::Path, report: &mut Report) -> Vec<Result<()>> {
    vec![phase("approval latency", latency(binary, report)).await]
}

/// The socket the daemon made for agent `id`.
fn agent_socket(id: &str) -> Result<PathBuf> {
    for entry in std::fs::read_dir("/run")?.flatten() {
        let path = entry.path().join(format!("{id}.sock"));
        if entry.file_name().to_string_lossy().starts_with("celistra-") && path.exists() {
            return Ok(path);
        }
    }
    bail!("no socket for {id} under /run (the bench needs a root daemon)")
}

/// A loopback receiver (webhook endpoint and push service at once): reports each request's path
/// and arrival time, answers 201.
async fn receiver() -> Result<(
    std::net::SocketAddr,
    mpsc::UnboundedReceiver<(String, Instant)>,
)> {
    let (sender, arrivals) = mpsc::unbounded_channel();
    let sender = Arc::new(sender);
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let _ = sender.send((uri.path().to_owned(), Instant::now()));
        async { axum::http::StatusCode::CREATED }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((addr, arrivals))
}

async fn latency(binary: &std::path::Path, report: &mut Report) -> Result<()> {
    let (receiver_addr, mut arrivals) = receiver().await?;
    let config = serde_json::json!({"notifications": {"webhooks": [{
        "name": "bench", "url": format!("http://{receiver_addr}/hook"),
    }]}});
    let daemon = Daemon::start(binary, Some(&config)).await?;
    let client = daemon.client();
    let phone = celistra_notify::webpush::Browser::generate()?;
    let _: PushSubscriptionInfo = client
        .subscribe_push(&PushSubscriptionRequest {
            endpoint: format!("http://{receiver_addr}/push"),
            keys: phone.keys(),
            expiration_time: None,
            label: Some("bench".into()),
        })
        .await?;
    let agent: AgentInfo = client
        .spawn_agent(&AgentSpec {
            name: "asker".into(),
            command: "exec sleep 600".into(),
            workspace: Some(daemon.work().display().to_string()),
            ..AgentSpec::default()
        })
        .await?;
    let socket = Client::for_agent_socket(&agent_socket(&agent.id)?);
    let mut events = client.stream_events(&EventsQuery::default()).await?;
    let (mut to_event, mut to_answer) = (vec![], vec![]);
    let (mut to_webhook, mut to_push) = (vec![], vec![]);
    for round in 0..ROUNDS {
        let asked = Instant::now();
        let request = AskRequest {
            prompt: format!("step {round}"),
            detail: None,
            ttl_secs: Some(60),
            on_timeout: Default::default(),
            key: None,
        };
        let socket = socket.clone();
        let answer = tokio::spawn(async move { socket.ask(&AskQuery::default(), &request).await });
        let id = 'events: loop {
            let frame = events.next_frame().await?.context("event stream ended")?;
            if frame.event.as_deref() == Some("approval_requested") {
                to_event.push(asked.elapsed());
                let data: serde_json::Value = serde_json::from_str(&frame.data)?;
                break 'events data["approval"]["id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
            }
        };
        // The request's webhook and push messages (the previous round's decision messages are
        // told apart by their arrival before this ask).
        let (mut hook, mut push) = (None, None);
        while hook.is_none() || push.is_none() {
            let (path, at) = tokio::time::timeout(Duration::from_secs(10), arrivals.recv())
                .await
                .context("no notification arrived within 10 s")?
                .context("receiver stopped")?;
            if at < asked {
                continue;
            }
            match path.as_str() {
                "/hook" if hook.is_none() => hook = Some(at - asked),
                "/push" if push.is_none() => push = Some(at - asked),
                _ => {}
            }
        }
        to_webhook.extend(hook);
        to_push.extend(push);
        let decided = Instant::now();
        let _: Approval = client
            .decide_approval(&id, Verdict::Approve, &DecisionRequest::default())
            .await?;
        let approval = answer.await??;
        to_answer.push(decided.elapsed());
        if !approval.allows() {
            bail!("request {id} was not approved: {approval:?}");
        }
    }
    let (event, event_p95) = median_p95(to_event);
    report.add(
        "approval: ask to `approval_requested` (channels told)",
        "<= 50 ms",
        format!("median {:.2} ms, p95 {:.2} ms", ms(event), ms(event_p95)),
        Some(event <= Duration::from_millis(50)),
    );
    for (what, samples) in [("webhook", to_webhook), ("Web Push", to_push)] {
        let (median, p95) = median_p95(samples);
        report.add(
            &format!("approval: ask to the {what} request arriving (left the daemon)"),
            "<= 50 ms",
            format!("median {:.2} ms, p95 {:.2} ms", ms(median), ms(p95)),
            Some(median <= Duration::from_millis(50)),
        );
    }
    let (answer, answer_p95) = median_p95(to_answer);
    report.add(
        "approval: decision sent to the ask answered",
        "<= 50 ms",
        format!("median {:.2} ms, p95 {:.2} ms", ms(answer), ms(answer_p95)),
        Some(answer <= Duration::from_millis(50)),
    );
    Ok(())
}
