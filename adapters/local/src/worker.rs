//! One partition's worker loop: take the lease, run batches until caught up, sleep until
//! woken or the poll interval passes, and stop cleanly between batches.

use std::sync::Arc;
use std::time::{Duration, Instant};

use projector::retry::Failure;
use projector::store::rules;
use projector::{
    BatchRunner, ErrorClass, EventFilter, OnFailure, Partition, ProjectionHandler, ProjectionStore, RetryPolicy,
    RuntimeError, Status, StoreError,
};
use tokio::sync::{watch, Notify};

use crate::connect::Connector;
use crate::metrics::Metrics;
use projector::encryption::Decryption;
use projector::upcast::Upcasters;
use projector::CatchUpWindow;

/// How a partition worker runs.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub projection: String,
    pub filter: EventFilter,
    pub partition: Partition,
    pub batch_size: usize,
    pub poll_interval: Duration,
    pub lease_ttl: Duration,
    pub owner: String,
    /// Backoff for transient handler failures (then the event is dead-lettered) and for
    /// reconnecting (for as long as it takes).
    pub retry: RetryPolicy,
    pub on_failure: OnFailure,
    /// How long an event waits for missing versions of its aggregate before it is
    /// dead-lettered.
    pub gap_timeout: Duration,
    /// Crashes in a row with one batch in flight before the crashing event is searched for.
    pub crash_limit: u32,
    /// The upcaster chains `projections.yaml` enables: every event passes them before
    /// the handler sees it.
    pub upcasters: Upcasters,
    /// How much a step far behind folds before it commits (from `config.memory`).
    pub window: CatchUpWindow,
    /// The encrypted fields the projection may read (its `decrypt:` grant), opened
    /// before upcasting; every other one reaches the handler redacted.
    pub decryption: Decryption,
    /// Keep each row's state every this many versions (`snapshots.every`).
    pub snapshots: Option<u32>,
}

/// Why a worker ended.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerExit {
    /// Shut down on request, lease released.
    Stopped,
    /// A permanent failure; the projection partition is marked failed.
    Failed(String),
    /// `on_failure: stop` halted the partition at an event.
    Halted(String),
}

fn jitter() -> f64 {
    rand::random::<f64>()
}

/// Sleeps for `d` unless shutdown is requested first; returns true on shutdown.
async fn sleep_or_stop(d: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    if *shutdown.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => *shutdown.borrow(),
        _ = shutdown.changed() => true,
    }
}

/// Runs one partition until shutdown or a permanent failure. Transient failures
/// (database restarts, lost connections) are retried with backoff for as long as it takes.
pub async fn run_partition<H: ProjectionHandler, C: Connector>(
    handler: &H,
    connector: &C,
    settings: &WorkerSettings,
    metrics: &Metrics,
    wake: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) -> WorkerExit {
    let s = settings;
    let (name, index) = (s.projection.as_str(), s.partition.index);
    let mut failures = 0u32;
    'connect: loop {
        if *shutdown.borrow() {
            return WorkerExit::Stopped;
        }
        let store = match connector.connect().await {
            Ok(store) => store,
            Err(e) => {
                tracing::warn!(projection = %s.projection, partition = %s.partition, error = %e,
                    "cannot reach {}; retrying", connector.describe());
                failures = failures.saturating_add(1);
                let delay = s.retry.next_action(Failure::Store(ErrorClass::Transient), failures).delay(jitter());
                let delay = delay.max(Duration::from_millis(50));
                if sleep_or_stop(delay, &mut shutdown).await {
                    return WorkerExit::Stopped;
                }
                continue 'connect;
            }
        };
        'claim: loop {
            let lease = match store.claim(&s.projection, s.partition, &s.owner, s.lease_ttl).await {
                Ok(Some(lease)) => lease,
                Ok(None) => {
                    metrics.heartbeat(name, index);
                    // Another runner owns this partition; try again when its lease may
                    // expire or its owner may be found gone.
                    if sleep_or_stop(rules::claim_retry(s.lease_ttl), &mut shutdown).await {
                        return WorkerExit::Stopped;
                    }
                    continue 'claim;
                }
                Err(e) if e.class() == ErrorClass::Transient => {
                    tracing::warn!(projection = %s.projection, error = %e, "claim failed; reconnecting");
                    failures = failures.saturating_add(1);
                    let delay = s.retry.next_action(Failure::Store(ErrorClass::Transient), failures).delay(jitter());
                    if sleep_or_stop(delay, &mut shutdown).await {
                        return WorkerExit::Stopped;
                    }
                    continue 'connect;
                }
                Err(e) => return fail(&store, s, &e.to_string()).await,
            };
            tracing::info!(projection = %s.projection, partition = %s.partition, checkpoint = %lease.checkpoint,
                "partition claimed");
            let mut runner = BatchRunner::new(handler, &store, &s.filter, lease)
                .batch_size(s.batch_size)
                .lease_ttl(s.lease_ttl)
                .retry(s.retry)
                .on_failure(s.on_failure)
                .gap_timeout(s.gap_timeout)
                .crash_limit(s.crash_limit)
                .upcasters(s.upcasters.clone())
                .window(s.window)
                .decryption(s.decryption.clone())
                .snapshots(s.snapshots);
            let mut renewed = Instant::now();
            // Until a step succeeds, the stored status may still be an earlier failure's.
            let mut recovered = false;
            loop {
                if *shutdown.borrow() {
                    let _ = store.release(runner.lease()).await;
                    return WorkerExit::Stopped;
                }
                // Registered before the read, so an append committed meanwhile still wakes us.
                let notified = wake.notified();
                metrics.heartbeat(name, index);
                let started = Instant::now();
                let stepped = runner.step().await;
                if stepped.is_ok() && !recovered {
                    recovered = mark_running(&store, s).await;
                }
                match stepped {
                    Ok(outcome) if outcome.events_read > 0 => {
                        failures = 0;
                        renewed = Instant::now();
                        metrics.batch_committed(name, index, outcome.events_applied, started.elapsed());
                        if outcome.dead_lettered > 0 {
                            metrics.dead_lettered(name, index, outcome.dead_lettered);
                        }
                    }
                    Ok(_) => {
                        failures = 0;
                        if renewed.elapsed() >= s.lease_ttl / 3 {
                            match store.claim(&s.projection, s.partition, &s.owner, s.lease_ttl).await {
                                Ok(Some(_)) => renewed = Instant::now(),
                                Ok(None) => continue 'claim,
                                Err(e) if e.class() == ErrorClass::Transient => continue 'connect,
                                Err(e) => return fail(&store, s, &e.to_string()).await,
                            }
                        }
                        tokio::select! {
                            _ = notified => {}
                            _ = tokio::time::sleep(s.poll_interval) => {}
                            _ = shutdown.changed() => {}
                        }
                    }
                    Err(RuntimeError::RetryLater { failure, attempts, next }) => {
                        // A transient handler failure with retries left; the attempt is stored.
                        metrics.retried(name, index);
                        let delay = next.delay(jitter());
                        tracing::warn!(projection = %s.projection, partition = %s.partition, event = %failure.event_id,
                            attempts, ?delay, error = %failure.error, "handler failed transiently; retrying");
                        if sleep_or_stop(delay, &mut shutdown).await {
                            let _ = store.release(runner.lease()).await;
                            return WorkerExit::Stopped;
                        }
                    }
                    Err(RuntimeError::GapWait(failure)) => {
                        // The wait is in the attempt history; look again after a poll interval.
                        tracing::warn!(projection = %s.projection, partition = %s.partition, event = %failure.event_id,
                            error = %failure.error, "waiting for missing versions");
                        if renewed.elapsed() >= s.lease_ttl / 3 {
                            match store.claim(&s.projection, s.partition, &s.owner, s.lease_ttl).await {
                                Ok(Some(_)) => renewed = Instant::now(),
                                Ok(None) => continue 'claim,
                                Err(e) if e.class() == ErrorClass::Transient => continue 'connect,
                                Err(e) => return fail(&store, s, &e.to_string()).await,
                            }
                        }
                        if sleep_or_stop(s.poll_interval, &mut shutdown).await {
                            let _ = store.release(runner.lease()).await;
                            return WorkerExit::Stopped;
                        }
                    }
                    Err(RuntimeError::Stopped(failure)) => {
                        let reason = format!("stopped at event {}: {}", failure.event_id, failure.error);
                        tracing::error!(projection = %s.projection, partition = %s.partition, %reason,
                            "projection stopped (on_failure: stop)");
                        metrics.stopped(name, index, &reason);
                        if let Err(e) =
                            store.set_status(&s.projection, s.partition, Status::Stopped, Some(&reason)).await
                        {
                            tracing::error!(projection = %s.projection, error = %e, "could not record the stop");
                        }
                        let _ = store.release(runner.lease()).await;
                        return WorkerExit::Halted(reason);
                    }
                    Err(RuntimeError::Store(StoreError::CheckpointMoved { .. } | StoreError::LeaseLost { .. })) => {
                        // A rebuild or another runner moved the partition: take it again from
                        // the stored checkpoint (a COMMIT whose reply was lost lands here too).
                        continue 'claim;
                    }
                    Err(e) if e.class() == ErrorClass::Transient => {
                        metrics.retried(name, index);
                        failures = failures.saturating_add(1);
                        tracing::warn!(projection = %s.projection, partition = %s.partition, error = %e,
                            attempt = failures, "transient failure; retrying");
                        let delay = s.retry.next_action(Failure::Store(e.class()), failures).delay(jitter());
                        if sleep_or_stop(delay, &mut shutdown).await {
                            return WorkerExit::Stopped;
                        }
                        continue 'connect;
                    }
                    Err(e) => {
                        metrics.stopped(name, index, &format!("failed: {e}"));
                        return fail(&store, s, &e.to_string()).await;
                    }
                }
            }
        }
    }
}

/// Records that the partition runs again, which clears an earlier failure's status and
/// error text; true once recorded (a failure here is tried again after the next step).
async fn mark_running<S: ProjectionStore>(store: &S, s: &WorkerSettings) -> bool {
    match store.set_status(&s.projection, s.partition, Status::Running, None).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(projection = %s.projection, partition = %s.partition, error = %e,
                "could not record that the partition runs again");
            false
        }
    }
}

async fn fail<S: ProjectionStore>(store: &S, s: &WorkerSettings, error: &str) -> WorkerExit {
    tracing::error!(projection = %s.projection, partition = %s.partition, error, "projection failed");
    if let Err(e) = store.set_status(&s.projection, s.partition, Status::Failed, Some(error)).await {
        tracing::error!(projection = %s.projection, error = %e, "could not record the failure");
    }
    WorkerExit::Failed(error.to_owned())
}
