//! Retry timing as data: full-jitter exponential backoff.
//!
//! `sleep = random(0, min(cap, base · 2^attempt))`. The caller supplies the random
//! number, so the core needs no clock and no RNG and the bounds are testable.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt before giving up (dead-lettering).
    pub max_retries: u32,
    pub base: Duration,
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { max_retries: 3, base: Duration::from_millis(100), cap: Duration::from_secs(10) }
    }
}

impl RetryPolicy {
    /// Upper bound of the sleep before retry number `attempt` (0-based).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The sleep before retry `attempt`, for `unit` drawn uniformly from `[0, 1)`.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        self.ceiling(attempt).mul_f64(unit.clamp(0.0, 1.0))
    }

    /// Whether another retry is allowed after `attempt` retries.
    pub fn allows(&self, attempt: u32) -> bool {
        attempt < self.max_retries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_until_the_cap() {
        let p = RetryPolicy { max_retries: 3, base: Duration::from_millis(100), cap: Duration::from_millis(500) };
        assert_eq!(p.ceiling(0), Duration::from_millis(100));
        assert_eq!(p.ceiling(1), Duration::from_millis(200));
        assert_eq!(p.ceiling(2), Duration::from_millis(400));
        assert_eq!(p.ceiling(3), Duration::from_millis(500));
        assert_eq!(p.ceiling(40), Duration::from_millis(500));
    }

    #[test]
    fn delays_stay_within_zero_and_the_ceiling() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay(2, 0.0), Duration::ZERO);
        assert!(p.delay(2, 0.999) < p.ceiling(2));
        assert_eq!(p.delay(2, 7.0), p.ceiling(2));
        assert!(p.allows(2) && !p.allows(3));
    }
}
