//! Dead letters on SQLite: the embedded store's [`DeadLetterQueue`], the attempt history,
//! the letters a batch commit parks, and the parked set and counts a runner reads.

use chrono::{DateTime, Utc};
use projector::{
    Checkpoint, DeadLetter, DeadLetterFilter, DeadLetterQueue, DeadLetterStatus, DomainEvent, FailureRecord,
    OperatorAction, Parked, ParkedSet, Partition, StoreError,
};
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};
use uuid::Uuid;

use crate::codec::{format_ts, format_uuid, parse_ts};
use crate::error::Context;
use crate::EmbeddedStore;

const RECORD_FAILURE: &str = include_str!("../sql/record_failure.sql");
const CLEAR_FAILURE: &str = include_str!("../sql/clear_failure.sql");
const SEND_DEAD_LETTERS: &str = include_str!("../sql/send_dead_letters.sql");
const PROJECTION_EXISTS: &str = include_str!("../sql/projection_exists.sql");
const PARK_AGGREGATE: &str = include_str!("../sql/park_aggregate.sql");
const PARKED_AGGREGATES: &str = include_str!("../sql/parked_aggregates.sql");
const PARTITION_DEAD_LETTERS: &str = include_str!("../sql/partition_dead_letters.sql");
const PARTITION_PARKED: &str = include_str!("../sql/partition_parked.sql");
const RECORD_DEAD_LETTER_ACTION: &str = include_str!("../sql/record_dead_letter_action.sql");
const SET_DEAD_LETTER_STATUS: &str = include_str!("../sql/set_dead_letter_status.sql");
const LIST_DEAD_LETTERS: &str = include_str!("../sql/list_dead_letters.sql");
const GET_DEAD_LETTER: &str = include_str!("../sql/get_dead_letter.sql");
const DEAD_LETTER_ACTIONS: &str = include_str!("../sql/dead_letter_actions.sql");

impl DeadLetterQueue for EmbeddedStore {
    /// Stores the letters in one transaction; ids come back in the order of `letters`.
    async fn send(&self, letters: &[DeadLetter]) -> Result<Vec<i64>, StoreError> {
        send(&mut self.lock(), letters)
    }

    async fn list(&self, filter: &DeadLetterFilter) -> Result<Vec<DeadLetter>, StoreError> {
        list(&self.lock(), filter)
    }

    async fn get(&self, id: i64) -> Result<Option<DeadLetter>, StoreError> {
        letter(&self.lock(), id, None)
    }

    async fn resolve(&self, id: i64, status: DeadLetterStatus, action: &OperatorAction) -> Result<(), StoreError> {
        resolve(&mut self.lock(), id, status, action)
    }

    async fn actions(&self, id: i64) -> Result<Vec<OperatorAction>, StoreError> {
        actions(&self.lock(), id)
    }
}

/// Decodes a `dead_letters` row selected with the columns of `sql/get_dead_letter.sql`,
/// in that order.
fn decode_letter(row: &Row<'_>) -> Result<DeadLetter, StoreError> {
    let id: i64 = row.get(0).map_err(|e| StoreError::Database(format!("dead letter row: column id: {e}")))?;
    let bad = |what: String| StoreError::Database(format!("dead letter {id}: {what}"));
    let text = |i: usize, name: &str| -> Result<String, StoreError> {
        row.get::<_, String>(i).map_err(|e| bad(format!("column {name}: {e}")))
    };
    let integer = |i: usize, name: &str| -> Result<i64, StoreError> {
        row.get::<_, i64>(i).map_err(|e| bad(format!("column {name}: {e}")))
    };
    let uuid = |i: usize, name: &str| -> Result<Uuid, StoreError> {
        let s = text(i, name)?;
        Uuid::parse_str(&s).map_err(|e| bad(format!("{name} {s:?} is not a uuid: {e}")))
    };
    let ts = |i: usize, name: &str| -> Result<DateTime<Utc>, StoreError> {
        parse_ts(&text(i, name)?).map_err(|e| bad(format!("{name}: {e}")))
    };
    let transaction_id = integer(4, "transaction_id")?;
    let attempts = integer(11, "attempts")?;
    let status = text(14, "status")?;
    Ok(DeadLetter {
        id,
        projection: text(1, "projection")?,
        event_id: uuid(2, "event_id")?,
        position: integer(3, "position")?,
        transaction_id: u64::try_from(transaction_id)
            .map_err(|_| bad(format!("transaction_id {transaction_id} is negative")))?,
        aggregate_id: uuid(5, "aggregate_id")?,
        aggregate_type: text(6, "aggregate_type")?,
        event_type: text(7, "event_type")?,
        version: integer(8, "version")?,
        error: text(9, "error")?,
        error_class: text(10, "error_class")?,
        attempts: u32::try_from(attempts).map_err(|_| bad(format!("attempts {attempts} is out of range")))?,
        first_failed_at: ts(12, "first_failed_at")?,
        last_failed_at: ts(13, "last_failed_at")?,
        status: DeadLetterStatus::parse(&status).ok_or_else(|| bad(format!("unknown status {status:?}")))?,
    })
}

fn query_letters(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    context: impl Fn() -> String,
) -> Result<Vec<DeadLetter>, StoreError> {
    let mut stmt = conn.prepare_cached(sql).context(&context)?;
    let mut rows = stmt.query(params).context(&context)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().context(&context)? {
        out.push(decode_letter(row)?);
    }
    Ok(out)
}

pub(crate) fn decode_parked(
    projection: &str,
    (aggregate_id, from_version, dead_letter_id): (String, i64, i64),
) -> Result<Parked, StoreError> {
    let aggregate_id = Uuid::parse_str(&aggregate_id).map_err(|e| {
        StoreError::Database(format!("parked aggregate {aggregate_id:?} of {projection} is not a uuid: {e}"))
    })?;
    Ok(Parked { aggregate_id, from_version, dead_letter_id })
}

fn checkpoint_params(checkpoint: Checkpoint) -> (i64, i64) {
    (i64::try_from(checkpoint.transaction_id).unwrap_or(i64::MAX), checkpoint.position)
}

/// Forgets the failed attempts of an event.
pub(crate) fn clear_failure(conn: &Connection, projection: &str, event_id: uuid::Uuid) -> Result<(), StoreError> {
    conn.prepare_cached(CLEAR_FAILURE)
        .and_then(|mut s| s.execute(params![projection, format_uuid(&event_id)]))
        .context(|| format!("forget the failed attempts of event {event_id} for {projection}"))?;
    Ok(())
}

/// Counts one more failed attempt of `event` for `projection`.
pub(crate) fn record_failure(
    conn: &Connection,
    projection: &str,
    event: &DomainEvent,
    error: &str,
) -> Result<FailureRecord, StoreError> {
    let context = || format!("record a failed attempt of event {} for {projection}", event.event_id);
    let (attempts, first, last): (i64, String, String) = conn
        .prepare_cached(RECORD_FAILURE)
        .and_then(|mut s| {
            s.query_row(params![projection, format_uuid(&event.event_id), format_ts(Utc::now()), error], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
        })
        .context(context)?;
    let time = |text: &str| parse_ts(text).map_err(|e| StoreError::Database(format!("{}: {e}", context())));
    Ok(FailureRecord {
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        first_failed_at: time(&first)?,
        last_failed_at: time(&last)?,
    })
}

/// Stores one letter for `projection` (idempotent per event: a stored letter is reopened
/// and updated); the failure times come from the attempt history. Returns its id.
fn insert_letter(conn: &Connection, projection: &str, letter: &DeadLetter, now: &str) -> Result<i64, StoreError> {
    let context = || format!("store the dead letter of event {} for {projection}", letter.event_id);
    let transaction_id = i64::try_from(letter.transaction_id).map_err(|_| {
        StoreError::InvalidInput(format!("{}: transaction id {} is out of range", context(), letter.transaction_id))
    })?;
    conn.prepare_cached(SEND_DEAD_LETTERS)
        .and_then(|mut s| {
            s.query_row(
                params![
                    projection,
                    format_uuid(&letter.event_id),
                    letter.position,
                    transaction_id,
                    format_uuid(&letter.aggregate_id),
                    letter.aggregate_type,
                    letter.event_type,
                    letter.version,
                    letter.error,
                    letter.error_class,
                    i64::from(letter.attempts),
                    now,
                ],
                |r| r.get(0),
            )
        })
        .context(context)
}

fn ensure_projection(conn: &Connection, projection: &str) -> Result<(), StoreError> {
    let found: Option<i64> = conn
        .prepare_cached(PROJECTION_EXISTS)
        .and_then(|mut s| s.query_row([projection], |r| r.get(0)).optional())
        .context(|| format!("look up projection {projection}"))?;
    match found {
        Some(_) => Ok(()),
        None => Err(StoreError::UnknownProjection(projection.to_owned())),
    }
}

/// Stores letters, each for its own projection; ids in the order of `letters`.
pub(crate) fn send_letters(conn: &Connection, letters: &[DeadLetter]) -> Result<Vec<i64>, StoreError> {
    let now = format_ts(Utc::now());
    let mut ids = Vec::with_capacity(letters.len());
    for letter in letters {
        ensure_projection(conn, &letter.projection)?;
        ids.push(insert_letter(conn, &letter.projection, letter, &now)?);
    }
    Ok(ids)
}

/// Parks an aggregate from `from_version` on; an existing parking keeps the lower version.
fn park(
    conn: &Connection,
    projection: &str,
    aggregate_id: &Uuid,
    from_version: i64,
    dead_letter_id: i64,
    now: &str,
) -> Result<(), StoreError> {
    conn.prepare_cached(PARK_AGGREGATE)
        .and_then(|mut s| s.execute(params![projection, format_uuid(aggregate_id), from_version, dead_letter_id, now]))
        .context(|| format!("park aggregate {aggregate_id} of {projection} from version {from_version}"))?;
    Ok(())
}

/// A batch commit's letters: stores each for `projection` and parks its aggregate from its
/// version (the lowest version wins). Inside the commit's transaction.
pub(crate) fn dead_letter_batch(conn: &Connection, projection: &str, letters: &[DeadLetter]) -> Result<(), StoreError> {
    let now = format_ts(Utc::now());
    for letter in letters {
        let id = insert_letter(conn, projection, letter, &now)?;
        park(conn, projection, &letter.aggregate_id, letter.version, id, &now)?;
    }
    Ok(())
}

/// The parked aggregates of a projection that fall in `partition`.
pub(crate) fn parked_set(
    conn: &Connection,
    projection: &str,
    partition: Partition,
    epoch: i64,
) -> Result<ParkedSet, StoreError> {
    let context = || format!("read the parked aggregates of {projection} partition {partition}");
    let rows: Vec<(String, i64, i64)> = conn
        .prepare_cached(PARKED_AGGREGATES)
        .and_then(|mut s| s.query_map([projection], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect())
        .context(context)?;
    let mut parked = Vec::with_capacity(rows.len());
    for row in rows {
        let row = decode_parked(projection, row)?;
        if partition.owns(&row.aggregate_id) {
            parked.push(row);
        }
    }
    Ok(ParkedSet::from_rows(epoch, parked))
}

/// Dead letters and parked aggregates of one partition, as `states()` reports them.
#[derive(Debug, Default)]
pub(crate) struct PartitionFailures {
    pub dead_letters: i64,
    pub oldest_dead_letter_at: Option<DateTime<Utc>>,
    pub parked_aggregates: i64,
    pub parked_events: i64,
}

pub(crate) fn partition_failures(
    conn: &Connection,
    projection: &str,
    partition: Partition,
    checkpoint: Checkpoint,
) -> Result<PartitionFailures, StoreError> {
    let context = || format!("count the dead letters of {projection} partition {partition}");
    let count = i64::from(partition.count);
    let index = i64::from(partition.index);
    let (dead_letters, oldest): (i64, Option<String>) = conn
        .prepare_cached(PARTITION_DEAD_LETTERS)
        .and_then(|mut s| s.query_row(params![projection, count, index], |r| Ok((r.get(0)?, r.get(1)?))))
        .context(context)?;
    let (tx, position) = checkpoint_params(checkpoint);
    let (parked_aggregates, parked_events): (i64, i64) = conn
        .prepare_cached(PARTITION_PARKED)
        .and_then(|mut s| s.query_row(params![projection, count, index, tx, position], |r| Ok((r.get(0)?, r.get(1)?))))
        .context(context)?;
    Ok(PartitionFailures {
        dead_letters,
        oldest_dead_letter_at: oldest
            .map(|s| parse_ts(&s))
            .transpose()
            .map_err(|e| StoreError::Database(format!("{}: {e}", context())))?,
        parked_aggregates,
        parked_events,
    })
}

pub(crate) fn insert_action(conn: &Connection, dead_letter_id: i64, action: &OperatorAction) -> Result<(), StoreError> {
    conn.prepare_cached(RECORD_DEAD_LETTER_ACTION)
        .and_then(|mut s| {
            s.execute(params![dead_letter_id, action.actor, action.action, format_ts(Utc::now()), action.outcome])
        })
        .context(|| format!("record the {} of dead letter {dead_letter_id}", action.action))?;
    Ok(())
}

pub(crate) fn set_letter_status(conn: &Connection, id: i64, status: DeadLetterStatus) -> Result<usize, StoreError> {
    conn.prepare_cached(SET_DEAD_LETTER_STATUS)
        .and_then(|mut s| s.execute(params![id, status.as_str()]))
        .context(|| format!("mark dead letter {id} {status}"))
}

fn send(conn: &mut Connection, letters: &[DeadLetter]) -> Result<Vec<i64>, StoreError> {
    let context = || format!("store {} dead letter(s)", letters.len());
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).context(context)?;
    let ids = send_letters(&tx, letters)?;
    tx.commit().context(context)?;
    Ok(ids)
}

fn list(conn: &Connection, filter: &DeadLetterFilter) -> Result<Vec<DeadLetter>, StoreError> {
    query_letters(
        conn,
        LIST_DEAD_LETTERS,
        params![filter.projection, filter.aggregate_id.as_ref().map(format_uuid), filter.include_closed],
        || "list dead letters".to_owned(),
    )
}

/// Dead letter `id`, if it exists (and belongs to `projection`, when one is given).
pub(crate) fn letter(conn: &Connection, id: i64, projection: Option<&str>) -> Result<Option<DeadLetter>, StoreError> {
    let mut found = query_letters(conn, GET_DEAD_LETTER, params![id, projection], || match projection {
        Some(projection) => format!("read dead letter {id} of {projection}"),
        None => format!("read dead letter {id}"),
    })?;
    Ok(found.pop())
}

fn resolve(
    conn: &mut Connection,
    id: i64,
    status: DeadLetterStatus,
    action: &OperatorAction,
) -> Result<(), StoreError> {
    let context = || format!("mark dead letter {id} {status}");
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).context(context)?;
    if set_letter_status(&tx, id, status)? == 0 {
        return Err(StoreError::UnknownDeadLetter { projection: "any".into(), id });
    }
    insert_action(&tx, id, action)?;
    tx.commit().context(context)?;
    Ok(())
}

fn actions(conn: &Connection, id: i64) -> Result<Vec<OperatorAction>, StoreError> {
    let context = || format!("read the actions on dead letter {id}");
    let rows: Vec<(i64, String, String, String, String)> = conn
        .prepare_cached(DEAD_LETTER_ACTIONS)
        .and_then(|mut s| s.query_map([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))?.collect())
        .context(context)?;
    rows.into_iter()
        .map(|(dead_letter_id, actor, action, at, outcome)| {
            let at = parse_ts(&at).map_err(|e| StoreError::Database(format!("{}: {e}", context())))?;
            Ok(OperatorAction { dead_letter_id, actor, action, at, outcome })
        })
        .collect()
}
