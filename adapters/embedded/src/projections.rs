//! Projection bookkeeping (registration, leases, checkpoints, states) and read-model rows.

use std::time::Duration;

use chrono::{DateTime, Utc};
use projector::{
    BatchCommit, Checkpoint, EventFilter, Lease, Merge, Partition, ProjectionState, RowChanges, Status, StoreError,
    TableSchema, Value,
};
use rusqlite::types::Value as SqlValue;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::codec::{format_ts, from_sql, ident, parse_ts, sql_type, to_sql};
use crate::dead_letters;
use crate::error::Context;
use crate::events;

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

/// Creates the read-model table, or adds nullable columns it lacks.
fn ensure_table(conn: &Connection, table: &TableSchema) -> Result<(), StoreError> {
    let context = || format!("create read-model table {}", table.name);
    let existing: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info(?1)")
        .and_then(|mut s| s.query_map([table.name], |r| r.get(0))?.collect())
        .context(context)?;
    if existing.is_empty() {
        let mut sql = format!("CREATE TABLE IF NOT EXISTS {} (", ident(table.name));
        for column in table.all_columns() {
            let not_null = if column.nullable && !table.key.contains(&column) { "" } else { " NOT NULL" };
            sql.push_str(&format!("{} {}{}, ", ident(column.name), sql_type(column.ty), not_null));
        }
        let key: Vec<String> = table.key.iter().map(|c| ident(c.name)).collect();
        sql.push_str(&format!("PRIMARY KEY ({})) WITHOUT ROWID", key.join(", ")));
        conn.execute_batch(&sql).context(context)?;
        return Ok(());
    }
    for column in table.all_columns() {
        if existing.iter().any(|name| name.eq_ignore_ascii_case(column.name)) {
            continue;
        }
        if !column.nullable || table.key.contains(&column) {
            return Err(StoreError::Schema(format!(
                "read-model table {} exists without the non-nullable column {}; drop the table and rebuild \
                 the projection",
                table.name, column.name
            )));
        }
        conn.execute_batch(&format!(
            "ALTER TABLE {} ADD COLUMN {} {}",
            ident(table.name),
            ident(column.name),
            sql_type(column.ty)
        ))
        .context(|| format!("add column {} to read-model table {}", column.name, table.name))?;
    }
    Ok(())
}

pub(crate) fn register(
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

    let other: Option<String> = tx
        .query_row(
            "SELECT name FROM projections WHERE table_name = ?1 AND name <> ?2",
            params![table.name, projection],
            |r| r.get(0),
        )
        .optional()
        .context(context)?;
    if let Some(other) = other {
        return Err(StoreError::InvalidInput(format!(
            "projection {projection}: table {} already belongs to projection {other}",
            table.name
        )));
    }
    ensure_table(&tx, table)?;
    let filter_json = serde_json::to_string(filter)
        .map_err(|e| StoreError::InvalidInput(format!("projection {projection}: filter does not serialize: {e}")))?;
    tx.execute(
        "INSERT INTO projections (name, table_name, filter, partitions) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (name) DO UPDATE SET table_name = excluded.table_name, filter = excluded.filter, \
         partitions = excluded.partitions",
        params![projection, table.name, filter_json, partitions],
    )
    .context(context)?;

    let existing: Vec<(u32, u32, i64, i64)> = tx
        .prepare(
            "SELECT partition, partitions, transaction_id, position FROM projection_state \
             WHERE projection = ?1 ORDER BY partition",
        )
        .and_then(|mut s| s.query_map([projection], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?.collect())
        .context(context)?;
    let insert_sql = "INSERT OR IGNORE INTO projection_state \
         (projection, partition, partitions, transaction_id, position, status, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, 'running', ?6)";
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
        tx.execute("DELETE FROM projection_state WHERE projection = ?1", [projection]).context(context)?;
        (tx0, pos0)
    };
    for index in 0..partitions {
        tx.execute(insert_sql, params![projection, index, partitions, start.0, start.1, now]).context(context)?;
    }
    tx.commit().context(context)?;
    Ok(())
}

fn missing_partition(conn: &Connection, projection: &str, partition: Partition) -> StoreError {
    let partitions: Option<u32> = conn
        .query_row("SELECT partitions FROM projections WHERE name = ?1", [projection], |r| r.get(0))
        .optional()
        .unwrap_or(None);
    match partitions {
        None => StoreError::UnknownProjection(projection.to_owned()),
        Some(n) => StoreError::InvalidInput(format!(
            "projection {projection} has {n} partitions; there is no partition {partition}"
        )),
    }
}

pub(crate) fn claim(
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
        .query_row(
            "SELECT partitions FROM projection_state WHERE projection = ?1 AND partition = ?2",
            params![projection, partition.index],
            |r| r.get(0),
        )
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
            "UPDATE projection_state SET lease_owner = ?1, lease_expires_at = ?2, updated_at = ?3 \
             WHERE projection = ?4 AND partition = ?5 \
             AND (lease_owner IS NULL OR lease_owner = ?1 OR lease_expires_at IS NULL OR lease_expires_at < ?3) \
             RETURNING transaction_id, position, parking_epoch",
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

pub(crate) fn release(conn: &Connection, lease: &Lease) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE projection_state SET lease_owner = NULL, lease_expires_at = NULL, updated_at = ?1 \
         WHERE projection = ?2 AND partition = ?3 AND lease_owner = ?4",
        params![format_ts(Utc::now()), lease.projection, lease.partition.index, lease.owner],
    )
    .context(|| format!("release {} partition {} held by {}", lease.projection, lease.partition, lease.owner))?;
    Ok(())
}

fn key_condition(table: &TableSchema) -> String {
    let parts: Vec<String> = table.key.iter().map(|c| format!("{} = ?", ident(c.name))).collect();
    parts.join(" AND ")
}

fn key_params(table: &TableSchema, key: &[Value]) -> Result<Vec<SqlValue>, StoreError> {
    if key.len() != table.key.len() {
        return Err(StoreError::Row {
            table: table.name.to_owned(),
            reason: format!("a key has {} values, the table has {} key columns", key.len(), table.key.len()),
        });
    }
    table.key.iter().zip(key).map(|(c, v)| to_sql(table, c, v)).collect()
}

pub(crate) fn load_rows(
    conn: &Connection,
    table: &'static TableSchema,
    keys: &[Vec<Value>],
) -> Result<Vec<Vec<Value>>, StoreError> {
    let columns: Vec<projector::Column> = table.all_columns().collect();
    let names: Vec<String> = columns.iter().map(|c| ident(c.name)).collect();
    let sql = format!("SELECT {} FROM {} WHERE {}", names.join(", "), ident(table.name), key_condition(table));
    let context = || format!("load rows from {}", table.name);
    let mut stmt = conn.prepare_cached(&sql).context(context)?;
    let mut out = Vec::new();
    for key in keys {
        let mut rows = stmt.query(rusqlite::params_from_iter(key_params(table, key)?)).context(context)?;
        if let Some(row) = rows.next().context(context)? {
            let mut values = Vec::with_capacity(columns.len());
            for (i, column) in columns.iter().enumerate() {
                values.push(from_sql(table, column, row.get_ref(i).context(context)?)?);
            }
            out.push(values);
        }
    }
    Ok(out)
}

/// Upserts and deletes read-model rows (inside the caller's transaction).
pub(crate) fn write_rows(
    conn: &Connection,
    table: &'static TableSchema,
    changes: &RowChanges,
) -> Result<(), StoreError> {
    let context = || format!("write rows to {}", table.name);
    if !changes.upserts.is_empty() {
        let columns: Vec<projector::Column> = table.all_columns().collect();
        let names: Vec<String> = columns.iter().map(|c| ident(c.name)).collect();
        let key: Vec<String> = table.key.iter().map(|c| ident(c.name)).collect();
        let updates: Vec<String> = columns[table.key.len()..]
            .iter()
            .map(|c| {
                let name = ident(c.name);
                match c.merge {
                    Merge::Add => {
                        format!("{name} = {}.{name} + excluded.{name}", ident(table.name))
                    }
                    Merge::Replace => format!("{name} = excluded.{name}"),
                }
            })
            .collect();
        let on_conflict =
            if updates.is_empty() { "DO NOTHING".to_owned() } else { format!("DO UPDATE SET {}", updates.join(", ")) };
        let sql = format!(
            "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({}) {on_conflict}",
            ident(table.name),
            names.join(", "),
            vec!["?"; names.len()].join(", "),
            key.join(", "),
        );
        let mut stmt = conn.prepare_cached(&sql).context(context)?;
        for row in &changes.upserts {
            if row.len() != columns.len() {
                return Err(StoreError::Row {
                    table: table.name.to_owned(),
                    reason: format!("a row has {} values, the table has {} columns", row.len(), columns.len()),
                });
            }
            let values: Vec<SqlValue> =
                columns.iter().zip(row).map(|(c, v)| to_sql(table, c, v)).collect::<Result<_, _>>()?;
            stmt.execute(rusqlite::params_from_iter(values)).context(context)?;
        }
    }
    if !changes.deletes.is_empty() {
        let sql = format!("DELETE FROM {} WHERE {}", ident(table.name), key_condition(table));
        let mut stmt = conn.prepare_cached(&sql).context(context)?;
        for key in &changes.deletes {
            stmt.execute(rusqlite::params_from_iter(key_params(table, key)?)).context(context)?;
        }
    }
    Ok(())
}

/// Deletes every row, or the rows with these keys.
pub(crate) fn clear_rows(
    conn: &Connection,
    table: &'static TableSchema,
    keys: Option<&[Vec<Value>]>,
) -> Result<(), StoreError> {
    match keys {
        None => {
            conn.execute(&format!("DELETE FROM {}", ident(table.name)), [])
                .context(|| format!("clear rows of {}", table.name))?;
            Ok(())
        }
        Some(keys) => {
            write_rows(conn, table, &RowChanges { upserts: Vec::new(), deletes: keys.to_vec(), inserts_only: false })
        }
    }
}

/// The stored filter and table of a projection.
pub(crate) fn projection_info(conn: &Connection, projection: &str) -> Result<(String, EventFilter), StoreError> {
    let row: Option<(String, String)> = conn
        .prepare_cached("SELECT table_name, filter FROM projections WHERE name = ?1")
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

pub(crate) fn commit(conn: &mut Connection, commit: BatchCommit<'_>) -> Result<(), StoreError> {
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
            "UPDATE projection_state SET transaction_id = ?1, position = ?2, lease_expires_at = ?3, \
             status = ?4, events_applied = events_applied + ?5, last_event_at = COALESCE(?6, last_event_at), \
             updated_at = ?7, parking_epoch = parking_epoch + ?14 \
             WHERE projection = ?8 AND partition = ?9 AND lease_owner = ?10 \
             AND transaction_id = ?11 AND position = ?12 AND parking_epoch = ?13",
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
            .query_row(
                "SELECT lease_owner FROM projection_state WHERE projection = ?1 AND partition = ?2",
                params![projection, partition.index],
                |r| r.get(0),
            )
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
    write_rows(&tx, commit.table, &commit.changes)?;
    tx.commit().context(context)?;
    Ok(())
}

pub(crate) fn set_status(
    conn: &Connection,
    projection: &str,
    partition: Partition,
    status: Status,
    error: Option<&str>,
) -> Result<(), StoreError> {
    let failed = error.is_some() || status == Status::Failed;
    let updated = conn
        .execute(
            "UPDATE projection_state SET status = ?1, updated_at = ?2, \
             error_count = error_count + ?3, last_error = COALESCE(?4, last_error) \
             WHERE projection = ?5 AND partition = ?6",
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
        "UPDATE projection_state SET transaction_id = ?1, position = ?2, status = 'caught-up', \
         events_applied = events_applied + CASE WHEN partition = 0 THEN ?3 ELSE 0 END, \
         last_event_at = COALESCE(?4, last_event_at), updated_at = ?5 \
         WHERE projection = ?6",
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

pub(crate) fn states(conn: &Connection) -> Result<Vec<ProjectionState>, StoreError> {
    let context = || "read projection states".to_owned();
    let bad = |what: String| StoreError::Row { table: "projection_state".to_owned(), reason: what };
    let raw: Vec<(StateRow, [Option<String>; 4])> = conn
        .prepare(
            "SELECT c.projection, c.partition, c.partitions, c.transaction_id, c.position, c.lease_owner, \
             c.lease_expires_at, c.status, c.events_applied, c.error_count, c.last_error, c.last_event_at, \
             c.updated_at, p.filter \
             FROM projection_state c LEFT JOIN projections p ON p.name = c.projection \
             ORDER BY c.projection, c.partition",
        )
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
