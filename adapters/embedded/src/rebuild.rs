//! Rebuilds: the embedded store's [`Rebuilds`], one `BEGIN IMMEDIATE` transaction on the
//! store's connection, held (with the connection lock) for the session's lifetime.

use std::sync::MutexGuard;

use projector::store::keys::{AuditRecord, KeyLookup};

use chrono::{DateTime, Utc};
use projector::store::rules;
use projector::{
    Checkpoint, DeadLetter, DomainEvent, EventFilter, Exclusions, Partition, ReadBound, RebuildSession, Rebuilds,
    RowChanges, StoreError, TableSchema, Value,
};
use rusqlite::{params, Connection};
use uuid::Uuid;

use crate::codec::{format_ts, max_ts, tx_id};
use crate::error::Context;
use crate::{dead_letters, discarded, events, projections, rows, snapshots, EmbeddedStore};

const FINISH_REBUILD: &str = include_str!("../sql/finish_rebuild.sql");
const NEEDS_REBUILD: &str = include_str!("../sql/needs_rebuild.sql");

impl Rebuilds for EmbeddedStore {
    type Session<'a> = EmbeddedRebuild<'a>;

    /// Takes the connection and opens the rebuild's transaction; see [`EmbeddedRebuild`].
    async fn begin_rebuild<'a>(
        &'a self,
        projection: &str,
        table: &'static TableSchema,
    ) -> Result<EmbeddedRebuild<'a>, StoreError> {
        EmbeddedRebuild::begin(self.lock(), projection, table)
    }
}

/// A rebuild in progress on an [`EmbeddedStore`](crate::EmbeddedStore).
///
/// It holds the store's connection for its whole lifetime: every other operation on the
/// same store handle (and its clones) waits until the session is finished or dropped, and
/// other processes' writers wait on SQLite's lock (up to the busy timeout). Do not use
/// the store from the task that holds a session: that would wait forever.
///
/// Dropping the session without [`RebuildSession::finish`] rolls everything back.
pub struct EmbeddedRebuild<'a> {
    conn: MutexGuard<'a, Connection>,
    projection: String,
    table: &'static TableSchema,
    /// The table was missing, did not fit, or the projection waits for a rebuild.
    needs_full: bool,
    open: bool,
}

impl std::fmt::Debug for EmbeddedRebuild<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedRebuild")
            .field("projection", &self.projection)
            .field("table", &self.table.name)
            .field("open", &self.open)
            .finish()
    }
}

impl<'a> EmbeddedRebuild<'a> {
    pub(crate) fn begin(
        conn: MutexGuard<'a, Connection>,
        projection: &str,
        table: &'static TableSchema,
    ) -> Result<Self, StoreError> {
        conn.execute_batch("BEGIN IMMEDIATE").context(|| format!("begin the rebuild of {projection}"))?;
        let mut session = Self { conn, projection: projection.to_owned(), table, needs_full: false, open: true };
        let table_name = projections::registered_table(&session.conn, projection)?;
        if table_name != table.name {
            return Err(StoreError::InvalidInput(format!(
                "rebuild {projection}: the projection writes table {table_name}, not {}",
                table.name
            )));
        }
        let waiting: bool = session
            .conn
            .query_row(NEEDS_REBUILD, [projection], |r| r.get(0))
            .context(|| format!("begin the rebuild of {projection}"))?;
        let fit = rules::table_fit(table, &rows::table_columns(&session.conn, table)?);
        if let rules::TableFit::Lacks(_) = fit {
            rows::drop_table(&session.conn, table)?;
        }
        rows::ensure_table(&session.conn, table)?;
        session.needs_full = waiting || fit != rules::TableFit::Fits;
        Ok(session)
    }
}

impl Drop for EmbeddedRebuild<'_> {
    fn drop(&mut self) {
        if self.open {
            // Nothing to report to: the rollback restores the state before the session.
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

impl RebuildSession for EmbeddedRebuild<'_> {
    fn needs_full(&self) -> bool {
        self.needs_full
    }

    async fn read_all(
        &mut self,
        after: Checkpoint,
        filter: &EventFilter,
        limit: usize,
    ) -> Result<Vec<DomainEvent>, StoreError> {
        events::read_all(&self.conn, after, filter, Partition::WHOLE, limit)
    }

    async fn read_since_position(
        &mut self,
        from: i64,
        filter: &EventFilter,
        after: i64,
        limit: usize,
    ) -> Result<Vec<DomainEvent>, StoreError> {
        events::read_since_position(&self.conn, from, filter, after, limit)
    }

    async fn read_aggregate(&mut self, aggregate_id: Uuid, bound: ReadBound) -> Result<Vec<DomainEvent>, StoreError> {
        events::read_aggregate(&self.conn, aggregate_id, bound)
    }

    async fn clear_rows(&mut self, keys: Option<&[Vec<Value>]>) -> Result<(), StoreError> {
        rows::clear_rows(&self.conn, self.table, keys)?;
        snapshots::clear(&self.conn, &self.projection, keys)
    }

    async fn load_rows(&mut self, keys: &[Vec<Value>]) -> Result<Vec<Vec<Value>>, StoreError> {
        rows::load_rows(&self.conn, self.table, keys)
    }

    async fn write_rows(&mut self, changes: RowChanges) -> Result<(), StoreError> {
        rows::write_rows(&self.conn, self.table, &changes)
    }

    async fn exclusions(&mut self) -> Result<Exclusions, StoreError> {
        discarded::exclusions(&self.conn, &self.projection)
    }

    async fn dead_letter(&mut self, letters: &[DeadLetter]) -> Result<(), StoreError> {
        dead_letters::dead_letter_batch(&self.conn, &self.projection, letters)
    }

    async fn subject_keys(&mut self, subjects: &[String]) -> Result<Vec<KeyLookup>, StoreError> {
        crate::keys::subject_keys(&self.conn, subjects)
    }

    async fn record_audit(&mut self, records: &[AuditRecord]) -> Result<(), StoreError> {
        crate::keys::record_audit(&self.conn, records)
    }

    async fn finish(
        mut self,
        to: Checkpoint,
        events_applied: u64,
        last_event_at: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        finish(&self.conn, &self.projection, to, events_applied, last_event_at)?;
        self.conn.execute_batch("COMMIT").context(|| format!("commit the rebuild of {}", self.projection))?;
        self.open = false;
        Ok(())
    }
}

/// Every partition at `to` and caught up; each adds its share of the rebuild's count.
fn finish(
    conn: &Connection,
    projection: &str,
    to: Checkpoint,
    events_applied: u64,
    last_event_at: Option<DateTime<Utc>>,
) -> Result<(), StoreError> {
    let context = || format!("finish the rebuild of {projection} at {to}");
    let now = format_ts(Utc::now());
    let last_event_at = last_event_at.map(|t| format_ts(t.min(max_ts())));
    let transaction_id = tx_id(to)?;
    for row in projections::partition_rows(conn, projection).context(context)? {
        conn.prepare_cached(FINISH_REBUILD)
            .and_then(|mut s| {
                s.execute(params![
                    transaction_id,
                    to.position,
                    rules::rebuild_applied_share(row.index, events_applied),
                    last_event_at,
                    now,
                    projection,
                    row.index,
                ])
            })
            .context(context)?;
    }
    Ok(())
}
