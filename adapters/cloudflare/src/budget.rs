//! How long an invocation may keep starting batches: a share of its wall-clock budget,
//! measured by whatever clock the host has (`Date.now()` in a Worker, where time moves
//! only across I/O, which every batch does).

use std::time::Duration;

/// Time since the invocation started.
pub trait Clock {
    fn elapsed(&self) -> Duration;
}

/// The part of an invocation's budget left for batches.
#[derive(Debug)]
pub struct Budget<C> {
    clock: C,
    limit: Duration,
}

impl<C: Clock> Budget<C> {
    pub fn new(clock: C, limit: Duration) -> Self {
        Self { clock, limit }
    }

    /// True once the batches have used their share: start no new one.
    pub fn spent(&self) -> bool {
        self.clock.elapsed() >= self.limit
    }

    pub fn elapsed(&self) -> Duration {
        self.clock.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    struct Fake<'a>(&'a Cell<u64>);

    impl Clock for Fake<'_> {
        fn elapsed(&self) -> Duration {
            Duration::from_millis(self.0.get())
        }
    }

    #[test]
    fn the_budget_is_spent_at_its_limit() {
        let now = Cell::new(0);
        let budget = Budget::new(Fake(&now), Duration::from_millis(100));
        assert!(!budget.spent());
        now.set(99);
        assert!(!budget.spent());
        now.set(100);
        assert!(budget.spent());
    }
}
