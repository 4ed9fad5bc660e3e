//! Human output: aligned tables and short renderings of times and states.

use celistra_proto::AgentInfo;

/// Renders rows as left-aligned columns separated by two spaces; the last column is not padded.
pub(crate) fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (index, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            if index == last {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}  "));
            }
        }
        out.trim_end().to_owned()
    };
    let mut out = line(header.iter().map(|h| (*h).to_owned()).collect());
    for row in rows {
        out.push('\n');
        out.push_str(&line(row.clone()));
    }
    out
}

/// `3s`, `5m`, `2h`, `4d`: a compact duration.
pub(crate) fn compact_duration(ms: u64) -> String {
    let secs = ms / 1000;
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86_400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// How the last run ended: `0`, `1`, `SIGKILL`, or `-`.
pub(crate) fn exit_text(agent: &AgentInfo) -> String {
    match (&agent.exit_code, &agent.exit_signal) {
        (Some(code), _) => code.to_string(),
        (None, Some(signal)) => signal.clone(),
        (None, None) => "-".into(),
    }
}

/// Uptime while running, time until the next restart in backoff, else `-`.
pub(crate) fn uptime_text(agent: &AgentInfo) -> String {
    let now = now_ms();
    match (
        agent.state.as_str(),
        agent.started_at_ms,
        agent.next_restart_at_ms,
    ) {
        ("running" | "waiting-approval" | "stopping", Some(started), _) => {
            compact_duration(now.saturating_sub(started))
        }
        ("backoff", _, Some(next)) => format!("in {}ms", next.saturating_sub(now)),
        _ => "-".into(),
    }
}

/// `HH:MM:SS` (UTC) of a time in ms since the epoch.
pub(crate) fn clock(ms: u64) -> String {
    let secs = ms / 1000;
    format!(
        "{:02}:{:02}:{:02}",
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_columns() {
        let rows = vec![
            vec!["ag-abcd".into(), "web".into(), "x".into()],
            vec!["ag-1".into(), "scraper".into(), "y".into()],
        ];
        assert_eq!(
            render(&["ID", "NAME", "CMD"], &rows),
            "ID       NAME     CMD\nag-abcd  web      x\nag-1     scraper  y"
        );
    }

    #[test]
    fn compacts_durations() {
        assert_eq!(compact_duration(59_999), "59s");
        assert_eq!(compact_duration(3_600_000), "1h");
        assert_eq!(compact_duration(90_000_000), "1d");
    }
}
