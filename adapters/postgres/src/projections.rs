//! `ProjectionStore` on PostgreSQL: registration, row leases, and the one-statement
//! batch commit (a checkpoint compare-and-set guarding the row writes and dead letters).

use std::sync::LazyLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use postgres_types::{ToSql, Type};
use projector::store::rules::{self, LagWindow, PartitionRow, RefusedCommit, Rescale};
use projector::{
    BatchCommit, Checkpoint, DomainEvent, EventFilter, Exclusions, FailureRecord, HorizonHold, InFlight, Lease,
    Partition, ProjectionState, ProjectionStore, Status, StoreError, TableSchema, Value,
};
use tokio_postgres::Client;
use uuid::Uuid;

use crate::dead_letters::{self, commit_letters_sql, parked_set, LetterArrays};
use crate::discarded;
use crate::error::map;
use crate::rows::{self, GuardedWrites};
use crate::types::Xid8;
use crate::PgStore;

const LOCK_REGISTRATIONS: &str = include_str!("../sql/lock_registrations.sql");
const REGISTER_PROJECTION: &str = include_str!("../sql/register_projection.sql");
const PARTITION_ROWS: &str = include_str!("../sql/partition_rows.sql");
const DELETE_PARTITIONS: &str = include_str!("../sql/delete_partitions.sql");
const CREATE_PARTITIONS: &str = include_str!("../sql/create_partitions.sql");
const NEEDS_REBUILD: &str = include_str!("../sql/needs_rebuild.sql");
const MARK_NEEDS_REBUILD: &str = include_str!("../sql/mark_needs_rebuild.sql");
const SET_PARTITION_COUNT: &str = include_str!("../sql/set_partition_count.sql");
const CLAIM_PARTITION: &str = include_str!("../sql/claim_partition.sql");
const LOCK_OWNER: &str = include_str!("../sql/lock_owner.sql");
const CLAIM_REFUSED: &str = include_str!("../sql/claim_refused.sql");
const RELEASE_PARTITION: &str = include_str!("../sql/release_partition.sql");
const COMMIT_BATCH: &str = include_str!("../sql/commit_batch.sql");
const COMMIT_REFUSED: &str = include_str!("../sql/commit_refused.sql");
const SET_STATUS: &str = include_str!("../sql/set_status.sql");
const SET_IN_FLIGHT: &str = include_str!("../sql/set_in_flight.sql");
const BEGIN_STATES: &str = include_str!("../sql/begin_states.sql");
const PROJECTION_STATES: &str = include_str!("../sql/projection_states.sql");
const HORIZON_HOLD: &str = include_str!("../sql/horizon_hold.sql");

/// The line of `commit_batch.sql` after which a batch's writes go.
const WRITES_HERE: &str = "-- batch writes\n";

/// `commit_batch.sql` split where the batch's writes go: the compare-and-set, and the end.
static COMMIT_PARTS: LazyLock<(&'static str, &'static str)> = LazyLock::new(|| {
    let (cas, end) = COMMIT_BATCH.split_once(WRITES_HERE).expect("commit_batch.sql has a `-- batch writes` line");
    (cas, end)
});

/// Parameters of `commit_batch.sql`; the batch's writes take theirs after these.
const COMMIT_PARAMS: usize = 13;

fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// A partition index or count as the `integer` the tables keep.
fn int4(n: u32) -> Result<i32, StoreError> {
    i32::try_from(n).map_err(|_| StoreError::InvalidInput(format!("partition number {n} is too large")))
}

async fn register_locked(
    client: &Client,
    projection: &str,
    table: &'static TableSchema,
    filter_json: &serde_json::Value,
    partitions: u32,
) -> Result<(), StoreError> {
    let existing = partition_rows(client, projection).await?;
    rules::check_registered_partitions(projection, &existing, partitions)?;
    let fit = rules::table_fit(table, &rows::table_columns(client, table).await?);
    let needs_rebuild = rules::needs_rebuild(table, &fit, &existing);
    if needs_rebuild.is_none() {
        rows::create_table(client, table).await?;
    }
    let count = int4(partitions)?;
    client
        .query_typed(
            REGISTER_PROJECTION,
            &[(&projection, Type::TEXT), (&table.name, Type::TEXT), (filter_json, Type::JSONB), (&count, Type::INT4)],
        )
        .await
        .map_err(map)?;
    split(client, projection, &existing, partitions).await?;
    if let Some(why) = needs_rebuild {
        // Never an empty table under a checkpoint past the start: the rebuild makes it.
        client.query_typed(MARK_NEEDS_REBUILD, &[(&projection, Type::TEXT), (&why, Type::TEXT)]).await.map_err(map)?;
    }
    Ok(())
}

async fn partition_rows(client: &Client, projection: &str) -> Result<Vec<PartitionRow>, StoreError> {
    Ok(client
        .query_typed(PARTITION_ROWS, &[(&projection, Type::TEXT)])
        .await
        .map_err(map)?
        .iter()
        .map(|r| PartitionRow {
            index: r.get::<_, i32>(0) as u32,
            count: r.get::<_, i32>(1) as u32,
            checkpoint: Checkpoint { transaction_id: r.get::<_, Xid8>(2).0, position: r.get(3) },
        })
        .collect())
}

async fn repartition_locked(client: &Client, projection: &str, partitions: u32) -> Result<(), StoreError> {
    let count = int4(partitions)?;
    let existing = partition_rows(client, projection).await?;
    let waits: bool = client.query_typed_one(NEEDS_REBUILD, &[(&projection, Type::TEXT)]).await.map_err(map)?.get(0);
    rules::check_repartition(projection, waits)?;
    let set = client
        .query_typed(SET_PARTITION_COUNT, &[(&projection, Type::TEXT), (&count, Type::INT4)])
        .await
        .map_err(map)?;
    if set.is_empty() {
        return Err(StoreError::UnknownProjection(projection.to_owned()));
    }
    split(client, projection, &existing, partitions).await
}

/// Lays out the partition rows as the rescale rule says.
async fn split(
    client: &Client,
    projection: &str,
    existing: &[PartitionRow],
    partitions: u32,
) -> Result<(), StoreError> {
    let count = int4(partitions)?;
    let Rescale::Reset { start } = rules::rescale(projection, existing, partitions)? else {
        return Ok(());
    };
    let xid = Xid8(start.transaction_id);
    client.query_typed(DELETE_PARTITIONS, &[(&projection, Type::TEXT)]).await.map_err(map)?;
    client
        .query_typed(
            CREATE_PARTITIONS,
            &[(&projection, Type::TEXT), (&count, Type::INT4), (&xid, Type::XID8), (&start.position, Type::INT8)],
        )
        .await
        .map_err(map)?;
    Ok(())
}

/// Why a claim took no lease: another owner holds it (`Ok(None)`), or the claim names a
/// projection, partition or partition count the store does not have.
async fn claim_refused(client: &Client, projection: &str, partition: Partition) -> Result<Option<Lease>, StoreError> {
    let index = int4(partition.index)?;
    let found =
        client.query_typed_opt(CLAIM_REFUSED, &[(&projection, Type::TEXT), (&index, Type::INT4)]).await.map_err(map)?;
    let Some((Some(stored), exists)) = found.map(|r| (r.get::<_, Option<i32>>(0), r.get::<_, bool>(1))) else {
        return Err(rules::missing_partition(projection, None, partition));
    };
    rules::check_partition_count(projection, stored as u32, partition)?;
    if !exists {
        return Err(rules::missing_partition(projection, Some(stored as u32), partition));
    }
    Ok(None)
}

/// Why a batch commit's compare-and-set matched nothing ([`rules::diagnose_refused_commit`]).
async fn commit_refused(client: &Client, commit: &BatchCommit<'_>) -> StoreError {
    let index = commit.lease.partition.index as i32;
    let found =
        client.query_typed_opt(COMMIT_REFUSED, &[(&commit.lease.projection, Type::TEXT), (&index, Type::INT4)]).await;
    let found = match found {
        Ok(found) => found,
        Err(e) => return map(e),
    };
    let refused = match found {
        None => RefusedCommit { registered_table: None, registered_partitions: None, partition_owner: None },
        Some(r) => RefusedCommit {
            registered_table: Some(r.get(0)),
            registered_partitions: r.get::<_, Option<i32>>(1).map(|n| n as u32),
            partition_owner: r.get::<_, bool>(2).then(|| r.get(3)),
        },
    };
    rules::diagnose_refused_commit(commit, refused)
}

async fn set_in_flight(
    client: &Client,
    lease: &Lease,
    batch: Option<InFlight>,
    crashes: u32,
    lease_ttl: Duration,
) -> Result<(), StoreError> {
    let ttl = seconds(lease_ttl);
    let index = lease.partition.index as i32;
    let xid = batch.map(|b| Xid8(b.to.transaction_id));
    let position = batch.map(|b| b.to.position);
    let events = batch.map(|b| i32::try_from(b.events).unwrap_or(i32::MAX));
    let crashes = i32::try_from(crashes).unwrap_or(i32::MAX);
    let changed = client
        .execute_typed(
            SET_IN_FLIGHT,
            &[
                (&lease.projection, Type::TEXT),
                (&index, Type::INT4),
                (&lease.owner, Type::TEXT),
                (&xid, Type::XID8),
                (&position, Type::INT8),
                (&events, Type::INT4),
                (&crashes, Type::INT4),
                (&ttl, Type::FLOAT8),
            ],
        )
        .await
        .map_err(map)?;
    if changed == 0 {
        return Err(rules::in_flight_refused(lease));
    }
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
        rules::check_registration(projection, table, partitions)?;
        let filter_json = serde_json::to_value(filter).map_err(|e| StoreError::InvalidInput(e.to_string()))?;
        let client = self.client().await?;
        let registered = async {
            client.batch_execute(&format!("BEGIN;\n{LOCK_REGISTRATIONS}")).await.map_err(map)?;
            register_locked(&client, projection, table, &filter_json, partitions).await
        };
        match registered.await {
            Ok(()) => client.batch_execute("COMMIT").await.map_err(map),
            Err(e) => {
                let _ = client.batch_execute("ROLLBACK").await;
                Err(e)
            }
        }
    }

    async fn partition_count(&self, projection: &str) -> Result<Option<u32>, StoreError> {
        let client = self.client().await?;
        Ok(partition_rows(&client, projection).await?.first().map(|row| row.count))
    }

    async fn repartition(&self, projection: &str, partitions: u32) -> Result<(), StoreError> {
        rules::check_partitions(projection, partitions)?;
        let client = self.client().await?;
        let done = async {
            client.batch_execute(&format!("BEGIN;\n{LOCK_REGISTRATIONS}")).await.map_err(map)?;
            repartition_locked(&client, projection, partitions).await
        };
        match done.await {
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
        rules::check_owner(projection, partition, owner)?;
        let (index, count) = (int4(partition.index)?, int4(partition.count)?);
        let client = self.client().await?;
        let locks = self.owner_liveness().session_locks();
        let seed = rules::OWNER_LOCK_SEED;
        if locks && !self.holds_owner_lock(owner) {
            // Before the first lease that says so, so no lease ever claims a lock not held.
            client.query_typed(LOCK_OWNER, &[(&owner, Type::TEXT), (&seed, Type::INT8)]).await.map_err(map)?;
            self.owner_locked(owner);
        }
        let held = self.locked_owners();
        let row = client
            .query_typed_opt(
                CLAIM_PARTITION,
                &[
                    (&projection, Type::TEXT),
                    (&index, Type::INT4),
                    (&owner, Type::TEXT),
                    (&seconds(ttl), Type::FLOAT8),
                    (&count, Type::INT4),
                    (&locks, Type::BOOL),
                    (&seed, Type::INT8),
                    (&held, Type::TEXT_ARRAY),
                ],
            )
            .await
            .map_err(map)?;
        let Some(row) = row else {
            return claim_refused(&client, projection, partition).await;
        };
        let parked = parked_set(&client, projection, partition, row.get(2)).await?;
        let in_flight = match (row.get::<_, Option<Xid8>>(3), row.get::<_, Option<i64>>(4)) {
            (Some(xid), Some(position)) => Some(InFlight {
                to: Checkpoint { transaction_id: xid.0, position },
                events: row.get::<_, Option<i32>>(5).unwrap_or(0).max(0) as u32,
            }),
            _ => None,
        };
        Ok(Some(Lease {
            projection: projection.to_owned(),
            partition,
            owner: owner.to_owned(),
            checkpoint: Checkpoint { transaction_id: row.get::<_, Xid8>(0).0, position: row.get(1) },
            parked,
            in_flight,
            crashes: row.get::<_, i32>(6).max(0) as u32,
        }))
    }

    async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        let client = self.client().await?;
        let index = lease.partition.index as i32;
        client
            .query_typed(
                RELEASE_PARTITION,
                &[(&lease.projection, Type::TEXT), (&index, Type::INT4), (&lease.owner, Type::TEXT)],
            )
            .await
            .map_err(map)?;
        Ok(())
    }

    async fn load_rows(&self, table: &'static TableSchema, keys: &[Vec<Value>]) -> Result<Vec<Vec<Value>>, StoreError> {
        let client = self.client().await?;
        rows::load_rows(&client, table, keys).await
    }

    async fn commit(&self, commit: BatchCommit<'_>) -> Result<(), StoreError> {
        rules::check_commit(&commit)?;
        let lease = commit.lease;
        let writes = GuardedWrites::new(commit.table, &commit.changes)?;
        let letters = (!commit.dead_letters.is_empty()).then(|| LetterArrays::new(&commit.dead_letters));
        let audit = (!commit.audit.is_empty()).then(|| crate::keys::AuditColumns::new(&commit.audit)).transpose()?;
        let index = lease.partition.index as i32;
        let from_xid = Xid8(commit.from.transaction_id);
        let to_xid = Xid8(commit.to.transaction_id);
        let ttl = seconds(commit.lease_ttl);
        let applied = i64::try_from(commit.events_applied).unwrap_or(i64::MAX);
        let parks = i64::from(letters.is_some());
        let mut params: Vec<(&(dyn ToSql + Sync), Type)> = vec![
            (&lease.projection, Type::TEXT),
            (&index, Type::INT4),
            (&lease.owner, Type::TEXT),
            (&from_xid, Type::XID8),
            (&commit.from.position, Type::INT8),
            (&lease.parked.epoch, Type::INT8),
            (&commit.table.name, Type::TEXT),
            (&to_xid, Type::XID8),
            (&commit.to.position, Type::INT8),
            (&ttl, Type::FLOAT8),
            (&applied, Type::INT8),
            (&commit.last_event_at, Type::TIMESTAMPTZ),
            (&parks, Type::INT8),
        ];
        debug_assert_eq!(params.len(), COMMIT_PARAMS);
        let (cas, end) = *COMMIT_PARTS;
        let mut sql = String::from(cas);
        if let Some(letters) = &letters {
            sql.push_str(&commit_letters_sql(params.len() + 1));
            letters.push(&mut params);
        }
        if let Some(audit) = &audit {
            sql.push_str(&crate::keys::audit_cte(params.len() + 1));
            audit.push(&mut params);
        }
        writes.push(&mut sql, &mut params);
        sql.push_str(end);
        let client = self.client().await?;
        let row = client.query_typed_one(&sql, &params).await.map_err(map)?;
        if row.get::<_, i64>(0) == 1 {
            return Ok(());
        }
        Err(commit_refused(&client, &commit).await)
    }

    async fn horizon_hold(&self) -> Result<Option<HorizonHold>, StoreError> {
        let client = self.client().await?;
        let row = client.query_typed_opt(HORIZON_HOLD, &[]).await.map_err(map)?;
        Ok(row.map(|r| HorizonHold {
            pid: r.get(0),
            description: r.get(1),
            transaction_started_at: r.get(2),
            events_waiting: r.get(3),
        }))
    }

    async fn clear_failure(&self, projection: &str, event_id: Uuid) -> Result<(), StoreError> {
        let client = self.client().await?;
        dead_letters::clear_failure(&client, projection, event_id).await
    }

    async fn record_failure(
        &self,
        projection: &str,
        event: &DomainEvent,
        error: &str,
    ) -> Result<FailureRecord, StoreError> {
        let client = self.client().await?;
        dead_letters::record_failure(&client, projection, event, error).await
    }

    async fn set_in_flight(
        &self,
        lease: &Lease,
        batch: Option<InFlight>,
        crashes: u32,
        lease_ttl: Duration,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        set_in_flight(&client, lease, batch, crashes, lease_ttl).await
    }

    async fn begin_batch(
        &self,
        lease: &Lease,
        batch: InFlight,
        crashes: u32,
        lease_ttl: Duration,
        table: &'static TableSchema,
        keys: &[Vec<Value>],
    ) -> Result<Vec<Vec<Value>>, StoreError> {
        let client = self.client().await?;
        // Both go out before either answer comes back (tokio-postgres pipelines the
        // queries of one connection): one round trip instead of two.
        let load = async {
            if keys.is_empty() {
                Ok(Vec::new())
            } else {
                rows::load_rows(&client, table, keys).await
            }
        };
        let (marked, rows) =
            futures_util::future::join(set_in_flight(&client, lease, Some(batch), crashes, lease_ttl), load).await;
        marked?;
        rows
    }

    async fn set_status(
        &self,
        projection: &str,
        partition: Partition,
        status: Status,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let index = partition.index as i32;
        let errors = i64::from(status.counts_as_error(error));
        let client = self.client().await?;
        client
            .query_typed(
                SET_STATUS,
                &[
                    (&projection, Type::TEXT),
                    (&index, Type::INT4),
                    (&status.as_str(), Type::TEXT),
                    (&error, Type::TEXT),
                    (&errors, Type::INT8),
                    (&status.clears_last_error(), Type::BOOL),
                ],
            )
            .await
            .map_err(map)?;
        Ok(())
    }

    async fn exclusions(&self, projection: &str) -> Result<Exclusions, StoreError> {
        let client = self.client().await?;
        discarded::exclusions(&client, projection).await
    }

    async fn states(&self) -> Result<Vec<ProjectionState>, StoreError> {
        let client = self.client().await?;
        let limit = self.exact_lag_limit();
        let window_rows = i64::from(limit) + 1;
        client.batch_execute(BEGIN_STATES).await.map_err(map)?;
        let rows = client.query_typed(PROJECTION_STATES, &[(&window_rows, Type::INT8)]).await;
        let end = client.batch_execute(if rows.is_ok() { "COMMIT" } else { "ROLLBACK" }).await;
        let rows = rows.map_err(map)?;
        end.map_err(map)?;
        rows.iter()
            .map(|r| {
                let status: String = r.get(6);
                let window = LagWindow {
                    checkpoint_position: r.get(4),
                    scanned: r.get(20),
                    matching: r.get(13),
                    last_position: r.get(21),
                    head_position: r.get(22),
                };
                let lag = rules::lag_from_window(window, limit);
                let status = Status::parse(&status)
                    .ok_or_else(|| StoreError::Database(format!("unknown projection status {status:?}")))?
                    .with_lag(lag.events);
                Ok(ProjectionState {
                    projection: r.get(0),
                    partition: r.get::<_, i32>(1) as u32,
                    partitions: r.get::<_, i32>(2) as u32,
                    checkpoint: Checkpoint { transaction_id: r.get::<_, Xid8>(3).0, position: r.get(4) },
                    last_event_at: r.get::<_, Option<DateTime<Utc>>>(5),
                    lag_events: lag.events,
                    lag_estimated: lag.estimated,
                    lag_seconds: rules::lag_seconds(r.get(19), r.get(14)),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_commit_statement_splits_where_the_writes_go() {
        let (cas, end) = *COMMIT_PARTS;
        assert!(cas.contains("WITH guard AS (") && cas.contains(&format!("${COMMIT_PARAMS}")), "{cas}");
        assert!(!cas.contains(&format!("${}", COMMIT_PARAMS + 1)), "{cas}");
        assert!(end.trim_end().ends_with("SELECT count(*) FROM guard, async_commit"), "{end}");
    }
}
