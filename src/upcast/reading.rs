//! Reading events through the enabled upcasters, the same way on every path that
//! folds them (live batches, rebuilds, time travel, operator repairs).
//!
//! A projection's event-type filter names the types its handler sees, that is the
//! types *after* upcasting (an upcaster may rename a type). The store filters on the
//! stored type, so it is asked for every type whose chain ends at a filtered type too
//! ([`Reading::store_filter`]), and the filter is applied again, in memory, to the
//! upcast events ([`Reading::prepare`]). An event whose chain leads out of the filter
//! is dropped like an event the store filtered out.
//!
//! Before upcasting, each event's encrypted fields are opened or redacted as the
//! projection's grant says ([`Decryption`]): upcasters and handlers see the payload a
//! projection may see, and an event whose fields cannot be read is failed, never passed
//! on sealed or as plaintext.

use uuid::Uuid;

use super::{UpcastError, Upcasters};
use crate::encryption::Decryption;
use crate::error::{HandlerError, StoreError};
use crate::event::{DomainEvent, EventFilter};
use crate::store::keys::{AuditRecord, KeyReads};

/// What one path reads: the projection's filter (on upcast types), the upcasters
/// enabled for it, and what it may decrypt.
#[derive(Debug, Clone, Default)]
pub struct Reading {
    filter: EventFilter,
    store_filter: EventFilter,
    upcasters: Upcasters,
    decryption: Decryption,
}

/// Events ready for a fold: decrypted as granted, upcast and filtered, in the order read.
#[derive(Debug, Default)]
pub struct Prepared {
    /// Upcast events, and the events an upcaster or the decryption failed on as stored.
    pub events: Vec<DomainEvent>,
    /// The events an upcaster or the decryption failed on, with the error to
    /// dead-letter them with (for [`crate::fold::Fold::failing_upcasts`]).
    pub failed: Vec<(Uuid, HandlerError)>,
    /// Audit rows of the decrypts, to write with the work's effect.
    pub audit: Vec<AuditRecord>,
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
        Self { filter, store_filter, upcasters, decryption: Decryption::none() }
    }

    /// The same reading, decrypting as `decryption` grants. A grant needs the events'
    /// metadata (it names their subjects), so the store is asked for it.
    pub fn decrypting(mut self, decryption: Decryption) -> Self {
        if decryption.grants_any() {
            self.store_filter.skip_metadata = false;
        }
        self.decryption = decryption;
        self
    }

    /// The same reading with other upcasters (the decryption is kept).
    pub fn with_upcasters(&self, upcasters: Upcasters) -> Self {
        Reading::new(self.filter.clone(), upcasters).decrypting(self.decryption.clone())
    }

    /// The same reading, its filter narrowed by `filter` (a handler's own).
    pub fn narrowed(&self, filter: &EventFilter) -> Self {
        Reading::new(self.filter.and(filter), self.upcasters.clone()).decrypting(self.decryption.clone())
    }

    pub fn decryption(&self) -> &Decryption {
        &self.decryption
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

    /// Opens or redacts the encrypted fields of `events` (read with
    /// [`Reading::store_filter`], or unfiltered; keys come through `keys`), upcasts them
    /// and keeps those the filter takes. An event the decryption or an upcaster fails on
    /// is kept as stored when its chain would end at a filtered type, with its failure in
    /// [`Prepared::failed`]. Fails only when reading keys fails.
    pub async fn prepare<K: KeyReads>(
        &self,
        keys: &mut K,
        mut events: Vec<DomainEvent>,
    ) -> Result<Prepared, StoreError> {
        let opened = self.decryption.open(keys, &mut events).await?;
        let mut out = self.upcast(events, opened.failed);
        out.audit = opened.audit;
        Ok(out)
    }

    /// Upcasts and filters events whose encrypted fields were dealt with; `unread` are
    /// the events whose fields could not be read: they skip the upcasters.
    fn upcast(&self, events: Vec<DomainEvent>, unread: Vec<(Uuid, HandlerError)>) -> Prepared {
        let mut out = Prepared { events: Vec::with_capacity(events.len()), failed: Vec::new(), audit: Vec::new() };
        for event in events {
            if let Some(at) = unread.iter().position(|(id, _)| *id == event.event_id) {
                if self.leads_in(&event) {
                    out.failed.push((event.event_id, unread[at].1.clone()));
                    out.events.push(event);
                }
                continue;
            }
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

    /// Whether a stored event the reading cannot look into may end at a filtered type.
    fn leads_in(&self, event: &DomainEvent) -> bool {
        if !self.store_filter.matches(event) {
            return false;
        }
        let types = &self.filter.event_types;
        let version = event.metadata().map_or(1, |m| m.event_version);
        types.is_empty() || types.contains(&self.upcasters.target_of(&event.event_type, version).0)
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
        let renamed = Reading::new(only(&["SignedUp"]), upcasters()).upcast(events.clone(), Vec::new());
        let types: Vec<_> = renamed.events.iter().map(|e| (e.event_id.as_u128(), e.event_type.as_str())).collect();
        assert_eq!(types, [(1, "SignedUp"), (3, "SignedUp")], "a Joined v3 stays Joined and is left out");
        let old_name = Reading::new(only(&["Joined"]), upcasters()).upcast(events, Vec::new());
        let ids: Vec<_> = old_name.events.iter().map(|e| e.event_id.as_u128()).collect();
        assert_eq!(ids, [2], "a filter on the old name sees only what is still called so");
    }

    #[test]
    fn a_failing_event_is_kept_as_stored_with_its_error() {
        let failing = event(1, "Joined", 1, json!({"name": 7}));
        let prepared = Reading::new(only(&["SignedUp"]), upcasters()).upcast(vec![failing.clone()], Vec::new());
        assert_eq!(prepared.events, [failing]);
        let (id, error) = &prepared.failed[0];
        assert_eq!(*id, Uuid::from_u128(1));
        let text = error.to_string();
        assert!(text.contains("Joined v1") && text.contains("no name"), "{text}");
        let elsewhere =
            Reading::new(only(&["Left"]), upcasters()).upcast(vec![event(1, "Joined", 1, json!({}))], Vec::new());
        assert!(elsewhere.events.is_empty() && elsewhere.failed.is_empty(), "its chain does not lead to the filter");
    }
}
