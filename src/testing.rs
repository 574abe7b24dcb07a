//! A given/when/then harness for handlers: given these events, expect these rows.
//!
//! ```ignore
//! Scenario::new(&UserProfile)
//!     .given(user_registered(id, "ada@example.com"))
//!     .then_row(&id, Some(expected_row));
//! ```

use chrono::{TimeZone, Utc};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::error::HandlerError;
use crate::event::DomainEvent;
use crate::fold::Fold;
use crate::handler::ProjectionHandler;

/// Builds a stored-looking event for tests: positions and versions are assigned by
/// [`Scenario::given`] in the order events are given.
pub fn event(aggregate_type: &str, aggregate_id: Uuid, event_type: &str, data: serde_json::Value) -> DomainEvent {
    DomainEvent {
        position: 0,
        transaction_id: 0,
        event_id: Uuid::from_u128(0),
        aggregate_id,
        aggregate_type: aggregate_type.to_owned(),
        event_type: event_type.to_owned(),
        event_data: RawValue::from_string(data.to_string()).expect("serde_json::Value is valid JSON"),
        metadata: RawValue::from_string("{}".to_owned()).expect("valid JSON"),
        version: 0,
        timestamp: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
        encrypted_fields: Vec::new(),
    }
}

/// Feeds events through a handler exactly as the runtime does, in memory.
#[derive(Debug)]
pub struct Scenario<'h, H: ProjectionHandler> {
    fold: Fold<'h, H>,
    next_position: i64,
    versions: std::collections::HashMap<Uuid, i64>,
    last_error: Option<HandlerError>,
}

impl<'h, H: ProjectionHandler> Scenario<'h, H> {
    pub fn new(handler: &'h H) -> Self {
        Self {
            fold: Fold::new(handler).assume_absent(true),
            next_position: 1,
            versions: Default::default(),
            last_error: None,
        }
    }

    /// Applies an event, giving it the next position and its aggregate's next version
    /// (unless it already has a version).
    pub fn given(mut self, mut event: DomainEvent) -> Self {
        event.position = self.next_position;
        self.next_position += 1;
        if event.event_id.is_nil() {
            event.event_id = Uuid::from_u128(event.position as u128);
        }
        let v = self.versions.entry(event.aggregate_id).or_insert(0);
        if event.version == 0 {
            event.version = *v + 1;
        }
        *v = (*v).max(event.version);
        self.last_error = self.fold.apply_one(&event).err().map(|e| e.error);
        self
    }

    /// Asserts the row for `key` (None: no row).
    pub fn then_row(self, key: &H::Key, expected: Option<H::Row>) -> Self
    where
        H::Row: std::fmt::Debug,
        H::Key: std::fmt::Debug,
    {
        assert_eq!(self.fold.row(key).cloned(), expected, "row for key {key:?}");
        self
    }

    /// Asserts that the last given event failed (an earlier failure does not count).
    pub fn then_error(self, check: impl FnOnce(&HandlerError) -> bool) -> Self {
        let err = self.last_error.as_ref().expect("expected the last event to fail, but it applied");
        assert!(check(err), "unexpected error: {err}");
        self
    }

    /// The row's runtime-maintained version.
    pub fn version(&self, key: &H::Key) -> i64 {
        self.fold.version(key)
    }
}
