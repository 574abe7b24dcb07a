//! Rows captured at every N versions while folding, for snapshots.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Fold;
use crate::event::DomainEvent;
use crate::handler::{Ordering, ProjectionHandler};
use crate::read_model::{Record, RowKey, Value};

/// A row as it was right after the event at `version` of `aggregate_id` was applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Captured {
    pub key: Vec<Value>,
    /// The whole row in schema order: key, values, version.
    pub row: Vec<Value>,
    pub version: i64,
    pub aggregate_id: Uuid,
    /// The timestamp of that event.
    pub at: DateTime<Utc>,
}

impl<H: ProjectionHandler> Fold<'_, H> {
    /// Captures each row of an [`Ordering::AggregateVersion`] projection when its version
    /// reaches a multiple of `every` (`None`, or any other ordering: never), for
    /// snapshots ([`Fold::take_snapshots`]).
    pub fn snapshots_every(mut self, every: Option<u32>) -> Self {
        let versioned = self.handler.ordering() == Ordering::AggregateVersion;
        self.snapshot_every = every.filter(|_| versioned).map(|n| i64::from(n.max(1)));
        self
    }

    /// The rows captured so far, taken out, by version (see [`Fold::snapshots_every`]).
    pub fn take_snapshots(&mut self) -> Vec<Captured> {
        let mut taken: Vec<Captured> = std::mem::take(&mut self.captured).into_values().collect();
        taken.sort_by_key(|c| c.version);
        taken
    }

    /// How many captured rows wait to be taken.
    pub fn snapshots_pending(&self) -> usize {
        self.captured.len()
    }

    /// Keeps `row` as it is right after `event` (at a multiple of the interval).
    pub(super) fn capture(&mut self, key: H::Key, row: &H::Row, event: &DomainEvent) {
        let mut key_values = Vec::with_capacity(self.handler.schema().key.len());
        key.to_values(&mut key_values);
        let mut values = key_values.clone();
        row.to_values(&mut values);
        values.push(Value::BigInt(event.version));
        let captured = Captured {
            key: key_values,
            row: values,
            version: event.version,
            aggregate_id: event.aggregate_id,
            at: event.timestamp,
        };
        self.captured.insert((key, event.version), captured);
    }
}
