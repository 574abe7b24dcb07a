//! Every row of every table of a store, read around the store's API: what proves that an
//! operation wrote nothing, or put every byte back; and SQL run around the store, to set
//! up what its API forbids.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// Each table's rows as text, sorted.
pub type Dump = BTreeMap<String, Vec<String>>;

/// Reads a store's tables directly.
#[allow(async_fn_in_trait)]
pub trait RowDump {
    async fn every_row(&self) -> Dump;

    /// The `events` table's rows.
    async fn events(&self) -> Vec<String> {
        self.every_row().await.remove("events").unwrap_or_default()
    }

    /// Runs `sql` (statements both stores' dialects accept) on a connection of its own.
    async fn execute(&self, sql: &str);
}

/// A PostgreSQL database, by URL: each row as PostgreSQL's own text of the row.
#[derive(Debug, Clone)]
pub struct PgRows(pub String);

impl RowDump for PgRows {
    async fn every_row(&self) -> Dump {
        let (client, connection) = tokio_postgres::connect(&self.0, tokio_postgres::NoTls).await.expect("connect");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let tables = client
            .query("SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema() ORDER BY 1", &[])
            .await
            .expect("list tables");
        let mut dump = Dump::new();
        for table in tables {
            let name: String = table.get(0);
            let rows = client
                .query(&format!("SELECT t::text FROM \"{name}\" t ORDER BY 1"), &[])
                .await
                .unwrap_or_else(|e| panic!("read {name}: {e}"));
            dump.insert(name, rows.iter().map(|r| r.get(0)).collect());
        }
        dump
    }

    async fn execute(&self, sql: &str) {
        let (client, connection) = tokio_postgres::connect(&self.0, tokio_postgres::NoTls).await.expect("connect");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client.batch_execute(sql).await.unwrap_or_else(|e| panic!("{e:?}\n{sql}"));
    }
}

/// An embedded store's file, read on a connection of its own.
#[derive(Debug, Clone)]
pub struct SqliteRows(pub PathBuf);

impl RowDump for SqliteRows {
    async fn every_row(&self) -> Dump {
        let conn = rusqlite::Connection::open(&self.0).expect("open the store file");
        let mut tables = conn.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY 1").expect("list");
        let names: Vec<String> = tables.query_map([], |r| r.get(0)).expect("list").map(|n| n.expect("name")).collect();
        let mut dump = Dump::new();
        for name in names {
            let mut stmt = conn.prepare(&format!("SELECT * FROM \"{name}\"")).expect("select");
            let columns = stmt.column_count();
            let mut rows: Vec<String> = stmt
                .query_map([], |row| {
                    let values: Vec<String> = (0..columns).map(|i| show(row.get_ref(i).expect("value"))).collect();
                    Ok(values.join("|"))
                })
                .expect("rows")
                .map(|r| r.expect("row"))
                .collect();
            rows.sort();
            dump.insert(name, rows);
        }
        dump
    }

    async fn execute(&self, sql: &str) {
        let conn = rusqlite::Connection::open(&self.0).expect("open the store file");
        conn.busy_timeout(std::time::Duration::from_secs(5)).expect("busy timeout");
        conn.execute_batch(sql).unwrap_or_else(|e| panic!("{e}\n{sql}"));
    }
}

/// A value as text, its type named (a text's bytes exactly, as UTF-8 where they are).
fn show(value: rusqlite::types::ValueRef<'_>) -> String {
    use rusqlite::types::ValueRef;
    match value {
        ValueRef::Null => "null".to_owned(),
        ValueRef::Integer(i) => format!("int:{i}"),
        ValueRef::Real(r) => format!("real:{r:?}"),
        ValueRef::Text(t) => match std::str::from_utf8(t) {
            Ok(text) => format!("text:{text:?}"),
            Err(_) => format!("text-bytes:{t:?}"),
        },
        ValueRef::Blob(b) => format!("blob:{b:?}"),
    }
}

/// The tables of `dump` that differ from `other`, by name, for assertions.
pub fn differing_tables(dump: &Dump, other: &Dump) -> Vec<String> {
    let mut names: Vec<&String> = dump.keys().chain(other.keys()).collect();
    names.sort();
    names.dedup();
    names.into_iter().filter(|n| dump.get(*n) != other.get(*n)).cloned().collect()
}
