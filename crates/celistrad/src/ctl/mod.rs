//! `celistrad ctl`: the command-line client. One module per group of verbs; all of them talk to the
//! daemon through `celistra-client`, over its Unix socket or to the URL `context.rs` picks.

mod agents;
mod apply;
mod approvals;
mod attach;
mod audit;
mod context;
mod daemon;
mod events;
mod fleet;
mod health;
mod history;
mod hook;
mod hooks;
mod import;
mod logs;
mod notifications;
mod sandbox;
mod schedule;
mod secrets;
mod sessions;
mod table;
mod tokens;
mod top;
mod watch;

use std::process::ExitCode;

use celistra_client::{Client, ClientError};
use celistra_proto::ErrorCode;
use clap::{Args, Subcommand};

use crate::HomeArg;

#[derive(Debug, Args)]
pub(crate) struct Ctl {
    #[command(flatten)]
    remote: context::RemoteArgs,
    /// Address this machine of the fleet, through the hub ctl talks to (agents, logs, history,
    /// terminals, events, audit, approvals, sandbox). An agent written MACHINE/AGENT names its
    /// machine too: agent names and ids never hold a `/`.
    #[arg(long, global = true, value_name = "NAME", value_parser = parse_machine)]
    machine: Option<String>,
    #[command(subcommand)]
    verb: Verb,
}

fn parse_machine(text: &str) -> Result<String, String> {
    celistra_core::names::validate_machine_name(text)?;
    Ok(text.to_owned())
}

impl Ctl {
    /// Whether the verb must not die of SIGPIPE: one that holds the user's terminal in raw mode
    /// must restore it on every way out, and `daemon stop|upgrade` keeps asking a daemon that
    /// closes its connections as it goes (a write to one is an error it waits past, not its end).
    pub(crate) fn must_outlive_a_closed_pipe(&self) -> bool {
        matches!(self.verb, Verb::Attach(_) | Verb::Top(_) | Verb::Daemon(_))
    }
}

#[derive(Debug, Subcommand)]
enum Verb {
    /// Spawn an agent; prints its id.
    Spawn(agents::SpawnArgs),
    /// List agents (of every machine of the fleet with --all-machines, on a hub).
    Ls(agents::LsArgs),
    /// Show one agent.
    Status(agents::OneAgent),
    /// A live view of the agents (state, CPU, memory, restarts) and the selected one's output,
    /// like `pm2 monit`; q quits.
    Top(top::TopArgs),
    /// Stop agents gracefully (stop signal, grace period, then SIGKILL of the whole group).
    Stop(agents::ManyAgents),
    /// Start stopped agents.
    Start(agents::ManyAgents),
    /// Restart agents, or a group's instances (one at a time with --rolling).
    Restart(agents::RestartArgs),
    /// Give a group (spawned with --instances) N instances.
    Scale(agents::ScaleArgs),
    /// Send a signal: HUP hangs up the terminal; INT, TERM, QUIT, KILL go to the process group.
    Kill(agents::KillArgs),
    /// Stop agents and forget them (a clean --worktree worktree goes too; see --keep-worktree).
    Rm(agents::RemoveArgs),
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
    /// Turn a supervisord or PM2 file into agents: print the apply file, or --apply it.
    Import(import::ImportArgs),
    /// The sandbox: status, on, off (the master switch), explain.
    Sandbox(sandbox::SandboxArgs),
    /// The audit log: ls, verify, export, checkpoint, prove.
    Audit(audit::AuditArgs),
    /// Approval requests of agents: ls, approve ID, deny ID.
    Approvals(approvals::ApprovalsArgs),
    /// Agent CLIs' hooks: install claude|codex|gemini writes them into a workspace's settings.
    Hooks(hooks::HooksArgs),
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
    /// Secrets for agents, kept encrypted and masked in output: set NAME (value from stdin or a
    /// prompt), ls, rm NAME.
    Secret(secrets::SecretArgs),
    /// Mint a single-use code (on a hub) and print the line that joins a new machine with it.
    Pair(fleet::PairArgs),
    /// Join this machine to a hub, with the line `ctl pair` printed there.
    #[command(
        after_help = "--fingerprint SHA256 (required) is the hub's link certificate, as `ctl pair` printed it."
    )]
    Join(fleet::JoinArgs),
    /// Leave the hub: the link ends, the agents keep running.
    Leave(fleet::LeaveArgs),
    /// The fleet's machines: ls (the default), revoke NAME.
    Machines(fleet::MachinesArgs),
    /// This daemon's place in a fleet: its machine name, hub or member, the link.
    Fleet(fleet::FleetArgs),
    /// The daemon itself: stop [--keep-agents], upgrade (in place, agents kept running).
    Daemon(daemon::DaemonArgs),
}

impl Verb {
    /// Whether the verb names things of one machine (which `--machine` picks), rather than the
    /// daemon's own credentials and fleet, which `--machine` cannot reach through a hub.
    fn is_per_machine(&self) -> bool {
        !matches!(
            self,
            Verb::Pair(_)
                | Verb::Join(_)
                | Verb::Leave(_)
                | Verb::Machines(_)
                | Verb::Fleet(_)
                | Verb::Token(_)
                | Verb::Secret(_)
                | Verb::Sessions(_)
                | Verb::Dashboard(_)
                | Verb::Notifications(_)
                | Verb::Context(_)
                | Verb::Hooks(_)
                | Verb::Daemon(_)
        )
    }
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
            // A refused pairing says itself why (wrong code, fingerprint, …): it is no role matter.
            ClientError::Api(error)
                if error.code.http_status() == 403 && error.code != ErrorCode::PairingRefused =>
            {
                format!("not allowed (403): {}", error.message)
            }
            error => error.to_string(),
        })
    }
}

pub(crate) type CtlResult = Result<(), Failure>;

pub(crate) async fn run(mut ctl: Ctl, home: &HomeArg) -> anyhow::Result<ExitCode> {
    let result = if ctl.machine.is_some() && !ctl.verb.is_per_machine() {
        Err(Failure::Usage(
            "--machine addresses agents and their records on a machine of the fleet; this verb \
             is the daemon's own (run it without --machine, or on that machine)"
                .into(),
        ))
    } else {
        match ctl.verb {
            Verb::Context(args) => context::run(args, &ctl.remote),
            Verb::Hooks(args) => hooks::run(args, &ctl.remote, home).await,
            // Printing needs no daemon: it is reached only to apply.
            Verb::Import(args) => {
                let machine = ctl.machine.clone();
                let remote = &ctl.remote;
                import::run(args, move || {
                    let client = context::client(remote, home)?;
                    Ok(match &machine {
                        Some(machine) => client.on_machine(machine),
                        None => client,
                    })
                })
                .await
            }
            Verb::Join(mut args) => {
                args.fingerprint = ctl.remote.take_fingerprint_flag();
                match context::client(&ctl.remote, home) {
                    Err(failure) => Err(failure),
                    Ok(client) => fleet::join(&client, args).await,
                }
            }
            verb => match context::client(&ctl.remote, home) {
                Err(failure) => Err(failure),
                Ok(client) => {
                    let client = match &ctl.machine {
                        Some(machine) => client.on_machine(machine),
                        None => client,
                    };
                    dispatch(&client, verb).await
                }
            },
        }
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
        Verb::Top(args) => top::run(client, args).await,
        Verb::Status(args) => agents::status(client, args).await,
        Verb::Stop(args) => agents::stop(client, args).await,
        Verb::Start(args) => agents::start(client, args).await,
        Verb::Restart(args) => agents::restart(client, args).await,
        Verb::Scale(args) => agents::scale(client, args).await,
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
        Verb::Secret(args) => secrets::run(client, args).await,
        Verb::Pair(args) => fleet::pair(client, args).await,
        Verb::Leave(args) => fleet::leave(client, args).await,
        Verb::Machines(args) => fleet::machines(client, args).await,
        Verb::Fleet(args) => fleet::status(client, args).await,
        Verb::Daemon(args) => daemon::run(client, args).await,
        Verb::Context(_) | Verb::Join(_) | Verb::Hooks(_) | Verb::Import(_) => {
            unreachable!(
                "contexts, hooks and import need no daemon (or only for --agent, --apply) and join takes \
                 --fingerprint; handled in run"
            )
        }
    }
}

pub(crate) use approvals::{AskArgs, ask};
pub(crate) use hook::{HookArgs, hook};

/// Where an agent finds its own socket to the daemon (`ask`, `hook`).
pub(crate) const ASK_SOCKET_ENV: &str = "CELISTRA_ASK_SOCKET";
pub(crate) use audit::verify_offline as verify_audit_bundle;

/// The client and key for something named `KEY` or `MACHINE/KEY` (an agent, an approval): the
/// second addresses that machine of the fleet through the hub, as `--machine MACHINE` does (and
/// wins over it). Agent names and ids, and approval ids, never hold a `/`
/// (`celistra_core::names`), so the form is unambiguous.
pub(crate) fn on_machine_of<'a>(
    client: &Client,
    key: &'a str,
) -> Result<(Client, &'a str), Failure> {
    let Some((machine, rest)) = key.split_once('/') else {
        return Ok((client.clone(), key));
    };
    celistra_core::names::validate_machine_name(machine)
        .map_err(|e| Failure::Usage(format!("`{key}` is not MACHINE/AGENT: {e}")))?;
    if rest.is_empty() || rest.contains('/') {
        return Err(Failure::Usage(format!(
            "`{key}` is not MACHINE/AGENT: name one agent after the machine"
        )));
    }
    Ok((client.on_machine(machine), rest))
}

/// [`on_machine_of`] for an agent argument that may be absent (then: `client` and no agent).
pub(crate) fn on_machine_of_optional<'a>(
    client: &Client,
    key: Option<&'a str>,
) -> Result<(Client, Option<&'a str>), Failure> {
    match key {
        Some(key) => on_machine_of(client, key).map(|(client, agent)| (client, Some(agent))),
        None => Ok((client.clone(), None)),
    }
}

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
    fn machine_slash_agent_addresses_that_machine() {
        let client = Client::remote("http://127.0.0.1:9", "t", None, "test").unwrap();
        let (plain, agent) = on_machine_of(&client, "scraper").unwrap();
        assert_eq!((plain.machine(), agent), (None, "scraper"));
        let (scoped, agent) = on_machine_of(&client, "m2/scraper").unwrap();
        assert_eq!((scoped.machine(), agent), (Some("m2"), "scraper"));
        // The agent's own machine wins over --machine.
        let (scoped, _) = on_machine_of(&client.on_machine("m3"), "m2/ag-abcd").unwrap();
        assert_eq!(scoped.machine(), Some("m2"));
        for bad in ["M2/x", "m2/", "m2/a/b", "/x"] {
            assert!(
                matches!(on_machine_of(&client, bad), Err(Failure::Usage(_))),
                "{bad}"
            );
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
