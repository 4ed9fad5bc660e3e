//! `celistrad ctl`: the command-line client. One module per group of verbs; all of them talk to the
//! daemon through `celistra-client`, over its Unix socket or to the URL `context.rs` picks.

mod agents;
mod apply;
mod approvals;
mod attach;
mod audit;
mod context;
mod events;
mod history;
mod logs;
mod notifications;
mod sandbox;
mod sessions;
mod table;
mod tokens;

use std::process::ExitCode;

use celistra_client::{Client, ClientError};
use celistra_proto::ErrorCode;
use clap::{Args, Subcommand};

use crate::HomeArg;

#[derive(Debug, Args)]
pub(crate) struct Ctl {
    #[command(flatten)]
    remote: context::RemoteArgs,
    #[command(subcommand)]
    verb: Verb,
}

impl Ctl {
    /// Whether the verb holds the user's terminal in raw mode, which it must restore on every way
    /// out: such a verb cannot be left to die of SIGPIPE.
    pub(crate) fn holds_the_terminal(&self) -> bool {
        matches!(self.verb, Verb::Attach(_))
    }
}

#[derive(Debug, Subcommand)]
enum Verb {
    /// Spawn an agent; prints its id.
    Spawn(agents::SpawnArgs),
    /// List agents.
    Ls(agents::JsonFlag),
    /// Show one agent.
    Status(agents::OneAgent),
    /// Stop agents gracefully (stop signal, grace period, then SIGKILL of the whole group).
    Stop(agents::ManyAgents),
    /// Start stopped agents.
    Start(agents::ManyAgents),
    /// Restart agents.
    Restart(agents::ManyAgents),
    /// Send a signal: HUP hangs up the terminal; INT, TERM, QUIT, KILL go to the process group.
    Kill(agents::KillArgs),
    /// Stop agents and forget them.
    Rm(agents::ManyAgents),
    /// Rename an agent.
    Rename(agents::RenameArgs),
    /// Change an agent's settings (applied at its next spawn, or now with --restart).
    Set(agents::SetArgs),
    /// Attach to an agent's live terminal; detach with Ctrl-].
    Attach(attach::AttachArgs),
    /// Print an agent's saved output (filter by time, run, stream; search; -f follows live).
    Logs(logs::LogsArgs),
    /// List runs: when each started and ended, how, and who stopped it.
    History(history::HistoryArgs),
    /// Print recent events; -f follows them live.
    Events(events::EventsArgs),
    /// Make the daemon's agents match a JSON file.
    Apply(apply::ApplyArgs),
    /// The sandbox: status, on, off (the master switch), explain.
    Sandbox(sandbox::SandboxArgs),
    /// The audit log: ls, verify, export, checkpoint, prove.
    Audit(audit::AuditArgs),
    /// Approval requests of agents: ls, approve ID, deny ID.
    Approvals(approvals::ApprovalsArgs),
    /// Where approval requests are announced: ls, test, unsubscribe ID.
    Notifications(notifications::NotificationsArgs),
    /// Print (and try to open) a single-use login link for the dashboard.
    Dashboard(sessions::DashboardArgs),
    /// The dashboard's browser sessions: ls, revoke ID.
    Sessions(sessions::SessionsArgs),
    /// Saved daemons to talk to: add, use, ls, rm.
    Context(context::ContextArgs),
    /// API tokens with a role: create, ls, revoke.
    Token(tokens::TokenArgs),
}

/// A failure of a ctl command, with its exit code: 1 for failures, 2 for usage errors.
#[derive(Debug)]
pub(crate) enum Failure {
    Usage(String),
    Failed(String),
}

impl From<ClientError> for Failure {
    fn from(error: ClientError) -> Self {
        Failure::Failed(match error {
            ClientError::Api(error) if error.code == ErrorCode::Unauthorized => format!(
                "the daemon refused the credential (401): {}. The token is wrong, expired or \
                 revoked: get one from the daemon's owner (`celistrad ctl token create` on its \
                 machine), or use its machine secret (auth.json in its state directory)",
                error.message
            ),
            ClientError::Api(error) if error.code.http_status() == 403 => {
                format!("not allowed (403): {}", error.message)
            }
            error => error.to_string(),
        })
    }
}

pub(crate) type CtlResult = Result<(), Failure>;

pub(crate) async fn run(ctl: Ctl, home: &HomeArg) -> anyhow::Result<ExitCode> {
    let result = match ctl.verb {
        Verb::Context(args) => context::run(args, &ctl.remote),
        verb => match context::client(&ctl.remote, home) {
            Err(failure) => Err(failure),
            Ok(client) => dispatch(&client, verb).await,
        },
    };
    Ok(match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Failed(message)) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
        Err(Failure::Usage(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    })
}

async fn dispatch(client: &Client, verb: Verb) -> CtlResult {
    match verb {
        Verb::Spawn(args) => agents::spawn(client, args).await,
        Verb::Ls(args) => agents::list(client, args).await,
        Verb::Status(args) => agents::status(client, args).await,
        Verb::Stop(args) => agents::stop(client, args).await,
        Verb::Start(args) => agents::start(client, args).await,
        Verb::Restart(args) => agents::restart(client, args).await,
        Verb::Rm(args) => agents::remove(client, args).await,
        Verb::Kill(args) => agents::kill(client, args).await,
        Verb::Rename(args) => agents::rename(client, args).await,
        Verb::Set(args) => agents::set(client, args).await,
        Verb::Attach(args) => attach::run(client, args).await,
        Verb::Logs(args) => logs::run(client, args).await,
        Verb::History(args) => history::run(client, args).await,
        Verb::Events(args) => events::run(client, args).await,
        Verb::Apply(args) => apply::run(client, args).await,
        Verb::Sandbox(args) => sandbox::run(client, args).await,
        Verb::Audit(args) => audit::run(client, args).await,
        Verb::Approvals(args) => approvals::run(client, args).await,
        Verb::Notifications(args) => notifications::run(client, args).await,
        Verb::Dashboard(args) => sessions::dashboard(client, args).await,
        Verb::Sessions(args) => sessions::sessions(client, args).await,
        Verb::Token(args) => tokens::run(client, args).await,
        Verb::Context(_) => unreachable!("contexts need no daemon; handled in run"),
    }
}

pub(crate) use approvals::{AskArgs, ask};
pub(crate) use audit::verify_offline as verify_audit_bundle;

/// Prints a value as pretty JSON on stdout.
pub(crate) fn print_json(value: &impl serde::Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("wire types serialise")
    );
}

#[cfg(test)]
mod tests {
    use celistra_proto::ApiError;

    use super::*;

    fn message(code: ErrorCode, server: &str) -> String {
        match Failure::from(ClientError::Api(ApiError::new(code, server))) {
            Failure::Failed(message) => message,
            Failure::Usage(message) => panic!("a usage error: {message}"),
        }
    }

    #[test]
    fn a_refused_token_and_a_missing_role_say_so_with_the_servers_words() {
        let refused = message(ErrorCode::Unauthorized, "wrong bearer token");
        assert!(refused.contains("401") && refused.contains("wrong bearer token"));
        assert!(refused.contains("expired or revoked") && refused.contains("token create"));
        let forbidden = message(ErrorCode::Forbidden, "this needs the operator role");
        assert_eq!(forbidden, "not allowed (403): this needs the operator role");
    }
}
