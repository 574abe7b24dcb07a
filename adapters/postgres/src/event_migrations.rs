//! Eager migrations of stored events on PostgreSQL: the migration rows, chunks that back
//! up and rewrite events in one statement behind a compare-and-set, and restores.
//!
//! A rewrite is an `UPDATE` of `event_type`, `event_data` and `metadata`: the row keeps
//! its position and `transaction_id` (the column's default applies to inserts only), so
//! commit-safe order and every checkpoint stay as they were. A chunk's transaction holds
//! a transaction id while it runs, which holds the read horizon back for that long:
//! chunks are kept short.

use std::future::Future;

use postgres_types::{Json, ToSql, Type};
use projector::migration::Checksum;
use projector::store::migrations::{
    EventMigration, EventMigrations, MigratedEvent, MigrationChange, MigrationStatus, NewEventMigration, RewriteChunk,
    StoredShape,
};
use projector::store::rules;
use projector::StoreError;
use serde_json::value::RawValue;
use tokio_postgres::{Client, Row};
use uuid::Uuid;

use crate::error::{is_unique_violation, map};
use crate::types::RawJson;
use crate::PgStore;

const EVENT_MIGRATIONS: &str = include_str!("../sql/event_migrations.sql");
const LOCK_EVENT_MIGRATION: &str = include_str!("../sql/lock_event_migration.sql");
const BEGIN_EVENT_MIGRATION: &str = include_str!("../sql/begin_event_migration.sql");
const REWRITE_EVENTS: &str = include_str!("../sql/rewrite_events.sql");
const MIGRATED_EVENTS: &str = include_str!("../sql/migrated_events.sql");
const RESTORE_EVENTS: &str = include_str!("../sql/restore_events.sql");
const SET_EVENT_MIGRATION: &str = include_str!("../sql/set_event_migration.sql");

impl EventMigrations for PgStore {
    async fn event_migrations(&self) -> Result<Vec<EventMigration>, StoreError> {
        let client = self.client().await?;
        let rows = client.query_typed(EVENT_MIGRATIONS, &[]).await.map_err(map)?;
        rows.iter().map(decode_migration).collect()
    }

    async fn begin_event_migration(&self, new: &NewEventMigration) -> Result<EventMigration, StoreError> {
        let client = self.client().await?;
        let empty = Checksum::EMPTY.to_string();
        let inserted = client
            .query_typed_one(
                BEGIN_EVENT_MIGRATION,
                &[
                    (&new.event_types, Type::TEXT_ARRAY),
                    (&new.upcasters, Type::TEXT_ARRAY),
                    (&new.upto_position, Type::INT8),
                    (&new.events_planned, Type::INT8),
                    (&new.actor, Type::TEXT),
                    (&empty, Type::TEXT),
                ],
            )
            .await;
        match inserted {
            Ok(row) => decode_migration(&row),
            Err(e) if is_unique_violation(&e) => {
                let rows = client.query_typed(EVENT_MIGRATIONS, &[]).await.map_err(map)?;
                let all: Vec<EventMigration> = rows.iter().map(decode_migration).collect::<Result<_, _>>()?;
                match all.iter().find(|m| m.status.is_open()) {
                    Some(open) => Err(rules::open_migration_refusal(open)),
                    None => Err(map(e)),
                }
            }
            Err(e) => Err(map(e)),
        }
    }

    async fn rewrite_events(&self, chunk: &RewriteChunk<'_>) -> Result<bool, StoreError> {
        let rewrites = chunk.rewrites;
        let positions: Vec<i64> = rewrites.iter().map(|r| r.position).collect();
        let old_types: Vec<&str> = rewrites.iter().map(|r| r.from.event_type.as_str()).collect();
        let old_data: Vec<Json<&RawValue>> = rewrites.iter().map(|r| Json(&*r.from.event_data)).collect();
        let old_metadata: Vec<Json<&RawValue>> = rewrites.iter().map(|r| Json(&*r.from.metadata)).collect();
        let new_types: Vec<&str> = rewrites.iter().map(|r| r.to.event_type.as_str()).collect();
        let new_data: Vec<Json<&RawValue>> = rewrites.iter().map(|r| Json(&*r.to.event_data)).collect();
        let new_metadata: Vec<Json<&RawValue>> = rewrites.iter().map(|r| Json(&*r.to.metadata)).collect();
        let params: [(&(dyn ToSql + Sync), Type); 12] = [
            (&chunk.migration, Type::INT8),
            (&chunk.from, Type::INT8),
            (&chunk.to, Type::INT8),
            (&positions, Type::INT8_ARRAY),
            (&old_types, Type::TEXT_ARRAY),
            (&old_data, Type::JSONB_ARRAY),
            (&old_metadata, Type::JSONB_ARRAY),
            (&new_types, Type::TEXT_ARRAY),
            (&new_data, Type::JSONB_ARRAY),
            (&new_metadata, Type::JSONB_ARRAY),
            (&chunk.before_checksum, Type::TEXT),
            (&chunk.after_checksum, Type::TEXT),
        ];
        let client = self.client().await?;
        in_transaction(&client, async {
            let row = client.query_typed_one(REWRITE_EVENTS, &params).await.map_err(map)?;
            let (moved, saved, written): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
            if moved == 0 {
                return Ok(false);
            }
            let expected = rewrites.len() as i64;
            if saved != expected || written != expected {
                return Err(StoreError::Database(format!(
                    "migration {}: {expected} events were read for this chunk, but only {written} still hold what \
                     was read (changed around the store?); nothing of the chunk was written",
                    chunk.migration
                )));
            }
            Ok(true)
        })
        .await
    }

    async fn migrated_events(
        &self,
        migration: i64,
        after: i64,
        limit: usize,
    ) -> Result<Vec<MigratedEvent>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let client = self.client().await?;
        let rows = client
            .query_typed(MIGRATED_EVENTS, &[(&migration, Type::INT8), (&after, Type::INT8), (&limit, Type::INT8)])
            .await
            .map_err(map)?;
        rows.iter().map(decode_migrated).collect()
    }

    async fn restore_events(&self, migration: i64, from: i64, to: i64, expected: u64) -> Result<bool, StoreError> {
        let count = i64::try_from(expected).unwrap_or(i64::MAX);
        let client = self.client().await?;
        in_transaction(&client, async {
            let row = client
                .query_typed_one(
                    RESTORE_EVENTS,
                    &[(&migration, Type::INT8), (&from, Type::INT8), (&to, Type::INT8), (&count, Type::INT8)],
                )
                .await
                .map_err(map)?;
            let (moved, restored): (i64, i64) = (row.get(0), row.get(1));
            if moved == 0 {
                return Ok(false);
            }
            if restored != count {
                return Err(StoreError::Database(format!(
                    "migration {migration}: {count} originals are backed up after position {from} up to {to}, but \
                     {restored} event rows were found to restore them to (rows deleted around the store?); nothing \
                     was restored"
                )));
            }
            Ok(true)
        })
        .await
    }

    async fn change_event_migration(&self, migration: i64, change: &MigrationChange) -> Result<bool, StoreError> {
        let client = self.client().await?;
        in_transaction(&client, async {
            let Some(row) =
                client.query_typed_opt(LOCK_EVENT_MIGRATION, &[(&migration, Type::INT8)]).await.map_err(map)?
            else {
                return Ok(false);
            };
            let record = decode_migration(&row)?;
            let now = chrono::Utc::now();
            let Some(next) = rules::change_migration(&record, change, now) else {
                return Ok(false);
            };
            client
                .query_typed(
                    SET_EVENT_MIGRATION,
                    &[
                        (&migration, Type::INT8),
                        (&next.status.as_str(), Type::TEXT),
                        (&next.applied_at, Type::TIMESTAMPTZ),
                        (&next.last_error, Type::TEXT),
                        (&next.rewritten_upto, Type::INT8),
                        (&next.rolled_back_by, Type::TEXT),
                        (&next.rolled_back_at, Type::TIMESTAMPTZ),
                    ],
                )
                .await
                .map_err(map)?;
            Ok(true)
        })
        .await
    }
}

/// Runs `work` between `BEGIN` and `COMMIT`; rolls back when it fails or writes nothing
/// (`false`).
async fn in_transaction(
    client: &Client,
    work: impl Future<Output = Result<bool, StoreError>>,
) -> Result<bool, StoreError> {
    client.batch_execute("BEGIN").await.map_err(map)?;
    match work.await {
        Ok(true) => {
            client.batch_execute("COMMIT").await.map_err(map)?;
            Ok(true)
        }
        other => {
            let _ = client.batch_execute("ROLLBACK").await;
            other
        }
    }
}

fn decode_migration(row: &Row) -> Result<EventMigration, StoreError> {
    let bad = |e: tokio_postgres::Error| StoreError::Database(format!("an event migration row: {e}"));
    let status: String = row.try_get(3).map_err(bad)?;
    let id: i64 = row.try_get(0).map_err(bad)?;
    Ok(EventMigration {
        id,
        event_types: row.try_get(1).map_err(bad)?,
        upcasters: row.try_get(2).map_err(bad)?,
        status: MigrationStatus::parse(&status)
            .ok_or_else(|| StoreError::Database(format!("event migration {id}: unknown status {status:?}")))?,
        upto_position: row.try_get(4).map_err(bad)?,
        rewritten_upto: row.try_get(5).map_err(bad)?,
        restored_upto: row.try_get(6).map_err(bad)?,
        events_planned: row.try_get(7).map_err(bad)?,
        events_rewritten: row.try_get(8).map_err(bad)?,
        events_restored: row.try_get(9).map_err(bad)?,
        before_checksum: row.try_get(10).map_err(bad)?,
        after_checksum: row.try_get(11).map_err(bad)?,
        actor: row.try_get(12).map_err(bad)?,
        started_at: row.try_get(13).map_err(bad)?,
        applied_at: row.try_get(14).map_err(bad)?,
        rolled_back_by: row.try_get(15).map_err(bad)?,
        rolled_back_at: row.try_get(16).map_err(bad)?,
        last_error: row.try_get(17).map_err(bad)?,
    })
}

fn decode_migrated(row: &Row) -> Result<MigratedEvent, StoreError> {
    let position: i64 = row.try_get(0).map_err(|e| StoreError::Corrupt { position: -1, reason: e.to_string() })?;
    let corrupt = |e: tokio_postgres::Error| StoreError::Corrupt { position, reason: e.to_string() };
    let original = StoredShape {
        event_type: row.try_get(3).map_err(corrupt)?,
        event_data: row.try_get::<_, RawJson>(4).map_err(corrupt)?.0,
        metadata: row.try_get::<_, RawJson>(5).map_err(corrupt)?.0,
    };
    let current = match (
        row.try_get::<_, Option<String>>(6).map_err(corrupt)?,
        row.try_get::<_, Option<RawJson>>(7).map_err(corrupt)?,
        row.try_get::<_, Option<RawJson>>(8).map_err(corrupt)?,
    ) {
        (Some(event_type), Some(data), Some(metadata)) => {
            Some(StoredShape { event_type, event_data: data.0, metadata: metadata.0 })
        }
        _ => None,
    };
    Ok(MigratedEvent {
        position,
        event_id: row.try_get::<_, Uuid>(1).map_err(corrupt)?,
        aggregate_id: row.try_get::<_, Uuid>(2).map_err(corrupt)?,
        original,
        current,
        encrypted_fields: row.try_get::<_, Option<Vec<String>>>(9).map_err(corrupt)?.unwrap_or_default(),
    })
}
