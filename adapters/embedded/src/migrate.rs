//! The schema migrations of the store file, applied once each, in order, and recorded in
//! `schema_migrations`.

use chrono::Utc;
use projector::StoreError;
use rusqlite::{params, Connection, TransactionBehavior};

use crate::codec;
use crate::error::Context;

/// One schema migration: applied once, in version order, recorded in
/// `schema_migrations`.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

/// The schema, oldest first. Names are recorded in each file, so they never change.
pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "0001_events", sql: include_str!("../sql/migrations/0001_events.sql") },
    Migration {
        version: 2,
        name: "0002_idempotency_keys",
        sql: include_str!("../sql/migrations/0002_idempotency_keys.sql"),
    },
    Migration { version: 3, name: "0003_projections", sql: include_str!("../sql/migrations/0003_projections.sql") },
    Migration { version: 4, name: "0004_dead_letters", sql: include_str!("../sql/migrations/0004_dead_letters.sql") },
    Migration {
        version: 5,
        name: "0005_projection_state",
        sql: include_str!("../sql/migrations/0005_projection_state.sql"),
    },
    Migration {
        version: 6,
        name: "0006_idempotency_fingerprints",
        sql: include_str!("../sql/migrations/0006_idempotency_fingerprints.sql"),
    },
    Migration {
        version: 7,
        name: "0007_discarded_events",
        sql: include_str!("../sql/migrations/0007_discarded_events.sql"),
    },
    Migration { version: 8, name: "0008_crash_count", sql: include_str!("../sql/migrations/0008_crash_count.sql") },
    Migration { version: 9, name: "0009_recorded_at", sql: include_str!("../sql/migrations/0009_recorded_at.sql") },
    Migration { version: 10, name: "0010_subject_keys", sql: include_str!("../sql/migrations/0010_subject_keys.sql") },
    Migration {
        version: 12,
        name: "0012_event_migrations",
        sql: include_str!("../sql/migrations/0012_event_migrations.sql"),
    },
    Migration { version: 13, name: "0013_snapshots", sql: include_str!("../sql/migrations/0013_snapshots.sql") },
    Migration {
        version: 14,
        name: "0014_audit_key_operations",
        sql: include_str!("../sql/migrations/0014_audit_key_operations.sql"),
    },
];

const CREATE_SCHEMA_MIGRATIONS: &str = include_str!("../sql/create_schema_migrations.sql");
const SCHEMA_VERSION: &str = include_str!("../sql/schema_version.sql");
const RECORD_MIGRATION: &str = include_str!("../sql/record_migration.sql");
const MIGRATION_APPLIED: &str = include_str!("../sql/migration_applied.sql");

/// Applies the migrations the file does not have yet, all in one write transaction, so
/// two processes opening a new file at once do not both apply them.
pub(crate) fn run(conn: &mut Connection, shown: &str) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .context(|| format!("migrate embedded store {shown}"))?;
    tx.execute_batch(CREATE_SCHEMA_MIGRATIONS).context(|| format!("migrate embedded store {shown}"))?;
    let applied = schema_version(&tx).context(|| format!("migrate embedded store {shown}"))?;
    let newest = MIGRATIONS.last().map_or(0, |m| m.version);
    if applied > newest {
        return Err(StoreError::Schema(format!(
            "embedded store {shown} has schema version {applied}, newer than this build knows ({newest}); \
             upgrade Projector"
        )));
    }
    // By whether each is recorded, not by the highest applied: versions may leave gaps
    // that a later build fills.
    for m in MIGRATIONS {
        let context = || format!("migrate embedded store {shown}: apply {}", m.name);
        let recorded: bool = tx.query_row(MIGRATION_APPLIED, [m.version], |r| r.get(0)).context(context)?;
        if recorded {
            continue;
        }
        tx.execute_batch(m.sql).context(context)?;
        tx.execute(RECORD_MIGRATION, params![m.version, m.name, codec::format_ts(Utc::now())]).context(context)?;
    }
    tx.commit().context(|| format!("migrate embedded store {shown}"))?;
    Ok(())
}

/// The highest applied migration.
pub(crate) fn schema_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row(SCHEMA_VERSION, [], |r| r.get(0))
}
