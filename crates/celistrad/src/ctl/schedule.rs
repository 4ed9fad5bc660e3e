//! Schedule flags of `spawn` and `set` (`--schedule`, `--tz`, `--overlap`, `--missed`,
//! `--restart-cron`, and `set`'s `--no-schedule` / `--no-restart-cron`), and how `status` and
//! `ls` show a schedule.

use celistra_core::schedule::wall_clock;
use celistra_proto::{AgentInfo, MissedRuns, Overlap, RestartCron, Schedule, UpdateRequest};
use clap::Args;

use super::Failure;
use super::table::{compact_duration, now_ms};

/// `--schedule` and its companions, shared by `spawn` and `set`.
#[derive(Debug, Args)]
pub(crate) struct ScheduleArgs {
    /// Start the agent at these times: 5 cron fields, minute hour day-of-month month
    /// day-of-week (e.g. "30 9 * * 1-5"). A spawned agent with a schedule waits for its first
    /// time (or `ctl start`). On `set`, replaces the whole schedule.
    #[arg(long, value_name = "CRON")]
    schedule: Option<String>,
    /// IANA time zone of --schedule and --restart-cron (e.g. Europe/Lisbon) [default: the
    /// daemon machine's zone].
    #[arg(long, value_name = "ZONE")]
    tz: Option<String>,
    /// When a start falls due while the agent still runs: skip it, queue it (start once the
    /// run ends), or replace the run (restart) [default: skip].
    #[arg(long, value_name = "skip|queue|replace", value_parser = parse_overlap)]
    overlap: Option<Overlap>,
    /// Starts missed while the daemon was down: skip them, or run once at its start
    /// [default: skip].
    #[arg(long, value_name = "skip|run-once", value_parser = parse_missed)]
    missed: Option<MissedRuns>,
    /// Restart the agent, when it runs, at these times (5 cron fields), like PM2's cron_restart.
    #[arg(long, value_name = "CRON")]
    restart_cron: Option<String>,
}

/// `set`'s flags that remove a schedule.
#[derive(Debug, Args)]
pub(crate) struct ClearScheduleArgs {
    /// Remove the schedule: the agent no longer starts by itself.
    #[arg(long, conflicts_with = "schedule")]
    no_schedule: bool,
    /// Remove the restart cron.
    #[arg(long, conflicts_with = "restart_cron")]
    no_restart_cron: bool,
}

fn parse_overlap(text: &str) -> Result<Overlap, String> {
    match text {
        "skip" => Ok(Overlap::Skip),
        "queue" => Ok(Overlap::Queue),
        "replace" => Ok(Overlap::Replace),
        _ => Err("use skip, queue or replace".into()),
    }
}

fn parse_missed(text: &str) -> Result<MissedRuns, String> {
    match text {
        "skip" => Ok(MissedRuns::Skip),
        "run-once" => Ok(MissedRuns::RunOnce),
        _ => Err("use skip or run-once".into()),
    }
}

impl ScheduleArgs {
    /// Puts the flags given into `update`.
    pub(crate) fn fill(&self, update: &mut UpdateRequest) -> Result<(), Failure> {
        if self.schedule.is_none() {
            let needs = [
                ("--overlap", self.overlap.is_some()),
                ("--missed", self.missed.is_some()),
                ("--tz", self.tz.is_some() && self.restart_cron.is_none()),
            ];
            if let Some((flag, _)) = needs.iter().find(|(_, given)| *given) {
                return Err(Failure::Usage(format!(
                    "{flag} belongs to a schedule; give --schedule CRON with it (it replaces the whole schedule)"
                )));
            }
        }
        update.schedule = self.schedule.as_ref().map(|cron| Schedule {
            cron: cron.clone(),
            time_zone: self.tz.clone(),
            overlap: self.overlap.unwrap_or_default(),
            missed: self.missed.unwrap_or_default(),
        });
        update.restart_cron = self.restart_cron.as_ref().map(|cron| RestartCron {
            cron: cron.clone(),
            time_zone: self.tz.clone(),
        });
        Ok(())
    }
}

impl ClearScheduleArgs {
    pub(crate) fn fill(&self, update: &mut UpdateRequest) {
        update.clear_schedule = self.no_schedule;
        update.clear_restart_cron = self.no_restart_cron;
    }
}

/// `status`'s schedule lines (none for an agent without one).
pub(crate) fn status_lines(agent: &AgentInfo) -> Vec<(&'static str, String)> {
    let mut lines = vec![];
    if let Some(s) = &agent.schedule {
        lines.push((
            "schedule",
            format!(
                "{} {} (overlap {}, missed {})",
                s.cron,
                zone_text(s.time_zone.as_deref()),
                match s.overlap {
                    Overlap::Skip => "skip",
                    Overlap::Queue => "queue",
                    Overlap::Replace => "replace",
                },
                match s.missed {
                    MissedRuns::Skip => "skip",
                    MissedRuns::RunOnce => "run-once",
                },
            ),
        ));
        lines.push((
            "next run",
            when(agent.next_run_at_ms, s.time_zone.as_deref()),
        ));
    }
    if let Some(r) = &agent.restart_cron {
        lines.push((
            "restart cron",
            format!("{} {}", r.cron, zone_text(r.time_zone.as_deref())),
        ));
        lines.push((
            "next restart",
            when(agent.next_restart_cron_at_ms, r.time_zone.as_deref()),
        ));
    }
    lines
}

fn zone_text(zone: Option<&str>) -> String {
    zone.map_or_else(|| "in the machine's zone".into(), |z| format!("in {z}"))
}

fn when(at_ms: Option<u64>, zone: Option<&str>) -> String {
    match at_ms {
        Some(at) => format!(
            "{} (in {})",
            wall_clock(at, zone),
            compact_duration(at.saturating_sub(now_ms()))
        ),
        None => "-".into(),
    }
}

/// `ls`'s UPTIME column for an agent that is not running but has a schedule: `next 4m`.
pub(crate) fn next_run_badge(agent: &AgentInfo) -> Option<String> {
    if agent.state.is_active() {
        return None;
    }
    let at = agent.next_run_at_ms?;
    Some(format!(
        "next {}",
        compact_duration(at.saturating_sub(now_ms()))
    ))
}
