//! `ctl dashboard` (a single-use login link, opened in a browser when one is at hand) and
//! `ctl sessions` (list and revoke the dashboard's browser sessions).

use celistra_client::Client;
use celistra_proto::{LoginLink, Role, SessionInfo};
use clap::{Args, Subcommand};

use super::table::{clock, compact_duration, now_ms, render};
use super::{CtlResult, print_json};

#[derive(Debug, Args)]
pub(crate) struct DashboardArgs {
    /// Only print the link; do not try to open a browser.
    #[arg(long)]
    no_open: bool,
    /// Print the link as JSON (`code`, `url`, `expires_at_ms`).
    #[arg(long)]
    json: bool,
    /// The role of the session the link opens: owner (default), operator, viewer or approver.
    #[arg(long, value_parser = |text: &str| text.parse::<Role>())]
    role: Option<Role>,
}

#[derive(Debug, Args)]
pub(crate) struct SessionsArgs {
    #[command(subcommand)]
    action: Option<Action>,
    /// Print JSON instead of a table (for `ls`).
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// List the live sessions, newest first (the default).
    Ls,
    /// End a session at once: its browser must log in again.
    Revoke {
        /// The session's id (`se-…`), from `ctl sessions`.
        id: String,
    },
}

/// Prints a login link (good once, for 5 minutes) and tries `xdg-open` on it.
pub(crate) async fn dashboard(client: &Client, args: DashboardArgs) -> CtlResult {
    let link: LoginLink = client.issue_login_code(args.role).await?;
    if args.json {
        print_json(&link);
    } else {
        println!("{}", link.url);
        eprintln!(
            "Open this link in a browser on this machine within 5 minutes; it works once. \
             Sessions: `celistrad ctl sessions`."
        );
    }
    if !args.no_open
        && std::env::var_os("DISPLAY")
            .or(std::env::var_os("WAYLAND_DISPLAY"))
            .is_some()
    {
        // Best effort: no xdg-open, or one that fails, is not an error.
        let _ = celistra_sandbox::open_in_browser(&link.url);
    }
    Ok(())
}

pub(crate) async fn sessions(client: &Client, args: SessionsArgs) -> CtlResult {
    match args.action.unwrap_or(Action::Ls) {
        Action::Ls => {
            let sessions: Vec<SessionInfo> = client.list_sessions().await?;
            if args.json {
                print_json(&sessions);
                return Ok(());
            }
            let now = now_ms();
            let rows: Vec<Vec<String>> = sessions
                .iter()
                .map(|s| {
                    vec![
                        s.id.clone(),
                        s.role.to_string(),
                        clock(s.created_at_ms),
                        format!(
                            "{} ago",
                            compact_duration(now.saturating_sub(s.last_seen_ms))
                        ),
                        format!(
                            "in {}",
                            compact_duration(s.expires_at_ms.saturating_sub(now))
                        ),
                        s.user_agent.chars().take(60).collect(),
                    ]
                })
                .collect();
            println!(
                "{}",
                render(
                    &["ID", "ROLE", "LOGGED IN", "LAST SEEN", "EXPIRES", "BROWSER"],
                    &rows
                )
            );
            Ok(())
        }
        Action::Revoke { id } => {
            let session: SessionInfo = client.revoke_session(&id).await?;
            if args.json {
                print_json(&session);
            } else {
                println!("revoked {}", session.id);
            }
            Ok(())
        }
    }
}
