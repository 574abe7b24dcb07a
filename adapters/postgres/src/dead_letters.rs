//! Dead letters on PostgreSQL: `DeadLetterQueue`, the letters a batch commit stores and
//! the parkings it makes, the attempt history of failing events, and the parked set a
//! runner caches.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use postgres_types::{ToSql, Type};
use projector::{
    DeadLetter, DeadLetterFilter, DeadLetterQueue, DeadLetterStatus, DomainEvent, FailureRecord, OperatorAction,
    Parked, ParkedSet, Partition, StoreError,
};
use tokio_postgres::{Client, Row};
use uuid::Uuid;

use crate::error::map;
use crate::types::Xid8;
use crate::PgStore;

const INSERT_DEAD_LETTERS: &str = include_str!("../sql/insert_dead_letters.sql");
pub(crate) const PARK_AGGREGATES: &str = include_str!("../sql/park_aggregates.sql");
const SEND_DEAD_LETTERS: &str = include_str!("../sql/send_dead_letters.sql");
const PARKED_SET: &str = include_str!("../sql/parked_set.sql");
const RECORD_FAILURE: &str = include_str!("../sql/record_failure.sql");
const CLEAR_FAILURE: &str = include_str!("../sql/clear_failure.sql");
const LIST_DEAD_LETTERS: &str = include_str!("../sql/list_dead_letters.sql");
const GET_DEAD_LETTER: &str = include_str!("../sql/get_dead_letter.sql");
pub(crate) const CLOSE_DEAD_LETTER: &str = include_str!("../sql/close_dead_letter.sql");
const RECORD_ACTION: &str = include_str!("../sql/record_action.sql");
const DEAD_LETTER_ACTIONS: &str = include_str!("../sql/dead_letter_actions.sql");

/// The line of `send_dead_letters.sql` that the letter insert replaces.
const LETTERS_HERE: &str = "-- dead letters\n";

/// [`SEND_DEAD_LETTERS`] with the letter insert in place, its arrays from `$2`.
static SEND: LazyLock<String> = LazyLock::new(|| {
    assert!(SEND_DEAD_LETTERS.contains(LETTERS_HERE), "send_dead_letters.sql has a `{}` line", LETTERS_HERE.trim());
    SEND_DEAD_LETTERS.replacen(LETTERS_HERE, &renumbered(INSERT_DEAD_LETTERS, 1), 1)
});

/// `sql` with every parameter `$n` moved to `$(n + by)`, to place a fragment after the
/// parameters of the statement it joins.
pub(crate) fn renumbered(sql: &str, by: usize) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut rest = sql;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..=dollar]);
        rest = &rest[dollar + 1..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if let Ok(n) = rest[..digits].parse::<usize>() {
            out.push_str(&(n + by).to_string());
        }
        rest = &rest[digits..];
    }
    out.push_str(rest);
    out
}

/// The letter insert with its arrays from parameter `$first`, to stand as a CTE body.
pub(crate) fn letters_cte(first: usize) -> String {
    renumbered(INSERT_DEAD_LETTERS, first - 1)
}

/// The CTEs a batch commit adds when it dead-letters events: `dl` stores the letters (their
/// arrays from parameter `$first`), `park` parks their aggregates. Both write only when the
/// commit's `guard` matched.
pub(crate) fn commit_letters_sql(first: usize) -> String {
    format!(", dl AS (\n{}), park AS (\n{})\n", renumbered(INSERT_DEAD_LETTERS, first - 1), PARK_AGGREGATES)
}

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

/// Letters as the parameter arrays of `insert_dead_letters.sql`.
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
    pub(crate) fn new<'a>(letters: impl IntoIterator<Item = &'a DeadLetter> + Clone) -> Self {
        let each = || letters.clone().into_iter();
        Self {
            event_ids: each().map(|l| l.event_id).collect(),
            positions: each().map(|l| l.position).collect(),
            xids: each().map(|l| Xid8(l.transaction_id)).collect(),
            aggregates: each().map(|l| l.aggregate_id).collect(),
            aggregate_types: each().map(|l| l.aggregate_type.clone()).collect(),
            event_types: each().map(|l| l.event_type.clone()).collect(),
            versions: each().map(|l| l.version).collect(),
            errors: each().map(|l| l.error.clone()).collect(),
            classes: each().map(|l| l.error_class.clone()).collect(),
            attempts: each().map(|l| l.attempts as i32).collect(),
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

/// The parked aggregates of a projection that fall in `partition`, read with `epoch`.
pub(crate) async fn parked_set(
    client: &Client,
    projection: &str,
    partition: Partition,
    epoch: i64,
) -> Result<ParkedSet, StoreError> {
    let (count, index) = (i64::from(partition.count), i64::from(partition.index));
    let rows = client
        .query_typed(PARKED_SET, &[(&projection, Type::TEXT), (&count, Type::INT8), (&index, Type::INT8)])
        .await
        .map_err(map)?;
    Ok(ParkedSet::from_rows(
        epoch,
        rows.iter().map(|r| Parked { aggregate_id: r.get(0), from_version: r.get(1), dead_letter_id: r.get(2) }),
    ))
}

/// Counts one more failed attempt of `event` for `projection`.
pub(crate) async fn record_failure(
    client: &Client,
    projection: &str,
    event: &DomainEvent,
    error: &str,
) -> Result<FailureRecord, StoreError> {
    let row = client
        .query_typed_one(
            RECORD_FAILURE,
            &[(&projection, Type::TEXT), (&event.event_id, Type::UUID), (&error, Type::TEXT)],
        )
        .await
        .map_err(map)?;
    Ok(FailureRecord { attempts: row.get::<_, i32>(0) as u32, first_failed_at: row.get(1), last_failed_at: row.get(2) })
}

/// Forgets the attempt history of an event.
pub(crate) async fn clear_failure(client: &Client, projection: &str, event_id: Uuid) -> Result<(), StoreError> {
    client.query_typed(CLEAR_FAILURE, &[(&projection, Type::TEXT), (&event_id, Type::UUID)]).await.map_err(map)?;
    Ok(())
}

pub(crate) async fn record_action(client: &Client, action: &OperatorAction) -> Result<(), StoreError> {
    client
        .query_typed(
            RECORD_ACTION,
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

/// Stores letters, one statement per projection; `UnknownProjection` (and nothing stored
/// for it) when a projection is not registered.
pub(crate) async fn send(client: &Client, letters: &[DeadLetter]) -> Result<Vec<i64>, StoreError> {
    let mut ids = Vec::with_capacity(letters.len());
    let mut projections: Vec<&str> = letters.iter().map(|l| l.projection.as_str()).collect();
    projections.sort_unstable();
    projections.dedup();
    for projection in projections {
        let arrays = LetterArrays::new(letters.iter().filter(|l| l.projection == projection));
        let mut params: Vec<(&(dyn ToSql + Sync), Type)> = vec![(&projection, Type::TEXT)];
        arrays.push(&mut params);
        let rows = client.query_typed(&SEND, &params).await.map_err(map)?;
        if rows.is_empty() {
            return Err(StoreError::UnknownProjection(projection.to_owned()));
        }
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
                LIST_DEAD_LETTERS,
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
        let row = client.query_typed_opt(GET_DEAD_LETTER, &[(&id, Type::INT8)]).await.map_err(map)?;
        row.as_ref().map(letter_from_row).transpose()
    }

    async fn resolve(&self, id: i64, status: DeadLetterStatus, action: &OperatorAction) -> Result<(), StoreError> {
        let client = self.client().await?;
        let updated = client
            .query_typed(CLOSE_DEAD_LETTER, &[(&id, Type::INT8), (&status.as_str(), Type::TEXT)])
            .await
            .map_err(map)?;
        if updated.is_empty() {
            return Err(StoreError::UnknownDeadLetter { projection: "any".into(), id });
        }
        record_action(&client, action).await
    }

    async fn actions(&self, id: i64) -> Result<Vec<OperatorAction>, StoreError> {
        let client = self.client().await?;
        let rows = client.query_typed(DEAD_LETTER_ACTIONS, &[(&id, Type::INT8)]).await.map_err(map)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_renumbered_past_the_statement_they_join() {
        assert_eq!(renumbered("f($1, $10) = $2::int, '$'", 13), "f($14, $23) = $15::int, '$'");
        let commit = commit_letters_sql(14);
        assert!(commit.contains("unnest($14::uuid[]") && commit.contains("$23::int[]"), "{commit}");
        assert!(!commit.contains("$13"), "{commit}");
    }

    #[test]
    fn a_sent_letter_batch_is_guarded_by_the_projection_row() {
        assert!(SEND.contains("unnest($2::uuid[]") && SEND.contains("$11::int[]"), "{}", *SEND);
        assert!(SEND.contains("FROM projections WHERE name = $1"), "{}", *SEND);
        assert!(!SEND.contains(LETTERS_HERE), "{}", *SEND);
    }
}
