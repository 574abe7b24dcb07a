//! The states an eager migration goes through, and the refusal of a second open one.

use chrono::{DateTime, Utc};

use crate::error::StoreError;
use crate::store::migrations::{EventMigration, MigrationChange, MigrationStatus};

/// The migration as `change` leaves it, or `None` when the change does not apply to its
/// state (another process moved it on): the store then writes nothing.
pub fn change_migration(
    record: &EventMigration,
    change: &MigrationChange,
    now: DateTime<Utc>,
) -> Option<EventMigration> {
    use MigrationStatus::*;
    let mut next = record.clone();
    match (record.status, change) {
        (Applying, MigrationChange::Verified) => {
            next.status = Applied;
            next.applied_at = Some(now);
            next.last_error = None;
        }
        (Applying | RollingBack, MigrationChange::Failed(reason)) => next.last_error = Some(reason.clone()),
        (Applying, MigrationChange::Rewind { to }) if *to <= record.rewritten_upto => next.rewritten_upto = *to,
        (Applying | Applied, MigrationChange::RollingBack { actor }) => {
            next.status = RollingBack;
            next.rolled_back_by = Some(actor.clone());
        }
        (RollingBack, MigrationChange::RolledBack) => {
            next.status = RolledBack;
            next.rolled_back_at = Some(now);
            next.last_error = None;
        }
        _ => return None,
    }
    Some(next)
}

/// Why a new migration cannot be recorded while `open` is applying or rolling back.
pub fn open_migration_refusal(open: &EventMigration) -> StoreError {
    let finish = match open.status {
        MigrationStatus::RollingBack => format!("`projector migrate --rollback {}`", open.id),
        _ => format!("`projector migrate --apply` (or roll it back: `projector migrate --rollback {}`)", open.id),
    };
    StoreError::InvalidInput(format!("migration {} is still {}: finish it first with {finish}", open.id, open.status))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(status: MigrationStatus) -> EventMigration {
        EventMigration {
            id: 1,
            event_types: vec!["A".into()],
            upcasters: vec!["A v1 -> v2".into()],
            status,
            upto_position: 10,
            rewritten_upto: 8,
            restored_upto: 0,
            events_planned: 3,
            events_rewritten: 2,
            events_restored: 0,
            before_checksum: "0000000000000001".into(),
            after_checksum: "0000000000000002".into(),
            actor: "ops".into(),
            started_at: DateTime::from_timestamp(0, 0).unwrap(),
            applied_at: None,
            rolled_back_by: None,
            rolled_back_at: None,
            last_error: Some("earlier".into()),
        }
    }

    #[test]
    fn a_migration_goes_from_applying_to_applied_to_rolled_back() {
        let now = DateTime::from_timestamp(100, 0).unwrap();
        let applied = change_migration(&record(MigrationStatus::Applying), &MigrationChange::Verified, now).unwrap();
        assert_eq!(
            (applied.status, applied.applied_at, applied.last_error.as_deref()),
            (MigrationStatus::Applied, Some(now), None)
        );
        let rolling = change_migration(&applied, &MigrationChange::RollingBack { actor: "bo".into() }, now).unwrap();
        assert_eq!((rolling.status, rolling.rolled_back_by.as_deref()), (MigrationStatus::RollingBack, Some("bo")));
        let done = change_migration(&rolling, &MigrationChange::RolledBack, now).unwrap();
        assert_eq!((done.status, done.rolled_back_at), (MigrationStatus::RolledBack, Some(now)));
    }

    #[test]
    fn a_change_from_another_state_is_refused() {
        let now = DateTime::from_timestamp(100, 0).unwrap();
        let rolled_back = record(MigrationStatus::RolledBack);
        for change in [
            MigrationChange::Verified,
            MigrationChange::Failed("x".into()),
            MigrationChange::Rewind { to: 1 },
            MigrationChange::RollingBack { actor: "a".into() },
            MigrationChange::RolledBack,
        ] {
            assert_eq!(change_migration(&rolled_back, &change, now), None, "{change:?}");
        }
        assert_eq!(change_migration(&record(MigrationStatus::Applied), &MigrationChange::Verified, now), None);
        let forward = MigrationChange::Rewind { to: 9 };
        assert_eq!(
            change_migration(&record(MigrationStatus::Applying), &forward, now),
            None,
            "a rewind never skips ahead"
        );
    }
}
