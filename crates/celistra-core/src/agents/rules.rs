//! STUB.
use celistra_proto::Activity;
#[derive(Debug, Clone, Default)]
pub struct Rules {
    generic: KindRules,
}
#[derive(Debug, Clone, Default)]
pub struct KindRules {
    pub quiet_idle_secs: Option<u64>,
    pub bell: Option<Activity>,
    pub notify: Option<Activity>,
}
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScreenMatch {
    pub activity: Activity,
    pub rule: String,
    pub said: String,
}
impl Rules {
    pub fn builtin() -> Rules {
        Rules {
            generic: KindRules {
                quiet_idle_secs: Some(5),
                bell: Some(Activity::NeedsInput),
                notify: Some(Activity::NeedsInput),
            },
        }
    }
    pub fn with_overrides(user_json: &str, origin: &str) -> Result<Rules, String> {
        Ok(Rules::builtin())
    }
    pub fn kind(&self, kind: &str) -> &KindRules {
        &self.generic
    }
}
impl KindRules {
    pub fn screen(&self, lines: &[&str]) -> Option<ScreenMatch> {
        lines
            .iter()
            .rev()
            .find(|l| l.contains("Do you want"))
            .map(|l| ScreenMatch {
                activity: Activity::NeedsInput,
                rule: "generic/prompt".into(),
                said: (*l).into(),
            })
    }
    pub fn title(&self, title: &str) -> Option<ScreenMatch> {
        None
    }
}
