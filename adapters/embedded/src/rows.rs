//! Read-model tables: creating them (or adding columns they lack), loading, writing and
//! clearing rows. The only statements written from a [`TableSchema`] rather than read
//! from `sql/`, since every read model has its own table and columns.

use projector::{Column, Merge, RowChanges, StoreError, TableSchema, Value};
use rusqlite::types::Value as SqlValue;
use rusqlite::Connection;

use crate::codec::{from_sql, ident, sql_type, to_sql};
use crate::error::Context;

const TABLE_COLUMNS: &str = include_str!("../sql/table_columns.sql");

/// The names of the table's columns (none when it does not exist).
pub(crate) fn table_columns(conn: &Connection, table: &TableSchema) -> Result<Vec<String>, StoreError> {
    conn.prepare_cached(TABLE_COLUMNS)
        .and_then(|mut s| s.query_map([table.name], |r| r.get(0))?.collect())
        .context(|| format!("read the columns of read-model table {}", table.name))
}

/// Drops the table (a rebuild that must lay it out anew).
pub(crate) fn drop_table(conn: &Connection, table: &TableSchema) -> Result<(), StoreError> {
    conn.execute_batch(&format!("DROP TABLE IF EXISTS {}", ident(table.name)))
        .context(|| format!("drop read-model table {}", table.name))
}

/// Creates the read-model table, or adds nullable columns it lacks.
pub(crate) fn ensure_table(conn: &Connection, table: &TableSchema) -> Result<(), StoreError> {
    let context = || format!("create read-model table {}", table.name);
    let existing: Vec<String> = conn
        .prepare_cached(TABLE_COLUMNS)
        .and_then(|mut s| s.query_map([table.name], |r| r.get(0))?.collect())
        .context(context)?;
    if existing.is_empty() {
        let mut sql = format!("CREATE TABLE IF NOT EXISTS {} (", ident(table.name));
        for column in table.all_columns() {
            let not_null = if column.nullable && !table.key.contains(&column) { "" } else { " NOT NULL" };
            sql.push_str(&format!("{} {}{}, ", ident(column.name), sql_type(column.ty), not_null));
        }
        let key: Vec<String> = table.key.iter().map(|c| ident(c.name)).collect();
        sql.push_str(&format!("PRIMARY KEY ({})) WITHOUT ROWID", key.join(", ")));
        conn.execute_batch(&sql).context(context)?;
        return Ok(());
    }
    for column in table.all_columns() {
        if existing.iter().any(|name| name.eq_ignore_ascii_case(column.name)) {
            continue;
        }
        if !column.nullable || table.key.contains(&column) {
            return Err(StoreError::Schema(format!(
                "read-model table {} exists without the non-nullable column {}; drop the table and rebuild \
                 the projection",
                table.name, column.name
            )));
        }
        conn.execute_batch(&format!(
            "ALTER TABLE {} ADD COLUMN {} {}",
            ident(table.name),
            ident(column.name),
            sql_type(column.ty)
        ))
        .context(|| format!("add column {} to read-model table {}", column.name, table.name))?;
    }
    Ok(())
}

fn key_condition(table: &TableSchema) -> String {
    let parts: Vec<String> = table.key.iter().map(|c| format!("{} = ?", ident(c.name))).collect();
    parts.join(" AND ")
}

fn key_params(table: &TableSchema, key: &[Value]) -> Result<Vec<SqlValue>, StoreError> {
    if key.len() != table.key.len() {
        return Err(StoreError::Row {
            table: table.name.to_owned(),
            reason: format!("a key has {} values, the table has {} key columns", key.len(), table.key.len()),
        });
    }
    table.key.iter().zip(key).map(|(c, v)| to_sql(table, c, v)).collect()
}

pub(crate) fn load_rows(
    conn: &Connection,
    table: &'static TableSchema,
    keys: &[Vec<Value>],
) -> Result<Vec<Vec<Value>>, StoreError> {
    let columns: Vec<Column> = table.all_columns().collect();
    let names: Vec<String> = columns.iter().map(|c| ident(c.name)).collect();
    let sql = format!("SELECT {} FROM {} WHERE {}", names.join(", "), ident(table.name), key_condition(table));
    let context = || format!("load rows from {}", table.name);
    let mut stmt = conn.prepare_cached(&sql).context(context)?;
    let mut out = Vec::new();
    for key in keys {
        let mut rows = stmt.query(rusqlite::params_from_iter(key_params(table, key)?)).context(context)?;
        if let Some(row) = rows.next().context(context)? {
            let mut values = Vec::with_capacity(columns.len());
            for (i, column) in columns.iter().enumerate() {
                values.push(from_sql(table, column, row.get_ref(i).context(context)?)?);
            }
            out.push(values);
        }
    }
    Ok(out)
}

/// Upserts and deletes read-model rows (inside the caller's transaction).
pub(crate) fn write_rows(
    conn: &Connection,
    table: &'static TableSchema,
    changes: &RowChanges,
) -> Result<(), StoreError> {
    let context = || format!("write rows to {}", table.name);
    if !changes.upserts.is_empty() {
        let columns: Vec<Column> = table.all_columns().collect();
        let names: Vec<String> = columns.iter().map(|c| ident(c.name)).collect();
        let key: Vec<String> = table.key.iter().map(|c| ident(c.name)).collect();
        let updates: Vec<String> = columns[table.key.len()..]
            .iter()
            .map(|c| {
                let name = ident(c.name);
                match c.merge {
                    Merge::Add => {
                        format!("{name} = {}.{name} + excluded.{name}", ident(table.name))
                    }
                    Merge::Replace => format!("{name} = excluded.{name}"),
                }
            })
            .collect();
        let on_conflict =
            if updates.is_empty() { "DO NOTHING".to_owned() } else { format!("DO UPDATE SET {}", updates.join(", ")) };
        let sql = format!(
            "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({}) {on_conflict}",
            ident(table.name),
            names.join(", "),
            vec!["?"; names.len()].join(", "),
            key.join(", "),
        );
        let mut stmt = conn.prepare_cached(&sql).context(context)?;
        for row in &changes.upserts {
            if row.len() != columns.len() {
                return Err(StoreError::Row {
                    table: table.name.to_owned(),
                    reason: format!("a row has {} values, the table has {} columns", row.len(), columns.len()),
                });
            }
            let values: Vec<SqlValue> =
                columns.iter().zip(row).map(|(c, v)| to_sql(table, c, v)).collect::<Result<_, _>>()?;
            stmt.execute(rusqlite::params_from_iter(values)).context(context)?;
        }
    }
    if !changes.deletes.is_empty() {
        let sql = format!("DELETE FROM {} WHERE {}", ident(table.name), key_condition(table));
        let mut stmt = conn.prepare_cached(&sql).context(context)?;
        for key in &changes.deletes {
            stmt.execute(rusqlite::params_from_iter(key_params(table, key)?)).context(context)?;
        }
    }
    crate::snapshots::write(conn, &changes.snapshots)
}

/// Deletes every row, or the rows with these keys.
pub(crate) fn clear_rows(
    conn: &Connection,
    table: &'static TableSchema,
    keys: Option<&[Vec<Value>]>,
) -> Result<(), StoreError> {
    match keys {
        None => {
            conn.execute(&format!("DELETE FROM {}", ident(table.name)), [])
                .context(|| format!("clear rows of {}", table.name))?;
            Ok(())
        }
        Some(keys) => write_rows(
            conn,
            table,
            &RowChanges { upserts: Vec::new(), deletes: keys.to_vec(), inserts_only: false, snapshots: Vec::new() },
        ),
    }
}
