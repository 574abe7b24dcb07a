//! Read-model tables as the runtime sees them: a schema, typed values, and row codecs.
//!
//! A read model is an ordinary SQL table. The handler works on its own Rust row type;
//! stores move rows as [`Value`] tuples in schema order, so one store implementation
//! serves every projection.

use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

/// SQL type of a read-model column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    Text,
    BigInt,
    Bool,
    Uuid,
    Timestamp,
    Date,
    Json,
}

/// How a batch's change to a column is written when other writers may touch the row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merge {
    /// The batch's value replaces the stored one.
    Replace,
    /// The batch adds `new - loaded` to the stored value (counters fed by several
    /// partitions at once stay exact without locking the row for the whole batch).
    Add,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    pub ty: ColumnType,
    pub nullable: bool,
    pub merge: Merge,
}

impl Column {
    pub const fn new(name: &'static str, ty: ColumnType) -> Self {
        Self { name, ty, nullable: false, merge: Merge::Replace }
    }

    pub const fn nullable(mut self) -> Self {
        self.nullable = true;
        self
    }

    pub const fn additive(mut self) -> Self {
        self.merge = Merge::Add;
        self
    }
}

/// A read-model table: key columns, value columns, and the version column the runtime
/// maintains for projections kept in aggregate-version order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableSchema {
    pub name: &'static str,
    pub key: &'static [Column],
    pub columns: &'static [Column],
    /// Present exactly for [`Ordering::AggregateVersion`](crate::Ordering) projections.
    pub version_column: Option<&'static str>,
}

impl TableSchema {
    /// All columns in storage order: key, values, then the version column.
    pub fn all_columns(&self) -> impl Iterator<Item = Column> + '_ {
        self.key
            .iter()
            .chain(self.columns.iter())
            .copied()
            .chain(self.version_column.map(|name| Column::new(name, ColumnType::BigInt)))
    }

    pub fn has_additive_columns(&self) -> bool {
        self.columns.iter().any(|c| c.merge == Merge::Add)
    }
}

/// One SQL value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Text(String),
    BigInt(i64),
    Bool(bool),
    Uuid(Uuid),
    Timestamp(DateTime<Utc>),
    Date(NaiveDate),
    Json(serde_json::Value),
}

impl Value {
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Text(_) => "text",
            Value::BigInt(_) => "bigint",
            Value::Bool(_) => "bool",
            Value::Uuid(_) => "uuid",
            Value::Timestamp(_) => "timestamp",
            Value::Date(_) => "date",
            Value::Json(_) => "json",
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The value as JSON, for display and `--json` output.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Null => J::Null,
            Value::Text(v) => J::String(v.clone()),
            Value::BigInt(v) => J::from(*v),
            Value::Bool(v) => J::Bool(*v),
            Value::Uuid(v) => J::String(v.to_string()),
            Value::Timestamp(v) => J::String(v.to_rfc3339()),
            Value::Date(v) => J::String(v.to_string()),
            Value::Json(v) => v.clone(),
        }
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_owned())
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::BigInt(v)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl From<Uuid> for Value {
    fn from(v: Uuid) -> Self {
        Value::Uuid(v)
    }
}
impl From<DateTime<Utc>> for Value {
    fn from(v: DateTime<Utc>) -> Self {
        Value::Timestamp(v)
    }
}
impl From<NaiveDate> for Value {
    fn from(v: NaiveDate) -> Self {
        Value::Date(v)
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// A stored value did not have the shape the row type expects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: expected {expected}, found {found}")]
pub struct RowError {
    pub column: String,
    pub expected: &'static str,
    pub found: &'static str,
}

/// Reads typed values out of a stored row, column by column, in schema order.
#[derive(Debug)]
pub struct RowReader<'a> {
    values: std::slice::Iter<'a, Value>,
    schema_columns: std::vec::IntoIter<Column>,
}

macro_rules! reader {
    ($name:ident, $opt:ident, $variant:ident, $ty:ty, $label:literal) => {
        pub fn $name(&mut self) -> Result<$ty, RowError> {
            let (column, value) = self.next_value();
            match value {
                Value::$variant(v) => Ok(v.clone()),
                other => Err(RowError { column, expected: $label, found: other.type_name() }),
            }
        }

        pub fn $opt(&mut self) -> Result<Option<$ty>, RowError> {
            let (column, value) = self.next_value();
            match value {
                Value::Null => Ok(None),
                Value::$variant(v) => Ok(Some(v.clone())),
                other => Err(RowError { column, expected: $label, found: other.type_name() }),
            }
        }
    };
}

impl<'a> RowReader<'a> {
    pub fn new(schema: &TableSchema, values: &'a [Value]) -> Self {
        Self { values: values.iter(), schema_columns: schema.all_columns().collect::<Vec<_>>().into_iter() }
    }

    fn next_value(&mut self) -> (String, &'a Value) {
        let column = self.schema_columns.next().map_or_else(|| "<extra>".to_owned(), |c| c.name.to_owned());
        (column, self.values.next().unwrap_or(&Value::Null))
    }

    reader!(text, opt_text, Text, String, "text");
    reader!(bigint, opt_bigint, BigInt, i64, "bigint");
    reader!(boolean, opt_boolean, Bool, bool, "bool");
    reader!(uuid, opt_uuid, Uuid, Uuid, "uuid");
    reader!(timestamp, opt_timestamp, Timestamp, DateTime<Utc>, "timestamp");
    reader!(date, opt_date, Date, NaiveDate, "date");
    reader!(json, opt_json, Json, serde_json::Value, "json");
}

/// A handler's row key, as the key columns' values.
pub trait RowKey: Clone + Eq + std::hash::Hash + std::fmt::Debug + Send + Sync + 'static {
    fn to_values(&self, out: &mut Vec<Value>);
    fn from_values(values: &mut RowReader<'_>) -> Result<Self, RowError>;
    /// Parses a key typed by an operator (`projector state`); the error says the format.
    fn parse(text: &str) -> Result<Self, String>;
}

/// A handler's row (the value columns, without key and version).
pub trait Record: Clone + PartialEq + std::fmt::Debug + Send + Sync + 'static {
    fn to_values(&self, out: &mut Vec<Value>);
    fn from_values(values: &mut RowReader<'_>) -> Result<Self, RowError>;
}

impl RowKey for Uuid {
    fn to_values(&self, out: &mut Vec<Value>) {
        out.push(Value::Uuid(*self));
    }
    fn from_values(values: &mut RowReader<'_>) -> Result<Self, RowError> {
        values.uuid()
    }
    fn parse(text: &str) -> Result<Self, String> {
        Uuid::parse_str(text.trim()).map_err(|e| format!("expected a UUID: {e}"))
    }
}

impl RowKey for String {
    fn to_values(&self, out: &mut Vec<Value>) {
        out.push(Value::Text(self.clone()));
    }
    fn from_values(values: &mut RowReader<'_>) -> Result<Self, RowError> {
        values.text()
    }
    fn parse(text: &str) -> Result<Self, String> {
        Ok(text.to_owned())
    }
}

impl RowKey for (NaiveDate, String) {
    fn to_values(&self, out: &mut Vec<Value>) {
        out.push(Value::Date(self.0));
        out.push(Value::Text(self.1.clone()));
    }
    fn from_values(values: &mut RowReader<'_>) -> Result<Self, RowError> {
        Ok((values.date()?, values.text()?))
    }
    fn parse(text: &str) -> Result<Self, String> {
        let (day, name) = text.split_once('/').ok_or("expected DAY/TEXT, e.g. 2026-01-31/UserRegistered")?;
        let day = NaiveDate::parse_from_str(day, "%Y-%m-%d").map_err(|e| format!("day {day:?}: {e}"))?;
        Ok((day, name.to_owned()))
    }
}
