//! The daemon's `config.json`: defaults for per-agent settings, and how a spec's overrides and the
//! defaults combine into the settings a spawn uses.

use celistra_proto::{AgentSpec, EffectiveSettings, Signal};
use serde::{Deserialize, Serialize};

use crate::json::{self, JsonError};
use crate::notifications::NotificationsConfig;
use crate::restart::RestartPolicy;
use crate::spec;

/// Contents of `config.json`. Every field is optional; absent ones take the documented default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    pub restart_max: u32,
    pub restart_window_secs: u64,
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    pub backoff_reset_secs: u64,
    pub stop_signal: Signal,
    pub stop_timeout_ms: u64,
    pub scrollback_kb: u32,
    /// Output older than this is deleted.
    pub logs_max_age_days: u32,
    /// Output kept for all agents together; the oldest goes first.
    pub logs_max_total_mb: u64,
    /// Output kept per agent, so one chatty agent cannot push out the others' history.
    pub logs_max_agent_mb: u64,
    /// Where approval requests are announced.
    pub notifications: NotificationsConfig,
    /// The most a fleet hub's users may do on this machine: `operator` (the default) runs agents
    /// but reads no secrets or environment values; `owner` allows everything; `viewer` only reads.
    pub fleet: celistra_proto::Role,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            restart_max: 5,
            restart_window_secs: 60,
            backoff_initial_ms: 10,
            backoff_max_ms: 30_000,
            backoff_reset_secs: 10,
            stop_signal: Signal::Term,
            stop_timeout_ms: 10_000,
            scrollback_kb: 64,
            logs_max_age_days: 30,
            logs_max_total_mb: 1024,
            logs_max_agent_mb: 256,
            notifications: NotificationsConfig::default(),
            fleet: celistra_proto::Role::Operator,
        }
    }
}

impl DaemonConfig {
    /// Parses and checks the text of a config file; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<DaemonConfig, JsonError> {
        let config: DaemonConfig = json::parse(text, origin)?;
        let as_spec = AgentSpec {
            stop_timeout_ms: Some(config.stop_timeout_ms),
            restart_max: Some(config.restart_max),
            restart_window_secs: Some(config.restart_window_secs),
            backoff_initial_ms: Some(config.backoff_initial_ms),
            backoff_max_ms: Some(config.backoff_max_ms),
            backoff_reset_secs: Some(config.backoff_reset_secs),
            scrollback_kb: Some(config.scrollback_kb),
            ..AgentSpec::default()
        };
        let positive = [
            ("logs_max_age_days", u64::from(config.logs_max_age_days)),
            ("logs_max_total_mb", config.logs_max_total_mb),
            ("logs_max_agent_mb", config.logs_max_agent_mb),
        ];
        let zero = positive
            .iter()
            .find(|(_, value)| *value == 0)
            .map(|(field, _)| (*field, "must be at least 1".to_owned()));
        spec::check_settings(&as_spec)
            .err()
            .or(zero)
            .map(|(field, message)| (field.to_owned(), message))
            .or_else(|| config.notifications.check().err())
            .map_or(Ok(()), |(field, message)| {
                Err(JsonError {
                    origin: origin.to_owned(),
                    line: 1,
                    column: 1,
                    path: field,
                    message,
                })
            })?;
        Ok(config)
    }

    /// The settings a spawn of `spec` uses: its overrides, else these defaults.
    pub fn resolve(&self, spec: &AgentSpec) -> EffectiveSettings {
        EffectiveSettings {
            stop_signal: spec.stop_signal.unwrap_or(self.stop_signal),
            stop_timeout_ms: spec.stop_timeout_ms.unwrap_or(self.stop_timeout_ms),
            restart_max: spec.restart_max.unwrap_or(self.restart_max),
            restart_window_secs: spec.restart_window_secs.unwrap_or(self.restart_window_secs),
            backoff_initial_ms: spec.backoff_initial_ms.unwrap_or(self.backoff_initial_ms),
            backoff_max_ms: spec.backoff_max_ms.unwrap_or(self.backoff_max_ms),
            backoff_reset_secs: spec.backoff_reset_secs.unwrap_or(self.backoff_reset_secs),
            scrollback_kb: spec.scrollback_kb.unwrap_or(self.scrollback_kb),
        }
    }
}

/// The restart policy of resolved settings.
pub fn restart_policy(settings: &EffectiveSettings) -> RestartPolicy {
    RestartPolicy {
        max_restarts: settings.restart_max,
        window_ms: settings.restart_window_secs.saturating_mul(1000),
        backoff_initial_ms: settings.backoff_initial_ms,
        backoff_max_ms: settings.backoff_max_ms.max(settings.backoff_initial_ms),
        reset_after_ms: settings.backoff_reset_secs.saturating_mul(1000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults_and_overrides_win() {
        let config = DaemonConfig::parse("{}", "config.json").unwrap();
        assert_eq!(config, DaemonConfig::default());
        let spec = AgentSpec {
            stop_timeout_ms: Some(500),
            ..AgentSpec::default()
        };
        let settings = config.resolve(&spec);
        assert_eq!((settings.stop_timeout_ms, settings.restart_max), (500, 5));
    }

    #[test]
    fn errors_name_the_field() {
        let err =
            DaemonConfig::parse("{\n \"stop_signal\": \"STOP\"\n}", "/x/config.json").unwrap_err();
        assert_eq!((err.line, err.path.as_str()), (2, "stop_signal"));
        let err = DaemonConfig::parse("{\"restart_window_secs\": 0}", "c").unwrap_err();
        assert_eq!(err.path, "restart_window_secs");
        let err = DaemonConfig::parse("{\"logs_max_total_mb\": 0}", "c").unwrap_err();
        assert_eq!(err.path, "logs_max_total_mb");
        let err = DaemonConfig::parse("{\"scrollbak_kb\": 1}", "c").unwrap_err();
        assert!(err.message.contains("unknown field"), "{err}");
    }
}
