//! Cron edge cases (DST both ways, month ends, day-of-month with day-of-week, refusals) and the
//! scheduler's decisions under a clock the tests move by hand.

use super::*;
use chrono::Utc;

const MIN: u64 = 60_000;
const HOUR: u64 = 60 * MIN;
const DAY: u64 = 24 * HOUR;

/// An instant written in UTC.
fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> u64 {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, 0)
        .single()
        .expect("a valid UTC time")
        .timestamp_millis() as u64
}

fn cron(expression: &str, zone: &str) -> CronSchedule {
    CronSchedule::new(expression, Some(zone), Tz::UTC).expect("a valid schedule")
}

/// The next `n` times after `from`.
fn next_n(schedule: &CronSchedule, from: u64, n: usize) -> Vec<u64> {
    let mut times = vec![];
    let mut at = from;
    for _ in 0..n {
        at = schedule.next_after(at).expect("a next time");
        times.push(at);
    }
    times
}

#[test]
fn a_fixed_time_job_in_the_spring_forward_gap_runs_right_after_it_new_york() {
    // 2026-03-08 02:00 EST jumps to 03:00 EDT: 02:30 does not exist that day.
    let job = cron("30 2 * * *", "America/New_York");
    let times = next_n(&job, utc(2026, 3, 7, 0, 0), 3);
    assert_eq!(
        times,
        vec![
            utc(2026, 3, 7, 7, 30), // 02:30 EST
            utc(2026, 3, 8, 7, 0),  // 03:00 EDT, right after the gap
            utc(2026, 3, 9, 6, 30), // 02:30 EDT
        ]
    );
}

#[test]
fn an_interval_job_skips_the_times_of_the_spring_forward_gap() {
    let job = cron("*/15 * * * *", "America/New_York");
    // 01:45 EST, then 03:00 EDT: 02:00 to 02:45 do not exist.
    let times = next_n(&job, utc(2026, 3, 8, 6, 40), 2);
    assert_eq!(times, vec![utc(2026, 3, 8, 6, 45), utc(2026, 3, 8, 7, 0)]);
}

#[test]
fn a_fixed_time_job_runs_once_on_fall_back_new_york() {
    // 2026-11-01 02:00 EDT goes back to 01:00 EST: 01:30 happens twice; the job runs at the first.
    let job = cron("30 1 * * *", "America/New_York");
    let times = next_n(&job, utc(2026, 10, 31, 12, 0), 2);
    assert_eq!(
        times,
        vec![
            utc(2026, 11, 1, 5, 30), // 01:30 EDT
            utc(2026, 11, 2, 6, 30), // the next day, 01:30 EST: not 01:30 EST on Nov 1
        ]
    );
}

#[test]
fn an_interval_job_runs_in_both_passes_of_the_repeated_hour() {
    let job = cron("*/30 * * * *", "America/New_York");
    let times = next_n(&job, utc(2026, 11, 1, 4, 50), 5);
    assert_eq!(
        times,
        vec![
            utc(2026, 11, 1, 5, 0),  // 01:00 EDT
            utc(2026, 11, 1, 5, 30), // 01:30 EDT
            utc(2026, 11, 1, 6, 0),  // 01:00 EST
            utc(2026, 11, 1, 6, 30), // 01:30 EST
            utc(2026, 11, 1, 7, 0),  // 02:00 EST
        ]
    );
}

#[test]
fn dst_both_ways_in_lisbon() {
    // 2026-03-29 01:00 WET jumps to 02:00 WEST; 2026-10-25 02:00 WEST goes back to 01:00 WET.
    let job = cron("30 1 * * *", "Europe/Lisbon");
    assert_eq!(
        next_n(&job, utc(2026, 3, 28, 12, 0), 2),
        vec![utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 30)]
    );
    assert_eq!(
        next_n(&job, utc(2026, 10, 24, 12, 0), 2),
        vec![utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]
    );
    // A job outside the changed hours keeps its wall-clock time across the change.
    let morning = cron("0 9 * * *", "Europe/Lisbon");
    assert_eq!(
        next_n(&morning, utc(2026, 3, 28, 12, 0), 2),
        vec![utc(2026, 3, 29, 8, 0), utc(2026, 3, 30, 8, 0)]
    );
}

#[test]
fn month_ends_skip_the_months_without_the_day() {
    let thirty_first = cron("0 0 31 * *", "UTC");
    assert_eq!(
        next_n(&thirty_first, utc(2026, 1, 31, 0, 0), 3),
        vec![
            utc(2026, 3, 31, 0, 0),
            utc(2026, 5, 31, 0, 0),
            utc(2026, 7, 31, 0, 0)
        ]
    );
    let leap_day = cron("0 0 29 2 *", "UTC");
    assert_eq!(
        next_n(&leap_day, utc(2026, 1, 1, 0, 0), 2),
        vec![utc(2028, 2, 29, 0, 0), utc(2032, 2, 29, 0, 0)]
    );
}

#[test]
fn l_is_the_last_day_of_the_month() {
    let last = cron("0 0 L * *", "UTC");
    assert_eq!(
        next_n(&last, utc(2026, 1, 31, 0, 0), 2),
        vec![utc(2026, 2, 28, 0, 0), utc(2026, 3, 31, 0, 0)]
    );
    assert_eq!(
        next_n(&last, utc(2028, 2, 1, 0, 0), 1),
        vec![utc(2028, 2, 29, 0, 0)]
    );
}

#[test]
fn day_of_month_and_day_of_week_both_restricted_match_either_as_in_vixie_cron() {
    // 2026-02-01 is a Sunday; the 1st or any Monday.
    let either = cron("0 0 1 * 1", "UTC");
    assert_eq!(
        next_n(&either, utc(2026, 1, 31, 0, 0), 4),
        vec![
            utc(2026, 2, 1, 0, 0),  // the 1st (a Sunday)
            utc(2026, 2, 2, 0, 0),  // a Monday
            utc(2026, 2, 9, 0, 0),  // a Monday
            utc(2026, 2, 16, 0, 0), // a Monday
        ]
    );
    // Weekdays only, names accepted.
    let weekdays = cron("30 9 * * MON-FRI", "UTC");
    assert_eq!(
        next_n(&weekdays, utc(2026, 2, 6, 10, 0), 2), // a Friday after 09:30
        vec![utc(2026, 2, 9, 9, 30), utc(2026, 2, 10, 9, 30)]
    );
    // Sunday is 0 or 7.
    assert_eq!(
        cron("0 0 * * 7", "UTC").next_after(utc(2026, 2, 2, 0, 0)),
        Some(utc(2026, 2, 8, 0, 0))
    );
}

#[test]
fn next_is_strictly_after_the_instant_even_within_the_second() {
    let every_minute = cron("* * * * *", "UTC");
    let due = utc(2026, 5, 1, 9, 30);
    assert_eq!(every_minute.next_after(due - 1), Some(due));
    assert_eq!(every_minute.next_after(due), Some(due + MIN));
    assert_eq!(every_minute.next_after(due + 500), Some(due + MIN));
}

#[test]
fn a_refusal_names_the_field_that_is_wrong() {
    let refused = |e: &str| parse_cron(e).expect_err(e);
    assert!(
        refused("0 25 * * *").starts_with("hour field \"25\": "),
        "{}",
        refused("0 25 * * *")
    );
    assert!(refused("61 * * * *").starts_with("minute field \"61\": "));
    assert!(refused("* * 32 * *").starts_with("day-of-month field \"32\": "));
    assert!(refused("* * * 13 *").starts_with("month field \"13\": "));
    assert!(refused("* * * * 8").starts_with("day-of-week field \"8\": "));
    assert!(refused("* * * * MOON").starts_with("day-of-week field \"MOON\": "));
    let six = refused("0 0 0 * * *");
    assert!(
        six.contains("has 6 fields") && six.contains("seconds"),
        "{six}"
    );
    assert!(refused("0 0 0 * * * 2027").contains("has 7 fields"));
    assert!(refused("0 0 *").contains("has 3 fields; use 5"));
    assert!(refused("0 0 30 2 *").contains("never matches a date"));
    assert!(parse_cron("@daily").is_ok());
    assert_eq!(
        parse_zone("Europe/Lisbonn").unwrap_err(),
        "unknown time zone \"Europe/Lisbonn\"; use an IANA name such as Europe/Lisbon or UTC"
    );
    let schedule = Schedule {
        cron: "0 9 * * *".into(),
        time_zone: Some("Mars/Olympus".into()),
        overlap: Overlap::Skip,
        missed: MissedRuns::Skip,
    };
    assert!(
        check_schedule(&schedule)
            .unwrap_err()
            .starts_with("schedule: unknown time zone \"Mars/Olympus\"")
    );
    let restart = RestartCron {
        cron: "0 24 * * *".into(),
        time_zone: None,
    };
    assert!(
        check_restart_cron(&restart)
            .unwrap_err()
            .starts_with("restart_cron: hour field \"24\"")
    );
}

#[test]
fn the_machine_zone_is_used_when_none_is_named() {
    let lisbon: Tz = "Europe/Lisbon".parse().expect("a zone");
    let job = CronSchedule::new("0 9 * * *", None, lisbon).expect("valid");
    assert_eq!(job.zone(), lisbon);
    // Summer time: 09:00 WEST is 08:00 UTC.
    assert_eq!(
        job.next_after(utc(2026, 7, 1, 0, 0)),
        Some(utc(2026, 7, 1, 8, 0))
    );
}

#[test]
fn missed_runs_are_the_latest_fire_between_the_last_and_now() {
    let daily = cron("0 3 * * *", "UTC");
    let last = utc(2026, 1, 1, 3, 0);
    assert_eq!(daily.missed(last, utc(2026, 1, 1, 10, 0)), None);
    assert_eq!(daily.missed(last, utc(2026, 1, 2, 2, 59)), None);
    assert_eq!(
        daily.missed(last, utc(2026, 1, 2, 3, 0)),
        Some(utc(2026, 1, 2, 3, 0))
    );
    assert_eq!(
        daily.missed(last, utc(2026, 1, 4, 12, 0)),
        Some(utc(2026, 1, 4, 3, 0))
    );
    // Over a long downtime of a frequent job, still one answer, found without walking every minute.
    let every_minute = cron("* * * * *", "UTC");
    assert_eq!(
        every_minute.missed(last, utc(2027, 1, 1, 0, 0) + 30_000),
        Some(utc(2027, 1, 1, 0, 0))
    );
}

fn schedule(expression: &str, overlap: Overlap, missed: MissedRuns) -> Schedule {
    Schedule {
        cron: expression.into(),
        time_zone: Some("UTC".into()),
        overlap,
        missed,
    }
}

fn timer(s: &Schedule, last_fire: Option<u64>, now: u64) -> Timer {
    Timer::new(Some(s), None, Tz::UTC, last_fire, now).expect("a valid timer")
}

fn decision(act: Act, due_at_ms: u64) -> Decision {
    Decision { act, due_at_ms }
}

#[test]
fn a_due_schedule_starts_an_idle_agent_once_and_moves_on() {
    let now = utc(2026, 6, 1, 8, 59) + 30_000;
    let mut t = timer(
        &schedule("0 9 * * *", Overlap::Skip, MissedRuns::Skip),
        None,
        now,
    );
    // A new schedule persists "set now" as its last fire, once.
    assert_eq!(t.take_last_fire(), Some(now));
    assert_eq!(t.take_last_fire(), None);
    let nine = utc(2026, 6, 1, 9, 0);
    assert_eq!(t.next_run_at(), Some(nine));
    assert_eq!(t.next_wake(), Some(nine));
    assert!(t.tick(nine - 1, false).is_empty());
    assert_eq!(t.tick(nine + 3, false), vec![decision(Act::Start, nine)]);
    assert_eq!(t.take_last_fire(), Some(nine));
    assert_eq!(t.next_run_at(), Some(nine + DAY));
    assert!(t.tick(nine + 10, false).is_empty());
}

#[test]
fn a_late_wake_is_one_start_not_one_per_time_passed() {
    let start = utc(2026, 6, 1, 9, 0);
    let mut t = timer(
        &schedule("* * * * *", Overlap::Skip, MissedRuns::Skip),
        None,
        start,
    );
    // The machine slept three hours.
    let woke = start + 3 * HOUR + 5_000;
    assert_eq!(t.tick(woke, false), vec![decision(Act::Start, start + MIN)]);
    assert_eq!(t.next_run_at(), Some(start + 3 * HOUR + MIN));
    assert!(t.tick(woke + 1, false).is_empty());
}

#[test]
fn overlap_skip_leaves_a_running_agent_alone() {
    let now = utc(2026, 6, 1, 9, 0);
    let mut t = timer(
        &schedule("*/5 * * * *", Overlap::Skip, MissedRuns::Skip),
        None,
        now,
    );
    assert_eq!(
        t.tick(now + 5 * MIN, true),
        vec![decision(Act::Skip, now + 5 * MIN)]
    );
    assert!(!t.is_queued());
    assert_eq!(t.run_ended(), None);
}

#[test]
fn overlap_queue_keeps_at_most_one_start_waiting_for_the_run_to_end() {
    let now = utc(2026, 6, 1, 9, 0);
    let mut t = timer(
        &schedule("*/5 * * * *", Overlap::Queue, MissedRuns::Skip),
        None,
        now,
    );
    let first = now + 5 * MIN;
    assert_eq!(t.tick(first, true), vec![decision(Act::Queue, first)]);
    assert!(t.is_queued());
    // Still running at the next time: one start already waits.
    let second = now + 10 * MIN;
    assert_eq!(t.tick(second, true), vec![decision(Act::Skip, second)]);
    assert_eq!(t.run_ended(), Some(decision(Act::Start, first)));
    assert_eq!(t.run_ended(), None);
    assert!(!t.is_queued());
}

#[test]
fn overlap_replace_restarts_a_running_agent() {
    let now = utc(2026, 6, 1, 9, 0);
    let mut t = timer(
        &schedule("0 * * * *", Overlap::Replace, MissedRuns::Skip),
        None,
        now,
    );
    let due = now + HOUR;
    assert_eq!(t.tick(due, true), vec![decision(Act::Replace, due)]);
    assert!(Act::Replace.restarts() && !Act::Replace.starts());
}

#[test]
fn restart_cron_restarts_a_running_agent_and_leaves_a_stopped_one_alone() {
    let now = utc(2026, 6, 1, 9, 0);
    let restart = RestartCron {
        cron: "0 4 * * *".into(),
        time_zone: Some("UTC".into()),
    };
    let mut t = Timer::new(None, Some(&restart), Tz::UTC, None, now).expect("valid");
    let four = utc(2026, 6, 2, 4, 0);
    assert_eq!(t.next_restart_at(), Some(four));
    assert_eq!(t.next_run_at(), None);
    assert_eq!(t.tick(four, true), vec![decision(Act::Restart, four)]);
    assert!(t.tick(four + DAY, false).is_empty());
    assert_eq!(t.next_restart_at(), Some(four + 2 * DAY));
}

#[test]
fn a_schedule_start_and_a_restart_due_together_start_once() {
    let now = utc(2026, 6, 1, 9, 0);
    let s = schedule("0 10 * * *", Overlap::Replace, MissedRuns::Skip);
    let restart = RestartCron {
        cron: "0 10 * * *".into(),
        time_zone: None,
    };
    let mut t = Timer::new(Some(&s), Some(&restart), Tz::UTC, None, now).expect("valid");
    let ten = now + HOUR;
    assert_eq!(t.tick(ten, true), vec![decision(Act::Replace, ten)]);
    assert_eq!(t.next_restart_at(), Some(ten + DAY));
}

#[test]
fn missed_run_once_starts_once_after_downtime() {
    let last = utc(2026, 6, 1, 3, 0);
    let back = utc(2026, 6, 4, 12, 0);
    let s = schedule("0 3 * * *", Overlap::Skip, MissedRuns::RunOnce);
    let mut t = timer(&s, Some(last), back);
    assert_eq!(t.take_last_fire(), None, "a persisted last fire is kept");
    assert_eq!(
        t.catch_up(back, false),
        Some(decision(Act::Missed, utc(2026, 6, 4, 3, 0)))
    );
    assert_eq!(t.take_last_fire(), Some(utc(2026, 6, 4, 3, 0)));
    // Only once.
    assert_eq!(t.catch_up(back + 1, false), None);
    assert_eq!(t.next_run_at(), Some(utc(2026, 6, 5, 3, 0)));
}

#[test]
fn missed_run_once_while_the_agent_already_runs_follows_the_overlap_policy() {
    let last = utc(2026, 6, 1, 3, 0);
    let back = utc(2026, 6, 2, 12, 0);
    let s = schedule("0 3 * * *", Overlap::Queue, MissedRuns::RunOnce);
    let mut t = timer(&s, Some(last), back);
    let due = utc(2026, 6, 2, 3, 0);
    assert_eq!(t.catch_up(back, true), Some(decision(Act::Queue, due)));
    assert_eq!(t.run_ended(), Some(decision(Act::Start, due)));
}

#[test]
fn missed_skip_does_nothing_but_moves_the_last_fire_on() {
    let last = utc(2026, 6, 1, 3, 0);
    let back = utc(2026, 6, 4, 12, 0);
    let s = schedule("0 3 * * *", Overlap::Skip, MissedRuns::Skip);
    let mut t = timer(&s, Some(last), back);
    assert_eq!(t.catch_up(back, false), None);
    assert_eq!(t.take_last_fire(), Some(utc(2026, 6, 4, 3, 0)));
}

#[test]
fn nothing_missed_when_the_daemon_was_back_before_the_next_time() {
    let last = utc(2026, 6, 1, 3, 0);
    let s = schedule("0 3 * * *", Overlap::Skip, MissedRuns::RunOnce);
    let mut t = timer(&s, Some(last), utc(2026, 6, 2, 2, 0));
    assert_eq!(t.catch_up(utc(2026, 6, 2, 2, 0), false), None);
    assert_eq!(t.take_last_fire(), None);
}

#[test]
fn a_bad_schedule_makes_no_timer() {
    let s = schedule("0 25 * * *", Overlap::Skip, MissedRuns::Skip);
    assert!(
        Timer::new(Some(&s), None, Tz::UTC, None, 0)
            .unwrap_err()
            .starts_with("hour field")
    );
}

#[test]
fn wall_clock_times_are_written_in_the_zone_named() {
    let t = utc(2026, 7, 1, 8, 0);
    assert_eq!(
        wall_clock(t, Some("Europe/Lisbon")),
        "2026-07-01 09:00 WEST"
    );
    assert_eq!(wall_clock(t, None), "2026-07-01 08:00 UTC");
}
