//! Time travel: one read-model row as it was at an instant, replayed from the events,
//! from the latest usable snapshot on where the projection keeps them.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::dead_letter::Exclusions;
use crate::event::EventFilter;
use crate::fold::Fold;
use crate::handler::{Ordering, ProjectionHandler};
use crate::read_model::RowKey;
use crate::runtime::RuntimeError;
use crate::store::snapshots::{chains, decode_row, row_key, Snapshot, SnapshotQuery, Snapshots};
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
    let travel = TimeTravel::new(handler, &EventFilter::all()).reading(reading);
    let exclusions = store.exclusions(handler.name()).await?;
    Ok(travel.replay(store, &exclusions, key, aggregate_id, at, None).await?.row)
}

/// What a time-travel replay found, and what it read to find it.
#[derive(Debug, Clone, PartialEq)]
pub struct Travelled<R> {
    /// The row and its version (`None`: the row did not exist then).
    pub row: Option<(R, i64)>,
    /// Events read from the store for the replay.
    pub events_read: u64,
    /// The version of the snapshot the replay started from, if it started from one.
    pub from_snapshot: Option<i64>,
}

/// Time travel for one projection, optionally from snapshots
/// ([`crate::store::snapshots`]).
#[derive(Debug)]
pub struct TimeTravel<'h, H> {
    handler: &'h H,
    reading: Reading,
    snapshots: bool,
}

impl<'h, H: ProjectionHandler> TimeTravel<'h, H> {
    /// `filter` narrows the handler's own filter (from `projections.yaml`).
    pub fn new(handler: &'h H, filter: &EventFilter) -> Self {
        Self { handler, reading: Reading::new(handler.filter().and(filter), Upcasters::new()), snapshots: false }
    }

    /// Upcasts every event before the handler sees it, as live processing does.
    pub fn upcasters(mut self, upcasters: Upcasters) -> Self {
        self.reading =
            Reading::new(self.reading.filter().clone(), upcasters).decrypting(self.reading.decryption().clone());
        self
    }

    /// Reads as `reading` says (filter, upcasters, and what the projection may
    /// decrypt), narrowed to the handler's own filter.
    pub fn reading(mut self, reading: &Reading) -> Self {
        self.reading = reading.narrowed(&self.handler.filter());
        self
    }

    /// Starts from the latest snapshot that fits (the projection keeps them).
    pub fn snapshots(mut self, yes: bool) -> Self {
        self.snapshots = yes;
        self
    }

    /// The row for `key` as it was at `at` (now without one), as [`state_upcast_at`]
    /// gives it. With snapshots, an aggregate-version row keyed by `aggregate_id` starts
    /// from the latest snapshot that this handler version took through these chains,
    /// below any version its aggregate is parked from, and holding no event stamped
    /// after `at`; only the events after it are read.
    pub async fn row<S>(
        &self,
        store: &S,
        key: &H::Key,
        aggregate_id: Option<Uuid>,
        at: Option<DateTime<Utc>>,
    ) -> Result<Travelled<H::Row>, RuntimeError>
    where
        S: EventStore + ProjectionStore + Snapshots,
    {
        let exclusions = store.exclusions(self.handler.name()).await?;
        let mut start = None;
        if let (true, Ordering::AggregateVersion, Some(id)) = (self.snapshots, self.handler.ordering(), aggregate_id) {
            let mut key_values = Vec::new();
            key.to_values(&mut key_values);
            let (row_key, chains) = (row_key(&key_values), chains(self.reading.upcasters()));
            let query = SnapshotQuery {
                projection: self.handler.name(),
                row_key: &row_key,
                aggregate_id: id,
                at,
                below_version: exclusions.parked.by_aggregate.get(&id).map(|p| p.from_version),
                handler_version: self.handler.version(),
                upcasters: &chains,
            };
            start = store.latest_snapshot(&query).await?;
        }
        self.replay(store, &exclusions, key, aggregate_id, at, start).await
    }

    async fn replay<S>(
        &self,
        store: &S,
        exclusions: &Exclusions,
        key: &H::Key,
        aggregate_id: Option<Uuid>,
        at: Option<DateTime<Utc>>,
        start: Option<Snapshot>,
    ) -> Result<Travelled<H::Row>, RuntimeError>
    where
        S: EventStore + ProjectionStore,
    {
        let (handler, reading) = (self.handler, &self.reading);
        let mut fold = Fold::new(handler)
            .assume_absent(true)
            .max_payload_bytes(store.max_payload_bytes())
            .discarding(exclusions.discarded.iter().copied());
        let mut events_read = 0u64;
        let mut audit = Vec::new();
        let from_snapshot = start.as_ref().map(|s| s.version);
        if let Some(snapshot) = start {
            let row_error = |reason: String| RuntimeError::Row { projection: handler.name(), reason };
            let values = decode_row(handler.schema(), &snapshot.row).map_err(row_error)?;
            let mut key_values = Vec::new();
            key.to_values(&mut key_values);
            fold.insert_loaded(&[key_values], &[values]).map_err(|e| row_error(e.to_string()))?;
        }
        if let Some(id) = aggregate_id {
            let bound = match (from_snapshot, at) {
                (None, None) => ReadBound::All,
                (None, Some(at)) => ReadBound::At(at),
                (Some(after), None) => ReadBound::Versions { after, upto: i64::MAX },
                (Some(after), Some(at)) => ReadBound::VersionsAt { after, at },
            };
            let events = store.read_aggregate(id, bound).await?;
            events_read += events.len() as u64;
            let prepared = reading.prepare(&mut &*store, events).await?;
            audit.extend(prepared.audit);
            fold.failing_upcasts(prepared.failed);
            for e in prepared.events.iter().filter(|e| !exclusions.holds(e)) {
                if handler.key(e).as_ref() == Some(key) {
                    fold.apply_one(e)?;
                }
            }
        } else {
            // Every committed event, not only those below the read horizon: this is a
            // one-off read, and a counting row must not miss a recent commit.
            let mut after = 0;
            loop {
                let events = store.read_committed(after, reading.store_filter(), 10_000).await?;
                let Some(last) = events.last() else { break };
                after = last.position;
                events_read += events.len() as u64;
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
        let row = fold.row(key).cloned().map(|row| (row, fold.version(key)));
        Ok(Travelled { row, events_read, from_snapshot })
    }
}
