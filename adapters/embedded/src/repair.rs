//! Operator repairs on SQLite: the embedded store's [`Repairs`], and the session that
//! re-applies, skips or discards a parked aggregate's events in one transaction.

use std::sync::MutexGuard;

use projector::store::keys::{AuditRecord, KeyLookup};

use chrono::Utc;
use projector::{
    Checkpoint, DeadLetter, DeadLetterStatus, DiscardedEvent, DomainEvent, OperatorAction, Parked, ReadBound,
    RepairSession, Repairs, RowChanges, StoreError, TableSchema, Value,
};
use rusqlite::{params, Connection, OptionalExtension};
use uuid::Uuid;

use crate::codec::{format_ts, format_uuid};
use crate::error::Context;
use crate::{dead_letters, discarded, events, rows, EmbeddedStore};

const PARTITION_OF_AGGREGATE: &str = include_str!("../sql/partition_of_aggregate.sql");
const PARKED_AGGREGATE: &str = include_str!("../sql/parked_aggregate.sql");
const SET_PARKING: &str = include_str!("../sql/set_parking.sql");
const UNPARK_AGGREGATE: &str = include_str!("../sql/unpark_aggregate.sql");
const MOVE_PARKING_EPOCH: &str = include_str!("../sql/move_parking_epoch.sql");
const DEAD_LETTER_FAILED_AGAIN: &str = include_str!("../sql/dead_letter_failed_again.sql");

impl Repairs for EmbeddedStore {
    type Repair<'a> = EmbeddedRepair<'a>;

    /// Takes the connection and opens the repair's transaction; see [`EmbeddedRepair`].
    async fn begin_repair<'a>(
        &'a self,
        projection: &str,
        dead_letter_id: i64,
    ) -> Result<EmbeddedRepair<'a>, StoreError> {
        EmbeddedRepair::begin(self.lock(), projection, dead_letter_id)
    }
}

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
    let letter = dead_letters::letter(conn, id, Some(projection))?
        .ok_or_else(|| StoreError::UnknownDeadLetter { projection: projection.to_owned(), id })?;
    let context = || format!("begin the repair of dead letter {id} of {projection}");
    let aggregate = format_uuid(&letter.aggregate_id);
    let (partition, transaction_id, position): (u32, i64, i64) = conn
        .prepare_cached(PARTITION_OF_AGGREGATE)
        .and_then(|mut s| {
            s.query_row(params![projection, aggregate], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).optional()
        })
        .context(context)?
        .ok_or_else(|| StoreError::UnknownProjection(projection.to_owned()))?;
    let checkpoint = Checkpoint { transaction_id: transaction_id.max(0) as u64, position };
    let parked = conn
        .prepare_cached(PARKED_AGGREGATE)
        .and_then(|mut s| {
            s.query_row(params![projection, aggregate], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).optional()
        })
        .context(context)?
        .map(|row| dead_letters::decode_parked(projection, row))
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
        rows::load_rows(&self.conn, table, keys)
    }

    async fn write_rows(&mut self, table: &'static TableSchema, changes: RowChanges) -> Result<(), StoreError> {
        rows::write_rows(&self.conn, table, &changes)
    }

    async fn set_parking(&mut self, parked: Option<Parked>) -> Result<(), StoreError> {
        let projection = self.letter.projection.as_str();
        let now = format_ts(Utc::now());
        match parked {
            Some(p) => {
                self.conn
                    .prepare_cached(SET_PARKING)
                    .and_then(|mut s| {
                        s.execute(params![
                            projection,
                            format_uuid(&p.aggregate_id),
                            p.from_version,
                            p.dead_letter_id,
                            now
                        ])
                    })
                    .context(|| {
                        format!("park aggregate {} of {projection} from version {}", p.aggregate_id, p.from_version)
                    })?;
            }
            None => {
                self.conn
                    .prepare_cached(UNPARK_AGGREGATE)
                    .and_then(|mut s| s.execute(params![projection, format_uuid(&self.letter.aggregate_id)]))
                    .context(|| format!("unpark aggregate {} of {projection}", self.letter.aggregate_id))?;
            }
        }
        self.parked = parked;
        self.conn
            .prepare_cached(MOVE_PARKING_EPOCH)
            .and_then(|mut s| s.execute(params![projection, self.partition, now]))
            .context(|| format!("move the parking epoch of {projection} partition {}", self.partition))?;
        Ok(())
    }

    async fn discarded_events(&mut self) -> Result<Vec<DiscardedEvent>, StoreError> {
        discarded::discarded_events(&self.conn, &self.letter.projection, Some(self.letter.aggregate_id))
    }

    async fn discard_events(&mut self, events: &[DiscardedEvent]) -> Result<(), StoreError> {
        discarded::discard_events(&self.conn, &self.letter.projection, events)
    }

    async fn failed_again(&mut self, error: &str) -> Result<(), StoreError> {
        let id = self.letter.id;
        self.conn
            .prepare_cached(DEAD_LETTER_FAILED_AGAIN)
            .and_then(|mut s| s.execute(params![id, error, format_ts(Utc::now())]))
            .context(|| format!("record another failure of dead letter {id}"))?;
        Ok(())
    }

    async fn send_letter(&mut self, letter: &DeadLetter) -> Result<i64, StoreError> {
        let ids = dead_letters::send_letters(&self.conn, std::slice::from_ref(letter))?;
        ids.first().copied().ok_or_else(|| StoreError::Database("dead letter insert returned no id".into()))
    }

    async fn close(&mut self, status: DeadLetterStatus, action: &OperatorAction) -> Result<(), StoreError> {
        dead_letters::set_letter_status(&self.conn, self.letter.id, status)?;
        dead_letters::insert_action(&self.conn, self.letter.id, action)?;
        self.letter.status = status;
        Ok(())
    }

    async fn record_action(&mut self, action: &OperatorAction) -> Result<(), StoreError> {
        dead_letters::insert_action(&self.conn, self.letter.id, action)
    }

    async fn subject_keys(&mut self, subjects: &[String]) -> Result<Vec<KeyLookup>, StoreError> {
        crate::keys::subject_keys(&self.conn, subjects)
    }

    async fn record_audit(&mut self, records: &[AuditRecord]) -> Result<(), StoreError> {
        crate::keys::record_audit(&self.conn, records)
    }

    async fn commit(mut self) -> Result<(), StoreError> {
        self.conn.execute_batch("COMMIT").context(|| format!("commit the repair of dead letter {}", self.letter.id))?;
        self.open = false;
        Ok(())
    }
}
