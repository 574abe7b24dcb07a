//! Operator repairs of parked aggregates: retry, skip or discard a dead letter's
//! sequence, through the current handler, in version order, chunk by chunk.
//!
//! Each chunk is one store transaction that holds the aggregate's partition checkpoint,
//! so the partition's runner cannot commit meanwhile and re-reads the parked set after.
//! Only events the runner has already passed over (at or before its checkpoint) are
//! applied here; later ones are the runner's once the aggregate is unparked.

use chrono::{DateTime, Utc};

use crate::dead_letter::{DeadLetter, DeadLetterStatus, DiscardedEvent, OperatorAction, Parked};
use crate::error::{HandlerError, StoreError};
use crate::event::{DomainEvent, EventFilter};
use crate::fold::Fold;
use crate::handler::ProjectionHandler;
use crate::runtime::RuntimeError;
use crate::store::keys::InRepair;
use crate::store::{rules, EventStore, ReadBound, RepairSession, Repairs};
use crate::upcast::{Prepared, Reading, Upcasters};

/// What an operator asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepairAction {
    /// Re-apply the parked sequence, starting with the dead-lettered event.
    Retry,
    /// Drop the dead-lettered event and re-apply the rest of the sequence. For an event
    /// dead-lettered because earlier versions are missing, accept the gap instead: the
    /// event and the rest apply after it.
    Skip,
    /// Drop the whole parked sequence.
    Discard,
}

impl RepairAction {
    pub fn as_str(self) -> &'static str {
        match self {
            RepairAction::Retry => "retry",
            RepairAction::Skip => "skip",
            RepairAction::Discard => "discard",
        }
    }
}

/// How a repair ended.
#[derive(Debug, Clone, PartialEq)]
pub enum RepairEnd {
    /// The letter is closed and its aggregate unparked.
    Done,
    /// An event failed again; the aggregate stays parked behind `dead_letter_id`.
    Stopped { dead_letter_id: i64, event_id: uuid::Uuid, version: i64, error: String },
}

#[derive(Debug, Clone, PartialEq)]
pub struct RepairOutcome {
    pub events_applied: u64,
    pub events_dropped: u64,
    pub end: RepairEnd,
}

fn action(id: i64, actor: &str, what: RepairAction, outcome: String) -> OperatorAction {
    OperatorAction {
        dead_letter_id: id,
        actor: actor.to_owned(),
        action: what.as_str().to_owned(),
        // The store stamps the time.
        at: DateTime::<Utc>::MIN_UTC,
        outcome,
    }
}

/// Runs `what` on dead letter `id` of `handler`'s projection.
///
/// Safe to run twice, also concurrently: repairs of one letter take turns, and a second
/// one finds the letter closed (an `InvalidInput` error saying so) or the sequence moved.
pub async fn repair<H: ProjectionHandler, S: Repairs + EventStore>(
    handler: &H,
    store: &S,
    filter: &EventFilter,
    id: i64,
    what: RepairAction,
    actor: &str,
    chunk: usize,
) -> Result<RepairOutcome, RuntimeError> {
    let reading = Reading::new(filter.clone(), Upcasters::new());
    repair_upcast(handler, store, &reading, id, what, actor, chunk).await
}

/// [`repair`], with every event upcast before the handler sees it, as live processing
/// does (see [`crate::BatchRunner::upcasters`]). `reading` holds the configuration's
/// filter (the handler's own is added here) and the enabled upcasters. An event an
/// upcaster fails on fails the repair like any event the handler fails on.
pub async fn repair_upcast<H: ProjectionHandler, S: Repairs + EventStore>(
    handler: &H,
    store: &S,
    reading: &Reading,
    id: i64,
    what: RepairAction,
    actor: &str,
    chunk: usize,
) -> Result<RepairOutcome, RuntimeError> {
    let reading = reading.narrowed(&handler.filter());
    let chunk = chunk.max(1);
    let schema = handler.schema();
    let mut applied = 0u64;
    let mut dropped = 0u64;
    let mut first = true;
    loop {
        let mut session = store.begin_repair(handler.name(), id).await?;
        let letter = session.dead_letter().clone();
        if letter.status != DeadLetterStatus::Open {
            if first {
                return Err(StoreError::InvalidInput(format!(
                    "dead letter {id} is already {}: nothing to {}",
                    letter.status,
                    what.as_str()
                ))
                .into());
            }
            return Ok(RepairOutcome { events_applied: applied, events_dropped: dropped, end: RepairEnd::Done });
        }
        let checkpoint = session.checkpoint();
        let parked = session.parked().unwrap_or(Parked {
            aggregate_id: letter.aggregate_id,
            from_version: letter.version,
            dead_letter_id: id,
        });
        // The parked sequence the runner passed over, in version order.
        let mut read = session
            .read_aggregate(parked.aggregate_id, ReadBound::Versions { after: parked.from_version - 1, upto: i64::MAX })
            .await?;
        read.retain(|e| e.checkpoint() <= checkpoint);
        let Prepared { events, failed: unreadable, audit } = reading.prepare(&mut InRepair(&mut session), read).await?;
        session.record_audit(&audit).await?;
        // Events taken out by an earlier skip or discard stay out (the parking may be
        // newer than that decision, e.g. made by a rebuild).
        let taken_out: std::collections::HashSet<uuid::Uuid> =
            session.discarded_events().await?.into_iter().map(|d| d.event_id).collect();
        let decided = |e: &DomainEvent, decision| DiscardedEvent {
            event_id: e.event_id,
            aggregate_id: e.aggregate_id,
            version: e.version,
            dead_letter_id: id,
            decision,
        };

        if what == RepairAction::Discard {
            let mut fold = Fold::new(handler);
            let keys = fold.keys_to_load(&events);
            let rows = session.load_rows(schema, &keys).await?;
            fold.insert_loaded(&keys, &rows).map_err(|e| row_error(handler, e))?;
            for e in &events {
                if let Some(key) = handler.key(e) {
                    fold.consume_version(key, e.version);
                }
            }
            session.write_rows(schema, fold.changes()).await?;
            dropped += events.len() as u64;
            let discarded: Vec<DiscardedEvent> = events
                .iter()
                .filter(|e| !taken_out.contains(&e.event_id))
                .map(|e| decided(e, DeadLetterStatus::Discarded))
                .collect();
            session.discard_events(&discarded).await?;
            session.set_parking(None).await?;
            let outcome = format!("discarded {} parked event(s)", events.len());
            session.close(DeadLetterStatus::Discarded, &action(id, actor, what, outcome)).await?;
            session.commit().await?;
            return Ok(RepairOutcome { events_applied: 0, events_dropped: dropped, end: RepairEnd::Done });
        }

        let more = events.len() > chunk;
        let part = &events[..events.len().min(chunk)];
        let skipped = |e: &DomainEvent| what == RepairAction::Skip && e.event_id == letter.event_id;
        let taken = |e: &DomainEvent| taken_out.contains(&e.event_id);
        let limit = store.max_payload_bytes();
        let (fold, failed, skipped_ids) =
            apply_sequence(handler, &mut session, (part, &unreadable), &reading, &skipped, &taken, limit).await?;
        applied += fold.events_applied();
        let now_skipped: Vec<DiscardedEvent> = part
            .iter()
            .filter(|e| skipped_ids.contains(&e.event_id))
            .map(|e| decided(e, DeadLetterStatus::Skipped))
            .collect();
        dropped += now_skipped.len() as u64;
        session.discard_events(&now_skipped).await?;
        session.write_rows(schema, fold.changes()).await?;
        let closing = if what == RepairAction::Skip { DeadLetterStatus::Skipped } else { DeadLetterStatus::Resolved };
        match failed {
            None if more => {
                let next = part.last().map_or(parked.from_version, |e| e.version + 1);
                session.set_parking(Some(Parked { from_version: next, ..parked })).await?;
                session.commit().await?;
                first = false;
            }
            None => {
                session.set_parking(None).await?;
                let outcome = format!("applied {applied} event(s); aggregate unparked");
                session.close(closing, &action(id, actor, what, outcome)).await?;
                session.commit().await?;
                return Ok(RepairOutcome { events_applied: applied, events_dropped: dropped, end: RepairEnd::Done });
            }
            Some((event, error)) if event.event_id == letter.event_id => {
                session.failed_again(&error).await?;
                if event.version != parked.from_version {
                    session.set_parking(Some(Parked { from_version: event.version, ..parked })).await?;
                }
                let outcome = format!("stopped: event {} failed again: {error}", event.event_id);
                session.record_action(&action(id, actor, what, outcome)).await?;
                session.commit().await?;
                let end =
                    RepairEnd::Stopped { dead_letter_id: id, event_id: event.event_id, version: event.version, error };
                return Ok(RepairOutcome { events_applied: applied, events_dropped: dropped, end });
            }
            Some((event, error)) => {
                let class = crate::error::ErrorClass::Permanent;
                let letter_id = session
                    .send_letter(&DeadLetter::new(handler.name(), &event, &error, class, 1, DateTime::<Utc>::MIN_UTC))
                    .await?;
                session
                    .set_parking(Some(Parked {
                        aggregate_id: parked.aggregate_id,
                        from_version: event.version,
                        dead_letter_id: letter_id,
                    }))
                    .await?;
                let outcome = format!(
                    "applied {applied} event(s); event {} (v{}) failed: now dead letter {letter_id}",
                    event.event_id, event.version
                );
                session.close(closing, &action(id, actor, what, outcome)).await?;
                session.commit().await?;
                let end = RepairEnd::Stopped {
                    dead_letter_id: letter_id,
                    event_id: event.event_id,
                    version: event.version,
                    error,
                };
                return Ok(RepairOutcome { events_applied: applied, events_dropped: dropped, end });
            }
        }
    }
}

fn row_error<H: ProjectionHandler>(handler: &H, e: crate::read_model::RowError) -> RuntimeError {
    RuntimeError::Row { projection: handler.name(), reason: e.to_string() }
}

/// Applies `events` (one aggregate, version order) up to the first failure, dropping
/// the event `skip` names. An event with earlier versions missing from the store fails
/// (as it did for the runner), unless it is the skipped one: skipping it accepts the gap,
/// and it applies. `unreadable` are the events an upcaster failed on (see
/// [`Reading::prepare`]). Returns the fold holding exactly the events before the failure,
/// the failure, and how many events were dropped.
async fn apply_sequence<'h, H: ProjectionHandler, R: RepairSession>(
    handler: &'h H,
    session: &mut R,
    (events, unreadable): (&[DomainEvent], &[(uuid::Uuid, HandlerError)]),
    reading: &Reading,
    skipped: &impl Fn(&DomainEvent) -> bool,
    taken_out: &impl Fn(&DomainEvent) -> bool,
    max_payload_bytes: usize,
) -> Result<(Fold<'h, H>, Option<(DomainEvent, String)>, Vec<uuid::Uuid>), RuntimeError> {
    let schema = handler.schema();
    let keys = Fold::new(handler).keys_to_load(events);
    let rows = session.load_rows(schema, &keys).await?;
    let mut unreadable = unreadable.to_vec();
    // Versions missing before the sequence (a version ordered after the checkpoint).
    let mut gap_events = Vec::new();
    let loaded = || -> Result<Fold<'h, H>, RuntimeError> {
        let mut fold = Fold::new(handler).max_payload_bytes(max_payload_bytes);
        fold.insert_loaded(&keys, &rows).map_err(|e| row_error(handler, e))?;
        Ok(fold)
    };
    let gaps = loaded()?.gaps(events);
    let mut found_gaps = Vec::with_capacity(gaps.len());
    for gap in &gaps {
        let found =
            session.read_aggregate(gap.aggregate_id, ReadBound::Versions { after: gap.after, upto: gap.upto }).await?;
        found_gaps.push(rules::missing_versions(gap.after, gap.upto, found.iter().map(|e| e.version)));
        let prepared = reading.prepare(&mut InRepair(&mut *session), found).await?;
        session.record_audit(&prepared.audit).await?;
        gap_events.extend(prepared.events);
        unreadable.extend(prepared.failed);
    }
    let fresh = || -> Result<Fold<'h, H>, RuntimeError> {
        let mut fold = loaded()?;
        fold.failing_upcasts(unreadable.iter().cloned());
        Ok(fold)
    };
    let mut fold = fresh()?;
    // Versions of the sequence with earlier versions missing: (version, first, last).
    let unfilled: Vec<(i64, i64, i64)> = gaps
        .iter()
        .zip(found_gaps)
        .filter_map(|(gap, missing)| missing.map(|(first, last)| (gap.upto.saturating_add(1), first, last)))
        .collect();
    let missing_before = |e: &DomainEvent| unfilled.iter().find(|(v, ..)| *v == e.version).map(|(_, f, l)| (*f, *l));
    // Skipping the event after a gap accepts the gap: the event itself applies.
    let skipped_here = |e: &DomainEvent| skipped(e) && missing_before(e).is_none();
    let skip = |e: &DomainEvent| skipped_here(e) || taken_out(e);
    let dropped: Vec<uuid::Uuid> = events.iter().filter(|e| skipped_here(e)).map(|e| e.event_id).collect();
    for (i, event) in events.iter().enumerate() {
        let missing = missing_before(event).filter(|_| !skipped(event) && !taken_out(event));
        if let Some((first, last)) = missing {
            let error = HandlerError::VersionsMissing {
                event_id: event.event_id,
                aggregate_id: event.aggregate_id,
                version: event.version,
                first,
                last,
            };
            return Ok((fold, Some((event.clone(), error.to_string())), dropped));
        }
        if skip(event) {
            if let Some(key) = handler.key(event) {
                fold.consume_version(key, event.version);
            }
            continue;
        }
        if let Err(failure) = fold.apply(std::slice::from_ref(event), &gap_events) {
            // The handler may have touched the row before failing: redo what came before.
            let failed = events
                .iter()
                .chain(gap_events.iter())
                .find(|e| e.event_id == failure.event_id)
                .cloned()
                .unwrap_or_else(|| event.clone());
            let mut redo = fresh()?;
            for earlier in &events[..i] {
                if skip(earlier) {
                    if let Some(key) = handler.key(earlier) {
                        redo.consume_version(key, earlier.version);
                    }
                } else {
                    redo.apply(std::slice::from_ref(earlier), &gap_events)?;
                }
            }
            return Ok((redo, Some((failed, failure.error.to_string())), dropped));
        }
    }
    Ok((fold, None, dropped))
}
