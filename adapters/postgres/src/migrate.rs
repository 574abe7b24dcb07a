//! Versioned schema migrations, applied once each, in order, and recorded in
//! `schema_migrations`. Only versions are compared, never the text, and new migrations
//! only append: a database migrated by an older build upgrades in place.

use postgres_types::Type;
use projector::StoreError;
use tokio_postgres::Client;

use crate::error::{describe, map};

/// `(version, name, sql)` in order. The names are recorded in `schema_migrations`, so
/// they never change.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "events", include_str!("../sql/migrations/0001_events.sql")),
    (2, "projections", include_str!("../sql/migrations/0002_projections.sql")),
    (3, "notify", include_str!("../sql/migrations/0003_notify.sql")),
    (4, "dead_letters", include_str!("../sql/migrations/0004_dead_letters.sql")),
    (5, "idempotency_fingerprints", include_str!("../sql/migrations/0005_idempotency_fingerprints.sql")),
    (6, "partition_bucket", include_str!("../sql/migrations/0006_partition_bucket.sql")),
    (7, "discarded_events", include_str!("../sql/migrations/0007_discarded_events.sql")),
    (8, "crash_count", include_str!("../sql/migrations/0008_crash_count.sql")),
    (9, "recorded_at", include_str!("../sql/migrations/0009_recorded_at.sql")),
    (10, "subject_keys", include_str!("../sql/migrations/0010_subject_keys.sql")),
    (11, "owner_locks", include_str!("../sql/migrations/0011_owner_locks.sql")),
    (12, "event_migrations", include_str!("../sql/migrations/0012_event_migrations.sql")),
    (13, "snapshots", include_str!("../sql/migrations/0013_snapshots.sql")),
    (14, "audit_key_operations", include_str!("../sql/migrations/0014_audit_key_operations.sql")),
];

const CREATE_SCHEMA_MIGRATIONS: &str = include_str!("../sql/create_schema_migrations.sql");
const LOCK_MIGRATIONS: &str = include_str!("../sql/lock_migrations.sql");
const MIGRATION_APPLIED: &str = include_str!("../sql/migration_applied.sql");
const RECORD_MIGRATION: &str = include_str!("../sql/record_migration.sql");

/// Applies the migrations not recorded yet; returns the names of those it applied.
pub(crate) async fn run(client: &Client) -> Result<Vec<&'static str>, StoreError> {
    client.batch_execute(CREATE_SCHEMA_MIGRATIONS).await.map_err(map)?;
    let mut applied = Vec::new();
    for &(version, name, sql) in MIGRATIONS {
        // One transaction per migration; the transaction-scoped advisory lock keeps two
        // `init`s from applying the same file at once.
        match apply(client, version, name, sql).await {
            Ok(true) => applied.push(name),
            Ok(false) => {}
            Err(e) => {
                let _ = client.batch_execute("ROLLBACK").await;
                return Err(StoreError::Schema(format!("migration {version:04}_{name}.sql failed: {}", describe(&e))));
            }
        }
    }
    Ok(applied)
}

/// Applies one migration unless it is recorded; true when it ran.
async fn apply(client: &Client, version: i32, name: &str, sql: &str) -> Result<bool, tokio_postgres::Error> {
    client.batch_execute(&format!("BEGIN;\n{LOCK_MIGRATIONS}")).await?;
    if client.query_typed_opt(MIGRATION_APPLIED, &[(&version, Type::INT4)]).await?.is_some() {
        client.batch_execute("ROLLBACK").await?;
        return Ok(false);
    }
    client.batch_execute(sql).await?;
    client.query_typed(RECORD_MIGRATION, &[(&version, Type::INT4), (&name, Type::TEXT)]).await?;
    client.batch_execute("COMMIT").await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_increase_and_match_the_file_names() {
        // Versions may leave gaps (numbers are handed out before their changes land);
        // each is applied by whether it is recorded, not by the highest one applied.
        assert_eq!(MIGRATIONS.first().map(|m| m.0), Some(1));
        for pair in MIGRATIONS.windows(2) {
            assert!(pair[0].0 < pair[1].0, "{} comes before {}", pair[0].1, pair[1].1);
        }
        let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/sql/migrations")).expect("sql/migrations");
        let mut files: Vec<String> =
            files.map(|f| f.expect("entry").file_name().to_string_lossy().into_owned()).collect();
        files.sort();
        let expected: Vec<String> = MIGRATIONS.iter().map(|(v, name, _)| format!("{v:04}_{name}.sql")).collect();
        assert_eq!(files, expected, "every file under sql/migrations is a migration, named for its version");
    }
}
