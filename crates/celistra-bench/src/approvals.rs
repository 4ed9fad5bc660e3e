//! Approval phases: the daemon's own latency on both legs of a request, measured through an
//! agent's socket (as `celistrad ask` uses it, without that process's start-up): from the ask to
//! the `approval_requested` event (the moment channels are told), and from a decision to the ask's
//! answer.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use celistra_client::{Client, SseParser, next_chunk};
use celistra_proto::{AgentInfo, AgentSpec, Approval, AskRequest, DecisionRequest};

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

async fn latency(binary: &std::path::Path, report: &mut Report) -> Result<()> {
    let daemon = Daemon::start(binary, None).await?;
    let client = daemon.client();
    let agent: AgentInfo = client
        .post(
            "/v1/agents",
            &AgentSpec {
                name: "asker".into(),
                command: "exec sleep 600".into(),
                workspace: Some(daemon.work().display().to_string()),
                ..AgentSpec::default()
            },
        )
        .await?;
    let socket = Client::for_agent_socket(&agent_socket(&agent.id)?);
    let mut events = client.open_stream("/v1/events?follow=true").await?;
    let mut parser = SseParser::default();
    let (mut to_event, mut to_answer) = (vec![], vec![]);
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
        let answer = tokio::spawn(async move {
            socket
                .post::<Approval>("/v1/ask?origin=ask", &request)
                .await
        });
        let id = 'events: loop {
            let chunk = next_chunk(&mut events)
                .await?
                .context("event stream ended")?;
            for frame in parser.feed(&chunk) {
                if frame.event.as_deref() == Some("approval_requested") {
                    to_event.push(asked.elapsed());
                    let data: serde_json::Value = serde_json::from_str(&frame.data)?;
                    break 'events data["approval"]["id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                }
            }
        };
        let decided = Instant::now();
        let _: Approval = client
            .post(
                &format!("/v1/approvals/{id}/approve"),
                &DecisionRequest::default(),
            )
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
    let (answer, answer_p95) = median_p95(to_answer);
    report.add(
        "approval: decision sent to the ask answered",
        "<= 50 ms",
        format!("median {:.2} ms, p95 {:.2} ms", ms(answer), ms(answer_p95)),
        Some(answer <= Duration::from_millis(50)),
    );
    Ok(())
}
