//! The batch runtime: read a batch in commit-safe order, load the rows it touches in one
//! query, apply the handler in memory, and commit rows and checkpoint together.
//!
//! No timers and no threads: a caller (the local tokio runner, a Worker invocation)
//! decides when to call [`BatchRunner::step`] and how long to sleep in between.

mod align;
mod crashes;
mod gaps;
mod rebuild;
mod snapshots;
mod time_travel;
mod window;

pub use align::{align_partitions, align_partitions_read, align_partitions_upcast};
pub use rebuild::{Progress, Rebuild, RebuildOutcome};
pub use time_travel::{state_at, state_read_at, state_upcast_at, TimeTravel, Travelled};
pub use window::CatchUpWindow;

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use std::collections::BTreeMap;

use crate::dead_letter::{DeadLetter, OnFailure, Parked};
use crate::error::{ErrorClass, StoreError};
use crate::event::{Checkpoint, DomainEvent, EventFilter};
use crate::fold::{ApplyError, Fold, Halt};
use crate::handler::ProjectionHandler;

use crate::retry::{Failure, RetryAction, RetryPolicy};
use crate::store::{rules, BatchCommit, EventStore, InFlight, Lease, ProjectionStore};
use crate::upcast::{Reading, Upcasters};

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
    /// The next event has versions of its aggregate missing before it, and the gap
    /// timeout has not passed: step again later (the missing versions may still be
    /// committing). Nothing was written.
    #[error("waiting for missing versions: {0}")]
    GapWait(Box<ApplyError>),
}

impl RuntimeError {
    pub fn class(&self) -> ErrorClass {
        match self {
            RuntimeError::Store(e) => e.class(),
            RuntimeError::Apply(e) => e.error.class(),
            RuntimeError::Row { .. } | RuntimeError::Stopped(_) => ErrorClass::Permanent,
            RuntimeError::RetryLater { .. } | RuntimeError::GapWait(_) => ErrorClass::Transient,
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
    /// The projection's filter and the upcasters every event passes before the fold.
    reading: Reading,
    batch_size: usize,
    lease: Lease,
    lease_ttl: Duration,
    retry: RetryPolicy,
    on_failure: OnFailure,
    until: Option<Checkpoint>,
    /// An event that failed transiently and is being retried.
    retrying: Option<Uuid>,
    /// How long an event waits for missing versions before it is dead-lettered.
    gap_timeout: Duration,
    /// An event waiting for missing versions (its wait is in the attempt history).
    gap_waiting: Option<Uuid>,
    /// Consecutive crashes with the same batch in flight before it is searched for the
    /// event that crashes the runner.
    crash_limit: u32,
    /// Consecutive crashes as of the claim (see [`rules::crashes_at_claim`]).
    crashes: u32,
    /// Decided at the first step, from the lease.
    crash_plan: Option<rules::CrashPlan>,
    /// A batch is recorded in flight and not yet committed.
    in_flight_marked: bool,
    /// How many batches a step far behind folds before it commits.
    window: CatchUpWindow,
    /// Rows are kept as snapshots every this many versions.
    snapshot_every: Option<u32>,
}

/// What the batches of one step folded so far leave to commit.
#[derive(Default)]
struct Window {
    /// The end of the last batch folded.
    to: Option<Checkpoint>,
    last_timestamp: Option<DateTime<Utc>>,
    events_read: usize,
    letters: Vec<DeadLetter>,
    /// Aggregates parked by failures in this step: from which version on.
    parked_now: BTreeMap<Uuid, i64>,
    /// Events that had failed before (a retry, a gap wait) and applied in this step:
    /// their attempt history goes once the step commits.
    applied_after_failing: Vec<Uuid>,
    /// A batch was cut short at a gap or parked an aggregate: the step commits now.
    cut: bool,
    /// What reading the batches decrypted, recorded in the commit.
    audit: Vec<crate::store::keys::AuditRecord>,
}

/// Why folding a batch stopped.
enum BatchEnd {
    /// Its first event waits for missing versions (see [`RuntimeError::GapWait`]).
    Wait(Box<ApplyError>),
    Fail(RuntimeError),
}

impl BatchEnd {
    fn into_error(self) -> RuntimeError {
        match self {
            BatchEnd::Wait(failure) => RuntimeError::GapWait(failure),
            BatchEnd::Fail(e) => e,
        }
    }
}

impl From<RuntimeError> for BatchEnd {
    fn from(e: RuntimeError) -> Self {
        BatchEnd::Fail(e)
    }
}

impl From<StoreError> for BatchEnd {
    fn from(e: StoreError) -> Self {
        BatchEnd::Fail(e.into())
    }
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
            reading: Reading::new(handler.filter().and(filter), Upcasters::new()),
            batch_size: 1000,
            lease,
            lease_ttl: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            on_failure: OnFailure::Park,
            until: None,
            retrying: None,
            gap_timeout: crate::config::DEFAULT_GAP_TIMEOUT,
            gap_waiting: None,
            crash_limit: crate::config::DEFAULT_CRASH_LIMIT,
            crashes: 0,
            crash_plan: None,
            in_flight_marked: false,
            window: CatchUpWindow::OFF,
            snapshot_every: None,
        }
    }

    /// How much a step far behind folds before it commits (see [`CatchUpWindow`]).
    /// Without one ([`CatchUpWindow::OFF`]), a step is one batch.
    pub fn window(mut self, window: CatchUpWindow) -> Self {
        self.window = window;
        self
    }

    /// Keeps each row's state every `every` versions as a snapshot, committed with the
    /// batch that reaches it (`projections.yaml`: `snapshots: { every: N }`); only
    /// [`crate::Ordering::AggregateVersion`] projections have snapshots.
    pub fn snapshots(mut self, every: Option<u32>) -> Self {
        self.snapshot_every = every;
        self
    }

    /// After this many consecutive crashes of the runner process with the same batch in
    /// flight, the batch is halved until the event that crashes it is isolated; that
    /// event is dead-lettered unapplied and its aggregate parked.
    pub fn crash_limit(mut self, crashes: u32) -> Self {
        self.crash_limit = crashes.max(1);
        self
    }

    /// How long an event whose aggregate has versions missing before it waits for them
    /// (they may still be committing) before it is dead-lettered and its aggregate parked.
    pub fn gap_timeout(mut self, timeout: Duration) -> Self {
        self.gap_timeout = timeout;
        self
    }

    /// Upcasts every event before the handler sees it (the chains `projections.yaml`
    /// enables). The filter then applies to the upcast type; an event an upcaster fails
    /// on is dead-lettered and parks its aggregate.
    pub fn upcasters(mut self, upcasters: Upcasters) -> Self {
        self.reading = self.reading.with_upcasters(upcasters);
        self
    }

    /// Opens the encrypted fields the projection is granted before upcasting; every
    /// other one reaches the handler redacted (the default: nothing is granted). An
    /// event whose fields cannot be read is dead-lettered and parks its aggregate. The
    /// decrypts are audited in the batch's commit.
    pub fn decryption(mut self, decryption: crate::encryption::Decryption) -> Self {
        self.reading = self.reading.decrypting(decryption);
        self
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
        let result = self.step_once().await;
        if std::mem::take(&mut self.in_flight_marked) && result.is_err() {
            // Not a crash: the next claim must not count one. Should this fail too, the
            // next claim counts a crash that was none, which takes `crash_limit` in a row
            // to matter.
            let _ = self.store.set_in_flight(&self.lease, None, self.crashes, self.lease_ttl).await;
        }
        result
    }

    async fn step_once(&mut self) -> Result<StepOutcome, RuntimeError> {
        let plan = self.plan_for_crashes();
        let limit = match plan {
            rules::CrashPlan::Normal => self.batch_size,
            rules::CrashPlan::Probe { limit, .. } => limit.clamp(1, self.batch_size),
            rules::CrashPlan::Isolated => 1,
        };
        let from = self.lease.checkpoint;
        let mut events = self.store.read_all(from, self.reading.store_filter(), self.lease.partition, limit).await?;
        if let Some(cap) = self.until {
            events.retain(|e| e.checkpoint() <= cap);
            if events.is_empty() && from < cap {
                // Every event up to `cap` was below the horizon when `cap` was reached, so
                // an empty read means this partition has none left before it.
                return self.advance_to(cap, Vec::new()).await;
            }
        }
        let (read, read_to) = (events.len(), events.last().map(DomainEvent::checkpoint));
        let prepared = self.reading.prepare(&mut self.store, events).await?;
        let audit = prepared.audit;
        let mut events = prepared.events;
        if events.is_empty() {
            return match read_to {
                // Every event read became a type the filter leaves out: pass over them.
                Some(to) => Ok(StepOutcome { events_read: read, ..self.advance_to(to, audit).await? }),
                None => Ok(StepOutcome { checkpoint: from, ..StepOutcome::default() }),
            };
        }
        if plan == rules::CrashPlan::Isolated && !self.lease.parked.holds(&events[0]) {
            return self.dead_letter_crasher(events.swap_remove(0)).await;
        }

        let mut fold = Fold::new(self.handler)
            .max_payload_bytes(self.store.max_payload_bytes())
            .snapshots_every(self.snapshot_every);
        let mut window = Window { audit, ..Window::default() };
        fold.failing_upcasts(prepared.failed);
        let mut full = read == limit && self.until.is_none() && plan == rules::CrashPlan::Normal;
        if let Err(e) = self.fold_batch(&mut fold, &mut window, events).await {
            return Err(e.into_error());
        }
        // Far behind (the read came back full): fold further batches into the same rows
        // and commit them all at once.
        while full && !window.cut && self.window.reads_on(fold.len(), window.events_read) {
            let after = window.to.expect("a folded batch has an end");
            let events = self.store.read_all(after, self.reading.store_filter(), self.lease.partition, limit).await?;
            let (read, read_to) = (events.len(), events.last().map(DomainEvent::checkpoint));
            full = read == limit;
            let prepared = self.reading.prepare(&mut self.store, events).await?;
            window.audit.extend(prepared.audit);
            if prepared.events.is_empty() {
                if let Some(to) = read_to {
                    window.to = Some(to);
                    window.events_read += read;
                }
                continue;
            }
            fold.begin_page();
            fold.failing_upcasts(prepared.failed);
            match self.fold_batch(&mut fold, &mut window, prepared.events).await {
                Ok(()) => {}
                // The batch waits for missing versions: commit the batches before it.
                Err(BatchEnd::Wait(_)) => break,
                Err(BatchEnd::Fail(e)) => return Err(e),
            }
        }
        self.commit_window(fold, window, from, plan).await
    }

    /// Folds one batch read after the window's end (or the checkpoint) into `fold`:
    /// loads the rows it needs, records it in flight, applies it, and dead-letters and
    /// parks what fails for good. The window's end moves past it.
    async fn fold_batch(
        &mut self,
        fold: &mut Fold<'_, H>,
        window: &mut Window,
        mut events: Vec<DomainEvent>,
    ) -> Result<(), BatchEnd> {
        let read = events.len();
        let schema = self.handler.schema();
        // Recorded in flight as read: a batch cut short at a gap below is within it.
        let end = events.last().expect("a batch has events").checkpoint();
        let in_flight = InFlight { to: end, events: u32::try_from(window.events_read + read).unwrap_or(u32::MAX) };
        let keys = fold.keys_to_load(&events);
        let rows = self.store.begin_batch(&self.lease, in_flight, self.crashes, self.lease_ttl, schema, &keys).await?;
        self.in_flight_marked = true;
        fold.insert_loaded(&keys, &rows).map_err(|e| self.row_error(e))?;
        let reads = gaps::read_gaps(self.store, fold, &events, &self.reading, |e| self.lease.parked.holds(e)).await?;
        fold.failing_upcasts(reads.failed);
        window.audit.extend(reads.audit);
        let parked_before = window.parked_now.len();
        if let Err(e) =
            self.settle_gaps(&reads.unfilled, &mut events, &mut window.letters, &mut window.parked_now).await
        {
            return Err(match e {
                RuntimeError::GapWait(failure) => BatchEnd::Wait(failure),
                other => BatchEnd::Fail(other),
            });
        }
        window.cut |= events.len() < read || window.parked_now.len() > parked_before;
        let gap_events = reads.events;
        let last = events.last().expect("a batch cut at a gap keeps at least one event");
        let to = last.checkpoint();
        let parked = &self.lease.parked;
        let parked_now = &mut window.parked_now;
        // The batch is folded once: after a failure, only the rows the parked versions
        // reached are replayed, and applying goes on where it stopped.
        let mut start = 0;
        loop {
            let held =
                |e: &DomainEvent| parked.holds(e) || parked_now.get(&e.aggregate_id).is_some_and(|v| e.version >= *v);
            let Err(Halt { index, failure }) = fold.apply_from(&events, &gap_events, start, held) else {
                break;
            };
            // Which event failed: from the batch or from a gap read.
            let event = events
                .iter()
                .chain(&gap_events)
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
                return Err(BatchEnd::Fail(RuntimeError::RetryLater { failure, attempts, next }));
            }
            if self.on_failure == OnFailure::Stop {
                return Err(BatchEnd::Fail(RuntimeError::Stopped(failure)));
            }
            window.letters.push(DeadLetter::new(
                self.handler.name(),
                &event,
                &message,
                class,
                attempts,
                DateTime::<Utc>::MIN_UTC,
            ));
            parked_now.insert(event.aggregate_id, event.version);
            let held =
                |e: &DomainEvent| parked.holds(e) || parked_now.get(&e.aggregate_id).is_some_and(|v| e.version >= *v);
            fold.take_out(&events, &gap_events, index, &event, held).map_err(RuntimeError::from)?;
            start = index;
        }
        for event_id in [self.retrying, self.gap_waiting].into_iter().flatten() {
            if events.iter().any(|e| e.event_id == event_id) {
                window.applied_after_failing.push(event_id);
            }
        }
        window.to = Some(to);
        window.last_timestamp = Some(last.timestamp);
        window.events_read += events.len();
        window.cut |= !window.letters.is_empty();
        Ok(())
    }

    /// Commits the rows and dead letters of a window and moves the checkpoint to its end.
    async fn commit_window(
        &mut self,
        mut fold: Fold<'_, H>,
        window: Window,
        from: Checkpoint,
        plan: rules::CrashPlan,
    ) -> Result<StepOutcome, RuntimeError> {
        let to = window.to.expect("a folded batch has an end");
        let dead_lettered = window.letters.len() as u64;
        let letters_sent: Vec<Uuid> = window.letters.iter().map(|l| l.event_id).collect();
        let mut changes = fold.changes();
        let captured = fold.take_snapshots();
        if !captured.is_empty() {
            let chains = crate::store::snapshots::chains(self.reading.upcasters());
            changes.snapshots = snapshots::snapshots_of(self.handler, &chains, captured);
        }
        let commit = BatchCommit {
            lease: &self.lease,
            table: self.handler.schema(),
            from,
            to,
            changes,
            events_applied: fold.events_applied(),
            last_event_at: fold.last_event_at().or(window.last_timestamp),
            lease_ttl: self.lease_ttl,
            dead_letters: window.letters,
            audit: window.audit,
        };
        self.store.commit(commit).await?;
        self.lease.checkpoint = to;
        self.in_flight_marked = false;
        self.committed_after_crashes(plan, to).await?;
        self.retrying = None;
        self.gap_waiting = None;
        for event_id in window.applied_after_failing {
            if !letters_sent.contains(&event_id) {
                self.store.clear_failure(self.handler.name(), event_id).await?;
            }
        }
        if !window.parked_now.is_empty() {
            for (aggregate_id, from_version) in window.parked_now {
                self.lease
                    .parked
                    .by_aggregate
                    .insert(aggregate_id, Parked { aggregate_id, from_version, dead_letter_id: 0 });
            }
            self.lease.parked.epoch += 1;
        }
        Ok(StepOutcome {
            events_read: window.events_read,
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

    async fn advance_to(
        &mut self,
        cap: Checkpoint,
        audit: Vec<crate::store::keys::AuditRecord>,
    ) -> Result<StepOutcome, RuntimeError> {
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
            audit,
        };
        self.store.commit(commit).await?;
        self.lease.checkpoint = cap;
        Ok(StepOutcome { checkpoint: cap, ..StepOutcome::default() })
    }

    /// Decides for each event of the batch whose missing versions the direct read did
    /// not find: past the gap timeout it becomes a dead letter parking its aggregate
    /// (added to `letters` and `parked_now`); before it, the batch is cut just before
    /// it, and when nothing is left before it the step waits (`GapWait`).
    async fn settle_gaps(
        &mut self,
        unfilled: &[gaps::Unfilled],
        events: &mut Vec<DomainEvent>,
        letters: &mut Vec<DeadLetter>,
        parked_now: &mut BTreeMap<Uuid, i64>,
    ) -> Result<(), RuntimeError> {
        for hole in unfilled {
            let Some(index) =
                events.iter().position(|e| e.aggregate_id == hole.aggregate_id && e.version == hole.version)
            else {
                continue;
            };
            let event = &events[index];
            let failure = hole.failure(self.handler.name(), event);
            let message = failure.to_string();
            let record = self.store.record_failure(self.handler.name(), event, &message).await?;
            if !rules::gap_waited_out(&record, self.gap_timeout) {
                self.gap_waiting = Some(event.event_id);
                events.truncate(index);
                if events.is_empty() {
                    return Err(RuntimeError::GapWait(failure));
                }
                return Ok(());
            }
            if self.on_failure == OnFailure::Stop {
                return Err(RuntimeError::Stopped(failure));
            }
            letters.push(DeadLetter::new(
                self.handler.name(),
                event,
                &message,
                ErrorClass::Permanent,
                record.attempts,
                DateTime::<Utc>::MIN_UTC,
            ));
            parked_now.insert(event.aggregate_id, event.version);
        }
        Ok(())
    }

    fn row_error(&self, e: crate::read_model::RowError) -> RuntimeError {
        RuntimeError::Row { projection: self.handler.name(), reason: e.to_string() }
    }
}
