//! What one stored event becomes: the chain's output, checked against what the store
//! and the event's encrypted fields allow. The plan, the rewrite and the verification
//! all decide through [`rewrite_of`], so they cannot disagree.

use serde_json::Value;
use uuid::Uuid;

use crate::event::{DomainEvent, Metadata};
use crate::store::migrations::{Rewrite, StoredShape};
use crate::store::rules;
use crate::upcast::{UpcastError, Upcasters};

/// An event the chains cannot rewrite, named.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Failure {
    pub event_id: Uuid,
    pub position: i64,
    pub aggregate_id: Uuid,
    pub event_type: String,
    /// `None` when the metadata that holds it does not parse.
    pub event_version: Option<u32>,
    pub error: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let version = self.event_version.map(|v| format!(" v{v}")).unwrap_or_default();
        write!(
            f,
            "event {} at position {} ({}{version}, aggregate {}): {}",
            self.event_id, self.position, self.event_type, self.aggregate_id, self.error
        )
    }
}

/// One event's rewrite, with the versions it goes between.
#[derive(Debug, Clone)]
pub(crate) struct Step {
    pub rewrite: Rewrite,
    pub from_version: u32,
    pub to_version: u32,
}

pub(crate) fn shape_of(event: &DomainEvent) -> StoredShape {
    StoredShape {
        event_type: event.event_type.clone(),
        event_data: event.event_data.clone(),
        metadata: event.metadata.clone(),
    }
}

/// The rewrite of `event` through `upcasters`: `None` when no step applies to it (it is
/// at its current version already). An event a step fails on, whose metadata does not
/// parse, whose result is over the store's payload limit, or whose encrypted fields the
/// chain would move, rename or change, is a [`Failure`]: lazily it would be
/// dead-lettered, and eagerly it is not rewritten.
pub(crate) fn rewrite_of(
    upcasters: &Upcasters,
    event: &DomainEvent,
    max_payload_bytes: usize,
) -> Result<Option<Step>, Failure> {
    if !upcasters.has_type(&event.event_type) {
        return Ok(None);
    }
    let fail = |event_version: Option<u32>, error: String| Failure {
        event_id: event.event_id,
        position: event.position,
        aggregate_id: event.aggregate_id,
        event_type: event.event_type.clone(),
        event_version,
        error,
    };
    let metadata: Metadata = serde_json::from_str(event.metadata.get())
        .map_err(|e| fail(None, format!("metadata (needed for its event_version) does not parse: {e}")))?;
    let from_version = metadata.event_version;
    if !upcasters.applies_to(&event.event_type, from_version) {
        return Ok(None);
    }
    let version = Some(from_version);
    let upcast = upcasters.upcast(event.clone()).map_err(|e| fail(version, describe(&e)))?;
    check_encrypted_fields(event, &upcast).map_err(|e| fail(version, e))?;
    rules::check_stored_payload(&upcast, max_payload_bytes)
        .map_err(|e| fail(version, format!("the rewritten payload is too large to store: {e}")))?;
    let to_version = upcast.metadata().map_err(|e| fail(version, e.to_string()))?.event_version;
    Ok(Some(Step {
        rewrite: Rewrite {
            position: event.position,
            event_id: event.event_id,
            aggregate_id: event.aggregate_id,
            from: shape_of(event),
            to: shape_of(&upcast),
        },
        from_version,
        to_version,
    }))
}

/// The part of an upcast error that does not repeat the event's id (the failure names it).
fn describe(error: &UpcastError) -> String {
    match error {
        UpcastError::Failed { event_type, from_version, reason, .. } => {
            format!("the upcaster {event_type} v{from_version} failed: {reason}")
        }
        UpcastError::Unreadable { reason, .. } => format!("cannot upcast: {reason}"),
        other => other.to_string(),
    }
}

/// An encrypted field's ciphertext is bound to the event type and the field's path: a
/// rewrite must leave both, and the ciphertext itself, as they are.
fn check_encrypted_fields(before: &DomainEvent, after: &DomainEvent) -> Result<(), String> {
    if before.encrypted_fields.is_empty() {
        return Ok(());
    }
    if before.event_type != after.event_type {
        return Err(format!(
            "its encrypted fields ({}) are bound to the event type, which the chain renames to {}; leave this \
             type to lazy upcasting",
            before.encrypted_fields.join(", "),
            after.event_type
        ));
    }
    let parse = |e: &DomainEvent| serde_json::from_str::<Value>(e.event_data.get()).unwrap_or(Value::Null);
    let (old, new) = (parse(before), parse(after));
    for path in &before.encrypted_fields {
        if lookup(&old, path) != lookup(&new, path) {
            return Err(format!(
                "the chain changes the encrypted field `{path}` (moved, removed or altered); its ciphertext is bound \
                 to its path and cannot be rewritten: leave this type to lazy upcasting"
            ));
        }
    }
    Ok(())
}

/// The value at a dotted path of nested objects.
fn lookup<'v>(value: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.').try_fold(value, |v, key| v.as_object()?.get(key))
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;
    use serde_json::json;

    use super::*;
    use crate::upcast::{Payload, Upcaster};

    fn split(mut p: Payload) -> Result<Payload, String> {
        let name = p.remove("name").and_then(|n| n.as_str().map(str::to_owned)).ok_or("no name")?;
        let (first, last) = name.split_once(' ').ok_or("cannot split")?;
        p.insert("first".into(), json!(first));
        p.insert("last".into(), json!(last));
        Ok(p)
    }

    fn rename(p: Payload) -> Result<Payload, String> {
        Ok(p)
    }

    fn event(event_type: &str, version: u32, data: Value, encrypted: &[&str]) -> DomainEvent {
        DomainEvent {
            position: 9,
            transaction_id: 0,
            event_id: Uuid::from_u128(7),
            aggregate_id: Uuid::from_u128(1),
            aggregate_type: "member".into(),
            event_type: event_type.into(),
            event_data: serde_json::value::to_raw_value(&data).unwrap(),
            metadata: serde_json::value::to_raw_value(&json!({ "event_version": version })).unwrap(),
            version: 1,
            timestamp: DateTime::from_timestamp(0, 0).unwrap(),
            encrypted_fields: encrypted.iter().map(|p| (*p).to_owned()).collect(),
        }
    }

    fn chains() -> Upcasters {
        Upcasters::from_steps([Upcaster::new("Joined", 1, split), Upcaster::new("Left", 1, rename).renaming_to("Gone")])
            .unwrap()
    }

    #[test]
    fn an_event_at_an_old_version_is_rewritten_to_the_end_of_its_chain() {
        let step = rewrite_of(&chains(), &event("Joined", 1, json!({"name": "Ada Lovelace"}), &[]), 1 << 20);
        let step = step.unwrap().expect("a step applies");
        assert_eq!((step.from_version, step.to_version), (1, 2));
        let data: Value = serde_json::from_str(step.rewrite.to.event_data.get()).unwrap();
        assert_eq!(data, json!({"first": "Ada", "last": "Lovelace"}));
        assert!(rewrite_of(&chains(), &event("Joined", 2, json!({}), &[]), 1 << 20).unwrap().is_none());
        assert!(rewrite_of(&chains(), &event("Other", 1, json!({}), &[]), 1 << 20).unwrap().is_none());
    }

    #[test]
    fn failures_name_the_event_and_say_why() {
        let failure = rewrite_of(&chains(), &event("Joined", 1, json!({"name": "Cher"}), &[]), 1 << 20).unwrap_err();
        assert_eq!((failure.event_id, failure.position, failure.event_version), (Uuid::from_u128(7), 9, Some(1)));
        assert_eq!(failure.error, "the upcaster Joined v1 failed: cannot split");
        let big = rewrite_of(&chains(), &event("Joined", 1, json!({"name": "Ada Lovelace"}), &[]), 10).unwrap_err();
        assert!(big.error.contains("too large"), "{big}");
    }

    #[test]
    fn encrypted_fields_must_stay_where_they_are() {
        let renamed = rewrite_of(&chains(), &event("Left", 1, json!({"why": "pjx1.x"}), &["why"]), 1 << 20);
        assert!(renamed.unwrap_err().error.contains("renames to Gone"));
        let moved = rewrite_of(&chains(), &event("Joined", 1, json!({"name": "Ada Lovelace"}), &["name"]), 1 << 20)
            .unwrap_err();
        assert!(moved.error.contains("encrypted field `name`"), "{moved}");
        let kept = rewrite_of(
            &chains(),
            &event("Joined", 1, json!({"name": "Ada Lovelace", "contact": {"email": "pjx1.y"}}), &["contact.email"]),
            1 << 20,
        );
        assert!(kept.unwrap().is_some(), "a field the chain leaves alone is fine");
    }
}
