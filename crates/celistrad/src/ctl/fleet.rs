//! The fleet's verbs: `pair` (a hub mints a code), `join` and `leave` (a node), `machines` (list,
//! revoke) and `fleet` (this daemon's place in one).

use celistra_client::{Client, Fingerprint};
use celistra_proto::{
    FleetStatus, HUB_PORT, JoinRequest, Machine, Membership, PairingCode, WitnessStatus,
};
use clap::{Args, Subcommand};

use super::table::{clock, compact_duration, now_ms, render};
use super::{CtlResult, Failure, print_json};

#[derive(Debug, Args)]
pub(crate) struct PairArgs {
    /// Print the code as JSON (code, expires_at_ms, hub, fingerprint, command).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct JoinArgs {
    /// The hub's link address, `host:port` (port 33121 when left out), as `ctl pair` printed it.
    hub: String,
    /// The single-use pairing code `ctl pair` printed.
    code: String,
    /// The hub's `--fingerprint SHA256` (its link certificate), which the global flag of that name
    /// carries for `join`; `run` moves it here.
    #[arg(skip)]
    pub(crate) fingerprint: Option<String>,
    /// Print the membership as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct LeaveArgs {
    /// Print this daemon's fleet status after leaving, as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct MachinesArgs {
    #[command(subcommand)]
    action: Option<MachinesAction>,
    /// Print JSON instead of a table (`machines --json` is `machines ls --json`).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum MachinesAction {
    /// List the machines: name, online, last seen, address, version, agents, audit witness.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Cut a machine off the fleet for good (on the hub); it keeps running its agents.
    Revoke {
        name: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub(crate) struct FleetArgs {
    #[arg(long)]
    json: bool,
}

pub(crate) async fn pair(client: &Client, args: PairArgs) -> CtlResult {
    let code: PairingCode = client.create_pairing_code().await?;
    if args.json {
        print_json(&code);
        return Ok(());
    }
    let left = code.expires_at_ms.saturating_sub(now_ms());
    // The notice on stderr and the line alone on stdout, so `$(celistrad ctl pair)` is the line.
    eprintln!(
        "Pairing code for one machine, valid until {} UTC (in {}). Run this on the new machine:",
        clock(code.expires_at_ms),
        compact_duration(left)
    );
    println!("{}", code.command);
    Ok(())
}

pub(crate) async fn join(client: &Client, args: JoinArgs) -> CtlResult {
    let Some(fingerprint) = args.fingerprint else {
        return Err(Failure::Usage(
            "join needs the hub's --fingerprint SHA256: copy the whole line `celistrad ctl pair` \
             printed on the hub"
                .into(),
        ));
    };
    let fingerprint: Fingerprint = fingerprint
        .parse()
        .map_err(|e| Failure::Usage(format!("--fingerprint: {e}")))?;
    let request = JoinRequest {
        hub: hub_address(&args.hub)?,
        code: args.code,
        fingerprint: fingerprint.to_string(),
    };
    let joined: Membership = client.join_hub(&request).await?;
    if args.json {
        print_json(&joined);
    } else {
        println!(
            "joined hub {} at {}; link {}",
            joined.hub_name,
            joined.hub,
            link_text(&joined)
        );
    }
    Ok(())
}

/// The hub as `host:port`: a `scheme://` and a trailing `/` are dropped, the default port added.
fn hub_address(text: &str) -> Result<String, Failure> {
    let text = text.trim();
    let text = text.split_once("://").map_or(text, |(_, rest)| rest);
    let text = text.trim_end_matches('/');
    if text.is_empty() || text.contains(['/', '?', '@']) {
        return Err(Failure::Usage(format!(
            "`{text}` is not a hub address: write host:port, as `ctl pair` printed it"
        )));
    }
    let has_port = match text.strip_prefix('[') {
        Some(bracketed) => bracketed.contains("]:"),
        None => text.matches(':').count() == 1,
    };
    Ok(match (has_port, text.matches(':').count()) {
        (true, _) => text.to_owned(),
        // A bare IPv6 address takes brackets before its port.
        (false, colons) if colons > 1 && !text.starts_with('[') => format!("[{text}]:{HUB_PORT}"),
        (false, _) => format!("{text}:{HUB_PORT}"),
    })
}

fn link_text(membership: &Membership) -> String {
    match (membership.connected, &membership.last_error) {
        (true, _) => "up".into(),
        (false, Some(error)) => format!("down: {error}"),
        (false, None) => "connecting".into(),
    }
}

pub(crate) async fn leave(client: &Client, args: LeaveArgs) -> CtlResult {
    let status: FleetStatus = client.leave_hub().await?;
    if args.json {
        print_json(&status);
    } else {
        println!(
            "{} left its hub; its agents keep running",
            status.machine_name
        );
    }
    Ok(())
}

pub(crate) async fn machines(client: &Client, args: MachinesArgs) -> CtlResult {
    match args
        .action
        .unwrap_or(MachinesAction::Ls { json: args.json })
    {
        MachinesAction::Ls { json } => {
            let machines: Vec<Machine> = client.list_machines().await?;
            if json {
                print_json(&machines);
                return Ok(());
            }
            let now = now_ms();
            let rows: Vec<Vec<String>> = machines.iter().map(|m| machine_row(m, now)).collect();
            println!(
                "{}",
                render(
                    &[
                        "NAME",
                        "ONLINE",
                        "LAST SEEN",
                        "ADDRESS",
                        "VERSION",
                        "AGENTS",
                        "AUDIT"
                    ],
                    &rows
                )
            );
            // A rewritten audit log is the one thing here that must not scroll by unnoticed.
            for machine in machines
                .iter()
                .filter(|m| m.audit.status == WitnessStatus::Tampered)
            {
                eprintln!(
                    "warning: the audit log of machine {} was rewritten (TAMPERED): {}",
                    machine.name,
                    machine.audit.problem.as_deref().unwrap_or("no detail")
                );
            }
            Ok(())
        }
        MachinesAction::Revoke { name, json } => {
            let revoked: Machine = client.revoke_machine(&name).await?;
            if json {
                print_json(&revoked);
            } else {
                println!(
                    "revoked {}: its link is closed and its key refused; it keeps running its agents",
                    revoked.name
                );
            }
            Ok(())
        }
    }
}

fn machine_row(machine: &Machine, now: u64) -> Vec<String> {
    let name = if machine.this {
        format!("{} (this)", machine.name)
    } else {
        machine.name.clone()
    };
    let last_seen = match machine.last_seen_ms {
        _ if machine.this => "now".to_owned(),
        Some(at) => format!("{} ago", compact_duration(now.saturating_sub(at))),
        None => "never".to_owned(),
    };
    let audit = match machine.audit.status {
        WitnessStatus::Ok => "ok".to_owned(),
        WitnessStatus::Unwitnessed => "unwitnessed".to_owned(),
        WitnessStatus::Tampered => "TAMPERED!".to_owned(),
    };
    vec![
        name,
        if machine.online { "yes" } else { "no" }.to_owned(),
        last_seen,
        machine.address.clone().unwrap_or_else(|| "-".into()),
        machine.version.clone().unwrap_or_else(|| "-".into()),
        format!("{}/{}", machine.agents_running, machine.agents),
        audit,
    ]
}

pub(crate) async fn status(client: &Client, args: FleetArgs) -> CtlResult {
    let status: FleetStatus = client.fleet_status().await?;
    if args.json {
        print_json(&status);
        return Ok(());
    }
    let place = match (&status.member_of, status.hub) {
        (Some(membership), _) => format!(
            "member of hub {} at {} (link {})",
            membership.hub_name,
            membership.hub,
            link_text(membership)
        ),
        (None, true) => "hub".to_owned(),
        (None, false) => "alone (no hub)".to_owned(),
    };
    println!("{:<10}{}", "machine:", status.machine_name);
    println!("{:<10}{place}", "fleet:");
    println!("{:<10}{}", "ceiling:", status.ceiling);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hub_address_is_host_and_port() {
        for (given, meant) in [
            ("hub.lan:4000", "hub.lan:4000"),
            ("hub.lan", "hub.lan:33121"),
            ("https://hub.lan:4000/", "hub.lan:4000"),
            ("10.0.0.1", "10.0.0.1:33121"),
            ("[fd00::1]:4000", "[fd00::1]:4000"),
            ("[fd00::1]", "[fd00::1]:33121"),
            ("fd00::1", "[fd00::1]:33121"),
        ] {
            assert_eq!(hub_address(given).ok().as_deref(), Some(meant), "{given}");
        }
        for bad in ["", "https://", "hub/x", "user@hub"] {
            assert!(matches!(hub_address(bad), Err(Failure::Usage(_))), "{bad}");
        }
    }
}
