//! `ctl apply FILE`: make the daemon's agents match a JSON file of agent specs.

use celistra_client::Client;
use celistra_proto::{AgentSpec, ApplyReport, ApplyRequest};
use clap::Args;
use serde::{Deserialize, Serialize};

use super::{CtlResult, Failure, print_json};

#[derive(Debug, Args)]
pub(crate) struct ApplyArgs {
    /// JSON file: {"agents": [{"name": …, "command": …, …}, …]}.
    file: std::path::PathBuf,
    /// Also remove agents that the file does not list.
    #[arg(long)]
    prune: bool,
    /// Only say what would be done.
    #[arg(long)]
    dry_run: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// The file's shape (`ctl import` writes it).
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ApplyFile {
    pub(super) agents: Vec<AgentSpec>,
}

pub(crate) async fn run(client: &Client, args: ApplyArgs) -> CtlResult {
    let origin = args.file.display().to_string();
    let text = std::fs::read_to_string(&args.file)
        .map_err(|e| Failure::Failed(format!("cannot read {origin}: {e}")))?;
    let file: ApplyFile =
        celistra_core::json::parse(&text, &origin).map_err(|e| Failure::Failed(e.to_string()))?;
    let mut agents = file.agents;
    let base = args
        .file
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    for spec in &mut agents {
        // Relative workspaces are relative to the file, like paths in any config file.
        if let Some(workspace) = &spec.workspace
            && !workspace.starts_with('/')
        {
            let joined = std::path::absolute(base.join(workspace))
                .map_err(|e| Failure::Failed(format!("{origin}: {e}")))?;
            spec.workspace = Some(joined.display().to_string());
        }
    }
    let request = ApplyRequest {
        agents,
        prune: args.prune,
        dry_run: args.dry_run,
    };
    let report: ApplyReport = client
        .apply(&request)
        .await
        .map_err(|e| Failure::Failed(format!("{origin}: {e}")))?;
    if args.json {
        print_json(&report);
        return Ok(());
    }
    print_report(&report);
    Ok(())
}

/// One line per agent: what was (or would be) done to it.
pub(super) fn print_report(report: &ApplyReport) {
    let would = if report.dry_run { "would be " } else { "" };
    for (list, verb) in [
        (&report.created, "created"),
        (&report.updated, "updated"),
        (&report.removed, "removed"),
        (&report.unchanged, "unchanged"),
    ] {
        for name in list {
            let verb = if verb == "unchanged" {
                "unchanged".to_owned()
            } else {
                format!("{would}{verb}")
            };
            println!("{verb:<18}{name}");
        }
    }
}
