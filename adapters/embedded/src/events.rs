//! Appending and reading events.

use chrono::{DateTime, Utc};
use projector::{
    AppendOutcome, AppendRequest, Checkpoint, DomainEvent, EventFilter, ExpectedVersion, Partition, ReadBound,
    StoreError,
};
use rusqlite::types::Value as SqlValue;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use uuid::Uuid;

use crate::codec::{check_ts_range, decode_event, format_ts, format_uuid, parse_ts, EVENT_COLUMNS};
use crate::error::{sqlite_code, Context};

/// The SQL function computing [`Partition::bucket`] of a hyphenated uuid text.
pub(crate) const BUCKET_FUNCTION: &str = "projector_bucket";

/// Registers [`BUCKET_FUNCTION`] on a connection. Text that is not a uuid lands in
/// bucket 0, so a damaged row is reported (as `Corrupt`) by partition 0's reader instead
/// of silently belonging to nobody.
pub(crate) fn register_functions(conn: &Connection) -> rusqlite::Result<()> {
    use rusqlite::functions::FunctionFlags;
    use rusqlite::types::ValueRef;
    conn.create_scalar_function(
        BUCKET_FUNCTION,
        2,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| {
            let count = u32::try_from(ctx.get::<i64>(1)?).unwrap_or(1);
            let bucket = match ctx.get_raw(0) {
                ValueRef::Text(t) => std::str::from_utf8(t)
                    .ok()
                    .and_then(|s| Uuid::parse_str(s).ok())
                    .map_or(0, |id| Partition::bucket(&id, count)),
                _ => 0,
            };
            Ok(i64::from(bucket))
        },
    )
}

/// The current (highest) version of an aggregate, 0 when it has no events.
fn current_version(conn: &Connection, aggregate_id: &str) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT COALESCE(MAX(version), 0) FROM events WHERE aggregate_id = ?1")?
        .query_row([aggregate_id], |r| r.get(0))
}

pub(crate) fn append(conn: &mut Connection, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
    let aggregate = request.aggregate_id;
    if request.events.is_empty() {
        return Err(StoreError::InvalidInput(format!("append to aggregate {aggregate}: no events given")));
    }
    if let ExpectedVersion::Exact(v) = request.expected_version {
        if v < 0 {
            return Err(StoreError::InvalidInput(format!(
                "append to aggregate {aggregate}: expected version {v} is negative"
            )));
        }
    }
    let now = Utc::now();
    for e in &request.events {
        if let Some(t) = e.timestamp {
            check_ts_range(t, &format!("event {} timestamp", e.event_type))?;
        }
    }
    let context = || format!("append to aggregate {aggregate}");
    let aggregate_text = format_uuid(&aggregate);

    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).context(context)?;
    if let Some(key) = &request.idempotency_key {
        let stored: Option<String> = tx
            .prepare_cached("SELECT outcome FROM idempotency_keys WHERE key = ?1")
            .and_then(|mut s| s.query_row([key], |r| r.get(0)).optional())
            .context(|| format!("append to aggregate {aggregate}: looking up idempotency key {key:?}"))?;
        if let Some(stored) = stored {
            let mut outcome: AppendOutcome = serde_json::from_str(&stored).map_err(|e| {
                StoreError::Database(format!("idempotency key {key:?}: the stored outcome does not decode: {e}"))
            })?;
            outcome.deduplicated = true;
            return Ok(outcome);
        }
    }

    let current = current_version(&tx, &aggregate_text).context(context)?;
    if let ExpectedVersion::Exact(expected) = request.expected_version {
        if expected != current {
            return Err(StoreError::Conflict { aggregate_id: aggregate, expected, actual: current });
        }
    }

    let mut outcome = AppendOutcome {
        aggregate_id: aggregate,
        first_version: current + 1,
        last_version: current + request.events.len() as i64,
        event_ids: Vec::with_capacity(request.events.len()),
        positions: Vec::with_capacity(request.events.len()),
        deduplicated: false,
    };
    {
        let mut insert = tx
            .prepare_cached(
                "INSERT INTO events (transaction_id, event_id, aggregate_id, aggregate_type, event_type, \
                 event_data, metadata, version, timestamp, encrypted_fields) \
                 VALUES (0, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) RETURNING position",
            )
            .context(context)?;
        for (i, event) in request.events.iter().enumerate() {
            let version = current + 1 + i as i64;
            let event_id = event.event_id.unwrap_or_else(Uuid::new_v4);
            let metadata = serde_json::to_string(&event.metadata)
                .map_err(|e| StoreError::InvalidInput(format!("event {event_id}: metadata does not serialize: {e}")))?;
            let encrypted = serde_json::to_string(&event.encrypted_fields).map_err(|e| {
                StoreError::InvalidInput(format!("event {event_id}: encrypted_fields do not serialize: {e}"))
            })?;
            let inserted = insert.query_row(
                params![
                    format_uuid(&event_id),
                    aggregate_text,
                    request.aggregate_type,
                    event.event_type,
                    event.event_data.to_string(),
                    metadata,
                    version,
                    format_ts(event.timestamp.unwrap_or(now)),
                    encrypted,
                ],
                |r| r.get::<_, i64>(0),
            );
            match inserted {
                Ok(position) => {
                    outcome.event_ids.push(event_id);
                    outcome.positions.push(position);
                }
                Err(e) if sqlite_code(&e) == Some(rusqlite::ErrorCode::ConstraintViolation) => {
                    let message = e.to_string();
                    if message.contains("events.aggregate_id") {
                        drop(insert);
                        drop(tx);
                        let actual = current_version(conn, &aggregate_text).context(context)?;
                        return Err(StoreError::Conflict {
                            aggregate_id: aggregate,
                            expected: match request.expected_version {
                                ExpectedVersion::Exact(v) => v,
                                ExpectedVersion::Any => current,
                            },
                            actual,
                        });
                    }
                    if message.contains("events.event_id") {
                        return Err(StoreError::InvalidInput(format!(
                            "append to aggregate {aggregate}: event id {event_id} is already in the store"
                        )));
                    }
                    return Err(crate::error::db_error(context(), e));
                }
                Err(e) => return Err(crate::error::db_error(context(), e)),
            }
        }
    }
    if let Some(key) = &request.idempotency_key {
        let stored = serde_json::to_string(&outcome)
            .map_err(|e| StoreError::Database(format!("append outcome does not serialize: {e}")))?;
        tx.prepare_cached("INSERT INTO idempotency_keys (key, outcome, created_at) VALUES (?1, ?2, ?3)")
            .and_then(|mut s| s.execute(params![key, stored, format_ts(now)]))
            .context(|| format!("append to aggregate {aggregate}: recording idempotency key {key:?}"))?;
    }
    tx.commit().context(|| format!("append to aggregate {aggregate}: commit"))?;
    Ok(outcome)
}

fn collect_events(
    conn: &Connection,
    sql: &str,
    params: Vec<SqlValue>,
    context: impl Fn() -> String,
) -> Result<Vec<DomainEvent>, StoreError> {
    let mut stmt = conn.prepare_cached(sql).context(&context)?;
    let mut rows = stmt.query(rusqlite::params_from_iter(params)).context(&context)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().context(&context)? {
        out.push(decode_event(row)?);
    }
    Ok(out)
}

pub(crate) fn read_aggregate(
    conn: &Connection,
    aggregate_id: Uuid,
    bound: ReadBound,
) -> Result<Vec<DomainEvent>, StoreError> {
    let mut sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE aggregate_id = ?");
    let mut params = vec![SqlValue::Text(format_uuid(&aggregate_id))];
    match bound {
        ReadBound::All => {}
        ReadBound::Versions { after, upto } => {
            sql.push_str(" AND version > ? AND version <= ?");
            params.push(SqlValue::Integer(after));
            params.push(SqlValue::Integer(upto));
        }
        ReadBound::At(at) => {
            sql.push_str(" AND timestamp <= ?");
            params.push(SqlValue::Text(format_ts(at)));
        }
    }
    sql.push_str(" ORDER BY version");
    collect_events(conn, &sql, params, || format!("read aggregate {aggregate_id} ({bound:?})"))
}

/// Appends ` AND ...` conditions for a filter and a partition.
fn push_filter(sql: &mut String, params: &mut Vec<SqlValue>, filter: &EventFilter, partition: Partition) {
    fn any_of(sql: &mut String, params: &mut Vec<SqlValue>, column: &str, values: &[String]) {
        if values.is_empty() {
            return;
        }
        sql.push_str(" AND ");
        sql.push_str(column);
        sql.push_str(" IN (");
        for (i, v) in values.iter().enumerate() {
            sql.push_str(if i == 0 { "?" } else { ", ?" });
            params.push(SqlValue::Text(v.clone()));
        }
        sql.push(')');
    }
    any_of(sql, params, "event_type", &filter.event_types);
    any_of(sql, params, "aggregate_type", &filter.aggregate_types);
    if partition.count > 1 {
        sql.push_str(&format!(" AND {BUCKET_FUNCTION}(aggregate_id, ?) = ?"));
        params.push(SqlValue::Integer(i64::from(partition.count)));
        params.push(SqlValue::Integer(i64::from(partition.index)));
    }
}

fn limit_value(limit: usize) -> SqlValue {
    SqlValue::Integer(i64::try_from(limit).unwrap_or(i64::MAX))
}

/// Events after `after` in commit order. Every event here has transaction id 0, so a
/// checkpoint with a larger transaction id is after all of them.
pub(crate) fn read_all(
    conn: &Connection,
    after: Checkpoint,
    filter: &EventFilter,
    partition: Partition,
    limit: usize,
) -> Result<Vec<DomainEvent>, StoreError> {
    if after.transaction_id > 0 || limit == 0 {
        return Ok(Vec::new());
    }
    let mut sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE position > ?");
    let mut params = vec![SqlValue::Integer(after.position)];
    push_filter(&mut sql, &mut params, filter, partition);
    sql.push_str(" ORDER BY position LIMIT ?");
    params.push(limit_value(limit));
    collect_events(conn, &sql, params, || format!("read events after {after} (partition {partition})"))
}

pub(crate) fn read_since_position(
    conn: &Connection,
    from: i64,
    filter: &EventFilter,
    after: i64,
    limit: usize,
) -> Result<Vec<DomainEvent>, StoreError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let mut sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE position >= ? AND position > ?");
    let mut params = vec![SqlValue::Integer(from), SqlValue::Integer(after)];
    push_filter(&mut sql, &mut params, filter, Partition::WHOLE);
    sql.push_str(" ORDER BY position LIMIT ?");
    params.push(limit_value(limit));
    collect_events(conn, &sql, params, || format!("read events since position {from} after {after}"))
}

/// Matching events after a checkpoint: how many, and the earliest timestamp among them.
pub(crate) fn lag(
    conn: &Connection,
    after: Checkpoint,
    filter: &EventFilter,
    partition: Partition,
) -> Result<(i64, Option<DateTime<Utc>>), StoreError> {
    if after.transaction_id > 0 {
        return Ok((0, None));
    }
    let mut sql = "SELECT COUNT(*), MIN(timestamp) FROM events WHERE position > ?".to_owned();
    let mut params = vec![SqlValue::Integer(after.position)];
    push_filter(&mut sql, &mut params, filter, partition);
    let context = || format!("measure lag after {after} (partition {partition})");
    let (count, oldest): (i64, Option<String>) = conn
        .prepare_cached(&sql)
        .and_then(|mut s| s.query_row(rusqlite::params_from_iter(params), |r| Ok((r.get(0)?, r.get(1)?))))
        .context(context)?;
    let oldest = oldest
        .map(|s| parse_ts(&s))
        .transpose()
        .map_err(|reason| StoreError::Database(format!("{}: {reason}", context())))?;
    Ok((count, oldest))
}
