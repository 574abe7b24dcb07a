//! `EventStore` on PostgreSQL: single-statement appends with optimistic concurrency and
//! idempotency keys, and commit-safe global reads.

use chrono::{DateTime, Utc};
use postgres_types::{ToSql, Type};
use projector::{
    AppendOutcome, AppendRequest, Checkpoint, DomainEvent, EventFilter, EventStore, ExpectedVersion, Partition,
    ReadBound, StoreError,
};
use tokio_postgres::{Client, Row};
use uuid::Uuid;

use crate::error::{describe, is_unique_violation, map};
use crate::types::{RawJson, Xid8};
use crate::PgStore;
use serde_json::value::RawValue;

/// [`EVENT_COLUMNS`] with `metadata` left out (NULL) when parameter `$8` is true.
const EVENT_COLUMNS_SKIPPABLE: &str = "position, transaction_id, event_id, aggregate_id, aggregate_type, \
     event_type, event_data, CASE WHEN $8 THEN NULL ELSE metadata END, version, timestamp, encrypted_fields";

pub(crate) const EVENT_COLUMNS: &str = "position, transaction_id, event_id, aggregate_id, aggregate_type, \
     event_type, event_data, metadata, version, timestamp, encrypted_fields";

const APPEND: &str = "
WITH cur AS (
    SELECT coalesce(max(version), 0) AS v FROM events WHERE aggregate_id = $1
), ok AS (
    SELECT v FROM cur WHERE $3::bigint IS NULL OR v = $3
), key AS (
    INSERT INTO idempotency_keys (key, aggregate_id, first_version, last_version)
    SELECT $4, $1, ok.v + 1, ok.v + $5 FROM ok WHERE $4::text IS NOT NULL
    ON CONFLICT (key) DO NOTHING
    RETURNING key
), ins AS (
    INSERT INTO events (event_id, aggregate_id, aggregate_type, event_type, event_data, metadata,
                        version, timestamp, encrypted_fields)
    SELECT coalesce(e.event_id, gen_random_uuid()), $1, $2, e.event_type, e.event_data, e.metadata,
           ok.v + e.n, coalesce(e.ts, now()), ARRAY(SELECT jsonb_array_elements_text(e.enc))
    FROM ok, unnest($6::uuid[], $7::text[], $8::jsonb[], $9::jsonb[], $10::timestamptz[], $11::jsonb[])
             WITH ORDINALITY AS e(event_id, event_type, event_data, metadata, ts, enc, n)
    WHERE $4::text IS NULL OR EXISTS (SELECT 1 FROM key)
    RETURNING event_id, position, version
)
SELECT (SELECT v FROM cur) AS current,
       (SELECT count(*) FROM key) AS keyed,
       coalesce((SELECT array_agg(event_id ORDER BY version) FROM ins), '{}') AS ids,
       coalesce((SELECT array_agg(position ORDER BY version) FROM ins), '{}') AS positions,
       coalesce((SELECT min(version) FROM ins), 0) AS first_version";

const IDEMPOTENT_OUTCOME: &str = "
SELECT i.aggregate_id, i.first_version, i.last_version,
       coalesce(array_agg(e.event_id ORDER BY e.version) FILTER (WHERE e.event_id IS NOT NULL), '{}'),
       coalesce(array_agg(e.position ORDER BY e.version) FILTER (WHERE e.event_id IS NOT NULL), '{}')
FROM idempotency_keys i
LEFT JOIN events e ON e.aggregate_id = i.aggregate_id AND e.version BETWEEN i.first_version AND i.last_version
WHERE i.key = $1
GROUP BY i.aggregate_id, i.first_version, i.last_version";

/// The filter and partition clauses shared by every global read, parameters from `$first`:
/// event types, aggregate types, partition count, partition index.
pub(crate) fn filter_sql(first: usize) -> String {
    format!(
        "(${a}::text[] IS NULL OR event_type = ANY(${a}))
         AND (${b}::text[] IS NULL OR aggregate_type = ANY(${b}))
         AND (${c}::bigint <= 1
              OR ('x' || right(aggregate_id::text, 8))::bit(32)::bigint % ${c} = ${d}::bigint)",
        a = first,
        b = first + 1,
        c = first + 2,
        d = first + 3,
    )
}

fn list(v: &[String]) -> Option<&[String]> {
    (!v.is_empty()).then_some(v)
}

/// Parameters for [`filter_sql`].
pub(crate) struct FilterParams<'a> {
    event_types: Option<&'a [String]>,
    aggregate_types: Option<&'a [String]>,
    count: i64,
    index: i64,
}

impl<'a> FilterParams<'a> {
    pub(crate) fn new(filter: &'a EventFilter, partition: Partition) -> Self {
        Self {
            event_types: list(&filter.event_types),
            aggregate_types: list(&filter.aggregate_types),
            count: i64::from(partition.count),
            index: i64::from(partition.index),
        }
    }

    pub(crate) fn push<'s>(&'s self, params: &mut Vec<(&'s (dyn ToSql + Sync), Type)>) {
        params.push((&self.event_types, Type::TEXT_ARRAY));
        params.push((&self.aggregate_types, Type::TEXT_ARRAY));
        params.push((&self.count, Type::INT8));
        params.push((&self.index, Type::INT8));
    }
}

/// The commit-safe read: only below the oldest running transaction's id, so an event is
/// never returned while an earlier-ordered one could still commit.
pub(crate) fn read_all_sql() -> String {
    format!(
        "SELECT {EVENT_COLUMNS_SKIPPABLE} FROM events
         WHERE (transaction_id, position) > ($1::xid8, $2::bigint)
           AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
           AND {}
         ORDER BY transaction_id, position
         LIMIT $7",
        filter_sql(3)
    )
}

pub(crate) async fn read_all(
    client: &Client,
    after: Checkpoint,
    filter: &EventFilter,
    partition: Partition,
    limit: usize,
) -> Result<Vec<DomainEvent>, StoreError> {
    let xid = Xid8(after.transaction_id);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let fp = FilterParams::new(filter, partition);
    let mut params: Vec<(&(dyn ToSql + Sync), Type)> = vec![(&xid, Type::XID8), (&after.position, Type::INT8)];
    fp.push(&mut params);
    params.push((&limit, Type::INT8));
    params.push((&filter.skip_metadata, Type::BOOL));
    let rows = client.query_typed(&read_all_sql(), &params).await.map_err(map)?;
    rows.iter().map(event_from_row).collect()
}

pub(crate) async fn read_aggregate(
    client: &Client,
    aggregate_id: Uuid,
    bound: ReadBound,
) -> Result<Vec<DomainEvent>, StoreError> {
    let (after, upto, at): (i64, i64, Option<DateTime<Utc>>) = match bound {
        ReadBound::All => (0, i64::MAX, None),
        ReadBound::Versions { after, upto } => (after, upto, None),
        ReadBound::At(at) => (0, i64::MAX, Some(at)),
    };
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events
         WHERE aggregate_id = $1 AND version > $2 AND version <= $3
           AND ($4::timestamptz IS NULL OR timestamp <= $4)
         ORDER BY version"
    );
    let rows = client
        .query_typed(
            &sql,
            &[(&aggregate_id, Type::UUID), (&after, Type::INT8), (&upto, Type::INT8), (&at, Type::TIMESTAMPTZ)],
        )
        .await
        .map_err(map)?;
    rows.iter().map(event_from_row).collect()
}

/// Decodes one `events` row; a row that does not decode names its position.
pub(crate) fn event_from_row(row: &Row) -> Result<DomainEvent, StoreError> {
    let position: i64 = row.try_get(0).map_err(|e| StoreError::Corrupt { position: -1, reason: e.to_string() })?;
    let corrupt = |e: tokio_postgres::Error| StoreError::Corrupt { position, reason: describe(&e) };
    let xid: Xid8 = row.try_get(1).map_err(corrupt)?;
    let data: RawJson = row.try_get(6).map_err(corrupt)?;
    // NULL when the reader asked to skip it.
    let metadata = match row.try_get::<_, Option<RawJson>>(7).map_err(corrupt)? {
        Some(m) => m,
        None => RawJson(RawValue::from_string("null".to_owned()).expect("`null` is JSON")),
    };
    Ok(DomainEvent {
        position,
        transaction_id: xid.0,
        event_id: row.try_get(2).map_err(corrupt)?,
        aggregate_id: row.try_get(3).map_err(corrupt)?,
        aggregate_type: row.try_get(4).map_err(corrupt)?,
        event_type: row.try_get(5).map_err(corrupt)?,
        event_data: data.0,
        metadata: metadata.0,
        version: row.try_get(8).map_err(corrupt)?,
        timestamp: row.try_get(9).map_err(corrupt)?,
        encrypted_fields: row.try_get(10).map_err(corrupt)?,
    })
}

async fn current_version(client: &Client, aggregate_id: Uuid) -> Result<i64, StoreError> {
    let row = client
        .query_typed_one(
            "SELECT coalesce(max(version), 0) FROM events WHERE aggregate_id = $1",
            &[(&aggregate_id, Type::UUID)],
        )
        .await
        .map_err(map)?;
    Ok(row.get(0))
}

async fn stored_outcome(client: &Client, key: &str) -> Result<Option<AppendOutcome>, StoreError> {
    let row = client.query_typed_opt(IDEMPOTENT_OUTCOME, &[(&key, Type::TEXT)]).await.map_err(map)?;
    Ok(row.map(|row| AppendOutcome {
        aggregate_id: row.get(0),
        first_version: row.get(1),
        last_version: row.get(2),
        event_ids: row.get(3),
        positions: row.get(4),
        deduplicated: true,
    }))
}

impl EventStore for PgStore {
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        if request.events.is_empty() {
            return Err(StoreError::InvalidInput(format!(
                "append to aggregate {}: no events given",
                request.aggregate_id
            )));
        }
        let n = request.events.len() as i64;
        let expected = match request.expected_version {
            ExpectedVersion::Any => None,
            ExpectedVersion::Exact(v) => Some(v),
        };
        let ids: Vec<Option<Uuid>> = request.events.iter().map(|e| e.event_id).collect();
        let types: Vec<&str> = request.events.iter().map(|e| e.event_type.as_str()).collect();
        let data: Vec<&serde_json::Value> = request.events.iter().map(|e| &e.event_data).collect();
        let metadata: Vec<serde_json::Value> = request
            .events
            .iter()
            .map(|e| serde_json::to_value(&e.metadata))
            .collect::<Result<_, _>>()
            .map_err(|e| StoreError::InvalidInput(format!("metadata: {e}")))?;
        let timestamps: Vec<Option<DateTime<Utc>>> = request.events.iter().map(|e| e.timestamp).collect();
        let encrypted: Vec<serde_json::Value> =
            request.events.iter().map(|e| serde_json::json!(e.encrypted_fields)).collect();
        let key = request.idempotency_key.as_deref();

        let client = self.client().await?;
        let result = client
            .query_typed_one(
                APPEND,
                &[
                    (&request.aggregate_id, Type::UUID),
                    (&request.aggregate_type, Type::TEXT),
                    (&expected, Type::INT8),
                    (&key, Type::TEXT),
                    (&n, Type::INT8),
                    (&ids, Type::UUID_ARRAY),
                    (&types, Type::TEXT_ARRAY),
                    (&data, Type::JSONB_ARRAY),
                    (&metadata, Type::JSONB_ARRAY),
                    (&timestamps, Type::TIMESTAMPTZ_ARRAY),
                    (&encrypted, Type::JSONB_ARRAY),
                ],
            )
            .await;
        let row = match result {
            Ok(row) => row,
            Err(e) if is_unique_violation(&e) => {
                let constraint = e.as_db_error().and_then(|d| d.constraint()).unwrap_or_default().to_owned();
                if constraint == "events_event_id_key" {
                    return Err(StoreError::InvalidInput(format!(
                        "append to aggregate {}: an event id is already stored ({})",
                        request.aggregate_id,
                        describe(&e)
                    )));
                }
                if let (Some(key), "idempotency_keys_pkey") = (key, constraint.as_str()) {
                    if let Some(outcome) = stored_outcome(&client, key).await? {
                        return Ok(outcome);
                    }
                }
                // Another append took these versions between our read and our insert.
                let actual = current_version(&client, request.aggregate_id).await?;
                return Err(StoreError::Conflict {
                    aggregate_id: request.aggregate_id,
                    expected: expected.unwrap_or(actual - 1),
                    actual,
                });
            }
            Err(e) => return Err(map(e)),
        };
        let current: i64 = row.get(0);
        let keyed: i64 = row.get(1);
        let event_ids: Vec<Uuid> = row.get(2);
        let positions: Vec<i64> = row.get(3);
        let first_version: i64 = row.get(4);
        if let (Some(key), 0) = (key, keyed) {
            if let Some(outcome) = stored_outcome(&client, key).await? {
                if outcome.aggregate_id != request.aggregate_id {
                    return Err(StoreError::InvalidInput(format!(
                        "idempotency key {key:?} was used for aggregate {}, not {}",
                        outcome.aggregate_id, request.aggregate_id
                    )));
                }
                return Ok(outcome);
            }
        }
        if event_ids.is_empty() {
            return Err(StoreError::Conflict {
                aggregate_id: request.aggregate_id,
                expected: expected.unwrap_or(current),
                actual: current,
            });
        }
        Ok(AppendOutcome {
            aggregate_id: request.aggregate_id,
            first_version,
            last_version: first_version + n - 1,
            event_ids,
            positions,
            deduplicated: false,
        })
    }

    async fn read_aggregate(&self, aggregate_id: Uuid, bound: ReadBound) -> Result<Vec<DomainEvent>, StoreError> {
        let client = self.client().await?;
        read_aggregate(&client, aggregate_id, bound).await
    }

    async fn read_committed(
        &self,
        after: i64,
        filter: &EventFilter,
        limit: usize,
    ) -> Result<Vec<DomainEvent>, StoreError> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE position > $1 AND {} ORDER BY position LIMIT $6",
            filter_sql(2)
        );
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let fp = FilterParams::new(filter, Partition::WHOLE);
        let mut params: Vec<(&(dyn ToSql + Sync), Type)> = vec![(&after, Type::INT8)];
        fp.push(&mut params);
        params.push((&limit, Type::INT8));
        let client = self.client().await?;
        let rows = client.query_typed(&sql, &params).await.map_err(map)?;
        rows.iter().map(event_from_row).collect()
    }

    async fn read_all(
        &self,
        after: Checkpoint,
        filter: &EventFilter,
        partition: Partition,
        limit: usize,
    ) -> Result<Vec<DomainEvent>, StoreError> {
        let client = self.client().await?;
        read_all(&client, after, filter, partition, limit).await
    }
}
