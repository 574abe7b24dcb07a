//! Dead letters on PostgreSQL: the queue tables, the parked set a runner caches, and
//! operator repair sessions.

use chrono::{DateTime, Utc};
use futures_util::lock::MutexGuard;
use postgres_types::{ToSql, Type};
use projector::{
    Checkpoint, DeadLetter, DeadLetterFilter, DeadLetterQueue, DeadLetterStatus, DomainEvent, OperatorAction, Parked,
    ParkedSet, Partition, ReadBound, RepairSession, Repairs, RowChanges, StoreError, TableSchema, Value,
};
use tokio_postgres::{Client, Row};
use uuid::Uuid;

use crate::error::map;
use crate::events;
use crate::projections::{load_rows, write_rows};
use crate::types::Xid8;
use crate::PgStore;

pub(crate) const LETTER_COLUMNS: &str = "id, projection, event_id, position, transaction_id, aggregate_id, \
     aggregate_type, event_type, version, error, error_class, attempts, first_failed_at, last_failed_at, status";

pub(crate) fn letter_from_row(row: &Row) -> Result<DeadLetter, StoreError> {
    let bad = |e: tokio_postgres::Error| StoreError::Database(format!("dead letter row: {e}"));
    let status: String = row.try_get(14).map_err(bad)?;
    Ok(DeadLetter {
        id: row.try_get(0).map_err(bad)?,
        projection: row.try_get(1).map_err(bad)?,
        event_id: row.try_get(2).map_err(bad)?,
        position: row.try_get(3).map_err(bad)?,
        transaction_id: row.try_get::<_, Xid8>(4).map_err(bad)?.0,
        aggregate_id: row.try_get(5).map_err(bad)?,
        aggregate_type: row.try_get(6).map_err(bad)?,
        event_type: row.try_get(7).map_err(bad)?,
        version: row.try_get(8).map_err(bad)?,
        error: row.try_get(9).map_err(bad)?,
        error_class: row.try_get(10).map_err(bad)?,
        attempts: row.try_get::<_, i32>(11).map_err(bad)? as u32,
        first_failed_at: row.try_get(12).map_err(bad)?,
        last_failed_at: row.try_get(13).map_err(bad)?,
        status: DeadLetterStatus::parse(&status)
            .ok_or_else(|| StoreError::Database(format!("unknown dead letter status {status:?}")))?,
    })
}

/// Letters as parameter arrays for an `unnest` insert, from `$first`.
pub(crate) struct LetterArrays {
    event_ids: Vec<Uuid>,
    positions: Vec<i64>,
    xids: Vec<Xid8>,
    aggregates: Vec<Uuid>,
    aggregate_types: Vec<String>,
    event_types: Vec<String>,
    versions: Vec<i64>,
    errors: Vec<String>,
    classes: Vec<String>,
    attempts: Vec<i32>,
}

impl LetterArrays {
    pub(crate) fn new(letters: &[DeadLetter]) -> Self {
        Self {
            event_ids: letters.iter().map(|l| l.event_id).collect(),
            positions: letters.iter().map(|l| l.position).collect(),
            xids: letters.iter().map(|l| Xid8(l.transaction_id)).collect(),
            aggregates: letters.iter().map(|l| l.aggregate_id).collect(),
            aggregate_types: letters.iter().map(|l| l.aggregate_type.clone()).collect(),
            event_types: letters.iter().map(|l| l.event_type.clone()).collect(),
            versions: letters.iter().map(|l| l.version).collect(),
            errors: letters.iter().map(|l| l.error.clone()).collect(),
            classes: letters.iter().map(|l| l.error_class.clone()).collect(),
            attempts: letters.iter().map(|l| l.attempts as i32).collect(),
        }
    }

    pub(crate) fn push<'a>(&'a self, params: &mut Vec<(&'a (dyn ToSql + Sync), Type)>) {
        params.push((&self.event_ids, Type::UUID_ARRAY));
        params.push((&self.positions, Type::INT8_ARRAY));
        params.push((&self.xids, Type::XID8_ARRAY));
        params.push((&self.aggregates, Type::UUID_ARRAY));
        params.push((&self.aggregate_types, Type::TEXT_ARRAY));
        params.push((&self.event_types, Type::TEXT_ARRAY));
        params.push((&self.versions, Type::INT8_ARRAY));
        params.push((&self.errors, Type::TEXT_ARRAY));
        params.push((&self.classes, Type::TEXT_ARRAY));
        params.push((&self.attempts, Type::INT4_ARRAY));
    }
}

/// `INSERT` of letters given as [`LetterArrays`] from `$first`, for projection `$projection`;
/// failure times come from the attempt history. Idempotent per (projection, event).
pub(crate) fn insert_letters_sql(projection_param: usize, first: usize, guard: &str) -> String {
    let p: Vec<String> = (first..first + 10).map(|i| format!("${i}")).collect();
    format!(
        "INSERT INTO dead_letters (projection, event_id, position, transaction_id, aggregate_id, aggregate_type,
                                   event_type, version, error, error_class, attempts, first_failed_at, last_failed_at)
         SELECT ${projection_param}, d.event_id, d.position, d.xid, d.aggregate_id, d.aggregate_type, d.event_type,
                d.version, d.error, d.class, d.attempts, coalesce(f.first_failed_at, now()), now()
         FROM unnest({}::uuid[], {}::bigint[], {}::xid8[], {}::uuid[], {}::text[], {}::text[], {}::bigint[],
                     {}::text[], {}::text[], {}::int[])
              AS d(event_id, position, xid, aggregate_id, aggregate_type, event_type, version, error, class, attempts)
         LEFT JOIN event_failures f ON f.projection = ${projection_param} AND f.event_id = d.event_id
         {guard}
         ON CONFLICT (projection, event_id) DO UPDATE
             SET status = 'open', error = EXCLUDED.error, attempts = EXCLUDED.attempts,
                 last_failed_at = EXCLUDED.last_failed_at
         RETURNING id, aggregate_id, version",
        p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9]
    )
}

/// Parks the aggregates of the letters returned by CTE `dl` (lowest version wins).
pub(crate) fn park_sql(projection_param: usize) -> String {
    format!(
        "INSERT INTO parked_aggregates (projection, aggregate_id, from_version, dead_letter_id)
         SELECT DISTINCT ON (aggregate_id) ${projection_param}, aggregate_id, version, id FROM dl
         ORDER BY aggregate_id, version
         ON CONFLICT (projection, aggregate_id) DO UPDATE
             SET from_version = LEAST(parked_aggregates.from_version, EXCLUDED.from_version),
                 dead_letter_id = CASE WHEN EXCLUDED.from_version < parked_aggregates.from_version
                                       THEN EXCLUDED.dead_letter_id ELSE parked_aggregates.dead_letter_id END"
    )
}

/// The parked aggregates of a projection that fall in `partition`.
pub(crate) async fn parked_set(
    client: &Client,
    projection: &str,
    partition: Partition,
    epoch: i64,
) -> Result<ParkedSet, StoreError> {
    let rows = client
        .query_typed(
            "SELECT aggregate_id, from_version, dead_letter_id FROM parked_aggregates WHERE projection = $1",
            &[(&projection, Type::TEXT)],
        )
        .await
        .map_err(map)?;
    let by_aggregate = rows
        .iter()
        .map(|r| Parked { aggregate_id: r.get(0), from_version: r.get(1), dead_letter_id: r.get(2) })
        .filter(|p| partition.owns(&p.aggregate_id))
        .map(|p| (p.aggregate_id, p))
        .collect();
    Ok(ParkedSet { by_aggregate, epoch })
}

async fn insert_action(client: &Client, action: &OperatorAction) -> Result<(), StoreError> {
    client
        .query_typed(
            "INSERT INTO dead_letter_actions (dead_letter_id, actor, action, outcome) VALUES ($1, $2, $3, $4)",
            &[
                (&action.dead_letter_id, Type::INT8),
                (&action.actor, Type::TEXT),
                (&action.action, Type::TEXT),
                (&action.outcome, Type::TEXT),
            ],
        )
        .await
        .map_err(map)?;
    Ok(())
}

async fn send(client: &Client, letters: &[DeadLetter]) -> Result<Vec<i64>, StoreError> {
    let mut ids = Vec::with_capacity(letters.len());
    // Letters of different projections go one projection at a time.
    let mut projections: Vec<&str> = letters.iter().map(|l| l.projection.as_str()).collect();
    projections.sort_unstable();
    projections.dedup();
    for projection in projections {
        let mine: Vec<DeadLetter> = letters.iter().filter(|l| l.projection == projection).cloned().collect();
        let arrays = LetterArrays::new(&mine);
        let mut params: Vec<(&(dyn ToSql + Sync), Type)> = vec![(&projection, Type::TEXT)];
        arrays.push(&mut params);
        let rows = client.query_typed(&insert_letters_sql(1, 2, ""), &params).await.map_err(map)?;
        ids.extend(rows.iter().map(|r| r.get::<_, i64>(0)));
    }
    Ok(ids)
}

impl DeadLetterQueue for PgStore {
    async fn send(&self, letters: &[DeadLetter]) -> Result<Vec<i64>, StoreError> {
        let client = self.client().await?;
        send(&client, letters).await
    }

    async fn list(&self, filter: &DeadLetterFilter) -> Result<Vec<DeadLetter>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query_typed(
                &format!(
                    "SELECT {LETTER_COLUMNS} FROM dead_letters
                     WHERE ($1::text IS NULL OR projection = $1)
                       AND ($2::uuid IS NULL OR aggregate_id = $2)
                       AND ($3 OR status = 'open')
                     ORDER BY id"
                ),
                &[
                    (&filter.projection, Type::TEXT),
                    (&filter.aggregate_id, Type::UUID),
                    (&filter.include_closed, Type::BOOL),
                ],
            )
            .await
            .map_err(map)?;
        rows.iter().map(letter_from_row).collect()
    }

    async fn get(&self, id: i64) -> Result<Option<DeadLetter>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_typed_opt(&format!("SELECT {LETTER_COLUMNS} FROM dead_letters WHERE id = $1"), &[(&id, Type::INT8)])
            .await
            .map_err(map)?;
        row.as_ref().map(letter_from_row).transpose()
    }

    async fn resolve(&self, id: i64, status: DeadLetterStatus, action: &OperatorAction) -> Result<(), StoreError> {
        let client = self.client().await?;
        let updated = client
            .query_typed(
                "UPDATE dead_letters SET status = $2 WHERE id = $1 RETURNING projection",
                &[(&id, Type::INT8), (&status.as_str(), Type::TEXT)],
            )
            .await
            .map_err(map)?;
        if updated.is_empty() {
            return Err(StoreError::UnknownDeadLetter { projection: "any".into(), id });
        }
        insert_action(&client, action).await
    }

    async fn actions(&self, id: i64) -> Result<Vec<OperatorAction>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query_typed(
                "SELECT dead_letter_id, actor, action, at, outcome FROM dead_letter_actions
                 WHERE dead_letter_id = $1 ORDER BY id",
                &[(&id, Type::INT8)],
            )
            .await
            .map_err(map)?;
        Ok(rows
            .iter()
            .map(|r| OperatorAction {
                dead_letter_id: r.get(0),
                actor: r.get(1),
                action: r.get(2),
                at: r.get::<_, DateTime<Utc>>(3),
                outcome: r.get(4),
            })
            .collect())
    }
}

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
        .query_typed_opt(
            &format!("SELECT {LETTER_COLUMNS} FROM dead_letters WHERE id = $1 AND projection = $2 FOR UPDATE"),
            &[(&dead_letter_id, Type::INT8), (&projection, Type::TEXT)],
        )
        .await
        .map_err(map)?
        .ok_or_else(|| StoreError::UnknownDeadLetter { projection: projection.to_owned(), id: dead_letter_id })?;
    let letter = letter_from_row(&row)?;
    let partitions: i32 = client
        .query_typed_opt(
            "SELECT partitions FROM projection_state WHERE projection = $1 LIMIT 1",
            &[(&projection, Type::TEXT)],
        )
        .await
        .map_err(map)?
        .ok_or_else(|| StoreError::UnknownProjection(projection.to_owned()))?
        .get(0);
    let partition = Partition::bucket(&letter.aggregate_id, partitions.max(1) as u32) as i32;
    let state = client
        .query_typed_one(
            "SELECT transaction_id, position FROM projection_state WHERE projection = $1 AND partition = $2 FOR UPDATE",
            &[(&projection, Type::TEXT), (&partition, Type::INT4)],
        )
        .await
        .map_err(map)?;
    let checkpoint = Checkpoint { transaction_id: state.get::<_, Xid8>(0).0, position: state.get(1) };
    let parked = client
        .query_typed_opt(
            "SELECT aggregate_id, from_version, dead_letter_id FROM parked_aggregates
             WHERE projection = $1 AND aggregate_id = $2 FOR UPDATE",
            &[(&projection, Type::TEXT), (&letter.aggregate_id, Type::UUID)],
        )
        .await
        .map_err(map)?
        .map(|r| Parked { aggregate_id: r.get(0), from_version: r.get(1), dead_letter_id: r.get(2) });
    Ok((letter, partition, checkpoint, parked))
}

impl RepairSession for PgRepair<'_> {
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
        load_rows(&self.client, table, keys).await
    }

    async fn write_rows(&mut self, table: &'static TableSchema, changes: RowChanges) -> Result<(), StoreError> {
        write_rows(&self.client, table, changes).await
    }

    async fn set_parking(&mut self, parked: Option<Parked>) -> Result<(), StoreError> {
        let projection = &self.letter.projection;
        match parked {
            Some(p) => {
                self.client
                    .query_typed(
                        "INSERT INTO parked_aggregates (projection, aggregate_id, from_version, dead_letter_id)
                         VALUES ($1, $2, $3, $4)
                         ON CONFLICT (projection, aggregate_id) DO UPDATE
                             SET from_version = EXCLUDED.from_version, dead_letter_id = EXCLUDED.dead_letter_id",
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
                    .query_typed(
                        "DELETE FROM parked_aggregates WHERE projection = $1 AND aggregate_id = $2",
                        &[(projection, Type::TEXT), (&self.letter.aggregate_id, Type::UUID)],
                    )
                    .await
                    .map_err(map)?;
            }
        }
        self.parked = parked;
        self.client
            .query_typed(
                "UPDATE projection_state SET parking_epoch = parking_epoch + 1, updated_at = now()
                 WHERE projection = $1 AND partition = $2",
                &[(projection, Type::TEXT), (&self.partition, Type::INT4)],
            )
            .await
            .map_err(map)?;
        Ok(())
    }

    async fn failed_again(&mut self, error: &str) -> Result<(), StoreError> {
        self.client
            .query_typed(
                "UPDATE dead_letters SET attempts = attempts + 1, error = $2, last_failed_at = now() WHERE id = $1",
                &[(&self.letter.id, Type::INT8), (&error, Type::TEXT)],
            )
            .await
            .map_err(map)?;
        Ok(())
    }

    async fn send_letter(&mut self, letter: &DeadLetter) -> Result<i64, StoreError> {
        let ids = send(&self.client, std::slice::from_ref(letter)).await?;
        ids.first().copied().ok_or_else(|| StoreError::Database("dead letter insert returned no id".into()))
    }

    async fn close(&mut self, status: DeadLetterStatus, action: &OperatorAction) -> Result<(), StoreError> {
        self.client
            .query_typed(
                "UPDATE dead_letters SET status = $2 WHERE id = $1",
                &[(&self.letter.id, Type::INT8), (&status.as_str(), Type::TEXT)],
            )
            .await
            .map_err(map)?;
        insert_action(&self.client, action).await
    }

    async fn record_action(&mut self, action: &OperatorAction) -> Result<(), StoreError> {
        insert_action(&self.client, action).await
    }

    async fn commit(mut self) -> Result<(), StoreError> {
        self.client.batch_execute("COMMIT").await.map_err(map)?;
        self.done = true;
        Ok(())
    }
}
