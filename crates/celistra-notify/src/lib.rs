//! Approval notifications leaving the daemon: Web Push to installed dashboards, ntfy topics with
//! action buttons, signed webhooks; the decision links they carry; delivery with retries.
//!
//! Nothing here knows the daemon's state: the daemon decides what to send where, these modules
//! build each request and deliver it.

pub mod delivery;
pub mod links;
pub mod ntfy;
pub mod webhook;
pub mod webpush;

use celistra_proto::Notice;

/// Why a notification could not be built or sent.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("{0}")]
    Invalid(String),
    #[error("cannot encrypt the push message: {0}")]
    Encrypt(String),
    #[error("cannot start the HTTP client: {0}")]
    Client(String),
}

/// The notification's title and text, as phones show them.
pub fn headline(notice: &Notice) -> (String, String) {
    if let Some(about) = &notice.activity {
        let title = format!(
            "{} is {}",
            about.agent_name,
            about.activity.activity.as_str().replace('-', " ")
        );
        let evidence = &about.activity.evidence;
        let text = if evidence.said.is_empty() {
            evidence.signal.clone()
        } else {
            format!("{}: {}", evidence.signal, evidence.said)
        };
        return (title, shorten(&text, 1000));
    }
    match &notice.approval {
        Some(approval) => {
            let title = match notice.kind {
                celistra_proto::NoticeKind::ApprovalDecided => {
                    format!("{} — {}", approval.agent_name, approval.outcome())
                }
                _ => format!("{} asks for approval", approval.agent_name),
            };
            let mut text = approval.prompt.clone();
            if let Some(detail) = &approval.detail {
                text.push('\n');
                text.push_str(detail);
            }
            (title, shorten(&text, 1000))
        }
        None => (
            "celistra test notification".into(),
            format!("Notifications from machine {} reach you.", notice.machine),
        ),
    }
}

/// `text` cut to at most `max` bytes at a character boundary, with `…` when cut.
pub fn shorten(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortening_keeps_characters_whole() {
        assert_eq!(shorten("abc", 3), "abc");
        let cut = shorten("ééééé", 6);
        assert!(cut.len() <= 6 && cut.ends_with('…'), "{cut}");
        assert_eq!(cut, "é…");
    }
}
