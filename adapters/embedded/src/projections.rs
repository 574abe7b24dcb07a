//! Projection bookkeeping: the embedded store's [`ProjectionStore`] (registration,
//! leases, batch commits, status and states). Read-model rows are `rows`' business, the
//! attempt history and parked sets `dead_letters'`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use projector::store::rules::{self, PartitionRow, RefusedCommit, Rescale};
use projector::{
    BatchCommit, Checkpoint, DomainEvent, EventFilter, Exclusions, FailureRecord, InFlight, Lease, Partition,
    ProjectionState, ProjectionStore, Status, StoreError, TableSchema, Value,
};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use uuid::Uuid;

use crate::codec::{format_ts, max_ts, parse_ts, tx_id};
use crate::error::Context;
use crate::{dead_letters, discarded, events, rows, EmbeddedStore};

const FIND_TABLE_OWNER: &str = include_str!("../sql/find_table_owner.sql");
const REGISTER_PROJECTION: &str = include_str!("../sql/register_projection.sql");
const PARTITION_ROWS: &str = include_str!("../sql/partition_rows.sql");
const DELETE_PARTITIONS: &str = include_str!("../sql/delete_partitions.sql");
const INSERT_PARTITION: &str = include_str!("../sql/insert_partition.sql");
const FIND_PROJECTION: &str = include_str!("../sql/find_projection.sql");
const PARTITION_COUNT: &str = include_str!("../sql/partition_count.sql");
const NEEDS_REBUILD: &str = include_str!("../sql/needs_rebuild.sql");
const MARK_NEEDS_REBUILD: &str = include_str!("../sql/mark_needs_rebuild.sql");
const SET_PARTITION_COUNT: &str = include_str!("../sql/set_partition_count.sql");
const CLAIM_PARTITION: &str = include_str!("../sql/claim_partition.sql");
const RELEASE_PARTITION: &str = include_str!("../sql/release_partition.sql");
const COMMIT_BATCH: &str = include_str!("../sql/commit_batch.sql");
const PARTITION_OWNER: &str = include_str!("../sql/partition_owner.sql");
const SET_STATUS: &str = include_str!("../sql/set_status.sql");
const SET_IN_FLIGHT: &str = include_str!("../sql/set_in_flight.sql");
const PROJECTION_STATES: &str = include_str!("../sql/projection_states.sql");

impl ProjectionStore for EmbeddedStore {
    async fn register(
        &self,
        projection: &str,
        table: &'static TableSchema,
        filter: &EventFilter,
        partitions: u32,
    ) -> Result<(), StoreError> {
        register(&mut self.lock(), projection, table, filter, partitions)
    }

    async fn partition_count(&self, projection: &str) -> Result<Option<u32>, StoreError> {
        let rows = partition_rows(&self.lock(), projection).context(|| format!("look up projection {projection}"))?;
        Ok(rows.first().map(|row| row.count))
    }

    async fn repartition(&self, projection: &str, partitions: u32) -> Result<(), StoreError> {
        repartition(&mut self.lock(), projection, partitions)
    }

    async fn claim(
        &self,
        projection: &str,
        partition: Partition,
        owner: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        claim(&mut self.lock(), projection, partition, owner, ttl)
    }

    async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        release(&self.lock(), lease)
    }

    async fn load_rows(&self, table: &'static TableSchema, keys: &[Vec<Value>]) -> Result<Vec<Vec<Value>>, StoreError> {
        rows::load_rows(&self.lock(), table, keys)
    }

    async fn commit(&self, commit: BatchCommit<'_>) -> Result<(), StoreError> {
        self::commit(&mut self.lock(), commit)
    }

    async fn record_failure(
        &self,
        projection: &str,
        event: &DomainEvent,
        error: &str,
    ) -> Result<FailureRecord, StoreError> {
        dead_letters::record_failure(&self.lock(), projection, event, error)
    }

    async fn clear_failure(&self, projection: &str, event_id: Uuid) -> Result<(), StoreError> {
        dead_letters::clear_failure(&self.lock(), projection, event_id)
    }

    async fn set_in_flight(
        &self,
        lease: &Lease,
        batch: Option<InFlight>,
        crashes: u32,
        lease_ttl: Duration,
    ) -> Result<(), StoreError> {
        let changed = self
            .lock()
            .prepare_cached(SET_IN_FLIGHT)
            .and_then(|mut s| {
                s.execute(params![
                    lease.projection,
                    lease.partition.index,
                    lease.owner,
                    batch.map(|b| i64::try_from(b.to.transaction_id).unwrap_or(i64::MAX)),
                    batch.map(|b| b.to.position),
                    batch.map(|b| i64::from(b.events)),
                    i64::from(crashes),
                    format_ts(expiry(Utc::now(), lease_ttl)),
                ])
            })
            .context(|| format!("record the batch in flight of {} partition {}", lease.projection, lease.partition))?;
        if changed == 0 {
            return Err(rules::in_flight_refused(lease));
        }
        Ok(())
    }

    async fn set_status(
        &self,
        projection: &str,
        partition: Partition,
        status: Status,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        set_status(&self.lock(), projection, partition, status, error)
    }

    async fn states(&self) -> Result<Vec<ProjectionState>, StoreError> {
        states(&self.lock(), self.exact_lag_limit())
    }

    async fn exclusions(&self, projection: &str) -> Result<Exclusions, StoreError> {
        discarded::exclusions(&self.lock(), projection)
    }
}

/// When a lease taken now for `ttl` runs out, within the years the text encoding orders.
fn expiry(now: DateTime<Utc>, ttl: Duration) -> DateTime<Utc> {
    let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::days(36_500));
    now.checked_add_signed(ttl).unwrap_or(DateTime::<Utc>::MAX_UTC).min(max_ts())
}

fn register(
    conn: &mut Connection,
    projection: &str,
    table: &'static TableSchema,
    filter: &EventFilter,
    partitions: u32,
) -> Result<(), StoreError> {
    rules::check_registration(projection, table, partitions)?;
    let context = || format!("register projection {projection}");
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).context(context)?;

    let other: Option<String> =
        tx.query_row(FIND_TABLE_OWNER, params![table.name, projection], |r| r.get(0)).optional().context(context)?;
    if let Some(other) = other {
        return Err(StoreError::InvalidInput(format!(
            "projection {projection}: table {} already belongs to projection {other}",
            table.name
        )));
    }
    let existing = partition_rows(&tx, projection).context(context)?;
    rules::check_registered_partitions(projection, &existing, partitions)?;
    let fit = rules::table_fit(table, &rows::table_columns(&tx, table)?);
    let needs_rebuild = rules::needs_rebuild(table, &fit, &existing);
    if needs_rebuild.is_none() {
        rows::ensure_table(&tx, table)?;
    }
    let filter_json = serde_json::to_string(filter)
        .map_err(|e| StoreError::InvalidInput(format!("projection {projection}: filter does not serialize: {e}")))?;
    tx.execute(REGISTER_PROJECTION, params![projection, table.name, filter_json, partitions]).context(context)?;
    split(&tx, projection, &existing, partitions)?;
    if let Some(why) = needs_rebuild {
        // Never an empty table under a checkpoint past the start: the rebuild makes it.
        tx.execute(MARK_NEEDS_REBUILD, params![projection, why, format_ts(Utc::now())]).context(context)?;
    }
    tx.commit().context(context)?;
    Ok(())
}

/// Lays out the partition rows as the rescale rule says.
fn split(conn: &Connection, projection: &str, existing: &[PartitionRow], partitions: u32) -> Result<(), StoreError> {
    let context = || format!("split projection {projection} into {partitions} partitions");
    if let Rescale::Reset { start } = rules::rescale(projection, existing, partitions)? {
        let now = format_ts(Utc::now());
        conn.execute(DELETE_PARTITIONS, [projection]).context(context)?;
        for index in 0..partitions {
            conn.execute(INSERT_PARTITION, params![projection, index, partitions, tx_id(start)?, start.position, now])
                .context(context)?;
        }
    }
    Ok(())
}

fn repartition(conn: &mut Connection, projection: &str, partitions: u32) -> Result<(), StoreError> {
    rules::check_partitions(projection, partitions)?;
    let context = || format!("repartition projection {projection}");
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).context(context)?;
    let existing = partition_rows(&tx, projection).context(context)?;
    let waits: bool = tx.query_row(NEEDS_REBUILD, [projection], |r| r.get(0)).context(context)?;
    rules::check_repartition(projection, waits)?;
    if tx.execute(SET_PARTITION_COUNT, params![projection, partitions]).context(context)? == 0 {
        return Err(StoreError::UnknownProjection(projection.to_owned()));
    }
    split(&tx, projection, &existing, partitions)?;
    tx.commit().context(context)?;
    Ok(())
}

/// A projection's partition rows, in partition order.
pub(crate) fn partition_rows(conn: &Connection, projection: &str) -> rusqlite::Result<Vec<PartitionRow>> {
    conn.prepare_cached(PARTITION_ROWS)?
        .query_map([projection], |r| {
            let transaction_id: i64 = r.get(2)?;
            Ok(PartitionRow {
                index: r.get(0)?,
                count: r.get(1)?,
                checkpoint: Checkpoint { transaction_id: transaction_id.max(0) as u64, position: r.get(3)? },
            })
        })?
        .collect()
}

/// The partition count a projection is registered with (`None`: it is not registered).
fn registered_partitions(conn: &Connection, projection: &str) -> Result<Option<u32>, StoreError> {
    conn.prepare_cached(FIND_PROJECTION)
        .and_then(|mut s| s.query_row([projection], |r| r.get(2)).optional())
        .context(|| format!("look up projection {projection}"))
}

fn claim(
    conn: &mut Connection,
    projection: &str,
    partition: Partition,
    owner: &str,
    ttl: Duration,
) -> Result<Option<Lease>, StoreError> {
    rules::check_owner(projection, partition, owner)?;
    let context = || format!("claim {projection} partition {partition} for {owner}");
    let now = Utc::now();
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).context(context)?;
    let partitions: Option<u32> = tx
        .query_row(PARTITION_COUNT, params![projection, partition.index], |r| r.get(0))
        .optional()
        .context(context)?;
    match partitions {
        None => return Err(rules::missing_partition(projection, registered_partitions(&tx, projection)?, partition)),
        Some(stored) => rules::check_partition_count(projection, stored, partition)?,
    }
    type Claimed = (i64, i64, i64, Option<InFlight>, i64);
    let taken: Option<Claimed> = tx
        .query_row(
            CLAIM_PARTITION,
            params![owner, format_ts(expiry(now, ttl)), format_ts(now), projection, partition.index],
            |r| {
                let in_flight = match (r.get::<_, Option<i64>>(3)?, r.get::<_, Option<i64>>(4)?) {
                    (Some(transaction_id), Some(position)) => Some(InFlight {
                        to: Checkpoint { transaction_id: transaction_id.max(0) as u64, position },
                        events: r.get::<_, Option<i64>>(5)?.unwrap_or(0).clamp(0, i64::from(u32::MAX)) as u32,
                    }),
                    _ => None,
                };
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, in_flight, r.get(6)?))
            },
        )
        .optional()
        .context(context)?;
    let Some((transaction_id, position, epoch, in_flight, crashes)) = taken else {
        tx.commit().context(context)?;
        return Ok(None);
    };
    // Read in the claim's transaction, so the set matches the epoch.
    let parked = dead_letters::parked_set(&tx, projection, partition, epoch)?;
    tx.commit().context(context)?;
    Ok(Some(Lease {
        projection: projection.to_owned(),
        partition,
        owner: owner.to_owned(),
        checkpoint: Checkpoint { transaction_id: transaction_id.max(0) as u64, position },
        parked,
        in_flight,
        crashes: crashes.clamp(0, i64::from(u32::MAX)) as u32,
    }))
}

fn release(conn: &Connection, lease: &Lease) -> Result<(), StoreError> {
    conn.execute(
        RELEASE_PARTITION,
        params![format_ts(Utc::now()), lease.projection, lease.partition.index, lease.owner],
    )
    .context(|| format!("release {} partition {} held by {}", lease.projection, lease.partition, lease.owner))?;
    Ok(())
}

/// The read-model table a projection is registered with.
pub(crate) fn registered_table(conn: &Connection, projection: &str) -> Result<String, StoreError> {
    conn.prepare_cached(FIND_PROJECTION)
        .and_then(|mut s| s.query_row([projection], |r| r.get(0)).optional())
        .context(|| format!("look up projection {projection}"))?
        .ok_or_else(|| StoreError::UnknownProjection(projection.to_owned()))
}

fn commit(conn: &mut Connection, commit: BatchCommit<'_>) -> Result<(), StoreError> {
    let lease = commit.lease;
    let projection = lease.projection.as_str();
    let partition = lease.partition;
    rules::check_commit(&commit)?;
    rules::check_table(commit.table)?;
    let context = || format!("commit {projection} partition {partition} from {} to {}", commit.from, commit.to);
    let now = Utc::now();
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).context(context)?;
    let updated = tx
        .execute(
            COMMIT_BATCH,
            params![
                tx_id(commit.to)?,
                commit.to.position,
                format_ts(expiry(now, commit.lease_ttl)),
                Status::Running.as_str(),
                i64::try_from(commit.events_applied).unwrap_or(i64::MAX),
                commit.last_event_at.map(|t| format_ts(t.min(max_ts()))),
                format_ts(now),
                projection,
                partition.index,
                lease.owner,
                tx_id(commit.from)?,
                commit.from.position,
                lease.parked.epoch,
                i64::from(!commit.dead_letters.is_empty()),
                commit.table.name,
            ],
        )
        .context(context)?;
    if updated == 0 {
        let found = refused_commit(&tx, projection, partition).context(context)?;
        return Err(rules::diagnose_refused_commit(&commit, found));
    }
    if !commit.dead_letters.is_empty() {
        dead_letters::dead_letter_batch(&tx, projection, &commit.dead_letters)?;
    }
    rows::write_rows(&tx, commit.table, &commit.changes)?;
    crate::keys::record_audit(&tx, &commit.audit)?;
    tx.commit().context(context)?;
    Ok(())
}

/// What the diagnosis of a refused commit reads: the registration and the partition row.
fn refused_commit(conn: &Connection, projection: &str, partition: Partition) -> rusqlite::Result<RefusedCommit> {
    let registered: Option<(String, u32)> =
        conn.prepare_cached(FIND_PROJECTION)?.query_row([projection], |r| Ok((r.get(0)?, r.get(2)?))).optional()?;
    let partition_owner = conn
        .prepare_cached(PARTITION_OWNER)?
        .query_row(params![projection, partition.index], |r| r.get(0))
        .optional()?;
    let (registered_table, registered_partitions) = registered.unzip();
    Ok(RefusedCommit { registered_table, registered_partitions, partition_owner })
}

fn set_status(
    conn: &Connection,
    projection: &str,
    partition: Partition,
    status: Status,
    error: Option<&str>,
) -> Result<(), StoreError> {
    let updated = conn
        .execute(
            SET_STATUS,
            params![
                status.as_str(),
                format_ts(Utc::now()),
                i64::from(status.counts_as_error(error)),
                error,
                projection,
                partition.index,
                i64::from(status.clears_last_error())
            ],
        )
        .context(|| format!("set status of {projection} partition {partition} to {status}"))?;
    if updated == 0 {
        return Err(rules::missing_partition(projection, registered_partitions(conn, projection)?, partition));
    }
    Ok(())
}

struct StateRow {
    state: ProjectionState,
    filter: Option<String>,
}

fn states(conn: &Connection, limit: u32) -> Result<Vec<ProjectionState>, StoreError> {
    let context = || "read projection states".to_owned();
    let bad = |what: String| StoreError::Row { table: "projection_state".to_owned(), reason: what };
    let raw: Vec<(StateRow, [Option<String>; 4])> = conn
        .prepare_cached(PROJECTION_STATES)
        .and_then(|mut s| {
            s.query_map([], |r| {
                let transaction_id: i64 = r.get(3)?;
                Ok((
                    StateRow {
                        state: ProjectionState {
                            projection: r.get(0)?,
                            partition: r.get(1)?,
                            partitions: r.get(2)?,
                            checkpoint: Checkpoint {
                                transaction_id: transaction_id.max(0) as u64,
                                position: r.get(4)?,
                            },
                            last_event_at: None,
                            lag_events: 0,
                            lag_estimated: false,
                            lag_seconds: 0.0,
                            status: Status::Running,
                            events_applied: r.get(8)?,
                            error_count: r.get(9)?,
                            last_error: r.get(10)?,
                            lease_owner: r.get(5)?,
                            lease_expires_at: None,
                            updated_at: DateTime::<Utc>::UNIX_EPOCH,
                            dead_letters: 0,
                            oldest_dead_letter_at: None,
                            parked_aggregates: 0,
                            parked_events: 0,
                        },
                        filter: r.get(13)?,
                    },
                    [r.get(6)?, Some(r.get(7)?), r.get(11)?, Some(r.get(12)?)],
                ))
            })?
            .collect()
        })
        .context(context)?;

    let now = Utc::now();
    let mut out = Vec::with_capacity(raw.len());
    for (row, [lease_expires_at, status, last_event_at, updated_at]) in raw {
        let mut state = row.state;
        let name = format!("{} partition {}", state.projection, state.partition);
        let ts = |s: Option<String>| s.map(|s| parse_ts(&s)).transpose().map_err(|e| bad(format!("{name}: {e}")));
        state.lease_expires_at = ts(lease_expires_at)?;
        state.last_event_at = ts(last_event_at)?;
        state.updated_at = ts(updated_at)?.unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
        let status = status.unwrap_or_default();
        state.status = Status::parse(&status).ok_or_else(|| bad(format!("{name}: unknown status {status:?}")))?;
        let filter: EventFilter = match row.filter {
            None => EventFilter::all(),
            Some(f) => serde_json::from_str(&f).map_err(|e| bad(format!("{name}: stored filter: {e}")))?,
        };
        let partition = Partition { index: state.partition, count: state.partitions };
        let (lag, oldest) = events::lag(conn, state.checkpoint, &filter, partition, limit)?;
        state.lag_events = lag.events;
        state.lag_estimated = lag.estimated;
        state.status = state.status.with_lag(lag.events);
        state.lag_seconds = rules::lag_seconds(now, oldest);
        let failures = dead_letters::partition_failures(conn, &state.projection, partition, state.checkpoint)?;
        state.dead_letters = failures.dead_letters;
        state.oldest_dead_letter_at = failures.oldest_dead_letter_at;
        state.parked_aggregates = failures.parked_aggregates;
        state.parked_events = failures.parked_events;
        out.push(state);
    }
    Ok(out)
}
