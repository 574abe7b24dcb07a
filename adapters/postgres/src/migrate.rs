//! Versioned schema migrations, applied once each and recorded in `schema_migrations`.

use projector::StoreError;
use tokio_postgres::Client;

use crate::error::map;

/// `(version, name, sql)` in order.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "events", include_str!("../sql/0001_events.sql")),
    (2, "projections", include_str!("../sql/0002_projections.sql")),
    (3, "notify", include_str!("../sql/0003_notify.sql")),
    (4, "dead_letters", include_str!("../sql/0004_dead_letters.sql")),
];

pub(crate) async fn run(client: &Client) -> Result<Vec<&'static str>, StoreError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version integer PRIMARY KEY,
                 name text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .map_err(map)?;
    let mut applied = Vec::new();
    for (version, name, sql) in MIGRATIONS {
        // One transaction per migration; the transaction-scoped advisory lock keeps two
        // `init`s from applying the same file at once.
        let script = format!(
            "BEGIN;
             SELECT pg_advisory_xact_lock(7215665);
             DO $$ BEGIN
               IF EXISTS (SELECT 1 FROM schema_migrations WHERE version = {version}) THEN
                 RAISE EXCEPTION 'projector-migration-already-applied';
               END IF;
             END $$;
             {sql}
             INSERT INTO schema_migrations (version, name) VALUES ({version}, '{name}');
             COMMIT;"
        );
        match client.batch_execute(&script).await {
            Ok(()) => applied.push(*name),
            Err(e) => {
                let _ = client.batch_execute("ROLLBACK").await;
                let already = e.as_db_error().is_some_and(|d| d.message() == "projector-migration-already-applied");
                if !already {
                    return Err(StoreError::Schema(format!(
                        "migration {version:04}_{name}.sql failed: {}",
                        crate::error::describe(&e)
                    )));
                }
            }
        }
    }
    Ok(applied)
}
