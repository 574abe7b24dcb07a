//! A partition's lag in events at a cost that does not grow with the backlog: the store
//! reads a bounded window of the events after the checkpoint (in commit order, through
//! its index) and the head position; the count is exact when the window holds the whole
//! backlog, and an estimate from positions beyond it, labelled as such.

/// Default number of events after a checkpoint a store reads to measure lag exactly.
pub const DEFAULT_EXACT_LAG_LIMIT: u32 = 10_000;

/// What a store read to measure one partition's lag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LagWindow {
    /// The partition's checkpoint position.
    pub checkpoint_position: i64,
    /// Events read after the checkpoint, any filter or partition: at most `limit + 1`
    /// (the one past the limit says the window does not hold the whole backlog).
    pub scanned: i64,
    /// Of those, the events of the projection's filter and partition.
    pub matching: i64,
    /// The largest position among the events read.
    pub last_position: i64,
    /// The largest position in the store.
    pub head_position: i64,
}

/// A measured lag in events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lag {
    pub events: i64,
    /// The backlog outgrew the window: `events` is estimated from positions.
    pub estimated: bool,
}

/// The lag a window says, for a window read with `LIMIT limit + 1`. Within the limit the
/// count is exact. Beyond it, the window's share of matching events is scaled to the
/// positions between the checkpoint and the head (positions are dense but for the gaps
/// of rolled-back appends, so this is close); never less than what the window counted.
pub fn lag_from_window(window: LagWindow, limit: u32) -> Lag {
    if window.scanned <= i64::from(limit) {
        return Lag { events: window.matching, estimated: false };
    }
    let span = (window.last_position - window.checkpoint_position).max(1) as f64;
    let total = (window.head_position - window.checkpoint_position).max(0) as f64;
    let share = window.matching as f64 / window.scanned as f64;
    let positions_per_event = (span / window.scanned as f64).max(1.0);
    let estimate = (total / positions_per_event * share).round() as i64;
    Lag { events: estimate.max(window.matching), estimated: true }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(scanned: i64, matching: i64, last: i64, head: i64) -> LagWindow {
        LagWindow { checkpoint_position: 100, scanned, matching, last_position: last, head_position: head }
    }

    #[test]
    fn a_backlog_within_the_limit_is_counted_exactly() {
        assert_eq!(lag_from_window(window(0, 0, 0, 100), 10), Lag { events: 0, estimated: false });
        assert_eq!(lag_from_window(window(10, 4, 110, 110), 10), Lag { events: 4, estimated: false });
    }

    #[test]
    fn a_larger_backlog_is_estimated_from_positions() {
        // 11 events read over positions 101..=111, all matching; the head is 1100 on.
        assert_eq!(lag_from_window(window(11, 11, 111, 1_100), 10), Lag { events: 1_000, estimated: true });
        // A partition that holds a quarter of the events.
        assert_eq!(lag_from_window(window(11, 3, 111, 1_100), 10).events, 273);
        // Gaps in positions (rolled-back appends) thin the estimate.
        assert_eq!(lag_from_window(window(11, 11, 122, 2_300), 10).events, 1_100);
        // Never below what was counted.
        assert_eq!(lag_from_window(window(11, 11, 111, 105), 10), Lag { events: 11, estimated: true });
    }
}
