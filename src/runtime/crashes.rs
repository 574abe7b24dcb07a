//! Finding an event that crashes the runner process (an abort, running out of memory,
//! a stack overflow, a wasm trap: what `catch_unwind` cannot catch). Each batch is
//! recorded in flight before it is applied; a claim that finds one still there counts a
//! crash. At `crash_limit` crashes in a row the batch is halved until one event is left,
//! and that event is dead-lettered unapplied: only its aggregate waits.

use chrono::{DateTime, Utc};

use crate::dead_letter::{DeadLetter, OnFailure, Parked};
use crate::error::{ErrorClass, HandlerError};
use crate::event::{Checkpoint, DomainEvent};
use crate::fold::ApplyError;
use crate::handler::ProjectionHandler;
use crate::store::rules::{self, CrashPlan};
use crate::store::{BatchCommit, EventStore, ProjectionStore};

use super::{BatchRunner, RuntimeError, StepOutcome};

impl<H, S> BatchRunner<'_, H, S>
where
    H: ProjectionHandler,
    S: EventStore + ProjectionStore,
{
    /// The plan, decided once from the lease this runner started with.
    pub(super) fn plan_for_crashes(&mut self) -> CrashPlan {
        if let Some(plan) = self.crash_plan {
            return plan;
        }
        self.crashes = rules::crashes_at_claim(&self.lease);
        let plan = rules::crash_plan(self.lease.in_flight, self.crashes, self.crash_limit);
        self.crash_plan = Some(plan);
        plan
    }

    /// After a commit: the crash count starts over once a batch commits in the normal
    /// course, or once a halved search passes the end of the batch that crashed (the
    /// crash did not come back).
    pub(super) async fn committed_after_crashes(
        &mut self,
        plan: CrashPlan,
        to: Checkpoint,
    ) -> Result<(), RuntimeError> {
        let over = match plan {
            CrashPlan::Normal => self.crashes > 0,
            CrashPlan::Probe { until, .. } => to >= until,
            CrashPlan::Isolated => true,
        };
        if over {
            self.crashes = 0;
            self.crash_plan = Some(CrashPlan::Normal);
            self.store.set_in_flight(&self.lease, None, 0, self.lease_ttl).await?;
        }
        Ok(())
    }

    /// Dead-letters the one event left of a batch that kept crashing the runner, without
    /// applying it, and parks its aggregate.
    pub(super) async fn dead_letter_crasher(&mut self, event: DomainEvent) -> Result<StepOutcome, RuntimeError> {
        let failure = Box::new(ApplyError {
            projection: self.handler.name(),
            event_id: event.event_id,
            position: event.position,
            aggregate_id: event.aggregate_id,
            version: event.version,
            error: HandlerError::Crashed { event_id: event.event_id, crashes: self.crashes },
        });
        if self.on_failure == OnFailure::Stop {
            return Err(RuntimeError::Stopped(failure));
        }
        let letter = DeadLetter::new(
            self.handler.name(),
            &event,
            &failure.to_string(),
            ErrorClass::Permanent,
            self.crashes,
            DateTime::<Utc>::MIN_UTC,
        );
        let from = self.lease.checkpoint;
        let to = event.checkpoint();
        let commit = BatchCommit {
            lease: &self.lease,
            table: self.handler.schema(),
            from,
            to,
            changes: Default::default(),
            events_applied: 0,
            last_event_at: None,
            lease_ttl: self.lease_ttl,
            dead_letters: vec![letter],
            audit: Vec::new(),
        };
        self.store.commit(commit).await?;
        self.lease.checkpoint = to;
        let parked = Parked { aggregate_id: event.aggregate_id, from_version: event.version, dead_letter_id: 0 };
        self.lease.parked.by_aggregate.insert(event.aggregate_id, parked);
        self.lease.parked.epoch += 1;
        self.committed_after_crashes(CrashPlan::Isolated, to).await?;
        Ok(StepOutcome { events_read: 1, events_applied: 0, dead_lettered: 1, checkpoint: to })
    }
}
