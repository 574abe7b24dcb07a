//! Rebuilds on PostgreSQL: one transaction that holds the projection's checkpoint rows
//! (so live commits wait, then find their checkpoint moved), replaces the rows, and sets
//! the checkpoints. Readers keep seeing the old rows until it commits.

use chrono::{DateTime, Utc};
use futures_util::lock::MutexGuard;
use postgres_types::{ToSql, Type};
use projector::store::rules;
use projector::{
    Checkpoint, DeadLetter, DomainEvent, EventFilter, Exclusions, Partition, ReadBound, RebuildSession, Rebuilds,
    RowChanges, StoreError, TableSchema, Value,
};
use tokio_postgres::Client;
use uuid::Uuid;

use crate::discarded;
use crate::error::map;
use crate::events::{self, event_from_row, FilterParams};
use crate::rows;
use crate::snapshots;
use crate::types::Xid8;
use crate::PgStore;

const MARK_REBUILDING: &str = include_str!("../sql/mark_rebuilding.sql");
const LOCK_PARTITIONS: &str = include_str!("../sql/lock_partitions.sql");
const READ_SINCE_POSITION: &str = include_str!("../sql/read_since_position.sql");
const FINISH_REBUILD: &str = include_str!("../sql/finish_rebuild.sql");
const NEEDS_REBUILD: &str = include_str!("../sql/needs_rebuild.sql");

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
    /// How the table fits the schema, as found when the rebuild began; one that does
    /// not is laid out anew in the write transaction.
    fit: rules::TableFit,
    /// The table did not fit, or the projection waits for a rebuild.
    needs_full: bool,
    in_transaction: bool,
    /// The projection's partitions, read when the write transaction locked their rows.
    partitions: Vec<i32>,
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
        self.partitions = self
            .client
            .query_typed(LOCK_PARTITIONS, &[(&self.projection, Type::TEXT)])
            .await
            .map_err(map)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        match std::mem::replace(&mut self.fit, rules::TableFit::Fits) {
            rules::TableFit::Fits => {}
            rules::TableFit::Missing => rows::create_table(&self.client, self.table).await?,
            rules::TableFit::Lacks(_) => {
                rows::drop_table(&self.client, self.table).await?;
                rows::create_table(&self.client, self.table).await?;
            }
        }
        match std::mem::replace(&mut self.clear, Clear::Nothing) {
            Clear::Nothing => {}
            Clear::All => {
                rows::clear_rows(&self.client, self.table, None).await?;
                snapshots::clear(&self.client, &self.projection, None).await?;
            }
            Clear::Keys(keys) => {
                rows::clear_rows(&self.client, self.table, Some(&keys)).await?;
                snapshots::clear(&self.client, &self.projection, Some(&keys)).await?;
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
        let marked = client.query_typed(MARK_REBUILDING, &[(&projection, Type::TEXT)]).await.map_err(map)?;
        if marked.is_empty() {
            return Err(StoreError::UnknownProjection(projection.to_owned()));
        }
        let waiting: bool =
            client.query_typed_one(NEEDS_REBUILD, &[(&projection, Type::TEXT)]).await.map_err(map)?.get(0);
        let fit = rules::table_fit(table, &rows::table_columns(&client, table).await?);
        let needs_full = waiting || fit != rules::TableFit::Fits;
        Ok(PgRebuild {
            store: self,
            client,
            projection: projection.to_owned(),
            table,
            clear: Clear::Nothing,
            fit,
            needs_full,
            in_transaction: false,
            partitions: Vec::new(),
            done: false,
        })
    }
}

impl RebuildSession for PgRebuild<'_> {
    async fn subject_keys(
        &mut self,
        subjects: &[String],
    ) -> Result<Vec<projector::store::keys::KeyLookup>, StoreError> {
        crate::keys::subject_keys(&self.client, subjects).await
    }

    async fn record_audit(&mut self, records: &[projector::store::keys::AuditRecord]) -> Result<(), StoreError> {
        crate::keys::record_audit(&self.client, records).await
    }

    fn needs_full(&self) -> bool {
        self.needs_full
    }

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
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let fp = FilterParams::new(filter, Partition::WHOLE);
        let mut params: Vec<(&(dyn ToSql + Sync), Type)> = vec![(&from, Type::INT8), (&after, Type::INT8)];
        fp.push(&mut params);
        params.push((&limit, Type::INT8));
        let rows = self.client.query_typed(READ_SINCE_POSITION, &params).await.map_err(map)?;
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
        rows::load_rows(&self.client, self.table, keys).await
    }

    async fn write_rows(&mut self, changes: RowChanges) -> Result<(), StoreError> {
        self.writing().await?;
        rows::write_rows(&self.client, self.table, changes).await
    }

    async fn exclusions(&mut self) -> Result<Exclusions, StoreError> {
        discarded::exclusions(&self.client, &self.projection).await
    }

    async fn dead_letter(&mut self, letters: &[DeadLetter]) -> Result<(), StoreError> {
        self.writing().await?;
        discarded::rebuild_letters(&self.client, &self.projection, letters).await
    }

    async fn finish(
        mut self,
        to: Checkpoint,
        events_applied: u64,
        last_event_at: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        self.writing().await?;
        let xid = Xid8(to.transaction_id);
        // The rebuild's events count once for the projection, not once per partition.
        let shares: Vec<i64> =
            self.partitions.iter().map(|p| rules::rebuild_applied_share(*p as u32, events_applied)).collect();
        self.client
            .query_typed(
                FINISH_REBUILD,
                &[
                    (&self.projection, Type::TEXT),
                    (&xid, Type::XID8),
                    (&to.position, Type::INT8),
                    (&last_event_at, Type::TIMESTAMPTZ),
                    (&self.partitions, Type::INT4_ARRAY),
                    (&shares, Type::INT8_ARRAY),
                ],
            )
            .await
            .map_err(map)?;
        self.client.batch_execute("COMMIT").await.map_err(map)?;
        self.done = true;
        Ok(())
    }
}
