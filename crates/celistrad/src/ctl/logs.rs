//! `ctl logs`: an agent's output from the history (or a search across agents), and `--clear`.

use std::io::Write;

use celistra_client::{Client, next_chunk};
use celistra_core::clock::parse_time_bound;
use celistra_proto::{LogFormat, LogStream, LogsQuery, SearchQuery};
use clap::Args;

use super::{CtlResult, Failure, on_machine_of_optional};

#[derive(Debug, Args)]
pub(crate) struct LogsArgs {
    /// Agent id or name (removed agents too; MACHINE/AGENT on another machine). Optional with
    /// --grep: then every agent is searched.
    agent: Option<String>,
    /// Keep printing new output as it comes, across restarts of the agent (Ctrl-C to end).
    #[arg(long, short)]
    follow: bool,
    /// Only the last N lines (with --grep, the last N matches).
    #[arg(long, short = 'n', value_name = "N")]
    tail: Option<usize>,
    /// Only output since a time: a duration ago (30m, 2h, 7d) or a time (2026-11-23T10:00:00Z).
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Only output until a time, in the same forms as --since.
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// Only run N of the agent (`ctl history ID` lists runs).
    #[arg(long, value_name = "N")]
    run: Option<u64>,
    /// Only lines matching PATTERN: case-insensitive, starting at a word start ("err" finds
    /// "Error:" but not "terror"). Uses the search index.
    #[arg(long, value_name = "PATTERN")]
    grep: Option<String>,
    /// Prefix each line with the time it was written (RFC 3339, UTC).
    #[arg(long, short)]
    timestamps: bool,
    /// The bytes exactly as written, escape sequences included.
    #[arg(long, conflicts_with_all = ["grep", "timestamps", "json"])]
    raw: bool,
    /// One JSON object per line: agent_id, run, stream, time_ms, text.
    #[arg(long)]
    json: bool,
    /// Only standard error (agents spawned with --no-pty).
    #[arg(long, conflicts_with_all = ["stdout", "sandbox"])]
    stderr: bool,
    /// Only standard output (agents spawned with --no-pty).
    #[arg(long, conflicts_with = "sandbox")]
    stdout: bool,
    /// Only the daemon's notes of what the agent's sandbox blocked.
    #[arg(long)]
    sandbox: bool,
    /// Delete the agent's saved output instead of printing it.
    #[arg(long, conflicts_with_all = ["follow", "tail", "since", "until", "run", "grep", "timestamps", "raw", "json", "stderr", "stdout", "sandbox"])]
    clear: bool,
}

pub(crate) async fn run(client: &Client, args: LogsArgs) -> CtlResult {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let bound = |text: &Option<String>| {
        text.as_deref()
            .map(|t| parse_time_bound(t, now).map_err(Failure::Usage))
            .transpose()
    };
    let format = if args.json {
        LogFormat::Jsonl
    } else if args.raw {
        LogFormat::Raw
    } else {
        LogFormat::Text
    };
    let stream = if args.stderr {
        Some(LogStream::Stderr)
    } else if args.stdout {
        Some(LogStream::Stdout)
    } else if args.sandbox {
        Some(LogStream::Sandbox)
    } else {
        None
    };
    let (client, agent) = on_machine_of_optional(client, args.agent.as_deref())?;
    let client = &client;
    let mut body = match agent {
        Some(agent) if args.clear => {
            let cleared = client.clear_logs(agent).await?;
            println!(
                "cleared {} bytes of output of {}",
                cleared.cleared_bytes, cleared.agent_id
            );
            return Ok(());
        }
        Some(agent) => {
            let query = LogsQuery {
                tail: args.tail,
                follow: args.follow,
                since: bound(&args.since)?,
                until: bound(&args.until)?,
                run: args.run,
                grep: args.grep.clone(),
                stream,
                timestamps: args.timestamps,
                format,
            };
            client.get_logs(agent, &query).await?
        }
        None if !args.follow && args.run.is_none() => {
            let Some(grep) = args.grep.clone() else {
                return Err(no_agent());
            };
            let query = SearchQuery {
                grep,
                agent: None,
                since: bound(&args.since)?,
                until: bound(&args.until)?,
                stream,
                limit: args.tail,
                timestamps: args.timestamps,
                format,
            };
            client.search_logs(&query).await?
        }
        None => return Err(no_agent()),
    };
    let mut stdout = std::io::stdout().lock();
    while let Some(chunk) = next_chunk(&mut body).await? {
        // A closed pipe never gets here: SIGPIPE ends `ctl` first (see `main`).
        if let Err(e) = stdout.write_all(&chunk).and_then(|()| stdout.flush()) {
            return Err(Failure::Failed(format!("cannot write output: {e}")));
        }
    }
    Ok(())
}

fn no_agent() -> Failure {
    Failure::Usage(
        "name an agent (id or name); only a --grep search without --follow or --run may leave it \
         out to search every agent"
            .into(),
    )
}
