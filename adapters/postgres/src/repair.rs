//! Operator repairs on PostgreSQL: one transaction per repair that locks the dead letter,
//! its partition's checkpoint row and the aggregate's parking, then re-applies, skips or
//! discards the parked sequence.

use futures_util::lock::MutexGuard;
use postgres_types::Type;
use projector::{
    Checkpoint, DeadLetter, DeadLetterStatus, DiscardedEvent, DomainEvent, OperatorAction, Parked, Partition,
    ReadBound, RepairSession, Repairs, RowChanges, StoreError, TableSchema, Value,
};
use tokio_postgres::Client;
use uuid::Uuid;

use crate::dead_letters::{self, letter_from_row, CLOSE_DEAD_LETTER};
use crate::discarded;
use crate::error::map;
use crate::events;
use crate::rows;
use crate::types::Xid8;
use crate::PgStore;

const LOCK_DEAD_LETTER: &str = include_str!("../sql/lock_dead_letter.sql");
const PROJECTION_PARTITIONS: &str = include_str!("../sql/projection_partitions.sql");
const LOCK_CHECKPOINT: &str = include_str!("../sql/lock_checkpoint.sql");
const LOCK_PARKING: &str = include_str!("../sql/lock_parking.sql");
const SET_PARKING: &str = include_str!("../sql/set_parking.sql");
const LIFT_PARKING: &str = include_str!("../sql/lift_parking.sql");
const BUMP_PARKING_EPOCH: &str = include_str!("../sql/bump_parking_epoch.sql");
const LETTER_FAILED_AGAIN: &str = include_str!("../sql/letter_failed_again.sql");

/// One repair transaction on PostgreSQL.
pub struct PgRepair<'a> {
    store: &'a PgStore,
    client: MutexGuard<'a, Client>,
    letter: DeadLetter,
    parked: Option<Parked>,
    partition: i32,
    checkpoint: Checkpoint,
    done: bool,
}

impl std::fmt::Debug for PgRepair<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgRepair").field("letter", &self.letter.id).finish_non_exhaustive()
    }
}

impl Drop for PgRepair<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.store.roll_back_later();
        }
    }
}

impl Repairs for PgStore {
    type Repair<'a> = PgRepair<'a>;

    async fn begin_repair<'a>(&'a self, projection: &str, dead_letter_id: i64) -> Result<PgRepair<'a>, StoreError> {
        let client = self.client().await?;
        client.batch_execute("BEGIN").await.map_err(map)?;
        match lock_for_repair(&client, projection, dead_letter_id).await {
            Ok((letter, partition, checkpoint, parked)) => {
                Ok(PgRepair { store: self, client, letter, parked, partition, checkpoint, done: false })
            }
            Err(e) => {
                self.roll_back_later();
                Err(e)
            }
        }
    }
}

/// Locks the letter, its partition's checkpoint row and its parking, in that order (the
/// order every repair uses, so two repairs cannot deadlock).
async fn lock_for_repair(
    client: &Client,
    projection: &str,
    dead_letter_id: i64,
) -> Result<(DeadLetter, i32, Checkpoint, Option<Parked>), StoreError> {
    let row = client
        .query_typed_opt(LOCK_DEAD_LETTER, &[(&dead_letter_id, Type::INT8), (&projection, Type::TEXT)])
        .await
        .map_err(map)?
        .ok_or_else(|| StoreError::UnknownDeadLetter { projection: projection.to_owned(), id: dead_letter_id })?;
    let letter = letter_from_row(&row)?;
    let partitions: i32 = client
        .query_typed_opt(PROJECTION_PARTITIONS, &[(&projection, Type::TEXT)])
        .await
        .map_err(map)?
        .ok_or_else(|| StoreError::UnknownProjection(projection.to_owned()))?
        .get(0);
    let partition = Partition::bucket(&letter.aggregate_id, partitions.max(1) as u32) as i32;
    let state = client
        .query_typed_one(LOCK_CHECKPOINT, &[(&projection, Type::TEXT), (&partition, Type::INT4)])
        .await
        .map_err(map)?;
    let checkpoint = Checkpoint { transaction_id: state.get::<_, Xid8>(0).0, position: state.get(1) };
    let parked = client
        .query_typed_opt(LOCK_PARKING, &[(&projection, Type::TEXT), (&letter.aggregate_id, Type::UUID)])
        .await
        .map_err(map)?
        .map(|r| Parked { aggregate_id: r.get(0), from_version: r.get(1), dead_letter_id: r.get(2) });
    Ok((letter, partition, checkpoint, parked))
}

impl RepairSession for PgRepair<'_> {
    async fn subject_keys(
        &mut self,
        subjects: &[String],
    ) -> Result<Vec<projector::store::keys::KeyLookup>, StoreError> {
        crate::keys::subject_keys(&self.client, subjects).await
    }

    async fn record_audit(&mut self, records: &[projector::store::keys::AuditRecord]) -> Result<(), StoreError> {
        crate::keys::record_audit(&self.client, records).await
    }

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
        events::read_aggregate(&self.client, aggregate_id, bound).await
    }

    async fn load_rows(
        &mut self,
        table: &'static TableSchema,
        keys: &[Vec<Value>],
    ) -> Result<Vec<Vec<Value>>, StoreError> {
        rows::load_rows(&self.client, table, keys).await
    }

    async fn write_rows(&mut self, table: &'static TableSchema, changes: RowChanges) -> Result<(), StoreError> {
        rows::write_rows(&self.client, table, changes).await
    }

    async fn set_parking(&mut self, parked: Option<Parked>) -> Result<(), StoreError> {
        let projection = &self.letter.projection;
        match parked {
            Some(p) => {
                self.client
                    .query_typed(
                        SET_PARKING,
                        &[
                            (projection, Type::TEXT),
                            (&p.aggregate_id, Type::UUID),
                            (&p.from_version, Type::INT8),
                            (&p.dead_letter_id, Type::INT8),
                        ],
                    )
                    .await
                    .map_err(map)?;
            }
            None => {
                self.client
                    .query_typed(LIFT_PARKING, &[(projection, Type::TEXT), (&self.letter.aggregate_id, Type::UUID)])
                    .await
                    .map_err(map)?;
            }
        }
        self.parked = parked;
        self.client
            .query_typed(BUMP_PARKING_EPOCH, &[(projection, Type::TEXT), (&self.partition, Type::INT4)])
            .await
            .map_err(map)?;
        Ok(())
    }

    async fn discarded_events(&mut self) -> Result<Vec<DiscardedEvent>, StoreError> {
        discarded::discarded_events(&self.client, &self.letter.projection, Some(self.letter.aggregate_id)).await
    }

    async fn discard_events(&mut self, events: &[DiscardedEvent]) -> Result<(), StoreError> {
        discarded::discard_events(&self.client, &self.letter.projection, events).await
    }

    async fn failed_again(&mut self, error: &str) -> Result<(), StoreError> {
        self.client
            .query_typed(LETTER_FAILED_AGAIN, &[(&self.letter.id, Type::INT8), (&error, Type::TEXT)])
            .await
            .map_err(map)?;
        Ok(())
    }

    async fn send_letter(&mut self, letter: &DeadLetter) -> Result<i64, StoreError> {
        let ids = dead_letters::send(&self.client, std::slice::from_ref(letter)).await?;
        ids.first().copied().ok_or_else(|| StoreError::Database("dead letter insert returned no id".into()))
    }

    async fn close(&mut self, status: DeadLetterStatus, action: &OperatorAction) -> Result<(), StoreError> {
        self.client
            .query_typed(CLOSE_DEAD_LETTER, &[(&self.letter.id, Type::INT8), (&status.as_str(), Type::TEXT)])
            .await
            .map_err(map)?;
        dead_letters::record_action(&self.client, action).await
    }

    async fn record_action(&mut self, action: &OperatorAction) -> Result<(), StoreError> {
        dead_letters::record_action(&self.client, action).await
    }

    async fn commit(mut self) -> Result<(), StoreError> {
        self.client.batch_execute("COMMIT").await.map_err(map)?;
        self.done = true;
        Ok(())
    }
}
