//! `celistrad hook <kind>`: what an agent CLI's hook runs (Claude Code and Gemini CLI command
//! hooks, Codex `notify`) to tell the daemon what the agent is doing, through the agent's own
//! socket. It must never break the agent: nothing on stdout (Claude Code and Gemini CLI read
//! stdout as JSON), exit 0 whatever happens to the report (the reason on stderr), all within
//! [`DEADLINE`]; exit 2 only for a usage error.

use std::io::Read;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use celistra_client::Client;
use celistra_proto::HookReport;
use clap::Args;

/// The most a hook may hold up the agent's CLI, reading its payload included.
const DEADLINE: Duration = Duration::from_secs(3);

/// The largest payload sent (the daemon's body limit).
const MAX_PAYLOAD: u64 = 1024 * 1024;

#[derive(Debug, Args)]
pub(crate) struct HookArgs {
    /// The agent CLI whose hook this is: claude, codex, gemini, or another name (lower case
    /// letters, digits, `-`, `_`).
    kind: String,
    /// The payload as an argument instead of stdin; the last one counts (Codex `notify` appends
    /// its JSON to the command: `notify = ["celistrad", "hook", "codex"]`).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "PAYLOAD"
    )]
    payload: Vec<String>,
}

/// Reports the hook; see the module's rules for the exit status.
pub(crate) async fn hook(args: HookArgs) -> ExitCode {
    if let Err(why) = check_kind(&args.kind) {
        say(&format!("celistrad hook: {why}"));
        return ExitCode::from(2);
    }
    let Some(socket) = std::env::var_os(crate::ctl::ASK_SOCKET_ENV) else {
        say(&format!(
            "celistrad hook {}: not reported: {} is not set, so this is not running inside an \
             agent celistrad supervises",
            args.kind,
            crate::ctl::ASK_SOCKET_ENV
        ));
        return ExitCode::SUCCESS;
    };
    let started = Instant::now();
    if let Err(why) = report(&args, std::path::Path::new(&socket), started).await {
        say(&format!(
            "celistrad hook {}: not reported: {why}",
            args.kind
        ));
    }
    ExitCode::SUCCESS
}

/// One line on stderr; a stderr that cannot be written is no reason to fail (`eprintln!` would
/// panic).
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn check_kind(kind: &str) -> Result<(), String> {
    let valid = !kind.is_empty()
        && kind.len() <= 32
        && kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && kind
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{kind}` is not an agent kind: use claude, codex, gemini, or another name of lower \
             case letters, digits, `-` and `_` (at most 32)"
        ))
    }
}

async fn report(args: &HookArgs, socket: &std::path::Path, started: Instant) -> Result<(), String> {
    let text = match args.payload.last() {
        Some(argument) => argument.clone(),
        None => read_stdin(DEADLINE.saturating_sub(started.elapsed())).await?,
    };
    if text.len() as u64 > MAX_PAYLOAD {
        return Err(format!("the payload is larger than {MAX_PAYLOAD} bytes"));
    }
    let payload: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        format!(
            "the payload is not JSON ({e}); it comes on stdin, or as the last argument for codex"
        )
    })?;
    let report = HookReport {
        kind: args.kind.clone(),
        payload,
    };
    let client = Client::for_agent_socket(socket);
    let left = DEADLINE.saturating_sub(started.elapsed());
    match tokio::time::timeout(left, client.report_hook(&report)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("{e} (socket {})", socket.display())),
        Err(_) => Err(format!(
            "the daemon did not answer within {} s (socket {})",
            DEADLINE.as_secs(),
            socket.display()
        )),
    }
}

/// Reads stdin to its end on a thread of its own, which is left behind (not joined) if the end
/// does not come in time: the process exits anyway.
async fn read_stdin(limit: Duration) -> Result<String, String> {
    let (sender, receiver) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let read = std::io::stdin()
            .take(MAX_PAYLOAD + 1)
            .read_to_string(&mut text)
            .map(|_| text);
        let _ = sender.send(read);
    });
    match tokio::time::timeout(limit, receiver).await {
        Ok(Ok(Ok(text))) => Ok(text),
        Ok(Ok(Err(e))) => Err(format!("cannot read the payload on stdin: {e}")),
        Ok(Err(_)) => Err("cannot read the payload on stdin".into()),
        Err(_) => Err(format!(
            "no payload on stdin within {} s (stdin must end)",
            DEADLINE.as_secs()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_plain_lower_case_names() {
        for good in ["claude", "codex", "gemini", "aider", "my-cli_2"] {
            assert!(check_kind(good).is_ok(), "{good}");
        }
        for bad in ["", "Claude", "-x", "a b", "a/b", &"x".repeat(33)] {
            assert!(check_kind(bad).is_err(), "{bad}");
        }
    }
}
