//! Applying a migration: record it, rewrite chunk by chunk from its cursor, verify.

use super::checksum::{same_content, Checksum};
use super::rewrite::{rewrite_of, shape_of, Failure};
use super::{Migration, MigrationError, MigrationPlan, MigrationProgress};
use crate::event::{DomainEvent, Metadata};
use crate::store::migrations::{
    EventMigration, EventMigrations, MigratedEvent, MigrationChange, MigrationStatus, NewEventMigration, RewriteChunk,
};
use crate::store::EventStore;

/// How many times a run rewinds for events committed late, behind its cursor (possible
/// only where positions are taken before commit), before it gives up.
const PASSES: u32 = 3;

/// What [`Migration::apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// The plan found nothing to rewrite: nothing was recorded.
    NothingToDo(Box<MigrationPlan>),
    /// The migration is applied and verified.
    Applied {
        migration: Box<EventMigration>,
        /// It went on with a migration an earlier run left open.
        resumed: bool,
        /// Chunks this run committed.
        chunks: u64,
    },
}

/// Why verification did not pass.
enum Unverified {
    /// An event at this position still needs the chains: it was committed behind the
    /// cursor after the chunk that covers it.
    Late(i64),
    Failed(String),
}

impl Migration {
    /// Plans, refuses to start when the plan has failures, records the migration and
    /// rewrites the events in chunks, then verifies. A migration an earlier run left
    /// open (`applying`) is taken up where it stopped, provided it runs the same chains.
    pub async fn apply<S: EventStore + EventMigrations>(
        &self,
        store: &S,
        progress: &mut impl MigrationProgress,
    ) -> Result<ApplyOutcome, MigrationError> {
        let open = store.event_migrations().await?.into_iter().find(|m| m.status.is_open());
        let (mut record, resumed) = match open {
            Some(m) if m.status == MigrationStatus::RollingBack => {
                let reason =
                    format!("(being rolled back): finish that first with `projector migrate --rollback {}`", m.id);
                return Err(MigrationError::Open { id: m.id, status: m.status, reason });
            }
            Some(m) if m.upcasters != self.upcasters.describe() => {
                let reason = format!(
                    "with other upcasters ({}): run it again with the same chains, or roll it back with \
                     `projector migrate --rollback {}`",
                    m.upcasters.join("; "),
                    m.id
                );
                return Err(MigrationError::Open { id: m.id, status: m.status, reason });
            }
            Some(m) => (m, true),
            None => {
                let plan = self.plan(store, progress).await?;
                if plan.is_refused() {
                    return Err(MigrationError::PlanFailed(plan.failures));
                }
                if plan.events_to_change == 0 {
                    return Ok(ApplyOutcome::NothingToDo(Box::new(plan)));
                }
                let new = NewEventMigration {
                    event_types: plan.event_types.clone(),
                    upcasters: plan.upcasters.clone(),
                    upto_position: plan.upto_position,
                    events_planned: plan.events_to_change as i64,
                    actor: self.actor.clone(),
                };
                (store.begin_event_migration(&new).await?, false)
            }
        };
        let mut chunks = 0;
        let mut pass = 1;
        loop {
            chunks += self.rewrite(store, &mut record, progress).await?;
            match self.verify(store, &record, progress).await? {
                Ok(()) => break,
                Err(Unverified::Late(position)) if pass < PASSES => {
                    pass += 1;
                    let to = position - 1;
                    if !store.change_event_migration(record.id, &MigrationChange::Rewind { to }).await? {
                        return Err(MigrationError::Moved { id: record.id });
                    }
                    record.rewritten_upto = to;
                }
                Err(unverified) => {
                    let reason = match unverified {
                        Unverified::Late(position) => format!(
                            "events committed behind the migration keep appearing (the last at position {position}); \
                             run `--apply` again when appends of the migrated types have settled"
                        ),
                        Unverified::Failed(reason) => reason,
                    };
                    store.change_event_migration(record.id, &MigrationChange::Failed(reason.clone())).await?;
                    return Err(MigrationError::Verification { id: record.id, reason });
                }
            }
        }
        if !store.change_event_migration(record.id, &MigrationChange::Verified).await? {
            return Err(MigrationError::Moved { id: record.id });
        }
        let migration = store.event_migrations().await?.into_iter().find(|m| m.id == record.id);
        let migration = migration.ok_or(MigrationError::Unknown(record.id))?;
        Ok(ApplyOutcome::Applied { migration: Box::new(migration), resumed, chunks })
    }

    /// Rewrites chunks from the record's cursor up to its last position; returns how
    /// many it committed and keeps `record` in step with the store.
    async fn rewrite<S: EventStore + EventMigrations>(
        &self,
        store: &S,
        record: &mut EventMigration,
        progress: &mut impl MigrationProgress,
    ) -> Result<u64, MigrationError> {
        let (filter, max_payload) = (self.filter(), store.max_payload_bytes());
        let corrupt = |what: &str| MigrationError::Verification {
            id: record.id,
            reason: format!("its recorded {what} checksum does not parse"),
        };
        let mut before = Checksum::parse(&record.before_checksum).ok_or_else(|| corrupt("before"))?;
        let mut after = Checksum::parse(&record.after_checksum).ok_or_else(|| corrupt("after"))?;
        let mut chunks = 0;
        while record.rewritten_upto < record.upto_position {
            let mut events = store.read_committed(record.rewritten_upto, &filter, self.chunk_size).await?;
            events.retain(|e| e.position <= record.upto_position);
            let Some(last) = events.last() else { break };
            let to = last.position;
            let mut rewrites = Vec::new();
            let (mut chunk_before, mut chunk_after) = (before, after);
            for event in &events {
                match rewrite_of(&self.upcasters, event, max_payload) {
                    Ok(None) => {}
                    Ok(Some(step)) => {
                        chunk_before.add(event.event_id, &step.rewrite.from);
                        chunk_after.add(event.event_id, &step.rewrite.to);
                        rewrites.push(step.rewrite);
                    }
                    Err(failure) => return Err(self.stop(store, record.id, failure).await),
                }
            }
            let chunk = RewriteChunk {
                migration: record.id,
                from: record.rewritten_upto,
                to,
                rewrites: &rewrites,
                before_checksum: chunk_before.to_string(),
                after_checksum: chunk_after.to_string(),
            };
            if !store.rewrite_events(&chunk).await? {
                return Err(MigrationError::Moved { id: record.id });
            }
            (before, after) = (chunk_before, chunk_after);
            record.rewritten_upto = to;
            record.events_rewritten += rewrites.len() as i64;
            record.before_checksum = chunk.before_checksum;
            record.after_checksum = chunk.after_checksum;
            chunks += 1;
            progress.chunk(record.events_rewritten as u64, record.events_planned.max(record.events_rewritten) as u64);
        }
        Ok(chunks)
    }

    /// Records why the run stopped at `failure` and returns the error that says so.
    async fn stop<S: EventMigrations>(&self, store: &S, id: i64, failure: Failure) -> MigrationError {
        if let Err(e) = store.change_event_migration(id, &MigrationChange::Failed(failure.to_string())).await {
            return e.into();
        }
        MigrationError::EventFailed { id, failure: Box::new(failure) }
    }

    /// Checks the whole migration: every backed-up original upcasts to the event stored
    /// now, which is at the chain's last version; as many backups as rewrites, and the
    /// checksums recomputed from them equal to those the chunks recorded; and no event
    /// up to the last position still needs a step.
    async fn verify<S: EventStore + EventMigrations>(
        &self,
        store: &S,
        record: &EventMigration,
        progress: &mut impl MigrationProgress,
    ) -> Result<Result<(), Unverified>, MigrationError> {
        let (mut before, mut after, mut count) = (Checksum::EMPTY, Checksum::EMPTY, 0i64);
        let mut from = 0;
        loop {
            let page = store.migrated_events(record.id, from, self.read_size).await?;
            let Some(last) = page.last() else { break };
            from = last.position;
            for migrated in &page {
                if let Err(reason) = self.check_rewritten(migrated) {
                    return Ok(Err(Unverified::Failed(reason)));
                }
                before.add(migrated.event_id, &migrated.original);
                if let Some(current) = &migrated.current {
                    after.add(migrated.event_id, current);
                }
                count += 1;
            }
            progress.verifying(count as u64);
        }
        if count != record.events_rewritten {
            let reason =
                format!("{count} originals are backed up, but {} events were rewritten", record.events_rewritten);
            return Ok(Err(Unverified::Failed(reason)));
        }
        for (what, computed, recorded) in
            [("originals", before, &record.before_checksum), ("rewritten events", after, &record.after_checksum)]
        {
            if computed.to_string() != *recorded {
                let reason = format!("the checksum of the {what} is {computed}, the chunks recorded {recorded}");
                return Ok(Err(Unverified::Failed(reason)));
            }
        }
        let filter = self.filter();
        let mut after_position = 0;
        while after_position < record.upto_position {
            let events = store.read_committed(after_position, &filter, self.read_size).await?;
            let Some(last) = events.last() else { break };
            after_position = last.position;
            let behind = |e: &&DomainEvent| e.position <= record.upto_position;
            if let Some(late) = events.iter().filter(behind).find(|e| needs_a_step(self, e)) {
                return Ok(Err(Unverified::Late(late.position)));
            }
        }
        Ok(Ok(()))
    }

    /// One backed-up event: its row is there, holds what the original upcasts to, and
    /// parses at the chain's last version.
    fn check_rewritten(&self, migrated: &MigratedEvent) -> Result<(), String> {
        let name = format!("event {} at position {}", migrated.event_id, migrated.position);
        let Some(current) = &migrated.current else {
            return Err(format!("{name} is gone from the store"));
        };
        let original = DomainEvent {
            position: migrated.position,
            transaction_id: 0,
            event_id: migrated.event_id,
            aggregate_id: migrated.aggregate_id,
            aggregate_type: String::new(),
            event_type: migrated.original.event_type.clone(),
            event_data: migrated.original.event_data.clone(),
            metadata: migrated.original.metadata.clone(),
            version: 1,
            timestamp: chrono::DateTime::<chrono::Utc>::MIN_UTC,
            encrypted_fields: migrated.encrypted_fields.clone(),
        };
        let expected = self.upcasters.upcast(original).map_err(|e| format!("{name}: its original {e}"))?;
        if !same_content(&shape_of(&expected), current) {
            return Err(format!(
                "{name} is not what its original upcasts to (stored {} {}, expected {} {})",
                current.event_type,
                current.event_data.get(),
                expected.event_type,
                expected.event_data.get()
            ));
        }
        let metadata: Metadata = serde_json::from_str(current.metadata.get())
            .map_err(|e| format!("{name}: its rewritten metadata does not parse: {e}"))?;
        if self.upcasters.applies_to(&current.event_type, metadata.event_version) {
            return Err(format!(
                "{name} is at {} v{}, which a step still applies to",
                current.event_type, metadata.event_version
            ));
        }
        if !current.event_data.get().trim_start().starts_with('{') {
            return Err(format!("{name}: its rewritten payload is not a JSON object"));
        }
        Ok(())
    }
}

/// A step still applies to the event (or fails on it).
fn needs_a_step(migration: &Migration, event: &DomainEvent) -> bool {
    !matches!(rewrite_of(&migration.upcasters, event, usize::MAX), Ok(None))
}
