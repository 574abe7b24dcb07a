//! Rebuilding a projection from the full history: read pages in commit-safe order, fold
//! them in memory while the next page is read, and flush rows in bulk.

use chrono::{DateTime, Utc};

use crate::dead_letter::{DeadLetter, Exclusions, OnFailure};
use crate::error::StoreError;
use crate::event::{Checkpoint, DomainEvent, EventFilter};
use crate::fold::{Fold, Halt};
use crate::handler::ProjectionHandler;
use crate::read_model::{RowKey, Value};
use crate::runtime::RuntimeError;
use crate::store::keys::InRebuild;
use crate::store::{ReadBound, RebuildSession, Rebuilds};
use crate::upcast::{Reading, Upcasters};

/// How a rebuild went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RebuildOutcome {
    pub events_read: u64,
    pub events_applied: u64,
    pub rows_written: u64,
    pub checkpoint: Checkpoint,
    /// Events that failed in the rebuild: each was dead-lettered and parks its aggregate.
    pub dead_lettered: u64,
}

/// Progress callback: events read so far.
pub trait Progress {
    fn advanced(&mut self, events_read: u64, checkpoint: Checkpoint);
}

impl<F: FnMut(u64, Checkpoint)> Progress for F {
    fn advanced(&mut self, events_read: u64, checkpoint: Checkpoint) {
        self(events_read, checkpoint)
    }
}

/// Rebuilds a projection from the full history, in one transaction.
///
/// With `from_position`, only the rows touched by events at or after that global
/// position are recomputed (from their whole history); all other rows are kept.
/// Rows are held in memory and flushed in bulk every `flush_rows` rows.
///
/// A rebuild gives the rows live processing gives: events operators skipped or
/// discarded stay out, aggregates parked behind an open dead letter stay parked (their
/// rows at the last good version), and an event the handler fails on is dead-lettered
/// and parks its aggregate while every other row is rebuilt. With `on_failure: stop` a
/// failing event fails the rebuild instead, and nothing changes.
#[derive(Debug)]
pub struct Rebuild<'a, H> {
    handler: &'a H,
    /// The projection's filter and the upcasters every event passes before the fold.
    reading: Reading,
    read_size: usize,
    flush_rows: usize,
    from_position: Option<i64>,
    on_failure: OnFailure,
    snapshot_every: Option<u32>,
}

impl<'a, H: ProjectionHandler> Rebuild<'a, H> {
    pub fn new(handler: &'a H, filter: &EventFilter) -> Self {
        Self {
            handler,
            reading: Reading::new(handler.filter().and(filter), Upcasters::new()),
            read_size: 5_000,
            flush_rows: 250_000,
            from_position: None,
            on_failure: OnFailure::Park,
            snapshot_every: None,
        }
    }

    /// Keeps each rebuilt row's state every `every` versions as a snapshot, written in
    /// the rebuild's transaction (the rows it clears lose their old snapshots).
    pub fn snapshots(mut self, every: Option<u32>) -> Self {
        self.snapshot_every = every;
        self
    }

    /// Upcasts every event before the handler sees it, as live processing does (see
    /// [`crate::BatchRunner::upcasters`]).
    pub fn upcasters(mut self, upcasters: Upcasters) -> Self {
        self.reading = self.reading.with_upcasters(upcasters);
        self
    }

    /// Opens the encrypted fields the projection is granted, as live processing does
    /// (see [`crate::BatchRunner::decryption`]); the decrypts are audited in the
    /// rebuild's transaction.
    pub fn decryption(mut self, decryption: crate::encryption::Decryption) -> Self {
        self.reading = self.reading.decrypting(decryption);
        self
    }

    pub fn on_failure(mut self, on_failure: OnFailure) -> Self {
        self.on_failure = on_failure;
        self
    }

    pub fn from_position(mut self, position: Option<i64>) -> Self {
        self.from_position = position;
        self
    }

    pub fn flush_rows(mut self, rows: usize) -> Self {
        self.flush_rows = rows.max(1);
        self
    }

    pub fn read_size(mut self, n: usize) -> Self {
        self.read_size = n.max(1);
        self
    }

    pub async fn run<S: Rebuilds>(
        &self,
        store: &S,
        mut progress: impl Progress,
    ) -> Result<RebuildOutcome, RuntimeError> {
        let table = self.handler.schema();
        let mut session = store.begin_rebuild(self.handler.name(), table).await?;
        if self.from_position.is_some() && session.needs_full() {
            return Err(StoreError::InvalidInput(format!(
                "projection {}: read-model table {} must be rebuilt in full (it was missing, did not match the \
                 schema, or waits for a rebuild); a rebuild from a position cannot fill it",
                self.handler.name(),
                table.name
            ))
            .into());
        }

        // Rows a partial rebuild redoes: those touched by events since `from_position`.
        let only: Option<std::collections::HashSet<H::Key>> = match self.from_position {
            None => {
                session.clear_rows(None).await?;
                None
            }
            Some(from) => {
                let keys = self.touched_keys(&mut session, from).await?;
                let key_values: Vec<Vec<Value>> = keys
                    .iter()
                    .map(|k| {
                        let mut v = Vec::new();
                        k.to_values(&mut v);
                        v
                    })
                    .collect();
                session.clear_rows(Some(&key_values)).await?;
                Some(keys)
            }
        };

        let mut exclusions = session.exclusions().await?;
        // A stored payload over the store's limit fails as it does live: dead-lettered.
        let mut fold = Fold::new(self.handler)
            .assume_absent(true)
            .max_payload_bytes(store.max_payload_bytes())
            .discarding(exclusions.discarded.iter().copied())
            .snapshots_every(self.snapshot_every);
        let chains = crate::store::snapshots::chains(self.reading.upcasters());
        let mut letters: Vec<DeadLetter> = Vec::new();
        let mut checkpoint = Checkpoint::START;
        let mut events_read = 0u64;
        let mut events_applied = 0u64;
        let mut rows_written = 0u64;
        let mut last_event_at: Option<DateTime<Utc>> = None;
        let store_filter = self.reading.store_filter();
        let mut next = session.read_all(checkpoint, store_filter, self.read_size).await?;
        loop {
            let read = std::mem::take(&mut next);
            let Some(last) = read.last() else { break };
            checkpoint = last.checkpoint();
            events_read += read.len() as u64;
            let prepared = self.reading.prepare(&mut InRebuild(&mut session), read).await?;
            session.record_audit(&prepared.audit).await?;
            fold.failing_upcasts(prepared.failed);
            let mut events = prepared.events;
            if let Some(only) = &only {
                events.retain(|e| self.handler.key(e).is_some_and(|k| only.contains(&k)));
            }
            let keys = fold.keys_to_load(&events);
            if !keys.is_empty() {
                let rows = session.load_rows(&keys).await?;
                fold.insert_loaded(&keys, &rows)
                    .map_err(|e| RuntimeError::Row { projection: self.handler.name(), reason: e.to_string() })?;
            }
            let mut gap_events = Vec::new();
            for gap in fold.gaps_except(&events, |e| exclusions.holds(e)) {
                let found = session
                    .read_aggregate(gap.aggregate_id, ReadBound::Versions { after: gap.after, upto: gap.upto })
                    .await?;
                let prepared = self.reading.prepare(&mut InRebuild(&mut session), found).await?;
                session.record_audit(&prepared.audit).await?;
                fold.failing_upcasts(prepared.failed);
                gap_events.extend(prepared.events);
            }
            // Fold this page while the server produces the next one.
            let (read, folded) = futures_util::future::join(
                session.read_all(checkpoint, store_filter, self.read_size),
                self.fold_page(&mut fold, &events, &gap_events, &mut exclusions),
            )
            .await;
            letters.extend(folded?);
            next = read?;
            progress.advanced(events_read, checkpoint);
            if fold.snapshots_pending() >= WRITE_CHUNK {
                self.write_snapshots(&mut session, &mut fold, &chains).await?;
            }
            if fold.len() >= self.flush_rows {
                for changes in fold.change_chunks(WRITE_CHUNK) {
                    rows_written += changes.upserts.len() as u64;
                    session.write_rows(changes).await?;
                }
                events_applied += fold.events_applied();
                last_event_at = last_event_at.max(fold.last_event_at());
                fold.reset_counters();
                fold.evict();
            }
        }
        for changes in fold.change_chunks(WRITE_CHUNK) {
            rows_written += changes.upserts.len() as u64;
            session.write_rows(changes).await?;
        }
        self.write_snapshots(&mut session, &mut fold, &chains).await?;
        events_applied += fold.events_applied();
        last_event_at = last_event_at.max(fold.last_event_at());
        if !letters.is_empty() {
            session.dead_letter(&letters).await?;
        }
        session.finish(checkpoint, events_applied, last_event_at).await?;
        let dead_lettered = letters.len() as u64;
        Ok(RebuildOutcome { events_read, events_applied, rows_written, checkpoint, dead_lettered })
    }

    /// Applies one page in steps (yielding between them, so that a read joined with this
    /// future makes progress meanwhile). An event that fails is dead-lettered and parks
    /// its aggregate, as in live processing: the rows its parked versions reached go back
    /// to where the page found them and the page goes on without them. Returns the
    /// page's letters.
    async fn fold_page(
        &self,
        fold: &mut Fold<'_, H>,
        events: &[DomainEvent],
        gap_events: &[DomainEvent],
        exclusions: &mut Exclusions,
    ) -> Result<Vec<DeadLetter>, RuntimeError> {
        const STEP: usize = 512;
        fold.begin_page();
        let mut letters = Vec::new();
        let mut start = 0;
        while start < events.len() {
            let end = (start + STEP).min(events.len());
            let halted = fold.apply_from(&events[..end], gap_events, start, |e| exclusions.holds(e));
            let Err(Halt { index, failure }) = halted else {
                start = end;
                YieldNow(false).await;
                continue;
            };
            if self.on_failure == OnFailure::Stop {
                return Err(RuntimeError::Stopped(failure));
            }
            let event = events
                .iter()
                .chain(gap_events)
                .find(|e| e.event_id == failure.event_id)
                .expect("the failing event is one of the page's")
                .clone();
            let class = failure.error.class();
            letters.push(DeadLetter::new(
                self.handler.name(),
                &event,
                &failure.to_string(),
                class,
                1,
                DateTime::<Utc>::MIN_UTC,
            ));
            exclusions.park(&event);
            fold.take_out(events, gap_events, index, &event, |e| exclusions.holds(e))?;
            start = index;
        }
        Ok(letters)
    }

    /// Writes the rows captured for snapshots so far (after the rows they belong to, in
    /// the same transaction).
    async fn write_snapshots<R: RebuildSession>(
        &self,
        session: &mut R,
        fold: &mut Fold<'_, H>,
        chains: &str,
    ) -> Result<(), RuntimeError> {
        let captured = fold.take_snapshots();
        if captured.is_empty() {
            return Ok(());
        }
        let snapshots = super::snapshots::snapshots_of(self.handler, chains, captured);
        session.write_rows(crate::store::RowChanges { snapshots, ..Default::default() }).await?;
        Ok(())
    }

    async fn touched_keys<R: RebuildSession>(
        &self,
        session: &mut R,
        from: i64,
    ) -> Result<std::collections::HashSet<H::Key>, RuntimeError> {
        let mut keys = std::collections::HashSet::new();
        let mut after = from - 1;
        loop {
            let events = session.read_since_position(from, self.reading.store_filter(), after, self.read_size).await?;
            let Some(last) = events.last() else { break };
            after = last.position;
            let prepared = self.reading.prepare(&mut InRebuild(&mut *session), events).await?;
            session.record_audit(&prepared.audit).await?;
            keys.extend(prepared.events.iter().filter_map(|e| self.handler.key(e)));
        }
        Ok(keys)
    }
}

/// Rows per write statement when a rebuild flushes.
const WRITE_CHUNK: usize = 10_000;

/// Returns `Pending` once (waking itself at once), so other futures of the task run.
struct YieldNow(bool);

impl std::future::Future for YieldNow {
    type Output = ();

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}
