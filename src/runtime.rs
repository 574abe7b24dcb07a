//! The batch runtime: read a batch in commit-safe order, load the rows it touches in one
//! query, apply the handler in memory, and commit rows and checkpoint together.
//!
//! No timers and no threads: a caller (the local tokio runner, a Worker invocation)
//! decides when to call [`BatchRunner::step`] and how long to sleep in between.

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use std::collections::BTreeMap;

use crate::dead_letter::{DeadLetter, OnFailure, Parked};
use crate::error::{ErrorClass, StoreError};
use crate::event::{Checkpoint, DomainEvent, EventFilter};
use crate::fold::{ApplyError, Fold};
use crate::handler::ProjectionHandler;
use crate::read_model::{RowKey, Value};
use crate::retry::{Failure, RetryAction, RetryPolicy};
use crate::store::{BatchCommit, EventStore, Lease, ProjectionStore, ReadBound, RebuildSession, Rebuilds};

/// Why a batch did not commit.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Apply(#[from] Box<ApplyError>),
    #[error("projection {projection}: stored row does not decode: {reason}")]
    Row { projection: &'static str, reason: String },
    /// A transient handler failure with retries left: sleep `next.delay(random)` and
    /// step again. Nothing was written.
    #[error("attempt {attempts} failed, will retry: {failure}")]
    RetryLater { failure: Box<ApplyError>, attempts: u32, next: RetryAction },
    /// `on_failure: stop`: the partition stops at this event; nothing was written.
    #[error("stopped at event {}: {}", .0.event_id, .0)]
    Stopped(Box<ApplyError>),
}

impl RuntimeError {
    pub fn class(&self) -> ErrorClass {
        match self {
            RuntimeError::Store(e) => e.class(),
            RuntimeError::Apply(e) => e.error.class(),
            RuntimeError::Row { .. } | RuntimeError::Stopped(_) => ErrorClass::Permanent,
            RuntimeError::RetryLater { .. } => ErrorClass::Transient,
        }
    }
}

/// What one step did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepOutcome {
    /// Events read (0: caught up).
    pub events_read: usize,
    /// Events that changed the projection (duplicates and irrelevant events excluded).
    pub events_applied: u64,
    /// Events sent to the dead-letter queue (each parking its aggregate).
    pub dead_lettered: u64,
    pub checkpoint: Checkpoint,
}

/// Runs batches for one leased partition of one projection.
#[derive(Debug)]
pub struct BatchRunner<'a, H, S> {
    handler: &'a H,
    store: &'a S,
    filter: EventFilter,
    batch_size: usize,
    lease: Lease,
    lease_ttl: Duration,
    retry: RetryPolicy,
    on_failure: OnFailure,
    until: Option<Checkpoint>,
    /// An event that failed transiently and is being retried.
    retrying: Option<Uuid>,
}

impl<'a, H, S> BatchRunner<'a, H, S>
where
    H: ProjectionHandler,
    S: EventStore + ProjectionStore,
{
    /// `filter` narrows the handler's own filter (from `projections.yaml`).
    pub fn new(handler: &'a H, store: &'a S, filter: &EventFilter, lease: Lease) -> Self {
        Self {
            handler,
            store,
            filter: handler.filter().and(filter),
            batch_size: 1000,
            lease,
            lease_ttl: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            on_failure: OnFailure::Park,
            until: None,
            retrying: None,
        }
    }

    /// Retries for transient handler failures before an event is dead-lettered.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    pub fn on_failure(mut self, on_failure: OnFailure) -> Self {
        self.on_failure = on_failure;
        self
    }

    /// Stops at `cap`: events after it are left for later, and a partition with nothing
    /// more before `cap` moves its checkpoint to exactly `cap` (to align partitions).
    pub fn until(mut self, cap: Checkpoint) -> Self {
        self.until = Some(cap);
        self
    }

    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n.max(1);
        self
    }

    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    pub fn checkpoint(&self) -> Checkpoint {
        self.lease.checkpoint
    }

    /// Reads and applies one batch. Rows and checkpoint commit in one transaction; on
    /// any error nothing is written and the checkpoint stays where it was.
    pub async fn step(&mut self) -> Result<StepOutcome, RuntimeError> {
        let from = self.lease.checkpoint;
        let mut events = self.store.read_all(from, &self.filter, self.lease.partition, self.batch_size).await?;
        if let Some(cap) = self.until {
            events.retain(|e| e.checkpoint() <= cap);
            if events.is_empty() && from < cap {
                // Every event up to `cap` was below the horizon when `cap` was reached, so
                // an empty read means this partition has none left before it.
                return self.advance_to(cap).await;
            }
        }
        let Some(last) = events.last() else {
            return Ok(StepOutcome { checkpoint: from, ..StepOutcome::default() });
        };
        let to = last.checkpoint();
        let schema = self.handler.schema();

        let keys = Fold::new(self.handler).keys_to_load(&events);
        let rows = if keys.is_empty() { Vec::new() } else { self.store.load_rows(schema, &keys).await? };
        let parked = &self.lease.parked;
        // Aggregates parked by failures in this batch: from which version on.
        let mut parked_now: BTreeMap<Uuid, i64> = BTreeMap::new();
        let mut letters: Vec<DeadLetter> = Vec::new();
        let mut gap_events: Option<Vec<DomainEvent>> = None;
        let fold = loop {
            let held =
                |e: &DomainEvent| parked.holds(e) || parked_now.get(&e.aggregate_id).is_some_and(|v| e.version >= *v);
            let mut fold = Fold::new(self.handler);
            fold.insert_loaded(&keys, &rows).map_err(|e| self.row_error(e))?;
            if gap_events.is_none() {
                gap_events = Some(read_gaps(self.store, &fold, &events, &self.filter, &held).await?);
            }
            let Err(failure) = fold.apply_except(&events, gap_events.as_deref().unwrap_or_default(), held) else {
                break fold;
            };
            // Which event failed: from the batch or from a gap read.
            let event = events
                .iter()
                .chain(gap_events.iter().flatten())
                .find(|e| e.event_id == failure.event_id)
                .expect("the failing event is one of the batch's")
                .clone();
            let class = failure.error.class();
            let message = failure.to_string();
            let attempts = match class {
                ErrorClass::Transient => {
                    self.store.record_failure(self.handler.name(), &event, &message).await?.attempts
                }
                ErrorClass::Permanent => 1,
            };
            let next = self.retry.next_action(Failure::Event(class), attempts);
            if let RetryAction::Retry { .. } = next {
                self.retrying = Some(event.event_id);
                return Err(RuntimeError::RetryLater { failure, attempts, next });
            }
            if self.on_failure == OnFailure::Stop {
                return Err(RuntimeError::Stopped(failure));
            }
            letters.push(DeadLetter::new(
                self.handler.name(),
                &event,
                &message,
                class,
                attempts,
                DateTime::<Utc>::MIN_UTC,
            ));
            parked_now.insert(event.aggregate_id, event.version);
        };

        let dead_lettered = letters.len() as u64;
        let letters_sent: Vec<Uuid> = letters.iter().map(|l| l.event_id).collect();
        let commit = BatchCommit {
            lease: &self.lease,
            table: schema,
            from,
            to,
            changes: fold.changes(),
            events_applied: fold.events_applied(),
            last_event_at: fold.last_event_at().or(Some(last.timestamp)),
            lease_ttl: self.lease_ttl,
            dead_letters: letters,
        };
        self.store.commit(commit).await?;
        self.lease.checkpoint = to;
        if let Some(event_id) = self.retrying.take() {
            if events.iter().any(|e| e.event_id == event_id) && !letters_sent.contains(&event_id) {
                self.store.clear_failure(self.handler.name(), event_id).await?;
            }
        }
        if !parked_now.is_empty() {
            for (aggregate_id, from_version) in parked_now {
                self.lease
                    .parked
                    .by_aggregate
                    .insert(aggregate_id, Parked { aggregate_id, from_version, dead_letter_id: 0 });
            }
            self.lease.parked.epoch += 1;
        }
        Ok(StepOutcome {
            events_read: events.len(),
            events_applied: fold.events_applied(),
            dead_lettered,
            checkpoint: to,
        })
    }

    /// Steps until a read comes back empty (caught up with the read horizon); returns
    /// the totals of every step.
    pub async fn catch_up(&mut self) -> Result<StepOutcome, RuntimeError> {
        let mut total = StepOutcome { checkpoint: self.lease.checkpoint, ..StepOutcome::default() };
        loop {
            let step = self.step().await?;
            total.events_read += step.events_read;
            total.events_applied += step.events_applied;
            total.dead_lettered += step.dead_lettered;
            total.checkpoint = step.checkpoint;
            if step.events_read == 0 {
                return Ok(total);
            }
        }
    }

    async fn advance_to(&mut self, cap: Checkpoint) -> Result<StepOutcome, RuntimeError> {
        let commit = BatchCommit {
            lease: &self.lease,
            table: self.handler.schema(),
            from: self.lease.checkpoint,
            to: cap,
            changes: Default::default(),
            events_applied: 0,
            last_event_at: None,
            lease_ttl: self.lease_ttl,
            dead_letters: Vec::new(),
        };
        self.store.commit(commit).await?;
        self.lease.checkpoint = cap;
        Ok(StepOutcome { checkpoint: cap, ..StepOutcome::default() })
    }

    fn row_error(&self, e: crate::read_model::RowError) -> RuntimeError {
        RuntimeError::Row { projection: self.handler.name(), reason: e.to_string() }
    }
}

async fn read_gaps<H: ProjectionHandler, S: EventStore>(
    store: &S,
    fold: &Fold<'_, H>,
    events: &[DomainEvent],
    filter: &EventFilter,
    held: impl Fn(&DomainEvent) -> bool,
) -> Result<Vec<DomainEvent>, StoreError> {
    let mut out = Vec::new();
    for gap in fold.gaps_except(events, held) {
        let found =
            store.read_aggregate(gap.aggregate_id, ReadBound::Versions { after: gap.after, upto: gap.upto }).await?;
        out.extend(found.into_iter().filter(|e| filter.matches(e)));
    }
    Ok(out)
}

/// How a rebuild went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RebuildOutcome {
    pub events_read: u64,
    pub events_applied: u64,
    pub rows_written: u64,
    pub checkpoint: Checkpoint,
}

/// Progress callback: events read so far.
pub trait Progress {
    fn advanced(&mut self, events_read: u64, checkpoint: Checkpoint);
}

impl<F: FnMut(u64, Checkpoint)> Progress for F {
    fn advanced(&mut self, events_read: u64, checkpoint: Checkpoint) {
        self(events_read, checkpoint)
    }
}

/// Rebuilds a projection from the full history, in one transaction.
///
/// With `from_position`, only the rows touched by events at or after that global
/// position are recomputed (from their whole history); all other rows are kept.
/// Rows are held in memory and flushed in bulk every `flush_rows` rows.
#[derive(Debug)]
pub struct Rebuild<'a, H> {
    handler: &'a H,
    filter: EventFilter,
    read_size: usize,
    flush_rows: usize,
    from_position: Option<i64>,
}

impl<'a, H: ProjectionHandler> Rebuild<'a, H> {
    pub fn new(handler: &'a H, filter: &EventFilter) -> Self {
        Self {
            handler,
            filter: handler.filter().and(filter),
            read_size: 5_000,
            flush_rows: 250_000,
            from_position: None,
        }
    }

    pub fn from_position(mut self, position: Option<i64>) -> Self {
        self.from_position = position;
        self
    }

    pub fn flush_rows(mut self, rows: usize) -> Self {
        self.flush_rows = rows.max(1);
        self
    }

    pub fn read_size(mut self, n: usize) -> Self {
        self.read_size = n.max(1);
        self
    }

    pub async fn run<S: Rebuilds>(
        &self,
        store: &S,
        mut progress: impl Progress,
    ) -> Result<RebuildOutcome, RuntimeError> {
        let table = self.handler.schema();
        let mut session = store.begin_rebuild(self.handler.name(), table).await?;

        // Rows a partial rebuild redoes: those touched by events since `from_position`.
        let only: Option<std::collections::HashSet<H::Key>> = match self.from_position {
            None => {
                session.clear_rows(None).await?;
                None
            }
            Some(from) => {
                let keys = self.touched_keys(&mut session, from).await?;
                let key_values: Vec<Vec<Value>> = keys
                    .iter()
                    .map(|k| {
                        let mut v = Vec::new();
                        k.to_values(&mut v);
                        v
                    })
                    .collect();
                session.clear_rows(Some(&key_values)).await?;
                Some(keys)
            }
        };

        let mut fold = Fold::new(self.handler).assume_absent(true);
        let mut checkpoint = Checkpoint::START;
        let mut events_read = 0u64;
        let mut events_applied = 0u64;
        let mut rows_written = 0u64;
        let mut last_event_at: Option<DateTime<Utc>> = None;
        let mut next = session.read_all(checkpoint, &self.filter, self.read_size).await?;
        loop {
            let mut events = std::mem::take(&mut next);
            let Some(last) = events.last() else { break };
            checkpoint = last.checkpoint();
            events_read += events.len() as u64;
            if let Some(only) = &only {
                events.retain(|e| self.handler.key(e).is_some_and(|k| only.contains(&k)));
            }
            let keys = fold.keys_to_load(&events);
            if !keys.is_empty() {
                let rows = session.load_rows(&keys).await?;
                fold.insert_loaded(&keys, &rows)
                    .map_err(|e| RuntimeError::Row { projection: self.handler.name(), reason: e.to_string() })?;
            }
            let mut gap_events = Vec::new();
            for gap in fold.gaps(&events) {
                let found = session
                    .read_aggregate(gap.aggregate_id, ReadBound::Versions { after: gap.after, upto: gap.upto })
                    .await?;
                gap_events.extend(found.into_iter().filter(|e| self.filter.matches(e)));
            }
            // Fold this page while the server produces the next one.
            let (read, folded) = futures_util::future::join(
                session.read_all(checkpoint, &self.filter, self.read_size),
                fold_in_steps(&mut fold, &events, &gap_events),
            )
            .await;
            folded?;
            next = read?;
            progress.advanced(events_read, checkpoint);
            if fold.len() >= self.flush_rows {
                for changes in fold.change_chunks(WRITE_CHUNK) {
                    rows_written += changes.upserts.len() as u64;
                    session.write_rows(changes).await?;
                }
                events_applied += fold.events_applied();
                last_event_at = last_event_at.max(fold.last_event_at());
                fold.reset_counters();
                fold.evict();
            }
        }
        for changes in fold.change_chunks(WRITE_CHUNK) {
            rows_written += changes.upserts.len() as u64;
            session.write_rows(changes).await?;
        }
        events_applied += fold.events_applied();
        last_event_at = last_event_at.max(fold.last_event_at());
        session.finish(checkpoint, events_applied, last_event_at).await?;
        Ok(RebuildOutcome { events_read, events_applied, rows_written, checkpoint })
    }

    async fn touched_keys<R: RebuildSession>(
        &self,
        session: &mut R,
        from: i64,
    ) -> Result<std::collections::HashSet<H::Key>, RuntimeError> {
        let mut keys = std::collections::HashSet::new();
        let mut after = from - 1;
        loop {
            let events = session.read_since_position(from, &self.filter, after, self.read_size).await?;
            let Some(last) = events.last() else { break };
            after = last.position;
            keys.extend(events.iter().filter_map(|e| self.handler.key(e)));
        }
        Ok(keys)
    }
}

/// A row as it was at an instant: replays the events that feed `key` up to `at`.
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
    S: EventStore,
{
    let filter = handler.filter().and(filter);
    let mut fold = Fold::new(handler).assume_absent(true);
    if let Some(id) = aggregate_id {
        let bound = at.map_or(ReadBound::All, ReadBound::At);
        let events = store.read_aggregate(id, bound).await?;
        for e in events.iter().filter(|e| filter.matches(e)) {
            if handler.key(e).as_ref() == Some(key) {
                fold.apply_one(e)?;
            }
        }
    } else {
        // Every committed event, not only those below the read horizon: this is a one-off
        // read, and a counting row must not miss a recent commit.
        let mut after = 0;
        loop {
            let events = store.read_committed(after, &filter, 10_000).await?;
            let Some(last) = events.last() else { break };
            after = last.position;
            for e in &events {
                if at.is_some_and(|at| e.timestamp > at) {
                    continue;
                }
                if handler.key(e).as_ref() == Some(key) {
                    fold.apply_one(e)?;
                }
            }
        }
    }
    Ok(fold.row(key).cloned().map(|row| (row, fold.version(key))))
}

/// Rows per write statement when a rebuild flushes.
const WRITE_CHUNK: usize = 10_000;

/// Applies `events` in steps, yielding between them so that a read joined with this
/// future (the next page) makes progress meanwhile.
async fn fold_in_steps<H: ProjectionHandler>(
    fold: &mut Fold<'_, H>,
    events: &[DomainEvent],
    gap_events: &[DomainEvent],
) -> Result<(), Box<ApplyError>> {
    for step in events.chunks(512) {
        fold.apply(step, gap_events)?;
        YieldNow(false).await;
    }
    Ok(())
}

/// Returns `Pending` once (waking itself at once), so other futures of the task run.
struct YieldNow(bool);

impl std::future::Future for YieldNow {
    type Output = ();

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

/// Brings every partition of a projection to one checkpoint (the furthest one), so that
/// the partition count can change without applying any event twice or skipping one.
/// Every partition's lease must be free (stop the runners first).
pub async fn align_partitions<H, S>(
    handler: &H,
    store: &S,
    projection: &str,
    filter: &EventFilter,
    owner: &str,
    batch_size: usize,
) -> Result<Checkpoint, RuntimeError>
where
    H: ProjectionHandler,
    S: EventStore + ProjectionStore,
{
    let states: Vec<_> = store.states().await?.into_iter().filter(|s| s.projection == projection).collect();
    let Some(target) = states.iter().map(|s| s.checkpoint).max() else {
        return Err(StoreError::UnknownProjection(projection.to_owned()).into());
    };
    for state in states.iter().filter(|s| s.checkpoint < target) {
        let partition = crate::Partition { index: state.partition, count: state.partitions };
        let lease = store.claim(projection, partition, owner, Duration::from_secs(60)).await?.ok_or_else(|| {
            StoreError::LeaseLost {
                projection: projection.to_owned(),
                partition: state.partition,
                owner: state.lease_owner.clone().unwrap_or_else(|| "another runner".into()),
            }
        })?;
        let mut runner = BatchRunner::new(handler, store, filter, lease).batch_size(batch_size).until(target);
        while runner.checkpoint() < target {
            runner.step().await?;
        }
        store.release(runner.lease()).await?;
    }
    Ok(target)
}
