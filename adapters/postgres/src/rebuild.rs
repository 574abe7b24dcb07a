//! Rebuilds on PostgreSQL: one transaction that holds the projection's checkpoint rows
//! (so live commits wait, then find their checkpoint moved), replaces the rows, and sets
//! the checkpoints. Readers keep seeing the old rows until it commits.

use chrono::{DateTime, Utc};
use futures_util::lock::MutexGuard;
use postgres_types::{ToSql, Type};
use projector::{
    Checkpoint, DomainEvent, EventFilter, Partition, ReadBound, RebuildSession, Rebuilds, RowChanges, StoreError,
    TableSchema, Value,
};
use tokio_postgres::Client;
use uuid::Uuid;

use crate::error::map;
use crate::events::{self, event_from_row, filter_sql, FilterParams, EVENT_COLUMNS};
use crate::projections::{load_rows, push_arrays, write_rows};
use crate::table::{column_arrays, delete_sql, ident};
use crate::types::Xid8;
use crate::PgStore;

/// What the rebuild must delete before its first write.
#[derive(Debug)]
enum Clear {
    Nothing,
    All,
    Keys(Vec<Vec<Value>>),
}

/// A rebuild in progress on one connection.
///
/// Reading and folding run outside any transaction; the write transaction begins at the
/// first write. A transaction id held for the whole rebuild would hold back the read
/// horizon of every projection on the server for as long.
pub struct PgRebuild<'a> {
    store: &'a PgStore,
    client: MutexGuard<'a, Client>,
    projection: String,
    table: &'static TableSchema,
    clear: Clear,
    in_transaction: bool,
    done: bool,
}

impl std::fmt::Debug for PgRebuild<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgRebuild").field("projection", &self.projection).finish_non_exhaustive()
    }
}

impl Drop for PgRebuild<'_> {
    fn drop(&mut self) {
        if !self.done {
            // Cannot do I/O here: the store's next user rolls back and resets the status.
            self.store.abandon(&self.projection, self.in_transaction);
        }
    }
}

impl PgRebuild<'_> {
    /// Begins the write transaction: locks the projection's checkpoint rows (live
    /// commits wait, then find their checkpoint moved) and deletes the rows to redo.
    async fn writing(&mut self) -> Result<(), StoreError> {
        if self.in_transaction {
            return Ok(());
        }
        self.client.batch_execute("BEGIN").await.map_err(map)?;
        self.in_transaction = true;
        self.client
            .query_typed(
                "SELECT 1 FROM projection_state WHERE projection = $1 FOR UPDATE",
                &[(&self.projection, Type::TEXT)],
            )
            .await
            .map_err(map)?;
        match std::mem::replace(&mut self.clear, Clear::Nothing) {
            Clear::Nothing => {}
            Clear::All => {
                // DELETE, not TRUNCATE: readers keep the old rows until the rebuild commits.
                self.client.batch_execute(&format!("DELETE FROM {}", ident(self.table.name))).await.map_err(map)?;
            }
            Clear::Keys(keys) => {
                for chunk in keys.chunks(50_000) {
                    let arrays = column_arrays(self.table.key, chunk)?;
                    let mut params = Vec::new();
                    push_arrays(&arrays, &mut params);
                    self.client.query_typed(&delete_sql(self.table, 1, ""), &params).await.map_err(map)?;
                }
            }
        }
        Ok(())
    }
}

impl Rebuilds for PgStore {
    type Session<'a> = PgRebuild<'a>;

    async fn begin_rebuild<'a>(
        &'a self,
        projection: &str,
        table: &'static TableSchema,
    ) -> Result<PgRebuild<'a>, StoreError> {
        let client = self.client().await?;
        let marked = client
            .query_typed(
                "UPDATE projection_state SET status = 'rebuilding', updated_at = now() WHERE projection = $1
                 RETURNING 1",
                &[(&projection, Type::TEXT)],
            )
            .await
            .map_err(map)?;
        if marked.is_empty() {
            return Err(StoreError::UnknownProjection(projection.to_owned()));
        }
        Ok(PgRebuild {
            store: self,
            client,
            projection: projection.to_owned(),
            table,
            clear: Clear::Nothing,
            in_transaction: false,
            done: false,
        })
    }
}

impl RebuildSession for PgRebuild<'_> {
    async fn read_all(
        &mut self,
        after: Checkpoint,
        filter: &EventFilter,
        limit: usize,
    ) -> Result<Vec<DomainEvent>, StoreError> {
        events::read_all(&self.client, after, filter, Partition::WHOLE, limit).await
    }

    async fn read_since_position(
        &mut self,
        from: i64,
        filter: &EventFilter,
        after: i64,
        limit: usize,
    ) -> Result<Vec<DomainEvent>, StoreError> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events
             WHERE position >= $1 AND position > $2 AND {}
             ORDER BY position LIMIT $7",
            filter_sql(3)
        );
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let fp = FilterParams::new(filter, Partition::WHOLE);
        let mut params: Vec<(&(dyn ToSql + Sync), Type)> = vec![(&from, Type::INT8), (&after, Type::INT8)];
        fp.push(&mut params);
        params.push((&limit, Type::INT8));
        let rows = self.client.query_typed(&sql, &params).await.map_err(map)?;
        rows.iter().map(event_from_row).collect()
    }

    async fn read_aggregate(&mut self, aggregate_id: Uuid, bound: ReadBound) -> Result<Vec<DomainEvent>, StoreError> {
        events::read_aggregate(&self.client, aggregate_id, bound).await
    }

    async fn clear_rows(&mut self, keys: Option<&[Vec<Value>]>) -> Result<(), StoreError> {
        if self.in_transaction {
            return Err(StoreError::InvalidInput("clear_rows must come before the first write".into()));
        }
        self.clear = match keys {
            None => Clear::All,
            Some([]) => Clear::Nothing,
            Some(keys) => Clear::Keys(keys.to_vec()),
        };
        Ok(())
    }

    async fn load_rows(&mut self, keys: &[Vec<Value>]) -> Result<Vec<Vec<Value>>, StoreError> {
        load_rows(&self.client, self.table, keys).await
    }

    async fn write_rows(&mut self, changes: RowChanges) -> Result<(), StoreError> {
        self.writing().await?;
        write_rows(&self.client, self.table, changes).await
    }

    async fn finish(
        mut self,
        to: Checkpoint,
        events_applied: u64,
        last_event_at: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        self.writing().await?;
        let xid = Xid8(to.transaction_id);
        let applied = events_applied as i64;
        self.client
            .query_typed(
                "UPDATE projection_state
                 SET transaction_id = $2, position = $3, events_applied = $4, last_event_at = $5,
                     status = 'running', updated_at = now()
                 WHERE projection = $1",
                &[
                    (&self.projection, Type::TEXT),
                    (&xid, Type::XID8),
                    (&to.position, Type::INT8),
                    (&applied, Type::INT8),
                    (&last_event_at, Type::TIMESTAMPTZ),
                ],
            )
            .await
            .map_err(map)?;
        self.client.batch_execute("COMMIT").await.map_err(map)?;
        self.done = true;
        Ok(())
    }
}
