//! Appending and reading events: the embedded store's [`EventStore`], and the partition
//! hash as an SQL function for the statements that filter by partition.

use chrono::{DateTime, Utc};
use projector::store::rules::{self, Lag, LagWindow, StoredKey};
use projector::{
    AppendOutcome, AppendRequest, AppendWith, Checkpoint, DomainEvent, EventFilter, EventStore, ExpectedVersion,
    Partition, ReadBound, StoreError,
};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use uuid::Uuid;

use crate::codec::{check_ts_range, decode_event, format_ts, format_uuid, parse_ts};
use crate::error::{sqlite_code, Context};
use crate::EmbeddedStore;

const CURRENT_VERSION: &str = include_str!("../sql/current_version.sql");
const FIND_IDEMPOTENCY_KEY: &str = include_str!("../sql/find_idempotency_key.sql");
const APPEND: &str = include_str!("../sql/append.sql");
const RECORD_IDEMPOTENCY_KEY: &str = include_str!("../sql/record_idempotency_key.sql");
const READ_AGGREGATE: &str = include_str!("../sql/read_aggregate.sql");
const READ_ALL: &str = include_str!("../sql/read_all.sql");
const MEASURE_LAG: &str = include_str!("../sql/measure_lag.sql");

/// The name the statements in `sql/` call [`Partition::bucket`] by.
const BUCKET_FUNCTION: &str = "projector_bucket";

impl EventStore for EmbeddedStore {
    async fn append_with(&self, request: AppendRequest, with: AppendWith) -> Result<AppendOutcome, StoreError> {
        rules::check_append(&request, self.max_payload_bytes())?;
        append(&mut self.lock(), request, with)
    }

    async fn current_version(&self, aggregate_id: Uuid) -> Result<i64, StoreError> {
        current_version(&self.lock(), &format_uuid(&aggregate_id))
            .context(|| format!("read the version of aggregate {aggregate_id}"))
    }

    async fn read_aggregate(&self, aggregate_id: Uuid, bound: ReadBound) -> Result<Vec<DomainEvent>, StoreError> {
        read_aggregate(&self.lock(), aggregate_id, bound)
    }

    async fn read_all(
        &self,
        after: Checkpoint,
        filter: &EventFilter,
        partition: Partition,
        limit: usize,
    ) -> Result<Vec<DomainEvent>, StoreError> {
        read_all(&self.lock(), after, filter, partition, limit)
    }

    fn max_payload_bytes(&self) -> usize {
        EmbeddedStore::max_payload_bytes(self)
    }
}

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
    conn.prepare_cached(CURRENT_VERSION)?.query_row([aggregate_id], |r| r.get(0))
}

fn append(conn: &mut Connection, request: AppendRequest, with: AppendWith) -> Result<AppendOutcome, StoreError> {
    let aggregate = request.aggregate_id;
    for e in &request.events {
        if let Some(t) = e.timestamp {
            check_ts_range(t, &format!("event {} timestamp", e.event_type))?;
        }
    }
    let context = || format!("append to aggregate {aggregate}");
    let aggregate_text = format_uuid(&aggregate);

    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).context(context)?;
    // The store's clock, read inside the write lock so recording order follows position
    // order: when each event is recorded, and its timestamp unless the request gives one.
    let now = Utc::now();
    let recorded_at = format_ts(now);
    let fingerprint = with.fingerprint.clone().unwrap_or_else(|| rules::request_fingerprint(&request));
    if let Some(key) = &request.idempotency_key {
        if let Some(stored) = find_key(&tx, key, aggregate)? {
            return rules::replay_idempotent_print(key, stored, &request, &fingerprint);
        }
    }

    let current = current_version(&tx, &aggregate_text).context(context)?;
    if let ExpectedVersion::Exact(expected) = request.expected_version {
        if expected != current {
            return Err(StoreError::Conflict { aggregate_id: aggregate, expected, actual: current });
        }
    }

    let last_version = rules::last_appended_version(aggregate, current, request.events.len())?;
    let mut outcome = AppendOutcome {
        aggregate_id: aggregate,
        first_version: current + 1,
        last_version,
        event_ids: Vec::with_capacity(request.events.len()),
        positions: Vec::with_capacity(request.events.len()),
        deduplicated: false,
    };
    {
        let mut insert = tx.prepare_cached(APPEND).context(context)?;
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
                    recorded_at,
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
        tx.prepare_cached(RECORD_IDEMPOTENCY_KEY)
            .and_then(|mut s| s.execute(params![key, aggregate_text, fingerprint, stored, format_ts(now)]))
            .context(|| format!("append to aggregate {aggregate}: recording idempotency key {key:?}"))?;
    }
    crate::keys::record_audit(&tx, &with.audit)?;
    tx.commit().context(|| format!("append to aggregate {aggregate}: commit"))?;
    Ok(outcome)
}

/// What idempotency key `key` was stored with, if it was.
fn find_key(conn: &Connection, key: &str, aggregate: Uuid) -> Result<Option<StoredKey>, StoreError> {
    let found: Option<(Option<String>, Option<String>, String)> = conn
        .prepare_cached(FIND_IDEMPOTENCY_KEY)
        .and_then(|mut s| s.query_row([key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).optional())
        .context(|| format!("append to aggregate {aggregate}: looking up idempotency key {key:?}"))?;
    let Some((aggregate_id, fingerprint, outcome)) = found else {
        return Ok(None);
    };
    let bad = |what: String| StoreError::Database(format!("idempotency key {key:?}: {what}"));
    let outcome: AppendOutcome =
        serde_json::from_str(&outcome).map_err(|e| bad(format!("the stored outcome does not decode: {e}")))?;
    // Keys stored before the column was added may name their aggregate only in the outcome.
    let aggregate_id = match aggregate_id {
        Some(text) => Uuid::parse_str(&text).map_err(|e| bad(format!("aggregate {text:?} is not a uuid: {e}")))?,
        None => outcome.aggregate_id,
    };
    Ok(Some(StoredKey { aggregate_id, fingerprint, outcome }))
}

fn collect_events(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    context: impl Fn() -> String,
) -> Result<Vec<DomainEvent>, StoreError> {
    let mut stmt = conn.prepare_cached(sql).context(&context)?;
    let mut rows = stmt.query(params).context(&context)?;
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
    let (after, upto, at) = match bound {
        ReadBound::All => (i64::MIN, i64::MAX, None),
        ReadBound::Versions { after, upto } => (after, upto, None),
        ReadBound::At(at) => (i64::MIN, i64::MAX, Some(format_ts(at))),
        ReadBound::VersionsAt { after, at } => (after, i64::MAX, Some(format_ts(at))),
    };
    collect_events(conn, READ_AGGREGATE, params![format_uuid(&aggregate_id), after, upto, at], || {
        format!("read aggregate {aggregate_id} ({bound:?})")
    })
}

/// The filter as the statements take it: JSON arrays of the event types and aggregate
/// types to read, `None` where the filter reads all.
fn filter_params(filter: &EventFilter) -> (Option<String>, Option<String>) {
    let list = |values: &[String]| (!values.is_empty()).then(|| serde_json::Value::from(values.to_vec()).to_string());
    (list(&filter.event_types), list(&filter.aggregate_types))
}

fn limit_value(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
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
    let (event_types, aggregate_types) = filter_params(filter);
    collect_events(
        conn,
        READ_ALL,
        params![after.position, event_types, aggregate_types, partition.count, partition.index, limit_value(limit)],
        || format!("read events after {after} (partition {partition})"),
    )
}

/// Events at or after position `from` and after `after`, in position order.
pub(crate) fn read_since_position(
    conn: &Connection,
    from: i64,
    filter: &EventFilter,
    after: i64,
    limit: usize,
) -> Result<Vec<DomainEvent>, StoreError> {
    let after = after.max(from.saturating_sub(1));
    read_all(conn, Checkpoint { transaction_id: 0, position: after }, filter, Partition::WHOLE, limit)
}

/// Matching events after a checkpoint: how many (exact within `limit` events read, an
/// estimate beyond, see [`rules::lag_from_window`]), and when the oldest was recorded.
pub(crate) fn lag(
    conn: &Connection,
    after: Checkpoint,
    filter: &EventFilter,
    partition: Partition,
    limit: u32,
) -> Result<(Lag, Option<DateTime<Utc>>), StoreError> {
    if after.transaction_id > 0 {
        return Ok((Lag { events: 0, estimated: false }, None));
    }
    let (event_types, aggregate_types) = filter_params(filter);
    let context = || format!("measure lag after {after} (partition {partition})");
    let window_rows = i64::from(limit) + 1;
    let (window, oldest): (LagWindow, Option<String>) = conn
        .prepare_cached(MEASURE_LAG)
        .and_then(|mut s| {
            s.query_row(
                params![after.position, event_types, aggregate_types, partition.count, partition.index, window_rows],
                |r| {
                    let window = LagWindow {
                        checkpoint_position: after.position,
                        scanned: r.get(0)?,
                        matching: r.get(1)?,
                        last_position: r.get(2)?,
                        head_position: r.get(4)?,
                    };
                    Ok((window, r.get(3)?))
                },
            )
        })
        .context(context)?;
    let oldest = oldest
        .map(|s| parse_ts(&s))
        .transpose()
        .map_err(|reason| StoreError::Database(format!("{}: {reason}", context())))?;
    Ok((rules::lag_from_window(window, limit), oldest))
}
