//! How a worker gets its own store: a new PostgreSQL connection, or a handle on the
//! embedded file.

use projector::{DeadLetterQueue, EventStore, ProjectionStore, Rebuilds, Repairs, StoreError};
use projector_embedded::EmbeddedStore;
use projector_postgres::PgStore;

/// Opens a store for one worker. Each worker holds its own, so batches of different
/// partitions never share a connection.
#[allow(async_fn_in_trait)]
pub trait Connector: Clone + Send + Sync + 'static {
    type Store: EventStore + ProjectionStore + Rebuilds + Repairs + DeadLetterQueue;

    async fn connect(&self) -> Result<Self::Store, StoreError>;

    /// Creates or upgrades the store's schema; returns the migrations applied now.
    async fn migrate(&self) -> Result<Vec<&'static str>, StoreError>;

    /// The PostgreSQL URL to LISTEN on for wake-ups, if the store has notifications.
    fn listen_url(&self) -> Option<&str> {
        None
    }

    /// For messages: which store this is.
    fn describe(&self) -> String;
}

/// PostgreSQL, one connection per worker.
#[derive(Debug, Clone)]
pub struct PgConnector {
    url: String,
    pooled: bool,
}

impl PgConnector {
    pub fn new(url: impl Into<String>) -> Self {
        Self { url: url.into(), pooled: false }
    }

    /// The URL goes through a transaction-mode pooler (see [`PgStore::set_pooled`]).
    pub fn pooled(mut self, pooled: bool) -> Self {
        self.pooled = pooled;
        self
    }
}

impl Connector for PgConnector {
    type Store = PgStore;

    async fn connect(&self) -> Result<PgStore, StoreError> {
        let store = PgStore::connect(&self.url).await?;
        store.set_pooled(self.pooled);
        Ok(store)
    }

    async fn migrate(&self) -> Result<Vec<&'static str>, StoreError> {
        self.connect().await?.migrate().await
    }

    fn listen_url(&self) -> Option<&str> {
        Some(&self.url)
    }

    fn describe(&self) -> String {
        format!("PostgreSQL at {}", projector_postgres::redact(&self.url))
    }
}

/// The embedded store: every worker shares the one file handle.
#[derive(Debug, Clone)]
pub struct EmbeddedConnector {
    store: EmbeddedStore,
    path: String,
}

impl EmbeddedConnector {
    pub fn new(store: EmbeddedStore, path: impl Into<String>) -> Self {
        Self { store, path: path.into() }
    }
}

impl Connector for EmbeddedConnector {
    type Store = EmbeddedStore;

    async fn connect(&self) -> Result<EmbeddedStore, StoreError> {
        Ok(self.store.clone())
    }

    async fn migrate(&self) -> Result<Vec<&'static str>, StoreError> {
        // Opening the embedded store migrates it.
        Ok(Vec::new())
    }

    fn describe(&self) -> String {
        format!("embedded store at {}", self.path)
    }
}
