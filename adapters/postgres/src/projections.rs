//! `ProjectionStore` on PostgreSQL: registration, row leases, row loads, and the
//! one-statement batch commit (checkpoint compare-and-set guarding the row writes).

use std::time::Duration;

use chrono::{DateTime, Utc};
use postgres_types::{ToSql, Type};
use projector::{
    BatchCommit, Checkpoint, Column, EventFilter, Lease, Partition, ProjectionState, ProjectionStore, RowChanges,
    Status, StoreError, TableSchema, Value,
};
use tokio_postgres::Client;

use crate::dead_letters::{insert_letters_sql, park_sql, parked_set, LetterArrays};
use crate::error::map;
use crate::table::{
    column_arrays, column_type, copy_sql, create_sql, delete_sql, load_sql, row_values, upsert_sql, Cell, ColumnArray,
};
use crate::types::Xid8;
use crate::PgStore;

fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Keys or rows as parameter arrays, appended to `params` in column order.
pub(crate) fn push_arrays<'a>(arrays: &'a [(ColumnArray, Type)], params: &mut Vec<(&'a (dyn ToSql + Sync), Type)>) {
    for (array, ty) in arrays {
        params.push((array, ty.clone()));
    }
}

pub(crate) async fn load_rows(
    client: &Client,
    table: &'static TableSchema,
    keys: &[Vec<Value>],
) -> Result<Vec<Vec<Value>>, StoreError> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let arrays = column_arrays(table.key, keys)?;
    let mut params = Vec::new();
    push_arrays(&arrays, &mut params);
    let rows = client.query_typed(&load_sql(table), &params).await.map_err(map)?;
    rows.iter().map(|r| row_values(table, r)).collect()
}

/// Inserts rows known to be absent with binary `COPY` (a rebuild into cleared rows).
async fn copy_rows(
    client: &Client,
    table: &'static TableSchema,
    columns: &[Column],
    rows: &[Vec<Value>],
) -> Result<(), StoreError> {
    use futures_util::pin_mut;
    use tokio_postgres::binary_copy::BinaryCopyInWriter;
    let types: Vec<Type> = columns.iter().map(|c| column_type(c.ty)).collect();
    let sink = client.copy_in::<_, bytes::Bytes>(&copy_sql(table)).await.map_err(map)?;
    let writer = BinaryCopyInWriter::new(sink, &types);
    pin_mut!(writer);
    for row in rows {
        if row.len() != columns.len() {
            return Err(StoreError::InvalidInput(format!(
                "row has {} values, table {} has {} columns",
                row.len(),
                table.name,
                columns.len()
            )));
        }
        let cells: Vec<Cell<'_>> = row.iter().map(Cell).collect();
        let refs: Vec<&(dyn ToSql + Sync)> = cells.iter().map(|c| c as &(dyn ToSql + Sync)).collect();
        writer.as_mut().write(&refs).await.map_err(map)?;
    }
    writer.finish().await.map_err(map)?;
    Ok(())
}

/// Writes row changes with no guard (inside a rebuild's transaction).
pub(crate) async fn write_rows(
    client: &Client,
    table: &'static TableSchema,
    changes: RowChanges,
) -> Result<(), StoreError> {
    const CHUNK: usize = 50_000;
    let all: Vec<Column> = table.all_columns().collect();
    if changes.inserts_only && changes.deletes.is_empty() {
        return copy_rows(client, table, &all, &changes.upserts).await;
    }
    for chunk in changes.upserts.chunks(CHUNK) {
        let arrays = column_arrays(&all, chunk)?;
        let mut params = Vec::new();
        push_arrays(&arrays, &mut params);
        client.query_typed(&upsert_sql(table, 1, ""), &params).await.map_err(map)?;
    }
    for chunk in changes.deletes.chunks(CHUNK) {
        let arrays = column_arrays(table.key, chunk)?;
        let mut params = Vec::new();
        push_arrays(&arrays, &mut params);
        client.query_typed(&delete_sql(table, 1, ""), &params).await.map_err(map)?;
    }
    Ok(())
}

const CLAIM: &str = "
UPDATE projection_state
SET lease_owner = $3, lease_expires_at = now() + make_interval(secs => $4), updated_at = now()
WHERE projection = $1 AND partition = $2
  AND (lease_owner IS NULL OR lease_owner = $3 OR lease_expires_at < now())
RETURNING transaction_id, position, partitions, parking_epoch";

const STATES: &str = "
SELECT s.projection, s.partition, s.partitions, s.transaction_id, s.position, s.last_event_at, s.status,
       s.events_applied, s.error_count, s.last_error, s.lease_owner, s.lease_expires_at, s.updated_at,
       lag.n, coalesce(extract(epoch FROM now() - lag.oldest)::float8, 0),
       dl.n, dl.oldest, pk.aggregates, pk.events
FROM projection_state s
JOIN projections p ON p.name = s.projection
CROSS JOIN LATERAL (
    SELECT count(*) AS n, min(e.timestamp) AS oldest
    FROM events e
    WHERE (e.transaction_id, e.position) > (s.transaction_id, s.position)
      AND (coalesce(jsonb_array_length(p.filter -> 'event_types'), 0) = 0
           OR e.event_type IN (SELECT jsonb_array_elements_text(p.filter -> 'event_types')))
      AND (coalesce(jsonb_array_length(p.filter -> 'aggregate_types'), 0) = 0
           OR e.aggregate_type IN (SELECT jsonb_array_elements_text(p.filter -> 'aggregate_types')))
      AND (s.partitions <= 1
           OR ('x' || right(e.aggregate_id::text, 8))::bit(32)::bigint % s.partitions = s.partition)
) lag
CROSS JOIN LATERAL (
    SELECT count(*) AS n, min(d.first_failed_at) AS oldest
    FROM dead_letters d
    WHERE d.projection = s.projection AND d.status = 'open'
      AND (s.partitions <= 1
           OR ('x' || right(d.aggregate_id::text, 8))::bit(32)::bigint % s.partitions = s.partition)
) dl
CROSS JOIN LATERAL (
    SELECT count(*) AS aggregates,
           coalesce(sum((SELECT count(*) FROM events e
                         WHERE e.aggregate_id = k.aggregate_id AND e.version >= k.from_version
                           AND (e.transaction_id, e.position) <= (s.transaction_id, s.position))), 0)::bigint AS events
    FROM parked_aggregates k
    WHERE k.projection = s.projection
      AND (s.partitions <= 1
           OR ('x' || right(k.aggregate_id::text, 8))::bit(32)::bigint % s.partitions = s.partition)
) pk
ORDER BY s.projection, s.partition";

async fn register_locked(
    client: &Client,
    projection: &str,
    table: &'static TableSchema,
    filter_json: &serde_json::Value,
    partitions: i32,
) -> Result<(), StoreError> {
    client.batch_execute(&create_sql(table)).await.map_err(map)?;
    client
        .query_typed(
            "INSERT INTO projections (name, table_name, filter, partitions) VALUES ($1, $2, $3, $4)
             ON CONFLICT (name) DO UPDATE SET table_name = EXCLUDED.table_name, filter = EXCLUDED.filter,
                 updated_at = now()",
            &[
                (&projection, Type::TEXT),
                (&table.name, Type::TEXT),
                (filter_json, Type::JSONB),
                (&partitions, Type::INT4),
            ],
        )
        .await
        .map_err(map)?;
    let rows = client
        .query_typed(
            "SELECT partitions, transaction_id, position FROM projection_state WHERE projection = $1",
            &[(&projection, Type::TEXT)],
        )
        .await
        .map_err(map)?;
    if rows.len() == partitions as usize && rows.iter().all(|r| r.get::<_, i32>(0) == partitions) {
        return Ok(());
    }
    let checkpoints: Vec<(u64, i64)> = rows.iter().map(|r| (r.get::<_, Xid8>(1).0, r.get::<_, i64>(2))).collect();
    let start = checkpoints.first().copied().unwrap_or((0, 0));
    if checkpoints.iter().any(|c| *c != start) {
        return Err(StoreError::InvalidInput(format!(
            "projection {projection} has {} partitions at different checkpoints; rescaling to {partitions} \
             needs them drained to one checkpoint first, or a rebuild",
            rows.len()
        )));
    }
    let xid = Xid8(start.0);
    client
        .query_typed("DELETE FROM projection_state WHERE projection = $1", &[(&projection, Type::TEXT)])
        .await
        .map_err(map)?;
    client
        .query_typed(
            "INSERT INTO projection_state (projection, partition, partitions, transaction_id, position)
             SELECT $1, p, $2, $3, $4 FROM generate_series(0, $2 - 1) AS p",
            &[(&projection, Type::TEXT), (&partitions, Type::INT4), (&xid, Type::XID8), (&start.1, Type::INT8)],
        )
        .await
        .map_err(map)?;
    Ok(())
}

impl ProjectionStore for PgStore {
    async fn register(
        &self,
        projection: &str,
        table: &'static TableSchema,
        filter: &EventFilter,
        partitions: u32,
    ) -> Result<(), StoreError> {
        let filter_json = serde_json::to_value(filter).map_err(|e| StoreError::InvalidInput(e.to_string()))?;
        let partitions =
            i32::try_from(partitions).map_err(|_| StoreError::InvalidInput("too many partitions".into()))?;
        let client = self.client().await?;
        // One transaction under a transaction-scoped advisory lock: `CREATE TABLE IF NOT
        // EXISTS` is not safe against itself, and two runners may start at once.
        client.batch_execute("BEGIN; SELECT pg_advisory_xact_lock(7215666);").await.map_err(map)?;
        match register_locked(&client, projection, table, &filter_json, partitions).await {
            Ok(()) => client.batch_execute("COMMIT").await.map_err(map),
            Err(e) => {
                let _ = client.batch_execute("ROLLBACK").await;
                Err(e)
            }
        }
    }

    async fn claim(
        &self,
        projection: &str,
        partition: Partition,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        let client = self.client().await?;
        let index = partition.index as i32;
        let row = client
            .query_typed_opt(
                CLAIM,
                &[(&projection, Type::TEXT), (&index, Type::INT4), (&owner, Type::TEXT), (&seconds(ttl), Type::FLOAT8)],
            )
            .await
            .map_err(map)?;
        let Some(row) = row else {
            let exists = client
                .query_typed_opt(
                    "SELECT 1 FROM projection_state WHERE projection = $1 AND partition = $2",
                    &[(&projection, Type::TEXT), (&index, Type::INT4)],
                )
                .await
                .map_err(map)?;
            return match exists {
                Some(_) => Ok(None),
                None => Err(StoreError::UnknownProjection(format!("{projection} partition {partition}"))),
            };
        };
        let stored: i32 = row.get(2);
        if stored as u32 != partition.count {
            return Err(StoreError::InvalidInput(format!(
                "projection {projection} is registered with {stored} partitions, not {}",
                partition.count
            )));
        }
        let parked = parked_set(&client, projection, partition, row.get(3)).await?;
        Ok(Some(Lease {
            projection: projection.to_owned(),
            partition,
            owner: owner.to_owned(),
            checkpoint: Checkpoint { transaction_id: row.get::<_, Xid8>(0).0, position: row.get(1) },
            parked,
        }))
    }

    async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        let client = self.client().await?;
        let index = lease.partition.index as i32;
        client
            .query_typed(
                "UPDATE projection_state SET lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
                 WHERE projection = $1 AND partition = $2 AND lease_owner = $3",
                &[(&lease.projection, Type::TEXT), (&index, Type::INT4), (&lease.owner, Type::TEXT)],
            )
            .await
            .map_err(map)?;
        Ok(())
    }

    async fn load_rows(&self, table: &'static TableSchema, keys: &[Vec<Value>]) -> Result<Vec<Vec<Value>>, StoreError> {
        let client = self.client().await?;
        load_rows(&client, table, keys).await
    }

    async fn commit(&self, commit: BatchCommit<'_>) -> Result<(), StoreError> {
        let table = commit.table;
        let all: Vec<Column> = table.all_columns().collect();
        let upserts = column_arrays(&all, &commit.changes.upserts)?;
        let deletes = column_arrays(table.key, &commit.changes.deletes)?;
        let to_xid = Xid8(commit.to.transaction_id);
        let from_xid = Xid8(commit.from.transaction_id);
        let ttl = seconds(commit.lease_ttl);
        let applied = commit.events_applied as i64;
        let index = commit.lease.partition.index as i32;
        let parks = i64::from(!commit.dead_letters.is_empty());
        let letters = LetterArrays::new(&commit.dead_letters);
        let mut params: Vec<(&(dyn ToSql + Sync), Type)> = vec![
            (&to_xid, Type::XID8),
            (&commit.to.position, Type::INT8),
            (&ttl, Type::FLOAT8),
            (&applied, Type::INT8),
            (&commit.last_event_at, Type::TIMESTAMPTZ),
            (&commit.lease.projection, Type::TEXT),
            (&index, Type::INT4),
            (&commit.lease.owner, Type::TEXT),
            (&from_xid, Type::XID8),
            (&commit.from.position, Type::INT8),
            (&commit.lease.parked.epoch, Type::INT8),
            (&parks, Type::INT8),
        ];
        let guard = "WHERE EXISTS (SELECT 1 FROM cas)";
        let mut sql = String::from(
            "WITH cas AS (
                UPDATE projection_state
                SET transaction_id = $1, position = $2, lease_expires_at = now() + make_interval(secs => $3),
                    events_applied = events_applied + $4, last_event_at = coalesce($5, last_event_at),
                    status = CASE WHEN status = 'rebuilding' THEN status ELSE 'running' END,
                    parking_epoch = parking_epoch + $12, updated_at = now()
                WHERE projection = $6 AND partition = $7 AND lease_owner = $8
                  AND transaction_id = $9 AND position = $10 AND parking_epoch = $11
                RETURNING 1)",
        );
        if !commit.dead_letters.is_empty() {
            sql.push_str(&format!(", dl AS ({})", insert_letters_sql(6, params.len() + 1, guard)));
            letters.push(&mut params);
            sql.push_str(&format!(", park AS ({})", park_sql(6)));
        }
        if !commit.changes.upserts.is_empty() {
            sql.push_str(&format!(", up AS ({})", upsert_sql(table, params.len() + 1, guard)));
            push_arrays(&upserts, &mut params);
        }
        if !commit.changes.deletes.is_empty() {
            sql.push_str(&format!(", del AS ({})", delete_sql(table, params.len() + 1, guard)));
            push_arrays(&deletes, &mut params);
        }
        // The read model is derived data: a batch whose commit is lost in a crash is lost
        // with its checkpoint and applied again, so the commit need not wait for the WAL
        // flush. Set inside the statement, it lasts for this transaction only.
        sql.push_str(
            ", async_commit AS (SELECT set_config('synchronous_commit', 'off', true))
             SELECT count(*) FROM cas, async_commit",
        );
        let client = self.client().await?;
        let row = client.query_typed_one(&sql, &params).await.map_err(map)?;
        if row.get::<_, i64>(0) == 1 {
            return Ok(());
        }
        let owner = client
            .query_typed_opt(
                "SELECT lease_owner FROM projection_state WHERE projection = $1 AND partition = $2",
                &[(&commit.lease.projection, Type::TEXT), (&index, Type::INT4)],
            )
            .await
            .map_err(map)?
            .and_then(|r| r.get::<_, Option<String>>(0));
        match owner {
            Some(o) if o == commit.lease.owner => Err(StoreError::CheckpointMoved {
                projection: commit.lease.projection.clone(),
                partition: commit.lease.partition.index,
            }),
            other => Err(StoreError::LeaseLost {
                projection: commit.lease.projection.clone(),
                partition: commit.lease.partition.index,
                owner: other.unwrap_or_else(|| "nobody".into()),
            }),
        }
    }

    async fn horizon_hold(&self) -> Result<Option<projector::HorizonHold>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_typed_opt(
                "WITH waiting AS (
                     SELECT count(*) AS n FROM events
                     WHERE transaction_id >= pg_snapshot_xmin(pg_current_snapshot()))
                 SELECT a.pid,
                        format('%s@%s, %s, %s: %s', a.usename, a.datname,
                               coalesce(nullif(a.application_name, ''), 'no application name'),
                               a.state, left(regexp_replace(a.query, '\\s+', ' ', 'g'), 120)),
                        a.xact_start, waiting.n
                 FROM waiting, pg_stat_activity a
                 WHERE waiting.n > 0 AND a.backend_xid IS NOT NULL AND a.pid <> pg_backend_pid()
                 ORDER BY age(a.backend_xid) DESC
                 LIMIT 1",
                &[],
            )
            .await
            .map_err(map)?;
        Ok(row.map(|r| projector::HorizonHold {
            pid: r.get(0),
            description: r.get(1),
            transaction_started_at: r.get(2),
            events_waiting: r.get(3),
        }))
    }

    async fn clear_failure(&self, projection: &str, event_id: uuid::Uuid) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .query_typed(
                "DELETE FROM event_failures WHERE projection = $1 AND event_id = $2",
                &[(&projection, Type::TEXT), (&event_id, Type::UUID)],
            )
            .await
            .map_err(map)?;
        Ok(())
    }

    async fn record_failure(
        &self,
        projection: &str,
        event: &projector::DomainEvent,
        error: &str,
    ) -> Result<projector::FailureRecord, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_typed_one(
                "INSERT INTO event_failures (projection, event_id, attempts, last_error) VALUES ($1, $2, 1, $3)
                 ON CONFLICT (projection, event_id) DO UPDATE
                     SET attempts = event_failures.attempts + 1, last_failed_at = now(), last_error = EXCLUDED.last_error
                 RETURNING attempts, first_failed_at",
                &[(&projection, Type::TEXT), (&event.event_id, Type::UUID), (&error, Type::TEXT)],
            )
            .await
            .map_err(map)?;
        Ok(projector::FailureRecord { attempts: row.get::<_, i32>(0) as u32, first_failed_at: row.get(1) })
    }

    async fn set_status(
        &self,
        projection: &str,
        partition: Partition,
        status: Status,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        let index = partition.index as i32;
        client
            .query_typed(
                "UPDATE projection_state
                 SET status = $3, last_error = coalesce($4, last_error),
                     error_count = error_count + CASE WHEN $4 IS NULL THEN 0 ELSE 1 END, updated_at = now()
                 WHERE projection = $1 AND partition = $2",
                &[
                    (&projection, Type::TEXT),
                    (&index, Type::INT4),
                    (&status.as_str(), Type::TEXT),
                    (&error, Type::TEXT),
                ],
            )
            .await
            .map_err(map)?;
        Ok(())
    }

    async fn states(&self) -> Result<Vec<ProjectionState>, StoreError> {
        let client = self.client().await?;
        let rows = client.query_typed(STATES, &[]).await.map_err(map)?;
        rows.iter()
            .map(|r| {
                let status: String = r.get(6);
                let lag_events: i64 = r.get(13);
                let mut status = Status::parse(&status)
                    .ok_or_else(|| StoreError::Database(format!("unknown projection status {status:?}")))?;
                if status == Status::Running && lag_events == 0 {
                    status = Status::CaughtUp;
                }
                Ok(ProjectionState {
                    projection: r.get(0),
                    partition: r.get::<_, i32>(1) as u32,
                    partitions: r.get::<_, i32>(2) as u32,
                    checkpoint: Checkpoint { transaction_id: r.get::<_, Xid8>(3).0, position: r.get(4) },
                    last_event_at: r.get::<_, Option<DateTime<Utc>>>(5),
                    lag_events,
                    lag_seconds: r.get(14),
                    status,
                    events_applied: r.get(7),
                    error_count: r.get(8),
                    last_error: r.get(9),
                    lease_owner: r.get(10),
                    lease_expires_at: r.get(11),
                    updated_at: r.get(12),
                    dead_letters: r.get(15),
                    oldest_dead_letter_at: r.get(16),
                    parked_aggregates: r.get(17),
                    parked_events: r.get(18),
                })
            })
            .collect()
    }
}
