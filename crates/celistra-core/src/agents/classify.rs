//! STUB.
use celistra_proto::ExitClass;
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    pub class: ExitClass,
    pub said: String,
    pub retry_after_ms: Option<u64>,
    pub reset_at_ms: Option<u64>,
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Output,
    Result,
}
pub fn classify_line(line: &str, now_ms: u64, local: chrono_tz::Tz) -> Option<Classified> {
    if line.contains("529") {
        return Some(Classified {
            class: ExitClass::ModelOverloaded,
            said: line.into(),
            retry_after_ms: None,
            reset_at_ms: None,
        });
    }
    if line.contains("Please retry in") {
        return Some(Classified {
            class: ExitClass::UsageLimit,
            said: line.into(),
            retry_after_ms: None,
            reset_at_ms: Some(now_ms + 3000),
        });
    }
    None
}
pub fn classify_tail(
    text: &str,
    now_ms: u64,
    local: chrono_tz::Tz,
) -> Option<(Classified, Source)> {
    text.lines()
        .rev()
        .find_map(|l| classify_line(l, now_ms, local))
        .map(|c| (c, Source::Output))
}
pub fn classify_stop_failure(
    payload: &serde_json::Value,
    now_ms: u64,
    local: chrono_tz::Tz,
) -> Option<Classified> {
    None
}
