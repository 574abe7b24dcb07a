//! Read-model table I/O: creating the table, loading, writing and clearing rows. The only
//! place with statements generated from a [`TableSchema`]; a batch's rows travel as one
//! array per column (`unnest`), so any number of rows is one statement.

use std::error::Error;

use bytes::BytesMut;
use chrono::{DateTime, NaiveDate, Utc};
use postgres_types::{to_sql_checked, IsNull, ToSql, Type};
use projector::{Column, ColumnType, Merge, RowChanges, StoreError, TableSchema, Value};
use tokio_postgres::{Client, Row};
use uuid::Uuid;

use crate::error::map;

/// Rows per statement when writing outside a batch commit (rebuilds, repairs).
const CHUNK: usize = 50_000;

const TABLE_COLUMNS: &str = include_str!("../sql/table_columns.sql");

/// The names of the table's columns (none when it does not exist).
pub(crate) async fn table_columns(client: &Client, table: &TableSchema) -> Result<Vec<String>, StoreError> {
    let rows = client.query_typed(TABLE_COLUMNS, &[(&table.name, Type::TEXT)]).await.map_err(map)?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Drops the table (a rebuild that must lay it out anew), inside the caller's transaction.
pub(crate) async fn drop_table(client: &Client, table: &TableSchema) -> Result<(), StoreError> {
    client.batch_execute(&format!("DROP TABLE IF EXISTS {}", ident(table.name))).await.map_err(map)
}

/// Creates the read-model table if it does not exist.
pub(crate) async fn create_table(client: &Client, table: &TableSchema) -> Result<(), StoreError> {
    client.batch_execute(&create_sql(table)).await.map_err(map)
}

/// Rows of `table` with the given keys (schema order, including key and version).
pub(crate) async fn load_rows(
    client: &Client,
    table: &'static TableSchema,
    keys: &[Vec<Value>],
) -> Result<Vec<Vec<Value>>, StoreError> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let arrays = column_arrays(table.key, keys)?;
    let mut params = Vec::new();
    push_arrays(&arrays, &mut params);
    let rows = client.query_typed(&load_sql(table), &params).await.map_err(map)?;
    rows.iter().map(|r| row_values(table, r)).collect()
}

/// Writes row changes with no guard (inside a rebuild's or a repair's transaction).
pub(crate) async fn write_rows(
    client: &Client,
    table: &'static TableSchema,
    changes: RowChanges,
) -> Result<(), StoreError> {
    let all: Vec<Column> = table.all_columns().collect();
    if changes.inserts_only && changes.deletes.is_empty() {
        copy_rows(client, table, &all, &changes.upserts).await?;
        return crate::snapshots::write(client, &changes.snapshots).await;
    }
    for chunk in changes.upserts.chunks(CHUNK) {
        let arrays = column_arrays(&all, chunk)?;
        let mut params = Vec::new();
        push_arrays(&arrays, &mut params);
        client.query_typed(&upsert_sql(table, 1, ""), &params).await.map_err(map)?;
    }
    delete_rows(client, table, &changes.deletes).await?;
    crate::snapshots::write(client, &changes.snapshots).await
}

/// Deletes every row (`None`) or the rows with these keys. `DELETE`, not `TRUNCATE`:
/// readers keep the old rows until the surrounding transaction commits.
pub(crate) async fn clear_rows(
    client: &Client,
    table: &'static TableSchema,
    keys: Option<&[Vec<Value>]>,
) -> Result<(), StoreError> {
    match keys {
        None => client.batch_execute(&format!("DELETE FROM {}", ident(table.name))).await.map_err(map),
        Some(keys) => delete_rows(client, table, keys).await,
    }
}

async fn delete_rows(client: &Client, table: &'static TableSchema, keys: &[Vec<Value>]) -> Result<(), StoreError> {
    for chunk in keys.chunks(CHUNK) {
        let arrays = column_arrays(table.key, chunk)?;
        let mut params = Vec::new();
        push_arrays(&arrays, &mut params);
        client.query_typed(&delete_sql(table, 1, ""), &params).await.map_err(map)?;
    }
    Ok(())
}

/// Inserts rows known to be absent with binary `COPY` (a rebuild into cleared rows).
async fn copy_rows(
    client: &Client,
    table: &'static TableSchema,
    columns: &[Column],
    rows: &[Vec<Value>],
) -> Result<(), StoreError> {
    use futures_util::pin_mut;
    use tokio_postgres::binary_copy::BinaryCopyInWriter;
    let types: Vec<Type> = columns.iter().map(|c| column_type(c.ty)).collect();
    let sink = client.copy_in::<_, bytes::Bytes>(&copy_sql(table)).await.map_err(map)?;
    let writer = BinaryCopyInWriter::new(sink, &types);
    pin_mut!(writer);
    for row in rows {
        if row.len() != columns.len() {
            return Err(StoreError::InvalidInput(format!(
                "row has {} values, table {} has {} columns",
                row.len(),
                table.name,
                columns.len()
            )));
        }
        let cells: Vec<Cell<'_>> = row.iter().map(Cell).collect();
        let refs: Vec<&(dyn ToSql + Sync)> = cells.iter().map(|c| c as &(dyn ToSql + Sync)).collect();
        writer.as_mut().write(&refs).await.map_err(map)?;
    }
    writer.finish().await.map_err(map)?;
    Ok(())
}

/// Row writes of a batch commit, spliced into its statement after the parameters already
/// there; each writes only when CTE `guard` returned a row.
pub(crate) struct GuardedWrites {
    table: &'static TableSchema,
    upserts: Option<Vec<(ColumnArray, Type)>>,
    deletes: Option<Vec<(ColumnArray, Type)>>,
    snapshots: Option<crate::snapshots::SnapshotArrays>,
}

impl GuardedWrites {
    const GUARD: &'static str = "WHERE EXISTS (SELECT 1 FROM guard)";

    pub(crate) fn new(table: &'static TableSchema, changes: &RowChanges) -> Result<Self, StoreError> {
        let all: Vec<Column> = table.all_columns().collect();
        let upserts = (!changes.upserts.is_empty()).then(|| column_arrays(&all, &changes.upserts)).transpose()?;
        let deletes = (!changes.deletes.is_empty()).then(|| column_arrays(table.key, &changes.deletes)).transpose()?;
        let snapshots =
            (!changes.snapshots.is_empty()).then(|| crate::snapshots::SnapshotArrays::new(&changes.snapshots));
        Ok(Self { table, upserts, deletes, snapshots })
    }

    /// Appends the `up`, `del` and `snaps` CTEs (for the changes there are) to `sql` and
    /// their arrays to `params`.
    pub(crate) fn push<'a>(&'a self, sql: &mut String, params: &mut Vec<(&'a (dyn ToSql + Sync), Type)>) {
        if let Some(upserts) = &self.upserts {
            sql.push_str(&format!(", up AS ({})\n", upsert_sql(self.table, params.len() + 1, Self::GUARD)));
            push_arrays(upserts, params);
        }
        if let Some(deletes) = &self.deletes {
            sql.push_str(&format!(", del AS ({})\n", delete_sql(self.table, params.len() + 1, Self::GUARD)));
            push_arrays(deletes, params);
        }
        if let Some(snapshots) = &self.snapshots {
            sql.push_str(&crate::snapshots::commit_snapshots_sql(params.len() + 1));
            snapshots.push(params);
        }
    }
}

/// Keys or rows as parameter arrays, appended to `params` in column order.
fn push_arrays<'a>(arrays: &'a [(ColumnArray, Type)], params: &mut Vec<(&'a (dyn ToSql + Sync), Type)>) {
    for (array, ty) in arrays {
        params.push((array, ty.clone()));
    }
}

fn sql_type(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::Text => "text",
        ColumnType::BigInt => "bigint",
        ColumnType::Bool => "boolean",
        ColumnType::Uuid => "uuid",
        ColumnType::Timestamp => "timestamptz",
        ColumnType::Date => "date",
        ColumnType::Json => "jsonb",
    }
}

fn array_type(ty: ColumnType) -> Type {
    match ty {
        ColumnType::Text => Type::TEXT_ARRAY,
        ColumnType::BigInt => Type::INT8_ARRAY,
        ColumnType::Bool => Type::BOOL_ARRAY,
        ColumnType::Uuid => Type::UUID_ARRAY,
        ColumnType::Timestamp => Type::TIMESTAMPTZ_ARRAY,
        ColumnType::Date => Type::DATE_ARRAY,
        ColumnType::Json => Type::JSONB_ARRAY,
    }
}

/// Quotes an identifier for SQL.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn names<'a>(columns: impl Iterator<Item = &'a Column>) -> String {
    columns.map(|c| ident(c.name)).collect::<Vec<_>>().join(", ")
}

/// `CREATE TABLE IF NOT EXISTS` for a read model.
fn create_sql(schema: &TableSchema) -> String {
    let mut defs: Vec<String> = schema
        .all_columns()
        .map(|c| {
            let null = if c.nullable { "" } else { " NOT NULL" };
            format!("{} {}{}", ident(c.name), sql_type(c.ty), null)
        })
        .collect();
    defs.push(format!("PRIMARY KEY ({})", names(schema.key.iter())));
    format!("CREATE TABLE IF NOT EXISTS {} ({})", ident(schema.name), defs.join(", "))
}

/// `unnest($n::t[], …) AS alias(cols)` for the given columns, parameters from `first`.
fn unnest(columns: &[Column], first: usize, alias: &str) -> String {
    let arrays: Vec<String> =
        columns.iter().enumerate().map(|(i, c)| format!("${}::{}[]", first + i, sql_type(c.ty))).collect();
    format!("unnest({}) AS {alias}({})", arrays.join(", "), names(columns.iter()))
}

/// `SELECT` of the rows with the keys in `$1..$k` (one array per key column).
fn load_sql(schema: &TableSchema) -> String {
    let all: Vec<Column> = schema.all_columns().collect();
    let cols = all.iter().map(|c| format!("t.{}", ident(c.name))).collect::<Vec<_>>().join(", ");
    let keys = names(schema.key.iter());
    format!(
        "SELECT {cols} FROM {} t WHERE ({}) IN (SELECT {keys} FROM {})",
        ident(schema.name),
        schema.key.iter().map(|c| format!("t.{}", ident(c.name))).collect::<Vec<_>>().join(", "),
        unnest(schema.key, 1, "k"),
    )
}

/// `INSERT … ON CONFLICT DO UPDATE` of rows passed as arrays from `$first`;
/// `guard` is an extra `WHERE` condition (e.g. that a checkpoint CAS succeeded).
fn upsert_sql(schema: &TableSchema, first: usize, guard: &str) -> String {
    let all: Vec<Column> = schema.all_columns().collect();
    let table = ident(schema.name);
    let updates: Vec<String> = schema
        .columns
        .iter()
        .map(|c| {
            let n = ident(c.name);
            match c.merge {
                Merge::Replace => format!("{n} = EXCLUDED.{n}"),
                Merge::Add => format!("{n} = {table}.{n} + EXCLUDED.{n}"),
            }
        })
        .chain(schema.version_column.map(|v| format!("{0} = EXCLUDED.{0}", ident(v))))
        .collect();
    let on_conflict =
        if updates.is_empty() { "DO NOTHING".to_owned() } else { format!("DO UPDATE SET {}", updates.join(", ")) };
    format!(
        "INSERT INTO {table} ({cols}) SELECT {cols} FROM {src} {guard} ON CONFLICT ({keys}) {on_conflict}",
        cols = names(all.iter()),
        src = unnest(&all, first, "r"),
        keys = names(schema.key.iter()),
    )
}

/// `DELETE` of the rows whose keys come as arrays from `$first`.
fn delete_sql(schema: &TableSchema, first: usize, guard: &str) -> String {
    let cond = schema.key.iter().map(|c| format!("t.{0} = d.{0}", ident(c.name))).collect::<Vec<_>>().join(" AND ");
    let guard = if guard.is_empty() { String::new() } else { format!(" AND {}", guard.trim_start_matches("WHERE ")) };
    format!("DELETE FROM {} t USING {} WHERE {cond}{guard}", ident(schema.name), unnest(schema.key, first, "d"))
}

/// One column of a batch as a typed PostgreSQL array.
#[derive(Debug)]
enum ColumnArray {
    Text(Vec<Option<String>>),
    BigInt(Vec<Option<i64>>),
    Bool(Vec<Option<bool>>),
    Uuid(Vec<Option<Uuid>>),
    Timestamp(Vec<Option<DateTime<Utc>>>),
    Date(Vec<Option<NaiveDate>>),
    Json(Vec<Option<serde_json::Value>>),
}

impl ColumnArray {
    fn with_capacity(ty: ColumnType, n: usize) -> Self {
        match ty {
            ColumnType::Text => ColumnArray::Text(Vec::with_capacity(n)),
            ColumnType::BigInt => ColumnArray::BigInt(Vec::with_capacity(n)),
            ColumnType::Bool => ColumnArray::Bool(Vec::with_capacity(n)),
            ColumnType::Uuid => ColumnArray::Uuid(Vec::with_capacity(n)),
            ColumnType::Timestamp => ColumnArray::Timestamp(Vec::with_capacity(n)),
            ColumnType::Date => ColumnArray::Date(Vec::with_capacity(n)),
            ColumnType::Json => ColumnArray::Json(Vec::with_capacity(n)),
        }
    }

    fn push(&mut self, column: &Column, value: &Value) -> Result<(), StoreError> {
        let mismatch = || {
            StoreError::InvalidInput(format!(
                "column {} is {:?} but the row holds a {} value",
                column.name,
                column.ty,
                value.type_name()
            ))
        };
        match (self, value) {
            (ColumnArray::Text(v), Value::Null) => v.push(None),
            (ColumnArray::BigInt(v), Value::Null) => v.push(None),
            (ColumnArray::Bool(v), Value::Null) => v.push(None),
            (ColumnArray::Uuid(v), Value::Null) => v.push(None),
            (ColumnArray::Timestamp(v), Value::Null) => v.push(None),
            (ColumnArray::Date(v), Value::Null) => v.push(None),
            (ColumnArray::Json(v), Value::Null) => v.push(None),
            (ColumnArray::Text(v), Value::Text(x)) => v.push(Some(x.clone())),
            (ColumnArray::BigInt(v), Value::BigInt(x)) => v.push(Some(*x)),
            (ColumnArray::Bool(v), Value::Bool(x)) => v.push(Some(*x)),
            (ColumnArray::Uuid(v), Value::Uuid(x)) => v.push(Some(*x)),
            (ColumnArray::Timestamp(v), Value::Timestamp(x)) => v.push(Some(*x)),
            (ColumnArray::Date(v), Value::Date(x)) => v.push(Some(*x)),
            (ColumnArray::Json(v), Value::Json(x)) => v.push(Some(x.clone())),
            _ => return Err(mismatch()),
        }
        Ok(())
    }
}

impl ToSql for ColumnArray {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        match self {
            ColumnArray::Text(v) => v.to_sql(ty, out),
            ColumnArray::BigInt(v) => v.to_sql(ty, out),
            ColumnArray::Bool(v) => v.to_sql(ty, out),
            ColumnArray::Uuid(v) => v.to_sql(ty, out),
            ColumnArray::Timestamp(v) => v.to_sql(ty, out),
            ColumnArray::Date(v) => v.to_sql(ty, out),
            ColumnArray::Json(v) => v.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// Rows (each in column order) turned into one array per column.
fn column_arrays(columns: &[Column], rows: &[Vec<Value>]) -> Result<Vec<(ColumnArray, Type)>, StoreError> {
    let mut arrays: Vec<ColumnArray> = columns.iter().map(|c| ColumnArray::with_capacity(c.ty, rows.len())).collect();
    for row in rows {
        if row.len() != columns.len() {
            return Err(StoreError::InvalidInput(format!(
                "row has {} values, table has {} columns",
                row.len(),
                columns.len()
            )));
        }
        for ((array, column), value) in arrays.iter_mut().zip(columns).zip(row) {
            array.push(column, value)?;
        }
    }
    Ok(arrays.into_iter().zip(columns).map(|(a, c)| (a, array_type(c.ty))).collect())
}

/// A stored read-model row as values in schema order.
fn row_values(schema: &TableSchema, row: &Row) -> Result<Vec<Value>, StoreError> {
    let mut out = Vec::with_capacity(row.len());
    for (i, c) in schema.all_columns().enumerate() {
        let bad = |e: tokio_postgres::Error| StoreError::Row {
            table: schema.name.to_owned(),
            reason: format!("column {}: {e}", c.name),
        };
        let v = match c.ty {
            ColumnType::Text => row.try_get::<_, Option<String>>(i).map_err(bad)?.map(Value::Text),
            ColumnType::BigInt => row.try_get::<_, Option<i64>>(i).map_err(bad)?.map(Value::BigInt),
            ColumnType::Bool => row.try_get::<_, Option<bool>>(i).map_err(bad)?.map(Value::Bool),
            ColumnType::Uuid => row.try_get::<_, Option<Uuid>>(i).map_err(bad)?.map(Value::Uuid),
            ColumnType::Timestamp => row.try_get::<_, Option<DateTime<Utc>>>(i).map_err(bad)?.map(Value::Timestamp),
            ColumnType::Date => row.try_get::<_, Option<NaiveDate>>(i).map_err(bad)?.map(Value::Date),
            ColumnType::Json => row.try_get::<_, Option<serde_json::Value>>(i).map_err(bad)?.map(Value::Json),
        };
        out.push(v.unwrap_or(Value::Null));
    }
    Ok(out)
}

/// `COPY … FROM STDIN (FORMAT binary)` for all columns of a read model.
fn copy_sql(schema: &TableSchema) -> String {
    let all: Vec<Column> = schema.all_columns().collect();
    format!("COPY {} ({}) FROM STDIN (FORMAT binary)", ident(schema.name), names(all.iter()))
}

/// The PostgreSQL type of a column, for binary `COPY`.
fn column_type(ty: ColumnType) -> Type {
    match ty {
        ColumnType::Text => Type::TEXT,
        ColumnType::BigInt => Type::INT8,
        ColumnType::Bool => Type::BOOL,
        ColumnType::Uuid => Type::UUID,
        ColumnType::Timestamp => Type::TIMESTAMPTZ,
        ColumnType::Date => Type::DATE,
        ColumnType::Json => Type::JSONB,
    }
}

/// One value, encoded as the column's type.
#[derive(Debug)]
struct Cell<'a>(pub &'a Value);

impl ToSql for Cell<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        match self.0 {
            Value::Null => Ok(IsNull::Yes),
            Value::Text(v) => v.to_sql(ty, out),
            Value::BigInt(v) => v.to_sql(ty, out),
            Value::Bool(v) => v.to_sql(ty, out),
            Value::Uuid(v) => v.to_sql(ty, out),
            Value::Timestamp(v) => v.to_sql(ty, out),
            Value::Date(v) => v.to_sql(ty, out),
            Value::Json(v) => v.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: TableSchema = TableSchema {
        name: "daily",
        key: &[Column::new("day", ColumnType::Date), Column::new("kind", ColumnType::Text)],
        columns: &[Column::new("n", ColumnType::BigInt).additive()],
        version_column: None,
    };

    #[test]
    fn additive_columns_add_on_conflict() {
        let sql = upsert_sql(&T, 1, "");
        assert!(sql.contains("\"n\" = \"daily\".\"n\" + EXCLUDED.\"n\""), "{sql}");
        assert!(sql.contains("ON CONFLICT (\"day\", \"kind\")"), "{sql}");
    }

    #[test]
    fn a_value_of_the_wrong_type_is_refused() {
        let rows = vec![vec![Value::Text("x".into()), Value::Text("k".into()), Value::BigInt(1)]];
        let all: Vec<Column> = T.all_columns().collect();
        assert!(matches!(column_arrays(&all, &rows), Err(StoreError::InvalidInput(_))));
    }
}
