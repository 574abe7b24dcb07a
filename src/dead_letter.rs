//! Dead letters and parked aggregates: what happens to an event no retry can apply.
//!
//! An event that fails permanently (or transiently past its retry budget) becomes a
//! dead letter, and its aggregate is *parked* for that projection: the aggregate's later
//! events stay in the event log, unapplied, behind it, while every other aggregate moves
//! on. Operators retry, skip or discard the parked sequence.
#![allow(async_fn_in_trait)]

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{ErrorClass, Result};
use crate::event::DomainEvent;

/// Where a dead letter stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeadLetterStatus {
    /// Parks its aggregate until an operator acts.
    Open,
    /// Applied by `dlq retry`.
    Resolved,
    /// Dropped by `dlq skip`; the rest of the sequence went on.
    Skipped,
    /// Dropped with the whole parked sequence by `dlq discard`.
    Discarded,
}

impl DeadLetterStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterStatus::Open => "open",
            DeadLetterStatus::Resolved => "resolved",
            DeadLetterStatus::Skipped => "skipped",
            DeadLetterStatus::Discarded => "discarded",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "open" => DeadLetterStatus::Open,
            "resolved" => DeadLetterStatus::Resolved,
            "skipped" => DeadLetterStatus::Skipped,
            "discarded" => DeadLetterStatus::Discarded,
            _ => return None,
        })
    }
}

impl std::fmt::Display for DeadLetterStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One event that a projection could not apply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Assigned by the queue; 0 before it is stored.
    pub id: i64,
    pub projection: String,
    pub event_id: Uuid,
    pub position: i64,
    pub transaction_id: u64,
    pub aggregate_id: Uuid,
    pub aggregate_type: String,
    pub event_type: String,
    pub version: i64,
    pub error: String,
    pub error_class: String,
    /// Failed attempts (1 for a permanent failure; 1 + retries for a transient one).
    pub attempts: u32,
    pub first_failed_at: DateTime<Utc>,
    pub last_failed_at: DateTime<Utc>,
    pub status: DeadLetterStatus,
}

impl DeadLetter {
    /// A new letter for `event`; the store stamps the failure times on insert when the
    /// attempt history does not already have them.
    pub fn new(
        projection: &str,
        event: &DomainEvent,
        error: &str,
        class: ErrorClass,
        attempts: u32,
        at: DateTime<Utc>,
    ) -> Self {
        Self {
            id: 0,
            projection: projection.to_owned(),
            event_id: event.event_id,
            position: event.position,
            transaction_id: event.transaction_id,
            aggregate_id: event.aggregate_id,
            aggregate_type: event.aggregate_type.clone(),
            event_type: event.event_type.clone(),
            version: event.version,
            error: error.to_owned(),
            error_class: match class {
                ErrorClass::Transient => "transient".into(),
                ErrorClass::Permanent => "permanent".into(),
            },
            attempts,
            first_failed_at: at,
            last_failed_at: at,
            status: DeadLetterStatus::Open,
        }
    }
}

/// What a projection does with an event no retry can apply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnFailure {
    /// Dead-letter the event and park its aggregate; everything else goes on.
    #[default]
    Park,
    /// Stop the projection partition at the event; nothing after it is applied.
    Stop,
}

/// Which dead letters to list. `None` fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadLetterFilter {
    pub projection: Option<String>,
    pub aggregate_id: Option<Uuid>,
    /// Also list resolved, skipped and discarded letters.
    pub include_closed: bool,
}

/// An aggregate a projection does not apply beyond `from_version` until an operator acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parked {
    pub aggregate_id: Uuid,
    /// The dead-lettered version; this and later versions wait.
    pub from_version: i64,
    pub dead_letter_id: i64,
}

/// The parked aggregates of one projection partition, as a runner caches them, and the
/// epoch that tells it when an operator changed them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParkedSet {
    pub by_aggregate: BTreeMap<Uuid, Parked>,
    /// Bumped by every park and unpark; a batch commit checks it did not move.
    pub epoch: i64,
}

impl ParkedSet {
    /// True when `event` waits behind a dead letter.
    pub fn holds(&self, event: &DomainEvent) -> bool {
        self.by_aggregate.get(&event.aggregate_id).is_some_and(|p| event.version >= p.from_version)
    }
}

/// An event an operator took out of a projection (`dlq skip` drops the dead-lettered
/// event, `dlq discard` the whole parked sequence). The decision is stored, so rebuilds,
/// time travel and later repairs of the projection leave the event out too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscardedEvent {
    pub event_id: Uuid,
    pub aggregate_id: Uuid,
    pub version: i64,
    /// The letter whose repair took it out.
    pub dead_letter_id: i64,
    /// [`DeadLetterStatus::Skipped`] or [`DeadLetterStatus::Discarded`].
    pub decision: DeadLetterStatus,
}

/// What a replay of a projection (a rebuild, time travel) leaves out, so that it gives
/// the rows live processing gave: events operators took out, which count as consumed
/// versions, and the aggregates parked behind an open dead letter, whose events from
/// the parked version on wait for `dlq retry` as they do live.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exclusions {
    pub discarded: std::collections::HashSet<Uuid>,
    pub parked: ParkedSet,
}

impl Exclusions {
    pub fn new(discarded: impl IntoIterator<Item = DiscardedEvent>, parked: impl IntoIterator<Item = Parked>) -> Self {
        Self { discarded: discarded.into_iter().map(|d| d.event_id).collect(), parked: ParkedSet::from_rows(0, parked) }
    }

    /// True when an operator took `event` out of the projection.
    pub fn discards(&self, event: &DomainEvent) -> bool {
        self.discarded.contains(&event.event_id)
    }

    /// True when `event` waits behind a dead letter (its aggregate is parked).
    pub fn holds(&self, event: &DomainEvent) -> bool {
        self.parked.holds(event)
    }

    /// Parks `event`'s aggregate from its version on (a replay dead-lettered it).
    pub fn park(&mut self, event: &DomainEvent) {
        let parked = Parked { aggregate_id: event.aggregate_id, from_version: event.version, dead_letter_id: 0 };
        let entry = self.parked.by_aggregate.entry(event.aggregate_id).or_insert(parked);
        entry.from_version = entry.from_version.min(event.version);
    }
}

/// What an operator did to a dead letter, for the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorAction {
    pub dead_letter_id: i64,
    pub actor: String,
    /// `retry`, `skip` or `discard`.
    pub action: String,
    pub at: DateTime<Utc>,
    /// What came of it, e.g. "applied 12 events" or "stopped at event … : …".
    pub outcome: String,
}

/// A provider-agnostic dead-letter queue.
///
/// Delivery may be at least once and unordered (Cloudflare Queues): `send` is idempotent
/// per (projection, event id), and per-aggregate order never comes from the queue but
/// from the event log (`version`).
pub trait DeadLetterQueue {
    /// Stores letters (a batch); a letter already stored for the same projection and
    /// event is updated (attempts, error, last failure), not duplicated. Returns ids.
    async fn send(&self, letters: &[DeadLetter]) -> Result<Vec<i64>>;

    async fn list(&self, filter: &DeadLetterFilter) -> Result<Vec<DeadLetter>>;

    async fn get(&self, id: i64) -> Result<Option<DeadLetter>>;

    /// Closes a letter with the given status and records who did it.
    async fn resolve(&self, id: i64, status: DeadLetterStatus, action: &OperatorAction) -> Result<()>;

    /// The audit trail of one letter, oldest first.
    async fn actions(&self, id: i64) -> Result<Vec<OperatorAction>>;
}
