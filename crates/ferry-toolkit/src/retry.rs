//! Retry policy: exponential backoff with jitter and a cap, an attempt limit, and an optional
//! per-attempt timeout.
//!
//! The timeout lives in the policy, not in a separate layer, so the two cannot be stacked the
//! wrong way round: Watermill's users wrapped a retry middleware around a timeout middleware
//! and retries silently stopped once the shared deadline passed (watermill#467). Here each
//! attempt gets its own fresh timeout, and a timed-out attempt is a failed attempt like any
//! other.

use std::time::Duration;

use rand::{Rng, RngExt};

/// How a failing handler is retried before its message is dead-lettered.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// The delay after the first failed attempt.
    pub initial: Duration,
    /// Each further delay is the previous one times this (before jitter).
    pub multiplier: f64,
    /// No delay is longer than this.
    pub max_delay: Duration,
    /// Attempts in all, the first included; after the last one fails, the message is
    /// dead-lettered. 1 means no retries.
    pub max_attempts: u32,
    /// How much of each delay is random, from 0 (none) to 1 ("full jitter"): the delay is
    /// drawn uniformly from `[d·(1−jitter), d]`, so retries of many messages that failed
    /// together spread out instead of hitting a recovering dependency at once.
    pub jitter: f64,
    /// A time limit for each attempt; an attempt that exceeds it counts as failed and is
    /// retried. `None`: no limit.
    pub attempt_timeout: Option<Duration>,
}

impl Default for RetryPolicy {
    /// 5 attempts, 200 ms doubling up to 30 s, half jitter, no attempt timeout.
    fn default() -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_millis(200),
            multiplier: 2.0,
            max_delay: Duration::from_secs(30),
            max_attempts: 5,
            jitter: 0.5,
            attempt_timeout: None,
        }
    }
}

impl RetryPolicy {
    /// One attempt, no retries.
    pub fn no_retries() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// The delay to wait after failed attempt `attempt` (1-based) before the next one.
    pub fn delay(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let exponent = attempt.saturating_sub(1).min(1000) as i32;
        let cap = self.max_delay.as_secs_f64();
        let base = (self.initial.as_secs_f64() * self.multiplier.max(1.0).powi(exponent)).min(cap);
        let jitter = self.jitter.clamp(0.0, 1.0);
        let delay = if jitter > 0.0 {
            base * (1.0 - jitter * rng.random::<f64>())
        } else {
            base
        };
        // `base` may be infinite or NaN for silly inputs; the cap still holds.
        Duration::try_from_secs_f64(delay)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }

    /// Whether another attempt follows failed attempt `attempt`.
    pub fn retries_after(&self, attempt: u32) -> bool {
        attempt < self.max_attempts.max(1)
    }

    /// Checks the values make sense.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.multiplier.is_finite() && self.multiplier >= 1.0) {
            return Err(format!(
                "multiplier must be a finite number >= 1, got {}",
                self.multiplier
            ));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(format!("jitter must be within 0..=1, got {}", self.jitter));
        }
        if self.max_attempts == 0 {
            return Err("max_attempts must be at least 1".into());
        }
        if self.initial > self.max_delay {
            return Err(format!(
                "initial delay {:?} exceeds max_delay {:?}",
                self.initial, self.max_delay
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn policy(jitter: f64) -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_millis(100),
            multiplier: 2.0,
            max_delay: Duration::from_secs(1),
            max_attempts: 10,
            jitter,
            attempt_timeout: None,
        }
    }

    #[track_caller]
    fn check(policy: &RetryPolicy, attempt: u32, min_ms: u64, max_ms: u64) {
        let mut rng = StdRng::seed_from_u64(u64::from(attempt));
        for _ in 0..200 {
            let d = policy.delay(attempt, &mut rng);
            assert!(
                Duration::from_millis(min_ms) <= d && d <= Duration::from_millis(max_ms),
                "attempt {attempt}: {d:?} not in {min_ms}..={max_ms} ms"
            );
        }
    }

    #[test]
    fn delays_grow_exponentially_up_to_the_cap() {
        let p = policy(0.0);
        check(&p, 1, 100, 100);
        check(&p, 2, 200, 200);
        check(&p, 3, 400, 400);
        check(&p, 4, 800, 800);
        check(&p, 5, 1000, 1000);
        check(&p, 50, 1000, 1000);
        check(&p, u32::MAX, 1000, 1000);
    }

    #[test]
    fn jitter_stays_within_its_band_and_under_the_cap() {
        let p = policy(0.5);
        check(&p, 1, 50, 100);
        check(&p, 3, 200, 400);
        check(&p, 9, 500, 1000);
        let full = policy(1.0);
        check(&full, 2, 0, 200);
        // Jitter really varies the delay.
        let mut rng = StdRng::seed_from_u64(7);
        let delays: std::collections::HashSet<_> = (0..20).map(|_| p.delay(3, &mut rng)).collect();
        assert!(delays.len() > 10);
    }

    #[test]
    fn attempts_and_validation() {
        let p = RetryPolicy {
            max_attempts: 3,
            ..policy(0.0)
        };
        assert!(p.retries_after(1) && p.retries_after(2) && !p.retries_after(3));
        assert!(!RetryPolicy::no_retries().retries_after(1));
        assert!(RetryPolicy::default().validate().is_ok());
        assert!(
            RetryPolicy {
                multiplier: 0.5,
                ..policy(0.0)
            }
            .validate()
            .is_err()
        );
        assert!(
            RetryPolicy {
                jitter: 2.0,
                ..policy(0.0)
            }
            .validate()
            .is_err()
        );
        assert!(
            RetryPolicy {
                max_attempts: 0,
                ..policy(0.0)
            }
            .validate()
            .is_err()
        );
    }
}
