//! Applying events to typed read-model rows in memory, and turning the result into the
//! row changes a store writes. Shared by live batches and rebuilds.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::error::HandlerError;
use crate::event::DomainEvent;
use crate::handler::{Ordering, ProjectionHandler};
use crate::read_model::{Record, RowError, RowKey, RowReader, TableSchema, Value};
use crate::store::rules;

/// A handler failed on one event.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "projection {projection}: event {event_id} at position {position} (aggregate {aggregate_id} v{version}): {error}"
)]
pub struct ApplyError {
    pub projection: &'static str,
    pub event_id: Uuid,
    pub position: i64,
    pub aggregate_id: Uuid,
    pub version: i64,
    pub error: HandlerError,
}

#[derive(Debug, Clone)]
struct Slot<R> {
    /// The row as stored (None: absent).
    stored: Option<R>,
    stored_version: i64,
    row: Option<R>,
    version: i64,
    /// Events applied to this row since it was loaded (to undo their count).
    applied: u64,
}

impl<R> Slot<R> {
    fn absent() -> Self {
        Slot { stored: None, stored_version: 0, row: None, version: 0, applied: 0 }
    }
}

enum Change {
    Upsert(Vec<Value>),
    Delete(Vec<Value>),
}

/// Hash maps keyed by row keys: a fast fixed-seed hasher (keys come from the event log,
/// and SipHash was a tenth of a rebuild's client time).
type Map<K, V> = HashMap<K, V, foldhash::fast::FixedState>;

/// A set of row keys, hashed like [`Map`].
pub type KeySet<K> = std::collections::HashSet<K, foldhash::fast::FixedState>;

/// Where applying a batch stopped: the index of the batch event being applied (the
/// failure may be a gap event applied just before it) and the failure. Every event
/// before that index was applied.
#[derive(Debug)]
pub struct Halt {
    pub index: usize,
    pub failure: Box<ApplyError>,
}

/// A missing stretch of an aggregate's versions that must be applied before the event
/// that revealed it (see [`Fold::gaps`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    pub aggregate_id: Uuid,
    /// Last version the row has (or will have, earlier in the batch).
    pub after: i64,
    /// Last missing version.
    pub upto: i64,
}

/// Typed rows of one projection, keyed by row key, with what the store holds for each.
#[derive(Debug)]
pub struct Fold<'h, H: ProjectionHandler> {
    handler: &'h H,
    slots: Map<H::Key, Slot<H::Row>>,
    /// When true, keys not in `slots` are known to have no stored row (a rebuild after
    /// clearing the table), so nothing needs loading.
    assume_absent: bool,
    events_applied: u64,
    last_event_at: Option<DateTime<Utc>>,
    /// Events an operator took out: consumed as versions, never applied.
    discarded: KeySet<Uuid>,
    /// Rows as they were when the current page began ([`Fold::begin_page`]), for rows
    /// whose `stored` state is older than that (a rebuild keeps rows across pages).
    page: Option<Map<H::Key, Slot<H::Row>>>,
    /// Stored events with a larger payload fail before the handler sees them.
    max_payload_bytes: usize,
    /// Events an upcaster failed on: they fail with this error before the handler sees
    /// them (see [`Fold::failing_upcasts`]).
    unreadable: Map<Uuid, HandlerError>,
    /// Rows are captured at every multiple of this many versions ([`Fold::snapshots_every`]).
    snapshot_every: Option<i64>,
    /// Rows captured since the last [`Fold::take_snapshots`], by key and version (a row
    /// replayed after a failure is captured again, not twice).
    captured: Map<(H::Key, i64), Captured>,
}

impl<'h, H: ProjectionHandler> Fold<'h, H> {
    pub fn new(handler: &'h H) -> Self {
        Self {
            handler,
            slots: Map::default(),
            assume_absent: false,
            events_applied: 0,
            last_event_at: None,
            discarded: KeySet::default(),
            page: None,
            max_payload_bytes: usize::MAX,
            unreadable: Map::default(),
            snapshot_every: None,
            captured: Map::default(),
        }
    }

    /// Events whose upcasting failed (see [`crate::upcast::Reading::prepare`]): applying
    /// one fails with its error, so it is dead-lettered and parks its aggregate like any
    /// other permanent failure, and the handler never sees it in its stored shape.
    pub fn failing_upcasts(&mut self, failed: impl IntoIterator<Item = (Uuid, HandlerError)>) {
        self.unreadable.extend(failed);
    }

    /// Events with these ids count as consumed versions of their rows and are never
    /// applied (an operator skipped or discarded them).
    pub fn discarding(mut self, events: impl IntoIterator<Item = Uuid>) -> Self {
        self.discarded = events.into_iter().collect();
        self
    }

    /// Marks the start of a page of events: [`Fold::take_out`] puts rows back as they
    /// are now rather than as stored. Each row is copied once per page, when first touched.
    pub fn begin_page(&mut self) {
        self.page = Some(Map::default());
    }

    /// Events whose payload is over `bytes` fail with [`HandlerError::Oversized`]
    /// instead of being applied (see [`rules::check_stored_payload`]).
    pub fn max_payload_bytes(mut self, bytes: usize) -> Self {
        self.max_payload_bytes = bytes;
        self
    }

    /// Keys not yet in memory are treated as absent rather than loaded.
    pub fn assume_absent(mut self, yes: bool) -> Self {
        self.assume_absent = yes;
        self
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn events_applied(&self) -> u64 {
        self.events_applied
    }

    pub fn last_event_at(&self) -> Option<DateTime<Utc>> {
        self.last_event_at
    }

    fn schema(&self) -> &'static TableSchema {
        self.handler.schema()
    }

    fn versioned(&self) -> bool {
        self.handler.ordering() == Ordering::AggregateVersion
    }

    /// Key values of the rows these events touch that must be loaded from the store.
    pub fn keys_to_load(&self, events: &[DomainEvent]) -> Vec<Vec<Value>> {
        if self.assume_absent {
            return Vec::new();
        }
        let mut seen = std::collections::HashSet::with_hasher(foldhash::fast::FixedState::default());
        let mut out = Vec::new();
        for event in events {
            if let Some(key) = self.handler.key(event) {
                if !self.slots.contains_key(&key) && seen.insert(key.clone()) {
                    let mut values = Vec::with_capacity(self.schema().key.len());
                    key.to_values(&mut values);
                    out.push(values);
                }
            }
        }
        out
    }

    /// Adds stored rows (schema order: key, values, version) and marks every other key
    /// in `requested` as absent.
    pub fn insert_loaded(&mut self, requested: &[Vec<Value>], rows: &[Vec<Value>]) -> Result<(), RowError> {
        let schema = self.schema();
        for values in rows {
            let mut reader = RowReader::new(schema, values);
            let key = H::Key::from_values(&mut reader)?;
            let row = H::Row::from_values(&mut reader)?;
            let version = if schema.version_column.is_some() { reader.bigint()? } else { 0 };
            let slot = Slot { stored: Some(row.clone()), stored_version: version, row: Some(row), version, applied: 0 };
            self.slots.insert(key, slot);
        }
        for key_values in requested {
            let mut reader = RowReader::new(schema, key_values);
            let key = H::Key::from_values(&mut reader)?;
            self.slots.entry(key).or_insert_with(Slot::absent);
        }
        Ok(())
    }

    /// Stretches of aggregate versions missing before events of this batch. Only
    /// [`Ordering::AggregateVersion`] projections have gaps: a transaction's id is taken
    /// at its first write, so version n+1 can sort before version n in commit-safe order.
    pub fn gaps(&self, events: &[DomainEvent]) -> Vec<Gap> {
        self.gaps_except(events, |_| false)
    }

    /// [`Fold::gaps`], ignoring the events `held` says wait elsewhere (parked).
    pub fn gaps_except(&self, events: &[DomainEvent], held: impl Fn(&DomainEvent) -> bool) -> Vec<Gap> {
        if !self.versioned() {
            return Vec::new();
        }
        let mut expected: Map<&H::Key, i64> = Map::default();
        let mut keys = Vec::with_capacity(events.len());
        for event in events {
            keys.push(if held(event) { None } else { self.handler.key(event) });
        }
        let mut gaps = Vec::new();
        for (event, key) in events.iter().zip(&keys) {
            let Some(key) = key else { continue };
            let at = expected.entry(key).or_insert_with(|| self.slots.get(key).map_or(0, |s| s.version));
            if event.version > at.saturating_add(1) {
                gaps.push(Gap { aggregate_id: event.aggregate_id, after: *at, upto: event.version - 1 });
            }
            *at = (*at).max(event.version);
        }
        gaps
    }

    /// Applies events in order. `gap_events` are the events read for [`Fold::gaps`]; each
    /// is applied just before the first event that needs it.
    pub fn apply(&mut self, events: &[DomainEvent], gap_events: &[DomainEvent]) -> Result<(), Box<ApplyError>> {
        self.apply_except(events, gap_events, |_| false)
    }

    /// [`Fold::apply`], leaving out the events `held` says wait elsewhere (parked).
    pub fn apply_except(
        &mut self,
        events: &[DomainEvent],
        gap_events: &[DomainEvent],
        held: impl Fn(&DomainEvent) -> bool,
    ) -> Result<(), Box<ApplyError>> {
        self.apply_from(events, gap_events, 0, held).map_err(|halt| halt.failure)
    }

    /// Applies `events[start..]` in order, leaving out the `held` ones; gap events are
    /// applied just before the first event that needs them. On a failure, says at which
    /// batch event it stopped, so the caller can go on from there without folding the
    /// batch again.
    pub fn apply_from(
        &mut self,
        events: &[DomainEvent],
        gap_events: &[DomainEvent],
        start: usize,
        held: impl Fn(&DomainEvent) -> bool,
    ) -> Result<(), Halt> {
        self.apply_rows(events, gap_events, start, &held, None)
    }

    /// Puts the rows at `keys` back as the store holds them and applies `events` again
    /// to those rows only, leaving out the `held` ones: after a failure parks an
    /// aggregate, the rows its later versions already reached are replayed without them.
    pub fn redo_rows(
        &mut self,
        keys: &KeySet<H::Key>,
        events: &[DomainEvent],
        gap_events: &[DomainEvent],
        held: impl Fn(&DomainEvent) -> bool,
    ) -> Result<(), Box<ApplyError>> {
        for key in keys {
            if let Some(slot) = self.slots.get_mut(key) {
                match self.page.as_ref().map(|page| page.get(key)) {
                    // Not touched since the page began: already as it was then.
                    Some(None) => continue,
                    Some(Some(base)) => {
                        self.events_applied -= slot.applied - base.applied;
                        slot.row = base.row.clone();
                        slot.version = base.version;
                        slot.applied = base.applied;
                    }
                    None => {
                        self.events_applied -= slot.applied;
                        slot.row = slot.stored.clone();
                        slot.version = slot.stored_version;
                        slot.applied = 0;
                    }
                }
            }
        }
        self.apply_rows(events, gap_events, 0, &held, Some(keys)).map_err(|halt| halt.failure)
    }

    /// After `failed` halted [`Fold::apply_from`] at `index` and its aggregate was
    /// parked from its version (`held` says so now), puts back every row the parked
    /// versions reached (the failing event's own row too: a handler may touch it before
    /// failing) and replays the batch before `index` on those rows only.
    pub fn take_out(
        &mut self,
        events: &[DomainEvent],
        gap_events: &[DomainEvent],
        index: usize,
        failed: &DomainEvent,
        held: impl Fn(&DomainEvent) -> bool,
    ) -> Result<(), Box<ApplyError>> {
        let parked = |e: &DomainEvent| e.aggregate_id == failed.aggregate_id && e.version >= failed.version;
        let reached: KeySet<H::Key> = events[..=index.min(events.len().saturating_sub(1))]
            .iter()
            .chain(gap_events)
            .chain(std::iter::once(failed))
            .filter(|e| parked(e))
            .filter_map(|e| self.handler.key(e))
            .collect();
        if reached.is_empty() {
            return Ok(());
        }
        self.redo_rows(&reached, &events[..index], gap_events, held)
    }

    fn apply_rows(
        &mut self,
        events: &[DomainEvent],
        gap_events: &[DomainEvent],
        start: usize,
        held: &dyn Fn(&DomainEvent) -> bool,
        only: Option<&KeySet<H::Key>>,
    ) -> Result<(), Halt> {
        let wanted = |fold: &Self, e: &DomainEvent| {
            !held(e) && only.is_none_or(|keys| fold.handler.key(e).is_some_and(|k| keys.contains(&k)))
        };
        let mut fill: Map<Uuid, Vec<&DomainEvent>> = Map::default();
        for e in gap_events {
            fill.entry(e.aggregate_id).or_default().push(e);
        }
        for list in fill.values_mut() {
            list.sort_by_key(|e| e.version);
        }
        for (index, event) in events.iter().enumerate().skip(start) {
            if !wanted(self, event) {
                continue;
            }
            let halt = |failure| Halt { index, failure };
            if let Some(missing) = fill.get(&event.aggregate_id) {
                let due: Vec<&DomainEvent> =
                    missing.iter().copied().filter(|e| e.version < event.version && wanted(self, e)).collect();
                for e in due {
                    self.apply_one(e).map_err(halt)?;
                }
            }
            self.apply_one(event).map_err(halt)?;
        }
        Ok(())
    }

    /// Applies one event unless the projection already has it.
    pub fn apply_one(&mut self, event: &DomainEvent) -> Result<(), Box<ApplyError>> {
        let failed = |error| {
            let error = withhold_plaintext(event, error);
            Box::new(ApplyError {
                projection: self.handler.name(),
                event_id: event.event_id,
                position: event.position,
                aggregate_id: event.aggregate_id,
                version: event.version,
                error,
            })
        };
        let discarded = self.discarded.contains(&event.event_id);
        // Checked before the handler sees the event (even one it would ignore), so a
        // malformed row fails the same way for every projection. A discarded event is
        // never seen, malformed or not.
        if !discarded {
            if let Some(error) = self.unreadable.get(&event.event_id) {
                return Err(failed(error.clone()));
            }
            rules::check_stored_payload(event, self.max_payload_bytes).map_err(failed)?;
            event.check_payload_shape().map_err(failed)?;
        }
        let Some(key) = self.handler.key(event) else {
            return Ok(());
        };
        let versioned = self.versioned();
        if let Some(page) = &mut self.page {
            if !page.contains_key(&key) {
                let now = self.slots.get(&key).map_or_else(Slot::absent, |slot| Slot {
                    stored: None,
                    stored_version: 0,
                    row: slot.row.clone(),
                    version: slot.version,
                    applied: slot.applied,
                });
                page.insert(key.clone(), now);
            }
        }
        let snapshot_key = self.snapshot_every.filter(|every| event.version % every == 0).map(|_| key.clone());
        let slot = self.slots.entry(key).or_insert_with(Slot::absent);
        if versioned && event.version <= slot.version {
            return Ok(());
        }
        if discarded {
            slot.version = slot.version.max(event.version);
            return Ok(());
        }
        // A panic is the handler's bug on this event: it dead-letters the event and parks
        // its aggregate instead of taking the partition down with it.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.handler.handle(&mut slot.row, event)))
            .unwrap_or_else(|panic| {
                Err(HandlerError::Panicked { event_id: event.event_id, message: panic_message(panic.as_ref()) })
            })
            .map_err(failed)?;
        if versioned {
            slot.version = event.version;
        }
        slot.applied += 1;
        let snapshot_row = snapshot_key.and_then(|key| slot.row.clone().map(|row| (key, row)));
        self.events_applied += 1;
        self.last_event_at = Some(self.last_event_at.map_or(event.timestamp, |t| t.max(event.timestamp)));
        if let Some((key, row)) = snapshot_row {
            self.capture(key, &row, event);
        }
        Ok(())
    }

    /// Forgets every row (after a flush), so later events load from the store again.
    pub fn evict(&mut self) {
        self.slots.clear();
        self.page = self.page.as_ref().map(|_| Map::default());
        self.assume_absent = false;
    }

    /// Marks `version` of the row at `key` as consumed without applying it (an operator
    /// skipped or discarded it), so the next version follows without a gap.
    pub fn consume_version(&mut self, key: H::Key, version: i64) {
        let slot = self.slots.entry(key).or_insert_with(Slot::absent);
        slot.version = slot.version.max(version);
    }

    /// Starts counting applied events from zero again.
    pub fn reset_counters(&mut self) {
        self.events_applied = 0;
        self.last_event_at = None;
    }

    /// The current row for a key (after applying).
    pub fn row(&self, key: &H::Key) -> Option<&H::Row> {
        self.slots.get(key).and_then(|s| s.row.as_ref())
    }

    pub fn version(&self, key: &H::Key) -> i64 {
        self.slots.get(key).map_or(0, |s| s.version)
    }
}

/// `error` without the values of the event's decrypted fields: its text goes to dead
/// letters, logs and status rows, which shredding cannot reach. When a listed field
/// cannot be found (an upcaster moved it), no text about the event is kept at all.
fn withhold_plaintext(event: &DomainEvent, error: HandlerError) -> HandlerError {
    if event.encrypted_fields.is_empty() {
        return error;
    }
    let payload: Option<serde_json::Value> = serde_json::from_str(event.event_data.get()).ok();
    match payload.and_then(|payload| crate::crypto::plaintext_leaves(&payload, &event.encrypted_fields)) {
        Some(leaves) => error.map_texts(|text| crate::crypto::scrub_text(text, &leaves)),
        None => error.map_texts(|_| WITHHELD.to_owned()),
    }
}

const WITHHELD: &str = "details withheld: the event carries personal data that could not be told apart in this text";

/// The text a panic carries (`panic!` with a literal or a formatted message).
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

mod changes;
mod snapshots;
pub use snapshots::Captured;
#[cfg(test)]
mod tests;
