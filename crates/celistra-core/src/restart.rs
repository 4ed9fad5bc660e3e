//! Restart policy: a ceiling of restarts in a rolling window, and a capped exponential backoff with
//! jitter between restarts that resets once a run has stayed up long enough. The first restart after
//! a healthy run is immediate (a one-off crash costs no downtime); consecutive crashes then wait
//! `backoff_initial`, doubling, up to `backoff_max`.

use std::collections::VecDeque;

/// Share of a delay that jitter may remove: a delay `d` becomes a value in `(d * (1 - JITTER), d]`, so
/// the nominal delay is an upper bound and simultaneous crashers spread out.
pub const JITTER: f64 = 0.25;

/// The numbers of one agent's restart policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// At most this many restarts in any `window_ms`; the next death crashes the agent out.
    pub max_restarts: u32,
    pub window_ms: u64,
    /// Delay before the second consecutive restart (the first is immediate); doubles from there.
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    /// A run that lasted this long resets the backoff to its initial delay.
    pub reset_after_ms: u64,
}

/// What to do after an exit nobody asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartDecision {
    /// Restart after `delay_ms`; this is restart number `attempt` of the current crash streak.
    Restart { delay_ms: u64, attempt: u32 },
    /// The ceiling is hit: `restarts_in_window` restarts already happened within the window.
    CrashedOut { restarts_in_window: u32 },
}

/// Restart history of one agent.
#[derive(Debug, Clone, Default)]
pub struct RestartTracker {
    /// When each restart within the current window was decided, oldest first.
    recent: VecDeque<u64>,
    /// Consecutive short-lived runs: the backoff exponent.
    streak: u32,
}

/// The un-jittered delay before restart number `streak + 1` of a crash streak.
pub fn nominal_delay(policy: &RestartPolicy, streak: u32) -> u64 {
    match streak {
        0 => 0,
        n => policy
            .backoff_initial_ms
            .saturating_mul(1u64.checked_shl(n - 1).unwrap_or(u64::MAX))
            .min(policy.backoff_max_ms),
    }
}

impl RestartTracker {
    /// Decides what follows an unrequested exit at `now_ms` of a run that lasted `uptime_ms`.
    /// `jitter` is a uniform random number in `[0, 1)`.
    pub fn on_exit(
        &mut self,
        policy: &RestartPolicy,
        now_ms: u64,
        uptime_ms: u64,
        jitter: f64,
    ) -> RestartDecision {
        if uptime_ms >= policy.reset_after_ms {
            self.streak = 0;
        }
        while self
            .recent
            .front()
            .is_some_and(|&t| now_ms.saturating_sub(t) >= policy.window_ms)
        {
            self.recent.pop_front();
        }
        let in_window = u32::try_from(self.recent.len()).unwrap_or(u32::MAX);
        if in_window >= policy.max_restarts {
            return RestartDecision::CrashedOut {
                restarts_in_window: in_window,
            };
        }
        let nominal = nominal_delay(policy, self.streak);
        let cut = (nominal as f64 * JITTER * jitter.clamp(0.0, 1.0)) as u64;
        self.streak = self.streak.saturating_add(1);
        self.recent.push_back(now_ms);
        RestartDecision::Restart {
            delay_ms: nominal - cut.min(nominal),
            attempt: self.streak,
        }
    }

    /// Forgets all history: the operator started the agent afresh.
    pub fn reset(&mut self) {
        *self = RestartTracker::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const POLICY: RestartPolicy = RestartPolicy {
        max_restarts: 5,
        window_ms: 60_000,
        backoff_initial_ms: 10,
        backoff_max_ms: 30_000,
        reset_after_ms: 10_000,
    };

    #[test]
    fn hot_loop_crashes_out_after_five_restarts() {
        let mut tracker = RestartTracker::default();
        let mut now = 0;
        let mut delays = vec![];
        loop {
            match tracker.on_exit(&POLICY, now, 5, 0.0) {
                RestartDecision::Restart { delay_ms, .. } => {
                    delays.push(delay_ms);
                    now += delay_ms + 5;
                }
                RestartDecision::CrashedOut { restarts_in_window } => {
                    assert_eq!(restarts_in_window, 5);
                    break;
                }
            }
        }
        assert_eq!(delays, [0, 10, 20, 40, 80]);
    }

    #[test]
    fn dying_once_an_hour_never_trips_the_ceiling() {
        let mut tracker = RestartTracker::default();
        for hour in 0..1000u64 {
            let decision = tracker.on_exit(&POLICY, hour * 3_600_000, 3_600_000, 0.5);
            assert!(
                matches!(decision, RestartDecision::Restart { attempt: 1, .. }),
                "{decision:?}"
            );
        }
    }

    #[test]
    fn healthy_run_resets_the_backoff_but_not_the_window() {
        let mut tracker = RestartTracker::default();
        for i in 0..3 {
            tracker.on_exit(&POLICY, i, 1, 0.0);
        }
        let decision = tracker.on_exit(&POLICY, 10_000, 10_000, 0.0);
        assert_eq!(
            decision,
            RestartDecision::Restart {
                delay_ms: 0,
                attempt: 1
            }
        );
        tracker.on_exit(&POLICY, 10_001, 1, 0.0);
        assert!(matches!(
            tracker.on_exit(&POLICY, 10_002, 1, 0.0),
            RestartDecision::CrashedOut { .. }
        ));
        tracker.reset();
        assert!(matches!(
            tracker.on_exit(&POLICY, 10_003, 1, 0.0),
            RestartDecision::Restart { attempt: 1, .. }
        ));
    }

    proptest! {
        #[test]
        fn delays_stay_within_bounds_and_the_ceiling_holds(
            gaps in proptest::collection::vec(0u64..20_000, 1..200),
            jitters in proptest::collection::vec(0.0f64..1.0, 200),
            max in 0u32..8,
        ) {
            let policy = RestartPolicy { max_restarts: max, ..POLICY };
            let mut tracker = RestartTracker::default();
            let mut now = 0u64;
            let mut restarts: Vec<u64> = vec![];
            for (gap, jitter) in gaps.iter().zip(&jitters) {
                now += gap;
                if let RestartDecision::Restart { delay_ms, attempt } = tracker.on_exit(&policy, now, *gap, *jitter) {
                    prop_assert!(delay_ms <= policy.backoff_max_ms);
                    let nominal = nominal_delay(&policy, attempt - 1);
                    prop_assert!(attempt > 1 || delay_ms == 0);
                    prop_assert!(delay_ms <= nominal && delay_ms as f64 >= nominal as f64 * (1.0 - JITTER) - 1.0);
                    restarts.push(now);
                    let in_window = restarts.iter().filter(|&&t| now - t < policy.window_ms).count();
                    prop_assert!(in_window as u32 <= max);
                }
            }
        }
    }
}
