//! `ctl sandbox`: the master switch and `explain`.

use celistra_client::Client;
use celistra_proto::{AgentSpec, ExplainRequest, SandboxExplanation, SandboxStatus, SandboxSwitch};
use clap::{Args, Subcommand};

use super::agents::JsonFlag;
use super::{CtlResult, Failure, print_json};

#[derive(Debug, Args)]
pub(crate) struct SandboxArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Show the master switch, the sandbox launcher, Landlock and how blocks are reported.
    Status(JsonFlag),
    /// Sandbox every agent spawned from now on (the default).
    On,
    /// Run every agent spawned from now on unsandboxed (each is flagged); running agents keep their
    /// sandbox until restarted.
    Off,
    /// Show what an agent (or a prospective spawn, with --name and a command) runs with: effective
    /// capabilities and where they came from, the user, the launcher command line, the mounts,
    /// Landlock rules and the seccomp policy.
    Explain(ExplainArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ExplainArgs {
    /// Name of a prospective agent; the positional argument is then its command line.
    #[arg(long)]
    name: Option<String>,
    /// Capability to add, as `spawn --cap` (with --name).
    #[arg(long = "cap", value_name = "TOKEN", requires = "name")]
    caps: Vec<String>,
    /// Capability to drop, as `spawn --drop-cap` (with --name).
    #[arg(long = "drop-cap", value_name = "TOKEN", requires = "name")]
    drop_caps: Vec<String>,
    /// Workspace of the prospective agent [default: the current directory].
    #[arg(long, value_name = "DIR", requires = "name")]
    workspace: Option<std::path::PathBuf>,
    /// User of the prospective agent.
    #[arg(long, requires = "name")]
    user: Option<String>,
    #[command(flatten)]
    json: JsonFlag,
    /// An agent id or name; with --name, the command line.
    #[arg(required = true, value_name = "AGENT|COMMAND")]
    target: Vec<String>,
}

pub(crate) async fn run(client: &Client, args: SandboxArgs) -> CtlResult {
    match args.action {
        Action::Status(json) => {
            let status: SandboxStatus = client.get_sandbox().await?;
            show_status(&status, json.json);
            Ok(())
        }
        Action::On | Action::Off => {
            let enabled = matches!(args.action, Action::On);
            let status: SandboxStatus = client.switch_sandbox(&SandboxSwitch { enabled }).await?;
            show_status(&status, false);
            Ok(())
        }
        Action::Explain(args) => explain(client, args).await,
    }
}

fn show_status(status: &SandboxStatus, json: bool) {
    if json {
        print_json(status);
        return;
    }
    let switch = if status.enabled {
        "on: agents run sandboxed unless they hold `privileged`".to_owned()
    } else {
        "OFF: every agent spawned now runs unsandboxed".to_owned()
    };
    let changed = match (&status.changed_by, status.changed_at_ms) {
        (Some(by), Some(at)) => format!(
            " (set by {by} at {})",
            celistra_core::clock::format_rfc3339_ms(at)
        ),
        _ => String::new(),
    };
    println!("{:<16}{switch}{changed}", "sandbox:");
    let launcher = match (&status.launcher, &status.problem) {
        (_, Some(problem)) => problem.clone(),
        (Some(path), None) => path.clone(),
        (None, None) => "-".into(),
    };
    println!("{:<16}{launcher}", "launcher:");
    let landlock = match status.landlock_abi {
        0 => "not available in this kernel".to_owned(),
        abi => format!("ABI {abi}"),
    };
    println!("{:<16}{landlock}", "landlock:");
    println!("{:<16}{}", "blocks:", status.block_reporting);
}

async fn explain(client: &Client, args: ExplainArgs) -> CtlResult {
    let request = match &args.name {
        Some(name) => {
            let workspace = match &args.workspace {
                Some(dir) => std::path::absolute(dir),
                None => std::env::current_dir(),
            }
            .map_err(|e| Failure::Usage(format!("cannot resolve the workspace: {e}")))?;
            ExplainRequest {
                agent: None,
                spec: Some(AgentSpec {
                    name: name.clone(),
                    command: args.target.join(" "),
                    workspace: Some(workspace.display().to_string()),
                    capabilities: args.caps.clone(),
                    drop_capabilities: args.drop_caps.clone(),
                    user: args.user.clone(),
                    ..AgentSpec::default()
                }),
            }
        }
        None => {
            let [agent] = args.target.as_slice() else {
                return Err(Failure::Usage(
                    "give one agent id or name, or --name NAME and a command line".into(),
                ));
            };
            ExplainRequest {
                agent: Some(agent.clone()),
                spec: None,
            }
        }
    };
    let explanation: SandboxExplanation = client.explain_sandbox(&request).await?;
    if args.json.json {
        print_json(&explanation);
    } else {
        print!("{}", render_explanation(&explanation));
    }
    Ok(())
}

fn render_explanation(e: &SandboxExplanation) -> String {
    let mut out = String::new();
    let sandboxed = match &e.run.unsandboxed_because {
        None => "yes".to_owned(),
        Some(because) => format!("NO ({because})"),
    };
    out.push_str(&format!("{:<15}{sandboxed}\n", "sandboxed:"));
    out.push_str(&format!("{:<15}{}\n", "user:", e.run.user));
    out.push_str(&format!(
        "{:<15}{}\n",
        "capabilities:",
        e.run.capabilities.join(" ")
    ));
    for source in &e.sources {
        out.push_str(&format!(
            "  {:<13}{}\n",
            format!("{}:", source.origin),
            source.capabilities.join(" ")
        ));
    }
    if !e.launch_argv.is_empty() {
        let argv: Vec<String> = e
            .launch_argv
            .iter()
            .map(|arg| celistra_core::shell::quote(arg))
            .collect();
        out.push_str(&format!("launcher:\n  {}\n", argv.join(" ")));
    }
    for (title, lines) in [
        ("mounts", &e.mounts),
        ("landlock", &e.landlock),
        ("seccomp", &e.seccomp),
        ("notes", &e.notes),
    ] {
        if !lines.is_empty() {
            out.push_str(&format!("{title}:\n"));
            for line in lines {
                out.push_str(&format!("  {line}\n"));
            }
        }
    }
    out
}
