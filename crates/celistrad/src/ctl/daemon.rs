//! `ctl daemon stop [--keep-agents]` and `ctl daemon upgrade`: the daemon itself, through its API
//! (owner only), waiting until it is gone or answers again.

use std::time::{Duration, Instant};

use celistra_client::Client;
use celistra_proto::{DaemonStopRequest, Health};
use clap::{Args, Subcommand};

use super::{CtlResult, Failure};

/// Longest wait for a daemon to stop: its agents' grace periods (systemd's unit allows 120 s).
const STOP_LIMIT: Duration = Duration::from_secs(150);
/// Longest wait for an upgraded daemon to answer again.
const UPGRADE_LIMIT: Duration = Duration::from_secs(30);

#[derive(Debug, Args)]
pub(crate) struct DaemonArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Stop the daemon. Its agents are stopped gracefully and come back on its next start; with
    /// --keep-agents they keep running, and the next daemon takes them over.
    Stop {
        /// Leave every agent running (in the keeper) for the next daemon.
        #[arg(long)]
        keep_agents: bool,
    },
    /// Upgrade in place: the daemon re-executes its binary (a new version if it was replaced on
    /// disk) with the same pid; every agent keeps running (same as SIGHUP, `systemctl reload`).
    Upgrade,
}

pub(crate) async fn run(client: &Client, args: DaemonArgs) -> CtlResult {
    match args.action {
        Action::Stop { keep_agents } => {
            let asked = client
                .stop_daemon(&DaemonStopRequest { keep_agents })
                .await?;
            let deadline = Instant::now() + STOP_LIMIT;
            while client
                .get_health()
                .await
                .is_ok_and(|h: Health| h.pid == asked.pid)
            {
                if Instant::now() > deadline {
                    return Err(Failure::Failed(format!(
                        "celistrad (pid {}) still answers {} s after it was asked to stop",
                        asked.pid,
                        STOP_LIMIT.as_secs()
                    )));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let agents = if keep_agents {
                "its agents keep running for the next daemon"
            } else {
                "its agents were stopped and come back on its next start"
            };
            println!("celistrad (pid {}) stopped; {agents}", asked.pid);
            Ok(())
        }
        Action::Upgrade => {
            let asked = client.upgrade_daemon().await?;
            let started = Instant::now();
            loop {
                if let Ok(health) = client.get_health().await
                    && health.started_at_ms > asked.started_at_ms
                {
                    println!(
                        "celistrad upgraded in place: {} -> {} (pid {}), answering again after {} ms",
                        asked.version,
                        health.version,
                        health.pid,
                        started.elapsed().as_millis()
                    );
                    return Ok(());
                }
                if started.elapsed() > UPGRADE_LIMIT {
                    return Err(Failure::Failed(format!(
                        "the daemon did not answer again within {} s of the upgrade; its agents \
                         keep running, and starting celistrad takes them over (see its log)",
                        UPGRADE_LIMIT.as_secs()
                    )));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}
