//! Rolling a migration back: every original put back from its backup, chunk by chunk,
//! then checked byte for byte.

use super::{MigrationError, MigrationProgress};
use crate::store::migrations::{EventMigration, EventMigrations, MigrationChange, MigrationStatus};

/// What [`rollback`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollbackOutcome {
    pub migration: EventMigration,
    /// It had been rolled back already: nothing was done.
    pub already: bool,
    /// Chunks this run committed.
    pub chunks: u64,
}

/// Restores every original that `migration` backed up (`event_type`, `event_data` and
/// `metadata`, as stored before it), whether it was applied in full or stopped half
/// way, and records that it was rolled back by `actor`. Refused while a later
/// migration that is not rolled back exists: it may have rewritten the same events
/// since. A rollback that stops goes on where it stopped when run again.
pub async fn rollback<S: EventMigrations>(
    store: &S,
    migration: i64,
    actor: &str,
    chunk_size: usize,
    progress: &mut impl MigrationProgress,
) -> Result<RollbackOutcome, MigrationError> {
    let all = store.event_migrations().await?;
    let record = all.iter().find(|m| m.id == migration).ok_or(MigrationError::Unknown(migration))?;
    if record.status == MigrationStatus::RolledBack {
        return Ok(RollbackOutcome { migration: record.clone(), already: true, chunks: 0 });
    }
    if let Some(later) = all.iter().find(|m| m.id > migration && m.status != MigrationStatus::RolledBack) {
        return Err(MigrationError::LaterMigration { id: migration, later: later.id, status: later.status });
    }
    if record.status != MigrationStatus::RollingBack {
        let start = MigrationChange::RollingBack { actor: actor.to_owned() };
        if !store.change_event_migration(migration, &start).await? {
            return Err(MigrationError::Moved { id: migration });
        }
    }
    let mut record = reread(store, migration).await?;
    let total = record.events_rewritten.max(0) as u64;
    let mut chunks = 0;
    loop {
        let page = store.migrated_events(migration, record.restored_upto, chunk_size.max(1)).await?;
        let Some(last) = page.last() else { break };
        let to = last.position;
        if !store.restore_events(migration, record.restored_upto, to, page.len() as u64).await? {
            return Err(MigrationError::Moved { id: migration });
        }
        record.restored_upto = to;
        record.events_restored += page.len() as i64;
        chunks += 1;
        progress.chunk(record.events_restored as u64, total);
    }
    let mut from = 0;
    let mut checked = 0u64;
    loop {
        let page = store.migrated_events(migration, from, 5_000).await?;
        let Some(last) = page.last() else { break };
        from = last.position;
        for event in &page {
            if event.current.as_ref() != Some(&event.original) {
                let reason = format!(
                    "event {} at position {} is not its original after the rollback",
                    event.event_id, event.position
                );
                store.change_event_migration(migration, &MigrationChange::Failed(reason.clone())).await?;
                return Err(MigrationError::Verification { id: migration, reason });
            }
        }
        checked += page.len() as u64;
        progress.verifying(checked);
    }
    if !store.change_event_migration(migration, &MigrationChange::RolledBack).await? {
        return Err(MigrationError::Moved { id: migration });
    }
    Ok(RollbackOutcome { migration: reread(store, migration).await?, already: false, chunks })
}

async fn reread<S: EventMigrations>(store: &S, migration: i64) -> Result<EventMigration, MigrationError> {
    let all = store.event_migrations().await?;
    all.into_iter().find(|m| m.id == migration).ok_or(MigrationError::Unknown(migration))
}
