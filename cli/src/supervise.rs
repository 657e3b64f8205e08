//! Keeping `plantd up`'s components running: when one stops by itself it
//! is started again after a growing delay, and only a crash *loop* — many
//! failures close together — makes `plantd up` give up.
//!
//! The policy is plain data and arithmetic over [`Instant`]s, so it is
//! tested without waiting; [`Restarts::failed`] says how long to wait
//! before the next attempt, or that the component is crash-looping.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How a component is restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// The delay before the first restart after a quiet period.
    pub first_delay: Duration,
    /// The longest delay between two attempts.
    pub max_delay: Duration,
    /// This many failures within [`RestartPolicy::window`] is a crash
    /// loop: give up and report.
    pub max_failures: usize,
    /// How far back failures count; older ones are forgotten, so a
    /// component that crashes once a day is restarted forever.
    pub window: Duration,
}

impl Default for RestartPolicy {
    /// 0.5 s, doubling up to 30 s; ten failures within ten minutes is a
    /// crash loop (the attempts before that span about two minutes).
    fn default() -> Self {
        Self {
            first_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_failures: 10,
            window: Duration::from_secs(600),
        }
    }
}

/// A component that kept failing: `failures` within `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{failures} failures within {window:?}: crash loop, giving up")]
pub struct CrashLoop {
    /// Failures counted.
    pub failures: usize,
    /// Over how long.
    pub window: Duration,
}

/// The failure history of one component under a [`RestartPolicy`].
#[derive(Debug, Clone)]
pub struct Restarts {
    /// The policy.
    policy: RestartPolicy,
    /// When recent failures happened, oldest first (only those inside the
    /// window are kept).
    failures: VecDeque<Instant>,
}

impl Restarts {
    /// No failures yet.
    pub fn new(policy: RestartPolicy) -> Self {
        Self {
            policy,
            failures: VecDeque::new(),
        }
    }

    /// Records a failure (a crash, or a restart that did not come up) at
    /// `now` and returns how long to wait before the next attempt.
    ///
    /// # Errors
    /// [`CrashLoop`] when this is the policy's `max_failures`-th failure
    /// within its window.
    pub fn failed(&mut self, now: Instant) -> Result<Duration, CrashLoop> {
        while let Some(&first) = self.failures.front() {
            if now.saturating_duration_since(first) > self.policy.window {
                self.failures.pop_front();
            } else {
                break;
            }
        }
        self.failures.push_back(now);
        let n = self.failures.len();
        if n >= self.policy.max_failures {
            return Err(CrashLoop {
                failures: n,
                window: self.policy.window,
            });
        }
        let exp = u32::try_from(n.saturating_sub(1))
            .unwrap_or(u32::MAX)
            .min(16);
        Ok(self
            .policy
            .first_delay
            .saturating_mul(1 << exp)
            .min(self.policy.max_delay))
    }

    /// Failures currently inside the window.
    pub fn recent(&self) -> usize {
        self.failures.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RestartPolicy {
        RestartPolicy {
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            max_failures: 5,
            window: Duration::from_secs(60),
        }
    }

    #[test]
    fn delays_grow_and_are_capped_then_a_loop_gives_up() {
        let mut r = Restarts::new(policy());
        let t = Instant::now();
        let delays: Vec<_> = (0..4)
            .map(|i| r.failed(t + Duration::from_secs(i)).expect("restart"))
            .collect();
        assert_eq!(
            delays,
            [100, 200, 400, 800].map(Duration::from_millis).to_vec()
        );
        let err = r
            .failed(t + Duration::from_secs(5))
            .expect_err("crash loop");
        assert_eq!(err.failures, 5);
    }

    #[test]
    fn failures_outside_the_window_are_forgotten() {
        let mut r = Restarts::new(policy());
        let t = Instant::now();
        for i in 0..4 {
            r.failed(t + Duration::from_secs(i)).expect("restart");
        }
        // Much later: an occasional crash starts from the first delay again.
        let d = r.failed(t + Duration::from_secs(3600)).expect("restart");
        assert_eq!(d, Duration::from_millis(100));
        assert_eq!(r.recent(), 1);
    }

    #[test]
    fn the_cap_holds_for_long_histories() {
        let mut r = Restarts::new(RestartPolicy {
            max_failures: 100,
            ..policy()
        });
        let t = Instant::now();
        let mut last = Duration::ZERO;
        for i in 0..50 {
            last = r.failed(t + Duration::from_millis(i)).expect("restart");
        }
        assert_eq!(last, Duration::from_secs(1));
    }
}
