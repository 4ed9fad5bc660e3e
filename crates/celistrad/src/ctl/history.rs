//! `ctl history`: past and current runs of agents, with how each ended and who ended it.

use celistra_client::Client;
use celistra_core::clock::{format_rfc3339_ms, parse_time_bound};
use celistra_proto::{HistoryQuery, RunRecord};
use clap::Args;

use super::table::{compact_duration, now_ms, render};
use super::{CtlResult, Failure, on_machine_of_optional, print_json};

#[derive(Debug, Args)]
pub(crate) struct HistoryArgs {
    /// Agent id or name (removed agents too; MACHINE/AGENT on another machine) [default: every
    /// agent].
    agent: Option<String>,
    /// Only runs alive since a time: a duration ago (30m, 2h, 7d) or a time (2026-11-23T10:00:00Z).
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Only runs started until a time, in the same forms as --since.
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// The newest N runs.
    #[arg(long, short = 'n', value_name = "N", default_value_t = 100)]
    limit: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(client: &Client, args: HistoryArgs) -> CtlResult {
    let now = now_ms();
    let bound = |text: &Option<String>| {
        text.as_deref()
            .map(|t| parse_time_bound(t, now).map_err(Failure::Usage))
            .transpose()
    };
    let (client, agent) = on_machine_of_optional(client, args.agent.as_deref())?;
    let (client, agent) = (&client, agent.map(str::to_owned));
    let query = HistoryQuery {
        agent,
        since: bound(&args.since)?,
        until: bound(&args.until)?,
        limit: Some(args.limit),
    };
    let runs: Vec<RunRecord> = client.list_runs(&query).await?;
    if args.json {
        print_json(&runs);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = runs.iter().map(|r| row(r, now)).collect();
    println!(
        "{}",
        render(
            &[
                "AGENT", "NAME", "RUN", "STARTED", "RAN", "EXIT", "ENDED BY", "OUTPUT", "COMMAND"
            ],
            &rows
        )
    );
    Ok(())
}

fn row(run: &RunRecord, now: u64) -> Vec<String> {
    let exit = match (&run.exit_code, &run.exit_signal, run.ended_at_ms) {
        (Some(code), _, _) => code.to_string(),
        (None, Some(signal), _) => signal.clone(),
        (None, None, Some(_)) => "?".into(),
        (None, None, None) => "-".into(),
    };
    let ended_by = match (run.cause, &run.stopped_by) {
        (None, _) => "running".to_owned(),
        (Some(cause), Some(by)) => format!("{} ({by})", cause.as_str()),
        (Some(cause), None) => cause.as_str().to_owned(),
    };
    // Why it ended, when that was more than an ordinary exit: `crashed: model-overloaded`.
    let ended_by = match run.exit_class {
        Some(class) if class != celistra_proto::ExitClass::Other => {
            format!("{ended_by}: {}", class.as_str())
        }
        _ => ended_by,
    };
    let started = format_rfc3339_ms(run.started_at_ms);
    vec![
        run.agent_id.clone(),
        run.name.clone(),
        run.run.to_string(),
        started[..19].replace('T', " "),
        compact_duration(
            run.ended_at_ms
                .unwrap_or(now)
                .saturating_sub(run.started_at_ms),
        ),
        exit,
        ended_by,
        bytes_text(run.output_bytes),
        run.command.clone(),
    ]
}

/// `512B`, `3.1K`, `12M`, `1.0G`.
fn bytes_text(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "K", "M", "G"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else if value < 10.0 {
        format!("{value:.1}{}", UNITS[unit])
    } else {
        format!("{value:.0}{}", UNITS[unit])
    }
}
