//! One scheduled invocation: register the configured projections, lease every free
//! partition, run the core's batch runtime over them in turn until each is caught up or
//! the budget is spent, and release the leases.
//!
//! Every batch commits its rows and checkpoint together, so stopping between batches
//! loses nothing and the next invocation goes on from the stored checkpoint. Partitions
//! take turns one batch at a time, so one projection far behind does not starve the rest.

use std::time::Duration;

use projector::retry::RetryAction;
use projector::{EventStore, Partition, ProjectionStore, RuntimeError, Status, StoreError};
use serde::Serialize;
use uuid::Uuid;

use crate::budget::{Budget, Clock};
use crate::handlers;
use crate::settings::Settings;

/// How one partition's turn in this invocation ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Ending {
    /// A read came back empty: nothing left below the read horizon.
    CaughtUp,
    /// The budget ran out first; the next invocation goes on from the checkpoint.
    BudgetSpent,
    /// Another runner holds the lease.
    LeasedElsewhere,
    /// An event failed transiently with retries left; the attempt is stored and a later
    /// invocation retries it, best after `max_delay_ms` of backoff at most.
    RetryLater { event_id: Uuid, error: String, max_delay_ms: u64 },
    /// The next event waits for missing versions of its aggregate (still committing, or
    /// never to come: after `gap_timeout` it is dead-lettered).
    WaitingForVersions { event_id: Uuid, error: String },
    /// `on_failure: stop` halted the partition at an event.
    Stopped { detail: String },
    /// The checkpoint or lease moved under this invocation (a rebuild, another runner).
    Moved { detail: String },
    /// A failure that ended this partition's turn (recorded as its status when permanent).
    Failed { detail: String, permanent: bool },
}

impl Ending {
    /// The event the partition waits to retry, when it waits for one.
    pub fn waiting_for(&self) -> Option<Uuid> {
        match self {
            Ending::RetryLater { event_id, .. } | Ending::WaitingForVersions { event_id, .. } => Some(*event_id),
            _ => None,
        }
    }
}

/// How much patience an invocation has with failing events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retries {
    /// As configured (`retry`, `gap_timeout`), for every partition.
    Configured,
    /// Spent, for this one partition only (the others are left alone): the wake queue
    /// gave up on the retries of the event it waits on, so the event that still fails, or
    /// still waits for missing versions, is dead-lettered now.
    SpentFor { projection: String, partition: u32 },
}

impl Retries {
    /// Whether this invocation works on `partition` of `projection`.
    pub fn covers(&self, projection: &str, partition: u32) -> bool {
        match self {
            Retries::Configured => true,
            Retries::SpentFor { projection: p, partition: n } => p == projection && *n == partition,
        }
    }
}

/// What one partition did in this invocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionReport {
    pub projection: String,
    pub partition: u32,
    pub batches: u64,
    pub events_read: u64,
    pub events_applied: u64,
    pub dead_lettered: u64,
    pub checkpoint: Option<projector::Checkpoint>,
    pub ending: Ending,
}

/// What the invocation did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub elapsed_ms: u64,
    pub partitions: Vec<PartitionReport>,
}

/// The invocation could not start: registering a projection failed.
#[derive(Debug, thiserror::Error)]
#[error("projection {projection}: {source}")]
pub struct InvocationError {
    pub projection: String,
    #[source]
    pub source: StoreError,
}

/// Runs one invocation (see the module docs) as `owner`.
pub async fn run<S, C>(
    store: &S,
    settings: &Settings,
    retries: &Retries,
    owner: &str,
    clock: C,
) -> Result<Report, InvocationError>
where
    S: EventStore + ProjectionStore,
    C: Clock,
{
    let budget = Budget::new(clock, settings.work_budget());
    let knobs = settings.knobs(retries);
    for &name in &settings.projections {
        let (schema, filter) =
            handlers::describe(name, &knobs.filter, &knobs.upcasters).expect("settings name only compiled-in handlers");
        store
            .register(name, schema, &filter, settings.partitions)
            .await
            .map_err(|source| InvocationError { projection: name.to_owned(), source })?;
    }

    let mut reports = Vec::new();
    let mut active: Vec<(usize, Box<dyn handlers::Partition + '_>)> = Vec::new();
    for &name in &settings.projections {
        for index in (0..settings.partitions).filter(|&i| retries.covers(name, i)) {
            let partition = Partition { index, count: settings.partitions };
            let mut report = PartitionReport {
                projection: name.to_owned(),
                partition: index,
                batches: 0,
                events_read: 0,
                events_applied: 0,
                dead_lettered: 0,
                checkpoint: None,
                ending: Ending::LeasedElsewhere,
            };
            match store.claim(name, partition, owner, knobs.lease_ttl).await {
                Ok(Some(lease)) => {
                    report.checkpoint = Some(lease.checkpoint);
                    let runner =
                        handlers::runner(store, lease, &knobs).expect("settings name only compiled-in handlers");
                    active.push((reports.len(), runner));
                }
                Ok(None) => {}
                Err(e) => {
                    let permanent = e.class() == projector::ErrorClass::Permanent;
                    report.ending = Ending::Failed { detail: format!("claim: {e}"), permanent };
                }
            }
            reports.push(report);
        }
    }

    // Every claimed partition runs at least one batch, so even a tiny budget progresses.
    let mut first_round = true;
    while !active.is_empty() {
        if !first_round && budget.spent() {
            for (i, _) in &active {
                reports[*i].ending = Ending::BudgetSpent;
            }
            break;
        }
        first_round = false;
        let mut still = Vec::with_capacity(active.len());
        for (i, mut runner) in active {
            let report = &mut reports[i];
            match runner.step().await {
                Ok(step) => {
                    report.checkpoint = Some(step.checkpoint);
                    if step.events_read == 0 {
                        report.ending = Ending::CaughtUp;
                        release(store, runner.lease()).await;
                        continue;
                    }
                    report.batches += 1;
                    report.events_read += step.events_read as u64;
                    report.events_applied += step.events_applied;
                    report.dead_lettered += step.dead_lettered;
                    still.push((i, runner));
                }
                Err(e) => {
                    report.ending = ended(store, runner.lease(), e).await;
                }
            }
        }
        active = still;
    }
    for (_, runner) in &active {
        release(store, runner.lease()).await;
    }
    Ok(Report { elapsed_ms: budget.elapsed().as_millis() as u64, partitions: reports })
}

/// Gives the lease back; one that cannot be released expires on its own.
async fn release<S: ProjectionStore>(store: &S, lease: &projector::Lease) {
    let _ = store.release(lease).await;
}

/// Records why a partition's turn ended on an error, and releases its lease.
async fn ended<S: ProjectionStore>(store: &S, lease: &projector::Lease, error: RuntimeError) -> Ending {
    let (projection, partition) = (lease.projection.as_str(), lease.partition);
    let ending = match error {
        RuntimeError::RetryLater { failure, attempts, next } => {
            let max_delay = match next {
                RetryAction::Retry { max_delay } => max_delay,
                RetryAction::DeadLetter | RetryAction::Abort => Duration::ZERO,
            };
            Ending::RetryLater {
                event_id: failure.event_id,
                error: format!("attempt {attempts} failed: {}", failure.error),
                max_delay_ms: u64::try_from(max_delay.as_millis()).unwrap_or(u64::MAX),
            }
        }
        RuntimeError::GapWait(failure) => {
            Ending::WaitingForVersions { event_id: failure.event_id, error: failure.error.to_string() }
        }
        RuntimeError::Stopped(failure) => {
            let reason = format!("stopped at event {}: {}", failure.event_id, failure.error);
            let _ = store.set_status(projection, partition, Status::Stopped, Some(&reason)).await;
            Ending::Stopped { detail: reason }
        }
        RuntimeError::Store(e @ (StoreError::CheckpointMoved { .. } | StoreError::LeaseLost { .. })) => {
            Ending::Moved { detail: e.to_string() }
        }
        e if e.class() == projector::ErrorClass::Transient => {
            Ending::Failed { detail: e.to_string(), permanent: false }
        }
        e => {
            let reason = e.to_string();
            let _ = store.set_status(projection, partition, Status::Failed, Some(&reason)).await;
            Ending::Failed { detail: reason, permanent: true }
        }
    };
    release(store, lease).await;
    ending
}
