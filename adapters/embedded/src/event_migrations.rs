//! Eager migrations of stored events on the embedded store: the migration rows, chunks
//! that back up and rewrite events in one write transaction, and restores.

use chrono::Utc;
use projector::migration::Checksum;
use projector::store::migrations::{
    EventMigration, EventMigrations, MigratedEvent, MigrationChange, MigrationStatus, NewEventMigration, RewriteChunk,
    StoredShape,
};
use projector::store::rules;
use projector::StoreError;
use rusqlite::{params, Connection, Row, TransactionBehavior};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::codec::{format_ts, parse_ts};
use crate::error::Context;
use crate::{snapshots, EmbeddedStore};

const EVENT_MIGRATIONS: &str = include_str!("../sql/event_migrations.sql");
const EVENT_MIGRATION: &str = include_str!("../sql/event_migration.sql");
const BEGIN_EVENT_MIGRATION: &str = include_str!("../sql/begin_event_migration.sql");
const ADVANCE_EVENT_MIGRATION: &str = include_str!("../sql/advance_event_migration.sql");
const BACK_UP_EVENT: &str = include_str!("../sql/back_up_event.sql");
const REWRITE_EVENT: &str = include_str!("../sql/rewrite_event.sql");
const MIGRATED_EVENTS: &str = include_str!("../sql/migrated_events.sql");
const ADVANCE_RESTORE: &str = include_str!("../sql/advance_restore.sql");
const RESTORE_EVENTS: &str = include_str!("../sql/restore_events.sql");
const SET_EVENT_MIGRATION: &str = include_str!("../sql/set_event_migration.sql");

impl EventMigrations for EmbeddedStore {
    async fn event_migrations(&self) -> Result<Vec<EventMigration>, StoreError> {
        let conn = self.lock();
        let context = || "list the event migrations";
        let mut stmt = conn.prepare_cached(EVENT_MIGRATIONS).context(context)?;
        let mut rows = stmt.query([]).context(context)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().context(context)? {
            out.push(decode_migration(row)?);
        }
        Ok(out)
    }

    async fn begin_event_migration(&self, new: &NewEventMigration) -> Result<EventMigration, StoreError> {
        let context = || "record a new event migration";
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).context(context)?;
        if let Some(open) = open_migration(&tx)? {
            return Err(rules::open_migration_refusal(&open));
        }
        let id: i64 = tx
            .query_row(
                BEGIN_EVENT_MIGRATION,
                params![
                    json_list(&new.event_types),
                    json_list(&new.upcasters),
                    new.upto_position,
                    new.events_planned,
                    new.actor,
                    format_ts(Utc::now()),
                    Checksum::EMPTY.to_string(),
                ],
                |r| r.get(0),
            )
            .context(context)?;
        let record = migration(&tx, id)?.ok_or_else(|| StoreError::Database(format!("migration {id} vanished")))?;
        tx.commit().context(context)?;
        Ok(record)
    }

    async fn rewrite_events(&self, chunk: &RewriteChunk<'_>) -> Result<bool, StoreError> {
        let id = chunk.migration;
        let context = || format!("migration {id}: rewrite the events after position {}", chunk.from);
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).context(context)?;
        let moved = tx
            .execute(
                ADVANCE_EVENT_MIGRATION,
                params![
                    id,
                    chunk.from,
                    chunk.to,
                    chunk.rewrites.len() as i64,
                    chunk.before_checksum,
                    chunk.after_checksum
                ],
            )
            .context(context)?;
        if moved == 0 {
            return Ok(false);
        }
        {
            let mut back_up = tx.prepare_cached(BACK_UP_EVENT).context(context)?;
            let mut rewrite = tx.prepare_cached(REWRITE_EVENT).context(context)?;
            for r in chunk.rewrites {
                let (from, to) = (&r.from, &r.to);
                let (old_type, old_data, old_metadata) = (&from.event_type, from.event_data.get(), from.metadata.get());
                let saved = back_up
                    .execute(params![id, r.position, old_type, old_data, old_metadata])
                    .context(|| format!("migration {id}: back up event {}", r.event_id))?;
                let written = rewrite
                    .execute(params![
                        r.position,
                        to.event_type,
                        to.event_data.get(),
                        to.metadata.get(),
                        old_type,
                        old_data,
                        old_metadata
                    ])
                    .context(|| format!("migration {id}: rewrite event {}", r.event_id))?;
                if saved != 1 || written != 1 {
                    return Err(changed_under_migration(id, r.event_id, r.position));
                }
            }
        }
        snapshots::drop_aggregates(&tx, chunk.rewrites.iter().map(|r| r.aggregate_id))?;
        tx.commit().context(context)?;
        Ok(true)
    }

    async fn migrated_events(
        &self,
        migration: i64,
        after: i64,
        limit: usize,
    ) -> Result<Vec<MigratedEvent>, StoreError> {
        let conn = self.lock();
        let context = || format!("migration {migration}: read the backed-up events after position {after}");
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut stmt = conn.prepare_cached(MIGRATED_EVENTS).context(context)?;
        let mut rows = stmt.query(params![migration, after, limit]).context(context)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().context(context)? {
            out.push(decode_migrated(row)?);
        }
        Ok(out)
    }

    async fn restore_events(&self, migration: i64, from: i64, to: i64, expected: u64) -> Result<bool, StoreError> {
        let context = || format!("migration {migration}: restore the originals after position {from}");
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).context(context)?;
        let expected = i64::try_from(expected).unwrap_or(i64::MAX);
        if tx.execute(ADVANCE_RESTORE, params![migration, from, to, expected]).context(context)? == 0 {
            return Ok(false);
        }
        snapshots::drop_restored(&tx, migration, from, to)?;
        let restored = tx.execute(RESTORE_EVENTS, params![migration, from, to]).context(context)?;
        if restored as i64 != expected {
            return Err(StoreError::Database(format!(
                "migration {migration}: {expected} originals are backed up after position {from} up to {to}, but \
                 {restored} event rows were found to restore them to (rows deleted around the store?); nothing was \
                 restored"
            )));
        }
        tx.commit().context(context)?;
        Ok(true)
    }

    async fn change_event_migration(&self, migration: i64, change: &MigrationChange) -> Result<bool, StoreError> {
        let context = || format!("migration {migration}: record {change:?}");
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).context(context)?;
        let Some(record) = self::migration(&tx, migration)? else {
            return Ok(false);
        };
        let Some(next) = rules::change_migration(&record, change, Utc::now()) else {
            return Ok(false);
        };
        tx.execute(
            SET_EVENT_MIGRATION,
            params![
                migration,
                next.status.as_str(),
                next.applied_at.map(format_ts),
                next.last_error,
                next.rewritten_upto,
                next.rolled_back_by,
                next.rolled_back_at.map(format_ts),
            ],
        )
        .context(context)?;
        tx.commit().context(context)?;
        Ok(true)
    }
}

pub(crate) fn changed_under_migration(migration: i64, event_id: Uuid, position: i64) -> StoreError {
    StoreError::Database(format!(
        "migration {migration}: event {event_id} at position {position} no longer holds what the chunk read (changed \
         around the store?); nothing of the chunk was written"
    ))
}

fn json_list(items: &[String]) -> String {
    serde_json::Value::from(items.to_vec()).to_string()
}

fn migration(conn: &Connection, id: i64) -> Result<Option<EventMigration>, StoreError> {
    let context = || format!("read event migration {id}");
    let mut stmt = conn.prepare_cached(EVENT_MIGRATION).context(context)?;
    let mut rows = stmt.query([id]).context(context)?;
    rows.next().context(context)?.map(decode_migration).transpose()
}

fn open_migration(conn: &Connection) -> Result<Option<EventMigration>, StoreError> {
    let context = || "find the open event migration";
    let mut stmt = conn.prepare_cached(EVENT_MIGRATIONS).context(context)?;
    let mut rows = stmt.query([]).context(context)?;
    while let Some(row) = rows.next().context(context)? {
        let record = decode_migration(row)?;
        if record.status.is_open() {
            return Ok(Some(record));
        }
    }
    Ok(None)
}

fn decode_migration(row: &Row<'_>) -> Result<EventMigration, StoreError> {
    let id: i64 = row.get(0).context(|| "read an event migration")?;
    let bad = |what: String| StoreError::Database(format!("event migration {id}: {what}"));
    let get =
        |i: usize| -> Result<rusqlite::types::Value, StoreError> { row.get(i).context(|| format!("migration {id}")) };
    let text = |i: usize| -> Result<String, StoreError> {
        match get(i)? {
            rusqlite::types::Value::Text(s) => Ok(s),
            other => Err(bad(format!("column {i} is {other:?}, not text"))),
        }
    };
    let opt_text = |i: usize| -> Result<Option<String>, StoreError> {
        match get(i)? {
            rusqlite::types::Value::Null => Ok(None),
            rusqlite::types::Value::Text(s) => Ok(Some(s)),
            other => Err(bad(format!("column {i} is {other:?}, not text"))),
        }
    };
    let int = |i: usize| -> Result<i64, StoreError> {
        match get(i)? {
            rusqlite::types::Value::Integer(v) => Ok(v),
            other => Err(bad(format!("column {i} is {other:?}, not an integer"))),
        }
    };
    let list = |i: usize| -> Result<Vec<String>, StoreError> {
        let s = text(i)?;
        serde_json::from_str(&s).map_err(|e| bad(format!("{s:?} is not a JSON list of strings: {e}")))
    };
    let ts = |s: String| parse_ts(&s).map_err(bad);
    let status = text(3)?;
    Ok(EventMigration {
        id,
        event_types: list(1)?,
        upcasters: list(2)?,
        status: MigrationStatus::parse(&status).ok_or_else(|| bad(format!("unknown status {status:?}")))?,
        upto_position: int(4)?,
        rewritten_upto: int(5)?,
        restored_upto: int(6)?,
        events_planned: int(7)?,
        events_rewritten: int(8)?,
        events_restored: int(9)?,
        before_checksum: text(10)?,
        after_checksum: text(11)?,
        actor: text(12)?,
        started_at: ts(text(13)?)?,
        applied_at: opt_text(14)?.map(ts).transpose()?,
        rolled_back_by: opt_text(15)?,
        rolled_back_at: opt_text(16)?.map(ts).transpose()?,
        last_error: opt_text(17)?,
    })
}

fn decode_migrated(row: &Row<'_>) -> Result<MigratedEvent, StoreError> {
    let position: i64 = row.get(0).context(|| "read a backed-up event")?;
    let corrupt = |reason: String| StoreError::Corrupt { position, reason };
    let text = |i: usize| -> Result<Option<String>, StoreError> {
        row.get::<_, Option<String>>(i).map_err(|e| corrupt(format!("column {i}: {e}")))
    };
    let required =
        |i: usize| -> Result<String, StoreError> { text(i)?.ok_or_else(|| corrupt(format!("column {i} is null"))) };
    let json = |s: String| RawValue::from_string(s).map_err(|e| corrupt(format!("not JSON: {e}")));
    let uuid = |s: String| Uuid::parse_str(&s).map_err(|e| corrupt(format!("{s:?} is not a uuid: {e}")));
    let original =
        StoredShape { event_type: required(3)?, event_data: json(required(4)?)?, metadata: json(required(5)?)? };
    let current = match (text(6)?, text(7)?, text(8)?) {
        (Some(event_type), Some(data), Some(metadata)) => {
            Some(StoredShape { event_type, event_data: json(data)?, metadata: json(metadata)? })
        }
        _ => None,
    };
    let encrypted_fields = match text(9)? {
        Some(s) => serde_json::from_str(&s).map_err(|e| corrupt(format!("encrypted_fields {s:?}: {e}")))?,
        None => Vec::new(),
    };
    Ok(MigratedEvent {
        position,
        event_id: uuid(required(1)?)?,
        aggregate_id: uuid(required(2)?)?,
        original,
        current,
        encrypted_fields,
    })
}
