//! Time travel: one read-model row as it was at an instant, replayed from the events.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::event::EventFilter;
use crate::fold::Fold;
use crate::handler::ProjectionHandler;
use crate::runtime::RuntimeError;
use crate::store::{EventStore, ProjectionStore, ReadBound};
use crate::upcast::{Reading, Upcasters};

/// A row as it was at an instant: replays the events that feed `key` up to `at`.
///
/// The replay leaves out what live processing left out ([`ProjectionStore::exclusions`]):
/// events operators skipped or discarded, and the versions of a parked aggregate from
/// its dead letter on.
///
/// For aggregate-version projections keyed by aggregate id this reads one aggregate;
/// otherwise it scans the projection's events in commit order.
pub async fn state_at<H, S>(
    handler: &H,
    store: &S,
    filter: &EventFilter,
    key: &H::Key,
    aggregate_id: Option<Uuid>,
    at: Option<DateTime<Utc>>,
) -> Result<Option<(H::Row, i64)>, RuntimeError>
where
    H: ProjectionHandler,
    S: EventStore + ProjectionStore,
{
    state_upcast_at(handler, store, filter, &Upcasters::new(), key, aggregate_id, at).await
}

/// [`state_at`], with every event upcast before the handler sees it, as live processing
/// does (see [`crate::BatchRunner::upcasters`]). An event an upcaster fails on, unless
/// live processing parked its aggregate before it, fails the replay naming the event.
pub async fn state_upcast_at<H, S>(
    handler: &H,
    store: &S,
    filter: &EventFilter,
    upcasters: &Upcasters,
    key: &H::Key,
    aggregate_id: Option<Uuid>,
    at: Option<DateTime<Utc>>,
) -> Result<Option<(H::Row, i64)>, RuntimeError>
where
    H: ProjectionHandler,
    S: EventStore + ProjectionStore,
{
    state_read_at(handler, store, &Reading::new(filter.clone(), upcasters.clone()), key, aggregate_id, at).await
}

/// [`state_upcast_at`] through `reading` (the configuration's filter, the enabled
/// upcasters, and what the projection may decrypt; the handler's own filter is added
/// here). The decrypts are audited.
pub async fn state_read_at<H, S>(
    handler: &H,
    store: &S,
    reading: &Reading,
    key: &H::Key,
    aggregate_id: Option<Uuid>,
    at: Option<DateTime<Utc>>,
) -> Result<Option<(H::Row, i64)>, RuntimeError>
where
    H: ProjectionHandler,
    S: EventStore + ProjectionStore,
{
    let reading = reading.narrowed(&handler.filter());
    let mut audit = Vec::new();
    let exclusions = store.exclusions(handler.name()).await?;
    let mut fold = Fold::new(handler)
        .assume_absent(true)
        .max_payload_bytes(store.max_payload_bytes())
        .discarding(exclusions.discarded.iter().copied());
    if let Some(id) = aggregate_id {
        let bound = at.map_or(ReadBound::All, ReadBound::At);
        let prepared = reading.prepare(&mut &*store, store.read_aggregate(id, bound).await?).await?;
        audit.extend(prepared.audit);
        fold.failing_upcasts(prepared.failed);
        for e in prepared.events.iter().filter(|e| !exclusions.holds(e)) {
            if handler.key(e).as_ref() == Some(key) {
                fold.apply_one(e)?;
            }
        }
    } else {
        // Every committed event, not only those below the read horizon: this is a one-off
        // read, and a counting row must not miss a recent commit.
        let mut after = 0;
        loop {
            let events = store.read_committed(after, reading.store_filter(), 10_000).await?;
            let Some(last) = events.last() else { break };
            after = last.position;
            let prepared = reading.prepare(&mut &*store, events).await?;
            audit.extend(prepared.audit);
            fold.failing_upcasts(prepared.failed);
            for e in &prepared.events {
                if at.is_some_and(|at| e.timestamp > at) || exclusions.holds(e) {
                    continue;
                }
                if handler.key(e).as_ref() == Some(key) {
                    fold.apply_one(e)?;
                }
            }
        }
    }
    store.record_audit(&audit).await?;
    Ok(fold.row(key).cloned().map(|row| (row, fold.version(key))))
}
