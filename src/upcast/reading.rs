//! Reading events through the enabled upcasters, the same way on every path that
//! folds them (live batches, rebuilds, time travel, operator repairs).
//!
//! A projection's event-type filter names the types its handler sees, that is the
//! types *after* upcasting (an upcaster may rename a type). The store filters on the
//! stored type, so it is asked for every type whose chain ends at a filtered type too
//! ([`Reading::store_filter`]), and the filter is applied again, in memory, to the
//! upcast events ([`Reading::prepare`]). An event whose chain leads out of the filter
//! is dropped like an event the store filtered out.

use uuid::Uuid;

use super::{UpcastError, Upcasters};
use crate::error::HandlerError;
use crate::event::{DomainEvent, EventFilter};

/// What one path reads: the projection's filter (on upcast types) and the upcasters
/// enabled for it.
#[derive(Debug, Clone, Default)]
pub struct Reading {
    filter: EventFilter,
    store_filter: EventFilter,
    upcasters: Upcasters,
}

/// Events ready for a fold: upcast and filtered, in the order read.
#[derive(Debug, Default)]
pub struct Prepared {
    /// Upcast events, and the events an upcaster failed on as stored.
    pub events: Vec<DomainEvent>,
    /// The events an upcaster failed on, with the error to dead-letter them with (for
    /// [`crate::fold::Fold::failing_upcasts`]).
    pub failed: Vec<(Uuid, HandlerError)>,
}

impl Reading {
    /// `filter` is the projection's whole filter (handler's and configuration's).
    pub fn new(filter: EventFilter, upcasters: Upcasters) -> Self {
        let store_filter = if upcasters.is_empty() {
            filter.clone()
        } else {
            let event_types = upcasters.sources_of(&filter.event_types);
            // `event_version` lives in the metadata: a reader that may meet an event with
            // upcasters needs it.
            let upcasts = event_types.is_empty() || event_types.iter().any(|t| upcasters.has_type(t));
            EventFilter {
                event_types,
                aggregate_types: filter.aggregate_types.clone(),
                skip_metadata: filter.skip_metadata && !upcasts,
            }
        };
        Self { filter, store_filter, upcasters }
    }

    /// The filter on upcast events.
    pub fn filter(&self) -> &EventFilter {
        &self.filter
    }

    /// What to ask the store for.
    pub fn store_filter(&self) -> &EventFilter {
        &self.store_filter
    }

    pub fn upcasters(&self) -> &Upcasters {
        &self.upcasters
    }

    /// Upcasts `events` (read with [`Reading::store_filter`], or unfiltered) and keeps
    /// those the filter takes. An event an upcaster fails on is kept as stored when its
    /// chain would end at a filtered type, with its failure in [`Prepared::failed`].
    pub fn prepare(&self, events: Vec<DomainEvent>) -> Prepared {
        let mut out = Prepared { events: Vec::with_capacity(events.len()), failed: Vec::new() };
        for event in events {
            let (event, error) = self.upcasters.upcast_or_keep(event);
            match error {
                None if self.filter.matches(&event) => out.events.push(event),
                None => {}
                Some(error) => {
                    let types = &self.filter.event_types;
                    let leads_in = match &error {
                        UpcastError::Failed { event_type, from_version, .. } => {
                            types.is_empty() || types.contains(&self.upcasters.target_of(event_type, *from_version).0)
                        }
                        // Where its chain ends is unknown: it was read for one of them.
                        _ => true,
                    };
                    if leads_in && self.store_filter.matches(&event) {
                        out.failed.push((event.event_id, HandlerError::Upcast(error)));
                        out.events.push(event);
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;
    use serde_json::json;

    use super::*;
    use crate::upcast::{Payload, Upcaster};

    fn split(mut p: Payload) -> Result<Payload, String> {
        let name = p.remove("name").and_then(|n| n.as_str().map(str::to_owned)).ok_or("no name")?;
        p.insert("first".into(), json!(name));
        Ok(p)
    }

    fn keep(p: Payload) -> Result<Payload, String> {
        Ok(p)
    }

    fn upcasters() -> Upcasters {
        Upcasters::from_steps([
            Upcaster::new("Joined", 1, split),
            Upcaster::new("Joined", 2, keep).renaming_to("SignedUp"),
        ])
        .unwrap()
    }

    fn event(n: u128, event_type: &str, version: u32, data: serde_json::Value) -> DomainEvent {
        DomainEvent {
            position: n as i64,
            transaction_id: 0,
            event_id: Uuid::from_u128(n),
            aggregate_id: Uuid::from_u128(n),
            aggregate_type: "member".into(),
            event_type: event_type.into(),
            event_data: serde_json::value::to_raw_value(&data).unwrap(),
            metadata: serde_json::value::to_raw_value(&json!({ "event_version": version })).unwrap(),
            version: 1,
            timestamp: DateTime::from_timestamp(0, 0).unwrap(),
            encrypted_fields: vec![],
        }
    }

    fn only(types: &[&str]) -> EventFilter {
        EventFilter { event_types: types.iter().map(|t| (*t).to_owned()).collect(), ..EventFilter::all() }
    }

    #[test]
    fn the_store_is_asked_for_the_types_that_become_filtered_ones_with_metadata() {
        let reading = Reading::new(only(&["SignedUp", "Left"]).without_metadata(), upcasters());
        let store = reading.store_filter();
        assert_eq!(store.event_types, ["SignedUp", "Left", "Joined"]);
        assert!(!store.skip_metadata);
        let plain = Reading::new(only(&["Left"]).without_metadata(), Upcasters::new());
        assert_eq!(plain.store_filter(), plain.filter(), "without upcasters nothing changes");
        let unrelated = Reading::new(only(&["Left"]).without_metadata(), upcasters());
        assert_eq!(unrelated.store_filter(), unrelated.filter(), "no event read has upcasters");
        let all = Reading::new(EventFilter::all().without_metadata(), upcasters());
        assert!(!all.store_filter().skip_metadata, "any event read may have upcasters");
    }

    #[test]
    fn the_filter_applies_to_the_upcast_type() {
        let events = vec![
            event(1, "Joined", 1, json!({"name": "Ada"})),
            event(2, "Joined", 3, json!({})),
            event(3, "SignedUp", 3, json!({"first": "Bo"})),
        ];
        let renamed = Reading::new(only(&["SignedUp"]), upcasters()).prepare(events.clone());
        let types: Vec<_> = renamed.events.iter().map(|e| (e.event_id.as_u128(), e.event_type.as_str())).collect();
        assert_eq!(types, [(1, "SignedUp"), (3, "SignedUp")], "a Joined v3 stays Joined and is left out");
        let old_name = Reading::new(only(&["Joined"]), upcasters()).prepare(events);
        let ids: Vec<_> = old_name.events.iter().map(|e| e.event_id.as_u128()).collect();
        assert_eq!(ids, [2], "a filter on the old name sees only what is still called so");
    }

    #[test]
    fn a_failing_event_is_kept_as_stored_with_its_error() {
        let failing = event(1, "Joined", 1, json!({"name": 7}));
        let prepared = Reading::new(only(&["SignedUp"]), upcasters()).prepare(vec![failing.clone()]);
        assert_eq!(prepared.events, [failing]);
        let (id, error) = &prepared.failed[0];
        assert_eq!(*id, Uuid::from_u128(1));
        let text = error.to_string();
        assert!(text.contains("Joined v1") && text.contains("no name"), "{text}");
        let elsewhere = Reading::new(only(&["Left"]), upcasters()).prepare(vec![event(1, "Joined", 1, json!({}))]);
        assert!(elsewhere.events.is_empty() && elsewhere.failed.is_empty(), "its chain does not lead to the filter");
    }
}
