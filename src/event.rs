//! The event model: what is appended, what is read back, and where a reader stands.

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::error::HandlerError;

/// An event as stored: immutable once appended.
///
/// `event_data` and `metadata` are kept as raw JSON text; a handler parses only what it
/// reads (`data::<T>()`), which keeps a rebuild free of generic JSON trees.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DomainEvent {
    /// Global position (identity): unique, increasing in insertion order, but *not* in
    /// commit order. Readers order by `(transaction_id, position)`.
    pub position: i64,
    /// The appending transaction's id (`xid8` on PostgreSQL; 0 where commits are serial).
    pub transaction_id: u64,
    pub event_id: Uuid,
    pub aggregate_id: Uuid,
    pub aggregate_type: String,
    /// A past-tense name such as `UserRegistered`.
    pub event_type: String,
    pub event_data: Box<RawValue>,
    pub metadata: Box<RawValue>,
    /// The aggregate's version after this event: 1 for its first event, no gaps.
    pub version: i64,
    pub timestamp: DateTime<Utc>,
    /// JSON paths inside `event_data` that hold envelope-encrypted values.
    pub encrypted_fields: Vec<String>,
}

impl PartialEq for DomainEvent {
    fn eq(&self, other: &Self) -> bool {
        self.position == other.position
            && self.transaction_id == other.transaction_id
            && self.event_id == other.event_id
            && self.aggregate_id == other.aggregate_id
            && self.aggregate_type == other.aggregate_type
            && self.event_type == other.event_type
            && self.event_data.get() == other.event_data.get()
            && self.metadata.get() == other.metadata.get()
            && self.version == other.version
            && self.timestamp == other.timestamp
            && self.encrypted_fields == other.encrypted_fields
    }
}

impl DomainEvent {
    /// Parses `event_data` into the handler's own type for this event.
    ///
    /// A payload that does not fit is a permanent error naming the event.
    pub fn data<T: DeserializeOwned>(&self) -> Result<T, HandlerError> {
        self.check_payload_shape()?;
        serde_json::from_str(self.event_data.get()).map_err(|e| HandlerError::Payload {
            event_id: self.event_id,
            event_type: self.event_type.clone(),
            reason: e.to_string(),
        })
    }

    /// A payload is a JSON object; anything else (an array would decode by position into
    /// a handler's struct) is a permanent error naming the event.
    pub fn check_payload_shape(&self) -> Result<(), HandlerError> {
        let text = self.event_data.get().trim_start();
        if text.starts_with('{') {
            return Ok(());
        }
        let found = match text.as_bytes().first() {
            Some(b'[') => "an array",
            Some(b'"') => "a string",
            Some(b'n') => "null",
            Some(b't' | b'f') => "a boolean",
            _ => "a number",
        };
        Err(HandlerError::Payload {
            event_id: self.event_id,
            event_type: self.event_type.clone(),
            reason: format!("the payload is {found}, not a JSON object"),
        })
    }

    /// Parses the metadata envelope (causation, correlation, event version, extra keys).
    pub fn metadata(&self) -> Result<Metadata, HandlerError> {
        serde_json::from_str(self.metadata.get()).map_err(|e| HandlerError::Payload {
            event_id: self.event_id,
            event_type: self.event_type.clone(),
            reason: format!("metadata: {e}"),
        })
    }

    /// Where a reader stands after this event.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint { transaction_id: self.transaction_id, position: self.position }
    }
}

/// Metadata carried by every event. Unknown keys are kept in `extra`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<Uuid>,
    /// Schema version of `event_data` for this event type (upcasters key on it).
    #[serde(default = "first_event_version")]
    pub event_version: u32,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

fn first_event_version() -> u32 {
    1
}

/// No causation or correlation, payload version 1: what an append without metadata
/// stores (as a stored event without `event_version` reads).
impl Default for Metadata {
    fn default() -> Self {
        Self {
            causation_id: None,
            correlation_id: None,
            event_version: first_event_version(),
            extra: Default::default(),
        }
    }
}

/// An event to append. The store assigns position, transaction id, version and timestamp.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    /// Generated by the store when absent.
    #[serde(default)]
    pub event_id: Option<Uuid>,
    pub event_type: String,
    pub event_data: serde_json::Value,
    #[serde(default)]
    pub metadata: Metadata,
    /// Defaults to the store's clock at append.
    #[serde(default)]
    pub timestamp: Option<DateTime<Utc>>,
    #[serde(default)]
    pub encrypted_fields: Vec<String>,
}

impl NewEvent {
    pub fn new(event_type: impl Into<String>, event_data: serde_json::Value) -> Self {
        Self {
            event_id: None,
            event_type: event_type.into(),
            event_data,
            metadata: Metadata::default(),
            timestamp: None,
            encrypted_fields: Vec::new(),
        }
    }

    pub fn at(mut self, timestamp: DateTime<Utc>) -> Self {
        self.timestamp = Some(timestamp);
        self
    }

    pub fn with_id(mut self, event_id: Uuid) -> Self {
        self.event_id = Some(event_id);
        self
    }
}

/// A reader's place in the global stream: everything at or before it has been seen.
///
/// Ordered by transaction id first: one transaction may hold many events, and
/// positions are handed out before commit, so position alone is not commit order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Checkpoint {
    pub transaction_id: u64,
    pub position: i64,
}

impl Checkpoint {
    /// Before the first event.
    pub const START: Checkpoint = Checkpoint { transaction_id: 0, position: 0 };
}

impl std::fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.transaction_id, self.position)
    }
}

/// Which events a reader wants, and whether it needs their metadata. Empty lists mean
/// "all".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventFilter {
    #[serde(default)]
    pub event_types: Vec<String>,
    #[serde(default)]
    pub aggregate_types: Vec<String>,
    /// The reader never looks at `metadata`: stores may leave it out (JSON `null`), which
    /// makes reads lighter. [`DomainEvent::metadata`] then fails, naming the event.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skip_metadata: bool,
}

impl EventFilter {
    pub fn all() -> Self {
        Self::default()
    }

    pub fn aggregate_types<I, S>(types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            event_types: Vec::new(),
            aggregate_types: types.into_iter().map(Into::into).collect(),
            skip_metadata: false,
        }
    }

    /// The same filter, for a reader that never looks at event metadata.
    pub fn without_metadata(mut self) -> Self {
        self.skip_metadata = true;
        self
    }

    /// The narrower of two filters (both must match).
    pub fn and(&self, other: &EventFilter) -> EventFilter {
        fn meet(a: &[String], b: &[String]) -> Vec<String> {
            match (a.is_empty(), b.is_empty()) {
                (true, _) => b.to_vec(),
                (_, true) => a.to_vec(),
                _ => a.iter().filter(|x| b.contains(x)).cloned().collect(),
            }
        }
        EventFilter {
            event_types: meet(&self.event_types, &other.event_types),
            aggregate_types: meet(&self.aggregate_types, &other.aggregate_types),
            skip_metadata: self.skip_metadata || other.skip_metadata,
        }
    }

    pub fn matches(&self, event: &DomainEvent) -> bool {
        (self.event_types.is_empty() || self.event_types.contains(&event.event_type))
            && (self.aggregate_types.is_empty() || self.aggregate_types.contains(&event.aggregate_type))
    }
}

/// Which slice of the aggregate space a reader owns: `hash(aggregate_id) % count == index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Partition {
    pub index: u32,
    pub count: u32,
}

impl Partition {
    pub const WHOLE: Partition = Partition { index: 0, count: 1 };

    /// The partition hash: the last four bytes of the UUID as a big-endian integer.
    /// Stores compute the same value in SQL, so the split is identical everywhere.
    pub fn bucket(aggregate_id: &Uuid, count: u32) -> u32 {
        let b = aggregate_id.as_bytes();
        u32::from_be_bytes([b[12], b[13], b[14], b[15]]) % count.max(1)
    }

    pub fn owns(&self, aggregate_id: &Uuid) -> bool {
        self.count <= 1 || Self::bucket(aggregate_id, self.count) == self.index
    }
}

impl std::fmt::Display for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_order_by_transaction_before_position() {
        let a = Checkpoint { transaction_id: 5, position: 90 };
        let b = Checkpoint { transaction_id: 6, position: 10 };
        assert!(a < b);
    }

    #[test]
    fn filter_intersection_keeps_common_types() {
        let a =
            EventFilter { event_types: vec!["A".into(), "B".into()], aggregate_types: vec![], skip_metadata: false };
        let b =
            EventFilter { event_types: vec!["B".into()], aggregate_types: vec!["user".into()], skip_metadata: false };
        let c = a.and(&b);
        assert_eq!(c.event_types, vec!["B".to_string()]);
        assert_eq!(c.aggregate_types, vec!["user".to_string()]);
    }

    #[test]
    fn partitions_cover_every_aggregate_exactly_once() {
        for n in 0..200u128 {
            let id = Uuid::from_u128(n.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835));
            let owners = (0..4).filter(|i| Partition { index: *i, count: 4 }.owns(&id)).count();
            assert_eq!(owners, 1);
        }
    }

    #[test]
    fn metadata_keeps_unknown_keys_and_defaults_event_version() {
        let m: Metadata = serde_json::from_str(r#"{"tenant":"acme"}"#).unwrap();
        assert_eq!(m.event_version, 1);
        assert_eq!(m.extra["tenant"], "acme");
    }

    /// An appended event without metadata was stored at payload version 0, which no
    /// upcaster chain (they start at 1) ever applied to.
    #[test]
    fn an_event_appended_without_metadata_is_at_payload_version_1() {
        let e: NewEvent = serde_json::from_str(r#"{"event_type": "A", "event_data": {}}"#).unwrap();
        assert_eq!(e.metadata.event_version, 1);
        assert_eq!(serde_json::to_value(&e.metadata).unwrap(), serde_json::json!({"event_version": 1}));
    }
}
