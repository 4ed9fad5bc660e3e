//! When an agent whose model provider failed is tried again: the model-error backoff (longer than
//! a crash's, jittered, never shorter than the provider's hint), the budget that stops an agent
//! failing forever, and the resume time after a usage limit. Time and randomness are arguments.

use std::collections::VecDeque;

/// First delay after a transient model error, in milliseconds; it doubles per error in a row.
pub const MODEL_ERROR_FIRST_DELAY_MS: u64 = 2_000;
/// Cap of the model-error delay: five minutes.
pub const MODEL_ERROR_MAX_DELAY_MS: u64 = 300_000;
/// Default of `model_error_max`.
pub const DEFAULT_MODEL_ERROR_MAX: u32 = 10;
/// Default of `model_error_window_secs`.
pub const DEFAULT_MODEL_ERROR_WINDOW_SECS: u64 = 3_600;
/// How long after a usage-limit message without a reset time the agent is tried again.
pub const UNKNOWN_RESET_RETRY_MS: u64 = 3_600_000;
/// Most jitter added to a usage limit's reset: spreads a fleet's agents that share an account.
pub const MAX_RESET_JITTER_MS: u64 = 30_000;

/// The delay before restarting after the `streak`-th model error in a row (1 for the first):
/// `2 s · 2^(streak-1)` capped at five minutes, jittered into its upper half (`unit` in `[0, 1)`),
/// and never shorter than the provider's `hint_ms`.
pub fn model_error_delay(streak: u32, hint_ms: Option<u64>, unit: f64) -> u64 {
    let exponent = streak.saturating_sub(1).min(20);
    let nominal = MODEL_ERROR_FIRST_DELAY_MS
        .saturating_mul(1 << exponent)
        .min(MODEL_ERROR_MAX_DELAY_MS);
    let jittered = nominal / 2 + (nominal as f64 / 2.0 * unit.clamp(0.0, 1.0)) as u64;
    jittered.max(hint_ms.unwrap_or(0))
}

/// When an agent waiting on a usage limit is resumed: at the reset plus up to a tenth of the wait
/// (at most 30 s) of jitter; an hour from now when the reset is unknown; at once when it passed.
pub fn limit_resume_at(reset_at_ms: Option<u64>, now_ms: u64, unit: f64) -> u64 {
    let Some(reset) = reset_at_ms else {
        return now_ms + UNKNOWN_RESET_RETRY_MS;
    };
    let wait = reset.saturating_sub(now_ms);
    let spread = (wait / 10).min(MAX_RESET_JITTER_MS);
    reset.max(now_ms) + (spread as f64 * unit.clamp(0.0, 1.0)) as u64
}

/// The model errors of one agent in a rolling window, and the streak that sets the delay.
#[derive(Debug, Clone, Default)]
pub struct ModelErrorBudget {
    /// When each counted error happened, oldest first.
    times_ms: VecDeque<u64>,
    /// Model errors in a row, without a healthy run between them.
    streak: u32,
}

/// What to do after a transient model error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelErrorDecision {
    Retry {
        delay_ms: u64,
        errors_in_window: u32,
    },
    /// The budget is spent: stop trying.
    Exhausted { errors_in_window: u32 },
}

impl ModelErrorBudget {
    /// Counts an error at `now_ms` and decides: retry after a delay, or stop once more than `max`
    /// errors fell in the last `window_ms`.
    pub fn on_error(
        &mut self,
        max: u32,
        window_ms: u64,
        now_ms: u64,
        hint_ms: Option<u64>,
        unit: f64,
    ) -> ModelErrorDecision {
        self.forget_before(now_ms.saturating_sub(window_ms));
        self.times_ms.push_back(now_ms);
        self.streak += 1;
        let errors_in_window = self.errors();
        if errors_in_window > max {
            return ModelErrorDecision::Exhausted { errors_in_window };
        }
        ModelErrorDecision::Retry {
            delay_ms: model_error_delay(self.streak, hint_ms, unit),
            errors_in_window,
        }
    }

    /// Errors counted in the window as of the last call.
    pub fn errors(&self) -> u32 {
        u32::try_from(self.times_ms.len()).unwrap_or(u32::MAX)
    }

    /// A run stayed up long enough, or ended otherwise: the next error starts a new streak.
    pub fn healthy(&mut self) {
        self.streak = 0;
    }

    /// An operator started the agent afresh.
    pub fn reset(&mut self) {
        *self = ModelErrorBudget::default();
    }

    fn forget_before(&mut self, start_ms: u64) {
        while self.times_ms.front().is_some_and(|&t| t < start_ms) {
            self.times_ms.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_error_delay_doubles_caps_and_honours_the_hint() {
        assert_eq!(model_error_delay(1, None, 0.0), 1_000);
        assert_eq!(model_error_delay(1, None, 0.999_999), 1_999);
        assert_eq!(model_error_delay(2, None, 0.0), 2_000);
        assert_eq!(model_error_delay(3, None, 0.0), 4_000);
        assert_eq!(model_error_delay(30, None, 0.0), 150_000);
        assert_eq!(model_error_delay(30, None, 1.0), MODEL_ERROR_MAX_DELAY_MS);
        // "Please retry in 34.07s": never sooner than the provider asked.
        assert_eq!(model_error_delay(1, Some(34_070), 0.5), 34_070);
        assert_eq!(model_error_delay(9, Some(1_000), 0.0), 150_000);
    }

    #[test]
    fn the_budget_stops_an_agent_failing_forever_but_forgets_old_errors() {
        let mut budget = ModelErrorBudget::default();
        let window = 3_600_000;
        let mut now = 1_000_000;
        for n in 1..=3 {
            match budget.on_error(3, window, now, None, 0.0) {
                ModelErrorDecision::Retry {
                    errors_in_window, ..
                } => assert_eq!(errors_in_window, n),
                other => panic!("error {n}: {other:?}"),
            }
            now += 60_000;
        }
        assert_eq!(
            budget.on_error(3, window, now, None, 0.0),
            ModelErrorDecision::Exhausted {
                errors_in_window: 4
            }
        );
        // An hour later the old errors have left the window.
        let mut later = ModelErrorBudget::default();
        later.on_error(1, window, 0, None, 0.0);
        assert!(matches!(
            later.on_error(1, window, window + 1, None, 0.0),
            ModelErrorDecision::Retry {
                errors_in_window: 1,
                ..
            }
        ));
    }

    #[test]
    fn a_healthy_run_restarts_the_streak_but_not_the_count() {
        let mut budget = ModelErrorBudget::default();
        budget.on_error(10, 3_600_000, 0, None, 0.0);
        budget.on_error(10, 3_600_000, 1, None, 0.0);
        budget.healthy();
        assert_eq!(
            budget.on_error(10, 3_600_000, 2, None, 0.0),
            ModelErrorDecision::Retry {
                delay_ms: 1_000,
                errors_in_window: 3
            }
        );
    }

    #[test]
    fn a_limit_resumes_at_its_reset_to_the_second_plus_bounded_jitter() {
        let now = 1_750_000_000_000;
        // Gemini's "Please retry in 34.07s": at most 3.4 s late.
        let reset = now + 34_070;
        assert_eq!(limit_resume_at(Some(reset), now, 0.0), reset);
        assert_eq!(limit_resume_at(Some(reset), now, 1.0), reset + 3_407);
        // Five hours away: at most 30 s of jitter.
        let far = now + 5 * 3_600_000;
        assert_eq!(limit_resume_at(Some(far), now, 1.0), far + 30_000);
        // Already passed: now.
        assert_eq!(limit_resume_at(Some(now - 5_000), now, 0.7), now);
        // Unknown: an hour from now.
        assert_eq!(limit_resume_at(None, now, 0.3), now + 3_600_000);
    }
}
