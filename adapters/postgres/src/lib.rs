//! PostgreSQL store for Projector: events, projection state, read-model writes,
//! dead letters, repairs and rebuilds, on `tokio-postgres` over any async stream.
//!
//! Every operation is a single statement sent with `query_typed` (unnamed statements), so
//! the store works through a transaction-mode pooler and, inside a Worker, over
//! `worker::Socket`. The one piece of session state is the owner lock a direct connection
//! holds for each lease owner it claims for, so that a crashed runner's leases are taken
//! over at once ([`rules::OwnerLiveness`](projector::store::rules::OwnerLiveness)); a store
//! marked [`PgStore::set_pooled`] holds none and waits for leases to expire. A batch
//! commit is one statement: a compare-and-set on the checkpoint guards the read-model
//! writes and dead letters in the same statement.
//!
//! The SQL lives in `sql/`: one file per statement, named for what it does, and the
//! schema migrations under `sql/migrations/`. The rules every store applies (input checks,
//! the idempotency decision, rescaling, why a commit was refused, status from lag) come
//! from [`projector::store::rules`]; this crate only reads what they need and writes what
//! they decide.

#[cfg(feature = "runtime-tokio")]
mod connect;
mod conninfo;
mod dead_letters;
mod discarded;
mod error;
mod event_migrations;
mod events;
mod keys;
#[cfg(feature = "runtime-tokio")]
mod listen;
mod migrate;
mod projections;
mod rebuild;
mod repair;
mod rows;
mod snapshots;
#[cfg(feature = "runtime-tokio")]
mod sslmode;
mod types;

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Mutex as SyncMutex;

use futures_util::lock::{Mutex, MutexGuard};
use projector::StoreError;
use tokio_postgres::Client;

/// Every place that shows a connection string shows `redact(url)`: URLs and keyword
/// strings alike, with every password masked.
pub use conninfo::redact;
#[cfg(feature = "runtime-tokio")]
pub use listen::{listen_for_appends, APPENDS_CHANNEL};
pub use migrate::MIGRATIONS;
pub use rebuild::PgRebuild;
pub use repair::PgRepair;
pub use types::{RawJson, Xid8};

const RESET_ABANDONED_REBUILD: &str = include_str!("../sql/reset_abandoned_rebuild.sql");

/// One connection's worth of store. Operations on one `PgStore` run one at a time; use
/// one store per concurrent worker.
pub struct PgStore {
    client: Mutex<Client>,
    /// Set when a rebuild session was dropped mid-transaction; the next user rolls back.
    needs_rollback: AtomicBool,
    /// Projections whose abandoned rebuild left the status `rebuilding`.
    abandoned: SyncMutex<Vec<String>>,
    /// The largest `event_data` an append accepts, in bytes of JSON.
    max_payload_bytes: AtomicUsize,
    /// Events after a checkpoint read to measure lag exactly (see `set_exact_lag_limit`).
    exact_lag_limit: AtomicU32,
    /// Set when the connection goes through a transaction-mode pooler: no session locks.
    pooled: AtomicBool,
    /// Lease owners whose session lock this connection holds.
    locked_owners: SyncMutex<Vec<String>>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

impl PgStore {
    /// Wraps a connected client. The caller drives its `Connection` (natively a spawned
    /// task; in a Worker, joined with the work).
    pub fn new(client: Client) -> Self {
        Self {
            client: Mutex::new(client),
            needs_rollback: AtomicBool::new(false),
            abandoned: SyncMutex::new(Vec::new()),
            max_payload_bytes: AtomicUsize::new(projector::store::rules::DEFAULT_MAX_PAYLOAD_BYTES),
            exact_lag_limit: AtomicU32::new(projector::store::rules::DEFAULT_EXACT_LAG_LIMIT),
            pooled: AtomicBool::new(false),
            locked_owners: SyncMutex::new(Vec::new()),
        }
    }

    /// Sets how many events after a checkpoint `states` reads to count lag exactly
    /// (default 10,000); a larger backlog is estimated from positions and reported with
    /// `lag_estimated`.
    pub fn set_exact_lag_limit(&self, events: NonZeroU32) {
        self.exact_lag_limit.store(events.get(), Ordering::Relaxed);
    }

    pub(crate) fn exact_lag_limit(&self) -> u32 {
        self.exact_lag_limit.load(Ordering::Relaxed)
    }

    /// Marks the connection as going through a transaction-mode pooler (no sessions):
    /// claims then hold no owner lock and take another owner's lease only once it
    /// expires. Set it before the first claim.
    pub fn set_pooled(&self, pooled: bool) {
        self.pooled.store(pooled, Ordering::Relaxed);
    }

    /// How this store learns that a lease's owner is gone.
    pub fn owner_liveness(&self) -> projector::store::rules::OwnerLiveness {
        projector::store::rules::owner_liveness(self.pooled.load(Ordering::Relaxed))
    }

    /// Whether this connection holds `owner`'s session lock already.
    pub(crate) fn holds_owner_lock(&self, owner: &str) -> bool {
        self.locked_owners.lock().unwrap_or_else(|p| p.into_inner()).iter().any(|o| o == owner)
    }

    /// The owners whose session lock this connection holds.
    pub(crate) fn locked_owners(&self) -> Vec<String> {
        self.locked_owners.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn owner_locked(&self, owner: &str) {
        self.locked_owners.lock().unwrap_or_else(|p| p.into_inner()).push(owner.to_owned());
    }

    /// Sets the largest `event_data` an append accepts (default 1 MiB).
    pub fn set_max_payload_bytes(&self, bytes: usize) {
        self.max_payload_bytes.store(bytes, Ordering::Relaxed);
    }

    pub(crate) fn max_payload_bytes(&self) -> usize {
        self.max_payload_bytes.load(Ordering::Relaxed)
    }

    pub(crate) async fn client(&self) -> Result<MutexGuard<'_, Client>, StoreError> {
        let client = self.client.lock().await;
        if self.needs_rollback.swap(false, Ordering::AcqRel) {
            client.batch_execute("ROLLBACK").await.map_err(error::map)?;
        }
        let abandoned = std::mem::take(&mut *self.abandoned.lock().unwrap_or_else(|p| p.into_inner()));
        for projection in abandoned {
            client
                .query_typed(RESET_ABANDONED_REBUILD, &[(&projection, tokio_postgres::types::Type::TEXT)])
                .await
                .map_err(error::map)?;
        }
        Ok(client)
    }

    /// A transaction was left open by a dropped session: the next user rolls it back.
    pub(crate) fn roll_back_later(&self) {
        self.needs_rollback.store(true, Ordering::Release);
    }

    /// Called by a rebuild session dropped before `finish`.
    pub(crate) fn abandon(&self, projection: &str, in_transaction: bool) {
        if in_transaction {
            self.needs_rollback.store(true, Ordering::Release);
        }
        self.abandoned.lock().unwrap_or_else(|p| p.into_inner()).push(projection.to_owned());
    }

    /// Applies the schema migrations that have not run yet (idempotent).
    pub async fn migrate(&self) -> Result<Vec<&'static str>, StoreError> {
        let client = self.client().await?;
        migrate::run(&client).await
    }

    /// Runs SQL text as-is (simple query protocol; several statements allowed). For
    /// administration and tests; projection work goes through the traits.
    pub async fn execute_script(&self, sql: &str) -> Result<(), StoreError> {
        self.client().await?.batch_execute(sql).await.map_err(error::map)
    }
}
