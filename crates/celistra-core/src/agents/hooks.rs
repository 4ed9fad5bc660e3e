//! STUB.
use super::classify::Classified;
use celistra_proto::Activity;
#[derive(Debug, Clone)]
pub struct HookSignal {
    pub activity: Option<Activity>,
    pub signal: String,
    pub said: String,
    pub failure: Option<Classified>,
}
pub fn interpret(
    kind: &str,
    payload: &serde_json::Value,
    now_ms: u64,
    local: chrono_tz::Tz,
) -> Result<HookSignal, String> {
    let event = payload
        .get("hook_event_name")
        .and_then(|v| v.as_str())
        .ok_or("no hook_event_name")?;
    let activity = match event {
        "Stop" => Some(Activity::Idle),
        "PreToolUse" => Some(Activity::Working),
        "Notification" => Some(Activity::NeedsInput),
        _ => None,
    };
    Ok(HookSignal {
        activity,
        signal: format!("{kind} hook {event}"),
        said: String::new(),
        failure: None,
    })
}
