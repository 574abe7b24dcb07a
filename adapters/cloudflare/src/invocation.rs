//! One scheduled invocation: register the configured projections, lease every free
//! partition, run the core's batch runtime over them in turn until each is caught up or
//! the budget is spent, and release the leases.
//!
//! Every batch commits its rows and checkpoint together, so stopping between batches
//! loses nothing and the next invocation goes on from the stored checkpoint. Partitions
//! take turns one batch at a time, so one projection far behind does not starve the rest.

use projector::{EventStore, Partition, ProjectionStore, RuntimeError, Status, StoreError};
use serde::Serialize;

use crate::budget::{Budget, Clock};
use crate::handlers;
use crate::settings::Settings;

/// How one partition's turn in this invocation ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "detail")]
pub enum Ending {
    /// A read came back empty: nothing left below the read horizon.
    CaughtUp,
    /// The budget ran out first; the next invocation goes on from the checkpoint.
    BudgetSpent,
    /// Another runner holds the lease.
    LeasedElsewhere,
    /// A handler failed transiently; the attempt is stored and the next invocation retries.
    RetryLater(String),
    /// `on_failure: stop` halted the partition at an event.
    Stopped(String),
    /// The checkpoint or lease moved under this invocation (a rebuild, another runner).
    Moved(String),
    /// A failure that ended this partition's turn (recorded as its status when permanent).
    Failed(String),
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
pub async fn run<S, C>(store: &S, settings: &Settings, owner: &str, clock: C) -> Result<Report, InvocationError>
where
    S: EventStore + ProjectionStore,
    C: Clock,
{
    let budget = Budget::new(clock, settings.work_budget());
    let ttl = settings.lease_ttl();
    let upcasters = settings.upcasters();
    for &name in &settings.projections {
        let (schema, filter) = handlers::describe(name, &upcasters).expect("settings name only compiled-in handlers");
        store
            .register(name, schema, &filter, settings.partitions)
            .await
            .map_err(|source| InvocationError { projection: name.to_owned(), source })?;
    }

    let mut reports = Vec::new();
    let mut active: Vec<(usize, Box<dyn handlers::Partition + '_>)> = Vec::new();
    for &name in &settings.projections {
        for index in 0..settings.partitions {
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
            match store.claim(name, partition, owner, ttl).await {
                Ok(Some(lease)) => {
                    report.checkpoint = Some(lease.checkpoint);
                    let runner = handlers::runner(store, lease, &upcasters, settings.batch_size, ttl)
                        .expect("settings name only compiled-in handlers");
                    active.push((reports.len(), runner));
                }
                Ok(None) => {}
                Err(e) => report.ending = Ending::Failed(format!("claim: {e}")),
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
        RuntimeError::RetryLater { failure, attempts, .. } => {
            Ending::RetryLater(format!("attempt {attempts} of event {} failed: {}", failure.event_id, failure.error))
        }
        RuntimeError::Stopped(failure) => {
            let reason = format!("stopped at event {}: {}", failure.event_id, failure.error);
            let _ = store.set_status(projection, partition, Status::Stopped, Some(&reason)).await;
            Ending::Stopped(reason)
        }
        RuntimeError::Store(e @ (StoreError::CheckpointMoved { .. } | StoreError::LeaseLost { .. })) => {
            Ending::Moved(e.to_string())
        }
        e if e.class() == projector::ErrorClass::Transient => Ending::Failed(e.to_string()),
        e => {
            let reason = e.to_string();
            let _ = store.set_status(projection, partition, Status::Failed, Some(&reason)).await;
            Ending::Failed(reason)
        }
    };
    release(store, lease).await;
    ending
}
