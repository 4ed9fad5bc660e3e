//! `ctl notifications`: the channels in `config.json` and the subscribed devices with how each
//! fared, a test send, and removing a device.

use celistra_client::Client;
use celistra_proto::{ChannelStatus, NotificationsStatus, PushSubscriptionInfo};
use clap::{Args, Subcommand};

use super::table::render;
use super::{CtlResult, Failure, print_json};

#[derive(Debug, Args)]
pub(crate) struct NotificationsArgs {
    #[command(subcommand)]
    action: Option<Action>,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Channels and devices with their delivery counts and last error (the default).
    Ls {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Send a test notification on every channel once; exits 1 if any failed.
    Test {
        #[arg(long)]
        json: bool,
    },
    /// Stop sending Web Push notifications to a device.
    Unsubscribe {
        /// The device's subscription id (`ps-…`).
        id: String,
    },
}

pub(crate) async fn run(client: &Client, args: NotificationsArgs) -> CtlResult {
    match args.action.unwrap_or(Action::Ls { json: false }) {
        Action::Ls { json } => {
            let status: NotificationsStatus = client.get_notifications().await?;
            if json {
                print_json(&status);
                return Ok(());
            }
            println!("decision links: {}/d/…", status.decision_base);
            if status.channels.is_empty() {
                println!(
                    "no channels: add `notifications.ntfy` or `notifications.webhooks` to config.json, or subscribe a device from the dashboard"
                );
                return Ok(());
            }
            println!("{}", channel_table(&status.channels, &status.subscriptions));
            Ok(())
        }
        Action::Test { json } => {
            let results: Vec<ChannelStatus> = client.test_notifications().await?;
            if json {
                print_json(&results);
            } else if results.is_empty() {
                println!("no channels to test");
            } else {
                println!("{}", channel_table(&results, &[]));
            }
            match results.iter().filter(|r| r.failed > 0).count() {
                0 => Ok(()),
                failed => Err(Failure::Failed(format!(
                    "{failed} of {} channels failed",
                    results.len()
                ))),
            }
        }
        Action::Unsubscribe { id } => {
            let device: PushSubscriptionInfo = client.unsubscribe_push(&id).await?;
            println!("unsubscribed {} ({})", device.id, device.endpoint);
            Ok(())
        }
    }
}

fn channel_table(channels: &[ChannelStatus], devices: &[PushSubscriptionInfo]) -> String {
    let rows: Vec<Vec<String>> = channels
        .iter()
        .map(|c| {
            let label = c
                .channel
                .strip_prefix("push:")
                .and_then(|id| devices.iter().find(|d| d.id == id))
                .and_then(|d| d.label.clone())
                .map(|label| format!(" ({label})"))
                .unwrap_or_default();
            vec![
                format!("{}{label}", c.channel),
                c.delivered.to_string(),
                c.failed.to_string(),
                c.last_error.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    render(&["CHANNEL", "DELIVERED", "FAILED", "LAST ERROR"], &rows)
}
