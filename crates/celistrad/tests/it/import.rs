//! Migration from supervisord and PM2: `ctl import` of real-world-shaped files, applied to a real
//! daemon whose agents must then run as the source file said, and the settings the importers map to
//! (`expected_exit_codes`, `no_autostart`).

use celistra_proto::{AgentSpec, AgentState};

use crate::{Daemon, spec};

#[tokio::test]
async fn an_expected_exit_code_ends_the_agent_and_an_unexpected_one_restarts_it() {
    let daemon = Daemon::start().await;
    // The first run exits 4 (unexpected: restarted), the second 3 (expected: the agent rests).
    let agent = daemon
        .spawn(AgentSpec {
            auto_restart: true,
            expected_exit_codes: vec![0, 3],
            ..spec(
                "worker",
                "if [ -e ran ]; then exit 3; else touch ran; exit 4; fi",
            )
        })
        .await;
    let done = daemon.wait_state(&agent.id, AgentState::Exited).await;
    assert_eq!((done.exit_code, done.restarts, done.run), (Some(3), 1, 2));
    // Without the list, an auto-restarted agent that exits 3 is restarted until it crashes out.
    let plain = daemon
        .spawn(AgentSpec {
            auto_restart: true,
            ..spec("plain", "exit 3")
        })
        .await;
    let out = daemon.wait_state(&plain.id, AgentState::CrashedOut).await;
    assert_eq!(out.exit_code, Some(3));
}

#[tokio::test]
async fn a_no_autostart_agent_is_created_stopped_and_runs_when_started() {
    let daemon = Daemon::start().await;
    let agent = daemon
        .spawn(AgentSpec {
            no_autostart: true,
            ..spec("later", "exec sleep 300")
        })
        .await;
    assert_eq!(
        (agent.state, agent.pid, agent.run),
        (AgentState::Stopped, None, 0)
    );
    daemon.client.start_agent(&agent.id).await.expect("start");
    daemon.wait_state(&agent.id, AgentState::Running).await;
}
