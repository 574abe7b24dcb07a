//! `EventStore` on PostgreSQL: single-statement appends with optimistic concurrency and
//! idempotency keys, and commit-safe global reads.

use chrono::{DateTime, Utc};
use postgres_types::{ToSql, Type};
use projector::store::rules::{self, StoredKey};
use projector::{
    AppendOutcome, AppendRequest, AppendWith, Checkpoint, DomainEvent, EventFilter, EventStore, ExpectedVersion,
    Partition, ReadBound, StoreError,
};
use serde_json::value::RawValue;
use tokio_postgres::{Client, Row};
use uuid::Uuid;

use crate::error::{describe, is_unique_violation, map};
use crate::types::{RawJson, Xid8};
use crate::PgStore;

const APPEND: &str = include_str!("../sql/append.sql");
const READ_IDEMPOTENCY_KEY: &str = include_str!("../sql/read_idempotency_key.sql");
const AGGREGATE_VERSION: &str = include_str!("../sql/aggregate_version.sql");
const READ_ALL: &str = include_str!("../sql/read_all.sql");
const READ_COMMITTED: &str = include_str!("../sql/read_committed.sql");
const READ_AGGREGATE: &str = include_str!("../sql/read_aggregate.sql");

fn list(v: &[String]) -> Option<&[String]> {
    (!v.is_empty()).then_some(v)
}

/// The filter and partition parameters every global read takes, in this order: event
/// types, aggregate types, partition count, partition index.
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
    let rows = client.query_typed(READ_ALL, &params).await.map_err(map)?;
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
        ReadBound::VersionsAt { after, at } => (after, i64::MAX, Some(at)),
    };
    let rows = client
        .query_typed(
            READ_AGGREGATE,
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
    let row = client.query_typed_one(AGGREGATE_VERSION, &[(&aggregate_id, Type::UUID)]).await.map_err(map)?;
    Ok(row.get(0))
}

async fn stored_key(client: &Client, key: &str) -> Result<Option<StoredKey>, StoreError> {
    let row = client.query_typed_opt(READ_IDEMPOTENCY_KEY, &[(&key, Type::TEXT)]).await.map_err(map)?;
    Ok(row.map(|row| {
        let aggregate_id = row.get(0);
        StoredKey {
            aggregate_id,
            fingerprint: row.get(1),
            outcome: AppendOutcome {
                aggregate_id,
                first_version: row.get(2),
                last_version: row.get(3),
                event_ids: row.get(4),
                positions: row.get(5),
                deduplicated: true,
            },
        }
    }))
}

/// The answer to a key that is already stored: the first outcome or a refusal
/// ([`rules::replay_idempotent`]); `None` when the key is not there after all.
async fn replay(
    client: &Client,
    key: &str,
    request: &AppendRequest,
    fingerprint: &str,
) -> Result<Option<AppendOutcome>, StoreError> {
    match stored_key(client, key).await? {
        Some(stored) => rules::replay_idempotent_print(key, stored, request, fingerprint).map(Some),
        None => Ok(None),
    }
}

/// The line of `append.sql` after which audit rows go.
const AUDIT_HERE: &str = "-- audit rows\n";

/// `append.sql` with the CTEs that write `audit`'s rows (their arrays after the
/// statement's own parameters) when events were inserted; as it is without audit rows.
fn append_statement(audit: bool) -> std::borrow::Cow<'static, str> {
    if !audit {
        return std::borrow::Cow::Borrowed(APPEND);
    }
    let (head, tail) = APPEND.split_once(AUDIT_HERE).expect("append.sql has an `-- audit rows` line");
    let guard = ", guard AS (SELECT 1 FROM ins LIMIT 1)\n";
    std::borrow::Cow::Owned(format!("{head}{guard}{}{tail}", crate::keys::audit_cte(APPEND_PARAMS + 1)))
}

/// Parameters of `append.sql`.
const APPEND_PARAMS: usize = 12;

impl EventStore for PgStore {
    async fn current_version(&self, aggregate_id: Uuid) -> Result<i64, StoreError> {
        let client = self.client().await?;
        current_version(&client, aggregate_id).await
    }

    async fn append_with(&self, request: AppendRequest, with: AppendWith) -> Result<AppendOutcome, StoreError> {
        rules::check_append(&request, self.max_payload_bytes())?;
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
        let print = with.fingerprint.clone().unwrap_or_else(|| rules::request_fingerprint(&request));
        let fingerprint = key.map(|_| print.as_str());
        let audit = (!with.audit.is_empty()).then(|| crate::keys::AuditColumns::new(&with.audit)).transpose()?;

        let client = self.client().await?;
        let mut params: Vec<(&(dyn ToSql + Sync), Type)> = vec![
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
            (&fingerprint, Type::TEXT),
        ];
        debug_assert_eq!(params.len(), APPEND_PARAMS);
        if let Some(audit) = &audit {
            audit.push(&mut params);
        }
        let result = client.query_typed_one(&append_statement(audit.is_some()), &params).await;
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
                // A concurrent append stored the same key first.
                if let (Some(key), "idempotency_keys_pkey") = (key, constraint.as_str()) {
                    if let Some(outcome) = replay(&client, key, &request, &print).await? {
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
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::NUMERIC_VALUE_OUT_OF_RANGE) => {
                // The versions would pass the largest bigint: say so, as the rule words it.
                let current = current_version(&client, request.aggregate_id).await?;
                rules::last_appended_version(request.aggregate_id, current, request.events.len())?;
                return Err(map(e));
            }
            Err(e) => return Err(map(e)),
        };
        let current: i64 = row.get(0);
        let keyed: i64 = row.get(1);
        let event_ids: Vec<Uuid> = row.get(2);
        let positions: Vec<i64> = row.get(3);
        let first_version: i64 = row.get(4);
        if let (Some(key), 0) = (key, keyed) {
            if let Some(outcome) = replay(&client, key, &request, &print).await? {
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
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let fp = FilterParams::new(filter, Partition::WHOLE);
        let mut params: Vec<(&(dyn ToSql + Sync), Type)> = vec![(&after, Type::INT8)];
        fp.push(&mut params);
        params.push((&limit, Type::INT8));
        let client = self.client().await?;
        let rows = client.query_typed(READ_COMMITTED, &params).await.map_err(map)?;
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

    fn max_payload_bytes(&self) -> usize {
        PgStore::max_payload_bytes(self)
    }
}
