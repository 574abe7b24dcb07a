//! How far one step reaches when a partition is far behind: rather than committing every
//! batch read, a step keeps folding full batches into the same rows and commits them
//! once, as a rebuild does, until a budget of rows held or events read is spent. Far
//! behind, each row is written once per window instead of once per batch and the
//! checkpoint moves once; near the head a read comes back short and the step commits
//! at once, so latency is that of one batch.

/// Bytes of memory one row held in a window is budgeted at: the row as stored and as
/// folded, its key, and the map entry (generous for the rows of typical read models).
pub const BYTES_PER_HELD_ROW: u64 = 1024;

/// The share of the projection's memory (`config.memory`) a window may hold, in parts:
/// the rest is for the batch read, the connection and the process itself.
const MEMORY_PARTS: u64 = 4;

/// Events one window reads at most, whatever the rows: the lease is renewed only by a
/// commit, so a window must end well within a lease's life.
pub const MAX_WINDOW_EVENTS: usize = 100_000;

/// The budget of one step's window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatchUpWindow {
    /// Rows held before the window commits.
    pub rows: usize,
    /// Events read before the window commits.
    pub events: usize,
}

impl CatchUpWindow {
    /// One batch per commit: no window.
    pub const OFF: CatchUpWindow = CatchUpWindow { rows: 0, events: 0 };

    /// The window a projection with `memory_bytes` of memory can afford.
    pub fn for_memory(memory_bytes: u64) -> CatchUpWindow {
        let rows = memory_bytes / MEMORY_PARTS / BYTES_PER_HELD_ROW;
        CatchUpWindow { rows: usize::try_from(rows).unwrap_or(usize::MAX), events: MAX_WINDOW_EVENTS }
    }

    /// Whether a step that holds `rows` rows after reading `events` events, its last read
    /// full, reads another batch.
    pub fn reads_on(&self, rows: usize, events: usize) -> bool {
        rows < self.rows && events < self.events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_memory_holds_tens_of_thousands_of_rows() {
        let window = CatchUpWindow::for_memory(128 << 20);
        assert_eq!(window.rows, 32_768);
        assert!(window.reads_on(32_767, 1000));
        assert!(!window.reads_on(32_768, 1000));
        assert!(!window.reads_on(0, MAX_WINDOW_EVENTS));
    }

    #[test]
    fn off_never_reads_on() {
        assert!(!CatchUpWindow::OFF.reads_on(0, 0));
    }
}
