//! Projection bookkeeping: the embedded store's [`ProjectionStore`] (registration,
//! leases, batch commits, status and states). Read-model rows are `rows`' business, the
//! attempt history and parked sets `dead_letters'`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use projector::{
    BatchCommit, Checkpoint, DomainEvent, EventFilter, FailureRecord, Lease, Partition, ProjectionState,
    ProjectionStore, Status, StoreError, TableSchema, Value,
};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use uuid::Uuid;

use crate::codec::{format_ts, parse_ts};
use crate::error::Context;
use crate::{dead_letters, events, rows, EmbeddedStore};

const FIND_TABLE_OWNER: &str = include_str!("../sql/find_table_owner.sql");
const REGISTER_PROJECTION: &str = include_str!("../sql/register_projection.sql");
const PARTITION_ROWS: &str = include_str!("../sql/partition_rows.sql");
const DELETE_PARTITIONS: &str = include_str!("../sql/delete_partitions.sql");
const INSERT_PARTITION: &str = include_str!("../sql/insert_partition.sql");
const FIND_PROJECTION: &str = include_str!("../sql/find_projection.sql");
const PARTITION_COUNT: &str = include_str!("../sql/partition_count.sql");
const CLAIM_PARTITION: &str = include_str!("../sql/claim_partition.sql");
const RELEASE_PARTITION: &str = include_str!("../sql/release_partition.sql");
const COMMIT_BATCH: &str = include_str!("../sql/commit_batch.sql");
const PARTITION_OWNER: &str = include_str!("../sql/partition_owner.sql");
const SET_STATUS: &str = include_str!("../sql/set_status.sql");
const FINISH_REBUILD: &str = include_str!("../sql/finish_rebuild.sql");
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
        states(&self.lock())
    }
}

/// Tables of the store itself; a read model may not use these names.
const RESERVED_TABLES: &[&str] = &[
    "events",
    "idempotency_keys",
    "projections",
    "projection_state",
    "schema_migrations",
    "event_failures",
    "dead_letters",
    "parked_aggregates",
    "dead_letter_actions",
];

fn tx_id(checkpoint: Checkpoint) -> Result<i64, StoreError> {
    i64::try_from(checkpoint.transaction_id)
        .map_err(|_| StoreError::InvalidInput(format!("checkpoint {checkpoint}: transaction id out of range")))
}

fn expiry(now: DateTime<Utc>, ttl: Duration) -> DateTime<Utc> {
    let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::days(36_500));
    now.checked_add_signed(ttl).unwrap_or(DateTime::<Utc>::MAX_UTC).min(max_ts())
}

/// The latest instant whose text form still sorts (year 9999).
fn max_ts() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("9999-12-31T23:59:59.999999Z").map_or(DateTime::<Utc>::MAX_UTC, |t| t.to_utc())
}

fn validate_schema(table: &TableSchema) -> Result<(), StoreError> {
    let bad = |reason: String| StoreError::InvalidInput(format!("read-model table {:?}: {reason}", table.name));
    if table.name.is_empty() {
        return Err(bad("the table name is empty".into()));
    }
    if RESERVED_TABLES.contains(&table.name) || table.name.to_ascii_lowercase().starts_with("sqlite_") {
        return Err(bad("the name is reserved for the store's own tables".into()));
    }
    if table.key.is_empty() {
        return Err(bad("the table has no key columns".into()));
    }
    let mut seen = std::collections::HashSet::new();
    for column in table.all_columns() {
        if column.name.is_empty() {
            return Err(bad("a column has an empty name".into()));
        }
        if !seen.insert(column.name.to_ascii_lowercase()) {
            return Err(bad(format!("column {:?} appears twice", column.name)));
        }
    }
    Ok(())
}

fn register(
    conn: &mut Connection,
    projection: &str,
    table: &'static TableSchema,
    filter: &EventFilter,
    partitions: u32,
) -> Result<(), StoreError> {
    if projection.is_empty() {
        return Err(StoreError::InvalidInput("a projection needs a name".into()));
    }
    if partitions == 0 {
        return Err(StoreError::InvalidInput(format!("projection {projection}: partitions must be at least 1")));
    }
    validate_schema(table)?;
    let context = || format!("register projection {projection}");
    let now = format_ts(Utc::now());
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).context(context)?;

    let other: Option<String> =
        tx.query_row(FIND_TABLE_OWNER, params![table.name, projection], |r| r.get(0)).optional().context(context)?;
    if let Some(other) = other {
        return Err(StoreError::InvalidInput(format!(
            "projection {projection}: table {} already belongs to projection {other}",
            table.name
        )));
    }
    rows::ensure_table(&tx, table)?;
    let filter_json = serde_json::to_string(filter)
        .map_err(|e| StoreError::InvalidInput(format!("projection {projection}: filter does not serialize: {e}")))?;
    tx.execute(REGISTER_PROJECTION, params![projection, table.name, filter_json, partitions]).context(context)?;

    let existing: Vec<(u32, u32, i64, i64)> = tx
        .prepare_cached(PARTITION_ROWS)
        .and_then(|mut s| s.query_map([projection], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?.collect())
        .context(context)?;
    let same_count = existing.iter().all(|(index, count, _, _)| *count == partitions && *index < partitions);
    let start = if same_count {
        (0, 0)
    } else {
        let (_, old, tx0, pos0) = existing[0];
        if existing.iter().any(|(_, _, t, p)| (*t, *p) != (tx0, pos0)) {
            let at: Vec<String> = existing.iter().map(|(i, _, t, p)| format!("{i}: {t}/{p}")).collect();
            return Err(StoreError::InvalidInput(format!(
                "projection {projection}: rescaling from {old} to {partitions} partitions needs every partition \
                 at the same checkpoint, but they are at {}; rebuild the projection (which aligns them) and \
                 register it again",
                at.join(", ")
            )));
        }
        tx.execute(DELETE_PARTITIONS, [projection]).context(context)?;
        (tx0, pos0)
    };
    for index in 0..partitions {
        tx.execute(INSERT_PARTITION, params![projection, index, partitions, start.0, start.1, now]).context(context)?;
    }
    tx.commit().context(context)?;
    Ok(())
}

fn missing_partition(conn: &Connection, projection: &str, partition: Partition) -> StoreError {
    let partitions: Option<u32> =
        conn.query_row(FIND_PROJECTION, [projection], |r| r.get(2)).optional().unwrap_or(None);
    match partitions {
        None => StoreError::UnknownProjection(projection.to_owned()),
        Some(n) => StoreError::InvalidInput(format!(
            "projection {projection} has {n} partitions; there is no partition {partition}"
        )),
    }
}

fn claim(
    conn: &mut Connection,
    projection: &str,
    partition: Partition,
    owner: &str,
    ttl: Duration,
) -> Result<Option<Lease>, StoreError> {
    if owner.is_empty() {
        return Err(StoreError::InvalidInput(format!("claim {projection} partition {partition}: empty owner")));
    }
    let context = || format!("claim {projection} partition {partition} for {owner}");
    let now = Utc::now();
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).context(context)?;
    let partitions: Option<u32> = tx
        .query_row(PARTITION_COUNT, params![projection, partition.index], |r| r.get(0))
        .optional()
        .context(context)?;
    match partitions {
        None => return Err(missing_partition(&tx, projection, partition)),
        Some(n) if n != partition.count => {
            return Err(StoreError::InvalidInput(format!(
                "projection {projection} has {n} partitions; cannot claim partition {partition}"
            )))
        }
        Some(_) => {}
    }
    let taken: Option<(i64, i64, i64)> = tx
        .query_row(
            CLAIM_PARTITION,
            params![owner, format_ts(expiry(now, ttl)), format_ts(now), projection, partition.index],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()
        .context(context)?;
    let Some((transaction_id, position, epoch)) = taken else {
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

/// The stored filter and table of a projection.
pub(crate) fn projection_info(conn: &Connection, projection: &str) -> Result<(String, EventFilter), StoreError> {
    let row: Option<(String, String)> = conn
        .prepare_cached(FIND_PROJECTION)
        .and_then(|mut s| s.query_row([projection], |r| Ok((r.get(0)?, r.get(1)?))).optional())
        .context(|| format!("look up projection {projection}"))?;
    let Some((table, filter)) = row else {
        return Err(StoreError::UnknownProjection(projection.to_owned()));
    };
    let filter = serde_json::from_str(&filter).map_err(|e| {
        StoreError::Database(format!("projection {projection}: the stored filter does not decode: {e}"))
    })?;
    Ok((table, filter))
}

fn commit(conn: &mut Connection, commit: BatchCommit<'_>) -> Result<(), StoreError> {
    let lease = commit.lease;
    let projection = lease.projection.as_str();
    let partition = lease.partition;
    if commit.to < commit.from {
        return Err(StoreError::InvalidInput(format!(
            "commit {projection} partition {partition}: checkpoint would move back from {} to {}",
            commit.from, commit.to
        )));
    }
    let context = || format!("commit {projection} partition {partition} from {} to {}", commit.from, commit.to);
    let now = Utc::now();
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).context(context)?;
    let (table_name, _) = projection_info(&tx, projection)?;
    if table_name != commit.table.name {
        return Err(StoreError::InvalidInput(format!(
            "commit {projection}: the projection writes table {table_name}, not {}",
            commit.table.name
        )));
    }
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
            ],
        )
        .context(context)?;
    if updated == 0 {
        let current: Option<Option<String>> = tx
            .query_row(PARTITION_OWNER, params![projection, partition.index], |r| r.get(0))
            .optional()
            .context(context)?;
        return Err(match current {
            None => missing_partition(&tx, projection, partition),
            Some(owner) if owner.as_deref() != Some(lease.owner.as_str()) => StoreError::LeaseLost {
                projection: projection.to_owned(),
                partition: partition.index,
                owner: owner.unwrap_or_else(|| "nobody".to_owned()),
            },
            Some(_) => StoreError::CheckpointMoved { projection: projection.to_owned(), partition: partition.index },
        });
    }
    if !commit.dead_letters.is_empty() {
        dead_letters::dead_letter_batch(&tx, projection, &commit.dead_letters)?;
    }
    rows::write_rows(&tx, commit.table, &commit.changes)?;
    tx.commit().context(context)?;
    Ok(())
}

fn set_status(
    conn: &Connection,
    projection: &str,
    partition: Partition,
    status: Status,
    error: Option<&str>,
) -> Result<(), StoreError> {
    let failed = error.is_some() || status == Status::Failed;
    let updated = conn
        .execute(
            SET_STATUS,
            params![status.as_str(), format_ts(Utc::now()), i64::from(failed), error, projection, partition.index],
        )
        .context(|| format!("set status of {projection} partition {partition} to {status}"))?;
    if updated == 0 {
        return Err(missing_partition(conn, projection, partition));
    }
    Ok(())
}

/// Marks every partition of a projection caught up at `to` (the end of a rebuild).
pub(crate) fn finish_rebuild(
    conn: &Connection,
    projection: &str,
    to: Checkpoint,
    events_applied: u64,
    last_event_at: Option<DateTime<Utc>>,
) -> Result<(), StoreError> {
    conn.execute(
        FINISH_REBUILD,
        params![
            tx_id(to)?,
            to.position,
            i64::try_from(events_applied).unwrap_or(i64::MAX),
            last_event_at.map(|t| format_ts(t.min(max_ts()))),
            format_ts(Utc::now()),
            projection,
        ],
    )
    .context(|| format!("finish the rebuild of {projection} at {to}"))?;
    Ok(())
}

struct StateRow {
    state: ProjectionState,
    filter: Option<String>,
}

fn states(conn: &Connection) -> Result<Vec<ProjectionState>, StoreError> {
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
        let (lag_events, oldest) = events::lag(conn, state.checkpoint, &filter, partition)?;
        state.lag_events = lag_events;
        // Running and caught up differ only by lag, which changes with every append.
        if matches!(state.status, Status::Running | Status::CaughtUp) {
            state.status = if lag_events == 0 { Status::CaughtUp } else { Status::Running };
        }
        state.lag_seconds =
            oldest.map_or(0.0, |t| ((now - t).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6).max(0.0));
        let failures = dead_letters::partition_failures(conn, &state.projection, partition, state.checkpoint)?;
        state.dead_letters = failures.dead_letters;
        state.oldest_dead_letter_at = failures.oldest_dead_letter_at;
        state.parked_aggregates = failures.parked_aggregates;
        state.parked_events = failures.parked_events;
        out.push(state);
    }
    Ok(out)
}
