//! Schedules: 5-field cron expressions in an IANA time zone (parsed with croner, refusals naming
//! the field that is wrong), the next time one falls due after an instant, missed runs between the
//! last fire and now, and [`Timer`], the per-agent state machine the daemon's scheduler drives:
//! `(now, running) → what to do`, with no clock and no I/O.
//!
//! # Daylight saving time
//!
//! Times are wall-clock times in the schedule's zone, and searches move in real time (croner's
//! semantics, which are Vixie cron's):
//! - a **fixed-time** job (fixed minute and hour, e.g. `30 2 * * *`) whose time falls in the
//!   spring-forward gap runs at the first valid minute after the gap, the same day; on fall-back
//!   it runs once, at the first of the two occurrences;
//! - an **interval or wildcard** job (`*` or a step in the minute or hour) skips the times that do
//!   not exist in the gap, and runs in both passes of a repeated hour.

use celistra_proto::{MissedRuns, Overlap, RestartCron, Schedule};
use chrono::{DateTime, TimeZone};
pub use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// The five fields, in order, as refusals name them, with what each takes.
const FIELDS: [(&str, &str); 5] = [
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day-of-month", "1-31 or L"),
    ("month", "1-12 or JAN-DEC"),
    ("day-of-week", "0-7 (0 and 7 are Sunday) or SUN-SAT"),
];

/// A cron expression bound to a time zone.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    cron: Cron,
    zone: Tz,
}

fn parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
}

/// Reads an IANA time zone name (`Europe/Lisbon`, `UTC`).
pub fn parse_zone(name: &str) -> Result<Tz, String> {
    name.parse::<Tz>().map_err(|_| {
        format!("unknown time zone \"{name}\"; use an IANA name such as Europe/Lisbon or UTC")
    })
}

/// Parses a 5-field cron expression (minute, hour, day of month, month, day of week; `@daily`
/// and the other nicknames too). A refusal names the field that is wrong.
pub fn parse_cron(expression: &str) -> Result<Cron, String> {
    let fields: Vec<&str> = expression.split_whitespace().collect();
    let nickname = fields.len() == 1 && fields[0].starts_with('@');
    if !nickname {
        match fields.len() {
            5 => {}
            6 | 7 => {
                return Err(format!(
                    "cron expression \"{expression}\" has {} fields; use 5 (minute hour \
                     day-of-month month day-of-week): seconds and years are not supported",
                    fields.len()
                ));
            }
            n => {
                return Err(format!(
                    "cron expression \"{expression}\" has {n} fields; use 5: minute hour \
                     day-of-month month day-of-week, e.g. \"30 9 * * 1-5\""
                ));
            }
        }
        // Each field alone, the others `*`, so the refusal can say which one is wrong.
        for (i, field) in fields.iter().enumerate() {
            let mut alone = ["*"; 5];
            alone[i] = field;
            if let Err(e) = parser().parse(&alone.join(" ")) {
                let (name, takes) = FIELDS[i];
                return Err(format!(
                    "{name} field \"{field}\": {}; it takes {takes}, lists (1,15), ranges (1-5) \
                     and steps (*/10)",
                    reason(&e).trim_end_matches('.')
                ));
            }
        }
    }
    let cron = parser()
        .parse(expression)
        .map_err(|e| format!("cron expression \"{expression}\": {}", reason(&e)))?;
    // A pattern that names no real date (`0 0 30 2 *`) would never run.
    let reference = chrono::Utc.timestamp_millis_opt(1_767_225_600_000).single();
    if let Some(reference) = reference
        && cron.find_next_occurrence(&reference, false).is_err()
    {
        return Err(format!(
            "cron expression \"{expression}\" never matches a date; check the day-of-month and \
             month fields"
        ));
    }
    Ok(cron)
}

/// croner's message without its prefixes.
fn reason(error: &croner::errors::CronError) -> String {
    use croner::errors::CronError;
    match error {
        CronError::InvalidPattern(m)
        | CronError::IllegalCharacters(m)
        | CronError::ComponentError(m) => m.clone(),
        other => other.to_string(),
    }
}

impl CronSchedule {
    /// Parses `expression` in `zone`, or in `machine_zone` when no zone is named.
    pub fn new(expression: &str, zone: Option<&str>, machine_zone: Tz) -> Result<Self, String> {
        let cron = parse_cron(expression)?;
        let zone = match zone {
            Some(name) => parse_zone(name)?,
            None => machine_zone,
        };
        Ok(CronSchedule { cron, zone })
    }

    /// The zone its times are in.
    pub fn zone(&self) -> Tz {
        self.zone
    }

    fn at(&self, ms: u64) -> Option<DateTime<Tz>> {
        self.zone.timestamp_millis_opt(ms as i64).single()
    }

    /// The first time it falls due strictly after `after_ms` (ms since the epoch); `None` past
    /// the year 5000.
    pub fn next_after(&self, after_ms: u64) -> Option<u64> {
        // Whole seconds: a fire at 09:30:00 is not after 09:30:00.500, and the search (which
        // counts in seconds) returns the one after it.
        let start = self.at(after_ms - after_ms % 1000)?;
        let next = self.cron.find_next_occurrence(&start, false).ok()?;
        u64::try_from(next.timestamp_millis()).ok()
    }

    /// The latest time it fell due in `(last_fire_ms, now_ms]`, if any: a run missed between them.
    pub fn missed(&self, last_fire_ms: u64, now_ms: u64) -> Option<u64> {
        let first = self.next_after(last_fire_ms)?;
        if first > now_ms {
            return None;
        }
        let latest = self
            .at(now_ms)
            .and_then(|now| self.cron.find_previous_occurrence(&now, true).ok())
            .and_then(|t| u64::try_from(t.timestamp_millis()).ok())
            .filter(|&t| t >= first && t <= now_ms);
        Some(latest.unwrap_or(first))
    }
}

/// `2026-12-06 09:30 WET`: a time on the wall clock of the zone named (UTC when none is, or
/// when it is unknown), for `ctl status`.
pub fn wall_clock(time_ms: u64, zone: Option<&str>) -> String {
    let zone = zone.and_then(|z| z.parse::<Tz>().ok()).unwrap_or(Tz::UTC);
    zone.timestamp_millis_opt(time_ms as i64)
        .single()
        .map_or_else(String::new, |t| t.format("%Y-%m-%d %H:%M %Z").to_string())
}

/// Checks a schedule's expression and zone (for spec validation: the zone left out is fine).
pub fn check_schedule(schedule: &Schedule) -> Result<(), String> {
    check(&schedule.cron, schedule.time_zone.as_deref()).map_err(|e| format!("schedule: {e}"))
}

/// Checks a `restart_cron`'s expression and zone.
pub fn check_restart_cron(restart: &RestartCron) -> Result<(), String> {
    check(&restart.cron, restart.time_zone.as_deref()).map_err(|e| format!("restart_cron: {e}"))
}

fn check(expression: &str, zone: Option<&str>) -> Result<(), String> {
    CronSchedule::new(expression, zone, Tz::UTC).map(|_| ())
}

/// When `schedule` and `restart_cron` next fall due after `now_ms` (an agent's
/// `next_run_at_ms` and `next_restart_cron_at_ms`); an invalid one is never due.
pub fn next_times(
    schedule: Option<&Schedule>,
    restart_cron: Option<&RestartCron>,
    machine_zone: Tz,
    now_ms: u64,
) -> (Option<u64>, Option<u64>) {
    Timer::new(schedule, restart_cron, machine_zone, Some(now_ms), now_ms)
        .map_or((None, None), |t| (t.next_run_at(), t.next_restart_at()))
}

/// What a schedule did when it fell due; the `action` of an `agent_scheduled` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    /// The agent was not running: start it.
    Start,
    /// `restart_cron` fell due while it ran: restart it.
    Restart,
    /// The schedule fell due while it ran, overlap `replace`: restart it.
    Replace,
    /// The schedule fell due while it ran, overlap `queue`: start it when the run ends.
    Queue,
    /// The schedule fell due while it ran, overlap `skip` (or a start already waits): nothing.
    Skip,
    /// A run was missed while the daemon was down (`missed: run-once`): start it now.
    Missed,
}

impl Act {
    /// The name in events and the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Act::Start => "started",
            Act::Restart => "restarted",
            Act::Replace => "replaced",
            Act::Queue => "queued",
            Act::Skip => "skipped",
            Act::Missed => "missed",
        }
    }

    /// Whether the agent is to be started (it is not running).
    pub fn starts(self) -> bool {
        matches!(self, Act::Start | Act::Missed)
    }

    /// Whether the agent is to be restarted (it is running).
    pub fn restarts(self) -> bool {
        matches!(self, Act::Restart | Act::Replace)
    }
}

/// One thing to do, and the time the cron expression named for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub act: Act,
    pub due_at_ms: u64,
}

/// One agent's schedule and `restart_cron` as a state machine over `(now, running)`.
///
/// "Running" means a process exists or is about to (starting, running, waiting for approval,
/// stopping, or in backoff before an automatic restart).
#[derive(Debug, Clone)]
pub struct Timer {
    run: Option<(CronSchedule, Overlap, MissedRuns)>,
    restart: Option<CronSchedule>,
    next_run: Option<u64>,
    next_restart: Option<u64>,
    last_fire: u64,
    last_fire_changed: bool,
    queued: Option<u64>,
}

impl Timer {
    /// A timer for `schedule` and `restart_cron` (zones left out are `machine_zone`), with the
    /// schedule's last fire as persisted (absent: it was set just now, which is then persisted).
    pub fn new(
        schedule: Option<&Schedule>,
        restart_cron: Option<&RestartCron>,
        machine_zone: Tz,
        last_fire_ms: Option<u64>,
        now_ms: u64,
    ) -> Result<Timer, String> {
        let run = schedule
            .map(|s| {
                CronSchedule::new(&s.cron, s.time_zone.as_deref(), machine_zone)
                    .map(|c| (c, s.overlap, s.missed))
            })
            .transpose()?;
        let restart = restart_cron
            .map(|r| CronSchedule::new(&r.cron, r.time_zone.as_deref(), machine_zone))
            .transpose()?;
        Ok(Timer {
            next_run: run.as_ref().and_then(|(c, _, _)| c.next_after(now_ms)),
            next_restart: restart.as_ref().and_then(|c| c.next_after(now_ms)),
            run,
            restart,
            last_fire: last_fire_ms.unwrap_or(now_ms),
            last_fire_changed: last_fire_ms.is_none(),
            queued: None,
        })
    }

    /// When the schedule next starts the agent.
    pub fn next_run_at(&self) -> Option<u64> {
        self.next_run
    }

    /// When `restart_cron` next restarts it.
    pub fn next_restart_at(&self) -> Option<u64> {
        self.next_restart
    }

    /// When something is next due: the time to wake up at.
    pub fn next_wake(&self) -> Option<u64> {
        match (self.next_run, self.next_restart) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The schedule's last fire (or when it was set, before the first).
    pub fn last_fire(&self) -> u64 {
        self.last_fire
    }

    /// Whether a start waits for the current run to end.
    pub fn is_queued(&self) -> bool {
        self.queued.is_some()
    }

    /// The last fire to persist, once after each change.
    pub fn take_last_fire(&mut self) -> Option<u64> {
        std::mem::take(&mut self.last_fire_changed).then_some(self.last_fire)
    }

    fn fired(&mut self, due: u64) {
        if due > self.last_fire || self.last_fire_changed {
            self.last_fire = self.last_fire.max(due);
            self.last_fire_changed = true;
        }
    }

    /// At daemon start: a run missed while the daemon was down. With `missed: run-once` it is
    /// started (or, if the agent already runs, handled as the overlap policy says); with `skip`
    /// nothing is done. Either way the last fire moves on, so it is never counted twice.
    pub fn catch_up(&mut self, now_ms: u64, running: bool) -> Option<Decision> {
        let (cron, overlap, missed) = self.run.as_ref()?;
        let due = cron.missed(self.last_fire, now_ms)?;
        let (overlap, missed) = (*overlap, *missed);
        self.fired(due);
        match missed {
            MissedRuns::Skip => None,
            MissedRuns::RunOnce if running => Some(self.overlapping(overlap, due)),
            MissedRuns::RunOnce => Some(Decision {
                act: Act::Missed,
                due_at_ms: due,
            }),
        }
    }

    fn overlapping(&mut self, overlap: Overlap, due: u64) -> Decision {
        let act = match overlap {
            Overlap::Skip => Act::Skip,
            Overlap::Replace => Act::Replace,
            Overlap::Queue if self.queued.is_some() => Act::Skip,
            Overlap::Queue => {
                self.queued = Some(due);
                Act::Queue
            }
        };
        Decision {
            act,
            due_at_ms: due,
        }
    }

    /// What falls due at `now_ms` (at most one decision per expression, however late: times
    /// passed while the machine slept are one start, not many). Next times move past `now_ms`.
    pub fn tick(&mut self, now_ms: u64, running: bool) -> Vec<Decision> {
        let mut decisions = vec![];
        let mut started = false;
        if let (Some((cron, overlap, _)), Some(due)) = (&self.run, self.next_run)
            && due <= now_ms
        {
            let overlap = *overlap;
            self.next_run = cron.next_after(now_ms);
            self.fired(due);
            let decision = if running {
                self.overlapping(overlap, due)
            } else {
                Decision {
                    act: Act::Start,
                    due_at_ms: due,
                }
            };
            started = decision.act.starts() || decision.act.restarts();
            decisions.push(decision);
        }
        if let (Some(cron), Some(due)) = (&self.restart, self.next_restart)
            && due <= now_ms
        {
            self.next_restart = cron.next_after(now_ms);
            // A run the schedule just started or replaced is already fresh.
            if running && !started {
                decisions.push(Decision {
                    act: Act::Restart,
                    due_at_ms: due,
                });
            }
        }
        decisions
    }

    /// The agent's run ended: a queued start is due now.
    pub fn run_ended(&mut self) -> Option<Decision> {
        self.queued.take().map(|due| Decision {
            act: Act::Start,
            due_at_ms: due,
        })
    }
}

#[cfg(test)]
mod tests;
