//! Snapshots of aggregate rows on the embedded store: written with the rows, dropped
//! with the rows a rebuild redoes and with the events a migration rewrites, and the one
//! time travel starts from.

use projector::store::snapshots::{row_key, Snapshot, SnapshotQuery, Snapshots};
use projector::{StoreError, Value};
use rusqlite::{params, Connection, Row};
use uuid::Uuid;

use crate::codec::{format_ts, format_uuid, parse_ts};
use crate::error::Context;
use crate::EmbeddedStore;

const WRITE_SNAPSHOT: &str = include_str!("../sql/write_snapshot.sql");
const LATEST_SNAPSHOT: &str = include_str!("../sql/latest_snapshot.sql");
const CLEAR_SNAPSHOTS: &str = include_str!("../sql/clear_snapshots.sql");
const CLEAR_ROW_SNAPSHOTS: &str = include_str!("../sql/clear_row_snapshots.sql");
const DROP_AGGREGATE_SNAPSHOTS: &str = include_str!("../sql/drop_aggregate_snapshots.sql");
const DROP_RESTORED_SNAPSHOTS: &str = include_str!("../sql/drop_restored_snapshots.sql");

impl Snapshots for EmbeddedStore {
    async fn latest_snapshot(&self, query: &SnapshotQuery<'_>) -> Result<Option<Snapshot>, StoreError> {
        let conn = self.lock();
        let context = || format!("read the latest snapshot of {} row {}", query.projection, query.row_key);
        let mut stmt = conn.prepare_cached(LATEST_SNAPSHOT).context(context)?;
        let mut rows = stmt
            .query(params![
                query.projection,
                query.row_key,
                format_uuid(&query.aggregate_id),
                query.handler_version,
                query.upcasters,
                query.below_version.unwrap_or(i64::MAX),
                query.at.map(format_ts),
            ])
            .context(context)?;
        rows.next().context(context)?.map(decode).transpose()
    }
}

/// Keeps `snapshots` (inside the caller's transaction).
pub(crate) fn write(conn: &Connection, snapshots: &[Snapshot]) -> Result<(), StoreError> {
    if snapshots.is_empty() {
        return Ok(());
    }
    let context = || "write snapshots";
    let mut stmt = conn.prepare_cached(WRITE_SNAPSHOT).context(context)?;
    for s in snapshots {
        stmt.execute(params![
            s.projection,
            s.row_key,
            s.version,
            format_uuid(&s.aggregate_id),
            format_ts(s.at),
            s.handler_version,
            s.upcasters,
            s.row,
        ])
        .context(context)?;
    }
    Ok(())
}

/// Drops the snapshots of `projection`'s rows with these keys, or of all its rows.
pub(crate) fn clear(conn: &Connection, projection: &str, keys: Option<&[Vec<Value>]>) -> Result<(), StoreError> {
    let context = || format!("drop the snapshots of {projection}");
    match keys {
        None => {
            conn.prepare_cached(CLEAR_SNAPSHOTS).and_then(|mut s| s.execute([projection])).context(context)?;
        }
        Some(keys) => {
            let mut stmt = conn.prepare_cached(CLEAR_ROW_SNAPSHOTS).context(context)?;
            for key in keys {
                stmt.execute(params![projection, row_key(key)]).context(context)?;
            }
        }
    }
    Ok(())
}

/// Drops every snapshot of these aggregates (their events are being rewritten).
pub(crate) fn drop_aggregates(conn: &Connection, aggregates: impl IntoIterator<Item = Uuid>) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached(DROP_AGGREGATE_SNAPSHOTS).context(|| "drop snapshots")?;
    let mut seen = std::collections::HashSet::new();
    for id in aggregates.into_iter().filter(|id| seen.insert(*id)) {
        stmt.execute([format_uuid(&id)]).context(|| format!("drop the snapshots of aggregate {id}"))?;
    }
    Ok(())
}

/// Drops the snapshots of the aggregates whose originals a restore chunk puts back.
pub(crate) fn drop_restored(conn: &Connection, migration: i64, from: i64, to: i64) -> Result<(), StoreError> {
    conn.execute(DROP_RESTORED_SNAPSHOTS, params![migration, from, to])
        .context(|| format!("migration {migration}: drop the snapshots of restored aggregates"))?;
    Ok(())
}

fn decode(row: &Row<'_>) -> Result<Snapshot, StoreError> {
    let bad = |what: String| StoreError::Database(format!("a snapshot row: {what}"));
    let get = |i: usize| -> Result<String, StoreError> { row.get(i).map_err(|e| bad(e.to_string())) };
    let aggregate = get(3)?;
    Ok(Snapshot {
        projection: get(0)?,
        row_key: get(1)?,
        version: row.get(2).map_err(|e| bad(e.to_string()))?,
        aggregate_id: Uuid::parse_str(&aggregate).map_err(|e| bad(format!("{aggregate:?} is not a uuid: {e}")))?,
        at: parse_ts(&get(4)?).map_err(bad)?,
        handler_version: row.get(5).map_err(|e| bad(e.to_string()))?,
        upcasters: get(6)?,
        row: get(7)?,
    })
}
