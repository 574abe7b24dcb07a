//! Projection handlers: pure functions from events to read-model rows.

use crate::error::HandlerError;
use crate::event::{DomainEvent, EventFilter};
use crate::read_model::{Record, RowKey, TableSchema};

/// In which order, and with which duplicate protection, a projection sees events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ordering {
    /// Each row belongs to one aggregate and is applied strictly in that aggregate's
    /// version order. The runtime stores the last applied version with the row, fills
    /// gaps by reading the missing versions directly, and drops versions at or below the
    /// row's version. Use for "current state of X" projections.
    AggregateVersion,
    /// Rows are fed by many aggregates and the handler's effect is commutative (counts,
    /// sums). Every event is applied exactly once in global commit order.
    Commutative,
}

/// A projection: which events it reads, which row each one touches, and how a row
/// changes.
///
/// Delivery to `handle` is at least once *per batch attempt*; the runtime commits rows
/// and checkpoint in one transaction, so the effect on the read model is exactly once.
/// `handle` must therefore be pure: no I/O, no clocks, no randomness.
pub trait ProjectionHandler: Send + Sync + 'static {
    type Key: RowKey;
    type Row: Record;

    /// The name used in `projections.yaml`, metrics and logs.
    fn name(&self) -> &'static str;

    /// The version of what `handle` makes of events (default 1). Raise it whenever that
    /// changes: snapshots of rows folded by another version are not used, so time
    /// travel replays them with the current logic (a rebuild, which the change needs
    /// anyway, writes new ones).
    fn version(&self) -> u32 {
        1
    }

    /// The read-model table this projection owns.
    fn schema(&self) -> &'static TableSchema;

    fn ordering(&self) -> Ordering;

    /// Events this projection reads; the store filters before anything is decoded.
    fn filter(&self) -> EventFilter {
        EventFilter::all()
    }

    /// The row an event touches, or `None` when the event is irrelevant.
    fn key(&self, event: &DomainEvent) -> Option<Self::Key>;

    /// Applies one event to its row (`None`: no row yet; set it to `None` to delete).
    fn handle(&self, row: &mut Option<Self::Row>, event: &DomainEvent) -> Result<(), HandlerError>;
}
