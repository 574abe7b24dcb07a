//! The embedded store: events, projection bookkeeping and read models in one SQLite file
//! (SQLite is compiled in), so Projector runs without a database server.
//!
//! It is the default store when no database URL is configured. It is meant for
//! development, tests and single-machine use: every operation runs synchronously on one
//! connection behind a mutex (the async trait methods do their work before returning),
//! so a slow operation holds up the others of the same handle. Several processes may
//! open the same file: the database is in WAL mode and writers wait for each other up
//! to a busy timeout, after which the operation fails with
//! [`StoreError::Unavailable`] (retryable).
//!
//! Semantics are those of the PostgreSQL store. SQLite serializes writers and every
//! append takes the write lock before it assigns positions, so position order is commit
//! order: every event has transaction id 0 and a checkpoint is `(0, position)`.
//! Failure handling (attempt history, dead letters, parked aggregates and their epoch)
//! follows the PostgreSQL store too; a repair session ([`EmbeddedRepair`]), like a
//! rebuild, holds the connection and SQLite's write lock until it commits or is dropped.
//!
//! ```no_run
//! # async fn demo() -> Result<(), projector::StoreError> {
//! use projector::{AppendRequest, EventStore, ExpectedVersion, NewEvent};
//! let store = projector_embedded::EmbeddedStore::open(".projector/projector.db")?;
//! store
//!     .append(AppendRequest {
//!         aggregate_id: uuid::Uuid::new_v4(),
//!         aggregate_type: "user".into(),
//!         expected_version: ExpectedVersion::Exact(0),
//!         events: vec![NewEvent::new("UserRegistered", serde_json::json!({"email": "ada@example.com"}))],
//!         idempotency_key: None,
//!     })
//!     .await?;
//! # Ok(()) }
//! ```

//!
//! Layout: `migrate` applies the schema (`sql/migrations/`); every fixed statement is a
//! file in `sql/`; `events`, `projections`, `dead_letters`, `rebuild` and `repair` each
//! implement one of the store traits (`discarded` keeps what operators took out of a
//! projection, for rebuilds, time travel and repairs); `rows` is the only place that
//! writes SQL from a read model's [`TableSchema`](projector::TableSchema).

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use projector::StoreError;
use rusqlite::{Connection, OpenFlags};

mod codec;
mod dead_letters;
mod discarded;
mod error;
mod event_migrations;
mod events;
mod keys;
mod migrate;
mod projections;
mod rebuild;
mod repair;
mod rows;
mod snapshots;

pub use migrate::{Migration, MIGRATIONS};
pub use rebuild::EmbeddedRebuild;
pub use repair::EmbeddedRepair;

use crate::error::Context;

const CONNECTION_SETTINGS: &str = include_str!("../sql/connection_settings.sql");
const ENABLE_WAL: &str = include_str!("../sql/enable_wal.sql");

/// How long a writer waits for another (thread or process) to release the database.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The embedded store. Cloning is cheap and shares the connection.
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Mutex<Connection>,
    path: Option<PathBuf>,
    /// The largest `event_data` an append accepts, in bytes of JSON.
    max_payload_bytes: AtomicUsize,
    /// Events after a checkpoint read to measure lag exactly (see `set_exact_lag_limit`).
    exact_lag_limit: AtomicU32,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner.path {
            Some(path) => f.debug_struct("EmbeddedStore").field("path", path).finish(),
            None => f.debug_struct("EmbeddedStore").field("path", &":memory:").finish(),
        }
    }
}

impl EmbeddedStore {
    /// Opens (creating it and its parent directories if needed) the store file at `path`
    /// and brings its schema up to date.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref();
        let shown = path.display();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Unavailable(format!(
                    "embedded store {shown}: cannot create directory {}: {e}",
                    parent.display()
                ))
            })?;
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .context(|| format!("open embedded store {shown}"))?;
        conn.busy_timeout(BUSY_TIMEOUT).context(|| format!("open embedded store {shown}"))?;
        let mode: String = conn
            .query_row(ENABLE_WAL, [], |r| r.get(0))
            .context(|| format!("open embedded store {shown}: switch to WAL mode"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Unavailable(format!(
                "embedded store {shown}: the file system does not support WAL mode (journal mode is {mode})"
            )));
        }
        Self::setup(conn, Some(path.to_path_buf()))
    }

    /// A private store in memory (for tests); clones share it, and it is gone with the
    /// last clone.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        let conn = Connection::open_in_memory().context(|| "open an in-memory embedded store")?;
        Self::setup(conn, None)
    }

    fn setup(conn: Connection, path: Option<PathBuf>) -> Result<Self, StoreError> {
        let shown = path.as_ref().map_or_else(|| ":memory:".to_owned(), |p| p.display().to_string());
        conn.execute_batch(CONNECTION_SETTINGS).context(|| format!("open embedded store {shown}"))?;
        events::register_functions(&conn).context(|| format!("open embedded store {shown}: register functions"))?;
        let store = Self {
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                path,
                max_payload_bytes: AtomicUsize::new(projector::store::rules::DEFAULT_MAX_PAYLOAD_BYTES),
                exact_lag_limit: AtomicU32::new(projector::store::rules::DEFAULT_EXACT_LAG_LIMIT),
            }),
        };
        store.migrate()?;
        Ok(store)
    }

    /// Sets the largest `event_data` an append accepts (default 1 MiB); clones share it.
    pub fn set_max_payload_bytes(&self, bytes: usize) {
        self.inner.max_payload_bytes.store(bytes, Ordering::Relaxed);
    }

    /// Sets how many events after a checkpoint `states` reads to count lag exactly
    /// (default 10,000); a larger backlog is estimated from positions and reported with
    /// `lag_estimated`.
    pub fn set_exact_lag_limit(&self, events: NonZeroU32) {
        self.inner.exact_lag_limit.store(events.get(), Ordering::Relaxed);
    }

    pub(crate) fn exact_lag_limit(&self) -> u32 {
        self.inner.exact_lag_limit.load(Ordering::Relaxed)
    }

    pub(crate) fn max_payload_bytes(&self) -> usize {
        self.inner.max_payload_bytes.load(Ordering::Relaxed)
    }

    /// The file this store lives in (`None` in memory).
    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    /// Applies the migrations this file does not have yet. Idempotent, and safe while
    /// other processes open the same file.
    pub fn migrate(&self) -> Result<(), StoreError> {
        migrate::run(&mut self.lock(), &self.describe())
    }

    /// The highest applied migration.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        migrate::schema_version(&self.lock())
            .context(|| format!("read the schema version of embedded store {}", self.describe()))
    }

    /// Runs SQL text as-is (several statements allowed). For administration and tests;
    /// projection work goes through the traits.
    pub fn execute_script(&self, sql: &str) -> Result<(), StoreError> {
        self.lock().execute_batch(sql).context(|| format!("run a script on embedded store {}", self.describe()))
    }

    fn describe(&self) -> String {
        self.inner.path.as_ref().map_or_else(|| ":memory:".to_owned(), |p| p.display().to_string())
    }

    /// The connection. A panic while it was held may have left a transaction open: it is
    /// rolled back here, so the next operation starts clean.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Connection> {
        let conn = self.inner.conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        conn
    }
}
