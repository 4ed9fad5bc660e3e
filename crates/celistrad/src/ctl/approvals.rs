//! `ctl approvals`: list pending and recent requests, approve or deny one; and `celistrad ask`,
//! which an agent runs to ask through its own socket.

use std::process::ExitCode;

use celistra_client::Client;
use celistra_proto::{
    Approval, ApprovalStatus, ApprovalsQuery, AskOrigin, AskQuery, AskRequest, DecisionRequest,
    TimeoutDefault, Verdict,
};
use clap::{Args, Subcommand};

use super::table::render;
use super::{CtlResult, Failure, print_json};

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct ApprovalsArgs {
    #[command(subcommand)]
    action: Option<Action>,
    /// Only pending requests (`approvals --pending` is `approvals ls --pending`).
    #[arg(long)]
    pending: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// List requests, newest first (the default).
    Ls {
        /// Only pending requests.
        #[arg(long)]
        pending: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Approve a pending request: the agent goes ahead.
    Approve(Decide),
    /// Deny a pending request.
    Deny(Decide),
}

#[derive(Debug, Args)]
struct Decide {
    /// The request's id (`ap-…`; MACHINE/ID for a request of another machine of the fleet).
    id: String,
    /// Why, for the agent and the audit log.
    #[arg(long)]
    reason: Option<String>,
}

pub(crate) async fn run(client: &Client, args: ApprovalsArgs) -> CtlResult {
    match args.action.unwrap_or(Action::Ls {
        pending: args.pending,
        json: args.json,
    }) {
        Action::Ls { pending, json } => {
            let approvals: Vec<Approval> =
                client.list_approvals(&ApprovalsQuery { pending }).await?;
            if json {
                print_json(&approvals);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = approvals
                .iter()
                .map(|a| {
                    vec![
                        a.id.clone(),
                        format!("{} ({})", a.agent_name, a.agent_id),
                        status_text(a),
                        a.prompt.clone(),
                    ]
                })
                .collect();
            println!("{}", render(&["ID", "AGENT", "STATUS", "PROMPT"], &rows));
            Ok(())
        }
        Action::Approve(decide) => decide_one(client, decide, Verdict::Approve).await,
        Action::Deny(decide) => decide_one(client, decide, Verdict::Deny).await,
    }
}

fn status_text(approval: &Approval) -> String {
    match approval.status {
        ApprovalStatus::Pending => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let left = approval.expires_at_ms.saturating_sub(now) / 1000;
            format!("pending ({left} s left)")
        }
        ApprovalStatus::Approved => format!(
            "approved by {}",
            approval.decided_by.as_deref().unwrap_or("-")
        ),
        ApprovalStatus::Denied => format!(
            "denied by {}",
            approval.decided_by.as_deref().unwrap_or("-")
        ),
        ApprovalStatus::Expired => "expired".into(),
    }
}

async fn decide_one(client: &Client, decide: Decide, verdict: Verdict) -> CtlResult {
    let request = DecisionRequest {
        reason: decide.reason,
    };
    let (client, id) = super::on_machine_of(client, &decide.id)?;
    let approval: Approval = client.decide_approval(id, verdict, &request).await?;
    println!(
        "{} {}: {}",
        approval.id,
        status_text(&approval),
        approval.prompt
    );
    Ok(())
}

/// `celistrad ask`: what an agent runs to ask for approval.
#[derive(Debug, Args)]
pub(crate) struct AskArgs {
    /// What you want to do, in one line (e.g. "git push origin main"); not with --hook.
    #[arg(required_unless_present = "hook", conflicts_with = "hook")]
    prompt: Option<String>,
    /// Read the request as JSON on stdin and print the answer as JSON on stdout: `claude` (a Claude
    /// Code PreToolUse or PermissionRequest hook) or `generic` (`{"prompt","detail","ttl"}` in,
    /// `{"decision","reason","decided_by"}` out). Always exits 0 once answered.
    #[arg(long, value_name = "claude|generic")]
    hook: Option<String>,
    /// More detail for the person deciding.
    #[arg(long)]
    detail: Option<String>,
    /// Seconds to wait for a decision [default: 300].
    #[arg(long, value_name = "SECS")]
    ttl: Option<u64>,
    /// What an expiry means: `deny` (default) or `approve`.
    #[arg(long, value_name = "deny|approve", default_value = "deny")]
    on_timeout: String,
    /// Your own id for this request: asking again with it (after a restart) waits for the same one.
    #[arg(long)]
    key: Option<String>,
    /// Print the decided request as JSON.
    #[arg(long)]
    json: bool,
}

/// Exit status of `celistrad ask`: 0 go ahead (approved, or expired with `--on-timeout approve`),
/// 1 denied, 3 expired, 2 usage (and not running under celistrad).
pub(crate) async fn ask(args: AskArgs) -> ExitCode {
    if let Some(hook) = &args.hook {
        return ask_as_hook(hook).await;
    }
    let on_timeout = match args.on_timeout.as_str() {
        "deny" => TimeoutDefault::Deny,
        "approve" => TimeoutDefault::Approve,
        other => {
            eprintln!("error: --on-timeout `{other}`: use deny or approve");
            return ExitCode::from(2);
        }
    };
    let request = AskRequest {
        prompt: args.prompt.unwrap_or_default(),
        detail: args.detail,
        ttl_secs: args.ttl,
        on_timeout,
        key: args.key,
    };
    // The daemon checks again; checking here first makes a bad prompt a usage error (2), not a
    // refusal indistinguishable from a denial (1).
    let checked = celistra_core::approval_line::check_prompt(&request.prompt).and_then(|()| {
        request
            .ttl_secs
            .map_or(Ok(()), celistra_core::approval_line::check_ttl)
    });
    if let Err(message) = checked {
        eprintln!("error: {message}");
        return ExitCode::from(2);
    }
    match ask_daemon(&request, AskOrigin::Ask).await {
        Ok(approval) => {
            if args.json {
                print_json(&approval);
            } else {
                eprintln!("{}", outcome_text(&approval));
            }
            ask_exit_code(&approval)
        }
        Err(Failure::Usage(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Failed(message)) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// `--hook`: JSON in on stdin, the hook protocol's JSON out on stdout.
async fn ask_as_hook(hook: &str) -> ExitCode {
    use celistra_core::approval_hooks as hooks;
    let mut stdin = String::new();
    if let Err(e) = std::io::Read::read_to_string(&mut std::io::stdin(), &mut stdin) {
        eprintln!("error: cannot read stdin: {e}");
        return ExitCode::from(2);
    }
    // The Claude Code event, to answer in its shape; `None` for the generic mode.
    let parsed = match hook {
        "claude" => hooks::claude_hook_request(&stdin).map(|ask| (Some(ask.event), ask.into())),
        "generic" => hooks::generic_request(&stdin).map(|ask| (None, ask.into())),
        other => Err(format!("--hook `{other}`: use claude or generic")),
    };
    let (event, request): (Option<hooks::ClaudeHookEvent>, AskRequest) = match parsed {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let approval = match ask_daemon(&request, AskOrigin::Hook).await {
        Ok(approval) => approval,
        Err(Failure::Usage(message) | Failure::Failed(message)) => {
            eprintln!("error: {message}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = hooks::AskOutcome {
        decision: match approval.status {
            ApprovalStatus::Approved => hooks::Decision::Approved,
            ApprovalStatus::Expired if approval.allows() => hooks::Decision::Approved,
            ApprovalStatus::Expired => hooks::Decision::Expired,
            _ => hooks::Decision::Denied,
        },
        reason: approval.reason.clone(),
        decided_by: approval.decided_by.clone(),
    };
    let answer = match event {
        Some(event) => hooks::claude_hook_response(event, &outcome),
        None => hooks::generic_response(&outcome),
    };
    println!("{answer}");
    ExitCode::SUCCESS
}

fn outcome_text(approval: &Approval) -> String {
    let reason = approval
        .reason
        .as_deref()
        .map(|r| format!(": {r}"))
        .unwrap_or_default();
    match approval.status {
        ApprovalStatus::Approved | ApprovalStatus::Denied => {
            format!("{}{reason}", approval.outcome())
        }
        ApprovalStatus::Expired if approval.allows() => {
            "expired: going ahead (--on-timeout approve)".into()
        }
        ApprovalStatus::Expired => "expired: denied (nobody decided in time)".into(),
        ApprovalStatus::Pending => "still pending".into(),
    }
}

pub(crate) fn ask_exit_code(approval: &Approval) -> ExitCode {
    match approval.status {
        _ if approval.allows() => ExitCode::SUCCESS,
        ApprovalStatus::Expired => ExitCode::from(3),
        _ => ExitCode::FAILURE,
    }
}

/// Sends the request through the agent's socket and waits for the decision.
pub(crate) async fn ask_daemon(
    request: &AskRequest,
    origin: AskOrigin,
) -> Result<Approval, Failure> {
    let socket = std::env::var_os(super::ASK_SOCKET_ENV).ok_or_else(|| {
        Failure::Usage(
            "CELISTRA_ASK_SOCKET is not set: `celistrad ask` works inside an agent celistrad runs"
                .into(),
        )
    })?;
    let client = Client::for_agent_socket(std::path::Path::new(&socket));
    Ok(client.ask(&AskQuery { origin }, request).await?)
}
