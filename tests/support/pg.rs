//! A fresh PostgreSQL database per test, migrated, dropped when the test ends.
//!
//! The server comes from `PROJECTOR_TEST_DATABASE_URL` (default: the local server as
//! `postgres`). Each database has a unique name, so test binaries and tests run in
//! parallel without sharing state.

use std::sync::atomic::{AtomicU32, Ordering};

use projector_postgres::PgStore;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The maintenance connection URL.
pub fn admin_url() -> String {
    std::env::var("PROJECTOR_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

fn with_database(url: &str, db: &str) -> String {
    match url.rfind('/') {
        Some(i) if url[..i].contains("://") && url[..i].len() > url.find("://").unwrap_or(0) + 2 => {
            let (base, rest) = url.split_at(i);
            let query = rest.find('?').map(|q| &rest[q..]).unwrap_or("");
            format!("{base}/{db}{query}")
        }
        _ => format!("{url}/{db}"),
    }
}

/// A database that exists for the life of this value.
#[derive(Debug)]
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    /// Creates and migrates a new database.
    pub async fn new() -> TestDb {
        let db = TestDb::empty().await;
        db.store().await.migrate().await.expect("migrate test database");
        db
    }

    /// Creates a new database with no schema (no migrations applied).
    pub async fn empty() -> TestDb {
        let name = format!(
            "projector_t_{}_{}_{:x}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0)
        );
        let admin = PgStore::connect(&admin_url())
            .await
            .unwrap_or_else(|e| panic!("the test PostgreSQL server at {} is not reachable: {e}", admin_url()));
        admin.execute_script(&format!("CREATE DATABASE {name}")).await.expect("create test database");
        let url = with_database(&admin_url(), &name);
        TestDb { name, url }
    }

    /// A new connection to this database.
    pub async fn store(&self) -> PgStore {
        PgStore::connect(&self.url).await.expect("connect to test database")
    }

    /// Waits until every event appended so far is below the read horizon, i.e. no
    /// transaction anywhere on the server that started before the last append is still
    /// open. Global reads return nothing newer than that horizon, by design.
    pub async fn settle(&self) {
        let client = self.client().await;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let row = client
                .query_one(
                    "SELECT coalesce(max(transaction_id)::text::bigint, 0) < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
                     FROM events",
                    &[],
                )
                .await
                .expect("read the horizon");
            if row.get::<_, bool>(0) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "a transaction elsewhere on the server has held the read horizon for a minute"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// A raw client on this database, for setting up situations the store API forbids.
    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, connection) =
            tokio_postgres::connect(&self.url, tokio_postgres::NoTls).await.expect("connect to test database");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Dropping needs async I/O; do it on a thread of its own so any runtime is fine.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(async move {
                if let Ok(admin) = PgStore::connect(&admin_url()).await {
                    let _ = admin.execute_script(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
                }
            });
        })
        .join();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn database_names_replace_the_path() {
        assert_eq!(super::with_database("postgres://u@h:5432/postgres", "x"), "postgres://u@h:5432/x");
        assert_eq!(
            super::with_database("postgres://u@h/postgres?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
    }
}
