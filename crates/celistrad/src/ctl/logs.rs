//! `ctl logs`: the output an agent's ring holds, optionally followed live.

use std::io::Write;

use celistra_client::{Client, next_chunk};
use clap::Args;

use super::{CtlResult, Failure, path_segment};

#[derive(Debug, Args)]
pub(crate) struct LogsArgs {
    /// Agent id or name.
    agent: String,
    /// Keep printing new output as it comes, across restarts of the agent (Ctrl-C to end).
    #[arg(long, short)]
    follow: bool,
    /// Only the last N lines.
    #[arg(long, short = 'n', value_name = "N")]
    tail: Option<usize>,
}

pub(crate) async fn run(client: &Client, args: LogsArgs) -> CtlResult {
    let mut path = format!(
        "/v1/agents/{}/logs?follow={}",
        path_segment(&args.agent),
        args.follow
    );
    if let Some(tail) = args.tail {
        path.push_str(&format!("&tail={tail}"));
    }
    let mut body = client.open_stream(&path).await?;
    let mut stdout = std::io::stdout().lock();
    while let Some(chunk) = next_chunk(&mut body).await? {
        if let Err(e) = stdout.write_all(&chunk).and_then(|()| stdout.flush()) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(());
            }
            return Err(Failure::Failed(format!("cannot write output: {e}")));
        }
    }
    Ok(())
}
