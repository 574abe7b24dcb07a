//! Text encodings of timestamps, uuids and JSON in SQLite, events decoded from rows, and
//! read-model values to and from SQL.

use chrono::{DateTime, Datelike, NaiveDate, SecondsFormat, Utc};
use projector::{Checkpoint, Column, ColumnType, DomainEvent, StoreError, TableSchema, Value};
use rusqlite::types::{Value as SqlValue, ValueRef};
use serde_json::value::RawValue;
use uuid::Uuid;

/// RFC 3339 UTC with exactly six fractional digits and `Z`, so text order is time order.
pub(crate) fn format_ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The latest instant whose text form still sorts (year 9999).
pub(crate) fn max_ts() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("9999-12-31T23:59:59.999999Z").map_or(DateTime::<Utc>::MAX_UTC, |t| t.to_utc())
}

/// A checkpoint's transaction id as SQLite stores it (a signed integer).
pub(crate) fn tx_id(checkpoint: Checkpoint) -> Result<i64, StoreError> {
    i64::try_from(checkpoint.transaction_id)
        .map_err(|_| StoreError::InvalidInput(format!("checkpoint {checkpoint}: transaction id out of range")))
}

pub(crate) fn parse_ts(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("timestamp {s:?} is not RFC 3339: {e}"))
}

/// Timestamps must keep a four-digit year for text order to be time order.
pub(crate) fn check_ts_range(t: DateTime<Utc>, what: &str) -> Result<(), StoreError> {
    if (0..=9999).contains(&t.year()) {
        Ok(())
    } else {
        Err(StoreError::InvalidInput(format!("{what} {t} is outside the years 0000-9999 the embedded store can order")))
    }
}

pub(crate) fn format_date(d: NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

pub(crate) fn format_uuid(id: &Uuid) -> String {
    id.hyphenated().to_string()
}

/// Decodes an `events` row selected with the columns of `sql/read_all.sql`, in that
/// order. A value that does not decode is reported as [`StoreError::Corrupt`] with the
/// row's position.
pub(crate) fn decode_event(row: &rusqlite::Row<'_>) -> Result<DomainEvent, StoreError> {
    let position = match row.get_ref(0) {
        Ok(ValueRef::Integer(p)) => p,
        Ok(other) => {
            return Err(StoreError::Corrupt {
                position: 0,
                reason: format!("position is {:?}, not an integer", other.data_type()),
            })
        }
        Err(e) => return Err(StoreError::Database(format!("reading an event row: {e}"))),
    };
    let corrupt = |reason: String| StoreError::Corrupt { position, reason };
    let raw = |i: usize, name: &str| -> Result<ValueRef<'_>, StoreError> {
        row.get_ref(i).map_err(|e| corrupt(format!("column {name}: {e}")))
    };
    let text = |i: usize, name: &str| -> Result<&str, StoreError> {
        match raw(i, name)? {
            ValueRef::Text(t) => {
                std::str::from_utf8(t).map_err(|e| corrupt(format!("column {name} is not UTF-8: {e}")))
            }
            other => Err(corrupt(format!("column {name} is {:?}, not text", other.data_type()))),
        }
    };
    let integer = |i: usize, name: &str| -> Result<i64, StoreError> {
        match raw(i, name)? {
            ValueRef::Integer(v) => Ok(v),
            other => Err(corrupt(format!("column {name} is {:?}, not an integer", other.data_type()))),
        }
    };
    let uuid = |i: usize, name: &str| -> Result<Uuid, StoreError> {
        let s = text(i, name)?;
        Uuid::parse_str(s).map_err(|e| corrupt(format!("{name} {s:?} is not a uuid: {e}")))
    };
    let json = |i: usize, name: &str| -> Result<Box<RawValue>, StoreError> {
        let s = text(i, name)?;
        RawValue::from_string(s.to_owned()).map_err(|e| corrupt(format!("{name} is not JSON: {e}")))
    };

    let transaction_id = integer(1, "transaction_id")?;
    let transaction_id =
        u64::try_from(transaction_id).map_err(|_| corrupt(format!("transaction_id {transaction_id} is negative")))?;
    let timestamp = parse_ts(text(9, "timestamp")?).map_err(corrupt)?;
    let encrypted = text(10, "encrypted_fields")?;
    let encrypted_fields: Vec<String> = serde_json::from_str(encrypted)
        .map_err(|e| corrupt(format!("encrypted_fields {encrypted:?} is not a JSON array of strings: {e}")))?;
    Ok(DomainEvent {
        position,
        transaction_id,
        event_id: uuid(2, "event_id")?,
        aggregate_id: uuid(3, "aggregate_id")?,
        aggregate_type: text(4, "aggregate_type")?.to_owned(),
        event_type: text(5, "event_type")?.to_owned(),
        event_data: json(6, "event_data")?,
        metadata: json(7, "metadata")?,
        version: integer(8, "version")?,
        timestamp,
        encrypted_fields,
    })
}

/// SQLite column type of a read-model column.
pub(crate) fn sql_type(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::BigInt | ColumnType::Bool => "INTEGER",
        ColumnType::Text | ColumnType::Uuid | ColumnType::Timestamp | ColumnType::Date | ColumnType::Json => "TEXT",
    }
}

/// `"name"`, with embedded quotes doubled.
pub(crate) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn row_error(table: &TableSchema, reason: String) -> StoreError {
    StoreError::Row { table: table.name.to_owned(), reason }
}

/// A read-model value as SQLite stores it in `column`.
pub(crate) fn to_sql(table: &TableSchema, column: &Column, value: &Value) -> Result<SqlValue, StoreError> {
    let mismatch = || {
        row_error(table, format!("column {}: expected {:?}, got a {} value", column.name, column.ty, value.type_name()))
    };
    Ok(match (column.ty, value) {
        (_, Value::Null) => {
            if column.nullable {
                SqlValue::Null
            } else {
                return Err(row_error(table, format!("column {} is not nullable, got null", column.name)));
            }
        }
        (ColumnType::Text, Value::Text(s)) => SqlValue::Text(s.clone()),
        (ColumnType::BigInt, Value::BigInt(v)) => SqlValue::Integer(*v),
        (ColumnType::Bool, Value::Bool(b)) => SqlValue::Integer(i64::from(*b)),
        (ColumnType::Uuid, Value::Uuid(id)) => SqlValue::Text(format_uuid(id)),
        (ColumnType::Timestamp, Value::Timestamp(t)) => {
            check_ts_range(*t, &format!("{}.{}", table.name, column.name))?;
            SqlValue::Text(format_ts(*t))
        }
        (ColumnType::Date, Value::Date(d)) => {
            if !(0..=9999).contains(&d.year()) {
                return Err(row_error(
                    table,
                    format!("column {}: date {d} is outside the years 0000-9999", column.name),
                ));
            }
            SqlValue::Text(format_date(*d))
        }
        (ColumnType::Json, Value::Json(j)) => SqlValue::Text(j.to_string()),
        _ => return Err(mismatch()),
    })
}

/// A stored SQLite value of `column` as a read-model value.
pub(crate) fn from_sql(table: &TableSchema, column: &Column, value: ValueRef<'_>) -> Result<Value, StoreError> {
    let bad = |what: String| row_error(table, format!("column {}: {what}", column.name));
    let text = |v: ValueRef<'_>| -> Result<String, StoreError> {
        match v {
            ValueRef::Text(t) => {
                String::from_utf8(t.to_vec()).map_err(|e| bad(format!("stored text is not UTF-8: {e}")))
            }
            other => Err(bad(format!("expected text, found {:?}", other.data_type()))),
        }
    };
    if let ValueRef::Null = value {
        return Ok(Value::Null);
    }
    Ok(match column.ty {
        ColumnType::Text => Value::Text(text(value)?),
        ColumnType::BigInt => match value {
            ValueRef::Integer(v) => Value::BigInt(v),
            other => return Err(bad(format!("expected an integer, found {:?}", other.data_type()))),
        },
        ColumnType::Bool => match value {
            ValueRef::Integer(0) => Value::Bool(false),
            ValueRef::Integer(1) => Value::Bool(true),
            other => return Err(bad(format!("expected 0 or 1, found {other:?}"))),
        },
        ColumnType::Uuid => {
            let s = text(value)?;
            Value::Uuid(Uuid::parse_str(&s).map_err(|e| bad(format!("{s:?} is not a uuid: {e}")))?)
        }
        ColumnType::Timestamp => Value::Timestamp(parse_ts(&text(value)?).map_err(bad)?),
        ColumnType::Date => {
            let s = text(value)?;
            Value::Date(
                NaiveDate::parse_from_str(&s, "%Y-%m-%d").map_err(|e| bad(format!("{s:?} is not a date: {e}")))?,
            )
        }
        ColumnType::Json => {
            let s = text(value)?;
            Value::Json(serde_json::from_str(&s).map_err(|e| bad(format!("stored text is not JSON: {e}")))?)
        }
    })
}
