//! When a usage limit resets, read from the message that reported it, in the zone the message
//! names.
//!
//! # Forms understood
//!
//! | form | example | instant |
//! |---|---|---|
//! | epoch seconds after `\|` | `Claude AI usage limit reached\|1749924000` | that second |
//! | relative | `try again in 5 days 22 hours 11 minutes`, `Please retry in 34.07s`, `Suggested retry after 60s` | `now` plus it (ms precision) |
//! | ISO date and time | `You will regain access on 2026-04-01 at 00:00 UTC` | exact |
//! | date with year | `try again at Aug 8th, 2026 12:30 PM` | exact |
//! | date without year | `resets Jul 23 at 6pm (America/Los_Angeles)` | this year's, or next year's if already past |
//! | time only | `resets 1pm (Europe/Lisbon)`, `resets 12:50am (…)`, `try again at 4:05 PM`, `resets 5am` | the next occurrence: today's, else tomorrow's |
//!
//! A time is read after `reset(s)`, `reset at`, `try again at` or `regain access on`; it is
//! `1pm`, `12:50am`, `4:05 PM` (12am is midnight, 12pm noon) or a 24-hour `00:00`. The zone is the
//! one named right after the time, `(Area/City)` or ` UTC`/` GMT`; otherwise `local` (Codex prints
//! the machine's local time). A name in parentheses that is not an IANA zone makes the message
//! unparseable rather than guessed.
//!
//! "Already past" allows [`PAST_GRACE_MS`]: a message printed at 16:05:40 for a reset at 16:05:59
//! says `4:05 PM` (Codex cuts seconds), so a time up to 15 minutes ago is that moment, not
//! tomorrow's.
//!
//! DST through chrono-tz: a local time in a spring-forward gap is the first valid instant after
//! the gap; an ambiguous one (fall-back fold) is the earlier instant. Anything unparseable is
//! `None`; no input panics.

use std::sync::LazyLock;

use chrono::{
    DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc,
};
use chrono_tz::Tz;
use regex::{Captures, Regex};

/// How far in the past a stated reset time may be and still mean that moment.
pub const PAST_GRACE_MS: u64 = 15 * 60 * 1000;

/// Longest relative wait accepted: a year. Longer ones are not a usage limit's reset.
const MAX_RELATIVE_MS: f64 = 366.0 * 86_400_000.0;

static EPOCH: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\|(\d{9,11})\b").expect("regex"));

static RELATIVE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\b(?:retry|try again|resets?|retrying|available)\s+(?:in|after)\s+((?:\d+(?:\.\d+)?\s*(?:days?|d|hours?|hrs?|h|minutes?|mins?|m|seconds?|secs?|s|ms)\b[\s,]*(?:and\s+)?)+)",
    )
    .expect("regex")
});

static DURATION_PART: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)(\d+(?:\.\d+)?)\s*(days?|d|hours?|hrs?|h|minutes?|mins?|m|seconds?|secs?|s|ms)\b",
    )
    .expect("regex")
});

static ANCHOR: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(?:resets?(?:\s+at)?|try again at|regain access on|available again at)\b")
        .expect("regex")
});

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];

static WHEN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?ix)^\s*(?:on\s+|at\s+)?
        (?:
            (?:(?P<iy>\d{4})-(?P<im>\d{2})-(?P<id>\d{2})
              | (?P<mon>jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?\s+(?P<day>\d{1,2})(?:st|nd|rd|th)?(?:,?\s+(?P<year>\d{4}))?
            )
            (?:,?\s+at|,|\s+|T)\s*
        )?
        (?P<hour>\d{1,2})(?::(?P<min>\d{2}))?(?:\s*(?P<ampm>[ap]\.?m\b\.?))?
        (?:\s*\((?P<zone>[^()]{0,64})\)?|\s+(?P<utc>UTC|GMT)\b|(?P<z>Z)\b)?",
    )
    .expect("regex")
});

/// The reset instant (ms since the epoch) a usage-limit `message` states, or `None` when it
/// states none this module can read.
pub fn parse_reset(message: &str, now_ms: u64, local: Tz) -> Option<u64> {
    if let Some(caps) = EPOCH.captures(message) {
        let secs: u64 = caps[1].parse().ok()?;
        return secs.checked_mul(1000);
    }
    if let Some(caps) = RELATIVE.captures(message) {
        return relative_ms(&caps[1]).and_then(|ms| now_ms.checked_add(ms));
    }
    ANCHOR
        .find_iter(message)
        .find_map(|anchor| absolute(&message[anchor.end()..], now_ms, local))
}

/// A retry delay in ms from text like `34.07s`, `60s`, `5 days 22 hours 11 minutes`.
pub(crate) fn relative_ms(text: &str) -> Option<u64> {
    let mut total = 0.0f64;
    let mut any = false;
    for part in DURATION_PART.captures_iter(text) {
        let amount: f64 = part[1].parse().ok()?;
        let unit = part[2].to_ascii_lowercase();
        let scale = match unit.as_str() {
            "ms" => 1.0,
            u if u.starts_with('d') => 86_400_000.0,
            u if u.starts_with('h') => 3_600_000.0,
            u if u == "m" || u.starts_with("min") => 60_000.0,
            _ => 1000.0,
        };
        total += amount * scale;
        any = true;
    }
    if !any || !total.is_finite() || total > MAX_RELATIVE_MS {
        return None;
    }
    // Within range by the check above; rounding to whole ms is the precision wanted.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Some(total.round() as u64)
}

/// The last instant of year 9999: later `now`s read no clock times (chrono's range ends near
/// year 262143, and a zone's offset must not push a local time past it).
const LAST_NOW_MS: u64 = 253_402_300_799_999;

fn absolute(rest: &str, now_ms: u64, local: Tz) -> Option<u64> {
    if now_ms > LAST_NOW_MS {
        return None;
    }
    let caps = WHEN.captures(rest)?;
    let zone = zone_of(&caps, local)?;
    let time = time_of(&caps)?;
    let now = DateTime::<Utc>::from_timestamp_millis(i64::try_from(now_ms).ok()?)?;
    let today = now.with_timezone(&zone).date_naive();
    let earliest = now_ms.saturating_sub(PAST_GRACE_MS);
    if let (Some(y), Some(m), Some(d)) = (caps.name("iy"), caps.name("im"), caps.name("id")) {
        let date = NaiveDate::from_ymd_opt(
            y.as_str().parse().ok()?,
            m.as_str().parse().ok()?,
            d.as_str().parse().ok()?,
        )?;
        return instant(zone, date.and_time(time));
    }
    if let (Some(mon), Some(day)) = (caps.name("mon"), caps.name("day")) {
        let month = month_number(mon.as_str())?;
        let day: u32 = day.as_str().parse().ok()?;
        if let Some(year) = caps.name("year") {
            let date = NaiveDate::from_ymd_opt(year.as_str().parse().ok()?, month, day)?;
            return instant(zone, date.and_time(time));
        }
        // This year's, or next year's if already past (Feb 29 waits for a year that has it).
        return (0..=4).find_map(|ahead| {
            let date = NaiveDate::from_ymd_opt(today.year() + ahead, month, day)?;
            instant(zone, date.and_time(time)).filter(|at| *at >= earliest)
        });
    }
    // Time only: today's, else tomorrow's (the day after, should a gap swallow tomorrow's).
    (0..=2).find_map(|ahead| {
        let date = today.checked_add_days(chrono::Days::new(ahead))?;
        instant(zone, date.and_time(time)).filter(|at| *at >= earliest)
    })
}

fn zone_of(caps: &Captures<'_>, local: Tz) -> Option<Tz> {
    if caps.name("utc").is_some() || caps.name("z").is_some() {
        return Some(Tz::UTC);
    }
    match caps.name("zone") {
        // Whatever is in parentheses after the time must be a zone: `(in 3 hours)` or a zone cut
        // by a line wrap is not guessed around.
        Some(name) => name.as_str().parse::<Tz>().ok(),
        None => Some(local),
    }
}

fn time_of(caps: &Captures<'_>) -> Option<NaiveTime> {
    let hour: u32 = caps["hour"].parse().ok()?;
    let minute: u32 = match caps.name("min") {
        Some(min) => min.as_str().parse().ok()?,
        None => 0,
    };
    let hour = match caps.name("ampm") {
        Some(ampm) => {
            if !(1..=12).contains(&hour) {
                return None;
            }
            let pm = ampm.as_str().to_ascii_lowercase().starts_with('p');
            match (hour, pm) {
                (12, false) => 0,
                (12, true) => 12,
                (h, false) => h,
                (h, true) => h + 12,
            }
        }
        // A bare number is not a time: `resets 5` could be anything.
        None if caps.name("min").is_none() => return None,
        None => hour,
    };
    NaiveTime::from_hms_opt(hour, minute, 0)
}

fn month_number(name: &str) -> Option<u32> {
    let prefix = name.get(..3)?.to_ascii_lowercase();
    let index = MONTHS.iter().position(|m| *m == prefix)?;
    u32::try_from(index + 1).ok()
}

/// The instant of a local time in `zone`: the earlier of two in a fold, the first valid instant
/// after a gap.
fn instant(zone: Tz, local: NaiveDateTime) -> Option<u64> {
    let at = match zone.from_local_datetime(&local) {
        LocalResult::Single(at) => at,
        LocalResult::Ambiguous(earlier, later) => earlier.min(later),
        LocalResult::None => {
            // Gaps are whole minutes; the longest on record is a day (Samoa, 2011).
            (1..=25 * 60).find_map(|minutes| {
                match zone
                    .from_local_datetime(&local.checked_add_signed(Duration::minutes(minutes))?)
                {
                    LocalResult::Single(at) => Some(at),
                    LocalResult::Ambiguous(earlier, _) => Some(earlier),
                    LocalResult::None => None,
                }
            })?
        }
    };
    u64::try_from(at.timestamp_millis()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::{America, Europe};

    /// 2026-07-20T10:00:00Z, a Monday.
    const NOW: u64 = 1_784_541_600_000;

    fn at(rfc3339: &str) -> u64 {
        u64::try_from(
            DateTime::parse_from_rfc3339(rfc3339)
                .unwrap()
                .timestamp_millis(),
        )
        .unwrap()
    }

    #[test]
    fn now_is_what_the_tests_say() {
        assert_eq!(NOW, at("2026-07-20T10:00:00Z"));
    }

    #[test]
    fn epoch_seconds_after_a_bar() {
        assert_eq!(
            parse_reset("Claude AI usage limit reached|1749924000", NOW, Tz::UTC),
            Some(1_749_924_000_000)
        );
    }

    #[test]
    fn a_time_in_the_named_zone_is_its_next_occurrence() {
        // 10:00Z is 11:00 in Lisbon (WEST): 1pm is today's.
        assert_eq!(
            parse_reset(
                "You've hit your limit · resets 1pm (Europe/Lisbon)",
                NOW,
                America::New_York
            ),
            Some(at("2026-07-20T13:00:00+01:00"))
        );
        // 10:00Z is 03:00 in Los Angeles (PDT): 12:50am has passed, so tomorrow's.
        assert_eq!(
            parse_reset(
                "You've hit your session limit · resets 12:50am (America/Los_Angeles)",
                NOW,
                Europe::Lisbon
            ),
            Some(at("2026-07-21T00:50:00-07:00"))
        );
        // Etc/GMT+5 is UTC-5 (POSIX signs): 1pm there is 18:00Z.
        assert_eq!(
            parse_reset(
                "Claude usage limit reached. Your limit will reset at 1pm (Etc/GMT+5).",
                NOW,
                Tz::UTC
            ),
            Some(at("2026-07-20T18:00:00Z"))
        );
    }

    #[test]
    fn a_time_without_a_zone_is_local() {
        let message = "You've hit your usage limit. Try again at 4:05 PM.";
        assert_eq!(
            parse_reset(message, NOW, America::New_York),
            Some(at("2026-07-20T16:05:00-04:00"))
        );
        assert_eq!(
            parse_reset(message, NOW, Europe::Lisbon),
            Some(at("2026-07-20T16:05:00+01:00"))
        );
        assert_eq!(
            parse_reset("5-hour limit reached ∙ resets 5am", NOW, Europe::Lisbon),
            Some(at("2026-07-21T05:00:00+01:00"))
        );
    }

    #[test]
    fn noon_and_midnight() {
        let lisbon = Europe::Lisbon;
        assert_eq!(
            parse_reset("resets 12pm", NOW, lisbon),
            Some(at("2026-07-20T12:00:00+01:00"))
        );
        assert_eq!(
            parse_reset("resets 12am", NOW, lisbon),
            Some(at("2026-07-21T00:00:00+01:00"))
        );
        assert_eq!(
            parse_reset("resets 12:30 a.m.", NOW, lisbon),
            Some(at("2026-07-21T00:30:00+01:00"))
        );
        assert_eq!(parse_reset("resets 13pm", NOW, lisbon), None);
        assert_eq!(parse_reset("resets 0am", NOW, lisbon), None);
        assert_eq!(parse_reset("resets 5", NOW, lisbon), None);
    }

    #[test]
    fn tomorrow_rolls_over_the_month_and_a_few_minutes_ago_is_now() {
        let now = at("2026-07-31T23:30:00Z");
        assert_eq!(
            parse_reset("resets 11pm (UTC)", now, Tz::UTC),
            Some(at("2026-08-01T23:00:00Z"))
        );
        assert_eq!(
            parse_reset("resets 11:20pm (UTC)", now, Tz::UTC),
            Some(at("2026-07-31T23:20:00Z"))
        );
        assert_eq!(
            parse_reset("resets 11:10pm (UTC)", now, Tz::UTC),
            Some(at("2026-08-01T23:10:00Z"))
        );
    }

    #[test]
    fn a_date_without_a_year_is_this_years_or_next() {
        let message = "You've hit your limit · resets Jul 23 at 6pm (America/Los_Angeles)";
        assert_eq!(
            parse_reset(message, NOW, Tz::UTC),
            Some(at("2026-07-23T18:00:00-07:00"))
        );
        let later = at("2026-07-24T10:00:00Z");
        assert_eq!(
            parse_reset(message, later, Tz::UTC),
            Some(at("2027-07-23T18:00:00-07:00"))
        );
        // Winter next year: PST.
        let message = "resets Jan 5 at 9am (America/Los_Angeles)";
        assert_eq!(
            parse_reset(message, NOW, Tz::UTC),
            Some(at("2027-01-05T09:00:00-08:00"))
        );
    }

    #[test]
    fn dates_with_a_year_and_iso_dates_are_exact() {
        let message = "You've hit your usage limit. Visit https://chatgpt.com/codex/settings/usage to purchase more credits or try again at Aug 8th, 2026 12:30 PM.";
        assert_eq!(
            parse_reset(message, NOW, America::New_York),
            Some(at("2026-08-08T12:30:00-04:00"))
        );
        assert_eq!(
            parse_reset(message, NOW, Europe::Lisbon),
            Some(at("2026-08-08T12:30:00+01:00"))
        );
        let message = "You have reached your specified API usage limits. You will regain access on 2026-04-01 at 00:00 UTC.";
        assert_eq!(
            parse_reset(message, NOW, America::New_York),
            Some(at("2026-04-01T00:00:00Z"))
        );
    }

    #[test]
    fn relative_waits_count_from_now() {
        let message = "■ You've hit your usage limit. Upgrade to Pro (https://openai.com/chatgpt/pricing) or try again in 5 days 22 hours 11 minutes.";
        assert_eq!(
            parse_reset(message, NOW, Tz::UTC),
            Some(NOW + ((5 * 24 + 22) * 60 + 11) * 60_000)
        );
        assert_eq!(
            parse_reset("Please retry in 34.07s.", NOW, Tz::UTC),
            Some(NOW + 34_070)
        );
        assert_eq!(
            parse_reset("Suggested retry after 60s.", NOW, Tz::UTC),
            Some(NOW + 60_000)
        );
        assert_eq!(
            parse_reset("Please retry in 250ms", NOW, Tz::UTC),
            Some(NOW + 250)
        );
    }

    #[test]
    fn a_time_in_a_spring_forward_gap_is_the_first_instant_after_it() {
        // New York 2027-03-14: 02:00 EST jumps to 03:00 EDT.
        let now = at("2027-03-13T20:00:00-05:00");
        assert_eq!(
            parse_reset("resets 2:30am (America/New_York)", now, Tz::UTC),
            Some(at("2027-03-14T03:00:00-04:00"))
        );
    }

    #[test]
    fn a_time_in_a_fall_back_fold_is_the_earlier_instant() {
        // Lisbon 2026-10-25: 02:00 WEST falls back to 01:00 WET; 1:30am happens twice.
        let now = at("2026-10-24T20:00:00Z");
        assert_eq!(
            parse_reset("resets 1:30am (Europe/Lisbon)", now, Tz::UTC),
            Some(at("2026-10-25T01:30:00+01:00"))
        );
    }

    #[test]
    fn unreadable_messages_have_no_reset() {
        for message in [
            "You've hit your usage limit. Try again later.",
            "You've hit your usage limit. Upgrade to Plus to continue using Codex (https://openai.com/chatgpt/pricing).",
            "You've hit your usage limit. Visit https://chatgpt.com/codex/settings/usage to purchase more credits or try again at 10 de jul. de 2026, 11:52",
            "You've hit your limit · resets 1pm (Mars/Olympus)",
            "You've hit your session limit · resets 12:50am (America/ Los_Angeles)",
            "You've hit your session limit · resets 12:50am (America/",
            "resets Feb 30 at 1pm",
            "try again in a moment",
            "Quota exceeded. Check your plan and billing details.",
            "",
        ] {
            assert_eq!(parse_reset(message, NOW, Europe::Lisbon), None, "{message}");
        }
    }

    #[test]
    fn the_ends_of_time_do_not_panic() {
        let last = NaiveDate::MAX
            .and_hms_opt(12, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp_millis();
        for now in [0, u64::try_from(last).unwrap(), u64::MAX] {
            for message in [
                "resets 11pm",
                "resets 2:30am (America/New_York)",
                "resets Dec 31 at 11pm (Pacific/Kiritimati)",
                "resets Mar 14 at 2:30am (America/New_York)",
                "try again in 5 days",
                "regain access on 0000-01-01 at 00:00 UTC",
            ] {
                let _ = parse_reset(message, now, Tz::Pacific__Apia);
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,200}", now in 0u64..4_000_000_000_000) {
            let _ = parse_reset(&text, now, Europe::Lisbon);
        }

        #[test]
        fn near_misses_never_panic(
            text in "(resets?|try again at|regain access on|retry in|\\|) ?[0-9:apmAPM ,.()/a-zA-Z_+-]{0,40}",
            now in proptest::prop_oneof![proptest::strategy::Just(0u64), 0u64..u64::MAX],
        ) {
            let _ = parse_reset(&text, now, America::New_York);
        }
    }
}
