//! The storage contracts: appending and reading events, and the projection-side
//! operations the runtime needs (leases, row loads, one-transaction batch commits).
//!
//! Futures here carry no `Send` bound, so the same traits are implemented inside a
//! Worker (single-threaded wasm) and natively.
#![allow(async_fn_in_trait)]

pub mod keys;
pub mod migrations;
pub mod rules;
pub mod snapshots;

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::dead_letter::{DeadLetter, DiscardedEvent, Exclusions, OperatorAction, Parked, ParkedSet};
use crate::error::Result;
use crate::event::{Checkpoint, DomainEvent, EventFilter, NewEvent, Partition};
use crate::read_model::{TableSchema, Value};
use crate::state::{ProjectionState, Status};
use crate::store::keys::{AuditRecord, KeyLookup, SubjectKeys};

/// What the appender believes the aggregate's current version is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// Append whatever the current version is (no concurrency check).
    Any,
    /// The aggregate must be at exactly this version (0: it must not exist yet).
    Exact(i64),
}

/// Events for one aggregate, appended atomically.
#[derive(Debug, Clone)]
pub struct AppendRequest {
    pub aggregate_id: Uuid,
    pub aggregate_type: String,
    pub expected_version: ExpectedVersion,
    pub events: Vec<NewEvent>,
    /// Repeating an append with the same key returns the first result and writes nothing.
    pub idempotency_key: Option<String>,
}

/// What an append wrote (or, for a repeated idempotency key, what the first one wrote).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AppendOutcome {
    pub aggregate_id: Uuid,
    /// Version of the first appended event.
    pub first_version: i64,
    /// The aggregate's version after the append.
    pub last_version: i64,
    pub event_ids: Vec<Uuid>,
    pub positions: Vec<i64>,
    /// True when the idempotency key had been used: nothing was written this time.
    pub deduplicated: bool,
}

/// What a writer adds to an append beyond its events, written with them or not at all.
#[derive(Debug, Clone, Default)]
pub struct AppendWith {
    /// The idempotency fingerprint to store with the key and to compare a repeat with,
    /// in place of [`rules::request_fingerprint`] of the request as the store receives
    /// it: a writer that seals fields (fresh nonces each time) or pins `Any` to the
    /// version it sealed for gives the fingerprint of the request as its caller made
    /// it. `None`: computed from the request.
    pub fingerprint: Option<String>,
    /// Crypto audit rows (the `encrypt`s of sealed fields), in the append's transaction.
    pub audit: Vec<AuditRecord>,
}

/// How far to read one aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadBound {
    All,
    /// Versions `after < v <= upto`.
    Versions {
        after: i64,
        upto: i64,
    },
    /// Events with `timestamp <= at` (time travel).
    At(DateTime<Utc>),
    /// Versions after `after` with `timestamp <= at` (time travel from a snapshot).
    VersionsAt {
        after: i64,
        at: DateTime<Utc>,
    },
}

/// Appending and reading events, and the keys of the subjects whose fields they seal
/// (a store that holds events with encrypted fields holds their wrapped keys too).
pub trait EventStore: SubjectKeys {
    /// Appends `request.events` as the next versions of the aggregate, or fails with
    /// [`StoreError::Conflict`](crate::StoreError::Conflict).
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome> {
        self.append_with(request, AppendWith::default()).await
    }

    /// [`EventStore::append`] with what the writer adds ([`AppendWith`]): all of it
    /// commits with the events, or nothing does.
    async fn append_with(&self, request: AppendRequest, with: AppendWith) -> Result<AppendOutcome>;

    /// The aggregate's current version (0: it has no events).
    async fn current_version(&self, aggregate_id: Uuid) -> Result<i64>;

    /// One aggregate's events in version order.
    async fn read_aggregate(&self, aggregate_id: Uuid, bound: ReadBound) -> Result<Vec<DomainEvent>>;

    /// Up to `limit` events after `after`, in commit-safe global order: an event is never
    /// returned while a transaction that could still commit an earlier-ordered one is open.
    async fn read_all(
        &self,
        after: Checkpoint,
        filter: &EventFilter,
        partition: Partition,
        limit: usize,
    ) -> Result<Vec<DomainEvent>>;

    /// Up to `limit` committed events with `position > after`, in position order, without
    /// waiting for the read horizon. For one-off reads (time travel), never for
    /// checkpointed processing: a late commit can appear behind a later position. The
    /// default suits stores whose commits are serial (position order is commit order).
    async fn read_committed(&self, after: i64, filter: &EventFilter, limit: usize) -> Result<Vec<DomainEvent>> {
        self.read_all(Checkpoint { transaction_id: 0, position: after }, filter, Partition::WHOLE, limit).await
    }

    /// The largest `event_data` an append accepts, in bytes of compact JSON. The runtime
    /// dead-letters a stored event over it (a row written around the store) unfolded.
    fn max_payload_bytes(&self) -> usize {
        rules::DEFAULT_MAX_PAYLOAD_BYTES
    }
}

/// A claimed partition: the caller owns it until the lease expires unrenewed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub projection: String,
    pub partition: Partition,
    pub owner: String,
    pub checkpoint: Checkpoint,
    /// Aggregates of this partition waiting behind dead letters, and their epoch.
    pub parked: ParkedSet,
    /// The batch a runner recorded before applying it and never committed: it died
    /// applying it (or is applying it still, under a lease that expired).
    pub in_flight: Option<InFlight>,
    /// Consecutive crashes recorded so far (see [`ProjectionStore::set_in_flight`]).
    pub crashes: u32,
}

/// A batch being applied: from the partition's checkpoint to `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InFlight {
    pub to: Checkpoint,
    /// How many events it holds.
    pub events: u32,
}

/// Read-model rows a batch changes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RowChanges {
    /// Full rows (key, values, version) in schema order; `Merge::Add` columns hold the
    /// delta to add to the stored value.
    pub upserts: Vec<Vec<Value>>,
    /// Keys of rows to delete.
    pub deletes: Vec<Vec<Value>>,
    /// Every upserted row is known to be absent from the table (a rebuild into cleared
    /// rows), so a store may insert without conflict handling (e.g. `COPY`).
    pub inserts_only: bool,
    /// Row states to keep as snapshots (see [`snapshots`]), written with the rows; one
    /// already stored for the same row and version is replaced.
    pub snapshots: Vec<snapshots::Snapshot>,
}

impl RowChanges {
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.deletes.is_empty() && self.snapshots.is_empty()
    }
}

/// One batch's effect, committed atomically with the checkpoint move.
#[derive(Debug, Clone)]
pub struct BatchCommit<'a> {
    pub lease: &'a Lease,
    pub table: &'static TableSchema,
    pub from: Checkpoint,
    pub to: Checkpoint,
    pub changes: RowChanges,
    pub events_applied: u64,
    pub last_event_at: Option<DateTime<Utc>>,
    pub lease_ttl: Duration,
    /// Events that go to the dead-letter queue with this batch; each parks its aggregate
    /// from its version on. The store assigns ids and failure times (from the attempt
    /// history, see [`ProjectionStore::record_failure`]). The commit also checks that
    /// `lease.parked.epoch` has not moved, and bumps it when it parks anything.
    pub dead_letters: Vec<DeadLetter>,
    /// Crypto audit rows of the batch (the decrypts it made), written only if the
    /// commit is.
    pub audit: Vec<AuditRecord>,
}

/// An open transaction that keeps committed events from being read.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HorizonHold {
    /// The holding server process (PostgreSQL backend pid).
    pub pid: i32,
    /// Who and what: user, database, application, state and the start of its query.
    pub description: String,
    pub transaction_started_at: Option<DateTime<Utc>>,
    /// Committed events that no projection can read until that transaction ends.
    pub events_waiting: i64,
}

/// The stored attempt history of one failing event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureRecord {
    /// Failed attempts so far, this one included.
    pub attempts: u32,
    pub first_failed_at: DateTime<Utc>,
    /// This attempt, by the same clock: how long an event has been failing.
    pub last_failed_at: DateTime<Utc>,
}

/// Projection bookkeeping and read-model writes.
pub trait ProjectionStore {
    /// Creates or updates the read-model table and the projection's partition rows.
    /// `filter` is what the projection reads; the store uses it to measure lag. A
    /// projection registered already keeps its partition count: asking for another is
    /// refused ([`rules::check_registered_partitions`]); see [`ProjectionStore::repartition`].
    async fn register(
        &self,
        projection: &str,
        table: &'static TableSchema,
        filter: &EventFilter,
        partitions: u32,
    ) -> Result<()>;

    /// The partition count `projection` is split into in the store (`None`: it is not
    /// registered).
    async fn partition_count(&self, projection: &str) -> Result<Option<u32>>;

    /// Re-splits a registered projection into `partitions` partitions, all starting at
    /// the checkpoint every partition stands at ([`rules::rescale`]); the only way the
    /// stored count changes.
    async fn repartition(&self, projection: &str, partitions: u32) -> Result<()>;

    /// Takes (or renews) the lease on a partition if it is free, expired or already ours,
    /// or its owner is known to be gone ([`rules::may_claim`]: a store that can tell, such
    /// as PostgreSQL by the owner's session lock, takes a dead runner's lease at once).
    /// Returns `None` while another owner holds it.
    async fn claim(&self, projection: &str, partition: Partition, owner: &str, ttl: Duration) -> Result<Option<Lease>>;

    /// Gives a lease back so another runner can take it at once.
    async fn release(&self, lease: &Lease) -> Result<()>;

    /// Rows of `table` with the given keys (schema order, including key and version).
    async fn load_rows(&self, table: &'static TableSchema, keys: &[Vec<Value>]) -> Result<Vec<Vec<Value>>>;

    /// Writes the rows and moves the checkpoint from `from` to `to` in one transaction.
    /// Fails with `CheckpointMoved`/`LeaseLost`, writing nothing, when the partition is
    /// no longer where the caller thinks it is.
    async fn commit(&self, commit: BatchCommit<'_>) -> Result<()>;

    /// Counts one more failed attempt of `event` for `projection` (stored, so a restart
    /// does not reset the retry budget).
    async fn record_failure(&self, projection: &str, event: &DomainEvent, error: &str) -> Result<FailureRecord>;

    /// Forgets the attempt history of an event that finally applied, so a later replay
    /// (a rebuild, a repair) starts with the full retry budget.
    async fn clear_failure(&self, projection: &str, event_id: Uuid) -> Result<()>;

    /// Records the batch the lease holder is about to apply (`None`: none) and the
    /// partition's count of consecutive crashes, so that the next claim finds a batch a
    /// runner died applying (an abort, running out of memory, a stack overflow: what
    /// cannot be caught). A batch commit clears the batch, not the count. The lease is
    /// renewed for `lease_ttl` (a step that folds many batches before it commits keeps
    /// it that way). Fails with `LeaseLost` when the caller no longer holds the lease.
    async fn set_in_flight(
        &self,
        lease: &Lease,
        batch: Option<InFlight>,
        crashes: u32,
        lease_ttl: Duration,
    ) -> Result<()>;

    /// What a batch needs before it is applied: records it in flight
    /// ([`ProjectionStore::set_in_flight`]) and loads the rows of `keys`
    /// ([`ProjectionStore::load_rows`]). A store that can pipeline the two sends them in
    /// one round trip.
    async fn begin_batch(
        &self,
        lease: &Lease,
        batch: InFlight,
        crashes: u32,
        lease_ttl: Duration,
        table: &'static TableSchema,
        keys: &[Vec<Value>],
    ) -> Result<Vec<Vec<Value>>> {
        self.set_in_flight(lease, Some(batch), crashes, lease_ttl).await?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.load_rows(table, keys).await
    }

    /// Records a status change and (for failures) the error text.
    async fn set_status(
        &self,
        projection: &str,
        partition: Partition,
        status: Status,
        error: Option<&str>,
    ) -> Result<()>;

    /// State of every partition of every projection, lag included.
    async fn states(&self) -> Result<Vec<ProjectionState>>;

    /// What replays of `projection` leave out: the events operators skipped or discarded,
    /// and the aggregates parked behind open dead letters (every partition's).
    async fn exclusions(&self, projection: &str) -> Result<Exclusions>;

    /// Who holds the global read horizon back, when committed events wait behind an open
    /// transaction (stores whose commits are serial never report one).
    async fn horizon_hold(&self) -> Result<Option<HorizonHold>> {
        Ok(None)
    }
}

/// A rebuild in progress: one transaction that replaces a projection's rows and resets
/// its checkpoints; nothing of it is visible until [`RebuildSession::finish`].
pub trait RebuildSession {
    /// The projection's rows are all gone: its read-model table was missing or did not
    /// match the schema (the session lays it out anew), or the projection waits for a
    /// rebuild. Only a full rebuild can fill it.
    fn needs_full(&self) -> bool;

    /// Reads events in commit-safe order inside the rebuild's transaction.
    async fn read_all(&mut self, after: Checkpoint, filter: &EventFilter, limit: usize) -> Result<Vec<DomainEvent>>;

    /// Reads the events with `position >= from` (to find rows a partial rebuild redoes).
    async fn read_since_position(
        &mut self,
        from: i64,
        filter: &EventFilter,
        after: i64,
        limit: usize,
    ) -> Result<Vec<DomainEvent>>;

    async fn read_aggregate(&mut self, aggregate_id: Uuid, bound: ReadBound) -> Result<Vec<DomainEvent>>;

    /// Deletes every row (`None`) or the rows with these keys, and their snapshots.
    async fn clear_rows(&mut self, keys: Option<&[Vec<Value>]>) -> Result<()>;

    async fn load_rows(&mut self, keys: &[Vec<Value>]) -> Result<Vec<Vec<Value>>>;

    async fn write_rows(&mut self, changes: RowChanges) -> Result<()>;

    /// What this replay leaves out (see [`ProjectionStore::exclusions`]), read inside the
    /// rebuild.
    async fn exclusions(&mut self) -> Result<Exclusions>;

    /// Stores letters for events that failed in this rebuild and parks their aggregates
    /// from their versions on, as a batch commit does; visible when the rebuild finishes.
    async fn dead_letter(&mut self, letters: &[DeadLetter]) -> Result<()>;

    /// The current key of each subject, read inside the rebuild (as
    /// [`SubjectKeys::subject_keys`]).
    async fn subject_keys(&mut self, subjects: &[String]) -> Result<Vec<KeyLookup>>;

    /// Audit rows of the rebuild's decrypts, committed with it.
    async fn record_audit(&mut self, records: &[AuditRecord]) -> Result<()>;

    /// Sets every partition's checkpoint to `to`, marks the projection caught up, moves
    /// every partition's parking epoch (runners re-read their parked sets) and commits.
    async fn finish(self, to: Checkpoint, events_applied: u64, last_event_at: Option<DateTime<Utc>>) -> Result<()>;
}

/// Stores that can run a rebuild.
pub trait Rebuilds: EventStore {
    type Session<'a>: RebuildSession
    where
        Self: 'a;

    /// Starts a rebuild of `projection`; blocks live commits of its partitions until the
    /// session finishes or is dropped.
    async fn begin_rebuild<'a>(&'a self, projection: &str, table: &'static TableSchema) -> Result<Self::Session<'a>>;
}

/// Stores in which an operator can repair a parked aggregate.
pub trait Repairs {
    type Repair<'a>: RepairSession
    where
        Self: 'a;

    /// Opens one transaction on the dead letter's aggregate: locks the letter (so two
    /// repairs of one letter run one after the other) and the checkpoint row of the
    /// aggregate's partition (so its runner's commits wait, then re-read the parked set).
    /// `UnknownDeadLetter` when there is no such letter for the projection.
    async fn begin_repair<'a>(&'a self, projection: &str, dead_letter_id: i64) -> Result<Self::Repair<'a>>;
}

/// One repair transaction; nothing is visible until [`RepairSession::commit`].
pub trait RepairSession {
    fn dead_letter(&self) -> &DeadLetter;

    /// The parking of the letter's aggregate, if it is still parked.
    fn parked(&self) -> Option<Parked>;

    /// Where the aggregate's partition stands: events at or before it were passed over
    /// by the runner (parked); later ones are still the runner's.
    fn checkpoint(&self) -> Checkpoint;

    async fn read_aggregate(&mut self, aggregate_id: Uuid, bound: ReadBound) -> Result<Vec<DomainEvent>>;

    async fn load_rows(&mut self, table: &'static TableSchema, keys: &[Vec<Value>]) -> Result<Vec<Vec<Value>>>;

    async fn write_rows(&mut self, table: &'static TableSchema, changes: RowChanges) -> Result<()>;

    /// Moves the parking to a later version (`Some`) or lifts it (`None`); bumps the
    /// partition's parking epoch either way.
    async fn set_parking(&mut self, parked: Option<Parked>) -> Result<()>;

    /// The events of the letter's aggregate that operators took out of the projection
    /// before, which a repair leaves out as well.
    async fn discarded_events(&mut self) -> Result<Vec<DiscardedEvent>>;

    /// Records events this repair takes out of the projection (a skip or a discard), so
    /// that rebuilds and time travel leave them out too.
    async fn discard_events(&mut self, events: &[DiscardedEvent]) -> Result<()>;

    /// Updates the open letter after another failed attempt.
    async fn failed_again(&mut self, error: &str) -> Result<()>;

    /// Stores a new letter (a later event of the sequence failed); returns its id.
    async fn send_letter(&mut self, letter: &DeadLetter) -> Result<i64>;

    /// Closes the letter with `status`, recording `action`.
    async fn close(&mut self, status: crate::dead_letter::DeadLetterStatus, action: &OperatorAction) -> Result<()>;

    /// Records an action that leaves the letter open (a retry that stopped).
    async fn record_action(&mut self, action: &OperatorAction) -> Result<()>;

    /// The current key of each subject, read inside the repair (as
    /// [`SubjectKeys::subject_keys`]).
    async fn subject_keys(&mut self, subjects: &[String]) -> Result<Vec<KeyLookup>>;

    /// Audit rows of the repair's decrypts, committed with it.
    async fn record_audit(&mut self, records: &[AuditRecord]) -> Result<()>;

    async fn commit(self) -> Result<()>;
}
