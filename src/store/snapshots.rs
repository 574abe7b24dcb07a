//! Snapshots of aggregate rows: what time travel needs from a store to start from a
//! row's state at some version instead of from its first event.
//!
//! A projection kept in aggregate-version order may keep the state of each row every N
//! versions (`snapshots: { every: N }`). Snapshots are written with the rows that reach
//! those versions: in a batch's commit and in a rebuild's transaction
//! ([`RowChanges::snapshots`](crate::store::RowChanges)). A snapshot is used only by
//! the handler version and the upcaster chains that took it; a migration drops the
//! snapshots of the aggregates it rewrites, and a rebuild those of the rows it redoes.
//!
//! The row is kept as JSON text of its values in schema order ([`encode_row`]), so one
//! table holds every projection's snapshots.

use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

use crate::error::Result;
use crate::read_model::{ColumnType, TableSchema, Value};

/// A row as it was after the event at `version` of its aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub projection: String,
    /// The row's key ([`row_key`]).
    pub row_key: String,
    pub version: i64,
    pub aggregate_id: Uuid,
    /// The timestamp of the event at `version`.
    pub at: DateTime<Utc>,
    /// [`crate::ProjectionHandler::version`] of the handler that folded it.
    pub handler_version: u32,
    /// The upcaster chains it was folded through ([`chains`]).
    pub upcasters: String,
    /// The whole row (key, values, version) as [`encode_row`] writes it.
    pub row: String,
}

/// Which snapshot time travel may start from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotQuery<'a> {
    pub projection: &'a str,
    pub row_key: &'a str,
    pub aggregate_id: Uuid,
    /// The instant travelled to (`None`: now).
    pub at: Option<DateTime<Utc>>,
    /// Only snapshots below this version (the aggregate is parked from it on).
    pub below_version: Option<i64>,
    pub handler_version: u32,
    pub upcasters: &'a str,
}

/// Stores that keep snapshots.
pub trait Snapshots {
    /// The snapshot with the highest version that fits `query`: of this row and
    /// aggregate, taken by this handler version through these chains, below
    /// `below_version`, and, with `at`, such that no event of the aggregate up to the
    /// snapshot's version is stamped after `at` (so it holds exactly the events a
    /// replay up to `at` folds before its version, even in a history imported with
    /// timestamps out of order). `None` when none fits.
    async fn latest_snapshot(&self, query: &SnapshotQuery<'_>) -> Result<Option<Snapshot>>;
}

/// The upcaster chains as a snapshot records them.
pub fn chains(upcasters: &crate::upcast::Upcasters) -> String {
    upcasters.describe().join("; ")
}

/// A row key's values as the text snapshots are keyed by.
pub fn row_key(key: &[Value]) -> String {
    serde_json::Value::Array(key.iter().map(Value::to_json).collect()).to_string()
}

/// A whole row (values in schema order) as JSON text; a JSON column's value is wrapped
/// in a one-element array, so that a JSON `null` and a missing value stay apart.
pub fn encode_row(schema: &TableSchema, values: &[Value]) -> String {
    let items = schema.all_columns().zip(values).map(|(column, value)| match (column.ty, value) {
        (_, Value::Null) => serde_json::Value::Null,
        (ColumnType::Json, v) => serde_json::Value::Array(vec![v.to_json()]),
        (_, v) => v.to_json(),
    });
    serde_json::Value::Array(items.collect()).to_string()
}

/// The values [`encode_row`] wrote, typed by the schema's columns.
pub fn decode_row(schema: &TableSchema, text: &str) -> std::result::Result<Vec<Value>, String> {
    let items: Vec<serde_json::Value> =
        serde_json::from_str(text).map_err(|e| format!("a snapshot row is not a JSON array: {e}"))?;
    let columns: Vec<_> = schema.all_columns().collect();
    if items.len() != columns.len() {
        return Err(format!(
            "a snapshot row has {} values, table {} has {} columns",
            items.len(),
            schema.name,
            columns.len()
        ));
    }
    columns
        .iter()
        .zip(items)
        .map(|(column, item)| {
            let bad = || format!("snapshot column {}: {item} is not a {:?} value", column.name, column.ty);
            if item.is_null() {
                return Ok(Value::Null);
            }
            Ok(match column.ty {
                ColumnType::Text => Value::Text(item.as_str().ok_or_else(bad)?.to_owned()),
                ColumnType::BigInt => Value::BigInt(item.as_i64().ok_or_else(bad)?),
                ColumnType::Bool => Value::Bool(item.as_bool().ok_or_else(bad)?),
                ColumnType::Uuid => Value::Uuid(item.as_str().and_then(|s| Uuid::parse_str(s).ok()).ok_or_else(bad)?),
                ColumnType::Timestamp => Value::Timestamp(
                    item.as_str()
                        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                        .map(|t| t.with_timezone(&Utc))
                        .ok_or_else(bad)?,
                ),
                ColumnType::Date => Value::Date(
                    item.as_str().and_then(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()).ok_or_else(bad)?,
                ),
                ColumnType::Json => match item {
                    serde_json::Value::Array(mut wrapped) if wrapped.len() == 1 => Value::Json(wrapped.remove(0)),
                    _ => return Err(bad()),
                },
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read_model::Column;

    const SCHEMA: TableSchema = TableSchema {
        name: "t",
        key: &[Column::new("id", ColumnType::Uuid)],
        columns: &[
            Column::new("name", ColumnType::Text).nullable(),
            Column::new("n", ColumnType::BigInt),
            Column::new("on", ColumnType::Bool),
            Column::new("at", ColumnType::Timestamp),
            Column::new("day", ColumnType::Date),
            Column::new("doc", ColumnType::Json).nullable(),
            Column::new("nothing", ColumnType::Json).nullable(),
        ],
        version_column: Some("version"),
    };

    #[test]
    fn a_row_round_trips_with_every_type() {
        let row = vec![
            Value::Uuid(Uuid::from_u128(5)),
            Value::Null,
            Value::BigInt(-7),
            Value::Bool(true),
            Value::Timestamp(DateTime::parse_from_rfc3339("2026-01-31T12:00:00.123456Z").unwrap().to_utc()),
            Value::Date(NaiveDate::from_ymd_opt(2026, 2, 1).unwrap()),
            Value::Json(serde_json::json!({"a": [1, null]})),
            Value::Json(serde_json::Value::Null),
            Value::BigInt(12),
        ];
        assert_eq!(decode_row(&SCHEMA, &encode_row(&SCHEMA, &row)), Ok(row));
        assert!(decode_row(&SCHEMA, "[1]").unwrap_err().contains("has 1 values"));
        assert_eq!(row_key(&[Value::Uuid(Uuid::from_u128(5))]), "[\"00000000-0000-0000-0000-000000000005\"]");
    }
}
