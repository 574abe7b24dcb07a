//! `ProjectionStore` on PostgreSQL: registration, row leases, row loads, and the
//! one-statement batch commit (checkpoint compare-and-set guarding the row writes).

use std::time::Duration;

use chrono::{DateTime, Utc};
use postgres_types::{ToSql, Type};
use projector::{
    BatchCommit, Checkpoint, Column, EventFilter, Lease, Partition, ProjectionState,
    ProjectionStore, RowChanges, Status, StoreError, TableSchema, Value,
};
use tokio_postgres::Client;

use crate::error::map;
use crate::table::{
    column_arrays, create_sql, delete_sql, load_sql, row_values, upsert_sql, ColumnArray,
};
use crate::types::Xid8;
use crate::PgStore;

fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Keys or rows as parameter arrays, appended to `params` in column order.
pub(crate) fn push_arrays<'a>(
    arrays: &'a [(ColumnArray, Type)],
    params: &mut Vec<(&'a (dyn ToSql + Sync), Type)>,
) {
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
    let rows = client
        .query_typed(&load_sql(table), &params)
        .await
        .map_err(map)?;
    rows.iter().map(|r| row_values(table, r)).collect()
}

/// Writes row changes with no guard (inside a rebuild's transaction).
pub(crate) async fn write_rows(
    client: &Client,
    table: &'static TableSchema,
    changes: RowChanges,
) -> Result<(), StoreError> {
    const CHUNK: usize = 50_000;
    let all: Vec<Column> = table.all_columns().collect();
    for chunk in changes.upserts.chunks(CHUNK) {
        let arrays = column_arrays(&all, chunk)?;
        let mut params = Vec::new();
        push_arrays(&arrays, &mut params);
        client
            .query_typed(&upsert_sql(table, 1, ""), &params)
            .await
            .map_err(map)?;
    }
    for chunk in changes.deletes.chunks(CHUNK) {
        let arrays = column_arrays(table.key, chunk)?;
        let mut params = Vec::new();
        push_arrays(&arrays, &mut params);
        client
            .query_typed(&delete_sql(table, 1, ""), &params)
            .await
            .map_err(map)?;
    }
    Ok(())
}

const CLAIM: &str = "
UPDATE projection_state
SET lease_owner = $3, lease_expires_at = now() + make_interval(secs => $4), updated_at = now()
WHERE projection = $1 AND partition = $2
  AND (lease_owner IS NULL OR lease_owner = $3 OR lease_expires_at < now())
RETURNING transaction_id, position, partitions";

const STATES: &str = "
SELECT s.projection, s.partition, s.partitions, s.transaction_id, s.position, s.last_event_at, s.status,
       s.events_applied, s.error_count, s.last_error, s.lease_owner, s.lease_expires_at, s.updated_at,
       lag.n, coalesce(extract(epoch FROM now() - lag.oldest)::float8, 0)
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
ORDER BY s.projection, s.partition";

impl ProjectionStore for PgStore {
    async fn register(
        &self,
        projection: &str,
        table: &'static TableSchema,
        filter: &EventFilter,
        partitions: u32,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .batch_execute(&create_sql(table))
            .await
            .map_err(map)?;
        let filter_json =
            serde_json::to_value(filter).map_err(|e| StoreError::InvalidInput(e.to_string()))?;
        let partitions = i32::try_from(partitions)
            .map_err(|_| StoreError::InvalidInput("too many partitions".into()))?;
        client
            .query_typed(
                "INSERT INTO projections (name, table_name, filter, partitions) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (name) DO UPDATE SET table_name = EXCLUDED.table_name, filter = EXCLUDED.filter,
                     updated_at = now()",
                &[(&projection, Type::TEXT), (&table.name, Type::TEXT), (&filter_json, Type::JSONB), (&partitions, Type::INT4)],
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
        if rows.len() == partitions as usize
            && rows.iter().all(|r| r.get::<_, i32>(0) == partitions)
        {
            return Ok(());
        }
        let checkpoints: Vec<(u64, i64)> = rows
            .iter()
            .map(|r| (r.get::<_, Xid8>(1).0, r.get::<_, i64>(2)))
            .collect();
        let start = checkpoints.first().copied().unwrap_or((0, 0));
        if checkpoints.iter().any(|c| *c != start) {
            return Err(StoreError::InvalidInput(format!(
                "projection {projection} has {} partitions at different checkpoints; rescaling to {partitions} \
                 needs them drained to one checkpoint first (`projector scale`) or a rebuild",
                rows.len()
            )));
        }
        let xid = Xid8(start.0);
        // Delete and insert in one transaction: a data-modifying CTE would check the new
        // rows' keys against the rows it is deleting.
        client.batch_execute("BEGIN").await.map_err(map)?;
        let replaced = async {
            client
                .query_typed("DELETE FROM projection_state WHERE projection = $1", &[(&projection, Type::TEXT)])
                .await?;
            client
                .query_typed(
                    "INSERT INTO projection_state (projection, partition, partitions, transaction_id, position)
                     SELECT $1, p, $2, $3, $4 FROM generate_series(0, $2 - 1) AS p",
                    &[(&projection, Type::TEXT), (&partitions, Type::INT4), (&xid, Type::XID8), (&start.1, Type::INT8)],
                )
                .await?;
            client.batch_execute("COMMIT").await
        }
        .await;
        if let Err(e) = replaced {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(map(e));
        }
        Ok(())
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
                &[
                    (&projection, Type::TEXT),
                    (&index, Type::INT4),
                    (&owner, Type::TEXT),
                    (&seconds(ttl), Type::FLOAT8),
                ],
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
                None => Err(StoreError::UnknownProjection(format!(
                    "{projection} partition {partition}"
                ))),
            };
        };
        let stored: i32 = row.get(2);
        if stored as u32 != partition.count {
            return Err(StoreError::InvalidInput(format!(
                "projection {projection} is registered with {stored} partitions, not {}",
                partition.count
            )));
        }
        Ok(Some(Lease {
            projection: projection.to_owned(),
            partition,
            owner: owner.to_owned(),
            checkpoint: Checkpoint {
                transaction_id: row.get::<_, Xid8>(0).0,
                position: row.get(1),
            },
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

    async fn load_rows(
        &self,
        table: &'static TableSchema,
        keys: &[Vec<Value>],
    ) -> Result<Vec<Vec<Value>>, StoreError> {
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
        ];
        let guard = "WHERE EXISTS (SELECT 1 FROM cas)";
        let mut sql = String::from(
            "WITH cas AS (
                UPDATE projection_state
                SET transaction_id = $1, position = $2, lease_expires_at = now() + make_interval(secs => $3),
                    events_applied = events_applied + $4, last_event_at = coalesce($5, last_event_at),
                    status = CASE WHEN status = 'rebuilding' THEN 'running' ELSE status END, updated_at = now()
                WHERE projection = $6 AND partition = $7 AND lease_owner = $8
                  AND transaction_id = $9 AND position = $10
                RETURNING 1)",
        );
        if !commit.changes.upserts.is_empty() {
            sql.push_str(&format!(
                ", up AS ({})",
                upsert_sql(table, params.len() + 1, guard)
            ));
            push_arrays(&upserts, &mut params);
        }
        if !commit.changes.deletes.is_empty() {
            sql.push_str(&format!(
                ", del AS ({})",
                delete_sql(table, params.len() + 1, guard)
            ));
            push_arrays(&deletes, &mut params);
        }
        sql.push_str(" SELECT count(*) FROM cas");
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
                &[(&projection, Type::TEXT), (&index, Type::INT4), (&status.as_str(), Type::TEXT), (&error, Type::TEXT)],
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
                let mut status = Status::parse(&status).ok_or_else(|| {
                    StoreError::Database(format!("unknown projection status {status:?}"))
                })?;
                if status == Status::Running && lag_events == 0 {
                    status = Status::CaughtUp;
                }
                Ok(ProjectionState {
                    projection: r.get(0),
                    partition: r.get::<_, i32>(1) as u32,
                    partitions: r.get::<_, i32>(2) as u32,
                    checkpoint: Checkpoint {
                        transaction_id: r.get::<_, Xid8>(3).0,
                        position: r.get(4),
                    },
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
                })
            })
            .collect()
    }
}
