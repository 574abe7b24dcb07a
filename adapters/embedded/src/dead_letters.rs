//! Dead letters on SQLite: the attempt history, the queue tables, the parked set a runner
//! caches, and operator repair sessions.

use std::sync::MutexGuard;

use chrono::{DateTime, Utc};
use projector::{
    Checkpoint, DeadLetter, DeadLetterFilter, DeadLetterStatus, DomainEvent, FailureRecord, OperatorAction, Parked,
    ParkedSet, Partition, ReadBound, RepairSession, RowChanges, StoreError, TableSchema, Value,
};
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};
use uuid::Uuid;

use crate::codec::{format_ts, format_uuid, parse_ts};
use crate::error::Context;
use crate::events::{self, BUCKET_FUNCTION};
use crate::projections;

/// The columns [`decode_letter`] expects, in order.
const LETTER_COLUMNS: &str = "id, projection, event_id, position, transaction_id, aggregate_id, aggregate_type, \
     event_type, version, error, error_class, attempts, first_failed_at, last_failed_at, status";

/// Decodes a `dead_letters` row selected with [`LETTER_COLUMNS`].
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

fn decode_parked(
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

/// Counts one more failed attempt of `event` for `projection`.
pub(crate) fn clear_failure(conn: &Connection, projection: &str, event_id: uuid::Uuid) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM event_failures WHERE projection = ?1 AND event_id = ?2")
        .and_then(|mut s| s.execute(params![projection, format_uuid(&event_id)]))
        .context(|| format!("forget the failed attempts of event {event_id} for {projection}"))?;
    Ok(())
}

pub(crate) fn record_failure(
    conn: &Connection,
    projection: &str,
    event: &DomainEvent,
    error: &str,
) -> Result<FailureRecord, StoreError> {
    let context = || format!("record a failed attempt of event {} for {projection}", event.event_id);
    let (attempts, first): (i64, String) = conn
        .prepare_cached(
            "INSERT INTO event_failures (projection, event_id, attempts, first_failed_at, last_failed_at, last_error) \
             VALUES (?1, ?2, 1, ?3, ?3, ?4) \
             ON CONFLICT (projection, event_id) DO UPDATE \
                 SET attempts = attempts + 1, last_failed_at = excluded.last_failed_at, \
                     last_error = excluded.last_error \
             RETURNING attempts, first_failed_at",
        )
        .and_then(|mut s| {
            s.query_row(params![projection, format_uuid(&event.event_id), format_ts(Utc::now()), error], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
        })
        .context(context)?;
    Ok(FailureRecord {
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        first_failed_at: parse_ts(&first).map_err(|e| StoreError::Database(format!("{}: {e}", context())))?,
    })
}

/// Stores one letter for `projection` (idempotent per event: a stored letter is reopened
/// and updated); the failure times come from the attempt history. Returns its id.
fn insert_letter(conn: &Connection, projection: &str, letter: &DeadLetter, now: &str) -> Result<i64, StoreError> {
    let context = || format!("store the dead letter of event {} for {projection}", letter.event_id);
    let transaction_id = i64::try_from(letter.transaction_id).map_err(|_| {
        StoreError::InvalidInput(format!("{}: transaction id {} is out of range", context(), letter.transaction_id))
    })?;
    conn.prepare_cached(
        "INSERT INTO dead_letters (projection, event_id, position, transaction_id, aggregate_id, aggregate_type, \
             event_type, version, error, error_class, attempts, first_failed_at, last_failed_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, \
             COALESCE((SELECT first_failed_at FROM event_failures WHERE projection = ?1 AND event_id = ?2), ?12), ?12) \
         ON CONFLICT (projection, event_id) DO UPDATE \
             SET status = 'open', error = excluded.error, attempts = excluded.attempts, \
                 last_failed_at = excluded.last_failed_at \
         RETURNING id",
    )
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
        .prepare_cached("SELECT 1 FROM projections WHERE name = ?1")
        .and_then(|mut s| s.query_row([projection], |r| r.get(0)).optional())
        .context(|| format!("look up projection {projection}"))?;
    match found {
        Some(_) => Ok(()),
        None => Err(StoreError::UnknownProjection(projection.to_owned())),
    }
}

/// Stores letters, each for its own projection; ids in the order of `letters`.
fn send_letters(conn: &Connection, letters: &[DeadLetter]) -> Result<Vec<i64>, StoreError> {
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
    conn.prepare_cached(
        "INSERT INTO parked_aggregates (projection, aggregate_id, from_version, dead_letter_id, parked_at) \
         VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT (projection, aggregate_id) DO UPDATE \
             SET from_version = MIN(parked_aggregates.from_version, excluded.from_version), \
                 dead_letter_id = CASE WHEN excluded.from_version < parked_aggregates.from_version \
                                       THEN excluded.dead_letter_id ELSE parked_aggregates.dead_letter_id END",
    )
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
        .prepare_cached(
            "SELECT aggregate_id, from_version, dead_letter_id FROM parked_aggregates WHERE projection = ?1 \
             ORDER BY aggregate_id",
        )
        .and_then(|mut s| s.query_map([projection], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect())
        .context(context)?;
    let mut by_aggregate = std::collections::BTreeMap::new();
    for row in rows {
        let parked = decode_parked(projection, row)?;
        if partition.owns(&parked.aggregate_id) {
            by_aggregate.insert(parked.aggregate_id, parked);
        }
    }
    Ok(ParkedSet { by_aggregate, epoch })
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
        .prepare_cached(&format!(
            "SELECT COUNT(*), MIN(first_failed_at) FROM dead_letters \
             WHERE projection = ?1 AND status = 'open' AND (?2 <= 1 OR {BUCKET_FUNCTION}(aggregate_id, ?2) = ?3)"
        ))
        .and_then(|mut s| s.query_row(params![projection, count, index], |r| Ok((r.get(0)?, r.get(1)?))))
        .context(context)?;
    let (tx, position) = checkpoint_params(checkpoint);
    let (parked_aggregates, parked_events): (i64, i64) = conn
        .prepare_cached(&format!(
            "SELECT COUNT(*), COALESCE(SUM((SELECT COUNT(*) FROM events e \
                 WHERE e.aggregate_id = k.aggregate_id AND e.version >= k.from_version \
                   AND (e.transaction_id, e.position) <= (?4, ?5))), 0) \
             FROM parked_aggregates k \
             WHERE k.projection = ?1 AND (?2 <= 1 OR {BUCKET_FUNCTION}(k.aggregate_id, ?2) = ?3)"
        ))
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

fn insert_action(conn: &Connection, dead_letter_id: i64, action: &OperatorAction) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO dead_letter_actions (dead_letter_id, actor, action, at, outcome) VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut s| {
        s.execute(params![dead_letter_id, action.actor, action.action, format_ts(Utc::now()), action.outcome])
    })
    .context(|| format!("record the {} of dead letter {dead_letter_id}", action.action))?;
    Ok(())
}

fn set_letter_status(conn: &Connection, id: i64, status: DeadLetterStatus) -> Result<usize, StoreError> {
    conn.prepare_cached("UPDATE dead_letters SET status = ?2 WHERE id = ?1")
        .and_then(|mut s| s.execute(params![id, status.as_str()]))
        .context(|| format!("mark dead letter {id} {status}"))
}

// ---------------------------------------------------------------------------------------
// The queue.

pub(crate) fn send(conn: &mut Connection, letters: &[DeadLetter]) -> Result<Vec<i64>, StoreError> {
    let context = || format!("store {} dead letter(s)", letters.len());
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).context(context)?;
    let ids = send_letters(&tx, letters)?;
    tx.commit().context(context)?;
    Ok(ids)
}

pub(crate) fn list(conn: &Connection, filter: &DeadLetterFilter) -> Result<Vec<DeadLetter>, StoreError> {
    query_letters(
        conn,
        &format!(
            "SELECT {LETTER_COLUMNS} FROM dead_letters \
             WHERE (?1 IS NULL OR projection = ?1) AND (?2 IS NULL OR aggregate_id = ?2) \
               AND (?3 OR status = 'open') \
             ORDER BY id"
        ),
        params![filter.projection, filter.aggregate_id.as_ref().map(format_uuid), filter.include_closed],
        || "list dead letters".to_owned(),
    )
}

pub(crate) fn get(conn: &Connection, id: i64) -> Result<Option<DeadLetter>, StoreError> {
    let mut found =
        query_letters(conn, &format!("SELECT {LETTER_COLUMNS} FROM dead_letters WHERE id = ?1"), [id], || {
            format!("read dead letter {id}")
        })?;
    Ok(found.pop())
}

pub(crate) fn resolve(
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

pub(crate) fn actions(conn: &Connection, id: i64) -> Result<Vec<OperatorAction>, StoreError> {
    let context = || format!("read the actions on dead letter {id}");
    let rows: Vec<(i64, String, String, String, String)> = conn
        .prepare_cached(
            "SELECT dead_letter_id, actor, action, at, outcome FROM dead_letter_actions \
             WHERE dead_letter_id = ?1 ORDER BY id",
        )
        .and_then(|mut s| s.query_map([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))?.collect())
        .context(context)?;
    rows.into_iter()
        .map(|(dead_letter_id, actor, action, at, outcome)| {
            let at = parse_ts(&at).map_err(|e| StoreError::Database(format!("{}: {e}", context())))?;
            Ok(OperatorAction { dead_letter_id, actor, action, at, outcome })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Repairs.

/// One operator repair on an [`EmbeddedStore`](crate::EmbeddedStore): a `BEGIN IMMEDIATE`
/// transaction on the store's connection, held (with the connection lock) for the
/// session's lifetime.
///
/// Like [`EmbeddedRebuild`](crate::EmbeddedRebuild), it holds the connection: every other
/// operation on the same store handle (and its clones) waits until the session commits
/// or is dropped, and other processes' writers wait on SQLite's lock (up to the busy
/// timeout). SQLite's write lock covers the whole file, so it also stands for the row
/// locks of the PostgreSQL store (letter, partition checkpoint, parking). Do not use the
/// store from the task that holds a session: that would wait forever.
///
/// Dropping the session without [`RepairSession::commit`] rolls everything back.
pub struct EmbeddedRepair<'a> {
    conn: MutexGuard<'a, Connection>,
    letter: DeadLetter,
    parked: Option<Parked>,
    partition: u32,
    checkpoint: Checkpoint,
    open: bool,
}

impl std::fmt::Debug for EmbeddedRepair<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedRepair")
            .field("projection", &self.letter.projection)
            .field("dead_letter", &self.letter.id)
            .field("partition", &self.partition)
            .field("open", &self.open)
            .finish()
    }
}

impl<'a> EmbeddedRepair<'a> {
    pub(crate) fn begin(conn: MutexGuard<'a, Connection>, projection: &str, id: i64) -> Result<Self, StoreError> {
        conn.execute_batch("BEGIN IMMEDIATE")
            .context(|| format!("begin the repair of dead letter {id} of {projection}"))?;
        match find_for_repair(&conn, projection, id) {
            Ok((letter, partition, checkpoint, parked)) => {
                Ok(Self { conn, letter, parked, partition, checkpoint, open: true })
            }
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }
}

/// The letter, the partition of its aggregate with that partition's checkpoint, and the
/// aggregate's parking (inside the repair's transaction).
fn find_for_repair(
    conn: &Connection,
    projection: &str,
    id: i64,
) -> Result<(DeadLetter, u32, Checkpoint, Option<Parked>), StoreError> {
    let letter = query_letters(
        conn,
        &format!("SELECT {LETTER_COLUMNS} FROM dead_letters WHERE id = ?1 AND projection = ?2"),
        params![id, projection],
        || format!("read dead letter {id} of {projection}"),
    )?
    .pop()
    .ok_or_else(|| StoreError::UnknownDeadLetter { projection: projection.to_owned(), id })?;
    let context = || format!("begin the repair of dead letter {id} of {projection}");
    let partitions: u32 = conn
        .prepare_cached("SELECT partitions FROM projection_state WHERE projection = ?1 LIMIT 1")
        .and_then(|mut s| s.query_row([projection], |r| r.get(0)).optional())
        .context(context)?
        .ok_or_else(|| StoreError::UnknownProjection(projection.to_owned()))?;
    let partition = Partition::bucket(&letter.aggregate_id, partitions.max(1));
    let (transaction_id, position): (i64, i64) = conn
        .prepare_cached(
            "SELECT transaction_id, position FROM projection_state WHERE projection = ?1 AND partition = ?2",
        )
        .and_then(|mut s| s.query_row(params![projection, partition], |r| Ok((r.get(0)?, r.get(1)?))).optional())
        .context(context)?
        .ok_or_else(|| StoreError::UnknownProjection(format!("{projection} partition {partition}")))?;
    let checkpoint = Checkpoint { transaction_id: transaction_id.max(0) as u64, position };
    let parked = conn
        .prepare_cached(
            "SELECT aggregate_id, from_version, dead_letter_id FROM parked_aggregates \
             WHERE projection = ?1 AND aggregate_id = ?2",
        )
        .and_then(|mut s| {
            s.query_row(params![projection, format_uuid(&letter.aggregate_id)], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()
        })
        .context(context)?
        .map(|row| decode_parked(projection, row))
        .transpose()?;
    Ok((letter, partition, checkpoint, parked))
}

impl Drop for EmbeddedRepair<'_> {
    fn drop(&mut self) {
        if self.open {
            // Nothing to report to: the rollback restores the state before the session.
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

impl RepairSession for EmbeddedRepair<'_> {
    fn dead_letter(&self) -> &DeadLetter {
        &self.letter
    }

    fn parked(&self) -> Option<Parked> {
        self.parked
    }

    fn checkpoint(&self) -> Checkpoint {
        self.checkpoint
    }

    async fn read_aggregate(&mut self, aggregate_id: Uuid, bound: ReadBound) -> Result<Vec<DomainEvent>, StoreError> {
        events::read_aggregate(&self.conn, aggregate_id, bound)
    }

    async fn load_rows(
        &mut self,
        table: &'static TableSchema,
        keys: &[Vec<Value>],
    ) -> Result<Vec<Vec<Value>>, StoreError> {
        projections::load_rows(&self.conn, table, keys)
    }

    async fn write_rows(&mut self, table: &'static TableSchema, changes: RowChanges) -> Result<(), StoreError> {
        projections::write_rows(&self.conn, table, &changes)
    }

    async fn set_parking(&mut self, parked: Option<Parked>) -> Result<(), StoreError> {
        let projection = self.letter.projection.as_str();
        let now = format_ts(Utc::now());
        match parked {
            Some(p) => {
                self.conn
                    .prepare_cached(
                        "INSERT INTO parked_aggregates (projection, aggregate_id, from_version, dead_letter_id, parked_at) \
                         VALUES (?1, ?2, ?3, ?4, ?5) \
                         ON CONFLICT (projection, aggregate_id) DO UPDATE \
                             SET from_version = excluded.from_version, dead_letter_id = excluded.dead_letter_id",
                    )
                    .and_then(|mut s| {
                        s.execute(params![projection, format_uuid(&p.aggregate_id), p.from_version, p.dead_letter_id, now])
                    })
                    .context(|| format!("park aggregate {} of {projection} from version {}", p.aggregate_id, p.from_version))?;
            }
            None => {
                self.conn
                    .prepare_cached("DELETE FROM parked_aggregates WHERE projection = ?1 AND aggregate_id = ?2")
                    .and_then(|mut s| s.execute(params![projection, format_uuid(&self.letter.aggregate_id)]))
                    .context(|| format!("unpark aggregate {} of {projection}", self.letter.aggregate_id))?;
            }
        }
        self.parked = parked;
        self.conn
            .prepare_cached(
                "UPDATE projection_state SET parking_epoch = parking_epoch + 1, updated_at = ?3 \
                 WHERE projection = ?1 AND partition = ?2",
            )
            .and_then(|mut s| s.execute(params![projection, self.partition, now]))
            .context(|| format!("move the parking epoch of {projection} partition {}", self.partition))?;
        Ok(())
    }

    async fn failed_again(&mut self, error: &str) -> Result<(), StoreError> {
        let id = self.letter.id;
        self.conn
            .prepare_cached(
                "UPDATE dead_letters SET attempts = attempts + 1, error = ?2, last_failed_at = ?3 WHERE id = ?1",
            )
            .and_then(|mut s| s.execute(params![id, error, format_ts(Utc::now())]))
            .context(|| format!("record another failure of dead letter {id}"))?;
        Ok(())
    }

    async fn send_letter(&mut self, letter: &DeadLetter) -> Result<i64, StoreError> {
        let ids = send_letters(&self.conn, std::slice::from_ref(letter))?;
        ids.first().copied().ok_or_else(|| StoreError::Database("dead letter insert returned no id".into()))
    }

    async fn close(&mut self, status: DeadLetterStatus, action: &OperatorAction) -> Result<(), StoreError> {
        set_letter_status(&self.conn, self.letter.id, status)?;
        insert_action(&self.conn, self.letter.id, action)?;
        self.letter.status = status;
        Ok(())
    }

    async fn record_action(&mut self, action: &OperatorAction) -> Result<(), StoreError> {
        insert_action(&self.conn, self.letter.id, action)
    }

    async fn commit(mut self) -> Result<(), StoreError> {
        self.conn.execute_batch("COMMIT").context(|| format!("commit the repair of dead letter {}", self.letter.id))?;
        self.open = false;
        Ok(())
    }
}
