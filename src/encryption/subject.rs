//! Whose key seals an event's fields: the subject id, chosen at append and recorded in
//! the event's metadata, so a reader finds it whatever the configuration says later.

use serde_json::Value;
use uuid::Uuid;

use crate::config::{EncryptionConfig, SubjectSource};
use crate::event::DomainEvent;

/// The metadata key under which a writer records how an event's fields were sealed:
/// `{"encryption": {"subject": "<subject id>"}}`. Reserved: an append may not set it.
pub const METADATA_KEY: &str = "encryption";

/// The subject of an event about to be appended, as the configuration names it; an
/// error text when the payload lacks the configured field.
pub fn subject_for_append(
    event_type: &str,
    aggregate_id: Uuid,
    payload: &Value,
    config: &EncryptionConfig,
) -> Result<String, String> {
    match config.subject_of(event_type) {
        SubjectSource::AggregateId => Ok(aggregate_id.to_string()),
        SubjectSource::Field(field) => match payload.get(field.as_str()) {
            Some(value) => subject_text(value)
                .ok_or_else(|| format!("its subject field `{field}` must be a non-empty string or a whole number")),
            None => Err(format!("its subject field `{field}` is missing (projections.yaml: encryption.subjects)")),
        },
    }
}

/// The subject of a stored event: as its metadata records it, else as the
/// configuration names it, else its aggregate id.
pub(crate) fn subject_of_stored(event: &DomainEvent, payload: &Value, config: &EncryptionConfig) -> String {
    recorded_subject(event)
        .or_else(|| subject_for_append(&event.event_type, event.aggregate_id, payload, config).ok())
        .unwrap_or_else(|| event.aggregate_id.to_string())
}

fn recorded_subject(event: &DomainEvent) -> Option<String> {
    let metadata: Value = serde_json::from_str(event.metadata.get()).ok()?;
    metadata.get(METADATA_KEY)?.get("subject").and_then(subject_text)
}

fn subject_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) if !text.is_empty() => Some(text.clone()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}
