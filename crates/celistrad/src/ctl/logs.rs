//! `ctl logs`: an agent's output from the history (or a search across agents), and `--clear`.

use std::io::Write;

use celistra_client::{Client, next_chunk};
use celistra_core::clock::parse_time_bound;
use clap::Args;
use hyper::Method;
use serde::Deserialize;

use super::{CtlResult, Failure, path_segment};

#[derive(Debug, Args)]
pub(crate) struct LogsArgs {
    /// Agent id or name (removed agents too). Optional with --grep: then every agent is searched.
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

#[derive(Deserialize)]
struct Cleared {
    agent_id: String,
    cleared_bytes: u64,
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
    let mut query = vec![];
    if let Some(since) = bound(&args.since)? {
        query.push(format!("since={since}"));
    }
    if let Some(until) = bound(&args.until)? {
        query.push(format!("until={until}"));
    }
    if let Some(grep) = &args.grep {
        query.push(format!("grep={}", path_segment(grep)));
    }
    if args.timestamps {
        query.push("timestamps=true".into());
    }
    if args.json {
        query.push("format=jsonl".into());
    } else if args.raw {
        query.push("format=raw".into());
    }
    if args.stderr {
        query.push("stream=stderr".into());
    } else if args.stdout {
        query.push("stream=stdout".into());
    } else if args.sandbox {
        query.push("stream=sandbox".into());
    }
    let path = match &args.agent {
        Some(agent) if args.clear => {
            let cleared: Cleared = client
                .call(
                    Method::DELETE,
                    &format!("/v1/agents/{}/logs", path_segment(agent)),
                    None::<&()>,
                )
                .await?;
            println!(
                "cleared {} bytes of output of {}",
                cleared.cleared_bytes, cleared.agent_id
            );
            return Ok(());
        }
        Some(agent) => {
            if let Some(tail) = args.tail {
                query.push(format!("tail={tail}"));
            }
            if let Some(run) = args.run {
                query.push(format!("run={run}"));
            }
            if args.follow {
                query.push("follow=true".into());
            }
            format!(
                "/v1/agents/{}/logs?{}",
                path_segment(agent),
                query.join("&")
            )
        }
        None if args.grep.is_some() && !args.follow && args.run.is_none() => {
            if let Some(tail) = args.tail {
                query.push(format!("limit={tail}"));
            }
            format!("/v1/logs?{}", query.join("&"))
        }
        None => {
            return Err(Failure::Usage(
                "name an agent (id or name); only a --grep search without --follow or --run may \
                 leave it out to search every agent"
                    .into(),
            ));
        }
    };
    let mut body = client.open_stream(&path).await?;
    let mut stdout = std::io::stdout().lock();
    while let Some(chunk) = next_chunk(&mut body).await? {
        // A closed pipe never gets here: SIGPIPE ends `ctl` first (see `main`).
        if let Err(e) = stdout.write_all(&chunk).and_then(|()| stdout.flush()) {
            return Err(Failure::Failed(format!("cannot write output: {e}")));
        }
    }
    Ok(())
}
