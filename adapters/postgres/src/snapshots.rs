//! Snapshots of aggregate rows on PostgreSQL: written with the rows (in a batch's commit
//! statement, or in a rebuild's transaction), dropped with the rows a rebuild redoes,
//! and the one time travel starts from.

use postgres_types::{ToSql, Type};
use projector::store::snapshots::{row_key, Snapshot, SnapshotQuery, Snapshots};
use projector::{StoreError, Value};
use tokio_postgres::{Client, Row};

use crate::dead_letters::renumbered;
use crate::error::map;
use crate::PgStore;

const WRITE_SNAPSHOTS: &str = include_str!("../sql/write_snapshots.sql");
const COMMIT_SNAPSHOTS: &str = include_str!("../sql/commit_snapshots.sql");
const LATEST_SNAPSHOT: &str = include_str!("../sql/latest_snapshot.sql");
const CLEAR_SNAPSHOTS: &str = include_str!("../sql/clear_snapshots.sql");

impl Snapshots for PgStore {
    async fn latest_snapshot(&self, query: &SnapshotQuery<'_>) -> Result<Option<Snapshot>, StoreError> {
        let below = query.below_version.unwrap_or(i64::MAX);
        let handler_version = i32::try_from(query.handler_version).unwrap_or(i32::MAX);
        let client = self.client().await?;
        let row = client
            .query_typed_opt(
                LATEST_SNAPSHOT,
                &[
                    (&query.projection, Type::TEXT),
                    (&query.row_key, Type::TEXT),
                    (&query.aggregate_id, Type::UUID),
                    (&handler_version, Type::INT4),
                    (&query.upcasters, Type::TEXT),
                    (&below, Type::INT8),
                    (&query.at, Type::TIMESTAMPTZ),
                ],
            )
            .await
            .map_err(map)?;
        row.as_ref().map(decode).transpose()
    }
}

/// Snapshots as the parameter arrays of `write_snapshots.sql`.
pub(crate) struct SnapshotArrays {
    projections: Vec<String>,
    row_keys: Vec<String>,
    versions: Vec<i64>,
    aggregates: Vec<uuid::Uuid>,
    instants: Vec<chrono::DateTime<chrono::Utc>>,
    handler_versions: Vec<i32>,
    upcasters: Vec<String>,
    rows: Vec<String>,
}

impl SnapshotArrays {
    pub(crate) fn new(snapshots: &[Snapshot]) -> Self {
        Self {
            projections: snapshots.iter().map(|s| s.projection.clone()).collect(),
            row_keys: snapshots.iter().map(|s| s.row_key.clone()).collect(),
            versions: snapshots.iter().map(|s| s.version).collect(),
            aggregates: snapshots.iter().map(|s| s.aggregate_id).collect(),
            instants: snapshots.iter().map(|s| s.at).collect(),
            handler_versions: snapshots.iter().map(|s| i32::try_from(s.handler_version).unwrap_or(i32::MAX)).collect(),
            upcasters: snapshots.iter().map(|s| s.upcasters.clone()).collect(),
            rows: snapshots.iter().map(|s| s.row.clone()).collect(),
        }
    }

    pub(crate) fn push<'a>(&'a self, params: &mut Vec<(&'a (dyn ToSql + Sync), Type)>) {
        params.push((&self.projections, Type::TEXT_ARRAY));
        params.push((&self.row_keys, Type::TEXT_ARRAY));
        params.push((&self.versions, Type::INT8_ARRAY));
        params.push((&self.aggregates, Type::UUID_ARRAY));
        params.push((&self.instants, Type::TIMESTAMPTZ_ARRAY));
        params.push((&self.handler_versions, Type::INT4_ARRAY));
        params.push((&self.upcasters, Type::TEXT_ARRAY));
        params.push((&self.rows, Type::TEXT_ARRAY));
    }
}

/// The snapshot write of a batch commit, with its arrays from parameter `$first`, to
/// stand as a CTE body after CTE `guard`.
pub(crate) fn commit_snapshots_sql(first: usize) -> String {
    format!(", snaps AS (\n{})\n", renumbered(COMMIT_SNAPSHOTS, first - 1))
}

/// Keeps `snapshots` (inside the caller's transaction).
pub(crate) async fn write(client: &Client, snapshots: &[Snapshot]) -> Result<(), StoreError> {
    if snapshots.is_empty() {
        return Ok(());
    }
    let arrays = SnapshotArrays::new(snapshots);
    let mut params = Vec::new();
    arrays.push(&mut params);
    client.query_typed(WRITE_SNAPSHOTS, &params).await.map_err(map)?;
    Ok(())
}

/// Drops the snapshots of `projection`'s rows with these keys, or of all its rows.
pub(crate) async fn clear(client: &Client, projection: &str, keys: Option<&[Vec<Value>]>) -> Result<(), StoreError> {
    let keys: Option<Vec<String>> = keys.map(|keys| keys.iter().map(|k| row_key(k)).collect());
    client.query_typed(CLEAR_SNAPSHOTS, &[(&projection, Type::TEXT), (&keys, Type::TEXT_ARRAY)]).await.map_err(map)?;
    Ok(())
}

fn decode(row: &Row) -> Result<Snapshot, StoreError> {
    let bad = |e: tokio_postgres::Error| StoreError::Database(format!("a snapshot row: {e}"));
    Ok(Snapshot {
        projection: row.try_get(0).map_err(bad)?,
        row_key: row.try_get(1).map_err(bad)?,
        version: row.try_get(2).map_err(bad)?,
        aggregate_id: row.try_get(3).map_err(bad)?,
        at: row.try_get(4).map_err(bad)?,
        handler_version: row.try_get::<_, i32>(5).map_err(bad)?.max(0) as u32,
        upcasters: row.try_get(6).map_err(bad)?,
        row: row.try_get(7).map_err(bad)?,
    })
}
