//! Upcasters: the pure steps that bring an old event payload to the shape handlers
//! expect today.
//!
//! A step is keyed by `(event_type, event_version)` and produces version + 1 (and
//! optionally a new type name). Steps are registered in code next to the handlers and
//! chained: an event is stepped until no step matches its type and version. The same
//! chain serves lazy upcasting on read and eager migration of the store, so a payload
//! reaches a handler in one shape whichever path brought it.

use std::collections::BTreeMap;

use serde_json::value::RawValue;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::event::{DomainEvent, Metadata};

mod reading;
pub use reading::{Prepared, Reading};

/// A payload as an upcaster sees it: the JSON object of `event_data`.
pub type Payload = Map<String, Value>;

/// One step: turns a payload at `from_version` into the next version.
///
/// `Err` carries a reason; the chain wraps it in an [`UpcastError`] naming the event.
pub type StepFn = fn(Payload) -> Result<Payload, String>;

/// One registered step of a chain.
#[derive(Debug, Clone, Copy)]
pub struct Upcaster {
    pub event_type: &'static str,
    pub from_version: u32,
    /// The type name after this step; `None` keeps the name.
    pub renames_to: Option<&'static str>,
    pub step: StepFn,
}

impl Upcaster {
    pub const fn new(event_type: &'static str, from_version: u32, step: StepFn) -> Self {
        Self { event_type, from_version, renames_to: None, step }
    }

    pub const fn renaming_to(mut self, event_type: &'static str) -> Self {
        self.renames_to = Some(event_type);
        self
    }
}

/// An upcaster could not be registered or applied.
///
/// ### Handling
/// `Failed` and `NotAnObject` on read are permanent errors for that event: it is
/// dead-lettered and only its aggregate parks. `Duplicate` and `Unknown` are
/// programming or configuration errors found at start-up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UpcastError {
    #[error("two upcasters for {event_type} v{from_version}: a chain has one step per version")]
    Duplicate { event_type: String, from_version: u32 },
    #[error("upcasting is enabled for {event_type}, but no upcaster is registered for it")]
    Unknown { event_type: String },
    #[error("event {event_id} ({event_type} v{from_version}): upcaster failed: {reason}")]
    Failed { event_id: Uuid, event_type: String, from_version: u32, reason: String },
    #[error("event {event_id} ({event_type}): cannot upcast: {reason}")]
    Unreadable { event_id: Uuid, event_type: String, reason: String },
}

/// The registered chains, one step per `(event_type, version)`.
#[derive(Debug, Clone, Default)]
pub struct Upcasters {
    steps: BTreeMap<(String, u32), Upcaster>,
}

impl Upcasters {
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a registry from steps; two steps for one type and version are refused.
    pub fn from_steps(steps: impl IntoIterator<Item = Upcaster>) -> Result<Self, UpcastError> {
        let mut registry = Self::new();
        for step in steps {
            registry.register(step)?;
        }
        Ok(registry)
    }

    pub fn register(&mut self, step: Upcaster) -> Result<(), UpcastError> {
        let key = (step.event_type.to_owned(), step.from_version);
        if self.steps.contains_key(&key) {
            return Err(UpcastError::Duplicate { event_type: key.0, from_version: key.1 });
        }
        self.steps.insert(key, step);
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// The event types some step is registered for (what `upcasting.event_types` may
    /// name), sorted.
    pub fn event_types(&self) -> Vec<&str> {
        let mut types: Vec<&str> = self.steps.keys().map(|(t, _)| t.as_str()).collect();
        types.dedup();
        types
    }

    /// Keeps only the chains that start at the named event types (the ones a
    /// configuration enables); a name with no registered step is an error.
    pub fn enable_only(&self, event_types: &[String]) -> Result<Self, UpcastError> {
        let mut enabled = Self::new();
        for event_type in event_types {
            let Some(first) = self.first_version_of(event_type) else {
                return Err(UpcastError::Unknown { event_type: event_type.clone() });
            };
            let mut current = (event_type.clone(), first);
            while let Some(step) = self.steps.get(&current) {
                enabled.steps.entry(current.clone()).or_insert(*step);
                current = (step.renames_to.unwrap_or(step.event_type).to_owned(), step.from_version + 1);
            }
        }
        Ok(enabled)
    }

    /// Every registered step, by type and version.
    pub fn steps(&self) -> impl Iterator<Item = &Upcaster> {
        self.steps.values()
    }

    /// One line per step, by type and version (`UserRegistered v1 -> v2`, `... as
    /// UserSignedUp` when it renames): what a migration records of the chains it ran.
    pub fn describe(&self) -> Vec<String> {
        self.steps()
            .map(|s| {
                let rename = s.renames_to.map(|to| format!(" as {to}")).unwrap_or_default();
                format!("{} v{} -> v{}{rename}", s.event_type, s.from_version, s.from_version + 1)
            })
            .collect()
    }

    fn first_version_of(&self, event_type: &str) -> Option<u32> {
        self.steps.keys().filter(|(t, _)| t == event_type).map(|(_, v)| *v).min()
    }

    /// Whether a step applies to an event of this type at this version.
    pub fn applies_to(&self, event_type: &str, event_version: u32) -> bool {
        self.steps.contains_key(&(event_type.to_owned(), event_version))
    }

    /// The type and version an event ends at after every step that applies.
    pub fn target_of(&self, event_type: &str, event_version: u32) -> (String, u32) {
        let mut current = (event_type.to_owned(), event_version);
        while let Some(step) = self.steps.get(&current) {
            current = (step.renames_to.unwrap_or(step.event_type).to_owned(), step.from_version + 1);
        }
        current
    }

    /// Brings one payload through its chain. Returns the final type, version and payload.
    pub fn upcast_payload(
        &self,
        event_id: Uuid,
        event_type: &str,
        event_version: u32,
        mut payload: Payload,
    ) -> Result<(String, u32, Payload), UpcastError> {
        let mut current = (event_type.to_owned(), event_version);
        while let Some(step) = self.steps.get(&current) {
            payload = (step.step)(payload).map_err(|reason| UpcastError::Failed {
                event_id,
                event_type: current.0.clone(),
                from_version: current.1,
                reason,
            })?;
            current = (step.renames_to.unwrap_or(step.event_type).to_owned(), step.from_version + 1);
        }
        Ok((current.0, current.1, payload))
    }

    /// Whether any step is registered for this type (at any version): events of other
    /// types are never parsed.
    pub fn has_type(&self, event_type: &str) -> bool {
        self.steps.range((event_type.to_owned(), 0)..=(event_type.to_owned(), u32::MAX)).next().is_some()
    }

    /// The types whose chains end at one of `targets` (renamed or not), `targets`
    /// included: what a store must be asked for so that a filter on the upcast type sees
    /// every event that becomes one of them.
    pub fn sources_of(&self, targets: &[String]) -> Vec<String> {
        let mut out: Vec<String> = targets.to_vec();
        for (event_type, version) in self.steps.keys() {
            if targets.contains(&self.target_of(event_type, *version).0) && !out.contains(event_type) {
                out.push(event_type.clone());
            }
        }
        out
    }

    /// Upcasts a stored event for reading. An event no step applies to is returned
    /// untouched (no parsing); otherwise payload, type name and
    /// `metadata.event_version` are replaced, everything else is kept.
    pub fn upcast(&self, event: DomainEvent) -> Result<DomainEvent, UpcastError> {
        match self.upcast_or_keep(event) {
            (event, None) => Ok(event),
            (_, Some(error)) => Err(error),
        }
    }

    /// [`Upcasters::upcast`], handing the event back untouched with the error when a step
    /// fails (it is dead-lettered as stored).
    pub fn upcast_or_keep(&self, event: DomainEvent) -> (DomainEvent, Option<UpcastError>) {
        if !self.has_type(&event.event_type) {
            return (event, None);
        }
        match self.upcast_ref(&event) {
            Ok(None) => (event, None),
            Ok(Some((event_type, event_data, metadata))) => {
                (DomainEvent { event_type, event_data, metadata, ..event }, None)
            }
            Err(error) => (event, Some(error)),
        }
    }

    /// The new type, payload and metadata of `event`, or `None` when no step applies.
    #[allow(clippy::type_complexity)]
    fn upcast_ref(&self, event: &DomainEvent) -> Result<Option<(String, Box<RawValue>, Box<RawValue>)>, UpcastError> {
        let unreadable = |reason: String| UpcastError::Unreadable {
            event_id: event.event_id,
            event_type: event.event_type.clone(),
            reason,
        };
        let mut metadata: Metadata = serde_json::from_str(event.metadata.get())
            .map_err(|e| unreadable(format!("metadata (needed for its event_version): {e}")))?;
        if !self.applies_to(&event.event_type, metadata.event_version) {
            return Ok(None);
        }
        let payload: Value =
            serde_json::from_str(event.event_data.get()).map_err(|e| unreadable(format!("payload: {e}")))?;
        let Value::Object(payload) = payload else {
            return Err(unreadable("the payload is not a JSON object".to_owned()));
        };
        let (event_type, version, payload) =
            self.upcast_payload(event.event_id, &event.event_type, metadata.event_version, payload)?;
        metadata.event_version = version;
        let event_data = to_raw(&Value::Object(payload)).map_err(unreadable)?;
        let metadata = to_raw(&metadata).map_err(unreadable)?;
        Ok(Some((event_type, event_data, metadata)))
    }
}

fn to_raw<T: serde::Serialize>(value: &T) -> Result<Box<RawValue>, String> {
    serde_json::value::to_raw_value(value).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;
    use serde_json::json;

    fn split_name(mut p: Payload) -> Result<Payload, String> {
        let name = p.remove("name").ok_or("no name")?;
        let name = name.as_str().ok_or("name is not a string")?.to_owned();
        let (first, last) = name.split_once(' ').ok_or_else(|| format!("cannot split {name:?}"))?;
        p.insert("first_name".into(), json!(first));
        p.insert("last_name".into(), json!(last));
        Ok(p)
    }

    fn add_plan(mut p: Payload) -> Result<Payload, String> {
        p.insert("plan".into(), json!("free"));
        Ok(p)
    }

    fn registry() -> Upcasters {
        Upcasters::from_steps([
            Upcaster::new("UserRegistered", 1, split_name),
            Upcaster::new("UserRegistered", 2, add_plan).renaming_to("UserSignedUp"),
        ])
        .expect("distinct steps")
    }

    fn event(event_type: &str, version: Option<u32>, data: Value) -> DomainEvent {
        let metadata = match version {
            Some(v) => json!({"event_version": v, "correlation_id": Uuid::nil()}),
            None => json!({}),
        };
        DomainEvent {
            position: 7,
            transaction_id: 3,
            event_id: Uuid::from_u128(42),
            aggregate_id: Uuid::from_u128(1),
            aggregate_type: "User".into(),
            event_type: event_type.into(),
            event_data: to_raw(&data).unwrap(),
            metadata: to_raw(&metadata).unwrap(),
            version: 1,
            timestamp: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            encrypted_fields: vec![],
        }
    }

    #[test]
    fn a_chain_runs_every_step_and_renames() {
        let out = registry().upcast(event("UserRegistered", None, json!({"name": "Ada Lovelace"}))).unwrap();
        assert_eq!(out.event_type, "UserSignedUp");
        let data: Value = serde_json::from_str(out.event_data.get()).unwrap();
        assert_eq!(data, json!({"first_name": "Ada", "last_name": "Lovelace", "plan": "free"}));
        let meta = out.metadata().unwrap();
        assert_eq!(meta.event_version, 3);
        assert_eq!(meta.correlation_id, None, "default metadata had no correlation id");
        assert_eq!((out.position, out.version, out.event_id), (7, 1, Uuid::from_u128(42)));
    }

    #[test]
    fn the_chain_starts_at_the_event_version_and_keeps_other_metadata() {
        let out = registry().upcast(event("UserRegistered", Some(2), json!({"first_name": "A"}))).unwrap();
        assert_eq!(out.event_type, "UserSignedUp");
        let meta = out.metadata().unwrap();
        assert_eq!((meta.event_version, meta.correlation_id), (3, Some(Uuid::nil())));
    }

    #[test]
    fn an_event_no_step_applies_to_is_untouched() {
        let original = event("UserRegistered", Some(3), json!({"first_name": "A"}));
        let out = registry().upcast(original.clone()).unwrap();
        assert_eq!(out, original);
        let other = event("EmailChanged", Some(1), json!({"email": "a@b"}));
        assert_eq!(registry().upcast(other.clone()).unwrap(), other);
    }

    #[test]
    fn a_failing_step_names_the_event_and_version() {
        let err = registry().upcast(event("UserRegistered", Some(1), json!({"name": "Cher"}))).unwrap_err();
        assert_eq!(
            err,
            UpcastError::Failed {
                event_id: Uuid::from_u128(42),
                event_type: "UserRegistered".into(),
                from_version: 1,
                reason: "cannot split \"Cher\"".into(),
            }
        );
        assert!(err.to_string().contains("00000000-0000-0000-0000-00000000002a"), "{err}");
    }

    #[test]
    fn a_payload_that_is_not_an_object_is_unreadable() {
        let err = registry().upcast(event("UserRegistered", Some(1), json!(["Ada"]))).unwrap_err();
        assert!(matches!(err, UpcastError::Unreadable { .. }), "{err:?}");
    }

    #[test]
    fn two_steps_for_one_version_are_refused() {
        let err = Upcasters::from_steps([
            Upcaster::new("UserRegistered", 1, split_name),
            Upcaster::new("UserRegistered", 1, add_plan),
        ])
        .unwrap_err();
        assert_eq!(err, UpcastError::Duplicate { event_type: "UserRegistered".into(), from_version: 1 });
    }

    #[test]
    fn enabling_a_type_keeps_its_whole_chain_and_nothing_else() {
        let mut all = registry();
        all.register(Upcaster::new("EmailChanged", 1, add_plan)).unwrap();
        let enabled = all.enable_only(&["UserRegistered".to_owned()]).unwrap();
        assert!(enabled.applies_to("UserRegistered", 1));
        assert!(enabled.applies_to("UserRegistered", 2));
        assert!(!enabled.applies_to("EmailChanged", 1));
        assert_eq!(enabled.target_of("UserRegistered", 1), ("UserSignedUp".to_owned(), 3));
        let err = all.enable_only(&["Nope".to_owned()]).unwrap_err();
        assert_eq!(err, UpcastError::Unknown { event_type: "Nope".into() });
    }

    #[test]
    fn a_registry_describes_its_steps_in_order() {
        assert_eq!(registry().describe(), ["UserRegistered v1 -> v2", "UserRegistered v2 -> v3 as UserSignedUp"]);
    }

    #[test]
    fn an_empty_registry_never_parses() {
        let mut broken = event("UserRegistered", Some(1), json!({}));
        broken.metadata = RawValue::from_string("null".into()).unwrap();
        let out = Upcasters::new().upcast(broken.clone()).unwrap();
        assert_eq!(out, broken);
    }
}
