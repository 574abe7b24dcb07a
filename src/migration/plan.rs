//! The dry run: every stored event of the migrated types, read once, with what it would
//! become; nothing is written.

use std::collections::BTreeMap;

use serde_json::Value;
use uuid::Uuid;

use super::checksum::Checksum;
use super::rewrite::{rewrite_of, Failure, Step};
use super::{Migration, MigrationError, MigrationProgress};
use crate::event::DomainEvent;
use crate::store::migrations::StoredShape;
use crate::store::EventStore;

/// What a migration would do to the store as it is now.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MigrationPlan {
    /// The stored types read (those a step is registered for).
    pub event_types: Vec<String>,
    /// The chains, one line per step.
    pub upcasters: Vec<String>,
    /// Events of those types read.
    pub events_scanned: u64,
    /// The last position read: a migration covers the events up to it.
    pub upto_position: i64,
    /// Per stored type and version, how many events would change.
    pub changes: Vec<PlannedChange>,
    pub events_to_change: u64,
    /// Events at their current version already (nothing to do for them).
    pub events_current: u64,
    /// Every event the chains cannot rewrite; a plan with any is refused by `apply`.
    pub failures: Vec<Failure>,
    /// Checksums of the events to change, as stored and as they would be
    /// ([`Checksum`]).
    pub before_checksum: String,
    pub after_checksum: String,
}

/// The events of one stored type and version that would change.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PlannedChange {
    pub event_type: String,
    pub event_version: u32,
    pub target_type: String,
    pub target_version: u32,
    pub events: u64,
    /// The first such event, before and after.
    pub sample: Sample,
}

/// One event as stored and as it would be stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Sample {
    pub event_id: Uuid,
    pub position: i64,
    pub before: SampleShape,
    pub after: SampleShape,
}

/// The columns a migration replaces, as JSON.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SampleShape {
    pub event_type: String,
    pub event_data: Value,
    pub metadata: Value,
}

impl SampleShape {
    fn of(shape: &StoredShape) -> Self {
        let parse = |text: &str| serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()));
        SampleShape {
            event_type: shape.event_type.clone(),
            event_data: parse(shape.event_data.get()),
            metadata: parse(shape.metadata.get()),
        }
    }
}

impl MigrationPlan {
    pub fn is_refused(&self) -> bool {
        !self.failures.is_empty()
    }
}

impl Migration {
    /// Reads every stored event of the migrated types (committed ones, in position
    /// order) and says what the migration would do. Writes nothing.
    pub async fn plan<S: EventStore>(
        &self,
        store: &S,
        progress: &mut impl MigrationProgress,
    ) -> Result<MigrationPlan, MigrationError> {
        let max_payload = store.max_payload_bytes();
        let mut plan = MigrationPlan {
            event_types: self.event_types(),
            upcasters: self.upcasters.describe(),
            events_scanned: 0,
            upto_position: 0,
            changes: Vec::new(),
            events_to_change: 0,
            events_current: 0,
            failures: Vec::new(),
            before_checksum: String::new(),
            after_checksum: String::new(),
        };
        let (mut before, mut after) = (Checksum::EMPTY, Checksum::EMPTY);
        let mut changes: BTreeMap<(String, u32), PlannedChange> = BTreeMap::new();
        let filter = self.filter();
        // No chains: an empty type filter would read every event.
        while !self.upcasters.is_empty() {
            let events = store.read_committed(plan.upto_position, &filter, self.read_size).await?;
            let Some(last) = events.last() else { break };
            plan.upto_position = last.position;
            plan.events_scanned += events.len() as u64;
            for event in &events {
                match rewrite_of(&self.upcasters, event, max_payload) {
                    Ok(None) => plan.events_current += 1,
                    Ok(Some(step)) => {
                        before.add(event.event_id, &step.rewrite.from);
                        after.add(event.event_id, &step.rewrite.to);
                        plan.events_to_change += 1;
                        count(&mut changes, event, &step);
                    }
                    Err(failure) => plan.failures.push(failure),
                }
            }
            progress.scanned(plan.events_scanned);
        }
        plan.changes = changes.into_values().collect();
        plan.before_checksum = before.to_string();
        plan.after_checksum = after.to_string();
        Ok(plan)
    }
}

fn count(changes: &mut BTreeMap<(String, u32), PlannedChange>, event: &DomainEvent, step: &Step) {
    let change = changes.entry((event.event_type.clone(), step.from_version)).or_insert_with(|| PlannedChange {
        event_type: event.event_type.clone(),
        event_version: step.from_version,
        target_type: step.rewrite.to.event_type.clone(),
        target_version: step.to_version,
        events: 0,
        sample: Sample {
            event_id: event.event_id,
            position: event.position,
            before: SampleShape::of(&step.rewrite.from),
            after: SampleShape::of(&step.rewrite.to),
        },
    });
    change.events += 1;
}
