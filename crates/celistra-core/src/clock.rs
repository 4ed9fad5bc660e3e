//! Times for humans: RFC 3339 output in UTC, and CLI time bounds (`--since 2h`, `--until 2026-11-23`).

use std::time::{Duration, UNIX_EPOCH};

/// The last millisecond of year 9999, the latest time RFC 3339 can write.
const MAX_RFC3339_MS: u64 = 253_402_300_799_999;

/// `2026-11-23T10:00:00.123Z` (UTC, milliseconds). Times past year 9999 are written as its last
/// millisecond.
pub fn format_rfc3339_ms(time_ms: u64) -> String {
    let time = UNIX_EPOCH + Duration::from_millis(time_ms.min(MAX_RFC3339_MS));
    humantime::format_rfc3339_millis(time).to_string()
}

/// A CLI time bound, in milliseconds since the Unix epoch:
///
/// - a duration ago: `90s`, `2h`, `1h30m`, `7d` (a bare number is seconds), meaning `now_ms` minus
///   that, or the epoch if that is further back;
/// - an RFC 3339 time: `2026-11-23T10:00:00Z`, `2026-11-23T10:00:00.250Z`,
///   `2026-11-23T12:00:00+02:00`;
/// - a date: `2026-11-23`, midnight UTC.
pub fn parse_time_bound(text: &str, now_ms: u64) -> Result<u64, String> {
    let text = text.trim();
    let bad = |detail: &str| {
        format!(
            "invalid time `{text}`{detail}; use a duration ago such as 2h or 30m, or a time such as 2026-11-23T10:00:00Z"
        )
    };
    if !text.contains(['-', ':']) {
        let ago = crate::duration::parse_millis(text).map_err(|_| bad(""))?;
        return Ok(now_ms.saturating_sub(ago));
    }
    // Offsets are sliced off by byte position below; the formats are ASCII anyway.
    if !text.is_ascii() {
        return Err(bad(""));
    }
    if text.len() == "2026-11-23".len() {
        return parse_utc(&format!("{text}T00:00:00Z")).map_err(|e| bad(&e));
    }
    let (utc_text, offset_ms) = split_offset(text).ok_or_else(|| bad(" (bad UTC offset)"))?;
    let local_ms = parse_utc(&utc_text).map_err(|e| bad(&e))?;
    local_ms
        .checked_add_signed(-offset_ms)
        .ok_or_else(|| bad(" (before 1970)"))
}

/// Parses an RFC 3339 time in UTC into milliseconds; the error is a parenthesised detail.
fn parse_utc(text: &str) -> Result<u64, String> {
    let time = humantime::parse_rfc3339(text).map_err(|e| format!(" ({e})"))?;
    let since_epoch = time
        .duration_since(UNIX_EPOCH)
        .map_err(|_| " (before 1970)".to_owned())?;
    u64::try_from(since_epoch.as_millis()).map_err(|_| " (too far ahead)".to_owned())
}

/// Splits a trailing `±hh:mm` offset off, since humantime only reads UTC: the text with `Z` in its
/// place, and the offset in milliseconds. Without an offset the text is returned as is; None
/// means the offset is out of range.
fn split_offset(text: &str) -> Option<(String, i64)> {
    let Some(at) = text.len().checked_sub("+hh:mm".len()) else {
        return Some((text.to_owned(), 0));
    };
    let (time, offset) = text.split_at(at);
    let sign = match offset.as_bytes()[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return Some((text.to_owned(), 0)),
    };
    let (hours, minutes) = offset[1..].split_once(':')?;
    let (hours, minutes): (i64, i64) = (hours.parse().ok()?, minutes.parse().ok()?);
    if hours > 23 || minutes > 59 {
        return None;
    }
    Some((format!("{time}Z"), sign * (hours * 60 + minutes) * 60_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_795_000_000_000;
    const NOV_23: u64 = 1_795_392_000_000;

    #[test]
    fn formats_utc_milliseconds() {
        assert_eq!(format_rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_rfc3339_ms(NOV_23 + 36_000_123),
            "2026-11-23T10:00:00.123Z"
        );
        assert_eq!(format_rfc3339_ms(u64::MAX), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn parses_durations_ago() {
        assert_eq!(parse_time_bound("90s", NOW), Ok(NOW - 90_000));
        assert_eq!(parse_time_bound("1h30m", NOW), Ok(NOW - 5_400_000));
        assert_eq!(parse_time_bound(" 7d ", NOW), Ok(NOW - 7 * 86_400_000));
        assert_eq!(parse_time_bound("10", NOW), Ok(NOW - 10_000));
        assert_eq!(parse_time_bound("2h", 1_000), Ok(0));
    }

    #[test]
    fn parses_times_and_dates() {
        let ten = NOV_23 + 36_000_000;
        assert_eq!(parse_time_bound("2026-11-23T10:00:00Z", NOW), Ok(ten));
        assert_eq!(
            parse_time_bound("2026-11-23T10:00:00.25Z", NOW),
            Ok(ten + 250)
        );
        assert_eq!(parse_time_bound("2026-11-23T12:30:00+02:30", NOW), Ok(ten));
        assert_eq!(parse_time_bound("2026-11-23T08:00:00-02:00", NOW), Ok(ten));
        assert_eq!(parse_time_bound("2026-11-23T10:00:00+00:00", NOW), Ok(ten));
        assert_eq!(
            parse_time_bound("2026-11-23T10:00:00.5-00:00", NOW),
            Ok(ten + 500)
        );
        assert_eq!(parse_time_bound("2026-11-23", NOW), Ok(NOV_23));
    }

    #[test]
    fn rejects_other_text() {
        for bad in [
            "",
            "yesterday",
            "-2h",
            "2026-11-23T10:00:00",
            "2026-11-23 10:00:00Z",
            "2026-13-01",
            "2026-11-2x",
            "2026-11-23T10:00:00+24:00",
            "2026-11-23T10:00:00+0200",
            "1970-01-01T00:00:00+01:00",
            "10:00",
            "2026-11-23T10:00:00\u{e9}",
        ] {
            let err = parse_time_bound(bad, NOW).unwrap_err();
            assert!(err.contains("such as 2026-11-23T10:00:00Z"), "{bad}: {err}");
        }
        assert_eq!(
            parse_time_bound("2026-13-01", NOW).unwrap_err(),
            "invalid time `2026-13-01` (numeric component is out of range); use a duration ago \
             such as 2h or 30m, or a time such as 2026-11-23T10:00:00Z"
        );
    }
}
