//! Retry decisions as data: from (what failed, how often) to the next action, with
//! full-jitter exponential backoff.
//!
//! `sleep = random(0, min(cap, base · 2^attempt))`. The caller supplies the random
//! number, so the core needs no clock and no RNG and every decision is testable as a
//! table.

use std::time::Duration;

use crate::error::ErrorClass;

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

/// What failed, which decides the retry budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// One event could not be applied: the budget is `max_retries` per event.
    Event(ErrorClass),
    /// The store (connection, server) failed: transient failures are retried for as
    /// long as it takes, since no event is at fault.
    Store(ErrorClass),
}

/// The next thing to do after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAction {
    /// Sleep a random duration in `[0, max_delay)` (full jitter), then try again.
    Retry { max_delay: Duration },
    /// Give the event up: dead-letter it (or stop, with `on_failure: stop`).
    DeadLetter,
    /// Nothing to retry: the failure is permanent and no single event is at fault.
    Abort,
}

/// Backoff exponent ceiling for failures retried without limit (2^16 · base is far
/// beyond any sensible cap, so the cap decides).
const UNBOUNDED_EXPONENT: u32 = 16;

impl RetryPolicy {
    /// The next action after `attempts` failed attempts (this one included, so ≥ 1).
    pub fn next_action(&self, failure: Failure, attempts: u32) -> RetryAction {
        let retry = |exponent: u32| RetryAction::Retry { max_delay: self.ceiling(exponent) };
        match failure {
            Failure::Event(ErrorClass::Transient) if attempts <= self.max_retries => retry(attempts.saturating_sub(1)),
            Failure::Event(_) => RetryAction::DeadLetter,
            Failure::Store(ErrorClass::Transient) => retry(attempts.saturating_sub(1).min(UNBOUNDED_EXPONENT)),
            Failure::Store(ErrorClass::Permanent) => RetryAction::Abort,
        }
    }

    /// Upper bound of the sleep before retry number `attempt` (0-based).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }
}

impl RetryAction {
    /// The sleep before the retry, for `unit` drawn uniformly from `[0, 1)`; zero for
    /// actions that do not retry.
    pub fn delay(&self, unit: f64) -> Duration {
        match self {
            RetryAction::Retry { max_delay } => max_delay.mul_f64(unit.clamp(0.0, 1.0)),
            RetryAction::DeadLetter | RetryAction::Abort => Duration::ZERO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ErrorClass::{Permanent, Transient};

    const MS: fn(u64) -> Duration = Duration::from_millis;

    fn policy() -> RetryPolicy {
        RetryPolicy { max_retries: 3, base: MS(100), cap: MS(500) }
    }

    #[test]
    fn every_failure_and_attempt_count_has_one_next_action() {
        let retry = |ms| RetryAction::Retry { max_delay: MS(ms) };
        let table = [
            (Failure::Event(Transient), 1, retry(100)),
            (Failure::Event(Transient), 2, retry(200)),
            (Failure::Event(Transient), 3, retry(400)),
            (Failure::Event(Transient), 4, RetryAction::DeadLetter),
            (Failure::Event(Transient), 40, RetryAction::DeadLetter),
            (Failure::Event(Permanent), 1, RetryAction::DeadLetter),
            (Failure::Store(Transient), 1, retry(100)),
            (Failure::Store(Transient), 2, retry(200)),
            (Failure::Store(Transient), 4, retry(500)),
            (Failure::Store(Transient), 1_000_000, retry(500)),
            (Failure::Store(Permanent), 1, RetryAction::Abort),
        ];
        for (failure, attempts, expected) in table {
            assert_eq!(policy().next_action(failure, attempts), expected, "{failure:?} after {attempts} attempts");
        }
    }

    #[test]
    fn no_retries_means_the_first_transient_failure_dead_letters() {
        let p = RetryPolicy { max_retries: 0, ..policy() };
        assert_eq!(p.next_action(Failure::Event(Transient), 1), RetryAction::DeadLetter);
    }

    #[test]
    fn ceilings_double_until_the_cap() {
        let p = policy();
        assert_eq!(p.ceiling(0), MS(100));
        assert_eq!(p.ceiling(1), MS(200));
        assert_eq!(p.ceiling(2), MS(400));
        assert_eq!(p.ceiling(3), MS(500));
        assert_eq!(p.ceiling(40), MS(500));
    }

    #[test]
    fn delays_stay_within_zero_and_the_ceiling() {
        let action = RetryAction::Retry { max_delay: MS(400) };
        assert_eq!(action.delay(0.0), Duration::ZERO);
        assert!(action.delay(0.999) < MS(400));
        assert_eq!(action.delay(7.0), MS(400));
        assert_eq!(RetryAction::DeadLetter.delay(0.5), Duration::ZERO);
    }
}
