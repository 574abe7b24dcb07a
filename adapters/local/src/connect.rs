//! How a worker gets its own store: a new PostgreSQL connection, or a handle on the
//! embedded file.

use projector::store::migrations::EventMigrations;
use projector::store::snapshots::Snapshots;
use projector::{DeadLetterQueue, EventStore, ProjectionStore, Rebuilds, Repairs, StoreError};
use projector_embedded::EmbeddedStore;
use projector_postgres::PgStore;

/// Opens a store for one worker. Each worker holds its own, so batches of different
/// partitions never share a connection.
#[allow(async_fn_in_trait)]
pub trait Connector: Clone + Send + Sync + 'static {
    type Store: EventStore + ProjectionStore + Rebuilds + Repairs + DeadLetterQueue + EventMigrations + Snapshots;

    async fn connect(&self) -> Result<Self::Store, StoreError>;

    /// Opens the connection that reads the projection states for `/metrics`, `/health`
    /// and the alerts; by default one like a worker's.
    async fn connect_observer(&self) -> Result<Self::Store, StoreError> {
        self.connect().await
    }

    /// Creates or upgrades the store's schema; returns the migrations applied now.
    async fn migrate(&self) -> Result<Vec<&'static str>, StoreError>;

    /// The PostgreSQL URL to LISTEN on for wake-ups; `None` when the store has no
    /// notifications or they cannot reach this runner (a pooler without a direct URL),
    /// and then workers find new events by polling only.
    fn listen_url(&self) -> Option<&str> {
        None
    }

    /// Takes wake-ups from the direct URL `_direct` returns, when it returns one, instead
    /// of the store's own URL. It is called only by a store with notifications, so
    /// a direct URL that is needed but missing is an error there and nowhere else.
    fn listening_on<E>(self, _direct: impl FnOnce() -> Result<Option<String>, E>) -> Result<Self, E>
    where
        Self: Sized,
    {
        Ok(self)
    }

    /// For messages: which store this is.
    fn describe(&self) -> String;
}

/// The `application_name` of the connection behind `/metrics`, `/health` and the alerts.
pub const OBSERVER_APPLICATION_NAME: &str = "projector-observability";

/// PostgreSQL, one connection per worker.
#[derive(Debug, Clone)]
pub struct PgConnector {
    url: String,
    pooled: bool,
    /// A direct URL of the same database for LISTEN, beside a pooled `url`.
    direct: Option<String>,
}

impl PgConnector {
    pub fn new(url: impl Into<String>) -> Self {
        Self { url: url.into(), pooled: false, direct: None }
    }

    /// The URL goes through a transaction-mode pooler (see [`PgStore::set_pooled`]). A
    /// pooler hands each transaction whichever server connection is free, so a LISTEN
    /// issued through it is lost or holds a server connection hostage: a pooled
    /// connector listens only on a [`PgConnector::direct`] URL.
    pub fn pooled(mut self, pooled: bool) -> Self {
        self.pooled = pooled;
        self
    }

    /// LISTEN for wake-ups on `url`, a direct connection to the same database, rather
    /// than on the store's URL.
    pub fn direct(mut self, url: impl Into<String>) -> Self {
        self.direct = Some(url.into());
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

    /// Names the connection [`OBSERVER_APPLICATION_NAME`] in `pg_stat_activity`, unless it
    /// goes through a pooler: there a session setting would stay on a server connection
    /// that other clients get next.
    async fn connect_observer(&self) -> Result<PgStore, StoreError> {
        let store = self.connect().await?;
        if !self.pooled {
            store.execute_script(&format!("SET application_name = '{OBSERVER_APPLICATION_NAME}'")).await?;
        }
        Ok(store)
    }

    async fn migrate(&self) -> Result<Vec<&'static str>, StoreError> {
        self.connect().await?.migrate().await
    }

    fn listen_url(&self) -> Option<&str> {
        match (&self.direct, self.pooled) {
            (Some(direct), _) => Some(direct),
            (None, false) => Some(&self.url),
            (None, true) => None,
        }
    }

    fn listening_on<E>(self, direct: impl FnOnce() -> Result<Option<String>, E>) -> Result<Self, E> {
        Ok(match direct()? {
            Some(url) => self.direct(url),
            None => self,
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    const POOLED: &str = "postgres://u:p@pooler/db";
    const DIRECT: &str = "postgres://u:p@direct/db";

    #[test]
    fn a_pooled_database_is_listened_on_only_through_its_direct_url() {
        assert_eq!(PgConnector::new(POOLED).pooled(true).listen_url(), None);
        assert_eq!(PgConnector::new(POOLED).pooled(true).direct(DIRECT).listen_url(), Some(DIRECT));
        assert_eq!(PgConnector::new(DIRECT).listen_url(), Some(DIRECT));
        assert_eq!(PgConnector::new(POOLED).direct(DIRECT).listen_url(), Some(DIRECT));
    }

    #[test]
    fn the_direct_url_is_asked_for_only_by_a_store_with_notifications() {
        let pooled = PgConnector::new(POOLED).pooled(true);
        let direct = pooled.clone().listening_on(|| Ok::<_, ()>(Some(DIRECT.to_owned()))).unwrap();
        assert_eq!(direct.listen_url(), Some(DIRECT));
        assert_eq!(pooled.clone().listening_on(|| Ok::<_, ()>(None)).unwrap().listen_url(), None);
        assert_eq!(pooled.listening_on(|| Err("unset")).unwrap_err(), "unset");

        let embedded = EmbeddedConnector::new(EmbeddedStore::open_in_memory().unwrap(), ":memory:");
        let embedded = embedded.listening_on(|| -> Result<Option<String>, &str> { panic!("asked for a direct URL") });
        assert_eq!(embedded.unwrap().listen_url(), None);
    }
}
